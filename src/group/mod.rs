//! Consumer groups, classic protocol: coordinator lookup, membership (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup), partition assignors, Kafka's `ConsumerProtocol` payloads and offset
//! commits.
//!
//! [`GroupMember`] is the mechanism the [`consumer`](crate::consumer) drives: it joins the group
//! when asked ([`GroupMember::join`]), runs a background heartbeat task that keeps the session
//! alive however slowly the application processes records, notices rebalances and lost
//! membership, enforces `max.poll.interval` (the member leaves the group when the application
//! stops polling), commits and fetches offsets with the current generation, and leaves the
//! group on [`close`](GroupMember::close).

mod assignor;
mod consumer_protocol;
mod member;
pub mod protocol;

pub use assignor::{
    Assignor, CooperativeStickyAssignor, MemberSubscription, RangeAssignor, RebalanceProtocol,
    RoundRobinAssignor,
};
pub(crate) use consumer_protocol::new_member_id;
pub use member::{GroupConfig, GroupMember, JoinOutcome, OffsetAndMetadata};

/// The group membership protocol (`group.protocol`).
///
/// ```
/// use rekafka::group::GroupProtocol;
/// assert_eq!(GroupProtocol::default(), GroupProtocol::Classic);
/// assert_eq!("consumer".parse::<GroupProtocol>().unwrap(), GroupProtocol::Consumer);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum GroupProtocol {
    /// The classic protocol: JoinGroup/SyncGroup/Heartbeat, client-side assignors (the
    /// default, as in Java).
    #[default]
    Classic,
    /// The consumer protocol of KIP-848 (Kafka 4.0+): ConsumerGroupHeartbeat with member
    /// epochs, broker-side assignors (`group.remote.assignor`), incremental reconciliation.
    Consumer,
}

impl std::str::FromStr for GroupProtocol {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<GroupProtocol> {
        match s.trim().to_ascii_lowercase().as_str() {
            "classic" => Ok(GroupProtocol::Classic),
            "consumer" => Ok(GroupProtocol::Consumer),
            _ => Err(crate::Error::config(format!(
                "group.protocol: {s:?} is not classic or consumer"
            ))),
        }
    }
}

pub use crate::cluster::TopicPartition;

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
mod member;
pub mod protocol;

pub use assignor::{
    Assignor, CooperativeStickyAssignor, MemberSubscription, RangeAssignor, RebalanceProtocol,
    RoundRobinAssignor,
};
pub use member::{GroupConfig, GroupMember, JoinOutcome, OffsetAndMetadata};

use std::fmt;
use std::sync::Arc;

/// A topic partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: Arc<str>,
    /// The partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// The partition `partition` of `topic`.
    pub fn new(topic: impl AsRef<str>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: Arc::from(topic.as_ref()),
            partition,
        }
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

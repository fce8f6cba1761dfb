//! What the group APIs return: listings, descriptions, members and committed offsets, and the classic protocol's assignment decoding.

use super::*;

/// The state of a consumer group, as the coordinator names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GroupState {
    /// No members (offsets may still be stored).
    Empty,
    /// Members are joining (a rebalance started).
    PreparingRebalance,
    /// Members joined; waiting for the leader's assignment.
    CompletingRebalance,
    /// Members consume with their assignment.
    Stable,
    /// The group no longer exists (or never did).
    Dead,
    /// A state this client does not know, as the broker spelled it.
    Other(String),
}

impl GroupState {
    /// Parses the state name of DescribeGroups or ListGroups.
    pub fn parse(s: &str) -> GroupState {
        match s {
            "Empty" => GroupState::Empty,
            "PreparingRebalance" => GroupState::PreparingRebalance,
            "CompletingRebalance" | "AwaitingSync" => GroupState::CompletingRebalance,
            "Stable" => GroupState::Stable,
            "Dead" => GroupState::Dead,
            other => GroupState::Other(other.to_owned()),
        }
    }
}

impl std::fmt::Display for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
            GroupState::Other(s) => s,
        })
    }
}

/// A group as [`Admin::list_groups`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// The protocol type (`"consumer"` for consumer groups, empty for groups that only store
    /// offsets).
    pub protocol_type: String,
    /// The state, if the broker said (ListGroups v4+).
    pub state: Option<GroupState>,
    /// The group's type (classic, consumer, share, streams), if the broker said (ListGroups
    /// v5+, Kafka 3.8+).
    pub group_type: Option<GroupType>,
}

/// The type of a group (KIP-848's `group.type`): which protocol its members speak.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GroupType {
    /// The classic protocol (JoinGroup/SyncGroup), for consumers and other clients.
    Classic,
    /// The consumer protocol (KIP-848, ConsumerGroupHeartbeat).
    Consumer,
    /// A share group (KIP-932, ShareGroupHeartbeat): queues.
    Share,
    /// A Kafka Streams group (KIP-1071, StreamsGroupHeartbeat).
    Streams,
    /// A type this client does not know, as the broker spelled it.
    Other(String),
}

impl GroupType {
    /// Parses the type name of ListGroups (case-insensitive, as Kafka's `GroupType.parse`).
    pub fn parse(s: &str) -> GroupType {
        match s.to_ascii_lowercase().as_str() {
            "classic" => GroupType::Classic,
            "consumer" => GroupType::Consumer,
            "share" => GroupType::Share,
            "streams" => GroupType::Streams,
            _ => GroupType::Other(s.to_owned()),
        }
    }

    /// The name Kafka uses (`"classic"`, `"consumer"`, `"share"`, `"streams"`).
    pub fn as_str(&self) -> &str {
        match self {
            GroupType::Classic => "classic",
            GroupType::Consumer => "consumer",
            GroupType::Share => "share",
            GroupType::Streams => "streams",
            GroupType::Other(s) => s,
        }
    }
}

impl std::fmt::Display for GroupType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group member as [`Admin::describe_groups`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberDescription {
    /// The member id the coordinator gave.
    pub member_id: String,
    /// The static member id (`group.instance.id`), if any.
    pub group_instance_id: Option<String>,
    /// The member's client id.
    pub client_id: String,
    /// The member's host, as the coordinator saw it.
    pub client_host: String,
    /// The member's protocol metadata (for consumers: its subscription), as sent.
    pub metadata: Bytes,
    /// The member's assignment, as the leader assigned it (for consumers: decode with
    /// [`decode_consumer_assignment`]).
    pub assignment: Bytes,
}

impl MemberDescription {
    /// The partitions assigned to this member, for a consumer group (`protocol_type`
    /// `"consumer"`). Empty if the member has no assignment yet.
    pub fn consumer_assignment(&self) -> Result<Vec<TopicPartition>> {
        decode_consumer_assignment(&self.assignment)
    }
}

/// A group as [`Admin::describe_groups`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// The state.
    pub state: GroupState,
    /// The protocol type (`"consumer"` for consumer groups).
    pub protocol_type: String,
    /// The protocol in use: for consumer groups, the assignor (`"range"`, …).
    pub protocol: String,
    /// The members.
    pub members: Vec<MemberDescription>,
    /// The coordinator's node id.
    pub coordinator: i32,
}

/// A member of a consumer-protocol group (KIP-848) as
/// [`Admin::describe_consumer_groups`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerGroupMember {
    /// The member id.
    pub member_id: String,
    /// The static member id (`group.instance.id`), if any.
    pub group_instance_id: Option<String>,
    /// The member's epoch.
    pub member_epoch: i32,
    /// The member's client id.
    pub client_id: String,
    /// The member's host, as the coordinator saw it.
    pub client_host: String,
    /// The topics the member subscribed to by name.
    pub subscribed_topics: Vec<String>,
    /// The member's broker-side topic regex, if it subscribed by one.
    pub subscribed_topic_regex: Option<String>,
    /// The member's rack (`client.rack`), if it sent one.
    pub rack_id: Option<String>,
    /// The partitions the member owns now.
    pub assignment: Vec<TopicPartition>,
    /// The partitions the coordinator means the member to own (differs from `assignment`
    /// while a reconciliation is under way).
    pub target_assignment: Vec<TopicPartition>,
    /// Whether the member speaks the classic protocol (a classic member of a consumer-protocol
    /// group, ConsumerGroupDescribe v1+), if the coordinator said.
    pub classic: Option<bool>,
}

/// A consumer-protocol group (KIP-848) as [`Admin::describe_consumer_groups`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerGroupDescription {
    /// The group id.
    pub group_id: String,
    /// The state (`Empty`, `Assigning`, `Reconciling`, `Stable`, `Dead`).
    pub state: GroupState,
    /// The group epoch.
    pub group_epoch: i32,
    /// The epoch of the group's target assignment.
    pub assignment_epoch: i32,
    /// The broker-side assignor in use.
    pub assignor: String,
    /// The members.
    pub members: Vec<ConsumerGroupMember>,
    /// The coordinator's node id.
    pub coordinator: i32,
}

/// A group's committed offset for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CommittedOffset {
    /// The committed offset (the next record the group will read).
    pub offset: i64,
    /// The leader epoch of the record before it, if committed with one.
    pub leader_epoch: Option<i32>,
    /// The metadata string committed with the offset.
    pub metadata: Option<String>,
}

/// Decodes a consumer-protocol assignment (`ConsumerProtocolAssignment`, versions 0–3: the
/// bytes a consumer group's leader assigns to a member) into its partitions. Empty bytes (no
/// assignment yet) give an empty list. Malformed bytes are an
/// [`ErrorKind::Corrupt`](crate::ErrorKind::Corrupt) error; lengths are checked against the
/// bytes present before anything is allocated.
pub fn decode_consumer_assignment(bytes: &[u8]) -> Result<Vec<TopicPartition>> {
    let mut buf = bytes;
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    let corrupt = |what: &str| Error::corrupt(format!("consumer assignment: {what}"));
    let need = |buf: &[u8], n: usize, what: &str| {
        if buf.remaining() < n {
            Err(corrupt(what))
        } else {
            Ok(())
        }
    };
    need(buf, 2, "no version")?;
    let version = buf.get_i16();
    if version < 0 {
        return Err(corrupt("negative version"));
    }
    need(buf, 4, "no topic count")?;
    let topics = buf.get_i32();
    // Each topic takes at least 6 bytes (name length and partition count).
    if topics < 0 || topics as usize > buf.remaining() / 6 {
        return Err(corrupt("bad topic count"));
    }
    let mut out = Vec::new();
    for _ in 0..topics {
        need(buf, 2, "no topic name")?;
        let len = buf.get_i16();
        if len < 0 {
            return Err(corrupt("null topic name"));
        }
        need(buf, len as usize, "topic name")?;
        let name = std::str::from_utf8(&buf[..len as usize])
            .map_err(|_| corrupt("topic name is not UTF-8"))?
            .to_owned();
        buf.advance(len as usize);
        need(buf, 4, "no partition count")?;
        let n = buf.get_i32();
        if n < 0 || n as usize > buf.remaining() / 4 {
            return Err(corrupt("bad partition count"));
        }
        for _ in 0..n {
            out.push(TopicPartition::new(name.clone(), buf.get_i32()));
        }
    }
    // user_data (nullable bytes) follows; it is not needed here.
    Ok(out)
}

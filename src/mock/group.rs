//! The classic consumer-group protocol state machine (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup), as Kafka's `GroupCoordinator` runs it.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::consumer_group::ConsumerGroup;
use crate::KafkaCode;

/// A group's state, as DescribeGroups and ListGroups name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a member gets back from a completed join round.
#[derive(Debug, Clone)]
pub(crate) struct JoinResult {
    pub generation: i32,
    pub protocol: String,
    pub leader: String,
    /// (member id, instance id, metadata) for the leader; empty for followers.
    pub members: Vec<(String, Option<String>, Bytes)>,
}

#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub instance_id: Option<String>,
    pub client_id: String,
    pub protocols: Vec<(String, Bytes)>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub last_seen: Instant,
    /// Joined in the current round.
    pub joined: bool,
    pub join_result: Option<JoinResult>,
    pub assignment: Option<Bytes>,
}

/// A transactional offset waiting for its transaction: (topic, partition) and the offset.
pub(crate) type PendingOffset = ((String, i32), Committed);

/// A committed offset.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Group {
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub members: BTreeMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not joined yet.
    pub pending: HashMap<String, Instant>,
    pub static_members: HashMap<String, String>,
    pub rebalance_deadline: Option<Instant>,
    pub offsets: HashMap<(String, i32), Committed>,
    /// Transactional offsets by producer id, applied when the transaction commits.
    pub pending_txn: HashMap<i64, Vec<PendingOffset>>,
    /// Set when this is a consumer-protocol (KIP-848) group: its membership.
    pub consumer: Option<ConsumerGroup>,
}

impl Group {
    pub fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending: HashMap::new(),
            static_members: HashMap::new(),
            rebalance_deadline: None,
            offsets: HashMap::new(),
            pending_txn: HashMap::new(),
            consumer: None,
        }
    }

    /// Whether any member (of either protocol) is in the group.
    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
            || self
                .consumer
                .as_ref()
                .is_some_and(|c| !c.members.is_empty())
    }

    /// Starts a rebalance: every member must join again within the rebalance timeout.
    pub fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default();
        if self.state != GroupState::PreparingRebalance {
            for m in self.members.values_mut() {
                m.joined = false;
                m.join_result = None;
                m.assignment = None;
            }
            let delay = if self.state == GroupState::Empty {
                initial_delay
            } else {
                Duration::ZERO
            };
            self.state = GroupState::PreparingRebalance;
            self.rebalance_deadline = Some(now + timeout.max(delay));
        }
    }

    fn all_joined(&self) -> bool {
        !self.members.is_empty() && self.members.values().all(|m| m.joined)
    }

    /// Completes the join round when every member has joined or the deadline passed; members
    /// that did not join are removed. Returns whether the group changed.
    pub fn try_complete_join(&mut self, now: Instant, initial_delay_over: bool) -> bool {
        if self.state != GroupState::PreparingRebalance {
            return false;
        }
        let deadline_passed = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !(deadline_passed || self.all_joined() && initial_delay_over) {
            return false;
        }
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.joined)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.generation += 1;
        self.rebalance_deadline = None;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return true;
        }
        // The first protocol of the leader's preference that every member supports.
        let leader = match &self.leader {
            Some(l) if self.members.contains_key(l) => l.clone(),
            _ => self.members.keys().next().cloned().unwrap_or_default(),
        };
        let protocol = self.members.get(&leader).and_then(|lm| {
            lm.protocols
                .iter()
                .map(|(name, _)| name.clone())
                .find(|name| {
                    self.members
                        .values()
                        .all(|m| m.protocols.iter().any(|(n, _)| n == name))
                })
        });
        let protocol = protocol.unwrap_or_default();
        let all: Vec<(String, Option<String>, Bytes)> = self
            .members
            .iter()
            .map(|(id, m)| {
                let meta = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, b)| b.clone())
                    .unwrap_or_default();
                (id.clone(), m.instance_id.clone(), meta)
            })
            .collect();
        let generation = self.generation;
        for (id, m) in self.members.iter_mut() {
            m.last_seen = now;
            m.join_result = Some(JoinResult {
                generation,
                protocol: protocol.clone(),
                leader: leader.clone(),
                members: if *id == leader {
                    all.clone()
                } else {
                    Vec::new()
                },
            });
        }
        self.protocol = Some(protocol);
        self.leader = Some(leader);
        self.state = GroupState::CompletingRebalance;
        true
    }

    pub fn remove_member(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id)
            && let Some(inst) = m.instance_id
            && self.static_members.get(&inst).is_some_and(|x| x == id)
        {
            self.static_members.remove(&inst);
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
    }

    /// Removes a member that left or expired and rebalances the rest.
    pub fn member_left(&mut self, id: &str, now: Instant) {
        self.remove_member(id);
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.generation += 1;
            self.protocol = None;
            self.rebalance_deadline = None;
        } else if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now, Duration::ZERO);
        }
    }

    /// Expires members whose session timed out; returns whether any did.
    pub fn expire(&mut self, now: Instant) -> bool {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                // A member waiting in a join round is kept alive by its pending request.
                !(self.state == GroupState::PreparingRebalance && m.joined)
                    && now.duration_since(m.last_seen) > m.session_timeout
            })
            .map(|(id, _)| id.clone())
            .collect();
        self.pending
            .retain(|_, t| now.duration_since(*t) < Duration::from_secs(300));
        for id in &expired {
            self.member_left(id, now);
        }
        !expired.is_empty()
    }

    /// Heartbeat checks (also used by OffsetCommit).
    pub fn check_member(&self, member_id: &str, generation: i32) -> Result<(), KafkaCode> {
        if !self.members.contains_key(member_id) {
            return Err(KafkaCode::UnknownMemberId);
        }
        if generation != self.generation {
            return Err(KafkaCode::IllegalGeneration);
        }
        Ok(())
    }
}

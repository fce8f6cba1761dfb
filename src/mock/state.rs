//! The cluster's data: topics and partition logs, producer ids, transactions and groups. One
//! `State` behind one mutex; handlers lock it, do O(log n) work and unlock before any await.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use uuid::Uuid;

use super::group::Group;
use super::log::Log;
use crate::KafkaCode;
use crate::cluster::CoordinatorType;
use crate::protocol::record::ControlType;

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug)]
pub(crate) struct Partition {
    pub leader: i32,
    pub leader_epoch: i32,
    /// Leader epoch → the first offset written in it (the leader epoch cache).
    pub epoch_starts: BTreeMap<i32, i64>,
    pub log: Log,
}

impl Partition {
    fn new(leader: i32) -> Partition {
        Partition {
            leader,
            leader_epoch: 0,
            epoch_starts: BTreeMap::from([(0, 0)]),
            log: Log::new(),
        }
    }

    /// Moves leadership and starts a new leader epoch at the current end of the log.
    pub fn move_leader(&mut self, leader: i32) {
        self.leader = leader;
        self.leader_epoch += 1;
        self.epoch_starts
            .insert(self.leader_epoch, self.log.high_watermark());
    }

    /// An unclean leader election: `leader`'s log ends at `offset` (the log is truncated
    /// there, at a batch boundary, and so is the leader epoch cache, as Kafka's
    /// `truncateFromEnd`), and a new leader epoch starts at that end. Returns the new log end.
    pub fn elect_unclean(&mut self, leader: i32, offset: i64) -> i64 {
        let end = self.log.truncate_to(offset);
        self.epoch_starts.retain(|_, start| *start < end);
        self.move_leader(leader);
        end
    }

    /// OffsetForLeaderEpoch: the largest epoch not above `epoch` and the end offset of it.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let Some((&found, _)) = self.epoch_starts.range(..=epoch).next_back() else {
            return (-1, -1);
        };
        let end = self
            .epoch_starts
            .range(found + 1..)
            .next()
            .map(|(_, &start)| start)
            .unwrap_or_else(|| self.log.high_watermark());
        (found, end)
    }
}

#[derive(Debug)]
pub(crate) struct Topic {
    pub id: Uuid,
    pub partitions: Vec<Partition>,
    pub configs: BTreeMap<String, String>,
}

/// A transactional producer as its coordinator sees it.
#[derive(Debug)]
pub(crate) struct Txn {
    pub producer_id: i64,
    pub epoch: i16,
    pub timeout: Duration,
    pub ongoing: bool,
    pub started: Instant,
    pub partitions: BTreeSet<(String, i32)>,
    pub groups: BTreeSet<String>,
    /// How the last transaction ended (for an idempotent retry of EndTxn).
    pub last_result: Option<bool>,
}

/// The settings the state needs.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    pub initial_rebalance_delay: Duration,
    pub max_transaction_timeout: Duration,
    /// KIP-848: the heartbeat interval and session timeout of consumer-protocol groups, and
    /// their largest size.
    pub consumer_heartbeat_interval: Duration,
    pub consumer_session_timeout: Duration,
    pub consumer_group_max_size: usize,
}

#[derive(Debug)]
pub(crate) struct State {
    pub settings: Settings,
    /// Node ids, in order.
    pub brokers: Vec<i32>,
    pub topics: BTreeMap<String, Topic>,
    pub txns: HashMap<String, Txn>,
    pub groups: BTreeMap<String, Group>,
    pub coordinator_overrides: HashMap<(u8, String), i32>,
    /// When each group's initial rebalance delay ends.
    pub group_created: HashMap<String, Instant>,
    next_pid: i64,
    topic_seq: u64,
    member_seq: u64,
    seed: u64,
}

fn coord_key(kind: CoordinatorType) -> u8 {
    match kind {
        CoordinatorType::Transaction => 1,
        _ => 0,
    }
}

/// FNV-1a: a stable hash so coordinator placement is the same in every run.
pub(crate) fn stable_hash(s: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

impl State {
    pub fn new(settings: Settings, brokers: Vec<i32>) -> State {
        State {
            settings,
            brokers,
            topics: BTreeMap::new(),
            txns: HashMap::new(),
            groups: BTreeMap::new(),
            coordinator_overrides: HashMap::new(),
            group_created: HashMap::new(),
            next_pid: 1000,
            topic_seq: 0,
            member_seq: 0,
            seed: now_ms() as u64,
        }
    }

    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Uuid, KafkaCode> {
        if self.topics.contains_key(name) {
            return Err(KafkaCode::TopicAlreadyExists);
        }
        if name.is_empty()
            || name.len() > 249
            || name == "."
            || name == ".."
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
        {
            return Err(KafkaCode::InvalidTopicException);
        }
        if partitions <= 0 || partitions > 100_000 {
            return Err(KafkaCode::InvalidPartitions);
        }
        self.topic_seq += 1;
        let id = Uuid::from_u64_pair(self.seed, self.topic_seq);
        let n = self.brokers.len().max(1);
        let offset = (stable_hash(name) % n as u64) as usize;
        let parts = (0..partitions as usize)
            .map(|p| Partition::new(self.brokers.get((offset + p) % n).copied().unwrap_or(-1)))
            .collect();
        self.topics.insert(
            name.to_string(),
            Topic {
                id,
                partitions: parts,
                configs,
            },
        );
        Ok(id)
    }

    pub fn add_partitions(&mut self, name: &str, count: i32) -> Result<(), KafkaCode> {
        let n = self.brokers.len().max(1);
        let brokers = self.brokers.clone();
        let t = self
            .topics
            .get_mut(name)
            .ok_or(KafkaCode::UnknownTopicOrPartition)?;
        let have = t.partitions.len() as i32;
        if count <= have || count > 100_000 {
            return Err(KafkaCode::InvalidPartitions);
        }
        let offset = (stable_hash(name) % n as u64) as usize;
        for p in have as usize..count as usize {
            t.partitions.push(Partition::new(
                brokers.get((offset + p) % n).copied().unwrap_or(-1),
            ));
        }
        Ok(())
    }

    /// The topic, created with the default partition count when auto-creation allows it.
    pub fn topic_or_create(&mut self, name: &str, allow: bool) -> Option<&mut Topic> {
        if !self.topics.contains_key(name) && allow && self.settings.auto_create_topics {
            let parts = self.settings.default_partitions;
            let _ = self.create_topic(name, parts, BTreeMap::new());
        }
        self.topics.get_mut(name)
    }

    pub fn partition_mut(&mut self, topic: &str, partition: i32) -> Option<&mut Partition> {
        self.topics
            .get_mut(topic)?
            .partitions
            .get_mut(usize::try_from(partition).ok()?)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&Partition> {
        self.topics
            .get(topic)?
            .partitions
            .get(usize::try_from(partition).ok()?)
    }

    pub fn coordinator(&self, kind: CoordinatorType, key: &str) -> i32 {
        if let Some(&b) = self
            .coordinator_overrides
            .get(&(coord_key(kind), key.to_string()))
        {
            return b;
        }
        let n = self.brokers.len().max(1) as u64;
        self.brokers
            .get((stable_hash(key) % n) as usize)
            .copied()
            .unwrap_or(-1)
    }

    pub fn set_coordinator(&mut self, kind: CoordinatorType, key: &str, broker: i32) {
        self.coordinator_overrides
            .insert((coord_key(kind), key.to_string()), broker);
    }

    pub fn new_producer_id(&mut self) -> i64 {
        self.next_pid += 1;
        self.next_pid
    }

    pub fn new_member_id(&mut self, client_id: &str) -> String {
        self.member_seq += 1;
        let c = if client_id.is_empty() {
            "member"
        } else {
            client_id
        };
        format!("{c}-{:016x}-{}", self.seed, self.member_seq)
    }

    /// Writes the markers of `txn_id`'s ongoing transaction and applies or drops its offsets.
    pub fn end_txn(&mut self, txn_id: &str, commit: bool, marker_epoch: i16) {
        let Some(txn) = self.txns.get_mut(txn_id) else {
            return;
        };
        let pid = txn.producer_id;
        let partitions = std::mem::take(&mut txn.partitions);
        let groups = std::mem::take(&mut txn.groups);
        txn.ongoing = false;
        txn.last_result = Some(commit);
        let control = if commit {
            ControlType::Commit
        } else {
            ControlType::Abort
        };
        let now = now_ms();
        for (topic, p) in partitions {
            if let Some(part) = self.partition_mut(&topic, p) {
                let le = part.leader_epoch;
                part.log
                    .write_marker(pid, marker_epoch, control, 0, le, now);
            }
        }
        for g in groups {
            if let Some(group) = self.groups.get_mut(&g)
                && let Some(offsets) = group.pending_txn.remove(&pid)
                && commit
            {
                for (k, c) in offsets {
                    group.offsets.insert(k, c);
                }
            }
        }
    }

    /// Aborts transactions that ran past their timeout (bumping the epoch, which fences the
    /// producer, as Kafka does). Returns whether any was aborted.
    pub fn expire_transactions(&mut self, now: Instant) -> bool {
        let expired: Vec<String> = self
            .txns
            .iter()
            .filter(|(_, t)| t.ongoing && now.duration_since(t.started) > t.timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            let epoch = match self.txns.get_mut(id) {
                Some(t) => {
                    t.epoch = t.epoch.saturating_add(1);
                    t.epoch
                }
                None => continue,
            };
            self.end_txn(id, false, epoch);
            if let Some(t) = self.txns.get_mut(id) {
                // The producer never saw this outcome; a retried EndTxn must not succeed.
                t.last_result = None;
            }
        }
        !expired.is_empty()
    }

    /// Expires group members and completes join rounds whose deadline passed.
    pub fn tick_groups(&mut self, now: Instant) -> bool {
        let mut changed = false;
        let delay = self.settings.initial_rebalance_delay;
        // The topics' partition counts, for consumer-protocol groups whose members expired.
        let topics: BTreeMap<String, i32> = if self.groups.values().any(|g| g.consumer.is_some()) {
            self.topics
                .iter()
                .map(|(n, t)| (n.clone(), t.partitions.len() as i32))
                .collect()
        } else {
            BTreeMap::new()
        };
        let session = self.settings.consumer_session_timeout;
        for (name, g) in self.groups.iter_mut() {
            if let Some(cg) = g.consumer.as_mut()
                && cg.expire(now, session)
            {
                cg.refresh(&topics);
                changed = true;
            }
            changed |= g.expire(now);
            let delay_over = self
                .group_created
                .get(name)
                .is_none_or(|t| now >= *t + delay);
            changed |= g.try_complete_join(now, delay_over);
        }
        changed
    }
}

//! The metadata cache: brokers, topics and partitions as the last Metadata responses said.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::KafkaCode;
use crate::protocol::messages::MetadataResponse;

/// A broker as listed in a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerMetadata {
    /// The broker's node id.
    pub node_id: i32,
    /// The advertised host.
    pub host: String,
    /// The advertised port.
    pub port: i32,
    /// The rack, if the broker has one.
    pub rack: Option<String>,
}

impl BrokerMetadata {
    /// `host:port` (an IPv6 host in brackets).
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionMetadata {
    /// The partition index.
    pub partition: i32,
    /// The leader's node id, -1 if there is none.
    pub leader: i32,
    /// The leader epoch, -1 if no response ever said (Metadata v0–v6). A later answer with -1
    /// keeps the known epoch.
    pub leader_epoch: i32,
    /// The replicas' node ids.
    pub replicas: Vec<i32>,
    /// The in-sync replicas' node ids.
    pub isr: Vec<i32>,
    /// The offline replicas' node ids.
    pub offline_replicas: Vec<i32>,
    /// The partition's error (e.g. `LEADER_NOT_AVAILABLE`), if any.
    pub error: Option<KafkaCode>,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicMetadata {
    /// The topic name.
    pub name: String,
    /// The topic id (all zero if the broker did not say).
    pub topic_id: [u8; 16],
    /// Whether the topic is internal (`__consumer_offsets`, …).
    pub is_internal: bool,
    /// The topic's error, if any.
    pub error: Option<KafkaCode>,
    /// The partitions, sorted by index.
    pub partitions: Vec<PartitionMetadata>,
}

/// A snapshot of the cluster's metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metadata {
    /// The cluster id (Metadata v2+).
    pub cluster_id: Option<String>,
    /// The controller's node id (Metadata v1+), if known.
    pub controller_id: Option<i32>,
    /// The live brokers by node id.
    pub brokers: BTreeMap<i32, BrokerMetadata>,
    /// The known topics by name.
    pub topics: HashMap<String, TopicMetadata>,
}

/// What [`Metadata::apply`] changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetadataChanges {
    /// Brokers that were not known before.
    pub brokers_joined: Vec<i32>,
    /// Brokers that are no longer listed.
    pub brokers_left: Vec<i32>,
    /// Brokers whose address changed.
    pub brokers_moved: Vec<i32>,
    /// Partitions whose leader or leader epoch changed, as (topic, partition).
    pub leaders_changed: Vec<(String, i32)>,
    /// Topics removed from the cache (no longer exist, or not listed in a full refresh).
    pub topics_removed: Vec<String>,
}

impl Metadata {
    /// Updates the cache from a Metadata response.
    ///
    /// The broker list is replaced. Listed topics replace their cached entry, except that a
    /// partition whose new leader epoch is *older* than the cached one keeps the cached entry
    /// (the response came from a broker with stale metadata, KIP-320), and an unknown epoch
    /// (-1) leaves the cached epoch as it is (the leader and replicas are still taken). A topic
    /// whose id changed (deleted and created again) starts over. A topic answered with
    /// `UNKNOWN_TOPIC_OR_PARTITION` is removed. If `all_topics` (the request asked for every
    /// topic), topics not listed are removed too.
    pub fn apply(&mut self, resp: &MetadataResponse, all_topics: bool) -> MetadataChanges {
        let mut changes = MetadataChanges::default();

        let brokers: BTreeMap<i32, BrokerMetadata> = resp
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id.0,
                    BrokerMetadata {
                        node_id: b.node_id.0,
                        host: b.host.to_string(),
                        port: b.port,
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                    },
                )
            })
            .collect();
        for (id, b) in &brokers {
            match self.brokers.get(id) {
                None => changes.brokers_joined.push(*id),
                Some(old) if old.addr() != b.addr() => changes.brokers_moved.push(*id),
                Some(_) => {}
            }
        }
        changes.brokers_left = self
            .brokers
            .keys()
            .filter(|id| !brokers.contains_key(id))
            .copied()
            .collect();
        self.brokers = brokers;
        self.cluster_id = resp.cluster_id.as_ref().map(|c| c.to_string());
        self.controller_id = (resp.controller_id.0 >= 0).then_some(resp.controller_id.0);

        let mut listed = HashSet::with_capacity(resp.topics.len());
        for t in &resp.topics {
            let Some(name) = t.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            listed.insert(name.clone());
            let error = KafkaCode::from_i16(t.error_code);
            if error == Some(KafkaCode::UnknownTopicOrPartition) {
                if self.topics.remove(&name).is_some() {
                    changes.topics_removed.push(name);
                }
                continue;
            }
            let new_id = *t.topic_id.as_bytes();
            // A topic deleted and created again under the same name has a new id and starts
            // its leader epochs over: its old epochs say nothing about it.
            let old = self
                .topics
                .get(&name)
                .filter(|o| o.topic_id == [0; 16] || new_id == [0; 16] || o.topic_id == new_id);
            let mut partitions: Vec<PartitionMetadata> = t
                .partitions
                .iter()
                .map(|p| {
                    let new = PartitionMetadata {
                        partition: p.partition_index,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                        offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                        error: KafkaCode::from_i16(p.error_code),
                    };
                    let cached = old.and_then(|o| {
                        o.partitions
                            .iter()
                            .find(|c| c.partition == p.partition_index)
                    });
                    match cached {
                        Some(c) if new.leader_epoch >= 0 && new.leader_epoch < c.leader_epoch => {
                            c.clone()
                        }
                        Some(c) => {
                            let mut new = new;
                            if new.leader_epoch < 0 {
                                // -1 is "unknown" (old versions, some error answers), not an
                                // epoch: the known epoch stays, so older epochs are still
                                // recognised as stale. The rest of the answer is taken.
                                new.leader_epoch = c.leader_epoch;
                            }
                            if c.leader != new.leader || c.leader_epoch != new.leader_epoch {
                                changes.leaders_changed.push((name.clone(), new.partition));
                            }
                            new
                        }
                        None => {
                            changes.leaders_changed.push((name.clone(), new.partition));
                            new
                        }
                    }
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            let topic = TopicMetadata {
                name: name.clone(),
                topic_id: new_id,
                is_internal: t.is_internal,
                error,
                partitions,
            };
            self.topics.insert(name, topic);
        }
        if all_topics {
            let mut gone: Vec<String> = self
                .topics
                .keys()
                .filter(|n| !listed.contains(*n))
                .cloned()
                .collect();
            for n in &gone {
                self.topics.remove(n);
            }
            changes.topics_removed.append(&mut gone);
        }
        changes
    }

    /// A partition's entry, if the topic and partition are known.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionMetadata> {
        self.topics
            .get(topic)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::protocol::StrBytes;
    use crate::protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use crate::protocol::messages::{BrokerId, TopicName};

    pub(crate) fn broker(id: i32, host: &str, port: i32) -> MetadataResponseBroker {
        MetadataResponseBroker::default()
            .with_node_id(BrokerId(id))
            .with_host(StrBytes::from_string(host.to_owned()))
            .with_port(port)
    }

    pub(crate) fn topic(
        name: &str,
        error: i16,
        parts: &[(i32, i32, i32)],
    ) -> MetadataResponseTopic {
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_owned()))))
            .with_error_code(error)
            .with_partitions(
                parts
                    .iter()
                    .map(|&(p, leader, epoch)| {
                        MetadataResponsePartition::default()
                            .with_partition_index(p)
                            .with_leader_id(BrokerId(leader))
                            .with_leader_epoch(epoch)
                            .with_replica_nodes(vec![BrokerId(leader)])
                            .with_isr_nodes(vec![BrokerId(leader)])
                    })
                    .collect(),
            )
    }

    pub(crate) fn response(
        brokers: Vec<MetadataResponseBroker>,
        topics: Vec<MetadataResponseTopic>,
    ) -> MetadataResponse {
        MetadataResponse::default()
            .with_brokers(brokers)
            .with_cluster_id(Some(StrBytes::from_static_str("c1")))
            .with_controller_id(BrokerId(1))
            .with_topics(topics)
    }

    #[test]
    fn brokers_join_leave_and_move() {
        let mut m = Metadata::default();
        let c = m.apply(
            &response(vec![broker(1, "a", 9092), broker(2, "b", 9092)], vec![]),
            false,
        );
        assert_eq!(c.brokers_joined, [1, 2]);
        assert_eq!(m.cluster_id.as_deref(), Some("c1"));
        assert_eq!(m.controller_id, Some(1));
        let c = m.apply(
            &response(vec![broker(2, "b2", 9093), broker(3, "c", 9092)], vec![]),
            false,
        );
        assert_eq!(c.brokers_joined, [3]);
        assert_eq!(c.brokers_left, [1]);
        assert_eq!(c.brokers_moved, [2]);
        assert_eq!(m.brokers[&2].addr(), "b2:9093");
        assert_eq!(broker_addr("::1", 9092), "[::1]:9092");
    }

    fn broker_addr(host: &str, port: i32) -> String {
        BrokerMetadata {
            node_id: 0,
            host: host.into(),
            port,
            rack: None,
        }
        .addr()
    }

    #[test]
    fn leader_changes_and_stale_epochs() {
        let mut m = Metadata::default();
        let bs = || vec![broker(1, "a", 1), broker(2, "b", 2)];
        let c = m.apply(
            &response(bs(), vec![topic("t", 0, &[(1, 1, 5), (0, 1, 5)])]),
            false,
        );
        assert_eq!(c.leaders_changed.len(), 2);
        assert_eq!(m.topics["t"].partitions[0].partition, 0, "sorted");
        // Leader moves with a newer epoch: taken.
        let c = m.apply(
            &response(bs(), vec![topic("t", 0, &[(0, 2, 6), (1, 1, 5)])]),
            false,
        );
        assert_eq!(c.leaders_changed, [("t".to_owned(), 0)]);
        assert_eq!(
            m.partition("t", 0).map(|p| (p.leader, p.leader_epoch)),
            Some((2, 6))
        );
        // A stale response (older epoch) does not roll the leader back.
        let c = m.apply(
            &response(bs(), vec![topic("t", 0, &[(0, 1, 5), (1, 1, 5)])]),
            false,
        );
        assert!(c.leaders_changed.is_empty());
        assert_eq!(m.partition("t", 0).map(|p| p.leader), Some(2));
        // A response with an unknown epoch (-1) still moves the leader.
        m.apply(
            &response(bs(), vec![topic("t", 0, &[(0, 1, -1), (1, 1, -1)])]),
            false,
        );
        assert_eq!(m.partition("t", 0).map(|p| p.leader), Some(1));
    }

    #[test]
    fn unknown_leader_epoch_keeps_the_cached_epoch() {
        let mut m = Metadata::default();
        let bs = || vec![broker(1, "a", 1), broker(2, "b", 2)];
        m.apply(&response(bs(), vec![topic("t", 0, &[(0, 1, 7)])]), false);
        // -1 means "unknown", not "epoch -1": the known epoch stays; the leader is taken.
        let c = m.apply(&response(bs(), vec![topic("t", 0, &[(0, 2, -1)])]), false);
        assert_eq!(c.leaders_changed, [("t".to_owned(), 0)]);
        assert_eq!(
            m.partition("t", 0).map(|p| (p.leader, p.leader_epoch)),
            Some((2, 7))
        );
        // So an older epoch is still recognised as stale afterwards.
        let c = m.apply(&response(bs(), vec![topic("t", 0, &[(0, 1, 6)])]), false);
        assert!(c.leaders_changed.is_empty());
        assert_eq!(
            m.partition("t", 0).map(|p| (p.leader, p.leader_epoch)),
            Some((2, 7))
        );
        // The same -1 again is no change.
        let c = m.apply(&response(bs(), vec![topic("t", 0, &[(0, 2, -1)])]), false);
        assert!(c.leaders_changed.is_empty());
        // A newer epoch is taken.
        m.apply(&response(bs(), vec![topic("t", 0, &[(0, 1, 8)])]), false);
        assert_eq!(
            m.partition("t", 0).map(|p| (p.leader, p.leader_epoch)),
            Some((1, 8))
        );
        // With no cached epoch, -1 is what there is.
        m.apply(&response(bs(), vec![topic("u", 0, &[(0, 1, -1)])]), false);
        assert_eq!(m.partition("u", 0).map(|p| p.leader_epoch), Some(-1));
    }

    // `uuid` comes with the `mock` feature.
    #[cfg(feature = "mock")]
    #[test]
    fn recreated_topic_takes_its_new_epochs() {
        let mut m = Metadata::default();
        let bs = || vec![broker(1, "a", 1), broker(2, "b", 2)];
        let with_id = |id: u8, leader, epoch| {
            let mut t = topic("t", 0, &[(0, leader, epoch)]);
            t.topic_id = uuid::Uuid::from_bytes([id; 16]);
            t
        };
        m.apply(&response(bs(), vec![with_id(1, 1, 9)]), false);
        // Deleted and created again: a new topic id, epochs start over.
        m.apply(&response(bs(), vec![with_id(2, 2, 0)]), false);
        assert_eq!(
            m.partition("t", 0).map(|p| (p.leader, p.leader_epoch)),
            Some((2, 0))
        );
    }

    #[test]
    fn topics_removed_when_unknown_or_missing_from_full_refresh() {
        let mut m = Metadata::default();
        let bs = || vec![broker(1, "a", 1)];
        m.apply(
            &response(
                bs(),
                vec![topic("t", 0, &[(0, 1, 0)]), topic("u", 0, &[(0, 1, 0)])],
            ),
            false,
        );
        // A partial refresh keeps unlisted topics.
        m.apply(&response(bs(), vec![topic("t", 0, &[(0, 1, 0)])]), false);
        assert!(m.topics.contains_key("u"));
        let c = m.apply(&response(bs(), vec![topic("t", 3, &[])]), false);
        assert_eq!(c.topics_removed, ["t"]);
        assert!(!m.topics.contains_key("t"));
        let c = m.apply(&response(bs(), vec![topic("v", 0, &[(0, 1, 0)])]), true);
        assert_eq!(c.topics_removed, ["u"]);
        // A topic error other than "unknown" is kept with its error.
        m.apply(&response(bs(), vec![topic("w", 5, &[])]), false);
        assert_eq!(m.topics["w"].error, Some(KafkaCode::LeaderNotAvailable));
    }
}

//! OffsetFetch: a group's committed offsets. The admin client's `list_group_offsets` and a
//! group member's `committed` both build and read it here.

use std::collections::BTreeMap;

use super::code_error;
use crate::error::{Error, Result};
use crate::protocol::ApiKey;
use crate::protocol::StrBytes;
use crate::protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use crate::protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};

/// What an OffsetFetch asks for one group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OffsetFetchQuery<'a> {
    /// The group.
    pub(crate) group: &'a str,
    /// The partitions as `(topic, partition)`, or `None` for every partition the group has
    /// committed (v2+; older versions get an empty list).
    pub(crate) partitions: Option<&'a [(&'a str, i32)]>,
    /// The member id and epoch of a consumer-protocol member (KIP-848, sent at v9+), so that
    /// a fenced member does not read offsets as if it still owned the partitions.
    pub(crate) member: Option<(&'a str, i32)>,
    /// Ask the broker to wait for pending transactional commits (v7+).
    pub(crate) require_stable: bool,
}

/// A committed offset as OffsetFetch answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchedOffset {
    /// The committed offset (never negative: "no offset" is `None` around this).
    pub(crate) offset: i64,
    /// The leader epoch committed with it, if any (v5+).
    pub(crate) leader_epoch: Option<i32>,
    /// The metadata committed with it, as the broker gave it (possibly empty).
    pub(crate) metadata: Option<String>,
}

/// One partition of an OffsetFetch answer: `Ok(None)` where nothing is committed.
pub(crate) type PartitionAnswer = (String, i32, Result<Option<FetchedOffset>>);

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// The OffsetFetch request for `query` at `version`: v8+ carries a `groups` array (with the
/// member id and epoch at v9+), older versions the group and topics at the top level.
pub(crate) fn request(query: &OffsetFetchQuery<'_>, version: i16) -> OffsetFetchRequest {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for &(t, p) in query.partitions.into_iter().flatten() {
        by_topic.entry(t).or_default().push(p);
    }
    let group_id = GroupId(str_bytes(query.group));
    let mut req = OffsetFetchRequest::default();
    if version >= 8 {
        let topics = query.partitions.map(|_| {
            by_topic
                .iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopics::default()
                        .with_name(TopicName(str_bytes(t)))
                        .with_partition_indexes(ps.clone())
                })
                .collect()
        });
        let mut g = OffsetFetchRequestGroup::default()
            .with_group_id(group_id)
            .with_topics(topics);
        if version >= 9
            && let Some((id, epoch)) = query.member
        {
            g.member_id = Some(str_bytes(id));
            g.member_epoch = epoch;
        }
        req.groups = vec![g];
    } else {
        req.group_id = group_id;
        // v2+: null means every partition the group committed.
        req.topics = if query.partitions.is_none() && version >= 2 {
            None
        } else {
            Some(
                by_topic
                    .iter()
                    .map(|(t, ps)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(str_bytes(t)))
                            .with_partition_indexes(ps.clone())
                    })
                    .collect(),
            )
        };
    }
    if version >= 7 {
        req.require_stable = query.require_stable;
    }
    req
}

/// The group-level error of a response to a request for `group`, if any: the group's entry in
/// the v8+ layout (a response of that layout without it is unexpected), else the top-level
/// error code.
pub(crate) fn group_error(resp: &OffsetFetchResponse, group: &str) -> Option<Error> {
    let code = match resp.groups.iter().find(|g| g.group_id.0.as_str() == group) {
        Some(g) => g.error_code,
        None if !resp.groups.is_empty() => {
            return Some(
                Error::with_message(
                    crate::ErrorKind::UnexpectedResponse,
                    format!("the response does not mention group {group}"),
                )
                .api(ApiKey::OffsetFetch),
            );
        }
        None => resp.error_code,
    };
    code_error(code, ApiKey::OffsetFetch)
}

/// The fields of each partition of a list of OffsetFetch response topics, in order. A macro
/// because the two layouts (v0–v7 top-level topics, v8+ per-group topics) have distinct
/// generated types with the same fields.
macro_rules! partition_fields {
    ($topics:expr) => {
        $topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    let meta: Option<&StrBytes> = p.metadata.as_ref();
                    let epoch = p.committed_leader_epoch;
                    (
                        t.name.0.as_str(),
                        p.partition_index,
                        p.error_code,
                        p.committed_offset,
                        epoch,
                        meta,
                    )
                })
            })
            .collect::<Vec<_>>()
    };
}

/// The per-partition answers for `group`, in response order, from either layout. A partition
/// error is tagged with the partition; a negative offset is "nothing committed".
pub(crate) fn partitions(resp: &OffsetFetchResponse, group: &str) -> Vec<PartitionAnswer> {
    let fields = match resp.groups.iter().find(|g| g.group_id.0.as_str() == group) {
        Some(g) => partition_fields!(g.topics),
        None => partition_fields!(resp.topics),
    };
    fields
        .into_iter()
        .map(|(topic, p, code, offset, epoch, meta)| {
            let r = match code_error(code, ApiKey::OffsetFetch) {
                Some(e) => Err(e.on_partition(topic, p)),
                None if offset < 0 => Ok(None),
                None => Ok(Some(FetchedOffset {
                    offset,
                    leader_epoch: (epoch >= 0).then_some(epoch),
                    metadata: meta.map(|m| m.to_string()),
                })),
            };
            (topic.to_owned(), p, r)
        })
        .collect()
}

/// A v8+ response for tests here and of the callers: group `g`, topic `t`, partition 0 at
/// offset 7 (epoch 2, metadata `m`), partition 1 without an offset, partition 2 failed with
/// UNSTABLE_OFFSET_COMMIT.
#[cfg(test)]
pub(crate) fn sample_v8_response() -> OffsetFetchResponse {
    use crate::protocol::messages::offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
    };
    OffsetFetchResponse::default().with_groups(vec![
        OffsetFetchResponseGroup::default()
            .with_group_id(GroupId(str_bytes("g")))
            .with_topics(vec![
                OffsetFetchResponseTopics::default()
                    .with_name(TopicName(str_bytes("t")))
                    .with_partitions(vec![
                        OffsetFetchResponsePartitions::default()
                            .with_partition_index(0)
                            .with_committed_offset(7)
                            .with_committed_leader_epoch(2)
                            .with_metadata(Some(str_bytes("m"))),
                        OffsetFetchResponsePartitions::default()
                            .with_partition_index(1)
                            .with_committed_offset(-1),
                        OffsetFetchResponsePartitions::default()
                            .with_partition_index(2)
                            .with_error_code(crate::KafkaCode::UnstableOffsetCommit.code()),
                    ]),
            ]),
    ])
}

/// A v0–v7 response for tests here and of the callers: NOT_COORDINATOR for the group, topic
/// `t` partition 3 at offset 5 (no epoch).
#[cfg(test)]
pub(crate) fn sample_v7_response() -> OffsetFetchResponse {
    use crate::protocol::messages::offset_fetch_response::{
        OffsetFetchResponsePartition, OffsetFetchResponseTopic,
    };
    OffsetFetchResponse::default()
        .with_error_code(crate::KafkaCode::NotCoordinator.code())
        .with_topics(vec![
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes("t")))
                .with_partitions(vec![
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(3)
                        .with_committed_offset(5)
                        .with_committed_leader_epoch(-1),
                ]),
        ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorKind, KafkaCode};

    fn query<'a>(partitions: Option<&'a [(&'a str, i32)]>) -> OffsetFetchQuery<'a> {
        OffsetFetchQuery {
            group: "g",
            partitions,
            member: None,
            require_stable: false,
        }
    }

    #[test]
    fn request_layouts_per_version() {
        let tps = [("t", 1), ("t", 0)];
        let v8 = request(&query(Some(&tps)), 8);
        assert_eq!(v8.groups.len(), 1);
        let topics = v8.groups[0].topics.as_ref().map(|t| t.len());
        assert_eq!(topics, Some(1));
        assert!(v8.topics.is_none() || v8.topics.as_ref().is_some_and(|t| t.is_empty()));
        let all = request(&query(None), 8);
        assert!(all.groups[0].topics.is_none());
        let v7 = request(&query(None), 7);
        assert_eq!(v7.group_id.0.as_str(), "g");
        assert!(v7.topics.is_none());
        assert!(v7.groups.is_empty());
        let v1 = request(&query(Some(&tps)), 1);
        assert_eq!(
            v1.topics.as_ref().map(|t| t[0].partition_indexes.clone()),
            Some(vec![1, 0])
        );
        // Before v2 "every partition" cannot be said: an empty list goes.
        let v1_all = request(&query(None), 1);
        assert_eq!(v1_all.topics.map(|t| t.len()), Some(0));
    }

    #[test]
    fn member_epoch_from_v9_and_require_stable_from_v7() {
        let tps = [("a", 0), ("b", 3), ("a", 2)];
        let q = OffsetFetchQuery {
            group: "g",
            partitions: Some(&tps),
            member: Some(("m-1", 5)),
            require_stable: true,
        };
        let v9 = request(&q, 9);
        let g = &v9.groups[0];
        assert_eq!(g.member_id.as_ref().map(|m| m.as_str()), Some("m-1"));
        assert_eq!(g.member_epoch, 5);
        assert!(v9.require_stable);
        let by_topic: Vec<(String, Vec<i32>)> = g
            .topics
            .iter()
            .flatten()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect();
        assert_eq!(
            by_topic,
            [("a".to_owned(), vec![0, 2]), ("b".to_owned(), vec![3])]
        );
        let v8 = request(&q, 8);
        assert_eq!(v8.groups[0].member_id, None);
        assert_eq!(v8.groups[0].member_epoch, -1);
        assert!(v8.require_stable);
        let v6 = request(&q, 6);
        assert!(!v6.require_stable);
        let unstable = OffsetFetchQuery {
            require_stable: false,
            ..q
        };
        assert!(!request(&unstable, 9).require_stable);
    }

    #[test]
    fn v8_answers_per_partition_with_errors() {
        let resp = sample_v8_response();
        assert!(group_error(&resp, "g").is_none());
        let got = partitions(&resp, "g");
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].0.as_str(), got[0].1), ("t", 0));
        assert_eq!(
            got[0].2.as_ref().ok(),
            Some(&Some(FetchedOffset {
                offset: 7,
                leader_epoch: Some(2),
                metadata: Some("m".to_owned())
            }))
        );
        assert_eq!(got[1].2.as_ref().ok(), Some(&None));
        let e = got[2].2.as_ref().unwrap_err();
        assert_eq!(e.kafka_code(), Some(KafkaCode::UnstableOffsetCommit));
        assert_eq!(e.context().partition, Some(2));
        // Another group's answer is unexpected.
        let e = group_error(&resp, "other").unwrap_or_else(|| panic!("no error"));
        assert_eq!(e.kind(), &ErrorKind::UnexpectedResponse);
    }

    #[test]
    fn v7_answers_and_group_error() {
        let resp = sample_v7_response();
        assert_eq!(
            group_error(&resp, "g").and_then(|e| e.kafka_code()),
            Some(KafkaCode::NotCoordinator)
        );
        let got = partitions(&resp, "g");
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0.as_str(), got[0].1), ("t", 3));
        assert_eq!(
            got[0].2.as_ref().ok(),
            Some(&Some(FetchedOffset {
                offset: 5,
                leader_epoch: None,
                // Given as the broker gives it: empty, not absent.
                metadata: Some(String::new())
            }))
        );
    }
}

//! ListOffsets: offsets by time or position. The admin client's `list_offsets` and the
//! consumer's position lookups (resets, `offsets_for_times`, beginning and end offsets) both
//! build and read it here.

use std::collections::BTreeMap;

use super::code_error;
use crate::error::{Api, Error, ErrorKind, Result};
use crate::protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use crate::protocol::messages::{BrokerId, ListOffsetsRequest, ListOffsetsResponse, TopicName};
use crate::protocol::{ApiKey, IsolationLevel, StrBytes};

/// The earliest offset (the log start).
pub(crate) const EARLIEST: i64 = -2;
/// The latest offset (the end as the isolation level sees it).
pub(crate) const LATEST: i64 = -1;
/// The offset of the record with the largest timestamp (v7+).
pub(crate) const MAX_TIMESTAMP: i64 = -3;

/// One partition to look up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OffsetQuery<'a> {
    pub(crate) topic: &'a str,
    pub(crate) partition: i32,
    /// A timestamp (milliseconds since the epoch), or [`EARLIEST`], [`LATEST`],
    /// [`MAX_TIMESTAMP`].
    pub(crate) timestamp: i64,
    /// The leader epoch the caller knows (sent at v4+; -1 for none), so that a stale leader
    /// answers FENCED_LEADER_EPOCH instead of an offset.
    pub(crate) current_leader_epoch: i32,
}

/// One partition's answer, with the broker's "none" (-1) as `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListedPartition {
    /// The offset, or `None` (a timestamp after every record).
    pub(crate) offset: Option<i64>,
    /// The timestamp of the record at `offset` (timestamp lookups).
    pub(crate) timestamp: Option<i64>,
    /// The leader epoch of the record at `offset` (v4+).
    pub(crate) leader_epoch: Option<i32>,
}

fn unsupported(message: &str) -> Error {
    Error::new(ErrorKind::UnsupportedVersion {
        api: Api::of(ApiKey::ListOffsets),
    })
    .message(message.to_owned())
}

/// The ListOffsets request for `queries` at `version`, partitions grouped by topic, as a
/// consumer sends it (replica id -1). Versions that cannot say what is asked are refused with
/// `UnsupportedVersion` (as Java's minimum versions): v0 (another answer layout), the largest
/// timestamp before v7, read_committed before v2.
pub(crate) fn request<'a>(
    queries: impl IntoIterator<Item = OffsetQuery<'a>>,
    isolation: IsolationLevel,
    version: i16,
) -> Result<ListOffsetsRequest> {
    if version < 1 {
        return Err(unsupported("ListOffsets v0 is not supported"));
    }
    let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
    for q in queries {
        if q.timestamp == MAX_TIMESTAMP && version < 7 {
            return Err(
                unsupported("OffsetSpec::MaxTimestamp needs ListOffsets v7+")
                    .on_partition(q.topic, q.partition),
            );
        }
        let mut p = ListOffsetsPartition::default()
            .with_partition_index(q.partition)
            .with_timestamp(q.timestamp);
        if version >= 4 {
            p.current_leader_epoch = q.current_leader_epoch;
        }
        topics.entry(q.topic).or_default().push(p);
    }
    let mut req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, parts)| {
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.to_owned())))
                        .with_partitions(parts)
                })
                .collect(),
        );
    if version >= 2 {
        req.isolation_level = isolation.wire();
    } else if isolation == IsolationLevel::ReadCommitted {
        return Err(unsupported(
            "read_committed (OffsetSpec::LastStable) needs ListOffsets v2+",
        ));
    }
    Ok(req)
}

/// One partition's answer from `resp`, its error tagged with the partition.
fn answer(
    topic: &str,
    p: &crate::protocol::messages::list_offsets_response::ListOffsetsPartitionResponse,
) -> Result<ListedPartition> {
    if let Some(e) = code_error(p.error_code, ApiKey::ListOffsets) {
        return Err(e.on_partition(topic, p.partition_index));
    }
    Ok(ListedPartition {
        offset: (p.offset >= 0).then_some(p.offset),
        timestamp: (p.timestamp >= 0).then_some(p.timestamp),
        leader_epoch: (p.leader_epoch >= 0).then_some(p.leader_epoch),
    })
}

/// The answer for `topic`/`partition`, `None` if the response does not mention it.
pub(crate) fn find(
    resp: &ListOffsetsResponse,
    topic: &str,
    partition: i32,
) -> Option<Result<ListedPartition>> {
    resp.topics
        .iter()
        .filter(|t| t.name.0.as_str() == topic)
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .map(|p| answer(topic, p))
}

/// Every partition's answer, in response order, as `(topic, partition, answer)`.
pub(crate) fn answers(resp: &ListOffsetsResponse) -> Vec<(&str, i32, Result<ListedPartition>)> {
    resp.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.as_str(), p.partition_index, answer(&t.name.0, p)))
        })
        .collect()
}

/// A response for tests here and of the callers: topic `a`, partition 0 at offset 42
/// (timestamp 1000, epoch 3), partition 1 without an offset, partition 2 failed with
/// NOT_LEADER_OR_FOLLOWER.
#[cfg(test)]
pub(crate) fn sample_response() -> ListOffsetsResponse {
    use crate::protocol::messages::list_offsets_response::{
        ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
    };
    ListOffsetsResponse::default().with_topics(vec![
        ListOffsetsTopicResponse::default()
            .with_name(TopicName(StrBytes::from_static_str("a")))
            .with_partitions(vec![
                ListOffsetsPartitionResponse::default()
                    .with_partition_index(0)
                    .with_offset(42)
                    .with_timestamp(1000)
                    .with_leader_epoch(3),
                ListOffsetsPartitionResponse::default()
                    .with_partition_index(1)
                    .with_offset(-1)
                    .with_timestamp(-1)
                    .with_leader_epoch(-1),
                ListOffsetsPartitionResponse::default()
                    .with_partition_index(2)
                    .with_error_code(crate::KafkaCode::NotLeaderOrFollower.code()),
            ]),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KafkaCode;

    fn q(topic: &str, partition: i32, timestamp: i64, epoch: i32) -> OffsetQuery<'_> {
        OffsetQuery {
            topic,
            partition,
            timestamp,
            current_leader_epoch: epoch,
        }
    }

    #[test]
    fn request_groups_by_topic_per_version() {
        let queries = [
            q("b", 1, 1_700_000_000_000, 4),
            q("a", 0, EARLIEST, 2),
            q("a", 2, LATEST, -1),
        ];
        let req =
            request(queries, IsolationLevel::ReadCommitted, 4).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(req.replica_id, BrokerId(-1));
        assert_eq!(req.isolation_level, 1);
        let got: Vec<(&str, i32, i64, i32)> = req
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t, p)))
            .map(|(t, p)| {
                let epoch = p.current_leader_epoch;
                (t.name.0.as_str(), p.partition_index, p.timestamp, epoch)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", 0, EARLIEST, 2),
                ("a", 2, LATEST, -1),
                ("b", 1, 1_700_000_000_000, 4),
            ]
        );
        // Before v4 no current leader epoch goes.
        let v3 = request([q("a", 0, EARLIEST, 7)], IsolationLevel::ReadUncommitted, 3)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v3.topics[0].partitions[0].current_leader_epoch, -1);
        assert_eq!(v3.isolation_level, 0);
    }

    #[test]
    fn versions_that_cannot_say_it_are_refused() {
        let unsupported = |r: Result<ListOffsetsRequest>| {
            matches!(
                r.map(|_| ()).unwrap_err().kind(),
                ErrorKind::UnsupportedVersion { .. }
            )
        };
        let max = [q("a", 3, MAX_TIMESTAMP, -1)];
        assert!(unsupported(request(
            max,
            IsolationLevel::ReadUncommitted,
            6
        )));
        assert!(request(max, IsolationLevel::ReadUncommitted, 7).is_ok());
        let latest = [q("a", 0, LATEST, -1)];
        assert!(unsupported(request(
            latest,
            IsolationLevel::ReadCommitted,
            1
        )));
        assert!(request(latest, IsolationLevel::ReadUncommitted, 1).is_ok());
        assert!(unsupported(request(
            latest,
            IsolationLevel::ReadUncommitted,
            0
        )));
    }

    #[test]
    fn response_answers_with_errors_and_none() {
        let resp = sample_response();
        let all = answers(&resp);
        assert_eq!(
            all.iter().map(|(t, p, _)| (*t, *p)).collect::<Vec<_>>(),
            [("a", 0), ("a", 1), ("a", 2)]
        );
        assert_eq!(
            all[0].2.as_ref().ok(),
            Some(&ListedPartition {
                offset: Some(42),
                timestamp: Some(1000),
                leader_epoch: Some(3)
            })
        );
        assert_eq!(
            all[1].2.as_ref().ok(),
            Some(&ListedPartition {
                offset: None,
                timestamp: None,
                leader_epoch: None
            })
        );
        let e = all[2].2.as_ref().unwrap_err();
        assert_eq!(e.kafka_code(), Some(KafkaCode::NotLeaderOrFollower));
        assert_eq!(e.context().partition, Some(2));
        assert_eq!(e.context().topic.as_deref(), Some("a"));
        assert_eq!(
            find(&resp, "a", 0)
                .and_then(|r| r.ok())
                .and_then(|p| p.offset),
            Some(42)
        );
        assert!(find(&resp, "a", 9).is_none());
        assert!(find(&resp, "b", 0).is_none());
    }
}

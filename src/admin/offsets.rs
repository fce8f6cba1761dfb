//! Offsets by time and position (ListOffsets) and record deletion (DeleteRecords), each sent to
//! the partition's leader.

use std::collections::BTreeMap;

use super::{Admin, TopicPartition, code_error, join_all, missing, topic_name};
use crate::error::Result;
use crate::protocol::messages::delete_records_request::{
    DeleteRecordsPartition, DeleteRecordsTopic,
};
use crate::protocol::messages::{
    ApiKey, DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
};
use crate::protocol::requests::list_offsets::{self, EARLIEST, LATEST, MAX_TIMESTAMP, OffsetQuery};

/// Which offset [`Admin::list_offsets`] looks up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OffsetSpec {
    /// The log start offset (the first offset still stored).
    Earliest,
    /// The high watermark (the offset the next record will get), as read_uncommitted sees it.
    Latest,
    /// The last stable offset: the end as read_committed sees it (before any open
    /// transaction).
    LastStable,
    /// The first offset whose timestamp is at or after this time (milliseconds since the
    /// epoch); no offset (`None`) if every record is older.
    Timestamp(i64),
    /// The offset of the record with the largest timestamp (ListOffsets v7+).
    MaxTimestamp,
}

impl OffsetSpec {
    fn wire(self) -> (i64, IsolationLevel) {
        match self {
            OffsetSpec::Earliest => (EARLIEST, IsolationLevel::ReadUncommitted),
            OffsetSpec::Latest => (LATEST, IsolationLevel::ReadUncommitted),
            OffsetSpec::LastStable => (LATEST, IsolationLevel::ReadCommitted),
            OffsetSpec::Timestamp(t) => (t, IsolationLevel::ReadUncommitted),
            OffsetSpec::MaxTimestamp => (MAX_TIMESTAMP, IsolationLevel::ReadUncommitted),
        }
    }
}

pub use crate::protocol::IsolationLevel;

/// The answer of [`Admin::list_offsets`] for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListedOffset {
    /// The offset, or `None` when there is none (a timestamp after every record).
    pub offset: Option<i64>,
    /// The timestamp of the record at `offset` for timestamp lookups, else `None`.
    pub timestamp: Option<i64>,
    /// The leader epoch of the record at `offset`, if the broker said (v4+).
    pub leader_epoch: Option<i32>,
}

impl Admin {
    /// Looks offsets up: earliest, latest, last stable, or by timestamp. Partitions are grouped
    /// into one request per leader. One result per input, in input order (an unknown topic
    /// or partition is `Err` with `UNKNOWN_TOPIC_OR_PARTITION`).
    pub async fn list_offsets(
        &self,
        partitions: &[(TopicPartition, OffsetSpec)],
    ) -> Result<Vec<Result<ListedOffset>>> {
        self.per_item(partitions.len(), |pending| async move {
            let tps: Vec<&TopicPartition> = pending.iter().map(|&i| &partitions[i].0).collect();
            let leaders = self.leaders(&tps).await?;
            let mut out = Vec::with_capacity(pending.len());
            // One request per (leader, isolation level), except that a partition asked for
            // twice (say Earliest and Latest) goes into a second request: a response names
            // each partition once.
            let mut requests: Vec<((i32, IsolationLevel), Vec<usize>)> = Vec::new();
            for &i in &pending {
                let (tp, spec) = &partitions[i];
                match leaders.get(tp) {
                    Some(Ok(leader)) => {
                        let key = (*leader, spec.wire().1);
                        let slot = requests.iter_mut().find(|(k, items)| {
                            *k == key && !items.iter().any(|&j| partitions[j].0 == *tp)
                        });
                        match slot {
                            Some((_, items)) => items.push(i),
                            None => requests.push((key, vec![i])),
                        }
                    }
                    Some(Err(e)) => out.push((i, Err(e.clone()))),
                    None => out.push((i, Err(missing(ApiKey::Metadata, &tp.to_string())))),
                }
            }
            let answers = join_all(requests.into_iter().map(
                |((leader, isolation), items)| async move {
                    let mut out = Vec::new();
                    let broker = self.cluster.connection_for_broker(leader).await;
                    let sent = self
                        .send_for_items::<ListOffsetsRequest, _, _>(
                            broker,
                            &items,
                            &mut out,
                            |version| list_offsets_request(partitions, &items, isolation, version),
                        )
                        .await;
                    let Some(resp): Option<ListOffsetsResponse> = sent else {
                        return out;
                    };
                    for i in items {
                        let (tp, spec) = &partitions[i];
                        out.push((
                            i,
                            listed_offset(&resp, tp, *spec).map_err(|e| e.on_broker(leader)),
                        ));
                    }
                    out
                },
            ))
            .await;
            out.extend(answers.into_iter().flatten());
            Ok(out)
        })
        .await
    }

    /// Deletes the records of each partition before the given offset (`-1`: up to the high
    /// watermark), sent to each partition's leader. One result per input, in input order: the
    /// partition's new log start offset.
    pub async fn delete_records(
        &self,
        before: &[(TopicPartition, i64)],
    ) -> Result<Vec<Result<i64>>> {
        let timeout_ms = self.broker_timeout_ms();
        self.per_item(before.len(), |pending| async move {
            let tps: Vec<&TopicPartition> = pending.iter().map(|&i| &before[i].0).collect();
            let leaders = self.leaders(&tps).await?;
            let mut out = Vec::with_capacity(pending.len());
            // One request per leader; a partition named twice goes into a second request.
            let mut requests: Vec<(i32, Vec<usize>)> = Vec::new();
            for &i in &pending {
                let tp = &before[i].0;
                match leaders.get(tp) {
                    Some(Ok(leader)) => {
                        let slot = requests.iter_mut().find(|(l, items)| {
                            l == leader && !items.iter().any(|&j| before[j].0 == *tp)
                        });
                        match slot {
                            Some((_, items)) => items.push(i),
                            None => requests.push((*leader, vec![i])),
                        }
                    }
                    Some(Err(e)) => out.push((i, Err(e.clone()))),
                    None => out.push((i, Err(missing(ApiKey::Metadata, &tp.to_string())))),
                }
            }
            let answers = join_all(requests.into_iter().map(|(leader, items)| async move {
                let mut out = Vec::new();
                let broker = self.cluster.connection_for_broker(leader).await;
                let sent = self
                    .send_for_items::<DeleteRecordsRequest, _, _>(broker, &items, &mut out, |_| {
                        let mut topics: BTreeMap<&str, Vec<DeleteRecordsPartition>> =
                            BTreeMap::new();
                        for &i in &items {
                            let (tp, offset) = &before[i];
                            topics.entry(tp.topic()).or_default().push(
                                DeleteRecordsPartition::default()
                                    .with_partition_index(tp.partition)
                                    .with_offset(*offset),
                            );
                        }
                        Ok(DeleteRecordsRequest::default()
                            .with_timeout_ms(timeout_ms)
                            .with_topics(
                                topics
                                    .into_iter()
                                    .map(|(t, parts)| {
                                        DeleteRecordsTopic::default()
                                            .with_name(topic_name(t))
                                            .with_partitions(parts)
                                    })
                                    .collect(),
                            ))
                    })
                    .await;
                let Some(resp): Option<DeleteRecordsResponse> = sent else {
                    return out;
                };
                for i in items {
                    let tp = &before[i].0;
                    let p = resp
                        .topics
                        .iter()
                        .filter(|t| t.name.0.as_str() == tp.topic())
                        .flat_map(|t| t.partitions.iter())
                        .find(|p| p.partition_index == tp.partition);
                    let r = match p {
                        None => Err(missing(ApiKey::DeleteRecords, &tp.to_string())),
                        Some(p) => match code_error(p.error_code, None, ApiKey::DeleteRecords) {
                            Some(e) => {
                                Err(e.on_partition(tp.topic(), tp.partition).on_broker(leader))
                            }
                            None => Ok(p.low_watermark),
                        },
                    };
                    out.push((i, r));
                }
                out
            }))
            .await;
            out.extend(answers.into_iter().flatten());
            Ok(out)
        })
        .await
    }
}

/// The ListOffsets request for `items` (indexes into `partitions`) at `version` (built by
/// `protocol::requests::list_offsets`, shared with the consumer).
fn list_offsets_request(
    partitions: &[(TopicPartition, OffsetSpec)],
    items: &[usize],
    isolation: IsolationLevel,
    version: i16,
) -> Result<ListOffsetsRequest> {
    let queries = items.iter().map(|&i| {
        let (tp, spec) = &partitions[i];
        OffsetQuery {
            topic: tp.topic(),
            partition: tp.partition,
            timestamp: spec.wire().0,
            current_leader_epoch: -1,
        }
    });
    list_offsets::request(queries, isolation, version)
}

/// The answer for one partition in a ListOffsets response.
fn listed_offset(
    resp: &ListOffsetsResponse,
    tp: &TopicPartition,
    spec: OffsetSpec,
) -> Result<ListedOffset> {
    let p = list_offsets::find(resp, tp.topic(), tp.partition)
        .ok_or_else(|| missing(ApiKey::ListOffsets, &tp.to_string()))??;
    let by_time = matches!(spec, OffsetSpec::Timestamp(_) | OffsetSpec::MaxTimestamp);
    Ok(ListedOffset {
        offset: p.offset,
        timestamp: p.timestamp.filter(|_| by_time),
        leader_epoch: p.leader_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use crate::KafkaCode;
    use crate::protocol::messages::BrokerId;

    fn tp(t: &str, p: i32) -> TopicPartition {
        TopicPartition::new(t, p)
    }

    #[test]
    fn request_groups_partitions_by_topic_and_encodes_specs() {
        let parts = vec![
            (tp("a", 0), OffsetSpec::Earliest),
            (tp("b", 1), OffsetSpec::Timestamp(1_700_000_000_000)),
            (tp("a", 2), OffsetSpec::Latest),
            (tp("a", 3), OffsetSpec::MaxTimestamp),
        ];
        let req = list_offsets_request(&parts, &[0, 1, 2, 3], IsolationLevel::ReadUncommitted, 9)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(req.replica_id, BrokerId(-1));
        let got: Vec<(String, Vec<(i32, i64)>)> = req
            .topics
            .iter()
            .map(|t| {
                (
                    t.name.0.to_string(),
                    t.partitions
                        .iter()
                        .map(|p| (p.partition_index, p.timestamp))
                        .collect(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a".to_owned(), vec![(0, -2), (2, -1), (3, -3)]),
                ("b".to_owned(), vec![(1, 1_700_000_000_000)]),
            ]
        );
        // MaxTimestamp needs v7; read_committed needs v2.
        let e = list_offsets_request(&parts, &[3], IsolationLevel::ReadUncommitted, 6).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::UnsupportedVersion { .. }));
        let committed = [(tp("a", 0), OffsetSpec::LastStable)];
        let req = list_offsets_request(&committed, &[0], IsolationLevel::ReadCommitted, 5)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(req.isolation_level, 1);
        assert!(list_offsets_request(&committed, &[0], IsolationLevel::ReadCommitted, 1).is_err());
    }

    #[test]
    fn response_parsing_per_partition() {
        // a/0: 42 (timestamp 1000, epoch 3); a/1: none; a/2: NOT_LEADER_OR_FOLLOWER.
        let resp = list_offsets::sample_response();
        let r = listed_offset(&resp, &tp("a", 0), OffsetSpec::Timestamp(900));
        assert_eq!(
            r.ok(),
            Some(ListedOffset {
                offset: Some(42),
                timestamp: Some(1000),
                leader_epoch: Some(3)
            })
        );
        let r = listed_offset(&resp, &tp("a", 0), OffsetSpec::Latest);
        assert_eq!(
            r.ok().and_then(|o| o.timestamp),
            None,
            "no timestamp for Latest"
        );
        let r = listed_offset(&resp, &tp("a", 1), OffsetSpec::Timestamp(i64::MAX));
        assert_eq!(r.ok().map(|o| o.offset), Some(None));
        let e = listed_offset(&resp, &tp("a", 2), OffsetSpec::Earliest).unwrap_err();
        assert_eq!(e.kafka_code(), Some(KafkaCode::NotLeaderOrFollower));
        assert_eq!(e.context().partition, Some(2));
        let e = listed_offset(&resp, &tp("a", 9), OffsetSpec::Earliest).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::UnexpectedResponse);
    }
}

//! rekafka's own consumer and records, as the listener container sees them.
//!
//! Everything here goes through the consumer's public API.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::classify::{DeserializationFailed, RecordPart};
use super::consumer::{CommittedOffsets, ContainerConsumer, ListenerRecord, OffsetToCommit};
use super::tracker::PartitionKey;
use crate::consumer::failure_detail;
use crate::consumer::{Consumer, ConsumerRecord, Deserializer};
use crate::group::{self, OffsetAndMetadata};
use crate::protocol::record::{Header, Headers};
use crate::{Error, Result};

/// The methods [`ListenerConsumerRecord`] and [`ShareListenerRecord`](super::ShareListenerRecord)
/// share, written once: both keep the consumed record in `record` (a `ConsumerRecord` or a
/// `ShareRecord`, which have the same public fields `topic` … `headers` but no common trait, being
/// the consumer's and the share consumer's own types) beside the container's `extra_headers` and
/// `failure`. `text`: the inherent UTF-8 and header look-ups; `record`: the [`ListenerRecord`]
/// methods but `consumer_group` (the two keep the group differently).
macro_rules! listener_record_methods {
    (text) => {
        /// The value as UTF-8 text, if it is.
        pub fn value_str(&self) -> Option<&str> {
            self.record
                .value
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok())
        }

        /// The key as UTF-8 text, if it is.
        pub fn key_str(&self) -> Option<&str> {
            self.record
                .key
                .as_deref()
                .and_then(|v| std::str::from_utf8(v).ok())
        }

        /// The value of the last header called `name`, if any (a null value is `Some(None)`).
        pub fn header(&self, name: &str) -> Option<Option<::bytes::Bytes>> {
            $crate::listener::ListenerRecord::headers(self)
                .into_iter()
                .rev()
                .find(|h| h.key() == name)
                .map(|h| h.value)
        }
    };
    (record) => {
        fn topic(&self) -> &str {
            &self.record.topic
        }

        fn partition(&self) -> i32 {
            self.record.partition
        }

        fn offset(&self) -> i64 {
            self.record.offset
        }

        fn timestamp(&self) -> i64 {
            self.record.timestamp
        }

        fn timestamp_type(&self) -> $crate::protocol::record::TimestampType {
            self.record.timestamp_type
        }

        fn key(&self) -> Option<&::bytes::Bytes> {
            self.record.key.as_ref()
        }

        fn value(&self) -> Option<&::bytes::Bytes> {
            self.record.value.as_ref()
        }

        fn headers(&self) -> Vec<$crate::protocol::record::Header> {
            $crate::listener::adapter::overlay_headers(
                &self.record.headers,
                self.extra_headers.as_deref(),
            )
        }

        fn with_header(&self, header: $crate::protocol::record::Header) -> Self {
            let extra =
                $crate::listener::adapter::with_extra_header(self.extra_headers.as_deref(), header);
            Self {
                extra_headers: Some(::std::sync::Arc::new(extra)),
                ..self.clone()
            }
        }

        fn deserialization_failure(&self) -> Option<$crate::listener::DeserializationFailed> {
            self.failure.as_deref().cloned()
        }

        fn with_deserialization_failure(
            &self,
            failure: $crate::listener::DeserializationFailed,
        ) -> Self {
            Self {
                failure: Some(::std::sync::Arc::new(failure)),
                ..self.clone()
            }
        }
    };
}
pub(crate) use listener_record_methods;

fn to_group_tp(tp: &PartitionKey) -> group::TopicPartition {
    group::TopicPartition {
        topic: tp.0.clone(),
        partition: tp.1,
    }
}

fn from_group_tp(tp: &group::TopicPartition) -> PartitionKey {
    (tp.topic.clone(), tp.partition)
}

/// One poll's records and what they share, kept once per poll.
#[derive(Debug)]
struct Poll {
    /// The records per partition, as the consumer's poll grouped them.
    parts: Vec<Vec<ConsumerRecord>>,
    /// The consumer group of the consumer that polled the records.
    group: Option<Arc<str>>,
}

/// One record of a poll's records, which are shared by one reference count (one allocation per
/// poll, none per record; cloning a record is one reference count).
#[derive(Debug, Clone)]
struct SharedRecord {
    poll: Arc<Poll>,
    /// The record's partition in `poll.parts`, and its place there.
    part: usize,
    index: usize,
}

impl std::ops::Deref for SharedRecord {
    type Target = ConsumerRecord;

    fn deref(&self) -> &ConsumerRecord {
        // `part` and `index` are always within `poll` (all set together below).
        &self.poll.parts[self.part][self.index]
    }
}

/// A consumed record for the container: the consumer's record plus the headers the container
/// adds (the delivery attempt) and an optional deserialization failure.
#[derive(Debug, Clone)]
pub struct ListenerConsumerRecord {
    /// Shared, so that handing the record to the handler while keeping it for the error
    /// handler costs one reference count, not a copy.
    record: SharedRecord,
    /// Headers the container added (replacing same-named ones); usually none.
    extra_headers: Option<Arc<Vec<Header>>>,
    failure: Option<Arc<DeserializationFailed>>,
}

impl ListenerConsumerRecord {
    /// The consumer's record.
    pub fn record(&self) -> &ConsumerRecord {
        &self.record
    }

    /// The record's key bytes.
    pub fn key_bytes(&self) -> Option<&Bytes> {
        self.record.key.as_ref()
    }

    /// The record's value bytes.
    pub fn value_bytes(&self) -> Option<&Bytes> {
        self.record.value.as_ref()
    }

    listener_record_methods!(text);
}

impl From<ConsumerRecord> for ListenerConsumerRecord {
    fn from(record: ConsumerRecord) -> Self {
        ListenerConsumerRecord {
            record: SharedRecord {
                poll: Arc::new(Poll {
                    parts: vec![vec![record]],
                    group: None,
                }),
                part: 0,
                index: 0,
            },
            extra_headers: None,
            failure: None,
        }
    }
}

/// A record's headers with `extra` laid over them: an extra header replaces the record's
/// headers of the same key (the listener records' `headers`).
pub(crate) fn overlay_headers(record: &Headers, extra: Option<&Vec<Header>>) -> Vec<Header> {
    let extra: &[Header] = extra.map_or(&[], Vec::as_slice);
    let replaced = |h: &Header| extra.iter().any(|x| x.key() == h.key());
    record
        .iter()
        .filter(|h| !replaced(h))
        .chain(extra.iter().cloned())
        .collect()
}

/// `extra` with `header` set (replacing one of the same key): the listener records'
/// `with_header`.
pub(crate) fn with_extra_header(extra: Option<&Vec<Header>>, header: Header) -> Vec<Header> {
    let mut extra: Vec<Header> = extra
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter(|h| h.key() != header.key())
        .cloned()
        .collect();
    extra.push(header);
    extra
}

impl ListenerRecord for ListenerConsumerRecord {
    listener_record_methods!(record);

    fn consumer_group(&self) -> Option<&str> {
        self.record.poll.group.as_deref()
    }
}

/// The container owns the consumer; `poll` must only be raced against a stop (after which the
/// consumer is closed).
impl ContainerConsumer for Consumer {
    type Record = ListenerConsumerRecord;

    fn client_id(&self) -> &str {
        &self.cluster().config().connection.client_id
    }

    async fn poll(&mut self, timeout: Duration) -> Result<Vec<ListenerConsumerRecord>> {
        // Per-partition failures (`records.errors()`) are not poll failures: the consumer
        // logs them and keeps them in `failed_partitions`, where the container finds them.
        let records = Consumer::poll(self, timeout).await?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // The poll's per-partition vectors are kept as they are: no record is moved (moving
        // each one into a flat vector was about 5 % of the container's time), and a record
        // is one reference count on the poll plus its place.
        let n = records.len();
        let parts: Vec<Vec<ConsumerRecord>> = records
            .into_partitions()
            .into_iter()
            .map(|(_, recs)| recs)
            .collect();
        let mut out = Vec::with_capacity(n);
        let poll = Arc::new(Poll {
            parts,
            group: self.config().group_id.as_deref().map(Arc::from),
        });
        for (part, recs) in poll.parts.iter().enumerate() {
            out.extend((0..recs.len()).map(|index| ListenerConsumerRecord {
                record: SharedRecord {
                    poll: poll.clone(),
                    part,
                    index,
                },
                extra_headers: None,
                failure: None,
            }));
        }
        Ok(out)
    }

    fn seek(&mut self, tp: &PartitionKey, offset: i64) -> Result<()> {
        Consumer::seek(self, &to_group_tp(tp), offset)
    }

    fn pause(&mut self, tps: &[PartitionKey]) -> Result<()> {
        let tps: Vec<group::TopicPartition> = tps.iter().map(to_group_tp).collect();
        Consumer::pause(self, &tps)
    }

    fn resume(&mut self, tps: &[PartitionKey]) -> Result<()> {
        let tps: Vec<group::TopicPartition> = tps.iter().map(to_group_tp).collect();
        Consumer::resume(self, &tps)
    }

    fn failed_partitions(&self) -> Vec<(PartitionKey, Error)> {
        Consumer::failed_partitions(self)
            .into_iter()
            .map(|f| (from_group_tp(&f.partition), f.error))
            .collect()
    }

    fn assignment(&self) -> Vec<PartitionKey> {
        Consumer::assignment(self)
            .iter()
            .map(from_group_tp)
            .collect()
    }

    fn assignment_ids(&self) -> Vec<(PartitionKey, u64)> {
        Consumer::assignment_ids(self)
            .iter()
            .map(|(tp, id)| (from_group_tp(tp), *id))
            .collect()
    }

    async fn commit(&mut self, offsets: Vec<OffsetToCommit>) -> Result<()> {
        let offsets: Vec<(group::TopicPartition, OffsetAndMetadata)> = offsets
            .into_iter()
            .map(|o| {
                let mut om = OffsetAndMetadata::new(o.offset);
                if !o.metadata.is_empty() {
                    om.metadata = Some(o.metadata);
                }
                (to_group_tp(&o.partition), om)
            })
            .collect();
        self.commit_offsets(&offsets).await
    }

    async fn committed(&mut self, tps: &[PartitionKey]) -> Result<CommittedOffsets> {
        let gtps: Vec<group::TopicPartition> = tps.iter().map(to_group_tp).collect();
        let map = Consumer::committed(self, &gtps).await?;
        Ok(tps
            .iter()
            .map(|tp| {
                let c = map.get(&to_group_tp(tp)).cloned().flatten().map(|om| {
                    let metadata = om.metadata.unwrap_or_default();
                    (om.offset, metadata)
                });
                (tp.clone(), c)
            })
            .collect())
    }

    fn group_id(&self) -> Option<String> {
        self.config().group_id.clone()
    }

    fn transaction_group_metadata(&self) -> Option<crate::transaction::ConsumerGroupMetadata> {
        crate::transaction::ConsumerGroupMetadata::from_consumer(self)
    }

    fn auto_commit_enabled(&self) -> bool {
        Consumer::auto_commit_enabled(self)
    }

    fn close_link(&self) -> crate::task::CloseLink {
        Consumer::close_link(self)
    }
    fn disable_auto_commit(&mut self) {
        Consumer::disable_auto_commit(self)
    }

    fn rebalance_pending(&self) -> bool {
        Consumer::rebalance_pending(self)
    }

    async fn close(&mut self) -> Result<()> {
        Consumer::close(self).await
    }
}

/// A deserialization check for [`ContainerBuilder::deserialization_check`]: runs `key` and
/// `value` on each record; a record that fails never reaches the handler and goes to the
/// recoverer on its first failure, with its raw bytes.
///
/// [`ContainerBuilder::deserialization_check`]: super::ContainerBuilder::deserialization_check
pub fn deserialization_check<K, V>(
    key: K,
    value: V,
) -> impl Fn(&ListenerConsumerRecord) -> std::result::Result<(), DeserializationFailed>
+ Send
+ Sync
+ 'static
where
    K: Deserializer + 'static,
    V: Deserializer + 'static,
{
    move |r: &ListenerConsumerRecord| match r.record.deserialize_parts(&key, &value) {
        Err((error, is_key)) => Err(DeserializationFailed {
            part: if is_key {
                RecordPart::Key
            } else {
                RecordPart::Value
            },
            // "deserialization of the record's value failed: orders-3@42: not valid UTF-8"
            message: format!("{}: {}", r.record.coordinates(), failure_detail(&error)),
            // The key failed: does the value too?
            value_failure: if is_key {
                r.record
                    .deserialize_value(&value)
                    .err()
                    .map(|e| format!("{}: {}", r.record.coordinates(), failure_detail(&e)))
            } else {
                None
            },
        }),
        Ok(_) => Ok(()),
    }
}

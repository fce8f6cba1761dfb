//! Shared by the dead-letter tests: the listener container driven by rekafka's real consumer
//! (a thin `ContainerConsumer` adapter over `rekafka::consumer::Consumer`, manually assigned
//! and committing in a group), records that may fail to "deserialize", and helpers.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rekafka::cluster::Cluster;
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, ConsumerRecord, OffsetAndMetadata, OffsetReset,
    StartOffset,
};
use rekafka::listener::{
    CommittedOffsets, ContainerConsumer, DeserializationFailed, ListenerRecord, OffsetToCommit,
    PartitionKey, RecordPart,
};
use rekafka::protocol::record::{Header, TimestampType};

/// A consumed record; a value starting with 0xFF "fails to deserialize".
#[derive(Clone, Debug)]
pub struct KRec(pub ConsumerRecord);

impl ListenerRecord for KRec {
    fn topic(&self) -> &str {
        &self.0.topic
    }
    fn partition(&self) -> i32 {
        self.0.partition
    }
    fn offset(&self) -> i64 {
        self.0.offset
    }
    fn timestamp(&self) -> i64 {
        self.0.timestamp
    }
    fn timestamp_type(&self) -> TimestampType {
        self.0.timestamp_type
    }
    fn key(&self) -> Option<&Bytes> {
        self.0.key.as_ref()
    }
    fn value(&self) -> Option<&Bytes> {
        self.0.value.as_ref()
    }
    fn headers(&self) -> Vec<Header> {
        self.0.headers.iter().collect()
    }
    fn with_header(&self, header: Header) -> Self {
        // The consumer's `Headers` are parsed lazily from bytes; the tests do not add headers.
        let _ = header;
        self.clone()
    }
    fn deserialization_failure(&self) -> Option<DeserializationFailed> {
        self.0
            .value
            .as_deref()
            .filter(|v| v.first() == Some(&0xff))
            .map(|_| DeserializationFailed {
                part: RecordPart::Value,
                message: "value is not UTF-8".into(),
                value_failure: None,
            })
    }
    fn with_deserialization_failure(&self, _failure: DeserializationFailed) -> Self {
        // This record type derives its failure from the value bytes; nothing to store.
        self.clone()
    }
}

fn gtp(tp: &PartitionKey) -> rekafka::consumer::TopicPartition {
    rekafka::consumer::TopicPartition::new(&*tp.0, tp.1)
}

/// The container's view of a manually assigned rekafka consumer committing in `group`.
pub struct KConsumer {
    pub consumer: Consumer,
    group: String,
}

impl KConsumer {
    /// A consumer of every partition of `topic` in `0..partitions`, starting from the group's
    /// committed offsets (else the beginning).
    pub fn new(cluster: Cluster, group: &str, topic: &str, partitions: i32) -> KConsumer {
        let config = ConsumerConfig::new()
            .with_group_id(group)
            .with_auto_offset_reset(OffsetReset::Earliest)
            .with_auto_commit(AutoCommit::Disabled)
            .with_fetch_max_wait(Duration::from_millis(50));
        let consumer = Consumer::new(cluster, config).expect("consumer");
        consumer
            .assign((0..partitions).map(|p| {
                (
                    rekafka::consumer::TopicPartition::new(topic, p),
                    StartOffset::Committed,
                )
            }))
            .expect("assign");
        KConsumer {
            consumer,
            group: group.to_owned(),
        }
    }
}

impl ContainerConsumer for KConsumer {
    type Record = KRec;

    async fn poll(&mut self, timeout: Duration) -> rekafka::Result<Vec<KRec>> {
        let recs = self.consumer.poll(timeout).await?;
        for (tp, e) in recs.errors() {
            eprintln!("poll error on {tp}: {e}");
        }
        Ok(recs.iter().cloned().map(KRec).collect())
    }

    fn seek(&mut self, tp: &PartitionKey, offset: i64) -> rekafka::Result<()> {
        self.consumer.seek(&gtp(tp), offset)
    }

    fn pause(&mut self, tps: &[PartitionKey]) -> rekafka::Result<()> {
        self.consumer
            .pause(&tps.iter().map(gtp).collect::<Vec<_>>())
    }

    fn resume(&mut self, tps: &[PartitionKey]) -> rekafka::Result<()> {
        self.consumer
            .resume(&tps.iter().map(gtp).collect::<Vec<_>>())
    }

    fn assignment(&self) -> Vec<PartitionKey> {
        self.consumer
            .assignment()
            .into_iter()
            .map(|tp| (Arc::from(tp.topic()), tp.partition))
            .collect()
    }

    async fn commit(&mut self, offsets: Vec<OffsetToCommit>) -> rekafka::Result<()> {
        let offsets: Vec<_> = offsets
            .iter()
            .map(|o| {
                let mut m = OffsetAndMetadata::new(o.offset);
                m.metadata = Some(o.metadata.clone());
                (gtp(&o.partition), m)
            })
            .collect();
        self.consumer.commit_offsets(&offsets).await
    }

    async fn committed(&mut self, tps: &[PartitionKey]) -> rekafka::Result<CommittedOffsets> {
        let got = self
            .consumer
            .committed(&tps.iter().map(gtp).collect::<Vec<_>>())
            .await?;
        Ok(tps
            .iter()
            .map(|tp| {
                let c = got.get(&gtp(tp)).cloned().flatten();
                (
                    tp.clone(),
                    c.map(|m| (m.offset, m.metadata.unwrap_or_default())),
                )
            })
            .collect())
    }

    fn group_id(&self) -> Option<String> {
        Some(self.group.clone())
    }

    async fn close(&mut self) -> rekafka::Result<()> {
        self.consumer.close().await
    }
}

/// Reads every record of `topic` partitions `0..partitions` from the beginning until
/// `expected` arrived (or `timeout` passed), without a group.
pub async fn read_all(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Vec<ConsumerRecord> {
    let config = ConsumerConfig::new()
        .with_auto_commit(AutoCommit::Disabled)
        .with_fetch_max_wait(Duration::from_millis(50));
    let consumer = Consumer::new(cluster.clone(), config).expect("consumer");
    consumer
        .assign((0..partitions).map(|p| {
            (
                rekafka::consumer::TopicPartition::new(topic, p),
                StartOffset::Beginning,
            )
        }))
        .expect("assign");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < expected && tokio::time::Instant::now() < deadline {
        let recs = consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll");
        out.extend(recs.iter().cloned());
    }
    // Linger a little to catch any extra (duplicate) records.
    let linger = tokio::time::Instant::now() + Duration::from_millis(500);
    while tokio::time::Instant::now() < linger {
        let recs = consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll");
        out.extend(recs.iter().cloned());
    }
    let _ = consumer.close().await;
    out
}

/// The last value of header `name`.
pub fn header(r: &ConsumerRecord, name: &str) -> Option<Vec<u8>> {
    r.headers
        .iter()
        .filter(|h| h.key() == name)
        .last()
        .and_then(|h| h.value().map(<[u8]>::to_vec))
}

/// Headers as (name, value) pairs.
pub fn header_pairs(r: &ConsumerRecord) -> Vec<(String, Option<Vec<u8>>)> {
    r.headers
        .iter()
        .map(|h| (h.key().to_owned(), h.value().map(<[u8]>::to_vec)))
        .collect()
}

//! The producing half shared by the dead-letter publisher and republishing: send, wait
//! with a timeout, remember deliveries that timed out.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;
use crate::cluster::Cluster;
use crate::producer::{DeliveryFuture, Producer, Record, RecordMetadata};

/// The source record a publication is for: (topic, partition, offset, destination topic).
type PendingKey = (Arc<str>, i32, i64, Arc<str>);

/// The producing half shared by [`DeadLetterPublisher`] and
/// [`RepublishToTail`](super::RepublishToTail): send, wait with a timeout, remember deliveries
/// that timed out.
pub(crate) struct Sender {
    pub(super) cluster: Cluster,
    pub(super) owns_cluster: bool,
    pub(super) producer: Producer,
    pub(super) owns_producer: bool,
    pub(super) timeout: Duration,
    pub(super) verification: PartitionVerification,
    /// Destination topic → (partition count, when it was last read from the cluster).
    pub(super) partitions: Mutex<HashMap<String, (i32, Instant)>>,
    pub(super) pending: Mutex<HashMap<PendingKey, DeliveryFuture>>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sender {
    /// The partition to send to: `partition` if the topic has it (or it cannot be checked),
    /// else `None` (the partitioner chooses).
    pub(crate) async fn verified_partition(&self, topic: &str, partition: i32) -> Option<i32> {
        if partition < 0 {
            return None;
        }
        if self.verification == PartitionVerification::Off {
            return Some(partition);
        }
        let cached = lock(&self.partitions).get(topic).copied();
        let count = match cached {
            Some((count, _)) if partition < count => return Some(partition),
            Some((count, at)) if at.elapsed() < METADATA_REFRESH_INTERVAL => Some(count),
            _ => {
                // Not cached, or cached without this partition: read it again (refreshing the
                // cluster's cache when it is there already but lacks the partition).
                if cached.is_some() {
                    let _ = self.cluster.refresh_topics(&[topic]).await;
                }
                match self.cluster.partitions(topic).await {
                    Ok(parts) => {
                        let count = parts.iter().map(|p| p.partition + 1).max().unwrap_or(0);
                        lock(&self.partitions).insert(topic.to_owned(), (count, Instant::now()));
                        Some(count)
                    }
                    Err(e) => {
                        tracing::debug!(
                            topic,
                            error = %e,
                            "cannot verify the dead-letter partition; keeping it"
                        );
                        None
                    }
                }
            }
        };
        match count {
            Some(count) if partition >= count => {
                tracing::warn!(
                    topic,
                    partition,
                    partitions = count,
                    "destination partition does not exist (the dead-letter topic has fewer \
                     partitions than the source); the partitioner chooses"
                );
                None
            }
            _ => Some(partition),
        }
    }

    /// Publishes `record` for the failed record `source` and waits for its acknowledgement
    /// (the caller logs it with [`log_sent`]).
    pub(crate) async fn publish<R: ListenerRecord>(
        self: &Arc<Self>,
        source: &R,
        record: Record,
    ) -> Result<RecordMetadata, DeadLetterError> {
        self.start(source, record).await?.await
    }

    /// Sends `record` for the failed record `source` — or, when an earlier publication for it
    /// timed out and is still pending, takes that delivery instead of sending a second copy —
    /// and returns the wait for its acknowledgement (up to the send timeout, counted from now).
    pub(crate) async fn start<R: ListenerRecord>(
        self: &Arc<Self>,
        source: &R,
        record: Record,
    ) -> Result<
        impl Future<Output = Result<RecordMetadata, DeadLetterError>> + Send + 'static,
        DeadLetterError,
    > {
        let (topic, partition, offset) = (source.topic(), source.partition(), source.offset());
        let destination: Arc<str> = record.topic.clone();
        let earlier = {
            let mut pending = lock(&self.pending);
            // The key is built (an allocation) only when some delivery timed out earlier.
            if pending.is_empty() {
                None
            } else {
                pending.remove(&(Arc::from(topic), partition, offset, destination.clone()))
            }
        };
        let delivery = match earlier {
            // A publication that timed out earlier: if it has failed, send again; else wait
            // for it rather than sending a duplicate.
            Some(d) if !matches!(d.try_result(), Some(Err(_))) => d,
            _ => self
                .producer
                .send(record)
                .await
                .map_err(|error| DeadLetterError::Send {
                    destination: destination.to_string(),
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    error,
                })?,
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let this = self.clone();
        let topic: Arc<str> = Arc::from(topic);
        Ok(async move {
            let mut delivery = delivery;
            // Usually acknowledged by the time anyone waits: no timer then.
            let outcome = match delivery.try_result() {
                Some(done) => Ok(done),
                None => {
                    // Waiting starts now: do not let the dead letter linger.
                    this.producer.send_buffered();
                    tokio::time::timeout_at(deadline, &mut delivery).await
                }
            };
            match outcome {
                Ok(Ok(meta)) => Ok(meta),
                Ok(Err(error)) => Err(DeadLetterError::Send {
                    destination: destination.to_string(),
                    topic: topic.to_string(),
                    partition,
                    offset,
                    error,
                }),
                Err(_) => {
                    let mut pending = lock(&this.pending);
                    if pending.len() >= MAX_PENDING {
                        pending.retain(|_, d| d.try_result().is_none());
                    }
                    if pending.len() < MAX_PENDING {
                        let key: PendingKey =
                            (topic.clone(), partition, offset, destination.clone());
                        pending.insert(key, delivery);
                    }
                    Err(DeadLetterError::Timeout {
                        destination: destination.to_string(),
                        topic: topic.to_string(),
                        partition,
                        offset,
                        timeout: this.timeout,
                    })
                }
            }
        })
    }

    pub(crate) async fn close(&self) {
        if self.owns_producer {
            self.producer.close().await;
        } else {
            self.producer.flush().await;
        }
        if self.owns_cluster {
            self.cluster.close().await;
        }
    }
}

/// Logs at DEBUG that the copy of the failed record `source` is acknowledged at `sent`: `what`
/// says what it was (a dead letter, a republication, a forward to a retry topic). The three
/// publishers on this sender log alike (`topic`/`partition`/`offset` of the source,
/// `to`/`to_partition`/`to_offset` of the copy), so one filter follows a record's copies.
pub(crate) fn log_sent<R: ListenerRecord>(
    source: &R,
    sent: &RecordMetadata,
    what: &dyn std::fmt::Display,
) {
    tracing::debug!(
        topic = source.topic(),
        partition = source.partition(),
        offset = source.offset(),
        to = %sent.topic,
        to_partition = sent.partition,
        to_offset = sent.offset,
        "{what}"
    );
}

/// [`Client::close`](crate::Client::close) closes a publisher the client made as its
/// [`close`](super::DeadLetterPublisher::close) does.
impl crate::task::Closeable for Sender {
    fn close_now(self: Arc<Self>) -> crate::task::CloseFuture {
        Box::pin(async move { self.close().await })
    }
}

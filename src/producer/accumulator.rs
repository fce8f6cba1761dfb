//! The record accumulator: per-partition batches that `send` appends to, and the completion
//! slot every record of a batch shares.

use std::collections::VecDeque;

use crate::hash::FastMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::task::{Context, Poll, Waker};

use tokio::time::Instant;

use super::record::{ProduceError, RecordMetadata};
use crate::protocol::record::BatchBuilder;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The outcome of a batch, shared by all of its records.
#[derive(Debug, Clone)]
pub(crate) enum BatchOutcome {
    Delivered {
        base_offset: i64,
        log_append_time: i64,
    },
    Failed(ProduceError),
}

/// The completion slot of one batch: one per batch, never one per record.
#[derive(Debug)]
pub(crate) struct BatchShared {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    result: OnceLock<BatchOutcome>,
    wakers: Mutex<Vec<Waker>>,
}

impl BatchShared {
    pub(crate) fn new(topic: Arc<str>, partition: i32) -> BatchShared {
        BatchShared {
            topic,
            partition,
            result: OnceLock::new(),
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// Sets the outcome (the first one wins) and wakes every waiting record future.
    pub(crate) fn complete(&self, outcome: BatchOutcome) {
        if self.result.set(outcome).is_ok() {
            let wakers = std::mem::take(&mut *lock(&self.wakers));
            for w in wakers {
                w.wake();
            }
        }
    }
}

/// Resolves to the outcome of one record: where it was written, or why not.
///
/// Returned by [`Producer::send`](super::Producer::send) once the record is in a batch. Every
/// record of a batch shares one completion slot; the future holds the record's index in it.
/// Dropping the future does not cancel the record.
#[derive(Debug)]
#[must_use = "a DeliveryFuture tells whether the record was delivered"]
pub struct DeliveryFuture {
    batch: Arc<BatchShared>,
    index: u32,
    timestamp: i64,
    slot: Option<usize>,
}

impl DeliveryFuture {
    pub(crate) fn new(batch: Arc<BatchShared>, index: u32, timestamp: i64) -> DeliveryFuture {
        DeliveryFuture {
            batch,
            index,
            timestamp,
            slot: None,
        }
    }

    /// The outcome if it is known already, without waiting.
    pub fn try_result(&self) -> Option<Result<RecordMetadata, ProduceError>> {
        self.batch.result.get().map(|o| self.outcome(o))
    }

    /// The partition the record was appended to.
    pub fn partition(&self) -> i32 {
        self.batch.partition
    }

    fn outcome(&self, o: &BatchOutcome) -> Result<RecordMetadata, ProduceError> {
        match o {
            BatchOutcome::Delivered {
                base_offset,
                log_append_time,
            } => Ok(RecordMetadata {
                topic: self.batch.topic.clone(),
                partition: self.batch.partition,
                offset: if *base_offset < 0 {
                    -1
                } else {
                    base_offset + i64::from(self.index)
                },
                timestamp: if *log_append_time >= 0 {
                    *log_append_time
                } else {
                    self.timestamp
                },
            }),
            BatchOutcome::Failed(e) => Err(e.clone()),
        }
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata, ProduceError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(o) = this.batch.result.get() {
            return Poll::Ready(this.outcome(o));
        }
        let mut wakers = lock(&this.batch.wakers);
        if let Some(o) = this.batch.result.get() {
            drop(wakers);
            return Poll::Ready(this.outcome(o));
        }
        match this.slot {
            Some(i) if i < wakers.len() => {
                if !wakers[i].will_wake(cx.waker()) {
                    wakers[i] = cx.waker().clone();
                }
            }
            _ => {
                this.slot = Some(wakers.len());
                wakers.push(cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

/// A batch being filled by `send`.
#[derive(Debug)]
pub(crate) struct OpenBatch {
    pub(crate) builder: BatchBuilder,
    pub(crate) shared: Arc<BatchShared>,
    pub(crate) created: Instant,
    /// Bytes of `buffer.memory` this batch holds.
    pub(crate) permits: u32,
    /// The size at which the batch is full.
    pub(crate) limit: usize,
}

#[derive(Debug, Default)]
pub(crate) struct PartitionInner {
    pub(crate) open: Option<OpenBatch>,
    /// Full batches waiting for the sender.
    pub(crate) sealed: VecDeque<OpenBatch>,
}

/// One partition's batches. The only lock a record takes on the `send` path.
#[derive(Debug)]
pub(crate) struct PartitionQueue {
    pub(crate) partition: i32,
    pub(crate) inner: Mutex<PartitionInner>,
    /// Set by the sender while it could not send a new batch of this partition now (a
    /// request to its leader is out, an earlier batch waits) and the leader has shown it
    /// takes larger batches in time: how far the open batch may grow past `batch.size` (the
    /// sender's adaptive cap, at most `backlog_batch_size`). 0: no growth.
    pub(crate) grow_to: AtomicUsize,
}

/// One topic's partitions and partitioner state.
#[derive(Debug)]
pub(crate) struct TopicQueues {
    pub(crate) name: Arc<str>,
    pub(crate) partitions: Vec<Arc<PartitionQueue>>,
    /// The sticky partition of keyless records (KIP-480).
    pub(crate) sticky: AtomicU32,
    /// Bytes sent to the sticky partition since it was chosen (KIP-794).
    pub(crate) sticky_bytes: AtomicUsize,
    /// The round-robin counter.
    pub(crate) next: AtomicU32,
}

impl TopicQueues {
    pub(crate) fn count(&self) -> u32 {
        self.partitions.len() as u32
    }
}

/// Every topic the producer has sent to.
#[derive(Debug, Default)]
pub(crate) struct Accumulator {
    topics: RwLock<FastMap<Arc<str>, Arc<TopicQueues>>>,
}

impl Accumulator {
    pub(crate) fn get(&self, topic: &str) -> Option<Arc<TopicQueues>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .cloned()
    }

    /// The topic's queues with at least `count` partitions (partitions are only ever added).
    pub(crate) fn ensure(&self, topic: &str, count: u32) -> Arc<TopicQueues> {
        let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = topics.get(topic)
            && t.count() >= count
        {
            return t.clone();
        }
        let old = topics.get(topic).cloned();
        let name: Arc<str> = old
            .as_ref()
            .map(|t| t.name.clone())
            .unwrap_or_else(|| Arc::from(topic));
        let mut partitions = old
            .as_ref()
            .map(|t| t.partitions.clone())
            .unwrap_or_default();
        for p in partitions.len() as u32..count {
            partitions.push(Arc::new(PartitionQueue {
                partition: p as i32,
                inner: Mutex::new(PartitionInner::default()),
                grow_to: AtomicUsize::new(0),
            }));
        }
        let sticky = old
            .as_ref()
            .map(|t| t.sticky.load(Ordering::Relaxed))
            .unwrap_or_else(|| super::partitioner::random_u32() % count.max(1));
        let t = Arc::new(TopicQueues {
            name: name.clone(),
            partitions,
            sticky: AtomicU32::new(sticky),
            sticky_bytes: AtomicUsize::new(
                old.as_ref()
                    .map_or(0, |t| t.sticky_bytes.load(Ordering::Relaxed)),
            ),
            next: AtomicU32::new(old.as_ref().map_or(0, |t| t.next.load(Ordering::Relaxed))),
        });
        topics.insert(name, t.clone());
        t
    }

    /// A snapshot of every topic's queues.
    pub(crate) fn topics(&self) -> Vec<Arc<TopicQueues>> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

//! The producer: batching, partitioning, compression, retries, idempotence, a circuit
//! breaker and metrics.
//!
//! ```no_run
//! # async fn demo() -> rekafka::Result<()> {
//! use rekafka::Client;
//! use rekafka::producer::{ProducerConfig, Record};
//!
//! let client = Client::builder().bootstrap_servers(["127.0.0.1:9092"]).build().await?;
//! let producer = client.producer(ProducerConfig::default()).await?;
//! // First stage: wait for buffer room (back-pressure, up to `max_block`).
//! let delivery = producer.send(Record::new("orders").with_key("k").with_value("v")).await?;
//! // Second stage: wait for the broker's acknowledgement.
//! let meta = delivery.await?;
//! println!("written at {}-{}@{}", meta.topic, meta.partition, meta.offset);
//! producer.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! * `send` picks the partition (the record's own, else the [`Partitioning`]), waits for room in
//!   `buffer.memory` only when it must start a new batch (one semaphore acquisition per batch),
//!   then encodes the record straight into the partition's open batch under that partition's
//!   lock. That lock is the only one a record takes. It returns a [`DeliveryFuture`] holding the
//!   batch's shared completion slot and the record's index: no allocation, channel or wake-up
//!   per record.
//! * One **sender task** collects full batches and batches older than `linger`, assigns
//!   producer id, epoch and sequence numbers, builds (compresses, checksums) them and groups
//!   them per leader into Produce requests (one batch per partition per request, up to
//!   `max.request.size`), at most `max.in.flight.requests.per.connection` per broker. Requests
//!   to each broker are pipelined and handed to the connection in order. The sender owns every
//!   piece of idempotence state, so no lock guards it.
//! * Responses complete whole batches. Retriable errors send the batch back to the head of its
//!   partition's queue (after an exponential back-off with ±20% jitter, KIP-580), with a
//!   metadata refresh first when the leader moved; a partition that had a failure sends one
//!   batch at a time until the retried batches succeed (a later batch's success does not end
//!   the retry), so batches are never reordered and a resend stays within the broker's window
//!   of 5 batches in which it recognises duplicates. Retries stop at
//!   `delivery.timeout` (or after `retries` definite failures; attempts without a definite
//!   answer do not count).
//! * Idempotence (default): see [`ProduceError`] for how failures are reported as not or
//!   possibly persisted. `DUPLICATE_SEQUENCE_NUMBER` counts as success; an
//!   `OUT_OF_ORDER_SEQUENCE_NUMBER` on the oldest unacknowledged batch of a partition is fatal
//!   ([`ErrorKind::Fatal`] for every later call); a batch that fails
//!   for good, or `UNKNOWN_PRODUCER_ID`, leaves a gap in the sequence: the producer stops
//!   sending, lets everything in flight finish, then bumps the epoch (InitProducerId) and
//!   renumbers the waiting batches from 0 (KIP-360). Never a silent sequence reset: a waiting
//!   batch whose earlier attempt may have been written fails as possibly persisted instead of
//!   being renumbered.

mod accumulator;
mod circuit;
mod config;
pub(crate) mod idempotence;
mod metrics;
mod partitioner;
mod record;
mod sender;
pub mod transactional;
pub(crate) mod txn;

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, watch};

use crate::task::StopSignal;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

pub use accumulator::DeliveryFuture;
pub use circuit::{CircuitBreakerConfig, CircuitState};
pub use config::{
    Acks, DEFAULT_BACKLOG_BATCH_SIZE, DEFAULT_BATCH_SIZE, DEFAULT_BUFFER_MEMORY,
    DEFAULT_DELIVERY_TIMEOUT, DEFAULT_LINGER, DEFAULT_MAX_BLOCK, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_REQUEST_SIZE, DEFAULT_REQUEST_TIMEOUT, DEFAULT_RETRY_BACKOFF,
    DEFAULT_RETRY_BACKOFF_MAX, DEFAULT_TRANSACTION_TIMEOUT, Idempotence, Partitioning,
    ProducerConfig,
};
pub use metrics::ProducerMetrics;
pub use partitioner::{Partitioner, murmur2, murmur2_partition};
#[cfg(feature = "json")]
pub use record::JsonSerializer;
pub use record::{
    BytesSerializer, Persistence, ProduceError, Record, RecordMetadata, Serializer,
    StringSerializer,
};

use crate::cluster::Cluster;
use crate::error::{Error, ErrorKind, KafkaCode};
use crate::protocol::record::{BATCH_HEADER_LEN, BatchBuilder};
use accumulator::{Accumulator, BatchShared, OpenBatch, TopicQueues, lock};
use circuit::CircuitBreaker;
use metrics::Counters;

/// Bytes a Produce request adds around one batch (request header, topic and partition
/// fields), used to keep a request under `max.request.size`.
pub(crate) const REQUEST_OVERHEAD: usize = 128;

/// State shared by the producer handles and the sender task.
pub(crate) struct Shared {
    pub(crate) config: ProducerConfig,
    pub(crate) cluster: Cluster,
    pub(crate) acc: Accumulator,
    pub(crate) memory: Semaphore,
    /// Wakes the sender: a batch was started or sealed, a flush was asked for.
    pub(crate) wake: Notify,
    /// Told when no batch is outstanding any more.
    pub(crate) idle: Notify,
    /// Batches created and not yet completed.
    pub(crate) outstanding: AtomicU64,
    pub(crate) flushing: AtomicUsize,
    /// Set by [`Producer::send_buffered`]: the next collection takes every open batch.
    pub(crate) send_now: AtomicBool,
    /// Set by the sender before it looks for open batches; a `send` that starts a batch wakes
    /// the sender only if this is set (otherwise the sender's linger timer covers it).
    pub(crate) sender_idle: AtomicBool,
    /// Cleared by the sender while every broker it sends to has `max.in.flight` requests out
    /// (a response will wake it); a `send` that seals a full batch wakes it only when set.
    pub(crate) sender_wants_sealed: AtomicBool,
    pub(crate) closing: AtomicBool,
    /// Set by the sender task when it stops; a batch started after that is failed at once.
    pub(crate) stopped: AtomicBool,
    pub(crate) fatal: OnceLock<Error>,
    pub(crate) counters: Counters,
    pub(crate) circuit: Option<CircuitBreaker>,
    /// The transaction manager's link to the sender (transactional producers only).
    pub(crate) txn: Option<Arc<txn::TxnLink>>,
}

impl Shared {
    pub(crate) fn fatal_error(&self) -> Option<Error> {
        self.fatal.get().map(|e| {
            Error::new(ErrorKind::Fatal)
                .message(format!("the producer failed earlier: {e}"))
                .with_source(e.clone())
        })
    }

    /// Returns a completed batch's memory and updates the bookkeeping.
    pub(crate) fn batch_done(&self, permits: u32) {
        self.memory.add_permits(permits as usize);
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// Stops the sender when the last [`Producer`] handle goes (the signal's drop): the sender
/// fails every record it still holds with `Closed`.
struct Handle {
    shared: Arc<Shared>,
    shutdown: StopSignal,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

/// A [`Producer`] that does not keep it alive: what a [`Client`](crate::Client) keeps of the
/// producers it made, to close them before its connections.
#[derive(Debug, Clone)]
pub(crate) struct WeakProducer(std::sync::Weak<Handle>);

impl WeakProducer {
    /// The producer, while some handle to it lives.
    pub(crate) fn upgrade(&self) -> Option<Producer> {
        self.0.upgrade().map(|handle| Producer { handle })
    }

    /// Whether every handle is gone.
    pub(crate) fn is_gone(&self) -> bool {
        self.0.strong_count() == 0
    }
}

/// A Kafka producer. Cheap to clone; all clones share the buffers and the sender task.
/// Dropping the last clone stops the sender, failing undelivered records with
/// [`ErrorKind::Closed`]; call [`close`](Producer::close) to deliver them first.
#[derive(Clone)]
pub struct Producer {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("config", &self.handle.shared.config)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The first buffer of a new batch: 16 KiB (or the whole batch if `batch.size` is smaller, or
/// the first record if it is larger), plus the batch header. The batch grows by doubling as
/// records arrive, charging `buffer.memory` for each growth ([`grow_charge`]), so a large
/// `batch.size` costs memory only where traffic fills it.
fn initial_charge(batch_size: usize, record_max: usize) -> usize {
    const INITIAL: usize = 16 * 1024;
    let limit = batch_size.max(record_max + BATCH_HEADER_LEN);
    limit.min(INITIAL.max(record_max + BATCH_HEADER_LEN)) + BATCH_HEADER_LEN
}

/// Makes sure the open batch's buffer may hold `needed` more bytes (its length plus the
/// record), charging `buffer.memory` for growth without waiting. The buffer is a `Vec` that
/// grows to `max(2 × capacity, required)`; charging `max(2 × charged, needed + 4)` (the record
/// reserves up to 4 bytes more than its size) keeps the charge at or above the real capacity.
/// `false`: no memory for the growth now; the caller seals the batch instead.
fn grow_charge(sh: &Shared, open: &mut OpenBatch, needed: usize) -> bool {
    let charged = open.permits as usize;
    if needed + 4 <= charged {
        return true;
    }
    let new_charge = (2 * charged).max(needed + 4);
    let Ok(extra) = u32::try_from(new_charge - charged) else {
        return false;
    };
    match sh.memory.try_acquire_many(extra) {
        Ok(p) => {
            p.forget();
            open.permits += extra;
            true
        }
        Err(_) => false,
    }
}

/// The size a batch may grow to while its partition has a backlog: `backlog_batch_size`, but
/// never more than a request may carry.
pub(crate) fn backlog_limit(config: &ProducerConfig) -> usize {
    config
        .backlog_batch_size
        .min(config.max_request_size.saturating_sub(REQUEST_OVERHEAD))
}

/// An upper bound of a record's encoded size: every varint at its longest.
fn record_upper_bound(
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> usize {
    let field = |b: Option<&[u8]>| 5 + b.map_or(0, <[u8]>::len);
    let mut n = 5 + 1 + 10 + 5 + field(key) + field(value) + 5;
    for (k, v) in headers {
        n += 5 + k.len() + field(*v);
    }
    n
}

impl Producer {
    /// A producer on `cluster`. With idempotence (the default) it first obtains a producer id
    /// (InitProducerId), retrying for up to `max_block`. Must be called inside a tokio runtime.
    ///
    /// A config with a `transactional_id` is refused ([`ErrorKind::Config`]): build a
    /// [`TransactionalProducer`](crate::transaction::TransactionalProducer) instead.
    pub async fn new(cluster: Cluster, config: ProducerConfig) -> crate::Result<Producer> {
        config.validate()?;
        if config.transactional_id.is_some() {
            return Err(Error::config(
                "transactional.id is set: use rekafka::transaction::TransactionalProducer",
            ));
        }
        if config.idempotence == config::Idempotence::Auto && !config.is_idempotent() {
            tracing::info!(
                acks = ?config.acks,
                retries = config.retries,
                max_in_flight = config.max_in_flight,
                "idempotence is off: enable.idempotence was left unset and these settings \
                 conflict with it (set it explicitly to be told instead)"
            );
        }
        let pid = if config.is_idempotent() {
            let deadline = Instant::now() + config.max_block;
            Some(idempotence::init_producer_id(&cluster, &config, None, deadline).await?)
        } else {
            None
        };
        Ok(Producer::start(cluster, config, pid, None))
    }

    /// A transactional producer's inner producer: no producer id yet (the transaction
    /// manager hands it to the sender through `link`).
    pub(crate) fn new_transactional(
        cluster: Cluster,
        config: ProducerConfig,
        link: Arc<txn::TxnLink>,
    ) -> Producer {
        Producer::start(cluster, config, None, Some(link))
    }

    fn start(
        cluster: Cluster,
        config: ProducerConfig,
        pid: Option<idempotence::ProducerIdAndEpoch>,
        txn: Option<Arc<txn::TxnLink>>,
    ) -> Producer {
        let counters = Counters::new(&cluster.config().connection.client_id);
        counters.buffer_available(config.buffer_memory as u64);
        let span = tracing::debug_span!("kafka.producer", client_id = %cluster.config().connection.client_id);
        let shared = Arc::new(Shared {
            memory: Semaphore::new(config.buffer_memory),
            circuit: config.circuit_breaker.clone().map(CircuitBreaker::new),
            config,
            cluster,
            acc: Accumulator::default(),
            wake: Notify::new(),
            idle: Notify::new(),
            outstanding: AtomicU64::new(0),
            flushing: AtomicUsize::new(0),
            send_now: AtomicBool::new(false),
            sender_idle: AtomicBool::new(true),
            sender_wants_sealed: AtomicBool::new(true),
            closing: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            fatal: OnceLock::new(),
            counters,
            txn,
        });
        let (shutdown, shutdown_rx) = StopSignal::new();
        let task = tokio::spawn(sender::run(shared.clone(), shutdown_rx, pid).instrument(span));
        Producer {
            handle: Arc::new(Handle {
                shared,
                shutdown,
                task: std::sync::Mutex::new(Some(task)),
            }),
        }
    }

    /// Makes the producer fatal (the transaction manager's fatal errors) and wakes the
    /// sender so that it fails what it holds.
    pub(crate) fn set_fatal(&self, e: Error) {
        let sh = self.shared();
        let _ = sh.fatal.set(e);
        sh.wake.notify_one();
    }

    /// Wakes the sender (a transaction state change it must act on).
    pub(crate) fn wake_sender(&self) {
        self.shared().wake.notify_one();
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The settings.
    pub fn config(&self) -> &ProducerConfig {
        &self.shared().config
    }

    /// Appends `record` to its partition's batch and returns a future for its delivery.
    ///
    /// Waits (up to `max_block`) only for the topic's metadata the first time and for room in
    /// `buffer.memory` when a new batch must be started; fails then with
    /// [`ErrorKind::BufferFull`] or [`ErrorKind::Timeout`]. Every error here is
    /// [`Persistence::NotPersisted`]: the record was not accepted. Fails fast with
    /// [`ErrorKind::CircuitOpen`] while the circuit breaker is open, [`ErrorKind::Fatal`] after a
    /// fatal error and [`ErrorKind::Closed`] after [`close`](Producer::close).
    ///
    /// Two steps, as in Java's `send(..).get()`: awaiting `send` means the record is accepted
    /// (in a batch); awaiting the returned [`DeliveryFuture`] gives its partition and offset
    /// once the broker acknowledged it, or the error after the retries and the delivery
    /// timeout. Sending many records before awaiting any delivery keeps batches full.
    ///
    /// ```no_run
    /// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
    /// use rekafka::producer::Record;
    ///
    /// let producer = client.producer_with(|p| p.linger = std::time::Duration::from_millis(5)).await?;
    /// let mut deliveries = Vec::new();
    /// for i in 0..100 {
    ///     let record = Record::new("orders")
    ///         .with_key(format!("customer-{}", i % 10))
    ///         .with_value(format!("order {i}"))
    ///         .with_header("source", Some("rustdoc"));
    ///     deliveries.push(producer.send(record).await?);
    /// }
    /// for delivery in deliveries {
    ///     let meta = delivery.await?; // the broker has it
    ///     println!("{}-{}@{}", meta.topic, meta.partition, meta.offset);
    /// }
    /// producer.close().await;
    /// # Ok(()) }
    /// ```
    pub async fn send(&self, record: Record) -> Result<DeliveryFuture, ProduceError> {
        let sh = self.shared();
        if let Some(e) = sh.fatal_error() {
            return Err(ProduceError::not_persisted(e));
        }
        if sh.closing.load(Ordering::Acquire) {
            return Err(ProduceError::not_persisted(Error::with_message(
                ErrorKind::Closed,
                "the producer is closed",
            )));
        }
        if let Some(cb) = &sh.circuit
            && let Err(wait) = cb.allow()
        {
            return Err(ProduceError::not_persisted(Error::with_message(
                ErrorKind::CircuitOpen,
                format!("the producer's circuit breaker is open (next probe in {wait:?})"),
            )));
        }
        let mut deadline = None;
        let topic = match sh.acc.get(&record.topic) {
            Some(t) => t,
            None => {
                let d = *deadline.get_or_insert_with(|| Instant::now() + sh.config.max_block);
                self.topic_metadata(&record.topic, d).await?
            }
        };
        let timestamp = record.timestamp.unwrap_or_else(now_ms);
        let key = record.key.as_deref();
        let value = record.value.as_deref();
        let mut header_buf: Vec<(&str, Option<&[u8]>)> = Vec::new();
        if !record.headers.is_empty() {
            header_buf.reserve(record.headers.len());
            header_buf.extend(record.headers.iter().map(|h| (h.key(), h.value())));
        }
        let headers = &header_buf[..];
        let count = topic.count();
        let (partition, sticky) = match record.partition {
            Some(p) => {
                if p < 0 || p as u32 >= count {
                    return Err(ProduceError::not_persisted(
                        Error::broker(KafkaCode::UnknownTopicOrPartition)
                            .message(format!(
                                "partition {p} is not in [0, {count}) of topic {}",
                                record.topic
                            ))
                            .on_partition(record.topic.to_string(), p),
                    ));
                }
                (p as u32, false)
            }
            None => self.choose_partition(&topic, key, value),
        };
        let Some(queue) = topic.partitions.get(partition as usize) else {
            return Err(ProduceError::not_persisted(Error::with_message(
                ErrorKind::Config,
                format!("the partitioner chose partition {partition} of {count}"),
            )));
        };
        let record_max = record_upper_bound(key, value, headers);
        if record_max + BATCH_HEADER_LEN + REQUEST_OVERHEAD > sh.config.max_request_size {
            return Err(ProduceError::not_persisted(
                Error::broker(KafkaCode::MessageTooLarge)
                    .message(format!(
                        "the record is {record_max} bytes, more than max.request.size ({})",
                        sh.config.max_request_size
                    ))
                    .on_partition(record.topic.to_string(), partition as i32),
            ));
        }
        let mut reserved: Option<u32> = None;
        loop {
            {
                let mut inner = lock(&queue.inner);
                if let Some(open) = inner.open.as_mut() {
                    let size = open.builder.record_size(timestamp, key, value, headers);
                    let len = open.builder.estimated_size();
                    // Past `batch.size` only while the sender cannot send this partition now,
                    // and only as far as its leader has shown it takes in time (`grow_to`).
                    let limit = open.limit.max(queue.grow_to.load(Ordering::Acquire));
                    if len + size <= limit && grow_charge(sh, open, len + size) {
                        let index = open
                            .builder
                            .append(timestamp, key, value, headers)
                            .map_err(ProduceError::not_persisted)?;
                        let fut = DeliveryFuture::new(open.shared.clone(), index as u32, timestamp);
                        drop(inner);
                        if let Some(p) = reserved {
                            sh.memory.add_permits(p as usize);
                        }
                        if sticky {
                            self.sticky_appended(&topic, partition, size);
                        }
                        return Ok(fut);
                    }
                    // Full: seal it for the sender (waking it only if it could send now;
                    // otherwise its next response wakes it).
                    if let Some(full) = inner.open.take() {
                        inner.sealed.push_back(full);
                        if sh.sender_wants_sealed.load(Ordering::Acquire) {
                            sh.wake.notify_one();
                        }
                    }
                }
                if let Some(permits) = reserved.take() {
                    let limit = sh.config.batch_size.max(record_max + BATCH_HEADER_LEN);
                    // `buffer.memory` is charged by buffer capacity: a pooled buffer is
                    // taken only if it is no larger than the reservation (a larger one, left
                    // by a batch that grew, would charge more than this batch asked for,
                    // depending on what the process built before).
                    let mut builder = BatchBuilder::with_capacity_at_most(
                        permits as usize - BATCH_HEADER_LEN,
                        permits as usize,
                    );
                    if builder.capacity() > permits as usize {
                        builder =
                            BatchBuilder::with_exact_capacity(permits as usize - BATCH_HEADER_LEN);
                    }
                    let builder = builder
                        .with_compression(sh.config.compression)
                        .with_compression_level(sh.config.compression_level);
                    let shared = Arc::new(BatchShared::new(topic.name.clone(), partition as i32));
                    let mut open = OpenBatch {
                        builder,
                        shared,
                        created: Instant::now(),
                        permits,
                        limit,
                    };
                    let index = match open.builder.append(timestamp, key, value, headers) {
                        Ok(i) => i,
                        Err(e) => {
                            drop(inner);
                            sh.memory.add_permits(permits as usize);
                            return Err(ProduceError::not_persisted(e));
                        }
                    };
                    if sh.stopped.load(Ordering::Acquire) {
                        // The sender is gone (the producer was closed meanwhile): nobody would
                        // send this batch.
                        drop(inner);
                        sh.memory.add_permits(permits as usize);
                        return Err(ProduceError::not_persisted(Error::with_message(
                            ErrorKind::Closed,
                            "the producer is closed",
                        )));
                    }
                    let fut = DeliveryFuture::new(open.shared.clone(), index as u32, timestamp);
                    sh.outstanding.fetch_add(1, Ordering::AcqRel);
                    inner.open = Some(open);
                    drop(inner);
                    if sh.sender_idle.swap(false, Ordering::AcqRel) {
                        sh.wake.notify_one();
                    }
                    if sticky {
                        self.on_new_batch(&topic, partition);
                        self.sticky_appended(&topic, partition, record_max);
                    }
                    return Ok(fut);
                }
            }
            // A new batch is needed: reserve its memory outside the partition lock.
            let want = initial_charge(sh.config.batch_size, record_max);
            if want > sh.config.buffer_memory {
                return Err(ProduceError::not_persisted(Error::with_message(
                    ErrorKind::BufferFull,
                    format!(
                        "the record needs {want} bytes, more than buffer.memory ({})",
                        sh.config.buffer_memory
                    ),
                )));
            }
            let want = want as u32;
            match sh.memory.try_acquire_many(want) {
                Ok(p) => p.forget(),
                Err(tokio::sync::TryAcquireError::Closed) => {
                    return Err(ProduceError::not_persisted(Error::new(ErrorKind::Closed)));
                }
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    let d = *deadline.get_or_insert_with(|| Instant::now() + sh.config.max_block);
                    match tokio::time::timeout_at(d, sh.memory.acquire_many(want)).await {
                        Ok(Ok(p)) => p.forget(),
                        Ok(Err(_)) => {
                            return Err(ProduceError::not_persisted(Error::new(ErrorKind::Closed)));
                        }
                        Err(_) => {
                            return Err(ProduceError::not_persisted(Error::with_message(
                                ErrorKind::BufferFull,
                                format!(
                                    "no room in buffer.memory ({} bytes) within max.block ({:?})",
                                    sh.config.buffer_memory, sh.config.max_block
                                ),
                            )));
                        }
                    }
                    if let Some(e) = sh.fatal_error() {
                        sh.memory.add_permits(want as usize);
                        return Err(ProduceError::not_persisted(e));
                    }
                }
            }
            reserved = Some(want);
        }
    }

    /// Sends `record` and waits for its delivery: `send(record).await?.await`.
    pub async fn send_and_wait(&self, record: Record) -> Result<RecordMetadata, ProduceError> {
        self.send(record).await?.await
    }

    fn choose_partition(
        &self,
        topic: &TopicQueues,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> (u32, bool) {
        let count = topic.count().max(1);
        match &self.shared().config.partitioning {
            Partitioning::Default => match key {
                Some(k) => (murmur2_partition(k, count), false),
                None => (topic.sticky.load(Ordering::Relaxed) % count, true),
            },
            Partitioning::RoundRobin => (topic.next.fetch_add(1, Ordering::Relaxed) % count, false),
            Partitioning::Custom(p) => (p.partition(&topic.name, key, value, count), true),
        }
    }

    /// A new batch was started on the sticky partition: a custom partitioner is told (KIP-480);
    /// the default one moves on by bytes instead ([`sticky_appended`](Self::sticky_appended)).
    fn on_new_batch(&self, topic: &TopicQueues, partition: u32) {
        if let Partitioning::Custom(p) = &self.shared().config.partitioning {
            p.on_new_batch(&topic.name, partition, topic.count());
        }
    }

    /// The default partitioner's keyless records stay on one partition until `batch.size`
    /// bytes went to it, then move to the next (KIP-794, the Java client's behaviour since
    /// 3.3): a batch that grows past `batch.size` under a backlog does not hold every keyless
    /// record on one partition (and one broker).
    fn sticky_appended(&self, topic: &TopicQueues, partition: u32, bytes: usize) {
        if !matches!(self.shared().config.partitioning, Partitioning::Default) {
            return;
        }
        let batch_size = self.shared().config.batch_size;
        let before = topic.sticky_bytes.fetch_add(bytes, Ordering::Relaxed);
        if before < batch_size && before + bytes >= batch_size {
            let next = partitioner::next_sticky(partition, topic.count());
            if topic
                .sticky
                .compare_exchange(partition, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                topic.sticky_bytes.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Fetches a topic's partition count (retrying until `deadline`) and registers its queues.
    async fn topic_metadata(
        &self,
        topic: &str,
        deadline: Instant,
    ) -> Result<Arc<TopicQueues>, ProduceError> {
        let sh = self.shared();
        let mut backoff = crate::connection::RetryDelay::new(
            sh.config.retry_backoff,
            sh.config.retry_backoff_max,
        );
        loop {
            let attempt = tokio::time::timeout_at(deadline, sh.cluster.partitions(topic)).await;
            let error = match attempt {
                Ok(Ok(parts)) if !parts.is_empty() => {
                    let count = parts.iter().map(|p| p.partition + 1).max().unwrap_or(0);
                    return Ok(sh.acc.ensure(topic, count.max(0) as u32));
                }
                Ok(Ok(_)) => Error::broker(KafkaCode::LeaderNotAvailable)
                    .message("the topic has no partitions yet")
                    .on_topic(topic),
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(ProduceError::not_persisted(
                        Error::with_message(
                            ErrorKind::Timeout,
                            format!(
                                "no metadata for topic {topic} within max.block ({:?})",
                                sh.config.max_block
                            ),
                        )
                        .on_topic(topic),
                    ));
                }
            };
            if !error.is_retriable() || Instant::now() + backoff.nominal() >= deadline {
                return Err(ProduceError::not_persisted(error));
            }
            // Forget the cached error so the next look-up asks the broker again.
            let _ = sh.cluster.refresh_topics(&[topic]).await;
            tokio::time::sleep(backoff.delay()).await;
            backoff.failed();
        }
    }

    /// Makes every record buffered so far ready to send now (ignoring `linger`), without
    /// waiting for anything: the non-blocking half of [`flush`](Producer::flush). For a
    /// caller about to wait for a delivery it knows is the last one for a while.
    pub fn send_buffered(&self) {
        let sh = self.shared();
        sh.send_now.store(true, Ordering::Release);
        sh.wake.notify_one();
    }

    /// Sends every buffered record now (ignoring `linger`) and waits until no record is
    /// pending: each delivered or failed. Records sent while `flush` waits are waited for too.
    pub async fn flush(&self) {
        let sh = self.shared();
        sh.flushing.fetch_add(1, Ordering::AcqRel);
        sh.wake.notify_one();
        loop {
            let idle = sh.idle.notified();
            if sh.outstanding.load(Ordering::Acquire) == 0 {
                break;
            }
            // Re-check regularly in case a notification raced with the check.
            let _ = tokio::time::timeout(Duration::from_millis(100), idle).await;
        }
        sh.flushing.fetch_sub(1, Ordering::AcqRel);
    }

    /// Refuses new records, delivers every buffered one (as [`flush`](Producer::flush)), then
    /// stops the sender task. Idempotent; later `send`s fail with [`ErrorKind::Closed`].
    pub async fn close(&self) {
        let sh = self.shared();
        sh.closing.store(true, Ordering::Release);
        self.flush().await;
        self.handle.shutdown.stop();
        let task = lock(&self.handle.task).take();
        if let Some(task) = task
            && let Err(e) = task.await
            && e.is_panic()
        {
            tracing::error!("producer sender task panicked");
        }
    }

    /// A reference that does not keep the producer alive.
    pub(crate) fn downgrade(&self) -> WeakProducer {
        WeakProducer(Arc::downgrade(&self.handle))
    }

    /// The circuit breaker's state ([`CircuitState::Closed`] when there is none).
    pub fn circuit_state(&self) -> CircuitState {
        self.shared()
            .circuit
            .as_ref()
            .map_or(CircuitState::Closed, CircuitBreaker::state)
    }

    /// A receiver that sees every change of the circuit breaker's state; `None` without a
    /// breaker.
    pub fn circuit_watch(&self) -> Option<watch::Receiver<CircuitState>> {
        self.shared()
            .circuit
            .as_ref()
            .map(CircuitBreaker::subscribe)
    }

    /// A snapshot of the metrics.
    pub fn metrics(&self) -> ProducerMetrics {
        let sh = self.shared();
        sh.counters.snapshot(sh.memory.available_permits() as u64)
    }

    /// The fatal error that stopped the producer, if any.
    pub fn fatal_error(&self) -> Option<Error> {
        self.shared().fatal_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_send_sync<T: Send + Sync>(_: &T) {}
    fn is_send<T: Send>(_: &T) {}

    /// The handle, its futures and the delivery future can move between tasks.
    #[allow(dead_code)]
    fn futures_are_send(p: &Producer, d: DeliveryFuture) {
        is_send_sync(p);
        is_send(&d);
        is_send(&p.send(Record::new("t")));
        is_send(&p.flush());
        is_send(&p.close());
    }

    #[test]
    fn record_upper_bound_covers_the_encoding() {
        let headers: &[(&str, Option<&[u8]>)] = &[("a", Some(b"xyz")), ("b", None)];
        for (k, v) in [
            (None, None),
            (Some(&b"k"[..]), Some(&[7u8; 300][..])),
            (Some(&[1u8; 20000][..]), None),
        ] {
            let b = BatchBuilder::new();
            let exact = b.record_size(i64::MAX, k, v, headers);
            assert!(record_upper_bound(k, v, headers) >= exact);
        }
    }
}

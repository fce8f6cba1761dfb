//! Publishing failed records to a dead-letter topic (Spring's
//! `DeadLetterPublishingRecoverer`).
//!
//! A [`DeadLetterPublisher`] is a [`Recoverer`]: plugged into a
//! [`DefaultErrorHandler`](super::DefaultErrorHandler), it receives each record whose retries
//! are exhausted (or that is not retryable) and writes it to a dead-letter topic:
//!
//! * **destination:** `<topic>-dlt` (Spring 3.3+; `<topic>.DLT` with [`DltNaming::Legacy`]),
//!   same partition; or whatever a custom resolver says. A negative partition lets the
//!   producer's partitioner choose. By default the partition is checked against the DLT's
//!   metadata and, when the DLT has fewer partitions, the partitioner chooses (with a WARN).
//! * **record:** the original key and value as raw bytes (for a deserialization failure these
//!   are the bytes that failed to deserialize), the original headers, plus Spring's
//!   provenance and exception headers ([`DeadLetterHeaders`]). The timestamp is left to the
//!   producer, as Spring does.
//! * **delivery:** through its own idempotent [`Producer`]; `recover` waits for the broker's
//!   acknowledgement, up to the [send timeout](SendTimeout). A failed or timed-out publication
//!   is an `Err` — a *recovery failure*: the container redelivers the record and caps the
//!   failures; the record is never skipped. When a publication timed out and its delivery is
//!   still pending, the next recovery of the same record waits for that delivery instead of
//!   sending a second copy, so a slow broker does not produce duplicate dead letters.
//!
//! ```no_run
//! use std::time::Duration;
//! use rekafka::cluster::{Cluster, ClusterConfig};
//! use rekafka::listener::{DeadLetterPublisher, DefaultErrorHandler, FixedBackOff, ListenerRecord};
//!
//! // `R` is the container's record type (rekafka's `ConsumerRecord` once it implements
//! // `ListenerRecord`).
//! async fn handler<R: ListenerRecord>() -> rekafka::Result<DefaultErrorHandler<R>> {
//!     let cluster = Cluster::connect(ClusterConfig::new(["127.0.0.1:9092"])).await?;
//!     let dlt = DeadLetterPublisher::<R>::builder(cluster)
//!         .group("billing")
//!         .build()
//!         .await?;
//!     Ok(DefaultErrorHandler::new()
//!         .back_off(FixedBackOff::new(Duration::from_millis(100), 3))
//!         .recoverer(dlt))
//! }
//! ```

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::classify::{DeserializationFailed, HandlerError, RecordPart};
use super::consumer::{CommittedOffsets, ContainerConsumer, ListenerRecord, OffsetToCommit};
use super::dead_letter::{DeadLetterHeaders, Provenance};
use super::handler::{BoxFuture, Recoverer, SharedError};
use super::tracker::TopicPartition;
use crate::cluster::Cluster;
use crate::producer::{
    DeliveryFuture, Idempotence, ProduceError, Producer, ProducerConfig, Record, RecordMetadata,
};
use crate::{Error, ErrorKind};

/// How the default destination topic is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DltNaming {
    /// `<topic>-dlt` (Spring for Apache Kafka 3.3 and later).
    #[default]
    Spring33,
    /// `<topic>.DLT` (Spring for Apache Kafka before 3.3).
    Legacy,
}

impl DltNaming {
    /// The dead-letter topic of `topic` under this naming.
    pub fn dlt_topic(self, topic: &str) -> String {
        match self {
            DltNaming::Spring33 => format!("{topic}-dlt"),
            DltNaming::Legacy => format!("{topic}.DLT"),
        }
    }
}

/// Where a dead letter goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The topic.
    pub topic: String,
    /// The partition; negative lets the producer's partitioner choose.
    pub partition: i32,
}

impl Destination {
    /// `topic`, partition `partition` (negative: the partitioner chooses).
    pub fn new(topic: impl Into<String>, partition: i32) -> Destination {
        Destination {
            topic: topic.into(),
            partition,
        }
    }

    /// `topic`, the partitioner chooses the partition.
    pub fn any_partition(topic: impl Into<String>) -> Destination {
        Destination::new(topic, -1)
    }
}

/// Whether the destination partition is checked against the destination topic's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PartitionVerification {
    /// Check it (from the cluster's metadata cache, refreshed once when the partition is not
    /// in it); a partition the topic does not have is logged at WARN and left to the
    /// partitioner. If the metadata cannot be had (e.g. the topic does not exist yet and will
    /// be auto-created), the partition is kept (Spring's `verifyPartition = true`).
    #[default]
    FallBackToPartitioner,
    /// Do not check: send to the partition as resolved.
    Off,
}

/// What happens when the resolver gives no destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingDestination {
    /// Log a WARN and count the record as recovered: it is skipped (Spring's default).
    #[default]
    Skip,
    /// Fail the recovery ([`DeadLetterError::NoDestination`]), so the record is redelivered
    /// (Spring's `throwIfNoDestinationReturned = true`).
    Fail,
}

/// Which connections the publisher's own producer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PublisherConnections {
    /// Its own connections: a second [`Cluster`] with the given cluster's settings. Brokers
    /// answer the requests of one connection in order, so on a connection shared with the
    /// consumer a dead letter's Produce request would wait behind the consumer's long-poll
    /// Fetch (up to `fetch.max.wait`) for every record. This is what the Java clients do (a
    /// producer and a consumer never share a socket).
    #[default]
    Own,
    /// The given cluster's connections (fewer sockets; each dead letter may wait up to
    /// `fetch.max.wait` behind a Fetch).
    Shared,
}

/// How long `recover` waits for the broker's acknowledgement of a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SendTimeout {
    /// The producer's `delivery.timeout` plus 5 s (Spring's
    /// `max(delivery.timeout.ms + 5000, 30 s)`, minus the 30 s floor: the producer gives up by
    /// its delivery timeout anyway).
    #[default]
    DeliveryTimeoutPlus5s,
    /// This long.
    Fixed(Duration),
}

/// Why a dead letter could not be published. Returned from `recover` as a recovery failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// The producer refused or failed the record.
    #[error("dead-letter publication to {destination} failed for: {topic}-{partition}@{offset}")]
    Send {
        /// The destination topic.
        destination: String,
        /// The failed record's topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// The producer's error.
        #[source]
        error: ProduceError,
    },
    /// No acknowledgement came within the send timeout. The delivery may still complete; the
    /// next recovery of the same record waits for it rather than sending a second copy.
    #[error(
        "dead-letter publication to {destination} timed out after {timeout:?} for: {topic}-{partition}@{offset}"
    )]
    Timeout {
        /// The destination topic.
        destination: String,
        /// The failed record's topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
        /// The timeout.
        timeout: Duration,
    },
    /// The resolver gave no destination and [`MissingDestination::Fail`] is set.
    #[error("no dead-letter destination for: {topic}-{partition}@{offset}")]
    NoDestination {
        /// The failed record's topic.
        topic: String,
        /// Its partition.
        partition: i32,
        /// Its offset.
        offset: i64,
    },
}

type Resolver<R> = Arc<dyn Fn(&R, &SharedError) -> Option<Destination> + Send + Sync>;

/// Pending deliveries kept after a timeout, at most this many.
const MAX_PENDING: usize = 1024;
/// A destination topic's partitions are re-read from the cluster at most this often when a
/// resolved partition is missing from them.
const METADATA_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// The source record a publication is for: (topic, partition, offset, destination topic).
type PendingKey = (Arc<str>, i32, i64, Arc<str>);

/// The producing half shared by [`DeadLetterPublisher`] and
/// [`RepublishToTail`](super::RepublishToTail): send, wait with a timeout, remember deliveries
/// that timed out.
pub(crate) struct Sender {
    cluster: Cluster,
    owns_cluster: bool,
    producer: Producer,
    owns_producer: bool,
    timeout: Duration,
    verification: PartitionVerification,
    /// Destination topic → (partition count, when it was last read from the cluster).
    partitions: Mutex<HashMap<String, (i32, Instant)>>,
    pending: Mutex<HashMap<PendingKey, DeliveryFuture>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

    /// Publishes `record` for the source record (`topic`, `partition`, `offset`) and waits for
    /// its acknowledgement.
    pub(crate) async fn publish(
        &self,
        source: (&str, i32, i64),
        record: Record,
    ) -> Result<RecordMetadata, DeadLetterError> {
        let (topic, partition, offset) = source;
        let destination: Arc<str> = record.topic.clone();
        let key: PendingKey = (Arc::from(topic), partition, offset, destination.clone());
        let earlier = lock(&self.pending).remove(&key);
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
        let mut delivery = delivery;
        match tokio::time::timeout(self.timeout, &mut delivery).await {
            Ok(Ok(meta)) => Ok(meta),
            Ok(Err(error)) => Err(DeadLetterError::Send {
                destination: destination.to_string(),
                topic: topic.to_owned(),
                partition,
                offset,
                error,
            }),
            Err(_) => {
                let mut pending = lock(&self.pending);
                if pending.len() >= MAX_PENDING {
                    pending.retain(|_, d| d.try_result().is_none());
                }
                if pending.len() < MAX_PENDING {
                    pending.insert(key, delivery);
                }
                Err(DeadLetterError::Timeout {
                    destination: destination.to_string(),
                    topic: topic.to_owned(),
                    partition,
                    offset,
                    timeout: self.timeout,
                })
            }
        }
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

/// The first [`DeserializationFailed`] in `error`'s source chain.
pub(crate) fn deserialization_failure<'a>(
    error: &'a (dyn StdError + 'static),
) -> Option<&'a DeserializationFailed> {
    let mut current = Some(error);
    let mut depth = 0;
    while let Some(e) = current {
        if let Some(d) = e.downcast_ref::<DeserializationFailed>() {
            return Some(d);
        }
        depth += 1;
        if depth > 64 {
            break;
        }
        current = e.source();
    }
    None
}

/// Publishes failed records to a dead-letter topic (see the [module docs](self)).
pub struct DeadLetterPublisher<R> {
    pub(crate) sender: Arc<Sender>,
    naming: DltNaming,
    resolver: Option<Resolver<R>>,
    missing: MissingDestination,
    headers: DeadLetterHeaders,
    group: Option<String>,
    /// Set when built with [`DeadLetterPublisherBuilder::build_pipelined`].
    pipeline: Option<Arc<PendingLetters>>,
}

impl<R> fmt::Debug for DeadLetterPublisher<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterPublisher")
            .field("naming", &self.naming)
            .field("resolver", &self.resolver.is_some())
            .field("missing", &self.missing)
            .field("headers", &self.headers)
            .field("group", &self.group)
            .field("timeout", &self.sender.timeout)
            .field("verification", &self.sender.verification)
            .field("pipelined", &self.pipeline.is_some())
            .finish()
    }
}

/// Builds a [`DeadLetterPublisher`].
pub struct DeadLetterPublisherBuilder<R> {
    cluster: Cluster,
    producer: Option<Producer>,
    producer_config: ProducerConfig,
    naming: DltNaming,
    resolver: Option<Resolver<R>>,
    missing: MissingDestination,
    verification: PartitionVerification,
    headers: DeadLetterHeaders,
    group: Option<String>,
    timeout: SendTimeout,
    connections: PublisherConnections,
    producer_config_set: bool,
}

impl<R> fmt::Debug for DeadLetterPublisherBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterPublisherBuilder")
            .field("naming", &self.naming)
            .field("missing", &self.missing)
            .field("verification", &self.verification)
            .field("group", &self.group)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<R: ListenerRecord> DeadLetterPublisherBuilder<R> {
    /// A producer to publish with, instead of one built from the cluster. It should be
    /// idempotent (the default), or a retried batch may write a dead letter twice. It is
    /// flushed, not closed, by [`DeadLetterPublisher::close`]. Default: the publisher builds
    /// its own idempotent producer from [`producer_config`](Self::producer_config).
    pub fn producer(mut self, producer: Producer) -> Self {
        self.producer = Some(producer);
        self
    }

    /// The configuration of the publisher's own producer (idempotence is always enabled).
    /// Default: [`ProducerConfig::default`] with `linger` 0 (each dead letter is awaited
    /// before the next record is handled, so lingering would only add latency); for a
    /// [pipelined](Self::build_pipelined) publisher, [`ProducerConfig::default`].
    pub fn producer_config(mut self, config: ProducerConfig) -> Self {
        self.producer_config = config;
        self.producer_config_set = true;
        self
    }

    /// Which connections the publisher's own producer uses (ignored with
    /// [`producer`](Self::producer)). Default: [`PublisherConnections::Own`].
    pub fn connections(mut self, connections: PublisherConnections) -> Self {
        self.connections = connections;
        self
    }

    /// How the default destination is named. Default: [`DltNaming::Spring33`] (`-dlt`).
    pub fn naming(mut self, naming: DltNaming) -> Self {
        self.naming = naming;
        self
    }

    /// Chooses the destination per (record, error); `None` means "no destination" (see
    /// [`on_missing_destination`](Self::on_missing_destination)). Default: `<topic>-dlt`, same
    /// partition.
    pub fn resolver(
        mut self,
        resolver: impl Fn(&R, &SharedError) -> Option<Destination> + Send + Sync + 'static,
    ) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// What happens when the resolver gives no destination. Default: [`MissingDestination::Skip`].
    pub fn on_missing_destination(mut self, missing: MissingDestination) -> Self {
        self.missing = missing;
        self
    }

    /// Whether the destination partition is verified. Default:
    /// [`PartitionVerification::FallBackToPartitioner`].
    pub fn partition_verification(mut self, verification: PartitionVerification) -> Self {
        self.verification = verification;
        self
    }

    /// How the headers are built. Default: [`DeadLetterHeaders::default`] (append original-*,
    /// strip previous exception headers, exclude nothing).
    pub fn headers(mut self, headers: DeadLetterHeaders) -> Self {
        self.headers = headers;
        self
    }

    /// The consumer group written in `kafka_dlt-original-consumer-group`. Default: none (the
    /// header is not written).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// How long `recover` waits for the acknowledgement. Default:
    /// [`SendTimeout::DeliveryTimeoutPlus5s`].
    pub fn send_timeout(mut self, timeout: SendTimeout) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the publisher (and its producer, unless one was given).
    pub async fn build(self) -> crate::Result<DeadLetterPublisher<R>> {
        let mut cluster = self.cluster;
        let mut owns_cluster = false;
        let (producer, owns_producer) = match self.producer {
            Some(p) => (p, false),
            None => {
                if self.connections == PublisherConnections::Own {
                    cluster = Cluster::connect(cluster.config().clone()).await?;
                    owns_cluster = true;
                }
                let mut config = self.producer_config;
                config.idempotence = Idempotence::Enabled;
                match Producer::new(cluster.clone(), config).await {
                    Ok(p) => (p, true),
                    Err(e) => {
                        if owns_cluster {
                            cluster.close().await;
                        }
                        return Err(e);
                    }
                }
            }
        };
        let timeout = match self.timeout {
            SendTimeout::DeliveryTimeoutPlus5s => {
                producer.config().delivery_timeout + Duration::from_secs(5)
            }
            SendTimeout::Fixed(d) => d,
        };
        if timeout.is_zero() {
            return Err(Error::config(
                "the dead-letter send timeout must be positive",
            ));
        }
        Ok(DeadLetterPublisher {
            sender: Arc::new(Sender {
                cluster,
                owns_cluster,
                producer,
                owns_producer,
                timeout,
                verification: self.verification,
                partitions: Mutex::new(HashMap::new()),
                pending: Mutex::new(HashMap::new()),
            }),
            naming: self.naming,
            resolver: self.resolver,
            missing: self.missing,
            headers: self.headers,
            group: self.group,
            pipeline: None,
        })
    }

    /// Builds a *pipelined* publisher and the [`CommitGate`] that must wrap the container's
    /// consumer: `recover` returns as soon as the dead letter is queued in the producer (so
    /// dead letters of consecutive failed records travel together instead of one round trip
    /// each), and the gate never commits past a record whose dead letter is not acknowledged
    /// (it holds such commits back and completes them when the acknowledgements arrive).
    ///
    /// ```no_run
    /// use rekafka::cluster::Cluster;
    /// use rekafka::listener::{
    ///     ContainerConsumer, DeadLetterPublisher, DefaultErrorHandler, FixedBackOff,
    ///     ListenerContainer,
    /// };
    ///
    /// async fn start<C: ContainerConsumer>(cluster: Cluster, consumer: C) -> rekafka::Result<()> {
    ///     let (dlt, consumer) = DeadLetterPublisher::<C::Record>::builder(cluster)
    ///         .build_pipelined(consumer)
    ///         .await?;
    ///     let handle = ListenerContainer::builder(consumer)
    ///         .record_handler(|_r: C::Record| async { Ok(()) })
    ///         .error_handler(DefaultErrorHandler::new().back_off(FixedBackOff::no_retries()).recoverer(dlt))
    ///         .start()?;
    ///     # let _ = handle;
    ///     Ok(())
    /// }
    /// ```
    pub async fn build_pipelined<C>(
        self,
        consumer: C,
    ) -> crate::Result<(DeadLetterPublisher<R>, CommitGate<C>)>
    where
        C: ContainerConsumer<Record = R>,
    {
        let mut this = self;
        if !this.producer_config_set {
            // Dead letters are not awaited one by one here: let them batch.
            this.producer_config = ProducerConfig::default();
        }
        let mut publisher = this.build().await?;
        let pending = Arc::new(PendingLetters {
            sender: publisher.sender.clone(),
            letters: Mutex::new(HashMap::new()),
            count: std::sync::atomic::AtomicUsize::new(0),
        });
        publisher.pipeline = Some(pending.clone());
        let gate = CommitGate {
            inner: consumer,
            pending,
            held: HashMap::new(),
            capped: HashMap::new(),
        };
        Ok((publisher, gate))
    }
}

impl<R: ListenerRecord> DeadLetterPublisher<R> {
    /// A builder publishing through `cluster`.
    pub fn builder(cluster: Cluster) -> DeadLetterPublisherBuilder<R> {
        DeadLetterPublisherBuilder {
            cluster,
            producer: None,
            producer_config: ProducerConfig::default().with_linger(Duration::ZERO),
            naming: DltNaming::default(),
            resolver: None,
            missing: MissingDestination::default(),
            verification: PartitionVerification::default(),
            headers: DeadLetterHeaders::default(),
            group: None,
            timeout: SendTimeout::default(),
            connections: PublisherConnections::default(),
            producer_config_set: false,
        }
    }

    /// The destination of `record` failed with `error` (before partition verification), or
    /// `None` when the resolver gives none.
    pub fn destination(&self, record: &R, error: &SharedError) -> Option<Destination> {
        match &self.resolver {
            Some(f) => f(record, error),
            None => Some(Destination::new(
                self.naming.dlt_topic(record.topic()),
                record.partition(),
            )),
        }
    }

    /// The dead letter of `record` for `destination` (partition not yet verified): original
    /// key, value and headers plus the dead-letter headers.
    pub fn dead_letter(
        &self,
        record: &R,
        error: &SharedError,
        destination: &Destination,
    ) -> Record {
        let err: &(dyn StdError + 'static) = &**error;
        let failed_part = deserialization_failure(err)
            .map(|d| d.part)
            .or_else(|| record.deserialization_failure().map(|d| d.part));
        let failed_part = match failed_part {
            Some(RecordPart::Key) => Some(RecordPart::Key),
            _ => None,
        };
        let provenance = Provenance {
            topic: record.topic().to_owned(),
            partition: record.partition(),
            offset: record.offset(),
            timestamp: record.timestamp(),
            timestamp_type: record.timestamp_type(),
            group: self.group.clone(),
        };
        let headers = self
            .headers
            .build(&record.headers(), &provenance, err, failed_part);
        Record {
            topic: Arc::from(destination.topic.as_str()),
            partition: (destination.partition >= 0).then_some(destination.partition),
            key: record.key().cloned(),
            value: record.value().cloned(),
            headers,
            timestamp: None,
        }
    }

    /// Publishes the dead letter of `record` and waits for its acknowledgement. `Ok(None)`
    /// when there is no destination and [`MissingDestination::Skip`] is set, and for a
    /// [pipelined](DeadLetterPublisherBuilder::build_pipelined) publisher (which only queues
    /// the dead letter; its [`CommitGate`] waits for the acknowledgement).
    pub async fn publish(
        &self,
        record: &R,
        error: &SharedError,
    ) -> Result<Option<RecordMetadata>, DeadLetterError> {
        let Some(destination) = self.destination(record, error) else {
            return match self.missing {
                MissingDestination::Skip => {
                    tracing::warn!(
                        topic = record.topic(),
                        partition = record.partition(),
                        offset = record.offset(),
                        "no dead-letter destination for {}-{}@{}; record skipped",
                        record.topic(),
                        record.partition(),
                        record.offset()
                    );
                    Ok(None)
                }
                MissingDestination::Fail => Err(DeadLetterError::NoDestination {
                    topic: record.topic().to_owned(),
                    partition: record.partition(),
                    offset: record.offset(),
                }),
            };
        };
        let mut out = self.dead_letter(record, error, &destination);
        out.partition = match out.partition {
            Some(p) => self.sender.verified_partition(&destination.topic, p).await,
            None => None,
        };
        if let Some(pending) = &self.pipeline {
            pending.enqueue(record, out).await?;
            return Ok(None);
        }
        let meta = self
            .sender
            .publish((record.topic(), record.partition(), record.offset()), out)
            .await?;
        tracing::debug!(
            topic = record.topic(),
            partition = record.partition(),
            offset = record.offset(),
            dlt = %meta.topic,
            dlt_partition = meta.partition,
            dlt_offset = meta.offset,
            "dead letter published"
        );
        Ok(Some(meta))
    }

    /// The producer the publisher sends with.
    pub fn producer(&self) -> &Producer {
        &self.sender.producer
    }

    /// Flushes the producer, and closes it (and its connections) if the publisher built it.
    pub async fn close(&self) {
        self.sender.close().await;
    }
}

impl<R: ListenerRecord> Recoverer<R> for DeadLetterPublisher<R> {
    fn recover<'a>(
        &'a self,
        record: &'a R,
        error: &'a SharedError,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            self.publish(record, error)
                .await
                .map(|_| ())
                .map_err(|e| Box::new(e) as HandlerError)
        })
    }
}

/// `Bytes` of a big-endian `u32` count.
pub(crate) fn count_bytes(n: u32) -> Bytes {
    Bytes::copy_from_slice(&i32::try_from(n).unwrap_or(i32::MAX).to_be_bytes())
}

impl From<DeadLetterError> for Error {
    fn from(e: DeadLetterError) -> Error {
        let kind = match &e {
            DeadLetterError::Timeout { .. } => ErrorKind::Timeout,
            DeadLetterError::Send { error, .. } => error.kind().clone(),
            DeadLetterError::NoDestination { .. } => ErrorKind::Config,
        };
        Error::with_message(kind, e.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Pipelined publication

/// Dead letters in a pipelined publisher at most; `recover` waits for the queued ones first
/// when full (back-pressure).
pub const MAX_PENDING_DEAD_LETTERS: usize = 10_000;
/// How often a dead letter whose publication failed is sent again.
const RESEND_INTERVAL: Duration = Duration::from_secs(1);

/// A queued dead letter: the source offset, the record (to send again) and its delivery.
struct PendingLetter {
    offset: i64,
    record: Record,
    delivery: Option<DeliveryFuture>,
    last_send: Instant,
}

/// The dead letters a pipelined publisher queued and its gate has not seen acknowledged, per
/// source partition, in offset order.
pub(crate) struct PendingLetters {
    sender: Arc<Sender>,
    letters: Mutex<HashMap<TopicPartition, Vec<PendingLetter>>>,
    count: std::sync::atomic::AtomicUsize,
}

impl PendingLetters {
    async fn enqueue<R: ListenerRecord>(
        &self,
        source: &R,
        record: Record,
    ) -> Result<(), DeadLetterError> {
        use std::sync::atomic::Ordering;
        if self.count.load(Ordering::Acquire) >= MAX_PENDING_DEAD_LETTERS {
            // Back-pressure: wait for what is queued.
            self.settle().await;
        }
        let delivery = self
            .sender
            .producer
            .send(record.clone())
            .await
            .map_err(|error| DeadLetterError::Send {
                destination: record.topic.to_string(),
                topic: source.topic().to_owned(),
                partition: source.partition(),
                offset: source.offset(),
                error,
            })?;
        let tp: TopicPartition = (Arc::from(source.topic()), source.partition());
        lock(&self.letters)
            .entry(tp)
            .or_default()
            .push(PendingLetter {
                offset: source.offset(),
                record,
                delivery: Some(delivery),
                last_send: Instant::now(),
            });
        self.count.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Without waiting: drops acknowledged dead letters, and sends failed ones again (at most
    /// every [`RESEND_INTERVAL`]).
    async fn reap(&self) {
        use std::sync::atomic::Ordering;
        let mut resend: Vec<(TopicPartition, i64, Record)> = Vec::new();
        {
            let mut letters = lock(&self.letters);
            let mut acked = 0;
            for (tp, list) in letters.iter_mut() {
                list.retain_mut(
                    |l| match l.delivery.as_ref().map(DeliveryFuture::try_result) {
                        Some(Some(Ok(_))) => {
                            acked += 1;
                            false
                        }
                        Some(None) => true,
                        Some(Some(Err(e))) => {
                            tracing::warn!(
                                topic = %tp.0, partition = tp.1, offset = l.offset,
                                error = %e.error,
                                "dead-letter publication failed; the commit is held back"
                            );
                            l.delivery = None;
                            true
                        }
                        None => true,
                    },
                );
                for l in list.iter_mut() {
                    if l.delivery.is_none() && l.last_send.elapsed() >= RESEND_INTERVAL {
                        l.last_send = Instant::now();
                        resend.push((tp.clone(), l.offset, l.record.clone()));
                    }
                }
            }
            letters.retain(|_, l| !l.is_empty());
            self.count.fetch_sub(acked, Ordering::AcqRel);
        }
        for (tp, offset, record) in resend {
            match self.sender.producer.send(record).await {
                Ok(d) => {
                    if let Some(l) = lock(&self.letters)
                        .get_mut(&tp)
                        .and_then(|list| list.iter_mut().find(|l| l.offset == offset))
                    {
                        l.delivery = Some(d);
                    }
                }
                Err(e) => tracing::warn!(
                    topic = %tp.0, partition = tp.1, offset, error = %e.error,
                    "sending a dead letter again failed"
                ),
            }
        }
    }

    /// Waits (up to the send timeout each) for every queued dead letter, sending failed ones
    /// again once.
    async fn settle(&self) {
        self.sender.producer.flush().await;
        let pending: Vec<(TopicPartition, i64)> = lock(&self.letters)
            .iter()
            .flat_map(|(tp, l)| l.iter().map(move |l| (tp.clone(), l.offset)))
            .collect();
        for (tp, offset) in pending {
            let (record, delivery) = {
                let mut letters = lock(&self.letters);
                let Some(l) = letters
                    .get_mut(&tp)
                    .and_then(|list| list.iter_mut().find(|l| l.offset == offset))
                else {
                    continue;
                };
                (l.record.clone(), l.delivery.take())
            };
            let delivery = match delivery {
                Some(d) if !matches!(d.try_result(), Some(Err(_))) => Some(d),
                _ => self.sender.producer.send(record).await.ok(),
            };
            let Some(mut delivery) = delivery else {
                continue;
            };
            // The outcome is read by `reap` below through the delivery itself.
            let _ = tokio::time::timeout(self.sender.timeout, &mut delivery).await;
            if let Some(l) = lock(&self.letters)
                .get_mut(&tp)
                .and_then(|list| list.iter_mut().find(|l| l.offset == offset))
            {
                l.delivery = Some(delivery);
            }
        }
        self.reap().await;
    }

    /// The lowest source offset of a dead letter of `tp` not yet acknowledged.
    fn lowest_unacked(&self, tp: &TopicPartition) -> Option<i64> {
        lock(&self.letters)
            .get(tp)
            .and_then(|l| l.iter().map(|l| l.offset).min())
    }

    fn is_empty(&self) -> bool {
        lock(&self.letters).values().all(Vec::is_empty)
    }
}

/// Wraps the container's consumer for a [pipelined](DeadLetterPublisherBuilder::build_pipelined)
/// [`DeadLetterPublisher`] and never commits a partition past a record whose dead letter is not
/// acknowledged yet.
///
/// Commits do not wait: a commit is capped at the lowest offset of its partition whose dead
/// letter is still in flight, and the full offset is *held back* and committed by the gate from
/// a later `poll` as soon as those dead letters are acknowledged. A dead letter whose
/// publication failed is sent again every second (a WARN each time) and holds the commit back
/// until it goes through, so a failed record is never lost; if the process stops first, the
/// records from the held-back offset on are redelivered, and some of their dead letters may be
/// written twice. `close` waits for the queued dead letters (up to the send timeout each)
/// before committing what it can.
///
/// Not for the container's exactly-once mode: there the transaction commits the offsets, which
/// the gate does not see; use [`TransactionalDeadLetters`](super::TransactionalDeadLetters)
/// (dead letters inside the transaction) instead. A commit held back loses its metadata (the
/// retry state of a record being retried), so after a restart from a held-back offset the
/// attempt count starts again.
pub struct CommitGate<C> {
    inner: C,
    pending: Arc<PendingLetters>,
    /// Offsets held back per partition: the full offset the container asked to commit.
    held: HashMap<TopicPartition, OffsetToCommit>,
    /// The last capped offset committed per partition (a repeat is not sent again).
    capped: HashMap<TopicPartition, i64>,
}

impl<C> fmt::Debug for CommitGate<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CommitGate")
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

impl<C: ContainerConsumer> CommitGate<C> {
    /// The wrapped consumer.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// `offsets` capped below dead letters in flight (the full ones remembered as held back).
    fn cap(&mut self, offsets: Vec<OffsetToCommit>) -> Vec<OffsetToCommit> {
        let mut out = Vec::with_capacity(offsets.len());
        for o in offsets {
            match self.pending.lowest_unacked(&o.partition) {
                Some(low) if low < o.offset => {
                    // Committing the same capped offset again would only cost a round trip.
                    if self.capped.insert(o.partition.clone(), low) != Some(low) {
                        out.push(OffsetToCommit {
                            partition: o.partition.clone(),
                            offset: low,
                            metadata: String::new(),
                        });
                    }
                    self.held.insert(o.partition.clone(), o);
                }
                _ => {
                    self.held.remove(&o.partition);
                    self.capped.remove(&o.partition);
                    out.push(o);
                }
            }
        }
        out
    }

    /// Commits held-back offsets whose dead letters are acknowledged by now.
    async fn commit_released(&mut self) -> crate::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        self.pending.reap().await;
        let ready: Vec<OffsetToCommit> = self
            .held
            .values()
            .filter(|o| {
                self.pending
                    .lowest_unacked(&o.partition)
                    .is_none_or(|low| low >= o.offset)
            })
            .cloned()
            .collect();
        if ready.is_empty() {
            return Ok(());
        }
        for o in &ready {
            self.held.remove(&o.partition);
            self.capped.remove(&o.partition);
        }
        if let Err(e) = self.inner.commit(ready.clone()).await {
            for o in ready {
                self.held.entry(o.partition.clone()).or_insert(o);
            }
            return Err(e);
        }
        Ok(())
    }
}

impl<C: ContainerConsumer> ContainerConsumer for CommitGate<C> {
    type Record = C::Record;

    async fn poll(&mut self, timeout: Duration) -> crate::Result<Vec<C::Record>> {
        if let Err(e) = self.commit_released().await {
            tracing::debug!(error = %e, "committing held-back offsets failed");
        }
        // While offsets are held back, come back soon to release them.
        let timeout = if self.held.is_empty() {
            timeout
        } else {
            timeout.min(Duration::from_millis(20))
        };
        self.inner.poll(timeout).await
    }

    fn seek(&mut self, partition: &TopicPartition, offset: i64) -> crate::Result<()> {
        self.inner.seek(partition, offset)
    }

    fn pause(&mut self, partitions: &[TopicPartition]) -> crate::Result<()> {
        self.inner.pause(partitions)
    }

    fn resume(&mut self, partitions: &[TopicPartition]) -> crate::Result<()> {
        self.inner.resume(partitions)
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        self.inner.assignment()
    }

    async fn commit(&mut self, offsets: Vec<OffsetToCommit>) -> crate::Result<()> {
        self.pending.reap().await;
        let offsets = self.cap(offsets);
        if offsets.is_empty() {
            return Ok(());
        }
        self.inner.commit(offsets).await
    }

    async fn committed(
        &mut self,
        partitions: &[TopicPartition],
    ) -> crate::Result<CommittedOffsets> {
        self.inner.committed(partitions).await
    }

    fn group_id(&self) -> Option<String> {
        self.inner.group_id()
    }

    fn transaction_group_metadata(&self) -> Option<crate::transaction::ConsumerGroupMetadata> {
        self.inner.transaction_group_metadata()
    }

    fn auto_commit_enabled(&self) -> bool {
        // An auto-committing consumer would commit past unacknowledged dead letters: let the
        // container refuse it.
        self.inner.auto_commit_enabled()
    }

    async fn close(&mut self) -> crate::Result<()> {
        self.pending.settle().await;
        if let Err(e) = self.commit_released().await {
            tracing::warn!(error = %e, "committing held-back offsets on close failed");
        }
        if !self.pending.is_empty() {
            tracing::warn!(
                "closing with unacknowledged dead letters; their records will be redelivered"
            );
        }
        self.inner.close().await
    }
}

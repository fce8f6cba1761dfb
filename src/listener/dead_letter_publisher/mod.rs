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
//! * **delivery:** through its own idempotent [`Producer`] (lz4, large batches: see
//!   [`default_producer_config`]). By default ([`PublishWait::PerPoll`]) the listener container
//!   does not wait for each dead letter: a publishing task builds and sends it while the
//!   container goes on, and the container never commits past a record whose dead letter is not
//!   acknowledged yet. With [`PublishWait::PerRecord`] (Spring's behaviour) each recovery waits
//!   for its acknowledgement. Either way every wait is bounded by the
//!   [send timeout](SendTimeout), and a failed or timed-out publication is a *recovery
//!   failure*: the container redelivers the record and caps the failures; the record is never
//!   skipped. When a publication timed out and its delivery is still pending, the next
//!   recovery of the same record waits for that delivery instead of sending a second copy, so
//!   a slow broker does not produce duplicate dead letters.
//!
//! ```no_run
//! use std::time::Duration;
//! use rekafka::Client;
//! use rekafka::listener::{DefaultErrorHandler, FixedBackOff, ListenerRecord};
//!
//! // `R` is the container's record type (`ListenerConsumerRecord` for a container over a
//! // `Consumer`).
//! async fn handler<R: ListenerRecord>(client: &Client) -> rekafka::Result<DefaultErrorHandler<R>> {
//!     let dlt = client
//!         .dead_letter_publisher::<R>()
//!         .group("billing")
//!         .build()
//!         .await?;
//!     Ok(DefaultErrorHandler::new()
//!         .back_off(FixedBackOff::new(Duration::from_millis(100), 3))
//!         .recoverer(dlt))
//! }
//! ```

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use super::classify::{DeserializationFailed, HandlerError, RecordPart};
use super::consumer::ListenerRecord;
use super::dead_letter::{DeadLetterHeaders, Provenance};
use super::handler::{BoxFuture, RecoverFuture, Recoverer, Recovery, SharedError};
use crate::cluster::Cluster;
use crate::producer::{ProduceError, Producer, Record, RecordMetadata};
use crate::{Error, ErrorKind};

mod builder;
mod sender;

pub use builder::{DEFAULT_BATCH_SIZE, DeadLetterPublisherBuilder, default_producer_config};
use sender::lock;
pub(crate) use sender::{Sender, log_sent};

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

/// When the listener container waits for the broker's acknowledgement of a dead letter.
///
/// Either way nothing is committed past a record whose dead letter is not acknowledged, and a
/// failed publication is a recovery failure (the record is redelivered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PublishWait {
    /// The dead letter is sent and the container goes on with the next records; it waits for
    /// the acknowledgements of all dead letters sent while handling a poll's records before it
    /// commits that poll's offsets and polls again
    /// ([`Recovery::InFlight`]). Consecutive dead letters travel
    /// in one produce request instead of one round trip each. When one fails, its partition is
    /// sought back to that record; records after it whose dead letters were acknowledged are
    /// not dead-lettered again when they come back, the others may be handled again
    /// (at-least-once, as after any redelivery).
    #[default]
    PerPoll,
    /// Every recovery waits for its dead letter's acknowledgement before the next record is
    /// handled (Spring's `DeadLetterPublishingRecoverer`): one produce round trip per failed
    /// record.
    PerRecord,
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

/// Default destination names cached, at most this many source topics.
const MAX_CACHED_TOPIC_NAMES: usize = 64;
/// Pending deliveries kept after a timeout, at most this many.
const MAX_PENDING: usize = 1024;
/// A destination topic's partitions are re-read from the cluster at most this often when a
/// resolved partition is missing from them.
const METADATA_REFRESH_INTERVAL: Duration = Duration::from_secs(10);

/// The first [`DeserializationFailed`] in `error`'s source chain.
pub(crate) fn deserialization_failure<'a>(
    error: &'a (dyn StdError + 'static),
) -> Option<&'a DeserializationFailed> {
    crate::listener::classify::find_in_chain(error)
}

/// Publishes failed records to a dead-letter topic (see the [module docs](self)).
///
/// With [`PublishWait::PerPoll`] (the default) it runs a publishing task, started by
/// [`build`](DeadLetterPublisherBuilder::build) (so inside a tokio runtime), which ends when the
/// publisher is dropped.
///
/// Spring's `DeadLetterPublishingRecoverer`: give it to an error handler as its recoverer.
/// A dead letter keeps the original key, value and headers, and gets the `kafka_dlt-*`
/// headers (original topic, partition, offset, timestamp, exception class, message and
/// stack trace), so Spring applications and `rekafka dlt` can read it.
///
/// ```no_run
/// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
/// use std::time::Duration;
/// use rekafka::listener::{
///     DefaultErrorHandler, Destination, FixedBackOff, ListenerConsumerRecord, ListenerRecord,
/// };
///
/// // Failed records of `payments` go to partition 0 of `payments-poison`, the others to
/// // `<topic>-dlt` on any partition (the default is `<topic>-dlt`, same partition).
/// let dead_letters = client
///     .dead_letter_publisher::<ListenerConsumerRecord>()
///     .group("billing")
///     .resolver(|record: &ListenerConsumerRecord, _error| {
///         Some(match record.topic() {
///             "payments" => Destination::new("payments-poison", 0),
///             topic => Destination::any_partition(format!("{topic}-dlt")),
///         })
///     })
///     .build()
///     .await?;
/// let error_handler = DefaultErrorHandler::new()
///     .back_off(FixedBackOff::new(Duration::from_secs(1), 2))
///     .recoverer(dead_letters);
/// # let _ = error_handler;
/// # Ok(()) }
/// ```
pub struct DeadLetterPublisher<R> {
    pub(crate) sender: Arc<Sender>,
    naming: DltNaming,
    resolver: Option<Resolver<R>>,
    missing: MissingDestination,
    headers: DeadLetterHeaders,
    group: Option<String>,
    wait: PublishWait,
    /// Source topic → default destination topic.
    topic_names: Mutex<Vec<(Arc<str>, Arc<str>)>>,
    /// [`PublishWait::PerPoll`]: the publishing task's queue (see [`Job`]).
    queue: Option<mpsc::Sender<Job<R>>>,
}

/// A dead letter to build and send on the publishing task, and where its acknowledgement's
/// wait goes (`None`: no destination, skipped).
type Job<R> = (
    R,
    SharedError,
    oneshot::Sender<Result<Option<AckWait>, DeadLetterError>>,
);

/// The wait for a dead letter's acknowledgement.
type AckWait = BoxFuture<'static, Result<RecordMetadata, DeadLetterError>>;

/// Dead letters queued for the publishing task at most (then `start_recovery` waits).
const MAX_QUEUED_DEAD_LETTERS: usize = 4096;

/// The publishing task of a [`PublishWait::PerPoll`] publisher: builds and sends the dead
/// letters queued by `start_recovery`, in order, off the container's task. It ends when the
/// publisher is dropped (its queue closes).
async fn publishing_task<R: ListenerRecord>(
    worker: DeadLetterPublisher<R>,
    mut queue: mpsc::Receiver<Job<R>>,
) {
    while let Some((record, error, reply)) = queue.recv().await {
        let started = match worker.prepare(&record, &error).await {
            Ok(Some(out)) => worker
                .sender
                .start(&record, out)
                .await
                .map(|ack| Some(Box::pin(ack) as AckWait)),
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        // The container may have stopped waiting (it is stopping): nothing to tell it.
        let _ = reply.send(started);
    }
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
            .field("wait", &self.wait)
            .finish()
    }
}

impl<R: ListenerRecord> DeadLetterPublisher<R> {
    /// For [`PublishWait::PerPoll`], starts the publishing task (on a copy of this publisher,
    /// sharing its producer).
    fn with_publishing_task(mut self) -> Self {
        if self.wait != PublishWait::PerPoll {
            return self;
        }
        let worker = DeadLetterPublisher {
            sender: self.sender.clone(),
            naming: self.naming,
            resolver: self.resolver.clone(),
            missing: self.missing,
            headers: self.headers.clone(),
            group: self.group.clone(),
            wait: self.wait,
            topic_names: Mutex::new(Vec::new()),
            queue: None,
        };
        let (tx, rx) = mpsc::channel(MAX_QUEUED_DEAD_LETTERS);
        tokio::spawn(publishing_task(worker, rx).in_current_span());
        self.queue = Some(tx);
        self
    }

    /// A builder publishing through `cluster`.
    pub fn builder(cluster: Cluster) -> DeadLetterPublisherBuilder<R> {
        DeadLetterPublisherBuilder {
            cluster,
            producer: None,
            producer_config: default_producer_config(),
            naming: DltNaming::default(),
            resolver: None,
            missing: MissingDestination::default(),
            verification: PartitionVerification::default(),
            headers: DeadLetterHeaders::default(),
            group: None,
            timeout: SendTimeout::default(),
            connections: PublisherConnections::default(),
            wait: PublishWait::default(),
            close_link: crate::task::CloseLink::default(),
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
        self.letter(
            record,
            error,
            Arc::from(destination.topic.as_str()),
            destination.partition,
        )
    }

    /// The dead letter of `record` for `topic`, `partition` (negative: the partitioner's).
    fn letter(&self, record: &R, error: &SharedError, topic: Arc<str>, partition: i32) -> Record {
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
            // As Spring: the group whenever it is known (the configured one first).
            group: self
                .group
                .clone()
                .or_else(|| record.consumer_group().map(str::to_owned)),
        };
        let headers = self
            .headers
            .build(&record.headers(), &provenance, err, failed_part);
        Record {
            topic,
            partition: (partition >= 0).then_some(partition),
            key: record.key().cloned(),
            value: record.value().cloned(),
            headers,
            timestamp: None,
        }
    }

    /// The dead letter of `record` ready to send (partition verified), or `None` when there is
    /// no destination and [`MissingDestination::Skip`] is set.
    pub(crate) async fn prepare(
        &self,
        record: &R,
        error: &SharedError,
    ) -> Result<Option<Record>, DeadLetterError> {
        let destination = match &self.resolver {
            None => Some((self.default_topic(record.topic()), record.partition())),
            Some(resolve) => resolve(record, error).map(|d| (Arc::from(d.topic), d.partition)),
        };
        let Some((topic, partition)) = destination else {
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
        let mut out = self.letter(record, error, topic, partition);
        out.partition = match out.partition {
            Some(p) => self.sender.verified_partition(&out.topic, p).await,
            None => None,
        };
        Ok(Some(out))
    }

    /// The default destination topic of records of `source` (names cached).
    fn default_topic(&self, source: &str) -> Arc<str> {
        let mut names = lock(&self.topic_names);
        if let Some((_, dlt)) = names.iter().find(|(s, _)| &**s == source) {
            return dlt.clone();
        }
        let dlt: Arc<str> = Arc::from(self.naming.dlt_topic(source));
        if names.len() < MAX_CACHED_TOPIC_NAMES {
            names.push((Arc::from(source), dlt.clone()));
        }
        dlt
    }

    /// Publishes the dead letter of `record` and waits for its acknowledgement. `Ok(None)`
    /// when there is no destination and [`MissingDestination::Skip`] is set.
    pub async fn publish(
        &self,
        record: &R,
        error: &SharedError,
    ) -> Result<Option<RecordMetadata>, DeadLetterError> {
        let Some(out) = self.prepare(record, error).await? else {
            return Ok(None);
        };
        let meta = self.sender.publish(record, out).await?;
        log_sent(record, &meta, &"dead letter published");
        self.published(record);
        Ok(Some(meta))
    }

    /// Counts a dead letter of `record` acknowledged ([`crate::telemetry::DEAD_LETTERS_PUBLISHED`]).
    fn published(&self, record: &R) {
        crate::telemetry::dead_letter_published(
            &self.sender.cluster.config().connection.client_id,
            record.topic(),
            record.partition(),
        );
    }

    /// The producer the publisher sends with.
    pub fn producer(&self) -> &Producer {
        &self.sender.producer
    }

    /// Flushes the producer, and closes it (and its connections) if the publisher built it.
    /// Recoveries started afterwards fail (a recovery failure: their records are redelivered).
    pub async fn close(&self) {
        self.sender.close().await;
    }
}

impl<R: ListenerRecord> Recoverer<R> for DeadLetterPublisher<R> {
    fn recover<'a>(&'a self, record: &'a R, error: &'a SharedError) -> RecoverFuture<'a> {
        Box::pin(async move {
            self.publish(record, error)
                .await
                .map(|_| ())
                .map_err(|e| Box::new(e) as HandlerError)
        })
    }

    fn start_recovery<'a>(
        &'a self,
        record: &'a R,
        error: &'a SharedError,
    ) -> BoxFuture<'a, Result<Recovery, HandlerError>> {
        Box::pin(async move {
            // No queue: `PublishWait::PerRecord` (wait for each dead letter).
            let Some(queue) = &self.queue else {
                return self
                    .publish(record, error)
                    .await
                    .map(|_| Recovery::Done)
                    .map_err(|e| Box::new(e) as HandlerError);
            };
            let (reply, started) = oneshot::channel();
            if queue
                .send((record.clone(), error.clone(), reply))
                .await
                .is_err()
            {
                return Err(Box::new(Error::with_message(
                    ErrorKind::Closed,
                    "the dead-letter publishing task has stopped",
                )) as HandlerError);
            }
            let (source, client_id) = (
                record.clone(),
                self.sender.cluster.config().connection.client_id.clone(),
            );
            Ok(Recovery::InFlight(Box::pin(async move {
                let ack = match started.await {
                    Ok(Ok(Some(ack))) => ack,
                    Ok(Ok(None)) => return Ok(()),
                    Ok(Err(e)) => return Err(Box::new(e) as HandlerError),
                    Err(_) => {
                        return Err(Box::new(Error::with_message(
                            ErrorKind::Closed,
                            "the dead-letter publishing task has stopped",
                        )) as HandlerError);
                    }
                };
                let meta = ack.await.map_err(|e| Box::new(e) as HandlerError)?;
                log_sent(&source, &meta, &"dead letter published");
                crate::telemetry::dead_letter_published(
                    &client_id,
                    source.topic(),
                    source.partition(),
                );
                Ok(())
            })))
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

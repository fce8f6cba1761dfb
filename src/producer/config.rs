//! Producer settings, with the Java client's names and defaults.

use std::sync::Arc;
use std::time::Duration;

use super::circuit::CircuitBreakerConfig;
use super::partitioner::Partitioner;
use crate::config::{self, Setting};
use crate::error::{Error, Result};
use crate::protocol::record::Compression;

/// Default [`ProducerConfig::linger`]: 5 ms (Kafka 4.0's `linger.ms`, KIP-1030; librdkafka's
/// `linger.ms`).
pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
/// Default [`ProducerConfig::batch_size`]: 16384 bytes (Kafka's `batch.size`).
pub const DEFAULT_BATCH_SIZE: usize = 16384;
/// Default [`ProducerConfig::backlog_batch_size`]: 1 MiB (the broker's default
/// `message.max.bytes` is 1 MiB + 12; librdkafka's `batch.size` is 1 000 000, franz-go's
/// `ProducerBatchMaxBytes` 1 000 012). How far a batch really grows is capped per broker by
/// that broker's recent delivery rate (see [`ProducerConfig::backlog_batch_size`]), so a
/// broker too slow to take large batches within `request.timeout.ms` keeps Java's.
pub const DEFAULT_BACKLOG_BATCH_SIZE: usize = 1024 * 1024;
/// Default [`ProducerConfig::buffer_memory`]: 32 MiB (Kafka's `buffer.memory`).
pub const DEFAULT_BUFFER_MEMORY: usize = 32 * 1024 * 1024;
/// Default [`ProducerConfig::max_block`]: 60 s (Kafka's `max.block.ms`).
pub const DEFAULT_MAX_BLOCK: Duration = Duration::from_secs(60);
/// Default `transaction.timeout.ms`: 60 s.
pub const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`ProducerConfig::delivery_timeout`]: 120 s (Kafka's `delivery.timeout.ms`).
pub const DEFAULT_DELIVERY_TIMEOUT: Duration = Duration::from_secs(120);
/// Default [`ProducerConfig::request_timeout`]: 30 s (Kafka's `request.timeout.ms`).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ProducerConfig::retry_backoff`]: 100 ms (Kafka's `retry.backoff.ms`).
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Default [`ProducerConfig::retry_backoff_max`]: 1 s (Kafka's `retry.backoff.max.ms`).
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Default [`ProducerConfig::max_in_flight`]: 5 (Kafka's
/// `max.in.flight.requests.per.connection`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 5;
/// Default [`ProducerConfig::max_request_size`]: 1 MiB (Kafka's `max.request.size`).
pub const DEFAULT_MAX_REQUEST_SIZE: usize = 1024 * 1024;

/// How many acknowledgements the leader waits for before answering a produce request
/// (Kafka's `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Acks {
    /// `acks=0`: the broker does not answer; a record counts as delivered once written to the
    /// socket and its offset is unknown (-1). Records may be lost silently by the broker.
    None,
    /// `acks=1`: the leader answers once it has written the record to its log.
    Leader,
    /// `acks=all` (`-1`): the leader answers once every in-sync replica has the record.
    #[default]
    All,
}

impl Acks {
    /// The value of the Produce request's `acks` field.
    pub const fn as_i16(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl std::str::FromStr for Acks {
    type Err = Error;
    fn from_str(s: &str) -> Result<Acks> {
        match s.trim().to_ascii_lowercase().as_str() {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            other => Err(Error::config(format!(
                "acks: expected 0, 1, all or -1, got {other:?}"
            ))),
        }
    }
}

/// Whether the producer is idempotent (Kafka's `enable.idempotence`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Idempotence {
    /// The default, Java's since 3.2: idempotent unless `acks`, `retries` or
    /// `max.in.flight.requests.per.connection` conflict with it (`acks` other than `all`,
    /// `retries=0`, more than 5 in flight), in which case it is quietly off (with an info
    /// log) instead of an error.
    #[default]
    Auto,
    /// Producer id, epoch and per-partition sequence numbers: the broker drops duplicates of
    /// retried batches and rejects gaps, so records are written once and in order. Asked for
    /// explicitly (`enable.idempotence=true`): a conflicting setting is an error.
    Enabled,
    /// Plain produce requests: a retried batch may be written twice, and with more than one
    /// request in flight, reordered.
    Disabled,
}

/// How records without an explicit partition are assigned one (Kafka's `partitioner.class`).
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Partitioning {
    /// Kafka's default: records with a key go to `murmur2(key) & 0x7fffffff % partitions`
    /// (identical to the Java client and librdkafka's `murmur2_random`); records without a key
    /// stick to one partition until a new batch is started there (KIP-480), then move to
    /// another partition chosen at random.
    #[default]
    Default,
    /// Every record (keyed or not) goes to the next partition in turn.
    RoundRobin,
    /// A user-supplied [`Partitioner`].
    Custom(Arc<dyn Partitioner>),
}

impl std::fmt::Debug for Partitioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Partitioning::Default => f.write_str("Default"),
            Partitioning::RoundRobin => f.write_str("RoundRobin"),
            Partitioning::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// Settings of a [`Producer`](super::Producer).
///
/// Every setting has the Java client's default; [`apply_property`](Self::apply_property) sets
/// them by their Java names (`linger.ms`, `acks`, …).
///
/// ```
/// use std::time::Duration;
/// use rekafka::producer::{Acks, ProducerConfig};
/// use rekafka::protocol::record::Compression;
///
/// let mut config = ProducerConfig::default()
///     .with_linger(Duration::from_millis(10))
///     .with_compression(Compression::Lz4);
/// config.apply_property("batch.size", "65536")?;
/// assert_eq!(config.batch_size, 65536);
/// assert_eq!(config.acks, Acks::All);
/// config.validate()?;
/// # Ok::<(), rekafka::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProducerConfig {
    /// Acknowledgements required (`acks`). Default: [`Acks::All`].
    pub acks: Acks,
    /// Idempotence (`enable.idempotence`). Default: [`Idempotence::Auto`]: on, unless left
    /// unset with `acks` other than `all`, `retries=0` or `max_in_flight > 5`, as in the Java
    /// client (3.2+). [`Idempotence::Enabled`] with such a setting is an error.
    pub idempotence: Idempotence,
    /// How long a record may take from `send` to success or failure, retries included
    /// (`delivery.timeout.ms`). Default: 120 s. Must be at least `linger + request_timeout`.
    pub delivery_timeout: Duration,
    /// How many times a batch is retried after a definite failure (`retries`). Default:
    /// 2147483647 (Java's), so that `delivery_timeout` is what bounds retries. Attempts that
    /// end without a definite answer (a timeout, a lost connection, `REQUEST_TIMED_OUT`,
    /// `NOT_ENOUGH_REPLICAS_AFTER_APPEND`) do not count: giving up after one of them could
    /// only report "possibly persisted". Idempotence requires at least 1.
    pub retries: u32,
    /// How long a batch waits for more records before it is sent (`linger.ms`). Default: 5 ms.
    pub linger: Duration,
    /// The size in bytes at which a partition's batch is sealed and sent (`batch.size`).
    /// Default: 16384. A record larger than this gets a batch of its own.
    ///
    /// As in Java, a batch that reaches `batch_size` is ready to send at once (without waiting
    /// for `linger`). Unlike Java, while the partition has a backlog (a produce request to its
    /// leader is still in flight, or the partition has batches waiting) its open batch keeps
    /// taking records, past `batch_size` up to [`backlog_batch_size`](Self::backlog_batch_size)
    /// (as far as the leader's recent delivery rate allows), and leaves with the next request: under load the producer sends fewer, larger batches
    /// instead of queueing many `batch_size` ones behind each other (Kafka serves one request
    /// per connection at a time, so those would only wait at the broker). With
    /// `backlog_batch_size <= batch_size` (or toward a broker not yet shown fast enough for
    /// larger batches) batches are Java's and up to `max_in_flight` requests per broker are
    /// pipelined.
    pub batch_size: usize,
    /// How large a batch may grow past [`batch_size`](Self::batch_size) while its partition
    /// has a backlog (no Java equivalent; librdkafka's `batch.size` plays this role). Capped by
    /// `max_request_size`; a value at or below `batch_size` gives Java's behaviour (batches
    /// never exceed `batch_size` unless one record does). Default: 1 MiB
    /// ([`DEFAULT_BACKLOG_BATCH_SIZE`]; measured in BENCHMARKS.md).
    ///
    /// The growth adapts to each broker, like a congestion window: from every response the
    /// producer estimates the broker's delivery rate (the request's bytes over the time the
    /// connection spent on it, averaged with weight 1/4 per response), and a request to it may
    /// carry what that rate delivers in a quarter of the request timeout (the shorter of this
    /// `request_timeout` and the connection's). The partitions of that broker with a backlog
    /// share it: each batch may grow to its share, at least `batch_size`, at most this value.
    /// Until a broker has answered, and after a request to it timed out or lost its
    /// connection, its batches stay at `batch_size` (Java's). So a healthy broker reaches
    /// large batches after its first responses, while one too slow to take them in time keeps
    /// Java's sizes (a grown batch is retried whole: a sent batch is never re-split). Only
    /// batches not yet sent follow the cap. Keep this at or below the topic's
    /// `max.message.bytes` (broker default 1 MiB + 12): the producer does not split a batch
    /// the broker refuses as too large.
    pub backlog_batch_size: usize,
    /// The memory in bytes for records waiting to be sent or acknowledged (`buffer.memory`);
    /// `send` waits for room up to `max_block`. Default: 32 MiB. Accounting is by batch
    /// buffer: a batch starts with 16 KiB (or `batch_size` if smaller) and is charged again
    /// each time its buffer doubles, so a large `batch_size` costs memory only where traffic
    /// fills batches.
    pub buffer_memory: usize,
    /// How long `send` may wait for buffer room or for a topic's metadata (`max.block.ms`).
    /// Default: 60 s.
    pub max_block: Duration,
    /// How long a produce request may wait for its response (`request.timeout.ms`). Default:
    /// 30 s.
    pub request_timeout: Duration,
    /// The first wait before retrying a failed batch (`retry.backoff.ms`), doubled per
    /// consecutive failure up to `retry_backoff_max`, ±20% jitter (KIP-580). Default: 100 ms.
    pub retry_backoff: Duration,
    /// The longest wait before retrying (`retry.backoff.max.ms`). Default: 1 s.
    pub retry_backoff_max: Duration,
    /// Produce requests in flight per broker (`max.in.flight.requests.per.connection`).
    /// Default: 5. With idempotence at most 5 (the broker remembers 5 batches per partition).
    pub max_in_flight: usize,
    /// Compression codec of every batch (`compression.type`). Default: [`Compression::None`].
    pub compression: Compression,
    /// Compression level (`compression.gzip.level`, `compression.zstd.level`; ignored by
    /// snappy and lz4). Default: `None` (the codec's default).
    pub compression_level: Option<i32>,
    /// The largest produce request in bytes (`max.request.size`); a single record larger than
    /// this fails with `MESSAGE_TOO_LARGE` at `send`. Default: 1 MiB.
    pub max_request_size: usize,
    /// How records are assigned partitions (`partitioner.class`). Default:
    /// [`Partitioning::Default`].
    pub partitioning: Partitioning,
    /// The circuit breaker (no Java equivalent). Default: `None` (off).
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// The transactional id (`transactional.id`). Default: `None`. Set, the producer must be
    /// built as a [`TransactionalProducer`](crate::transaction::TransactionalProducer) (which
    /// requires idempotence); [`Producer::new`](super::Producer::new) refuses it.
    pub transactional_id: Option<String>,
    /// The longest a transaction may stay open before the coordinator aborts it
    /// (`transaction.timeout.ms`). Default: 60 s.
    pub transaction_timeout: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::All,
            idempotence: Idempotence::Auto,
            delivery_timeout: DEFAULT_DELIVERY_TIMEOUT,
            retries: i32::MAX as u32,
            linger: DEFAULT_LINGER,
            batch_size: DEFAULT_BATCH_SIZE,
            backlog_batch_size: DEFAULT_BACKLOG_BATCH_SIZE,
            buffer_memory: DEFAULT_BUFFER_MEMORY,
            max_block: DEFAULT_MAX_BLOCK,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            retry_backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            compression: Compression::None,
            compression_level: None,
            max_request_size: DEFAULT_MAX_REQUEST_SIZE,
            partitioning: Partitioning::Default,
            circuit_breaker: None,
            transactional_id: None,
            transaction_timeout: DEFAULT_TRANSACTION_TIMEOUT,
        }
    }
}

impl ProducerConfig {
    /// The settings [`apply_property`](Self::apply_property) knows: the Java property names
    /// (with librdkafka's aliases), and `rekafka.backlog.batch.size`
    /// ([`backlog_batch_size`](Self::backlog_batch_size), no Java equivalent). See
    /// [`config`] and `docs/configuration.md`.
    pub const SETTINGS: &'static [Setting] = config::PRODUCER;

    /// Every key [`apply_property`](Self::apply_property) knows, aliases included.
    pub fn property_names() -> impl Iterator<Item = &'static str> + Clone {
        config::names(Self::SETTINGS)
    }

    /// Sets a setting by its Java property name (or librdkafka alias). `Ok(false)`: not a
    /// producer property; `Err` ([`ErrorKind::Config`](crate::ErrorKind::Config)): a known
    /// property with a bad value (the message names it). `partitioner.class` accepts `default`
    /// (or Java's `org.apache.kafka.clients.producer.internals.DefaultPartitioner`) and
    /// `round-robin` (or Java's `org.apache.kafka.clients.producer.RoundRobinPartitioner`).
    pub fn apply_property(&mut self, key: &str, value: &str) -> Result<bool> {
        let Some(s) = config::find(Self::SETTINGS, key) else {
            return Ok(false);
        };
        match s.key {
            "acks" => self.acks = s.choice(value)?.parse()?,
            "enable.idempotence" => {
                self.idempotence = if s.boolean(value)? {
                    Idempotence::Enabled
                } else {
                    Idempotence::Disabled
                }
            }
            "delivery.timeout.ms" => self.delivery_timeout = s.millis(value)?,
            "retries" => self.retries = s.number(value)?,
            "linger.ms" => self.linger = s.millis(value)?,
            "batch.size" => self.batch_size = s.number(value)?,
            "rekafka.backlog.batch.size" => self.backlog_batch_size = s.number(value)?,
            "buffer.memory" => self.buffer_memory = s.number(value)?,
            "max.block.ms" => self.max_block = s.millis(value)?,
            "request.timeout.ms" => self.request_timeout = s.millis(value)?,
            "retry.backoff.ms" => self.retry_backoff = s.millis(value)?,
            "retry.backoff.max.ms" => self.retry_backoff_max = s.millis(value)?,
            "max.in.flight.requests.per.connection" => self.max_in_flight = s.number(value)?,
            "compression.type" => self.compression = s.choice(value)?.parse()?,
            "compression.level" => self.compression_level = Some(s.number(value)?),
            "max.request.size" => self.max_request_size = s.number(value)?,
            "partitioner.class" => {
                self.partitioning = match s.choice(value)? {
                    "round-robin"
                    | "roundrobin"
                    | "org.apache.kafka.clients.producer.RoundRobinPartitioner" => {
                        Partitioning::RoundRobin
                    }
                    _ => Partitioning::Default,
                }
            }
            "transactional.id" => self.transactional_id = s.text(value)?,
            "transaction.timeout.ms" => self.transaction_timeout = s.millis(value)?,
            other => return Err(config::unhandled(other)),
        }
        Ok(true)
    }

    /// Sets [`acks`](Self::acks).
    pub fn with_acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }
    /// Sets [`idempotence`](Self::idempotence).
    pub fn with_idempotence(mut self, idempotence: Idempotence) -> Self {
        self.idempotence = idempotence;
        self
    }
    /// Sets [`delivery_timeout`](Self::delivery_timeout).
    pub fn with_delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }
    /// Sets [`retries`](Self::retries).
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }
    /// Sets [`linger`](Self::linger).
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }
    /// Sets [`batch_size`](Self::batch_size).
    pub fn with_batch_size(mut self, bytes: usize) -> Self {
        self.batch_size = bytes;
        self
    }
    /// Sets [`backlog_batch_size`](Self::backlog_batch_size) (at or below `batch_size`: never
    /// grow a batch past `batch_size`, as Java).
    pub fn with_backlog_batch_size(mut self, bytes: usize) -> Self {
        self.backlog_batch_size = bytes;
        self
    }
    /// Sets [`buffer_memory`](Self::buffer_memory).
    pub fn with_buffer_memory(mut self, bytes: usize) -> Self {
        self.buffer_memory = bytes;
        self
    }
    /// Sets [`max_block`](Self::max_block).
    pub fn with_max_block(mut self, max_block: Duration) -> Self {
        self.max_block = max_block;
        self
    }
    /// Sets [`request_timeout`](Self::request_timeout).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }
    /// Sets [`retry_backoff`](Self::retry_backoff) and
    /// [`retry_backoff_max`](Self::retry_backoff_max).
    pub fn with_retry_backoff(mut self, backoff: Duration, max: Duration) -> Self {
        self.retry_backoff = backoff;
        self.retry_backoff_max = max;
        self
    }
    /// Sets [`max_in_flight`](Self::max_in_flight).
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }
    /// Sets [`compression`](Self::compression).
    pub fn with_compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }
    /// Sets [`compression_level`](Self::compression_level).
    pub fn with_compression_level(mut self, level: Option<i32>) -> Self {
        self.compression_level = level;
        self
    }
    /// Sets [`max_request_size`](Self::max_request_size).
    pub fn with_max_request_size(mut self, bytes: usize) -> Self {
        self.max_request_size = bytes;
        self
    }
    /// Sets [`partitioning`](Self::partitioning).
    pub fn with_partitioning(mut self, partitioning: Partitioning) -> Self {
        self.partitioning = partitioning;
        self
    }
    /// Sets [`transactional_id`](Self::transactional_id).
    pub fn with_transactional_id(mut self, id: impl Into<String>) -> Self {
        self.transactional_id = Some(id.into());
        self
    }
    /// Sets [`transaction_timeout`](Self::transaction_timeout).
    pub fn with_transaction_timeout(mut self, timeout: Duration) -> Self {
        self.transaction_timeout = timeout;
        self
    }
    /// Sets [`circuit_breaker`](Self::circuit_breaker).
    pub fn with_circuit_breaker(mut self, breaker: Option<CircuitBreakerConfig>) -> Self {
        self.circuit_breaker = breaker;
        self
    }

    /// Whether the producer is idempotent.
    pub fn is_idempotent(&self) -> bool {
        match self.idempotence {
            Idempotence::Enabled => true,
            Idempotence::Disabled => false,
            Idempotence::Auto => self.idempotence_fits(),
        }
    }

    /// Whether `acks`, `retries` and `max_in_flight` allow idempotence.
    fn idempotence_fits(&self) -> bool {
        self.acks == Acks::All && self.retries > 0 && self.max_in_flight <= 5
    }

    /// Checks the settings; the error ([`ErrorKind::Config`](crate::ErrorKind::Config)) names
    /// the bad one.
    pub fn validate(&self) -> Result<()> {
        if self.is_idempotent() {
            if self.acks != Acks::All {
                return Err(Error::config(
                    "enable.idempotence requires acks=all (set acks=all or disable idempotence)",
                ));
            }
            if self.retries == 0 {
                return Err(Error::config("enable.idempotence requires retries >= 1"));
            }
            if self.max_in_flight > 5 {
                return Err(Error::config(
                    "enable.idempotence requires max.in.flight.requests.per.connection <= 5",
                ));
            }
        }
        if self.max_in_flight == 0 {
            return Err(Error::config(
                "max.in.flight.requests.per.connection must be at least 1",
            ));
        }
        if self.batch_size == 0 {
            return Err(Error::config("batch.size must be at least 1"));
        }
        if self.max_request_size < 128 {
            return Err(Error::config("max.request.size must be at least 128 bytes"));
        }
        if self.buffer_memory < self.batch_size.min(self.max_request_size) {
            return Err(Error::config(
                "buffer.memory must be at least min(batch.size, max.request.size)",
            ));
        }
        if self.buffer_memory > (u32::MAX as usize) {
            return Err(Error::config("buffer.memory must be below 4 GiB"));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::config("request.timeout.ms must not be zero"));
        }
        if self.delivery_timeout < self.linger + self.request_timeout {
            return Err(Error::config(
                "delivery.timeout.ms must be at least linger.ms + request.timeout.ms",
            ));
        }
        if let Some(cb) = &self.circuit_breaker {
            cb.validate()?;
        }
        if self.transactional_id.is_some() {
            if !self.is_idempotent() {
                return Err(Error::config(
                    "transactional.id requires enable.idempotence=true (and acks=all)",
                ));
            }
            let ms = self.transaction_timeout.as_millis();
            if ms == 0 || ms > i32::MAX as u128 {
                return Err(Error::config(
                    "transaction.timeout.ms must be between 1 and 2147483647",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn transactional_properties() {
        let mut c = ProducerConfig::default();
        assert_eq!(c.transaction_timeout, Duration::from_secs(60));
        assert!(c.apply_property("transactional.id", "copier").unwrap());
        assert!(c.apply_property("transaction.timeout.ms", "15000").unwrap());
        assert_eq!(c.transactional_id.as_deref(), Some("copier"));
        assert_eq!(c.transaction_timeout, Duration::from_secs(15));
        assert!(ProducerConfig::property_names().any(|k| k == "transactional.id"));
        assert!(ProducerConfig::property_names().any(|k| k == "transaction.timeout.ms"));
        let e = c
            .apply_property("transaction.timeout.ms", "soon")
            .unwrap_err();
        assert!(e.to_string().contains("transaction.timeout.ms"), "{e}");
        c.validate().unwrap();
        c.idempotence = Idempotence::Disabled;
        c.acks = Acks::Leader;
        assert_eq!(*c.validate().unwrap_err().kind(), ErrorKind::Config);
    }

    #[test]
    fn java_defaults() {
        let c = ProducerConfig::default();
        assert_eq!(c.acks, Acks::All);
        assert!(c.is_idempotent());
        assert_eq!(c.delivery_timeout, Duration::from_secs(120));
        assert_eq!(c.linger, Duration::from_millis(5));
        assert_eq!(c.batch_size, 16384);
        assert_eq!(c.buffer_memory, 32 << 20);
        assert_eq!(c.max_in_flight, 5);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn idempotence_needs_acks_all_and_five_in_flight() {
        let explicit = ProducerConfig::default().with_idempotence(Idempotence::Enabled);
        let e = explicit.clone().with_acks(Acks::Leader).validate();
        assert_eq!(e.unwrap_err().kind(), &ErrorKind::Config);
        assert!(explicit.clone().with_max_in_flight(6).validate().is_err());
        let mut no_retries = explicit.clone();
        no_retries.retries = 0;
        assert!(no_retries.validate().is_err());
        // Left unset, a conflicting setting turns idempotence off instead (Java 3.2+).
        for quiet in [
            ProducerConfig::default().with_acks(Acks::Leader),
            ProducerConfig::default().with_max_in_flight(6),
        ] {
            assert!(!quiet.is_idempotent(), "{quiet:?}");
            assert!(quiet.validate().is_ok());
        }
        let mut c = ProducerConfig::default();
        c.apply_property("acks", "1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.is_idempotent());
        c.apply_property("enable.idempotence", "true")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(c.validate().is_err(), "explicit idempotence with acks=1");
        let ok = ProducerConfig::default()
            .with_idempotence(Idempotence::Disabled)
            .with_acks(Acks::None)
            .with_max_in_flight(10);
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn properties() {
        let mut c = ProducerConfig::default();
        assert!(c.apply_property("linger.ms", "20").unwrap());
        assert_eq!(c.linger, Duration::from_millis(20));
        assert!(c.apply_property("acks", "1").unwrap());
        assert_eq!(c.acks, Acks::Leader);
        assert!(c.apply_property("compression.type", "zstd").unwrap());
        assert_eq!(c.compression, Compression::Zstd);
        assert!(!c.apply_property("group.id", "g").unwrap());
        let e = c.apply_property("batch.size", "big").unwrap_err();
        assert!(e.message_text().unwrap().contains("batch.size"));
        for name in ProducerConfig::property_names() {
            let mut c = ProducerConfig::default();
            // every listed name is known (a bad value is an error, never Ok(false))
            assert!(
                !matches!(c.apply_property(name, "\u{0}"), Ok(false)),
                "{name}"
            );
        }
    }

    #[test]
    fn the_table_defaults_are_the_defaults() {
        let default = format!("{:?}", ProducerConfig::default());
        for s in ProducerConfig::SETTINGS
            .iter()
            .filter(|s| !s.default.is_empty())
        {
            let mut c = ProducerConfig::default();
            c.apply_property(s.key, s.default)
                .unwrap_or_else(|e| panic!("{}: {e}", s.key));
            // Applying enable.idempotence's default makes it explicit, as in Java.
            if s.key == "enable.idempotence" {
                assert_eq!(c.idempotence, Idempotence::Enabled);
                continue;
            }
            assert_eq!(format!("{c:?}"), default, "{}", s.key);
        }
    }

    #[test]
    fn librdkafka_aliases() {
        let mut c = ProducerConfig::default();
        for (k, v) in [
            ("queue.buffering.max.ms", "7"),
            ("message.timeout.ms", "9000"),
            ("compression.codec", "lz4"),
            ("request.required.acks", "-1"),
            ("compression.zstd.level", "3"),
        ] {
            assert!(
                c.apply_property(k, v)
                    .unwrap_or_else(|e| panic!("{k}: {e}"))
            );
        }
        assert_eq!(c.linger, Duration::from_millis(7));
        assert_eq!(c.delivery_timeout, Duration::from_secs(9));
        assert_eq!(c.compression, Compression::Lz4);
        assert_eq!(c.compression_level, Some(3));
    }
}

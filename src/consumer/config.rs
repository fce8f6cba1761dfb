//! Consumer settings.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{self, Setting};
use crate::group::{
    Assignor, CooperativeStickyAssignor, GroupConfig, GroupProtocol, RangeAssignor,
    RoundRobinAssignor,
};
use crate::{Error, Result};

/// Where to start when a partition has no committed offset or its position is out of range
/// (`auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OffsetReset {
    /// The earliest offset still in the log.
    Earliest,
    /// The end of the log (only new records). Java's default.
    #[default]
    Latest,
    /// No reset: `poll` returns an `OFFSET_OUT_OF_RANGE` error for the partition, and the
    /// application decides (usually with a `seek`).
    None,
}

pub use crate::protocol::IsolationLevel;

/// Which connection a consumer sends its Fetch requests on (`rekafka.fetch.connection`).
///
/// A broker answers one connection's requests one at a time, and holds a Fetch for up to
/// `fetch.max.wait.ms` while it waits for data. A consumer and a producer made by one
/// [`Client`](crate::Client) share its connection to each broker, so with
/// [`Shared`](Self::Shared) every Produce (and commit, heartbeat) the client sends to a
/// partition's leader can wait behind the consumer's parked Fetch there: measured on Kafka at
/// 10 000 records/s, an end-to-end p50 of 260 ms against 5 ms with [`Own`](Self::Own) (see
/// BENCHMARKS.md, "End-to-end latency"). So the default is `Own`: the Java clients get the
/// same from being separate clients (and the Java consumer talks to its group coordinator on a
/// connection of its own too). `Shared` saves one connection per broker per client, for a
/// client that only consumes, or that does not mind the wait.
///
/// ```
/// use rekafka::consumer::{ConsumerConfig, FetchConnection};
///
/// assert_eq!(ConsumerConfig::new().fetch_connection, FetchConnection::Own);
/// let config = ConsumerConfig::new().with_fetch_connection(FetchConnection::Shared);
/// assert_eq!(config.fetch_connection, FetchConnection::Shared);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum FetchConnection {
    /// The client's connection to the leader, shared with its other requests to that broker.
    Shared,
    /// A second connection to each leader, for this client's consumers' Fetch requests only
    /// (the default).
    #[default]
    Own,
}

impl std::str::FromStr for FetchConnection {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<FetchConnection> {
        match s.trim().to_ascii_lowercase().as_str() {
            "shared" => Ok(FetchConnection::Shared),
            "own" => Ok(FetchConnection::Own),
            _ => Err(Error::config(format!(
                "rekafka.fetch.connection: {s:?} is not shared or own"
            ))),
        }
    }
}

/// Whether and how often positions are committed for the application
/// (`enable.auto.commit`, `auto.commit.interval.ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AutoCommit {
    /// No automatic commits; the application commits.
    Disabled,
    /// Commit the positions of records already returned by `poll` every interval (checked in
    /// `poll`), before a rebalance revokes partitions, and on close.
    Interval(Duration),
}

impl Default for AutoCommit {
    fn default() -> Self {
        AutoCommit::Interval(Duration::from_secs(5))
    }
}

/// Consumer settings. Every setting has Java's default unless noted.
///
/// ```
/// use rekafka::consumer::{ConsumerConfig, OffsetReset};
///
/// let mut config = ConsumerConfig::new().with_group_id("orders");
/// config.apply_property("auto.offset.reset", "earliest").unwrap();
/// assert_eq!(config.auto_offset_reset, OffsetReset::Earliest);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// The consumer group (`group.id`). Needed for `subscribe` and for commits. Default: none.
    pub group_id: Option<String>,
    /// The static member id (`group.instance.id`). Default: none (a dynamic member).
    pub group_instance_id: Option<String>,
    /// `auto.offset.reset`. Default: [`OffsetReset::Latest`].
    pub auto_offset_reset: OffsetReset,
    /// `enable.auto.commit` / `auto.commit.interval.ms`. Default: every 5 s.
    pub auto_commit: AutoCommit,
    /// `fetch.min.bytes`: the broker waits for this much data (or `fetch_max_wait`).
    /// Default: 1.
    pub fetch_min_bytes: i32,
    /// `fetch.max.wait.ms`. Default: 500 ms.
    pub fetch_max_wait: Duration,
    /// `fetch.max.bytes`: the most one fetch response may carry. Default: 50 MiB.
    pub fetch_max_bytes: i32,
    /// `max.partition.fetch.bytes`: the most one partition contributes to a fetch response.
    /// Default: 1 MiB.
    pub max_partition_fetch_bytes: i32,
    /// `max.poll.records`: the most records one `poll` returns. Default: 500.
    pub max_poll_records: usize,
    /// `isolation.level`. Default: [`IsolationLevel::ReadUncommitted`].
    pub isolation_level: IsolationLevel,
    /// `session.timeout.ms`. Default: 45 s.
    pub session_timeout: Duration,
    /// `heartbeat.interval.ms`. Default: 3 s.
    pub heartbeat_interval: Duration,
    /// `max.poll.interval.ms`: the longest gap between polls before the member leaves the
    /// group; also the rebalance timeout. Default: 5 min.
    pub max_poll_interval: Duration,
    /// `partition.assignment.strategy`, in order of preference. Default: range,
    /// cooperative-sticky (Java 3.x).
    pub assignors: Vec<Arc<dyn Assignor>>,
    /// The cap on fetched bytes buffered ahead of the application, over all partitions
    /// (librdkafka's `queued.max.messages.kbytes`); fetching stops while it is reached.
    /// Default: 64 MiB.
    pub max_buffered_bytes: usize,
    /// `retry.backoff.ms`: the wait before retrying a failed fetch or lookup. Default: 100 ms.
    pub retry_backoff: Duration,
    /// `default.api.timeout.ms`: how long commits, committed-offset and offset lookups retry.
    /// Default: 60 s.
    pub api_timeout: Duration,
    /// `group.protocol`: the classic group protocol or KIP-848's consumer protocol. With
    /// [`GroupProtocol::Consumer`] the coordinator assigns partitions (see
    /// [`group_remote_assignor`](Self::group_remote_assignor)) and sets the heartbeat interval
    /// and session timeout (its `group.consumer.*` settings), so `partition.assignment.strategy`,
    /// `heartbeat.interval.ms` and `session.timeout.ms` do not apply: as in Java, setting one
    /// of them with the consumer protocol (or `group.remote.assignor` with the classic one) is
    /// a configuration error ([`validate`](Self::validate), [`ErrorKind::Config`](crate::ErrorKind::Config)).
    /// Default: [`GroupProtocol::Classic`].
    pub group_protocol: GroupProtocol,
    /// `group.remote.assignor`: the broker-side assignor asked for with the consumer protocol
    /// (`uniform` or `range` on Apache Kafka). Default: none (the coordinator's default,
    /// `uniform`).
    pub group_remote_assignor: Option<String>,
    /// `check.crcs`: verify batch CRCs. Always on in this client (the codec verifies every
    /// batch); the key is accepted for compatibility. Default: true.
    pub check_crcs: bool,
    /// `client.rack`: the rack this consumer runs in, sent to the group coordinator (the
    /// consumer protocol's heartbeat `RackId`, the classic protocol's subscription) for
    /// rack-aware assignment. Fetching from the closest replica (KIP-392) is not done.
    /// Default: none.
    pub client_rack: Option<String>,
    /// `rekafka.fetch.connection`: the connection Fetch requests go on (see
    /// [`FetchConnection`]). Default: [`FetchConnection::Own`].
    pub fetch_connection: FetchConnection,
    /// The classic-only settings given explicitly (builder or property), which
    /// [`validate`](Self::validate) rejects with the consumer protocol as Java does.
    given: ClassicOnlyGiven,
}

/// Which classic-protocol-only settings were set explicitly.
#[derive(Debug, Clone, Copy, Default)]
struct ClassicOnlyGiven {
    assignors: bool,
    session_timeout: bool,
    heartbeat_interval: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_id: None,
            group_instance_id: None,
            auto_offset_reset: OffsetReset::Latest,
            auto_commit: AutoCommit::default(),
            fetch_min_bytes: 1,
            fetch_max_wait: Duration::from_millis(500),
            fetch_max_bytes: 50 * 1024 * 1024,
            max_partition_fetch_bytes: 1024 * 1024,
            max_poll_records: 500,
            isolation_level: IsolationLevel::ReadUncommitted,
            session_timeout: Duration::from_secs(45),
            heartbeat_interval: Duration::from_secs(3),
            max_poll_interval: Duration::from_secs(300),
            assignors: vec![Arc::new(RangeAssignor), Arc::new(CooperativeStickyAssignor)],
            max_buffered_bytes: 64 * 1024 * 1024,
            retry_backoff: Duration::from_millis(100),
            api_timeout: Duration::from_secs(60),
            check_crcs: true,
            group_protocol: GroupProtocol::Classic,
            group_remote_assignor: None,
            client_rack: None,
            fetch_connection: FetchConnection::Own,
            given: ClassicOnlyGiven::default(),
        }
    }
}

impl ConsumerConfig {
    /// Every setting at its default.
    pub fn new() -> ConsumerConfig {
        ConsumerConfig::default()
    }

    /// The group member's settings for `group_id`: this config's group settings, the rest
    /// (`static_leave_on_close`) at their defaults.
    pub(crate) fn group_config(&self, group_id: &str) -> GroupConfig {
        GroupConfig::of_consumer(group_id, self.clone())
    }

    /// The settings [`apply_property`](Self::apply_property) knows (see
    /// [`config`] and `docs/configuration.md`).
    pub const SETTINGS: &'static [Setting] = config::CONSUMER;

    /// Every key [`apply_property`](Self::apply_property) knows, aliases included.
    pub fn property_names() -> impl Iterator<Item = &'static str> + Clone {
        config::names(Self::SETTINGS)
    }

    /// Sets [`group_id`](Self::group_id).
    pub fn with_group_id(mut self, group_id: impl Into<String>) -> Self {
        self.group_id = Some(group_id.into());
        self
    }

    /// Sets [`fetch_connection`](Self::fetch_connection).
    pub fn with_fetch_connection(mut self, connection: FetchConnection) -> Self {
        self.fetch_connection = connection;
        self
    }

    /// Sets [`group_protocol`](Self::group_protocol).
    pub fn with_group_protocol(mut self, protocol: GroupProtocol) -> Self {
        self.group_protocol = protocol;
        self
    }

    /// Sets [`group_remote_assignor`](Self::group_remote_assignor).
    pub fn with_group_remote_assignor(mut self, assignor: impl Into<String>) -> Self {
        self.group_remote_assignor = Some(assignor.into());
        self
    }

    /// Sets [`client_rack`](Self::client_rack).
    ///
    /// ```
    /// use rekafka::consumer::ConsumerConfig;
    ///
    /// let config = ConsumerConfig::new().with_client_rack("eu-west-1a");
    /// assert_eq!(config.client_rack.as_deref(), Some("eu-west-1a"));
    /// ```
    pub fn with_client_rack(mut self, rack: impl Into<String>) -> Self {
        self.client_rack = Some(rack.into()).filter(|r| !r.is_empty());
        self
    }

    /// Sets [`group_instance_id`](Self::group_instance_id).
    pub fn with_group_instance_id(mut self, id: impl Into<String>) -> Self {
        self.group_instance_id = Some(id.into());
        self
    }

    /// Sets [`auto_offset_reset`](Self::auto_offset_reset).
    pub fn with_auto_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.auto_offset_reset = reset;
        self
    }

    /// Sets [`auto_commit`](Self::auto_commit).
    pub fn with_auto_commit(mut self, auto_commit: AutoCommit) -> Self {
        self.auto_commit = auto_commit;
        self
    }

    /// Sets [`isolation_level`](Self::isolation_level).
    pub fn with_isolation_level(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = level;
        self
    }

    /// Sets [`session_timeout`](Self::session_timeout) and a heartbeat interval of a third of
    /// it if the current one is not lower.
    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self.given.session_timeout = true;
        if self.heartbeat_interval >= timeout {
            self.heartbeat_interval = timeout / 3;
        }
        self
    }

    /// Sets [`heartbeat_interval`](Self::heartbeat_interval).
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self.given.heartbeat_interval = true;
        self
    }

    /// Sets [`max_poll_interval`](Self::max_poll_interval).
    pub fn with_max_poll_interval(mut self, interval: Duration) -> Self {
        self.max_poll_interval = interval;
        self
    }

    /// Sets [`max_poll_records`](Self::max_poll_records).
    pub fn with_max_poll_records(mut self, n: usize) -> Self {
        self.max_poll_records = n;
        self
    }

    /// Sets [`assignors`](Self::assignors).
    pub fn with_assignors(mut self, assignors: Vec<Arc<dyn Assignor>>) -> Self {
        self.assignors = assignors;
        self.given.assignors = true;
        self
    }

    /// Sets [`fetch_max_wait`](Self::fetch_max_wait).
    pub fn with_fetch_max_wait(mut self, wait: Duration) -> Self {
        self.fetch_max_wait = wait;
        self
    }

    /// Sets [`max_buffered_bytes`](Self::max_buffered_bytes).
    pub fn with_max_buffered_bytes(mut self, bytes: usize) -> Self {
        self.max_buffered_bytes = bytes;
        self
    }

    /// Applies one Java-style property. `Ok(false)`: not a key of this config; `Err`: a known
    /// key with a bad value (the message names the key).
    pub fn apply_property(&mut self, key: &str, value: &str) -> Result<bool> {
        let Some(s) = config::find(Self::SETTINGS, key) else {
            return Ok(false);
        };
        match s.key {
            "group.id" => self.group_id = s.text(value)?,
            "group.instance.id" => self.group_instance_id = s.text(value)?,
            "auto.offset.reset" => {
                self.auto_offset_reset = match s.choice(value)? {
                    "earliest" | "smallest" | "beginning" => OffsetReset::Earliest,
                    "none" | "error" => OffsetReset::None,
                    _ => OffsetReset::Latest,
                }
            }
            "enable.auto.commit" => {
                self.auto_commit = match (s.boolean(value)?, self.auto_commit) {
                    (false, _) => AutoCommit::Disabled,
                    (true, AutoCommit::Interval(d)) => AutoCommit::Interval(d),
                    (true, AutoCommit::Disabled) => AutoCommit::default(),
                };
            }
            "auto.commit.interval.ms" => {
                let d = s.millis(value)?;
                if let AutoCommit::Interval(_) = self.auto_commit {
                    self.auto_commit = AutoCommit::Interval(d);
                }
            }
            "fetch.min.bytes" => self.fetch_min_bytes = s.number(value)?,
            "fetch.max.wait.ms" => self.fetch_max_wait = s.millis(value)?,
            "fetch.max.bytes" => self.fetch_max_bytes = s.number(value)?,
            "max.partition.fetch.bytes" => self.max_partition_fetch_bytes = s.number(value)?,
            "max.poll.records" => self.max_poll_records = s.number(value)?,
            "isolation.level" => {
                self.isolation_level = match s.choice(value)? {
                    "read_committed" => IsolationLevel::ReadCommitted,
                    _ => IsolationLevel::ReadUncommitted,
                }
            }
            "session.timeout.ms" => {
                self.session_timeout = s.millis(value)?;
                self.given.session_timeout = true;
            }
            "heartbeat.interval.ms" => {
                self.heartbeat_interval = s.millis(value)?;
                self.given.heartbeat_interval = true;
            }
            "max.poll.interval.ms" => self.max_poll_interval = s.millis(value)?,
            "partition.assignment.strategy" => {
                let mut list: Vec<Arc<dyn Assignor>> = Vec::new();
                for name in s.list(value)? {
                    let short = name
                        .rsplit('.')
                        .next()
                        .unwrap_or(&name)
                        .to_ascii_lowercase();
                    list.push(match short.as_str() {
                        "range" | "rangeassignor" => Arc::new(RangeAssignor),
                        "roundrobin" | "roundrobinassignor" => Arc::new(RoundRobinAssignor),
                        "cooperative-sticky" | "cooperativestickyassignor" => {
                            Arc::new(CooperativeStickyAssignor)
                        }
                        _ => {
                            return Err(Error::config(format!(
                                "partition.assignment.strategy: unknown assignor {name:?}"
                            )));
                        }
                    });
                }
                if list.is_empty() {
                    return Err(Error::config(
                        "partition.assignment.strategy: at least one assignor is needed",
                    ));
                }
                self.assignors = list;
                self.given.assignors = true;
            }
            "queued.max.messages.kbytes" => {
                self.max_buffered_bytes = s.number::<usize>(value)?.saturating_mul(1024)
            }
            "retry.backoff.ms" => self.retry_backoff = s.millis(value)?,
            "default.api.timeout.ms" => self.api_timeout = s.millis(value)?,
            "check.crcs" => self.check_crcs = s.boolean(value)?,
            "group.protocol" => self.group_protocol = s.choice(value)?.parse()?,
            "group.remote.assignor" => self.group_remote_assignor = s.text(value)?,
            "client.rack" => self.client_rack = s.text(value)?,
            "rekafka.fetch.connection" => self.fetch_connection = s.choice(value)?.parse()?,
            other => return Err(config::unhandled(other)),
        }
        Ok(true)
    }

    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<()> {
        if self.max_poll_records == 0 {
            return Err(Error::config("max.poll.records must be at least 1"));
        }
        if self.fetch_max_wait.is_zero() {
            return Err(Error::config("fetch.max.wait.ms must be at least 1 ms"));
        }
        if self.max_partition_fetch_bytes <= 0 || self.fetch_max_bytes <= 0 {
            return Err(Error::config(
                "fetch.max.bytes and max.partition.fetch.bytes must be positive",
            ));
        }
        if self.heartbeat_interval >= self.session_timeout {
            return Err(Error::config(
                "heartbeat.interval.ms must be lower than session.timeout.ms",
            ));
        }
        if self.assignors.is_empty() {
            return Err(Error::config(
                "partition.assignment.strategy must not be empty",
            ));
        }
        if self.max_buffered_bytes == 0 {
            return Err(Error::config("queued.max.messages.kbytes must be positive"));
        }
        self.validate_group_protocol()
    }

    /// Java's `ConsumerConfig` check: the classic protocol's client-side settings
    /// (`partition.assignment.strategy`, `session.timeout.ms`, `heartbeat.interval.ms`) set
    /// with `group.protocol=consumer`, or `group.remote.assignor` set with
    /// `group.protocol=classic`, are configuration errors (they would be silently ignored).
    /// A setting counts as set when a builder or [`apply_property`](Self::apply_property)
    /// gave it, or when its field differs from the default.
    fn validate_group_protocol(&self) -> Result<()> {
        let defaults = ConsumerConfig::default();
        match self.group_protocol {
            GroupProtocol::Consumer => {
                let names = |a: &[Arc<dyn Assignor>]| -> Vec<String> {
                    a.iter().map(|a| a.name().to_owned()).collect()
                };
                let set = [
                    (
                        "partition.assignment.strategy",
                        self.given.assignors
                            || names(&self.assignors) != names(&defaults.assignors),
                        "the coordinator assigns partitions: choose its assignor with \
                         group.remote.assignor (uniform or range)",
                    ),
                    (
                        "session.timeout.ms",
                        self.given.session_timeout
                            || self.session_timeout != defaults.session_timeout,
                        "the coordinator sets the session timeout \
                         (group.consumer.session.timeout.ms on the broker)",
                    ),
                    (
                        "heartbeat.interval.ms",
                        self.given.heartbeat_interval
                            || self.heartbeat_interval != defaults.heartbeat_interval,
                        "the coordinator sets the heartbeat interval \
                         (group.consumer.heartbeat.interval.ms on the broker)",
                    ),
                ];
                if let Some((key, _, why)) = set.iter().find(|(_, given, _)| *given) {
                    return Err(Error::config(format!(
                        "{key} cannot be set with group.protocol=consumer ({why}); remove it, \
                         or use group.protocol=classic"
                    )));
                }
            }
            _ => {
                if self.group_remote_assignor.is_some() {
                    return Err(Error::config(
                        "group.remote.assignor cannot be set with group.protocol=classic (it \
                         names a broker-side assignor of the consumer protocol); remove it, or \
                         use group.protocol=consumer",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_javas() {
        let c = ConsumerConfig::new();
        assert_eq!(c.group_id, None);
        assert_eq!(c.auto_offset_reset, OffsetReset::Latest);
        assert_eq!(c.auto_commit, AutoCommit::Interval(Duration::from_secs(5)));
        assert_eq!(c.fetch_min_bytes, 1);
        assert_eq!(c.fetch_max_wait, Duration::from_millis(500));
        assert_eq!(c.fetch_max_bytes, 52_428_800);
        assert_eq!(c.max_partition_fetch_bytes, 1_048_576);
        assert_eq!(c.max_poll_records, 500);
        assert_eq!(c.isolation_level, IsolationLevel::ReadUncommitted);
        assert_eq!(c.session_timeout, Duration::from_secs(45));
        assert_eq!(c.heartbeat_interval, Duration::from_secs(3));
        assert_eq!(c.max_poll_interval, Duration::from_secs(300));
        let names: Vec<&str> = c.assignors.iter().map(|a| a.name()).collect();
        assert_eq!(names, ["range", "cooperative-sticky"]);
        c.validate().unwrap();
    }

    #[test]
    fn properties() {
        let mut c = ConsumerConfig::new();
        for k in ConsumerConfig::property_names() {
            assert!(
                c.apply_property(k, "bogus").is_err()
                    || [
                        "group.id",
                        "group.instance.id",
                        "group.remote.assignor",
                        "client.rack"
                    ]
                    .contains(&k),
                "{k}"
            );
        }
        let mut c = ConsumerConfig::new();
        assert!(!c.apply_property("linger.ms", "5").unwrap());
        assert!(c.apply_property("enable.auto.commit", "false").unwrap());
        assert_eq!(c.auto_commit, AutoCommit::Disabled);
        c.apply_property("isolation.level", "read_committed")
            .unwrap();
        assert_eq!(c.isolation_level, IsolationLevel::ReadCommitted);
        c.apply_property(
            "partition.assignment.strategy",
            "roundrobin, cooperative-sticky",
        )
        .unwrap();
        assert_eq!(c.assignors[0].name(), "roundrobin");
        c.apply_property("session.timeout.ms", "6000").unwrap();
        assert_eq!(c.session_timeout, Duration::from_secs(6));
        let e = c.apply_property("fetch.max.wait.ms", "x").unwrap_err();
        assert!(
            e.to_string().contains("fetch.max.wait.ms")
                || format!("{e:?}").contains("fetch.max.wait.ms")
        );
    }

    #[test]
    fn the_table_defaults_are_the_defaults() {
        let default = format!("{:?}", ConsumerConfig::default());
        for s in ConsumerConfig::SETTINGS
            .iter()
            .filter(|s| !s.default.is_empty())
        {
            let mut c = ConsumerConfig::default();
            c.apply_property(s.key, s.default)
                .unwrap_or_else(|e| panic!("{}: {e}", s.key));
            // Giving a classic-only setting is remembered (as in Java); the value is the same.
            c.given = ClassicOnlyGiven::default();
            assert_eq!(format!("{c:?}"), default, "{}", s.key);
        }
        let mut c = ConsumerConfig::default();
        c.apply_property("fetch.wait.max.ms", "20")
            .unwrap_or_else(|e| panic!("{e}"));
        c.apply_property("fetch.message.max.bytes", "4096")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.fetch_max_wait, Duration::from_millis(20));
        assert_eq!(c.max_partition_fetch_bytes, 4096);
    }

    #[test]
    fn classic_only_settings_are_rejected_with_the_consumer_protocol() {
        let consumer = || ConsumerConfig::new().with_group_protocol(GroupProtocol::Consumer);
        consumer().validate().unwrap();
        let cases: [(&str, ConsumerConfig); 6] = [
            (
                "session.timeout.ms",
                consumer().with_session_timeout(Duration::from_secs(45)),
            ),
            (
                "heartbeat.interval.ms",
                consumer().with_heartbeat_interval(Duration::from_secs(1)),
            ),
            (
                "partition.assignment.strategy",
                consumer().with_assignors(vec![Arc::new(RangeAssignor)]),
            ),
            ("session.timeout.ms", {
                // Set to its default value, explicitly: still an error, as in Java.
                let mut c = consumer();
                c.apply_property("session.timeout.ms", "45000").unwrap();
                c
            }),
            ("partition.assignment.strategy", {
                let mut c = consumer();
                c.apply_property("partition.assignment.strategy", "roundrobin")
                    .unwrap();
                c
            }),
            ("heartbeat.interval.ms", {
                // A field assigned directly counts when it differs from the default.
                let mut c = consumer();
                c.heartbeat_interval = Duration::from_millis(500);
                c
            }),
        ];
        for (key, c) in cases {
            let e = c.validate().unwrap_err();
            assert!(matches!(e.kind(), crate::ErrorKind::Config), "{key}: {e:?}");
            let msg = e.to_string();
            assert!(msg.contains(key), "{key}: {msg}");
            assert!(msg.contains("group.protocol=classic"), "{key}: {msg}");
        }
        // The same settings are fine with the classic protocol.
        ConsumerConfig::new()
            .with_session_timeout(Duration::from_secs(10))
            .with_heartbeat_interval(Duration::from_secs(1))
            .with_assignors(vec![Arc::new(RangeAssignor)])
            .validate()
            .unwrap();
    }

    #[test]
    fn remote_assignor_is_rejected_with_the_classic_protocol() {
        let mut c = ConsumerConfig::new();
        c.apply_property("group.remote.assignor", "uniform")
            .unwrap();
        let e = c.validate().unwrap_err();
        assert!(matches!(e.kind(), crate::ErrorKind::Config), "{e:?}");
        assert!(e.to_string().contains("group.remote.assignor"), "{e}");
        assert!(e.to_string().contains("group.protocol=consumer"), "{e}");
        c.apply_property("group.protocol", "consumer").unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn client_rack_property() {
        let mut c = ConsumerConfig::new();
        assert_eq!(c.client_rack, None);
        assert!(c.apply_property("client.rack", " rack-a ").unwrap());
        assert_eq!(c.client_rack.as_deref(), Some("rack-a"));
        c.apply_property("client.rack", "").unwrap();
        assert_eq!(c.client_rack, None);
    }
}

//! `ClusterConfig`: bootstrap servers, connection settings, metadata age and retry back-off.

use super::*;

/// Settings of a [`Cluster`].
///
/// ```
/// use std::time::Duration;
/// use rekafka::cluster::ClusterConfig;
///
/// let config = ClusterConfig::new(["127.0.0.1:9092"])
///     .with_metadata_max_age(Duration::from_secs(60));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// The bootstrap addresses (`host:port`), tried in turn until one answers a Metadata
    /// request. No default; must not be empty.
    pub bootstrap: Vec<String>,
    /// The settings of every broker connection. Default: [`ConnectionConfig::default`].
    pub connection: ConnectionConfig,
    /// How old the metadata may get before the background task refreshes it. Default: 5 min
    /// (Kafka's `metadata.max.age.ms`).
    pub metadata_max_age: Duration,
    /// Whether a Metadata request for unknown topics asks the broker to create them (Metadata
    /// v4+). Default: `true` (Kafka's `allow.auto.create.topics`).
    pub allow_auto_topic_creation: bool,
    /// The first wait between retries of a FindCoordinator or a failed background refresh,
    /// doubled up to [`retry_backoff_max`](Self::retry_backoff_max). Default: 100 ms (Kafka's
    /// `retry.backoff.ms`).
    pub retry_backoff: Duration,
    /// The longest wait between retries. Default: 1 s (Kafka's `retry.backoff.max.ms`).
    pub retry_backoff_max: Duration,
    /// How long [`Cluster::coordinator`] keeps retrying retriable errors. Default: 30 s.
    pub coordinator_timeout: Duration,
}

/// The addresses of `servers`, each item split on commas, trimmed, empty pieces dropped.
pub(crate) fn split_bootstrap<I, S>(servers: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    servers
        .into_iter()
        .flat_map(|s| {
            let s: String = s.into();
            s.split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

impl ClusterConfig {
    /// Settings with the given bootstrap addresses and every other setting at its default.
    /// Each item may also be a comma-separated list, as Kafka's `bootstrap.servers` is:
    /// `["h1:9092,h2:9092"]` and `["h1:9092", "h2:9092"]` are the same.
    ///
    /// ```
    /// use rekafka::cluster::ClusterConfig;
    /// let c = ClusterConfig::new(["h1:9092, h2:9092", "h3:9092"]);
    /// assert_eq!(c.bootstrap, ["h1:9092", "h2:9092", "h3:9092"]);
    /// ```
    pub fn new<I, S>(bootstrap: I) -> ClusterConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClusterConfig {
            bootstrap: split_bootstrap(bootstrap),
            connection: ConnectionConfig::default(),
            metadata_max_age: DEFAULT_METADATA_MAX_AGE,
            allow_auto_topic_creation: true,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            retry_backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
            coordinator_timeout: DEFAULT_COORDINATOR_TIMEOUT,
        }
    }

    /// Sets [`connection`](Self::connection).
    pub fn with_connection(mut self, connection: ConnectionConfig) -> Self {
        self.connection = connection;
        self
    }

    /// Sets [`metadata_max_age`](Self::metadata_max_age).
    pub fn with_metadata_max_age(mut self, max_age: Duration) -> Self {
        self.metadata_max_age = max_age;
        self
    }

    /// Sets [`allow_auto_topic_creation`](Self::allow_auto_topic_creation).
    pub fn with_allow_auto_topic_creation(mut self, allow: bool) -> Self {
        self.allow_auto_topic_creation = allow;
        self
    }

    /// Sets [`retry_backoff`](Self::retry_backoff) and
    /// [`retry_backoff_max`](Self::retry_backoff_max).
    pub fn with_retry_backoff(mut self, backoff: Duration, max: Duration) -> Self {
        self.retry_backoff = backoff;
        self.retry_backoff_max = max;
        self
    }

    /// Sets [`coordinator_timeout`](Self::coordinator_timeout).
    pub fn with_coordinator_timeout(mut self, timeout: Duration) -> Self {
        self.coordinator_timeout = timeout;
        self
    }

    /// Checks the settings; the error ([`ErrorKind::Config`]) names the bad one.
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap.is_empty() {
            return Err(Error::config("bootstrap must name at least one address"));
        }
        if self.metadata_max_age.is_zero() {
            return Err(Error::config("metadata_max_age must not be zero"));
        }
        self.connection.validate()
    }
}

//! The cluster: which brokers exist, who leads which partition, who coordinates which group or
//! transaction, and how to recover from a failed request.
//!
//! * [`Cluster`]: bootstraps from a list of addresses, keeps one [`BrokerConnection`] per
//!   broker node id and a [`Metadata`] cache refreshed on demand (concurrent refreshes share
//!   one Metadata request) and every [`metadata_max_age`](ClusterConfig::metadata_max_age) in
//!   a background task; looks up coordinators with FindCoordinator.
//! * [`recovery_for`]: the one retry decision of the crate, mapping an [`Error`] to a
//!   [`Recovery`].
//!
//! # Tasks
//!
//! A cluster runs one background task, the metadata refresher. It holds only a weak reference
//! to the cluster and stops on [`Cluster::close`] or when the last [`Cluster`] handle is
//! dropped. Each Metadata request runs in a task of its own so that a caller that is cancelled
//! does not cancel the request other callers wait for.

mod metadata;
mod recovery;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub use metadata::{BrokerMetadata, Metadata, MetadataChanges, PartitionMetadata, TopicMetadata};
pub use recovery::{Recovery, recovery_for};

use crate::connection::{Backoff, BrokerConnection, ConnectionConfig};
use crate::error::{Error, ErrorKind, KafkaCode, Result};
use crate::protocol::StrBytes;
use crate::protocol::messages::metadata_request::MetadataRequestTopic;
use crate::protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse,
    TopicName,
};

/// A topic partition: the one type every layer uses (re-exported by `group`, `consumer`,
/// `admin`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// The topic name.
    pub topic: Arc<str>,
    /// The partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// The partition `partition` of `topic`.
    pub fn new(topic: impl AsRef<str>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: Arc::from(topic.as_ref()),
            partition,
        }
    }

    /// The topic name.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Default [`ClusterConfig::metadata_max_age`]: 5 min, as Kafka's `metadata.max.age.ms`.
pub const DEFAULT_METADATA_MAX_AGE: Duration = Duration::from_secs(300);
/// Default [`ClusterConfig::retry_backoff`]: 100 ms, as Kafka's `retry.backoff.ms`.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// Default [`ClusterConfig::retry_backoff_max`]: 1 s, as Kafka's `retry.backoff.max.ms`.
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Default [`ClusterConfig::coordinator_timeout`]: 30 s.
pub const DEFAULT_COORDINATOR_TIMEOUT: Duration = Duration::from_secs(30);

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

/// The kind of coordinator to look up with [`Cluster::coordinator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CoordinatorType {
    /// The group coordinator of a consumer group (key: the group id).
    Group,
    /// The transaction coordinator of a transactional producer (key: the transactional id).
    Transaction,
}

impl CoordinatorType {
    fn key_type(self) -> i8 {
        match self {
            CoordinatorType::Group => 0,
            CoordinatorType::Transaction => 1,
        }
    }
}

/// Which topics a Metadata request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TopicSet {
    All,
    Some(BTreeSet<String>),
}

impl TopicSet {
    fn covers(&self, other: &TopicSet) -> bool {
        match (self, other) {
            (TopicSet::All, _) => true,
            (TopicSet::Some(_), TopicSet::All) => false,
            (TopicSet::Some(a), TopicSet::Some(b)) => b.is_subset(a),
        }
    }
}

type RefreshResult = Option<Result<()>>;

/// A Kafka cluster: broker connections by node id, the metadata cache and coordinators.
///
/// Cheap to clone; all clones share the same state. Dropping the last clone stops the
/// background refresher; [`close`](Cluster::close) also closes the connections.
///
/// ```no_run
/// # async fn demo() -> rekafka::Result<()> {
/// use rekafka::cluster::{Cluster, ClusterConfig, CoordinatorType};
///
/// let cluster = Cluster::connect(ClusterConfig::new(["127.0.0.1:9092"])).await?;
/// let (leader, epoch) = cluster.leader_for("orders", 0).await?;
/// let broker = cluster.connection_for_broker(leader).await?;
/// let coordinator = cluster.coordinator(CoordinatorType::Group, "my-group").await?;
/// cluster.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Cluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClusterConfig,
    closed: AtomicBool,
    metadata: RwLock<Metadata>,
    /// When the metadata was last refreshed successfully.
    last_refresh: Mutex<Option<Instant>>,
    brokers: Mutex<HashMap<i32, BrokerConnection>>,
    /// When a request to a broker last failed at the transport level.
    failed_at: Mutex<HashMap<i32, Instant>>,
    coordinators: Mutex<HashMap<(CoordinatorType, String), i32>>,
    /// The Metadata request in flight, if any: what it asks for and where its result appears.
    in_flight: Mutex<Option<(TopicSet, watch::Receiver<RefreshResult>)>>,
    metadata_requests: AtomicU64,
    refresher_running: Arc<AtomicBool>,
    /// Dropped with the cluster, or set on close: stops the refresher.
    shutdown: watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn closed_error() -> Error {
    Error::with_message(ErrorKind::Closed, "cluster closed")
}

impl Cluster {
    /// A cluster with the given settings, without connecting yet; starts the background
    /// refresher. Must be called inside a tokio runtime (fails with [`ErrorKind::Config`]
    /// otherwise). Most callers want [`connect`](Cluster::connect).
    pub fn new(config: ClusterConfig) -> Result<Cluster> {
        Cluster::start(config, false)
    }

    /// A cluster that bootstraps in the background, as Java's clients do: returns at once
    /// (without I/O), and its refresher asks the bootstrap addresses for the broker list right
    /// away and, while none answers, again after
    /// [`retry_backoff`](ClusterConfig::retry_backoff) doubling up to
    /// [`retry_backoff_max`](ClusterConfig::retry_backoff_max), until one does or the cluster
    /// is closed. So it may be created while every broker is down; calls made before the
    /// bootstrap succeeds bootstrap themselves (and fail or retry as each call's own retry
    /// rules say). Must be called inside a tokio runtime.
    ///
    /// ```no_run
    /// # async fn demo() -> rekafka::Result<()> {
    /// use rekafka::cluster::{Cluster, ClusterConfig};
    ///
    /// let cluster = Cluster::connect_lazily(ClusterConfig::new(["h1:9092,h2:9092"]))?;
    /// // ... the brokers come up; the first call that needs them finds them.
    /// let partitions = cluster.partitions("orders").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn connect_lazily(config: ClusterConfig) -> Result<Cluster> {
        Cluster::start(config, true)
    }

    /// Whether a Metadata response has been applied (the cluster bootstrapped) at least once.
    pub fn is_bootstrapped(&self) -> bool {
        lock(&self.inner.last_refresh).is_some()
    }

    fn start(config: ClusterConfig, bootstrap_now: bool) -> Result<Cluster> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("a Cluster must be created inside a tokio runtime"))?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let running = Arc::new(AtomicBool::new(true));
        let inner = Arc::new(Inner {
            config,
            closed: AtomicBool::new(false),
            metadata: RwLock::new(Metadata::default()),
            last_refresh: Mutex::new(None),
            brokers: Mutex::new(HashMap::new()),
            failed_at: Mutex::new(HashMap::new()),
            coordinators: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(None),
            metadata_requests: AtomicU64::new(0),
            refresher_running: running.clone(),
            shutdown,
        });
        // A root span: the refresher outlives whatever made the cluster.
        let span = tracing::debug_span!(parent: None, "kafka.metadata.refresher", client_id = %inner.config.connection.client_id);
        runtime.spawn(tracing::Instrument::instrument(
            refresher(Arc::downgrade(&inner), shutdown_rx, running, bootstrap_now),
            span,
        ));
        Ok(Cluster { inner })
    }

    /// Creates a cluster ([`new`](Cluster::new)) and bootstraps it: tries each bootstrap
    /// address in turn until one answers a Metadata request (for the broker list only).
    pub async fn connect(config: ClusterConfig) -> Result<Cluster> {
        let cluster = Cluster::new(config)?;
        cluster.refresh_set(TopicSet::Some(BTreeSet::new())).await?;
        Ok(cluster)
    }

    /// The settings.
    pub fn config(&self) -> &ClusterConfig {
        &self.inner.config
    }

    /// A snapshot of the cached metadata.
    pub fn metadata(&self) -> Metadata {
        self.inner
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The leader of `topic`-`partition` as the cache knows it (without a request), if any.
    pub fn known_leader(&self, topic: &str, partition: i32) -> Option<i32> {
        self.cached_leader(topic, partition)
            .ok()
            .map(|(leader, _)| leader)
    }

    /// How many Metadata requests this cluster has sent (for tests and metrics).
    pub fn metadata_requests(&self) -> u64 {
        self.inner.metadata_requests.load(Ordering::Relaxed)
    }

    /// Whether the background metadata refresher is still running.
    pub fn is_refresher_running(&self) -> bool {
        self.inner.refresher_running.load(Ordering::Acquire)
    }

    /// Refreshes the metadata of every topic in the cluster. Concurrent refreshes are coalesced:
    /// a caller that arrives while a request covering its topics is in flight waits for that
    /// request instead of sending its own.
    pub async fn refresh(&self) -> Result<()> {
        self.refresh_set(TopicSet::All).await
    }

    /// Refreshes the metadata of `topics` (and the broker list), coalesced as
    /// [`refresh`](Cluster::refresh). Unknown topics are created if
    /// [`allow_auto_topic_creation`](ClusterConfig::allow_auto_topic_creation) is set and the
    /// broker allows it.
    pub async fn refresh_topics<S: AsRef<str>>(&self, topics: &[S]) -> Result<()> {
        let set = topics.iter().map(|t| t.as_ref().to_owned()).collect();
        self.refresh_set(TopicSet::Some(set)).await
    }

    async fn refresh_set(&self, want: TopicSet) -> Result<()> {
        loop {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(closed_error());
            }
            let (mut rx, covers) = {
                let mut in_flight = lock(&self.inner.in_flight);
                match &*in_flight {
                    Some((set, rx)) => (rx.clone(), set.covers(&want)),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        *in_flight = Some((want.clone(), rx.clone()));
                        let cluster = self.clone();
                        let set = want.clone();
                        let span = tracing::debug_span!("kafka.metadata");
                        tokio::spawn(tracing::Instrument::instrument(
                            async move {
                                let result = cluster.fetch_and_apply(&set).await;
                                *lock(&cluster.inner.in_flight) = None;
                                let _ = tx.send(Some(result));
                            },
                            span,
                        ));
                        (rx, true)
                    }
                }
            };
            let waited = rx.wait_for(Option::is_some).await.map(|r| r.clone());
            let result = match waited {
                Ok(r) => r.unwrap_or(Ok(())),
                Err(_) => {
                    // The request task ended without a result (it panicked or the runtime is
                    // shutting down): forget it so that the next caller starts a new one.
                    let mut in_flight = lock(&self.inner.in_flight);
                    if in_flight.as_ref().is_some_and(|(_, r)| r.same_channel(&rx)) {
                        *in_flight = None;
                    }
                    return Err(closed_error());
                }
            };
            if covers {
                return result;
            }
        }
    }

    /// Sends one Metadata request for `set` (to the least recently failed broker, falling back
    /// to the others and then to the bootstrap addresses) and applies the response.
    async fn fetch_and_apply(&self, set: &TopicSet) -> Result<()> {
        let mut last_error = None;
        let mut candidates = self.brokers_by_failure();
        let bootstrap: Vec<BrokerConnection> = self
            .inner
            .config
            .bootstrap
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let id = -1 - i32::try_from(i).unwrap_or(i32::MAX - 1);
                BrokerConnection::new(id, addr.clone(), self.inner.config.connection.clone())
            })
            .collect();
        let n_known = candidates.len();
        candidates.extend(bootstrap.iter().cloned());
        let mut result = None;
        for (i, broker) in candidates.iter().enumerate() {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(closed_error());
            }
            match self.send_metadata(broker, set).await {
                Ok(resp) => {
                    result = Some(resp);
                    break;
                }
                Err(e) if recovery_for(&e) == Recovery::SwitchBroker => {
                    tracing::debug!(broker = broker.broker_id(), addr = broker.addr(), error = %e, "metadata request failed; trying the next broker");
                    if i < n_known {
                        self.mark_failed(broker.broker_id());
                    }
                    last_error = Some(e);
                }
                Err(e) => {
                    last_error = Some(e);
                    break;
                }
            }
        }
        for b in bootstrap {
            tokio::spawn(async move { b.close().await });
        }
        let resp = match result {
            Some(resp) => resp,
            None => {
                return Err(last_error.unwrap_or_else(|| {
                    Error::with_message(ErrorKind::Disconnected, "no broker to ask for metadata")
                }));
            }
        };
        if let Some(code) = KafkaCode::from_i16(resp.error_code) {
            return Err(Error::broker(code).api(ApiKey::Metadata));
        }
        self.apply_metadata(&resp, *set == TopicSet::All);
        Ok(())
    }

    async fn send_metadata(
        &self,
        broker: &BrokerConnection,
        set: &TopicSet,
    ) -> Result<MetadataResponse> {
        let conn = broker.connection().await?;
        let version = conn
            .versions()
            .negotiate::<MetadataRequest>()
            .map_err(|e| e.on_broker(broker.broker_id()))?;
        let topics = match set {
            // v0 has no null list: an empty list means every topic.
            TopicSet::All if version == 0 => Some(Vec::new()),
            TopicSet::All => None,
            TopicSet::Some(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                    })
                    .collect(),
            ),
        };
        let mut request = MetadataRequest::default().with_topics(topics);
        if version >= 4 {
            request.allow_auto_topic_creation = self.inner.config.allow_auto_topic_creation;
        }
        self.inner.metadata_requests.fetch_add(1, Ordering::Relaxed);
        conn.send_at(request, version).await
    }

    /// Applies a Metadata response to the cache and the broker connections.
    fn apply_metadata(&self, resp: &MetadataResponse, all_topics: bool) -> MetadataChanges {
        let changes = {
            let mut meta = self
                .inner
                .metadata
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let changes = meta.apply(resp, all_topics);
            self.sync_brokers(&meta);
            changes
        };
        *lock(&self.inner.last_refresh) = Some(Instant::now());
        if changes != MetadataChanges::default() {
            tracing::debug!(?changes, "metadata changed");
        }
        changes
    }

    /// Gives every listed broker a connection, drops those of brokers that left and replaces
    /// those whose address changed.
    fn sync_brokers(&self, meta: &Metadata) {
        let mut dropped = Vec::new();
        {
            let mut brokers = lock(&self.inner.brokers);
            brokers.retain(|id, conn| match meta.brokers.get(id) {
                Some(b) if b.addr() == conn.addr() => true,
                _ => {
                    dropped.push(conn.clone());
                    false
                }
            });
            for (id, b) in &meta.brokers {
                brokers.entry(*id).or_insert_with(|| {
                    BrokerConnection::new(*id, b.addr(), self.inner.config.connection.clone())
                });
            }
        }
        let mut failed = lock(&self.inner.failed_at);
        failed.retain(|id, _| meta.brokers.contains_key(id));
        drop(failed);
        for conn in dropped {
            tracing::debug!(
                broker = conn.broker_id(),
                addr = conn.addr(),
                "dropping broker connection"
            );
            // Retired, not closed: whoever still holds it (a group's coordinator, a sender)
            // gets a retriable error and looks the broker up again.
            tokio::spawn(async move { conn.retire().await });
        }
    }

    /// Records that a request to `broker_id` failed at the transport level, so that
    /// [`any_connection`](Cluster::any_connection) prefers other brokers.
    pub fn mark_failed(&self, broker_id: i32) {
        lock(&self.inner.failed_at).insert(broker_id, Instant::now());
    }

    /// The known brokers, those that never failed first (by node id), then the others from
    /// the least recently failed.
    fn brokers_by_failure(&self) -> Vec<BrokerConnection> {
        let brokers: Vec<BrokerConnection> = lock(&self.inner.brokers).values().cloned().collect();
        let failed = lock(&self.inner.failed_at).clone();
        let mut brokers: Vec<_> = brokers
            .into_iter()
            .map(|b| (failed.get(&b.broker_id()).copied(), b))
            .collect();
        brokers.sort_by_key(|(at, b)| (*at, b.broker_id()));
        brokers.into_iter().map(|(_, b)| b).collect()
    }

    /// The connection to broker `broker_id`. If the broker is not known, the broker list is
    /// refreshed once; fails with a retriable [`ErrorKind::Disconnected`] if it is still
    /// unknown.
    pub async fn connection_for_broker(&self, broker_id: i32) -> Result<BrokerConnection> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        if let Some(conn) = lock(&self.inner.brokers).get(&broker_id) {
            return Ok(conn.clone());
        }
        self.refresh_set(TopicSet::Some(BTreeSet::new())).await?;
        lock(&self.inner.brokers)
            .get(&broker_id)
            .cloned()
            .ok_or_else(|| {
                Error::with_message(
                    ErrorKind::Disconnected,
                    format!("broker {broker_id} is not in the cluster metadata"),
                )
                .on_broker(broker_id)
            })
    }

    /// A connection to some broker, for requests any broker can serve: one that never failed,
    /// else the least recently failed. Bootstraps first if no broker is known yet.
    pub async fn any_connection(&self) -> Result<BrokerConnection> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(closed_error());
        }
        if let Some(b) = self.brokers_by_failure().into_iter().next() {
            return Ok(b);
        }
        self.refresh_set(TopicSet::Some(BTreeSet::new())).await?;
        self.brokers_by_failure()
            .into_iter()
            .next()
            .ok_or_else(|| Error::with_message(ErrorKind::Disconnected, "no broker is known"))
    }

    /// The partitions of `topic`, sorted by index, refreshing the topic's metadata once if it
    /// is not cached. Fails with the topic's error (e.g. `UNKNOWN_TOPIC_OR_PARTITION`).
    pub async fn partitions(&self, topic: &str) -> Result<Vec<PartitionMetadata>> {
        if let Some(parts) = self.cached_partitions(topic)? {
            return Ok(parts);
        }
        self.refresh_topics(&[topic]).await?;
        self.cached_partitions(topic)?.ok_or_else(|| {
            Error::broker(KafkaCode::UnknownTopicOrPartition)
                .api(ApiKey::Metadata)
                .on_topic(topic)
        })
    }

    fn cached_partitions(&self, topic: &str) -> Result<Option<Vec<PartitionMetadata>>> {
        let meta = self
            .inner
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner());
        match meta.topics.get(topic) {
            None => Ok(None),
            Some(t) => match t.error {
                Some(code) => Err(Error::broker(code).api(ApiKey::Metadata).on_topic(topic)),
                None => Ok(Some(t.partitions.clone())),
            },
        }
    }

    /// The leader (node id) and leader epoch of a partition. If the partition or its leader is
    /// not known, the topic's metadata is refreshed once; fails with
    /// `UNKNOWN_TOPIC_OR_PARTITION` or `LEADER_NOT_AVAILABLE` if it is still not known.
    pub async fn leader_for(&self, topic: &str, partition: i32) -> Result<(i32, i32)> {
        match self.cached_leader(topic, partition) {
            Ok(leader) => return Ok(leader),
            Err(e) if e.kind() == &ErrorKind::Closed => return Err(e),
            Err(_) => {}
        }
        self.refresh_topics(&[topic]).await?;
        self.cached_leader(topic, partition)
    }

    fn cached_leader(&self, topic: &str, partition: i32) -> Result<(i32, i32)> {
        let meta = self
            .inner
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let err = |code| {
            Error::broker(code)
                .api(ApiKey::Metadata)
                .on_partition(topic, partition)
        };
        let t = meta
            .topics
            .get(topic)
            .ok_or_else(|| err(KafkaCode::UnknownTopicOrPartition))?;
        if let Some(code) = t.error {
            return Err(err(code));
        }
        let p = t
            .partitions
            .iter()
            .find(|p| p.partition == partition)
            .ok_or_else(|| err(KafkaCode::UnknownTopicOrPartition))?;
        if p.leader < 0 {
            return Err(err(p.error.unwrap_or(KafkaCode::LeaderNotAvailable)));
        }
        Ok((p.leader, p.leader_epoch))
    }

    /// The node id of the coordinator of `key` (a group id or transactional id), from the cache
    /// or with FindCoordinator (v4+ batched `coordinator_keys`, older versions `key`).
    /// Retriable errors (`COORDINATOR_NOT_AVAILABLE`, `COORDINATOR_LOAD_IN_PROGRESS`, transport
    /// failures) are retried with back-off for up to
    /// [`coordinator_timeout`](ClusterConfig::coordinator_timeout).
    pub async fn coordinator(&self, kind: CoordinatorType, key: &str) -> Result<i32> {
        let cache_key = (kind, key.to_owned());
        if let Some(id) = lock(&self.inner.coordinators).get(&cache_key) {
            return Ok(*id);
        }
        let config = &self.inner.config;
        let deadline = Instant::now() + config.coordinator_timeout;
        let mut backoff = Backoff::new(config.retry_backoff, config.retry_backoff_max);
        loop {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(closed_error());
            }
            let error = match self.find_coordinator(kind, key).await {
                Ok(id) => {
                    lock(&self.inner.coordinators).insert(cache_key, id);
                    return Ok(id);
                }
                Err(e) => e,
            };
            match recovery_for(&error) {
                Recovery::GiveUp => return Err(error),
                Recovery::SwitchBroker => {
                    if let Some(b) = error.context().broker {
                        self.mark_failed(b);
                    }
                }
                _ => {}
            }
            let wait = backoff.delay();
            backoff.failed();
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            tracing::debug!(?kind, key, error = %error, ?wait, "FindCoordinator failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn find_coordinator(&self, kind: CoordinatorType, key: &str) -> Result<i32> {
        let broker = self.any_connection().await?;
        let conn = broker.connection().await?;
        let version = conn
            .versions()
            .negotiate::<FindCoordinatorRequest>()
            .map_err(|e| e.on_broker(broker.broker_id()))?;
        let key_bytes = StrBytes::from_string(key.to_owned());
        let mut request = FindCoordinatorRequest::default();
        if version >= 1 {
            request.key_type = kind.key_type();
        } else if kind != CoordinatorType::Group {
            return Err(Error::new(ErrorKind::UnsupportedVersion {
                api: ApiKey::FindCoordinator,
            })
            .message("transaction coordinators need FindCoordinator v1+")
            .on_broker(broker.broker_id()));
        }
        if version >= 4 {
            request.coordinator_keys = vec![key_bytes];
        } else {
            request.key = key_bytes;
        }
        let resp: FindCoordinatorResponse = conn.send_at(request, version).await?;
        let (code, message, node, host, port) = if version >= 4 {
            let c = resp
                .coordinators
                .iter()
                .find(|c| c.key.as_str() == key)
                .ok_or_else(|| {
                    Error::with_message(
                        ErrorKind::UnexpectedResponse,
                        format!("FindCoordinator response does not name key {key:?}"),
                    )
                    .api(ApiKey::FindCoordinator)
                    .on_broker(broker.broker_id())
                })?;
            (
                c.error_code,
                c.error_message.clone(),
                c.node_id.0,
                c.host.to_string(),
                c.port,
            )
        } else {
            (
                resp.error_code,
                resp.error_message.clone(),
                resp.node_id.0,
                resp.host.to_string(),
                resp.port,
            )
        };
        if let Some(code) = KafkaCode::from_i16(code) {
            let mut e = Error::broker(code)
                .api(ApiKey::FindCoordinator)
                .on_broker(broker.broker_id());
            if let Some(m) = message {
                e = e.message(m.to_string());
            }
            return Err(e);
        }
        // The coordinator is normally a listed broker; if it is not (yet), connect to the
        // address the response gave.
        let addr = BrokerMetadata {
            node_id: node,
            host,
            port,
            rack: None,
        }
        .addr();
        lock(&self.inner.brokers).entry(node).or_insert_with(|| {
            BrokerConnection::new(node, addr, self.inner.config.connection.clone())
        });
        Ok(node)
    }

    /// Forgets the cached coordinator of `key`, so the next [`coordinator`](Cluster::coordinator)
    /// call looks it up again (after [`Recovery::RefreshCoordinator`]).
    pub fn invalidate_coordinator(&self, kind: CoordinatorType, key: &str) {
        lock(&self.inner.coordinators).remove(&(kind, key.to_owned()));
    }

    /// Stops the background refresher and closes every broker connection; later calls fail
    /// with [`ErrorKind::Closed`].
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.send_replace(true);
        let brokers: Vec<BrokerConnection> =
            lock(&self.inner.brokers).drain().map(|(_, b)| b).collect();
        for b in brokers {
            b.close().await;
        }
    }
}

/// Sets the flag to false when the refresher ends, however it ends.
struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The background refresher: refreshes the cached topics (or just the broker list) once the
/// metadata is older than `metadata_max_age`. Stops when the cluster is closed or dropped.
///
/// With `bootstrap_now` ([`Cluster::connect_lazily`]) the first refresh is due at once, and a
/// failed one is retried with back-off like any failed refresh: the bootstrap is retried until
/// a broker answers.
async fn refresher(
    inner: Weak<Inner>,
    mut shutdown: watch::Receiver<bool>,
    running: Arc<AtomicBool>,
    bootstrap_now: bool,
) {
    let _running = Running(running);
    let mut retry_at: Option<Instant> = bootstrap_now.then(Instant::now);
    // Until the first success: a caller may have bootstrapped meanwhile, then there is
    // nothing to retry.
    let mut bootstrapping = bootstrap_now;
    let mut backoff: Option<Backoff> = None;
    loop {
        let deadline = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let max_age = inner.config.metadata_max_age;
            let last = *lock(&inner.last_refresh);
            let due = last.map_or_else(|| Instant::now() + max_age, |t| t + max_age);
            retry_at.unwrap_or(due)
        };
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
                continue;
            }
            () = tokio::time::sleep_until(deadline) => {}
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let cluster = Cluster { inner: strong };
        if bootstrapping && cluster.is_bootstrapped() {
            bootstrapping = false;
            retry_at = None;
            backoff = None;
            continue;
        }
        let fresh = lock(&cluster.inner.last_refresh)
            .is_some_and(|t| t.elapsed() < cluster.inner.config.metadata_max_age);
        if fresh && retry_at.is_none() {
            continue;
        }
        let topics: BTreeSet<String> = cluster
            .inner
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .topics
            .keys()
            .cloned()
            .collect();
        let result = tokio::select! {
            r = cluster.refresh_set(TopicSet::Some(topics)) => r,
            _ = shutdown.changed() => return,
        };
        match result {
            Ok(()) => {
                retry_at = None;
                backoff = None;
                bootstrapping = false;
            }
            Err(e) => {
                let config = &cluster.inner.config;
                let b = backoff.get_or_insert_with(|| {
                    Backoff::new(config.retry_backoff, config.retry_backoff_max)
                });
                let wait = b.delay();
                b.failed();
                if cluster.is_bootstrapped() {
                    tracing::warn!(error = %e, ?wait, "periodic metadata refresh failed");
                } else {
                    // Java's clients say the same at WARN: the brokers may not be up yet.
                    tracing::warn!(error = %e, ?wait, "bootstrap failed (no bootstrap address answered); retrying");
                }
                retry_at = Some(Instant::now() + wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::metadata::tests::{broker, response, topic};
    use super::*;

    fn cluster() -> Cluster {
        match Cluster::new(ClusterConfig::new(["127.0.0.1:1"])) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    fn addrs(c: &Cluster) -> Vec<(i32, String)> {
        let mut v: Vec<_> = lock(&c.inner.brokers)
            .iter()
            .map(|(id, b)| (*id, b.addr().to_owned()))
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn connections_follow_brokers_joining_leaving_and_moving() {
        let c = cluster();
        c.apply_metadata(
            &response(vec![broker(1, "a", 1), broker(2, "b", 2)], vec![]),
            false,
        );
        assert_eq!(addrs(&c), [(1, "a:1".into()), (2, "b:2".into())]);
        let b2 = c
            .connection_for_broker(2)
            .await
            .map(|b| b.addr().to_owned());
        assert_eq!(b2.ok().as_deref(), Some("b:2"));
        c.apply_metadata(
            &response(vec![broker(2, "b", 3), broker(3, "c", 3)], vec![]),
            false,
        );
        assert_eq!(addrs(&c), [(2, "b:3".into()), (3, "c:3".into())]);
        c.close().await;
    }

    #[tokio::test]
    async fn leader_lookup_from_cache() {
        let c = cluster();
        c.apply_metadata(
            &response(
                vec![broker(1, "a", 1)],
                vec![topic("t", 0, &[(0, 1, 7), (1, -1, 7)])],
            ),
            false,
        );
        assert_eq!(c.leader_for("t", 0).await.ok(), Some((1, 7)));
        assert_eq!(c.partitions("t").await.map(|p| p.len()).ok(), Some(2));
        // Leader -1: one refresh is attempted (it fails: nothing listens on port 1).
        assert!(c.leader_for("t", 1).await.is_err());
        c.close().await;
        assert_eq!(
            c.leader_for("t", 1).await.err().map(|e| e.kind().clone()),
            Some(ErrorKind::Closed)
        );
    }

    #[test]
    fn topic_sets_cover() {
        let s = |v: &[&str]| TopicSet::Some(v.iter().map(|s| s.to_string()).collect());
        assert!(TopicSet::All.covers(&s(&["a"])));
        assert!(s(&["a", "b"]).covers(&s(&["a"])));
        assert!(!s(&["a"]).covers(&s(&["a", "b"])));
        assert!(!s(&["a"]).covers(&TopicSet::All));
    }

    #[tokio::test]
    async fn refresher_stops_on_drop() {
        let c = cluster();
        let running = c.inner.refresher_running.clone();
        assert!(running.load(Ordering::Acquire));
        drop(c);
        for _ in 0..100 {
            if !running.load(Ordering::Acquire) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("refresher still running after the cluster was dropped");
    }

    #[test]
    fn config_validation() {
        assert!(ClusterConfig::new(Vec::<String>::new()).validate().is_err());
        let c = ClusterConfig::new(["a:1"]);
        assert_eq!(c.metadata_max_age, Duration::from_secs(300));
        assert!(c.with_metadata_max_age(Duration::ZERO).validate().is_err());
        assert!(
            Cluster::new(ClusterConfig::new(["a:1"])).is_err(),
            "no runtime"
        );
    }
}

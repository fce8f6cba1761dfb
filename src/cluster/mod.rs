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

use crate::connection::{BrokerConnection, ConnectionConfig, RetryDelay};
use crate::error::{Error, ErrorKind, KafkaCode, Result};
use crate::protocol::StrBytes;
use crate::protocol::messages::metadata_request::MetadataRequestTopic;
use crate::protocol::messages::{
    ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, MetadataRequest, MetadataResponse,
    TopicName,
};

mod config;
mod coordinator;
mod refresh;
pub use config::ClusterConfig;
pub(crate) use config::split_bootstrap;
pub use coordinator::CoordinatorType;
use refresh::*;

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
    /// The consumers' fetch connections, one per broker beside `brokers`' (see
    /// [`Cluster::fetch_connection_for_broker`]); created on first use.
    fetch_brokers: Mutex<HashMap<i32, BrokerConnection>>,
    /// When a request to a broker last failed at the transport level.
    failed_at: Mutex<HashMap<i32, Instant>>,
    coordinators: Mutex<HashMap<(CoordinatorType, String), i32>>,
    /// The Metadata request in flight, if any: what it asks for and where its result appears.
    in_flight: Mutex<Option<(TopicSet, watch::Receiver<RefreshResult>)>>,
    metadata_requests: AtomicU64,
    refresher_running: Arc<AtomicBool>,
    /// Dropped with the cluster, or set on close: stops the refresher.
    shutdown: crate::task::StopSignal,
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
        let (shutdown, shutdown_rx) = crate::task::StopSignal::new();
        let running = Arc::new(AtomicBool::new(true));
        let inner = Arc::new(Inner {
            config,
            closed: AtomicBool::new(false),
            metadata: RwLock::new(Metadata::default()),
            last_refresh: Mutex::new(None),
            brokers: Mutex::new(HashMap::new()),
            fetch_brokers: Mutex::new(HashMap::new()),
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

    /// A second connection to broker `broker_id`, made on first use, beside the one
    /// [`connection_for_broker`](Self::connection_for_broker) gives everything else: the one
    /// consumers configured with [`FetchConnection::Own`](crate::consumer::FetchConnection)
    /// send their Fetch requests on.
    ///
    /// Why two: a broker answers one connection's requests one at a time, and it holds a Fetch
    /// for up to `fetch.max.wait.ms` while it waits for data. On one shared connection every
    /// Produce, commit and heartbeat to that broker would wait behind the consumer's long poll:
    /// measured on Kafka, a producer and a consumer of one client at 10 000 records/s had a
    /// produce request latency of 170–230 ms and a p50 end-to-end latency of 260 ms, against
    /// 5 ms and 8 ms with the fetches on their own connection. The Java clients get the same
    /// separation from being separate clients; franz-go keeps a connection per kind of request.
    /// Fails as `connection_for_broker` does.
    pub async fn fetch_connection_for_broker(&self, broker_id: i32) -> Result<BrokerConnection> {
        let main = self.connection_for_broker(broker_id).await?;
        let mut retired = None;
        let conn = {
            let mut fetch = lock(&self.inner.fetch_brokers);
            // Checked under the lock: `close` sets the flag before it drains the map, so a
            // connection made here is either refused or drained and closed by it.
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(closed_error());
            }
            match fetch.get(&broker_id) {
                Some(c) if c.addr() == main.addr() => c.clone(),
                _ => {
                    let c = BrokerConnection::new(
                        broker_id,
                        main.addr(),
                        self.inner.config.connection.clone(),
                    );
                    retired = fetch.insert(broker_id, c.clone());
                    c
                }
            }
        };
        if let Some(old) = retired {
            // The broker moved: whoever still holds the old one gets a retriable error.
            tokio::spawn(async move { old.retire().await });
        }
        Ok(conn)
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

    /// Stops the background refresher and closes every broker connection; later calls fail
    /// with [`ErrorKind::Closed`].
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.shutdown.stop();
        let mut brokers: Vec<BrokerConnection> =
            lock(&self.inner.brokers).drain().map(|(_, b)| b).collect();
        brokers.extend(lock(&self.inner.fetch_brokers).drain().map(|(_, b)| b));
        for b in brokers {
            b.close().await;
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

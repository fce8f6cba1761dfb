//! Helpers shared by the broker-backed integration tests.
//!
//! One suite, two brokers: with `REKAFKA_TEST_BROKER=mock` the tests run against rekafka's
//! embedded mock cluster (started once per test process), otherwise against the cluster named by
//! `REKAFKA_BOOTSTRAP`: Apache Kafka started by `scripts/kafka.sh` (three KRaft nodes, ids 1..3,
//! `num.partitions=3`, replication 3), or any other cluster, e.g. `docker-compose.yml`'s.
//! `REKAFKA_TEST_BROKER=tansu` says the external broker is Tansu (`scripts/with-broker.sh`),
//! for the few assertions that still tolerate its documented quirks (docs/broker-quirks.md).
#![allow(dead_code)]

use std::sync::OnceLock;

/// Which broker the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBroker {
    /// The Apache Kafka cluster at `REKAFKA_BOOTSTRAP` (`scripts/kafka.sh` in CI).
    External,
    /// Tansu at `REKAFKA_BOOTSTRAP` (`REKAFKA_TEST_BROKER=tansu`).
    Tansu,
    /// rekafka's in-process mock cluster.
    Mock,
}

/// The broker chosen by `REKAFKA_TEST_BROKER`: `mock`, `tansu`, or anything else / unset for
/// the Kafka cluster at `REKAFKA_BOOTSTRAP`.
pub fn test_broker() -> TestBroker {
    match std::env::var("REKAFKA_TEST_BROKER").as_deref() {
        Ok("mock") => TestBroker::Mock,
        Ok("tansu") => TestBroker::Tansu,
        _ => TestBroker::External,
    }
}

/// Whether the broker is Tansu, whose documented quirks a few assertions still tolerate.
pub fn is_tansu() -> bool {
    test_broker() == TestBroker::Tansu
}

/// The number of brokers the mock cluster started here has: like `scripts/kafka.sh`'s cluster.
pub const MOCK_BROKERS: usize = 3;

/// How many brokers the test cluster has, where that is known: the mock's, Tansu's one,
/// `REKAFKA_KAFKA_NODES` (exported by `scripts/kafka.sh env`), or the number of addresses in
/// `REKAFKA_BOOTSTRAP`.
pub fn broker_count() -> usize {
    match test_broker() {
        TestBroker::Mock => MOCK_BROKERS,
        TestBroker::Tansu => 1,
        TestBroker::External => std::env::var("REKAFKA_KAFKA_NODES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| {
                std::env::var("REKAFKA_BOOTSTRAP")
                    .map(|b| b.split(',').filter(|s| !s.is_empty()).count())
                    .unwrap_or(1)
            }),
    }
}

/// How many partitions the cluster gives an auto-created topic (`num.partitions`: 3 on
/// `scripts/kafka.sh`'s cluster and the mock started here, 4 on Tansu).
pub fn default_partitions() -> usize {
    match test_broker() {
        TestBroker::Tansu => 4,
        _ => 3,
    }
}

/// The replication factor the cluster gives new topics by default (`default.replication.factor`
/// of `scripts/kafka.sh`: 3 with three nodes; the mock and Tansu keep one copy).
pub fn default_replication() -> usize {
    match test_broker() {
        TestBroker::External => broker_count().min(3),
        _ => 1,
    }
}

/// The bootstrap address of the mock cluster, started on first use on a thread of its own (with
/// its own runtime, so it outlives every test's runtime) and kept for the whole process.
fn mock_bootstrap() -> String {
    static ADDR: OnceLock<String> = OnceLock::new();
    ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("rekafka-test-mock".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime for the mock cluster");
                rt.block_on(async move {
                    // Like scripts/kafka.sh's cluster: three brokers with node ids 1..3;
                    // auto-created topics get 3 partitions. Consumer-protocol (KIP-848)
                    // groups get a shorter heartbeat interval and session timeout than
                    // Kafka's 5 s and 45 s, so their tests do not wait as long.
                    let mock = rekafka::mock::MockCluster::builder()
                        .brokers(MOCK_BROKERS)
                        .first_node_id(1)
                        .default_partitions(3)
                        .consumer_heartbeat_interval(std::time::Duration::from_millis(500))
                        .consumer_session_timeout(std::time::Duration::from_secs(10))
                        .start()
                        .await
                        .expect("starting the mock cluster");
                    tx.send(mock.bootstrap()).expect("handing over the address");
                    // Keep the cluster (and this runtime) alive for the rest of the process.
                    std::future::pending::<()>().await;
                    drop(mock);
                });
            })
            .expect("mock cluster thread");
        rx.recv().expect("mock cluster address")
    })
    .clone()
}

/// The first bootstrap address of the test broker. Broker tests fail (they do not skip) without
/// one.
pub fn bootstrap() -> String {
    bootstrap_all()
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no bootstrap address"))
}

/// Every bootstrap address of the test cluster (`REKAFKA_BOOTSTRAP` is `host:port,host:port`).
pub fn bootstrap_all() -> Vec<String> {
    let list = match test_broker() {
        TestBroker::Mock => Ok(mock_bootstrap()),
        _ => std::env::var("REKAFKA_BOOTSTRAP"),
    };
    match list {
        Ok(s) if !s.is_empty() => s
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => panic!(
            "REKAFKA_BOOTSTRAP is not set: these tests need a Kafka cluster. Run them through \
             `scripts/test.sh`, or start one with `scripts/kafka.sh start` and \
             `eval \"$(scripts/kafka.sh env)\"`, or set REKAFKA_TEST_BROKER=mock to use the \
             embedded mock cluster."
        ),
    }
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `within`; panics naming
/// `what` otherwise. Kafka propagates metadata (new topics, altered configs) to every broker
/// asynchronously, so a test that asks another broker right after a change waits for it, as
/// Kafka's own tests do.
pub async fn eventually<T, F, Fut>(what: &str, within: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if std::time::Instant::now() >= deadline {
            panic!("{what}: not true within {within:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A unique name for a topic or group in this test run.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{t}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

use std::path::PathBuf;

/// A throw-away broker of our own: a one-node Kafka (`scripts/kafka.sh` with its own cluster
/// directory), or a mock cluster in the mock pass. Stopped on drop.
pub enum OwnBroker {
    /// A one-node Kafka in its own cluster directory.
    Kafka {
        /// Its `KAFKA_CLUSTER_DIR`.
        dir: PathBuf,
        /// Its bootstrap address.
        addr: String,
    },
    /// A mock cluster of its own.
    Mock(rekafka::mock::MockCluster),
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn kafka_script(dir: &PathBuf, args: &[&str]) -> String {
    let out = std::process::Command::new(root().join("scripts/kafka.sh"))
        .args(args)
        .env("KAFKA_CLUSTER_DIR", dir)
        .output()
        .unwrap_or_else(|e| panic!("running scripts/kafka.sh: {e}"));
    assert!(
        out.status.success(),
        "scripts/kafka.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `n` distinct TCP ports on 127.0.0.1 that were free a moment ago.
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}")))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().unwrap_or_else(|e| panic!("{e}")).port())
        .collect()
}

/// Ports for [`OwnBroker::start_at`]: its bootstrap address is known before it starts.
#[derive(Debug, Clone)]
pub struct PlannedBroker {
    /// The ports (Kafka: its PLAINTEXT and CONTROLLER listeners; the mock: its one broker).
    ports: Vec<u16>,
}

impl PlannedBroker {
    /// Picks free ports; nothing listens on them until [`OwnBroker::start_at`].
    pub fn new() -> PlannedBroker {
        let n = if test_broker() == TestBroker::Mock {
            1
        } else {
            2
        };
        PlannedBroker {
            ports: free_ports(n),
        }
    }

    /// The bootstrap address it will have.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.ports[0])
    }
}

impl OwnBroker {
    /// Starts it on the ports of `planned` (a Kafka JVM takes some seconds).
    pub async fn start_at(planned: &PlannedBroker) -> OwnBroker {
        if test_broker() == TestBroker::Mock {
            let mock = rekafka::mock::MockCluster::builder()
                .first_port(planned.ports[0])
                .start()
                .await
                .unwrap_or_else(|e| panic!("mock: {e}"));
            return OwnBroker::Mock(mock);
        }
        let dir = root().join(format!("target/{}", unique("kafka-own")));
        let d = dir.clone();
        let ports = planned
            .ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        let out = tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(root().join("scripts/kafka.sh"))
                .args(["start", "--nodes", "1"])
                .env("KAFKA_CLUSTER_DIR", &d)
                .env("KAFKA_PORTS", ports)
                .output()
                .unwrap_or_else(|e| panic!("running scripts/kafka.sh: {e}"));
            assert!(
                out.status.success(),
                "scripts/kafka.sh start failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let addr = out
            .lines()
            .last()
            .unwrap_or_else(|| panic!("kafka.sh printed no address: {out}"))
            .trim()
            .to_string();
        assert_eq!(addr, planned.addr(), "kafka.sh used other ports");
        OwnBroker::Kafka { dir, addr }
    }

    /// Starts it (a Kafka JVM takes some seconds).
    pub async fn start() -> OwnBroker {
        if test_broker() == TestBroker::Mock {
            let mock = rekafka::mock::MockCluster::builder()
                .start()
                .await
                .unwrap_or_else(|e| panic!("mock: {e}"));
            return OwnBroker::Mock(mock);
        }
        let dir = root().join(format!("target/{}", unique("kafka-own")));
        let d = dir.clone();
        let out = tokio::task::spawn_blocking(move || kafka_script(&d, &["start", "--nodes", "1"]))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = out
            .lines()
            .last()
            .unwrap_or_else(|| panic!("kafka.sh printed no address: {out}"))
            .trim()
            .to_string();
        OwnBroker::Kafka { dir, addr }
    }

    /// Its bootstrap address.
    pub fn addr(&self) -> String {
        match self {
            OwnBroker::Kafka { addr, .. } => addr.clone(),
            OwnBroker::Mock(m) => m.bootstrap(),
        }
    }

    /// SIGKILL (Kafka): the broker dies without closing anything politely. The mock's broker
    /// stops listening and drops every connection.
    pub async fn kill(&self) {
        match self {
            OwnBroker::Kafka { dir, .. } => {
                let d = dir.clone();
                tokio::task::spawn_blocking(move || kafka_script(&d, &["kill", "1"]))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            OwnBroker::Mock(m) => m
                .broker_down(m.broker_ids()[0])
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        }
    }

    /// Starts it again: same node id, port and data.
    pub async fn restart(&self) {
        match self {
            OwnBroker::Kafka { dir, .. } => {
                let d = dir.clone();
                tokio::task::spawn_blocking(move || kafka_script(&d, &["restart", "1"]))
                    .await
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            OwnBroker::Mock(m) => m
                .broker_up(m.broker_ids()[0])
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        }
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if let OwnBroker::Kafka { dir, .. } = self {
            let _ = std::process::Command::new(root().join("scripts/kafka.sh"))
                .arg("stop")
                .env("KAFKA_CLUSTER_DIR", &*dir)
                .output();
            let _ = std::fs::remove_dir_all(&*dir);
        }
    }
}

// ---- Set-ups the broker suites share ----
//
// Each suite used to carry its own copy of these (connect, create a topic, wait for leaders,
// record rebalance callbacks, poll in the background, read a topic back read_committed). One
// copy here keeps them the same everywhere; a suite that needs a variant (other timeouts, a
// different poll interval, errors tolerated) keeps its own.

/// A cluster connection to [`bootstrap()`] with the default configuration.
pub async fn cluster() -> rekafka::cluster::Cluster {
    rekafka::cluster::Cluster::connect(rekafka::cluster::ClusterConfig::new([bootstrap()]))
        .await
        .expect("connect")
}

/// A client of [`bootstrap()`] with the default configuration.
pub async fn client() -> rekafka::Client {
    rekafka::Client::builder()
        .bootstrap_servers([bootstrap()])
        .connect()
        .await
        .expect("connect")
}

/// Creates `name` with `partitions` partitions (the broker's default replication) through the
/// admin client; panics if the request or the topic's creation fails.
pub async fn create_topic(cluster: &rekafka::cluster::Cluster, name: &str, partitions: i32) {
    let admin = rekafka::admin::Admin::new(cluster.clone());
    for r in admin
        .create_topics(&[rekafka::admin::NewTopic::new(name, partitions)])
        .await
        .expect("create_topics")
    {
        r.expect("topic created");
    }
}

/// [`create_topic`], then waits (30 s at most) until this client knows a leader for every
/// partition: share fetches and assignments go to leaders, so the share suites start from
/// there. After 30 s it returns anyway and the test's own checks report what is missing.
pub async fn create_topic_with_leaders(
    cluster: &rekafka::cluster::Cluster,
    name: &str,
    partitions: i32,
) {
    create_topic(cluster, name, partitions).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let _ = cluster.refresh_topics(&[name]).await;
        let ok = (0..partitions).all(|p| cluster.known_leader(name, p).is_some());
        if ok || std::time::Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Checks `f` every 100 ms until it holds; panics naming `what` once `timeout` has passed.
pub async fn wait_for(what: &str, timeout: std::time::Duration, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

// Each suite includes this module and uses only some of these.
#[allow(unused_imports)]
pub use consumers::{RebalanceEvents, read_committed_values, spawn_poller};

/// The consumer-side set-ups (in a module of their own for their imports).
mod consumers {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use rekafka::cluster::Cluster;
    use rekafka::consumer::{
        AutoCommit, BoxFuture, Consumer, ConsumerConfig, IsolationLevel, RebalanceListener,
        StartOffset, TopicPartition,
    };

    /// A rebalance listener that records every callback in order: `("assigned" | "revoked" |
    /// "lost", partitions)`.
    #[derive(Default)]
    pub struct RebalanceEvents(pub Mutex<Vec<(&'static str, Vec<TopicPartition>)>>);

    impl RebalanceEvents {
        /// Records one callback; the three callbacks differ only in their name.
        fn record<'a>(&'a self, what: &'static str, p: &[TopicPartition]) -> BoxFuture<'a, ()> {
            self.0.lock().unwrap().push((what, p.to_vec()));
            Box::pin(async {})
        }
    }

    impl RebalanceListener for RebalanceEvents {
        fn on_assigned<'a>(
            &'a self,
            _: &'a Consumer,
            p: &'a [TopicPartition],
        ) -> BoxFuture<'a, ()> {
            self.record("assigned", p)
        }
        fn on_revoked<'a>(&'a self, _: &'a Consumer, p: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
            self.record("revoked", p)
        }
        fn on_lost<'a>(&'a self, _: &'a Consumer, p: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
            self.record("lost", p)
        }
    }

    /// Polls `c` (200 ms per poll) on a task of its own until `stop` is set; a failed poll
    /// fails the task, which the test sees when it awaits the handle.
    pub fn spawn_poller(c: Arc<Consumer>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                c.poll(Duration::from_millis(200)).await.expect("poll");
            }
        })
    }

    /// Every value of `topic`'s partitions `0..partitions` as a fresh read_committed consumer
    /// (manually assigned, from the beginning, no commits) sees it, read until nothing new came
    /// for 2 s. Values are decoded as UTF-8 (lossy), in the order fetched.
    pub async fn read_committed_values(
        cluster: &Cluster,
        topic: &str,
        partitions: i32,
    ) -> Vec<String> {
        let reader = Consumer::new(
            cluster.clone(),
            ConsumerConfig::new()
                .with_auto_commit(AutoCommit::Disabled)
                .with_isolation_level(IsolationLevel::ReadCommitted)
                .with_fetch_max_wait(Duration::from_millis(50)),
        )
        .expect("reader");
        reader
            .assign(
                (0..partitions).map(|p| (TopicPartition::new(topic, p), StartOffset::Beginning)),
            )
            .expect("assign");
        let mut values: Vec<String> = Vec::new();
        let mut idle = Instant::now();
        while idle.elapsed() < Duration::from_secs(2) {
            let recs = reader.poll(Duration::from_millis(200)).await.expect("poll");
            if !recs.is_empty() {
                idle = Instant::now();
            }
            values.extend(recs.iter().map(|r| {
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
            }));
        }
        reader.close().await.ok();
        values
    }
}

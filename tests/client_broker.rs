//! The `Client` against a real broker (Tansu): built from properties, shared by admin calls,
//! and recovering by itself when the broker is killed and restarted under it.
//!
//! Needs `REKAFKA_BOOTSTRAP`; the tests fail (they do not skip) without it:
//!
//! ```text
//! scripts/with-broker.sh cargo test --test client_broker
//! ```
//!
//! `client_recovers_after_broker_restart` starts, kills and restarts its own broker through
//! `scripts/broker.sh` (with its own pid file), so it never disturbs the shared one.

mod common;
use common::{bootstrap, unique};

use std::path::PathBuf;
use std::time::Duration;

use rekafka::admin::{Internal, NewTopic};
use rekafka::{Client, ErrorKind};
use tokio::time::Instant;

#[tokio::test]
async fn from_properties_connects_and_shares_one_cluster() {
    let client = Client::from_properties([
        (
            "bootstrap.servers",
            format!("127.0.0.1:1,{}", bootstrap()).as_str(),
        ),
        ("client.id", "rekafka-client-tests"),
        ("request.timeout.ms", "10000"),
        ("socket.connection.setup.timeout.ms", "2000"),
        ("allow.auto.create.topics", "false"),
    ])
    .await
    .unwrap_or_else(|e| panic!("from_properties: {e}"));
    assert_eq!(client.config().client_id, "rekafka-client-tests");
    assert_eq!(client.config().request_timeout, Duration::from_secs(10));
    assert!(!client.cluster().config().allow_auto_topic_creation);
    // The dead first bootstrap address was skipped.
    assert_eq!(
        client
            .cluster()
            .metadata()
            .brokers
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [111]
    );
    // With auto-creation off, asking for an unknown topic does not create it.
    let missing = unique("client-missing");
    assert!(client.cluster().partitions(&missing).await.is_err());
    let topics = client.admin().list_topics(Internal::Include).await;
    assert!(
        !topics
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .any(|t| t.name == missing)
    );
    // Admin clients made from the client use its cluster: no second bootstrap.
    let before = client.cluster().metadata_requests();
    let admin = client.admin();
    let _ = admin.describe_cluster().await;
    assert!(client.cluster().metadata_requests() <= before + 1);
    client.close().await;
    let e = client
        .admin()
        .list_topics(Internal::Exclude)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Closed, "{e}");
}

#[tokio::test]
async fn a_bad_property_fails_build_naming_it() {
    let e = Client::from_properties([
        ("bootstrap.servers", bootstrap()),
        ("linger.msx", "5".into()),
    ])
    .await
    .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Config);
    assert!(e.to_string().contains("'linger.msx'"), "{e}");
    let e = Client::builder()
        .bootstrap_servers([bootstrap()])
        .property("metadata.max.age.ms", "-5")
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("metadata.max.age.ms"), "{e}");
}

/// A throw-away Tansu of our own, stopped on drop.
struct OwnBroker {
    pidfile: PathBuf,
    addr: String,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn broker_script(pidfile: &PathBuf, args: &[&str]) -> String {
    let out = std::process::Command::new(root().join("scripts/broker.sh"))
        .args(args)
        .env("TANSU_PIDFILE", pidfile)
        .output()
        .unwrap_or_else(|e| panic!("running scripts/broker.sh: {e}"));
    assert!(
        out.status.success(),
        "scripts/broker.sh {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl OwnBroker {
    async fn start() -> OwnBroker {
        let pidfile = root().join(format!("target/tansu-client-{}.pid", std::process::id()));
        let pf = pidfile.clone();
        let out = tokio::task::spawn_blocking(move || broker_script(&pf, &["start"]))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("export REKAFKA_BOOTSTRAP="))
            .unwrap_or_else(|| panic!("broker.sh printed no address: {out}"))
            .to_string();
        OwnBroker { pidfile, addr }
    }

    /// SIGKILL: the broker dies without closing anything politely.
    async fn kill(&self) {
        let pid = std::fs::read_to_string(&self.pidfile)
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .to_string();
        let status = tokio::task::spawn_blocking(move || {
            std::process::Command::new("kill")
                .args(["-KILL", &pid])
                .status()
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(status.success());
    }

    /// Starts it again on the same port.
    async fn restart(&self) {
        let pf = self.pidfile.clone();
        let port = self.addr.rsplit(':').next().unwrap_or_default().to_string();
        tokio::task::spawn_blocking(move || broker_script(&pf, &["start", &port]))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = std::process::Command::new(root().join("scripts/broker.sh"))
            .arg("stop")
            .env("TANSU_PIDFILE", &self.pidfile)
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_recovers_after_broker_restart() {
    // REKAFKA_BOOTSTRAP is not used, but the suite's contract is that it is set.
    let _ = bootstrap();
    let broker = OwnBroker::start().await;
    let client = Client::builder()
        .bootstrap_servers([broker.addr.clone()])
        .request_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .api_timeout(Duration::from_secs(20))
        .build()
        .await
        .unwrap_or_else(|e| panic!("build: {e}"));
    let admin = client.admin();
    let topic = unique("client-restart");
    let created = admin
        .create_topics(&[NewTopic::new(&topic, 2)])
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    assert!(created[0].is_ok(), "{:?}", created[0]);

    broker.kill().await;
    // While the broker is down, an admin call keeps retrying (it is retriable) instead of
    // failing at once; the broker comes back (empty: memory storage) and the same call
    // succeeds on a new connection, made by the client without being asked.
    let down = Instant::now();
    let call = {
        let admin = admin.clone();
        let topic = topic.clone();
        tokio::spawn(async move { admin.create_topics(&[NewTopic::new(&topic, 3)]).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !call.is_finished(),
        "the call gave up while the broker was down"
    );
    broker.restart().await;
    let result = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .unwrap_or_else(|_| panic!("the call hung after the restart"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("create after restart: {e}"));
    let t = result[0].as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.name, topic);
    eprintln!("recovered {:?} after the kill", down.elapsed());
    // Later calls work as usual.
    let described = admin
        .describe_topics(&[&topic])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let d = described[0].as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.partitions.len(), 3);
    client.close().await;
}

//! Helpers shared by the broker-backed integration tests.
//!
//! One suite, two brokers: with `REKAFKA_TEST_BROKER=mock` the tests run against rekafka's
//! embedded mock cluster (started once per test process), otherwise against the broker named by
//! `REKAFKA_BOOTSTRAP` (Tansu, started by `scripts/with-broker.sh`).
#![allow(dead_code)]

use std::sync::OnceLock;

/// Which broker the tests run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBroker {
    /// The broker at `REKAFKA_BOOTSTRAP` (Tansu in CI).
    External,
    /// rekafka's in-process mock cluster.
    Mock,
}

/// The broker chosen by `REKAFKA_TEST_BROKER` (`mock`, or anything else / unset for the broker
/// at `REKAFKA_BOOTSTRAP`).
pub fn test_broker() -> TestBroker {
    match std::env::var("REKAFKA_TEST_BROKER").as_deref() {
        Ok("mock") => TestBroker::Mock,
        _ => TestBroker::External,
    }
}

/// The node id of the test broker: Tansu's is 111, and the mock started here uses the same so
/// tests can name it.
pub const NODE_ID: i32 = 111;

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
                    // Like the test broker: one broker with node id 111; auto-created topics get
                    // 4 partitions.
                    let mock = rekafka::mock::MockCluster::builder()
                        .first_node_id(NODE_ID)
                        .default_partitions(4)
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
    if test_broker() == TestBroker::Mock {
        return mock_bootstrap();
    }
    match std::env::var("REKAFKA_BOOTSTRAP") {
        Ok(s) if !s.is_empty() => s.split(',').next().unwrap_or_default().to_string(),
        _ => panic!(
            "REKAFKA_BOOTSTRAP is not set: these tests need a broker. Run them through \
             `scripts/test.sh` or `scripts/with-broker.sh cargo test --test NAME`, or set \
             REKAFKA_TEST_BROKER=mock to use the embedded mock cluster."
        ),
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

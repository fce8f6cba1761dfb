//! Issue 22: `rekafka dlt inspect`/`replay` read committed dead letters only unless
//! `-X isolation.level` says otherwise, and a replay filtered with `--where` does not make the
//! dead letters it skipped unreplayable. On the in-process mock cluster.

use std::process::{Command, Output};
use std::time::Duration;

use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::listener::{DeadLetterHeaders, Provenance};
use rekafka::mock::MockCluster;
use rekafka::producer::{ProducerConfig, Record};
use rekafka::protocol::record::TimestampType;
use rekafka::transaction::TransactionalProducer;
use serde_json::Value;

#[derive(Debug)]
struct InvalidOrder;
impl std::fmt::Display for InvalidOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("invalid order")
    }
}
impl std::error::Error for InvalidOrder {}

#[derive(Debug)]
struct Timeout;
impl std::fmt::Display for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("timed out")
    }
}
impl std::error::Error for Timeout {}

fn rekafka(bootstrap: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rekafka"))
        .args(args)
        .env("REKAFKA_BOOTSTRAP", bootstrap)
        .output()
        .unwrap_or_else(|e| panic!("running rekafka: {e}"))
}

/// Runs rekafka, which must succeed; returns stdout's lines as JSON.
fn ok(bootstrap: &str, args: &[&str]) -> Vec<Value> {
    let o = rekafka(bootstrap, args);
    assert!(
        o.status.success(),
        "rekafka {args:?} failed ({:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A dead letter of `source` at `offset`, failed with `error`.
fn dead_letter(
    dlt: &str,
    source: &str,
    offset: i64,
    error: &(dyn std::error::Error + 'static),
) -> Record {
    let prov = Provenance {
        topic: source.to_owned(),
        partition: 0,
        offset,
        timestamp: 1_700_000_000_000 + offset,
        timestamp_type: TimestampType::CreateTime,
        group: Some("app".into()),
    };
    let mut r = Record::new(dlt)
        .with_partition(0)
        .with_key(format!("k{offset}"))
        .with_value(format!("v{offset}"));
    r.headers = DeadLetterHeaders::default().build(&[], &prov, error, None);
    r
}

async fn mock(topics: &[&str]) -> (MockCluster, Cluster, String) {
    let mut b = MockCluster::builder();
    for t in topics {
        b = b.topic(*t, 1);
    }
    let mock = b.start().await.unwrap();
    let bootstrap = mock.bootstrap();
    let cluster = Cluster::connect(ClusterConfig::new([bootstrap.clone()]))
        .await
        .unwrap();
    (mock, cluster, bootstrap)
}

async fn txn_producer(cluster: &Cluster) -> TransactionalProducer {
    let mut config = ProducerConfig::default().with_transactional_id("dlt-writer");
    config.linger = Duration::from_millis(1);
    let p = TransactionalProducer::new(cluster.clone(), config).unwrap();
    p.init_transactions().await.unwrap();
    p
}

fn keys(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|v| {
            v.get("key")
                .and_then(Value::as_str)
                .unwrap_or_else(|| v["from"]["offset"].as_str().unwrap_or(""))
                .to_owned()
        })
        .collect()
}

/// Dead letters written by a transactional publisher: those of an aborted transaction never
/// happened, and `dlt` must not show or replay them unless asked to read uncommitted.
#[test]
fn dlt_reads_committed_dead_letters_unless_told_otherwise() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_mock, cluster, bootstrap) = mock(&["orders", "orders-dlt"]).await;
        let p = txn_producer(&cluster).await;
        p.begin_transaction().unwrap();
        let mut committed = Vec::new();
        for o in 0..2 {
            committed.push(
                p.send(dead_letter("orders-dlt", "orders", o, &InvalidOrder))
                    .await
                    .unwrap(),
            );
        }
        p.commit_transaction().await.unwrap();
        for c in committed {
            c.await.unwrap();
        }
        p.begin_transaction().unwrap();
        let mut written = Vec::new();
        for o in 2..5 {
            written.push(
                p.send(dead_letter("orders-dlt", "orders", o, &InvalidOrder))
                    .await
                    .unwrap(),
            );
        }
        // In the log before the abort, so a read_uncommitted reader sees them.
        for w in written {
            w.await.unwrap();
        }
        p.abort_transaction().await.unwrap();
        p.close().await;

        let seen = ok(&bootstrap, &["dlt", "inspect", "-t", "orders-dlt", "-e"]);
        assert_eq!(
            keys(&seen),
            ["k0", "k1"],
            "aborted dead letters are not shown"
        );
        let all = ok(
            &bootstrap,
            &[
                "-X",
                "isolation.level=read_uncommitted",
                "dlt",
                "inspect",
                "-t",
                "orders-dlt",
                "-e",
            ],
        );
        assert_eq!(all.len(), 5, "-X isolation.level is honoured");

        let replayed = ok(&bootstrap, &["dlt", "replay", "-t", "orders-dlt"]);
        assert_eq!(
            replayed.len(),
            2,
            "only committed dead letters are replayed"
        );
        cluster.close().await;
    });
}

/// The README demo's situation: 15 dead letters, 11 `InvalidOrder` and 4 others. A replay
/// filtered to `InvalidOrder` must leave the 4 others replayable by a later replay with the
/// default group, which must not republish the 11 again; rerunning the filtered replay
/// resumes where it stopped.
#[test]
fn filtered_replay_leaves_non_matching_dead_letters_replayable() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_mock, cluster, bootstrap) = mock(&["orders", "orders-dlt"]).await;
        let producer = rekafka::producer::Producer::new(cluster.clone(), ProducerConfig::default())
            .await
            .unwrap();
        let others = [3i64, 7, 8, 12];
        for o in 0..15 {
            let r = if others.contains(&o) {
                dead_letter("orders-dlt", "orders", o, &Timeout)
            } else {
                dead_letter("orders-dlt", "orders", o, &InvalidOrder)
            };
            producer.send_and_wait(r).await.unwrap();
        }
        producer.close().await;

        let from = |lines: &[Value]| -> Vec<i64> {
            lines
                .iter()
                .map(|v| v["from"]["offset"].as_i64().unwrap())
                .collect()
        };
        let filtered = ok(
            &bootstrap,
            &[
                "dlt",
                "replay",
                "-t",
                "orders-dlt",
                "--where",
                "error-type=InvalidOrder",
            ],
        );
        assert_eq!(filtered.len(), 11);
        assert!(from(&filtered).iter().all(|o| !others.contains(o)));
        // The same filtered replay again: nothing left for it.
        let again = ok(
            &bootstrap,
            &[
                "dlt",
                "replay",
                "-t",
                "orders-dlt",
                "--where",
                "error-type=InvalidOrder",
            ],
        );
        assert_eq!(again.len(), 0, "a filtered replay resumes where it stopped");
        // An unfiltered replay with the default group replays the 4 others, and only them
        // (the 11 replayed ones are listed in the group's commit metadata).
        let rest = ok(&bootstrap, &["dlt", "replay", "-t", "orders-dlt"]);
        assert_eq!(from(&rest), others, "the skipped dead letters, each once");
        let none = ok(&bootstrap, &["dlt", "replay", "-t", "orders-dlt"]);
        assert!(none.is_empty(), "{none:?}");
        cluster.close().await;
    });
}

/// A filtered replay whose list of replayed-ahead dead letters would outgrow the commit
/// metadata stops (exit 1) with its progress committed; an unfiltered replay then republishes
/// exactly what is left, each dead letter once.
#[test]
fn filtered_replay_stops_before_the_commit_metadata_overflows() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (_mock, cluster, bootstrap) = mock(&["orders", "orders-dlt"]).await;
        let producer = rekafka::producer::Producer::new(cluster.clone(), ProducerConfig::default())
            .await
            .unwrap();
        let n = 200i64;
        let mut waits = Vec::new();
        for o in 0..n {
            let r = if o == 0 {
                dead_letter("orders-dlt", "orders", o, &Timeout)
            } else {
                dead_letter("orders-dlt", "orders", o, &InvalidOrder)
            };
            waits.push(producer.send(r).await.unwrap());
        }
        for w in waits {
            w.await.unwrap();
        }
        producer.close().await;
        let from = |out: &[u8]| -> Vec<i64> {
            String::from_utf8_lossy(out)
                .lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["from"]["offset"]
                        .as_i64()
                        .unwrap()
                })
                .collect()
        };
        let o = rekafka(
            &bootstrap,
            &[
                "dlt",
                "replay",
                "-t",
                "orders-dlt",
                "--where",
                "error-type=InvalidOrder",
            ],
        );
        assert_eq!(
            o.status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let first = from(&o.stdout);
        assert_eq!(first, (1..=180).collect::<Vec<i64>>());
        let rest = ok(&bootstrap, &["dlt", "replay", "-t", "orders-dlt"]);
        let rest: Vec<i64> = rest
            .iter()
            .map(|v| v["from"]["offset"].as_i64().unwrap())
            .collect();
        let mut want = vec![0];
        want.extend(181..n);
        assert_eq!(rest, want, "the rest, each once");
        let again = ok(
            &bootstrap,
            &[
                "dlt",
                "replay",
                "-t",
                "orders-dlt",
                "--where",
                "error-type=InvalidOrder",
            ],
        );
        assert!(again.is_empty());
        cluster.close().await;
    });
}

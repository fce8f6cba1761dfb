//! librdkafka (Python `confluent-kafka` from `.tools/py`) against the in-process mock cluster:
//! the proof that the mock speaks Kafka to a client that is not ours.
//!
//! ```text
//! cargo test --features mock --test mock mock_librdkafka::
//! ```
//!
//! Needs the project's confluent-kafka (`scripts/setup.sh`); fails (does not skip) without it.
#![cfg(feature = "mock")]

use std::path::PathBuf;
use std::process::Command;

use rekafka::mock::MockCluster;
use rekafka::protocol::unstable::ApiKey;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs a script from `protocol-tests/interop/` off the runtime and parses its JSON line.
async fn run(script: &str, args: Vec<String>) -> Value {
    let path = root().join("protocol-tests/interop").join(script);
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .env("PYTHONPATH", root().join(".tools/py"))
            .arg(&path)
            .args(&args)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("cannot run python3 for {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{script} printed {stdout:?}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_idempotent_produce_of_100k_records() {
    let mock = MockCluster::builder()
        .brokers(3)
        .topic("idem", 3)
        .start()
        .await
        .unwrap();
    let n = 100_000;
    let v = run(
        "mock_idempotent.py",
        vec![mock.bootstrap(), "idem".into(), n.to_string()],
    )
    .await;
    assert_eq!(v["acked"], n, "{v}");
    assert_eq!(v["consumed"], n, "{v}");
    assert_eq!(v["distinct"], n, "{v}");
    assert_eq!(v["in_order"], true, "{v}");
    // What the mock stored: every value exactly once.
    let mut values = Vec::new();
    for p in 0..3 {
        for r in mock.records("idem", p).unwrap() {
            values.push(String::from_utf8(r.value.unwrap().to_vec()).unwrap());
        }
    }
    assert_eq!(values.len(), n);
    values.sort();
    values.dedup();
    assert_eq!(values.len(), n);
    // librdkafka produced idempotently: a producer id on every Produce.
    let produces: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key == ApiKey::Produce)
        .collect();
    assert!(!produces.is_empty());
    assert!(
        produces
            .iter()
            .all(|r| r.producer_id.is_some_and(|p| p >= 0))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_group_of_two_shares_partitions_and_commits() {
    let mock = MockCluster::builder()
        .brokers(2)
        .topic("shared", 4)
        .start()
        .await
        .unwrap();
    let n = 2_000;
    let v = run(
        "mock_group.py",
        vec![
            mock.bootstrap(),
            "shared".into(),
            "g-two".into(),
            n.to_string(),
        ],
    )
    .await;
    assert_eq!(v["consumed"], n, "{v}");
    assert_eq!(v["distinct"], n, "{v}");
    let a: Vec<i64> = serde_json::from_value(v["members"]["a"]["partitions"].clone()).unwrap();
    let b: Vec<i64> = serde_json::from_value(v["members"]["b"]["partitions"].clone()).unwrap();
    assert!(!a.is_empty() && !b.is_empty(), "{v}");
    let mut all: Vec<i64> = a.iter().chain(&b).copied().collect();
    all.sort();
    assert_eq!(all, vec![0, 1, 2, 3], "{v}");
    assert!(v["members"]["a"]["count"].as_i64().unwrap() > 0, "{v}");
    assert!(v["members"]["b"]["count"].as_i64().unwrap() > 0, "{v}");
    // The commits reached the mock: every partition's offset is its end.
    for p in 0..4 {
        let hw = mock.high_watermark("shared", p).unwrap();
        assert_eq!(
            mock.committed_offset("g-two", "shared", p),
            Some(hw),
            "p{p}"
        );
        assert_eq!(v["committed"][p.to_string()], hw, "{v}");
    }
    let joins = mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key == ApiKey::JoinGroup)
        .count();
    assert!(
        joins >= 3,
        "two members and at least one rebalance: {joins} joins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_read_committed_hides_the_aborted_transaction() {
    let mock = MockCluster::builder()
        .brokers(2)
        .topic("txn", 2)
        .start()
        .await
        .unwrap();
    let v = run(
        "mock_txn.py",
        vec![mock.bootstrap(), "txn".into(), "mock-txn-1".into()],
    )
    .await;
    let mut committed: Vec<String> = serde_json::from_value(v["read_committed"].clone()).unwrap();
    let mut uncommitted: Vec<String> =
        serde_json::from_value(v["read_uncommitted"].clone()).unwrap();
    committed.sort();
    uncommitted.sort();
    let mut want: Vec<String> = (0..10)
        .map(|i| format!("c-{i}"))
        .chain((0..5).map(|i| format!("d-{i}")))
        .collect();
    want.sort();
    assert_eq!(committed, want, "{v}");
    let mut want_all: Vec<String> = want
        .iter()
        .cloned()
        .chain((0..7).map(|i| format!("a-{i}")))
        .collect();
    want_all.sort();
    assert_eq!(uncommitted, want_all, "{v}");
    for p in 0..2 {
        assert_eq!(
            mock.last_stable_offset("txn", p).unwrap(),
            mock.high_watermark("txn", p).unwrap()
        );
    }
    let ends: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key == ApiKey::EndTxn)
        .collect();
    assert_eq!(ends.len(), 3);
    let mut used: Vec<(ApiKey, i16)> = mock
        .requests()
        .into_iter()
        .map(|r| (r.api_key, r.api_version))
        .collect();
    used.sort_by_key(|(k, v)| (*k as i16, *v));
    used.dedup();
    eprintln!("librdkafka used: {used:?}");
}

/// librdkafka's idempotent producer against injected faults: retriable errors, lost
/// acknowledgements and a dropped connection. Every record is delivered exactly once, in order,
/// and the request log shows the retries the broker deduplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_idempotent_produce_survives_errors_lost_acks_and_disconnects() {
    use rekafka::KafkaCode;
    let mock = MockCluster::builder()
        .brokers(2)
        .topic("faulty", 2)
        .start()
        .await
        .unwrap();
    mock.push_request_errors(
        ApiKey::Produce,
        &[
            KafkaCode::NotEnoughReplicas,
            KafkaCode::RequestTimedOut,
            KafkaCode::NotEnoughReplicasAfterAppend,
        ],
    );
    // Two produce requests are written but never acknowledged.
    mock.drop_responses(
        |r| r.api_key == ApiKey::Produce && r.producer_id.is_some(),
        2,
    );
    mock.close_connection_on(ApiKey::Produce, 12);
    let n = 20_000;
    let v = run(
        "mock_idempotent.py",
        vec![
            mock.bootstrap(),
            "faulty".into(),
            n.to_string(),
            "1500".into(),
        ],
    )
    .await;
    assert_eq!(v["acked"], n, "{v}");
    assert_eq!(v["consumed"], n, "{v}");
    assert_eq!(v["distinct"], n, "{v}");
    assert_eq!(v["in_order"], true, "{v}");
    let stored: usize = (0..2)
        .map(|p| mock.records("faulty", p).unwrap().len())
        .sum();
    assert_eq!(stored, n, "the broker stored each record once");
    // The lost acknowledgements were retried with the same producer id, epoch and sequence.
    let produces: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key == ApiKey::Produce)
        .map(|r| {
            (
                r.partitions.clone(),
                r.producer_id,
                r.producer_epoch,
                r.base_sequence,
            )
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    let repeats = produces
        .iter()
        .filter(|p| !seen.insert((*p).clone()))
        .count();
    assert!(
        repeats >= 2,
        "expected retried produce requests, saw {repeats}"
    );
}

/// Scenario 12 of the reliability plan: recoverable errors on every transactional RPC. librdkafka
/// retries them and the outcome is the same as without faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_transactions_recover_from_coordinator_errors() {
    use rekafka::KafkaCode;
    let mock = MockCluster::builder()
        .brokers(2)
        .topic("txn-faults", 2)
        .start()
        .await
        .unwrap();
    mock.push_request_errors(
        ApiKey::InitProducerId,
        &[
            KafkaCode::CoordinatorNotAvailable,
            KafkaCode::NotCoordinator,
            KafkaCode::CoordinatorLoadInProgress,
        ],
    );
    mock.push_request_errors(
        ApiKey::AddPartitionsToTxn,
        &[KafkaCode::ConcurrentTransactions],
    );
    mock.push_request_errors(
        ApiKey::EndTxn,
        &[KafkaCode::NotCoordinator, KafkaCode::ConcurrentTransactions],
    );
    mock.push_request_errors(
        ApiKey::FindCoordinator,
        &[KafkaCode::CoordinatorNotAvailable],
    );
    let v = run(
        "mock_txn.py",
        vec![
            mock.bootstrap(),
            "txn-faults".into(),
            "mock-txn-faults".into(),
        ],
    )
    .await;
    let mut committed: Vec<String> = serde_json::from_value(v["read_committed"].clone()).unwrap();
    committed.sort();
    let mut want: Vec<String> = (0..10)
        .map(|i| format!("c-{i}"))
        .chain((0..5).map(|i| format!("d-{i}")))
        .collect();
    want.sort();
    assert_eq!(committed, want, "{v}");
    let count = |api: ApiKey| {
        mock.requests()
            .into_iter()
            .filter(|r| r.api_key == api)
            .count()
    };
    assert!(count(ApiKey::InitProducerId) >= 4, "errors were retried");
    assert!(count(ApiKey::EndTxn) >= 5, "3 EndTxn plus 2 retried");
}

/// A partition's leader moves while librdkafka's idempotent producer is sending: it follows the
/// leader (NOT_LEADER_OR_FOLLOWER, metadata refresh) and every record is stored once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_follows_a_leader_move_mid_produce() {
    let mock = MockCluster::builder()
        .brokers(3)
        .topic("moving", 2)
        .start()
        .await
        .unwrap();
    let n = 50_000;
    let script = tokio::spawn(run(
        "mock_idempotent.py",
        vec![mock.bootstrap(), "moving".into(), n.to_string()],
    ));
    mock.wait_for_requests(|r| r.api_key == ApiKey::Produce, 5)
        .await;
    let old = mock.partition_leader("moving", 0).unwrap();
    let new = mock.broker_ids().into_iter().find(|&b| b != old).unwrap();
    mock.set_partition_leader("moving", 0, new).unwrap();
    let v = script.await.unwrap();
    assert_eq!(v["acked"], n, "{v}");
    assert_eq!(v["consumed"], n, "{v}");
    assert_eq!(v["distinct"], n, "{v}");
    assert_eq!(v["in_order"], true, "{v}");
    let produced_to = |broker: i32| {
        mock.requests().into_iter().any(|r| {
            r.api_key == ApiKey::Produce
                && r.broker == broker
                && r.partitions.iter().any(|(t, p)| t == "moving" && *p == 0)
        })
    };
    assert!(produced_to(new), "the new leader received produce requests");
}

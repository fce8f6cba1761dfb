//! The README's demo (`cargo run --example demo --features mock`) runs here too, on its own mock
//! cluster, and its summary is checked against what the orders were built to do.

#[path = "../examples/demo.rs"]
#[allow(dead_code)]
mod demo;

// The README's other examples, each on its own mock cluster; what they print is checked here
// against the rules in their docs.
#[path = "../examples/batch_listener.rs"]
#[allow(dead_code)]
mod batch_listener;
#[path = "../examples/dead_letters_and_replay.rs"]
#[allow(dead_code)]
mod dead_letters_and_replay;
#[path = "../examples/exactly_once_pipeline.rs"]
#[allow(dead_code)]
mod exactly_once_pipeline;
#[path = "../examples/producer_failures.rs"]
#[allow(dead_code)]
mod producer_failures;
#[path = "../examples/typed_records.rs"]
#[allow(dead_code)]
mod typed_records;

use rekafka::mock::MockCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_demo_summary() {
    let mock = MockCluster::builder()
        .brokers(3)
        .start()
        .await
        .expect("mock");
    let s = demo::run(&mock.bootstrap(), "orders", "billing")
        .await
        .expect("demo runs");
    mock.shutdown().await;

    // Derived from the rules in the demo's docs, not from a previous run.
    let n = demo::ORDERS;
    let undeserializable: Vec<u64> = (0..n).filter(|i| i % 250 == 125).collect();
    let invalid: Vec<u64> = (0..n).filter(|i| i % 97 == 0 && i % 250 != 125).collect();
    let transient = (0..n)
        .filter(|i| i % 10 == 3 && i % 97 != 0 && i % 250 != 125)
        .count() as u64;
    let dead: Vec<u64> = {
        let mut v: Vec<u64> = invalid.iter().chain(&undeserializable).copied().collect();
        v.sort();
        v
    };
    assert_eq!(s.handled, n - dead.len() as u64);
    assert_eq!(s.retries, transient);
    // One failed delivery per transient order, per invalid order, and per undeserializable one.
    assert_eq!(
        s.failed_deliveries,
        transient + invalid.len() as u64 + undeserializable.len() as u64
    );
    let keys: Vec<String> = s.dead_letters.iter().map(|d| d.key.clone()).collect();
    let expected: Vec<String> = dead.iter().map(|i| format!("order-{i}")).collect();
    assert_eq!(
        keys, expected,
        "exactly the expected dead letters, once each"
    );
    for d in &s.dead_letters {
        let i = &d.info;
        assert_eq!(i.original_topic.as_deref(), Some("orders"));
        assert_eq!(i.original_consumer_group.as_deref(), Some("billing"));
        assert!(i.original_partition.is_some() && i.original_offset.is_some());
        let id: u64 = d.key.trim_start_matches("order-").parse().expect("id");
        if undeserializable.contains(&id) {
            assert_eq!(
                i.exception_fqcn.as_deref(),
                Some("rekafka::listener::DeserializationFailed")
            );
            assert_eq!(d.value.first(), Some(&0xff), "raw bytes kept");
        } else {
            assert_eq!(
                i.exception_fqcn.as_deref(),
                Some("readme_demo::demo::InvalidOrder")
            );
            assert!(String::from_utf8_lossy(&d.value).contains("\"amount\":-5"));
        }
    }
    assert_eq!(
        s.committed, s.log_end,
        "committed offsets reach the log end"
    );
    assert_eq!(s.log_end.values().sum::<i64>(), n as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_producer_failures() {
    use rekafka::producer::Persistence;
    use rekafka::{ErrorKind, KafkaCode};
    let mock = producer_failures::mock().await.expect("mock");
    let s = producer_failures::run(&mock).await.expect("runs");
    // Retried: ten records, in order, each stored once.
    assert_eq!(s.delivered, (0..10).collect::<Vec<i64>>());
    assert_eq!(mock.records("payments", 0).expect("records").len(), 10);
    assert!(s.retries >= 3, "three refusals were retried: {}", s.retries);
    assert_eq!(
        s.rejected,
        Some((Some(KafkaCode::InvalidRecord), Persistence::NotPersisted))
    );
    assert_eq!(s.outage_errors, vec![ErrorKind::Timeout; 3]);
    // Nothing was written during the outage: the next record is the partition's first.
    assert_eq!(s.after_outage, Some(0));
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_batch_listener() {
    let mock = batch_listener::mock().await.expect("mock");
    let s = batch_listener::run(&mock.bootstrap()).await.expect("runs");
    mock.shutdown().await;
    let (bad, good): (Vec<i64>, Vec<i64>) =
        (0..batch_listener::INVOICES).partition(|i| batch_listener::total(*i) < 0);
    assert_eq!(s.booked.keys().copied().collect::<Vec<_>>(), good);
    assert!(s.booked.values().all(|n| *n == 1), "each booked once");
    assert_eq!(s.dead_letters, bad);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_exactly_once_pipeline() {
    use exactly_once_pipeline::{ORDERS, POISON};
    let mock = exactly_once_pipeline::mock().await.expect("mock");
    let s = exactly_once_pipeline::run(&mock.bootstrap())
        .await
        .expect("runs");
    mock.shutdown().await;
    let expected: Vec<u64> = (0..ORDERS).filter(|i| *i != POISON).collect();
    assert_eq!(s.outputs.keys().copied().collect::<Vec<_>>(), expected);
    assert!(
        s.outputs.values().all(|n| *n == 1),
        "each output visible once"
    );
    assert_eq!(s.dead_letters, vec![POISON]);
    // Each order ending in 7 failed once; the poison order three times (two retries).
    let transient = (0..ORDERS).filter(|i| i % 10 == 7).count() as u64;
    assert_eq!(s.failures, transient + 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_dead_letters_and_replay() {
    let mock = dead_letters_and_replay::mock().await.expect("mock");
    let s = dead_letters_and_replay::run(&mock.bootstrap())
        .await
        .expect("runs");
    mock.shutdown().await;
    let n = dead_letters_and_replay::SHIPMENTS;
    let unknown: Vec<u64> = (0..n).filter(|i| i % 12 == 5).collect();
    let mut dead: Vec<u64> = s.dead_letters.iter().map(|d| d.0).collect();
    dead.sort_unstable();
    assert_eq!(dead, unknown);
    for (_, topic, partition, offset) in &s.dead_letters {
        assert_eq!(topic, "shipments");
        assert!(*partition >= 0 && *offset >= 0);
    }
    assert_eq!(s.replayed, (unknown.len(), 0), "replayed once, never twice");
    assert_eq!(
        s.processed.keys().copied().collect::<Vec<_>>(),
        (0..n).collect::<Vec<_>>()
    );
    assert!(s.processed.values().all(|c| *c == 1), "each processed once");
}

/// Typed records and JSON: every good order reaches the handler typed, once; the two bad
/// payloads are dead letters with their raw bytes, the second naming both its key's and its
/// value's failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_typed_records() {
    let mock = MockCluster::builder()
        .topic(typed_records::TOPIC, 1)
        .start()
        .await
        .expect("mock");
    let s = typed_records::run(&mock.bootstrap())
        .await
        .expect("example runs");
    mock.shutdown().await;
    let ids: Vec<u64> = s.billed.iter().map(|(_, id, _)| *id).collect();
    assert_eq!(ids, (1..=typed_records::ORDERS).collect::<Vec<_>>());
    for (key, id, cents) in &s.billed {
        assert_eq!(
            key.as_deref(),
            Some(format!("customer-{}", id % 2).as_str())
        );
        assert_eq!(*cents, id * 1250);
    }
    assert_eq!(s.dead_letters.len(), 2, "{:?}", s.dead_letters);
    let bad_value = &s.dead_letters[0];
    assert_eq!(bad_value.value.as_deref(), Some(&b"{\"id\": oops"[..]));
    assert_eq!(bad_value.messages.len(), 1, "{:?}", bad_value.messages);
    assert!(bad_value.messages[0].1.contains("value"));
    let both = &s.dead_letters[1];
    assert_eq!(both.key.as_deref(), Some(&[0xffu8, 0xfe][..]));
    assert_eq!(both.value.as_deref(), Some(&b"<order/>"[..]));
    let names: Vec<&str> = both.messages.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"kafka_dlt-key-exception-message"),
        "{names:?}"
    );
    assert!(names.contains(&"kafka_dlt-exception-message"), "{names:?}");
}

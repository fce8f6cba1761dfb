//! The README's demo (`cargo run --example demo --features mock`) runs here too, on its own mock
//! cluster, and its summary is checked against what the orders were built to do.

#[path = "../examples/demo.rs"]
#[allow(dead_code)]
mod demo;

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

//! rekafka's cluster layer against the mock cluster's faults: what a client's retry paths see.
//!
//! ```text
//! cargo test --features mock --test mock mock_client::
//! ```
#![cfg(feature = "mock")]

use std::time::Duration;

use rekafka::KafkaCode;
use rekafka::cluster::{Cluster, ClusterConfig, CoordinatorType};
use rekafka::connection::ConnectionConfig;
use rekafka::mock::MockCluster;
use rekafka::protocol::unstable::ApiKey;

fn config(mock: &MockCluster) -> ClusterConfig {
    ClusterConfig::new(mock.broker_addrs())
        .with_connection(
            ConnectionConfig::default()
                .with_client_id("mock-client-tests")
                .with_connect_timeout(Duration::from_secs(5))
                .with_request_timeout(Duration::from_secs(10)),
        )
        .with_retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
}

#[tokio::test]
async fn cluster_follows_a_moved_leader_after_refresh() {
    let mock = MockCluster::builder()
        .brokers(3)
        .topic("moving", 3)
        .start()
        .await
        .unwrap();
    let cluster = Cluster::connect(config(&mock)).await.unwrap();
    assert_eq!(cluster.metadata().brokers.len(), 3);
    let (leader, epoch) = cluster.leader_for("moving", 1).await.unwrap();
    assert_eq!(leader, mock.partition_leader("moving", 1).unwrap());
    assert_eq!(epoch, 0);
    let target = mock
        .broker_ids()
        .into_iter()
        .find(|&b| b != leader)
        .unwrap();
    mock.set_partition_leader("moving", 1, target).unwrap();
    cluster.refresh_topics(&["moving"]).await.unwrap();
    assert_eq!(cluster.leader_for("moving", 1).await.unwrap(), (target, 1));
    cluster.close().await;
}

#[tokio::test]
async fn cluster_retries_find_coordinator_through_injected_errors() {
    let mock = MockCluster::builder().brokers(2).start().await.unwrap();
    let cluster = Cluster::connect(config(&mock)).await.unwrap();
    mock.push_request_errors(
        ApiKey::FindCoordinator,
        &[
            KafkaCode::CoordinatorNotAvailable,
            KafkaCode::CoordinatorLoadInProgress,
        ],
    );
    let id = cluster
        .coordinator(CoordinatorType::Group, "retry-group")
        .await
        .unwrap();
    assert_eq!(id, mock.coordinator(CoordinatorType::Group, "retry-group"));
    let finds = mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key == ApiKey::FindCoordinator)
        .count();
    assert_eq!(finds, 3, "two failures, then the answer");

    // The coordinator moves; after invalidation the cluster finds the new one.
    let other = mock.broker_ids().into_iter().find(|&b| b != id).unwrap();
    mock.set_coordinator(CoordinatorType::Group, "retry-group", other)
        .unwrap();
    cluster.invalidate_coordinator(CoordinatorType::Group, "retry-group");
    assert_eq!(
        cluster
            .coordinator(CoordinatorType::Group, "retry-group")
            .await
            .unwrap(),
        other
    );
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_survives_a_broker_going_down_and_up() {
    let mock = MockCluster::builder()
        .brokers(2)
        .topic("t", 2)
        .start()
        .await
        .unwrap();
    let cluster = Cluster::connect(config(&mock)).await.unwrap();
    mock.broker_down(1).await.unwrap();
    // Metadata still comes from the broker that is up.
    cluster.refresh().await.unwrap();
    mock.broker_up(1).await.unwrap();
    let conn = cluster.connection_for_broker(1).await.unwrap();
    conn.send(rekafka::protocol::unstable::messages::MetadataRequest::default())
        .await
        .unwrap();
    cluster.close().await;
}

/// A broker serves a connection's requests one at a time (the mock too) and holds a Fetch until
/// data comes or `fetch.max.wait.ms` passes. By default (`rekafka.fetch.connection=own`) the
/// client's consumers fetch on a connection of their own, so a Fetch parked at the leader does
/// not hold up the same client's Produce to that broker: here the Fetch is parked for 60 s and
/// the Produce must be acknowledged well before (with `shared` it would wait the full 60 s
/// behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_fetch_does_not_hold_up_the_same_clients_produce() {
    use rekafka::Client;
    use rekafka::consumer::{StartOffset, TopicPartition};
    use rekafka::producer::Record;

    let mock = MockCluster::builder()
        .topic("idle", 1)
        .topic("busy", 1)
        .start()
        .await
        .unwrap();
    let client = Client::builder()
        .bootstrap_servers(mock.bootstrap().split(','))
        .property("fetch.max.wait.ms", "60000")
        .connect()
        .await
        .unwrap();
    let consumer = client.consumer_with(|_| {}).unwrap();
    consumer
        .assign([(TopicPartition::new("idle", 0), StartOffset::Beginning)])
        .unwrap();
    let polling = tokio::spawn(async move {
        let recs = consumer.poll(Duration::from_secs(120)).await;
        (consumer, recs.map(|r| r.len()))
    });
    // Until the consumer's Fetch (for the empty partition) is at the broker.
    let fetch_sent = |m: &MockCluster| m.requests().iter().any(|r| r.api_key == ApiKey::Fetch);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !fetch_sent(&mock) {
        assert!(std::time::Instant::now() < deadline, "no Fetch sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Making the producer (InitProducerId) and the Produce both go to that broker.
    let delivered = tokio::time::timeout(Duration::from_secs(20), async {
        let producer = client
            .producer_with(|_| {})
            .await
            .map_err(|e| e.to_string())?;
        producer
            .send(Record::new("busy").with_value("v"))
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .expect("InitProducerId or the Produce waited behind the parked Fetch")
    .unwrap();
    assert_eq!(delivered.offset, 0);
    assert_eq!(mock.records("busy", 0).unwrap().len(), 1);
    // The Fetch is still parked: nothing came to "idle".
    assert!(!polling.is_finished());
    polling.abort();
    client.close().await;
}

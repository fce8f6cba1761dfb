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

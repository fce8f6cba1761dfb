//! `group.protocol=consumer` against a cluster that does not serve KIP-848 (rekafka's mock
//! cluster built with `consumer_group_protocol(false)` answers ApiVersions without
//! ConsumerGroupHeartbeat, like a Kafka 3.x broker): the
//! consumer fails with a typed error naming the way out instead of retrying for ever, and the
//! classic protocol works on the same cluster.

use std::time::{Duration, Instant};

use rekafka::ErrorKind;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, GroupProtocol, OffsetReset};
use rekafka::mock::MockCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_protocol_on_a_broker_without_it_fails_with_unsupported_version() {
    let mock = MockCluster::builder()
        .topic("t", 2)
        .consumer_group_protocol(false)
        .start()
        .await
        .unwrap();
    let cluster = Cluster::connect(ClusterConfig::new(mock.broker_addrs()))
        .await
        .expect("connect");
    let config = ConsumerConfig::new()
        .with_group_id("g")
        .with_auto_commit(AutoCommit::Disabled)
        .with_auto_offset_reset(OffsetReset::Earliest);
    let c = Consumer::new(
        cluster.clone(),
        config.clone().with_group_protocol(GroupProtocol::Consumer),
    )
    .unwrap();
    c.subscribe(["t"]).unwrap();
    let err = c
        .poll(Duration::from_secs(2))
        .await
        .expect_err("no KIP-848 on this broker");
    assert!(
        matches!(err.kind(), ErrorKind::UnsupportedVersion { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("group.protocol=classic"), "{err}");
    assert!(c.assignment().is_empty());
    c.close().await.unwrap();
    // The classic protocol on the same cluster joins and gets both partitions.
    let classic = Consumer::new(cluster.clone(), config).unwrap();
    classic.subscribe(["t"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while classic.assignment().len() < 2 {
        assert!(Instant::now() < deadline, "the classic member did not join");
        classic.poll(Duration::from_millis(200)).await.unwrap();
    }
    classic.close().await.unwrap();
    cluster.close().await;
}

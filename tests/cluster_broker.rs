//! The cluster layer against a real cluster (Apache Kafka from `scripts/kafka.sh`: three nodes;
//! auto-created topics get `num.partitions` = 3) and, in the second pass, the mock cluster.
//!
//! Needs `REKAFKA_BOOTSTRAP`; the tests fail (they do not skip) without it.

mod common;
use common::{bootstrap, broker_count, default_partitions, eventually, unique};

use std::time::Duration;

use rekafka::cluster::{Cluster, ClusterConfig, CoordinatorType};
use rekafka::connection::ConnectionConfig;

fn config(bootstrap: Vec<String>) -> ClusterConfig {
    ClusterConfig::new(bootstrap).with_connection(
        ConnectionConfig::default()
            .with_client_id("rekafka-cluster-tests")
            .with_connect_timeout(Duration::from_secs(5))
            .with_request_timeout(Duration::from_secs(10)),
    )
}

async fn connect(config: ClusterConfig) -> Cluster {
    match Cluster::connect(config).await {
        Ok(c) => c,
        Err(e) => panic!("bootstrap failed: {e}"),
    }
}

#[tokio::test]
async fn bootstrap_skips_dead_address() {
    let cluster = connect(config(vec!["127.0.0.1:1".into(), bootstrap()])).await;
    let meta = cluster.metadata();
    let ids: Vec<i32> = meta.brokers.keys().copied().collect();
    assert_eq!(ids.len(), broker_count(), "{ids:?}");
    assert!(meta.controller_id.is_some_and(|c| ids.contains(&c)), "{meta:?}");
    assert!(meta.cluster_id.is_some());
    for id in &ids {
        let conn = cluster.connection_for_broker(*id).await;
        assert_eq!(conn.map(|c| c.broker_id()).ok(), Some(*id));
    }
    let any = cluster.any_connection().await.map(|b| b.broker_id());
    assert!(any.as_ref().is_ok_and(|id| ids.contains(id)), "{any:?}");
    cluster.close().await;
}

#[tokio::test]
async fn metadata_for_auto_created_topic() {
    let cluster = connect(config(vec![bootstrap()])).await;
    let topic = unique("cluster-auto");
    // The first Metadata request asks the broker to create the topic; Kafka answers
    // UNKNOWN_TOPIC_OR_PARTITION (or LEADER_NOT_AVAILABLE) until it exists everywhere.
    let parts = eventually("the auto-created topic", Duration::from_secs(30), || async {
        let _ = cluster.refresh_topics(&[&topic]).await;
        let parts = cluster.partitions(&topic).await.ok()?;
        parts.iter().all(|p| p.leader >= 0).then_some(parts)
    })
    .await;
    let brokers: Vec<i32> = cluster.metadata().brokers.keys().copied().collect();
    assert_eq!(parts.len(), default_partitions());
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p.partition, i as i32);
        assert!(brokers.contains(&p.leader), "{p:?}");
    }
    for p in 0..default_partitions() as i32 {
        let (leader, _epoch) = match cluster.leader_for(&topic, p).await {
            Ok(l) => l,
            Err(e) => panic!("leader_for: {e}"),
        };
        assert_eq!(leader, parts[p as usize].leader);
    }
    let t = cluster.metadata().topics.get(&topic).cloned();
    assert!(t.is_some_and(|t| t.error.is_none() && !t.is_internal));
    // A partition the topic does not have.
    assert!(cluster.leader_for(&topic, 99).await.is_err());
    cluster.close().await;
}

#[tokio::test]
async fn concurrent_refreshes_are_coalesced() {
    let cluster = connect(config(vec![bootstrap()])).await;
    let before = cluster.metadata_requests();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let c = cluster.clone();
            tokio::spawn(async move { c.refresh().await })
        })
        .collect();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("refresh: {e}"),
            Err(e) => panic!("task: {e}"),
        }
    }
    let sent = cluster.metadata_requests() - before;
    assert!(
        (1..20).contains(&sent),
        "{sent} Metadata requests for 20 callers"
    );
    cluster.close().await;
}

#[tokio::test]
async fn group_and_transaction_coordinators() {
    let cluster = connect(config(vec![bootstrap()])).await;
    let group = unique("cluster-group");
    let txn = unique("cluster-txn");
    let brokers: Vec<i32> = cluster.metadata().brokers.keys().copied().collect();
    let mut group_coordinator = -1;
    for (kind, key) in [
        (CoordinatorType::Group, &group),
        (CoordinatorType::Transaction, &txn),
    ] {
        match cluster.coordinator(kind, key).await {
            Ok(id) => {
                assert!(brokers.contains(&id), "{kind:?}: {id} in {brokers:?}");
                if kind == CoordinatorType::Group {
                    group_coordinator = id;
                }
            }
            Err(e) => panic!("{kind:?} coordinator: {e}"),
        }
    }
    // Cached: no request needed, and still answered after invalidation (the same broker: the
    // coordinator of a group is the leader of its offsets partition, which has not moved).
    let requests = cluster.metadata_requests();
    assert_eq!(
        cluster
            .coordinator(CoordinatorType::Group, &group)
            .await
            .ok(),
        Some(group_coordinator)
    );
    assert_eq!(cluster.metadata_requests(), requests);
    cluster.invalidate_coordinator(CoordinatorType::Group, &group);
    assert_eq!(
        cluster
            .coordinator(CoordinatorType::Group, &group)
            .await
            .ok(),
        Some(group_coordinator)
    );
    cluster.close().await;
}

#[tokio::test]
async fn periodic_refresh_stops_on_close() {
    let cluster =
        connect(config(vec![bootstrap()]).with_metadata_max_age(Duration::from_millis(100))).await;
    let start = cluster.metadata_requests();
    tokio::time::sleep(Duration::from_millis(700)).await;
    let periodic = cluster.metadata_requests() - start;
    assert!(
        periodic >= 2,
        "only {periodic} periodic refreshes in 700 ms"
    );
    assert!(cluster.is_refresher_running());
    cluster.close().await;
    for _ in 0..100 {
        if !cluster.is_refresher_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!cluster.is_refresher_running());
    let after_close = cluster.metadata_requests();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(cluster.metadata_requests(), after_close);
    assert!(cluster.refresh().await.is_err());
}

#[tokio::test]
async fn refresh_for_another_topic_set_merges_into_the_cache() {
    let cluster = connect(config(vec![bootstrap()])).await;
    let (a, b) = (unique("cluster-merge-a"), unique("cluster-merge-b"));
    for t in [&a, &b] {
        // Auto-created by the first request; Kafka lists it once it exists everywhere.
        eventually(&format!("{t} in the cache"), Duration::from_secs(30), || async {
            if let Err(e) = cluster.refresh_topics(&[t]).await {
                panic!("refresh {t}: {e}");
            }
            cluster.metadata().topics.contains_key(t.as_str()).then_some(())
        })
        .await;
    }
    // Asking for `b` alone kept `a` (a partial refresh merges; only a full refresh may drop
    // topics, and only those the broker no longer lists).
    let meta = cluster.metadata();
    assert!(meta.topics.contains_key(&a), "{a} dropped from the cache");
    assert!(meta.topics.contains_key(&b));
    let requests = cluster.metadata_requests();
    assert_eq!(
        cluster.partitions(&a).await.map(|p| p.len()).ok(),
        Some(default_partitions())
    );
    assert_eq!(
        cluster.metadata_requests(),
        requests,
        "served from the cache"
    );
    if let Err(e) = cluster.refresh().await {
        panic!("full refresh: {e}");
    }
    let meta = cluster.metadata();
    assert!(meta.topics.contains_key(&a) && meta.topics.contains_key(&b));
    cluster.close().await;
}

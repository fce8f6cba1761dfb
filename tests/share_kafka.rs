//! Share groups (KIP-932) against the three-node Apache Kafka 4.x cluster: several share
//! consumers splitting a topic (every record accepted exactly once), release and reject,
//! a closing member's records going to another, and the delivery count limit.
//!
//! Named `*_kafka.rs`: the embedded mock cluster does not serve share groups.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bootstrap, unique};
use kafka_protocol::messages::IncrementalAlterConfigsRequest;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::protocol::StrBytes;
use rekafka::admin::{Admin, NewTopic};
use rekafka::cluster::Cluster;
use rekafka::producer::{ProducerConfig, Record};
use rekafka::share::{
    AcknowledgeType, AcknowledgementMode, ShareConsumer, ShareConsumerConfig, ShareRecord,
};
use rekafka::{Client, ErrorKind, KafkaCode};

async fn client() -> Client {
    Client::builder()
        .bootstrap_servers([bootstrap()])
        .connect()
        .await
        .expect("connect")
}

async fn create_topic(cluster: &Cluster, name: &str, partitions: i32) {
    let admin = Admin::new(cluster.clone());
    for r in admin
        .create_topics(&[NewTopic::new(name, partitions)])
        .await
        .expect("create_topics")
    {
        r.expect("topic created");
    }
    // Wait (bounded) until every partition has a leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = cluster.refresh_topics(&[name]).await;
        let ok = (0..partitions).all(|p| cluster.known_leader(name, p).is_some());
        if ok || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sets share group configs with IncrementalAlterConfigs on resource type GROUP (32).
async fn set_group_config(cluster: &Cluster, group: &str, configs: &[(&str, &str)]) {
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(32)
            .with_resource_name(StrBytes::from_string(group.to_owned()))
            .with_configs(
                configs
                    .iter()
                    .map(|(k, v)| {
                        AlterableConfig::default()
                            .with_name(StrBytes::from_string(k.to_string()))
                            .with_config_operation(0)
                            .with_value(Some(StrBytes::from_string(v.to_string())))
                    })
                    .collect(),
            ),
    ]);
    let conn = cluster.any_connection().await.expect("a broker");
    let resp = conn.send(req).await.expect("IncrementalAlterConfigs");
    for r in resp.responses {
        assert_eq!(
            r.error_code, 0,
            "group config {configs:?}: {:?}",
            r.error_message
        );
    }
}

/// A share group reading from the earliest offset.
async fn new_group(cluster: &Cluster, extra: &[(&str, &str)]) -> String {
    let group = unique("share-g");
    let mut configs = vec![("share.auto.offset.reset", "earliest")];
    configs.extend_from_slice(extra);
    set_group_config(cluster, &group, &configs).await;
    group
}

/// Produces `n` records round-robin over `partitions` (values `v-i`).
async fn produce(client: &Client, topic: &str, partitions: i32, n: usize) {
    let producer = client
        .producer(ProducerConfig::default())
        .await
        .expect("producer");
    let mut futures = Vec::with_capacity(n);
    for i in 0..n {
        let r = Record::new(topic)
            .with_partition((i % partitions as usize) as i32)
            .with_key(format!("k-{i}"))
            .with_value(format!("v-{i}"));
        futures.push(producer.send(r).await.expect("enqueue"));
    }
    for f in futures {
        f.await.expect("delivered");
    }
    producer.close().await;
}

fn value(r: &ShareRecord) -> String {
    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
}

fn consumer(client: &Client, group: &str, mode: AcknowledgementMode) -> ShareConsumer {
    client
        .share_consumer(
            ShareConsumerConfig::new(group)
                .with_acknowledgement_mode(mode)
                .with_fetch_max_wait(Duration::from_millis(200)),
        )
        .expect("share consumer")
}

/// Polls until `pred` holds for what was received, or the time runs out.
async fn poll_until(
    c: &mut ShareConsumer,
    within: Duration,
    mut on_batch: impl FnMut(&mut ShareConsumer, Vec<ShareRecord>) -> bool,
) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let batch = c.poll(Duration::from_millis(500)).await.expect("poll");
        if on_batch(c, batch) {
            return;
        }
    }
}

/// Nothing is left for the group: a fresh member gets no record within a few fetches.
async fn assert_nothing_left(client: &Client, group: &str, topic: &str) {
    let mut c = consumer(client, group, AcknowledgementMode::Explicit);
    c.subscribe([topic]);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(500)).await.expect("poll") {
            got.push((r.partition, r.offset, value(&r), r.delivery_count));
            c.acknowledge(&r, AcknowledgeType::Release).expect("release");
        }
        // Joined with an assignment and fetched at least once: keep going a little longer.
    }
    c.close().await.expect("close");
    assert!(got.is_empty(), "records left for the group: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_accept_every_record_exactly_once() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-split");
    create_topic(&cluster, &topic, 3).await;
    let group = new_group(&cluster, &[]).await;
    const N: usize = 3000;
    produce(&client, &topic, 3, N).await;

    let seen: Arc<Mutex<Vec<(i32, i64, String, u16, usize)>>> = Arc::default();
    let mut tasks = Vec::new();
    for member in 0..3 {
        let mut c = consumer(&client, &group, AcknowledgementMode::Implicit);
        c.subscribe([&topic]);
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let batch = c.poll(Duration::from_millis(300)).await.expect("poll");
                let mut s = seen.lock().unwrap();
                for r in &batch {
                    s.push((r.partition, r.offset, value(r), r.delivery_count, member));
                }
                if s.len() >= N && batch.is_empty() {
                    break;
                }
            }
            let results = c.commit_sync().await.expect("commit");
            for (tp, r) in &results {
                assert!(r.is_ok(), "{tp}: {r:?}");
            }
            let outcomes = c.take_acknowledgement_outcomes();
            let failed: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
            assert!(failed.is_empty(), "failed acknowledgements: {failed:?}");
            c.close().await.expect("close");
        }));
    }
    for t in tasks {
        t.await.expect("member");
    }
    let seen = seen.lock().unwrap().clone();
    let mut values: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, v, dc, _) in &seen {
        assert_eq!(*dc, 1, "first delivery");
        *values.entry(v.clone()).or_default() += 1;
    }
    let dups: Vec<_> = values.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "records delivered twice: {dups:?}");
    let expected: BTreeSet<String> = (0..N).map(|i| format!("v-{i}")).collect();
    let got: BTreeSet<String> = values.keys().cloned().collect();
    assert_eq!(got, expected, "every record once");
    let members: BTreeSet<usize> = seen.iter().map(|s| s.4).collect();
    assert!(members.len() >= 2, "the records were shared: {members:?}");
    assert_nothing_left(&client, &group, &topic).await;
}

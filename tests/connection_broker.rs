//! The connection layer against a real cluster (Apache Kafka from `scripts/kafka.sh`; the mock in
//! the second pass).
//!
//! Needs `REKAFKA_BOOTSTRAP`; the tests fail (they do not skip) without it.
//!
//! `broker_killed_with_requests_in_flight` starts, kills (SIGKILL) and restarts a broker of its
//! own (`common::OwnBroker`: a one-node Kafka, or a mock in the mock pass), so it never disturbs
//! the shared cluster.

mod common;
use common::{bootstrap, unique};

use std::time::Duration;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, BrokerId, CreateTopicsRequest, FetchRequest, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rekafka::ErrorKind;
use rekafka::connection::{BrokerConnection, Connection, ConnectionConfig};
use tokio::time::Instant;

fn topic(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

fn meta(names: &[&str], auto_create: bool) -> MetadataRequest {
    MetadataRequest::default()
        .with_topics(Some(
            names
                .iter()
                .map(|n| MetadataRequestTopic::default().with_name(Some(topic(n))))
                .collect(),
        ))
        .with_allow_auto_topic_creation(auto_create)
}

fn names(resp: &MetadataResponse) -> Vec<String> {
    resp.topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
        .collect()
}

fn config() -> ConnectionConfig {
    ConnectionConfig::default()
        .with_client_id("rekafka-connection-tests")
        .with_connect_timeout(Duration::from_secs(5))
        .with_request_timeout(Duration::from_secs(10))
}

async fn create_topic(conn: &Connection, name: &str) {
    let req = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(topic(name))
                .with_num_partitions(1)
                .with_replication_factor(1),
        ])
        .with_timeout_ms(5000);
    let resp = conn.send(req).await.unwrap();
    assert_eq!(resp.topics.len(), 1);
    assert_eq!(resp.topics[0].error_code, 0, "{resp:?}");
}

/// A Fetch that the broker holds for `max_wait` (the topic is empty).
fn long_fetch(name: &str, max_wait: Duration) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(1024 * 1024)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(topic(name))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_current_leader_epoch(-1)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(1024 * 1024),
                ]),
        ])
}

#[tokio::test]
async fn connect_api_versions_and_metadata() {
    let conn = Connection::connect(&bootstrap(), -1, &config())
        .await
        .unwrap();
    for api in [ApiKey::Metadata, ApiKey::Produce, ApiKey::Fetch] {
        assert!(
            conn.versions().range(api).is_some(),
            "{api:?} not supported"
        );
    }
    let all = conn.send(MetadataRequest::default()).await.unwrap();
    assert!(!all.brokers.is_empty(), "{all:?}");
    let name = unique("conn-meta");
    let resp = conn.send(meta(&[&name], true)).await.unwrap();
    assert_eq!(names(&resp), vec![name]);
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_metadata_requests() {
    let conn = Connection::connect(&bootstrap(), -1, &config())
        .await
        .unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            // Topics that do not exist (and are not created): the broker names each in its
            // answer, so every caller can check it got its own response.
            let name = unique(&format!("conn-pipe-{i}"));
            let resp = conn.send(meta(&[&name], false)).await.unwrap();
            assert_eq!(names(&resp), vec![name]);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("200 pipelined Metadata requests in {:?}", start.elapsed());
    assert_eq!(conn.in_flight(), 0);
    assert!(!conn.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_killed_with_requests_in_flight() {
    // REKAFKA_BOOTSTRAP is not used, but the suite's contract is that it is set.
    let _ = bootstrap();
    let broker = common::OwnBroker::start().await;
    let request_timeout = Duration::from_secs(10);
    let bc = BrokerConnection::new(
        111,
        broker.addr(),
        config()
            .with_request_timeout(request_timeout)
            .with_reconnect_backoff(Duration::from_millis(50), Duration::from_millis(400)),
    );
    let conn = bc.connection().await.unwrap();
    let name = unique("conn-kill");
    create_topic(&conn, &name).await;

    // Kafka answers fetches of a topic it is still creating at once, with an error: wait until
    // a short fetch comes back clean, so that the long ones below are held.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = bc
            .send(long_fetch(&name, Duration::from_millis(10)))
            .await
            .unwrap();
        let code = resp
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .map(|p| p.error_code);
        if code == Some(0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new topic never became fetchable: {code:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Fetches the broker holds (empty topic, long max wait), pipelined on one connection.
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let bc = bc.clone();
        let req = long_fetch(&name, Duration::from_secs(8));
        tasks.push(tokio::spawn(async move { bc.send(req).await }));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while conn.in_flight() < 10 {
        assert!(Instant::now() < deadline, "fetches not in flight");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        conn.in_flight(),
        10,
        "the broker answered a held fetch early"
    );

    let killed = Instant::now();
    broker.kill().await;
    for t in tasks {
        let result = tokio::time::timeout(request_timeout, t)
            .await
            .expect("an in-flight request hung")
            .unwrap();
        let e = result.unwrap_err();
        assert!(e.is_retriable(), "{e}");
        assert_eq!(e.kind(), &ErrorKind::Disconnected, "{e}");
        assert_eq!(e.context().broker, Some(111));
    }
    let elapsed = killed.elapsed();
    eprintln!("in-flight requests failed {elapsed:?} after the kill");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(conn.is_closed());

    // While the broker is down requests fail (retriable), they do not hang.
    let e = tokio::time::timeout(Duration::from_secs(5), bc.send(meta(&[&name], false)))
        .await
        .expect("request while down hung")
        .unwrap_err();
    assert!(e.is_retriable(), "{e}");

    // The broker comes back (with its data: the topic is still there); the client reconnects
    // by itself.
    broker.restart().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let resp = loop {
        match bc.send(meta(&[&name], true)).await {
            Ok(resp) => break resp,
            Err(e) => {
                assert!(e.is_retriable(), "{e}");
                assert!(Instant::now() < deadline, "no reconnect: {e}");
            }
        }
    };
    assert_eq!(names(&resp), vec![name.clone()]);
    let again = bc.connection().await.unwrap();
    assert!(!again.is_closed());
    let resp = bc.send(long_fetch(&name, Duration::from_millis(10))).await;
    assert!(resp.is_ok(), "{resp:?}");
    bc.close().await;
}

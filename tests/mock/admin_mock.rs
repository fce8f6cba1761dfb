//! The admin calls Tansu lacks, against rekafka's mock cluster (`rekafka::mock`): create
//! partitions, delete records, offsets by timestamp and max timestamp. Each test checks the real
//! effect (the new partitions take records, the log start moves, the lookup lands on the right
//! record), through the admin client, the producer and the mock's own view of its logs.
//!
//! ```text
//! cargo test --features mock --test mock admin_mock::
//! ```
#![cfg(feature = "mock")]

use std::time::Duration;

use tokio::time::Instant;

use rekafka::admin::{NewPartitions, NewTopic, OffsetSpec, TopicPartition};
use rekafka::consumer::{AutoCommit, ConsumerConfig, StartOffset};
use rekafka::mock::MockCluster;
use rekafka::producer::{Producer, ProducerConfig, Record, RecordMetadata};
use rekafka::protocol::unstable::ApiKey;
use rekafka::{Client, KafkaCode};

async fn mock(brokers: usize) -> MockCluster {
    MockCluster::builder()
        .brokers(brokers)
        .auto_create_topics(false)
        .start()
        .await
        .unwrap_or_else(|e| panic!("mock: {e}"))
}

async fn client(mock: &MockCluster) -> Client {
    Client::builder()
        .bootstrap_servers(mock.bootstrap().split(','))
        .request_timeout(Duration::from_secs(5))
        // Retriable per-item errors (an unknown topic) give up quickly.
        .api_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("client: {e}"))
}

async fn create(client: &Client, topic: &str, partitions: i32) {
    let created = client
        .admin()
        .create_topics(&[NewTopic::new(topic, partitions)])
        .await
        .unwrap_or_else(|e| panic!("create_topics: {e}"));
    for r in created {
        r.unwrap_or_else(|e| panic!("create {topic}: {e}"));
    }
}

async fn producer(client: &Client) -> Producer {
    client
        .producer(ProducerConfig::default().with_linger(Duration::ZERO))
        .await
        .unwrap_or_else(|e| panic!("producer: {e}"))
}

/// Sends one record (its own batch: the producer waits for each) and returns where it went.
async fn send(p: &Producer, topic: &str, partition: i32, ts: i64, value: &str) -> RecordMetadata {
    p.send_and_wait(
        Record::new(topic)
            .with_partition(partition)
            .with_timestamp(ts)
            .with_value(value.to_owned()),
    )
    .await
    .unwrap_or_else(|e| panic!("send {value} to {topic}-{partition}: {e:?}"))
}

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_partitions_grows_the_topic_and_new_partitions_take_records() {
    let mock = mock(3).await;
    let client = client(&mock).await;
    let admin = client.admin();
    create(&client, "grow", 2).await;
    create(&client, "other", 3).await;

    // One result per input, in input order: a growth, a shrink (refused), an unknown topic.
    let results = admin
        .create_partitions(&[
            NewPartitions::increase_to("grow", 5),
            NewPartitions::increase_to("other", 2),
            NewPartitions::increase_to("missing", 4),
        ])
        .await
        .unwrap_or_else(|e| panic!("create_partitions: {e}"));
    assert_eq!(results.len(), 3);
    results[0].as_ref().unwrap_or_else(|e| panic!("grow: {e}"));
    let e = results[1].as_ref().expect_err("shrinking must fail");
    assert_eq!(e.kafka_code(), Some(KafkaCode::InvalidPartitions), "{e}");
    let e = results[2].as_ref().expect_err("unknown topic");
    assert_eq!(
        e.kafka_code(),
        Some(KafkaCode::UnknownTopicOrPartition),
        "{e}"
    );

    // The broker and the metadata both show five partitions, each with a leader.
    let described = admin
        .describe_topics(&["grow", "other"])
        .await
        .unwrap_or_else(|e| panic!("describe_topics: {e}"));
    let grow = described[0]
        .as_ref()
        .unwrap_or_else(|e| panic!("describe grow: {e}"));
    assert_eq!(grow.partitions.len(), 5);
    let indexes: Vec<i32> = grow.partitions.iter().map(|p| p.partition).collect();
    assert_eq!(indexes, [0, 1, 2, 3, 4]);
    let other = described[1]
        .as_ref()
        .unwrap_or_else(|e| panic!("describe other: {e}"));
    assert_eq!(
        other.partitions.len(),
        3,
        "the refused shrink changed nothing"
    );
    for p in 2..5 {
        let leader = mock
            .partition_leader("grow", p)
            .unwrap_or_else(|e| panic!("leader of grow-{p}: {e}"));
        assert!(mock.broker_ids().contains(&leader));
    }

    // The new partitions accept records, which land where the producer was told.
    client
        .cluster()
        .refresh_topics(&["grow"])
        .await
        .unwrap_or_else(|e| panic!("refresh: {e}"));
    let p = producer(&client).await;
    for part in 0..5 {
        let md = send(
            &p,
            "grow",
            part,
            1_000 + i64::from(part),
            &format!("r{part}"),
        )
        .await;
        assert_eq!((md.partition, md.offset), (part, 0));
    }
    p.close().await;
    for part in 0..5 {
        let stored = mock
            .records("grow", part)
            .unwrap_or_else(|e| panic!("records grow-{part}: {e}"));
        assert_eq!(stored.len(), 1, "partition {part}");
        assert_eq!(
            stored[0].value.as_deref(),
            Some(format!("r{part}").as_bytes())
        );
    }
    client.close().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_moves_the_log_start_offset() {
    let mock = mock(2).await;
    let client = client(&mock).await;
    let admin = client.admin();
    create(&client, "del", 2).await;
    let p = producer(&client).await;
    for i in 0..10 {
        send(&p, "del", 0, 1_000 + i, &format!("a{i}")).await;
    }
    for i in 0..3 {
        send(&p, "del", 1, 1_000 + i, &format!("b{i}")).await;
    }
    p.close().await;

    let results = admin
        .delete_records(&[(tp("del", 0), 4), (tp("del", 1), -1), (tp("del", 7), 1)])
        .await
        .unwrap_or_else(|e| panic!("delete_records: {e}"));
    assert_eq!(results.len(), 3);
    let low = results[0].as_ref().unwrap_or_else(|e| panic!("del-0: {e}"));
    assert_eq!(*low, 4, "the new log start offset of del-0");
    let low = results[1].as_ref().unwrap_or_else(|e| panic!("del-1: {e}"));
    assert_eq!(*low, 3, "-1 deletes up to the high watermark");
    let e = results[2].as_ref().expect_err("no such partition");
    assert_eq!(
        e.kafka_code(),
        Some(KafkaCode::UnknownTopicOrPartition),
        "{e}"
    );

    // ListOffsets earliest now answers the new log start; latest is unchanged.
    let listed = admin
        .list_offsets(&[
            (tp("del", 0), OffsetSpec::Earliest),
            (tp("del", 0), OffsetSpec::Latest),
            (tp("del", 1), OffsetSpec::Earliest),
            (tp("del", 1), OffsetSpec::Latest),
        ])
        .await
        .unwrap_or_else(|e| panic!("list_offsets: {e}"));
    let offsets: Vec<Option<i64>> = listed
        .iter()
        .map(|r| r.as_ref().unwrap_or_else(|e| panic!("{e}")).offset)
        .collect();
    assert_eq!(offsets, [Some(4), Some(10), Some(3), Some(3)]);

    // A consumer reading from the beginning starts at the new log start.
    let consumer = client
        .consumer(ConsumerConfig::new().with_auto_commit(AutoCommit::Disabled))
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    consumer
        .assign([(
            rekafka::consumer::TopicPartition::new("del", 0),
            StartOffset::Beginning,
        )])
        .unwrap_or_else(|e| panic!("assign: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut read = Vec::new();
    while read.len() < 6 && Instant::now() < deadline {
        let recs = consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap_or_else(|e| panic!("poll: {e}"));
        assert!(recs.errors().is_empty(), "{:?}", recs.errors());
        read.extend(recs.iter().map(|r| {
            (
                r.offset,
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
            )
        }));
    }
    consumer
        .close()
        .await
        .unwrap_or_else(|e| panic!("close: {e}"));
    let want: Vec<(i64, String)> = (4..10).map(|i| (i, format!("a{i}"))).collect();
    assert_eq!(read, want);

    // Deleting beyond the high watermark is refused and moves nothing.
    let results = admin
        .delete_records(&[(tp("del", 0), 11)])
        .await
        .unwrap_or_else(|e| panic!("delete_records: {e}"));
    let e = results[0].as_ref().expect_err("beyond the high watermark");
    assert_eq!(e.kafka_code(), Some(KafkaCode::OffsetOutOfRange), "{e}");
    let listed = admin
        .list_offsets(&[(tp("del", 0), OffsetSpec::Earliest)])
        .await
        .unwrap_or_else(|e| panic!("list_offsets: {e}"));
    assert_eq!(
        listed[0].as_ref().unwrap_or_else(|e| panic!("{e}")).offset,
        Some(4)
    );
    client.close().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamp_lookups_find_the_first_offset_at_or_after_the_time() {
    let mock = mock(1).await;
    let client = client(&mock).await;
    let admin = client.admin();
    create(&client, "ts", 2).await;
    let p = producer(&client).await;
    // Partition 0: timestamps in order, one repeated.
    let in_order = [1_000, 2_000, 2_000, 3_000, 5_000];
    for (i, t) in in_order.iter().enumerate() {
        let md = send(&p, "ts", 0, *t, &format!("o{i}")).await;
        assert_eq!(md.offset, i as i64);
    }
    // Partition 1: out of order (create times are the producer's to choose).
    let out_of_order = [1_000, 4_000, 2_000, 3_000];
    for (i, t) in out_of_order.iter().enumerate() {
        send(&p, "ts", 1, *t, &format!("x{i}")).await;
    }
    p.close().await;

    let specs = [
        (tp("ts", 0), OffsetSpec::Timestamp(999)),
        (tp("ts", 0), OffsetSpec::Timestamp(1_000)),
        (tp("ts", 0), OffsetSpec::Timestamp(1_500)),
        (tp("ts", 0), OffsetSpec::Timestamp(2_000)),
        (tp("ts", 0), OffsetSpec::Timestamp(4_000)),
        (tp("ts", 0), OffsetSpec::Timestamp(5_001)),
        (tp("ts", 0), OffsetSpec::MaxTimestamp),
        (tp("ts", 1), OffsetSpec::Timestamp(2_500)),
        (tp("ts", 1), OffsetSpec::MaxTimestamp),
    ];
    let listed = admin
        .list_offsets(&specs)
        .await
        .unwrap_or_else(|e| panic!("list_offsets: {e}"));
    let got: Vec<(Option<i64>, Option<i64>)> = listed
        .iter()
        .zip(&specs)
        .map(|(r, (tp, spec))| {
            let l = r.as_ref().unwrap_or_else(|e| panic!("{tp} {spec:?}: {e}"));
            (l.offset, l.timestamp)
        })
        .collect();
    // The expected answers, computed from what was produced: the first offset whose timestamp
    // is >= T, with that record's timestamp.
    let first_at_or_after = |ts: &[i64], t: i64| {
        ts.iter()
            .position(|&x| x >= t)
            .map(|i| (Some(i as i64), Some(ts[i])))
            .unwrap_or((None, None))
    };
    let max_of = |ts: &[i64]| {
        let (i, t) = ts
            .iter()
            .enumerate()
            .max_by_key(|(i, t)| (**t, std::cmp::Reverse(*i)))
            .unwrap_or((0, &-1));
        (Some(i as i64), Some(*t))
    };
    let want = vec![
        first_at_or_after(&in_order, 999),
        first_at_or_after(&in_order, 1_000),
        first_at_or_after(&in_order, 1_500),
        first_at_or_after(&in_order, 2_000),
        first_at_or_after(&in_order, 4_000),
        first_at_or_after(&in_order, 5_001),
        max_of(&in_order),
        first_at_or_after(&out_of_order, 2_500),
        max_of(&out_of_order),
    ];
    assert_eq!(got, want);
    // Spelled out, so a wrong helper cannot hide a wrong answer.
    assert_eq!(got[3], (Some(1), Some(2_000)));
    assert_eq!(got[5], (None, None));
    assert_eq!(got[7], (Some(1), Some(4_000)));

    // An unknown partition is an error for that item only.
    let listed = admin
        .list_offsets(&[
            (tp("ts", 9), OffsetSpec::Timestamp(0)),
            (tp("ts", 0), OffsetSpec::Timestamp(0)),
        ])
        .await
        .unwrap_or_else(|e| panic!("list_offsets: {e}"));
    let e = listed[0].as_ref().expect_err("no such partition");
    assert_eq!(
        e.kafka_code(),
        Some(KafkaCode::UnknownTopicOrPartition),
        "{e}"
    );
    assert_eq!(
        listed[1].as_ref().unwrap_or_else(|e| panic!("{e}")).offset,
        Some(0)
    );
    client.close().await;
    mock.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Retry paths a single real broker cannot show (the mock's fault injection).

fn logged(mock: &MockCluster, api: ApiKey) -> Vec<i32> {
    mock.requests()
        .iter()
        .filter(|r| r.api_key == api)
        .map(|r| r.broker)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_partitions_retries_not_controller() {
    let mock = mock(3).await;
    let client = client(&mock).await;
    create(&client, "nc", 1).await;
    mock.clear_requests();
    mock.push_request_errors(ApiKey::CreatePartitions, &[KafkaCode::NotController]);
    let r = client
        .admin()
        .create_partitions(&[NewPartitions::increase_to("nc", 3)])
        .await
        .unwrap_or_else(|e| panic!("create_partitions: {e}"));
    r[0].as_ref().unwrap_or_else(|e| panic!("nc: {e}"));
    assert_eq!(
        logged(&mock, ApiKey::CreatePartitions).len(),
        2,
        "retried once"
    );
    let d = client
        .admin()
        .describe_topics(&["nc"])
        .await
        .unwrap_or_else(|e| panic!("describe: {e}"));
    assert_eq!(
        d[0].as_ref()
            .unwrap_or_else(|e| panic!("{e}"))
            .partitions
            .len(),
        3
    );
    client.close().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_records_follows_a_moved_leader() {
    let mock = mock(2).await;
    let client = client(&mock).await;
    create(&client, "mv", 1).await;
    let p = producer(&client).await;
    for i in 0..6 {
        send(&p, "mv", 0, 1_000 + i, &format!("m{i}")).await;
    }
    p.close().await;
    let admin = client.admin();
    let r = admin
        .delete_records(&[(tp("mv", 0), 2)])
        .await
        .unwrap_or_else(|e| panic!("delete_records: {e}"));
    assert_eq!(*r[0].as_ref().unwrap_or_else(|e| panic!("{e}")), 2);
    let old = mock
        .partition_leader("mv", 0)
        .unwrap_or_else(|e| panic!("{e}"));
    let new = *mock
        .broker_ids()
        .iter()
        .find(|&&b| b != old)
        .unwrap_or_else(|| panic!("a second broker"));
    // The leader moves (the old one answers NOT_LEADER_OR_FOLLOWER from now on), and the new
    // one, not quite ready, answers NOT_LEADER_OR_FOLLOWER once too: the admin looks the leader
    // up, asks the new one, and asks it again after the retriable error.
    mock.set_partition_leader("mv", 0, new)
        .unwrap_or_else(|e| panic!("{e}"));
    mock.push_broker_request_errors(
        new,
        ApiKey::DeleteRecords,
        &[KafkaCode::NotLeaderOrFollower],
    );
    mock.clear_requests();
    let r = admin
        .delete_records(&[(tp("mv", 0), 5)])
        .await
        .unwrap_or_else(|e| panic!("delete_records: {e}"));
    assert_eq!(*r[0].as_ref().unwrap_or_else(|e| panic!("{e}")), 5);
    assert_eq!(logged(&mock, ApiKey::DeleteRecords), [new, new]);
    let listed = admin
        .list_offsets(&[(tp("mv", 0), OffsetSpec::Earliest)])
        .await
        .unwrap_or_else(|e| panic!("list_offsets: {e}"));
    assert_eq!(
        listed[0].as_ref().unwrap_or_else(|e| panic!("{e}")).offset,
        Some(5)
    );
    client.close().await;
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_response_times_out_reconnects_and_the_lookup_succeeds() {
    // The broker applies a ListOffsets but its answer never comes: the request times out, the
    // connection is closed (request timeouts do not leave the broker a backlog), and the
    // admin's retry goes out on a new connection.
    let mock = mock(1).await;
    let client = Client::builder()
        .bootstrap_servers(mock.bootstrap().split(','))
        .request_timeout(Duration::from_millis(500))
        .api_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("client: {e}"));
    create(&client, "lost", 1).await;
    let p = producer(&client).await;
    for (i, t) in [1_000, 2_000, 3_000].iter().enumerate() {
        send(&p, "lost", 0, *t, &format!("l{i}")).await;
    }
    p.close().await;
    mock.clear_requests();
    mock.drop_responses(|r| r.api_key == ApiKey::ListOffsets, 1);
    let started = Instant::now();
    let listed = client
        .admin()
        .list_offsets(&[(tp("lost", 0), OffsetSpec::Timestamp(1_500))])
        .await
        .unwrap_or_else(|e| panic!("list_offsets: {e}"));
    let l = listed[0].as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((l.offset, l.timestamp), (Some(1), Some(2_000)));
    assert!(started.elapsed() >= Duration::from_millis(500), "it waited");
    let calls = mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key == ApiKey::ListOffsets)
        .count();
    assert_eq!(calls, 2, "one lost, one answered");
    client.close().await;
    mock.shutdown().await;
}

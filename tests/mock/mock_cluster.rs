//! The mock cluster: Kafka behaviour and every fault-injection feature, driven with raw
//! requests over rekafka's `Connection`.
//!
//! ```text
//! cargo test --features mock --test mock mock_cluster::
//! ```
#![cfg(feature = "mock")]

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rekafka::KafkaCode;
use rekafka::cluster::CoordinatorType;
use rekafka::connection::{Connection, ConnectionConfig};
use rekafka::mock::MockCluster;
use rekafka::protocol::record::{BatchBuilder, ControlType, RecordBatches};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}

fn config() -> ConnectionConfig {
    ConnectionConfig::default()
        .with_client_id("mock-tests")
        .with_connect_timeout(Duration::from_secs(5))
        .with_request_timeout(Duration::from_secs(10))
}

async fn connect(addr: &str) -> Connection {
    let first = addr.split(',').next().unwrap_or_default();
    Connection::connect(first, -1, &config()).await.unwrap()
}

async fn connect_broker(mock: &MockCluster, id: i32) -> Connection {
    let i = mock.broker_ids().iter().position(|&b| b == id).unwrap();
    connect(&mock.broker_addrs()[i]).await
}

/// A batch of `values`, optionally idempotent/transactional.
fn batch(values: &[&str], producer: Option<(i64, i16, i32)>, txn: bool) -> Bytes {
    let mut b = BatchBuilder::new().with_transactional(txn);
    if let Some((pid, epoch, seq)) = producer {
        b = b.with_producer(pid, epoch, seq);
    }
    for (i, v) in values.iter().enumerate() {
        b.append(1_000 + i as i64, Some(b"k"), Some(v.as_bytes()), &[])
            .unwrap();
    }
    b.build().unwrap()
}

fn produce(topic: &str, partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s(topic)))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ])
}

/// (error code, base offset) of a single-partition produce.
async fn send_produce(conn: &Connection, req: ProduceRequest) -> (i16, i64) {
    let resp = conn.send(req).await.unwrap();
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn fetch(
    topic: &str,
    partition: i32,
    offset: i64,
    max_wait_ms: i32,
    committed: bool,
) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_isolation_level(if committed { 1 } else { 0 })
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(s(topic)))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_current_leader_epoch(-1)
                        .with_log_start_offset(-1)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

/// Values of the data records in a fetch response partition (control batches skipped).
fn values(p: &fetch_response::PartitionData) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for b in RecordBatches::new(p.records.clone().unwrap_or_default()) {
        let b = b.unwrap();
        if b.is_control() {
            continue;
        }
        for r in b.records().unwrap() {
            let r = r.unwrap();
            out.push((
                r.offset,
                String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn metadata_spreads_leaders_and_reports_topic_ids() {
    let mock = MockCluster::builder()
        .brokers(3)
        .topic("spread", 6)
        .start()
        .await
        .unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let resp = conn
        .send(MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s("spread")))),
        ])))
        .await
        .unwrap();
    assert_eq!(resp.brokers.len(), 3);
    let t = &resp.topics[0];
    assert_eq!(t.error_code, 0);
    assert!(!t.topic_id.is_nil());
    assert_eq!(t.partitions.len(), 6);
    let mut leaders: Vec<i32> = t.partitions.iter().map(|p| p.leader_id.0).collect();
    leaders.sort();
    leaders.dedup();
    assert_eq!(leaders, vec![1, 2, 3], "leaders spread over all brokers");
    for p in &t.partitions {
        assert_eq!(
            mock.partition_leader("spread", p.partition_index).unwrap(),
            p.leader_id.0
        );
    }
    // Auto-creation follows the request's flag.
    let resp = conn
        .send(
            MetadataRequest::default()
                .with_topics(Some(vec![
                    MetadataRequestTopic::default().with_name(Some(TopicName(s("nope")))),
                ]))
                .with_allow_auto_topic_creation(false),
        )
        .await
        .unwrap();
    assert_eq!(
        resp.topics[0].error_code,
        KafkaCode::UnknownTopicOrPartition.code()
    );
}

#[tokio::test]
async fn produce_then_fetch_returns_the_producers_batch() {
    let mock = MockCluster::builder().topic("t", 1).start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let b1 = batch(&["a", "b", "c"], None, false);
    assert_eq!(
        send_produce(&conn, produce("t", 0, b1.clone())).await,
        (0, 0)
    );
    assert_eq!(
        send_produce(&conn, produce("t", 0, batch(&["d"], None, false))).await,
        (0, 3)
    );
    let resp = conn.send(fetch("t", 0, 1, 100, false)).await.unwrap();
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!(p.high_watermark, 4);
    assert_eq!(p.last_stable_offset, 4);
    // Whole batches: the one holding offset 1 starts at 0.
    assert_eq!(
        values(p),
        vec![
            (0, "a".into()),
            (1, "b".into()),
            (2, "c".into()),
            (3, "d".into())
        ]
    );
    // The stored bytes are the producer's, with only the base offset (0 here) and the leader
    // epoch rewritten.
    let stored = mock.batches("t", 0).unwrap();
    assert_eq!(stored[0].as_bytes()[16..], b1[16..]);
    assert_eq!(stored[0].base_offset(), 0);
    assert_eq!(stored[0].partition_leader_epoch(), 0);
    // Out of range.
    let resp = conn.send(fetch("t", 0, 99, 0, false)).await.unwrap();
    assert_eq!(
        resp.responses[0].partitions[0].error_code,
        KafkaCode::OffsetOutOfRange.code()
    );
}

#[tokio::test]
async fn idempotent_sequence_checks_follow_kafka() {
    let mock = MockCluster::builder()
        .topic("idem", 2)
        .start()
        .await
        .unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let init = conn
        .send(InitProducerIdRequest::default().with_transaction_timeout_ms(60_000))
        .await
        .unwrap();
    assert_eq!(init.error_code, 0);
    let pid = init.producer_id.0;
    let epoch = init.producer_epoch;
    // A producer without state on a partition: Kafka (2.5 on) accepts any sequence from it,
    // there is nothing to compare with (partition 1, apart from the checks below).
    assert_eq!(
        send_produce(
            &conn,
            produce("idem", 1, batch(&["x"], Some((pid, epoch, 5)), false)),
        )
        .await,
        (0, 0)
    );
    // Then the next batch must follow it.
    let (code, _) = send_produce(
        &conn,
        produce("idem", 1, batch(&["y"], Some((pid, epoch, 0)), false)),
    )
    .await;
    assert_eq!(code, KafkaCode::OutOfOrderSequenceNumber.code());
    let first = batch(&["a", "b"], Some((pid, epoch, 0)), false);
    assert_eq!(
        send_produce(&conn, produce("idem", 0, first.clone())).await,
        (0, 0)
    );
    assert_eq!(
        send_produce(
            &conn,
            produce("idem", 0, batch(&["c"], Some((pid, epoch, 2)), false))
        )
        .await,
        (0, 2)
    );
    // An exact retry: success with the original offset, nothing written.
    assert_eq!(send_produce(&conn, produce("idem", 0, first)).await, (0, 0));
    assert_eq!(mock.high_watermark("idem", 0).unwrap(), 3);
    // A gap.
    let (code, _) = send_produce(
        &conn,
        produce("idem", 0, batch(&["z"], Some((pid, epoch, 7)), false)),
    )
    .await;
    assert_eq!(code, KafkaCode::OutOfOrderSequenceNumber.code());
    // Bumped epoch resets at sequence 0; the old epoch is then stale.
    assert_eq!(
        send_produce(
            &conn,
            produce("idem", 0, batch(&["e"], Some((pid, epoch + 1, 0)), false))
        )
        .await,
        (0, 3)
    );
    let (code, _) = send_produce(
        &conn,
        produce("idem", 0, batch(&["f"], Some((pid, epoch, 3)), false)),
    )
    .await;
    assert_eq!(code, KafkaCode::InvalidProducerEpoch.code());
    let vals: Vec<String> = mock
        .records("idem", 0)
        .unwrap()
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(vals, ["a", "b", "c", "e"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_long_poll_is_woken_by_produce() {
    let mock = MockCluster::builder().topic("lp", 1).start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    // A broker serves one request per connection at a time (Kafka mutes the channel), so the
    // long poll gets its own connection.
    let c2 = connect(&mock.bootstrap()).await;
    // Max wait far beyond the test's own timeout: only the produce can end it in time.
    let waiting = tokio::spawn(async move { c2.send(fetch("lp", 0, 0, 60_000, false)).await });
    mock.wait_for_requests(|r| r.api_key == ApiKey::Fetch, 1)
        .await;
    assert!(!waiting.is_finished());
    send_produce(&conn, produce("lp", 0, batch(&["wake"], None, false))).await;
    let resp = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("fetch was not woken by the produce")
        .unwrap()
        .unwrap();
    assert_eq!(
        values(&resp.responses[0].partitions[0]),
        vec![(0, "wake".into())]
    );
}

#[tokio::test]
async fn pushed_errors_reach_the_client_then_requests_succeed() {
    let mock = MockCluster::builder().topic("e", 1).start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    mock.push_request_errors(ApiKey::Produce, &[KafkaCode::NotEnoughReplicas; 3]);
    let req = produce("e", 0, batch(&["once"], None, false));
    for _ in 0..3 {
        let (code, off) = send_produce(&conn, req.clone()).await;
        assert_eq!((code, off), (KafkaCode::NotEnoughReplicas.code(), -1));
    }
    assert_eq!(send_produce(&conn, req).await, (0, 0));
    assert_eq!(mock.records("e", 0).unwrap().len(), 1, "delivered once");
    let produces = mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key == ApiKey::Produce)
        .count();
    assert_eq!(produces, 4);
}

#[tokio::test]
async fn broker_and_partition_errors_are_scoped() {
    let mock = MockCluster::builder()
        .brokers(2)
        .topic("scoped", 4)
        .start()
        .await
        .unwrap();
    // Partition-level: only partition p gets the error; the other partition in the same
    // request is written.
    let (p_a, p_b) = {
        let leader0 = mock.partition_leader("scoped", 0).unwrap();
        let other = (1..4)
            .find(|&p| mock.partition_leader("scoped", p).unwrap() == leader0)
            .unwrap();
        (0, other)
    };
    let leader = mock.partition_leader("scoped", p_a).unwrap();
    let conn = connect_broker(&mock, leader).await;
    mock.push_partition_errors(
        "scoped",
        p_a,
        ApiKey::Produce,
        &[KafkaCode::NotLeaderOrFollower],
    );
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(s("scoped")))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(p_a)
                        .with_records(Some(batch(&["a"], None, false))),
                    PartitionProduceData::default()
                        .with_index(p_b)
                        .with_records(Some(batch(&["b"], None, false))),
                ]),
        ]);
    let resp = conn.send(req).await.unwrap();
    let parts = &resp.responses[0].partition_responses;
    assert_eq!(parts[0].error_code, KafkaCode::NotLeaderOrFollower.code());
    assert_eq!(parts[1].error_code, 0);
    assert_eq!(mock.high_watermark("scoped", p_a).unwrap(), 0);
    assert_eq!(mock.high_watermark("scoped", p_b).unwrap(), 1);

    // Broker-level: only requests to that broker fail.
    let other = if leader == 1 { 2 } else { 1 };
    mock.push_broker_request_errors(other, ApiKey::Metadata, &[KafkaCode::NotController]);
    let other_conn = connect_broker(&mock, other).await;
    // Metadata has no top-level error below v13: every named topic carries it.
    let meta = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(TopicName(s("scoped")))),
    ]));
    let r = conn.send(meta.clone()).await.unwrap();
    assert_eq!(r.topics[0].error_code, 0);
    let r = other_conn.send(meta.clone()).await.unwrap();
    assert_eq!(r.topics[0].error_code, KafkaCode::NotController.code());
    let r = other_conn.send(meta).await.unwrap();
    assert_eq!(r.topics[0].error_code, 0);
}

#[tokio::test]
async fn connection_closed_on_nth_request() {
    let mock = MockCluster::start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    mock.close_connection_on(ApiKey::Metadata, 2);
    conn.send(MetadataRequest::default()).await.unwrap();
    let e = conn.send(MetadataRequest::default()).await.unwrap_err();
    assert!(e.is_retriable(), "{e}");
    assert!(conn.is_closed());
    // A new connection works; the rule fired once.
    let again = connect(&mock.bootstrap()).await;
    again.send(MetadataRequest::default()).await.unwrap();
    again.send(MetadataRequest::default()).await.unwrap();
}

#[tokio::test]
async fn broker_rtt_delays_responses() {
    let mock = MockCluster::start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let id = mock.broker_ids()[0];
    mock.set_broker_rtt(id, Duration::from_millis(300));
    let start = tokio::time::Instant::now();
    conn.send(MetadataRequest::default()).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
    mock.set_broker_rtt(id, Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_and_up_on_the_same_port() {
    let mock = MockCluster::builder().brokers(2).start().await.unwrap();
    let addr = mock.broker_addrs()[1].clone();
    let conn = connect(&addr).await;
    mock.broker_down(2).await.unwrap();
    assert!(!mock.is_broker_up(2));
    let e = conn.send(MetadataRequest::default()).await.unwrap_err();
    assert!(e.is_retriable(), "{e}");
    assert!(Connection::connect(&addr, 2, &config()).await.is_err());
    // The other broker is unaffected.
    connect(&mock.broker_addrs()[0])
        .await
        .send(MetadataRequest::default())
        .await
        .unwrap();
    mock.broker_up(2).await.unwrap();
    assert_eq!(mock.broker_addrs()[1], addr);
    connect(&addr)
        .await
        .send(MetadataRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn moved_leader_answers_not_leader_on_the_old_broker() {
    let mock = MockCluster::builder()
        .brokers(2)
        .topic("mv", 1)
        .start()
        .await
        .unwrap();
    let old = mock.partition_leader("mv", 0).unwrap();
    let new = if old == 1 { 2 } else { 1 };
    let old_conn = connect_broker(&mock, old).await;
    assert_eq!(
        send_produce(&old_conn, produce("mv", 0, batch(&["1"], None, false))).await,
        (0, 0)
    );
    mock.set_partition_leader("mv", 0, new).unwrap();
    let resp = old_conn
        .send(produce("mv", 0, batch(&["2"], None, false)))
        .await
        .unwrap();
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, KafkaCode::NotLeaderOrFollower.code());
    // KIP-951 (Produce v10+): the new leader and its address come with the error.
    assert_eq!(
        (p.current_leader.leader_id.0, p.current_leader.leader_epoch),
        (new, 1)
    );
    assert_eq!(resp.node_endpoints.len(), 1);
    assert_eq!(resp.node_endpoints[0].node_id.0, new);
    let i = mock.broker_ids().iter().position(|&b| b == new).unwrap();
    assert_eq!(
        format!("127.0.0.1:{}", resp.node_endpoints[0].port),
        mock.broker_addrs()[i]
    );
    let f = old_conn.send(fetch("mv", 0, 0, 0, false)).await.unwrap();
    let fp = &f.responses[0].partitions[0];
    assert_eq!(fp.error_code, KafkaCode::NotLeaderOrFollower.code());
    assert_eq!(fp.current_leader.leader_id.0, new);
    let meta = old_conn
        .send(MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s("mv")))),
        ])))
        .await
        .unwrap();
    assert_eq!(meta.topics[0].partitions[0].leader_id.0, new);
    assert_eq!(meta.topics[0].partitions[0].leader_epoch, 1);
    let new_conn = connect_broker(&mock, new).await;
    assert_eq!(
        send_produce(&new_conn, produce("mv", 0, batch(&["2"], None, false))).await,
        (0, 1)
    );
}

#[tokio::test]
async fn moved_coordinator_answers_not_coordinator() {
    let mock = MockCluster::builder().brokers(3).start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let find = |key: &str| {
        // The mock supports v4 (batched keys), which the client negotiates.
        FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![s(key)])
    };
    let before = mock.coordinator(CoordinatorType::Group, "g1");
    let target = if before == 3 { 1 } else { 3 };
    mock.set_coordinator(CoordinatorType::Group, "g1", target)
        .unwrap();
    let resp = conn.send(find("g1")).await.unwrap();
    let node = if resp.coordinators.is_empty() {
        resp.node_id.0
    } else {
        resp.coordinators[0].node_id.0
    };
    assert_eq!(node, target);
    // A group request to a broker that is not the coordinator.
    let wrong = connect_broker(&mock, before).await;
    let hb = wrong
        .send(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s("g1")))
                .with_member_id(s("m"))
                .with_generation_id(1),
        )
        .await
        .unwrap();
    assert_eq!(hb.error_code, KafkaCode::NotCoordinator.code());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_request_is_applied_only_after_release() {
    let mock = MockCluster::builder().topic("h", 1).start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let held = mock.hold(|r| r.api_key == ApiKey::Produce);
    let c2 = conn.clone();
    let task = tokio::spawn(async move {
        send_produce(&c2, produce("h", 0, batch(&["held"], None, false))).await
    });
    held.wait_matched(1).await;
    assert_eq!(held.held(), 1);
    assert_eq!(
        mock.high_watermark("h", 0).unwrap(),
        0,
        "applied while held"
    );
    assert!(!task.is_finished());
    held.release();
    assert_eq!(task.await.unwrap(), (0, 0));
    assert_eq!(held.held(), 0);
    assert_eq!(mock.high_watermark("h", 0).unwrap(), 1);
    // After release, later requests pass.
    assert_eq!(
        send_produce(&conn, produce("h", 0, batch(&["next"], None, false))).await,
        (0, 1)
    );
}

#[tokio::test]
async fn dropped_response_then_retry_is_deduplicated() {
    let mock = MockCluster::builder()
        .topic("lost", 1)
        .start()
        .await
        .unwrap();
    let short = config().with_request_timeout(Duration::from_millis(300));
    let conn = Connection::connect(&mock.bootstrap(), -1, &short)
        .await
        .unwrap();
    let init = conn
        .send(InitProducerIdRequest::default().with_transaction_timeout_ms(60_000))
        .await
        .unwrap();
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    mock.drop_responses(|r| r.api_key == ApiKey::Produce, 1);
    let req = produce("lost", 0, batch(&["once"], Some((pid, epoch, 0)), false));
    let e = conn.send(req.clone()).await.unwrap_err();
    assert_eq!(e.kind(), &rekafka::ErrorKind::Timeout, "{e}");
    // Written although unacknowledged.
    assert_eq!(mock.high_watermark("lost", 0).unwrap(), 1);
    // The retry (on a fresh connection: ours closes after a timeout) gets the original offset.
    let conn = connect(&mock.bootstrap()).await;
    assert_eq!(send_produce(&conn, req).await, (0, 0));
    assert_eq!(mock.high_watermark("lost", 0).unwrap(), 1);
    let log = mock
        .wait_for_requests(|r| r.api_key == ApiKey::Produce, 2)
        .await;
    assert!(
        log.iter()
            .all(|r| r.producer_id == Some(pid) && r.base_sequence == Some(0))
    );
}

#[tokio::test]
async fn acks_zero_gets_no_response_but_is_written() {
    let mock = MockCluster::builder().topic("a0", 1).start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    conn.send_no_response(produce("a0", 0, batch(&["x"], None, false)).with_acks(0))
        .await
        .unwrap();
    // The next request's response proves the connection stayed in sync.
    conn.send(MetadataRequest::default()).await.unwrap();
    assert_eq!(mock.high_watermark("a0", 0).unwrap(), 1);
}

#[tokio::test]
async fn list_offsets_and_delete_records() {
    let mock = MockCluster::builder().topic("lo", 1).start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    // Timestamps 1000.. within each batch.
    send_produce(&conn, produce("lo", 0, batch(&["a", "b"], None, false))).await;
    let mut b = BatchBuilder::new();
    b.append(5_000, None, Some(b"c"), &[]).unwrap();
    b.append(6_000, None, Some(b"d"), &[]).unwrap();
    send_produce(&conn, produce("lo", 0, b.build().unwrap())).await;
    let list = |ts: i64| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(s("lo")))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(ts)
                            .with_current_leader_epoch(-1),
                    ]),
            ])
    };
    let off = |r: &ListOffsetsResponse| r.topics[0].partitions[0].offset;
    assert_eq!(off(&conn.send(list(-2)).await.unwrap()), 0);
    assert_eq!(off(&conn.send(list(-1)).await.unwrap()), 4);
    assert_eq!(off(&conn.send(list(1_001)).await.unwrap()), 1);
    assert_eq!(off(&conn.send(list(5_500)).await.unwrap()), 3);
    assert_eq!(off(&conn.send(list(9_999)).await.unwrap()), -1);
    let del = conn
        .send(
            DeleteRecordsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![
                    delete_records_request::DeleteRecordsTopic::default()
                        .with_name(TopicName(s("lo")))
                        .with_partitions(vec![
                            delete_records_request::DeleteRecordsPartition::default()
                                .with_partition_index(0)
                                .with_offset(2),
                        ]),
                ]),
        )
        .await
        .unwrap();
    assert_eq!(del.topics[0].partitions[0].low_watermark, 2);
    assert_eq!(off(&conn.send(list(-2)).await.unwrap()), 2);
    let resp = conn.send(fetch("lo", 0, 0, 0, false)).await.unwrap();
    assert_eq!(
        resp.responses[0].partitions[0].error_code,
        KafkaCode::OffsetOutOfRange.code()
    );
}

#[tokio::test]
async fn admin_create_delete_and_add_partitions() {
    let mock = MockCluster::start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let create = |name: &str, n: i32| {
        CreateTopicsRequest::default()
            .with_timeout_ms(1000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(s(name)))
                    .with_num_partitions(n)
                    .with_replication_factor(1),
            ])
    };
    assert_eq!(
        conn.send(create("adm", 2)).await.unwrap().topics[0].error_code,
        0
    );
    assert_eq!(
        conn.send(create("adm", 2)).await.unwrap().topics[0].error_code,
        KafkaCode::TopicAlreadyExists.code()
    );
    let cp = conn
        .send(
            CreatePartitionsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![
                    create_partitions_request::CreatePartitionsTopic::default()
                        .with_name(TopicName(s("adm")))
                        .with_count(5),
                ]),
        )
        .await
        .unwrap();
    assert_eq!(cp.results[0].error_code, 0);
    assert!(mock.high_watermark("adm", 4).is_ok());
    // v6 names topics in `topics`, older versions in `topic_names`.
    let del = conn
        .send_at(
            DeleteTopicsRequest::default()
                .with_timeout_ms(1000)
                .with_topic_names(vec![TopicName(s("adm"))]),
            5,
        )
        .await
        .unwrap();
    assert_eq!(del.responses[0].error_code, 0);
    assert!(mock.high_watermark("adm", 0).is_err());
}

fn join(group: &str, member: &str, meta: &'static [u8]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![
            JoinGroupRequestProtocol::default()
                .with_name(s("range"))
                .with_metadata(Bytes::from_static(meta)),
        ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_of_two_members_rebalances_syncs_commits_and_leaves() {
    let mock = MockCluster::builder().topic("gt", 2).start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let g = "grp";
    // v4+: the first join gets MEMBER_ID_REQUIRED with the id to use.
    let r = conn.send(join(g, "", b"m1")).await.unwrap();
    assert_eq!(r.error_code, KafkaCode::MemberIdRequired.code());
    let m1 = r.member_id.to_string();
    let r1 = conn.send(join(g, &m1, b"m1")).await.unwrap();
    assert_eq!(r1.error_code, 0);
    assert_eq!(r1.generation_id, 1);
    assert_eq!(r1.leader.as_str(), m1);
    let sync = |member: &str, generation: i32, assignments: Vec<(String, &'static [u8])>| {
        SyncGroupRequest::default()
            .with_group_id(GroupId(s(g)))
            .with_member_id(s(member))
            .with_generation_id(generation)
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(
                assignments
                    .into_iter()
                    .map(|(m, a)| {
                        SyncGroupRequestAssignment::default()
                            .with_member_id(s(&m))
                            .with_assignment(Bytes::from_static(a))
                    })
                    .collect(),
            )
    };
    let s1 = conn
        .send(sync(&m1, 1, vec![(m1.clone(), b"all")]))
        .await
        .unwrap();
    assert_eq!(&s1.assignment[..], b"all");
    let hb = |member: &str, generation: i32| {
        HeartbeatRequest::default()
            .with_group_id(GroupId(s(g)))
            .with_member_id(s(member))
            .with_generation_id(generation)
    };
    assert_eq!(conn.send(hb(&m1, 1)).await.unwrap().error_code, 0);
    assert_eq!(
        conn.send(hb(&m1, 7)).await.unwrap().error_code,
        KafkaCode::IllegalGeneration.code()
    );
    assert_eq!(
        conn.send(hb("ghost", 1)).await.unwrap().error_code,
        KafkaCode::UnknownMemberId.code()
    );

    // A second member joins: the first learns of the rebalance from its heartbeat.
    let conn2 = connect(&mock.bootstrap()).await;
    let m2 = conn2
        .send(join(g, "", b"m2"))
        .await
        .unwrap()
        .member_id
        .to_string();
    let c2 = conn2.clone();
    let m2c = m2.clone();
    let j2 = tokio::spawn(async move { c2.send(join("grp", &m2c, b"m2")).await });
    mock.wait_for_requests(
        |r| r.api_key == ApiKey::JoinGroup && r.member_id.as_deref() == Some(m2.as_str()),
        1,
    )
    .await;
    let mut code = 0;
    for _ in 0..100 {
        code = conn.send(hb(&m1, 1)).await.unwrap().error_code;
        if code != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(code, KafkaCode::RebalanceInProgress.code());
    let r1 = conn.send(join(g, &m1, b"m1")).await.unwrap();
    let r2 = j2.await.unwrap().unwrap();
    assert_eq!((r1.generation_id, r2.generation_id), (2, 2));
    assert_eq!(r1.leader, r2.leader);
    let (leader_conn, leader, follower_conn, follower, leader_resp) = if r1.leader.as_str() == m1 {
        (&conn, m1.clone(), &conn2, m2.clone(), &r1)
    } else {
        (&conn2, m2.clone(), &conn, m1.clone(), &r2)
    };
    let mut metas: Vec<Vec<u8>> = leader_resp
        .members
        .iter()
        .map(|m| m.metadata.to_vec())
        .collect();
    metas.sort();
    assert_eq!(metas, vec![b"m1".to_vec(), b"m2".to_vec()]);
    // The follower's SyncGroup waits for the leader's.
    let fc = follower_conn.clone();
    let req = sync(&follower, 2, vec![]);
    let fs = tokio::spawn(async move { fc.send(req).await });
    let ls = leader_conn
        .send(sync(
            &leader,
            2,
            vec![(leader.clone(), b"p0"), (follower.clone(), b"p1")],
        ))
        .await
        .unwrap();
    assert_eq!(&ls.assignment[..], b"p0");
    assert_eq!(&fs.await.unwrap().unwrap().assignment[..], b"p1");

    // Commits: generation and member checked, metadata kept.
    let commit = |member: &str, generation: i32, offset: i64| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(s(g)))
            .with_member_id(s(member))
            .with_generation_id_or_member_epoch(generation)
            .with_topics(vec![
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("gt")))
                    .with_partitions(vec![
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(1)
                            .with_committed_offset(offset)
                            .with_committed_metadata(Some(s("meta"))),
                    ]),
            ])
    };
    let code = |r: OffsetCommitResponse| r.topics[0].partitions[0].error_code;
    assert_eq!(code(conn.send(commit(&m1, 2, 42)).await.unwrap()), 0);
    assert_eq!(
        code(conn.send(commit(&m1, 1, 43)).await.unwrap()),
        KafkaCode::IllegalGeneration.code()
    );
    assert_eq!(
        code(conn.send(commit("ghost", 2, 43)).await.unwrap()),
        KafkaCode::UnknownMemberId.code()
    );
    let multi = conn
        .versions()
        .range(ApiKey::OffsetFetch)
        .is_some_and(|r| r.max >= 8);
    let req = if multi {
        OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s(g)))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_name(TopicName(s("gt")))
                        .with_partition_indexes(vec![0, 1]),
                ])),
        ])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(GroupId(s(g)))
            .with_topics(Some(vec![
                OffsetFetchRequestTopic::default()
                    .with_name(TopicName(s("gt")))
                    .with_partition_indexes(vec![0, 1]),
            ]))
    };
    let fetched = conn.send(req).await.unwrap();
    let rows: Vec<(i32, i64, Option<String>)> = if fetched.groups.is_empty() {
        fetched.topics[0]
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    p.committed_offset,
                    p.metadata.as_ref().map(|m| m.to_string()),
                )
            })
            .collect()
    } else {
        fetched.groups[0].topics[0]
            .partitions
            .iter()
            .map(|p| {
                (
                    p.partition_index,
                    p.committed_offset,
                    p.metadata.as_ref().map(|m| m.to_string()),
                )
            })
            .collect()
    };
    assert_eq!(rows[0].1, -1);
    assert_eq!((rows[1].1, rows[1].2.as_deref()), (42, Some("meta")));
    assert_eq!(mock.committed_offset(g, "gt", 1), Some(42));

    // The follower leaves: the leader is told to rejoin.
    let leave = follower_conn
        .send(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s(g)))
                .with_members(vec![
                    leave_group_request::MemberIdentity::default().with_member_id(s(&follower)),
                ]),
        )
        .await
        .unwrap();
    assert_eq!(leave.error_code, 0);
    assert_eq!(
        leader_conn.send(hb(&leader, 2)).await.unwrap().error_code,
        KafkaCode::RebalanceInProgress.code()
    );
    let rj = leader_conn.send(join(g, &leader, b"m1")).await.unwrap();
    assert_eq!(rj.generation_id, 3);
    assert_eq!(rj.members.len(), 1);
    let desc = conn
        .send(DescribeGroupsRequest::default().with_groups(vec![GroupId(s(g))]))
        .await
        .unwrap();
    assert_eq!(desc.groups[0].group_state.as_str(), "CompletingRebalance");
    let list = conn.send(ListGroupsRequest::default()).await.unwrap();
    assert!(list.groups.iter().any(|x| x.group_id.0.as_str() == g));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_timeout_expires_a_silent_member() {
    let mock = MockCluster::start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let mut req = join("exp", "", b"x");
    req.session_timeout_ms = 200;
    let id = conn.send(req.clone()).await.unwrap().member_id;
    req.member_id = id.clone();
    let r = conn.send(req).await.unwrap();
    assert_eq!(r.error_code, 0);
    // No heartbeat for longer than the session timeout: the member is gone.
    let mut code = 0;
    for wait in [400, 1000, 3000] {
        tokio::time::sleep(Duration::from_millis(wait)).await;
        code = conn
            .send(
                HeartbeatRequest::default()
                    .with_group_id(GroupId(s("exp")))
                    .with_member_id(id.clone())
                    .with_generation_id(r.generation_id),
            )
            .await
            .unwrap()
            .error_code;
        if code != 0 {
            break;
        }
    }
    assert_eq!(code, KafkaCode::UnknownMemberId.code());
}

async fn init_txn(conn: &Connection, txn_id: &str, timeout_ms: i32) -> (i64, i16) {
    let r = conn
        .send(
            InitProducerIdRequest::default()
                .with_transactional_id(Some(TransactionalId(s(txn_id))))
                .with_transaction_timeout_ms(timeout_ms)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await
        .unwrap();
    assert_eq!(r.error_code, 0);
    (r.producer_id.0, r.producer_epoch)
}

async fn add_partition(conn: &Connection, txn_id: &str, pid: i64, epoch: i16, topic: &str) -> i16 {
    let r = conn
        .send(
            AddPartitionsToTxnRequest::default()
                .with_v3_and_below_transactional_id(TransactionalId(s(txn_id)))
                .with_v3_and_below_producer_id(ProducerId(pid))
                .with_v3_and_below_producer_epoch(epoch)
                .with_v3_and_below_topics(vec![
                    AddPartitionsToTxnTopic::default()
                        .with_name(TopicName(s(topic)))
                        .with_partitions(vec![0]),
                ]),
        )
        .await
        .unwrap();
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

async fn end_txn(conn: &Connection, txn_id: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    conn.send(
        EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s(txn_id)))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_committed(commit),
    )
    .await
    .unwrap()
    .error_code
}

fn txn_produce(topic: &str, txn_id: &str, records: Bytes) -> ProduceRequest {
    produce(topic, 0, records).with_transactional_id(Some(TransactionalId(s(txn_id))))
}

#[tokio::test]
async fn transactions_commit_abort_lso_and_read_committed() {
    let mock = MockCluster::builder().topic("tx", 1).start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let (pid, epoch) = init_txn(&conn, "txn-1", 60_000).await;
    // Produce to a partition not added to the transaction.
    let (code, _) = send_produce(
        &conn,
        txn_produce("tx", "txn-1", batch(&["no"], Some((pid, epoch, 0)), true)),
    )
    .await;
    assert_eq!(code, KafkaCode::InvalidTxnState.code());

    // Transaction 1: committed.
    assert_eq!(add_partition(&conn, "txn-1", pid, epoch, "tx").await, 0);
    assert_eq!(
        send_produce(
            &conn,
            txn_produce(
                "tx",
                "txn-1",
                batch(&["c1", "c2"], Some((pid, epoch, 0)), true)
            )
        )
        .await,
        (0, 0)
    );
    assert_eq!(mock.last_stable_offset("tx", 0).unwrap(), 0);
    assert_eq!(mock.high_watermark("tx", 0).unwrap(), 2);
    let rc = conn.send(fetch("tx", 0, 0, 0, true)).await.unwrap();
    let p = &rc.responses[0].partitions[0];
    assert_eq!(p.last_stable_offset, 0);
    assert!(
        values(p).is_empty(),
        "read_committed sees an open transaction"
    );
    assert_eq!(end_txn(&conn, "txn-1", pid, epoch, true).await, 0);
    // Retried EndTxn: same outcome succeeds, the opposite does not.
    assert_eq!(end_txn(&conn, "txn-1", pid, epoch, true).await, 0);
    assert_eq!(
        end_txn(&conn, "txn-1", pid, epoch, false).await,
        KafkaCode::InvalidTxnState.code()
    );
    assert_eq!(mock.last_stable_offset("tx", 0).unwrap(), 3);

    // Transaction 2: aborted.
    assert_eq!(add_partition(&conn, "txn-1", pid, epoch, "tx").await, 0);
    assert_eq!(
        send_produce(
            &conn,
            txn_produce("tx", "txn-1", batch(&["a1"], Some((pid, epoch, 2)), true))
        )
        .await,
        (0, 3)
    );
    assert_eq!(end_txn(&conn, "txn-1", pid, epoch, false).await, 0);
    // Non-transactional record after it.
    send_produce(&conn, produce("tx", 0, batch(&["plain"], None, false))).await;

    let batches = mock.batches("tx", 0).unwrap();
    let markers: Vec<ControlType> = batches
        .iter()
        .filter(|b| b.is_control())
        .map(|b| b.control_record().unwrap().unwrap().control_type)
        .collect();
    assert_eq!(markers, vec![ControlType::Commit, ControlType::Abort]);

    let rc = conn.send(fetch("tx", 0, 0, 0, true)).await.unwrap();
    let p = &rc.responses[0].partitions[0];
    let aborted = p.aborted_transactions.clone().unwrap();
    assert_eq!(aborted.len(), 1);
    assert_eq!(
        (aborted[0].producer_id.0, aborted[0].first_offset),
        (pid, 3)
    );
    // Applying the aborted list as a client does: the aborted record is dropped.
    let visible: Vec<String> = values(p)
        .into_iter()
        .filter(|(o, _)| *o != 3)
        .map(|(_, v)| v)
        .collect();
    assert_eq!(visible, ["c1", "c2", "plain"]);
    let ru = conn.send(fetch("tx", 0, 0, 0, false)).await.unwrap();
    assert!(ru.responses[0].partitions[0].aborted_transactions.is_none());
    assert_eq!(values(&ru.responses[0].partitions[0]).len(), 4);
}

#[tokio::test]
async fn new_incarnation_fences_and_aborts_the_old_one() {
    let mock = MockCluster::builder().topic("fz", 1).start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let (pid, epoch) = init_txn(&conn, "zombie", 60_000).await;
    assert_eq!(add_partition(&conn, "zombie", pid, epoch, "fz").await, 0);
    send_produce(
        &conn,
        txn_produce("fz", "zombie", batch(&["old"], Some((pid, epoch, 0)), true)),
    )
    .await;
    let (pid2, epoch2) = init_txn(&conn, "zombie", 60_000).await;
    assert_eq!((pid2, epoch2), (pid, epoch + 1));
    // The old transaction was aborted; the zombie is fenced.
    assert_eq!(
        mock.last_stable_offset("fz", 0).unwrap(),
        mock.high_watermark("fz", 0).unwrap()
    );
    assert_eq!(
        end_txn(&conn, "zombie", pid, epoch, true).await,
        KafkaCode::ProducerFenced.code()
    );
    let (code, _) = send_produce(
        &conn,
        txn_produce(
            "fz",
            "zombie",
            batch(&["late"], Some((pid, epoch, 1)), true),
        ),
    )
    .await;
    assert_eq!(code, KafkaCode::InvalidProducerEpoch.code());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_timeout_aborts() {
    let mock = MockCluster::builder().topic("tt", 1).start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let (pid, epoch) = init_txn(&conn, "slow", 200).await;
    assert_eq!(add_partition(&conn, "slow", pid, epoch, "tt").await, 0);
    send_produce(
        &conn,
        txn_produce("tt", "slow", batch(&["x"], Some((pid, epoch, 0)), true)),
    )
    .await;
    assert_eq!(mock.last_stable_offset("tt", 0).unwrap(), 0);
    let mut lso = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        lso = mock.last_stable_offset("tt", 0).unwrap();
        if lso > 0 {
            break;
        }
    }
    assert_eq!(lso, 2, "abort marker written after the timeout");
    assert_ne!(end_txn(&conn, "slow", pid, epoch, true).await, 0);
    let rc = conn.send(fetch("tt", 0, 0, 0, true)).await.unwrap();
    assert_eq!(
        rc.responses[0].partitions[0]
            .aborted_transactions
            .as_ref()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn malformed_input_closes_the_connection_only() {
    let mock = MockCluster::start().await.unwrap();
    let addr = mock.bootstrap();
    for garbage in [
        vec![0, 0, 0, 4, 0xff, 0xff, 0, 0], // unknown API key
        vec![0x7f, 0xff, 0xff, 0xff],       // huge size prefix
        vec![0, 0, 0, 6, 0, 3, 0, 9, 0, 0], // Metadata v9, truncated header
        vec![0, 0, 0, 10, 0, 0, 0, 3, 0, 0, 0, 1, 0xff, 0xff], // Produce v3, broken body
    ] {
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        sock.write_all(&garbage).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), sock.read(&mut buf))
            .await
            .expect("connection left open")
            .unwrap_or(0);
        assert_eq!(n, 0, "expected a close for {garbage:?}");
    }
    connect(&addr)
        .await
        .send(MetadataRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn dropping_the_cluster_closes_connections() {
    let mock = MockCluster::start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let addr = mock.bootstrap();
    mock.shutdown().await;
    assert!(conn.send(MetadataRequest::default()).await.is_err());
    assert!(Connection::connect(&addr, -1, &config()).await.is_err());
}

#[tokio::test]
async fn static_member_rejoins_without_member_id_required_and_fences_its_old_id() {
    let mock = MockCluster::start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let req = join("static", "", b"s").with_group_instance_id(Some(s("instance-1")));
    let r1 = conn.send(req.clone()).await.unwrap();
    assert_eq!(r1.error_code, 0, "a static member joins at once");
    assert!(!r1.member_id.is_empty());
    // The same instance restarts: a new member id replaces the old one.
    let r2 = conn.send(req).await.unwrap();
    assert_eq!(r2.error_code, 0);
    assert_ne!(r2.member_id, r1.member_id);
    let stale = conn
        .send(
            join("static", r1.member_id.as_str(), b"s")
                .with_group_instance_id(Some(s("instance-1"))),
        )
        .await
        .unwrap();
    assert_eq!(stale.error_code, KafkaCode::FencedInstanceId.code());
    let desc = conn
        .send(DescribeGroupsRequest::default().with_groups(vec![GroupId(s("static"))]))
        .await
        .unwrap();
    assert_eq!(desc.groups[0].members.len(), 1);
    assert_eq!(
        desc.groups[0].members[0].group_instance_id.as_deref(),
        Some("instance-1")
    );
    assert_eq!(desc.groups[0].members[0].client_id.as_str(), "mock-tests");
}

#[tokio::test]
async fn transactional_offsets_apply_on_commit_only() {
    let mock = MockCluster::builder().topic("in", 1).start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let (pid, epoch) = init_txn(&conn, "eos", 60_000).await;
    let add_offsets = |group: &str| {
        AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s("eos")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_group_id(GroupId(s(group)))
    };
    let txn_commit = |offset: i64| {
        TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s("eos")))
            .with_group_id(GroupId(s("eos-group")))
            .with_producer_id(ProducerId(pid))
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(TopicName(s("in")))
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                            .with_partition_index(0)
                            .with_committed_offset(offset),
                    ]),
            ])
    };
    let code = |r: TxnOffsetCommitResponse| r.topics[0].partitions[0].error_code;
    // Before AddOffsetsToTxn the group is not part of the transaction.
    assert_eq!(
        code(conn.send(txn_commit(5)).await.unwrap()),
        KafkaCode::InvalidTxnState.code()
    );
    assert_eq!(
        conn.send(add_offsets("eos-group"))
            .await
            .unwrap()
            .error_code,
        0
    );
    assert_eq!(code(conn.send(txn_commit(5)).await.unwrap()), 0);
    assert_eq!(mock.committed_offset("eos-group", "in", 0), None);
    assert_eq!(end_txn(&conn, "eos", pid, epoch, false).await, 0);
    assert_eq!(mock.committed_offset("eos-group", "in", 0), None, "aborted");
    assert_eq!(
        conn.send(add_offsets("eos-group"))
            .await
            .unwrap()
            .error_code,
        0
    );
    assert_eq!(code(conn.send(txn_commit(9)).await.unwrap()), 0);
    assert_eq!(end_txn(&conn, "eos", pid, epoch, true).await, 0);
    assert_eq!(mock.committed_offset("eos-group", "in", 0), Some(9));
}

#[tokio::test]
async fn list_offsets_latest_is_the_lso_under_read_committed() {
    let mock = MockCluster::builder()
        .topic("lso", 1)
        .start()
        .await
        .unwrap();
    let conn = connect(&mock.bootstrap()).await;
    send_produce(&conn, produce("lso", 0, batch(&["a"], None, false))).await;
    let (pid, epoch) = init_txn(&conn, "lso-txn", 60_000).await;
    assert_eq!(add_partition(&conn, "lso-txn", pid, epoch, "lso").await, 0);
    send_produce(
        &conn,
        txn_produce("lso", "lso-txn", batch(&["t"], Some((pid, epoch, 0)), true)),
    )
    .await;
    let latest = |isolation: i8| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_isolation_level(isolation)
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(s("lso")))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(0)
                            .with_timestamp(-1)
                            .with_current_leader_epoch(-1),
                    ]),
            ])
    };
    let off = |r: ListOffsetsResponse| r.topics[0].partitions[0].offset;
    assert_eq!(off(conn.send(latest(0)).await.unwrap()), 2);
    assert_eq!(off(conn.send(latest(1)).await.unwrap()), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_matches_by_producer_and_others_pass() {
    let mock = MockCluster::builder().topic("hp", 2).start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let other = connect(&mock.bootstrap()).await;
    let held = mock.hold(|r| r.api_key == ApiKey::Produce && r.producer_id == Some(4242));
    let c = conn.clone();
    let task = tokio::spawn(async move {
        send_produce(
            &c,
            produce("hp", 0, batch(&["p"], Some((4242, 0, 0)), false)),
        )
        .await
    });
    held.wait_matched(1).await;
    // A request that does not match goes through while the other is held.
    assert_eq!(
        send_produce(&other, produce("hp", 1, batch(&["q"], None, false))).await,
        (0, 0)
    );
    assert_eq!(mock.high_watermark("hp", 0).unwrap(), 0);
    drop(held);
    // Producer 4242 is unknown to the broker, sequence 0: accepted once released.
    assert_eq!(task.await.unwrap(), (0, 0));
    assert_eq!(mock.high_watermark("hp", 0).unwrap(), 1);
}

#[tokio::test]
async fn describe_configs_of_a_topic() {
    let mock = MockCluster::builder()
        .topic("cfg", 1)
        .start()
        .await
        .unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let resp = conn
        .send(DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("cfg"))
                .with_configuration_keys(Some(vec![s("cleanup.policy")])),
        ]))
        .await
        .unwrap();
    let r = &resp.results[0];
    assert_eq!(r.error_code, 0);
    assert_eq!(r.configs.len(), 1);
    assert_eq!(r.configs[0].value.as_deref(), Some("delete"));
}

#[tokio::test]
async fn fetch_respects_byte_limits_but_returns_at_least_one_batch() {
    let mock = MockCluster::builder()
        .topic("big", 1)
        .start()
        .await
        .unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let v = "x".repeat(1000);
    for _ in 0..3 {
        send_produce(&conn, produce("big", 0, batch(&[v.as_str()], None, false))).await;
    }
    let one = mock.batches("big", 0).unwrap()[0].as_bytes().len() as i32;
    let fetch_with = |partition_max: i32, max: i32| {
        let mut f = fetch("big", 0, 0, 0, false).with_max_bytes(max);
        f.topics[0].partitions[0].partition_max_bytes = partition_max;
        f
    };
    let count = |r: FetchResponse| values(&r.responses[0].partitions[0]).len();
    // Smaller than one batch: still the first batch (KIP-74).
    assert_eq!(count(conn.send(fetch_with(1, 1 << 20)).await.unwrap()), 1);
    assert_eq!(count(conn.send(fetch_with(1 << 20, 1)).await.unwrap()), 1);
    // Room for two and a half batches: two.
    assert_eq!(
        count(conn.send(fetch_with(one * 5 / 2, 1 << 20)).await.unwrap()),
        2
    );
    assert_eq!(
        count(conn.send(fetch_with(1 << 20, one * 5 / 2)).await.unwrap()),
        2
    );
    assert_eq!(
        count(conn.send(fetch_with(1 << 20, 1 << 20)).await.unwrap()),
        3
    );
}

#[tokio::test]
async fn topic_hidden_from_metadata_for_two_responses() {
    let mock = MockCluster::builder()
        .topic("hidden", 2)
        .start()
        .await
        .unwrap();
    let conn = connect(&mock.bootstrap()).await;
    mock.push_topic_metadata_errors(
        "hidden",
        &[
            KafkaCode::UnknownTopicOrPartition,
            KafkaCode::LeaderNotAvailable,
        ],
    );
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(TopicName(s("hidden")))),
        ]))
        .with_allow_auto_topic_creation(false);
    let codes: Vec<(i16, usize)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let r = conn.send(req.clone()).await.unwrap();
            v.push((r.topics[0].error_code, r.topics[0].partitions.len()));
        }
        v
    };
    assert_eq!(
        codes,
        vec![
            (KafkaCode::UnknownTopicOrPartition.code(), 0),
            (KafkaCode::LeaderNotAvailable.code(), 0),
            (0, 2)
        ]
    );
}

#[tokio::test]
async fn offset_for_leader_epoch_follows_leader_moves() {
    let mock = MockCluster::builder()
        .brokers(2)
        .topic("ep", 1)
        .start()
        .await
        .unwrap();
    let first = mock.partition_leader("ep", 0).unwrap();
    let second = if first == 1 { 2 } else { 1 };
    let c1 = connect_broker(&mock, first).await;
    send_produce(&c1, produce("ep", 0, batch(&["a", "b"], None, false))).await;
    mock.set_partition_leader("ep", 0, second).unwrap();
    let c2 = connect_broker(&mock, second).await;
    send_produce(&c2, produce("ep", 0, batch(&["c"], None, false))).await;
    let req = |epoch: i32, current: i32| {
        OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![
                offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                    .with_topic(TopicName(s("ep")))
                    .with_partitions(vec![
                        offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                            .with_partition(0)
                            .with_leader_epoch(epoch)
                            .with_current_leader_epoch(current),
                    ]),
            ])
    };
    let answer = |r: OffsetForLeaderEpochResponse| {
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.leader_epoch, p.end_offset)
    };
    // Epoch 0 ended where epoch 1 began (offset 2); epoch 1 is current: ends at the log end.
    assert_eq!(answer(c2.send(req(0, 1)).await.unwrap()), (0, 0, 2));
    assert_eq!(answer(c2.send(req(1, 1)).await.unwrap()), (0, 1, 3));
    assert_eq!(
        answer(c2.send(req(0, 0)).await.unwrap()).0,
        KafkaCode::FencedLeaderEpoch.code()
    );
    assert_eq!(
        answer(c1.send(req(0, 1)).await.unwrap()).0,
        KafkaCode::NotLeaderOrFollower.code()
    );
}

/// An unclean leader election truncates the log at a batch boundary and the epoch cache with
/// it: OffsetForLeaderEpoch for the old epoch answers the new log end, and new records reuse
/// the lost offsets under the new epoch.
#[tokio::test]
async fn unclean_election_truncates_the_log_and_the_epoch_cache() {
    let mock = MockCluster::builder()
        .brokers(2)
        .topic("ue", 1)
        .start()
        .await
        .unwrap();
    let first = mock.partition_leader("ue", 0).unwrap();
    let second = if first == 1 { 2 } else { 1 };
    let c1 = connect_broker(&mock, first).await;
    send_produce(&c1, produce("ue", 0, batch(&["a", "b"], None, false))).await;
    send_produce(&c1, produce("ue", 0, batch(&["c", "d"], None, false))).await;
    // Offset 3 lies inside the second batch: the whole batch goes.
    assert_eq!(mock.elect_unclean_leader("ue", 0, second, 3).unwrap(), 2);
    assert_eq!(mock.partition_leader("ue", 0).unwrap(), second);
    assert_eq!(mock.high_watermark("ue", 0).unwrap(), 2);
    let c2 = connect_broker(&mock, second).await;
    send_produce(&c2, produce("ue", 0, batch(&["x", "y", "z"], None, false))).await;
    let values: Vec<(i64, String)> = mock
        .records("ue", 0)
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.offset,
                String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        values,
        [(0, "a"), (1, "b"), (2, "x"), (3, "y"), (4, "z")]
            .map(|(o, v)| (o, v.to_owned()))
            .to_vec()
    );
    let epochs: Vec<i32> = mock
        .batches("ue", 0)
        .unwrap()
        .iter()
        .map(|b| b.partition_leader_epoch())
        .collect();
    assert_eq!(epochs, vec![0, 1]);
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(TopicName(s("ue")))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_partition(0)
                        .with_leader_epoch(0)
                        .with_current_leader_epoch(1),
                ]),
        ]);
    let r = c2.send(req).await.unwrap();
    let p = &r.topics[0].partitions[0];
    assert_eq!((p.error_code, p.leader_epoch, p.end_offset), (0, 0, 2));
}

#[tokio::test]
async fn narrowed_api_versions_are_negotiated() {
    let mock = MockCluster::start().await.unwrap();
    mock.set_api_versions(ApiKey::Metadata, Some((1, 4)));
    mock.set_api_versions(ApiKey::DescribeConfigs, None);
    let conn = connect(&mock.bootstrap()).await;
    let range = conn.versions().range(ApiKey::Metadata).unwrap();
    assert_eq!((range.min, range.max), (1, 4));
    assert!(conn.versions().range(ApiKey::DescribeConfigs).is_none());
    conn.send(MetadataRequest::default()).await.unwrap();
    let used = mock
        .wait_for_requests(|r| r.api_key == ApiKey::Metadata, 1)
        .await;
    assert_eq!(used[0].api_version, 4);
    assert!(
        MockCluster::supported_api_versions()
            .iter()
            .any(|&(k, _, max)| k == ApiKey::Produce && max == 11)
    );
}

#[tokio::test]
async fn log_append_time_topic_stamps_batches() {
    let mock = MockCluster::start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let created = conn
        .send(
            CreateTopicsRequest::default()
                .with_timeout_ms(1000)
                .with_topics(vec![
                    CreatableTopic::default()
                        .with_name(TopicName(s("lat")))
                        .with_num_partitions(1)
                        .with_replication_factor(1)
                        .with_configs(vec![
                            create_topics_request::CreatableTopicConfig::default()
                                .with_name(s("message.timestamp.type"))
                                .with_value(Some(s("LogAppendTime"))),
                        ]),
                ]),
        )
        .await
        .unwrap();
    assert_eq!(created.topics[0].error_code, 0);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let resp = conn
        .send(produce("lat", 0, batch(&["a", "b"], None, false)))
        .await
        .unwrap();
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, 0);
    assert!(p.log_append_time_ms >= before, "{p:?}");
    let fetched = conn.send(fetch("lat", 0, 0, 0, false)).await.unwrap();
    let records = fetched.responses[0].partitions[0].records.clone().unwrap();
    let b = RecordBatches::new(records).next().unwrap().unwrap();
    assert_eq!(
        b.timestamp_type(),
        rekafka::protocol::record::TimestampType::LogAppendTime
    );
    for r in b.records().unwrap() {
        assert_eq!(r.unwrap().timestamp, p.log_append_time_ms);
    }
}

#[tokio::test]
async fn static_member_restart_into_a_stable_group_keeps_its_assignment() {
    let mock = MockCluster::start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let req = join("kip345", "", b"s").with_group_instance_id(Some(s("pod-0")));
    let r1 = conn.send(req.clone()).await.unwrap();
    assert_eq!((r1.error_code, r1.generation_id), (0, 1));
    let sync = |member: &str| {
        SyncGroupRequest::default()
            .with_group_id(GroupId(s("kip345")))
            .with_member_id(s(member))
            .with_group_instance_id(Some(s("pod-0")))
            .with_generation_id(1)
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
    };
    let assigned = conn
        .send(sync(&r1.member_id).with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(r1.member_id.clone())
                .with_assignment(Bytes::from_static(b"p0,p1")),
        ]))
        .await
        .unwrap();
    assert_eq!(&assigned.assignment[..], b"p0,p1");
    // The pod restarts: same instance id, no member id. No rebalance: same generation, and
    // SyncGroup hands back the assignment it had.
    let r2 = conn.send(req).await.unwrap();
    assert_eq!((r2.error_code, r2.generation_id), (0, 1));
    assert_ne!(r2.member_id, r1.member_id);
    let again = conn.send(sync(&r2.member_id)).await.unwrap();
    assert_eq!(&again.assignment[..], b"p0,p1");
    // The old incarnation is fenced.
    let hb = conn
        .send(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s("kip345")))
                .with_member_id(r1.member_id.clone())
                .with_group_instance_id(Some(s("pod-0")))
                .with_generation_id(1),
        )
        .await
        .unwrap();
    assert_eq!(hb.error_code, KafkaCode::FencedInstanceId.code());
}

#[tokio::test]
async fn old_join_group_versions_get_a_member_id_directly() {
    let mock = MockCluster::start().await.unwrap();
    let conn = connect(&mock.bootstrap()).await;
    // v0 has no rebalance timeout and no MEMBER_ID_REQUIRED round trip.
    let r = conn.send_at(join("old", "", b"o"), 0).await.unwrap();
    assert_eq!(r.error_code, 0);
    assert!(!r.member_id.is_empty());
    assert_eq!(r.leader, r.member_id);
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    let s0 = conn
        .send_at(
            SyncGroupRequest::default()
                .with_group_id(GroupId(s("old")))
                .with_member_id(r.member_id.clone())
                .with_generation_id(r.generation_id)
                .with_assignments(vec![
                    SyncGroupRequestAssignment::default()
                        .with_member_id(r.member_id.clone())
                        .with_assignment(Bytes::from_static(b"a")),
                ]),
            0,
        )
        .await
        .unwrap();
    assert_eq!((s0.error_code, &s0.assignment[..]), (0, &b"a"[..]));
    let hb = conn
        .send_at(
            HeartbeatRequest::default()
                .with_group_id(GroupId(s("old")))
                .with_member_id(r.member_id.clone())
                .with_generation_id(r.generation_id),
            0,
        )
        .await
        .unwrap();
    assert_eq!(hb.error_code, 0);
    let leave = conn
        .send_at(
            LeaveGroupRequest::default()
                .with_group_id(GroupId(s("old")))
                .with_member_id(r.member_id.clone()),
            0,
        )
        .await
        .unwrap();
    assert_eq!(leave.error_code, 0);
    let desc = conn
        .send(DescribeGroupsRequest::default().with_groups(vec![GroupId(s("old"))]))
        .await
        .unwrap();
    assert_eq!(desc.groups[0].group_state.as_str(), "Empty");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appended_records_wake_a_long_poll_and_are_fetched() {
    let mock = MockCluster::builder()
        .topic("seed", 1)
        .start()
        .await
        .unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let waiting = tokio::spawn(async move { conn.send(fetch("seed", 0, 0, 60_000, false)).await });
    mock.wait_for_requests(|r| r.api_key == ApiKey::Fetch, 1)
        .await;
    let base = mock
        .append_records(
            "seed",
            0,
            &[(Some(b"k1"), Some(b"v1")), (None, Some(b"v2"))],
        )
        .unwrap();
    assert_eq!(base, 0);
    let resp = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("long poll not woken")
        .unwrap()
        .unwrap();
    assert_eq!(
        values(&resp.responses[0].partitions[0]),
        vec![(0, "v1".into()), (1, "v2".into())]
    );
    assert!(mock.append_records("nope", 0, &[(None, None)]).is_err());
}

#[tokio::test]
async fn broker_errors_with_rtt_are_delayed() {
    let mock = MockCluster::builder()
        .topic("slow", 1)
        .start()
        .await
        .unwrap();
    let conn = connect(&mock.bootstrap()).await;
    let id = mock.broker_ids()[0];
    mock.push_broker_request_errors_rtt(
        id,
        ApiKey::Produce,
        &[(KafkaCode::RequestTimedOut, Duration::from_millis(300))],
    );
    let start = tokio::time::Instant::now();
    let (code, _) = send_produce(&conn, produce("slow", 0, batch(&["x"], None, false))).await;
    assert_eq!(code, KafkaCode::RequestTimedOut.code());
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(mock.high_watermark("slow", 0).unwrap(), 0, "not applied");
    assert_eq!(
        send_produce(&conn, produce("slow", 0, batch(&["x"], None, false))).await,
        (0, 0)
    );
}

#[tokio::test]
async fn fetch_with_min_bytes_zero_answers_at_once() {
    let mock = MockCluster::builder()
        .topic("mb0", 1)
        .start()
        .await
        .unwrap();
    let conn = connect(&mock.bootstrap()).await;
    // An empty partition, a long max wait, min_bytes 0: Kafka answers immediately.
    let req = fetch("mb0", 0, 0, 60_000, false).with_min_bytes(0);
    let resp = tokio::time::timeout(Duration::from_secs(5), conn.send(req))
        .await
        .expect("min_bytes 0 must not wait")
        .unwrap();
    assert_eq!(resp.responses[0].partitions[0].error_code, 0);
    assert!(values(&resp.responses[0].partitions[0]).is_empty());
}

//! The consumer against a tiny in-process fake broker (one partition of topic `t`) with fault
//! injection: read_committed hiding aborted transactions end to end, OFFSET_OUT_OF_RANGE under
//! each reset policy, NOT_LEADER_OR_FOLLOWER / FENCED_LEADER_EPOCH answers, and the broker
//! dropping the connection mid-fetch. No real broker needed.

use crate::fake_broker;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use fake_broker::{ConnState, FakeBroker, FakeRequest, Reply};
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponsePartition, OffsetFetchResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataResponse, ProducerId, TopicName,
};
use kafka_protocol::messages::{
    FindCoordinatorResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchResponse,
};
use kafka_protocol::protocol::StrBytes;
use rekafka::KafkaCode;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, IsolationLevel, OffsetReset, StartOffset, TopicPartition,
};
use rekafka::protocol::record::{BatchBuilder, ControlType, encode_transaction_marker};

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Answer the next Fetch with this partition error.
    Error(i16),
    /// Close the connection instead of answering the next Fetch.
    Close,
}

#[derive(Default)]
struct Log {
    /// (base offset, next offset, batch bytes)
    batches: Vec<(i64, i64, Bytes)>,
    aborted: Vec<(i64, i64)>, // (producer id, first offset)
    faults: VecDeque<Fault>,
    fetches: usize,
    /// The group's committed offset of partition 0.
    committed: Option<i64>,
    /// Error codes for the next OffsetFetch / OffsetCommit requests.
    offset_fetch_faults: VecDeque<i16>,
    commit_faults: VecDeque<i16>,
    offset_fetches: usize,
    commits: usize,
}

impl Log {
    fn end(&self) -> i64 {
        self.batches.last().map_or(0, |b| b.1)
    }

    fn push(&mut self, batch: Bytes, base: i64, count: i64) {
        self.batches.push((base, base + count, batch));
    }
}

struct Fake {
    addr: SocketAddr,
    log: Arc<Mutex<Log>>,
    _broker: FakeBroker,
}

async fn start(log: Log) -> Fake {
    let log = Arc::new(Mutex::new(log));
    let l2 = log.clone();
    let broker = FakeBroker::builder()
        .api(ApiKey::Metadata, 0, 12)
        .api(ApiKey::Fetch, 4, 12)
        .api(ApiKey::ListOffsets, 1, 7)
        .api(ApiKey::FindCoordinator, 0, 3)
        .api(ApiKey::OffsetFetch, 1, 7)
        .api(ApiKey::OffsetCommit, 2, 8)
        .start(move |req: &FakeRequest, _: &mut ConnState| handle(req, &l2))
        .await;
    Fake {
        addr: broker.addr,
        log,
        _broker: broker,
    }
}

fn handle(req: &FakeRequest, log: &Mutex<Log>) -> Reply {
    let addr = req.addr;
    match req.api {
        ApiKey::Metadata => {
            let r = MetadataResponse::default()
                .with_brokers(vec![
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(0))
                        .with_host(StrBytes::from_string(addr.ip().to_string()))
                        .with_port(addr.port() as i32),
                ])
                .with_topics(vec![
                    MetadataResponseTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
                        .with_partitions(vec![
                            MetadataResponsePartition::default()
                                .with_partition_index(0)
                                .with_leader_id(BrokerId(0))
                                .with_leader_epoch(5)
                                .with_replica_nodes(vec![BrokerId(0)])
                                .with_isr_nodes(vec![BrokerId(0)]),
                        ]),
                ]);
            req.respond(&r)
        }
        ApiKey::ListOffsets => {
            let q: ListOffsetsRequest = req.decode();
            let end = log.lock().unwrap().end();
            let ts = q.topics[0].partitions[0].timestamp;
            let r = ListOffsetsResponse::default().with_topics(vec![
                ListOffsetsTopicResponse::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        ListOffsetsPartitionResponse::default()
                            .with_partition_index(0)
                            .with_offset(if ts == -2 { 0 } else { end }),
                    ]),
            ]);
            req.respond(&r)
        }
        ApiKey::Fetch => {
            let q: FetchRequest = req.decode();
            let p = &q.topics[0].partitions[0];
            let offset = p.fetch_offset;
            let (fault, data, end, aborted) = {
                let mut l = log.lock().unwrap();
                l.fetches += 1;
                let fault = l.faults.pop_front();
                let mut data = BytesMut::new();
                for (_, next, b) in &l.batches {
                    if *next > offset {
                        data.extend_from_slice(b);
                    }
                }
                let aborted: Vec<AbortedTransaction> = l
                    .aborted
                    .iter()
                    .map(|(pid, first)| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(*pid))
                            .with_first_offset(*first)
                    })
                    .collect();
                (fault, data.freeze(), l.end(), aborted)
            };
            let mut pd = PartitionData::default()
                .with_partition_index(0)
                .with_high_watermark(end)
                .with_last_stable_offset(end)
                .with_log_start_offset(0);
            let mut long_poll = false;
            match fault {
                Some(Fault::Close) => return Reply::Close,
                Some(Fault::Error(code)) => pd.error_code = code,
                None if offset > end => pd.error_code = 1,
                None => {
                    // Long poll, shortened.
                    long_poll = data.is_empty();
                    pd.records = Some(data);
                    if q.isolation_level == 1 {
                        pd.aborted_transactions = Some(aborted);
                    }
                }
            }
            let r = FetchResponse::default().with_responses(vec![
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![pd]),
            ]);
            if long_poll {
                Reply::stall(Duration::from_millis(20), req.respond(&r))
            } else {
                req.respond(&r)
            }
        }
        ApiKey::FindCoordinator => {
            let r = FindCoordinatorResponse::default()
                .with_node_id(BrokerId(0))
                .with_host(StrBytes::from_string(addr.ip().to_string()))
                .with_port(addr.port() as i32);
            req.respond(&r)
        }
        ApiKey::OffsetFetch => {
            let (code, committed) = {
                let mut l = log.lock().unwrap();
                l.offset_fetches += 1;
                (l.offset_fetch_faults.pop_front().unwrap_or(0), l.committed)
            };
            let mut r = OffsetFetchResponse::default();
            let mut part = OffsetFetchResponsePartition::default()
                .with_partition_index(0)
                .with_committed_offset(committed.unwrap_or(-1));
            if code == KafkaCode::NotCoordinator.code() {
                r.error_code = code;
            } else {
                part.error_code = code;
            }
            r.topics = vec![
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![part]),
            ];
            req.respond(&r)
        }
        ApiKey::OffsetCommit => {
            let q: OffsetCommitRequest = req.decode();
            let offset = q.topics[0].partitions[0].committed_offset;
            let code = {
                let mut l = log.lock().unwrap();
                l.commits += 1;
                let code = l.commit_faults.pop_front().unwrap_or(0);
                if code == 0 {
                    l.committed = Some(offset);
                }
                code
            };
            let r = OffsetCommitResponse::default().with_topics(vec![
                OffsetCommitResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_static_str("t")))
                    .with_partitions(vec![
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(0)
                            .with_error_code(code),
                    ]),
            ]);
            req.respond(&r)
        }
        _ => Reply::Builtin,
    }
}

fn batch(base: i64, pid: i64, txn: bool, n: i32, tag: &str) -> Bytes {
    let mut b = BatchBuilder::new()
        .with_base_offset(base)
        .with_producer(pid, 0, if pid >= 0 { 0 } else { -1 })
        .with_transactional(txn);
    for i in 0..n {
        b.append(1, Some(b"k"), Some(format!("{tag}{i}").as_bytes()), &[])
            .unwrap();
    }
    b.build().unwrap()
}

fn plain_log(n: i64) -> Log {
    let mut l = Log::default();
    for i in 0..n / 10 {
        l.push(batch(i * 10, -1, false, 10, "r"), i * 10, 10);
    }
    l
}

async fn consumer(fake: &Fake, config: ConsumerConfig, start: StartOffset) -> Consumer {
    let cluster = Cluster::connect(ClusterConfig::new([fake.addr.to_string()]))
        .await
        .unwrap();
    let config = config
        .with_auto_commit(AutoCommit::Disabled)
        .with_fetch_max_wait(Duration::from_millis(50));
    let c = Consumer::new(cluster, config).unwrap();
    c.assign([(TopicPartition::new("t", 0), start)]).unwrap();
    c
}

async fn read_values(c: &Consumer, want: usize, timeout: Duration) -> Vec<(i64, String)> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        let recs = c.poll(Duration::from_millis(100)).await.unwrap();
        assert!(recs.errors().is_empty(), "{:?}", recs.errors());
        for r in recs.iter() {
            out.push((
                r.offset,
                String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap(),
            ));
        }
    }
    out
}

#[tokio::test]
async fn read_committed_hides_aborted_transactions_end_to_end() {
    let mut l = Log::default();
    l.push(batch(0, 7, true, 2, "c"), 0, 2);
    l.push(batch(2, 8, true, 2, "a"), 2, 2);
    l.push(
        encode_transaction_marker(4, 8, 0, 1, ControlType::Abort, 0).unwrap(),
        4,
        1,
    );
    l.push(
        encode_transaction_marker(5, 7, 0, 1, ControlType::Commit, 0).unwrap(),
        5,
        1,
    );
    l.push(batch(6, -1, false, 1, "p"), 6, 1);
    l.aborted.push((8, 2));
    let fake = start(l).await;
    let c = consumer(
        &fake,
        ConsumerConfig::new().with_isolation_level(IsolationLevel::ReadCommitted),
        StartOffset::Beginning,
    )
    .await;
    let got = read_values(&c, 3, Duration::from_secs(5)).await;
    assert_eq!(
        got,
        vec![(0, "c0".into()), (1, "c1".into()), (6, "p0".into())]
    );
    let extra = read_values(&c, 1, Duration::from_millis(300)).await;
    assert!(extra.is_empty());
    assert_eq!(c.position(&TopicPartition::new("t", 0)).await.unwrap(), 7);
    // read_uncommitted sees the aborted records too.
    let c2 = consumer(&fake, ConsumerConfig::new(), StartOffset::Beginning).await;
    let got = read_values(&c2, 5, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 5);
}

#[tokio::test]
async fn offset_out_of_range_follows_each_reset_policy() {
    let fake = start(plain_log(30)).await;
    let tp = TopicPartition::new("t", 0);
    // earliest
    let c = consumer(
        &fake,
        ConsumerConfig::new().with_auto_offset_reset(OffsetReset::Earliest),
        StartOffset::Offset(500),
    )
    .await;
    let got = read_values(&c, 30, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 30);
    assert_eq!(got[0].0, 0);
    // latest: nothing old; new records arrive.
    let c = consumer(
        &fake,
        ConsumerConfig::new().with_auto_offset_reset(OffsetReset::Latest),
        StartOffset::Offset(500),
    )
    .await;
    assert!(
        read_values(&c, 1, Duration::from_millis(500))
            .await
            .is_empty()
    );
    assert_eq!(c.position(&tp).await.unwrap(), 30);
    fake.log
        .lock()
        .unwrap()
        .push(batch(30, -1, false, 2, "n"), 30, 2);
    let got = read_values(&c, 2, Duration::from_secs(5)).await;
    assert_eq!(got, vec![(30, "n0".into()), (31, "n1".into())]);
    // none: a typed error, reported once; the partition waits for a seek.
    let c = consumer(
        &fake,
        ConsumerConfig::new().with_auto_offset_reset(OffsetReset::None),
        StartOffset::Offset(500),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut err = None;
    while err.is_none() && Instant::now() < deadline {
        let recs = c.poll(Duration::from_millis(100)).await.unwrap();
        err = recs.errors().first().map(|(_, e)| e.clone());
    }
    assert_eq!(err.unwrap().kafka_code(), Some(KafkaCode::OffsetOutOfRange));
    let again = c.poll(Duration::from_millis(300)).await.unwrap();
    assert!(
        again.errors().is_empty() && again.is_empty(),
        "reported once, then blocked"
    );
    c.seek(&tp, 10).unwrap();
    let got = read_values(&c, 22, Duration::from_secs(5)).await;
    assert_eq!(got.first().map(|r| r.0), Some(10));
    assert_eq!(got.len(), 22);
}

#[tokio::test]
async fn leader_errors_and_a_dropped_connection_mid_fetch_lose_nothing() {
    let fake = start(plain_log(20)).await;
    {
        let mut l = fake.log.lock().unwrap();
        l.faults.push_back(Fault::Error(6));
        l.faults.push_back(Fault::Close);
        l.faults.push_back(Fault::Error(74));
    }
    let c = consumer(&fake, ConsumerConfig::new(), StartOffset::Beginning).await;
    let got = read_values(&c, 20, Duration::from_secs(10)).await;
    let offsets: Vec<i64> = got.iter().map(|r| r.0).collect();
    assert_eq!(
        offsets,
        (0..20).collect::<Vec<_>>(),
        "every record once, in order"
    );
    // The faults were all consumed (the consumer retried through each of them).
    assert!(fake.log.lock().unwrap().faults.is_empty());
    // More data after recovery flows too; a dropped connection in the middle of reading.
    {
        let mut l = fake.log.lock().unwrap();
        l.push(batch(20, -1, false, 10, "m"), 20, 10);
        l.faults.push_back(Fault::Close);
    }
    let got = read_values(&c, 10, Duration::from_secs(10)).await;
    assert_eq!(
        got.iter().map(|r| r.0).collect::<Vec<_>>(),
        (20..30).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_paused_partition_is_not_fetched() {
    let fake = start(plain_log(10)).await;
    let c = consumer(&fake, ConsumerConfig::new(), StartOffset::Beginning).await;
    let tp = TopicPartition::new("t", 0);
    c.pause(std::slice::from_ref(&tp)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Only the fetches made before the pause took effect (at most one in flight).
    let before = fake.log.lock().unwrap().fetches;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(c.poll(Duration::from_millis(100)).await.unwrap().is_empty());
    assert_eq!(
        fake.log.lock().unwrap().fetches,
        before,
        "no fetch while paused"
    );
    c.resume(std::slice::from_ref(&tp)).unwrap();
    assert_eq!(read_values(&c, 10, Duration::from_secs(5)).await.len(), 10);
}

// Scenario 29: OffsetFetch answers UNSTABLE_OFFSET_COMMIT three times; the consumer retries and
// starts exactly at the committed offset (never from a stale or reset position).
// Scenario 31 (a): OffsetFetch NOT_COORDINATOR, then healed; (b) OffsetCommit REQUEST_TIMED_OUT
// then REBALANCE_IN_PROGRESS: the first is retried, the second surfaces as a typed error; the
// committed offset never passes what was handed to the application.
#[tokio::test]
async fn committed_offsets_survive_unstable_and_coordinator_errors() {
    let mut l = plain_log(40);
    l.committed = Some(17);
    for _ in 0..3 {
        l.offset_fetch_faults
            .push_back(KafkaCode::UnstableOffsetCommit.code());
    }
    l.offset_fetch_faults
        .push_back(KafkaCode::NotCoordinator.code());
    let fake = start(l).await;
    let c = consumer(
        &fake,
        ConsumerConfig::new()
            .with_group_id("g")
            .with_auto_offset_reset(OffsetReset::Earliest)
            .with_max_poll_records(5),
        StartOffset::Committed,
    )
    .await;
    let got = read_values(&c, 5, Duration::from_secs(10)).await;
    assert_eq!(
        got.first().map(|r| r.0),
        Some(17),
        "resumed at the committed offset"
    );
    assert_eq!(
        fake.log.lock().unwrap().offset_fetches,
        5,
        "retried through 4 errors"
    );
    let tp = TopicPartition::new("t", 0);
    let pos = c.position(&tp).await.unwrap();
    assert_eq!(pos, got.last().unwrap().0 + 1);
    // (b) a timed-out commit is retried and lands.
    fake.log
        .lock()
        .unwrap()
        .commit_faults
        .push_back(KafkaCode::RequestTimedOut.code());
    c.commit().await.unwrap();
    assert_eq!(fake.log.lock().unwrap().committed, Some(pos));
    assert_eq!(fake.log.lock().unwrap().commits, 2);
    // REBALANCE_IN_PROGRESS is the application's to handle: a typed error, nothing stored.
    let _ = read_values(&c, 1, Duration::from_secs(5)).await;
    fake.log
        .lock()
        .unwrap()
        .commit_faults
        .push_back(KafkaCode::RebalanceInProgress.code());
    let err = c.commit().await.unwrap_err();
    assert_eq!(err.kafka_code(), Some(KafkaCode::RebalanceInProgress));
    assert_eq!(fake.log.lock().unwrap().committed, Some(pos));
    // An explicit offset with metadata.
    c.commit_offsets(&[(
        tp.clone(),
        rekafka::consumer::OffsetAndMetadata::new(20).with_metadata("m"),
    )])
    .await
    .unwrap();
    assert_eq!(fake.log.lock().unwrap().committed, Some(20));
}

#[tokio::test]
async fn the_record_stream_yields_records_in_order_then_ends_on_close() {
    let fake = start(plain_log(30)).await;
    let c = consumer(
        &fake,
        ConsumerConfig::new().with_max_poll_records(7),
        StartOffset::Beginning,
    )
    .await;
    {
        let mut stream = c.stream();
        for want in 0..30 {
            let r = stream.next_record().await.unwrap();
            assert_eq!(r.offset, want);
        }
    }
    // `futures::StreamExt::next` is not shadowed by an inherent method.
    {
        use futures_util::StreamExt;
        c.seek(&TopicPartition::new("t", 0), 0).unwrap();
        let mut stream = c.stream();
        let mut seen = Vec::new();
        while let Some(r) = stream.next().await {
            seen.push(r.unwrap().offset);
            if seen.len() == 30 {
                break;
            }
        }
        assert_eq!(seen, (0..30).collect::<Vec<i64>>());
    }
    c.close().await.unwrap();
    let mut stream = c.stream();
    let end = std::future::poll_fn(|cx| {
        futures_core::Stream::poll_next(std::pin::Pin::new(&mut stream), cx)
    })
    .await;
    assert!(end.is_none(), "a closed consumer's stream ends");
}

//! The full consumer (assign and subscribe modes, group layer included) against the embedded
//! [`MockCluster`]: read_committed over real transactions (markers, aborted data, the LSO, a
//! `latest` reset to the LSO), reliability scenarios 28c, 29, 30, 31a/b/c of
//! `reliability-scenarios.md` with the mock's fault injection, OFFSET_OUT_OF_RANGE after
//! DeleteRecords under each reset policy, a partition leader's broker and the group
//! coordinator's broker going down and up mid-consumption, a static member restarting without
//! a rebalance (KIP-345), and a cooperative-sticky group shared with a librdkafka member
//! (Python confluent-kafka from `.tools/py`). No external broker needed:
//!
//! ```text
//! cargo test --features mock --test mock consumer_mock::
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest, ProduceRequest, ProducerId,
    TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use rekafka::KafkaCode;
use rekafka::admin::Admin;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::connection::{Connection, ConnectionConfig};
use rekafka::consumer::{
    AutoCommit, BoxFuture, Consumer, ConsumerConfig, ConsumerEvent, ConsumerRecord, IsolationLevel,
    OffsetAndMetadata, OffsetReset, RebalanceListener, StartOffset, TopicPartition,
};
use rekafka::group::CooperativeStickyAssignor;
use rekafka::mock::MockCluster;
use rekafka::protocol::record::BatchBuilder;
use rekafka::protocol::unstable::ApiKey;

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}

async fn cluster(mock: &MockCluster) -> Cluster {
    Cluster::connect(ClusterConfig::new(mock.broker_addrs()))
        .await
        .expect("connect")
}

fn assign_config() -> ConsumerConfig {
    ConsumerConfig::new()
        .with_auto_commit(AutoCommit::Disabled)
        .with_fetch_max_wait(Duration::from_millis(50))
}

fn group_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_session_timeout(Duration::from_secs(6))
        .with_heartbeat_interval(Duration::from_millis(500))
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(50))
}

async fn assigned(
    mock: &MockCluster,
    config: ConsumerConfig,
    tps: &[(&str, i32)],
    start: StartOffset,
) -> Consumer {
    let c = Consumer::new(cluster(mock).await, config).unwrap();
    c.assign(tps.iter().map(|(t, p)| (TopicPartition::new(t, *p), start)))
        .unwrap();
    c
}

/// Polls until `want` records arrived or `timeout`; partition errors fail the test.
async fn read(c: &Consumer, want: usize, timeout: Duration) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        let recs = c.poll(Duration::from_millis(100)).await.expect("poll");
        assert!(recs.errors().is_empty(), "{:?}", recs.errors());
        out.extend(recs.iter().cloned());
    }
    out
}

fn text(r: &ConsumerRecord) -> String {
    String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()
}

fn values(recs: &[ConsumerRecord]) -> Vec<(i64, String)> {
    recs.iter().map(|r| (r.offset, text(r))).collect()
}

/// Seeds `n` records `v<i>` into one partition.
fn seed(mock: &MockCluster, topic: &str, partition: i32, from: usize, n: usize) {
    let vals: Vec<String> = (from..from + n).map(|i| format!("v{i}")).collect();
    for chunk in vals.chunks(500) {
        let kv: Vec<_> = chunk.iter().map(|v| (None, Some(v.as_bytes()))).collect();
        mock.append_records(topic, partition, &kv).unwrap();
    }
}

// ---- raw transactional producer (there is no rekafka::transaction yet) ----

struct Txn {
    conn: Connection,
    id: String,
    pid: i64,
    epoch: i16,
    seq: i32,
}

impl Txn {
    async fn init(mock: &MockCluster, id: &str) -> Txn {
        let addr = mock.bootstrap();
        let first = addr.split(',').next().unwrap().to_owned();
        let conn = Connection::connect(&first, -1, &ConnectionConfig::default())
            .await
            .unwrap();
        let r = conn
            .send(
                InitProducerIdRequest::default()
                    .with_transactional_id(Some(TransactionalId(s(id))))
                    .with_transaction_timeout_ms(60_000)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )
            .await
            .unwrap();
        assert_eq!(r.error_code, 0);
        Txn {
            conn,
            id: id.to_owned(),
            pid: r.producer_id.0,
            epoch: r.producer_epoch,
            seq: 0,
        }
    }

    async fn begin(&self, topic: &str) {
        let r = self
            .conn
            .send(
                AddPartitionsToTxnRequest::default()
                    .with_v3_and_below_transactional_id(TransactionalId(s(&self.id)))
                    .with_v3_and_below_producer_id(ProducerId(self.pid))
                    .with_v3_and_below_producer_epoch(self.epoch)
                    .with_v3_and_below_topics(vec![
                        AddPartitionsToTxnTopic::default()
                            .with_name(TopicName(s(topic)))
                            .with_partitions(vec![0]),
                    ]),
            )
            .await
            .unwrap();
        assert_eq!(
            r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
            0
        );
    }

    /// Produces one transactional batch of `values` to partition 0; returns its base offset.
    async fn send(&mut self, topic: &str, values: &[&[u8]]) -> i64 {
        let mut b = BatchBuilder::new()
            .with_transactional(true)
            .with_producer(self.pid, self.epoch, self.seq);
        for v in values {
            b.append(1_000, None, Some(v), &[]).unwrap();
        }
        self.seq += values.len() as i32;
        let records: Bytes = b.build().unwrap();
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_transactional_id(Some(TransactionalId(s(&self.id))))
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(records)),
                    ]),
            ]);
        let resp = self.conn.send(req).await.unwrap();
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0);
        p.base_offset
    }

    async fn end(&self, commit: bool) {
        let r = self
            .conn
            .send(
                EndTxnRequest::default()
                    .with_transactional_id(TransactionalId(s(&self.id)))
                    .with_producer_id(ProducerId(self.pid))
                    .with_producer_epoch(self.epoch)
                    .with_committed(commit),
            )
            .await
            .unwrap();
        assert_eq!(r.error_code, 0);
    }
}

#[tokio::test]
async fn read_committed_hides_aborted_transactions_through_the_consumer() {
    let mock = MockCluster::builder().topic("tx", 1).start().await.unwrap();
    mock.append_records("tx", 0, &[(None, Some(b"p0"))])
        .unwrap(); // 0
    let mut a = Txn::init(&mock, "txn-a").await;
    let mut b = Txn::init(&mock, "txn-b").await;
    a.begin("tx").await;
    b.begin("tx").await;
    assert_eq!(a.send("tx", &[b"c0", b"c1"]).await, 1); // 1, 2
    assert_eq!(b.send("tx", &[b"a0", b"a1"]).await, 3); // 3, 4
    a.send("tx", &[b"c2"]).await; // 5
    b.send("tx", &[b"a2"]).await; // 6
    b.end(false).await; // abort marker 7
    a.end(true).await; // commit marker 8
    mock.append_records("tx", 0, &[(None, Some(b"p1"))])
        .unwrap(); // 9
    let hw = mock.high_watermark("tx", 0).unwrap();
    assert_eq!(hw, 10);

    let tp = TopicPartition::new("tx", 0);
    let rc = assigned(
        &mock,
        assign_config().with_isolation_level(IsolationLevel::ReadCommitted),
        &[("tx", 0)],
        StartOffset::Beginning,
    )
    .await;
    let got = values(&read(&rc, 5, Duration::from_secs(5)).await);
    assert_eq!(
        got,
        vec![
            (0, "p0".into()),
            (1, "c0".into()),
            (2, "c1".into()),
            (5, "c2".into()),
            (9, "p1".into())
        ]
    );
    assert!(read(&rc, 1, Duration::from_millis(300)).await.is_empty());
    assert_eq!(
        rc.position(&tp).await.unwrap(),
        hw,
        "past markers and aborted data"
    );

    // An open transaction blocks read_committed at the LSO; its abort releases what follows.
    b.begin("tx").await;
    b.send("tx", &[b"open"]).await; // 10
    mock.append_records("tx", 0, &[(None, Some(b"p2"))])
        .unwrap(); // 11
    assert!(
        read(&rc, 1, Duration::from_millis(400)).await.is_empty(),
        "LSO holds p2 back"
    );
    b.end(false).await; // 12
    let got = values(&read(&rc, 1, Duration::from_secs(5)).await);
    assert_eq!(got, vec![(11, "p2".into())]);
    assert_eq!(rc.position(&tp).await.unwrap(), 13);

    // read_uncommitted sees every data record, never a marker.
    let ru = assigned(&mock, assign_config(), &[("tx", 0)], StartOffset::Beginning).await;
    let got = values(&read(&ru, 10, Duration::from_secs(5)).await);
    let offsets: Vec<i64> = got.iter().map(|g| g.0).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4, 5, 6, 9, 10, 11]);
    rc.close().await.unwrap();
    ru.close().await.unwrap();
}

/// Scenario 28 (c): a fetch made only of aborted batches, about 10× `fetch.max.bytes`. The
/// consumer skips them without error and reaches the committed record after them (EOF).
#[tokio::test]
async fn scenario_28c_aborted_data_ten_times_fetch_max_bytes() {
    let mock = MockCluster::builder().topic("tx", 1).start().await.unwrap();
    let mut b = Txn::init(&mock, "big").await;
    b.begin("tx").await;
    let big = vec![b'x'; 8 * 1024];
    for _ in 0..20 {
        b.send("tx", &[&big, &big]).await;
    }
    b.end(false).await;
    mock.append_records("tx", 0, &[(None, Some(b"after"))])
        .unwrap();
    let hw = mock.high_watermark("tx", 0).unwrap();
    let mut config = assign_config().with_isolation_level(IsolationLevel::ReadCommitted);
    config.fetch_max_bytes = 32 * 1024;
    config.max_partition_fetch_bytes = 32 * 1024;
    let c = assigned(&mock, config, &[("tx", 0)], StartOffset::Beginning).await;
    let got = values(&read(&c, 1, Duration::from_secs(10)).await);
    assert_eq!(got, vec![(hw - 1, "after".into())]);
    assert!(read(&c, 1, Duration::from_millis(300)).await.is_empty());
    assert_eq!(c.position(&TopicPartition::new("tx", 0)).await.unwrap(), hw);
    // Several fetches were needed: the consumer did not ask for everything at once.
    let fetches = mock
        .requests()
        .iter()
        .filter(|r| r.api_key == ApiKey::Fetch)
        .count();
    assert!(fetches >= 2, "{fetches} fetches");
    c.close().await.unwrap();
}

#[tokio::test]
async fn offset_out_of_range_after_delete_records_follows_each_reset_policy() {
    let mock = MockCluster::builder().topic("t", 1).start().await.unwrap();
    seed(&mock, "t", 0, 0, 30);
    let admin = Admin::new(cluster(&mock).await);
    let tp = TopicPartition::new("t", 0);
    let start = admin
        .delete_records(&[(rekafka::admin::TopicPartition::new("t", 0), 10)])
        .await
        .unwrap();
    assert_eq!(*start[0].as_ref().unwrap(), 10);
    // earliest: from the new log start.
    let c = assigned(
        &mock,
        assign_config().with_auto_offset_reset(OffsetReset::Earliest),
        &[("t", 0)],
        StartOffset::Offset(3),
    )
    .await;
    let got = values(&read(&c, 20, Duration::from_secs(5)).await);
    assert_eq!(got.len(), 20);
    assert_eq!(got[0], (10, "v10".into()));
    assert_eq!(got[19], (29, "v29".into()));
    c.close().await.unwrap();
    // latest: nothing old; records appended later arrive.
    let c = assigned(
        &mock,
        assign_config().with_auto_offset_reset(OffsetReset::Latest),
        &[("t", 0)],
        StartOffset::Offset(3),
    )
    .await;
    assert!(read(&c, 1, Duration::from_millis(500)).await.is_empty());
    assert_eq!(c.position(&tp).await.unwrap(), 30);
    seed(&mock, "t", 0, 30, 2);
    let got = values(&read(&c, 2, Duration::from_secs(5)).await);
    assert_eq!(got, vec![(30, "v30".into()), (31, "v31".into())]);
    c.close().await.unwrap();
    // none: a typed partition error, once; the partition waits for a seek.
    let c = assigned(
        &mock,
        assign_config().with_auto_offset_reset(OffsetReset::None),
        &[("t", 0)],
        StartOffset::Offset(3),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut err = None;
    while err.is_none() && Instant::now() < deadline {
        let recs = c.poll(Duration::from_millis(100)).await.unwrap();
        assert!(recs.is_empty());
        err = recs.errors().first().cloned();
    }
    let (etp, err) = err.expect("an OFFSET_OUT_OF_RANGE partition error");
    assert_eq!(etp, tp);
    assert_eq!(err.kafka_code(), Some(KafkaCode::OffsetOutOfRange));
    let again = c.poll(Duration::from_millis(300)).await.unwrap();
    assert!(again.is_empty() && again.errors().is_empty());
    c.seek(&tp, 25).unwrap();
    let got = values(&read(&c, 7, Duration::from_secs(5)).await);
    assert_eq!(got.first().map(|g| g.0), Some(25));
    assert_eq!(got.len(), 7);
    c.close().await.unwrap();
}

/// Assign mode over 3 brokers with leaders spread: a broker goes down mid-fetch and comes back
/// on the same port; every record is read exactly once, in order per partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_and_up_mid_fetch_loses_and_duplicates_nothing() {
    let mock = MockCluster::builder()
        .brokers(3)
        .topic("t", 6)
        .start()
        .await
        .unwrap();
    let per = 2_000;
    for p in 0..6 {
        seed(&mock, "t", p, 0, per);
    }
    let leaders: BTreeSet<i32> = (0..6)
        .map(|p| mock.partition_leader("t", p).unwrap())
        .collect();
    assert_eq!(leaders.len(), 3, "leaders spread");
    let victim = mock.partition_leader("t", 0).unwrap();
    let mut config = assign_config();
    config.max_partition_fetch_bytes = 4 * 1024;
    config.max_poll_records = 100;
    let tps: Vec<(&str, i32)> = (0..6).map(|p| ("t", p)).collect();
    let c = assigned(&mock, config, &tps, StartOffset::Beginning).await;
    let mut got = read(&c, 1_000, Duration::from_secs(10)).await;
    mock.broker_down(victim).await.unwrap();
    // Records appended while the broker is down are read after it is back.
    for p in 0..6 {
        seed(&mock, "t", p, per, 100);
    }
    got.extend(read(&c, 2_000, Duration::from_secs(10)).await);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    mock.broker_up(victim).await.unwrap();
    let total = 6 * (per + 100);
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < total && Instant::now() < deadline {
        got.extend(read(&c, total - got.len(), Duration::from_secs(1)).await);
    }
    let mut seen: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in &got {
        assert_eq!(text(r), format!("v{}", r.offset));
        seen.entry(r.partition).or_default().push(r.offset);
    }
    for p in 0..6 {
        let offs = seen.remove(&p).unwrap_or_default();
        let want: Vec<i64> = (0..(per + 100) as i64).collect();
        assert_eq!(offs.len(), want.len(), "partition {p}: count");
        assert_eq!(offs, want, "partition {p}: in order, no gap, no duplicate");
    }
    assert!(read(&c, 1, Duration::from_millis(300)).await.is_empty());
    c.close().await.unwrap();
}

#[derive(Default)]
struct Events(Mutex<Vec<(&'static str, Vec<TopicPartition>)>>);

impl RebalanceListener for Events {
    fn on_assigned<'a>(&'a self, _: &'a Consumer, p: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        self.0.lock().unwrap().push(("assigned", p.to_vec()));
        Box::pin(async {})
    }
    fn on_revoked<'a>(&'a self, _: &'a Consumer, p: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        self.0.lock().unwrap().push(("revoked", p.to_vec()));
        Box::pin(async {})
    }
    fn on_lost<'a>(&'a self, _: &'a Consumer, p: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        self.0.lock().unwrap().push(("lost", p.to_vec()));
        Box::pin(async {})
    }
}

fn spawn_poller(c: Arc<Consumer>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Acquire) {
            c.poll(Duration::from_millis(100)).await.expect("poll");
        }
    })
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// KIP-345: a static member that restarts within its session timeout gets its partitions back
/// and the other member sees no rebalance (same generation, no callbacks).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_restart_keeps_its_partitions_without_a_rebalance() {
    let mock = MockCluster::builder().topic("t", 4).start().await.unwrap();
    let stat = group_config("gstatic").with_group_instance_id("member-a");
    let a = Arc::new(Consumer::new(cluster(&mock).await, stat.clone()).unwrap());
    a.subscribe(["t"]).unwrap();
    let b = Arc::new(Consumer::new(cluster(&mock).await, group_config("gstatic")).unwrap());
    let eb = Arc::new(Events::default());
    b.set_rebalance_listener(eb.clone());
    b.subscribe(["t"]).unwrap();
    let (stop_a, stop_b) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let ha = spawn_poller(a.clone(), stop_a.clone());
    let hb = spawn_poller(b.clone(), stop_b.clone());
    wait_for("2 and 2", Duration::from_secs(20), || {
        a.assignment().len() == 2 && b.assignment().len() == 2
    })
    .await;
    // Settled: B's callbacks and both generations unchanged for 1.5 s.
    let state = || {
        (
            eb.0.lock().unwrap().len(),
            a.group_metadata().map(|g| g.1),
            b.group_metadata().map(|g| g.1),
        )
    };
    let mut last = state();
    let mut same = 0;
    while same < 3 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = state();
        same = if now == last { same + 1 } else { 0 };
        last = now;
    }
    let a_parts = a.assignment();
    let b_events = eb.0.lock().unwrap().len();
    let b_gen = b.group_metadata().unwrap().1;
    let joins = |mock: &MockCluster| {
        mock.requests()
            .iter()
            .filter(|r| r.api_key == ApiKey::JoinGroup)
            .count()
    };
    let joins_before = joins(&mock);
    stop_a.store(true, Ordering::Release);
    ha.await.unwrap();
    a.close().await.unwrap();
    drop(a);
    let a2 = Arc::new(Consumer::new(cluster(&mock).await, stat).unwrap());
    a2.subscribe(["t"]).unwrap();
    let stop_a2 = Arc::new(AtomicBool::new(false));
    let ha2 = spawn_poller(a2.clone(), stop_a2.clone());
    wait_for("A back", Duration::from_secs(10), || {
        a2.assignment().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_a2.store(true, Ordering::Release);
    stop_b.store(true, Ordering::Release);
    ha2.await.unwrap();
    hb.await.unwrap();
    assert_eq!(
        a2.assignment(),
        a_parts,
        "the static member got its partitions back"
    );
    assert_eq!(
        eb.0.lock().unwrap().len(),
        b_events,
        "the other member saw no rebalance: {:?}",
        eb.0.lock().unwrap()
    );
    assert_eq!(b.group_metadata().unwrap().1, b_gen, "same generation");
    assert_eq!(
        joins(&mock),
        joins_before + 1,
        "only the restarted member joined"
    );
    a2.close().await.unwrap();
    b.close().await.unwrap();
}

/// Commits `offset` for partition 0 of `topic` in `group` with a short-lived member.
async fn commit_at(mock: &MockCluster, group: &str, topic: &str, offset: i64) {
    let c = Consumer::new(
        cluster(mock).await,
        group_config(group).with_auto_commit(AutoCommit::Disabled),
    )
    .unwrap();
    c.subscribe([topic]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.assignment().is_empty() && Instant::now() < deadline {
        c.poll(Duration::from_millis(100)).await.unwrap();
    }
    c.commit_offsets(&[(
        TopicPartition::new(topic, 0),
        OffsetAndMetadata::new(offset),
    )])
    .await
    .unwrap();
    c.close().await.unwrap();
    assert_eq!(mock.committed_offset(group, topic, 0), Some(offset));
}

fn count(mock: &MockCluster, api: ApiKey) -> usize {
    mock.requests().iter().filter(|r| r.api_key == api).count()
}

/// Scenario 29: OffsetFetch answers UNSTABLE_OFFSET_COMMIT three times. The consumer retries
/// and starts from the committed offset, never from a stale or reset one; nothing is read twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_29_unstable_offset_commit_is_retried_never_resumes_stale() {
    let mock = MockCluster::builder().topic("t", 1).start().await.unwrap();
    seed(&mock, "t", 0, 0, 40);
    commit_at(&mock, "g29", "t", 15).await;
    mock.clear_requests();
    mock.push_request_errors(ApiKey::OffsetFetch, &[KafkaCode::UnstableOffsetCommit; 3]);
    let c = Consumer::new(
        cluster(&mock).await,
        group_config("g29").with_auto_commit(AutoCommit::Disabled),
    )
    .unwrap();
    c.subscribe(["t"]).unwrap();
    let got = read(&c, 25, Duration::from_secs(15)).await;
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (15..40).collect::<Vec<_>>());
    assert!(read(&c, 1, Duration::from_millis(300)).await.is_empty());
    assert!(count(&mock, ApiKey::OffsetFetch) >= 4, "retried");
    c.close().await.unwrap();
}

/// Scenario 31 (a): OffsetFetch answers NOT_COORDINATOR for longer than the consumer's API
/// timeout, then heals. The consumer resumes by itself, from the committed offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_31a_offset_fetch_not_coordinator_beyond_the_retry_timeout_then_healed() {
    let mock = MockCluster::builder().topic("t", 1).start().await.unwrap();
    seed(&mock, "t", 0, 0, 30);
    commit_at(&mock, "g31a", "t", 12).await;
    let coord = mock.coordinator(rekafka::cluster::CoordinatorType::Group, "g31a");
    // 12 errors 250 ms apart: 3 s of NOT_COORDINATOR, longer than the 1 s API timeout.
    mock.push_broker_request_errors_rtt(
        coord,
        ApiKey::OffsetFetch,
        &[(KafkaCode::NotCoordinator, Duration::from_millis(250)); 12],
    );
    let mut config = group_config("g31a").with_auto_commit(AutoCommit::Disabled);
    config.api_timeout = Duration::from_secs(1);
    let c = Consumer::new(cluster(&mock).await, config).unwrap();
    c.subscribe(["t"]).unwrap();
    let started = Instant::now();
    let deadline = started + Duration::from_secs(6); // the session timeout
    let mut got = Vec::new();
    let mut errors = Vec::new();
    while got.len() < 18 && Instant::now() < deadline {
        let recs = c.poll(Duration::from_millis(100)).await.expect("poll");
        errors.extend(recs.errors().iter().cloned());
        got.extend(recs.iter().map(|r| r.offset));
    }
    assert_eq!(got, (12..30).collect::<Vec<_>>(), "errors seen: {errors:?}");
    for (_, e) in &errors {
        assert_eq!(e.kafka_code(), Some(KafkaCode::NotCoordinator), "{e}");
    }
    c.close().await.unwrap();
}

/// Scenario 31 (b): OffsetCommit answers REQUEST_TIMED_OUT (and coordinator errors), then
/// REBALANCE_IN_PROGRESS. The retriable errors are retried inside `commit`; the rebalance error reaches the caller; the
/// committed offset never passes the processed one, and the next commit stores it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_31b_offset_commit_timeouts_and_rebalance_in_progress() {
    let mock = MockCluster::builder().topic("t", 1).start().await.unwrap();
    seed(&mock, "t", 0, 0, 20);
    let c = Consumer::new(
        cluster(&mock).await,
        group_config("g31b")
            .with_auto_commit(AutoCommit::Disabled)
            .with_max_poll_records(5),
    )
    .unwrap();
    c.subscribe(["t"]).unwrap();
    let got = read(&c, 5, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 5);
    mock.push_request_errors(
        ApiKey::OffsetCommit,
        &[
            KafkaCode::RequestTimedOut,
            KafkaCode::NotCoordinator,
            KafkaCode::CoordinatorLoadInProgress,
            KafkaCode::RequestTimedOut,
        ],
    );
    c.commit()
        .await
        .expect("REQUEST_TIMED_OUT, NOT_COORDINATOR, COORDINATOR_LOAD_IN_PROGRESS are retried");
    assert_eq!(mock.committed_offset("g31b", "t", 0), Some(5));
    let got = read(&c, 5, Duration::from_secs(10)).await;
    assert_eq!(got.first().map(|r| r.offset), Some(5));
    mock.push_request_errors(ApiKey::OffsetCommit, &[KafkaCode::RebalanceInProgress]);
    let e = c
        .commit()
        .await
        .expect_err("REBALANCE_IN_PROGRESS reaches the caller");
    assert_eq!(e.kafka_code(), Some(KafkaCode::RebalanceInProgress), "{e}");
    assert_eq!(
        mock.committed_offset("g31b", "t", 0),
        Some(5),
        "nothing committed by the refused commit"
    );
    // The member rejoins on the next polls; the (eager, default) rebalance revokes the
    // partition, so it resumes from the committed offset 5 (at-least-once: 5..10 were never
    // committed), and the commit then succeeds with exactly the records returned since.
    let mut processed = 5;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let recs = c.poll(Duration::from_millis(100)).await.unwrap();
        for r in recs.iter() {
            assert_eq!(r.offset, processed, "no gap, no re-read");
            processed += 1;
        }
        if c.commit().await.is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "commit after the rejoin");
    }
    assert_eq!(mock.committed_offset("g31b", "t", 0), Some(processed));
    c.close().await.unwrap();
}

type Seen = Arc<Mutex<Vec<(usize, i32, i64)>>>;

/// Scenario 30: six members with cooperative-sticky join and leave while 200 000 records are
/// read; one member stops polling for longer than `max.poll.interval` and loses its partitions;
/// auto-commit commits on revoke and on close. Every record is read; duplicates come only from
/// the member that lost its partitions without committing (its uncommitted window), and once
/// membership is stable nothing more is read twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_30_cooperative_churn_with_six_members_over_200k_records() {
    const PARTS: i32 = 8;
    const FIRST: usize = 200_000;
    const SECOND: usize = 12_000;
    let mock = MockCluster::builder()
        .topic("churn", PARTS)
        .start()
        .await
        .unwrap();
    // The records arrive in eight steps, one per membership change, so the churn happens
    // while they are being read.
    const STEPS: usize = 8;
    let per_step = FIRST / PARTS as usize / STEPS;
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let config = group_config("gchurn")
        .with_assignors(vec![Arc::new(CooperativeStickyAssignor)])
        .with_auto_commit(AutoCommit::Interval(Duration::from_millis(500)))
        .with_session_timeout(Duration::from_secs(3))
        .with_heartbeat_interval(Duration::from_millis(300))
        .with_max_poll_records(300);
    const SLOW: usize = 1;
    let start_member = |id: usize| {
        let (seen, mock_addrs) = (seen.clone(), mock.broker_addrs());
        let mut config = config.clone();
        if id == SLOW {
            config = config.with_max_poll_interval(Duration::from_secs(2));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let h = tokio::spawn(async move {
            let cluster = Cluster::connect(ClusterConfig::new(mock_addrs))
                .await
                .unwrap();
            let c = Consumer::new(cluster, config).unwrap();
            c.subscribe(["churn"]).unwrap();
            let mut polls = 0;
            let mut slept = false;
            while !s2.load(Ordering::Acquire) {
                let recs = c.poll(Duration::from_millis(100)).await.expect("poll");
                {
                    let mut s = seen.lock().unwrap();
                    for r in recs.iter() {
                        assert_eq!(text(r), format!("v{}", r.offset));
                        s.push((id, r.partition, r.offset));
                    }
                }
                if !recs.is_empty() {
                    polls += 1;
                }
                if id == SLOW && polls == 10 && !slept {
                    slept = true;
                    // Exceed max.poll.interval: the member leaves and loses its partitions.
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
            c.close().await.expect("close");
        });
        (stop, h)
    };
    let uniq = |seen: &Seen| {
        let s = seen.lock().unwrap();
        s.iter()
            .map(|(_, p, o)| (*p, *o))
            .collect::<BTreeSet<_>>()
            .len()
    };
    let started = Instant::now();
    let mut members: Vec<_> = (0..3).map(|id| (id, start_member(id))).collect();
    let mut next_id = 3;
    // Churn: a member joins or leaves every second until six have joined over time; then
    // membership is stable.
    for step in 0..STEPS {
        for p in 0..PARTS {
            seed(&mock, "churn", p, step * per_step, per_step);
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
        if step % 2 == 0 && next_id < 6 || members.len() < 2 {
            members.push((next_id, start_member(next_id)));
            next_id += 1;
        } else if members.len() > 2 {
            let i = members.iter().position(|(id, _)| *id != SLOW).unwrap();
            let (_, (stop, h)) = members.remove(i);
            stop.store(true, Ordering::Release);
            h.await.unwrap();
        }
    }
    let deadline = started + Duration::from_secs(60);
    let mut last_report = Instant::now();
    while uniq(&seen) < FIRST && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if last_report.elapsed() > Duration::from_secs(2) {
            last_report = Instant::now();
            eprintln!(
                "churn: {} of {FIRST} after {:?}",
                uniq(&seen),
                started.elapsed()
            );
        }
    }
    // Stable membership: more records, none of which may be read twice.
    let stable_len = seen.lock().unwrap().len();
    for p in 0..PARTS {
        seed(
            &mock,
            "churn",
            p,
            FIRST / PARTS as usize,
            SECOND / PARTS as usize,
        );
    }
    while uniq(&seen) < FIRST + SECOND && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (_, (stop, _)) in &members {
        stop.store(true, Ordering::Release);
    }
    for (_, (_, h)) in members {
        h.await.unwrap();
    }
    let s = seen.lock().unwrap();
    let mut first_reader: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    let mut dups: BTreeMap<usize, usize> = BTreeMap::new();
    for (id, p, o) in s.iter() {
        match first_reader.get(&(*p, *o)) {
            None => {
                first_reader.insert((*p, *o), *id);
            }
            Some(first) => *dups.entry(*first).or_default() += 1,
        }
    }
    // Every record the slow member read before losing its partitions may be read again (it had
    // not committed them); nothing else.
    let slow_read = s.iter().filter(|(id, _, _)| *id == SLOW).count();
    let later_dups = s[stable_len..]
        .iter()
        .filter(|(_, _, o)| *o >= (FIRST / PARTS as usize) as i64)
        .count()
        .saturating_sub(SECOND);
    eprintln!(
        "churn: {next_id} members, {} records in {:?}, duplicates by first reader {dups:?}",
        first_reader.len(),
        started.elapsed()
    );
    if first_reader.len() != FIRST + SECOND {
        let per = ((FIRST + SECOND) / PARTS as usize) as i64;
        for p in 0..PARTS {
            let missing: Vec<i64> = (0..per)
                .filter(|o| !first_reader.contains_key(&(p, *o)))
                .collect();
            if !missing.is_empty() {
                eprintln!(
                    "partition {p}: {} missing, first {:?} last {:?}",
                    missing.len(),
                    missing.first(),
                    missing.last()
                );
            }
        }
    }
    assert_eq!(first_reader.len(), FIRST + SECOND, "consumed ⊇ produced");
    for p in 0..PARTS {
        let n = first_reader.keys().filter(|(q, _)| *q == p).count();
        assert_eq!(n, (FIRST + SECOND) / PARTS as usize, "partition {p}");
    }
    assert!(
        dups.keys().all(|id| *id == SLOW),
        "only the member that lost its partitions leaves duplicates: {dups:?}"
    );
    assert!(dups.get(&SLOW).copied().unwrap_or(0) <= slow_read);
    assert_eq!(later_dups, 0, "no duplicates while membership is stable");
}

/// Scenario 31 (c): leaders move while records are produced and OffsetForLeaderEpoch is held
/// for 3 s after the move. The group consumer validates its positions with the new leaders
/// (KIP-320: one OffsetForLeaderEpoch per partition, answered late), follows them within the
/// session timeout, reads every record once, and its commits never pass what it processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario_31c_leader_moves_while_producing_with_offset_for_leader_epoch_delayed() {
    let mock = Arc::new(
        MockCluster::builder()
            .brokers(3)
            .topic("t", 3)
            .start()
            .await
            .unwrap(),
    );
    let held = Arc::new(mock.hold(|r| r.api_key == ApiKey::OffsetForLeaderEpoch));
    let c = Consumer::new(
        cluster(&mock).await,
        group_config("g31c").with_auto_commit(AutoCommit::Interval(Duration::from_millis(200))),
    )
    .unwrap();
    c.subscribe(["t"]).unwrap();
    let per = 3_000;
    let m2 = mock.clone();
    let producer = tokio::spawn(async move {
        for i in 0..per / 100 {
            for p in 0..3 {
                seed(&m2, "t", p, i * 100, 100);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut got: Vec<(i32, i64)> = Vec::new();
    let mut last_progress = Instant::now();
    let mut moved = false;
    let deadline = Instant::now() + Duration::from_secs(40);
    while got.len() < 3 * per && Instant::now() < deadline {
        let recs = c.poll(Duration::from_millis(100)).await.expect("poll");
        if !recs.is_empty() {
            last_progress = Instant::now();
        }
        assert!(
            last_progress.elapsed() < Duration::from_secs(6),
            "no progress for a session timeout after {} records",
            got.len()
        );
        for r in recs.iter() {
            assert_eq!(text(r), format!("v{}", r.offset));
            got.push((r.partition, r.offset));
        }
        // Processed offsets: commits never pass them.
        for p in 0..3 {
            let processed = got.iter().filter(|g| g.0 == p).count() as i64;
            if let Some(committed) = mock.committed_offset("g31c", "t", p) {
                assert!(
                    committed <= processed,
                    "p{p}: committed {committed} > {processed}"
                );
            }
        }
        if !moved && got.len() > per {
            moved = true;
            for p in 0..3 {
                let leader = mock.partition_leader("t", p).unwrap();
                let ids = mock.broker_ids();
                let next = ids[(ids.iter().position(|&b| b == leader).unwrap() + 1) % ids.len()];
                mock.set_partition_leader("t", p, next).unwrap();
            }
            let held = held.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                held.release();
            });
        }
    }
    producer.await.unwrap();
    assert!(moved);
    assert!(held.is_released());
    assert_eq!(
        held.matched(),
        3,
        "one validation per partition after the move, held, not repeated"
    );
    let mut by_part: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for (p, o) in got {
        by_part.entry(p).or_default().push(o);
    }
    for p in 0..3 {
        assert_eq!(
            by_part.remove(&p).unwrap_or_default(),
            (0..per as i64).collect::<Vec<_>>(),
            "partition {p}: every record once, in order"
        );
    }
    c.commit().await.unwrap();
    for p in 0..3 {
        assert_eq!(mock.committed_offset("g31c", "t", p), Some(per as i64));
    }
    c.close().await.unwrap();
}

/// Cooperative-sticky in a mixed group: a rekafka member and a librdkafka member (Python
/// confluent-kafka, `protocol-tests/interop/group_consume.py`) share a topic. Once the group
/// is stable their assignments are disjoint and cover every partition, and between them every
/// record is read. Needs the project's confluent-kafka (`scripts/setup.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_with_a_librdkafka_member_no_overlap_no_gap() {
    const PARTS: i32 = 6;
    let mock = MockCluster::builder()
        .topic("coop", PARTS)
        .start()
        .await
        .unwrap();
    for p in 0..PARTS {
        seed(&mock, "coop", p, 0, 200);
    }
    let a = Arc::new(
        Consumer::new(
            cluster(&mock).await,
            group_config("gmixed")
                .with_assignors(vec![Arc::new(CooperativeStickyAssignor)])
                .with_auto_commit(AutoCommit::Interval(Duration::from_millis(200))),
        )
        .unwrap(),
    );
    a.subscribe(["coop"]).unwrap();
    let seen: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (a, seen, stop) = (a.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let recs = a.poll(Duration::from_millis(100)).await.expect("poll");
                let mut s = seen.lock().unwrap();
                s.extend(recs.iter().map(|r| (r.partition, r.offset)));
            }
        })
    };
    wait_for("rekafka owns everything", Duration::from_secs(10), || {
        a.assignment().len() == PARTS as usize
    })
    .await;
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("protocol-tests/interop/group_consume.py");
    let bootstrap = mock.bootstrap();
    let python = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .env("PYTHONPATH", root.join(".tools/py"))
            .arg(script)
            .args([
                &bootstrap,
                "coop",
                "gmixed",
                "12",
                "--strategy",
                "cooperative-sticky",
            ])
            .output()
            .expect("python3")
    });
    // Wait for the librdkafka member to take partitions and the group to settle.
    wait_for(
        "a partition moves to librdkafka",
        Duration::from_secs(20),
        || a.assignment().len() < PARTS as usize,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ours: BTreeSet<i32> = a.assignment().iter().map(|tp| tp.partition).collect();
    let gen_stable = a.group_metadata().unwrap().1;
    // More records while both members hold partitions.
    for p in 0..PARTS {
        seed(&mock, "coop", p, 200, 200);
    }
    let out = python.await.unwrap();
    assert!(
        out.status.success(),
        "group_consume.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Release);
    poller.await.unwrap();
    a.close().await.unwrap();

    // librdkafka's view: replay its incremental events up to its last assignment.
    let mut theirs: BTreeSet<i32> = BTreeSet::new();
    let mut their_records: Vec<(i32, i64)> = Vec::new();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last_assigned = lines.iter().rposition(|v| v.get("assigned").is_some());
    for (i, v) in lines.iter().enumerate() {
        if let Some(ps) = v.get("assigned") {
            for p in ps.as_array().unwrap() {
                theirs.insert(p[1].as_i64().unwrap() as i32);
            }
        } else if let Some(ps) = v.get("revoked") {
            if Some(i) > last_assigned {
                continue; // the revocation on close
            }
            for p in ps.as_array().unwrap() {
                theirs.remove(&(p[1].as_i64().unwrap() as i32));
            }
        } else {
            their_records.push((
                v["partition"].as_i64().unwrap() as i32,
                v["offset"].as_i64().unwrap(),
            ));
        }
    }
    eprintln!("rekafka {ours:?} (generation {gen_stable}), librdkafka {theirs:?}");
    assert!(
        !ours.is_empty() && !theirs.is_empty(),
        "both members hold partitions"
    );
    assert!(
        ours.is_disjoint(&theirs),
        "no overlap: {ours:?} / {theirs:?}"
    );
    assert_eq!(
        ours.union(&theirs).copied().collect::<Vec<_>>(),
        (0..PARTS).collect::<Vec<_>>(),
        "no gap"
    );
    let mut all: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for r in seen.lock().unwrap().iter().chain(their_records.iter()) {
        *all.entry(*r).or_default() += 1;
    }
    for p in 0..PARTS {
        let n = all.keys().filter(|(q, _)| *q == p).count();
        assert_eq!(n, 400, "partition {p}: every record read");
    }
    // Records added while both held partitions were read by their owner only.
    let dups: Vec<_> = all
        .iter()
        .filter(|((_, o), n)| *o >= 200 && **n > 1)
        .collect();
    assert!(
        dups.is_empty(),
        "read twice while the group was stable: {dups:?}"
    );
}

/// The group coordinator's broker goes down while a group member consumes and auto-commits;
/// the coordinator moves to another broker meanwhile. The member finds the new coordinator,
/// keeps its generation, reads every record once and commits the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_broker_down_and_coordinator_moved_mid_consumption() {
    let mock = MockCluster::builder()
        .brokers(3)
        .topic("t", 3)
        .start()
        .await
        .unwrap();
    let per = 3_000;
    for p in 0..3 {
        seed(&mock, "t", p, 0, per);
    }
    let kind = rekafka::cluster::CoordinatorType::Group;
    let mut config = group_config("gcoord")
        .with_auto_commit(AutoCommit::Interval(Duration::from_millis(100)))
        .with_max_poll_records(50);
    config.max_partition_fetch_bytes = 2048;
    let c = Consumer::new(cluster(&mock).await, config).unwrap();
    c.subscribe(["t"]).unwrap();
    let mut got: Vec<(i32, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut downed = None;
    let mut generation = -1;
    while got.len() < 3 * per && Instant::now() < deadline {
        let recs = c.poll(Duration::from_millis(100)).await.expect("poll");
        got.extend(recs.iter().map(|r| (r.partition, r.offset)));
        if downed.is_none() && got.len() > 1_000 {
            generation = c.group_metadata().unwrap().1;
            let coord = mock.coordinator(kind, "gcoord");
            let other = *mock.broker_ids().iter().find(|&&b| b != coord).unwrap();
            mock.broker_down(coord).await.unwrap();
            mock.set_coordinator(kind, "gcoord", other).unwrap();
            downed = Some((coord, Instant::now()));
        }
        if let Some((b, at)) = downed
            && at.elapsed() > Duration::from_secs(2)
            && !mock.is_broker_up(b)
        {
            mock.broker_up(b).await.unwrap();
        }
    }
    assert!(downed.is_some());
    let mut count: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for g in &got {
        *count.entry(*g).or_default() += 1;
    }
    assert_eq!(count.len(), 3 * per, "every record read");
    let dups: usize = count.values().map(|n| n - 1).sum();
    // As in Kafka, the group survives a coordinator move (its state is the offsets topic's):
    // no rebalance, so nothing is read twice.
    assert_eq!(dups, 0, "duplicates");
    assert_eq!(c.group_metadata().unwrap().1, generation, "same generation");
    c.commit().await.unwrap();
    for p in 0..3 {
        assert_eq!(mock.committed_offset("gcoord", "t", p), Some(per as i64));
    }
    c.close().await.unwrap();
}

/// `auto.offset.reset=latest` under read_committed resets to the last stable offset, not the
/// high watermark: the records of a transaction open at reset time are read once it commits.
#[tokio::test]
async fn latest_reset_under_read_committed_is_the_last_stable_offset() {
    let mock = MockCluster::builder().topic("tx", 1).start().await.unwrap();
    seed(&mock, "tx", 0, 0, 3);
    let mut t = Txn::init(&mock, "open").await;
    t.begin("tx").await;
    t.send("tx", &[b"t0", b"t1"]).await; // 3, 4: open
    mock.append_records("tx", 0, &[(None, Some(b"after"))])
        .unwrap(); // 5
    let tp = TopicPartition::new("tx", 0);
    let c = assigned(
        &mock,
        assign_config()
            .with_isolation_level(IsolationLevel::ReadCommitted)
            .with_auto_offset_reset(OffsetReset::Latest),
        &[("tx", 0)],
        StartOffset::End,
    )
    .await;
    assert_eq!(c.position(&tp).await.unwrap(), 3, "the LSO");
    t.end(true).await; // marker 6
    let got = values(&read(&c, 3, Duration::from_secs(5)).await);
    assert_eq!(
        got,
        vec![(3, "t0".into()), (4, "t1".into()), (5, "after".into())]
    );
    c.close().await.unwrap();
}

/// `fetch_watermarks` (Java's `beginningOffsets`/`endOffsets`) retries retriable ListOffsets
/// errors — OFFSET_NOT_AVAILABLE while a new leader's high watermark catches up (seen on a
/// three-node Kafka right after topic creation), a leader that moved — and answers the real
/// watermarks; a non-retriable error is returned at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_watermarks_retries_retriable_list_offsets_errors() {
    let mock = MockCluster::builder()
        .brokers(2)
        .topic("w", 2)
        .start()
        .await
        .unwrap();
    seed(&mock, "w", 1, 0, 7);
    let c = assigned(&mock, assign_config(), &[], StartOffset::Beginning).await;
    let tp = TopicPartition::new("w", 1);
    mock.push_partition_errors(
        "w",
        1,
        ApiKey::ListOffsets,
        &[
            KafkaCode::OffsetNotAvailable,
            KafkaCode::NotLeaderOrFollower,
            KafkaCode::OffsetNotAvailable,
        ],
    );
    assert_eq!(c.fetch_watermarks(&tp).await.unwrap(), (0, 7));
    assert_eq!(
        count(&mock, ApiKey::ListOffsets),
        5,
        "three refused lookups, then earliest and latest"
    );
    mock.push_partition_errors(
        "w",
        1,
        ApiKey::ListOffsets,
        &[KafkaCode::TopicAuthorizationFailed],
    );
    let e = c.fetch_watermarks(&tp).await.unwrap_err();
    assert_eq!(
        e.kafka_code(),
        Some(KafkaCode::TopicAuthorizationFailed),
        "{e}"
    );
    c.close().await.unwrap();
}

/// Retriable Fetch partition errors (leadership, epochs, storage, an unknown partition during
/// a metadata change) on one partition of several, then a ListOffsets error while resolving a
/// position: the consumer recovers by itself, nothing is lost or read twice, and the other
/// partitions keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_fetch_partition_errors_recover_without_loss() {
    let mock = MockCluster::builder()
        .brokers(2)
        .topic("t", 4)
        .start()
        .await
        .unwrap();
    let per = 500;
    for p in 0..4 {
        seed(&mock, "t", p, 0, per);
    }
    mock.push_partition_errors(
        "t",
        1,
        ApiKey::ListOffsets,
        &[
            KafkaCode::LeaderNotAvailable,
            KafkaCode::NotLeaderOrFollower,
        ],
    );
    mock.push_partition_errors(
        "t",
        2,
        ApiKey::Fetch,
        &[
            KafkaCode::NotLeaderOrFollower,
            KafkaCode::UnknownTopicOrPartition,
            KafkaCode::FencedLeaderEpoch,
            KafkaCode::UnknownLeaderEpoch,
            KafkaCode::KafkaStorageError,
            KafkaCode::ReplicaNotAvailable,
        ],
    );
    let mut config = assign_config();
    config.max_partition_fetch_bytes = 1024;
    let tps: Vec<(&str, i32)> = (0..4).map(|p| ("t", p)).collect();
    let c = assigned(&mock, config, &tps, StartOffset::Beginning).await;
    let got = read(&c, 4 * per, Duration::from_secs(20)).await;
    let mut by_part: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in &got {
        by_part.entry(r.partition).or_default().push(r.offset);
    }
    for p in 0..4 {
        assert_eq!(
            by_part.remove(&p).unwrap_or_default(),
            (0..per as i64).collect::<Vec<_>>(),
            "partition {p}"
        );
    }
    assert!(read(&c, 1, Duration::from_millis(300)).await.is_empty());
    let naming = |api: ApiKey, p: i32| {
        mock.requests()
            .iter()
            .filter(|r| r.api_key == api && r.partitions.contains(&("t".to_owned(), p)))
            .count()
    };
    assert!(naming(ApiKey::ListOffsets, 1) >= 3, "ListOffsets retried");
    assert!(naming(ApiKey::Fetch, 2) >= 7, "Fetch retried");
    c.close().await.unwrap();
}

/// The coordinator drops the connection instead of answering a JoinGroup, a SyncGroup, a
/// Heartbeat, an OffsetFetch and an OffsetCommit: the group member reconnects and retries
/// each, reads every record once and commits where it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_requests_on_dropped_connections_are_retried() {
    let mock = MockCluster::builder().topic("t", 2).start().await.unwrap();
    for p in 0..2 {
        seed(&mock, "t", p, 0, 300);
    }
    for api in [
        ApiKey::JoinGroup,
        ApiKey::SyncGroup,
        ApiKey::OffsetFetch,
        ApiKey::OffsetCommit,
    ] {
        mock.close_connection_on(api, 1);
    }
    mock.close_connection_on(ApiKey::Heartbeat, 2);
    let c = Consumer::new(
        cluster(&mock).await,
        group_config("gdrop")
            .with_auto_commit(AutoCommit::Disabled)
            .with_heartbeat_interval(Duration::from_millis(100)),
    )
    .unwrap();
    c.subscribe(["t"]).unwrap();
    let got = read(&c, 600, Duration::from_secs(20)).await;
    let distinct: BTreeSet<(i32, i64)> = got.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(got.len(), 600, "no duplicates");
    assert_eq!(distinct.len(), 600, "every record");
    // Heartbeats flow (the dropped one included) while the member stays in its generation.
    let generation = c.group_metadata().unwrap().1;
    tokio::time::sleep(Duration::from_millis(600)).await;
    c.poll(Duration::from_millis(50)).await.unwrap();
    assert!(count(&mock, ApiKey::Heartbeat) >= 3);
    c.commit()
        .await
        .expect("a commit on a dropped connection is retried");
    assert_eq!(c.group_metadata().unwrap().1, generation, "no rebalance");
    for p in 0..2 {
        assert_eq!(mock.committed_offset("gdrop", "t", p), Some(300));
    }
    c.close().await.unwrap();
}

/// A Fetch held by the broker does not keep `close` from finishing, and a group member's
/// close leaves the group (the other member takes over at once, without waiting for the
/// session timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_with_a_fetch_in_flight_finishes_and_leaves_the_group() {
    let mock = MockCluster::builder().topic("t", 2).start().await.unwrap();
    seed(&mock, "t", 0, 0, 10);
    let a = Consumer::new(cluster(&mock).await, group_config("gclose")).unwrap();
    a.subscribe(["t"]).unwrap();
    let got = read(&a, 10, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 10);
    let b = Arc::new(Consumer::new(cluster(&mock).await, group_config("gclose")).unwrap());
    b.subscribe(["t"]).unwrap();
    let stop_b = Arc::new(AtomicBool::new(false));
    let hb = spawn_poller(b.clone(), stop_b.clone());
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(a.assignment().len() == 1 && b.assignment().len() == 1) {
        assert!(Instant::now() < deadline, "both members");
        a.poll(Duration::from_millis(50)).await.unwrap();
    }
    // The next fetches are parked at the broker.
    let held = mock.hold(|r| r.api_key == ApiKey::Fetch);
    held.wait_matched(1).await;
    a.poll(Duration::from_millis(50)).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), a.close())
        .await
        .expect("close returned while a fetch was held")
        .unwrap();
    drop(a);
    held.release();
    // B gets both partitions well within the 6 s session timeout: A left the group.
    let t0 = Instant::now();
    wait_for("B owns both", Duration::from_secs(5), || {
        b.assignment().len() == 2
    })
    .await;
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(
        mock.requests()
            .iter()
            .any(|r| r.api_key == ApiKey::LeaveGroup && r.group_id.as_deref() == Some("gclose"))
    );
    stop_b.store(true, Ordering::Release);
    hb.await.unwrap();
    b.close().await.unwrap();
}

/// Paused partitions a cooperative member keeps through a rebalance stay paused (as in Java);
/// the ones that moved are read by their new owner; `resume` releases the kept ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_survives_a_cooperative_rebalance_for_kept_partitions() {
    let mock = MockCluster::builder().topic("t", 4).start().await.unwrap();
    let config = group_config("gpause").with_assignors(vec![Arc::new(CooperativeStickyAssignor)]);
    let a = Consumer::new(cluster(&mock).await, config.clone()).unwrap();
    a.subscribe(["t"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.assignment().len() < 4 {
        assert!(Instant::now() < deadline);
        a.poll(Duration::from_millis(50)).await.unwrap();
    }
    a.pause(&a.assignment()).unwrap();
    for p in 0..4 {
        seed(&mock, "t", p, 0, 20);
    }
    let b = Arc::new(Consumer::new(cluster(&mock).await, config).unwrap());
    b.subscribe(["t"]).unwrap();
    let b_seen: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let stop_b = Arc::new(AtomicBool::new(false));
    let hb = {
        let (b, seen, stop) = (b.clone(), b_seen.clone(), stop_b.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let recs = b.poll(Duration::from_millis(100)).await.expect("poll");
                seen.lock()
                    .unwrap()
                    .extend(recs.iter().map(|r| (r.partition, r.offset)));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(a.assignment().len() == 2 && b_seen.lock().unwrap().len() == 40) {
        assert!(
            Instant::now() < deadline,
            "B reads the two partitions that moved"
        );
        let recs = a.poll(Duration::from_millis(100)).await.unwrap();
        assert!(recs.is_empty(), "a paused partition returned records");
    }
    let kept = a.assignment();
    assert_eq!(a.paused(), kept, "kept partitions are still paused");
    let moved: BTreeSet<i32> = b.assignment().iter().map(|tp| tp.partition).collect();
    let b_parts: BTreeSet<i32> = b_seen.lock().unwrap().iter().map(|(p, _)| *p).collect();
    assert_eq!(b_parts, moved);
    a.resume(&kept).unwrap();
    let got = read(&a, 40, Duration::from_secs(10)).await;
    assert_eq!(got.len(), 40);
    assert!(got.iter().all(|r| kept.contains(&r.topic_partition())));
    stop_b.store(true, Ordering::Release);
    hb.await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// Issue 22: auto-commits run as background tasks; one whose answer is lost is retried after
/// the request timeout, by which time later auto-commits have committed further. The retry
/// must not move the committed offset back: the offsets the broker receives never decrease,
/// and the last position is what stays committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_commits_are_ordered_and_never_move_back() {
    let mock = MockCluster::builder().topic("t", 1).start().await.unwrap();
    seed(&mock, "t", 0, 0, 30);
    let mut cc = ClusterConfig::new(mock.broker_addrs());
    cc.connection.request_timeout = Duration::from_millis(800);
    let cluster = Cluster::connect(cc).await.unwrap();
    let config = group_config("gauto")
        .with_auto_commit(AutoCommit::Interval(Duration::ZERO))
        .with_max_poll_records(10);
    let c = Consumer::new(cluster, config).unwrap();
    // The first auto-commit is applied but its answer is lost: the client times out and
    // retries it.
    mock.drop_responses(|r| r.api_key == ApiKey::OffsetCommit, 1);
    c.subscribe(["t"]).unwrap();
    let got = read(&c, 30, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 30);
    // One more poll: its auto-commit carries the final position.
    c.poll(Duration::ZERO).await.unwrap();
    let commits = |mock: &MockCluster| -> Vec<i64> {
        mock.requests()
            .iter()
            .filter(|r| r.api_key == ApiKey::OffsetCommit && r.group_id.as_deref() == Some("gauto"))
            .filter_map(|r| r.offsets.first().map(|o| o.2))
            .collect()
    };
    // Wait for the lost commit's retry (the same offset, sent a second time).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen = commits(&mock);
        if let Some(&first) = seen.first()
            && seen.iter().filter(|&&o| o == first).count() >= 2
            && mock.committed_offset("gauto", "t", 0) == Some(30)
        {
            break;
        }
        if let Some(&first) = seen.first()
            && seen.iter().filter(|&&o| o == first).count() >= 2
            && seen.windows(2).any(|w| w[1] < w[0])
        {
            break;
        }
        assert!(Instant::now() < deadline, "commits seen: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = commits(&mock);
    assert!(
        seen.windows(2).all(|w| w[0] <= w[1]),
        "committed offsets went back: {seen:?}"
    );
    assert_eq!(mock.committed_offset("gauto", "t", 0), Some(30), "{seen:?}");
    drop(c);
}

/// Issue 22: an OFFSET_OUT_OF_RANGE answer to a read-ahead fetch (at the end of what is already
/// buffered) must not throw the buffered records away: they were fetched at valid positions.
/// They are returned first, then the partition is reset (here to `latest`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_out_of_range_on_read_ahead_keeps_the_buffered_records() {
    let mock = MockCluster::builder().topic("t", 1).start().await.unwrap();
    seed(&mock, "t", 0, 0, 30);
    let mut config = assign_config().with_auto_offset_reset(OffsetReset::Latest);
    config.max_poll_records = 5;
    let c = assigned(&mock, config, &[("t", 0)], StartOffset::Beginning).await;
    let mut got = read(&c, 5, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 5);
    // Offsets 5..30 are buffered; the fetcher reads ahead at 30, which now answers
    // OFFSET_OUT_OF_RANGE.
    let mut events = c.events();
    let fetches = |mock: &MockCluster| {
        mock.requests()
            .iter()
            .filter(|r| r.api_key == ApiKey::Fetch)
            .count()
    };
    // The error goes to the fetch in flight (if the mock builds its answer after the push) or
    // to the next one. In the first case the partition waits for its buffer to drain and sends
    // no further fetch, so a new fetch is not required: wait for one, or for two seconds.
    mock.clear_requests();
    mock.push_partition_errors("t", 0, ApiKey::Fetch, &[KafkaCode::OffsetOutOfRange]);
    let deadline = Instant::now() + Duration::from_secs(2);
    while fetches(&mock) < 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let the error reach the client (fetch.max.wait is 50 ms, so the fetch in flight when
    // the error was pushed, or the next one, carries it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    got.extend(read(&c, 25, Duration::from_secs(5)).await);
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        (0..30).collect::<Vec<i64>>(),
        "no loss, no duplicate"
    );
    // The reset is applied by the poll after the buffered records are out (logged, and
    // announced).
    assert!(c.poll(Duration::from_millis(100)).await.unwrap().is_empty());
    let tp = TopicPartition::new("t", 0);
    assert_eq!(c.position(&tp).await.unwrap(), 30, "reset to latest");
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event")
        .unwrap();
    match event {
        ConsumerEvent::OffsetReset {
            partition,
            offset,
            reset,
            ..
        } => {
            assert_eq!(partition, tp);
            assert_eq!(offset, 30);
            assert_eq!(reset, OffsetReset::Latest);
        }
        other => panic!("unexpected event {other:?}"),
    }
    assert!(c.failed_partitions().is_empty());
    c.close().await.unwrap();
}

/// Issue 22: a partition whose fetch fails with an error no retry fixes is surfaced, not only
/// reported once in `poll`: a typed event, and a queryable state until a seek clears it; the
/// other partitions flow meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_partition_is_announced_and_queryable_until_sought() {
    let mock = MockCluster::builder().topic("t", 2).start().await.unwrap();
    seed(&mock, "t", 0, 0, 10);
    seed(&mock, "t", 1, 0, 10);
    mock.push_partition_errors(
        "t",
        1,
        ApiKey::Fetch,
        &[KafkaCode::TopicAuthorizationFailed],
    );
    let c = Consumer::new(cluster(&mock).await, assign_config()).unwrap();
    let mut events = c.events();
    c.assign([0, 1].map(|p| (TopicPartition::new("t", p), StartOffset::Beginning)))
        .unwrap();
    let failed = TopicPartition::new("t", 1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while c.failed_partitions().is_empty() || got.len() < 10 {
        assert!(Instant::now() < deadline, "no failure surfaced");
        got.extend(
            c.poll(Duration::from_millis(100))
                .await
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    assert!(got.iter().all(|r| r.partition == 0), "partition 0 flows");
    let f = c.failed_partitions();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].partition, failed);
    assert_eq!(
        f[0].kind,
        rekafka::consumer::FetchFailureKind::Authorization
    );
    assert_eq!(f[0].position, Some(0));
    match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        Ok(Ok(ConsumerEvent::PartitionFailed(e))) => {
            assert_eq!(e.partition, failed);
            assert_eq!(e.kind, rekafka::consumer::FetchFailureKind::Authorization);
        }
        other => panic!("expected PartitionFailed, got {other:?}"),
    }
    // A seek clears the failure; the partition is read again.
    c.seek(&failed, 0).unwrap();
    assert!(c.failed_partitions().is_empty());
    let again = read(&c, 10, Duration::from_secs(5)).await;
    assert_eq!(again.len(), 10);
    assert!(again.iter().all(|r| r.partition == 1));
    c.close().await.unwrap();
}

// ---- KIP-320: log truncation detection ----

/// Appends `n` records `<prefix><i>` (i from `from`) to one partition in batches of 10, so a
/// truncation can fall on any multiple of 10.
fn seed_batches(mock: &MockCluster, partition: i32, prefix: &str, from: usize, n: usize) {
    let vals: Vec<String> = (from..from + n).map(|i| format!("{prefix}{i}")).collect();
    for chunk in vals.chunks(10) {
        let kv: Vec<_> = chunk.iter().map(|v| (None, Some(v.as_bytes()))).collect();
        mock.append_records("t", partition, &kv).unwrap();
    }
}

/// The OffsetForLeaderEpoch requests naming `t`-`partition` in the request log.
fn validations(mock: &MockCluster, partition: i32) -> usize {
    mock.requests()
        .iter()
        .filter(|r| {
            r.api_key == ApiKey::OffsetForLeaderEpoch
                && r.partitions.contains(&("t".to_owned(), partition))
        })
        .count()
}

/// The next broker after the partition's leader.
fn other_broker(mock: &MockCluster, partition: i32) -> i32 {
    let leader = mock.partition_leader("t", partition).unwrap();
    let ids = mock.broker_ids();
    ids[(ids.iter().position(|&b| b == leader).unwrap() + 1) % ids.len()]
}

/// A consumer has read offsets 0..100 (leader epoch 0) when an unclean election makes a
/// replica whose log ends at 60 the leader, and 80 new records take offsets 60..140. The
/// consumer sees the new epoch, validates its position 100 with OffsetForLeaderEpoch, learns
/// that epoch 0 ends at 60 and, as Java does with a reset policy, repositions to the divergent
/// offset 60 with a `LogTruncated` event: it reads every new record, none skipped. Before
/// KIP-320 it went on from 100 and silently skipped the new records 60..100.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_truncation_after_unclean_election_repositions_to_the_divergent_offset() {
    let mock = MockCluster::builder()
        .brokers(3)
        .topic("t", 1)
        .start()
        .await
        .unwrap();
    seed_batches(&mock, 0, "old", 0, 100);
    let c = Consumer::new(
        cluster(&mock).await,
        assign_config().with_auto_offset_reset(OffsetReset::Earliest),
    )
    .unwrap();
    let mut events = c.events();
    let tp = TopicPartition::new("t", 0);
    c.assign([(tp.clone(), StartOffset::Beginning)]).unwrap();
    let first = read(&c, 100, Duration::from_secs(10)).await;
    assert_eq!(
        values(&first),
        (0..100).map(|i| (i, format!("old{i}"))).collect::<Vec<_>>()
    );
    assert!(first.iter().all(|r| r.leader_epoch == Some(0)));
    assert_eq!(
        validations(&mock, 0),
        0,
        "no validation without a leader change"
    );

    let end = mock
        .elect_unclean_leader("t", 0, other_broker(&mock, 0), 60)
        .unwrap();
    assert_eq!(end, 60);
    seed_batches(&mock, 0, "new", 60, 80);
    let after = read(&c, 80, Duration::from_secs(10)).await;
    assert_eq!(
        values(&after),
        (60..140)
            .map(|i| (i, format!("new{i}")))
            .collect::<Vec<_>>(),
        "every record of the new log from the divergent offset on, once"
    );
    assert!(after.iter().all(|r| r.leader_epoch == Some(1)));
    match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
        Ok(Ok(ConsumerEvent::LogTruncated {
            partition,
            position,
            position_epoch,
            divergent_offset,
            reset,
        })) => {
            assert_eq!(partition, tp);
            assert_eq!((position, position_epoch), (100, 0));
            assert_eq!(divergent_offset, Some(60));
            assert_eq!(reset, OffsetReset::Earliest);
        }
        other => panic!("expected LogTruncated, got {other:?}"),
    }
    assert!(read(&c, 1, Duration::from_millis(300)).await.is_empty());
    assert_eq!(
        validations(&mock, 0),
        1,
        "one validation for one leader change"
    );
    assert_eq!(c.position(&tp).await.unwrap(), 140);
    c.close().await.unwrap();
}

/// The same truncation with `auto.offset.reset=none`: the partition fails with a typed
/// `LogTruncation` error naming the divergent offset (in `poll`'s errors, `failed_partitions`
/// and a `PartitionFailed` event), nothing of the new log is returned, and a seek resumes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_truncation_with_reset_none_fails_the_partition_with_a_typed_error() {
    let mock = MockCluster::builder()
        .brokers(2)
        .topic("t", 2)
        .start()
        .await
        .unwrap();
    seed_batches(&mock, 0, "old", 0, 50);
    seed_batches(&mock, 1, "p1-", 0, 20);
    let c = Consumer::new(
        cluster(&mock).await,
        assign_config().with_auto_offset_reset(OffsetReset::None),
    )
    .unwrap();
    let mut events = c.events();
    let tp = TopicPartition::new("t", 0);
    c.assign([0, 1].map(|p| (TopicPartition::new("t", p), StartOffset::Beginning)))
        .unwrap();
    assert_eq!(read(&c, 70, Duration::from_secs(10)).await.len(), 70);

    mock.elect_unclean_leader("t", 0, other_broker(&mock, 0), 30)
        .unwrap();
    seed_batches(&mock, 0, "new", 30, 40);
    seed_batches(&mock, 1, "p1-", 20, 10);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    let mut errors = Vec::new();
    while errors.is_empty() || got.len() < 10 {
        assert!(Instant::now() < deadline, "no truncation surfaced");
        let recs = c.poll(Duration::from_millis(100)).await.unwrap();
        errors.extend(recs.errors().iter().cloned());
        got.extend(recs.iter().cloned());
    }
    assert!(
        got.iter().all(|r| r.partition == 1),
        "nothing of the truncated partition's new log: {:?}",
        values(&got)
    );
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].0, tp);
    assert_eq!(
        errors[0].1.kind(),
        &rekafka::ErrorKind::LogTruncation {
            divergent_offset: Some(30)
        }
    );
    let f = c.failed_partitions();
    assert_eq!(f.len(), 1);
    assert_eq!(
        f[0].kind,
        rekafka::consumer::FetchFailureKind::LogTruncation
    );
    assert_eq!(f[0].position, Some(50));
    let mut failed_event = false;
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_secs(2), events.recv()).await {
        match e {
            ConsumerEvent::PartitionFailed(f) => {
                assert_eq!(f.partition, tp);
                assert_eq!(f.kind, rekafka::consumer::FetchFailureKind::LogTruncation);
                failed_event = true;
                break;
            }
            ConsumerEvent::LogTruncated { .. } => panic!("no reset under auto.offset.reset=none"),
            _ => {}
        }
    }
    assert!(failed_event, "a PartitionFailed event");
    // The application decides: it seeks to the divergent offset and reads the new log.
    c.seek(&tp, 30).unwrap();
    let again = read(&c, 40, Duration::from_secs(10)).await;
    assert_eq!(
        values(&again),
        (30..70).map(|i| (i, format!("new{i}"))).collect::<Vec<_>>()
    );
    c.close().await.unwrap();
}

/// Clean leader moves (no truncation) under a group consumer with auto-commit: each move costs
/// one OffsetForLeaderEpoch per partition (no validation storm, none on metadata refreshes
/// without a new epoch), stale-epoch answers to the validation itself (FENCED_LEADER_EPOCH,
/// UNKNOWN_LEADER_EPOCH, NOT_LEADER_OR_FOLLOWER) and to fetches are retried after a metadata
/// refresh, no event is raised, and every record is read once in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_moves_validate_once_and_stale_epoch_errors_are_retried() {
    let mock = MockCluster::builder()
        .brokers(3)
        .topic("t", 3)
        .start()
        .await
        .unwrap();
    // 100 records per partition at the start and after each of three leader moves.
    let per = 100;
    for p in 0..3 {
        seed_batches(&mock, p, "v", 0, per);
    }
    let c = Consumer::new(cluster(&mock).await, group_config("kip320")).unwrap();
    let mut events = c.events();
    c.subscribe(["t"]).unwrap();
    let mut got: Vec<ConsumerRecord> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    for round in 1..=3 {
        while got.len() < round * 3 * per && Instant::now() < deadline {
            got.extend(read(&c, 1, Duration::from_millis(200)).await);
        }
        if round == 2 {
            mock.push_partition_errors(
                "t",
                1,
                ApiKey::OffsetForLeaderEpoch,
                &[
                    KafkaCode::FencedLeaderEpoch,
                    KafkaCode::UnknownLeaderEpoch,
                    KafkaCode::NotLeaderOrFollower,
                ],
            );
            mock.push_partition_errors(
                "t",
                2,
                ApiKey::Fetch,
                &[KafkaCode::FencedLeaderEpoch, KafkaCode::UnknownLeaderEpoch],
            );
        }
        for p in 0..3 {
            mock.set_partition_leader("t", p, other_broker(&mock, p))
                .unwrap();
            seed_batches(&mock, p, "v", round * per, per);
        }
    }
    while got.len() < 4 * 3 * per && Instant::now() < deadline {
        got.extend(read(&c, 4 * 3 * per - got.len(), Duration::from_millis(200)).await);
    }
    let mut by_part: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for r in &got {
        by_part
            .entry(r.partition)
            .or_default()
            .push((r.offset, text(r)));
    }
    for p in 0..3 {
        assert_eq!(
            by_part.remove(&p).unwrap_or_default(),
            (0..4 * per as i64)
                .map(|i| (i, format!("v{i}")))
                .collect::<Vec<_>>(),
            "partition {p}: every record once, in order"
        );
    }
    // Idle polls (metadata refreshes, fetches under the same epoch) validate nothing more.
    assert!(read(&c, 1, Duration::from_secs(1)).await.is_empty());
    assert_eq!(
        validations(&mock, 0),
        3,
        "p0: one validation per leader move"
    );
    assert_eq!(
        validations(&mock, 2),
        3,
        "p2: one validation per leader move"
    );
    assert_eq!(
        validations(&mock, 1),
        6,
        "p1: one per move, plus the three stale-epoch answers retried"
    );
    if let Ok(e) = events.try_recv() {
        panic!("no event without a truncation: {e:?}");
    }
    c.close().await.unwrap();
}

/// A broker asked only for partitions it has nothing new for parks the Fetch for
/// `fetch.max.wait.ms` and takes no other Fetch of the consumer meanwhile. So a partition with
/// nothing new is not fetched alone while another partition of the same broker is held back by
/// its read-ahead buffer: the held partition could not be fetched again until the wait was over
/// (stalls of up to 500 ms in the middle of a backlog, at the defaults).
#[tokio::test]
async fn a_caught_up_partition_is_not_fetched_alone_while_its_brokers_backlog_waits_for_a_poll() {
    let mock = MockCluster::builder()
        .brokers(1)
        .topic("t", 2)
        .start()
        .await
        .unwrap();
    seed(&mock, "t", 0, 0, 5000);
    let mut config = assign_config();
    // One batch (500 records) per fetch fills partition 0's read-ahead at once.
    config.max_partition_fetch_bytes = 1024;
    let c = assigned(&mock, config, &[("t", 0), ("t", 1)], StartOffset::Beginning).await;
    let mut got = c
        .poll(Duration::ZERO)
        .await
        .unwrap()
        .iter()
        .cloned()
        .collect::<Vec<_>>();
    // The application is busy: the read-ahead fills and partition 0 is held.
    tokio::time::sleep(Duration::from_millis(400)).await;
    got.extend(read(&c, 5000 - got.len(), Duration::from_secs(20)).await);
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (0..5000).collect::<Vec<i64>>());
    assert!(got.iter().all(|r| r.partition == 0));
    let fetches: Vec<Vec<(String, i32)>> = mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key == ApiKey::Fetch)
        .map(|r| r.partitions)
        .collect();
    assert!(fetches.len() >= 10, "{} fetches", fetches.len());
    let alone = fetches
        .iter()
        .filter(|p| p.as_slice() == [("t".to_string(), 1)])
        .count();
    assert_eq!(alone, 0, "fetches of partition 1 alone: {fetches:?}");
    c.close().await.unwrap();
}

//! The listener container in exactly-once mode (a transactional producer), on the mock cluster,
//! whose read_committed hides aborted records as Kafka does.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, IsolationLevel, OffsetReset, StartOffset, TopicPartition,
};
use rekafka::listener::{
    BatchFailure, CommonErrorHandler, DeadLetterInfo, DeadLetterPublisher, DefaultErrorHandler,
    Disposition, FixedBackOff, HandlerError, ListenerConsumerRecord, ListenerContainer,
    ListenerRecord, RecordFailure, RecoveryHalt, RecoveryPolicy, StopReason,
    TransactionalDeadLetters,
};
use rekafka::mock::MockCluster;
use rekafka::producer::{Producer, ProducerConfig, Record};
use rekafka::transaction::TransactionalProducer;

const IN: &str = "in";
const OUT: &str = "out";
const PARTITIONS: i32 = 3;

#[derive(Debug, thiserror::Error)]
#[error("cannot transform {0}")]
struct Poison(String);

async fn cluster(mock: &MockCluster) -> Cluster {
    Cluster::connect(ClusterConfig::new(mock.broker_addrs()))
        .await
        .expect("connect")
}

async fn fill(mock: &MockCluster, n: usize) {
    let producer = Producer::new(cluster(mock).await, ProducerConfig::default())
        .await
        .expect("producer");
    let mut pending = Vec::new();
    for i in 0..n {
        pending.push(
            producer
                .send(
                    Record::new(IN)
                        .with_partition((i % PARTITIONS as usize) as i32)
                        .with_key(format!("k{i}"))
                        .with_value(format!("v{i}")),
                )
                .await
                .expect("send"),
        );
    }
    for p in pending {
        p.await.expect("delivered");
    }
    producer.close().await;
}

async fn txn_producer(mock: &MockCluster, id: &str) -> Arc<TransactionalProducer> {
    let p = TransactionalProducer::new(
        cluster(mock).await,
        ProducerConfig::default().with_transactional_id(id),
    )
    .expect("producer");
    p.init_transactions().await.expect("init");
    Arc::new(p)
}

/// Values a read_committed consumer sees in `topic`.
async fn read_committed(
    mock: &MockCluster,
    topic: &str,
) -> Vec<(String, Vec<rekafka::protocol::record::Header>)> {
    let consumer = Consumer::new(
        cluster(mock).await,
        ConsumerConfig::new()
            .with_auto_commit(AutoCommit::Disabled)
            .with_isolation_level(IsolationLevel::ReadCommitted)
            .with_fetch_max_wait(Duration::from_millis(20)),
    )
    .expect("consumer");
    consumer
        .assign((0..PARTITIONS).map(|p| (TopicPartition::new(topic, p), StartOffset::Beginning)))
        .expect("assign");
    let mut out = Vec::new();
    let mut idle = Instant::now();
    while idle.elapsed() < Duration::from_millis(500) {
        let recs = consumer
            .poll(Duration::from_millis(100))
            .await
            .expect("poll");
        if !recs.is_empty() {
            idle = Instant::now();
        }
        for r in recs.iter() {
            out.push((
                String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned(),
                r.headers.iter().collect(),
            ));
        }
    }
    consumer.close().await.ok();
    out
}

fn consumer_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_auto_commit(AutoCommit::Disabled)
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_isolation_level(IsolationLevel::ReadCommitted)
        .with_session_timeout(Duration::from_secs(6))
        .with_fetch_max_wait(Duration::from_millis(20))
}

/// Copies `in` to `out` (value uppercased) in transactions; the record `v{poison}` fails
/// every time and goes to `in-dlt` inside the transaction that commits its offset.
async fn start_copier(
    mock: &MockCluster,
    producer: Arc<TransactionalProducer>,
    group: &str,
    poison: &'static str,
    fail_once: Arc<Mutex<HashSet<String>>>,
    deliveries: Arc<AtomicU32>,
) -> rekafka::listener::ContainerHandle {
    let consumer = Consumer::new(cluster(mock).await, consumer_config(group)).expect("consumer");
    consumer.subscribe([IN]).expect("subscribe");
    let layout = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster(mock).await)
        .group(group)
        .build()
        .await
        .expect("dead letters");
    let p = producer.clone();
    ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let (p, fail_once, deliveries) = (p.clone(), fail_once.clone(), deliveries.clone());
            async move {
                let value = r.value_str().unwrap_or_default().to_owned();
                // The output is sent before the failure: it must never become visible.
                // The transaction's commit waits for this delivery.
                let _delivery = p
                    .send(
                        Record::new(OUT)
                            .with_partition(r.partition())
                            .with_value(value.to_uppercase()),
                    )
                    .await
                    .map_err(|e| Box::new(e.error) as HandlerError)?;
                if value == poison {
                    let n = deliveries.fetch_add(1, Ordering::SeqCst);
                    if std::env::var("DEBUG_EVENTS").is_ok() {
                        eprintln!("POISON delivery {n} offset {}", r.offset());
                    }
                    return Err(Box::new(Poison(value)) as HandlerError);
                }
                // Some records fail once (a transient error): their transaction aborts and the
                // whole poll is redone.
                if value.ends_with('7') && fail_once.lock().unwrap().insert(value.clone()) {
                    return Err(Box::new(Poison(value)) as HandlerError);
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(20), 2))
                .recoverer(TransactionalDeadLetters::new(layout, producer.clone())),
        )
        .transactional(producer)
        .poll_timeout(Duration::from_millis(200))
        .start()
        .expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_copy_with_retries_and_a_dead_letter_in_the_transaction() {
    const N: usize = 600;
    let mock = MockCluster::builder()
        .brokers(3)
        .topic(IN, PARTITIONS)
        .topic(OUT, PARTITIONS)
        .topic("in-dlt", PARTITIONS)
        .start()
        .await
        .expect("mock");
    fill(&mock, N).await;
    let poison = "v100";
    let fail_once: Arc<Mutex<HashSet<String>>> = Arc::default();
    let deliveries = Arc::new(AtomicU32::new(0));
    let producer = txn_producer(&mock, "copier-1").await;
    let handle = start_copier(
        &mock,
        producer.clone(),
        "copy",
        poison,
        fail_once.clone(),
        deliveries.clone(),
    )
    .await;

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = (0..PARTITIONS).all(|p| mock.committed_offset("copy", IN, p) == Some(200));
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "not all offsets committed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handle.stop().await, StopReason::Normal);

    // Every input exactly once in the output, except the poison record; never its output.
    let out = read_committed(&mock, OUT).await;
    let mut values: Vec<String> = out.into_iter().map(|(v, _)| v).collect();
    values.sort();
    let mut expected: Vec<String> = (0..N)
        .map(|i| format!("V{i}"))
        .filter(|v| v != "V100")
        .collect();
    expected.sort();
    assert_eq!(values.len(), expected.len(), "no duplicates, nothing lost");
    assert_eq!(values, expected);
    // 1 delivery + 2 retries of the poison record, then one dead letter.
    assert_eq!(deliveries.load(Ordering::SeqCst), 3);
    let dlt = read_committed(&mock, "in-dlt").await;
    assert_eq!(dlt.len(), 1, "exactly one dead letter");
    assert_eq!(dlt[0].0, poison);
    let info = DeadLetterInfo::from_headers(&dlt[0].1);
    assert_eq!(info.original_topic.as_deref(), Some(IN));
    assert_eq!(info.exception_fqcn.as_deref(), Some("Poison"));
    assert!(
        !fail_once.lock().unwrap().is_empty(),
        "transient failures happened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_midway_keeps_exactly_once() {
    const N: usize = 900;
    let mock = MockCluster::builder()
        .brokers(1)
        .topic(IN, PARTITIONS)
        .topic(OUT, PARTITIONS)
        .topic("in-dlt", PARTITIONS)
        .start()
        .await
        .expect("mock");
    fill(&mock, N).await;
    let fail_once: Arc<Mutex<HashSet<String>>> = Arc::default();
    let deliveries = Arc::new(AtomicU32::new(0));
    // First instance: stopped after some progress.
    let p1 = txn_producer(&mock, "copier").await;
    let h1 = start_copier(
        &mock,
        p1.clone(),
        "copy2",
        "none",
        fail_once.clone(),
        deliveries.clone(),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while (0..PARTITIONS)
        .map(|p| mock.committed_offset("copy2", IN, p).unwrap_or(0))
        .sum::<i64>()
        < 100
    {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h1.stop().await;
    // Second instance, same transactional id (fences the first), continues.
    let p2 = txn_producer(&mock, "copier").await;
    let h2 = start_copier(&mock, p2, "copy2", "none", fail_once, deliveries).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !(0..PARTITIONS).all(|p| mock.committed_offset("copy2", IN, p) == Some(300)) {
        assert!(Instant::now() < deadline, "not finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h2.stop().await;
    // The first producer is a zombie now: its next transaction cannot commit and its records
    // never become visible.
    let zombie = async {
        p1.begin_transaction()?;
        let d = p1
            .send(Record::new(OUT).with_partition(0).with_value("ZOMBIE"))
            .await
            .map_err(|e| e.error)?;
        drop(d);
        p1.commit_transaction().await
    }
    .await;
    let err = zombie.expect_err("a fenced producer must not commit");
    assert!(err.is_fatal(), "fenced is fatal: {err}");
    let mut values: Vec<String> = read_committed(&mock, OUT)
        .await
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    values.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("V{i}")).collect();
    expected.sort();
    assert_eq!(
        values, expected,
        "every input in exactly one committed transaction"
    );
}

/// Two members copy `in` to `out` in transactions; one is killed mid-way (its runtime dropped:
/// no commit, no leave, an open transaction) and a replacement with the same transactional id
/// takes over. Every input ends up in exactly one committed transaction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_killed_and_restarted_keeps_exactly_once() {
    const N: usize = 3000;
    let mock = MockCluster::builder()
        .brokers(1)
        .topic(IN, PARTITIONS)
        .topic(OUT, PARTITIONS)
        .topic("in-dlt", PARTITIONS)
        .start()
        .await
        .expect("mock");
    fill(&mock, N).await;
    let bootstrap = mock.broker_addrs();
    // Member A runs on a runtime of its own, so that dropping it kills A outright.
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let (kill_tx, kill_rx) = std::sync::mpsc::channel::<()>();
    let addrs = bootstrap.clone();
    let a = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let cluster = Cluster::connect(ClusterConfig::new(addrs))
                .await
                .expect("connect");
            let p = TransactionalProducer::new(
                cluster.clone(),
                ProducerConfig::default().with_transactional_id("member-a"),
            )
            .expect("producer");
            p.init_transactions().await.expect("init");
            let p = Arc::new(p);
            let consumer = Consumer::new(cluster, consumer_config("copy3")).expect("consumer");
            consumer.subscribe([IN]).expect("subscribe");
            let out = p.clone();
            let handle = ListenerContainer::builder(consumer)
                .record_handler(move |r: ListenerConsumerRecord| {
                    let out = out.clone();
                    async move {
                        let value = r.value_str().unwrap_or_default().to_uppercase();
                        let _delivery = out
                            .send(
                                Record::new(OUT)
                                    .with_partition(r.partition())
                                    .with_value(value),
                            )
                            .await
                            .map_err(|e| Box::new(e.error) as HandlerError)?;
                        // Slow enough that the kill lands mid-stream.
                        tokio::time::sleep(Duration::from_micros(200)).await;
                        Ok(())
                    }
                })
                .transactional(p)
                .poll_timeout(Duration::from_millis(200))
                .start()
                .expect("start");
            let _ = started_tx.send(());
            // Park until killed; the handle is never stopped.
            let _ = tokio::task::spawn_blocking(move || kill_rx.recv()).await;
            std::mem::forget(handle);
        });
        // Dropping the runtime here cancels every task of member A mid-flight.
        drop(rt);
    });
    started_rx.recv().expect("A started");
    let fail_once: Arc<Mutex<HashSet<String>>> = Arc::default();
    let none = Arc::new(AtomicU32::new(0));
    let pb = txn_producer(&mock, "member-b").await;
    let b = start_copier(&mock, pb, "copy3", "none", fail_once.clone(), none.clone()).await;
    // Let both make progress, then kill A.
    let deadline = Instant::now() + Duration::from_secs(30);
    while (0..PARTITIONS)
        .map(|p| mock.committed_offset("copy3", IN, p).unwrap_or(0))
        .sum::<i64>()
        < 600
    {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = kill_tx.send(());
    a.join().expect("A's thread");
    // A replacement for A (same transactional id: fences and aborts A's open transaction).
    let pa = txn_producer(&mock, "member-a").await;
    let a2 = start_copier(&mock, pa, "copy3", "none", fail_once, none).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    while !(0..PARTITIONS).all(|p| mock.committed_offset("copy3", IN, p) == Some((N / 3) as i64)) {
        assert!(
            Instant::now() < deadline,
            "not finished: {:?}",
            (0..PARTITIONS)
                .map(|p| mock.committed_offset("copy3", IN, p))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a2.stop().await;
    b.stop().await;
    let mut values: Vec<String> = read_committed(&mock, OUT)
        .await
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    values.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("V{i}")).collect();
    expected.sort();
    assert_eq!(values.len(), N, "no duplicates, nothing lost");
    assert_eq!(values, expected);
}

/// A handler that halts the partition at every failure, under a policy whose halts stop the
/// container.
struct HaltAndStop;

impl<R: ListenerRecord> CommonErrorHandler<R> for HaltAndStop {
    fn handle_one(&self, _failure: &mut RecordFailure<'_, R>) -> Disposition {
        Disposition::HaltPartition
    }

    fn handle_batch(&self, _failure: &mut BatchFailure<'_, R>) -> Disposition {
        Disposition::HaltPartition
    }

    fn recovery_policy(&self) -> RecoveryPolicy {
        let mut policy = RecoveryPolicy::default();
        policy.on_recovery_halt = RecoveryHalt::StopContainer;
        policy
    }
}

/// In exactly-once mode a partition halted after a rollback stops the container when the
/// policy says `RecoveryHalt::StopContainer`, as the record and batch paths do; the failed
/// record's offset is never committed and its output never becomes visible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halt_after_rollback_stops_the_container_when_the_policy_says_so() {
    let mock = MockCluster::builder()
        .topic(IN, PARTITIONS)
        .topic(OUT, PARTITIONS)
        .start()
        .await
        .expect("mock");
    fill(&mock, 30).await;
    let producer = txn_producer(&mock, "halting").await;
    let consumer =
        Consumer::new(cluster(&mock).await, consumer_config("halting")).expect("consumer");
    consumer.subscribe([IN]).expect("subscribe");
    let p = producer.clone();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let p = p.clone();
            async move {
                let value = r.value_str().unwrap_or_default().to_owned();
                let _delivery = p
                    .send(
                        Record::new(OUT)
                            .with_partition(r.partition())
                            .with_value(value.clone()),
                    )
                    .await
                    .map_err(|e| Box::new(e.error) as HandlerError)?;
                if value == "v4" {
                    return Err(Box::new(Poison(value)) as HandlerError);
                }
                Ok(())
            }
        })
        .error_handler(HaltAndStop)
        .transactional(producer)
        .poll_timeout(Duration::from_millis(200))
        .start()
        .expect("start");
    let reason = tokio::time::timeout(Duration::from_secs(30), handle.join())
        .await
        .expect("the halt stops the container");
    assert_eq!(reason, StopReason::Abnormal);
    // v4 is record 1 of partition 1 (records go round the partitions): its offset is not
    // committed past it, and its output is not visible.
    let committed = mock.committed_offset("halting", IN, 1).unwrap_or(0);
    assert!(
        committed <= 1,
        "committed past the halted record: {committed}"
    );
    let out = read_committed(&mock, OUT).await;
    assert!(
        out.iter().all(|(v, _)| v != "v4"),
        "the halted record's output became visible"
    );
}

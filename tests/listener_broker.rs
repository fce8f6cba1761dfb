//! The listener container over rekafka's own consumer and producer, against the test broker
//! (Tansu, or the mock cluster with `REKAFKA_TEST_BROKER=mock`).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{cluster, create_topic, read_committed_values, unique};
use rekafka::cluster::Cluster;
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use rekafka::listener::{
    AckMode, ContainerEvent, DefaultErrorHandler, DeliveryAttemptHeader, FixedBackOff,
    HandlerError, ListenerConsumerRecord, ListenerContainer, ListenerRecord, RecovererFn,
    SharedError, StopReason,
};
use rekafka::producer::{Producer, ProducerConfig, Record};

fn consumer_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_auto_commit(AutoCommit::Disabled)
        .with_session_timeout(Duration::from_secs(6))
        .with_heartbeat_interval(Duration::from_millis(1000))
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(50))
}

/// Produces `n` records round-robin over `partitions`; record `i` has key `poison-i` when
/// `poison(i)`, else `k-i`. Returns each partition's log end (last delivered offset + 1).
async fn produce(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    n: usize,
    poison: impl Fn(usize) -> bool,
) -> Vec<i64> {
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let mut futures = Vec::with_capacity(n);
    for i in 0..n {
        let key = if poison(i) {
            format!("poison-{i}")
        } else {
            format!("k-{i}")
        };
        let r = Record::new(topic)
            .with_partition((i % partitions as usize) as i32)
            .with_key(key)
            .with_value(format!("v-{i}"));
        futures.push(producer.send(r).await.expect("enqueue"));
    }
    let mut ends = vec![0i64; partitions as usize];
    for f in futures {
        let md = f.await.expect("delivered");
        assert!(md.offset >= 0, "offset known");
        let e = &mut ends[md.partition as usize];
        *e = (*e).max(md.offset + 1);
    }
    producer.close().await;
    ends
}

fn is_poison(r: &ListenerConsumerRecord) -> bool {
    r.key_str().is_some_and(|k| k.starts_with("poison"))
}

/// Delivery-attempt header values seen per (partition, offset).
type Deliveries = HashMap<(i32, i64), Vec<u32>>;

#[derive(Debug, thiserror::Error)]
#[error("poison record")]
struct Poison;

async fn committed(
    cluster: &Cluster,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Vec<Option<i64>> {
    let c = Consumer::new(cluster.clone(), consumer_config(group)).expect("consumer");
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let m = c.committed(&tps).await.expect("committed");
    c.close().await.ok();
    tps.iter()
        .map(|tp| m.get(tp).cloned().flatten().map(|o| o.offset))
        .collect()
}

async fn poison_run(ack_mode: AckMode) {
    const N: usize = 10_000;
    const PARTITIONS: i32 = 3;
    let cluster = cluster().await;
    let topic = unique("lst-poison");
    let group = unique("lst-poison-g");
    create_topic(&cluster, &topic, PARTITIONS).await;
    // 100 poison records, spread over the partitions.
    let ends = produce(&cluster, &topic, PARTITIONS, N, |i| i % 100 == 42).await;

    let consumer = Consumer::new(cluster.clone(), consumer_config(&group)).expect("consumer");
    consumer.subscribe([topic.clone()]).expect("subscribe");
    let handled: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let poison_deliveries: Arc<Mutex<Deliveries>> = Arc::default();
    let recovered: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let (h, pd, rc) = (
        handled.clone(),
        poison_deliveries.clone(),
        recovered.clone(),
    );
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let (h, pd) = (h.clone(), pd.clone());
            async move {
                if is_poison(&r) {
                    let attempt = r
                        .header("kafka_deliveryAttempt")
                        .flatten()
                        .and_then(|v| <[u8; 4]>::try_from(&v[..]).ok())
                        .map(u32::from_be_bytes)
                        .unwrap_or(0);
                    pd.lock()
                        .unwrap()
                        .entry((r.partition(), r.offset()))
                        .or_default()
                        .push(attempt);
                    return Err(Box::new(Poison) as HandlerError);
                }
                h.lock().unwrap().push((r.partition(), r.offset()));
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(10), 3))
                .delivery_attempt_header(DeliveryAttemptHeader::On)
                .recoverer(RecovererFn(
                    move |r: ListenerConsumerRecord, _e: SharedError| {
                        let rc = rc.clone();
                        async move {
                            rc.lock().unwrap().push((r.partition(), r.offset()));
                            Ok::<(), HandlerError>(())
                        }
                    },
                )),
        )
        .ack_mode(ack_mode)
        .poll_timeout(Duration::from_millis(500))
        .start()
        .expect("start");

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done = handled.lock().unwrap().len() + recovered.lock().unwrap().len();
        if done >= N {
            break;
        }
        assert!(Instant::now() < deadline, "only {done} of {N} records done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(handle.stop().await, StopReason::Normal);

    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled.len(), N - 100, "every good record handled once");
    assert_eq!(
        handled.iter().collect::<HashSet<_>>().len(),
        N - 100,
        "no duplicates"
    );
    for p in 0..PARTITIONS {
        let offs: Vec<i64> = handled.iter().filter(|x| x.0 == p).map(|x| x.1).collect();
        assert!(
            offs.windows(2).all(|w| w[0] < w[1]),
            "partition {p} handled in order"
        );
    }
    let pd = poison_deliveries.lock().unwrap().clone();
    assert_eq!(pd.len(), 100);
    for (k, v) in &pd {
        assert_eq!(
            v,
            &vec![1, 2, 3, 4],
            "record {k:?}: 4 deliveries, header 1..4"
        );
    }
    let mut recovered = recovered.lock().unwrap().clone();
    recovered.sort();
    let mut expected: Vec<(i32, i64)> = pd.keys().cloned().collect();
    expected.sort();
    assert_eq!(recovered, expected, "each poison record recovered once");

    // The log ends come from the delivery reports (Tansu's ListOffsets LATEST is wrong).
    let commits = committed(&cluster, &group, &topic, PARTITIONS).await;
    let ends: Vec<Option<i64>> = ends.into_iter().map(Some).collect();
    assert_eq!(commits, ends, "committed offsets reach the log end");
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_retried_and_recovered_record_ack() {
    poison_run(AckMode::Record).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_records_are_retried_and_recovered_batch_ack() {
    poison_run(AckMode::Batch).await;
}

/// While partition 0 sits in a 5 s back-off, records arriving on partition 1 are handled at
/// once: the back-off pauses only the failing partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_off_does_not_block_other_partitions() {
    let cluster = cluster().await;
    let topic = unique("lst-pause");
    let group = unique("lst-pause-g");
    create_topic(&cluster, &topic, 2).await;
    // One poison record on partition 0.
    produce(&cluster, &topic, 2, 1, |_| true).await;
    let consumer = Consumer::new(cluster.clone(), consumer_config(&group)).expect("consumer");
    consumer.subscribe([topic.clone()]).expect("subscribe");
    let failures = Arc::new(AtomicU32::new(0));
    let p1_handled: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let (f, ph) = (failures.clone(), p1_handled.clone());
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let (f, ph) = (f.clone(), ph.clone());
            async move {
                if is_poison(&r) {
                    f.fetch_add(1, Ordering::SeqCst);
                    return Err(Box::new(Poison) as HandlerError);
                }
                ph.lock().unwrap().push(Instant::now());
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new().back_off(FixedBackOff::new(Duration::from_secs(5), 1)),
        )
        .poll_timeout(Duration::from_millis(500))
        .start()
        .expect("start");
    let mut events = handle.events();
    // Wait for the first failure and the pause of partition 0.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match tokio::time::timeout(Duration::from_secs(1), events.recv()).await {
            Ok(Ok(ContainerEvent::PartitionsPaused(tps))) if tps.iter().any(|tp| tp.1 == 0) => {
                break;
            }
            _ => assert!(Instant::now() < deadline, "partition 0 never paused"),
        }
    }
    assert_eq!(failures.load(Ordering::SeqCst), 1);
    // Now produce to partition 1 and time how long until it is handled.
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let sent_at = Instant::now();
    producer
        .send_and_wait(
            Record::new(topic.as_str())
                .with_partition(1)
                .with_key("k")
                .with_value("v"),
        )
        .await
        .expect("sent");
    let deadline = Instant::now() + Duration::from_secs(4);
    while p1_handled.lock().unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "partition 1 blocked behind partition 0's back-off"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let handled_at = p1_handled.lock().unwrap()[0];
    assert_eq!(
        failures.load(Ordering::SeqCst),
        1,
        "partition 0 still backing off"
    );
    // Handled well before the 5 s back-off ends (latency includes a fetch round trip).
    assert!(
        handled_at - sent_at < Duration::from_secs(2),
        "took {:?}",
        handled_at - sent_at
    );
    producer.close().await;
    handle.stop().await;
    cluster.close().await;
}

/// A record whose value does not deserialize never reaches the handler: it is recovered on its
/// first failure, with its raw bytes, and the records around it flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeserializable_record_is_recovered_at_once_with_raw_bytes() {
    use rekafka::consumer::StringDeserializer;
    use rekafka::listener::deserialization_check;
    let cluster = cluster().await;
    let topic = unique("lst-deser");
    let group = unique("lst-deser-g");
    create_topic(&cluster, &topic, 1).await;
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let bad: &[u8] = &[0xff, 0xfe, 0x00, 0x41];
    for v in [&b"ok-0"[..], bad, &b"ok-2"[..]] {
        producer
            .send_and_wait(
                Record::new(topic.as_str())
                    .with_partition(0)
                    .with_value(v.to_vec()),
            )
            .await
            .expect("sent");
    }
    producer.close().await;
    let consumer = Consumer::new(cluster.clone(), consumer_config(&group)).expect("consumer");
    consumer.subscribe([topic.clone()]).expect("subscribe");
    let handled: Arc<Mutex<Vec<i64>>> = Arc::default();
    // (offset, raw value, error message) of each recovered record.
    type Recovered = Vec<(i64, Vec<u8>, String)>;
    let recovered: Arc<Mutex<Recovered>> = Arc::default();
    let (h, rc) = (handled.clone(), recovered.clone());
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let h = h.clone();
            async move {
                h.lock().unwrap().push(r.offset());
                Ok(())
            }
        })
        .deserialization_check(deserialization_check(
            StringDeserializer,
            StringDeserializer,
        ))
        .error_handler(DefaultErrorHandler::new().recoverer(RecovererFn(
            move |r: ListenerConsumerRecord, e: SharedError| {
                let rc = rc.clone();
                async move {
                    let raw = r.value_bytes().map(|b| b.to_vec()).unwrap_or_default();
                    rc.lock().unwrap().push((r.offset(), raw, e.to_string()));
                    Ok::<(), HandlerError>(())
                }
            },
        )))
        .poll_timeout(Duration::from_millis(500))
        .start()
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(60);
    while handled.lock().unwrap().len() < 2 || recovered.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "records not handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.stop().await;
    assert_eq!(handled.lock().unwrap().clone(), vec![0, 2]);
    let recovered = recovered.lock().unwrap().clone();
    assert_eq!(recovered.len(), 1, "recovered once, on the first failure");
    assert_eq!(recovered[0].0, 1);
    assert_eq!(recovered[0].1, bad, "raw bytes kept");
    assert!(
        recovered[0].2.contains("deserialization"),
        "{}",
        recovered[0].2
    );
    assert_eq!(committed(&cluster, &group, &topic, 1).await, vec![Some(3)]);
    cluster.close().await;
}

struct CountAssignments(Arc<AtomicU32>);

impl rekafka::consumer::RebalanceListener for CountAssignments {
    fn on_assigned<'a>(
        &'a self,
        _consumer: &'a Consumer,
        _partitions: &'a [TopicPartition],
    ) -> rekafka::consumer::BoxFuture<'a, ()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
}

/// A batch handler that keeps failing with an error that names no record: the whole batch is
/// retried in memory with its partitions paused for longer than the session timeout in all,
/// without losing the group membership (no second assignment), then recovered record by record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_batch_retry_longer_than_session_timeout_keeps_membership() {
    let cluster = cluster().await;
    let topic = unique("lst-batch");
    let group = unique("lst-batch-g");
    create_topic(&cluster, &topic, 1).await;
    let ends = produce(&cluster, &topic, 1, 20, |_| false).await;
    let consumer = Consumer::new(cluster.clone(), consumer_config(&group)).expect("consumer");
    let assignments = Arc::new(AtomicU32::new(0));
    consumer.set_rebalance_listener(Arc::new(CountAssignments(assignments.clone())));
    consumer.subscribe([topic.clone()]).expect("subscribe");
    let deliveries = Arc::new(AtomicU32::new(0));
    let recovered: Arc<Mutex<Vec<i64>>> = Arc::default();
    let (d, rc) = (deliveries.clone(), recovered.clone());
    let handle = ListenerContainer::builder(consumer)
        .batch_handler(move |_batch: Vec<ListenerConsumerRecord>| {
            let d = d.clone();
            async move {
                d.fetch_add(1, Ordering::SeqCst);
                Err(Box::new(Poison) as HandlerError)
            }
        })
        .error_handler(
            // 2 retries 4 s apart: 8 s of back-off, more than the 6 s session timeout.
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_secs(4), 2))
                .recoverer(RecovererFn(move |r: ListenerConsumerRecord, _| {
                    let rc = rc.clone();
                    async move {
                        rc.lock().unwrap().push(r.offset());
                        Ok::<(), HandlerError>(())
                    }
                })),
        )
        .poll_timeout(Duration::from_millis(500))
        .start()
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(90);
    while committed(&cluster, &group, &topic, 1).await != vec![Some(ends[0])] {
        assert!(Instant::now() < deadline, "batch never recovered");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    handle.stop().await;
    // Each delivery is of the batch in hand (its size depends on how the fetches fell); every
    // record was recovered exactly once, and the member was assigned exactly once.
    let mut rec = recovered.lock().unwrap().clone();
    rec.sort();
    assert_eq!(rec, (0..ends[0]).collect::<Vec<_>>());
    assert_eq!(
        deliveries.load(Ordering::SeqCst) % 3,
        0,
        "3 deliveries per batch"
    );
    assert_eq!(
        assignments.load(Ordering::SeqCst),
        1,
        "no rebalance during the retries"
    );
    cluster.close().await;
}

/// Exactly-once copy of 100k records from one topic to another by two container members with
/// transactional producers; one member stops half-way and a replacement starts. The output,
/// read with read_committed by a fresh consumer, holds each input value exactly once. (Tansu
/// shows aborted records to read_committed consumers, so the variant that kills a member
/// mid-transaction runs on the mock cluster: tests/listener/listener_txn.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_copy_with_a_member_restart() {
    use rekafka::consumer::IsolationLevel;
    use rekafka::transaction::TransactionalProducer;
    const N: usize = 100_000;
    let cluster = cluster().await;
    let input = unique("eos-in");
    let output = unique("eos-out");
    let group = unique("eos-g");
    create_topic(&cluster, &input, 3).await;
    create_topic(&cluster, &output, 3).await;
    let ends = produce(&cluster, &input, 3, N, |_| false).await;
    let start_member = |id: String| {
        let (cluster, input, output, group) = (
            cluster.clone(),
            input.clone(),
            output.clone(),
            group.clone(),
        );
        async move {
            let p = TransactionalProducer::new(
                cluster.clone(),
                ProducerConfig::default().with_transactional_id(id),
            )
            .expect("producer");
            p.init_transactions().await.expect("init");
            let p = Arc::new(p);
            let consumer = Consumer::new(
                cluster,
                consumer_config(&group).with_isolation_level(IsolationLevel::ReadCommitted),
            )
            .expect("consumer");
            consumer.subscribe([input]).expect("subscribe");
            let out = p.clone();
            ListenerContainer::builder(consumer)
                .record_handler(move |r: ListenerConsumerRecord| {
                    let (out, topic) = (out.clone(), output.clone());
                    async move {
                        let _delivery = out
                            .send(
                                Record::new(topic.as_str())
                                    .with_partition(r.partition())
                                    .with_value(r.value_bytes().cloned().unwrap_or_default()),
                            )
                            .await
                            .map_err(|e| Box::new(e.error) as HandlerError)?;
                        Ok(())
                    }
                })
                .transactional(p)
                .poll_timeout(Duration::from_millis(500))
                .start()
                .expect("start")
        }
    };
    let a = start_member(unique("eos-a")).await;
    let b = start_member(unique("eos-b")).await;
    let total = |c: Vec<Option<i64>>| c.into_iter().map(|x| x.unwrap_or(0)).sum::<i64>();
    let deadline = Instant::now() + Duration::from_secs(120);
    while total(committed(&cluster, &group, &input, 3).await) < (N / 2) as i64 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.stop().await;
    let a2 = start_member(unique("eos-a2")).await;
    let ends_opt: Vec<Option<i64>> = ends.iter().map(|e| Some(*e)).collect();
    let deadline = Instant::now() + Duration::from_secs(180);
    while committed(&cluster, &group, &input, 3).await != ends_opt {
        assert!(Instant::now() < deadline, "copy not finished");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    a2.stop().await;
    b.stop().await;
    // A fresh read_committed consumer reads the output.
    let mut values = read_committed_values(&cluster, &output, 3).await;
    values.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("v-{i}")).collect();
    expected.sort();
    assert_eq!(values.len(), N, "every input value exactly once");
    assert_eq!(values, expected);
    cluster.close().await;
}

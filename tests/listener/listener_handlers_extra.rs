//! In-memory redelivery (`DefaultErrorHandler::seek_after_error(false)`, Spring's
//! `seekAfterError=false`) and the listener-level error handler of batch listeners, on rekafka's
//! embedded mock cluster.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, OffsetReset};
use rekafka::listener::{
    AckMode, CommittedOffsets, ContainerConsumer, DefaultErrorHandler, FixedBackOff, HandlerError,
    ListenerConsumerRecord, ListenerContainer, ListenerRecord, OffsetToCommit, PartitionKey,
    RecovererFn, SharedError, StopReason,
};
use rekafka::mock::MockCluster;
use rekafka::producer::{Producer, ProducerConfig, Record};

#[derive(Debug, thiserror::Error)]
#[error("poison record")]
struct Poison;

/// A topic of `partitions` partitions with `per_partition` records in each (`v<p>-<i>`).
async fn setup(topic: &str, partitions: i32, per_partition: usize) -> (MockCluster, Cluster) {
    let mock = MockCluster::builder()
        .topic(topic, partitions)
        .start()
        .await
        .expect("mock");
    let cluster = Cluster::connect(ClusterConfig::new([mock.bootstrap()]))
        .await
        .expect("connect");
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    for p in 0..partitions {
        for i in 0..per_partition {
            producer
                .send_and_wait(
                    Record::new(topic)
                        .with_partition(p)
                        .with_key(format!("k{i}"))
                        .with_value(format!("v{p}-{i}")),
                )
                .await
                .expect("sent");
        }
    }
    producer.close().await;
    (mock, cluster)
}

fn consumer(cluster: &Cluster, group: &str, topic: &str) -> Consumer {
    let config = ConsumerConfig::new()
        .with_group_id(group)
        .with_auto_commit(AutoCommit::Disabled)
        .with_session_timeout(Duration::from_secs(6))
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(20));
    let consumer = Consumer::new(cluster.clone(), config).expect("consumer");
    consumer.subscribe([topic]).expect("subscribe");
    consumer
}

/// rekafka's consumer, noting every seek the container asks for.
struct SeekNoting {
    inner: Consumer,
    seeks: Arc<Mutex<Vec<(PartitionKey, i64)>>>,
}

impl ContainerConsumer for SeekNoting {
    type Record = ListenerConsumerRecord;

    async fn poll(&mut self, timeout: Duration) -> rekafka::Result<Vec<ListenerConsumerRecord>> {
        ContainerConsumer::poll(&mut self.inner, timeout).await
    }
    fn seek(&mut self, partition: &PartitionKey, offset: i64) -> rekafka::Result<()> {
        self.seeks.lock().unwrap().push((partition.clone(), offset));
        ContainerConsumer::seek(&mut self.inner, partition, offset)
    }
    fn pause(&mut self, partitions: &[PartitionKey]) -> rekafka::Result<()> {
        ContainerConsumer::pause(&mut self.inner, partitions)
    }
    fn resume(&mut self, partitions: &[PartitionKey]) -> rekafka::Result<()> {
        ContainerConsumer::resume(&mut self.inner, partitions)
    }
    fn assignment(&self) -> Vec<PartitionKey> {
        ContainerConsumer::assignment(&self.inner)
    }
    fn assignment_ids(&self) -> Vec<(PartitionKey, u64)> {
        ContainerConsumer::assignment_ids(&self.inner)
    }
    async fn commit(&mut self, offsets: Vec<OffsetToCommit>) -> rekafka::Result<()> {
        ContainerConsumer::commit(&mut self.inner, offsets).await
    }
    async fn committed(
        &mut self,
        partitions: &[PartitionKey],
    ) -> rekafka::Result<CommittedOffsets> {
        ContainerConsumer::committed(&mut self.inner, partitions).await
    }
    fn group_id(&self) -> Option<String> {
        ContainerConsumer::group_id(&self.inner)
    }
    fn rebalance_pending(&self) -> bool {
        ContainerConsumer::rebalance_pending(&self.inner)
    }
    async fn close(&mut self) -> rekafka::Result<()> {
        ContainerConsumer::close(&mut self.inner).await
    }
}

/// Waits until `group` has committed `offset` on every partition of `topic` (0..partitions).
async fn wait_committed(
    mock: &MockCluster,
    group: &str,
    topic: &str,
    partitions: i32,
    offset: i64,
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now: Vec<Option<i64>> = (0..partitions)
            .map(|p| mock.committed_offset(group, topic, p))
            .collect();
        if now.iter().all(|o| *o == Some(offset)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "offset {offset} never committed on all partitions (now {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Seen = Arc<Mutex<Vec<(i32, i64)>>>;

/// Runs a container over two partitions of 5 records whose record at offset 2 of partition 0
/// fails twice, and returns what the handler saw (in order) and the seeks of partition 0.
async fn run_failing_twice(seek_after_error: bool) -> (Vec<(i32, i64)>, Vec<i64>) {
    let topic = if seek_after_error {
        "seeking"
    } else {
        "in-memory"
    };
    let group = format!("g-{topic}");
    let (mock, cluster) = setup(topic, 2, 5).await;
    let seen: Seen = Arc::default();
    let failures = Arc::new(Mutex::new(0u32));
    let seeks = Arc::new(Mutex::new(Vec::new()));
    let consumer = SeekNoting {
        inner: consumer(&cluster, &group, topic),
        seeks: seeks.clone(),
    };
    let (s, f) = (seen.clone(), failures.clone());
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let (s, f) = (s.clone(), f.clone());
            async move {
                s.lock().unwrap().push((r.partition(), r.offset()));
                if r.partition() == 0 && r.offset() == 2 {
                    let mut f = f.lock().unwrap();
                    if *f < 2 {
                        *f += 1;
                        return Err(Box::new(Poison) as HandlerError);
                    }
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(50), 5))
                .seek_after_error(seek_after_error),
        )
        .ack_mode(AckMode::Batch)
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    wait_committed(&mock, &group, topic, 2, 5).await;
    assert_eq!(handle.stop().await, StopReason::Normal);
    let seen = seen.lock().unwrap().clone();
    let seeks: Vec<i64> = seeks
        .lock()
        .unwrap()
        .iter()
        .filter(|(tp, _)| tp.1 == 0)
        .map(|(_, o)| *o)
        .collect();
    (seen, seeks)
}

/// `seek_after_error(false)`: the failed record and the rest of its partition's poll are
/// redelivered from memory after the back-off (no seek), in order, until it succeeds; nothing is
/// skipped or handled twice, and both partitions are committed to their ends. The same run with
/// the default (seeking) shows the seek the in-memory run does without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_after_error_false_redelivers_from_memory() {
    let (seen, seeks) = run_failing_twice(false).await;
    let p0: Vec<i64> = seen
        .iter()
        .filter(|(p, _)| *p == 0)
        .map(|(_, o)| *o)
        .collect();
    let p1: Vec<i64> = seen
        .iter()
        .filter(|(p, _)| *p == 1)
        .map(|(_, o)| *o)
        .collect();
    assert_eq!(p0, vec![0, 1, 2, 2, 2, 3, 4], "partition 0 as handled");
    assert_eq!(p1, vec![0, 1, 2, 3, 4], "partition 1 as handled");
    assert!(
        seeks.is_empty(),
        "in-memory redelivery sought partition 0: {seeks:?}"
    );

    let (seen, seeks) = run_failing_twice(true).await;
    let p0: Vec<i64> = seen
        .iter()
        .filter(|(p, _)| *p == 0)
        .map(|(_, o)| *o)
        .collect();
    assert_eq!(
        p0,
        vec![0, 1, 2, 2, 2, 3, 4],
        "partition 0 as handled (seeking)"
    );
    assert_eq!(
        seeks,
        vec![2, 2],
        "the default seeks back to the failed record per retry"
    );
}

/// `seek_after_error(false)` when the retries run out: the record is recovered (with its raw
/// bytes) after the in-memory redeliveries, and the rest of the poll follows from memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_after_error_false_recovers_when_the_retries_run_out() {
    let (topic, group) = ("in-memory-exhausted", "g-in-memory-exhausted");
    let (mock, cluster) = setup(topic, 1, 4).await;
    let seen: Seen = Arc::default();
    let recovered: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let seeks = Arc::new(Mutex::new(Vec::new()));
    let consumer = SeekNoting {
        inner: consumer(&cluster, group, topic),
        seeks: seeks.clone(),
    };
    let (s, rec) = (seen.clone(), recovered.clone());
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push((r.partition(), r.offset()));
                if r.offset() == 1 {
                    return Err(Box::new(Poison) as HandlerError);
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(20), 2))
                .seek_after_error(false)
                .recoverer(RecovererFn(
                    move |r: ListenerConsumerRecord, _e: SharedError| {
                        rec.lock()
                            .unwrap()
                            .push((r.offset(), r.value_str().unwrap_or_default().to_string()));
                        std::future::ready(Ok::<(), HandlerError>(()))
                    },
                )),
        )
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    wait_committed(&mock, group, topic, 1, 4).await;
    assert_eq!(handle.stop().await, StopReason::Normal);
    let offsets: Vec<i64> = seen.lock().unwrap().iter().map(|(_, o)| *o).collect();
    assert_eq!(offsets, vec![0, 1, 1, 1, 2, 3]);
    assert_eq!(*recovered.lock().unwrap(), vec![(1, "v0-1".to_string())]);
    assert!(
        seeks.lock().unwrap().is_empty(),
        "sought: {:?}",
        seeks.lock().unwrap()
    );
}

/// A batch container over `topic` (one partition) whose batch handler notes every record it
/// sees and fails (a plain error) the first `fail_times` batches that hold offset 2.
fn batch_builder(
    cluster: &Cluster,
    group: &str,
    topic: &str,
    seen: &Seen,
    fail_times: u32,
) -> rekafka::listener::ContainerBuilder<Consumer> {
    let failures = Arc::new(Mutex::new(0u32));
    let seen = seen.clone();
    ListenerContainer::builder(consumer(cluster, group, topic))
        .batch_handler(move |records: Vec<ListenerConsumerRecord>| {
            let (seen, failures) = (seen.clone(), failures.clone());
            async move {
                seen.lock()
                    .unwrap()
                    .extend(records.iter().map(|r| (r.partition(), r.offset())));
                if records.iter().any(|r| r.offset() == 2) {
                    let mut f = failures.lock().unwrap();
                    if *f < fail_times {
                        *f += 1;
                        return Err(Box::new(Poison) as HandlerError);
                    }
                }
                Ok(())
            }
        })
        .poll_timeout(Duration::from_millis(100))
}

/// Batches the batch listener-level error handler saw: (offsets, error text).
type BatchesSeen = Arc<Mutex<Vec<(Vec<i64>, String)>>>;

/// The batch listener-level error handler sees the whole batch and the error, and names the
/// failed record (`BatchListenerFailed`): the container's error handler then commits the records
/// before it, retries and recovers that record alone, and the rest follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_listener_error_handler_names_the_failed_record() {
    let (topic, group) = ("batch-leh-names", "g-batch-leh-names");
    let (mock, cluster) = setup(topic, 1, 5).await;
    let seen: Seen = Arc::default();
    let leh_seen: BatchesSeen = Arc::default();
    let recovered: Arc<Mutex<Vec<i64>>> = Arc::default();
    let (l, rec) = (leh_seen.clone(), recovered.clone());
    let handle = batch_builder(&cluster, group, topic, &seen, u32::MAX)
        .batch_listener_error_handler(move |records: &[ListenerConsumerRecord], error, _seeks| {
            l.lock().unwrap().push((
                records.iter().map(|r| r.offset()).collect(),
                error.to_string(),
            ));
            match records.iter().position(|r| r.offset() == 2) {
                Some(i) => Err(Box::new(rekafka::listener::BatchListenerFailed::at_index(
                    i, error,
                ))),
                None => Err(error),
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(10), 1))
                .recoverer(RecovererFn(
                    move |r: ListenerConsumerRecord, _e: SharedError| {
                        rec.lock().unwrap().push(r.offset());
                        std::future::ready(Ok::<(), HandlerError>(()))
                    },
                )),
        )
        .start()
        .expect("start");
    wait_committed(&mock, group, topic, 1, 5).await;
    assert_eq!(handle.stop().await, StopReason::Normal);
    let leh_seen = leh_seen.lock().unwrap().clone();
    assert!(
        !leh_seen.is_empty(),
        "the batch listener-level handler was not called"
    );
    for (offsets, error) in &leh_seen {
        assert!(
            offsets.contains(&2),
            "it saw a batch without the failed record: {offsets:?}"
        );
        assert_eq!(error, "poison record");
    }
    assert_eq!(
        *recovered.lock().unwrap(),
        vec![2],
        "the named record is recovered"
    );
    let seen = seen.lock().unwrap().clone();
    for o in [0, 1, 3, 4] {
        assert!(seen.contains(&(0, o)), "offset {o} never handled: {seen:?}");
    }
}

/// A batch listener-level error handler that returns `Ok` handles the failure: the batch is
/// acknowledged as processed, nothing is redelivered and the container's error handler never
/// sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_listener_error_handler_ok_acknowledges_the_batch() {
    let (topic, group) = ("batch-leh-swallow", "g-batch-leh-swallow");
    let (mock, cluster) = setup(topic, 1, 5).await;
    let seen: Seen = Arc::default();
    let leh_seen: BatchesSeen = Arc::default();
    let recovered: Arc<Mutex<Vec<i64>>> = Arc::default();
    let (l, rec) = (leh_seen.clone(), recovered.clone());
    let handle = batch_builder(&cluster, group, topic, &seen, u32::MAX)
        .batch_listener_error_handler(move |records: &[ListenerConsumerRecord], error, _seeks| {
            l.lock().unwrap().push((
                records.iter().map(|r| r.offset()).collect(),
                error.to_string(),
            ));
            Ok(())
        })
        .error_handler(DefaultErrorHandler::new().recoverer(RecovererFn(
            move |r: ListenerConsumerRecord, _e: SharedError| {
                rec.lock().unwrap().push(r.offset());
                std::future::ready(Ok::<(), HandlerError>(()))
            },
        )))
        .start()
        .expect("start");
    wait_committed(&mock, group, topic, 1, 5).await;
    assert_eq!(handle.stop().await, StopReason::Normal);
    assert_eq!(leh_seen.lock().unwrap().len(), 1, "one failed batch");
    assert!(
        recovered.lock().unwrap().is_empty(),
        "nothing reached the container's handler"
    );
    let offsets: Vec<i64> = seen.lock().unwrap().iter().map(|(_, o)| *o).collect();
    assert_eq!(offsets, vec![0, 1, 2, 3, 4], "each record handed once");
}

/// A consumer-aware batch listener-level error handler seeks the batch's partition back to the
/// batch's first record and returns `Ok`: that partition's records are not acknowledged and come
/// again from there (and succeed), so each of them is handled twice and all are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_listener_error_handler_seeks_the_batch_back() {
    let (topic, group) = ("batch-leh-seek", "g-batch-leh-seek");
    let (mock, cluster) = setup(topic, 1, 5).await;
    let seen: Seen = Arc::default();
    let leh_seen: BatchesSeen = Arc::default();
    let l = leh_seen.clone();
    let handle = batch_builder(&cluster, group, topic, &seen, 1)
        .batch_listener_error_handler(move |records: &[ListenerConsumerRecord], error, seeks| {
            l.lock().unwrap().push((
                records.iter().map(|r| r.offset()).collect(),
                error.to_string(),
            ));
            let first = records.iter().map(|r| r.offset()).min().unwrap_or(0);
            seeks.seek(records[0].topic(), 0, first);
            Ok(())
        })
        .start()
        .expect("start");
    wait_committed(&mock, group, topic, 1, 5).await;
    assert_eq!(handle.stop().await, StopReason::Normal);
    let leh_seen = leh_seen.lock().unwrap().clone();
    assert_eq!(leh_seen.len(), 1, "one failed batch: {leh_seen:?}");
    let offsets: Vec<i64> = seen.lock().unwrap().iter().map(|(_, o)| *o).collect();
    for o in &leh_seen[0].0 {
        assert_eq!(
            offsets.iter().filter(|x| *x == o).count(),
            2,
            "offset {o} of the sought batch is handled twice: {offsets:?}"
        );
    }
    for o in 0..5 {
        assert!(
            offsets.contains(&o),
            "offset {o} never handled: {offsets:?}"
        );
    }
}

/// `seek_after_error(false)` across a rebalance: records held in memory for a redelivery are
/// dropped when their partition is revoked, and the partition's next owner starts from the
/// committed offset (at or before them): nothing is lost. Two containers of one group over two
/// partitions; offset 2 of each partition fails on its first two deliveries (whoever handles
/// it), and on later ones until the second container is active, with a back-off long enough for
/// the second container to join meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_after_error_false_loses_nothing_across_a_rebalance() {
    let (topic, group) = ("in-memory-rebalance", "g-in-memory-rebalance");
    let (mock, cluster) = setup(topic, 2, 6).await;
    // Successful handlings, and failures per (partition, offset).
    let handled: Seen = Arc::default();
    // Records each container handled successfully (by container number).
    let by: Arc<Mutex<Vec<u32>>> = Arc::default();
    let failures: Arc<Mutex<std::collections::HashMap<(i32, i64), u32>>> = Arc::default();
    let start = |cluster: &Cluster, id: u32| {
        let (h, f, by) = (handled.clone(), failures.clone(), by.clone());
        ListenerContainer::builder(consumer(cluster, group, topic))
            .record_handler(move |r: ListenerConsumerRecord| {
                let (h, f, by) = (h.clone(), f.clone(), by.clone());
                async move {
                    if r.offset() == 2 {
                        // Twice at least, and (bounded) until the second container has a record
                        // (it handled one, or this is it): on a loaded machine its join can take
                        // longer than two back-offs, and the point is a rebalance while a record
                        // is held.
                        let second_active = id == 2 || by.lock().unwrap().contains(&2);
                        let mut f = f.lock().unwrap();
                        let n = f.entry((r.partition(), r.offset())).or_default();
                        if *n < 2 || (!second_active && *n < 20) {
                            *n += 1;
                            return Err(Box::new(Poison) as HandlerError);
                        }
                    }
                    h.lock().unwrap().push((r.partition(), r.offset()));
                    by.lock().unwrap().push(id);
                    Ok(())
                }
            })
            .error_handler(
                DefaultErrorHandler::new()
                    .back_off(FixedBackOff::new(Duration::from_millis(1500), 25))
                    .seek_after_error(false),
            )
            .poll_timeout(Duration::from_millis(100))
            .start()
            .expect("start")
    };
    let first = start(&cluster, 1);
    // Wait until the first container holds a failed record, then let a second one join.
    let deadline = Instant::now() + Duration::from_secs(30);
    while failures.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no failure seen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = start(&cluster, 2);
    wait_committed(&mock, group, topic, 2, 6).await;
    assert_eq!(first.stop().await, StopReason::Normal);
    assert_eq!(second.stop().await, StopReason::Normal);
    let handled = handled.lock().unwrap().clone();
    assert!(
        by.lock().unwrap().contains(&2),
        "the second container never got a partition (no rebalance)"
    );
    for p in 0..2 {
        for o in 0..6 {
            assert!(
                handled.contains(&(p, o)),
                "partition {p} offset {o} never handled: {handled:?}"
            );
        }
    }
}

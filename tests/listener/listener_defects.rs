//! Listener-container defects found by review (issues 15 and 22), each pinned by a test on the
//! embedded mock cluster. The tests assert invariants rather than timings: committed offsets
//! never move backwards and never pass unfinished or unacknowledged work, no record is lost, and
//! the recoverer only sees records the handler saw (or that could not be deserialized).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::ErrorKind;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, IsolationLevel, OffsetReset, StartOffset, TopicPartition,
};
use rekafka::listener::{
    AckMode, BatchListenerFailed, BoxFuture, ContainerEvent, ContainerHandle, DefaultErrorHandler,
    DeserializationFailed, FixedBackOff, HandlerError, ListenerConsumerRecord, ListenerContainer,
    ListenerRecord, RecordPart, Recoverer, RecovererFn, Recovery, SharedError, StopReason,
};
use rekafka::mock::MockCluster;
use rekafka::producer::{Producer, ProducerConfig, Record};
use rekafka::protocol::unstable::ApiKey;
use rekafka::transaction::{TransactionState, TransactionalProducer};

type Log<T> = Arc<Mutex<Vec<T>>>;

#[derive(Debug, thiserror::Error)]
#[error("poison record")]
struct Poison;

async fn connect(mock: &MockCluster) -> Cluster {
    Cluster::connect(ClusterConfig::new(mock.broker_addrs()))
        .await
        .expect("connect")
}

/// A one-partition topic holding `values`, in order.
async fn topic_with(topic: &str, values: &[String]) -> (MockCluster, Cluster) {
    let mock = MockCluster::builder()
        .topic(topic, 1)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    for v in values {
        producer
            .send_and_wait(Record::new(topic).with_partition(0).with_value(v.clone()))
            .await
            .expect("sent");
    }
    producer.close().await;
    (mock, cluster)
}

fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_auto_commit(AutoCommit::Disabled)
        .with_session_timeout(Duration::from_secs(6))
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(20))
}

/// Every offset committed for partition `partition`, in order, from the container's events.
fn watch_commits(handle: &ContainerHandle, partition: i32) -> Log<i64> {
    let commits: Log<i64> = Arc::default();
    let mut events = handle.events();
    let c = commits.clone();
    tokio::spawn(async move {
        while let Ok(e) = events.recv().await {
            if let ContainerEvent::Committed(offsets) = e {
                for o in offsets {
                    if o.partition.1 == partition {
                        c.lock().unwrap().push(o.offset);
                    }
                }
            }
        }
    });
    commits
}

/// Waits (bounded) until `f` holds; false if it never did.
async fn eventually(mut f: impl FnMut() -> bool, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

fn assert_never_backwards(commits: &[i64]) {
    assert!(
        commits.windows(2).all(|w| w[0] <= w[1]),
        "a committed offset moved backwards: {commits:?}"
    );
}

/// `v{i}` for 0..n, with `bad` at the given offsets (the deserialization check refuses it).
fn values_with_bad(n: usize, bad: &[usize]) -> Vec<String> {
    (0..n)
        .map(|i| {
            if bad.contains(&i) {
                "bad".to_string()
            } else {
                format!("v{i}")
            }
        })
        .collect()
}

fn refuse_bad(r: &ListenerConsumerRecord) -> Result<(), DeserializationFailed> {
    if r.value_str() == Some("bad") {
        return Err(DeserializationFailed {
            part: RecordPart::Value,
            message: "not a v-number".into(),
            value_failure: None,
        });
    }
    Ok(())
}

/// A recoverer that notes the offsets it recovers.
fn recording_recoverer(
    log: Log<i64>,
) -> RecovererFn<
    impl Fn(ListenerConsumerRecord, SharedError) -> std::future::Ready<Result<(), HandlerError>>
    + Send
    + Sync
    + 'static,
> {
    RecovererFn(move |r: ListenerConsumerRecord, _e: SharedError| {
        log.lock().unwrap().push(r.offset());
        std::future::ready(Ok(()))
    })
}

// ---- issue 15, item 1: batch handler with a deserialization check ----

/// A 20-record partition with undeserializable records at 5 and 12: the good records are each
/// handled once, the bad ones recovered once, and the committed offset only moves forward, to
/// 20 (it used to end at 13: the recovered records' acks overwrote the batch's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_with_undeserializable_records_commits_forward_to_the_end() {
    let (topic, group) = ("batch-deser", "g-batch-deser");
    let (mock, cluster) = topic_with(topic, &values_with_bad(20, &[5, 12])).await;
    let handled: Log<i64> = Arc::default();
    let recovered: Log<i64> = Arc::default();
    let consumer = Consumer::new(cluster.clone(), config(group)).expect("consumer");
    consumer.subscribe([topic]).expect("subscribe");
    let h = handled.clone();
    let handle = ListenerContainer::builder(consumer)
        .batch_handler(move |batch: Vec<ListenerConsumerRecord>| {
            let h = h.clone();
            async move {
                h.lock().unwrap().extend(batch.iter().map(|r| r.offset()));
                Ok(())
            }
        })
        .deserialization_check(refuse_bad)
        .error_handler(DefaultErrorHandler::new().recoverer(recording_recoverer(recovered.clone())))
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    let commits = watch_commits(&handle, 0);
    let done = eventually(
        || mock.committed_offset(group, topic, 0) == Some(20),
        Duration::from_secs(15),
    )
    .await;
    // Let a wrong later commit show up, if there is one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.stop().await;
    let commits = commits.lock().unwrap().clone();
    assert_never_backwards(&commits);
    assert!(
        done && mock.committed_offset(group, topic, 0) == Some(20),
        "committed {:?}, commits {commits:?}",
        mock.committed_offset(group, topic, 0)
    );
    let mut handled = handled.lock().unwrap().clone();
    handled.sort();
    let good: Vec<i64> = (0..20).filter(|o| *o != 5 && *o != 12).collect();
    assert_eq!(handled, good, "each good record handled exactly once");
    assert_eq!(recovered.lock().unwrap().clone(), vec![5, 12]);
}

/// The same partition, and the batch handler names offset 2 as failed on its first delivery
/// (one immediate retry): nothing is lost. The rewind for the undeserializable records used to
/// seek forward over the failed record and the records after it (`seek_min` sought
/// unconditionally).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_listener_failed_with_undeserializable_records_loses_nothing() {
    let (topic, group) = ("batch-blf", "g-batch-blf");
    let (mock, cluster) = topic_with(topic, &values_with_bad(20, &[5, 12])).await;
    let handled: Log<i64> = Arc::default();
    let recovered: Log<i64> = Arc::default();
    let failed_once = Arc::new(AtomicU32::new(0));
    let consumer = Consumer::new(cluster.clone(), config(group)).expect("consumer");
    consumer.subscribe([topic]).expect("subscribe");
    let (h, f1) = (handled.clone(), failed_once.clone());
    let handle = ListenerContainer::builder(consumer)
        .batch_handler(move |batch: Vec<ListenerConsumerRecord>| {
            let (h, f1) = (h.clone(), f1.clone());
            async move {
                for r in &batch {
                    if r.offset() == 2 && f1.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err(
                            Box::new(BatchListenerFailed::at_record(r, Poison)) as HandlerError
                        );
                    }
                    h.lock().unwrap().push(r.offset());
                }
                Ok(())
            }
        })
        .deserialization_check(refuse_bad)
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::ZERO, 1))
                .recoverer(recording_recoverer(recovered.clone())),
        )
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    let commits = watch_commits(&handle, 0);
    let done = eventually(
        || mock.committed_offset(group, topic, 0) == Some(20),
        Duration::from_secs(15),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    handle.stop().await;
    let commits = commits.lock().unwrap().clone();
    assert_never_backwards(&commits);
    let handled: BTreeSet<i64> = handled.lock().unwrap().iter().copied().collect();
    let recovered = recovered.lock().unwrap().clone();
    let lost: Vec<i64> = (0..20)
        .filter(|o| !handled.contains(o) && !recovered.contains(o))
        .collect();
    assert!(lost.is_empty(), "never handled nor recovered: {lost:?}");
    assert_eq!(recovered, vec![5, 12], "only the bad records are recovered");
    assert!(
        done,
        "committed {:?}",
        mock.committed_offset(group, topic, 0)
    );
}

// ---- issue 15, item 2: exactly-once batch mode recovers only what the handler saw ----

async fn txn_producer(mock: &MockCluster, id: &str) -> Arc<TransactionalProducer> {
    let p = TransactionalProducer::new(
        connect(mock).await,
        ProducerConfig::default().with_transactional_id(id),
    )
    .expect("producer");
    p.init_transactions().await.expect("init");
    Arc::new(p)
}

/// The values a read_committed consumer sees in partition 0 of `topic`.
async fn read_committed(mock: &MockCluster, topic: &str) -> Vec<String> {
    let consumer = Consumer::new(
        connect(mock).await,
        ConsumerConfig::new()
            .with_auto_commit(AutoCommit::Disabled)
            .with_isolation_level(IsolationLevel::ReadCommitted)
            .with_fetch_max_wait(Duration::from_millis(20)),
    )
    .expect("consumer");
    consumer
        .assign([(TopicPartition::new(topic, 0), StartOffset::Beginning)])
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
            out.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
        }
    }
    consumer.close().await.ok();
    out
}

fn txn_consumer_config(group: &str) -> ConsumerConfig {
    config(group).with_isolation_level(IsolationLevel::ReadCommitted)
}

/// A batch handler fails on the batch holding a poison record (no retries: recovered at once).
/// Before that failed batch returned, more records arrived; the next poll holds them too. Only
/// the failed batch's records are recovered: the new ones go to the handler (the whole next
/// poll used to be dead-lettered, records the handler never saw included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_batch_recovers_only_the_records_of_the_failed_batch() {
    let (input, output, group) = ("eos-in", "eos-out", "g-eos-batch");
    let mock = MockCluster::builder()
        .topic(input, 1)
        .topic(output, 1)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    let plain = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    for i in 0..10 {
        let v = if i == 5 {
            "poison".to_string()
        } else {
            format!("v{i}")
        };
        plain
            .send_and_wait(Record::new(input).with_partition(0).with_value(v))
            .await
            .expect("sent");
    }
    let producer = txn_producer(&mock, "eos-batch").await;
    // Offsets of every batch the handler failed, and of every recovered record.
    let failed_batches: Log<Vec<i64>> = Arc::default();
    let recovered: Log<i64> = Arc::default();
    let consumer = Consumer::new(cluster.clone(), txn_consumer_config(group)).expect("consumer");
    consumer.subscribe([input]).expect("subscribe");
    let (p, fb, plain) = (producer.clone(), failed_batches.clone(), Arc::new(plain));
    let handle = ListenerContainer::builder(consumer)
        .batch_handler(move |batch: Vec<ListenerConsumerRecord>| {
            let (p, fb, plain) = (p.clone(), fb.clone(), plain.clone());
            async move {
                for r in &batch {
                    let v = r.value_str().unwrap_or_default().to_uppercase();
                    let _delivery = p
                        .send(Record::new("eos-out").with_partition(0).with_value(v))
                        .await
                        .map_err(|e| Box::new(e.error) as HandlerError)?;
                }
                if batch.iter().any(|r| r.value_str() == Some("poison")) {
                    let first_failure = fb.lock().unwrap().is_empty();
                    fb.lock()
                        .unwrap()
                        .push(batch.iter().map(|r| r.offset()).collect());
                    if first_failure {
                        // More input arrives while this batch fails.
                        for i in 10..20 {
                            plain
                                .send_and_wait(
                                    Record::new("eos-in")
                                        .with_partition(0)
                                        .with_value(format!("v{i}")),
                                )
                                .await
                                .map_err(|e| Box::new(e) as HandlerError)?;
                        }
                    }
                    return Err(Box::new(Poison) as HandlerError);
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::no_retries())
                .recoverer(recording_recoverer(recovered.clone())),
        )
        .transactional(producer)
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    let done = eventually(
        || mock.committed_offset(group, input, 0) == Some(20),
        Duration::from_secs(20),
    )
    .await;
    handle.stop().await;
    assert!(
        done,
        "committed {:?}",
        mock.committed_offset(group, input, 0)
    );
    let failed: BTreeSet<i64> = failed_batches
        .lock()
        .unwrap()
        .iter()
        .flatten()
        .copied()
        .collect();
    let mut recovered = recovered.lock().unwrap().clone();
    recovered.sort();
    let unseen: Vec<i64> = recovered
        .iter()
        .copied()
        .filter(|o| !failed.contains(o))
        .collect();
    assert!(
        unseen.is_empty(),
        "recovered records the handler never saw fail: {unseen:?} (recovered {recovered:?})"
    );
    // Exactly once: each input either in the output or recovered, never both, none lost.
    let out = read_committed(&mock, output).await;
    let recovered_values: Vec<String> = recovered
        .iter()
        .map(|o| {
            if *o == 5 {
                "POISON".to_string()
            } else {
                format!("V{o}")
            }
        })
        .collect();
    let mut all: Vec<String> = out.iter().cloned().chain(recovered_values).collect();
    all.sort();
    let mut expected: Vec<String> = (0..20)
        .map(|i| {
            if i == 5 {
                "POISON".to_string()
            } else {
                format!("V{i}")
            }
        })
        .collect();
    expected.sort();
    assert_eq!(all, expected, "output {out:?}, recovered {recovered:?}");
}

// ---- issue 15, items 3 and 4: commits never pass a failed dead letter or unacked records ----

/// Starts each recovery and leaves it in flight until the test sets its outcome (one outcome
/// per attempt).
#[derive(Clone, Default)]
struct InFlightRecoverer {
    started: Log<i64>,
    outcomes: Arc<Mutex<HashMap<i64, bool>>>,
}

impl Recoverer<ListenerConsumerRecord> for InFlightRecoverer {
    fn recover<'a>(
        &'a self,
        record: &'a ListenerConsumerRecord,
        error: &'a SharedError,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        let started = self.start_recovery(record, error);
        Box::pin(async move {
            match started.await? {
                Recovery::InFlight(done) => done.await,
                _ => Ok(()),
            }
        })
    }

    fn start_recovery<'a>(
        &'a self,
        record: &'a ListenerConsumerRecord,
        _error: &'a SharedError,
    ) -> BoxFuture<'a, Result<Recovery, HandlerError>> {
        let offset = record.offset();
        self.started.lock().unwrap().push(offset);
        let outcomes = self.outcomes.clone();
        Box::pin(async move {
            Ok(Recovery::InFlight(Box::pin(async move {
                loop {
                    let outcome = outcomes.lock().unwrap().remove(&offset);
                    if let Some(ok) = outcome {
                        return if ok {
                            Ok(())
                        } else {
                            Err::<(), HandlerError>("dead-letter topic refused it".into())
                        };
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })))
        })
    }
}

/// Offsets 2 and 5 fail (no retries) and their dead letters are in flight together; 5's is
/// written, 2's fails, so the partition goes back to 2 and 5 is skipped when it comes again.
/// Until 2's dead letter is written nothing past 2 may be committed: the skip of 5 used to
/// ack it at once, committing 6 in the Record, ManualImmediate and Count ack modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_a_recovered_record_never_commits_past_a_failed_dead_letter() {
    for (i, mode) in [AckMode::Record, AckMode::ManualImmediate, AckMode::Count(1)]
        .into_iter()
        .enumerate()
    {
        let (topic, group) = (format!("ahead-{i}"), format!("g-ahead-{i}"));
        let values: Vec<String> = (0..8)
            .map(|o| {
                if o == 2 || o == 5 {
                    "poison".to_string()
                } else {
                    format!("v{o}")
                }
            })
            .collect();
        let (mock, cluster) = topic_with(&topic, &values).await;
        let recoverer = InFlightRecoverer::default();
        let consumer = Consumer::new(cluster.clone(), config(&group)).expect("consumer");
        consumer.subscribe([topic.as_str()]).expect("subscribe");
        let handle = ListenerContainer::builder(consumer)
            .record_handler_with_ack(|r: ListenerConsumerRecord, ack| async move {
                if r.value_str() == Some("poison") {
                    return Err(Box::new(Poison) as HandlerError);
                }
                ack.acknowledge();
                Ok(())
            })
            .error_handler(
                DefaultErrorHandler::new()
                    .back_off(FixedBackOff::no_retries())
                    .recovery_retry_interval(Duration::from_millis(100))
                    .recoverer(recoverer.clone()),
            )
            .ack_mode(mode)
            .poll_timeout(Duration::from_millis(100))
            .start()
            .expect("start");
        let commits = watch_commits(&handle, 0);
        let started = recoverer.started.clone();
        assert!(
            eventually(
                || started.lock().unwrap().len() == 2,
                Duration::from_secs(15)
            )
            .await,
            "{mode:?}: two recoveries in flight"
        );
        recoverer.outcomes.lock().unwrap().insert(5, true);
        recoverer.outcomes.lock().unwrap().insert(2, false);
        // Redelivered from 2: its recovery starts again (and stays in flight).
        assert!(
            eventually(
                || started.lock().unwrap().len() == 3,
                Duration::from_secs(15)
            )
            .await,
            "{mode:?}: 2 redelivered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let so_far = commits.lock().unwrap().clone();
        assert!(
            so_far.iter().all(|o| *o <= 2),
            "{mode:?}: committed past 2 while its dead letter is not written: {so_far:?}"
        );
        recoverer.outcomes.lock().unwrap().insert(2, true);
        let done = eventually(
            || mock.committed_offset(&group, &topic, 0) == Some(8),
            Duration::from_secs(15),
        )
        .await;
        handle.stop().await;
        assert!(
            done,
            "{mode:?}: committed {:?}",
            mock.committed_offset(&group, &topic, 0)
        );
        assert_never_backwards(&commits.lock().unwrap());
        assert_eq!(
            started.lock().unwrap().clone(),
            vec![2, 5, 2],
            "{mode:?}: 5 recovered once"
        );
    }
}

/// The manual ack modes: the handler acknowledges only offset 0. Offset 3 fails once (a
/// retry), offset 5 always (recovered after its retries). Nothing past 1 may be committed: the
/// retry used to commit the failed offset with its retry state (passing 1 and 2), and the
/// recovery acked 5 (passing 1..=4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_acks_retries_and_recoveries_never_commit_unacknowledged_records() {
    for (i, mode) in [AckMode::Manual, AckMode::ManualImmediate]
        .into_iter()
        .enumerate()
    {
        let (topic, group) = (format!("manual-{i}"), format!("g-manual-{i}"));
        let values: Vec<String> = (0..8).map(|o| format!("v{o}")).collect();
        let (mock, cluster) = topic_with(&topic, &values).await;
        let handled: Log<i64> = Arc::default();
        let recovered: Log<i64> = Arc::default();
        let failed_3 = Arc::new(AtomicU32::new(0));
        let consumer = Consumer::new(cluster.clone(), config(&group)).expect("consumer");
        consumer.subscribe([topic.as_str()]).expect("subscribe");
        let (h, f3) = (handled.clone(), failed_3.clone());
        let handle = ListenerContainer::builder(consumer)
            .record_handler_with_ack(move |r: ListenerConsumerRecord, ack| {
                let (h, f3) = (h.clone(), f3.clone());
                async move {
                    let o = r.offset();
                    if o == 5 || (o == 3 && f3.fetch_add(1, Ordering::SeqCst) == 0) {
                        return Err(Box::new(Poison) as HandlerError);
                    }
                    if o == 0 {
                        ack.acknowledge();
                    }
                    h.lock().unwrap().push(o);
                    Ok(())
                }
            })
            .error_handler(
                DefaultErrorHandler::new()
                    .back_off(FixedBackOff::new(Duration::from_millis(50), 1))
                    .recoverer(recording_recoverer(recovered.clone())),
            )
            .ack_mode(mode)
            .poll_timeout(Duration::from_millis(100))
            .start()
            .expect("start");
        let commits = watch_commits(&handle, 0);
        // Also what the broker holds (the retry state is committed without an event).
        let mut highest = None;
        let all = eventually(
            || {
                highest = highest.max(mock.committed_offset(&group, &topic, 0));
                handled.lock().unwrap().len() == 7 && recovered.lock().unwrap().len() == 1
            },
            Duration::from_secs(15),
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        handle.stop().await;
        assert!(
            all,
            "{mode:?}: handled {:?}, recovered {:?}",
            handled.lock().unwrap(),
            recovered.lock().unwrap()
        );
        let commits = commits.lock().unwrap().clone();
        assert!(
            commits.iter().all(|o| *o <= 1),
            "{mode:?}: committed past unacknowledged records: {commits:?}"
        );
        assert!(
            highest <= Some(1),
            "{mode:?}: the broker held {highest:?} (past unacknowledged records)"
        );
        assert_eq!(
            mock.committed_offset(&group, &topic, 0),
            Some(1),
            "{mode:?}"
        );
    }
}

// ---- issue 22, item 5: a commit that outlives max.block does not wedge the container ----

/// A copier (exactly-once, `max.block` 1 s) whose first EndTxn the broker holds for 3 s:
/// `commit_transaction` gives up at `max.block` while the commit is still pending. The
/// container must complete that commit (or abort it and rewind) and carry on: 300 more input
/// records later, the output equals the input exactly. It used to wedge for good (every abort
/// and `send_offsets` refused), with the output stuck at the first transaction's records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_commit_outliving_max_block_completes_and_goes_on() {
    let (input, output, group) = ("copy-in", "copy-out", "g-copy-max-block");
    let mock = MockCluster::builder()
        .topic(input, 1)
        .topic(output, 1)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    let plain = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let fill = |from: usize, to: usize| {
        let plain = &plain;
        async move {
            for i in from..to {
                plain
                    .send_and_wait(
                        Record::new(input)
                            .with_partition(0)
                            .with_value(format!("v{i}")),
                    )
                    .await
                    .expect("sent");
            }
        }
    };
    fill(0, 300).await;
    let held = mock.hold(|r| r.api_key == ApiKey::EndTxn);
    let producer = TransactionalProducer::new(
        connect(&mock).await,
        ProducerConfig::default()
            .with_transactional_id("copier-max-block")
            .with_max_block(Duration::from_secs(1)),
    )
    .expect("producer");
    producer.init_transactions().await.expect("init");
    let producer = Arc::new(producer);
    let consumer = Consumer::new(cluster.clone(), txn_consumer_config(group)).expect("consumer");
    consumer.subscribe([input]).expect("subscribe");
    let p = producer.clone();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let p = p.clone();
            async move {
                let v = r.value_str().unwrap_or_default().to_uppercase();
                let _delivery = p
                    .send(Record::new("copy-out").with_partition(0).with_value(v))
                    .await
                    .map_err(|e| Box::new(e.error) as HandlerError)?;
                Ok(())
            }
        })
        .transactional(producer.clone())
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    tokio::time::timeout(Duration::from_secs(20), held.wait_matched(1))
        .await
        .expect("the first EndTxn reached the broker");
    tokio::time::sleep(Duration::from_secs(3)).await;
    held.release();
    fill(300, 600).await;
    let done = eventually(
        || mock.committed_offset(group, input, 0) == Some(600),
        Duration::from_secs(30),
    )
    .await;
    let running = handle.is_running();
    let reason = handle.stop().await;
    let mut values = read_committed(&mock, output).await;
    assert!(
        done,
        "committed {:?}, output {} records, running {running}, state {:?}",
        mock.committed_offset(group, input, 0),
        values.len(),
        producer.state()
    );
    assert_eq!(reason, StopReason::Normal);
    values.sort();
    let mut expected: Vec<String> = (0..600).map(|i| format!("V{i}")).collect();
    expected.sort();
    assert_eq!(values.len(), 600, "no loss, no duplicate");
    assert_eq!(values, expected);
}

/// The transactional producer's side: a commit that timed out in its caller (the broker holds
/// the EndTxn) is completed by a later call. An abort meanwhile completes the pending commit
/// first and says the transaction committed (it used to be refused, and the finished commit
/// then blocked every other call); after a commit that ended in the background, the next
/// transaction begins and really commits (its commit used to return the old commit's result).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_timed_out_is_completed_by_the_next_call() {
    let topic = "txn-resume";
    let mock = MockCluster::builder()
        .topic(topic, 1)
        .start()
        .await
        .expect("mock");
    let producer = TransactionalProducer::new(
        connect(&mock).await,
        ProducerConfig::default()
            .with_transactional_id("resume")
            .with_max_block(Duration::from_millis(500)),
    )
    .expect("producer");
    producer.init_transactions().await.expect("init");
    let send = |v: &'static str| {
        let producer = &producer;
        async move {
            producer.begin_transaction().expect("begin");
            let _delivery = producer
                .send(Record::new(topic).with_partition(0).with_value(v))
                .await
                .expect("send");
        }
    };
    // 1. The abort completes the pending commit, which committed.
    send("one").await;
    let held = mock.hold(|r| r.api_key == ApiKey::EndTxn);
    let err = producer.commit_transaction().await.expect_err("held");
    assert_eq!(*err.kind(), ErrorKind::Timeout, "{err}");
    let release = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.release();
    };
    let (aborted, ()) = tokio::join!(
        producer.abort_transaction_within(Duration::from_secs(10)),
        release
    );
    let err = aborted.expect_err("a committed transaction cannot be aborted");
    assert!(
        err.to_string().contains("committed"),
        "the abort reports the commit: {err}"
    );
    assert_eq!(producer.state(), TransactionState::Ready);
    // 2. A commit that ends in the background does not stand in for the next one.
    send("two").await;
    let held = mock.hold(|r| r.api_key == ApiKey::EndTxn);
    let err = producer.commit_transaction().await.expect_err("held");
    assert_eq!(*err.kind(), ErrorKind::Timeout, "{err}");
    held.release();
    assert!(
        eventually(
            || producer.state() == TransactionState::Ready,
            Duration::from_secs(10)
        )
        .await,
        "the pending commit ended: {:?}",
        producer.state()
    );
    send("three").await;
    producer.commit_transaction().await.expect("commit three");
    assert_eq!(
        read_committed(&mock, topic).await,
        vec!["one", "two", "three"]
    );
}

// ---- issue 22, item 6: a handler panic stops the container cleanly ----

/// The handler panics on offset 3 of 0..6 (ack mode Batch): the container stops with
/// [`StopReason::Error`], after committing the records handled before the panic (0..=2), and
/// leaves its group; the `Stopped` event is sent. Sequentially and with concurrency alike (the
/// sequential path used to die with the panic: no commit, no leave, no event).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_panic_stops_cleanly_after_committing_finished_work() {
    // Both handler forms: the async `record_handler` and `sync_record_handler` (called with
    // no future, on its own path).
    for (concurrency, sync) in [(1, false), (2, false), (1, true), (2, true)] {
        let (topic, group) = (
            format!("panic-{concurrency}-{sync}"),
            format!("g-panic-{concurrency}-{sync}"),
        );
        let label = format!("{concurrency}, sync handler {sync}");
        let values: Vec<String> = (0..6).map(|o| format!("v{o}")).collect();
        let (mock, cluster) = topic_with(&topic, &values).await;
        let handled: Log<i64> = Arc::default();
        let consumer = Consumer::new(cluster.clone(), config(&group)).expect("consumer");
        consumer.subscribe([topic.as_str()]).expect("subscribe");
        let h = handled.clone();
        let work = move |r: ListenerConsumerRecord| {
            if r.offset() == 3 {
                panic!("handler bug on offset 3");
            }
            h.lock().unwrap().push(r.offset());
            Ok(())
        };
        let builder = ListenerContainer::builder(consumer);
        let builder = if sync {
            builder.sync_record_handler(work)
        } else {
            builder.record_handler(move |r| {
                let work = work.clone();
                async move { work(r) }
            })
        };
        let builder = builder
            .concurrency(concurrency)
            .poll_timeout(Duration::from_millis(100));
        let mut events = builder.subscribe();
        let handle = builder.start().expect("start");
        let reason = tokio::time::timeout(Duration::from_secs(20), handle.join())
            .await
            .expect("the container stops by itself");
        assert_eq!(reason, StopReason::Error, "concurrency {label}");
        let mut stopped = None;
        while let Ok(e) = events.try_recv() {
            if let ContainerEvent::Stopped(r) = e {
                stopped = Some(r);
            }
        }
        assert_eq!(
            stopped,
            Some(StopReason::Error),
            "concurrency {label}: Stopped event"
        );
        assert_eq!(handled.lock().unwrap().clone(), vec![0, 1, 2]);
        assert_eq!(
            mock.committed_offset(&group, &topic, 0),
            Some(3),
            "concurrency {label}: the finished work is committed, the panicked record not"
        );
        assert!(
            mock.requests()
                .iter()
                .any(|r| r.api_key == ApiKey::LeaveGroup),
            "concurrency {label}: the consumer left its group"
        );
    }
}

// ---- issue 22, item 7: stop with a timeout ----

/// The handler is in the middle of a slow record when the container is asked to stop within
/// 200 ms: `stop_timeout` says it did not stop in time and hands the handle back; nothing was
/// cut short (the record in hand is finished and committed once the container does stop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_timeout_reports_a_container_still_stopping_and_keeps_its_guarantees() {
    let (topic, group) = ("slow", "g-slow");
    let values: Vec<String> = (0..4).map(|o| format!("v{o}")).collect();
    let (mock, cluster) = topic_with(topic, &values).await;
    let handled: Log<i64> = Arc::default();
    let consumer = Consumer::new(cluster.clone(), config(group)).expect("consumer");
    consumer.subscribe([topic]).expect("subscribe");
    let h = handled.clone();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let h = h.clone();
            async move {
                if r.offset() == 1 {
                    h.lock().unwrap().push(-1);
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                h.lock().unwrap().push(r.offset());
                Ok(())
            }
        })
        .ack_mode(AckMode::Record)
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    assert!(
        eventually(
            || handled.lock().unwrap().contains(&-1),
            Duration::from_secs(15)
        )
        .await,
        "the slow record is in hand"
    );
    let timed_out = handle
        .stop_timeout(Duration::from_millis(200))
        .await
        .expect_err("the slow record takes 2 s");
    assert_eq!(timed_out.waited(), Duration::from_millis(200));
    assert_eq!(mock.committed_offset(group, topic, 0), Some(1));
    let handle = timed_out.into_handle();
    let reason = tokio::time::timeout(Duration::from_secs(10), handle.join())
        .await
        .expect("stops once the record is done");
    assert_eq!(reason, StopReason::Normal);
    assert_eq!(handled.lock().unwrap().clone(), vec![0, -1, 1]);
    assert_eq!(
        mock.committed_offset(group, topic, 0),
        Some(2),
        "the record in hand was finished and committed"
    );
}

// ---- Spring conformance (protocol-tests/spring): retry-listener callbacks and commits ----

/// Every retry-listener callback, as text (`failed 3 attempt 1`, `failed_batch [0, 1] 1`, …).
#[derive(Clone, Default)]
struct Callbacks(Log<String>);

impl rekafka::listener::RetryListener<ListenerConsumerRecord> for Callbacks {
    fn failed_delivery(&self, r: &ListenerConsumerRecord, _e: &SharedError, attempt: u32) {
        self.0
            .lock()
            .unwrap()
            .push(format!("failed {} attempt {attempt}", r.offset()));
    }
    fn recovered(&self, r: &ListenerConsumerRecord, _e: &SharedError) {
        self.0
            .lock()
            .unwrap()
            .push(format!("recovered {}", r.offset()));
    }
    fn failed_delivery_batch(&self, rs: &[ListenerConsumerRecord], _e: &SharedError, a: u32) {
        let offsets: Vec<i64> = rs.iter().map(|r| r.offset()).collect();
        self.0
            .lock()
            .unwrap()
            .push(format!("failed_batch {offsets:?} {a}"));
    }
    fn recovered_batch(&self, rs: &[ListenerConsumerRecord], _e: &SharedError) {
        let offsets: Vec<i64> = rs.iter().map(|r| r.offset()).collect();
        self.0
            .lock()
            .unwrap()
            .push(format!("recovered_batch {offsets:?}"));
    }
}

/// A back-off allowing no retry recovers at once without a failed-delivery callback (Spring's
/// `FailedRecordTracker` with `noRetries`; scenario `record-fixed-no-retries`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retries_recovers_without_a_failed_delivery_callback() {
    let values: Vec<String> = ["v0", "poison", "v2"].map(String::from).to_vec();
    let (mock, cluster) = topic_with("nr", &values).await;
    let consumer = Consumer::new(cluster, config("g-nr")).expect("consumer");
    consumer.subscribe(["nr"]).expect("subscribe");
    let calls = Callbacks::default();
    let recovered: Log<i64> = Arc::default();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(|r: ListenerConsumerRecord| async move {
            if r.value_str() == Some("poison") {
                return Err(Box::new(Poison) as HandlerError);
            }
            Ok(())
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::ZERO, 0))
                .retry_listener(calls.clone())
                .recoverer(recording_recoverer(recovered.clone())),
        )
        .poll_timeout(Duration::from_millis(50))
        .start()
        .expect("start");
    let done = eventually(
        || mock.committed_offset("g-nr", "nr", 0) == Some(3),
        Duration::from_secs(10),
    )
    .await;
    handle.stop().await;
    assert!(
        done,
        "committed {:?}",
        mock.committed_offset("g-nr", "nr", 0)
    );
    assert_eq!(*recovered.lock().unwrap(), vec![1]);
    assert_eq!(*calls.0.lock().unwrap(), vec!["recovered 1".to_string()]);
}

/// A batch handler failing with `BatchListenerFailed` tells the retry listeners about the whole
/// batch first (attempt 1), as Spring's `FailedBatchProcessor` does (scenarios
/// `batch-fail-at-index`, `batch-fail-at-record`, `batch-nested-blfe`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_listener_failed_notifies_the_batch_retry_callback() {
    let values: Vec<String> = (0..4).map(|i| format!("v{i}")).collect();
    let (mock, cluster) = topic_with("blf", &values).await;
    let consumer = Consumer::new(cluster, config("g-blf")).expect("consumer");
    consumer.subscribe(["blf"]).expect("subscribe");
    let calls = Callbacks::default();
    let failed_once = Arc::new(AtomicU32::new(0));
    let f = failed_once.clone();
    let handle = ListenerContainer::builder(consumer)
        .batch_handler(move |batch: Vec<ListenerConsumerRecord>| {
            let f = f.clone();
            async move {
                if let Some(i) = batch.iter().position(|r| r.offset() == 2) {
                    if f.fetch_add(1, Ordering::SeqCst) == 0 {
                        return Err(
                            Box::new(BatchListenerFailed::at_index(i, Poison)) as HandlerError
                        );
                    }
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::ZERO, 2))
                .retry_listener(calls.clone()),
        )
        .poll_timeout(Duration::from_millis(50))
        .start()
        .expect("start");
    let done = eventually(
        || mock.committed_offset("g-blf", "blf", 0) == Some(4),
        Duration::from_secs(10),
    )
    .await;
    handle.stop().await;
    assert!(
        done,
        "committed {:?}",
        mock.committed_offset("g-blf", "blf", 0)
    );
    let calls = calls.0.lock().unwrap().clone();
    let batch_call = calls.iter().position(|c| c.starts_with("failed_batch"));
    let record_call = calls.iter().position(|c| c == "failed 2 attempt 1");
    assert!(
        matches!((batch_call, record_call), (Some(b), Some(r)) if b < r),
        "{calls:?}"
    );
    assert!(calls[batch_call.unwrap_or(0)].ends_with(" 1"), "{calls:?}");
    assert!(calls[batch_call.unwrap_or(0)].contains("2"), "{calls:?}");
}

/// Exactly once, batch handler: a batch recovered after the rollback notifies no retry
/// listener; Spring's `DefaultAfterRollbackProcessor` only calls the recoverer per record
/// (scenario `txn-batch`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_batch_recovery_calls_no_recovered_batch_callback() {
    let values: Vec<String> = ["poison", "v1", "v2"].map(String::from).to_vec();
    let (mock, cluster) = topic_with("eos-rb", &values).await;
    let producer = txn_producer(&mock, "eos-rb").await;
    let consumer = Consumer::new(cluster, txn_consumer_config("g-eos-rb")).expect("consumer");
    consumer.subscribe(["eos-rb"]).expect("subscribe");
    let calls = Callbacks::default();
    let recovered: Log<i64> = Arc::default();
    let handle = ListenerContainer::builder(consumer)
        .batch_handler(|batch: Vec<ListenerConsumerRecord>| async move {
            if batch.iter().any(|r| r.value_str() == Some("poison")) {
                return Err(Box::new(Poison) as HandlerError);
            }
            Ok(())
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::ZERO, 1))
                .retry_listener(calls.clone())
                .recoverer(recording_recoverer(recovered.clone())),
        )
        .transactional(producer)
        .poll_timeout(Duration::from_millis(50))
        .start()
        .expect("start");
    let done = eventually(
        || mock.committed_offset("g-eos-rb", "eos-rb", 0) == Some(3),
        Duration::from_secs(15),
    )
    .await;
    handle.stop().await;
    assert!(
        done,
        "committed {:?}",
        mock.committed_offset("g-eos-rb", "eos-rb", 0)
    );
    let mut recovered = recovered.lock().unwrap().clone();
    recovered.sort();
    assert_eq!(recovered, vec![0, 1, 2]);
    let calls = calls.0.lock().unwrap().clone();
    assert!(
        !calls.iter().any(|c| c.starts_with("recovered")),
        "{calls:?}"
    );
}

/// AckMode::Count(2), as scenario `ack-count`: two partitions, v2 fails once, v5 is
/// dead-lettered (its dead letter in flight). Eight acknowledgments in all, so Spring commits
/// both partitions to their end; only a commit the count made may start the count again (the
/// commits of capped offsets and the commit held back by the dead letter used to restart it,
/// so the last records stayed uncommitted until the container stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_acks_commit_to_the_end_around_dead_letters_and_retries() {
    let mock = MockCluster::builder()
        .topic("cnt", 2)
        .topic("cnt-dlt", 2)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    for i in 0..8 {
        producer
            .send_and_wait(
                Record::new("cnt")
                    .with_partition(i % 2)
                    .with_value(format!("v{i}")),
            )
            .await
            .expect("sent");
    }
    producer.close().await;
    let dlt =
        rekafka::listener::DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
            .group("g-cnt")
            .build()
            .await
            .expect("dlt");
    let consumer = Consumer::new(cluster, config("g-cnt")).expect("consumer");
    consumer.subscribe(["cnt"]).expect("subscribe");
    let v2_failed = Arc::new(AtomicU32::new(0));
    let f = v2_failed.clone();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let f = f.clone();
            async move {
                match r.value_str() {
                    Some("v2") if f.fetch_add(1, Ordering::SeqCst) == 0 => Err("v2 failed".into()),
                    Some("v5") => Err(Box::new(Poison) as HandlerError),
                    _ => Ok(()),
                }
            }
        })
        .error_handler({
            let mut eh = DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::ZERO, 2))
                .recoverer(dlt);
            eh.classifier_mut().add_not_retryable::<Poison>();
            eh
        })
        .ack_mode(AckMode::Count(2))
        .poll_timeout(Duration::from_millis(50))
        .start()
        .expect("start");
    let done = eventually(
        || {
            mock.committed_offset("g-cnt", "cnt", 0) == Some(4)
                && mock.committed_offset("g-cnt", "cnt", 1) == Some(4)
        },
        Duration::from_secs(10),
    )
    .await;
    let committed = (
        mock.committed_offset("g-cnt", "cnt", 0),
        mock.committed_offset("g-cnt", "cnt", 1),
    );
    handle.stop().await;
    assert!(done, "committed {committed:?}");
}

/// Exactly once, record handler: a record whose recovery keeps failing no longer holds back the
/// records before it in its poll; they commit in a transaction of their own, as with Spring's
/// transaction per record (scenario `txn-resolver-no-destination-fail`: the committed offset
/// used to stay unset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_records_before_a_record_that_keeps_failing_commit() {
    let values: Vec<String> = ["v0", "poison", "v2"].map(String::from).to_vec();
    let (mock, cluster) = topic_with("eos-kf", &values).await;
    let producer = txn_producer(&mock, "eos-kf").await;
    let consumer = Consumer::new(cluster, txn_consumer_config("g-eos-kf")).expect("consumer");
    consumer.subscribe(["eos-kf"]).expect("subscribe");
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(|r: ListenerConsumerRecord| async move {
            if r.value_str() == Some("poison") {
                return Err(Box::new(Poison) as HandlerError);
            }
            Ok(())
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::no_retries())
                .max_recovery_failures(None)
                .recovery_retry_interval(Duration::from_millis(20))
                .recoverer(RecovererFn(
                    move |_r: ListenerConsumerRecord, _e: SharedError| {
                        a.fetch_add(1, Ordering::SeqCst);
                        std::future::ready(Err::<(), HandlerError>("no destination".into()))
                    },
                )),
        )
        .transactional(producer)
        .poll_timeout(Duration::from_millis(50))
        .start()
        .expect("start");
    let done = eventually(
        || mock.committed_offset("g-eos-kf", "eos-kf", 0) == Some(1),
        Duration::from_secs(15),
    )
    .await;
    let failures = attempts.load(Ordering::SeqCst);
    handle.stop().await;
    assert!(
        done,
        "committed {:?} after {failures} recovery failures",
        mock.committed_offset("g-eos-kf", "eos-kf", 0)
    );
    // Never past the record whose recovery fails.
    assert_eq!(mock.committed_offset("g-eos-kf", "eos-kf", 0), Some(1));
}

/// A record whose key and value both fail to deserialize: the dead letter carries both
/// failures, the key's `kafka_dlt-key-exception-*` headers then the value's
/// `kafka_dlt-exception-*` ones (Spring's `ErrorHandlingDeserializer` reports both; scenario
/// `key-and-value-deserialization`). A key-only failure has Spring's layout: its cause class
/// under `kafka_dlt-exception-cause-fqcn` (scenario `key-deserialization`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_and_value_deserialization_failures_both_reach_the_dead_letter() {
    let mock = MockCluster::builder()
        .topic("kv", 1)
        .topic("kv-dlt", 1)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    for (k, v) in [
        (&[0xffu8, 0x01][..], &[0xfeu8, 0x02][..]),
        (&[0xc3, 0x28][..], &b"v1"[..]),
    ] {
        producer
            .send_and_wait(
                Record::new("kv")
                    .with_partition(0)
                    .with_key(k.to_vec())
                    .with_value(v.to_vec()),
            )
            .await
            .expect("sent");
    }
    producer.close().await;
    let dlt =
        rekafka::listener::DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
            .group("g-kv")
            .build()
            .await
            .expect("dlt");
    let consumer = Consumer::new(cluster.clone(), config("g-kv")).expect("consumer");
    consumer.subscribe(["kv"]).expect("subscribe");
    let handle = ListenerContainer::builder(consumer)
        .record_handler(|_r: ListenerConsumerRecord| async move { Ok(()) })
        .deserialization_check(rekafka::listener::deserialization_check(
            rekafka::consumer::StringDeserializer,
            rekafka::consumer::StringDeserializer,
        ))
        .error_handler(DefaultErrorHandler::new().recoverer(dlt))
        .poll_timeout(Duration::from_millis(50))
        .start()
        .expect("start");
    let done = eventually(
        || mock.committed_offset("g-kv", "kv", 0) == Some(2),
        Duration::from_secs(10),
    )
    .await;
    handle.stop().await;
    assert!(
        done,
        "committed {:?}",
        mock.committed_offset("g-kv", "kv", 0)
    );
    let reader = Consumer::new(
        cluster,
        ConsumerConfig::new()
            .with_auto_commit(AutoCommit::Disabled)
            .with_fetch_max_wait(Duration::from_millis(20)),
    )
    .expect("consumer");
    reader
        .assign([(TopicPartition::new("kv-dlt", 0), StartOffset::Beginning)])
        .expect("assign");
    let mut letters = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while letters.len() < 2 && Instant::now() < deadline {
        for r in reader
            .poll(Duration::from_millis(100))
            .await
            .expect("poll")
            .iter()
        {
            let names: Vec<String> = r
                .headers
                .iter()
                .map(|h| h.key().to_owned())
                .filter(|n| n.contains("exception") && !n.contains("stacktrace"))
                .collect();
            let value_message = r
                .headers
                .iter()
                .find(|h| h.key() == "kafka_dlt-exception-message")
                .and_then(|h| h.value().map(|v| String::from_utf8_lossy(v).into_owned()));
            letters.push((names, value_message));
        }
    }
    reader.close().await.ok();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert_eq!(
        letters[0].0,
        [
            "kafka_dlt-key-exception-fqcn",
            "kafka_dlt-key-exception-message",
            "kafka_dlt-exception-fqcn",
            "kafka_dlt-exception-cause-fqcn",
            "kafka_dlt-exception-message",
        ],
        "{letters:?}"
    );
    let value_message = letters[0].1.clone().unwrap_or_default();
    assert!(
        value_message.contains("value") && value_message.contains("not valid UTF-8"),
        "{value_message}"
    );
    assert_eq!(
        letters[1].0,
        [
            "kafka_dlt-key-exception-fqcn",
            "kafka_dlt-exception-cause-fqcn",
            "kafka_dlt-key-exception-message",
        ],
        "{letters:?}"
    );
}

// ---- the failover soak (s9): a rejoin while a partition backs off ----

/// Offset 3 fails (one retry after 1.5 s, then recovered). While the partition backs off, the
/// member's heartbeat is answered ILLEGAL_GENERATION: the next poll rejoins (the default range
/// assignor is eager), so the partition is revoked and assigned again inside that one poll,
/// fetched afresh from the committed offset and no longer paused. The container, whose
/// assignment looked unchanged, still held the partition as backing off and dropped the
/// records the poll returned (3..10) without rewinding; later records were handled and
/// committed past them: the s9 soak's I5 violation (a contiguous run of records below the
/// committed offset never handled). Every record below the final committed offset must be
/// handled or recovered, with one worker and with several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejoin_while_a_partition_backs_off_loses_no_record() {
    for concurrency in [1usize, 3] {
        let (topic, group) = (
            format!("rejoin-backoff-{concurrency}"),
            format!("g-rejoin-backoff-{concurrency}"),
        );
        let values: Vec<String> = (0..10)
            .map(|o| {
                if o == 3 {
                    "poison".to_string()
                } else {
                    format!("v{o}")
                }
            })
            .collect();
        let (mock, cluster) = topic_with(&topic, &values).await;
        let mock = Arc::new(mock);
        let handled: Log<i64> = Arc::default();
        let recovered: Log<i64> = Arc::default();
        let consumer = Consumer::new(
            cluster.clone(),
            config(&group).with_heartbeat_interval(Duration::from_millis(100)),
        )
        .expect("consumer");
        consumer.subscribe([topic.as_str()]).expect("subscribe");
        let (h, m) = (handled.clone(), mock.clone());
        let fenced = Arc::new(AtomicU32::new(0));
        let f = fenced.clone();
        let handle = ListenerContainer::builder(consumer)
            .record_handler(move |r: ListenerConsumerRecord| {
                let (h, m, f) = (h.clone(), m.clone(), f.clone());
                async move {
                    if r.value_str() == Some("poison") {
                        if f.fetch_add(1, Ordering::SeqCst) == 0 {
                            // The member is fenced while the partition backs off.
                            m.push_request_errors(
                                ApiKey::Heartbeat,
                                &[rekafka::KafkaCode::IllegalGeneration],
                            );
                        }
                        return Err(Box::new(Poison) as HandlerError);
                    }
                    h.lock().unwrap().push(r.offset());
                    Ok(())
                }
            })
            .error_handler(
                DefaultErrorHandler::new()
                    .back_off(FixedBackOff::new(Duration::from_millis(1500), 1))
                    .recoverer(recording_recoverer(recovered.clone())),
            )
            .ack_mode(AckMode::Record)
            .concurrency(concurrency)
            .poll_timeout(Duration::from_millis(100))
            .start()
            .expect("start");
        let commits = watch_commits(&handle, 0);
        // (Checked below, after the loss: it never comes when the record is lost.)
        let was_recovered = eventually(
            || !recovered.lock().unwrap().is_empty(),
            Duration::from_secs(10),
        )
        .await;
        // More records after the rejoin: they are handled and committed.
        let producer = Producer::new(cluster.clone(), ProducerConfig::default())
            .await
            .expect("producer");
        for o in 10..15 {
            producer
                .send_and_wait(
                    Record::new(topic.as_str())
                        .with_partition(0)
                        .with_value(format!("v{o}")),
                )
                .await
                .expect("sent");
        }
        producer.close().await;
        let done = eventually(
            || mock.committed_offset(&group, &topic, 0) == Some(15),
            Duration::from_secs(20),
        )
        .await;
        handle.stop().await;
        let committed = mock.committed_offset(&group, &topic, 0).unwrap_or(0);
        let finished: BTreeSet<i64> = handled
            .lock()
            .unwrap()
            .iter()
            .chain(recovered.lock().unwrap().iter())
            .copied()
            .collect();
        let lost: Vec<i64> = (0..committed).filter(|o| !finished.contains(o)).collect();
        assert!(
            lost.is_empty(),
            "concurrency {concurrency}: below the committed offset {committed} but never \
             handled nor recovered: {lost:?} (commits {:?})",
            commits.lock().unwrap()
        );
        assert!(
            was_recovered,
            "concurrency {concurrency}: the poison record is recovered"
        );
        assert!(
            fenced.load(Ordering::SeqCst) >= 2,
            "concurrency {concurrency}: the poison record came again after the rejoin"
        );
        assert!(
            done,
            "concurrency {concurrency}: committed {committed}, not 15"
        );
        assert_never_backwards(&commits.lock().unwrap());
    }
}

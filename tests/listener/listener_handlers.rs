//! The pluggable error handlers (`CommonErrorHandler`) and their switches, on rekafka's embedded
//! mock cluster: the logging, container-stopping and delegating handlers, a custom handler
//! (halt, consumer-aware seek, `handle_other`), `Acknowledgment::nack`, and the
//! `ack_after_handle` / `commit_recovered` switches.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::KafkaCode;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use rekafka::listener::{
    AckMode, BatchFailure, CommonErrorHandler, ContainerBuilder, ContainerEvent,
    ContainerStoppingErrorHandler, DefaultErrorHandler, DelegatingErrorHandler, Disposition,
    FixedBackOff, HandlerError, ListenerConsumerRecord, ListenerContainer, ListenerRecord,
    LoggingErrorHandler, OtherFailure, PartitionFailurePolicy, RecordFailure, RecovererFn,
    SharedError, StopReason,
};
use rekafka::mock::MockCluster;
use rekafka::producer::{Producer, ProducerConfig, Record};
use rekafka::protocol::unstable::ApiKey;

#[derive(Debug, thiserror::Error)]
#[error("poison record")]
struct Poison;

#[derive(Debug, thiserror::Error)]
#[error("the database is gone")]
struct DatabaseDown;

#[derive(Debug, thiserror::Error)]
#[error("saving the order failed")]
struct SaveFailed(#[source] DatabaseDown);

/// A topic of one partition with `records` records; the record at offset `poison` has the key
/// `poison`.
async fn setup(topic: &str, records: usize, poison: usize) -> (MockCluster, Cluster) {
    let mock = MockCluster::builder()
        .topic(topic, 1)
        .start()
        .await
        .expect("mock");
    let cluster = Cluster::connect(ClusterConfig::new([mock.bootstrap()]))
        .await
        .expect("connect");
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    for i in 0..records {
        let key = if i == poison {
            "poison".to_string()
        } else {
            format!("k{i}")
        };
        producer
            .send_and_wait(Record::new(topic).with_key(key).with_value(format!("v{i}")))
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

async fn committed(cluster: &Cluster, group: &str, topic: &str) -> Option<i64> {
    let c = Consumer::new(cluster.clone(), config(group)).expect("consumer");
    let tp = TopicPartition::new(topic, 0);
    let m = c
        .committed(std::slice::from_ref(&tp))
        .await
        .expect("committed");
    c.close().await.ok();
    m.get(&tp).cloned().flatten().map(|o| o.offset)
}

type Seen = Arc<Mutex<Vec<i64>>>;

/// A container over `topic` whose record handler notes every delivery and fails the poison
/// record with `error()` (every time).
fn builder(
    cluster: &Cluster,
    group: &str,
    topic: &str,
    seen: &Seen,
    error: fn() -> HandlerError,
) -> ContainerBuilder<Consumer> {
    let consumer = Consumer::new(cluster.clone(), config(group)).expect("consumer");
    consumer.subscribe([topic]).expect("subscribe");
    let seen = seen.clone();
    ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(r.offset());
                if r.key_str() == Some("poison") {
                    return Err(error());
                }
                Ok(())
            }
        })
        .poll_timeout(Duration::from_millis(100))
}

fn poison() -> HandlerError {
    Box::new(Poison)
}

fn save_failed() -> HandlerError {
    Box::new(SaveFailed(DatabaseDown))
}

async fn wait_committed(cluster: &Cluster, group: &str, topic: &str, offset: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed(cluster, group, topic).await != Some(offset) {
        assert!(
            Instant::now() < deadline,
            "offset {offset} never committed (now {:?})",
            committed(cluster, group, topic).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The future a noting recoverer returns.
type Ready = std::future::Ready<Result<(), HandlerError>>;

/// A recoverer that notes the offsets it recovers.
fn noting(
    into: Seen,
) -> RecovererFn<impl Fn(ListenerConsumerRecord, SharedError) -> Ready + Send + Sync> {
    RecovererFn(move |r: ListenerConsumerRecord, _e: SharedError| {
        into.lock().unwrap().push(r.offset());
        std::future::ready(Ok::<(), HandlerError>(()))
    })
}

/// `sync_record_handler` (no future per record) goes through the same error handling as the
/// async form: the poison record is retried per the back-off (two retries), then recovered, the
/// records after it are handled in order, and everything is committed; with a listener-level
/// error handler that turns the failure into success, nothing is retried or recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_record_handler_is_retried_and_recovered_like_an_async_one() {
    let (topic, group) = ("sync-handled", "g-sync-handled");
    let (_mock, cluster) = setup(topic, 5, 2).await;
    for with_listener_handler in [false, true] {
        let group = format!("{group}-{with_listener_handler}");
        let (seen, recovered): (Seen, Seen) = Default::default();
        let consumer = Consumer::new(cluster.clone(), config(&group)).expect("consumer");
        consumer.subscribe([topic]).expect("subscribe");
        let s = seen.clone();
        let builder = ListenerContainer::builder(consumer)
            .sync_record_handler(move |r: ListenerConsumerRecord| {
                s.lock().unwrap().push(r.offset());
                if r.key_str() == Some("poison") {
                    return Err(poison());
                }
                Ok(())
            })
            .error_handler(
                DefaultErrorHandler::new()
                    .back_off(FixedBackOff::new(Duration::from_millis(10), 2))
                    .recoverer(noting(recovered.clone())),
            )
            .poll_timeout(Duration::from_millis(100));
        let builder = if with_listener_handler {
            builder.listener_error_handler(|_r: &ListenerConsumerRecord, _e| Ok(()))
        } else {
            builder
        };
        let handle = builder.start().expect("start");
        wait_committed(&cluster, &group, topic, 5).await;
        assert_eq!(handle.stop().await, StopReason::Normal);
        let (expected_seen, expected_recovered) = if with_listener_handler {
            (vec![0, 1, 2, 3, 4], vec![])
        } else {
            (vec![0, 1, 2, 2, 2, 3, 4], vec![2])
        };
        assert_eq!(
            seen.lock().unwrap().clone(),
            expected_seen,
            "listener-level handler: {with_listener_handler}"
        );
        assert_eq!(recovered.lock().unwrap().clone(), expected_recovered);
    }
}

/// The logging handler logs the failure and goes on: the poison record is delivered once, the
/// records after it are handled, and everything is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_handler_skips_the_failed_record_and_commits_it() {
    let (topic, group) = ("logged", "g-logged");
    let (_mock, cluster) = setup(topic, 5, 2).await;
    let seen: Seen = Arc::default();
    // Any handler, shared: an `Arc<dyn CommonErrorHandler<_>>` is one too.
    let shared: Arc<dyn CommonErrorHandler<ListenerConsumerRecord>> =
        Arc::new(LoggingErrorHandler::new());
    let handle = builder(&cluster, group, topic, &seen, poison)
        .error_handler(shared)
        .start()
        .expect("start");
    wait_committed(&cluster, group, topic, 5).await;
    assert_eq!(handle.stop().await, StopReason::Normal);
    assert_eq!(seen.lock().unwrap().clone(), vec![0, 1, 2, 3, 4]);
}

/// `ack_after_handle(false)`: the handled record is not acknowledged. When it is the last one of
/// its partition, the commit stops below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_ack_after_handle_the_failed_record_is_not_committed() {
    let (topic, group) = ("unacked", "g-unacked");
    let (_mock, cluster) = setup(topic, 3, 2).await;
    let seen: Seen = Arc::default();
    let handle = builder(&cluster, group, topic, &seen, poison)
        .error_handler(LoggingErrorHandler::new().ack_after_handle(false))
        .start()
        .expect("start");
    wait_committed(&cluster, group, topic, 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "poison never delivered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle.stop().await;
    assert_eq!(committed(&cluster, group, topic).await, Some(2));
    assert_eq!(seen.lock().unwrap().clone(), vec![0, 1, 2]);

    // The DefaultErrorHandler's switch: the recovered record is not committed either, while
    // by default it is.
    for (ack, expected) in [(false, 2), (true, 3)] {
        let group = format!("g-default-{ack}");
        let (seen, recovered): (Seen, Seen) = Default::default();
        let handle = builder(&cluster, &group, topic, &seen, poison)
            .error_handler(
                DefaultErrorHandler::new()
                    .back_off(FixedBackOff::no_retries())
                    .recoverer(noting(recovered.clone()))
                    .ack_after_handle(ack),
            )
            .start()
            .expect("start");
        let deadline = Instant::now() + Duration::from_secs(30);
        while recovered.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline, "never recovered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        handle.stop().await;
        assert_eq!(recovered.lock().unwrap().clone(), vec![2]);
        assert_eq!(
            committed(&cluster, &group, topic).await,
            Some(expected),
            "ack_after_handle({ack})"
        );
    }
}

/// The container-stopping handler stops the container at the first failure: the records before
/// it are committed, the failed record is not (it comes again), and nothing after it is handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_handler_stops_the_container_without_committing_the_record() {
    let (topic, group) = ("stopped", "g-stopped");
    let (_mock, cluster) = setup(topic, 5, 2).await;
    let seen: Seen = Arc::default();
    let handle = builder(&cluster, group, topic, &seen, poison)
        .error_handler(ContainerStoppingErrorHandler)
        .start()
        .expect("start");
    let reason = tokio::time::timeout(Duration::from_secs(30), handle.join())
        .await
        .expect("the container stops by itself");
    assert_eq!(reason, StopReason::Abnormal);
    assert_eq!(seen.lock().unwrap().clone(), vec![0, 1, 2]);
    assert_eq!(committed(&cluster, group, topic).await, Some(2));
}

/// The delegating handler picks by the error's type anywhere in its source chain: a
/// `SaveFailed` caused by `DatabaseDown` goes to the delegate for `DatabaseDown` (which stops the
/// container), a plain `Poison` to the default handler (which recovers the record); recoveries
/// follow the same choice of recoverer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delegating_handler_chooses_by_the_error_in_the_cause_chain() {
    let (topic, group) = ("delegated", "g-delegated");
    let (_mock, cluster) = setup(topic, 5, 2).await;
    let handler = || {
        DelegatingErrorHandler::<ListenerConsumerRecord>::new(
            DefaultErrorHandler::new().back_off(FixedBackOff::no_retries()),
        )
        .delegate::<DatabaseDown>(ContainerStoppingErrorHandler)
    };

    // The cause chain holds a DatabaseDown: stopped.
    let seen: Seen = Arc::default();
    let handle = builder(&cluster, group, topic, &seen, save_failed)
        .error_handler(handler())
        .start()
        .expect("start");
    let reason = tokio::time::timeout(Duration::from_secs(30), handle.join())
        .await
        .expect("stops");
    assert_eq!(reason, StopReason::Abnormal);
    assert_eq!(committed(&cluster, group, topic).await, Some(2));

    // Anything else: the default handler recovers the record and goes on.
    let seen: Seen = Arc::default();
    let handle = builder(&cluster, group, topic, &seen, poison)
        .error_handler(handler())
        .start()
        .expect("start");
    wait_committed(&cluster, group, topic, 5).await;
    handle.stop().await;
    assert_eq!(seen.lock().unwrap().clone(), vec![2, 3, 4]);

    // Each delegate's recoverer recovers the records its errors chose.
    let group = "g-delegated-recoverers";
    let (by_default, by_delegate): (Seen, Seen) = Default::default();
    let seen: Seen = Arc::default();
    let handle = builder(&cluster, group, topic, &seen, save_failed)
        .error_handler(
            DelegatingErrorHandler::new(
                DefaultErrorHandler::new()
                    .back_off(FixedBackOff::no_retries())
                    .recoverer(noting(by_default.clone())),
            )
            .delegate::<DatabaseDown>(
                DefaultErrorHandler::new()
                    .back_off(FixedBackOff::no_retries())
                    .recoverer(noting(by_delegate.clone())),
            ),
        )
        .start()
        .expect("start");
    wait_committed(&cluster, group, topic, 5).await;
    handle.stop().await;
    assert_eq!(by_delegate.lock().unwrap().clone(), vec![2]);
    assert!(by_default.lock().unwrap().is_empty());
}

/// `nack(sleep)`: the record is redelivered after the sleep with the records after it; it is
/// not a failure (no failed-delivery event, the error handler is not involved).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_redelivers_the_record_after_the_sleep() {
    let (topic, group) = ("nacked", "g-nacked");
    let (_mock, cluster) = setup(topic, 5, 2).await;
    let seen: Arc<Mutex<Vec<(i64, Instant)>>> = Arc::default();
    let nacks = Arc::new(AtomicU32::new(0));
    let consumer = Consumer::new(cluster.clone(), config(group)).expect("consumer");
    consumer.subscribe([topic]).expect("subscribe");
    let (s, n) = (seen.clone(), nacks.clone());
    let builder = ListenerContainer::builder(consumer)
        .record_handler_with_ack(move |r: ListenerConsumerRecord, ack| {
            let (s, n) = (s.clone(), n.clone());
            async move {
                s.lock().unwrap().push((r.offset(), Instant::now()));
                if r.offset() == 2 && n.fetch_add(1, Ordering::SeqCst) == 0 {
                    ack.nack(Duration::from_millis(400));
                }
                Ok(())
            }
        })
        .error_handler(ContainerStoppingErrorHandler)
        .poll_timeout(Duration::from_millis(100));
    let mut events = builder.subscribe();
    let handle = builder.start().expect("start");
    wait_committed(&cluster, group, topic, 5).await;
    assert_eq!(handle.stop().await, StopReason::Normal);
    let seen = seen.lock().unwrap().clone();
    let offsets: Vec<i64> = seen.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, vec![0, 1, 2, 2, 3, 4]);
    let waited = seen[3].1.duration_since(seen[2].1);
    assert!(
        waited >= Duration::from_millis(400),
        "redelivered after {waited:?}"
    );
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, ContainerEvent::FailedDelivery { .. }),
            "a nack is not a failure: {e:?}"
        );
    }
}

/// `commit_recovered`: the recovered record's offset is committed as soon as it is recovered,
/// before the rest of the poll (AckMode::Batch would commit once, after the poll).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_recovered_commits_right_after_the_recovery() {
    let (topic, group) = ("recovered", "g-recovered");
    let (_mock, cluster) = setup(topic, 5, 2).await;
    let (seen, recovered): (Seen, Seen) = Default::default();
    let builder = builder(&cluster, group, topic, &seen, poison)
        .ack_mode(AckMode::Batch)
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::no_retries())
                .recoverer(noting(recovered.clone()))
                .commit_recovered(true),
        );
    let mut events = builder.subscribe();
    let handle = builder.start().expect("start");
    wait_committed(&cluster, group, topic, 5).await;
    handle.stop().await;
    assert_eq!(recovered.lock().unwrap().clone(), vec![2]);
    let mut commits = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let ContainerEvent::Committed(offsets) = e {
            commits.extend(offsets.iter().map(|o| o.offset));
        }
    }
    assert!(
        commits.contains(&3),
        "the recovered record's offset is committed on its own: {commits:?}"
    );
    assert_eq!(commits.last(), Some(&5), "{commits:?}");
}

/// A handler of one's own: it halts the partition at the poison record (the alarm fires,
/// nothing past it is committed), counts the poll and commit failures `handle_other` sees, and
/// stops the container at the first commit failure.
struct HaltAndCount {
    others: Arc<AtomicU32>,
}

impl<R: ListenerRecord> CommonErrorHandler<R> for HaltAndCount {
    fn handle_one(&self, _failure: &mut RecordFailure<'_, R>) -> Disposition {
        Disposition::HaltPartition
    }

    fn handle_batch(&self, _failure: &mut BatchFailure<'_, R>) -> Disposition {
        Disposition::HaltPartition
    }

    fn handle_other(&self, _failure: &mut OtherFailure<'_>) -> Disposition {
        self.others.fetch_add(1, Ordering::SeqCst);
        Disposition::StopContainer
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_handler_halts_the_partition() {
    let (topic, group) = ("halted", "g-halted");
    let (_mock, cluster) = setup(topic, 5, 2).await;
    let seen: Seen = Arc::default();
    let others = Arc::new(AtomicU32::new(0));
    let handle = builder(&cluster, group, topic, &seen, poison)
        .error_handler(HaltAndCount {
            others: others.clone(),
        })
        .start()
        .expect("start");
    let mut events = handle.events();
    let halted = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(ContainerEvent::RecoveryHalted { offset, .. }) = events.recv().await {
                return offset;
            }
        }
    })
    .await
    .expect("alarm");
    assert_eq!(halted, 2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(handle.halted_partitions().len(), 1);
    assert_eq!(seen.lock().unwrap().clone(), vec![0, 1, 2]);
    assert_eq!(committed(&cluster, group, topic).await, Some(2));
    assert_eq!(handle.stop().await, StopReason::Normal);
    assert_eq!(others.load(Ordering::SeqCst), 0);
}

/// `handle_other` sees a failed commit; a handler that answers `StopContainer` stops the
/// container, while the default goes on (the offsets stay pending and are committed later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_other_decides_about_a_failed_commit() {
    let (topic, group) = ("other", "g-other");
    let (mock, cluster) = setup(topic, 3, 99).await;
    let seen: Seen = Arc::default();
    let others = Arc::new(AtomicU32::new(0));
    mock.push_request_errors(ApiKey::OffsetCommit, &[KafkaCode::OffsetMetadataTooLarge]);
    let handle = builder(&cluster, group, topic, &seen, poison)
        .error_handler(HaltAndCount {
            others: others.clone(),
        })
        .start()
        .expect("start");
    let reason = tokio::time::timeout(Duration::from_secs(30), handle.join())
        .await
        .expect("stops");
    assert_eq!(reason, StopReason::Abnormal);
    assert_eq!(others.load(Ordering::SeqCst), 1);
    // The final commit of the stop went through.
    assert_eq!(committed(&cluster, group, topic).await, Some(3));

    // The default handler goes on: the offsets stay pending and the stop commits them.
    let group = "g-other-default";
    let seen: Seen = Arc::default();
    mock.push_request_errors(ApiKey::OffsetCommit, &[KafkaCode::OffsetMetadataTooLarge]);
    let builder = builder(&cluster, group, topic, &seen, poison);
    let mut events = builder.subscribe();
    let handle = builder.start().expect("start");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(ContainerEvent::CommitFailed(_)) = events.recv().await {
                return;
            }
        }
    })
    .await
    .expect("the commit fails");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(handle.is_running());
    assert_eq!(handle.stop().await, StopReason::Normal);
    assert_eq!(committed(&cluster, group, topic).await, Some(3));
    assert_eq!(seen.lock().unwrap().clone(), vec![0, 1, 2]);
}

/// What a `handle_other` saw: the error's Kafka code and the failed partition.
type OthersSeen = Arc<Mutex<Vec<(Option<KafkaCode>, Option<(String, i32)>)>>>;

/// A custom `handle_other` (Spring's `handleOtherException` with the `Consumer`): notes what it
/// sees and, when `seek` is set, seeks a partition whose offset is out of range to offset 0.
struct RestartOutOfRange {
    others: OthersSeen,
    seek: bool,
}

impl<R: ListenerRecord> CommonErrorHandler<R> for RestartOutOfRange {
    fn handle_one(&self, _failure: &mut RecordFailure<'_, R>) -> Disposition {
        Disposition::StopContainer
    }

    fn handle_batch(&self, _failure: &mut BatchFailure<'_, R>) -> Disposition {
        Disposition::StopContainer
    }

    fn handle_other(&self, failure: &mut OtherFailure<'_>) -> Disposition {
        let partition = failure.partition.map(|(t, p)| (t.to_string(), *p));
        self.others
            .lock()
            .unwrap()
            .push((failure.error.kafka_code(), partition.clone()));
        if let (true, Some(KafkaCode::OffsetOutOfRange), Some((t, p))) =
            (self.seek, failure.error.kafka_code(), partition)
        {
            failure.seeks.seek(&t, p, 0);
        }
        Disposition::Handled
    }
}

/// The group's committed offset is past the log's end and `auto.offset.reset` is `none`: the
/// partition's fetch fails with OFFSET_OUT_OF_RANGE and the container hands the failure, with
/// its partition, to `handle_other`. A handler that seeks the partition to offset 0 resolves
/// it: every record is handled once, in order, and committed. One that does not seek leaves
/// it to the partition failure policy (paused with the alarm, nothing handled or committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handle_other_seeks_a_partition_out_of_range() {
    let topic = "out-of-range";
    let (_mock, cluster) = setup(topic, 4, 99).await;
    let admin = rekafka::admin::Admin::new(cluster.clone());
    for (group, seek) in [("g-oor-seek", true), ("g-oor-no-seek", false)] {
        for (_, r) in admin
            .alter_consumer_group_offsets(group, &[(TopicPartition::new(topic, 0), 1000)])
            .await
            .expect("alter offsets")
        {
            r.expect("offset set");
        }
        let seen: Seen = Arc::default();
        let others: OthersSeen = Arc::default();
        let consumer = Consumer::new(
            cluster.clone(),
            config(group).with_auto_offset_reset(OffsetReset::None),
        )
        .expect("consumer");
        consumer.subscribe([topic]).expect("subscribe");
        let s = seen.clone();
        let builder = ListenerContainer::builder(consumer)
            .record_handler(move |r: ListenerConsumerRecord| {
                let s = s.clone();
                async move {
                    s.lock().unwrap().push(r.offset());
                    Ok(())
                }
            })
            .poll_timeout(Duration::from_millis(100))
            .partition_failure_policy(PartitionFailurePolicy::PauseWithAlarm)
            .error_handler(RestartOutOfRange {
                others: others.clone(),
                seek,
            });
        let mut events = builder.subscribe();
        let handle = builder.start().expect("start");
        if seek {
            wait_committed(&cluster, group, topic, 4).await;
            assert_eq!(seen.lock().unwrap().clone(), vec![0, 1, 2, 3]);
            assert!(handle.failed_partitions().is_empty());
        } else {
            let failed = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    if let Ok(ContainerEvent::PartitionFailed { partition, .. }) =
                        events.recv().await
                    {
                        return partition;
                    }
                }
            })
            .await
            .expect("the partition fails");
            assert_eq!((&*failed.0, failed.1), (topic, 0));
            assert_eq!(handle.failed_partitions().len(), 1);
            assert!(seen.lock().unwrap().is_empty());
            assert_eq!(committed(&cluster, group, topic).await, Some(1000));
        }
        assert_eq!(handle.stop().await, StopReason::Normal);
        assert_eq!(
            others.lock().unwrap().clone(),
            vec![(
                Some(KafkaCode::OffsetOutOfRange),
                Some((topic.to_string(), 0))
            )],
            "handle_other sees the out-of-range partition once"
        );
    }
}

/// Consumer-aware handling: a handler of one's own seeks past the record after the failed one;
/// the failed record counts as handled, the skipped one is never delivered.
struct SeekPastNext;

impl<R: ListenerRecord> CommonErrorHandler<R> for SeekPastNext {
    fn handle_one(&self, failure: &mut RecordFailure<'_, R>) -> Disposition {
        let r = failure.record;
        failure.seeks.seek(r.topic(), r.partition(), r.offset() + 2);
        Disposition::Handled
    }

    fn handle_batch(&self, _failure: &mut BatchFailure<'_, R>) -> Disposition {
        Disposition::StopContainer
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_aware_handler_seeks() {
    let (topic, group) = ("sought", "g-sought");
    let (_mock, cluster) = setup(topic, 5, 2).await;
    let seen: Seen = Arc::default();
    let handle = builder(&cluster, group, topic, &seen, poison)
        .error_handler(SeekPastNext)
        .start()
        .expect("start");
    wait_committed(&cluster, group, topic, 5).await;
    handle.stop().await;
    assert_eq!(seen.lock().unwrap().clone(), vec![0, 1, 2, 4]);
}

/// A batch handler's failure that names no record goes to `handle_batch`: the logging handler
/// handles it at once (no in-memory retries) and the batch is committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_handler_handles_a_failed_batch() {
    let (topic, group) = ("batch-logged", "g-batch-logged");
    let (_mock, cluster) = setup(topic, 5, 2).await;
    let calls = Arc::new(AtomicU32::new(0));
    let seen: Seen = Arc::default();
    let consumer = Consumer::new(cluster.clone(), config(group)).expect("consumer");
    consumer.subscribe([topic]).expect("subscribe");
    let (c, s) = (calls.clone(), seen.clone());
    let handle = ListenerContainer::builder(consumer)
        .batch_handler(move |records: Vec<ListenerConsumerRecord>| {
            let (c, s) = (c.clone(), s.clone());
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                s.lock()
                    .unwrap()
                    .extend(records.iter().map(ListenerRecord::offset));
                if records.iter().any(|r| r.key_str() == Some("poison")) {
                    return Err(Box::new(Poison) as HandlerError);
                }
                Ok(())
            }
        })
        .error_handler(LoggingErrorHandler::new())
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    wait_committed(&cluster, group, topic, 5).await;
    handle.stop().await;
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1, 2, 3, 4], "each record handed over once");
    assert!(calls.load(Ordering::SeqCst) <= 5);
}

//! Error handling in the listener container (issue 15): error classes that do not depend on
//! messages, the exactly-once dead-letter recoverer, the halt alarm, batch failures named deep
//! in the cause chain, async listener-level handlers, deserialization failures. On the mock
//! cluster.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, IsolationLevel, OffsetReset, StartOffset, TopicPartition,
};
use rekafka::listener::{
    ContainerEvent, DeadLetterInfo, DeadLetterPublisher, DefaultErrorHandler, FixedBackOff,
    HandlerError, ListenerConsumerRecord, ListenerContainer, ListenerFailure, ListenerRecord,
    MissingDestination, OnFenced, PublishWait, SharedError, StopReason, TransactionalDeadLetters,
    typed_error,
};
use rekafka::mock::MockCluster;
use rekafka::producer::{Producer, ProducerConfig, Record};
use rekafka::transaction::TransactionalProducer;

async fn connect(mock: &MockCluster) -> Cluster {
    Cluster::connect(ClusterConfig::new([mock.bootstrap()]))
        .await
        .expect("connect")
}

async fn produce(cluster: &Cluster, records: Vec<Record>) {
    let p = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    for r in records {
        p.send_and_wait(r).await.expect("sent");
    }
    p.close().await;
}

fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_auto_commit(AutoCommit::Disabled)
        .with_session_timeout(Duration::from_secs(6))
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(20))
}

async fn wait_until(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The dead letters in `topic` partition 0, decoded.
fn dead_letters(mock: &MockCluster, topic: &str) -> Vec<(String, DeadLetterInfo)> {
    mock.records(topic, 0)
        .expect("records")
        .into_iter()
        .map(|r| {
            let headers: Vec<_> = r.headers.iter().collect();
            (
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                DeadLetterInfo::from_headers(&headers),
            )
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error("invalid order {0}")]
struct InvalidOrder(u32);

/// An error whose `Debug` prints its message (as anyhow-style errors do).
#[derive(thiserror::Error)]
#[error("upstream said {0}")]
struct Upstream(u32);

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream said {}", self.0)
    }
}

/// Issue 15, item 1: an error whose message changes on every attempt is still the same error
/// class, so `FixedBackOff(10 ms, 2)` gives three deliveries and one dead letter; the dead
/// letter's class headers carry the error's type path, never its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_messages_keep_the_error_class_and_the_back_off_ends() {
    let mock = MockCluster::builder()
        .topic("orders", 1)
        .topic("orders-dlt", 1)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    let keys = ["string", "typed", "upstream", "ok"];
    produce(
        &cluster,
        keys.iter()
            .map(|k| Record::new("orders").with_key(*k).with_value("v"))
            .collect(),
    )
    .await;
    let deliveries: Arc<Mutex<Vec<String>>> = Arc::default();
    let d = deliveries.clone();
    // No `.group(..)`: the consumer's group goes into the dead letters, as Spring writes it
    // whenever the group is known.
    let dlt = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
        .wait(PublishWait::PerRecord)
        .build()
        .await
        .expect("publisher");
    let consumer = Consumer::new(cluster.clone(), config("g")).expect("consumer");
    consumer.subscribe(["orders"]).expect("subscribe");
    let n = Arc::new(AtomicU32::new(0));
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let (d, n) = (d.clone(), n.clone());
            async move {
                let key = r.key_str().unwrap_or_default().to_owned();
                d.lock().unwrap().push(key.clone());
                let i = n.fetch_add(1, Ordering::SeqCst);
                match key.as_str() {
                    "string" => Err(format!("attempt {i} failed").into()),
                    "typed" => Err(typed_error(InvalidOrder(i))),
                    "upstream" => Err(Box::new(Upstream(i)) as HandlerError),
                    _ => Ok(()),
                }
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(10), 2))
                .recoverer(dlt),
        )
        .poll_timeout(Duration::from_millis(200))
        .start()
        .expect("start");
    wait_until(
        || dead_letters(&mock, "orders-dlt").len() == 3 || deliveries.lock().unwrap().len() > 30,
        "three dead letters",
    )
    .await;
    handle.stop().await;
    let deliveries = deliveries.lock().unwrap().clone();
    for k in &keys[..3] {
        assert_eq!(
            deliveries.iter().filter(|d| d == k).count(),
            3,
            "{k}: one delivery and two retries, then recovered; deliveries: {deliveries:?}"
        );
    }
    let letters = dead_letters(&mock, "orders-dlt");
    let class = |key: &str| {
        let (_, info) = letters
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no dead letter for {key}"));
        (
            info.exception_fqcn.clone().unwrap_or_default(),
            info.exception_cause_fqcn.clone().unwrap_or_default(),
        )
    };
    let string = std::any::type_name::<String>();
    assert_eq!(class("string"), (string.to_owned(), string.to_owned()));
    let typed = std::any::type_name::<InvalidOrder>();
    assert_eq!(typed, "listener::listener_errors::InvalidOrder");
    assert_eq!(class("typed"), (typed.to_owned(), typed.to_owned()));
    // A type never named to rekafka, whose `Debug` is its message: a stable class, never text
    // from the message.
    let (upstream, _) = class("upstream");
    assert!(!upstream.contains("said"), "{upstream}");
    for (key, info) in &letters {
        assert_eq!(info.original_consumer_group.as_deref(), Some("g"), "{key}");
    }
}

// ---- item 2: TransactionalDeadLetters ----

#[derive(Debug, thiserror::Error)]
#[error("poison record")]
struct Poison;

async fn txn_producer(mock: &MockCluster, id: &str) -> rekafka::Result<TransactionalProducer> {
    let p = TransactionalProducer::new(
        connect(mock).await,
        ProducerConfig::default().with_transactional_id(id),
    )?;
    p.init_transactions().await?;
    Ok(p)
}

fn txn_config(group: &str) -> ConsumerConfig {
    config(group).with_isolation_level(IsolationLevel::ReadCommitted)
}

/// (partition, key) of the records a read_committed consumer sees in `topic`.
async fn read_committed(mock: &MockCluster, topic: &str, partitions: i32) -> Vec<(i32, String)> {
    let consumer = Consumer::new(
        connect(mock).await,
        ConsumerConfig::new()
            .with_auto_commit(AutoCommit::Disabled)
            .with_isolation_level(IsolationLevel::ReadCommitted)
            .with_fetch_max_wait(Duration::from_millis(20)),
    )
    .expect("consumer");
    consumer
        .assign((0..partitions).map(|p| (TopicPartition::new(topic, p), StartOffset::Beginning)))
        .expect("assign");
    let mut out = Vec::new();
    let mut idle = Instant::now();
    while idle.elapsed() < Duration::from_millis(300) {
        let recs = consumer
            .poll(Duration::from_millis(50))
            .await
            .expect("poll");
        if !recs.is_empty() {
            idle = Instant::now();
        }
        for r in recs.iter() {
            out.push((
                r.partition,
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
            ));
        }
    }
    consumer.close().await.ok();
    out
}

/// A transactional container on `in` whose handler fails records keyed `poison*`, recovering
/// with `recoverer`; no retries, recovery failures retried every 50 ms, halting after 3.
fn txn_container(
    consumer: Consumer,
    producer: Arc<TransactionalProducer>,
    recoverer: TransactionalDeadLetters<ListenerConsumerRecord>,
) -> rekafka::listener::ContainerBuilder<Consumer> {
    ListenerContainer::builder(consumer)
        .record_handler(|r: ListenerConsumerRecord| async move {
            if r.key_str().is_some_and(|k| k.starts_with("poison")) {
                return Err(Box::new(Poison) as HandlerError);
            }
            Ok(())
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::no_retries())
                .max_recovery_failures(Some(3))
                .recovery_retry_interval(Duration::from_millis(50))
                .recoverer(recoverer),
        )
        .transactional(producer)
        .poll_timeout(Duration::from_millis(100))
}

/// Waits for the first of: `committed` past the poison record (true), or a recovery failure
/// event (false).
async fn skipped_or_recovery_failed(
    mock: &MockCluster,
    events: &mut rekafka::listener::Events,
    group: &str,
    topic: &str,
    partition: i32,
    past: i64,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "neither skipped nor failed");
        if mock
            .committed_offset(group, topic, partition)
            .is_some_and(|o| o >= past)
        {
            return true;
        }
        match tokio::time::timeout(Duration::from_millis(20), events.recv()).await {
            Ok(Ok(ContainerEvent::RecoveryFailed { .. })) => return false,
            _ => continue,
        }
    }
}

/// `MissingDestination::Fail`: no destination is a recovery failure (the record is not
/// skipped), as with the non-transactional publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_dead_letters_fail_without_a_destination() {
    let mock = MockCluster::builder()
        .topic("in", 1)
        .topic("in-dlt", 1)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    produce(
        &cluster,
        ["k0", "poison", "k2"]
            .iter()
            .map(|k| Record::new("in").with_key(*k).with_value("v"))
            .collect(),
    )
    .await;
    let producer = Arc::new(txn_producer(&mock, "tx-missing").await.expect("producer"));
    let layout = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
        .group("g-missing")
        .resolver(|_, _| None)
        .on_missing_destination(MissingDestination::Fail)
        .build()
        .await
        .expect("layout");
    let consumer = Consumer::new(cluster.clone(), txn_config("g-missing")).expect("consumer");
    consumer.subscribe(["in"]).expect("subscribe");
    let builder = txn_container(
        consumer,
        producer.clone(),
        TransactionalDeadLetters::new(layout, producer),
    );
    let mut events = builder.subscribe();
    let handle = builder.start().expect("start");
    let skipped = skipped_or_recovery_failed(&mock, &mut events, "g-missing", "in", 0, 2).await;
    handle.stop().await;
    assert!(!skipped, "the record without a destination was skipped");
    // Nothing past the record is committed (the records before it may have shared its
    // aborted transaction).
    assert!(mock.committed_offset("g-missing", "in", 0).unwrap_or(0) <= 1);
    assert!(read_committed(&mock, "in-dlt", 1).await.is_empty());
}

/// A dead-letter topic with fewer partitions than the source: the dead letter of a record of a
/// partition the DLT lacks is left to the partitioner (as `DeadLetterPublisher` and Spring's
/// `verifyPartition` do), not a recovery failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_dead_letters_fall_back_to_the_partitioner() {
    let mock = MockCluster::builder()
        .topic("in", 3)
        .topic("in-dlt", 1)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    produce(
        &cluster,
        vec![
            Record::new("in")
                .with_partition(2)
                .with_key("k0")
                .with_value("v"),
            Record::new("in")
                .with_partition(2)
                .with_key("poison")
                .with_value("v"),
            Record::new("in")
                .with_partition(2)
                .with_key("k2")
                .with_value("v"),
        ],
    )
    .await;
    let producer = Arc::new(txn_producer(&mock, "tx-fallback").await.expect("producer"));
    let layout = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
        .group("g-fallback")
        .build()
        .await
        .expect("layout");
    let consumer = Consumer::new(cluster.clone(), txn_config("g-fallback")).expect("consumer");
    consumer.subscribe(["in"]).expect("subscribe");
    let builder = txn_container(
        consumer,
        producer.clone(),
        TransactionalDeadLetters::new(layout, producer),
    );
    let mut events = builder.subscribe();
    let handle = builder.start().expect("start");
    let skipped = skipped_or_recovery_failed(&mock, &mut events, "g-fallback", "in", 2, 3).await;
    handle.stop().await;
    assert!(skipped, "the dead letter could not be written");
    assert_eq!(
        read_committed(&mock, "in-dlt", 1).await,
        vec![(0, "poison".to_owned())]
    );
}

/// After `OnFenced::Continue` swapped the container's producer, dead letters go through the new
/// one (the transaction's), not the fenced one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_dead_letters_follow_the_new_producer_after_a_fence() {
    let mock = MockCluster::builder()
        .topic("in", 1)
        .topic("in-dlt", 1)
        .start()
        .await
        .expect("mock");
    let mock = Arc::new(mock);
    let cluster = connect(&mock).await;
    produce(
        &cluster,
        vec![Record::new("in").with_key("k0").with_value("v")],
    )
    .await;
    let producer = Arc::new(txn_producer(&mock, "tx-fenced").await.expect("producer"));
    let layout = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
        .group("g-fenced")
        .build()
        .await
        .expect("layout");
    let consumer = Consumer::new(cluster.clone(), txn_config("g-fenced")).expect("consumer");
    consumer.subscribe(["in"]).expect("subscribe");
    let factory_mock = mock.clone();
    let made = Arc::new(AtomicU32::new(0));
    let m = made.clone();
    let builder = txn_container(
        consumer,
        producer.clone(),
        TransactionalDeadLetters::new(layout, producer.clone()),
    )
    .transactional_with(producer, OnFenced::Continue, move || {
        let (mock, m) = (factory_mock.clone(), m.clone());
        async move {
            m.fetch_add(1, Ordering::SeqCst);
            txn_producer(&mock, "tx-fenced").await
        }
    });
    let mut events = builder.subscribe();
    let handle = builder.start().expect("start");
    wait_until(
        || mock.committed_offset("g-fenced", "in", 0) == Some(1),
        "first record",
    )
    .await;
    // Another instance with the same transactional id fences the container's producer.
    let _other = txn_producer(&mock, "tx-fenced").await.expect("other");
    produce(
        &cluster,
        ["k1", "poison", "k3"]
            .iter()
            .map(|k| Record::new("in").with_key(*k).with_value("v"))
            .collect(),
    )
    .await;
    let mut halted = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while mock.committed_offset("g-fenced", "in", 0) != Some(4) && !halted {
        assert!(Instant::now() < deadline, "neither recovered nor halted");
        if let Ok(Ok(ContainerEvent::RecoveryHalted { .. })) =
            tokio::time::timeout(Duration::from_millis(20), events.recv()).await
        {
            halted = true;
        }
    }
    assert_eq!(handle.stop().await, StopReason::Normal);
    assert!(
        !halted,
        "recovery halted: the dead letters used the fenced producer"
    );
    assert!(made.load(Ordering::SeqCst) >= 1, "a new producer was made");
    assert_eq!(
        read_committed(&mock, "in-dlt", 1).await,
        vec![(0, "poison".to_owned())]
    );
}

/// By default (as Spring's `stopContainerWhenFenced=false`) a fenced container goes on with a
/// new producer of the same settings: the records after the fence are handled, their offsets
/// and the dead letter committed in its transactions, and the container stops normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_container_goes_on_with_a_renewed_producer_by_default() {
    let mock = MockCluster::builder()
        .topic("in", 1)
        .topic("in-dlt", 1)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    produce(
        &cluster,
        vec![Record::new("in").with_key("k0").with_value("v")],
    )
    .await;
    let producer = Arc::new(txn_producer(&mock, "tx-renew").await.expect("producer"));
    let layout = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
        .group("g-renew")
        .build()
        .await
        .expect("layout");
    let consumer = Consumer::new(cluster.clone(), txn_config("g-renew")).expect("consumer");
    consumer.subscribe(["in"]).expect("subscribe");
    let fenced_epoch = producer.producer_id_and_epoch();
    let builder = txn_container(
        consumer,
        producer.clone(),
        TransactionalDeadLetters::new(layout, producer.clone()),
    );
    let mut events = builder.subscribe();
    let handle = builder.start().expect("start");
    wait_until(
        || mock.committed_offset("g-renew", "in", 0) == Some(1),
        "first record",
    )
    .await;
    // Another instance with the same transactional id fences the container's producer.
    let other = txn_producer(&mock, "tx-renew").await.expect("other");
    produce(
        &cluster,
        ["k1", "poison", "k3"]
            .iter()
            .map(|k| Record::new("in").with_key(*k).with_value("v"))
            .collect(),
    )
    .await;
    let mut halted = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while mock.committed_offset("g-renew", "in", 0) != Some(4) && !halted {
        assert!(
            Instant::now() < deadline,
            "the container did not go on after the fence"
        );
        if let Ok(Ok(ContainerEvent::RecoveryHalted { .. })) =
            tokio::time::timeout(Duration::from_millis(20), events.recv()).await
        {
            halted = true;
        }
    }
    assert_eq!(handle.stop().await, StopReason::Normal);
    assert!(!halted, "recovery halted after the fence");
    assert!(
        producer.fatal_error().is_some(),
        "the first producer was fenced (epoch {fenced_epoch:?})"
    );
    drop(other);
    assert_eq!(
        read_committed(&mock, "in-dlt", 1).await,
        vec![(0, "poison".to_owned())]
    );
}

// ---- item 3: the RecoveryHalted alarm ----

/// Sends `records` pipelined (all sent, then all acknowledged).
async fn produce_many(cluster: &Cluster, records: Vec<Record>) {
    let p = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let mut acks = Vec::new();
    for r in records {
        acks.push(p.send(r).await.expect("send"));
    }
    for a in acks {
        a.await.expect("delivered");
    }
    p.close().await;
}

/// The alarm reaches a subscriber even when more events than the channel holds came after it
/// before the subscriber looked; the halted partitions can be queried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_halted_alarm_is_never_dropped() {
    let mock = MockCluster::builder()
        .topic("orders", 2)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    let recoveries = Arc::new(AtomicU32::new(0));
    let r = recoveries.clone();
    let consumer = Consumer::new(cluster.clone(), config("g-alarm")).expect("consumer");
    consumer.subscribe(["orders"]).expect("subscribe");
    let builder = ListenerContainer::builder(consumer)
        .record_handler(|r: ListenerConsumerRecord| async move {
            if r.key_str() == Some("poison") {
                return Err(Box::new(Poison) as HandlerError);
            }
            Ok(())
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::no_retries())
                .max_recovery_failures(Some(1))
                .halt_probe_interval(Duration::from_secs(3600))
                .recoverer(rekafka::listener::RecovererFn(
                    move |_: ListenerConsumerRecord, _| {
                        let r = r.clone();
                        async move {
                            r.fetch_add(1, Ordering::SeqCst);
                            Err::<(), HandlerError>("dead-letter topic unavailable".into())
                        }
                    },
                )),
        )
        .ack_mode(rekafka::listener::AckMode::Record)
        .poll_timeout(Duration::from_millis(100));
    let mut events = builder.subscribe();
    let handle = builder.start().expect("start");
    produce(
        &cluster,
        vec![
            Record::new("orders")
                .with_partition(0)
                .with_key("poison")
                .with_value("v"),
        ],
    )
    .await;
    wait_until(|| recoveries.load(Ordering::SeqCst) == 1, "the recovery").await;
    // More events than the channel holds (a commit per record), nobody reading.
    const FLOOD: i64 = 1500;
    produce_many(
        &cluster,
        (0..FLOOD)
            .map(|i| {
                Record::new("orders")
                    .with_partition(1)
                    .with_key(format!("k{i}"))
                    .with_value("v")
            })
            .collect(),
    )
    .await;
    wait_until(
        || mock.committed_offset("g-alarm", "orders", 1) == Some(FLOOD),
        "the flood handled",
    )
    .await;
    let mut alarms = Vec::new();
    let mut lagged = false;
    loop {
        match events.try_recv() {
            Ok(ContainerEvent::RecoveryHalted {
                partition, offset, ..
            }) => alarms.push((partition.1, offset)),
            Ok(_) => {}
            Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => lagged = true,
            Err(_) => break,
        }
    }
    let halted: Vec<(String, i32, i64, u32)> = handle
        .halted_partitions()
        .into_iter()
        .map(|h| {
            (
                h.partition.0.to_string(),
                h.partition.1,
                h.offset,
                h.failures,
            )
        })
        .collect();
    handle.stop().await;
    assert!(
        lagged,
        "the subscriber lagged (the test floods the channel)"
    );
    assert_eq!(alarms, vec![(0, 0)], "the alarm arrived once");
    assert_eq!(halted, vec![("orders".to_owned(), 0, 0, 1)]);
}

// ---- item 4: BatchListenerFailed in the cause chain ----

/// The application's error, wrapping the batch failure.
#[derive(Debug, thiserror::Error)]
#[error("billing batch failed")]
struct BillingFailed(#[source] rekafka::listener::BatchListenerFailed);

/// A `BatchListenerFailed` found anywhere in the cause chain names the failed record, as at
/// the top level: the records before it are committed, it alone is retried and recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_listener_failed_is_found_in_the_cause_chain() {
    let mock = MockCluster::builder()
        .topic("orders", 1)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    produce_many(
        &cluster,
        ["k0", "k1", "poison", "k3", "k4"]
            .iter()
            .map(|k| Record::new("orders").with_key(*k).with_value("v"))
            .collect(),
    )
    .await;
    let deliveries: Arc<Mutex<Vec<String>>> = Arc::default();
    let recovered: Arc<Mutex<Vec<i64>>> = Arc::default();
    let (d, rc) = (deliveries.clone(), recovered.clone());
    let consumer = Consumer::new(cluster.clone(), config("g-batch")).expect("consumer");
    consumer.subscribe(["orders"]).expect("subscribe");
    let handle = ListenerContainer::builder(consumer)
        .batch_handler(move |batch: Vec<ListenerConsumerRecord>| {
            let d = d.clone();
            async move {
                for r in &batch {
                    let key = r.key_str().unwrap_or_default().to_owned();
                    d.lock().unwrap().push(key.clone());
                    if key == "poison" {
                        let failed = rekafka::listener::BatchListenerFailed::at_record(r, Poison);
                        return Err(Box::new(BillingFailed(failed)) as HandlerError);
                    }
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(10), 2))
                .recoverer(rekafka::listener::RecovererFn(
                    move |r: ListenerConsumerRecord, _| {
                        let rc = rc.clone();
                        async move {
                            rc.lock().unwrap().push(r.offset());
                            Ok::<(), HandlerError>(())
                        }
                    },
                )),
        )
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    wait_until(
        || mock.committed_offset("g-batch", "orders", 0) == Some(5),
        "all committed",
    )
    .await;
    handle.stop().await;
    assert_eq!(
        recovered.lock().unwrap().clone(),
        vec![2],
        "only the failed record"
    );
    let deliveries = deliveries.lock().unwrap().clone();
    let count = |k: &str| deliveries.iter().filter(|d| *d == k).count();
    assert_eq!((count("k0"), count("k1")), (1, 1), "{deliveries:?}");
    assert_eq!(count("poison"), 3, "{deliveries:?}");
}

// ---- item 5: an async listener-level error handler that sees the attempt and returns a value ----

/// Spring's recipe: a listener-level error handler that, from the third delivery on,
/// dead-letters the record itself (awaiting the publication) and returns a value — the
/// listener's result for the record — instead of passing the error on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_error_handler_dead_letters_after_n_attempts_and_returns_a_value() {
    let mock = MockCluster::builder()
        .topic("orders", 1)
        .topic("orders-dlt", 1)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    produce_many(
        &cluster,
        ["k0", "poison", "k2"]
            .iter()
            .map(|k| Record::new("orders").with_key(*k).with_value("v"))
            .collect(),
    )
    .await;
    let dlt = Arc::new(
        DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
            .group("g-leh")
            .build()
            .await
            .expect("publisher"),
    );
    let deliveries: Arc<Mutex<Vec<(String, u32)>>> = Arc::default();
    let results: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();
    let container_recoveries = Arc::new(AtomicU32::new(0));
    let (d, res, cr) = (
        deliveries.clone(),
        results.clone(),
        container_recoveries.clone(),
    );
    let consumer = Consumer::new(cluster.clone(), config("g-leh")).expect("consumer");
    consumer.subscribe(["orders"]).expect("subscribe");
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let d = d.clone();
            async move {
                let key = r.key_str().unwrap_or_default().to_owned();
                d.lock().unwrap().push((key.clone(), 0));
                if key == "poison" {
                    return Err(Box::new(Poison) as HandlerError);
                }
                Ok(())
            }
        })
        .async_listener_error_handler(
            move |failure: ListenerFailure<ListenerConsumerRecord>| {
                let dlt = dlt.clone();
                async move {
                    if failure.attempt < 3 {
                        return Err(failure.error); // to the container's error handler
                    }
                    let error: SharedError = Arc::from(failure.error);
                    dlt.publish(&failure.record, &error)
                        .await
                        .map_err(|e| Box::new(e) as HandlerError)?;
                    Ok(format!("FAILED after {} attempts", failure.attempt))
                }
            },
            move |record: &ListenerConsumerRecord, value: String| {
                res.lock().unwrap().push((record.offset(), value));
            },
        )
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(10), 9))
                .recoverer(rekafka::listener::RecovererFn(
                    move |_: ListenerConsumerRecord, _| {
                        let cr = cr.clone();
                        async move {
                            cr.fetch_add(1, Ordering::SeqCst);
                            Ok::<(), HandlerError>(())
                        }
                    },
                )),
        )
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    wait_until(
        || mock.committed_offset("g-leh", "orders", 0) == Some(3),
        "all committed",
    )
    .await;
    handle.stop().await;
    let poison = deliveries
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k == "poison")
        .count();
    assert_eq!(
        poison, 3,
        "two failures went to the container, the third was handled"
    );
    assert_eq!(
        results.lock().unwrap().clone(),
        vec![(1, "FAILED after 3 attempts".to_owned())]
    );
    assert_eq!(container_recoveries.load(Ordering::SeqCst), 0);
    let letters = dead_letters(&mock, "orders-dlt");
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].0, "poison");
    assert_eq!(letters[0].1.original_offset, Some(1));
}

// ---- item 6: deserialization failures say so ----

/// A user's deserializer that fails with the protocol-corruption kind (as many would).
struct Amount;

impl rekafka::consumer::Deserializer for Amount {
    type Output = i64;
    fn deserialize(&self, _topic: &str, data: Option<&bytes::Bytes>) -> rekafka::Result<i64> {
        let text = std::str::from_utf8(data.map(|b| &b[..]).unwrap_or_default())
            .map_err(|_| rekafka::Error::corrupt("not UTF-8"))?;
        text.parse()
            .map_err(|_| rekafka::Error::corrupt(format!("{text:?} is not an amount")))
    }
}

/// A bad payload is a deserialization failure of the key or the value, with its coordinates
/// and its own error kind, both from the consumer and in the dead letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deserialization_failures_name_the_part_and_the_record() {
    use rekafka::consumer::{Deserialized, StringDeserializer};
    let mock = MockCluster::builder()
        .topic("orders", 1)
        .topic("orders-dlt", 1)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    produce_many(
        &cluster,
        vec![
            Record::new("orders").with_key("k0").with_value("12"),
            Record::new("orders").with_key("k1").with_value("twelve"),
            Record::new("orders")
                .with_key(vec![0xffu8, 0xfe])
                .with_value("13"),
        ],
    )
    .await;

    // The consumer's own deserialization.
    let consumer = Consumer::new(
        cluster.clone(),
        ConsumerConfig::new()
            .with_auto_commit(AutoCommit::Disabled)
            .with_fetch_max_wait(Duration::from_millis(20)),
    )
    .expect("consumer");
    consumer
        .assign([(TopicPartition::new("orders", 0), StartOffset::Beginning)])
        .expect("assign");
    let mut records = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while records.len() < 3 {
        assert!(Instant::now() < deadline, "records never came");
        records.extend(
            consumer
                .poll(Duration::from_millis(100))
                .await
                .expect("poll"),
        );
    }
    consumer.close().await.ok();
    let failure = |i: usize| match records[i].deserialize(&StringDeserializer, &Amount) {
        Deserialized::Failed { error, is_key, .. } => (error, is_key),
        _ => panic!("record {i} deserialized"),
    };
    let (value_error, is_key) = failure(1);
    assert!(!is_key);
    assert_eq!(value_error.kind(), &rekafka::ErrorKind::Deserialization);
    let text = value_error.to_string();
    assert!(!text.contains("corrupt"), "{text}");
    assert!(text.contains("value of orders-0@1"), "{text}");
    assert!(text.contains("\"twelve\" is not an amount"), "{text}");
    let (key_error, is_key) = failure(2);
    assert!(is_key);
    assert_eq!(key_error.kind(), &rekafka::ErrorKind::Deserialization);
    let text = key_error.to_string();
    assert!(text.contains("key of orders-0@2"), "{text}");
    assert!(!text.contains("corrupt"), "{text}");

    // In the listener container: the dead letter's message says the same.
    let dlt = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
        .group("g-deser")
        .wait(PublishWait::PerRecord)
        .build()
        .await
        .expect("publisher");
    let consumer = Consumer::new(cluster.clone(), config("g-deser")).expect("consumer");
    consumer.subscribe(["orders"]).expect("subscribe");
    let handle = ListenerContainer::builder(consumer)
        .record_handler(|_r: ListenerConsumerRecord| async { Ok(()) })
        .deserialization_check(rekafka::listener::deserialization_check(
            StringDeserializer,
            StringDeserializer,
        ))
        .error_handler(DefaultErrorHandler::new().recoverer(dlt))
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    wait_until(
        || mock.committed_offset("g-deser", "orders", 0) == Some(3),
        "all committed",
    )
    .await;
    handle.stop().await;
    let letters = dead_letters(&mock, "orders-dlt");
    assert_eq!(letters.len(), 1, "the record with the bad key");
    let info = &letters[0].1;
    assert!(info.key_failure);
    let message = info.exception_message.clone().unwrap_or_default();
    assert!(!message.contains("corrupt"), "{message}");
    assert!(message.contains("key"), "{message}");
    assert!(message.contains("orders-0@2"), "{message}");
    assert!(message.contains("not valid UTF-8"), "{message}");
}

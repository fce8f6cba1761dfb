//! Listener-container behaviour that needs Kafka semantics the test broker lacks (commit
//! metadata), on rekafka's embedded mock cluster.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, OffsetReset, TopicPartition};
use rekafka::listener::{
    ContainerEvent, ContainerHandle, DefaultErrorHandler, DeliveryAttemptHeader, FixedBackOff,
    HandlerError, ListenerConsumerRecord, ListenerContainer, ListenerRecord,
    PartitionFailurePolicy, RecovererFn, SharedError, StopReason,
};
use rekafka::mock::MockCluster;
use rekafka::producer::{Producer, ProducerConfig, Record};

#[derive(Debug, thiserror::Error)]
#[error("poison record")]
struct Poison;

async fn setup(topic: &str, records: usize) -> (MockCluster, Cluster) {
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
        let key = if i == 2 {
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

fn attempt_of(r: &ListenerConsumerRecord) -> u32 {
    r.header("kafka_deliveryAttempt")
        .flatten()
        .and_then(|v| <[u8; 4]>::try_from(&v[..]).ok())
        .map(u32::from_be_bytes)
        .unwrap_or(0)
}

async fn committed(cluster: &Cluster, group: &str, topic: &str) -> Option<(i64, Option<String>)> {
    let c = Consumer::new(cluster.clone(), config(group)).expect("consumer");
    let tp = TopicPartition::new(topic, 0);
    let m = c
        .committed(std::slice::from_ref(&tp))
        .await
        .expect("committed");
    c.close().await.ok();
    m.get(&tp)
        .cloned()
        .flatten()
        .map(|o| (o.offset, o.metadata))
}

/// Member A fails record r twice and leaves; member B takes the partition and recovers r after
/// only the remaining attempts: the attempt count travels in the commit metadata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempt_count_survives_a_change_of_owner() {
    let topic = "orders";
    let group = "billing";
    let (_mock, cluster) = setup(topic, 5).await;
    let deliveries: Arc<Mutex<Vec<(char, u32)>>> = Arc::default();
    let recovered: Arc<Mutex<Vec<i64>>> = Arc::default();
    let start = |who: char| -> ContainerHandle {
        let consumer = Consumer::new(cluster.clone(), config(group)).expect("consumer");
        consumer.subscribe([topic]).expect("subscribe");
        let (d, rc) = (deliveries.clone(), recovered.clone());
        ListenerContainer::builder(consumer)
            .record_handler(move |r: ListenerConsumerRecord| {
                let d = d.clone();
                async move {
                    if r.key_str() == Some("poison") {
                        d.lock().unwrap().push((who, attempt_of(&r)));
                        return Err(Box::new(Poison) as HandlerError);
                    }
                    Ok(())
                }
            })
            .error_handler(
                DefaultErrorHandler::new()
                    .back_off(FixedBackOff::new(Duration::from_millis(200), 4))
                    .delivery_attempt_header(DeliveryAttemptHeader::On)
                    .recoverer(RecovererFn(
                        move |r: ListenerConsumerRecord, _: SharedError| {
                            let rc = rc.clone();
                            async move {
                                rc.lock().unwrap().push(r.offset());
                                Ok::<(), HandlerError>(())
                            }
                        },
                    )),
            )
            .poll_timeout(Duration::from_millis(200))
            .start()
            .expect("start")
    };
    let a = start('A');
    let deadline = Instant::now() + Duration::from_secs(30);
    while deliveries.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "A never failed twice");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.stop().await;
    // The failed offset is committed with the retry state.
    let c = committed(&cluster, group, topic).await;
    assert_eq!(c.as_ref().map(|x| x.0), Some(2));
    assert!(
        c.as_ref()
            .and_then(|x| x.1.as_deref())
            .is_some_and(|m| m.contains("attempts=2")),
        "{c:?}"
    );
    let b = start('B');
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed(&cluster, group, topic).await.map(|x| x.0) != Some(5) {
        assert!(Instant::now() < deadline, "B never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.stop().await;
    assert_eq!(
        deliveries.lock().unwrap().clone(),
        vec![('A', 1), ('A', 2), ('B', 3), ('B', 4), ('B', 5)]
    );
    assert_eq!(recovered.lock().unwrap().clone(), vec![2]);
}

/// A recoverer that keeps failing (a dead-letter topic that is down): after 5 consecutive
/// failures the partition stays paused and the alarm fires; nothing is committed past the
/// record and the recoverer is not called in a hot loop; once it heals the record is recovered
/// and processing continues with nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_recoverer_halts_the_partition_then_heals() {
    let topic = "payments";
    let group = "ledger";
    let (_mock, cluster) = setup(topic, 6).await;
    let healthy = Arc::new(AtomicU32::new(0));
    let calls = Arc::new(AtomicU32::new(0));
    let handled: Arc<Mutex<Vec<i64>>> = Arc::default();
    let (hl, ca, h) = (healthy.clone(), calls.clone(), handled.clone());
    let consumer = Consumer::new(cluster.clone(), config(group)).expect("consumer");
    consumer.subscribe([topic]).expect("subscribe");
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let h = h.clone();
            async move {
                if r.key_str() == Some("poison") {
                    return Err(Box::new(Poison) as HandlerError);
                }
                h.lock().unwrap().push(r.offset());
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::no_retries())
                .max_recovery_failures(Some(5))
                .recovery_retry_interval(Duration::from_millis(50))
                .halt_probe_interval(Duration::from_secs(2))
                .recoverer(RecovererFn(move |_r: ListenerConsumerRecord, _| {
                    let (hl, ca) = (hl.clone(), ca.clone());
                    async move {
                        ca.fetch_add(1, Ordering::SeqCst);
                        if hl.load(Ordering::SeqCst) == 0 {
                            return Err::<(), HandlerError>("dead-letter topic unavailable".into());
                        }
                        Ok(())
                    }
                })),
        )
        .poll_timeout(Duration::from_millis(200))
        .start()
        .expect("start");
    let mut events = handle.events();
    let halted = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(ContainerEvent::RecoveryHalted {
                failures, offset, ..
            }) = events.recv().await
            {
                return (failures, offset);
            }
        }
    })
    .await
    .expect("alarm");
    assert_eq!(halted, (5, 2));
    assert_eq!(calls.load(Ordering::SeqCst), 5);
    // Halted: idle for a while, nothing past offset 2 handled or committed.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 5, "no hot loop while halted");
    assert_eq!(handled.lock().unwrap().clone(), vec![0, 1]);
    assert_eq!(
        committed(&cluster, group, topic).await.map(|x| x.0),
        Some(2)
    );
    healthy.store(1, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed(&cluster, group, topic).await.map(|x| x.0) != Some(6) {
        assert!(Instant::now() < deadline, "never healed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    handle.stop().await;
    assert_eq!(handled.lock().unwrap().clone(), vec![0, 1, 3, 4, 5]);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        6,
        "recovered once after healing"
    );
}

/// A topic of two partitions with 10 records each, and a Fetch of partition 1 that fails with
/// TOPIC_AUTHORIZATION_FAILED (an error no retry fixes).
async fn acl_setup(topic: &str) -> (MockCluster, Cluster) {
    let mock = MockCluster::builder()
        .topic(topic, 2)
        .start()
        .await
        .expect("mock");
    let cluster = Cluster::connect(ClusterConfig::new([mock.bootstrap()]))
        .await
        .expect("connect");
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    for i in 0..20 {
        producer
            .send_and_wait(
                Record::new(topic)
                    .with_partition(i % 2)
                    .with_value(format!("v{i}")),
            )
            .await
            .expect("sent");
    }
    producer.close().await;
    mock.push_partition_errors(
        topic,
        1,
        rekafka::protocol::unstable::ApiKey::Fetch,
        &[rekafka::KafkaCode::TopicAuthorizationFailed],
    );
    (mock, cluster)
}

/// Issue 22: a partition whose fetch fails with an error no retry fixes (here
/// TOPIC_AUTHORIZATION_FAILED, while the other partition flows) must not stall silently in the
/// container: by default it is paused with an alarm event, listed by the handle, and the
/// container keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_fetch_fails_is_paused_with_an_alarm() {
    let topic = "acl";
    let (_mock, cluster) = acl_setup(topic).await;
    let consumer = Consumer::new(cluster.clone(), config("acl-group")).expect("consumer");
    consumer.subscribe([topic]).expect("subscribe");
    let handled = Arc::new(AtomicU32::new(0));
    let h = handled.clone();
    let builder = ListenerContainer::builder(consumer)
        .record_handler(move |_r: ListenerConsumerRecord| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .poll_timeout(Duration::from_millis(100));
    let mut events = builder.subscribe();
    let handle = builder.start().expect("start");
    let failed: rekafka::listener::PartitionKey = (topic.into(), 1);
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut alarm, mut paused) = (false, false);
    while !paused {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.recv())
            .await
            .expect("the failed partition is paused")
            .expect("event");
        match &event {
            ContainerEvent::PartitionFailed {
                partition,
                error,
                policy,
            } => {
                assert_eq!(partition, &failed);
                assert_eq!(
                    error.kafka_code(),
                    Some(rekafka::KafkaCode::TopicAuthorizationFailed)
                );
                assert_eq!(*policy, PartitionFailurePolicy::PauseWithAlarm);
                alarm = true;
            }
            ContainerEvent::PartitionsPaused(tps) => paused |= tps.contains(&failed),
            _ => {}
        }
    }
    assert!(alarm, "the alarm comes before the pause");
    let listed = handle.failed_partitions();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, failed);
    // The other partition flowed; the container still runs.
    let deadline = Instant::now() + Duration::from_secs(10);
    while handled.load(Ordering::SeqCst) < 10 {
        assert!(Instant::now() < deadline, "partition 0 was not consumed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(handle.is_running());
    assert_eq!(handle.stop().await, StopReason::Normal);
}

/// The same failure under [`PartitionFailurePolicy::Stop`]: the container stops, naming an
/// authorization problem.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_fetch_fails_stops_the_container_under_the_stop_policy() {
    let topic = "acl-stop";
    let (_mock, cluster) = acl_setup(topic).await;
    let consumer = Consumer::new(cluster.clone(), config("acl-stop-group")).expect("consumer");
    consumer.subscribe([topic]).expect("subscribe");
    let handle = ListenerContainer::builder(consumer)
        .record_handler(|_r: ListenerConsumerRecord| async { Ok(()) })
        .partition_failure_policy(PartitionFailurePolicy::Stop)
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    let reason = tokio::time::timeout(Duration::from_secs(15), handle.join())
        .await
        .expect("the container stops by itself");
    assert_eq!(reason, StopReason::Authentication);
}

/// A consumer created with auto-commit on (Java's default) is turned to container commits, as
/// Spring's container overrides `enable.auto.commit`: the container starts, and what is
/// committed is the container's (the failed record's offset with its retry state), never a
/// consumer auto-commit of its position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auto_commit_consumer_is_switched_to_container_commits() {
    let topic = "orders";
    let group = "auto";
    let (_mock, cluster) = setup(topic, 5).await;
    let deliveries = Arc::new(AtomicU32::new(0));
    let consumer = Consumer::new(
        cluster.clone(),
        config(group).with_auto_commit(AutoCommit::Interval(Duration::from_millis(1))),
    )
    .expect("consumer");
    assert!(consumer.auto_commit_enabled());
    consumer.subscribe([topic]).expect("subscribe");
    let d = deliveries.clone();
    let container = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let d = d.clone();
            async move {
                if r.key_str() == Some("poison") {
                    d.fetch_add(1, Ordering::SeqCst);
                    return Err(Box::new(Poison) as HandlerError);
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new().back_off(FixedBackOff::new(Duration::from_millis(200), 9)),
        )
        .poll_timeout(Duration::from_millis(50))
        .start()
        .expect("the container starts on an auto-commit consumer");
    let deadline = Instant::now() + Duration::from_secs(30);
    while deliveries.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the poison record was never retried"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    container.stop().await;
    let c = committed(&cluster, group, topic).await;
    assert_eq!(c.as_ref().map(|x| x.0), Some(2), "{c:?}");
    assert!(
        c.as_ref()
            .and_then(|x| x.1.as_deref())
            .is_some_and(|m| m.contains("attempts=")),
        "the container's commit with the retry state, not an auto-commit: {c:?}"
    );
}

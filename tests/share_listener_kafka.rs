//! The share listener container (`rekafka::listener::ShareContainer`) on the Kafka cluster:
//! two containers in one share group over 2,000 records, 2 % failing twice (accepted on
//! delivery 3), 0.5 % failing always (half with a retryable error, dead-lettered when the
//! delivery count reaches the group's limit; half with a not-retryable error, dead-lettered on
//! delivery 1). Every dead letter exactly once, with its delivery count; every other record
//! handled exactly once; each dead-lettered record's final acknowledgement sent only after its
//! dead letter was acknowledged. Also: a failed recovery rejects (never redelivered), and
//! `stop` mid-poll accepts what was handled and releases the rest to the next member.
//!
//! Named `*_kafka.rs`: the embedded mock cluster does not serve share groups.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, create_topic_with_leaders, unique};
use rekafka::admin::{Admin, AlterConfigOp};
use rekafka::cluster::Cluster;
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, ConsumerRecord, StartOffset};
use rekafka::listener::{
    BoxFuture, Classifier, DELIVERY_ATTEMPT_HEADER, DeadLetterInfo, DeadLetterPublisher,
    FixedBackOff, HandlerError, ListenerRecord, PublishWait, Recoverer, ShareContainer,
    ShareContainerEvent, ShareListenerRecord, SharedError,
};
use rekafka::producer::{ProducerConfig, Record};
use rekafka::share::{AcknowledgementMode, ShareConsumerConfig};

const N: usize = 2000;
const PARTITIONS: i32 = 3;
/// The group's `share.delivery.count.limit`.
const LIMIT: u16 = 4;

#[derive(Debug, thiserror::Error)]
#[error("transient failure of {0}")]
struct Transient(usize);

#[derive(Debug, thiserror::Error)]
#[error("poison record {0}")]
struct Poison(usize);

/// How record `i` behaves in the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    /// Fails on deliveries 1 and 2.
    TwiceFailing,
    /// Always fails with a retryable error.
    AlwaysRetryable,
    /// Always fails with a not-retryable error.
    AlwaysPoison,
}

fn kind(i: usize) -> Kind {
    if i % 50 == 7 {
        Kind::TwiceFailing
    } else if i % 400 == 3 {
        Kind::AlwaysRetryable
    } else if i % 400 == 203 {
        Kind::AlwaysPoison
    } else {
        Kind::Ok
    }
}

/// What happened, in order, across both containers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// The dead letter of (partition, offset) was acknowledged by the DLT's leader.
    DeadLettered(i32, i64),
    /// An acknowledgement of (partition, offset) reached the broker (callback).
    Acked(i32, i64, bool),
}

/// The dead-letter publisher, logging when each dead letter is acknowledged.
struct LoggingDlt {
    inner: DeadLetterPublisher<ShareListenerRecord>,
    log: Arc<Mutex<Vec<Step>>>,
}

impl Recoverer<ShareListenerRecord> for LoggingDlt {
    fn recover<'a>(
        &'a self,
        record: &'a ShareListenerRecord,
        error: &'a SharedError,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            self.inner.recover(record, error).await?;
            self.log
                .lock()
                .unwrap()
                .push(Step::DeadLettered(record.partition(), record.offset()));
            Ok(())
        })
    }
}

fn index_of(value: Option<&[u8]>) -> usize {
    let v = std::str::from_utf8(value.expect("value")).expect("utf-8");
    v.strip_prefix("v-").expect("v-").parse().expect("index")
}

async fn read_topic(cluster: &Cluster, topic: &str, expected: usize) -> Vec<ConsumerRecord> {
    let consumer = Consumer::new(
        cluster.clone(),
        ConsumerConfig::new()
            .with_auto_commit(AutoCommit::Disabled)
            .with_fetch_max_wait(Duration::from_millis(50)),
    )
    .expect("consumer");
    consumer
        .assign((0..PARTITIONS).map(|p| {
            (
                rekafka::consumer::TopicPartition::new(topic, p),
                StartOffset::Beginning,
            )
        }))
        .expect("assign");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < deadline {
        out.extend(
            consumer
                .poll(Duration::from_millis(200))
                .await
                .expect("poll"),
        );
    }
    // Linger to catch duplicates.
    let linger = Instant::now() + Duration::from_millis(500);
    while Instant::now() < linger {
        out.extend(
            consumer
                .poll(Duration::from_millis(100))
                .await
                .expect("poll"),
        );
    }
    let _ = consumer.close().await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn share_container_retries_releases_and_dead_letters() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-listener");
    let dlt_topic = format!("{topic}-dlt");
    create_topic_with_leaders(&cluster, &topic, PARTITIONS).await;
    create_topic_with_leaders(&cluster, &dlt_topic, PARTITIONS).await;
    let group = unique("share-listener-g");
    let limit = LIMIT.to_string();
    Admin::new(cluster.clone())
        .alter_group_configs(
            &group,
            &[
                AlterConfigOp::set("share.auto.offset.reset", "earliest"),
                AlterConfigOp::set("share.delivery.count.limit", limit.as_str()),
            ],
        )
        .await
        .expect("group configs");

    let producer = client
        .producer(ProducerConfig::default())
        .await
        .expect("producer");
    let mut acks = Vec::with_capacity(N);
    for i in 0..N {
        let r = Record::new(topic.as_str())
            .with_partition((i % PARTITIONS as usize) as i32)
            .with_key(format!("k-{i}"))
            .with_value(format!("v-{i}"));
        acks.push(producer.send(r).await.expect("enqueue"));
    }
    for a in acks {
        a.await.expect("delivered");
    }
    producer.close().await;

    // Per record index: the delivery counts the handler saw, and the deliveries it handled.
    let seen: Arc<Mutex<BTreeMap<usize, Vec<u16>>>> = Arc::default();
    let handled: Arc<Mutex<BTreeMap<usize, Vec<u16>>>> = Arc::default();
    let log: Arc<Mutex<Vec<Step>>> = Arc::default();
    let mut classifier = Classifier::default();
    classifier.add_not_retryable::<Poison>();

    let mut handles = Vec::new();
    let mut events = Vec::new();
    for _ in 0..2 {
        let mut consumer = client
            .share_consumer(
                ShareConsumerConfig::new(&group)
                    .with_acknowledgement_mode(AcknowledgementMode::Explicit)
                    .with_fetch_max_wait(Duration::from_millis(200)),
            )
            .expect("share consumer");
        consumer.subscribe([topic.as_str()]);
        let l = log.clone();
        consumer.set_acknowledgement_commit_callback(move |o| {
            let mut l = l.lock().unwrap();
            for off in &o.offsets {
                l.push(Step::Acked(o.partition.partition, *off, o.result.is_ok()));
            }
        });
        let dlt = client
            .dead_letter_publisher::<ShareListenerRecord>()
            .wait(PublishWait::PerRecord)
            .build()
            .await
            .expect("dead-letter publisher");
        let (seen, handled) = (seen.clone(), handled.clone());
        let handle = ShareContainer::builder(consumer)
            .handler(move |r: ShareListenerRecord| {
                let (seen, handled) = (seen.clone(), handled.clone());
                async move {
                    let i = index_of(r.record().value.as_deref());
                    let count = r.delivery_count();
                    seen.lock().unwrap().entry(i).or_default().push(count);
                    match kind(i) {
                        Kind::TwiceFailing if count < 3 => {
                            return Err(Box::new(Transient(i)) as HandlerError);
                        }
                        Kind::AlwaysRetryable => return Err(Box::new(Transient(i)) as HandlerError),
                        Kind::AlwaysPoison => return Err(Box::new(Poison(i)) as HandlerError),
                        _ => {}
                    }
                    handled.lock().unwrap().entry(i).or_default().push(count);
                    Ok(())
                }
            })
            .back_off(FixedBackOff::new(Duration::from_millis(20), 9))
            .classifier(classifier.clone())
            .recoverer(LoggingDlt {
                inner: dlt,
                log: log.clone(),
            })
            .poll_timeout(Duration::from_millis(500))
            .delivery_count_limit_from(&Admin::new(cluster.clone()))
            .await
            .expect("group's delivery count limit")
            .start()
            .expect("start");
        events.push(handle.events());
        handles.push(handle);
    }

    let expected_ok: BTreeSet<usize> = (0..N)
        .filter(|i| matches!(kind(*i), Kind::Ok | Kind::TwiceFailing))
        .collect();
    let expected_dead: BTreeSet<usize> = (0..N)
        .filter(|i| matches!(kind(*i), Kind::AlwaysRetryable | Kind::AlwaysPoison))
        .collect();
    let dead_lettered = || {
        log.lock()
            .unwrap()
            .iter()
            .filter(|s| matches!(s, Step::DeadLettered(..)))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while (handled.lock().unwrap().len() < expected_ok.len()
        || dead_lettered() < expected_dead.len())
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let anything extra (a duplicate delivery) show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for h in handles {
        h.stop().await.expect("stopped cleanly");
    }
    for mut e in events {
        let mut stopped = false;
        while let Ok(ev) = e.try_recv() {
            if let ShareContainerEvent::Stopped(err) = ev {
                assert!(err.is_none(), "stopped with {err:?}");
                stopped = true;
            }
        }
        assert!(stopped, "a container sent no Stopped event");
    }

    let handled = handled.lock().unwrap().clone();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        handled.keys().copied().collect::<BTreeSet<_>>(),
        expected_ok,
        "handled records"
    );
    for (i, counts) in &handled {
        let expected = if kind(*i) == Kind::TwiceFailing { 3 } else { 1 };
        assert_eq!(
            counts,
            &vec![expected],
            "record {i} handled on deliveries {counts:?}"
        );
        let all: Vec<u16> = (1..=expected).collect();
        assert_eq!(seen[i], all, "record {i} delivered as {:?}", seen[i]);
    }
    for i in &expected_dead {
        let expected: Vec<u16> = match kind(*i) {
            Kind::AlwaysRetryable => (1..=LIMIT).collect(),
            _ => vec![1],
        };
        assert_eq!(seen[i], expected, "always-failing record {i} deliveries");
    }

    // The dead letters: exactly one per always-failing record, with its delivery count.
    let letters = read_topic(&cluster, &dlt_topic, expected_dead.len()).await;
    let mut by_index: BTreeMap<usize, &ConsumerRecord> = BTreeMap::new();
    for l in &letters {
        let i = index_of(l.value.as_deref());
        assert!(
            by_index.insert(i, l).is_none(),
            "two dead letters for record {i}"
        );
    }
    assert_eq!(
        by_index.keys().copied().collect::<BTreeSet<_>>(),
        expected_dead,
        "dead-lettered records"
    );
    let mut source_of: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for (i, l) in &by_index {
        let headers: Vec<_> = l.headers.iter().collect();
        let info = DeadLetterInfo::from_headers(&headers);
        assert_eq!(info.original_topic.as_deref(), Some(topic.as_str()));
        assert_eq!(
            info.original_consumer_group.as_deref(),
            Some(group.as_str())
        );
        let at = (
            info.original_partition.expect("original partition"),
            info.original_offset.expect("original offset"),
        );
        source_of.insert(at, *i);
        let attempt = headers
            .iter()
            .rev()
            .find(|h| h.key() == DELIVERY_ATTEMPT_HEADER)
            .and_then(|h| h.value.clone())
            .expect("delivery attempt header");
        let attempt = i32::from_be_bytes(attempt.as_ref().try_into().expect("4 bytes"));
        let expected = if kind(*i) == Kind::AlwaysRetryable {
            i32::from(LIMIT)
        } else {
            1
        };
        assert_eq!(
            attempt, expected,
            "record {i}'s delivery count in its dead letter"
        );
    }

    // Each dead-lettered record: its releases went before the dead letter, and exactly one
    // acknowledgement (the accept) after it.
    let log = log.lock().unwrap().clone();
    for (&(p, o), i) in &source_of {
        let at = log
            .iter()
            .position(|s| *s == Step::DeadLettered(p, o))
            .expect("dead letter logged");
        let acked = |s: &Step| matches!(s, Step::Acked(sp, so, _) if *sp == p && *so == o);
        let before = log[..at].iter().filter(|s| acked(s)).count();
        let after: Vec<&Step> = log[at + 1..].iter().filter(|s| acked(s)).collect();
        let releases = if kind(*i) == Kind::AlwaysRetryable {
            usize::from(LIMIT) - 1
        } else {
            0
        };
        assert_eq!(
            before, releases,
            "record {i}: acknowledgements before its dead letter"
        );
        assert_eq!(
            after,
            vec![&Step::Acked(p, o, true)],
            "record {i}: acknowledgements after its dead letter"
        );
    }
    cluster.close().await;
}

/// A recoverer that always fails.
struct FailingRecoverer;

#[derive(Debug, thiserror::Error)]
#[error("the dead-letter topic is down")]
struct RecoveryDown;

impl Recoverer<ShareListenerRecord> for FailingRecoverer {
    fn recover<'a>(
        &'a self,
        _record: &'a ShareListenerRecord,
        _error: &'a SharedError,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async { Err(Box::new(RecoveryDown) as HandlerError) })
    }
}

/// A failed recovery rejects the record: never accepted, never delivered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_recovery_rejects_the_record() {
    const M: usize = 100;
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-listener-rej");
    create_topic_with_leaders(&cluster, &topic, PARTITIONS).await;
    let group = unique("share-listener-rej-g");
    Admin::new(cluster.clone())
        .alter_group_configs(
            &group,
            &[AlterConfigOp::set("share.auto.offset.reset", "earliest")],
        )
        .await
        .expect("group configs");
    let producer = client
        .producer(ProducerConfig::default())
        .await
        .expect("producer");
    let mut acks = Vec::new();
    for i in 0..M {
        let r = Record::new(topic.as_str())
            .with_partition((i % PARTITIONS as usize) as i32)
            .with_value(format!("v-{i}"));
        acks.push(producer.send(r).await.expect("enqueue"));
    }
    for a in acks {
        a.await.expect("delivered");
    }
    producer.close().await;

    let poison = |i: usize| i.is_multiple_of(10);
    let seen: Arc<Mutex<BTreeMap<usize, Vec<u16>>>> = Arc::default();
    let mut consumer = client
        .share_consumer(
            ShareConsumerConfig::new(&group)
                .with_acknowledgement_mode(AcknowledgementMode::Explicit)
                .with_fetch_max_wait(Duration::from_millis(200)),
        )
        .expect("share consumer");
    consumer.subscribe([topic.as_str()]);
    let mut classifier = Classifier::default();
    classifier.add_not_retryable::<Poison>();
    let s = seen.clone();
    let handle = ShareContainer::builder(consumer)
        .handler(move |r: ShareListenerRecord| {
            let s = s.clone();
            async move {
                let i = index_of(r.record().value.as_deref());
                s.lock()
                    .unwrap()
                    .entry(i)
                    .or_default()
                    .push(r.delivery_count());
                if poison(i) {
                    return Err(Box::new(Poison(i)) as HandlerError);
                }
                Ok(())
            }
        })
        .classifier(classifier)
        .recoverer(FailingRecoverer)
        .poll_timeout(Duration::from_millis(500))
        .start()
        .expect("start");
    let mut events = handle.events();
    let deadline = Instant::now() + Duration::from_secs(40);
    while seen.lock().unwrap().len() < M && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A rejected record would come back here if it had been released instead.
    tokio::time::sleep(Duration::from_secs(2)).await;
    handle.stop().await.expect("stopped cleanly");

    let mut rejected = BTreeSet::new();
    while let Ok(ev) = events.try_recv() {
        match ev {
            ShareContainerEvent::Rejected {
                offset,
                partition,
                delivery_count,
                error,
            } => {
                assert_eq!(delivery_count, 1);
                assert!(
                    error.is_some(),
                    "a rejection after a failed recovery has its error"
                );
                rejected.insert((partition.1, offset));
            }
            ShareContainerEvent::Recovered { .. } => panic!("nothing can be recovered"),
            _ => {}
        }
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), M, "every record delivered");
    for (i, counts) in &seen {
        assert_eq!(counts, &vec![1], "record {i} delivered as {counts:?}");
    }
    assert_eq!(rejected.len(), (0..M).filter(|i| poison(*i)).count());
    cluster.close().await;
}

/// `stop` in the middle of a poll's records: the handled records are accepted, the others
/// released to the next member (none lost, none handled twice; those the stopped container had
/// acquired come back with delivery count 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_accepts_the_handled_and_releases_the_rest() {
    const M: usize = 30;
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-listener-stop");
    create_topic_with_leaders(&cluster, &topic, 1).await;
    let group = unique("share-listener-stop-g");
    Admin::new(cluster.clone())
        .alter_group_configs(
            &group,
            &[AlterConfigOp::set("share.auto.offset.reset", "earliest")],
        )
        .await
        .expect("group configs");
    let producer = client
        .producer(ProducerConfig::default())
        .await
        .expect("producer");
    let mut acks = Vec::new();
    for i in 0..M {
        let r = Record::new(topic.as_str())
            .with_partition(0)
            .with_value(format!("v-{i}"));
        acks.push(producer.send(r).await.expect("enqueue"));
    }
    for a in acks {
        a.await.expect("delivered");
    }
    producer.close().await;

    let share_consumer = || {
        let mut c = client
            .share_consumer(
                ShareConsumerConfig::new(&group)
                    .with_acknowledgement_mode(AcknowledgementMode::Explicit)
                    .with_fetch_max_wait(Duration::from_millis(200)),
            )
            .expect("share consumer");
        c.subscribe([topic.as_str()]);
        c
    };
    let handled: Arc<Mutex<Vec<usize>>> = Arc::default();
    let h = handled.clone();
    let handle = ShareContainer::builder(share_consumer())
        .handler(move |r: ShareListenerRecord| {
            let h = h.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                h.lock()
                    .unwrap()
                    .push(index_of(r.record().value.as_deref()));
                Ok(())
            }
        })
        .poll_timeout(Duration::from_millis(500))
        .start()
        .expect("start");
    let deadline = Instant::now() + Duration::from_secs(30);
    while handled.lock().unwrap().len() < 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.stop().await.expect("stopped cleanly");
    let handled: BTreeSet<usize> = handled.lock().unwrap().iter().copied().collect();
    assert!(
        handled.len() >= 5 && handled.len() < M,
        "handled {handled:?}"
    );

    // The next member gets exactly the records not handled.
    let mut next = share_consumer();
    let mut rest: BTreeMap<usize, u16> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while handled.len() + rest.len() < M && Instant::now() < deadline {
        for r in next.poll(Duration::from_millis(300)).await.expect("poll") {
            let i = index_of(r.value.as_deref());
            assert!(rest.insert(i, r.delivery_count).is_none(), "{i} twice");
            next.acknowledge(&r, rekafka::share::AcknowledgeType::Accept)
                .expect("accept");
        }
    }
    // Linger for anything delivered again.
    let linger = Instant::now() + Duration::from_secs(1);
    while Instant::now() < linger {
        let again = next.poll(Duration::from_millis(200)).await.expect("poll");
        assert!(again.is_empty(), "delivered again: {again:?}");
    }
    next.close().await.expect("close");
    let all: BTreeSet<usize> = (0..M).collect();
    let rest_set: BTreeSet<usize> = rest.keys().copied().collect();
    assert!(
        handled.is_disjoint(&rest_set),
        "handled again: {rest_set:?}"
    );
    assert_eq!(&handled | &rest_set, all);
    // Records the stopped container had acquired came back released (delivery 2).
    assert!(rest.values().any(|c| *c == 2), "none released: {rest:?}");
    cluster.close().await;
}

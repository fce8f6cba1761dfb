//! The dead-letter publisher and republish-to-tail recoverer in a running listener container,
//! against the in-process mock cluster (fault injection on the dead-letter topic's Produce).

use crate::listener_dlt_support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rekafka::KafkaCode;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::listener::dead_letter::names;
use rekafka::listener::{
    DeadLetterInfo, DeadLetterPublisher, DefaultErrorHandler, FixedBackOff, HandlerError,
    ListenerContainer, ListenerRecord, PublishWait, REPUBLISH_COUNT_HEADER, RepublishToTail,
    RetryListener, SharedError, StopReason, republish_count,
};
use rekafka::mock::MockCluster;
use rekafka::producer::{Producer, ProducerConfig, Record};
use rekafka::protocol::record::Header;
use rekafka::protocol::unstable::ApiKey;

use listener_dlt_support::{KConsumer, KRec};

#[derive(Debug, thiserror::Error)]
#[error("poison record {0}")]
struct Poison(String);

fn is_poison(r: &KRec) -> bool {
    r.key().is_some_and(|k| k.starts_with(b"poison"))
}

async fn produce(cluster: &Cluster, records: Vec<Record>) {
    let p = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .unwrap();
    let mut futs = Vec::new();
    for r in records {
        futs.push(p.send(r).await.unwrap());
    }
    for f in futs {
        f.await.unwrap();
    }
    p.close().await;
}

async fn wait_until(mut f: impl FnMut() -> bool, what: &str, secs: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Records the committed offset of the failing partition each time recovery fails.
struct CommitProbe {
    mock: Arc<MockCluster>,
    group: String,
    seen: Arc<Mutex<Vec<Option<i64>>>>,
    failures: Arc<AtomicU32>,
}

impl RetryListener<KRec> for CommitProbe {
    fn recovery_failed(&self, r: &KRec, _: &SharedError, _: &SharedError) {
        self.failures.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(self.mock.committed_offset(
            &self.group,
            r.topic(),
            r.partition(),
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlt_produce_failure_is_a_recovery_failure_then_exactly_one_dead_letter() {
    let mock = Arc::new(
        MockCluster::builder()
            .topic("src", 2)
            .topic("src-dlt", 2)
            .start()
            .await
            .unwrap(),
    );
    let cluster = Cluster::connect(ClusterConfig::new([mock.bootstrap()]))
        .await
        .unwrap();
    let records = (0..20)
        .map(|i| {
            let key = if i == 5 {
                "poison-5".to_string()
            } else {
                format!("k{i}")
            };
            Record::new("src")
                .with_partition(0)
                .with_key(key)
                .with_value(format!("v{i}"))
                .with_header("trace", Some(format!("t{i}")))
        })
        .collect();
    produce(&cluster, records).await;

    // The dead-letter topic refuses the first two publications (non-retriable), and the
    // response to the third is lost after the write was applied (the producer retries it; the
    // broker drops the duplicate by its sequence number).
    mock.push_partition_errors(
        "src-dlt",
        0,
        ApiKey::Produce,
        &[KafkaCode::InvalidRecord, KafkaCode::InvalidRecord],
    );

    // Spring's behaviour (wait for each dead letter): the records after the poison one are
    // handled only once its dead letter is written, so none is handled twice.
    let dlt = DeadLetterPublisher::<KRec>::builder(cluster.clone())
        .group("g-dlt")
        .wait(PublishWait::PerRecord)
        .producer_config(
            ProducerConfig::default()
                .with_request_timeout(Duration::from_millis(800))
                .with_delivery_timeout(Duration::from_secs(10))
                .with_retry_backoff(Duration::from_millis(20), Duration::from_millis(100)),
        )
        .build()
        .await
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let failures = Arc::new(AtomicU32::new(0));
    let probe = CommitProbe {
        mock: mock.clone(),
        group: "g-dlt".into(),
        seen: seen.clone(),
        failures: failures.clone(),
    };
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = handled.clone();
    let consumer = KConsumer::new(cluster.clone(), "g-dlt", "src", 2);
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: KRec| {
            let h = h.clone();
            async move {
                if is_poison(&r) {
                    return Err(Box::new(Poison(r.offset().to_string())) as HandlerError);
                }
                h.lock().unwrap().push(r.offset());
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(10), 1))
                .recovery_retry_interval(Duration::from_millis(50))
                .max_recovery_failures(None)
                .retry_listener(probe)
                .recoverer(dlt),
        )
        .poll_timeout(Duration::from_millis(50))
        .start()
        .unwrap();

    wait_until(
        || failures.load(Ordering::SeqCst) >= 2,
        "two recovery failures",
        60,
    )
    .await;
    // Lose the response of the next publication (it is written).
    mock.drop_responses(|i| i.api_key == ApiKey::Produce, 1);
    wait_until(
        || mock.committed_offset("g-dlt", "src", 0) == Some(20),
        "everything committed",
        60,
    )
    .await;
    assert_eq!(handle.stop().await, StopReason::Normal);

    // While recovery failed, nothing was committed past the poison record.
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    for c in &seen {
        assert!(
            c.is_none_or(|c| c <= 5),
            "committed past the failed record: {seen:?}"
        );
    }
    // Every good record handled once, in order.
    let handled = handled.lock().unwrap().clone();
    let expected: Vec<i64> = (0..20).filter(|&i| i != 5).collect();
    assert_eq!(handled, expected);
    // Exactly one dead letter, the poison record's.
    let mut letters = Vec::new();
    for p in 0..2 {
        letters.extend(mock.records("src-dlt", p).unwrap());
    }
    assert_eq!(letters.len(), 1, "exactly one dead letter: {letters:?}");
    // The lost response made the producer send the same batch again (same producer id, epoch
    // and sequence), and the broker kept one copy.
    let produces: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key == ApiKey::Produce && r.producer_id.is_some())
        .map(|r| (r.producer_id, r.producer_epoch, r.base_sequence))
        .collect();
    let distinct: HashSet<_> = produces.iter().collect();
    assert!(
        distinct.len() < produces.len(),
        "a Produce request was retried: {produces:?}"
    );
    let l = &letters[0];
    assert_eq!(l.key.as_deref(), Some(&b"poison-5"[..]));
    assert_eq!(l.value.as_deref(), Some(&b"v5"[..]));
    let hs: Vec<Header> = l.headers.iter().collect();
    let info = DeadLetterInfo::from_headers(&hs);
    assert_eq!(info.original_topic.as_deref(), Some("src"));
    assert_eq!(info.original_partition, Some(0));
    assert_eq!(info.original_offset, Some(5));
    assert_eq!(info.original_consumer_group.as_deref(), Some("g-dlt"));
    assert_eq!(info.exception_fqcn.as_deref(), Some("Poison"));
    assert_eq!(info.exception_message.as_deref(), Some("poison record 5"));
    assert_eq!(hs[0].key(), "trace");
    assert_eq!(hs[0].value(), Some(&b"t5"[..]));
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republish_to_tail_twice_then_dead_letter() {
    let mock = MockCluster::builder()
        .topic("rp", 1)
        .topic("rp-dlt", 1)
        .start()
        .await
        .unwrap();
    let cluster = Cluster::connect(ClusterConfig::new([mock.bootstrap()]))
        .await
        .unwrap();
    let records = (0..6)
        .map(|i| {
            let key = if i == 2 {
                "poison".to_string()
            } else {
                format!("k{i}")
            };
            Record::new("rp")
                .with_key(key)
                .with_value(format!("v{i}"))
                .with_header("h", Some(format!("{i}")))
        })
        .collect();
    produce(&cluster, records).await;

    let dlt = DeadLetterPublisher::<KRec>::builder(cluster.clone())
        .build()
        .await
        .unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let a = attempts.clone();
    let consumer = KConsumer::new(cluster.clone(), "g-rp", "rp", 1);
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: KRec| {
            let a = a.clone();
            async move {
                if is_poison(&r) {
                    a.lock()
                        .unwrap()
                        .push((r.offset(), republish_count(&r.headers())));
                    return Err(Box::new(Poison("p".into())) as HandlerError);
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::no_retries())
                .recoverer(RepublishToTail::new(dlt, 2)),
        )
        .poll_timeout(Duration::from_millis(50))
        .start()
        .unwrap();
    wait_until(
        || {
            mock.high_watermark("rp-dlt", 0).ok() == Some(1)
                && mock.committed_offset("g-rp", "rp", 0) == Some(8)
        },
        "the dead letter and the final commit",
        60,
    )
    .await;
    assert_eq!(handle.stop().await, StopReason::Normal);

    // Failed three times: the original, then its two republished copies.
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts, vec![(2, 0), (6, 1), (7, 2)]);
    let log = mock.records("rp", 0).unwrap();
    assert_eq!(log.len(), 8);
    for (copy, count) in [(6usize, 1u8), (7, 2)] {
        let r = &log[copy];
        assert_eq!(r.key.as_deref(), Some(&b"poison"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"v2"[..]));
        let hs: Vec<Header> = r.headers.iter().collect();
        assert_eq!(hs[0].key(), "h");
        assert_eq!(hs[0].value(), Some(&b"2"[..]));
        let counts: Vec<_> = hs
            .iter()
            .filter(|h| h.key() == REPUBLISH_COUNT_HEADER)
            .map(|h| h.value().map(<[u8]>::to_vec))
            .collect();
        assert_eq!(counts, vec![Some(vec![0, 0, 0, count])]);
    }
    let letters = mock.records("rp-dlt", 0).unwrap();
    assert_eq!(letters.len(), 1);
    let hs: Vec<Header> = letters[0].headers.iter().collect();
    let info = DeadLetterInfo::from_headers(&hs);
    assert_eq!(info.original_offset, Some(7));
    assert_eq!(republish_count(&hs), 2);
    assert_eq!(letters[0].key.as_deref(), Some(&b"poison"[..]));
    let names_seen: HashSet<&str> = hs.iter().map(|h| h.key()).collect();
    assert!(names_seen.contains(names::EXCEPTION_FQCN));
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_in_flight_hold_commits_back_until_acknowledged() {
    let mock = MockCluster::builder()
        .topic("pl", 1)
        .topic("pl-dlt", 1)
        .start()
        .await
        .unwrap();
    let cluster = Cluster::connect(ClusterConfig::new([mock.bootstrap()]))
        .await
        .unwrap();
    let records = (0..20)
        .map(|i| {
            let key = if i == 5 || i == 9 {
                format!("poison-{i}")
            } else {
                format!("k{i}")
            };
            Record::new("pl").with_key(key).with_value(format!("v{i}"))
        })
        .collect();
    produce(&cluster, records).await;
    // The first dead letter's publication and its immediate re-send are refused.
    mock.push_partition_errors(
        "pl-dlt",
        0,
        ApiKey::Produce,
        &[KafkaCode::InvalidRecord, KafkaCode::InvalidRecord],
    );
    let consumer = KConsumer::new(cluster.clone(), "g-pl", "pl", 1);
    // The default publisher: dead letters are pipelined, the container waits for a poll's.
    let dlt = DeadLetterPublisher::<KRec>::builder(cluster.clone())
        .group("g-pl")
        .build()
        .await
        .unwrap();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = handled.clone();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: KRec| {
            let h = h.clone();
            async move {
                if is_poison(&r) {
                    return Err(Box::new(Poison(r.offset().to_string())) as HandlerError);
                }
                h.lock().unwrap().push(r.offset());
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::no_retries())
                .recoverer(dlt),
        )
        .poll_timeout(Duration::from_millis(50))
        .start()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut held_back_seen = false;
    loop {
        // Read the commit first: a commit past offset 5 implies the dead letter was written.
        let committed = mock.committed_offset("g-pl", "pl", 0);
        let written = mock.high_watermark("pl-dlt", 0).unwrap();
        if written == 0 {
            assert!(
                committed.is_none_or(|c| c <= 5),
                "committed {committed:?} past a record whose dead letter is not written"
            );
        }
        held_back_seen |= committed == Some(5);
        if committed == Some(20) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled at {committed:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        held_back_seen,
        "the commit was held back at the failed record"
    );
    assert_eq!(handle.stop().await, StopReason::Normal);
    let letters = mock.records("pl-dlt", 0).unwrap();
    let offsets: Vec<i64> = letters
        .iter()
        .map(|l| {
            let hs: Vec<Header> = l.headers.iter().collect();
            DeadLetterInfo::from_headers(&hs).original_offset.unwrap()
        })
        .collect();
    assert_eq!(
        offsets.len(),
        2,
        "one dead letter per poison record: {offsets:?}"
    );
    let unique: HashSet<i64> = offsets.iter().copied().collect();
    assert_eq!(unique, HashSet::from([5, 9]));
    // The records after the failed dead letter were handled before its failure was known, and
    // again after the partition went back to it: at least once each, none skipped, and each
    // pass in offset order.
    let handled = handled.lock().unwrap().clone();
    let good: HashSet<i64> = (0..20).filter(|i| *i != 5 && *i != 9).collect();
    assert_eq!(handled.iter().copied().collect::<HashSet<i64>>(), good);
    for pass in handled.windows(2).filter(|w| w[1] < w[0]) {
        // 5 fails again when redelivered (it is not in `handled`): a pass restarts at 6.
        assert!(
            pass[1] <= 6,
            "a redelivery starts from the failed record: {handled:?}"
        );
    }
    cluster.close().await;
}

/// One record of `topic` partition 0 as consumed.
async fn consume_one(cluster: &Cluster, topic: &str) -> KRec {
    let mut recs =
        listener_dlt_support::read_all(cluster, topic, 1, 1, Duration::from_secs(10)).await;
    assert_eq!(recs.len(), 1);
    KRec(recs.remove(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_naming_missing_destination_and_timeout() {
    use rekafka::listener::{
        DeadLetterError, Destination, DltNaming, MissingDestination, SendTimeout,
    };
    let mock = MockCluster::builder()
        .topic("rs", 1)
        .topic("rs.DLT", 1)
        .topic("custom", 3)
        .start()
        .await
        .unwrap();
    let cluster = Cluster::connect(ClusterConfig::new([mock.bootstrap()]))
        .await
        .unwrap();
    produce(
        &cluster,
        vec![Record::new("rs").with_key("k").with_value("v")],
    )
    .await;
    let rec = consume_one(&cluster, "rs").await;
    let err: SharedError = Arc::new(Poison("x".into()));

    // Legacy naming.
    let legacy = DeadLetterPublisher::<KRec>::builder(cluster.clone())
        .naming(DltNaming::Legacy)
        .build()
        .await
        .unwrap();
    let meta = legacy.publish(&rec, &err).await.unwrap().unwrap();
    assert_eq!((&*meta.topic, meta.partition), ("rs.DLT", 0));
    legacy.close().await;

    // A resolver: no destination → skipped (Ok, nothing written) or failed.
    let skip = DeadLetterPublisher::<KRec>::builder(cluster.clone())
        .resolver(|_, _| None)
        .build()
        .await
        .unwrap();
    assert!(skip.publish(&rec, &err).await.unwrap().is_none());
    let fail = DeadLetterPublisher::<KRec>::builder(cluster.clone())
        .resolver(|_, _| None)
        .on_missing_destination(MissingDestination::Fail)
        .build()
        .await
        .unwrap();
    assert!(matches!(
        fail.publish(&rec, &err).await,
        Err(DeadLetterError::NoDestination { offset: 0, .. })
    ));
    // A resolver with a negative partition: the partitioner chooses (by key).
    let custom = DeadLetterPublisher::<KRec>::builder(cluster.clone())
        .resolver(|_, _| Some(Destination::any_partition("custom")))
        .build()
        .await
        .unwrap();
    let meta = custom.publish(&rec, &err).await.unwrap().unwrap();
    assert_eq!(&*meta.topic, "custom");
    assert_eq!(
        meta.partition,
        rekafka::producer::murmur2_partition(b"k", 3) as i32
    );

    // A publication that times out is awaited again, not re-sent: exactly one dead letter.
    let held = mock.hold(|i| i.api_key == ApiKey::Produce);
    let slow = DeadLetterPublisher::<KRec>::builder(cluster.clone())
        .send_timeout(SendTimeout::Fixed(Duration::from_millis(300)))
        .build()
        .await
        .unwrap();
    let first = slow.publish(&rec, &err).await;
    assert!(
        matches!(first, Err(DeadLetterError::Timeout { .. })),
        "{first:?}"
    );
    held.release();
    let second = slow.publish(&rec, &err).await.unwrap().unwrap();
    assert_eq!(&*second.topic, "rs-dlt");
    assert_eq!(
        mock.high_watermark("rs-dlt", 0).unwrap(),
        1,
        "one dead letter"
    );
    slow.close().await;
    cluster.close().await;
}

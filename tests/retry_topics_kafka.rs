//! Non-blocking retries (retry topics and a DLT, Spring's `@RetryableTopic`) on the cluster at
//! `REKAFKA_BOOTSTRAP`:
//!
//! * 10,000 records, 1 % failing twice and 0.5 % failing always: every good record handled
//!   exactly once, every twice-failing record handled on its third attempt in `-retry-1`, every
//!   always-failing record in the DLT exactly once with Spring's headers, and no retry handled
//!   before its due time;
//! * the main topic flows while a retry waits for its due time;
//! * a not-retryable error goes straight to the DLT, and a failing DLT handler gets the dead
//!   letter again (`DltStrategy::AlwaysRetryOnError`);
//! * exception-based DLT routes (`dlt_route`) and Spring's default reuse of one topic for the
//!   trailing retries of an exponential back-off at its maximum;
//! * typed records (`start_typed`) through the retries, a value that does not deserialize
//!   straight to the DLT with its raw bytes;
//! * a consumer process killed with SIGKILL and restarted loses nothing, and handles records
//!   again at most within the stated at-least-once bound.
//!
//! ```text
//! source target/kafka/env && cargo test --features mock --test retry_topics_kafka
//! ```
//!
//! Named `*_kafka.rs`, not `*_broker.rs` (whose suites also run against the embedded mock):
//! the SIGKILL test's child process must reach the same broker as the parent.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{bootstrap, unique};
use rekafka::Client;
use rekafka::admin::NewTopic;
use rekafka::cluster::Cluster;
use rekafka::consumer::{ConsumerConfig, OffsetReset};
use rekafka::listener::retry_topic::{
    RetryBackOff, RetryTopicConfiguration, TopicSuffixing, headers,
};
use rekafka::listener::{HandlerError, ListenerConsumerRecord, ListenerRecord, StopReason};
use rekafka::producer::{Producer, ProducerConfig, Record};

#[derive(Debug, thiserror::Error)]
#[error("record {0} failed")]
struct Failing(String);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

async fn create(name: &str, partitions: i32) {
    let client = Client::builder()
        .property("bootstrap.servers", bootstrap())
        .build()
        .await
        .unwrap();
    for t in client
        .admin()
        .create_topics(&[NewTopic::new(name, partitions)])
        .await
        .unwrap()
    {
        t.unwrap();
    }
    client.close().await;
}

async fn produce(cluster: &Cluster, topic: &str, keys: impl IntoIterator<Item = String>) {
    let p = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .unwrap();
    let mut acks = Vec::new();
    for k in keys {
        let r = Record::new(topic)
            .with_key(k.clone())
            .with_value(format!("v-{k}"))
            .with_header("trace", Some(format!("t-{k}")));
        acks.push(p.send(r).await.unwrap());
    }
    for a in acks {
        a.await.unwrap();
    }
    p.close().await;
}

/// What a record's key says it does: `g…` succeeds, `t…` fails twice, `a…` always fails.
fn fails(key: &str, attempt: u32) -> bool {
    match key.as_bytes().first() {
        Some(b't') => attempt <= 2,
        Some(b'a') => true,
        _ => false,
    }
}

fn key_of(i: usize) -> String {
    if i % 100 == 7 {
        format!("t{i}")
    } else if i % 200 == 13 {
        format!("a{i}")
    } else {
        format!("g{i}")
    }
}

fn config() -> RetryTopicConfiguration {
    RetryTopicConfiguration::builder()
        .max_attempts(3)
        .back_off(RetryBackOff::Delays(vec![
            Duration::from_millis(300),
            Duration::from_millis(600),
        ]))
        .suffixing(TopicSuffixing::ByIndex)
        .poll_timeout(Duration::from_millis(200))
        .build()
}

fn consumer_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(100))
}

/// One handling: (topic, key, attempt header, handled at, due at, succeeded).
#[derive(Debug, Clone)]
struct Handled {
    topic: String,
    key: String,
    attempt: u32,
    at: i64,
    due: Option<i64>,
    ok: bool,
}

fn header<'a>(hs: &'a [rekafka::protocol::record::Header], name: &str) -> Option<&'a [u8]> {
    hs.iter()
        .rev()
        .find(|h| h.key() == name)
        .and_then(|h| h.value())
}

async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_retry_topics_and_dlt() {
    let topic = unique("rt-main");
    let group = unique("rt-g");
    create(&topic, 4).await;
    let cluster = common::cluster().await;
    let n = 10_000;
    produce(&cluster, &topic, (0..n).map(key_of)).await;
    let twice: HashSet<String> = (0..n).map(key_of).filter(|k| k.starts_with('t')).collect();
    let always: HashSet<String> = (0..n).map(key_of).filter(|k| k.starts_with('a')).collect();
    assert_eq!((twice.len(), always.len()), (100, 50));

    let log: Arc<Mutex<Vec<Handled>>> = Arc::default();
    let dead: Arc<Mutex<Vec<ListenerConsumerRecord>>> = Arc::default();
    let (l, d) = (log.clone(), dead.clone());
    let handle = config()
        .start_with_dlt_handler(
            cluster.clone(),
            consumer_config(&group),
            &topic,
            move |r: ListenerConsumerRecord| {
                let l = l.clone();
                async move {
                    let hs = r.headers();
                    let key = r.key_str().unwrap_or_default().to_owned();
                    let attempt = headers::attempts(&hs);
                    let ok = !fails(&key, attempt);
                    l.lock().unwrap().push(Handled {
                        topic: r.topic().to_owned(),
                        key: key.clone(),
                        attempt,
                        at: now_ms(),
                        due: headers::backoff_timestamp(&hs),
                        ok,
                    });
                    if ok {
                        Ok(())
                    } else {
                        Err(Box::new(Failing(key)) as HandlerError)
                    }
                }
            },
            move |r: ListenerConsumerRecord| {
                d.lock().unwrap().push(r);
                async { Ok(()) }
            },
        )
        .await
        .unwrap();
    let t = handle.topology().clone();
    assert_eq!(t.retries.len(), 2);
    let (r0, r1) = (t.retries[0].name.clone(), t.retries[1].name.clone());
    assert_eq!(r0, format!("{topic}-retry-0"));
    assert_eq!(r1, format!("{topic}-retry-1"));
    let dlt = t.dlt.clone().unwrap();
    assert_eq!(dlt, format!("{topic}-dlt"));

    let expected_ok = n - always.len();
    wait_until(
        "all records handled or dead",
        Duration::from_secs(180),
        || {
            let ok = log.lock().unwrap().iter().filter(|h| h.ok).count();
            ok >= expected_ok && dead.lock().unwrap().len() >= always.len()
        },
    )
    .await;
    // A moment for late duplicates to show up if there were any.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reasons = handle.stop().await;
    assert_eq!(reasons.len(), 4);
    assert!(
        reasons.iter().all(|(_, r)| *r == StopReason::Normal),
        "{reasons:?}"
    );

    let log = log.lock().unwrap().clone();
    let mut by_key: HashMap<&str, Vec<&Handled>> = HashMap::new();
    for h in &log {
        by_key.entry(&h.key).or_default().push(h);
    }
    assert_eq!(by_key.len(), n, "every record handled");
    for (key, hs) in &by_key {
        if key.starts_with('g') {
            assert_eq!(hs.len(), 1, "{key} handled exactly once: {hs:?}");
            assert!(hs[0].ok && hs[0].topic == topic && hs[0].attempt == 1);
        } else if key.starts_with('t') {
            let topics: Vec<(&str, u32, bool)> = hs
                .iter()
                .map(|h| (h.topic.as_str(), h.attempt, h.ok))
                .collect();
            assert_eq!(
                topics,
                [
                    (topic.as_str(), 1, false),
                    (r0.as_str(), 2, false),
                    (r1.as_str(), 3, true)
                ],
                "{key}"
            );
        } else {
            let topics: Vec<(&str, u32)> =
                hs.iter().map(|h| (h.topic.as_str(), h.attempt)).collect();
            assert_eq!(
                topics,
                [(topic.as_str(), 1), (r0.as_str(), 2), (r1.as_str(), 3)],
                "{key}"
            );
            assert!(hs.iter().all(|h| !h.ok));
        }
        // Delays honoured: never handled before the due time, which is the delay after the
        // previous attempt's failure.
        for w in hs.windows(2) {
            let (prev, next) = (w[0], w[1]);
            let due = next.due.expect("a retry carries its due time");
            let delay = if next.attempt == 2 { 300 } else { 600 };
            assert!(
                due >= prev.at + delay,
                "{key}: due {due} < failed {} + {delay}",
                prev.at
            );
            assert!(
                next.at >= due,
                "{key}: handled at {} before due {due}",
                next.at
            );
        }
    }

    // The DLT: each always-failing record exactly once, with Spring's headers of the first
    // failure.
    let dead = dead.lock().unwrap().clone();
    let dead_keys: Vec<String> = dead
        .iter()
        .map(|r| r.key_str().unwrap().to_owned())
        .collect();
    assert_eq!(dead_keys.len(), always.len(), "exactly once each");
    assert_eq!(dead_keys.iter().cloned().collect::<HashSet<_>>(), always);
    let offsets: HashSet<(i32, i64)> = dead.iter().map(|r| (r.partition(), r.offset())).collect();
    assert_eq!(offsets.len(), dead.len());
    let first_offsets: HashMap<String, (i32, i64)> = {
        // The main topic's partition and offset of each always-failing record, read back.
        let mut m = HashMap::new();
        let reader = rekafka::consumer::Consumer::new(
            common::cluster().await,
            ConsumerConfig::new()
                .with_group_id(unique("rt-read"))
                .with_auto_offset_reset(OffsetReset::Earliest)
                .with_auto_commit(rekafka::consumer::AutoCommit::Disabled),
        )
        .unwrap();
        reader.subscribe([topic.as_str()]).unwrap();
        let mut seen = 0;
        while seen < n {
            for r in reader.poll(Duration::from_millis(500)).await.unwrap() {
                seen += 1;
                let k = String::from_utf8_lossy(r.key.as_deref().unwrap()).into_owned();
                if always.contains(&k) {
                    m.insert(k, (r.partition, r.offset));
                }
            }
        }
        reader.close().await.unwrap();
        m
    };
    for r in &dead {
        let hs = r.headers();
        let key = r.key_str().unwrap();
        let s = |name: &str| String::from_utf8_lossy(header(&hs, name).unwrap()).into_owned();
        assert_eq!(s("kafka_original-topic"), topic);
        let (p, o) = first_offsets[key];
        assert_eq!(
            header(&hs, "kafka_original-partition").unwrap(),
            &p.to_be_bytes()
        );
        assert_eq!(
            header(&hs, "kafka_original-offset").unwrap(),
            &o.to_be_bytes()
        );
        assert_eq!(s("kafka_original-timestamp-type"), "CreateTime");
        assert_eq!(s("kafka_dlt-original-consumer-group"), group);
        assert_eq!(s("kafka_exception-fqcn"), "Failing");
        assert_eq!(s("kafka_exception-message"), format!("record {key} failed"));
        assert_eq!(s("trace"), format!("t-{key}"));
        // Spring's encodings: a 4-byte attempts header (3 attempts made, the 4th would be
        // next), BigInteger timestamps.
        assert_eq!(
            header(&hs, "retry_topic-attempts").unwrap(),
            &4_i32.to_be_bytes()
        );
        let original = headers::original_timestamp(&hs).unwrap();
        assert_eq!(
            Some(original),
            header(&hs, "kafka_original-timestamp")
                .map(|b| i64::from_be_bytes(b.try_into().unwrap()))
        );
        assert!(headers::backoff_timestamp(&hs).is_some());
        // One of each provenance header: the first failure's, never appended again.
        for name in ["kafka_original-topic", "kafka_original-offset"] {
            assert_eq!(hs.iter().filter(|h| h.key() == name).count(), 1, "{name}");
        }
        // The retry headers of every forward, in order (Spring's retainAllRetryHeaderValues):
        // to attempt 2, 3, then the DLT (4), each with the same original timestamp.
        let all = |name: &str| -> Vec<Vec<u8>> {
            hs.iter()
                .filter(|h| h.key() == name)
                .map(|h| h.value().unwrap_or_default().to_vec())
                .collect()
        };
        assert_eq!(
            all("retry_topic-attempts"),
            [2_i32, 3, 4].map(|n| n.to_be_bytes().to_vec())
        );
        let originals = all("retry_topic-original-timestamp");
        assert_eq!(originals.len(), 3);
        assert!(originals.iter().all(|o| *o == originals[0]));
        assert_eq!(all("retry_topic-backoff-timestamp").len(), 3);
    }
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn main_topic_flows_while_a_retry_waits() {
    let topic = unique("rt-flow");
    let group = unique("rt-flow-g");
    create(&topic, 1).await;
    let cluster = common::cluster().await;
    let delay = Duration::from_secs(8);
    let log: Arc<Mutex<Vec<Handled>>> = Arc::default();
    let l = log.clone();
    let handle = RetryTopicConfiguration::builder()
        .max_attempts(2)
        .back_off(RetryBackOff::Fixed(delay))
        .poll_timeout(Duration::from_millis(200))
        .build()
        .start(
            cluster.clone(),
            consumer_config(&group),
            &topic,
            move |r: ListenerConsumerRecord| {
                let l = l.clone();
                async move {
                    let hs = r.headers();
                    let key = r.key_str().unwrap_or_default().to_owned();
                    let attempt = headers::attempts(&hs);
                    let ok = !(key == "slow" && attempt == 1);
                    l.lock().unwrap().push(Handled {
                        topic: r.topic().to_owned(),
                        key: key.clone(),
                        attempt,
                        at: now_ms(),
                        due: headers::backoff_timestamp(&hs),
                        ok,
                    });
                    if ok {
                        Ok(())
                    } else {
                        Err(Box::new(Failing(key)) as HandlerError)
                    }
                }
            },
        )
        .await
        .unwrap();
    let retry = format!("{topic}-retry");
    assert_eq!(handle.topology().retries[0].name, retry);
    produce(&cluster, &topic, ["slow".to_owned()]).await;
    wait_until("the first attempt failed", Duration::from_secs(60), || {
        log.lock().unwrap().iter().any(|h| h.key == "slow")
    })
    .await;
    // The record is forwarded and waits on the retry topic; the main topic goes on.
    produce(&cluster, &topic, (0..300).map(|i| format!("g{i}"))).await;
    wait_until(
        "the main topic's records handled",
        Duration::from_secs(60),
        || {
            log.lock()
                .unwrap()
                .iter()
                .filter(|h| h.key.starts_with('g'))
                .count()
                == 300
        },
    )
    .await;
    let retried_before = log
        .lock()
        .unwrap()
        .iter()
        .any(|h| h.key == "slow" && h.attempt == 2);
    assert!(
        !retried_before,
        "the main topic's records were handled while the retry waited"
    );
    wait_until("the retry handled", Duration::from_secs(60), || {
        log.lock()
            .unwrap()
            .iter()
            .any(|h| h.key == "slow" && h.attempt == 2)
    })
    .await;
    let reasons = handle.stop().await;
    assert!(reasons.iter().all(|(_, r)| *r == StopReason::Normal));
    let log = log.lock().unwrap().clone();
    let first = log
        .iter()
        .find(|h| h.key == "slow" && h.attempt == 1)
        .unwrap();
    let second = log
        .iter()
        .find(|h| h.key == "slow" && h.attempt == 2)
        .unwrap();
    assert_eq!(second.topic, retry);
    let due = second.due.unwrap();
    assert!(due >= first.at + delay.as_millis() as i64);
    assert!(second.at >= due, "handled before its due time");
    // Every main record was handled before the retry came due.
    assert!(
        log.iter()
            .filter(|h| h.key.starts_with('g'))
            .all(|h| h.at < second.at)
    );
    cluster.close().await;
}

#[derive(Debug, thiserror::Error)]
#[error("fatal for {0}")]
struct Fatal(String);

#[derive(Debug, thiserror::Error)]
#[error("wrapped")]
struct Wrapped(#[source] Fatal);

/// A not-retryable error (found through the cause chain) goes straight to the DLT; a DLT
/// handler that fails with a retryable error gets the dead letter again
/// (`DltStrategy::AlwaysRetryOnError`), with the first failure's provenance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_retryable_goes_straight_to_the_dlt_and_a_failing_dlt_handler_retries() {
    let topic = unique("rt-fatal");
    let group = unique("rt-fatal-g");
    create(&topic, 2).await;
    let cluster = common::cluster().await;
    let keys: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    produce(&cluster, &topic, keys.clone()).await;
    let log: Arc<Mutex<Vec<Handled>>> = Arc::default();
    let dead: Arc<Mutex<Vec<ListenerConsumerRecord>>> = Arc::default();
    let (l, d) = (log.clone(), dead.clone());
    let handle = RetryTopicConfiguration::builder()
        .max_attempts(3)
        .back_off(RetryBackOff::Fixed(Duration::from_millis(100)))
        .not_retry_on::<Fatal>()
        .poll_timeout(Duration::from_millis(200))
        .build()
        .start_with_dlt_handler(
            cluster.clone(),
            consumer_config(&group),
            &topic,
            move |r: ListenerConsumerRecord| {
                let l = l.clone();
                async move {
                    let hs = r.headers();
                    let key = r.key_str().unwrap_or_default().to_owned();
                    l.lock().unwrap().push(Handled {
                        topic: r.topic().to_owned(),
                        key: key.clone(),
                        attempt: headers::attempts(&hs),
                        at: now_ms(),
                        due: None,
                        ok: false,
                    });
                    Err(Box::new(Wrapped(Fatal(key))) as HandlerError)
                }
            },
            move |r: ListenerConsumerRecord| {
                let d = d.clone();
                async move {
                    let key = r.key_str().unwrap_or_default().to_owned();
                    let first = {
                        let mut d = d.lock().unwrap();
                        let first = !d.iter().any(|x| x.key_str() == Some(key.as_str()));
                        d.push(r);
                        first
                    };
                    if first {
                        Err(Box::new(Failing(key)) as HandlerError)
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await
        .unwrap();
    wait_until(
        "every dead letter handled twice",
        Duration::from_secs(60),
        || dead.lock().unwrap().len() >= 2 * keys.len(),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.stop().await;
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log.len(),
        keys.len(),
        "each handled once, on the main topic: {log:?}"
    );
    assert!(log.iter().all(|h| h.topic == topic && h.attempt == 1));
    let dead = dead.lock().unwrap().clone();
    assert_eq!(dead.len(), 2 * keys.len(), "each dead letter handled twice");
    for k in &keys {
        let letters: Vec<&ListenerConsumerRecord> = dead
            .iter()
            .filter(|r| r.key_str() == Some(k.as_str()))
            .collect();
        assert_eq!(letters.len(), 2, "{k}");
        let first = letters[0].headers();
        let second = letters[1].headers();
        // Straight from the main topic: attempt 1 failed, the DLT holds attempt 2; the retry
        // of the DLT handler counts on.
        assert_eq!(headers::attempts(&first), 2);
        assert_eq!(headers::attempts(&second), 3);
        for hs in [&first, &second] {
            let s = |name: &str| String::from_utf8_lossy(header(hs, name).unwrap()).into_owned();
            assert_eq!(s("kafka_original-topic"), topic);
            assert_eq!(
                hs.iter()
                    .filter(|h| h.key() == "kafka_original-offset")
                    .count(),
                1
            );
        }
        assert_eq!(
            header(&first, "kafka_original-offset"),
            header(&second, "kafka_original-offset")
        );
        assert_eq!(
            String::from_utf8_lossy(header(&first, "kafka_exception-fqcn").unwrap()),
            "Wrapped"
        );
        // The cause's class (as `error_class` names a cause: its type path).
        assert!(
            String::from_utf8_lossy(header(&first, "kafka_exception-cause-fqcn").unwrap())
                .ends_with("Fatal")
        );
        assert_eq!(
            String::from_utf8_lossy(header(&second, "kafka_exception-message").unwrap()),
            format!("record {k} failed")
        );
    }
    cluster.close().await;
}

#[derive(Debug, thiserror::Error)]
#[error("record {0} is invalid")]
struct Invalid(String);

#[derive(Debug, thiserror::Error)]
#[error("handling failed")]
struct Outer(#[source] Invalid);

/// Spring's defaults for an exponential back-off that reaches its maximum (the trailing retries
/// share one topic, suffixed by delay) with exception-based DLT routes: a not-retryable error
/// goes straight to its routed DLT, a retryable one with a route goes there once its attempts
/// are used up (found through the cause chain), any other to the DLT. Each dead letter lands
/// exactly once, in its DLT only, with Spring's headers, and each DLT's group commits it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_dlts_and_the_reused_trailing_retry_topic() {
    let topic = unique("rt-route");
    let group = unique("rt-route-g");
    create(&topic, 2).await;
    let cluster = common::cluster().await;
    // `g…` succeed, `f…` fail with a not-retryable `Fatal`, `i…` always fail with an
    // `Invalid` (inside an `Outer`), `o…` always fail with an error without a route.
    let keys: Vec<String> = (0..40)
        .map(|i| format!("{}{i}", ["g", "f", "i", "o"][i % 4]))
        .collect();
    produce(&cluster, &topic, keys.clone()).await;
    let log: Arc<Mutex<Vec<Handled>>> = Arc::default();
    let dead: Arc<Mutex<Vec<ListenerConsumerRecord>>> = Arc::default();
    let (l, d) = (log.clone(), dead.clone());
    let config = RetryTopicConfiguration::builder()
        .max_attempts(4)
        .back_off(RetryBackOff::Exponential {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            max: Duration::from_millis(200),
        })
        .not_retry_on::<Fatal>()
        .dlt_route::<Fatal>("-fatal")
        .dlt_route::<Invalid>("-invalid")
        .poll_timeout(Duration::from_millis(200))
        .build();
    let handle = config
        .start_with_dlt_handler(
            cluster.clone(),
            consumer_config(&group),
            &topic,
            move |r: ListenerConsumerRecord| {
                let l = l.clone();
                async move {
                    let hs = r.headers();
                    let key = r.key_str().unwrap_or_default().to_owned();
                    let ok = key.starts_with('g');
                    l.lock().unwrap().push(Handled {
                        topic: r.topic().to_owned(),
                        key: key.clone(),
                        attempt: headers::attempts(&hs),
                        at: now_ms(),
                        due: headers::backoff_timestamp(&hs),
                        ok,
                    });
                    match key.as_bytes()[0] {
                        b'g' => Ok(()),
                        b'f' => Err(Box::new(Wrapped(Fatal(key))) as HandlerError),
                        b'i' => Err(Box::new(Outer(Invalid(key))) as HandlerError),
                        _ => Err(Box::new(Failing(key)) as HandlerError),
                    }
                }
            },
            move |r: ListenerConsumerRecord| {
                let d = d.clone();
                async move {
                    d.lock().unwrap().push(r);
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    let t = handle.topology().clone();
    let retry_names: Vec<&str> = t.retries.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        retry_names,
        [format!("{topic}-retry-100"), format!("{topic}-retry-200")]
    );
    assert_eq!(
        t.routed_dlts,
        [format!("{topic}-fatal-dlt"), format!("{topic}-invalid-dlt")]
    );
    let failing = keys.iter().filter(|k| !k.starts_with('g')).count();
    wait_until("every dead letter handled", Duration::from_secs(60), || {
        dead.lock().unwrap().len() >= failing
    })
    .await;
    // Anything more (a duplicate) would arrive within the poll cycles of this second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.stop().await;

    let log = log.lock().unwrap().clone();
    let dead = dead.lock().unwrap().clone();
    assert_eq!(dead.len(), failing, "each dead letter exactly once");
    let retry_100 = format!("{topic}-retry-100");
    let retry_200 = format!("{topic}-retry-200");
    for k in &keys {
        let mine: Vec<&Handled> = log.iter().filter(|h| &h.key == k).collect();
        let letters: Vec<&ListenerConsumerRecord> = dead
            .iter()
            .filter(|r| r.key_str() == Some(k.as_str()))
            .collect();
        let path: Vec<(&str, u32)> = mine.iter().map(|h| (h.topic.as_str(), h.attempt)).collect();
        let (expected_path, dlt): (Vec<(&str, u32)>, Option<String>) = match k.as_bytes()[0] {
            b'g' => (vec![(topic.as_str(), 1)], None),
            b'f' => (
                vec![(topic.as_str(), 1)],
                Some(format!("{topic}-fatal-dlt")),
            ),
            first => (
                vec![
                    (topic.as_str(), 1),
                    (retry_100.as_str(), 2),
                    (retry_200.as_str(), 3),
                    (retry_200.as_str(), 4),
                ],
                Some(if first == b'i' {
                    format!("{topic}-invalid-dlt")
                } else {
                    format!("{topic}-dlt")
                }),
            ),
        };
        assert_eq!(path, expected_path, "{k}: where and on which attempt");
        // No retry handled before it was due.
        for h in &mine {
            if let Some(due) = h.due {
                assert!(h.at >= due, "{k} handled at {} before due {due}", h.at);
            }
        }
        match dlt {
            None => assert!(letters.is_empty(), "{k} succeeded"),
            Some(dlt) => {
                assert_eq!(letters.len(), 1, "{k}: one dead letter");
                let r = letters[0];
                assert_eq!(r.topic(), dlt, "{k}: its DLT");
                let hs = r.headers();
                let s =
                    |name: &str| String::from_utf8_lossy(header(&hs, name).unwrap()).into_owned();
                assert_eq!(s("kafka_original-topic"), topic);
                assert_eq!(
                    headers::attempts(&hs),
                    expected_path.len() as u32 + 1,
                    "{k}: the DLT holds the attempt after the last"
                );
                assert_eq!(s("kafka_dlt-original-consumer-group"), group);
                // The original offset is that of the first failure, on the main topic.
                let first_offset = i64::from_be_bytes(
                    header(&hs, "kafka_original-offset")
                        .unwrap()
                        .try_into()
                        .unwrap(),
                );
                assert!(first_offset >= 0);
                let expected_class = match k.as_bytes()[0] {
                    b'f' => "Wrapped",
                    b'i' => "Outer",
                    _ => "Failing",
                };
                assert_eq!(s("kafka_exception-fqcn"), expected_class, "{k}");
            }
        }
    }
    // Each DLT's container committed what it handled: the DLT's group (Spring's names
    // `G-fatal-dlt`, `G-invalid-dlt`, `G-dlt`) sits at the end of its DLT.
    let admin = rekafka::admin::Admin::new(cluster.clone());
    for (suffix, prefix) in [("-fatal-dlt", 'f'), ("-invalid-dlt", 'i'), ("-dlt", 'o')] {
        let committed: i64 = admin
            .list_group_offsets(&format!("{group}{suffix}"), None)
            .await
            .unwrap()
            .into_iter()
            .filter(|(tp, _)| *tp.topic == format!("{topic}{suffix}"))
            .map(|(_, o)| o.unwrap().map_or(0, |o| o.offset))
            .sum();
        let expected = keys.iter().filter(|k| k.starts_with(prefix)).count() as i64;
        assert_eq!(committed, expected, "{group}{suffix} committed");
    }
    cluster.close().await;
}

/// A value deserializer for the typed test: the value as a decimal `u64`.
#[derive(Debug, Clone, Copy)]
struct U64Value;

impl rekafka::consumer::Deserializer for U64Value {
    type Output = u64;
    fn deserialize(&self, _topic: &str, data: Option<&bytes::Bytes>) -> rekafka::Result<u64> {
        let text = std::str::from_utf8(data.map(|b| &b[..]).unwrap_or_default())
            .map_err(|_| rekafka::Error::deserialization("not UTF-8"))?;
        text.parse()
            .map_err(|_| rekafka::Error::deserialization(format!("not a number: {text:?}")))
    }
}

/// Retry topics over typed records (`start_typed`): the handler gets typed keys and values on
/// the main topic and through the retries (here one topic, `-retry`, for the fixed back-off);
/// a value that does not deserialize never reaches the handler and goes straight to the DLT
/// with its raw bytes, where the DLT handler gets it without a typed value and with the
/// failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_records_through_retries_and_a_bad_value_straight_to_the_dlt() {
    use rekafka::consumer::StringDeserializer;
    use rekafka::listener::TypedRecord;
    type Rec = TypedRecord<Option<String>, u64>;

    let topic = unique("rt-typed");
    let group = unique("rt-typed-g");
    create(&topic, 2).await;
    let cluster = common::cluster().await;
    // Value `i` for key `k{i}`; every 5th value (i % 5 == 0) is not a number; numbers with
    // i % 5 == 1 fail on their first two attempts.
    let n = 50_u64;
    let value_of = |i: u64| {
        if i.is_multiple_of(5) {
            format!("bad-{i}")
        } else {
            i.to_string()
        }
    };
    {
        let p = Producer::new(cluster.clone(), ProducerConfig::default())
            .await
            .unwrap();
        let mut acks = Vec::new();
        for i in 0..n {
            let r = Record::new(topic.as_str())
                .with_key(format!("k{i}"))
                .with_value(value_of(i));
            acks.push(p.send(r).await.unwrap());
        }
        for a in acks {
            a.await.unwrap();
        }
        p.close().await;
    }
    // (topic, key, typed value, attempt, ok)
    type Handling = (String, String, u64, u32, bool);
    let log: Arc<Mutex<Vec<Handling>>> = Arc::default();
    let dead: Arc<Mutex<Vec<Rec>>> = Arc::default();
    let (l, d) = (log.clone(), dead.clone());
    let handle = RetryTopicConfiguration::builder()
        .max_attempts(3)
        .back_off(RetryBackOff::Fixed(Duration::from_millis(100)))
        .poll_timeout(Duration::from_millis(200))
        .build()
        .start_typed(
            cluster.clone(),
            consumer_config(&group),
            &topic,
            StringDeserializer,
            U64Value,
            move |r: Rec| {
                let l = l.clone();
                async move {
                    let key = r.typed_key().cloned().flatten().unwrap_or_default();
                    let value = *r.typed_value().unwrap();
                    let attempt = headers::attempts(&r.headers());
                    let ok = !(value % 5 == 1 && attempt <= 2);
                    l.lock()
                        .unwrap()
                        .push((r.topic().to_owned(), key.clone(), value, attempt, ok));
                    if ok {
                        Ok(())
                    } else {
                        Err(Box::new(Failing(key)) as HandlerError)
                    }
                }
            },
            move |r: Rec| {
                let d = d.clone();
                async move {
                    d.lock().unwrap().push(r);
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    let retry = format!("{topic}-retry");
    assert_eq!(
        handle
            .topology()
            .retries
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>(),
        [retry.as_str()]
    );
    let bad = (0..n).filter(|i| i.is_multiple_of(5)).count();
    let twice = (0..n).filter(|i| i % 5 == 1).count();
    let good = n as usize - bad;
    wait_until(
        "every number handled and every bad value dead",
        Duration::from_secs(60),
        || {
            log.lock().unwrap().iter().filter(|h| h.4).count() >= good
                && dead.lock().unwrap().len() >= bad
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.stop().await;

    let log = log.lock().unwrap().clone();
    let dead = dead.lock().unwrap().clone();
    assert_eq!(log.len(), good + 2 * twice, "handlings: {log:?}");
    assert_eq!(dead.len(), bad, "one dead letter per bad value");
    for i in 0..n {
        let key = format!("k{i}");
        let mine: Vec<(&str, u64, u32, bool)> = log
            .iter()
            .filter(|h| h.1 == key)
            .map(|h| (h.0.as_str(), h.2, h.3, h.4))
            .collect();
        let letters: Vec<&Rec> = dead
            .iter()
            .filter(|r| r.raw().key_str() == Some(key.as_str()))
            .collect();
        if i.is_multiple_of(5) {
            assert!(mine.is_empty(), "{key} never reaches the handler");
            assert_eq!(letters.len(), 1, "{key}");
            let r = letters[0];
            assert_eq!(r.topic(), format!("{topic}-dlt"));
            assert_eq!(r.typed_value(), None);
            assert_eq!(
                r.raw().value().map(|b| b.to_vec()),
                Some(value_of(i).into_bytes()),
                "{key}: the raw bytes"
            );
            let failure = r.deserialization_failure().expect("the failure");
            assert!(failure.to_string().contains("not a number"), "{failure}");
            let hs = r.headers();
            assert_eq!(headers::attempts(&hs), 2, "{key}: straight from attempt 1");
            let s = |name: &str| String::from_utf8_lossy(header(&hs, name).unwrap()).into_owned();
            assert_eq!(s("kafka_original-topic"), topic);
            assert_eq!(
                s("kafka_exception-fqcn"),
                "rekafka::listener::DeserializationFailed"
            );
        } else if i % 5 == 1 {
            assert!(letters.is_empty(), "{key}");
            assert_eq!(
                mine,
                [
                    (topic.as_str(), i, 1, false),
                    (retry.as_str(), i, 2, false),
                    (retry.as_str(), i, 3, true)
                ],
                "{key}"
            );
        } else {
            assert!(letters.is_empty(), "{key}");
            assert_eq!(mine, [(topic.as_str(), i, 1, true)], "{key}");
        }
    }
    cluster.close().await;
}

const CHILD_ENV: &str = "REKAFKA_RETRY_TOPICS_CHILD";
const CHILD_MAX_POLL: usize = 100;

/// The consumer process of [`sigkill_mid_run_loses_nothing`]: runs the retry topics, appending
/// one line per handling (`topic key attempt ok`) and per dead letter (`dlt key`) to the log
/// file, until killed. Not a test by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of sigkill_mid_run_loses_nothing"]
async fn retry_topics_child_process() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let args: Vec<String> = args.split(' ').map(str::to_owned).collect();
    let (topic, group, path) = (args[0].clone(), args[1].clone(), args[2].clone());
    let file = Arc::new(Mutex::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap(),
    ));
    let (f, g) = (file.clone(), file.clone());
    let handle = config()
        .start_with_dlt_handler(
            common::cluster().await,
            consumer_config(&group).with_max_poll_records(CHILD_MAX_POLL),
            &topic,
            move |r: ListenerConsumerRecord| {
                let key = r.key_str().unwrap_or_default().to_owned();
                let attempt = headers::attempts(&r.headers());
                let ok = !fails(&key, attempt);
                let line = format!("{} {key} {attempt} {ok}\n", r.topic());
                f.lock().unwrap().write_all(line.as_bytes()).unwrap();
                async move {
                    if ok {
                        Ok(())
                    } else {
                        Err(Box::new(Failing(key)) as HandlerError)
                    }
                }
            },
            move |r: ListenerConsumerRecord| {
                let line = format!("dlt {}\n", r.key_str().unwrap_or_default());
                g.lock().unwrap().write_all(line.as_bytes()).unwrap();
                async { Ok(()) }
            },
        )
        .await
        .unwrap();
    // Runs until killed.
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(handle.is_running());
    }
}

fn spawn_child(topic: &str, group: &str, path: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "retry_topics_child_process",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, format!("{topic} {group} {path}"))
        .spawn()
        .unwrap()
}

fn read_log(path: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// At-least-once across a SIGKILL: the bound. Each of the four containers (main, two retry
/// topics, DLT) commits after each poll (`AckMode::Batch`), so a kill loses at most one poll's
/// commits per container (`CHILD_MAX_POLL` records); each of those may be handled again, and a
/// forwarded one may be forwarded again and so handled again once in each later stage (at most
/// 4 stages). So: extra handlings <= kills x containers x CHILD_MAX_POLL x stages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_loses_nothing() {
    let topic = unique("rt-kill");
    let group = unique("rt-kill-g");
    create(&topic, 4).await;
    let cluster = common::cluster().await;
    let n = 3_000;
    produce(&cluster, &topic, (0..n).map(key_of)).await;
    cluster.close().await;
    let dir = std::env::temp_dir().join(unique("rt-kill-log"));
    let path = dir.to_string_lossy().into_owned();

    let mut child = spawn_child(&topic, &group, &path);
    // Kill it mid-run: some records handled, not all.
    wait_until(
        "the child handled some records",
        Duration::from_secs(120),
        || read_log(&path).len() >= n / 3,
    )
    .await;
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let at_kill = read_log(&path).len();
    assert!(at_kill < n, "killed mid-run");

    let goods: Vec<String> = (0..n).map(key_of).filter(|k| k.starts_with('g')).collect();
    let twice: Vec<String> = (0..n).map(key_of).filter(|k| k.starts_with('t')).collect();
    let always: Vec<String> = (0..n).map(key_of).filter(|k| k.starts_with('a')).collect();
    let done = |lines: &[String]| {
        let ok: HashSet<&str> = lines
            .iter()
            .filter(|l| l.ends_with(" true"))
            .filter_map(|l| l.split(' ').nth(1))
            .collect();
        let dead: HashSet<&str> = lines
            .iter()
            .filter_map(|l| l.strip_prefix("dlt "))
            .collect();
        goods.iter().chain(&twice).all(|k| ok.contains(k.as_str()))
            && always.iter().all(|k| dead.contains(k.as_str()))
    };
    let mut child = spawn_child(&topic, &group, &path);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while !done(&read_log(&path)) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing lost: timed out"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let lines = read_log(&path);
    let _ = std::fs::remove_file(&dir);

    // Where each record may be handled: goods once on the main topic; twice-failing ones on
    // the main topic, `-retry-0`, then successfully on `-retry-1` (attempt 3); always-failing
    // ones on the three, then in the DLT.
    let r0 = format!("{topic}-retry-0");
    let r1 = format!("{topic}-retry-1");
    let mut counts: HashMap<(String, String), usize> = HashMap::new();
    for l in &lines {
        let parts: Vec<&str> = l.split(' ').collect();
        let (stage, key) = match parts.as_slice() {
            ["dlt", key] => ("dlt".to_owned(), key.to_string()),
            [t, key, attempt, ok] => {
                let expected_attempt = if *t == topic {
                    "1"
                } else if *t == r0 {
                    "2"
                } else {
                    assert_eq!(*t, r1, "{l}");
                    "3"
                };
                assert_eq!(*attempt, expected_attempt, "{l}");
                assert_eq!(*ok == "true", !fails(key, attempt.parse().unwrap()), "{l}");
                (t.to_string(), key.to_string())
            }
            _ => panic!("bad line {l}"),
        };
        *counts.entry((stage, key)).or_default() += 1;
    }
    let mut expected: Vec<(String, String)> = Vec::new();
    for k in &goods {
        expected.push((topic.clone(), k.clone()));
    }
    for k in twice.iter().chain(&always) {
        expected.push((topic.clone(), k.clone()));
        expected.push((r0.clone(), k.clone()));
        expected.push((r1.clone(), k.clone()));
    }
    for k in &always {
        expected.push(("dlt".to_owned(), k.clone()));
    }
    for e in &expected {
        assert!(counts.get(e).is_some_and(|&c| c >= 1), "lost: {e:?}");
    }
    assert_eq!(
        counts.len(),
        expected.len(),
        "no handling outside the expected stages"
    );
    let extra = lines.len() - expected.len();
    let (kills, containers, stages) = (1, 4, 4);
    let bound = kills * containers * CHILD_MAX_POLL * stages;
    eprintln!(
        "sigkill: {} handlings, {extra} extra (bound {bound})",
        lines.len()
    );
    assert!(
        extra <= bound,
        "{extra} duplicate handlings > bound {bound}"
    );
}

/// Retry topics started from a client (`start(&client, ..)`) are closed by `Client::close`:
/// every container (main, retry, DLT) stops after what it handled is committed, and the
/// group's committed offset covers exactly the records handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_stops_retry_topics_started_from_the_client() {
    let topic = unique("rt-close");
    let group = unique("rt-close-g");
    create(&topic, 1).await;
    let client = common::client().await;
    let handled = Arc::new(Mutex::new(Vec::<i64>::new()));
    let h = handled.clone();
    let handle = RetryTopicConfiguration::builder()
        .max_attempts(2)
        .back_off(RetryBackOff::Fixed(Duration::from_millis(200)))
        .poll_timeout(Duration::from_millis(200))
        .build()
        .start(
            &client,
            consumer_config(&group),
            &topic,
            move |r: ListenerConsumerRecord| {
                let h = h.clone();
                async move {
                    h.lock().unwrap().push(r.offset());
                    Ok(())
                }
            },
        )
        .await
        .unwrap();
    let cluster = common::cluster().await;
    produce(&cluster, &topic, (0..50).map(|i| format!("k{i}"))).await;
    wait_until("records handled", Duration::from_secs(60), || {
        handled.lock().unwrap().len() >= 10
    })
    .await;
    assert!(handle.is_running());
    client.close().await;
    assert!(
        !handle.is_running(),
        "Client::close stopped the retry-topic containers"
    );
    let handled: Vec<i64> = handled.lock().unwrap().clone();
    let distinct: HashSet<i64> = handled.iter().copied().collect();
    assert_eq!(distinct.len(), handled.len(), "no record handled twice");
    let admin = Client::builder()
        .bootstrap_servers([bootstrap()])
        .build()
        .await
        .unwrap()
        .admin();
    let tp = [rekafka::admin::TopicPartition::new(topic.as_str(), 0)];
    let offsets = admin.list_group_offsets(&group, Some(&tp)).await.unwrap();
    let committed = offsets[0].1.clone().unwrap().map(|c| c.offset);
    assert_eq!(
        committed,
        Some(handled.len() as i64),
        "the committed offset covers exactly the handled records"
    );
    for (_, reason) in handle.stop().await {
        assert_eq!(reason, StopReason::Normal);
    }
}

//! Retry topics interoperate with Spring for Apache Kafka 4.1 both ways, against the broker in
//! `REKAFKA_BOOTSTRAP`, on the topology main, `-retry-0` (200 ms), `-retry-1` (400 ms), `-dlt`,
//! 3 attempts (Spring builds it with its own `DestinationTopicPropertiesFactory`):
//!
//! * records that failed in Spring's retry-topic support (`DeadLetterPublishingRecovererFactory`)
//!   continue in rekafka: handled in `-retry-0` on attempt 2 (Spring's header), not before
//!   Spring's due time, then on attempt 3 in `-retry-1`, keeping Spring's first-failure
//!   provenance;
//! * records that failed in rekafka continue in Spring: Spring reads rekafka's attempt count
//!   and forwards them to `-retry-1` as attempt 3, keeping rekafka's first-failure provenance;
//! * rekafka names retry topics and DLTs (and reuses the trailing topic) as Spring's
//!   `DestinationTopicPropertiesFactory` does, for each suffixing and reuse strategy.
//!
//! The Spring side is `rekafka.spring.RetryTopicInterop` in the Spring runner's jar: run
//! `protocol-tests/spring/build.sh` first. The test fails (never skips) without a broker, Java
//! or the jar.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{bootstrap, unique};
use rekafka::Client;
use rekafka::admin::NewTopic;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset};
use rekafka::listener::retry_topic::{
    RetryBackOff, RetryTopicConfiguration, TopicCreation, TopicSuffixing, headers,
};
use rekafka::listener::{HandlerError, ListenerConsumerRecord, ListenerRecord};
use rekafka::producer::{Producer, ProducerConfig, Record};
use rekafka::protocol::record::Header;

#[derive(Debug, thiserror::Error)]
#[error("rekafka failed {0}")]
struct RekafkaFailed(String);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn runner_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/spring/runner/target")
}

/// What `RetryTopicInterop topics` prints: Spring's topic list, its reusable retry topics, and
/// where its resolver sends each failure (`next` lines: source, attempt, error kind, destination
/// or `none`).
struct SpringTopics {
    list: String,
    reusable: Vec<String>,
    next: Vec<(String, u32, String, String)>,
}

/// Spring's topics for `main` (`RetryTopicInterop topics`).
fn spring_topics(main: &str, args: &[&str]) -> SpringTopics {
    let dir = runner_dir();
    let jar = dir.join("spring-runner-0.1.0.jar");
    assert!(
        jar.is_file() && dir.join("lib").is_dir(),
        "{} is missing: run protocol-tests/spring/build.sh (it builds the Spring side with Maven)",
        jar.display()
    );
    let cp = format!("{}:{}/lib/*", jar.display(), dir.display());
    let out = Command::new("java")
        .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=error")
        .args(["-cp", &cp, "rekafka.spring.RetryTopicInterop", "topics"])
        .args(["--main", main])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running java (Java 17+ is needed): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "RetryTopicInterop topics failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = stdout
        .lines()
        .find_map(|l| l.strip_prefix("topics "))
        .unwrap_or_else(|| panic!("no topic list from Spring: {stdout}"))
        .to_owned();
    let reusable = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("reusable "))
        .map(str::to_owned)
        .collect();
    let next = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("next "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            assert_eq!(f.len(), 4, "{l}");
            (
                f[0].to_owned(),
                f[1].parse().unwrap(),
                f[2].to_owned(),
                f[3].to_owned(),
            )
        })
        .collect::<Vec<_>>();
    assert!(!next.is_empty(), "no resolutions from Spring: {stdout}");
    SpringTopics {
        list,
        reusable,
        next,
    }
}

/// rekafka names retry topics and DLTs as Spring 4.1's `DestinationTopicPropertiesFactory`
/// does, for each suffixing and same-interval reuse strategy (Spring's default reuses one topic
/// for the trailing retries at the same delay), with an exception-based DLT route, and sends a
/// failed record of each topic on each attempt where Spring's `DefaultDestinationTopicResolver`
/// does, for an error with and without a route. No broker.
#[test]
fn topic_names_match_springs() {
    use rekafka::listener::retry_topic::SameIntervalTopicReuse;
    let ms = Duration::from_millis;
    let cases: Vec<(Vec<u64>, TopicSuffixing, SameIntervalTopicReuse, bool)> = vec![
        // Exponential 1 s doubling up to 4 s, 5 attempts.
        (
            vec![1000, 2000, 4000, 4000],
            TopicSuffixing::ByDelay,
            SameIntervalTopicReuse::SingleTopic,
            true,
        ),
        (
            vec![1000, 2000, 4000, 4000],
            TopicSuffixing::ByDelay,
            SameIntervalTopicReuse::MultipleTopics,
            false,
        ),
        (
            vec![1000, 2000, 4000, 4000],
            TopicSuffixing::ByIndex,
            SameIntervalTopicReuse::SingleTopic,
            false,
        ),
        (
            vec![1000, 2000, 4000, 4000],
            TopicSuffixing::ByIndex,
            SameIntervalTopicReuse::MultipleTopics,
            true,
        ),
        // Fixed.
        (
            vec![1000, 1000, 1000],
            TopicSuffixing::ByDelay,
            SameIntervalTopicReuse::SingleTopic,
            false,
        ),
        (
            vec![1000, 1000, 1000],
            TopicSuffixing::ByDelay,
            SameIntervalTopicReuse::MultipleTopics,
            false,
        ),
        // One retry.
        (
            vec![1000],
            TopicSuffixing::ByDelay,
            SameIntervalTopicReuse::SingleTopic,
            false,
        ),
        (
            vec![1000],
            TopicSuffixing::ByDelay,
            SameIntervalTopicReuse::MultipleTopics,
            false,
        ),
        // No delay repeats.
        (
            vec![200, 400, 800],
            TopicSuffixing::ByDelay,
            SameIntervalTopicReuse::SingleTopic,
            false,
        ),
    ];
    for (delays, suffixing, reuse, route) in cases {
        let main = "orders";
        let mut b = RetryTopicConfiguration::builder()
            .max_attempts(u32::try_from(delays.len()).unwrap() + 1)
            .back_off(RetryBackOff::Delays(
                delays.iter().map(|d| ms(*d)).collect(),
            ))
            .suffixing(suffixing)
            .same_interval_topic_reuse(reuse);
        if route {
            b = b.dlt_route::<std::num::ParseIntError>("-fatal");
        }
        let config = b.build();
        let t = config.topology(main);
        let ours = format!(
            "[{}]",
            std::iter::once(t.main.clone())
                .chain(t.retries.iter().map(|r| r.name.clone()))
                .chain(t.routed_dlts.iter().cloned())
                .chain(t.dlt.clone())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let ours_reused: Vec<String> = t
            .retries
            .iter()
            .filter(|r| r.reused)
            .map(|r| r.name.clone())
            .collect();
        let list = delays
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec![
            "--delays",
            &list,
            "--suffixing",
            match suffixing {
                TopicSuffixing::ByIndex => "index",
                _ => "delay",
            },
            "--reuse",
            match reuse {
                SameIntervalTopicReuse::MultipleTopics => "multiple",
                _ => "single",
            },
        ];
        if route {
            args.extend(["--routes", "-fatal"]);
        }
        let spring = spring_topics(main, &args);
        let case = format!("{delays:?} {suffixing:?} {reuse:?} route={route}");
        assert_eq!(ours, spring.list, "{case}");
        assert_eq!(ours_reused, spring.reusable, "reusable topics, {case}");
        let generic = RekafkaFailed("generic".into());
        let routed = "x".parse::<u64>().unwrap_err();
        for (source, attempt, kind, dest) in &spring.next {
            let error: &(dyn std::error::Error + 'static) =
                if kind == "routed" { &routed } else { &generic };
            let ours = config
                .next_topic(&t, source, *attempt, error, Duration::ZERO)
                .unwrap_or_else(|| "none".into());
            assert_eq!(
                &ours, dest,
                "{case}: {kind} failure on {source}, attempt {attempt}"
            );
        }
    }
}

fn spring_fail(main: &str, group: &str, source: &str, count: usize) {
    let dir = runner_dir();
    let jar = dir.join("spring-runner-0.1.0.jar");
    assert!(
        jar.is_file() && dir.join("lib").is_dir(),
        "{} is missing: run protocol-tests/spring/build.sh (it builds the Spring side with Maven)",
        jar.display()
    );
    let cp = format!("{}:{}/lib/*", jar.display(), dir.display());
    let out = Command::new("java")
        .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=error")
        .args(["-cp", &cp, "rekafka.spring.RetryTopicInterop", "fail"])
        .args([
            "--bootstrap",
            &bootstrap(),
            "--main",
            main,
            "--group",
            group,
        ])
        .args(["--source", source, "--count", &count.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("running java (Java 17+ is needed): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "RetryTopicInterop failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Spring's own topology has the names rekafka gives it.
    assert!(
        stdout.contains(&format!(
            "topics [{main}, {main}-retry-0, {main}-retry-1, {main}-dlt]"
        )),
        "Spring's topology: {stdout}"
    );
}

async fn setup(main: &str, n: usize) -> Vec<ConsumerRecord> {
    let client = Client::builder()
        .property("bootstrap.servers", bootstrap())
        .build()
        .await
        .unwrap();
    let topics: Vec<NewTopic> = ["", "-retry-0", "-retry-1", "-dlt"]
        .iter()
        .map(|s| NewTopic::new(format!("{main}{s}"), 1))
        .collect();
    for t in client.admin().create_topics(&topics).await.unwrap() {
        t.unwrap();
    }
    client.close().await;
    let cluster = connect().await;
    let p = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .unwrap();
    for i in 0..n {
        p.send(
            Record::new(main)
                .with_key(format!("k{i}"))
                .with_value(format!("v{i}")),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    p.close().await;
    let read = read(&cluster, main, n).await;
    cluster.close().await;
    read
}

async fn connect() -> Cluster {
    Cluster::connect(ClusterConfig::new([bootstrap()]))
        .await
        .unwrap()
}

async fn read(cluster: &Cluster, topic: &str, n: usize) -> Vec<ConsumerRecord> {
    let c = Consumer::new(
        cluster.clone(),
        ConsumerConfig::new()
            .with_group_id(unique("rts-read"))
            .with_auto_offset_reset(OffsetReset::Earliest)
            .with_auto_commit(AutoCommit::Disabled),
    )
    .unwrap();
    c.subscribe([topic]).unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n {
        assert!(tokio::time::Instant::now() < deadline, "read {topic}");
        out.extend(c.poll(Duration::from_millis(500)).await.unwrap());
    }
    c.close().await.unwrap();
    out
}

fn last<'a>(hs: &'a [Header], name: &str) -> Option<&'a [u8]> {
    hs.iter()
        .rev()
        .find(|h| h.key() == name)
        .and_then(|h| h.value())
}

fn text(hs: &[Header], name: &str) -> String {
    String::from_utf8_lossy(last(hs, name).unwrap_or_default()).into_owned()
}

fn config(first_delay: Duration) -> RetryTopicConfiguration {
    RetryTopicConfiguration::builder()
        .max_attempts(3)
        .back_off(RetryBackOff::Delays(vec![
            first_delay,
            Duration::from_millis(400),
        ]))
        .suffixing(TopicSuffixing::ByIndex)
        .topic_creation(TopicCreation::Never)
        .poll_timeout(Duration::from_millis(200))
        .build()
}

fn consumer_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(100))
}

/// (topic, key, attempt, handled at, headers).
type Log = Arc<Mutex<Vec<(String, String, u32, i64, Vec<Header>)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failed_in_spring_continues_in_rekafka() {
    let main = unique("rts-s2r");
    let group = unique("rts-s2r-g");
    let n = 3;
    let originals = setup(&main, n).await;
    spring_fail(&main, &group, &main, n);

    let log: Log = Arc::default();
    let l = log.clone();
    let handle = config(Duration::from_millis(200))
        .start(
            connect().await,
            consumer_config(&group),
            &main,
            move |r: ListenerConsumerRecord| {
                let hs = r.headers();
                let key = r.key_str().unwrap_or_default().to_owned();
                let attempt = headers::attempts(&hs);
                let topic = r.topic().to_owned();
                l.lock()
                    .unwrap()
                    .push((topic.clone(), key.clone(), attempt, now_ms(), hs));
                async move {
                    if topic.ends_with("-retry-0") {
                        Err(Box::new(RekafkaFailed(key)) as HandlerError)
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await
        .unwrap();
    let retry1 = format!("{main}-retry-1");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while log.lock().unwrap().iter().filter(|h| h.0 == retry1).count() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    handle.stop().await;
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log.len(),
        2 * n,
        "nothing handled on the main topic again: {log:?}"
    );
    for o in &originals {
        let key = String::from_utf8_lossy(o.key.as_deref().unwrap()).into_owned();
        let mine: Vec<_> = log.iter().filter(|h| h.1 == key).collect();
        let stages: Vec<(&str, u32)> = mine.iter().map(|h| (h.0.as_str(), h.2)).collect();
        let retry0 = format!("{main}-retry-0");
        assert_eq!(
            stages,
            [(retry0.as_str(), 2), (retry1.as_str(), 3)],
            "{key}"
        );
        // Spring's due time, honoured.
        let (_, _, _, at, hs) = mine[0];
        let due = headers::backoff_timestamp(hs).expect("Spring's backoff timestamp");
        assert!(*at >= due, "{key}: handled at {at}, due {due}");
        assert!(text(hs, "kafka_exception-message").contains("spring failed"));
        // Spring's first-failure provenance stays, once, through rekafka's forward.
        for (_, _, _, _, hs) in &mine {
            assert_eq!(text(hs, "kafka_original-topic"), main);
            assert_eq!(
                last(hs, "kafka_original-offset").unwrap(),
                &o.offset.to_be_bytes()
            );
            assert_eq!(
                hs.iter()
                    .filter(|h| h.key() == "kafka_original-topic")
                    .count(),
                1
            );
            assert_eq!(headers::original_timestamp(hs), Some(o.timestamp));
        }
        let (_, _, _, _, hs) = mine[1];
        assert_eq!(
            text(hs, "kafka_exception-message"),
            format!("rekafka failed {key}")
        );
        assert_eq!(
            last(hs, "retry_topic-attempts").unwrap(),
            &3_i32.to_be_bytes()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_failed_in_rekafka_continues_in_spring() {
    let main = unique("rts-r2s");
    let group = unique("rts-r2s-g");
    let n = 3;
    let originals = setup(&main, n).await;

    // rekafka fails each record on the main topic and forwards it; its `-retry-0` container
    // waits (a long delay) and is stopped before Spring takes the records over.
    let failed = Arc::new(Mutex::new(0_usize));
    let f = failed.clone();
    let handle = config(Duration::from_secs(600))
        .start(
            connect().await,
            consumer_config(&group),
            &main,
            move |r: ListenerConsumerRecord| {
                let f = f.clone();
                async move {
                    assert_eq!(
                        headers::attempts(&r.headers()),
                        1,
                        "only main-topic records"
                    );
                    *f.lock().unwrap() += 1;
                    Err(
                        Box::new(RekafkaFailed(r.key_str().unwrap_or_default().to_owned()))
                            as HandlerError,
                    )
                }
            },
        )
        .await
        .unwrap();
    let cluster = connect().await;
    let forwarded = read(&cluster, &format!("{main}-retry-0"), n).await;
    handle.stop().await;
    assert_eq!(*failed.lock().unwrap(), n);

    spring_fail(&main, &group, &format!("{main}-retry-0"), n);
    let out = read(&cluster, &format!("{main}-retry-1"), n).await;
    assert_eq!(out.len(), n);
    for (o, (fwd, r)) in originals.iter().zip(forwarded.iter().zip(&out)) {
        assert_eq!(r.key, o.key);
        assert_eq!(r.value, o.value);
        let hs: &[Header] = &r.headers.iter().collect::<Vec<_>>();
        let fwd_hs: Vec<Header> = fwd.headers.iter().collect();
        // Spring read rekafka's attempt count (2) and wrote the next one.
        assert_eq!(
            last(hs, "retry_topic-attempts").unwrap(),
            &3_i32.to_be_bytes()
        );
        assert_eq!(headers::attempts(hs), 3);
        // rekafka's first-failure provenance, kept by Spring (appendOriginalHeaders = false).
        assert_eq!(text(hs, "kafka_original-topic"), main);
        assert_eq!(
            last(hs, "kafka_original-offset").unwrap(),
            &o.offset.to_be_bytes()
        );
        assert_eq!(
            hs.iter()
                .filter(|h| h.key() == "kafka_original-topic")
                .count(),
            1
        );
        assert_eq!(text(hs, "kafka_dlt-original-consumer-group"), group);
        // The original timestamp: rekafka's header, kept byte for byte by Spring.
        assert_eq!(
            last(hs, "retry_topic-original-timestamp"),
            last(&fwd_hs, "retry_topic-original-timestamp")
        );
        assert_eq!(headers::original_timestamp(hs), Some(o.timestamp));
        // Spring's new due time: its 400 ms delay after its failure.
        let due = headers::backoff_timestamp(hs).unwrap();
        assert!(due > headers::backoff_timestamp(&fwd_hs).unwrap_or(0) - 600_000);
        assert!(text(hs, "kafka_exception-message").contains("spring failed"));
    }
    cluster.close().await;
}

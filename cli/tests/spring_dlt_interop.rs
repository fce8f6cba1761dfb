//! Dead letters interoperate with Spring for Apache Kafka both ways, against the broker in
//! `REKAFKA_BOOTSTRAP`:
//!
//! * dead letters written by Spring's `DeadLetterPublishingRecoverer` (with the `kafka_dlt-*`
//!   headers, and with the `kafka_original-*` / `kafka_exception-*` names of Spring's retry
//!   topics) are decoded field by field by `rekafka dlt inspect` and republished by
//!   `rekafka dlt replay`;
//! * dead letters written by rekafka's `DeadLetterPublisher` are read by Spring through its own
//!   header mapping (`MessagingMessageConverter`, `KafkaHeaders.DLT_*`).
//!
//! The Spring side is `rekafka.spring.DltInterop` in the Spring runner's jar: run
//! `protocol-tests/spring/build.sh` first. The test fails (never skips) without a broker, Java
//! or the jar.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rekafka::admin::{Admin, NewTopic};
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, StartOffset, TopicPartition,
};
use rekafka::listener::{
    DeadLetterPublisher, DefaultErrorHandler, FixedBackOff, HandlerError, ListenerConsumerRecord,
    ListenerContainer,
};
use rekafka::producer::{Producer, ProducerConfig, Record};
use serde_json::Value;

const BASE_TIMESTAMP: i64 = 1_700_000_000_000;
const LEFE: &str = "org.springframework.kafka.listener.ListenerExecutionFailedException";

fn bootstrap() -> String {
    match std::env::var("REKAFKA_BOOTSTRAP") {
        Ok(b) if !b.is_empty() => b,
        _ => panic!(
            "REKAFKA_BOOTSTRAP is not set: the Spring dead-letter interop test needs a Kafka \
             broker, Java 17+ and the Spring runner built by protocol-tests/spring/build.sh"
        ),
    }
}

fn runner_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../protocol-tests/spring/runner/target")
}

fn java(args: &[&str]) -> Output {
    let dir = runner_dir();
    let jar = dir.join("spring-runner-0.1.0.jar");
    assert!(
        jar.is_file() && dir.join("lib").is_dir(),
        "{} is missing: run protocol-tests/spring/build.sh (it builds the Spring side with Maven)",
        jar.display()
    );
    let cp = format!("{}:{}/lib/*", jar.display(), dir.display());
    Command::new("java")
        .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=error")
        .args(["-cp", &cp, "rekafka.spring.DltInterop"])
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("running java (Java 17+ is needed; then protocol-tests/spring/build.sh): {e}")
        })
}

fn java_ok(args: &[&str]) -> String {
    let o = java(args);
    assert!(
        o.status.success(),
        "DltInterop {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn rekafka(bootstrap: &str, args: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_rekafka"))
        .args(args)
        .env("REKAFKA_BOOTSTRAP", bootstrap)
        .output()
        .expect("running rekafka");
    assert!(
        o.status.success(),
        "rekafka {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{t}", std::process::id())
}

fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The four records DltInterop writes: (value index, partition, offset).
fn originals() -> [(i64, i64, i64); 4] {
    [(0, 0, 0), (1, 1, 0), (2, 0, 1), (3, 1, 1)]
}

/// Checks `rekafka dlt inspect`'s decoding of Spring's dead letters of `dlt`.
fn check_inspected(bootstrap: &str, dlt: &str, source: &str, group: &str) {
    let out = rekafka(bootstrap, &["dlt", "inspect", "-t", dlt, "-e"]);
    let mut seen = lines(&out);
    assert_eq!(seen.len(), 4, "four dead letters in {dlt}: {out}");
    seen.sort_by_key(|l| l["dead_letter"]["original_timestamp"].as_i64());
    for ((i, partition, offset), l) in originals().into_iter().zip(&seen) {
        let d = &l["dead_letter"];
        let what = format!("{dlt} dead letter {i}: {l}");
        assert_eq!(d["original_topic"], source, "{what}");
        assert_eq!(d["original_partition"], partition, "{what}");
        assert_eq!(d["original_offset"], offset, "{what}");
        assert_eq!(d["original_timestamp"], BASE_TIMESTAMP + i, "{what}");
        assert_eq!(d["original_timestamp_type"], "CreateTime", "{what}");
        assert_eq!(d["group"], group, "{what}");
        assert_eq!(
            l["partition"], partition,
            "same partition as the original: {what}"
        );
        if i == 3 {
            // the key failed to deserialize: the key exception headers, the raw key
            assert_eq!(d["key_failure"], true, "{what}");
            assert_eq!(
                d["error_type"],
                "org.springframework.kafka.support.serializer.DeserializationException",
                "{what}"
            );
            assert_eq!(d["error_message"], "failed to deserialize", "{what}");
            assert!(
                d["error_stacktrace"]
                    .as_str()
                    .is_some_and(|s| s.contains("key is not valid UTF-8")),
                "{what}"
            );
        } else {
            assert_eq!(d["key_failure"], false, "{what}");
            assert_eq!(d["error_type"], LEFE, "{what}");
            assert_eq!(
                d["error_cause_type"], "rekafka.spring.Errors$Wrapper",
                "{what}"
            );
            assert_eq!(
                d["error_message"],
                format!("Listener failed; wrapped v{i}"),
                "{what}"
            );
            assert!(
                d["error_stacktrace"]
                    .as_str()
                    .is_some_and(|s| s.contains(&format!(
                        "Caused by: rekafka.spring.Errors$Fatal: fatal v{i}"
                    ))),
                "{what}"
            );
            assert_eq!(l["value"], format!("v{i}"), "{what}");
            assert_eq!(l["key"], format!("k{i}"), "{what}");
        }
    }
}

async fn read_all(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    expected: usize,
) -> Vec<ConsumerRecord> {
    let consumer = Consumer::new(
        cluster.clone(),
        ConsumerConfig::new()
            .with_auto_commit(AutoCommit::Disabled)
            .with_fetch_max_wait(Duration::from_millis(50)),
    )
    .unwrap();
    consumer
        .assign((0..partitions).map(|p| (TopicPartition::new(topic, p), StartOffset::Beginning)))
        .unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < expected && Instant::now() < deadline {
        out.extend(
            consumer
                .poll(Duration::from_millis(200))
                .await
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    let linger = Instant::now() + Duration::from_millis(500);
    while Instant::now() < linger {
        out.extend(
            consumer
                .poll(Duration::from_millis(100))
                .await
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    let _ = consumer.close().await;
    out
}

/// Checks that `rekafka dlt replay` republished Spring's dead letters to `to`: the original
/// partition (unless replayed `--to` another topic, where the partitioner chooses), key and
/// value, the original headers, no exception headers.
async fn check_replayed(cluster: &Cluster, to: &str, originals_there: usize, same_partition: bool) {
    let records = read_all(cluster, to, 2, originals_there + 4).await;
    assert_eq!(
        records.len(),
        originals_there + 4,
        "each dead letter replayed once to {to}"
    );
    let mut found = 0;
    for r in &records {
        let headers: Vec<_> = r.headers.iter().collect();
        let is_replay = headers.iter().any(|h| h.key().contains("original-topic"));
        if !is_replay {
            continue;
        }
        found += 1;
        for h in &headers {
            assert!(
                !h.key().contains("exception"),
                "replayed records carry no exception header: {} on {r:?}",
                h.key()
            );
        }
        let value = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
        let i: i64 = value.trim_start_matches('v').parse().expect("value v<i>");
        if same_partition {
            assert_eq!(
                i64::from(r.partition),
                i % 2,
                "original partition of {value}"
            );
        }
        if i == 3 {
            assert_eq!(
                r.key.as_deref(),
                Some(&[0xff, 0x01][..]),
                "raw key bytes kept"
            );
        } else {
            assert_eq!(r.key.as_deref(), Some(format!("k{i}").as_bytes()));
        }
        if i == 2 {
            assert!(
                headers
                    .iter()
                    .any(|h| h.key() == "trace" && h.value() == Some(&b"t2"[..])),
                "original headers kept"
            );
        }
    }
    assert_eq!(found, 4, "four replayed dead letters in {to}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spring_dead_letters_are_inspected_and_replayed() {
    let bootstrap = bootstrap();
    let prefix = unique("sdlt");
    java_ok(&["write", "--bootstrap", &bootstrap, "--prefix", &prefix]);
    let source = format!("{prefix}-in");

    // kafka_dlt-* (DeadLetterPublishingRecoverer's defaults)
    check_inspected(
        &bootstrap,
        &format!("{source}-dlt"),
        &source,
        &format!("{prefix}-g1"),
    );
    // kafka_original-* and kafka_exception-* (Spring's retry topics)
    check_inspected(
        &bootstrap,
        &format!("{source}-retry-dlt"),
        &source,
        &format!("{prefix}-g2"),
    );

    let cluster = Cluster::connect(ClusterConfig::new(bootstrap.split(',')))
        .await
        .unwrap();
    // Replay the kafka_dlt-* dead letters to their original topic (it has the 4 originals)...
    let out = Command::new(env!("CARGO_BIN_EXE_rekafka"))
        .args(["dlt", "replay", "-t", &format!("{source}-dlt")])
        .env("REKAFKA_BOOTSTRAP", &bootstrap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Shown only if the check below fails: what the replay said it did (it failed once, in a
    // fresh-clone run, with the replayed records missing after a successful replay).
    eprintln!(
        "replay stdout: {}\nreplay stderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    check_replayed(&cluster, &source, 4, true).await;
    // ...and the retry-topic ones to a topic of their own.
    let to = format!("{prefix}-replayed");
    let admin = Admin::new(cluster.clone());
    for r in admin.create_topics(&[NewTopic::new(&to, 2)]).await.unwrap() {
        r.unwrap();
    }
    let out = Command::new(env!("CARGO_BIN_EXE_rekafka"))
        .args([
            "dlt",
            "replay",
            "-t",
            &format!("{source}-retry-dlt"),
            "--to",
            &to,
        ])
        .env("REKAFKA_BOOTSTRAP", &bootstrap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_replayed(&cluster, &to, 0, false).await;
    cluster.close().await;
}

#[derive(Debug)]
struct NotInStock(String);
impl std::fmt::Display for NotInStock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is not in stock", self.0)
    }
}
impl std::error::Error for NotInStock {}

#[derive(Debug)]
struct OrderRejected(String, NotInStock);
impl std::fmt::Display for OrderRejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "order {} rejected", self.0)
    }
}
impl std::error::Error for OrderRejected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spring_reads_rekafka_dead_letters() {
    let bootstrap = bootstrap();
    let source = unique("rkdlt");
    let dlt = format!("{source}-dlt");
    let group = format!("{source}-group");
    let cluster = Cluster::connect(ClusterConfig::new(bootstrap.split(',')))
        .await
        .unwrap();
    let admin = Admin::new(cluster.clone());
    for r in admin
        .create_topics(&[NewTopic::new(&source, 2), NewTopic::new(&dlt, 2)])
        .await
        .unwrap()
    {
        r.unwrap();
    }
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .unwrap();
    for i in 0..3i64 {
        let d = producer
            .send(
                Record::new(source.as_str())
                    .with_partition((i % 2) as i32)
                    .with_timestamp(BASE_TIMESTAMP + i)
                    .with_key(format!("k{i}"))
                    .with_value(format!("v{i}")),
            )
            .await
            .map_err(|e| e.error)
            .unwrap();
        d.await.map_err(|e| e.error).unwrap();
    }
    producer.close().await;

    let consumer = Consumer::new(
        cluster.clone(),
        ConsumerConfig::new()
            .with_group_id(group.clone())
            .with_auto_commit(AutoCommit::Disabled)
            .with_auto_offset_reset(OffsetReset::Earliest)
            .with_fetch_max_wait(Duration::from_millis(50)),
    )
    .unwrap();
    consumer.subscribe([source.as_str()]).unwrap();
    let publisher = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
        .group(group.clone())
        .build()
        .await
        .unwrap();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(|r: ListenerConsumerRecord| async move {
            let v = r.value_str().unwrap_or_default().to_owned();
            Err(Box::new(OrderRejected(v.clone(), NotInStock(v))) as HandlerError)
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::no_retries())
                .recoverer(publisher),
        )
        .poll_timeout(Duration::from_millis(200))
        .start()
        .unwrap();
    let probe = Consumer::new(cluster.clone(), ConsumerConfig::new()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut n = 0;
        for p in 0..2 {
            n += probe
                .fetch_watermarks(&TopicPartition::new(&dlt, p))
                .await
                .unwrap()
                .1;
        }
        if n >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rekafka wrote {n} of 3 dead letters"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    handle.stop().await;

    let out = java_ok(&["read", "--bootstrap", &bootstrap, "--topic", &dlt]);
    let mut seen = lines(&out);
    assert_eq!(seen.len(), 3, "Spring read three dead letters: {out}");
    seen.sort_by_key(|l| l["original_timestamp"].as_i64());
    for (i, l) in seen.iter().enumerate() {
        let i = i as i64;
        let what = format!("dead letter {i} as Spring reads it: {l}");
        assert_eq!(l["value"], format!("v{i}"), "{what}");
        assert_eq!(l["original_topic"], source.as_str(), "{what}");
        assert_eq!(l["original_partition"], i % 2, "{what}");
        assert_eq!(l["original_offset"], i / 2, "{what}");
        assert_eq!(l["original_timestamp"], BASE_TIMESTAMP + i, "{what}");
        assert_eq!(l["original_timestamp_type"], "CreateTime", "{what}");
        assert_eq!(l["original_consumer_group"], group.as_str(), "{what}");
        // rekafka's analogue of the class name: the error's type, never its message
        let class = l["exception_fqcn"].as_str().unwrap_or_default();
        assert!(
            class.rsplit("::").next() == Some("OrderRejected"),
            "exception class names the error type: {what}"
        );
        assert!(
            l["exception_cause_fqcn"]
                .as_str()
                .is_some_and(|c| c.rsplit("::").next() == Some("NotInStock")),
            "cause class names the source's type: {what}"
        );
        assert_eq!(
            l["exception_message"],
            format!("order v{i} rejected; v{i} is not in stock"),
            "{what}"
        );
        assert!(
            l["exception_stacktrace"]
                .as_str()
                .is_some_and(|s| s.contains("is not in stock")),
            "{what}"
        );
        assert!(l["key_exception_fqcn"].is_null(), "{what}");
    }
    probe.close().await.ok();
    cluster.close().await;
}

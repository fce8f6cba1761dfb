//! Dead-letter publishing against a real broker (Tansu via `scripts/with-broker.sh`, or the mock
//! with `REKAFKA_TEST_BROKER=mock`):
//!
//! * 10,000 records, 100 of them poison, through a listener container with
//!   `FixedBackOff(10 ms, 3)` and the [`DeadLetterPublisher`]: exactly 100 dead letters with the
//!   failed records' provenance, error, key, value and headers; librdkafka reads them and
//!   decodes every header with Spring's encodings;
//! * a dead-letter topic with fewer partitions than the source: the partitioner chooses;
//! * a deserialization failure: the dead letter carries the raw bytes.
//!
//! ```text
//! scripts/with-broker.sh cargo test --test dlt_broker
//! ```

mod common;
mod listener_dlt_support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{bootstrap, unique};
use rekafka::Client;
use rekafka::admin::NewTopic;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::ConsumerRecord;
use rekafka::listener::dead_letter::names;
use rekafka::listener::{
    DeadLetterInfo, DeadLetterPublisher, DefaultErrorHandler, DeserializationFailed, FixedBackOff,
    HandlerError, ListenerContainer, ListenerRecord, SharedError, StopReason,
};
use rekafka::producer::{Producer, ProducerConfig, Record};

use listener_dlt_support::{KConsumer, KRec, header, header_pairs, read_all};

/// Failed records by (partition, offset), with their delivery count.
type Failed = HashMap<(i32, i64), (ConsumerRecord, u32)>;

/// Keys of failed records by (partition, offset).
type FailedKeys = HashMap<(i32, i64), Vec<u8>>;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[derive(Debug, thiserror::Error)]
#[error("poison record with key {0}")]
struct Poison(String);

async fn create(name: &str, partitions: i32) {
    let client = Client::builder()
        .property("bootstrap.servers", bootstrap())
        .build()
        .await
        .unwrap();
    let r = client
        .admin()
        .create_topics(&[NewTopic::new(name, partitions)])
        .await
        .unwrap();
    for t in r {
        t.unwrap();
    }
    client.close().await;
}

async fn connect() -> Cluster {
    Cluster::connect(ClusterConfig::new([bootstrap()]))
        .await
        .unwrap()
}

async fn produce(cluster: &Cluster, records: Vec<Record>) {
    let p = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .unwrap();
    let mut futs = Vec::with_capacity(records.len());
    for r in records {
        futs.push(p.send(r).await.unwrap());
    }
    for f in futs {
        f.await.unwrap();
    }
    p.close().await;
}

/// Reads the dead letters with librdkafka and prints one JSON object per record with every
/// Spring header decoded by Spring's encodings.
const DECODE_PY: &str = r#"
import json, struct, sys, time, uuid
from confluent_kafka import Consumer, TopicPartition
bootstrap, topic, partitions, expected = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = Consumer({"bootstrap.servers": bootstrap, "broker.address.family": "v4",
              "group.id": "dlt-decode-" + uuid.uuid4().hex[:8], "enable.auto.commit": False,
              "fetch.wait.max.ms": 100, "enable.partition.eof": False})
c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
n, deadline = 0, time.time() + 60
while n < expected and time.time() < deadline:
    m = c.poll(0.5)
    if m is None:
        continue
    if m.error():
        print("error", m.error(), file=sys.stderr); sys.exit(2)
    h = {}
    for k, v in (m.headers() or []):
        h[k] = v
    def s(k): return h[k].decode("utf-8")
    out = {
        "key": m.key().decode(), "value": m.value().decode(),
        "topic": s("kafka_dlt-original-topic"),
        "partition": struct.unpack(">i", h["kafka_dlt-original-partition"])[0],
        "offset": struct.unpack(">q", h["kafka_dlt-original-offset"])[0],
        "timestamp": struct.unpack(">q", h["kafka_dlt-original-timestamp"])[0],
        "timestamp_type": s("kafka_dlt-original-timestamp-type"),
        "group": s("kafka_dlt-original-consumer-group"),
        "fqcn": s("kafka_dlt-exception-fqcn"),
        "cause_fqcn": s("kafka_dlt-exception-cause-fqcn"),
        "message": s("kafka_dlt-exception-message"),
        "stacktrace": s("kafka_dlt-exception-stacktrace"),
        "trace": s("trace"),
    }
    print(json.dumps(out)); n += 1
c.close()
sys.exit(0 if n == expected else 1)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_records_hundred_poison_exactly_hundred_dead_letters() {
    let topic = unique("dlt-src");
    let dlt_topic = format!("{topic}-dlt");
    let group = unique("dlt-g");
    create(&topic, 4).await;
    create(&dlt_topic, 4).await;
    let cluster = connect().await;
    let n = 10_000;
    let poison = |i: usize| i % 100 == 42;
    let records = (0..n)
        .map(|i| {
            let key = if poison(i) {
                format!("poison-{i}")
            } else {
                format!("k{i}")
            };
            Record::new(topic.as_str())
                .with_key(key)
                .with_value(format!("v{i}"))
                .with_header("trace", Some(format!("t{i}")))
        })
        .collect();
    produce(&cluster, records).await;

    let dlt = DeadLetterPublisher::<KRec>::builder(cluster.clone())
        .group(group.clone())
        .build()
        .await
        .unwrap();
    let failed: Arc<Mutex<Failed>> = Arc::default();
    let f = failed.clone();
    let consumer = KConsumer::new(cluster.clone(), &group, &topic, 4);
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: KRec| {
            let f = f.clone();
            async move {
                if r.key().is_some_and(|k| k.starts_with(b"poison")) {
                    let key = String::from_utf8_lossy(r.key().unwrap()).into_owned();
                    f.lock()
                        .unwrap()
                        .entry((r.partition(), r.offset()))
                        .or_insert_with(|| (r.0.clone(), 0))
                        .1 += 1;
                    return Err(Box::new(Poison(key)) as HandlerError);
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(10), 3))
                .recoverer(dlt),
        )
        .poll_timeout(Duration::from_millis(100))
        .start()
        .unwrap();

    // Wait for everything to be committed: the topic is fresh, so the committed offsets add
    // up to the number of records.
    let letters = read_all(&cluster, &dlt_topic, 4, 100, Duration::from_secs(120)).await;
    let own = KConsumer::new(cluster.clone(), &group, &topic, 4);
    let tps: Vec<_> = (0..4)
        .map(|p| rekafka::consumer::TopicPartition::new(&topic, p))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let c = own.consumer.committed(&tps).await.unwrap();
        let sum: i64 = c.values().map(|o| o.as_ref().map_or(0, |o| o.offset)).sum();
        if sum == n as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not all committed: {sum} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = own.consumer.close().await;
    assert_eq!(handle.stop().await, StopReason::Normal);

    let failed = failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 100, "100 poison records failed");
    for (at, (_, attempts)) in &failed {
        assert_eq!(*attempts, 4, "{at:?}: 1 delivery + 3 retries");
    }
    assert_eq!(letters.len(), 100, "exactly 100 dead letters");
    for l in &letters {
        let info = DeadLetterInfo::from_headers(&l.headers.iter().collect::<Vec<_>>());
        assert_eq!(info.original_topic.as_deref(), Some(topic.as_str()));
        let at = (
            info.original_partition.unwrap(),
            info.original_offset.unwrap(),
        );
        let (orig, _) = failed
            .get(&at)
            .unwrap_or_else(|| panic!("no failed record at {at:?}"));
        // Same partition as the source (the DLT has as many partitions).
        assert_eq!(l.partition, orig.partition);
        assert_eq!(l.key, orig.key);
        assert_eq!(l.value, orig.value);
        assert_eq!(info.original_timestamp, Some(orig.timestamp));
        assert_eq!(info.original_timestamp_type.as_deref(), Some("CreateTime"));
        assert_eq!(
            info.original_consumer_group.as_deref(),
            Some(group.as_str())
        );
        assert_eq!(info.exception_fqcn.as_deref(), Some("Poison"));
        let key = String::from_utf8_lossy(orig.key.as_deref().unwrap()).into_owned();
        assert_eq!(
            info.exception_message,
            Some(format!("poison record with key {key}"))
        );
        // The original headers come first, unchanged.
        let orig_headers = header_pairs(orig);
        assert_eq!(&header_pairs(l)[..orig_headers.len()], &orig_headers[..]);
    }

    // librdkafka decodes every header with Spring's encodings.
    let out = Command::new("python3")
        .env("PYTHONPATH", format!("{ROOT}/.tools/py"))
        .args(["-c", DECODE_PY, &bootstrap(), &dlt_topic, "4", "100"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "librdkafka decode failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 100);
    for v in lines {
        let at = (
            v["partition"].as_i64().unwrap() as i32,
            v["offset"].as_i64().unwrap(),
        );
        let (orig, _) = failed
            .get(&at)
            .unwrap_or_else(|| panic!("no failed record at {at:?}"));
        assert_eq!(v["topic"], topic.as_str());
        assert_eq!(v["timestamp"].as_i64(), Some(orig.timestamp));
        assert_eq!(v["timestamp_type"], "CreateTime");
        assert_eq!(v["group"], group.as_str());
        assert_eq!(v["fqcn"], "Poison");
        assert_eq!(v["cause_fqcn"], "Poison");
        assert_eq!(v["key"].as_str().map(str::as_bytes), orig.key.as_deref());
        assert_eq!(
            v["value"].as_str().map(str::as_bytes),
            orig.value.as_deref()
        );
        assert_eq!(
            v["message"].as_str(),
            Some(format!("poison record with key {}", v["key"].as_str().unwrap()).as_str())
        );
        assert!(v["stacktrace"].as_str().unwrap().starts_with("Poison: "));
        assert_eq!(
            v["trace"].as_str().map(str::as_bytes),
            header(orig, "trace").as_deref()
        );
    }
    cluster.close().await;
}

async fn fetch_one(cluster: &Cluster, topic: &str, partitions: i32) -> ConsumerRecord {
    let mut recs = read_all(cluster, topic, partitions, 1, Duration::from_secs(30)).await;
    assert_eq!(recs.len(), 1);
    recs.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlt_with_fewer_partitions_falls_back_to_the_partitioner() {
    let topic = unique("dlt-fewer");
    create(&topic, 4).await;
    create(&format!("{topic}-dlt"), 1).await;
    let cluster = connect().await;
    produce(
        &cluster,
        vec![
            Record::new(topic.as_str())
                .with_partition(3)
                .with_key("k")
                .with_value("v"),
        ],
    )
    .await;
    let rec = KRec(fetch_one(&cluster, &topic, 4).await);
    assert_eq!(rec.partition(), 3);
    let dlt = DeadLetterPublisher::<KRec>::builder(cluster.clone())
        .build()
        .await
        .unwrap();
    let err: SharedError = Arc::new(Poison("k".into()));
    let meta = dlt.publish(&rec, &err).await.unwrap().unwrap();
    assert_eq!(&*meta.topic, format!("{topic}-dlt"));
    assert_eq!(meta.partition, 0, "the only partition of the DLT");
    let letter = fetch_one(&cluster, &format!("{topic}-dlt"), 1).await;
    let info = DeadLetterInfo::from_headers(&letter.headers.iter().collect::<Vec<_>>());
    assert_eq!(info.original_partition, Some(3));
    dlt.close().await;
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deserialization_failure_dead_letter_carries_the_raw_bytes() {
    let topic = unique("dlt-deser");
    create(&topic, 1).await;
    create(&format!("{topic}-dlt"), 1).await;
    let cluster = connect().await;
    let raw_value: &[u8] = &[0xff, 0xfe, 0x00, 0x80, b'x'];
    let raw_key: &[u8] = &[0x00, 0xc3, 0x28];
    produce(
        &cluster,
        vec![
            Record::new(topic.as_str())
                .with_key(raw_key.to_vec())
                .with_value(raw_value.to_vec())
                .with_header("h", Some(&b"1"[..])),
            Record::new(topic.as_str())
                .with_key("ok")
                .with_value("fine"),
        ],
    )
    .await;
    let group = unique("dlt-deser-g");
    let dlt = DeadLetterPublisher::<KRec>::builder(cluster.clone())
        .group(group.clone())
        .build()
        .await
        .unwrap();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let h = handled.clone();
    let consumer = KConsumer::new(cluster.clone(), &group, &topic, 1);
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: KRec| {
            let h = h.clone();
            async move {
                h.lock().unwrap().push(r.offset());
                Ok::<(), HandlerError>(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(10), 3))
                .recoverer(dlt),
        )
        .poll_timeout(Duration::from_millis(100))
        .start()
        .unwrap();
    let letter = fetch_one(&cluster, &format!("{topic}-dlt"), 1).await;
    // Wait for the good record too.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while handled.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(handle.stop().await, StopReason::Normal);
    assert_eq!(
        *handled.lock().unwrap(),
        vec![1],
        "the bad record never reaches the handler"
    );
    assert_eq!(letter.key.as_deref(), Some(raw_key));
    assert_eq!(letter.value.as_deref(), Some(raw_value));
    assert_eq!(header(&letter, "h"), Some(b"1".to_vec()));
    let info = DeadLetterInfo::from_headers(&letter.headers.iter().collect::<Vec<_>>());
    // The class is the error's type path (docs/spring-differences.md: Rust has no Java class
    // names; the type path is stable and never carries the message).
    assert_eq!(
        info.exception_fqcn.as_deref(),
        Some("rekafka::listener::DeserializationFailed")
    );
    assert!(
        std::any::type_name::<DeserializationFailed>().ends_with("::DeserializationFailed"),
        "the public path names the type"
    );
    assert!(!info.key_failure);
    assert_eq!(info.original_offset, Some(0));
    assert!(header(&letter, names::KEY_EXCEPTION_FQCN).is_none());
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publisher_with_the_consumer_adapter_exactly_hundred_dead_letters() {
    use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, OffsetReset, StartOffset};
    use rekafka::listener::ListenerConsumerRecord;

    let topic = unique("dlt-pipe");
    let dlt_topic = format!("{topic}-dlt");
    let group = unique("dlt-pipe-g");
    create(&topic, 4).await;
    create(&dlt_topic, 4).await;
    let cluster = connect().await;
    let n = 10_000usize;
    let records = (0..n)
        .map(|i| {
            let key = if i % 100 == 7 {
                format!("poison-{i}")
            } else {
                format!("k{i}")
            };
            Record::new(topic.as_str())
                .with_key(key)
                .with_value(format!("v{i}"))
        })
        .collect();
    produce(&cluster, records).await;

    let consumer = Consumer::new(
        cluster.clone(),
        ConsumerConfig::new()
            .with_group_id(&group)
            .with_auto_offset_reset(OffsetReset::Earliest)
            .with_auto_commit(AutoCommit::Disabled)
            .with_fetch_max_wait(Duration::from_millis(50)),
    )
    .unwrap();
    consumer
        .assign((0..4).map(|p| {
            (
                rekafka::consumer::TopicPartition::new(&topic, p),
                StartOffset::Committed,
            )
        }))
        .unwrap();
    let dlt = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
        .group(group.clone())
        .build()
        .await
        .unwrap();
    let failed: Arc<Mutex<FailedKeys>> = Arc::default();
    let f = failed.clone();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let f = f.clone();
            async move {
                let key = r.key_bytes().map(|k| k.to_vec()).unwrap_or_default();
                if key.starts_with(b"poison") {
                    f.lock()
                        .unwrap()
                        .insert((r.partition(), r.offset()), key.clone());
                    return Err(Box::new(Poison(String::from_utf8_lossy(&key).into_owned()))
                        as HandlerError);
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(10), 3))
                .recoverer(dlt),
        )
        .poll_timeout(Duration::from_millis(100))
        .start()
        .unwrap();

    let probe = KConsumer::new(cluster.clone(), &group, &topic, 4);
    let tps: Vec<_> = (0..4)
        .map(|p| rekafka::consumer::TopicPartition::new(&topic, p))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let c = probe.consumer.committed(&tps).await.unwrap();
        let sum: i64 = c.values().map(|o| o.as_ref().map_or(0, |o| o.offset)).sum();
        if sum == n as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "committed {sum} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = probe.consumer.close().await;
    assert_eq!(handle.stop().await, StopReason::Normal);

    let failed = failed.lock().unwrap().clone();
    assert_eq!(failed.len(), 100);
    let letters = read_all(&cluster, &dlt_topic, 4, 100, Duration::from_secs(60)).await;
    assert_eq!(letters.len(), 100, "exactly 100 dead letters");
    let mut seen = std::collections::HashSet::new();
    for l in &letters {
        let info = DeadLetterInfo::from_headers(&l.headers.iter().collect::<Vec<_>>());
        let at = (
            info.original_partition.unwrap(),
            info.original_offset.unwrap(),
        );
        let key = failed
            .get(&at)
            .unwrap_or_else(|| panic!("no failed record at {at:?}"));
        assert_eq!(l.key.as_deref(), Some(key.as_slice()));
        assert_eq!(
            info.original_consumer_group.as_deref(),
            Some(group.as_str())
        );
        assert!(seen.insert(at), "duplicate dead letter for {at:?}");
    }
    cluster.close().await;
}

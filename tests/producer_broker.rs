//! The producer against a real broker (Tansu), read back with librdkafka.
//!
//! Run with `scripts/with-broker.sh cargo test --test producer_broker`.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::{bootstrap, unique};
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::producer::{Acks, Idempotence, Producer, ProducerConfig, Record, murmur2_partition};
use rekafka::protocol::record::Compression;
use rekafka::protocol::unstable::StrBytes;
use rekafka::protocol::unstable::messages::create_topics_request::CreatableTopic;
use rekafka::protocol::unstable::messages::{CreateTopicsRequest, TopicName};

async fn cluster() -> Cluster {
    Cluster::connect(ClusterConfig::new([bootstrap()]))
        .await
        .expect("connect")
}

async fn create_topic(cluster: &Cluster, name: &str, partitions: i32) {
    let req = CreateTopicsRequest::default()
        .with_timeout_ms(10_000)
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.to_owned())))
                .with_num_partitions(partitions)
                .with_replication_factor(1),
        ]);
    let resp = cluster
        .any_connection()
        .await
        .expect("broker")
        .send(req)
        .await
        .expect("CreateTopics");
    for t in resp.topics {
        assert!(
            t.error_code == 0 || t.error_code == 36,
            "create {name}: {}",
            t.error_code
        );
    }
}

fn python(script: &str, args: &[&str], stdin: Option<&str>) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new("python3")
        .env("PYTHONPATH", root.join(".tools/py"))
        .arg(root.join("protocol-tests/interop").join(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.unwrap_or_default().to_owned();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(data.as_bytes());
    });
    let out = child.wait_with_output().expect("wait");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "{script} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

fn b64(s: &str) -> Vec<u8> {
    // Minimal base64 decoder for the interop JSON (standard alphabet, padded).
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| *c != b'=').collect();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_reports_offsets_and_headers_round_trip() {
    let cluster = cluster().await;
    let topic = unique("prod-basic");
    create_topic(&cluster, &topic, 1).await;
    let producer = Producer::new(cluster, ProducerConfig::default())
        .await
        .expect("producer");
    let mut futures = Vec::new();
    for i in 0..10 {
        let r = Record::new(topic.as_str())
            .with_key(format!("k{i}"))
            .with_value(format!("v{i}"))
            .with_header("dup", Some("a"))
            .with_header("dup", Some("b"))
            .with_header("null", None::<&[u8]>)
            .with_timestamp(1_700_000_000_000 + i);
        futures.push(producer.send(r).await.expect("enqueue"));
    }
    // A record without key, value or headers.
    futures.push(
        producer
            .send(Record::new(topic.as_str()))
            .await
            .expect("enqueue"),
    );
    let mut offsets = Vec::new();
    for (i, f) in futures.into_iter().enumerate() {
        let m = f.await.expect("delivered");
        assert_eq!(m.partition, 0);
        assert_eq!(&*m.topic, topic.as_str());
        if i < 10 {
            assert_eq!(m.timestamp, 1_700_000_000_000 + i as i64);
        }
        offsets.push(m.offset);
    }
    assert_eq!(offsets, (0..11).collect::<Vec<i64>>());
    let m = producer.metrics();
    assert_eq!(m.record_send_total, 11);
    assert_eq!(m.record_error_total, 0);
    producer.close().await;
    let out = python("consume.py", &[&bootstrap(), &topic, "0", "11"], None);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 11);
    for (i, line) in lines.iter().take(10).enumerate() {
        assert!(line.contains(&format!("\"offset\": {i}")), "{line}");
        assert!(
            line.contains(&format!("\"timestamp\": {}", 1_700_000_000_000 + i as i64)),
            "{line}"
        );
        let key_field = line
            .split("\"key\": \"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("key");
        assert_eq!(b64(key_field), format!("k{i}").into_bytes());
        let value_field = line
            .split("\"value\": \"")
            .nth(1)
            .and_then(|s| s.split('"').next())
            .expect("value");
        assert_eq!(b64(value_field), format!("v{i}").into_bytes());
        // Duplicate keys in order, and a null value.
        let headers = line.split("\"headers\": ").nth(1).expect("headers");
        let compact: String = headers.chars().filter(|c| !c.is_whitespace()).collect();
        assert!(
            compact.starts_with(&format!(
                "[[\"dup\",\"{}\"],[\"dup\",\"{}\"],[\"null\",null]]",
                "YQ==", "Yg=="
            )),
            "{headers}"
        );
    }
    assert!(
        lines[10].contains("\"key\": null") && lines[10].contains("\"value\": null"),
        "{}",
        lines[10]
    );
}

/// 100k keyed records, idempotent, per codec: librdkafka reads back exactly 100k, in send order
/// per partition, each key in the partition librdkafka's murmur2 partitioner picks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_100k_per_codec_read_back_by_librdkafka() {
    const N: usize = 100_000;
    const PARTITIONS: i32 = 3;
    let cluster = cluster().await;
    let keys: Vec<String> = (0..N)
        .map(|i| format!("key-{i}-{}", i * 7919 % 1013))
        .collect();
    // The oracle: librdkafka's own partitioner, on a topic with the same partition count.
    let oracle_topic = unique("prod-oracle");
    create_topic(&cluster, &oracle_topic, PARTITIONS).await;
    let oracle_in: String = keys.iter().take(5000).map(|k| format!("{k}\n")).collect();
    let oracle = python(
        "partitions.py",
        &[&bootstrap(), &oracle_topic],
        Some(&oracle_in),
    );
    let mut checked = 0;
    for line in oracle.lines() {
        let (k, p) = line.split_once('\t').expect("KEY\tPARTITION");
        let p: u32 = p.parse().expect("partition");
        assert_eq!(
            murmur2_partition(k.as_bytes(), PARTITIONS as u32),
            p,
            "key {k}"
        );
        checked += 1;
    }
    assert_eq!(checked, 5000);

    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let topic: Arc<str> = unique(&format!("prod-100k-{codec}")).into();
        create_topic(&cluster, &topic, PARTITIONS).await;
        let producer = Producer::new(
            cluster.clone(),
            ProducerConfig::default()
                .with_compression(codec)
                .with_batch_size(64 * 1024),
        )
        .await
        .expect("producer");
        let mut futures = Vec::with_capacity(N);
        for (i, k) in keys.iter().enumerate() {
            let r = Record::new(topic.clone())
                .with_key(k.clone())
                .with_value(format!("{i}"));
            futures.push(producer.send(r).await.expect("enqueue"));
        }
        producer.flush().await;
        let mut delivered: HashMap<i32, Vec<(i64, usize)>> = HashMap::new();
        for (i, f) in futures.into_iter().enumerate() {
            let m = f
                .await
                .unwrap_or_else(|e| panic!("{codec}: record {i}: {e}"));
            delivered
                .entry(m.partition)
                .or_default()
                .push((m.offset, i));
        }
        producer.close().await;
        // Delivery reports: offsets 0.. contiguous per partition, in send order.
        for (p, recs) in &delivered {
            for (n, (offset, _)) in recs.iter().enumerate() {
                assert_eq!(*offset, n as i64, "{codec}: partition {p}");
            }
        }
        let out = python(
            "consume_all.py",
            &[
                &bootstrap(),
                &topic,
                &PARTITIONS.to_string(),
                &N.to_string(),
                "--idle",
                "0.5",
            ],
            None,
        );
        let mut seen = vec![false; N];
        let mut last: HashMap<i32, i64> = HashMap::new();
        let mut count = 0;
        for line in out.lines() {
            let mut f = line.split('\t');
            let p: i32 = f.next().and_then(|s| s.parse().ok()).expect("partition");
            let offset: i64 = f.next().and_then(|s| s.parse().ok()).expect("offset");
            let key = f.next().expect("key");
            let i: usize = f.next().and_then(|s| s.parse().ok()).expect("value");
            assert!(i < N, "{codec}: value {i}");
            assert!(!seen[i], "{codec}: record {i} read twice");
            seen[i] = true;
            assert_eq!(key, keys[i], "{codec}: key of record {i}");
            assert_eq!(
                murmur2_partition(key.as_bytes(), PARTITIONS as u32) as i32,
                p,
                "{codec}: key {key} in the wrong partition"
            );
            // Per-partition send order: values (send index) increase with the offset.
            let prev = last.insert(p, i as i64);
            assert!(
                prev.is_none_or(|prev| prev < i as i64),
                "{codec}: partition {p} reordered at offset {offset}"
            );
            count += 1;
        }
        assert_eq!(count, N, "{codec}: exactly {N} records");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_stick_and_acks_variants_deliver() {
    let cluster = cluster().await;
    let topic: Arc<str> = unique("prod-sticky").into();
    create_topic(&cluster, &topic, 4).await;
    for (acks, idem) in [
        (Acks::All, Idempotence::Enabled),
        (Acks::Leader, Idempotence::Disabled),
        (Acks::None, Idempotence::Disabled),
    ] {
        let producer = Producer::new(
            cluster.clone(),
            ProducerConfig::default()
                .with_acks(acks)
                .with_idempotence(idem)
                .with_linger(Duration::from_millis(50))
                .with_batch_size(1024),
        )
        .await
        .expect("producer");
        let mut futures = Vec::new();
        for i in 0..200 {
            let r = Record::new(topic.clone()).with_value(format!("{i:0100}"));
            futures.push(producer.send(r).await.expect("enqueue"));
        }
        let mut partitions = Vec::new();
        for f in futures {
            let m = f.await.expect("delivered");
            if acks == Acks::None {
                assert_eq!(m.offset, -1);
            } else {
                assert!(m.offset >= 0);
            }
            partitions.push(m.partition);
        }
        // Sticky: runs of the same partition (a batch holds ~9 of these records), and more
        // than one partition used over 200 records.
        let switches = partitions.windows(2).filter(|w| w[0] != w[1]).count();
        assert!(
            (5..60).contains(&switches),
            "{acks:?}: {switches} switches: {partitions:?}"
        );
        producer.close().await;
    }
}

//! `rekafka dlt inspect` and `rekafka dlt replay` end to end: inspect decodes the provenance
//! and round-trips every header; a replay interrupted halfway (`--max`) and restarted
//! republishes each dead letter exactly once, to its original topic and partition, without the
//! exception headers; `--where` filters.
//!
//! Against the broker in `REKAFKA_BOOTSTRAP` (`scripts/with-broker.sh cargo test -p
//! rekafka-cli --test dlt_cli`), else against an in-process mock cluster.

use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Output};
use std::time::Duration;

use rekafka::Client;
use rekafka::admin::NewTopic;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, ConsumerRecord, StartOffset};
use rekafka::listener::dead_letter::names;
use rekafka::listener::{DeadLetterHeaders, Provenance};
use rekafka::producer::{Producer, ProducerConfig, Record};
use rekafka::protocol::record::{Header, TimestampType};
use serde_json::Value;

#[derive(Debug)]
struct ErrA;
impl std::fmt::Display for ErrA {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a failed")
    }
}
impl std::error::Error for ErrA {}

#[derive(Debug)]
struct ErrB;
impl std::fmt::Display for ErrB {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("b failed")
    }
}
impl std::error::Error for ErrB {}

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{t}", std::process::id())
}

fn rekafka(bootstrap: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rekafka"))
        .args(args)
        .env("REKAFKA_BOOTSTRAP", bootstrap)
        .output()
        .unwrap_or_else(|e| panic!("running rekafka: {e}"))
}

fn ok(bootstrap: &str, args: &[&str]) -> String {
    let o = rekafka(bootstrap, args);
    assert!(
        o.status.success(),
        "rekafka {args:?} failed ({:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn create(bootstrap: &str, name: &str, partitions: i32) {
    let client = Client::builder()
        .property("bootstrap.servers", bootstrap)
        .build()
        .await
        .unwrap();
    for r in client
        .admin()
        .create_topics(&[NewTopic::new(name, partitions)])
        .await
        .unwrap()
    {
        r.unwrap();
    }
    client.close().await;
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
        .assign((0..partitions).map(|p| {
            (
                rekafka::consumer::TopicPartition::new(topic, p),
                StartOffset::Beginning,
            )
        }))
        .unwrap();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.len() < expected && tokio::time::Instant::now() < deadline {
        out.extend(
            consumer
                .poll(Duration::from_millis(200))
                .await
                .unwrap()
                .iter()
                .cloned(),
        );
    }
    // Anything beyond `expected` (a duplicate) shows up here.
    let linger = tokio::time::Instant::now() + Duration::from_millis(700);
    while tokio::time::Instant::now() < linger {
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

/// The JSON header array of `rekafka consume`/`dlt inspect` back to (name, bytes).
fn json_headers(v: &Value) -> Vec<(String, Option<Vec<u8>>)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            let name = pair[0].as_str().unwrap().to_owned();
            let value = match &pair[1] {
                Value::Null => None,
                Value::String(s) => Some(s.as_bytes().to_vec()),
                Value::Object(o) => Some(b64_decode(o["b64"].as_str().unwrap())),
                other => panic!("unexpected header value {other}"),
            };
            (name, value)
        })
        .collect()
}

fn b64_decode(s: &str) -> Vec<u8> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = T.iter().position(|&t| t == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn pairs(hs: &[Header]) -> Vec<(String, Option<Vec<u8>>)> {
    hs.iter()
        .map(|h| (h.key().to_owned(), h.value().map(<[u8]>::to_vec)))
        .collect()
}

#[test]
fn inspect_and_interrupted_replay_exactly_once() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let _mock;
    let bootstrap = match std::env::var("REKAFKA_BOOTSTRAP") {
        Ok(b) if !b.is_empty() => b.split(',').next().unwrap().to_owned(),
        _ => {
            let m = rekafka::mock::MockCluster::start().await.unwrap();
            let b = m.bootstrap();
            _mock = m;
            b
        }
    };
    let source = unique("dltcli-src");
    let dlt = format!("{source}-dlt");
    let other = unique("dltcli-other");
    create(&bootstrap, &source, 2).await;
    create(&bootstrap, &dlt, 2).await;
    create(&bootstrap, &other, 1).await;
    let cluster = Cluster::connect(ClusterConfig::new([bootstrap.clone()]))
        .await
        .unwrap();

    // 20 dead letters as the publisher writes them: original partition i % 2, offset i,
    // ErrA for even i, ErrB for odd i; a binary original header on some.
    let n: usize = 20;
    let mut expected: BTreeMap<String, Vec<Header>> = BTreeMap::new();
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .unwrap();
    for i in 0..n as u32 {
        let prov = Provenance {
            topic: source.clone(),
            partition: (i % 2) as i32,
            offset: i as i64,
            timestamp: 1_700_000_000_000 + i as i64,
            timestamp_type: TimestampType::CreateTime,
            group: Some("app".into()),
        };
        let mut original = vec![Header::new("trace", Some(format!("t{i}")))];
        if i.is_multiple_of(3) {
            original.push(Header::new("bin", Some(vec![0xffu8, 0x00, i as u8])));
        }
        let headers = if i.is_multiple_of(2) {
            DeadLetterHeaders::default().build(&original, &prov, &ErrA, None)
        } else {
            DeadLetterHeaders::default().build(&original, &prov, &ErrB, None)
        };
        let mut r = Record::new(dlt.as_str())
            .with_partition((i % 2) as i32)
            .with_key(format!("k{i}"))
            .with_value(format!("v{i}"));
        r.headers = headers.clone();
        producer.send_and_wait(r).await.unwrap();
        expected.insert(format!("k{i}"), headers);
    }
    producer.close().await;

    // inspect: provenance decoded, headers round-trip.
    let out = ok(&bootstrap, &["dlt", "inspect", "-t", &dlt, "-e"]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), n);
    for v in &lines {
        let key = v["key"].as_str().unwrap();
        let i: usize = key[1..].parse().unwrap();
        assert_eq!(json_headers(&v["headers"]), pairs(&expected[key]));
        let d = &v["dead_letter"];
        assert_eq!(d["original_topic"], source.as_str());
        assert_eq!(d["original_partition"].as_i64(), Some((i % 2) as i64));
        assert_eq!(d["original_offset"].as_i64(), Some(i as i64));
        assert_eq!(
            d["original_timestamp"].as_i64(),
            Some(1_700_000_000_000 + i as i64)
        );
        assert_eq!(d["original_timestamp_type"], "CreateTime");
        assert_eq!(d["group"], "app");
        let (ty, msg) = if i.is_multiple_of(2) {
            ("ErrA", "a failed")
        } else {
            ("ErrB", "b failed")
        };
        assert_eq!(d["error_type"], ty);
        assert_eq!(d["error_message"], msg);
        assert_eq!(v["topic"], dlt.as_str());
    }

    // Replay, interrupted after 7 records (batches of 3), then resumed.
    let first = ok(
        &bootstrap,
        &["dlt", "replay", "-t", &dlt, "--max", "7", "--batch", "3"],
    );
    assert_eq!(first.lines().count(), 7, "{first}");
    let second = ok(&bootstrap, &["dlt", "replay", "-t", &dlt, "--batch", "3"]);
    assert_eq!(second.lines().count(), n - 7, "{second}");
    // A third run finds nothing left.
    let third = ok(&bootstrap, &["dlt", "replay", "-t", &dlt]);
    assert_eq!(third.lines().count(), 0, "{third}");

    let replayed = read_all(&cluster, &source, 2, n).await;
    assert_eq!(
        replayed.len(),
        n,
        "each dead letter republished exactly once"
    );
    let keys: HashSet<String> = replayed
        .iter()
        .map(|r| String::from_utf8_lossy(r.key.as_deref().unwrap()).into_owned())
        .collect();
    assert_eq!(keys.len(), n);
    for r in &replayed {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap()).into_owned();
        let i: usize = key[1..].parse().unwrap();
        assert_eq!(
            r.partition,
            (i % 2) as i32,
            "back to the original partition"
        );
        assert_eq!(r.value.as_deref(), Some(format!("v{i}").as_bytes()));
        let hs: Vec<Header> = r.headers.iter().collect();
        let kept: Vec<_> = pairs(&expected[&key])
            .into_iter()
            .filter(|(name, _)| !names::EXCEPTION_HEADERS.contains(&name.as_str()))
            .collect();
        assert_eq!(pairs(&hs), kept);
        assert_eq!(
            pairs(&hs)[0],
            ("trace".into(), Some(format!("t{i}").into_bytes()))
        );
    }

    // --where with --to and another group: only ErrB's, all of them, once.
    let out = ok(
        &bootstrap,
        &[
            "dlt",
            "replay",
            "-t",
            &dlt,
            "--to",
            &other,
            "--where",
            "error-type=ErrB",
            "-g",
            &unique("g"),
            "--strip-provenance",
        ],
    );
    assert_eq!(out.lines().count(), n / 2);
    let got = read_all(&cluster, &other, 1, n / 2).await;
    assert_eq!(got.len(), n / 2);
    for r in &got {
        let key = String::from_utf8_lossy(r.key.as_deref().unwrap()).into_owned();
        let i: usize = key[1..].parse().unwrap();
        assert_eq!(i % 2, 1);
        assert!(r.headers.iter().all(|h| !h.key().starts_with("kafka_dlt-")));
    }
    let bad = rekafka(
        &bootstrap,
        &["dlt", "replay", "-t", &dlt, "--where", "colour=red"],
    );
    assert_eq!(bad.status.code(), Some(2));
    cluster.close().await;
}

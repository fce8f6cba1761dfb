//! Interoperability with the Java client (`kafka-clients` of the broker's release) on a real
//! Kafka cluster, both directions: every codec with keys, headers (duplicate keys, null values)
//! and 1 MiB values; idempotent produce; committed and aborted transactions read with
//! read_committed and read_uncommitted; one classic consumer group with a Java member and a
//! rekafka member (range and cooperative-sticky) while members join and leave.
//!
//! The Java side is `protocol-tests/java-interop` (build it with
//! `protocol-tests/java-interop/build.sh`). These tests need `REKAFKA_BOOTSTRAP` (a Kafka
//! cluster; three nodes in CI), `java` and the built jar; without them they fail, never skip.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::unique;
use rekafka::admin::{NewTopic, OffsetSpec};
use rekafka::consumer::{
    AutoCommit, BoxFuture, Consumer, ConsumerConfig, GroupProtocol, IsolationLevel,
    OffsetAndMetadata, OffsetReset, RebalanceListener, StartOffset, TopicPartition,
};
use rekafka::group::{Assignor, CooperativeStickyAssignor, RangeAssignor};
use rekafka::producer::{Idempotence, ProducerConfig, Record};
use rekafka::protocol::record::Compression;
use rekafka::transaction::TransactionalProducer;
use rekafka::{Client, ErrorKind, KafkaCode};
use serde_json::{Value, json};

const CODECS: [(Compression, &str); 5] = [
    (Compression::None, "none"),
    (Compression::Gzip, "gzip"),
    (Compression::Snappy, "snappy"),
    (Compression::Lz4, "lz4"),
    (Compression::Zstd, "zstd"),
];

/// Topics allow 8 MiB batches, so 1 MiB values fit with room (the broker default is ~1 MiB).
const MAX_BYTES: usize = 8 << 20;
const PARTITIONS: i32 = 3;

// ---------------------------------------------------------------------------------------------
// Environment

/// Every bootstrap address of the cluster (the Java client gets the whole list).
fn bootstrap_all() -> String {
    match std::env::var("REKAFKA_BOOTSTRAP") {
        Ok(s) if !s.is_empty() => s,
        _ => panic!(
            "REKAFKA_BOOTSTRAP is not set: the Java interop tests need a Kafka cluster \
             (`source /work/kafka-shared/env` or `scripts/kafka.sh start`), `java`, and the \
             harness built by `protocol-tests/java-interop/build.sh`."
        ),
    }
}

fn harness_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/java-interop/target")
}

/// `java -cp <harness> rekafka.interop.Interop SUBCOMMAND --bootstrap … ARGS`.
fn java(sub: &str, args: &[(&str, &str)]) -> Command {
    let dir = harness_dir();
    let jar = dir.join("java-interop.jar");
    assert!(
        jar.is_file() && dir.join("lib").is_dir(),
        "{} is missing: run `protocol-tests/java-interop/build.sh` first (needs Maven and Java 17)",
        jar.display()
    );
    let mut c = Command::new("java");
    c.arg("-cp")
        .arg(format!("{}:{}/lib/*", jar.display(), dir.display()))
        .arg("rekafka.interop.Interop")
        .arg(sub)
        .args(["--bootstrap", &bootstrap_all()]);
    for (k, v) in args {
        c.arg(format!("--{k}")).arg(v);
    }
    c
}

/// Runs a Java subcommand to completion with `input` on stdin; returns its JSON lines.
fn run_java(sub: &str, args: &[(&str, &str)], input: &str) -> Vec<Value> {
    let mut child = java(sub, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `java` (is a JDK 17+ installed?): {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_string();
    let writer = std::thread::spawn(move || {
        stdin.write_all(input.as_bytes()).unwrap();
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "java {sub} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

async fn client() -> Client {
    Client::builder()
        .bootstrap_servers(bootstrap_all().split(','))
        .build()
        .await
        .expect("connect to the cluster")
}

/// Creates `name` with replication factor 3 and room for 1 MiB values. Retries while the
/// cluster has fewer than three brokers registered (the shared cluster is also used by fault
/// tests that stop a broker for a while).
async fn create_topic(client: &Client, name: &str, partitions: i32) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let created = client
            .admin()
            .create_topics(&[NewTopic::new(name, partitions)
                .with_replication_factor(3)
                .with_config("max.message.bytes", MAX_BYTES.to_string())])
            .await
            .expect("create topics");
        match created.into_iter().next().expect("one result") {
            Ok(_) => return,
            // The name is unique to this test: it exists because an earlier attempt of this
            // call (retried inside the admin client after a lost answer) created it.
            Err(e) if e.kind() == &ErrorKind::Broker(KafkaCode::TopicAlreadyExists) => return,
            Err(e)
                if e.kind() == &ErrorKind::Broker(KafkaCode::InvalidReplicationFactor)
                    && Instant::now() < deadline =>
            {
                eprintln!("{name}: {e}; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => panic!("creating {name}: {e}"),
        }
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Records

/// One record with where it was written (or is to be written).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

fn b64(v: &Option<Vec<u8>>) -> Value {
    v.as_ref()
        .map(|b| Value::String(base64::engine::general_purpose::STANDARD.encode(b)))
        .unwrap_or(Value::Null)
}

fn unb64(v: &Value) -> Option<Vec<u8>> {
    v.as_str().map(|s| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .expect("base64")
    })
}

impl Rec {
    fn to_json(&self) -> String {
        let headers: Vec<Value> = self
            .headers
            .iter()
            .map(|(k, v)| json!([k, b64(v)]))
            .collect();
        json!({"partition": self.partition, "key": b64(&self.key), "value": b64(&self.value),
               "headers": headers})
        .to_string()
            + "\n"
    }

    fn from_json(v: &Value) -> Rec {
        Rec {
            partition: v["partition"].as_i64().expect("partition") as i32,
            offset: v["offset"].as_i64().expect("offset"),
            key: unb64(&v["key"]),
            value: unb64(&v["value"]),
            headers: v["headers"]
                .as_array()
                .expect("headers")
                .iter()
                .map(|h| (h[0].as_str().expect("header key").to_string(), unb64(&h[1])))
                .collect(),
        }
    }

    fn to_record(&self, topic: &str) -> Record {
        let mut r = Record::new(topic).with_partition(self.partition);
        if let Some(k) = &self.key {
            r = r.with_key(k.clone());
        }
        if let Some(v) = &self.value {
            r = r.with_value(v.clone());
        }
        for (k, v) in &self.headers {
            r = r.with_header(k.clone(), v.clone());
        }
        r
    }

    fn from_consumer(r: &rekafka::consumer::ConsumerRecord) -> Rec {
        Rec {
            partition: r.partition,
            offset: r.offset,
            key: r.key.as_ref().map(|b| b.to_vec()),
            value: r.value.as_ref().map(|b| b.to_vec()),
            headers: r
                .headers
                .iter()
                .map(|h| (h.key().to_string(), h.value().map(|v| v.to_vec())))
                .collect(),
        }
    }
}

/// Pseudo-random bytes (so compression has real work), seeded.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            // Half noise, half text: compressible but not trivially.
            if i % 2 == 0 {
                (x >> 56) as u8
            } else {
                b'a' + (i % 26) as u8
            }
        })
        .collect()
}

/// `n` records over the partitions: keys (some null), values (some null, two of 1 MiB), headers
/// with duplicate keys, null values, empty values, in a fixed order.
fn sample(tag: &str, n: usize, partitions: i32) -> Vec<Rec> {
    (0..n)
        .map(|i| {
            let key = (i % 7 != 3).then(|| format!("{tag}-key-{i}").into_bytes());
            let value = match i {
                _ if i == 2 || i == n / 2 + 1 => Some(noise(i as u64, 1 << 20)),
                _ if i % 9 == 4 => None,
                _ => Some(format!("{tag}-value-{i}-{}", "x".repeat(i % 50)).into_bytes()),
            };
            let headers = match i % 4 {
                0 => vec![],
                1 => vec![("h".to_string(), Some(format!("one-{i}").into_bytes()))],
                2 => vec![
                    ("dup".to_string(), Some(b"first".to_vec())),
                    ("null".to_string(), None),
                    ("dup".to_string(), Some(b"second".to_vec())),
                    ("empty".to_string(), Some(vec![])),
                    ("dup".to_string(), None),
                ],
                _ => vec![
                    ("trace-id".to_string(), Some(noise(i as u64, 16))),
                    ("null".to_string(), None),
                ],
            };
            Rec {
                partition: i as i32 % partitions,
                offset: -1,
                key,
                value,
                headers,
            }
        })
        .collect()
}

fn jsonl(recs: &[Rec]) -> String {
    recs.iter().map(Rec::to_json).collect()
}

/// Pairs records with the (partition, offset) the producer reported for each.
fn placed(recs: &[Rec], meta: &[(i32, i64)]) -> Vec<Rec> {
    assert_eq!(recs.len(), meta.len(), "one metadata per record");
    recs.iter()
        .zip(meta)
        .map(|(r, (p, o))| {
            assert_eq!(r.partition, *p, "written to the partition asked for");
            assert!(*o >= 0, "offset known: {o}");
            Rec {
                offset: *o,
                ..r.clone()
            }
        })
        .collect()
}

fn java_meta(lines: &[Value]) -> Vec<(i32, i64)> {
    lines
        .iter()
        .filter(|l| l.get("offset").is_some())
        .map(|l| {
            (
                l["partition"].as_i64().unwrap() as i32,
                l["offset"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// Asserts `got` is exactly `want` (order-insensitive across partitions, but each partition's
/// records must come in offset order), describing the first difference.
fn assert_same(what: &str, got: &[Rec], want: &[Rec]) {
    let mut per_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in got {
        per_partition.entry(r.partition).or_default().push(r.offset);
    }
    for (p, offs) in &per_partition {
        assert!(
            offs.windows(2).all(|w| w[0] < w[1]),
            "{what}: partition {p} read out of order: {offs:?}"
        );
    }
    let mut g = got.to_vec();
    let mut w = want.to_vec();
    g.sort();
    w.sort();
    let gk: Vec<(i32, i64)> = g.iter().map(|r| (r.partition, r.offset)).collect();
    let wk: Vec<(i32, i64)> = w.iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(
        gk, wk,
        "{what}: the (partition, offset)s read differ from those written"
    );
    for (a, b) in g.iter().zip(&w) {
        assert!(
            a == b,
            "{what}: record {}@{} differs: key {:?} vs {:?}, value len {:?} vs {:?}, headers {:?} vs {:?}",
            a.partition,
            a.offset,
            a.key,
            b.key,
            a.value.as_ref().map(Vec::len),
            b.value.as_ref().map(Vec::len),
            a.headers,
            b.headers
        );
    }
}

// ---------------------------------------------------------------------------------------------
// rekafka's side

fn producer_config(codec: Compression, idempotent: bool) -> ProducerConfig {
    ProducerConfig::default()
        .with_compression(codec)
        .with_idempotence(if idempotent {
            Idempotence::Enabled
        } else {
            Idempotence::Disabled
        })
        .with_max_request_size(MAX_BYTES)
        .with_linger(Duration::from_millis(5))
}

/// Produces `recs` (each to its partition) and returns where each landed, in order.
async fn rk_produce(
    client: &Client,
    topic: &str,
    codec: Compression,
    idempotent: bool,
    recs: &[Rec],
) -> Vec<Rec> {
    let p = client
        .producer(producer_config(codec, idempotent))
        .await
        .expect("producer");
    let mut futures = Vec::new();
    for r in recs {
        futures.push(p.send(r.to_record(topic)).await.expect("send"));
    }
    let mut meta = Vec::new();
    for f in futures {
        let m = f.await.expect("delivered");
        meta.push((m.partition, m.offset));
    }
    p.close().await;
    placed(recs, &meta)
}

/// Reads every partition of `topic` from the beginning with rekafka (assign mode) until at
/// least `want` records came and every position reached the end offset (the last stable offset
/// with read_committed) looked up after that; returns everything read.
async fn rk_read_all(
    client: &Client,
    topic: &str,
    partitions: i32,
    isolation: IsolationLevel,
    want: usize,
) -> Vec<Rec> {
    let mut config = client.consumer_config().unwrap();
    config.auto_commit = AutoCommit::Disabled;
    config.auto_offset_reset = OffsetReset::Earliest;
    config.isolation_level = isolation;
    config.max_partition_fetch_bytes = MAX_BYTES as i32;
    config.fetch_max_bytes = 4 * MAX_BYTES as i32;
    config.fetch_max_wait = Duration::from_millis(100);
    let c = client.consumer(config).unwrap();
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    c.assign(tps.iter().map(|tp| (tp.clone(), StartOffset::Beginning)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    let mut ends: Option<HashMap<TopicPartition, i64>> = None;
    loop {
        assert!(
            Instant::now() < deadline,
            "{topic}: read {} of {want} records in 60 s (ends {ends:?})",
            out.len()
        );
        let recs = c.poll(Duration::from_millis(200)).await.expect("poll");
        assert!(recs.errors().is_empty(), "{:?}", recs.errors());
        out.extend(recs.iter().map(Rec::from_consumer));
        if out.len() < want {
            continue;
        }
        if ends.is_none() {
            let mut m = HashMap::new();
            for tp in &tps {
                // The high watermark (the last stable offset with read_committed).
                m.insert(tp.clone(), c.fetch_watermarks(tp).await.unwrap().1);
            }
            ends = Some(m);
        }
        let mut done = true;
        for (tp, end) in ends.as_ref().unwrap() {
            done &= c.position(tp).await.unwrap() >= *end;
        }
        if done {
            break;
        }
    }
    c.close().await.unwrap();
    out
}

fn java_read_all(topic: &str, isolation: &str, want: usize) -> Vec<Rec> {
    let lines = run_java(
        "consume",
        &[
            ("topic", topic),
            ("isolation", isolation),
            ("count", &want.to_string()),
            ("timeout-ms", "60000"),
        ],
        "",
    );
    assert!(
        lines.last().and_then(|l| l.get("end_offsets")).is_some(),
        "the Java consumer reached the end offsets"
    );
    lines
        .iter()
        .filter(|l| l.get("offset").is_some())
        .map(Rec::from_json)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Codecs, headers, large values, idempotence

async fn rekafka_to_java(codec: Compression, name: &str, idempotent: bool, n: usize) {
    let client = client().await;
    let topic = unique(&format!("jint-rk-{name}"));
    create_topic(&client, &topic, PARTITIONS).await;
    let written = rk_produce(
        &client,
        &topic,
        codec,
        idempotent,
        &sample(name, n, PARTITIONS),
    )
    .await;
    let got = java_read_all(&topic, "read_uncommitted", written.len());
    assert_same(&format!("rekafka {name} → Java"), &got, &written);
}

async fn java_to_rekafka(name: &str, idempotent: bool, n: usize) {
    let client = client().await;
    let topic = unique(&format!("jint-java-{name}"));
    create_topic(&client, &topic, PARTITIONS).await;
    let recs = sample(name, n, PARTITIONS);
    let idem = idempotent.to_string();
    let lines = run_java(
        "produce",
        &[("topic", &topic), ("codec", name), ("idempotent", &idem)],
        &jsonl(&recs),
    );
    let written = placed(&recs, &java_meta(&lines));
    let got = rk_read_all(
        &client,
        &topic,
        PARTITIONS,
        IsolationLevel::ReadUncommitted,
        written.len(),
    )
    .await;
    assert_same(&format!("Java {name} → rekafka"), &got, &written);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekafka_to_java_every_codec() {
    for (codec, name) in CODECS {
        rekafka_to_java(codec, name, false, 30).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_to_rekafka_every_codec() {
    for (_, name) in CODECS {
        java_to_rekafka(name, false, 30).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekafka_idempotent_to_java() {
    for (codec, name) in [(Compression::Lz4, "lz4"), (Compression::None, "none")] {
        rekafka_to_java(codec, name, true, 600).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_idempotent_to_rekafka() {
    for name in ["zstd", "none"] {
        java_to_rekafka(name, true, 600).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Transactions

/// Three transactions: committed, aborted, committed.
fn txn_batches(tag: &str) -> [(Vec<Rec>, bool); 3] {
    [
        (sample(&format!("{tag}-c1"), 12, PARTITIONS), true),
        (sample(&format!("{tag}-a"), 9, PARTITIONS), false),
        (sample(&format!("{tag}-c2"), 7, PARTITIONS), true),
    ]
}

fn committed_and_all(batches: &[(Vec<Rec>, bool)]) -> (Vec<Rec>, Vec<Rec>) {
    let all: Vec<Rec> = batches.iter().flat_map(|(r, _)| r.clone()).collect();
    let committed = batches
        .iter()
        .filter(|(_, c)| *c)
        .flat_map(|(r, _)| r.clone())
        .collect();
    (committed, all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rekafka_transactions_read_by_java() {
    let client = client().await;
    let topic = unique("jint-rk-txn");
    create_topic(&client, &topic, PARTITIONS).await;
    let config = producer_config(Compression::Zstd, true).with_transactional_id(unique("jint-tx"));
    let p = TransactionalProducer::new(client.cluster().clone(), config).unwrap();
    p.init_transactions().await.unwrap();
    let mut batches = txn_batches("rk");
    for (recs, commit) in batches.iter_mut() {
        p.begin_transaction().unwrap();
        let mut futures = Vec::new();
        for r in recs.iter() {
            futures.push(p.send(r.to_record(&topic)).await.expect("send"));
        }
        let mut meta = Vec::new();
        for f in futures {
            let m = f.await.expect("delivered");
            meta.push((m.partition, m.offset));
        }
        *recs = placed(recs, &meta);
        if *commit {
            p.commit_transaction().await.unwrap();
        } else {
            p.abort_transaction().await.unwrap();
        }
    }
    let (committed, all) = committed_and_all(&batches);
    let got = java_read_all(&topic, "read_committed", committed.len());
    assert_same(
        "Java read_committed of rekafka's transactions",
        &got,
        &committed,
    );
    let got = java_read_all(&topic, "read_uncommitted", all.len());
    assert_same(
        "Java read_uncommitted of rekafka's transactions",
        &got,
        &all,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_transactions_read_by_rekafka() {
    let client = client().await;
    let topic = unique("jint-java-txn");
    create_topic(&client, &topic, PARTITIONS).await;
    let mut batches = txn_batches("java");
    let mut input = String::new();
    for (recs, commit) in &batches {
        input += &jsonl(recs);
        input += &format!(
            "{}\n",
            json!({"end": if *commit { "commit" } else { "abort" }})
        );
    }
    let txn = unique("jint-jtx");
    let lines = run_java(
        "txn-produce",
        &[("topic", &topic), ("codec", "snappy"), ("txn-id", &txn)],
        &input,
    );
    // Split the metadata lines at the `ended` lines, one group per transaction.
    let mut groups: Vec<Vec<Value>> = vec![vec![]];
    for l in lines {
        if l.get("ended").is_some() {
            groups.push(vec![]);
        } else {
            groups.last_mut().unwrap().push(l);
        }
    }
    for ((recs, _), meta) in batches.iter_mut().zip(&groups) {
        *recs = placed(recs, &java_meta(meta));
    }
    let (committed, all) = committed_and_all(&batches);
    let got = rk_read_all(
        &client,
        &topic,
        PARTITIONS,
        IsolationLevel::ReadCommitted,
        committed.len(),
    )
    .await;
    assert_same(
        "rekafka read_committed of Java's transactions",
        &got,
        &committed,
    );
    let got = rk_read_all(
        &client,
        &topic,
        PARTITIONS,
        IsolationLevel::ReadUncommitted,
        all.len(),
    )
    .await;
    assert_same(
        "rekafka read_uncommitted of Java's transactions",
        &got,
        &all,
    );
}

// ---------------------------------------------------------------------------------------------
// One consumer group, a Java member and a rekafka member

/// What a member reported, with the wall-clock time (µs) it happened at.
#[derive(Debug, Clone)]
enum Kind {
    /// Partitions handed to the member (at the start of its assigned callback).
    Assigned(Vec<i32>),
    /// Partitions given up (at the end of its revoked callback, after its commit).
    Revoked(Vec<i32>),
    /// Partitions lost without a commit.
    Lost(Vec<i32>),
    /// A record returned by poll: (partition, offset).
    Record(i32, i64),
    /// A successful synchronous commit: (partition, next offset).
    Commit(i32, i64),
    /// A Java member's output ended without its `closed` line: it died.
    Died,
}

#[derive(Debug, Clone)]
struct Event {
    member: String,
    t: i64,
    kind: Kind,
}

#[derive(Default)]
struct Log(Mutex<Vec<Event>>);

impl Log {
    fn push(&self, member: &str, t: i64, kind: Kind) {
        self.0.lock().unwrap().push(Event {
            member: member.to_string(),
            t,
            kind,
        });
    }

    fn events(&self) -> Vec<Event> {
        self.0.lock().unwrap().clone()
    }

    /// The partitions `member` owns now, by its own callbacks.
    fn owned(&self, member: &str) -> BTreeSet<i32> {
        let mut owned = BTreeSet::new();
        for e in self.events().iter().filter(|e| e.member == member) {
            match &e.kind {
                Kind::Assigned(ps) => owned.extend(ps.iter().copied()),
                Kind::Revoked(ps) | Kind::Lost(ps) => {
                    for p in ps {
                        owned.remove(p);
                    }
                }
                _ => {}
            }
        }
        owned
    }

    /// Records `member` consumed after it last got a partition assigned.
    fn consumed_since_assignment(&self, member: &str) -> usize {
        let mut n = 0;
        for e in self.events().iter().filter(|e| e.member == member) {
            match e.kind {
                Kind::Assigned(_) => n = 0,
                Kind::Record(..) => n += 1,
                _ => {}
            }
        }
        n
    }

    fn consumed(&self) -> BTreeSet<(i32, i64)> {
        self.events()
            .iter()
            .filter_map(|e| match e.kind {
                Kind::Record(p, o) => Some((p, o)),
                _ => None,
            })
            .collect()
    }
}

/// A Java group member (`Interop group-member`) feeding the log from its stdout.
struct JavaMember {
    child: Child,
    reader: std::thread::JoinHandle<()>,
}

impl JavaMember {
    fn start(name: &str, topic: &str, group: &str, assignor: &str, log: Arc<Log>) -> JavaMember {
        let mut child = java(
            "group-member",
            &[
                ("topic", topic),
                ("group", group),
                ("assignor", assignor),
                ("client-id", name),
            ],
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `java`: {e}"));
        let out = child.stdout.take().unwrap();
        let name = name.to_string();
        let reader = std::thread::spawn(move || {
            let parts = |l: &Value| -> Vec<i32> {
                l["partitions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_i64().unwrap() as i32)
                    .collect()
            };
            let mut closed = false;
            for line in BufReader::new(out).lines() {
                let line = line.unwrap();
                let l: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("{name}: bad line {line:?}: {e}"));
                let t = l["t"].as_i64().unwrap();
                let po = || (l["p"].as_i64().unwrap() as i32, l["o"].as_i64().unwrap());
                let kind = match l["ev"].as_str().unwrap() {
                    "assigned" => Kind::Assigned(parts(&l)),
                    "revoked" => Kind::Revoked(parts(&l)),
                    "lost" => Kind::Lost(parts(&l)),
                    "record" => Kind::Record(po().0, po().1),
                    "commit" => Kind::Commit(po().0, po().1),
                    // A commit refused during a rebalance (REBALANCE_IN_PROGRESS): the member
                    // commits again after the next poll or in its revoked callback.
                    "commit_failed" => continue,
                    "closed" => {
                        closed = true;
                        continue;
                    }
                    other => panic!("{name}: unknown event {other}"),
                };
                log.push(&name, t, kind);
            }
            if !closed {
                log.push(&name, now_us(), Kind::Died);
            }
        });
        JavaMember { child, reader }
    }

    /// Asks the member to stop (it commits, leaves the group and exits) and waits for it.
    fn stop(mut self) {
        let mut stdin = self.child.stdin.take().unwrap();
        stdin.write_all(b"stop\n").unwrap();
        drop(stdin);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the Java member exited with {status}");
        self.reader.join().unwrap();
    }
}

/// A rekafka member's rebalance callbacks: commit what was consumed before giving partitions up.
struct Callbacks {
    name: String,
    log: Arc<Log>,
    /// The next offset to commit per partition, for records consumed since the last commit.
    pending: Arc<Mutex<BTreeMap<i32, i64>>>,
}

/// Commits `pending` offsets of `partitions` synchronously, logging each committed offset.
async fn commit_pending(
    consumer: &Consumer,
    topic: &str,
    name: &str,
    log: &Log,
    pending: &Mutex<BTreeMap<i32, i64>>,
    partitions: &[i32],
) {
    let offsets: Vec<(TopicPartition, OffsetAndMetadata)> = {
        let pending = pending.lock().unwrap();
        partitions
            .iter()
            .filter_map(|p| {
                pending
                    .get(p)
                    .map(|o| (TopicPartition::new(topic, *p), OffsetAndMetadata::new(*o)))
            })
            .collect()
    };
    if offsets.is_empty() {
        return;
    }
    match consumer.commit_offsets(&offsets).await {
        Ok(()) => {
            let t = now_us();
            let mut pending = pending.lock().unwrap();
            for (tp, o) in offsets {
                if pending.get(&tp.partition) == Some(&o.offset) {
                    pending.remove(&tp.partition);
                }
                log.push(name, t, Kind::Commit(tp.partition, o.offset));
            }
        }
        Err(e) => eprintln!("{name}: commit failed: {e}"),
    }
}

impl RebalanceListener for Callbacks {
    fn on_assigned<'a>(&'a self, _: &'a Consumer, ps: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        self.log.push(
            &self.name,
            now_us(),
            Kind::Assigned(ps.iter().map(|tp| tp.partition).collect()),
        );
        Box::pin(async {})
    }

    fn on_revoked<'a>(&'a self, c: &'a Consumer, ps: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let parts: Vec<i32> = ps.iter().map(|tp| tp.partition).collect();
            if let Some(tp) = ps.first() {
                commit_pending(c, tp.topic(), &self.name, &self.log, &self.pending, &parts).await;
            }
            let mut pending = self.pending.lock().unwrap();
            for p in &parts {
                pending.remove(p);
            }
            self.log.push(&self.name, now_us(), Kind::Revoked(parts));
        })
    }

    fn on_lost<'a>(&'a self, _: &'a Consumer, ps: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        let parts: Vec<i32> = ps.iter().map(|tp| tp.partition).collect();
        let mut pending = self.pending.lock().unwrap();
        for p in &parts {
            pending.remove(p);
        }
        self.log.push(&self.name, now_us(), Kind::Lost(parts));
        Box::pin(async {})
    }
}

/// A rekafka group member on its own task: polls, logs records, commits after each poll.
struct RekafkaMember {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RekafkaMember {
    fn start(
        client: &Client,
        name: &str,
        topic: &str,
        group: &str,
        assignor: Arc<dyn Assignor>,
        protocol: GroupProtocol,
        log: Arc<Log>,
    ) -> RekafkaMember {
        let config = ConsumerConfig::new()
            .with_group_id(group)
            .with_group_protocol(protocol)
            .with_auto_commit(AutoCommit::Disabled)
            .with_auto_offset_reset(OffsetReset::Earliest)
            .with_max_poll_records(50)
            .with_fetch_max_wait(Duration::from_millis(100));
        // The classic protocol's client-side settings are configuration errors with the
        // consumer protocol (as in Java): the coordinator assigns and times the session.
        let config = match protocol {
            GroupProtocol::Classic => config
                .with_assignors(vec![assignor])
                .with_session_timeout(Duration::from_secs(30))
                .with_heartbeat_interval(Duration::from_secs(1)),
            _ => config,
        };
        let consumer = client.consumer(config).unwrap();
        let pending = Arc::new(Mutex::new(BTreeMap::new()));
        consumer.set_rebalance_listener(Arc::new(Callbacks {
            name: name.to_string(),
            log: log.clone(),
            pending: pending.clone(),
        }));
        consumer.subscribe([topic]).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, name, topic) = (stop.clone(), name.to_string(), topic.to_string());
        let task = tokio::spawn(async move {
            while !stop2.load(Ordering::Acquire) {
                let recs = consumer
                    .poll(Duration::from_millis(100))
                    .await
                    .expect("poll");
                let t = now_us();
                let mut touched = BTreeSet::new();
                for r in recs.iter() {
                    log.push(&name, t, Kind::Record(r.partition, r.offset));
                    pending.lock().unwrap().insert(r.partition, r.offset + 1);
                    touched.insert(r.partition);
                }
                let touched: Vec<i32> = touched.into_iter().collect();
                commit_pending(&consumer, &topic, &name, &log, &pending, &touched).await;
            }
            // close() runs on_revoked (which commits) and leaves the group.
            consumer.close().await.expect("close");
        });
        RekafkaMember { stop, task }
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.task.await.expect("member task");
    }
}

async fn wait_for(what: &str, log: &Log, mut f: impl FnMut(&Log) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !f(log) {
        if let Some(e) = log.events().iter().find(|e| matches!(e.kind, Kind::Died)) {
            panic!("Java member {} exited while waiting for {what}", e.member);
        }
        assert!(
            Instant::now() < deadline,
            "timed out (120 s) waiting for {what}; events so far: {:?}",
            log.events()
                .iter()
                .filter(|e| !matches!(e.kind, Kind::Record(..) | Kind::Commit(..)))
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One ownership of a partition by a member, by the member's own callbacks.
#[derive(Debug)]
struct Ownership {
    member: String,
    from: i64,
    to: i64,
}

/// The checks on a mixed group's log; see `mixed_group`.
fn check_group_log(
    events: &[Event],
    produced: &BTreeSet<(i32, i64)>,
    partitions: i32,
    assignor: &str,
) {
    let mut events = events.to_vec();
    events.sort_by_key(|e| e.t);
    if assignor == "cooperative-sticky" || assignor == "consumer" {
        // Cooperative rebalancing (and the consumer protocol's incremental one): a member gives up only the partitions that move. Every
        // revoke but a member's last (on leaving) keeps some of its partitions.
        let members: BTreeSet<&str> = events.iter().map(|e| e.member.as_str()).collect();
        let mut partial = 0;
        for m in members {
            let mut owned = BTreeSet::new();
            let revokes: Vec<(Vec<i32>, BTreeSet<i32>)> = events
                .iter()
                .filter(|e| e.member == m)
                .filter_map(|e| match &e.kind {
                    Kind::Assigned(ps) => {
                        owned.extend(ps.iter().copied());
                        None
                    }
                    Kind::Revoked(ps) if !ps.is_empty() => {
                        let before = owned.clone();
                        for p in ps {
                            owned.remove(p);
                        }
                        Some((ps.clone(), before))
                    }
                    _ => None,
                })
                .collect();
            for (ps, before) in revokes.iter().take(revokes.len().saturating_sub(1)) {
                assert!(
                    ps.len() < before.len(),
                    "{m} revoked all its partitions {ps:?} in a cooperative rebalance"
                );
                partial += 1;
            }
        }
        assert!(partial > 0, "members kept partitions through a rebalance");
    }
    assert!(
        !events.iter().any(|e| matches!(e.kind, Kind::Lost(_))),
        "no member lost its partitions (every member left gracefully)"
    );
    // Ownership intervals per partition, from each member's assigned/revoked callbacks.
    let mut intervals: BTreeMap<i32, Vec<Ownership>> = BTreeMap::new();
    let mut open: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for e in &events {
        match &e.kind {
            Kind::Assigned(ps) => {
                for p in ps {
                    let prev = open.insert((e.member.clone(), *p), e.t);
                    assert!(
                        prev.is_none(),
                        "{} was assigned partition {p} it already owned",
                        e.member
                    );
                }
            }
            Kind::Revoked(ps) => {
                for p in ps {
                    let from = open.remove(&(e.member.clone(), *p)).unwrap_or_else(|| {
                        panic!("{} revoked partition {p} it did not own", e.member)
                    });
                    intervals.entry(*p).or_default().push(Ownership {
                        member: e.member.clone(),
                        from,
                        to: e.t,
                    });
                }
            }
            _ => {}
        }
    }
    assert!(
        open.is_empty(),
        "every member revoked everything on leaving: {open:?}"
    );
    for p in 0..partitions {
        let owners = intervals.entry(p).or_default();
        owners.sort_by_key(|o| o.from);
        assert!(!owners.is_empty(), "partition {p} was never owned");
        // No partition owned by two members at once: an owner's revoke (after its commit)
        // precedes the next owner's assignment.
        for w in owners.windows(2) {
            assert!(
                w[0].to <= w[1].from,
                "partition {p} owned by two members at once: {:?} and {:?}",
                w[0],
                w[1]
            );
        }
        let names: Vec<&str> = owners.iter().map(|o| o.member.as_str()).collect();
        eprintln!("partition {p}: owners {names:?}");
    }
    // Records and commits happen inside an ownership of their member; within one ownership a
    // member reads consecutive offsets starting at the committed offset (the last commit before
    // the ownership began; 0 for none), and that commit is the previous owner's position.
    let mut handovers = 0;
    for (p, owners) in &intervals {
        let mut last_commit: Option<(String, i64)> = None;
        let mut last_read: Option<i64> = None;
        for o in owners {
            let inside = |e: &&Event| e.member == o.member && e.t >= o.from && e.t <= o.to;
            let mine: Vec<&Event> = events.iter().filter(inside).collect();
            let reads: Vec<i64> = mine
                .iter()
                .filter_map(|e| match e.kind {
                    Kind::Record(rp, off) if rp == *p => Some(off),
                    _ => None,
                })
                .collect();
            if let Some(first) = reads.first() {
                let expected = last_commit.as_ref().map(|(_, o)| *o).unwrap_or(0);
                assert_eq!(
                    *first, expected,
                    "partition {p}: {} started at {first}, not at the committed offset {expected} \
                     (committed by {:?})",
                    o.member, last_commit
                );
                if let Some(prev) = last_read {
                    assert_eq!(
                        expected,
                        prev + 1,
                        "partition {p}: the committed offset {expected} is not the previous \
                         owner's position {}",
                        prev + 1
                    );
                    if last_commit.as_ref().map(|(m, _)| m != &o.member) == Some(true) {
                        handovers += 1;
                    }
                }
                assert!(
                    reads.windows(2).all(|w| w[1] == w[0] + 1),
                    "partition {p}: {} read non-consecutive offsets {reads:?}",
                    o.member
                );
                last_read = reads.last().copied();
            }
            for e in &mine {
                if let Kind::Commit(cp, off) = e.kind
                    && cp == *p
                {
                    last_commit = Some((o.member.clone(), off));
                }
            }
        }
        // Every record and commit of every member falls into one of its ownerships.
        for e in events.iter() {
            if let Kind::Record(rp, _) | Kind::Commit(rp, _) = e.kind
                && rp == *p
            {
                assert!(
                    owners
                        .iter()
                        .any(|o| o.member == e.member && e.t >= o.from && e.t <= o.to),
                    "partition {p}: {:?} outside every ownership of {}",
                    e.kind,
                    e.member
                );
            }
        }
    }
    eprintln!("{handovers} handovers with records on both sides");
    assert!(
        handovers > 0,
        "some partition moved between members with records read on both sides"
    );
    let consumed: BTreeSet<(i32, i64)> = events
        .iter()
        .filter_map(|e| match e.kind {
            Kind::Record(p, o) => Some((p, o)),
            _ => None,
        })
        .collect();
    let missing: Vec<_> = produced.difference(&consumed).take(10).collect();
    assert!(missing.is_empty(), "records never consumed: {missing:?}");
}

/// Records flow into a 6-partition topic while the group goes through: Java member J1 alone;
/// rekafka member R1 joins; J1 leaves; Java member J2 joins; R1 leaves; rekafka member R2 joins;
/// then everything produced is consumed and both leave. The group's leader (which computes
/// every member's assignment) is Java when R1 joins and rekafka when J2 joins, so each client
/// assigns partitions to the other. Checked from both members' own
/// callbacks: every record consumed, no partition owned by two members at once, each new owner
/// starts at the committed offset, which is the previous owner's position.
async fn mixed_group(assignor_name: &str, assignor: Arc<dyn Assignor>) {
    // "consumer": every member speaks KIP-848's consumer protocol (the coordinator assigns).
    let protocol = if assignor_name == "consumer" {
        GroupProtocol::Consumer
    } else {
        GroupProtocol::Classic
    };
    let partitions = 6;
    let client = client().await;
    let topic = unique(&format!("jint-group-{assignor_name}"));
    let group = unique(&format!("jint-g-{assignor_name}"));
    create_topic(&client, &topic, partitions).await;
    let log = Arc::new(Log::default());

    // The producer: one record per partition every 30 ms until stopped.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = {
        let (client, topic, producing) = (client.clone(), topic.clone(), producing.clone());
        tokio::spawn(async move {
            let p = client
                .producer(producer_config(Compression::Lz4, true))
                .await
                .expect("producer");
            let mut produced = BTreeSet::new();
            let mut i = 0u64;
            while producing.load(Ordering::Acquire) {
                let mut fs = Vec::new();
                for part in 0..partitions {
                    let r = Record::new(topic.as_str())
                        .with_partition(part)
                        .with_key(format!("k{i}"))
                        .with_value(format!("v{i}"));
                    fs.push(p.send(r).await.expect("send"));
                    i += 1;
                }
                for f in fs {
                    let m = f.await.expect("delivered");
                    produced.insert((m.partition, m.offset));
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            p.close().await;
            produced
        })
    };

    let all: BTreeSet<i32> = (0..partitions).collect();
    let j1 = JavaMember::start("J1", &topic, &group, assignor_name, log.clone());
    wait_for("J1 owning everything and reading", &log, |l| {
        l.owned("J1") == all && l.consumed_since_assignment("J1") > 0
    })
    .await;
    let r1 = RekafkaMember::start(
        &client,
        "R1",
        &topic,
        &group,
        assignor.clone(),
        protocol,
        log.clone(),
    );
    wait_for("J1 and R1 sharing the partitions and reading", &log, |l| {
        let (j, r) = (l.owned("J1"), l.owned("R1"));
        !j.is_empty()
            && !r.is_empty()
            && j.union(&r).count() == partitions as usize
            && l.consumed_since_assignment("R1") > 0
            && l.consumed_since_assignment("J1") > 0
    })
    .await;
    tokio::task::block_in_place(|| j1.stop());
    wait_for("R1 owning everything after J1 left", &log, |l| {
        l.owned("R1") == all && l.consumed_since_assignment("R1") > 0
    })
    .await;
    let j2 = JavaMember::start("J2", &topic, &group, assignor_name, log.clone());
    wait_for("R1 and J2 sharing the partitions and reading", &log, |l| {
        let (j, r) = (l.owned("J2"), l.owned("R1"));
        !j.is_empty()
            && !r.is_empty()
            && j.union(&r).count() == partitions as usize
            && l.consumed_since_assignment("J2") > 0
            && l.consumed_since_assignment("R1") > 0
    })
    .await;
    r1.stop().await;
    wait_for("J2 owning everything after R1 left", &log, |l| {
        l.owned("J2") == all && l.consumed_since_assignment("J2") > 0
    })
    .await;
    let r2 = RekafkaMember::start(
        &client,
        "R2",
        &topic,
        &group,
        assignor,
        protocol,
        log.clone(),
    );
    wait_for("J2 and R2 sharing the partitions and reading", &log, |l| {
        let (j, r) = (l.owned("J2"), l.owned("R2"));
        !j.is_empty()
            && !r.is_empty()
            && j.union(&r).count() == partitions as usize
            && l.consumed_since_assignment("R2") > 0
    })
    .await;
    producing.store(false, Ordering::Release);
    let produced = producer.await.unwrap();
    wait_for("every produced record consumed", &log, |l| {
        l.consumed().is_superset(&produced)
    })
    .await;
    tokio::task::block_in_place(|| j2.stop());
    r2.stop().await;
    eprintln!(
        "{assignor_name}: {} records produced, {} events",
        produced.len(),
        log.events().len()
    );
    check_group_log(&log.events(), &produced, partitions, assignor_name);
    // The broker agrees: the group's committed offset of every partition is its end (the
    // last owner committed everything it read before leaving).
    let admin = client.admin();
    let tps: Vec<rekafka::admin::TopicPartition> = (0..partitions)
        .map(|p| rekafka::admin::TopicPartition::new(topic.as_str(), p))
        .collect();
    let committed = admin.list_group_offsets(&group, Some(&tps)).await.unwrap();
    let ends = admin
        .list_offsets(
            &tps.iter()
                .map(|tp| (tp.clone(), OffsetSpec::Latest))
                .collect::<Vec<_>>(),
        )
        .await
        .unwrap();
    for ((tp, c), end) in committed.into_iter().zip(ends) {
        let c = c
            .unwrap()
            .unwrap_or_else(|| panic!("{tp:?}: nothing committed"));
        let end = end.unwrap().offset.unwrap();
        let last = produced
            .iter()
            .filter(|(p, _)| *p == tp.partition)
            .map(|(_, o)| o)
            .max();
        assert_eq!(Some(end - 1), last.copied(), "{tp:?}: end offset");
        assert_eq!(c.offset, end, "{tp:?}: committed offset is the end");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_group_range() {
    mixed_group("range", Arc::new(RangeAssignor)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_group_cooperative_sticky() {
    mixed_group("cooperative-sticky", Arc::new(CooperativeStickyAssignor)).await;
}

/// The same mixed group over KIP-848's consumer protocol (`group.protocol=consumer`): the
/// coordinator assigns, Java's and rekafka's members reconcile incrementally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_group_consumer_protocol() {
    mixed_group("consumer", Arc::new(CooperativeStickyAssignor)).await;
}

// The group checks themselves, on made-up logs: they must reject what they claim to.

fn ev(member: &str, t: i64, kind: Kind) -> Event {
    Event {
        member: member.to_string(),
        t,
        kind,
    }
}

/// A: owns partition 0, reads 0..3, commits 3, gives it up; B: takes it, reads 3..5, commits 5.
fn good_log() -> Vec<Event> {
    vec![
        ev("A", 10, Kind::Assigned(vec![0])),
        ev("A", 11, Kind::Record(0, 0)),
        ev("A", 11, Kind::Record(0, 1)),
        ev("A", 12, Kind::Record(0, 2)),
        ev("A", 13, Kind::Commit(0, 3)),
        ev("A", 20, Kind::Revoked(vec![0])),
        ev("B", 21, Kind::Assigned(vec![0])),
        ev("B", 22, Kind::Record(0, 3)),
        ev("B", 22, Kind::Record(0, 4)),
        ev("B", 23, Kind::Commit(0, 5)),
        ev("B", 30, Kind::Revoked(vec![0])),
    ]
}

fn good_produced() -> BTreeSet<(i32, i64)> {
    (0..5).map(|o| (0, o)).collect()
}

#[test]
fn group_checks_accept_a_clean_handover() {
    check_group_log(&good_log(), &good_produced(), 1, "range");
}

#[test]
#[should_panic(expected = "owned by two members at once")]
fn group_checks_reject_overlapping_owners() {
    let mut log = good_log();
    log[6].t = 19; // B assigned before A revoked
    check_group_log(&log, &good_produced(), 1, "range");
}

#[test]
#[should_panic(expected = "not at the committed offset")]
fn group_checks_reject_a_new_owner_skipping_records() {
    let mut log = good_log();
    log[7].kind = Kind::Record(0, 4);
    log[8].kind = Kind::Record(0, 5);
    log[9].kind = Kind::Commit(0, 6);
    let produced = (0..6).map(|o| (0, o)).collect();
    check_group_log(&log, &produced, 1, "range");
}

#[test]
#[should_panic(expected = "is not the previous owner's position")]
fn group_checks_reject_a_commit_behind_what_was_read() {
    let mut log = good_log();
    log.insert(4, ev("A", 12, Kind::Record(0, 3)));
    // A read 3 too but committed 3: B re-reads 3.
    check_group_log(&log, &good_produced(), 1, "range");
}

#[test]
#[should_panic(expected = "records never consumed")]
fn group_checks_reject_a_record_nobody_read() {
    let produced = (0..6).map(|o| (0, o)).collect();
    check_group_log(&good_log(), &produced, 1, "range");
}

#[test]
#[should_panic(expected = "outside every ownership")]
fn group_checks_reject_a_read_after_revoke() {
    let mut log = good_log();
    log.push(ev("A", 25, Kind::Record(0, 2)));
    check_group_log(&log, &good_produced(), 1, "range");
}

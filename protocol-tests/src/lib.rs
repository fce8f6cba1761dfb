//! Support for rekafka's protocol tests: a minimal blocking client built only on
//! `rekafka::protocol` (so the live interop tests exercise our framing, version negotiation and
//! codec against a real broker before the async connection layer exists), helpers to run the
//! librdkafka (Python `confluent-kafka`) scripts, and the JSON record format those scripts use.

pub mod spring;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::Request;
use rekafka::protocol::codec;
use rekafka::protocol::frame::FrameDecoder;
use rekafka::protocol::versions::{
    API_VERSIONS_LATEST, ApiVersionRanges, ApiVersionsOutcome, api_versions_request,
    decode_api_versions,
};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The bootstrap address of the test broker. Broker tests fail (they do not skip) when it is not
/// set: run them through the README's test command, which starts a broker.
pub fn bootstrap() -> String {
    match std::env::var("REKAFKA_BOOTSTRAP") {
        Ok(s) if !s.is_empty() => s.split(',').next().unwrap_or_default().to_string(),
        _ => panic!(
            "REKAFKA_BOOTSTRAP is not set: broker tests need a broker. Run `scripts/test.sh` \
             (it installs and starts one), or `scripts/with-broker.sh cargo test`."
        ),
    }
}

/// A unique name for a topic or group in this test run.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{t}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A blocking, one-request-at-a-time client over `rekafka::protocol`.
pub struct TestClient {
    stream: TcpStream,
    correlation: i32,
    versions: ApiVersionRanges,
    buf: BytesMut,
    frames: FrameDecoder,
}

impl TestClient {
    /// Connects and negotiates API versions (ApiVersions at the latest version, with the
    /// KIP-511 fallback).
    pub fn connect(addr: &str) -> rekafka::Result<TestClient> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        stream.set_nodelay(true)?;
        let mut c = TestClient {
            stream,
            correlation: 0,
            versions: ApiVersionRanges::default(),
            buf: BytesMut::new(),
            frames: FrameDecoder::default(),
        };
        let mut version = API_VERSIONS_LATEST;
        loop {
            let corr = c.next_correlation();
            let mut out = BytesMut::new();
            codec::encode_request(
                &api_versions_request("rekafka-tests", "0.1.0"),
                version,
                corr,
                Some("rekafka-tests"),
                &mut out,
            )?;
            c.stream.write_all(&out)?;
            let frame = c.read_frame()?;
            match decode_api_versions(frame, version)? {
                (got, _) if got != corr => panic!("correlation id {got} != {corr}"),
                (_, ApiVersionsOutcome::Supported { ranges, .. }) => {
                    c.versions = ranges;
                    return Ok(c);
                }
                (_, ApiVersionsOutcome::RetryWith(v)) => version = v,
                (_, other) => panic!("unexpected outcome {other:?}"),
            }
        }
    }

    /// The broker's version ranges.
    pub fn versions(&self) -> &ApiVersionRanges {
        &self.versions
    }

    fn next_correlation(&mut self) -> i32 {
        self.correlation += 1;
        self.correlation
    }

    fn read_frame(&mut self) -> rekafka::Result<Bytes> {
        loop {
            if let Some(f) = self.frames.decode(&mut self.buf)? {
                return Ok(f);
            }
            let mut chunk = [0u8; 64 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(rekafka::Error::new(rekafka::ErrorKind::Disconnected));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `req` at the highest version both sides support and returns the response.
    pub fn send<R: Request>(&mut self, req: &R) -> rekafka::Result<R::Response> {
        let v = self.versions.negotiate::<R>()?;
        self.send_at(req, v)
    }

    /// Sends `req` at `version` and returns the response.
    pub fn send_at<R: Request>(&mut self, req: &R, version: i16) -> rekafka::Result<R::Response> {
        let corr = self.next_correlation();
        let mut out = BytesMut::new();
        codec::encode_request(req, version, corr, Some("rekafka-tests"), &mut out)?;
        self.stream.write_all(&out)?;
        let frame = self.read_frame()?;
        let (header, resp) = codec::decode_response::<R>(frame, version)?;
        assert_eq!(header.correlation_id, corr, "responses come back in order");
        Ok(resp)
    }
}

/// One record as the librdkafka helper scripts read and write it (JSON lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonRecord {
    /// The offset, when known.
    pub offset: Option<i64>,
    /// The key, `None` for a null key.
    pub key: Option<Vec<u8>>,
    /// The value, `None` for a null value.
    pub value: Option<Vec<u8>>,
    /// Headers in order, duplicates kept, `None` for a null value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

fn b64(v: &Option<Vec<u8>>) -> serde_json::Value {
    match v {
        Some(b) => serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        None => serde_json::Value::Null,
    }
}

fn unb64(v: &serde_json::Value) -> Option<Vec<u8>> {
    v.as_str().map(|s| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap_or_else(|e| panic!("bad base64 {s:?}: {e}"))
    })
}

impl JsonRecord {
    /// A record decoded by our codec, with its offset.
    pub fn from_record(r: &rekafka::protocol::record::Record) -> JsonRecord {
        JsonRecord {
            offset: Some(r.offset),
            key: r.key.as_ref().map(|k| k.to_vec()),
            value: r.value.as_ref().map(|v| v.to_vec()),
            headers: r
                .headers
                .iter()
                .map(|h| (h.key().to_string(), h.value().map(|v| v.to_vec())))
                .collect(),
        }
    }

    /// Parses one JSON object in the scripts' format.
    pub fn from_json(v: &serde_json::Value) -> JsonRecord {
        let headers = v
            .get("headers")
            .and_then(|h| h.as_array())
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        let pair = h.as_array().expect("header is [key, value]");
                        (
                            pair[0].as_str().expect("header key").to_string(),
                            unb64(&pair[1]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        JsonRecord {
            offset: v.get("offset").and_then(|o| o.as_i64()),
            key: v.get("key").and_then(unb64_opt),
            value: v.get("value").and_then(unb64_opt),
            headers,
        }
    }

    /// The record as a JSON object in the scripts' format.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "key": b64(&self.key),
            "value": b64(&self.value),
            "headers": self.headers.iter().map(|(k, v)| serde_json::json!([k, b64(v)])).collect::<Vec<_>>(),
        })
    }
}

fn unb64_opt(v: &serde_json::Value) -> Option<Vec<u8>> {
    unb64(v)
}

/// A deterministic set of records covering what interop must preserve: keys, a null key, a
/// null value, an empty value, binary bytes, and headers with duplicate keys and null values.
pub fn sample_records(tag: &str, n: usize) -> Vec<JsonRecord> {
    (0..n)
        .map(|i| {
            let key = match i % 5 {
                0 => None,
                _ => Some(format!("key-{tag}-{i}").into_bytes()),
            };
            let value = match i % 7 {
                3 => None,
                5 => Some(Vec::new()),
                _ => Some(format!("value-{tag}-{i}-{}", "x".repeat(i % 50)).into_bytes()),
            };
            let mut headers = vec![];
            if i % 2 == 0 {
                headers.push(("h".to_string(), Some(format!("first-{i}").into_bytes())));
                headers.push(("h".to_string(), Some(format!("second-{i}").into_bytes())));
            }
            if i % 3 == 0 {
                headers.push(("nullable".to_string(), None));
            }
            if i % 4 == 1 {
                headers.push(("bin".to_string(), Some(vec![0, 255, 1, 254])));
            }
            JsonRecord {
                offset: None,
                key,
                value,
                headers,
            }
        })
        .collect()
}

/// A `python3` command with the project's confluent-kafka (librdkafka) on its path.
pub fn python() -> Command {
    let mut c = Command::new("python3");
    c.env("PYTHONPATH", root().join(".tools/py"));
    c
}

/// Runs a librdkafka helper script from `protocol-tests/interop/` and returns its stdout;
/// panics with its stderr if it fails (librdkafka missing is a failure, not a skip).
pub fn run_interop(script: &str, args: &[&str], stdin: Option<&str>) -> String {
    use std::process::Stdio;
    let path = root().join("protocol-tests/interop").join(script);
    let mut child = python()
        .arg(&path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run python3 {path:?}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    } else {
        drop(child.stdin.take());
    }
    let out = child.wait_with_output().expect("wait for script");
    if !out.status.success() {
        panic!(
            "{script} {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Broker operations over [`TestClient`], for the live tests.
pub mod ops {
    use super::*;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use rekafka::KafkaCode;
    use rekafka::protocol::record::{BatchBuilder, Compression, ControlRecord, RecordBatches};

    fn check(code: i16, what: &str) -> rekafka::Result<()> {
        match KafkaCode::from_i16(code) {
            None => Ok(()),
            Some(c) => Err(rekafka::Error::broker(c).message(what.to_string())),
        }
    }

    /// Error codes that mean "not written / not served here yet, ask again": a topic just
    /// created whose leader is not known everywhere, a leader that moved, a coordinator that is
    /// loading or moved, a transaction still completing.
    fn transient(e: &rekafka::Error) -> bool {
        matches!(
            e.kind(),
            rekafka::ErrorKind::Broker(
                KafkaCode::NotLeaderOrFollower
                    | KafkaCode::UnknownTopicOrPartition
                    | KafkaCode::LeaderNotAvailable
                    | KafkaCode::NotCoordinator
                    | KafkaCode::CoordinatorNotAvailable
                    | KafkaCode::CoordinatorLoadInProgress
                    | KafkaCode::ConcurrentTransactions
            )
        )
    }

    /// Runs `f` until it succeeds or fails with a non-transient error; transient errors are
    /// retried for up to 30 s.
    fn retrying<T>(mut f: impl FnMut() -> rekafka::Result<T>) -> rekafka::Result<T> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match f() {
                Err(e) if transient(&e) && std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => return other,
            }
        }
    }

    /// A connection to the leader of `topic`/`partition` (found through `c`'s broker). With
    /// one broker (Tansu) that is the same broker; with a cluster, produce and fetch must go to
    /// the leader.
    pub fn leader_of(
        c: &mut TestClient,
        topic: &str,
        partition: i32,
    ) -> rekafka::Result<TestClient> {
        retrying(|| {
            let resp = c.send(&MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(topic.to_string())))),
            ])))?;
            let t = resp.topics.first().ok_or_else(|| {
                rekafka::Error::broker(KafkaCode::UnknownTopicOrPartition).message("no topic")
            })?;
            check(t.error_code, "metadata")?;
            let leader = t
                .partitions
                .iter()
                .find(|p| p.partition_index == partition)
                .map(|p| p.leader_id.0)
                .unwrap_or(-1);
            let broker = resp
                .brokers
                .iter()
                .find(|b| b.node_id.0 == leader)
                .ok_or_else(|| {
                    rekafka::Error::broker(KafkaCode::LeaderNotAvailable).message("no leader yet")
                })?;
            TestClient::connect(&format!("{}:{}", broker.host, broker.port))
        })
    }

    /// A connection to the transaction coordinator of `transactional_id`.
    pub fn txn_coordinator(
        c: &mut TestClient,
        transactional_id: &str,
    ) -> rekafka::Result<TestClient> {
        retrying(|| {
            let v = c.versions().negotiate::<FindCoordinatorRequest>()?;
            let key = StrBytes::from_string(transactional_id.to_string());
            let mut req = FindCoordinatorRequest::default().with_key_type(1);
            if v >= 4 {
                req.coordinator_keys = vec![key];
            } else {
                req.key = key;
            }
            let resp = c.send_at(&req, v)?;
            let (code, host, port) = match resp.coordinators.first() {
                Some(k) if v >= 4 => (k.error_code, k.host.to_string(), k.port),
                _ => (resp.error_code, resp.host.to_string(), resp.port),
            };
            check(code, "find coordinator")?;
            TestClient::connect(&format!("{host}:{port}"))
        })
    }

    /// Creates a topic with `partitions` partitions (replication factor 1).
    pub fn create_topic(c: &mut TestClient, name: &str, partitions: i32) -> rekafka::Result<()> {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name.to_string())))
                    .with_num_partitions(partitions)
                    .with_replication_factor(1),
            ]);
        let resp = c.send(&req)?;
        for t in &resp.topics {
            check(t.error_code, "create topic")?;
        }
        Ok(())
    }

    /// Builds one batch of `records` with our codec.
    pub fn build_batch(
        records: &[JsonRecord],
        compression: Compression,
        producer: Option<(i64, i16, i32)>,
        transactional: bool,
    ) -> Bytes {
        let mut b = BatchBuilder::new()
            .with_compression(compression)
            .with_transactional(transactional);
        if let Some((pid, epoch, seq)) = producer {
            b = b.with_producer(pid, epoch, seq);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        for (i, r) in records.iter().enumerate() {
            let headers: Vec<(&str, Option<&[u8]>)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            b.append(
                now + i as i64,
                r.key.as_deref(),
                r.value.as_deref(),
                &headers,
            )
            .expect("append");
        }
        b.build().expect("build batch")
    }

    /// Produces one encoded batch with acks=all and returns its base offset.
    pub fn produce(
        c: &mut TestClient,
        topic: &str,
        partition: i32,
        batch: Bytes,
        transactional_id: Option<&str>,
    ) -> rekafka::Result<i64> {
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_transactional_id(
                transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.to_string()))),
            )
            .with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(batch)),
                    ]),
            ]);
        retrying(|| {
            let resp = leader_of(c, topic, partition)?.send(&req)?;
            let p = &resp.responses[0].partition_responses[0];
            check(p.error_code, "produce")?;
            Ok(p.base_offset)
        })
    }

    /// Fetches `topic`/`partition` from `from` until `want` records (data records, control
    /// records not counted) have been seen or 20 s passed. Returns the raw `records` buffers.
    pub fn fetch_records(
        c: &mut TestClient,
        topic: &str,
        partition: i32,
        from: i64,
        want: usize,
        isolation: i8,
    ) -> rekafka::Result<Vec<Bytes>> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut offset = from;
        let mut seen = 0;
        let mut out = vec![];
        let mut leader = leader_of(c, topic, partition)?;
        while seen < want {
            assert!(
                std::time::Instant::now() < deadline,
                "fetched only {seen}/{want} records"
            );
            let req = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(100)
                .with_min_bytes(1)
                .with_max_bytes(16 << 20)
                .with_isolation_level(isolation)
                .with_topics(vec![
                    fetch_request::FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                        .with_partitions(vec![
                            fetch_request::FetchPartition::default()
                                .with_partition(partition)
                                .with_fetch_offset(offset)
                                .with_partition_max_bytes(4 << 20),
                        ]),
                ]);
            let resp = leader.send(&req)?;
            check(resp.error_code, "fetch")?;
            for t in &resp.responses {
                for p in &t.partitions {
                    if let Err(e) = check(p.error_code, "fetch partition") {
                        if !transient(&e) {
                            return Err(e);
                        }
                        // The leader moved: ask again where it is.
                        std::thread::sleep(Duration::from_millis(100));
                        leader = leader_of(c, topic, partition)?;
                        continue;
                    }
                    let Some(records) = p.records.clone() else {
                        continue;
                    };
                    let mut batches = RecordBatches::new(records.clone());
                    for b in batches.by_ref() {
                        let b = b?;
                        if b.next_offset() <= offset {
                            continue;
                        }
                        if !b.is_control() {
                            seen += b
                                .records()?
                                .filter(|r| r.as_ref().map(|r| r.offset >= offset).unwrap_or(true))
                                .count();
                        }
                        offset = b.next_offset();
                    }
                    out.push(records);
                }
            }
        }
        Ok(out)
    }

    /// Decodes fetched buffers into data records (from `from` on, each once) and control
    /// records, in offset order.
    pub fn decode_all(
        buffers: &[Bytes],
        from: i64,
    ) -> (Vec<JsonRecord>, Vec<(i64, ControlRecord)>) {
        let mut next = from;
        let mut data = vec![];
        let mut control = vec![];
        for buf in buffers {
            let mut batches = RecordBatches::new(buf.clone());
            for b in batches.by_ref() {
                let b = b.expect("valid batch");
                if b.next_offset() <= next {
                    continue;
                }
                if b.is_control() {
                    let marker = b
                        .control_record()
                        .expect("control record")
                        .expect("one marker");
                    control.push((b.base_offset(), marker));
                } else {
                    for r in b.records().expect("records") {
                        let r = r.expect("record");
                        if r.offset < next {
                            continue;
                        }
                        data.push(JsonRecord::from_record(&r));
                    }
                }
                next = b.next_offset();
            }
        }
        (data, control)
    }

    /// The cluster id (Tansu answers `tansu_cluster`), used to tolerate documented broker
    /// quirks only on that broker.
    pub fn cluster_id(c: &mut TestClient) -> rekafka::Result<String> {
        let resp = c.send(&MetadataRequest::default().with_topics(Some(vec![])))?;
        Ok(resp.cluster_id.map(|s| s.to_string()).unwrap_or_default())
    }

    /// Finds the transaction coordinator and runs InitProducerId for `transactional_id` on it.
    pub fn init_producer_id(
        c: &mut TestClient,
        transactional_id: &str,
    ) -> rekafka::Result<(i64, i16)> {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
                transactional_id.to_string(),
            ))))
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        retrying(|| {
            let resp = txn_coordinator(c, transactional_id)?.send(&req)?;
            check(resp.error_code, "init producer id")?;
            Ok((resp.producer_id.0, resp.producer_epoch))
        })
    }

    /// Adds a partition to the ongoing transaction.
    pub fn add_partition(
        c: &mut TestClient,
        txn: &str,
        pid: (i64, i16),
        topic: &str,
        partition: i32,
    ) -> rekafka::Result<()> {
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(
                txn.to_string(),
            )))
            .with_v3_and_below_producer_id(ProducerId(pid.0))
            .with_v3_and_below_producer_epoch(pid.1)
            .with_v3_and_below_topics(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![partition]),
            ]);
        retrying(|| {
            let resp = txn_coordinator(c, txn)?.send(&req)?;
            for t in &resp.results_by_topic_v3_and_below {
                for p in &t.results_by_partition {
                    check(p.partition_error_code, "add partitions to txn")?;
                }
            }
            Ok(())
        })
    }

    /// Ends the transaction (commit or abort).
    pub fn end_txn(
        c: &mut TestClient,
        txn: &str,
        pid: (i64, i16),
        commit: bool,
    ) -> rekafka::Result<()> {
        let req = EndTxnRequest::default()
            .with_transactional_id(TransactionalId(StrBytes::from_string(txn.to_string())))
            .with_producer_id(ProducerId(pid.0))
            .with_producer_epoch(pid.1)
            .with_committed(commit);
        retrying(|| {
            let resp = txn_coordinator(c, txn)?.send(&req)?;
            check(resp.error_code, "end txn")
        })
    }
}

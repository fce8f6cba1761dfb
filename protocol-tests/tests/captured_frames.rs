//! Frames captured between librdkafka (confluent-kafka) and the test broker, decoded with our
//! code: every request and response decodes, matches what `kafka-protocol` decodes without our
//! guard, and the record batches librdkafka wrote — every codec, headers with duplicate keys and
//! null values, idempotent and transactional batches with their control records — decode to
//! exactly the records it sent (`frames/expected-records.json`).
//!
//! The `kafka_*` tests do the same for frames captured between librdkafka and Apache Kafka 4.4
//! (`frames-kafka/`): every pair decodes; the transactional producer's InitProducerId,
//! AddPartitionsToTxn, EndTxn and batches agree on the producer id; a read_committed Fetch lists
//! the aborted transaction and our consumer's filter drops exactly its records; JoinGroup and
//! SyncGroup carry subscriptions and assignments our group protocol decodes; OffsetForLeaderEpoch
//! (hand-built) answers the log end; SaslHandshake/SaslAuthenticate carry PLAIN, both SCRAM
//! exchanges and a refused login.
//!
//! Regenerate the frames with `scripts/regen-frames.sh` (Tansu) and
//! `scripts/regen-frames.sh --kafka` (Apache Kafka).

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request};
use rekafka::protocol::codec;
use rekafka::protocol::record::{Compression, ControlType, RecordBatches};
use rekafka_protocol_tests::JsonRecord;
use serde_json::Value;

fn frames_dir() -> PathBuf {
    rekafka_protocol_tests::root().join("protocol-tests/frames")
}

fn load(name: &str) -> Bytes {
    Bytes::from(std::fs::read(frames_dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}")))
}

fn json(name: &str) -> Value {
    serde_json::from_slice(&load(name)).expect("valid json")
}

/// What one captured pair held, for the record checks.
#[derive(Default)]
struct Seen {
    /// topic -> batches (compression, records) from Produce requests, in order.
    produced: BTreeMap<String, Vec<(Compression, Vec<JsonRecord>, bool)>>,
    /// topic -> offset -> record, from Fetch responses.
    fetched: BTreeMap<String, BTreeMap<i64, JsonRecord>>,
    /// topic -> offset -> control type, from Fetch responses.
    markers: BTreeMap<String, BTreeMap<i64, ControlType>>,
    decoded: usize,
}

fn records_of(buf: &Bytes) -> Vec<(rekafka::protocol::record::RecordBatch, Vec<JsonRecord>)> {
    let mut out = vec![];
    let mut batches = RecordBatches::new(buf.clone());
    for b in batches.by_ref() {
        let b = b.expect("librdkafka's batch decodes (CRC verified)");
        let recs = b
            .records()
            .expect("records")
            .map(|r| JsonRecord::from_record(&r.expect("record")))
            .collect();
        out.push((b, recs));
    }
    out
}

/// Decodes one pair with request type `R`; checks our decode against kafka-protocol's own.
fn check_pair<R>(req: &Bytes, resp: &Bytes, version: i16, corr: i32) -> (R, R::Response)
where
    R: Request + PartialEq + std::fmt::Debug,
    R::Response: PartialEq + std::fmt::Debug,
{
    let (header, body) = codec::decode_request_header(req).expect("request header");
    assert_eq!(header.request_api_key, R::KEY);
    assert_eq!(header.request_api_version, version);
    assert_eq!(header.correlation_id, corr);
    let ours: R = codec::decode_request(body.clone(), version).expect("request body");
    let theirs = R::decode(&mut body.clone(), version).expect("kafka-protocol decodes it too");
    assert_eq!(ours, theirs);

    assert_eq!(codec::response_correlation_id(resp).unwrap(), corr);
    let (rh, ours_resp) = codec::decode_response::<R>(resp.clone(), version).expect("response");
    assert_eq!(rh.correlation_id, corr);
    let mut plain = resp.clone();
    ResponseHeader::decode(&mut plain, R::Response::header_version(version)).unwrap();
    let theirs = R::Response::decode(&mut plain, version).unwrap();
    assert_eq!(ours_resp, theirs);
    (ours, ours_resp)
}

fn on_produce(seen: &mut Seen, req: &ProduceRequest) {
    for t in &req.topic_data {
        for p in &t.partition_data {
            let Some(records) = &p.records else { continue };
            for (batch, recs) in records_of(records) {
                let recs = recs
                    .into_iter()
                    .map(|r| JsonRecord { offset: None, ..r })
                    .collect();
                seen.produced.entry(t.name.to_string()).or_default().push((
                    batch.compression(),
                    recs,
                    batch.is_transactional(),
                ));
            }
        }
    }
}

fn on_fetch(seen: &mut Seen, req: &FetchRequest, resp: &FetchResponse) {
    // Fetch v13+ names topics by id: map ids to names from the request... which also uses ids,
    // so resolve through the responses' own topic names when present, else through the ids
    // seen in Metadata (not needed: the captured fetches are checked per topic name or id).
    let _ = req;
    for t in &resp.responses {
        let name = if t.topic.is_empty() {
            t.topic_id.to_string()
        } else {
            t.topic.to_string()
        };
        for p in &t.partitions {
            let Some(records) = &p.records else { continue };
            for (batch, recs) in records_of(records) {
                if batch.is_control() {
                    let m = batch.control_record().unwrap().expect("marker");
                    seen.markers
                        .entry(name.clone())
                        .or_default()
                        .insert(batch.base_offset(), m.control_type);
                    continue;
                }
                for r in recs {
                    seen.fetched
                        .entry(name.clone())
                        .or_default()
                        .insert(r.offset.unwrap(), r);
                }
            }
        }
    }
}

fn expected_records(topic: &Value) -> Vec<JsonRecord> {
    topic["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(JsonRecord::from_json)
        .collect()
}

#[test]
fn captured_frames_decode_and_match_what_librdkafka_sent() {
    let manifest = json("manifest.json");
    let pairs = manifest["pairs"].as_array().expect("pairs");
    assert!(pairs.len() > 50, "only {} pairs captured", pairs.len());
    let mut seen = Seen::default();
    let mut topic_ids: BTreeMap<String, String> = BTreeMap::new();
    for p in pairs {
        let req = load(p["request"].as_str().unwrap());
        let resp = load(p["response"].as_str().unwrap());
        let v = p["api_version"].as_i64().unwrap() as i16;
        let corr = p["correlation_id"].as_i64().unwrap() as i32;
        let key = p["api_key"].as_i64().unwrap() as i16;
        macro_rules! typed {
            ($($t:ty),* $(,)?) => {
                match key {
                    $(k if k == <$t as Request>::KEY => { check_pair::<$t>(&req, &resp, v, corr); })*
                    other => panic!("captured API key {other} is not covered by this test"),
                }
            };
        }
        if key == ProduceRequest::KEY {
            let (r, _) = check_pair::<ProduceRequest>(&req, &resp, v, corr);
            on_produce(&mut seen, &r);
        } else if key == FetchRequest::KEY {
            let (r, resp) = check_pair::<FetchRequest>(&req, &resp, v, corr);
            on_fetch(&mut seen, &r, &resp);
        } else if key == MetadataRequest::KEY {
            let (_, m) = check_pair::<MetadataRequest>(&req, &resp, v, corr);
            for t in &m.topics {
                if let Some(name) = &t.name {
                    topic_ids.insert(t.topic_id.to_string(), name.to_string());
                }
            }
        } else if key == ApiVersionsRequest::KEY {
            // The broker answers every ApiVersions version; check via the negotiation path.
            check_pair::<ApiVersionsRequest>(&req, &resp, v, corr);
            let (c, out) =
                rekafka::protocol::versions::decode_api_versions(resp.clone(), v).unwrap();
            assert_eq!(c, corr);
            assert!(matches!(
                out,
                rekafka::protocol::versions::ApiVersionsOutcome::Supported { .. }
            ));
        } else {
            typed!(
                ListOffsetsRequest,
                CreateTopicsRequest,
                DeleteTopicsRequest,
                FindCoordinatorRequest,
                InitProducerIdRequest,
                AddPartitionsToTxnRequest,
                AddOffsetsToTxnRequest,
                TxnOffsetCommitRequest,
                EndTxnRequest,
                JoinGroupRequest,
                SyncGroupRequest,
                HeartbeatRequest,
                LeaveGroupRequest,
                OffsetCommitRequest,
                OffsetFetchRequest,
                DescribeConfigsRequest,
                IncrementalAlterConfigsRequest,
                ListGroupsRequest,
                DescribeGroupsRequest,
                ConsumerGroupDescribeRequest,
                GetTelemetrySubscriptionsRequest,
                DescribeClusterRequest,
            );
        }
        seen.decoded += 1;
    }
    assert_eq!(seen.decoded, pairs.len());

    // Map fetched topic ids (Fetch v13+) to names.
    let fetched: BTreeMap<String, BTreeMap<i64, JsonRecord>> = seen
        .fetched
        .into_iter()
        .map(|(k, v)| (topic_ids.get(&k).cloned().unwrap_or(k), v))
        .collect();
    let markers: BTreeMap<String, BTreeMap<i64, ControlType>> = seen
        .markers
        .into_iter()
        .map(|(k, v)| (topic_ids.get(&k).cloned().unwrap_or(k), v))
        .collect();

    let expected = json("expected-records.json");
    let topics = expected["topics"].as_object().unwrap();
    let mut codecs_seen = vec![];
    for (topic, spec) in topics {
        let want = expected_records(spec);
        let codec = spec["compression"].as_str().unwrap();
        // What librdkafka produced: the batches in its Produce requests.
        let produced = seen
            .produced
            .get(topic)
            .unwrap_or_else(|| panic!("no produce for {topic}"));
        let mut sent: Vec<JsonRecord> = vec![];
        for (c, recs, txn) in produced {
            assert!(
                format!("{c:?}").eq_ignore_ascii_case(codec),
                "{topic}: batch codec {c:?}"
            );
            assert_eq!(*txn, spec["transactional"].as_bool().unwrap(), "{topic}");
            sent.extend(recs.iter().cloned());
        }
        let want_no_offsets: Vec<JsonRecord> = want
            .iter()
            .map(|r| JsonRecord {
                offset: None,
                ..r.clone()
            })
            .collect();
        assert_eq!(
            sent, want_no_offsets,
            "{topic}: produced batches decode to the records sent"
        );
        codecs_seen.push(codec.to_string());

        // What the broker served back in Fetch responses, with offsets.
        let got = fetched
            .get(topic)
            .unwrap_or_else(|| panic!("no fetch for {topic}"));
        let got: Vec<JsonRecord> = got.values().cloned().collect();
        assert_eq!(
            got, want,
            "{topic}: fetched batches decode to the records sent, at their offsets"
        );

        if let Some(txns) = spec.get("transactions").and_then(|t| t.as_array()) {
            let m = markers.get(topic).expect("control batches fetched");
            for t in txns {
                let first = t["first_offset"].as_i64().unwrap();
                let n = t["record_count"].as_i64().unwrap();
                let kind = if t["outcome"] == "committed" {
                    ControlType::Commit
                } else {
                    ControlType::Abort
                };
                assert_eq!(
                    m.get(&(first + n)),
                    Some(&kind),
                    "{topic}: marker after txn {t}"
                );
            }
        }
    }
    for c in ["none", "gzip", "snappy", "lz4", "zstd"] {
        assert!(
            codecs_seen.iter().any(|s| s == c),
            "no captured topic used {c}"
        );
    }
}

// ------------------------------------------------------------------------------------------
// Frames captured between librdkafka and Apache Kafka 4.4 (protocol-tests/frames-kafka/,
// `scripts/regen-frames.sh --kafka`).

fn kafka_dir() -> PathBuf {
    rekafka_protocol_tests::root().join("protocol-tests/frames-kafka")
}

fn kafka_load(name: &str) -> Bytes {
    let path = kafka_dir().join(name);
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

fn kafka_json(name: &str) -> Value {
    serde_json::from_slice(&kafka_load(name)).expect("valid json")
}

/// One typed pair of the Kafka capture.
struct KafkaPair {
    scenario: String,
    key: i16,
    req: Bytes,
    resp: Bytes,
    version: i16,
    corr: i32,
}

impl KafkaPair {
    fn decode<R>(&self) -> (R, R::Response)
    where
        R: Request + PartialEq + std::fmt::Debug,
        R::Response: PartialEq + std::fmt::Debug,
    {
        check_pair::<R>(&self.req, &self.resp, self.version, self.corr)
    }
}

fn kafka_pairs() -> Vec<KafkaPair> {
    let manifest = kafka_json("manifest.json");
    assert!(
        manifest["broker"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Apache Kafka"),
        "frames-kafka/manifest.json: {}",
        manifest["broker"]
    );
    manifest["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .map(|p| KafkaPair {
            scenario: p["scenario"].as_str().unwrap().to_owned(),
            key: p["api_key"].as_i64().unwrap() as i16,
            req: kafka_load(p["request"].as_str().unwrap()),
            resp: kafka_load(
                p["response"]
                    .as_str()
                    .expect("every kept pair was answered"),
            ),
            version: p["api_version"].as_i64().unwrap() as i16,
            corr: p["correlation_id"].as_i64().unwrap() as i32,
        })
        .collect()
}

fn of<'a>(pairs: &'a [KafkaPair], key: i16) -> impl Iterator<Item = &'a KafkaPair> + 'a {
    pairs.iter().filter(move |p| p.key == key)
}

fn in_scenario<'a>(
    pairs: &'a [KafkaPair],
    key: i16,
    scenario: &'a str,
) -> impl Iterator<Item = &'a KafkaPair> + 'a {
    of(pairs, key).filter(move |p| p.scenario == scenario)
}

#[test]
fn kafka_frames_every_pair_decodes() {
    let pairs = kafka_pairs();
    assert!(pairs.len() > 40, "only {} pairs captured", pairs.len());
    for p in &pairs {
        macro_rules! typed {
            ($($t:ty),* $(,)?) => {
                match p.key {
                    $(k if k == <$t as Request>::KEY => { p.decode::<$t>(); })*
                    other => panic!("captured API key {other} is not covered by this test"),
                }
            };
        }
        typed!(
            ApiVersionsRequest,
            MetadataRequest,
            ProduceRequest,
            FetchRequest,
            ListOffsetsRequest,
            CreateTopicsRequest,
            FindCoordinatorRequest,
            InitProducerIdRequest,
            AddPartitionsToTxnRequest,
            EndTxnRequest,
            JoinGroupRequest,
            SyncGroupRequest,
            HeartbeatRequest,
            LeaveGroupRequest,
            OffsetCommitRequest,
            OffsetFetchRequest,
            OffsetForLeaderEpochRequest,
            SaslHandshakeRequest,
            SaslAuthenticateRequest,
        );
    }
    // Every API the issue asks for is in the capture.
    for key in [
        ApiVersionsRequest::KEY,
        MetadataRequest::KEY,
        ProduceRequest::KEY,
        FetchRequest::KEY,
        JoinGroupRequest::KEY,
        SyncGroupRequest::KEY,
        InitProducerIdRequest::KEY,
        AddPartitionsToTxnRequest::KEY,
        EndTxnRequest::KEY,
        OffsetForLeaderEpochRequest::KEY,
        SaslHandshakeRequest::KEY,
        SaslAuthenticateRequest::KEY,
    ] {
        assert!(of(&pairs, key).next().is_some(), "no API {key} captured");
    }
}

#[test]
fn kafka_api_versions_negotiate_every_api_rekafka_uses() {
    use rekafka::protocol::versions::{ApiVersionsOutcome, decode_api_versions};
    let pairs = kafka_pairs();
    let mut versions_seen = vec![];
    for p in of(&pairs, ApiVersionsRequest::KEY) {
        p.decode::<ApiVersionsRequest>();
        let (corr, out) = decode_api_versions(p.resp.clone(), p.version).unwrap();
        assert_eq!(corr, p.corr);
        let ApiVersionsOutcome::Supported { ranges, .. } = out else {
            panic!("ApiVersions v{}: {out:?}", p.version)
        };
        // Kafka 4 removed the oldest versions (KIP-896); our client ranges still meet the
        // broker's for every API the client sends.
        assert!(ranges.negotiate::<ProduceRequest>().unwrap() >= 3);
        assert!(ranges.negotiate::<FetchRequest>().unwrap() >= 4);
        ranges.negotiate::<MetadataRequest>().unwrap();
        ranges.negotiate::<ListOffsetsRequest>().unwrap();
        ranges.negotiate::<FindCoordinatorRequest>().unwrap();
        ranges.negotiate::<JoinGroupRequest>().unwrap();
        ranges.negotiate::<SyncGroupRequest>().unwrap();
        ranges.negotiate::<HeartbeatRequest>().unwrap();
        ranges.negotiate::<LeaveGroupRequest>().unwrap();
        ranges.negotiate::<OffsetCommitRequest>().unwrap();
        ranges.negotiate::<OffsetFetchRequest>().unwrap();
        ranges.negotiate::<InitProducerIdRequest>().unwrap();
        ranges.negotiate::<AddPartitionsToTxnRequest>().unwrap();
        ranges.negotiate::<AddOffsetsToTxnRequest>().unwrap();
        ranges.negotiate::<TxnOffsetCommitRequest>().unwrap();
        ranges.negotiate::<EndTxnRequest>().unwrap();
        ranges.negotiate::<OffsetForLeaderEpochRequest>().unwrap();
        ranges.negotiate::<SaslHandshakeRequest>().unwrap();
        ranges.negotiate::<SaslAuthenticateRequest>().unwrap();
        ranges.negotiate::<CreateTopicsRequest>().unwrap();
        ranges.negotiate::<DeleteTopicsRequest>().unwrap();
        versions_seen.push(p.version);
    }
    assert!(versions_seen.contains(&0), "the hand-built ApiVersions v0");
    assert!(
        versions_seen.iter().any(|v| *v >= 3),
        "librdkafka's ApiVersions v3+"
    );
}

/// The producer id and epoch of the InitProducerId answers of a scenario (one per producer).
fn producer_ids(pairs: &[KafkaPair], scenario: &str) -> Vec<(i64, i16)> {
    let mut out = vec![];
    for p in in_scenario(pairs, InitProducerIdRequest::KEY, scenario) {
        let (_, resp) = p.decode::<InitProducerIdRequest>();
        if resp.error_code == 0 {
            out.push((resp.producer_id.0, resp.producer_epoch));
        }
    }
    out.dedup();
    out
}

/// topic id -> name from every Metadata response.
fn kafka_topic_names(pairs: &[KafkaPair]) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for p in of(pairs, MetadataRequest::KEY) {
        let (_, m) = p.decode::<MetadataRequest>();
        for t in &m.topics {
            if let Some(name) = &t.name {
                names.insert(t.topic_id.to_string(), name.to_string());
            }
        }
    }
    names
}

#[test]
fn kafka_transactions_init_add_partitions_end_and_the_produced_batches() {
    let pairs = kafka_pairs();
    let expected = kafka_json("expected-records.json");
    let txn_spec = &expected["topics"]["kafka-txn"];
    let txn_id = txn_spec["transactional_id"].as_str().unwrap();

    // InitProducerId: one transactional producer id, epoch 0 on a fresh cluster.
    let init: Vec<_> = in_scenario(&pairs, InitProducerIdRequest::KEY, "produce-txn")
        .map(|p| p.decode::<InitProducerIdRequest>())
        .collect();
    assert!(!init.is_empty());
    for (req, _) in &init {
        assert_eq!(
            req.transactional_id.as_ref().map(|s| s.as_str()),
            Some(txn_id)
        );
    }
    let ids = producer_ids(&pairs, "produce-txn");
    assert_eq!(ids.len(), 1, "{ids:?}");
    let (pid, epoch) = ids[0];
    assert!(pid >= 0 && epoch >= 0, "{pid} {epoch}");

    // AddPartitionsToTxn: kafka-txn partition 0, once per transaction, accepted.
    let mut adds = 0;
    for p in in_scenario(&pairs, AddPartitionsToTxnRequest::KEY, "produce-txn") {
        let (req, resp) = p.decode::<AddPartitionsToTxnRequest>();
        assert_eq!(req.v3_and_below_transactional_id.as_str(), txn_id);
        assert_eq!(req.v3_and_below_producer_id.0, pid);
        assert_eq!(req.v3_and_below_producer_epoch, epoch);
        let topics: Vec<_> = req
            .v3_and_below_topics
            .iter()
            .map(|t| (t.name.as_str().to_owned(), t.partitions.clone()))
            .collect();
        assert_eq!(topics, [("kafka-txn".to_owned(), vec![0])]);
        for t in &resp.results_by_topic_v3_and_below {
            for r in &t.results_by_partition {
                // CONCURRENT_TRANSACTIONS (51): the previous transaction's markers are still
                // being written; librdkafka retries.
                match r.partition_error_code {
                    0 => adds += 1,
                    51 => {}
                    e => panic!("AddPartitionsToTxn error {e}: {resp:?}"),
                }
            }
        }
    }
    // Identical pairs were kept once (the capture drops duplicates): at least one accepted.
    assert!(adds >= 1);

    // EndTxn: commit, abort, commit, all accepted.
    let ends: Vec<bool> = in_scenario(&pairs, EndTxnRequest::KEY, "produce-txn")
        .map(|p| {
            let (req, resp) = p.decode::<EndTxnRequest>();
            assert_eq!(req.transactional_id.as_str(), txn_id);
            assert_eq!(req.producer_id.0, pid);
            assert_eq!(resp.error_code, 0);
            req.committed
        })
        .collect();
    let outcomes: Vec<bool> = txn_spec["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["outcome"] == "committed")
        .collect();
    assert_eq!(outcomes, [true, false, true]);
    // The second commit's request is byte-identical to the first (same producer id and epoch:
    // EndTxn v1 bumps no epoch), so the capture may have kept it once.
    assert!(
        ends == [true, false] || ends == outcomes,
        "EndTxn committed flags {ends:?}"
    );

    // Produce: the transactional batches carry the producer id and decode to the records sent;
    // the idempotent producer's batch carries its own id.
    let mut sent: BTreeMap<String, Vec<(i64, bool, Vec<JsonRecord>)>> = BTreeMap::new();
    for p in of(&pairs, ProduceRequest::KEY) {
        let (req, resp) = p.decode::<ProduceRequest>();
        for t in &resp.responses {
            for r in &t.partition_responses {
                assert_eq!(r.error_code, 0, "{resp:?}");
            }
        }
        assert_eq!(req.transactional_id.is_some(), p.scenario == "produce-txn");
        for t in &req.topic_data {
            for part in &t.partition_data {
                for (batch, recs) in records_of(part.records.as_ref().expect("records")) {
                    let recs = recs
                        .into_iter()
                        .map(|r| JsonRecord { offset: None, ..r })
                        .collect();
                    sent.entry(t.name.to_string()).or_default().push((
                        batch.producer_id(),
                        batch.is_transactional(),
                        recs,
                    ));
                }
            }
        }
    }
    let idempotent = producer_ids(&pairs, "produce-idempotent");
    assert_eq!(idempotent.len(), 1, "{idempotent:?}");
    for (topic, spec) in expected["topics"].as_object().unwrap() {
        let batches = sent
            .get(topic)
            .unwrap_or_else(|| panic!("no produce for {topic}"));
        let transactional = spec["transactional"].as_bool().unwrap();
        let mut records = vec![];
        for (producer, txn, recs) in batches {
            assert_eq!(*txn, transactional, "{topic}");
            if transactional {
                assert_eq!(*producer, pid, "{topic}");
            } else {
                assert!(
                    *producer >= 0,
                    "{topic}: idempotent batches have a producer id"
                );
            }
            records.extend(recs.iter().cloned());
        }
        let want: Vec<JsonRecord> = expected_records(spec)
            .into_iter()
            .map(|r| JsonRecord { offset: None, ..r })
            .collect();
        assert_eq!(
            records, want,
            "{topic}: produced batches decode to the records sent"
        );
    }
    assert_eq!(
        sent["kafka-plain"][0].0, idempotent[0].0,
        "the idempotent batch carries its InitProducerId"
    );
}

#[test]
fn kafka_read_committed_fetch_carries_the_aborted_transaction() {
    use rekafka::consumer::{IsolationLevel, visible_records};
    let pairs = kafka_pairs();
    let names = kafka_topic_names(&pairs);
    let expected = kafka_json("expected-records.json");
    let spec = &expected["topics"]["kafka-txn"];
    let (pid, _) = producer_ids(&pairs, "produce-txn")[0];
    let txns = spec["transactions"].as_array().unwrap();
    // (first offset, offset of its ABORT marker) of each aborted transaction.
    let aborted_spans: Vec<(i64, i64)> = txns
        .iter()
        .filter(|t| t["outcome"] == "aborted")
        .map(|t| {
            let first = t["first_offset"].as_i64().unwrap();
            (first, first + t["record_count"].as_i64().unwrap())
        })
        .collect();
    assert_eq!(aborted_spans.len(), 1);
    let mut aborted_listed = 0;
    let all = expected_records(spec);
    let committed: Vec<JsonRecord> = all
        .iter()
        .zip(spec["records"].as_array().unwrap())
        .filter(|(_, r)| r["outcome"] == "committed")
        .map(|(r, _)| r.clone())
        .collect();

    for (scenario, isolation) in [
        (
            "consume-kafka-txn-read_committed",
            IsolationLevel::ReadCommitted,
        ),
        (
            "consume-kafka-txn-read_uncommitted",
            IsolationLevel::ReadUncommitted,
        ),
    ] {
        let mut with_data = 0;
        for p in in_scenario(&pairs, FetchRequest::KEY, scenario) {
            let (req, resp) = p.decode::<FetchRequest>();
            assert_eq!(
                req.isolation_level,
                i8::from(isolation == IsolationLevel::ReadCommitted),
                "{scenario}"
            );
            for t in &resp.responses {
                assert_eq!(
                    names.get(&t.topic_id.to_string()).map(String::as_str),
                    Some("kafka-txn")
                );
                for part in &t.partitions {
                    assert_eq!(part.error_code, 0);
                    let Some(records) = part.records.as_ref().filter(|r| !r.is_empty()) else {
                        continue;
                    };
                    let fetch_offset = req
                        .topics
                        .iter()
                        .flat_map(|t| &t.partitions)
                        .find(|rp| rp.partition == part.partition_index)
                        .expect("the request asked for it")
                        .fetch_offset;
                    let aborted: Vec<(i64, i64)> = part
                        .aborted_transactions
                        .iter()
                        .flatten()
                        .map(|a| (a.producer_id.0, a.first_offset))
                        .collect();
                    // The range this response covers: from the fetch offset to the end of the
                    // last batch returned.
                    let end = records_of(records)
                        .last()
                        .map(|(b, _)| b.last_offset() + 1)
                        .unwrap_or(fetch_offset);
                    let in_range =
                        |r: &&JsonRecord| r.offset.is_some_and(|o| o >= fetch_offset && o < end);
                    if isolation == IsolationLevel::ReadCommitted {
                        // Kafka lists the aborted transactions that overlap that range: our
                        // producer, from the aborted batch's first offset.
                        let want: Vec<(i64, i64)> = aborted_spans
                            .iter()
                            .filter(|(first, last)| *first < end && *last >= fetch_offset)
                            .map(|(first, _)| (pid, *first))
                            .collect();
                        assert_eq!(aborted, want, "{scenario}: aborted transactions");
                        aborted_listed += aborted.len();
                        assert!(part.last_stable_offset >= 0);
                    } else {
                        assert!(aborted.is_empty(), "{scenario}: {aborted:?}");
                    }
                    // Every batch decodes (CRC checked); the raw log holds every record.
                    let raw: Vec<JsonRecord> = records_of(records)
                        .into_iter()
                        .filter(|(b, _)| !b.is_control())
                        .flat_map(|(_, r)| r)
                        .collect();
                    let logged: Vec<JsonRecord> = all.iter().filter(in_range).cloned().collect();
                    assert_eq!(raw, logged, "{scenario}: the log as fetched");
                    // Our consumer's filter, fed the captured response, yields exactly the
                    // records the isolation level allows.
                    let by_offset: Vec<(i64, i64)> = aborted.iter().map(|&(p, o)| (o, p)).collect();
                    let (visible, next) =
                        visible_records(records, fetch_offset, isolation, &by_offset).unwrap();
                    let got: Vec<JsonRecord> = visible
                        .iter()
                        .map(|r| JsonRecord {
                            offset: Some(r.offset),
                            key: r.key.as_ref().map(|k| k.to_vec()),
                            value: r.value.as_ref().map(|v| v.to_vec()),
                            headers: r
                                .headers
                                .iter()
                                .map(|h| (h.key().to_string(), h.value().map(|v| v.to_vec())))
                                .collect(),
                        })
                        .collect();
                    let want: Vec<JsonRecord> = if isolation == IsolationLevel::ReadCommitted {
                        &committed
                    } else {
                        &all
                    }
                    .iter()
                    .filter(in_range)
                    .cloned()
                    .collect();
                    assert_eq!(got, want, "{scenario}: visible records");
                    assert_eq!(next, end, "{scenario}: position after the response");
                    assert!(end <= part.high_watermark);
                    with_data += 1;
                }
            }
        }
        assert!(with_data >= 1, "{scenario}: no Fetch response with records");
    }
    assert!(
        aborted_listed >= 1,
        "no read_committed Fetch response listed the aborted transaction"
    );
}

#[test]
fn kafka_group_join_sync_with_rekafka_protocol_decoders() {
    use rekafka::group::protocol::{Assignment, Subscription};
    let pairs = kafka_pairs();
    let topic = "kafka-group";
    let mut member = None;
    let mut joined = 0;
    for p in in_scenario(&pairs, JoinGroupRequest::KEY, "group") {
        let (req, resp) = p.decode::<JoinGroupRequest>();
        assert_eq!(req.protocol_type.as_str(), "consumer");
        assert!(!req.protocols.is_empty());
        for proto in &req.protocols {
            let s = Subscription::decode(&proto.metadata)
                .unwrap_or_else(|e| panic!("{}: {e}", proto.name.as_str()));
            assert_eq!(s.topics, [topic.to_owned()], "{}", proto.name.as_str());
        }
        if resp.error_code == 0 {
            // The only member leads; its own subscription comes back in the member list.
            assert_eq!(resp.leader.as_str(), resp.member_id.as_str());
            assert_eq!(resp.members.len(), 1);
            let s = Subscription::decode(&resp.members[0].metadata).unwrap();
            assert_eq!(s.topics, [topic.to_owned()]);
            assert_eq!(
                resp.protocol_name.as_ref().map(|n| n.as_str()),
                Some("range")
            );
            member = Some(resp.member_id.to_string());
            joined += 1;
        } else {
            // KIP-394: the first JoinGroup without a member id is answered MEMBER_ID_REQUIRED
            // (79) with the id to use.
            assert_eq!(resp.error_code, 79, "{resp:?}");
            assert!(!resp.member_id.is_empty());
        }
    }
    assert_eq!(joined, 1);
    let member = member.unwrap();
    let mut synced = 0;
    for p in in_scenario(&pairs, SyncGroupRequest::KEY, "group") {
        let (req, resp) = p.decode::<SyncGroupRequest>();
        assert_eq!(req.member_id.as_str(), member);
        assert_eq!(req.assignments.len(), 1, "the leader assigns");
        let a = Assignment::decode(&req.assignments[0].assignment).unwrap();
        assert_eq!(a.partitions, BTreeMap::from([(topic.to_owned(), vec![0])]));
        assert_eq!(resp.error_code, 0);
        let a = Assignment::decode(&resp.assignment).unwrap();
        assert_eq!(a.partitions, BTreeMap::from([(topic.to_owned(), vec![0])]));
        synced += 1;
    }
    assert_eq!(synced, 1);
    // The commit of the last record consumed: the offset after it.
    let expected = kafka_json("expected-records.json");
    let want = expected["topics"][topic]["committed_offset"]
        .as_i64()
        .unwrap();
    let commits: Vec<i64> = in_scenario(&pairs, OffsetCommitRequest::KEY, "group")
        .flat_map(|p| {
            let (req, resp) = p.decode::<OffsetCommitRequest>();
            assert!(
                resp.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .all(|r| r.error_code == 0)
            );
            req.topics
                .into_iter()
                .flat_map(|t| t.partitions)
                .map(|p| p.committed_offset)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(commits, [want]);
}

#[test]
fn kafka_offset_for_leader_epoch() {
    let pairs = kafka_pairs();
    let expected = kafka_json("expected-records.json");
    let log_end = expected["topics"]["kafka-txn"]["log_end_offset"]
        .as_i64()
        .unwrap();
    let p = in_scenario(&pairs, OffsetForLeaderEpochRequest::KEY, "raw")
        .next()
        .expect("the hand-built OffsetForLeaderEpoch");
    let (req, resp) = p.decode::<OffsetForLeaderEpochRequest>();
    assert_eq!(req.replica_id.0, -1);
    assert_eq!(resp.topics.len(), 1);
    assert_eq!(resp.topics[0].topic.as_str(), "kafka-txn");
    let parts: BTreeMap<i32, _> = resp.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition, p))
        .collect();
    // Epoch 0 is the only epoch of partition 0: it ends at the log end offset.
    let p0 = parts[&0];
    assert_eq!(
        (p0.error_code, p0.leader_epoch, p0.end_offset),
        (0, 0, log_end)
    );
    // Partition 7 does not exist: UNKNOWN_TOPIC_OR_PARTITION (3).
    assert_eq!(parts[&7].error_code, 3);
    assert_eq!(parts[&7].end_offset, -1);
}

#[test]
fn kafka_sasl_handshake_and_authenticate() {
    let pairs = kafka_pairs();
    let mut mechanisms = vec![];
    for p in of(&pairs, SaslHandshakeRequest::KEY) {
        let (req, resp) = p.decode::<SaslHandshakeRequest>();
        assert_eq!(resp.error_code, 0);
        let enabled: Vec<&str> = resp.mechanisms.iter().map(|m| m.as_str()).collect();
        for m in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] {
            assert!(enabled.contains(&m), "{enabled:?}");
        }
        mechanisms.push(req.mechanism.to_string());
    }
    for m in ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] {
        assert!(mechanisms.iter().any(|x| x == m), "{mechanisms:?}");
    }

    // PLAIN: authzid, user, password in one message; accepted with an empty answer.
    let plain: Vec<_> = in_scenario(&pairs, SaslAuthenticateRequest::KEY, "sasl-plain")
        .map(|p| p.decode::<SaslAuthenticateRequest>())
        .collect();
    assert!(!plain.is_empty());
    for (req, resp) in &plain {
        assert_eq!(&req.auth_bytes[..], b"\0alice\0alice-secret");
        assert_eq!(resp.error_code, 0);
    }

    // SCRAM: client-first (n,,n=alice,r=NONCE), server-first (r=NONCE+server part, s=, i>=4096),
    // client-final (c=biws, the same r=, p=), server-final (v=).
    for scenario in ["sasl-scram-sha-256", "sasl-scram-sha-512"] {
        let steps: Vec<_> = in_scenario(&pairs, SaslAuthenticateRequest::KEY, scenario)
            .map(|p| p.decode::<SaslAuthenticateRequest>())
            .collect();
        assert!(steps.len() >= 2, "{scenario}: {} steps", steps.len());
        let text = |b: &Bytes| String::from_utf8(b.to_vec()).expect("SCRAM messages are text");
        let (first, first_resp) = &steps[0];
        let client_first = text(&first.auth_bytes);
        let client_nonce = client_first
            .strip_prefix("n,,n=alice,r=")
            .unwrap_or_else(|| panic!("{scenario}: {client_first}"));
        assert_eq!(first_resp.error_code, 0);
        let server_first = text(&first_resp.auth_bytes);
        let attrs: BTreeMap<&str, &str> = server_first
            .split(',')
            .filter_map(|a| a.split_once('='))
            .collect();
        assert!(
            attrs["r"].starts_with(client_nonce),
            "{scenario}: {server_first}"
        );
        assert!(attrs["r"].len() > client_nonce.len());
        assert!(!attrs["s"].is_empty());
        let iterations: u32 = attrs["i"].parse().unwrap();
        assert!(
            (rekafka::connection::security::SCRAM_MIN_ITERATIONS
                ..=rekafka::connection::security::SCRAM_MAX_ITERATIONS)
                .contains(&iterations),
            "{scenario}: i={iterations}"
        );
        let (last, last_resp) = &steps[1];
        let client_final = text(&last.auth_bytes);
        assert!(
            client_final.starts_with(&format!("c=biws,r={},p=", attrs["r"])),
            "{scenario}: {client_final}"
        );
        assert_eq!(last_resp.error_code, 0);
        assert!(text(&last_resp.auth_bytes).starts_with("v="), "{scenario}");
    }

    // A wrong password: SASL_AUTHENTICATION_FAILED (58) with Kafka's message.
    let p = in_scenario(&pairs, SaslAuthenticateRequest::KEY, "sasl-wrong-password")
        .next()
        .expect("the hand-built wrong login");
    let (req, resp) = p.decode::<SaslAuthenticateRequest>();
    assert_eq!(&req.auth_bytes[..], b"\0alice\0wrong-password");
    assert_eq!(resp.error_code, 58);
    assert!(
        resp.error_message
            .as_ref()
            .is_some_and(|m| m.contains("Invalid username or password")),
        "{resp:?}"
    );
}

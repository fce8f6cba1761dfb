//! Frames captured between librdkafka (confluent-kafka) and the test broker, decoded with our
//! code: every request and response decodes, matches what `kafka-protocol` decodes without our
//! guard, and the record batches librdkafka wrote — every codec, headers with duplicate keys and
//! null values, idempotent and transactional batches with their control records — decode to
//! exactly the records it sent (`frames/expected-records.json`).
//!
//! Regenerate the frames with `scripts/regen-frames.sh`.

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

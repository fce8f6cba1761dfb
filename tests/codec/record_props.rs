//! Property and differential tests of the record-batch codec (`rekafka::protocol::record`)
//! against `kafka_protocol::records` as an oracle.

use std::io::{Read, Write};

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records as kp;
use proptest::prelude::*;
use rekafka::protocol::record::{BatchBuilder, Compression, RecordBatch, RecordBatches};

type Hdrs = Vec<(String, Option<Vec<u8>>)>;

#[derive(Debug, Clone)]
struct Rec {
    ts: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Hdrs,
}

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn opt_bytes(max: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Vec::new())),
        4 => proptest::collection::vec(any::<u8>(), 0..max).prop_map(Some),
    ]
}

fn rec() -> impl Strategy<Value = Rec> {
    (
        1_600_000_000_000i64..1_600_000_100_000,
        opt_bytes(24),
        opt_bytes(300),
        // Few distinct keys so duplicates are common.
        proptest::collection::vec(("[a-c]{0,2}|é", opt_bytes(8)), 0..4),
    )
        .prop_map(|(ts, key, value, headers)| Rec {
            ts,
            key,
            value,
            headers,
        })
}

fn recs() -> impl Strategy<Value = Vec<Rec>> {
    proptest::collection::vec(rec(), 1..60)
}

fn encode_ours(recs: &[Rec], codec: Compression, base_offset: i64) -> Bytes {
    let mut b = BatchBuilder::new()
        .with_compression(codec)
        .with_base_offset(base_offset);
    for r in recs {
        let hs: Vec<(&str, Option<&[u8]>)> = r
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        b.append(r.ts, r.key.as_deref(), r.value.as_deref(), &hs)
            .unwrap();
    }
    b.build().unwrap()
}

fn decode_ours(bytes: Bytes) -> Vec<(i64, Rec)> {
    let mut out = Vec::new();
    for batch in RecordBatches::new(bytes) {
        for r in batch.unwrap().records().unwrap() {
            let r = r.unwrap();
            out.push((
                r.offset,
                Rec {
                    ts: r.timestamp,
                    key: r.key.map(|b| b.to_vec()),
                    value: r.value.map(|b| b.to_vec()),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| (h.key().to_string(), h.value().map(<[u8]>::to_vec)))
                        .collect(),
                },
            ));
        }
    }
    out
}

fn to_kp_codec(c: Compression) -> kp::Compression {
    match c {
        Compression::None => kp::Compression::None,
        Compression::Gzip => kp::Compression::Gzip,
        Compression::Snappy => kp::Compression::Snappy,
        Compression::Lz4 => kp::Compression::Lz4,
        Compression::Zstd => kp::Compression::Zstd,
        _ => unreachable!(),
    }
}

/// kafka-protocol's decode hook: LZ4 through lz4_flex, everything else built in (so no C).
fn kp_decompress(src: &mut Bytes, c: kp::Compression) -> anyhow::Result<Bytes> {
    match c {
        kp::Compression::Lz4 => {
            let mut out = Vec::new();
            lz4_flex::frame::FrameDecoder::new(&src[..]).read_to_end(&mut out)?;
            Ok(out.into())
        }
        kp::Compression::None => Ok(src.clone()),
        kp::Compression::Gzip => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&src[..]).read_to_end(&mut out)?;
            Ok(out.into())
        }
        kp::Compression::Snappy => {
            // Same as the crate's own snappy (xerial framing).
            let mut out = Vec::new();
            let mut rest = &src[16..];
            while !rest.is_empty() {
                let n = i32::from_be_bytes(rest[..4].try_into()?) as usize;
                out.extend(snap::raw::Decoder::new().decompress_vec(&rest[4..4 + n])?);
                rest = &rest[4 + n..];
            }
            Ok(out.into())
        }
        kp::Compression::Zstd => anyhow::bail!("zstd not used with kafka-protocol here"),
    }
}

/// kafka-protocol's encode hook: LZ4 through lz4_flex; the others through its own code paths
/// is not possible with a hook, so gzip/snappy use the crate's own encoder (no hook).
fn kp_lz4_compress(
    src: &mut BytesMut,
    dst: &mut BytesMut,
    c: kp::Compression,
) -> anyhow::Result<()> {
    match c {
        kp::Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(src)?;
            dst.extend_from_slice(&enc.finish()?);
        }
        kp::Compression::None => dst.extend_from_slice(src),
        _ => anyhow::bail!("unexpected codec"),
    }
    Ok(())
}

fn kp_records(recs: &[Rec], base_offset: i64) -> Vec<kp::Record> {
    recs.iter()
        .enumerate()
        .map(|(i, r)| kp::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kp::TimestampType::Creation,
            offset: base_offset + i as i64,
            // offset - sequence must stay constant or kafka-protocol splits the batch; this
            // gives base_sequence -1 (reference note, gotcha 1).
            sequence: i as i32 - 1,
            timestamp: r.ts,
            key: r.key.clone().map(Bytes::from),
            value: r.value.clone().map(Bytes::from),
            headers: r
                .headers
                .iter()
                .map(|(k, v)| (StrBytes::from_string(k.clone()), v.clone().map(Bytes::from)))
                .collect(),
        })
        .collect()
}

fn encode_kp(recs: &[Rec], codec: Compression, base_offset: i64) -> Bytes {
    let records = kp_records(recs, base_offset);
    let opts = kp::RecordEncodeOptions {
        version: 2,
        compression: to_kp_codec(codec),
    };
    let mut buf = BytesMut::new();
    match codec {
        Compression::Lz4 | Compression::None => {
            kp::RecordBatchEncoder::encode_with_custom_compression(
                &mut buf,
                &records,
                &opts,
                Some(kp_lz4_compress),
            )
            .unwrap()
        }
        _ => kp::RecordBatchEncoder::encode(&mut buf, &records, &opts).unwrap(),
    }
    buf.freeze()
}

/// Headers as kafka-protocol keeps them: an IndexMap, so duplicate keys collapse (last value
/// wins, first position kept).
fn collapse(h: &Hdrs) -> IndexMap<String, Option<Vec<u8>>> {
    let mut m = IndexMap::new();
    for (k, v) in h {
        m.insert(k.clone(), v.clone());
    }
    m
}

fn dedup_headers(recs: &mut [Rec]) {
    for r in recs {
        r.headers = collapse(&r.headers).into_iter().collect();
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_every_codec(recs in recs(), base in 0i64..1 << 40) {
        for codec in CODECS {
            let got = decode_ours(encode_ours(&recs, codec, base));
            prop_assert_eq!(got.len(), recs.len());
            for (i, ((off, g), r)) in got.iter().zip(&recs).enumerate() {
                prop_assert_eq!(*off, base + i as i64);
                prop_assert_eq!(g.ts, r.ts);
                prop_assert_eq!(&g.key, &r.key);
                prop_assert_eq!(&g.value, &r.value);
                prop_assert_eq!(&g.headers, &r.headers);
            }
        }
    }

    #[test]
    fn ours_decoded_by_kafka_protocol(recs in recs(), base in 0i64..1 << 40) {
        for codec in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4] {
            let mut bytes = encode_ours(&recs, codec, base);
            let sets = {
                let mut all = Vec::new();
                while !bytes.is_empty() {
                    all.push(kp::RecordBatchDecoder::decode_with_custom_compression(
                        &mut bytes, Some(kp_decompress)).unwrap());
                }
                all
            };
            prop_assert_eq!(sets.len(), 1);
            let theirs = &sets[0].records;
            prop_assert_eq!(theirs.len(), recs.len());
            for (i, (t, r)) in theirs.iter().zip(&recs).enumerate() {
                prop_assert_eq!(t.offset, base + i as i64);
                prop_assert_eq!(t.timestamp, r.ts);
                prop_assert_eq!(t.key.as_deref(), r.key.as_deref());
                prop_assert_eq!(t.value.as_deref(), r.value.as_deref());
                let th: IndexMap<String, Option<Vec<u8>>> = t.headers.iter()
                    .map(|(k, v)| (k.to_string(), v.as_ref().map(|b| b.to_vec()))).collect();
                prop_assert_eq!(th, collapse(&r.headers));
                prop_assert_eq!(t.producer_id, -1);
            }
        }
    }

    #[test]
    fn kafka_protocol_decoded_by_ours(recs in recs(), base in 0i64..1 << 40) {
        let mut recs = recs;
        // kafka-protocol cannot encode duplicate header keys.
        dedup_headers(&mut recs);
        for codec in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4] {
            let bytes = encode_kp(&recs, codec, base);
            let mut it = RecordBatches::new(bytes);
            let batch = it.next().unwrap().unwrap();
            prop_assert!(it.next().is_none());
            prop_assert_eq!(batch.compression(), codec);
            prop_assert_eq!(batch.base_sequence(), -1);
            prop_assert_eq!(batch.record_count() as usize, recs.len());
            prop_assert_eq!(batch.next_offset(), base + recs.len() as i64);
            let got = decode_ours(batch.as_bytes().clone());
            prop_assert_eq!(got.len(), recs.len());
            for (i, ((off, g), r)) in got.iter().zip(&recs).enumerate() {
                prop_assert_eq!(*off, base + i as i64);
                prop_assert_eq!(g.ts, r.ts);
                prop_assert_eq!(&g.key, &r.key);
                prop_assert_eq!(&g.value, &r.value);
                prop_assert_eq!(&g.headers, &r.headers);
            }
        }
    }
}

/// Decodes everything in `bytes`, touching every record and header; must not panic.
fn walk(bytes: Bytes) {
    let mut it = RecordBatches::new(bytes);
    for batch in it.by_ref() {
        let Ok(batch) = batch else { break };
        let _ = batch.control_record();
        let Ok(records) = batch.records_with_limit(1 << 20) else {
            continue;
        };
        for r in records {
            let Ok(r) = r else { break };
            std::hint::black_box((&r.key, &r.value, r.offset, r.timestamp));
            for h in r.headers.iter() {
                std::hint::black_box((h.key(), h.value()));
            }
        }
    }
    let _ = it.truncated_tail();
}

fn recrc(m: &mut [u8]) {
    if m.len() >= 61 {
        let crc = crc32c::crc32c(&m[21..]);
        m[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    SetI32(usize, i32),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let huge = prop_oneof![
        Just(i32::MAX),
        Just(i32::MIN),
        Just(-1),
        Just(-2),
        Just(1 << 30),
        any::<i32>()
    ];
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(p, b)| Mutation::Flip(p, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        // Header length/count fields, or anywhere.
        (
            prop_oneof![Just(8usize), Just(57), Just(23), any::<usize>()],
            huge
        )
            .prop_map(|(p, v)| Mutation::SetI32(p, v)),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..12)
        )
            .prop_map(|(p, v)| Mutation::Insert(p, v)),
    ]
}

fn apply(m: &mut Vec<u8>, mutation: &Mutation) {
    if m.is_empty() {
        return;
    }
    match mutation {
        Mutation::Flip(p, b) => {
            let p = p % m.len();
            m[p] ^= b;
        }
        Mutation::Truncate(p) => m.truncate(p % m.len()),
        Mutation::SetI32(p, v) => {
            if m.len() >= 4 {
                let p = p % (m.len() - 3);
                m[p..p + 4].copy_from_slice(&v.to_be_bytes());
            }
        }
        Mutation::Insert(p, v) => {
            let p = p % m.len();
            m.splice(p..p, v.iter().copied());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        walk(Bytes::from(bytes.clone()));
        // The same bytes behind a valid-looking header.
        let mut m = vec![0u8; 61];
        m[8..12].copy_from_slice(&((49 + bytes.len()) as i32).to_be_bytes());
        m[16] = 2;
        m[57..61].copy_from_slice(&3i32.to_be_bytes());
        m.extend_from_slice(&bytes);
        for codec in 0..5u8 {
            m[22] = codec;
            recrc(&mut m);
            walk(Bytes::from(m.clone()));
        }
    }

    #[test]
    fn mutated_batches_never_panic(
        recs in proptest::collection::vec(rec(), 1..8),
        codec in 0usize..5,
        mutations in proptest::collection::vec(mutation(), 1..4),
        fix_crc in any::<bool>(),
    ) {
        let mut m = encode_ours(&recs, CODECS[codec], 0).to_vec();
        m.extend_from_slice(&encode_ours(&recs, Compression::None, 100));
        for mu in &mutations {
            apply(&mut m, mu);
        }
        if fix_crc {
            recrc(&mut m);
        }
        walk(Bytes::from(m));
    }
}

#[test]
fn mutated_records_with_valid_crc_report_errors() {
    let recs: Vec<Rec> = (0..5)
        .map(|i| Rec {
            ts: i,
            key: Some(vec![1; 3]),
            value: Some(vec![2; 10]),
            headers: vec![("k".into(), Some(vec![3]))],
        })
        .collect();
    let good = encode_ours(&recs, Compression::None, 0).to_vec();
    let mut errors = 0;
    for pos in 61..good.len() {
        let mut m = good.clone();
        m[pos] ^= 0x40;
        recrc(&mut m);
        let batch = RecordBatch::decode(Bytes::from(m)).unwrap();
        if batch.records().unwrap().any(|r| r.is_err()) {
            errors += 1;
        }
    }
    assert!(errors > 0);
}

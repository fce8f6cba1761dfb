//! Record-batch codec throughput: ours (`rekafka::protocol::record`) against
//! `kafka_protocol::records`, one batch of 1000 records with 100-byte text-like values, no key
//! or headers, uncompressed and LZ4 (kafka-protocol's LZ4 through lz4_flex hooks).
//!
//! Run: `cargo bench --bench codec`.

use std::hint::black_box;
use std::io::{Read, Write};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::records as kp;
use rekafka::protocol::record::{BatchBuilder, Compression, RecordBatches};

const N: usize = 1000;

/// Text-like 100-byte values: words from a small vocabulary, varying per record.
fn values() -> Vec<Vec<u8>> {
    const WORDS: [&str; 16] = [
        "order", "id", "customer", "amount", "status", "shipped", "pending", "eur", "usd", "item",
        "sku", "qty", "price", "note", "fast", "gift",
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    (0..N)
        .map(|i| {
            let mut v = format!("{{\"n\":{i},\"t\":\"");
            while v.len() < 100 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                v.push_str(WORDS[(seed % 16) as usize]);
                v.push(' ');
            }
            v.truncate(100);
            v.into_bytes()
        })
        .collect()
}

const T0: i64 = 1_700_000_000_000;

fn encode_ours(values: &[Vec<u8>], codec: Compression) -> Bytes {
    let mut b = BatchBuilder::with_capacity(N * 120).with_compression(codec);
    for (i, v) in values.iter().enumerate() {
        b.append(T0 + i as i64, None, Some(v), &[]).unwrap();
    }
    b.build().unwrap()
}

fn decode_ours(bytes: &Bytes) -> usize {
    let mut n = 0;
    for batch in RecordBatches::new(bytes.clone()) {
        for r in batch.unwrap().records().unwrap() {
            let r = r.unwrap();
            black_box(&r.key);
            black_box(&r.value);
            for h in r.headers.iter() {
                black_box(h);
            }
            n += 1;
        }
    }
    n
}

/// The borrowed walk: the same checks (CRC, framing, record count, header validation), with
/// key and value as slices of the batch instead of `Bytes` handles.
fn decode_ours_ref(bytes: &Bytes) -> usize {
    let mut n = 0;
    for batch in RecordBatches::new(bytes.clone()) {
        let mut records = batch.unwrap().records().unwrap();
        while let Some(r) = records.next_ref() {
            let r = r.unwrap();
            black_box(r.key);
            black_box(r.value);
            for h in r.headers() {
                black_box(h);
            }
            n += 1;
        }
    }
    n
}

fn kp_records(values: &[Vec<u8>]) -> Vec<kp::Record> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| kp::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kp::TimestampType::Creation,
            offset: i as i64,
            // offset - sequence constant, base sequence -1: one batch, not 1000.
            sequence: i as i32 - 1,
            timestamp: T0 + i as i64,
            key: None,
            value: Some(Bytes::from(v.clone())),
            headers: IndexMap::new(),
        })
        .collect()
}

fn kp_compress(src: &mut BytesMut, dst: &mut BytesMut, c: kp::Compression) -> anyhow::Result<()> {
    match c {
        kp::Compression::Lz4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(src)?;
            dst.extend_from_slice(&enc.finish()?);
        }
        _ => dst.extend_from_slice(src),
    }
    Ok(())
}

fn kp_decompress(src: &mut Bytes, c: kp::Compression) -> anyhow::Result<Bytes> {
    match c {
        kp::Compression::Lz4 => {
            let mut out = Vec::new();
            lz4_flex::frame::FrameDecoder::new(&src[..]).read_to_end(&mut out)?;
            Ok(out.into())
        }
        _ => Ok(src.clone()),
    }
}

fn encode_kp(records: &[kp::Record], codec: kp::Compression) -> Bytes {
    let mut buf = BytesMut::new();
    let opts = kp::RecordEncodeOptions {
        version: 2,
        compression: codec,
    };
    kp::RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        records,
        &opts,
        Some(kp_compress),
    )
    .unwrap();
    buf.freeze()
}

fn decode_kp(bytes: &Bytes) -> usize {
    let mut buf = bytes.clone();
    let mut n = 0;
    while !buf.is_empty() {
        let set =
            kp::RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(kp_decompress))
                .unwrap();
        for r in &set.records {
            black_box(&r.key);
            black_box(&r.value);
            for h in &r.headers {
                black_box(h);
            }
            n += 1;
        }
    }
    n
}

fn bench(c: &mut Criterion) {
    let values = values();
    let kp_recs = kp_records(&values);
    for (name, ours, theirs) in [
        ("none", Compression::None, kp::Compression::None),
        ("lz4", Compression::Lz4, kp::Compression::Lz4),
    ] {
        let ours_bytes = encode_ours(&values, ours);
        let kp_bytes = encode_kp(&kp_recs, theirs);
        // Both encoders produce one batch that both decoders read.
        assert_eq!(decode_ours(&ours_bytes), N);
        assert_eq!(decode_ours(&kp_bytes), N);
        assert_eq!(decode_ours_ref(&ours_bytes), N);
        assert_eq!(decode_kp(&ours_bytes), N);
        assert_eq!(decode_kp(&kp_bytes), N);

        let mut g = c.benchmark_group(format!("decode/{name}"));
        g.throughput(Throughput::Elements(N as u64));
        g.bench_function("rekafka", |b| {
            b.iter(|| decode_ours(black_box(&ours_bytes)))
        });
        g.bench_function("rekafka-borrowed", |b| {
            b.iter(|| decode_ours_ref(black_box(&ours_bytes)))
        });
        g.bench_function("kafka-protocol", |b| {
            b.iter(|| decode_kp(black_box(&kp_bytes)))
        });
        g.finish();

        let mut g = c.benchmark_group(format!("encode/{name}"));
        g.throughput(Throughput::Elements(N as u64));
        g.bench_function("rekafka", |b| {
            b.iter(|| encode_ours(black_box(&values), ours))
        });
        g.bench_function("kafka-protocol", |b| {
            b.iter(|| encode_kp(black_box(&kp_recs), theirs))
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .sample_size(20);
    targets = bench
}
criterion_main!(benches);

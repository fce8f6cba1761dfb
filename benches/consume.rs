//! The consumer's per-record cost without a broker: one partition's fetched data (10 batches of
//! 1000 records, 100-byte values, keys and one header) through the same batch-header decoding
//! (`decode_partition`) and record walk (`drain`) that `poll` uses, into `ConsumerRecord`s.
//!
//! Run: `cargo bench --bench consume`. The broker-level benchmark is `rekafka perf consume`
//! (BENCHMARKS.md).

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rekafka::consumer::{IsolationLevel, visible_records};
use rekafka::protocol::record::{BatchBuilder, Compression};

fn fetched(compression: Compression) -> Bytes {
    let mut all = BytesMut::new();
    let value = [b'x'; 100];
    for b in 0..10i64 {
        let mut builder = BatchBuilder::new()
            .with_base_offset(b * 1000)
            .with_compression(compression);
        for i in 0..1000 {
            let key = format!("k{i}");
            builder
                .append(
                    1_700_000_000_000 + i,
                    Some(key.as_bytes()),
                    Some(&value),
                    &[("h", Some(b"v"))],
                )
                .unwrap();
        }
        all.extend_from_slice(&builder.build().unwrap());
    }
    all.freeze()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("consume");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(10_000));
    for (name, comp) in [("none", Compression::None), ("lz4", Compression::Lz4)] {
        let data = fetched(comp);
        g.bench_function(format!("decode_and_walk_{name}"), |b| {
            b.iter(|| {
                let (recs, pos) =
                    visible_records(black_box(&data), 0, IsolationLevel::ReadCommitted, &[])
                        .unwrap();
                assert_eq!(pos, 10_000);
                black_box(recs)
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

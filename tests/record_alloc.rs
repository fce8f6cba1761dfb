//! Allocation bounds of the record-batch decoder under hostile input, measured with a counting
//! global allocator. The tests in this binary share the allocator's counters, so they hold a
//! lock while measuring.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use rekafka::protocol::record::{BatchBuilder, Compression, RecordBatches};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LOCK: Mutex<()> = Mutex::new(());

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        PEAK.fetch_max(now, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            let now = CURRENT.fetch_add(new_size - layout.size(), Ordering::SeqCst) + new_size
                - layout.size();
            PEAK.fetch_max(now, Ordering::SeqCst);
        } else {
            CURRENT.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak bytes allocated (above the level at the start) while running `f`.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    f();
    PEAK.load(Ordering::SeqCst).saturating_sub(base)
}

fn recrc(m: &mut [u8]) {
    let crc = crc32c::crc32c(&m[21..]);
    m[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Decodes everything, touching every record and header; returns whether any error was seen.
fn walk(bytes: Bytes) -> bool {
    let mut err = false;
    for batch in RecordBatches::new(bytes) {
        let Ok(batch) = batch else { return true };
        let Ok(records) = batch.records_with_limit(1 << 20) else {
            err = true;
            continue;
        };
        for r in records {
            match r {
                Ok(r) => {
                    for h in r.headers.iter() {
                        std::hint::black_box(h.key());
                    }
                }
                Err(_) => {
                    err = true;
                    break;
                }
            }
        }
    }
    err
}

fn one_record_batch(codec: Compression) -> Vec<u8> {
    let mut b = BatchBuilder::new().with_compression(codec);
    b.append(1, Some(b"k"), Some(b"value"), &[("h", None)])
        .unwrap();
    b.build().unwrap().to_vec()
}

#[test]
fn huge_record_count_and_record_length_rejected_with_small_peak() {
    let _g = LOCK.lock().unwrap();
    for codec in [Compression::None, Compression::Lz4, Compression::Gzip] {
        // A header claiming ~2^31 records.
        let mut m = one_record_batch(Compression::None);
        m[57..61].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        recrc(&mut m);
        let bytes = Bytes::from(m);
        let peak = peak_during(|| assert!(walk(bytes.clone())));
        assert!(
            peak < 4096,
            "{codec}: peak {peak} bytes for a 2^31-record claim"
        );

        // A record claiming a 2 GB length: record length varint (zig-zag) of 2_000_000_000.
        let mut records = Vec::new();
        let mut v = (2_000_000_000u64) << 1;
        while v >= 0x80 {
            records.push((v as u8) | 0x80);
            v >>= 7;
        }
        records.push(v as u8);
        records.extend_from_slice(&[0; 16]);
        let mut payload = Vec::new();
        let mut b = BatchBuilder::new().with_compression(codec);
        b.append(0, None, Some(b"x"), &[]).unwrap();
        let template = b.build().unwrap().to_vec();
        payload.extend_from_slice(&template[..61]);
        // Compress the hostile records with the codec, so the claim reaches the record parser.
        let compressed = records;
        let body = if codec == Compression::None {
            compressed
        } else {
            let mut enc = Vec::new();
            match codec {
                Compression::Lz4 => {
                    use std::io::Write;
                    let mut e = lz4_flex::frame::FrameEncoder::new(&mut enc);
                    e.write_all(&compressed).unwrap();
                    e.finish().unwrap();
                }
                _ => {
                    use std::io::Write;
                    let mut e =
                        flate2::write::GzEncoder::new(&mut enc, flate2::Compression::default());
                    e.write_all(&compressed).unwrap();
                    e.finish().unwrap();
                }
            }
            enc
        };
        payload.extend_from_slice(&body);
        let len = (payload.len() - 12) as i32;
        payload[8..12].copy_from_slice(&len.to_be_bytes());
        payload[57..61].copy_from_slice(&1i32.to_be_bytes());
        recrc(&mut payload);
        let input_len = payload.len();
        let bytes = Bytes::from(payload);
        let peak = peak_during(|| assert!(walk(bytes.clone())));
        // Decompression state (gzip/lz4 tables, the output buffer) is bounded, never 2 GB.
        assert!(
            peak < 256 * 1024 + 16 * input_len,
            "{codec}: peak {peak} bytes for a 2 GB record claim"
        );
    }
}

#[test]
fn negative_and_huge_batch_lengths_do_not_allocate() {
    let _g = LOCK.lock().unwrap();
    for len in [i32::MIN, -1, 0, 48, i32::MAX, 1 << 30] {
        let mut m = one_record_batch(Compression::None);
        m[8..12].copy_from_slice(&len.to_be_bytes());
        let bytes = Bytes::from(m);
        let peak = peak_during(|| {
            let mut it = RecordBatches::new(bytes.clone());
            assert!(it.next().is_none_or(|r| r.is_err()), "{len}");
        });
        assert!(peak < 1024, "batch length {len}: peak {peak}");
    }
}

#[test]
fn decompression_bomb_is_bounded() {
    let _g = LOCK.lock().unwrap();
    // 10 MB of zeros in one record compresses to a few KB with gzip.
    let zeros = vec![0u8; 10 << 20];
    for codec in [
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
        Compression::Snappy,
    ] {
        let mut b = BatchBuilder::new().with_compression(codec);
        b.append(0, None, Some(&zeros), &[]).unwrap();
        let bytes = b.build().unwrap();
        let batch = RecordBatches::new(bytes).next().unwrap().unwrap();
        let peak = peak_during(|| {
            assert!(batch.records_with_limit(1 << 20).is_err());
        });
        assert!(peak < 4 << 20, "{codec}: peak {peak}");
    }
}

#[test]
fn random_mutations_allocate_proportionally() {
    let _g = LOCK.lock().unwrap();
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let base = one_record_batch(Compression::None);
    let strat = proptest::collection::vec((0usize..200, proptest::num::u8::ANY), 1..6);
    for _ in 0..2000 {
        let muts = strat.new_tree(&mut runner).unwrap().current();
        let mut m = base.clone();
        m.extend_from_slice(&base);
        for (p, b) in muts {
            let p = p % m.len();
            m[p] ^= b;
        }
        if m[0] & 1 == 0 {
            recrc(&mut m);
        }
        let n = m.len();
        let bytes = Bytes::from(m);
        let peak = peak_during(|| {
            walk(bytes.clone());
        });
        assert!(peak < 4096 + 16 * n, "peak {peak} for {n} input bytes");
    }
}

/// A snappy batch whose records payload is `payload` (the batch header is a real one, with its
/// length and CRC fixed up).
fn snappy_batch_with_payload(payload: &[u8]) -> Bytes {
    let mut m = one_record_batch(Compression::Snappy);
    m.truncate(61);
    m.extend_from_slice(payload);
    let len = (m.len() - 12) as i32;
    m[8..12].copy_from_slice(&len.to_be_bytes());
    recrc(&mut m);
    Bytes::from(m)
}

/// A raw snappy block: a varint header claiming `claimed` bytes, then a few literal bytes.
fn hostile_snappy_block(claimed: u64) -> Vec<u8> {
    let mut v = claimed;
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    // A 4-byte literal: tag (len - 1) << 2.
    out.extend_from_slice(&[3 << 2, b'a', b'b', b'c', b'd']);
    out
}

#[test]
fn snappy_length_header_does_not_zero_fill_what_it_claims() {
    let _g = LOCK.lock().unwrap();
    // Just below the default 64 MiB limit, so only the header's claim stands in the way.
    let claimed = (60u64) << 20;
    // Raw (unframed) snappy, as librdkafka may write it.
    let raw = hostile_snappy_block(claimed);
    // The same block in xerial framing, as the Java client writes it.
    let mut xerial = b"\x82SNAPPY\0".to_vec();
    xerial.extend_from_slice(&1i32.to_be_bytes());
    xerial.extend_from_slice(&1i32.to_be_bytes());
    xerial.extend_from_slice(&(raw.len() as i32).to_be_bytes());
    xerial.extend_from_slice(&raw);
    for (what, payload) in [("raw", raw), ("xerial", xerial)] {
        let bytes = snappy_batch_with_payload(&payload);
        let batch = RecordBatches::new(bytes).next().unwrap().unwrap();
        let peak = peak_during(|| {
            assert!(batch.records().is_err(), "{what}");
        });
        assert!(
            peak < 64 * 1024,
            "{what}: peak {peak} bytes for a {} byte snappy block claiming {claimed} bytes",
            payload.len()
        );
    }
}

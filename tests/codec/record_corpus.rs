//! Replays the crafted hostile inputs under `tests/corpus/record/` through the record-batch
//! decoder. File names say what must happen: `err_*` must produce an error somewhere (batch,
//! records or headers), `trunc_*` must end on a truncated tail, `ok_*` must decode cleanly.
//!
//! Regenerate the corpus with `cargo test --test codec -- --ignored record_corpus::generate`.

use std::path::PathBuf;

use bytes::Bytes;
use rekafka::protocol::record::{BatchBuilder, Compression, RecordBatches};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/record")
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Ok,
    Err,
    Truncated,
}

fn decode(bytes: Bytes) -> Outcome {
    let mut it = RecordBatches::new(bytes);
    for batch in it.by_ref() {
        let Ok(batch) = batch else {
            return Outcome::Err;
        };
        if batch.is_control() && batch.control_record().is_err() {
            return Outcome::Err;
        }
        let Ok(records) = batch.records_with_limit(1 << 20) else {
            return Outcome::Err;
        };
        for r in records {
            let Ok(r) = r else { return Outcome::Err };
            for h in r.headers.iter() {
                std::hint::black_box((h.key(), h.value()));
            }
        }
    }
    if it.truncated_tail() {
        Outcome::Truncated
    } else {
        Outcome::Ok
    }
}

#[test]
fn replay_corpus() {
    let mut n = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = Bytes::from(std::fs::read(&path).unwrap());
        let expected = if name.starts_with("err_") {
            Outcome::Err
        } else if name.starts_with("trunc_") {
            Outcome::Truncated
        } else {
            Outcome::Ok
        };
        assert_eq!(decode(bytes), expected, "{name}");
        n += 1;
    }
    assert!(n >= 10, "corpus has only {n} files");
}

fn recrc(m: &mut [u8]) {
    let crc = crc32c::crc32c(&m[21..]);
    m[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn set_len(m: &mut [u8]) {
    let len = (m.len() - 12) as i32;
    m[8..12].copy_from_slice(&len.to_be_bytes());
}

fn batch(codec: Compression) -> Vec<u8> {
    let mut b = BatchBuilder::new().with_compression(codec);
    b.append(
        1_000,
        Some(b"key"),
        Some(b"value value value"),
        &[("h", Some(b"1")), ("h", None)],
    )
    .unwrap();
    b.append(1_001, None, None, &[]).unwrap();
    b.build().unwrap().to_vec()
}

/// Replaces the records part of an uncompressed batch and fixes length and CRC.
fn with_records(records: &[u8], count: i32) -> Vec<u8> {
    let mut m = batch(Compression::None)[..61].to_vec();
    m.extend_from_slice(records);
    m[57..61].copy_from_slice(&count.to_be_bytes());
    set_len(&mut m);
    recrc(&mut m);
    m
}

#[test]
#[ignore = "writes the corpus files"]
fn generate() {
    let d = dir();
    std::fs::create_dir_all(&d).unwrap();
    let write = |name: &str, data: &[u8]| std::fs::write(d.join(name), data).unwrap();

    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        write(&format!("ok_two_records_{codec}.bin"), &batch(codec));
    }
    let good = batch(Compression::None);
    let mut two = good.clone();
    two.extend_from_slice(&good);
    write("trunc_second_batch_cut.bin", &two[..two.len() - 7]);
    write("trunc_only_length_prefix.bin", &good[..10]);

    let mut m = good.clone();
    m[8..12].copy_from_slice(&(-1i32).to_be_bytes());
    write("err_negative_batch_length.bin", &m);
    let mut m = good.clone();
    m[8..12].copy_from_slice(&i32::MIN.to_be_bytes());
    write("err_min_batch_length.bin", &m);
    let mut m = good.clone();
    m[8..12].copy_from_slice(&0x7fff_fff0i32.to_be_bytes());
    write("err_huge_batch_length.bin", &m);
    let mut m = good.clone();
    m[16] = 1;
    write("err_magic_1.bin", &m);
    let mut m = good.clone();
    m[40] ^= 0xff;
    write("err_crc_mismatch.bin", &m);
    let mut m = good.clone();
    m[57..61].copy_from_slice(&(i32::MAX).to_be_bytes());
    recrc(&mut m);
    write("err_record_count_2pow31.bin", &m);
    let mut m = good.clone();
    m[57..61].copy_from_slice(&(-7i32).to_be_bytes());
    recrc(&mut m);
    write("err_negative_record_count.bin", &m);

    // Record length varint of 2^31-1 (zig-zag 0xfffffffe), then garbage.
    write(
        "err_record_length_2gb.bin",
        &with_records(&[0xfe, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0], 1),
    );
    // Negative record length (-2).
    write(
        "err_record_length_negative.bin",
        &with_records(&[0x03, 0, 0, 0], 1),
    );
    // Overlong varint (6 bytes) as record length.
    write(
        "err_overlong_varint.bin",
        &with_records(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00, 0, 0], 1),
    );
    // Record: len 12, attrs 0, overlong varlong timestamp delta (11 bytes).
    let mut rec = vec![24u8, 0];
    rec.extend_from_slice(&[0xff; 10]);
    rec.push(0);
    write("err_overlong_varlong.bin", &with_records(&rec, 1));
    // Record whose value length (2^30) exceeds the record.
    write(
        "err_value_length_huge.bin",
        &with_records(&[12, 0, 0, 0, 1, 0x80, 0x80, 0x80, 0x80, 0x08, 0], 1),
    );
    // Record claiming 2^30 headers.
    write(
        "err_header_count_huge.bin",
        &with_records(&[14, 0, 0, 0, 1, 1, 0x80, 0x80, 0x80, 0x80, 0x08], 1),
    );
    // Record with a header key that is not UTF-8.
    write(
        "err_header_key_not_utf8.bin",
        &with_records(&[16, 0, 0, 0, 1, 1, 2, 4, 0xc3, 0x28, 1], 1),
    );

    // Xerial snappy with a chunk longer than its input.
    let mut m = batch(Compression::Snappy);
    m[61 + 16..61 + 20].copy_from_slice(&0x7fff_0000i32.to_be_bytes());
    recrc(&mut m);
    write("err_snappy_chunk_longer_than_input.bin", &m);
    // Xerial snappy with a negative chunk length.
    let mut m = batch(Compression::Snappy);
    m[61 + 16..61 + 20].copy_from_slice(&(-1i32).to_be_bytes());
    recrc(&mut m);
    write("err_snappy_negative_chunk.bin", &m);
    // Garbage behind the lz4 and zstd codecs.
    for (codec, name) in [(3u8, "lz4"), (4, "zstd"), (1, "gzip"), (7, "codec7")] {
        let mut m = with_records(b"\x04\x22\x4d\x18garbage garbage garbage", 1);
        m[22] = codec;
        recrc(&mut m);
        write(&format!("err_garbage_{name}.bin"), &m);
    }
    // A control batch whose key is too short.
    let mut m = with_records(&[10, 0, 0, 0, 4, 0, 1, 2, 3, 0xff, 0xff], 1);
    m[22] |= 0x30;
    recrc(&mut m);
    let _ = &mut m;
    write("err_control_key_short.bin", &m);
}

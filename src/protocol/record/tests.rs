use bytes::{Bytes, BytesMut};

use super::*;
use crate::ErrorKind;

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

type Rec = (
    i64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

fn sample_records(n: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| {
            let key = match i % 4 {
                0 => None,
                _ => Some(format!("key-{i}").into_bytes()),
            };
            let value = match i % 5 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(format!("value number {i} ").repeat(i % 7 + 1).into_bytes()),
            };
            let headers = match i % 3 {
                0 => vec![],
                1 => vec![
                    ("a".to_string(), Some(b"1".to_vec())),
                    ("a".to_string(), None),
                ],
                _ => vec![
                    ("dup".to_string(), Some(b"x".to_vec())),
                    ("ü".to_string(), Some(Vec::new())),
                    ("dup".to_string(), Some(b"y".to_vec())),
                ],
            };
            (
                1_700_000_000_000 + (i as i64 % 11) * 7 - 20,
                key,
                value,
                headers,
            )
        })
        .collect()
}

fn build(recs: &[Rec], b: BatchBuilder) -> Bytes {
    let mut b = b;
    for (ts, k, v, h) in recs {
        let hs: Vec<(&str, Option<&[u8]>)> =
            h.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
        b.append(*ts, k.as_deref(), v.as_deref(), &hs).unwrap();
    }
    b.build().unwrap()
}

fn check(recs: &[Rec], batch: &RecordBatch, base_offset: i64) {
    let got: Vec<Record> = batch.records().unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(got.len(), recs.len());
    for (i, (r, (ts, k, v, h))) in got.iter().zip(recs).enumerate() {
        assert_eq!(r.offset, base_offset + i as i64);
        assert_eq!(r.timestamp, *ts);
        assert_eq!(r.key.as_deref(), k.as_deref());
        assert_eq!(r.value.as_deref(), v.as_deref());
        let hs: Vec<(String, Option<Vec<u8>>)> = r
            .headers
            .iter()
            .map(|h| (h.key().to_string(), h.value().map(|v| v.to_vec())))
            .collect();
        assert_eq!(&hs, h);
    }
}

#[test]
fn round_trip_every_codec() {
    let recs = sample_records(500);
    for codec in CODECS {
        let bytes = build(
            &recs,
            BatchBuilder::new()
                .with_compression(codec)
                .with_base_offset(42)
                .with_producer(7, 3, 11)
                .with_partition_leader_epoch(5)
                .with_transactional(true),
        );
        let mut it = RecordBatches::new(bytes.clone());
        let batch = it.next().unwrap().unwrap();
        assert!(it.next().is_none());
        assert!(!it.truncated_tail());
        assert_eq!(batch.compression(), codec);
        assert_eq!(batch.base_offset(), 42);
        assert_eq!(batch.batch_length() as usize, bytes.len() - 12);
        assert_eq!(batch.magic(), 2);
        assert_eq!(batch.partition_leader_epoch(), 5);
        assert_eq!(batch.producer_id(), 7);
        assert_eq!(batch.producer_epoch(), 3);
        assert_eq!(batch.base_sequence(), 11);
        assert!(batch.is_transactional());
        assert!(!batch.is_control());
        assert!(!batch.has_delete_horizon());
        assert_eq!(batch.timestamp_type(), TimestampType::CreateTime);
        assert_eq!(batch.record_count(), 500);
        assert_eq!(batch.last_offset_delta(), 499);
        assert_eq!(batch.last_offset(), 42 + 499);
        assert_eq!(batch.next_offset(), 42 + 500);
        assert_eq!(batch.base_timestamp(), recs[0].0);
        assert_eq!(
            batch.max_timestamp(),
            recs.iter().map(|r| r.0).max().unwrap()
        );
        check(&recs, &batch, 42);
    }
}

#[test]
fn defaults_are_non_idempotent() {
    let bytes = build(&sample_records(3), BatchBuilder::new());
    let batch = RecordBatch::decode(bytes).unwrap();
    assert_eq!(
        (
            batch.producer_id(),
            batch.producer_epoch(),
            batch.base_sequence(),
            batch.partition_leader_epoch()
        ),
        (-1, -1, -1, -1)
    );
}

#[test]
fn log_append_time_uses_max_timestamp() {
    let mut b = BatchBuilder::new().with_timestamp_type(TimestampType::LogAppendTime);
    b.append(10, None, Some(b"a"), &[]).unwrap();
    b.append(30, None, Some(b"b"), &[]).unwrap();
    b.append(20, None, Some(b"c"), &[]).unwrap();
    let batch = RecordBatch::decode(b.build().unwrap()).unwrap();
    assert_eq!(batch.timestamp_type(), TimestampType::LogAppendTime);
    assert!(batch.records().unwrap().all(|r| r.unwrap().timestamp == 30));
}

#[test]
fn truncated_tail_yields_complete_batches() {
    let mut buf = BytesMut::new();
    for i in 0..3 {
        buf.extend_from_slice(&build(
            &sample_records(20),
            BatchBuilder::new().with_base_offset(i * 20),
        ));
    }
    let full = buf.freeze();
    let one = full.len() / 3;
    for cut in [1, 11, 12, 60, 61, one - 1] {
        let mut it = RecordBatches::new(full.slice(..full.len() - cut));
        let offsets: Vec<i64> = it.by_ref().map(|b| b.unwrap().base_offset()).collect();
        assert_eq!(offsets, vec![0, 20], "cut {cut}");
        assert!(it.truncated_tail());
        assert_eq!(it.remaining().len(), one - cut);
    }
    let mut it = RecordBatches::new(full.clone());
    assert_eq!(it.by_ref().count(), 3);
    assert!(!it.truncated_tail());
}

#[test]
fn crc_mismatch_rejected() {
    let bytes = build(&sample_records(5), BatchBuilder::new());
    for pos in [21, 30, 61, bytes.len() - 1] {
        let mut m = bytes.to_vec();
        m[pos] ^= 0x01;
        let err = RecordBatches::new(Bytes::from(m))
            .next()
            .unwrap()
            .unwrap_err();
        assert_eq!(err.kind(), &ErrorKind::Corrupt);
    }
    // base_offset and leader epoch are outside the CRC.
    let mut m = bytes.to_vec();
    set_base_offset(&mut m, 1000).unwrap();
    set_partition_leader_epoch(&mut m, 9).unwrap();
    let b = RecordBatch::decode(Bytes::from(m.clone())).unwrap();
    assert_eq!((b.base_offset(), b.partition_leader_epoch()), (1000, 9));
    set_producer(&mut m, 5, 6, 7).unwrap();
    let b = RecordBatch::decode(Bytes::from(m)).unwrap();
    assert_eq!(
        (b.producer_id(), b.producer_epoch(), b.base_sequence()),
        (5, 6, 7)
    );
    check(&sample_records(5), &b, 1000);
}

#[test]
fn bad_magic_and_lengths_rejected() {
    let bytes = build(&sample_records(2), BatchBuilder::new());
    let mut m = bytes.to_vec();
    m[16] = 1;
    let err = RecordBatches::new(Bytes::from(m))
        .next()
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Corrupt);
    for len in [-1i32, 0, 48, i32::MIN] {
        let mut m = bytes.to_vec();
        m[8..12].copy_from_slice(&len.to_be_bytes());
        let mut it = RecordBatches::new(Bytes::from(m));
        assert!(it.next().unwrap().is_err(), "{len}");
        assert!(it.next().is_none());
    }
    let mut m = bytes.to_vec();
    m[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
    let mut it = RecordBatches::new(Bytes::from(m));
    assert!(it.next().unwrap().is_err());
}

fn recrc(m: &mut [u8]) {
    let crc = crc32c::crc32c(&m[21..]);
    m[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn record_count_must_match() {
    let bytes = build(&sample_records(4), BatchBuilder::new());
    for count in [0i32, 3, 5, i32::MAX] {
        let mut m = bytes.to_vec();
        m[57..61].copy_from_slice(&count.to_be_bytes());
        recrc(&mut m);
        let b = RecordBatch::decode(Bytes::from(m)).unwrap();
        let res: Result<Vec<_>, _> = b.records().unwrap().collect();
        assert_eq!(res.unwrap_err().kind(), &ErrorKind::Corrupt, "{count}");
    }
    let mut m = bytes.to_vec();
    m[57..61].copy_from_slice(&(-1i32).to_be_bytes());
    recrc(&mut m);
    assert!(RecordBatch::decode(Bytes::from(m)).is_err());
}

#[test]
fn bad_record_framing_rejected() {
    let bytes = build(&sample_records(1), BatchBuilder::new());
    // First record length varint at 61: make it overlong / huge / negative.
    for patch in [
        &[0xffu8, 0xff, 0xff, 0xff, 0xff, 0x0f][..],
        &[0xfe, 0xff, 0xff, 0xff, 0x0f],
        &[0x01],
        &[0x03],
    ] {
        let mut m = bytes.to_vec();
        m.splice(61..62, patch.iter().copied());
        let len = (m.len() - 12) as i32;
        m[8..12].copy_from_slice(&len.to_be_bytes());
        recrc(&mut m);
        let b = RecordBatch::decode(Bytes::from(m)).unwrap();
        let res: Result<Vec<_>, _> = b.records().unwrap().collect();
        assert_eq!(res.unwrap_err().kind(), &ErrorKind::Corrupt, "{patch:?}");
    }
}

#[test]
fn unknown_codec_rejected() {
    let mut m = build(&sample_records(1), BatchBuilder::new()).to_vec();
    m[22] |= 0x07;
    recrc(&mut m);
    assert!(RecordBatch::decode(Bytes::from(m)).is_err());
}

#[test]
fn control_batch_round_trip() {
    for (ty, epoch) in [(ControlType::Commit, 4), (ControlType::Abort, 9)] {
        let bytes = encode_transaction_marker(77, 1234, 2, 99, ty, epoch).unwrap();
        let batch = RecordBatch::decode(bytes).unwrap();
        assert!(batch.is_control());
        assert!(batch.is_transactional());
        assert_eq!(batch.producer_id(), 1234);
        assert_eq!(batch.producer_epoch(), 2);
        assert_eq!(batch.base_sequence(), -1);
        assert_eq!(batch.next_offset(), 78);
        let c = batch.control_record().unwrap().unwrap();
        assert_eq!(c.control_type, ty);
        assert_eq!(c.coordinator_epoch, epoch);
        assert_eq!(c.version, 0);
        let r = batch.records().unwrap().next().unwrap().unwrap();
        assert_eq!(r.key.as_deref(), Some(&[0, 0, 0, ty.id() as u8][..]));
    }
    let plain = RecordBatch::decode(build(&sample_records(1), BatchBuilder::new())).unwrap();
    assert!(plain.control_record().unwrap().is_none());
}

#[test]
fn next_offset_of_empty_batch() {
    // A batch emptied by compaction: no records, last_offset_delta kept.
    let mut m = build(&sample_records(0), BatchBuilder::new().with_base_offset(10)).to_vec();
    m[23..27].copy_from_slice(&4i32.to_be_bytes());
    recrc(&mut m);
    let b = RecordBatch::decode(Bytes::from(m)).unwrap();
    assert_eq!(b.record_count(), 0);
    assert_eq!(b.records().unwrap().count(), 0);
    assert_eq!(b.next_offset(), 15);
}

#[test]
fn estimated_size_tracks_appends() {
    let mut b = BatchBuilder::new();
    assert_eq!(b.estimated_size(), BATCH_HEADER_LEN);
    let recs = sample_records(50);
    for (ts, k, v, h) in &recs {
        let hs: Vec<(&str, Option<&[u8]>)> =
            h.iter().map(|(k, v)| (k.as_str(), v.as_deref())).collect();
        let before = b.estimated_size();
        let predicted = b.record_size(*ts, k.as_deref(), v.as_deref(), &hs);
        b.append(*ts, k.as_deref(), v.as_deref(), &hs).unwrap();
        assert_eq!(b.estimated_size() - before, predicted);
    }
    let est = b.estimated_size();
    assert_eq!(b.build().unwrap().len(), est);
}

#[test]
fn decompression_limit_enforced() {
    let recs: Vec<Rec> = (0..100)
        .map(|i| (i, None, Some(vec![b'a'; 10_000]), vec![]))
        .collect();
    let bytes = build(
        &recs,
        BatchBuilder::new().with_compression(Compression::Lz4),
    );
    assert!(bytes.len() < 100_000);
    let b = RecordBatch::decode(bytes).unwrap();
    let err = b.records_with_limit(100_000).unwrap_err();
    assert_eq!(err.kind(), &ErrorKind::Compression);
    assert_eq!(b.records().unwrap().count(), 100);
}

//! Aborted-transaction filtering, control records and position advance on synthetic fetch
//! data built with our record codec (scenario 28 of the reliability notes, decoder side).

use bytes::{Bytes, BytesMut};
use rekafka::consumer::{IsolationLevel, visible_records};
use rekafka::protocol::record::{
    BatchBuilder, Compression, ControlType, encode_transaction_marker,
};

fn batch(base: i64, pid: i64, txn: bool, n: i32, tag: &str, c: Compression) -> Bytes {
    let mut b = BatchBuilder::new()
        .with_base_offset(base)
        .with_compression(c)
        .with_producer(pid, 0, if pid >= 0 { 0 } else { -1 })
        .with_transactional(txn);
    for i in 0..n {
        let v = format!("{tag}{i}");
        b.append(
            1000 + i as i64,
            Some(b"k"),
            Some(v.as_bytes()),
            &[("h", Some(b"x"))],
        )
        .unwrap();
    }
    b.build().unwrap()
}

fn marker(at: i64, pid: i64, t: ControlType) -> Bytes {
    encode_transaction_marker(at, pid, 0, 2000, t, 0).unwrap()
}

fn concat(parts: &[Bytes]) -> Bytes {
    let mut b = BytesMut::new();
    for p in parts {
        b.extend_from_slice(p);
    }
    b.freeze()
}

fn values(recs: &[rekafka::consumer::ConsumerRecord]) -> Vec<String> {
    recs.iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect()
}

/// Producer 7 commits offsets 0..3, producer 8 aborts 3..5 (interleaved with a plain batch),
/// producer 7 commits again.
fn log() -> Bytes {
    concat(&[
        batch(0, 7, true, 2, "c", Compression::None),   // 0,1
        batch(2, 8, true, 2, "a", Compression::Lz4),    // 2,3 aborted
        batch(4, -1, false, 1, "p", Compression::None), // 4
        marker(5, 7, ControlType::Commit),              // 5
        batch(6, 8, true, 1, "a", Compression::Zstd),   // 6 aborted
        marker(7, 8, ControlType::Abort),               // 7
        batch(8, 8, true, 2, "n", Compression::Gzip),   // 8,9 new txn of 8, committed
        marker(10, 8, ControlType::Commit),             // 10
    ])
}

#[test]
fn read_committed_drops_aborted_and_control() {
    let (recs, pos) = visible_records(&log(), 0, IsolationLevel::ReadCommitted, &[(2, 8)]).unwrap();
    assert_eq!(values(&recs), ["c0", "c1", "p0", "n0", "n1"]);
    assert_eq!(
        recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [0, 1, 4, 8, 9]
    );
    assert_eq!(pos, 11, "position moves past the trailing control batch");
    assert!(recs.iter().all(|r| r.headers.len() == 1));
}

#[test]
fn read_uncommitted_sees_everything_but_control() {
    let (recs, pos) =
        visible_records(&log(), 0, IsolationLevel::ReadUncommitted, &[(2, 8)]).unwrap();
    assert_eq!(
        values(&recs),
        ["c0", "c1", "a0", "a1", "p0", "a0", "n0", "n1"]
    );
    assert_eq!(pos, 11);
}

#[test]
fn unsorted_and_duplicate_aborted_entries() {
    // (a) unsorted list, (b) an extra abort entry whose marker comes twice.
    let l = concat(&[
        batch(0, 5, true, 1, "x", Compression::None),
        batch(1, 6, true, 1, "y", Compression::None),
        marker(2, 6, ControlType::Abort),
        marker(3, 6, ControlType::Abort),
        marker(4, 5, ControlType::Abort),
        batch(5, 9, false, 1, "ok", Compression::None),
    ]);
    let (recs, pos) = visible_records(
        &l,
        0,
        IsolationLevel::ReadCommitted,
        &[(1, 6), (0, 5), (1, 6)],
    )
    .unwrap();
    assert_eq!(values(&recs), ["ok0"]);
    assert_eq!(pos, 6);
}

#[test]
fn fetch_of_only_aborted_batches_advances_the_position() {
    let mut parts = Vec::new();
    for i in 0..50 {
        parts.push(batch(i * 10, 3, true, 10, "z", Compression::Snappy));
    }
    parts.push(marker(500, 3, ControlType::Abort));
    let (recs, pos) =
        visible_records(&concat(&parts), 0, IsolationLevel::ReadCommitted, &[(0, 3)]).unwrap();
    assert!(recs.is_empty());
    assert_eq!(pos, 501);
}

#[test]
fn fetch_from_the_middle_of_a_batch_skips_earlier_records() {
    let (recs, _) = visible_records(
        &batch(100, -1, false, 5, "m", Compression::Lz4),
        102,
        IsolationLevel::ReadUncommitted,
        &[],
    )
    .unwrap();
    assert_eq!(
        recs.iter().map(|r| r.offset).collect::<Vec<_>>(),
        [102, 103, 104]
    );
}

#[test]
fn corrupt_batch_is_an_error_not_a_panic() {
    let mut b = BytesMut::from(&batch(0, -1, false, 3, "q", Compression::None)[..]);
    let n = b.len();
    b[n - 2] ^= 0xff;
    assert!(visible_records(&b.freeze(), 0, IsolationLevel::ReadUncommitted, &[]).is_err());
}

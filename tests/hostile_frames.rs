//! Hostile input for frame and response decoding: random and mutated bytes never panic, and a
//! frame claiming a multi-gigabyte array is rejected without a large allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiVersionsRequest, CreateTopicsRequest, DescribeGroupsRequest, FetchRequest,
    FindCoordinatorRequest, JoinGroupRequest, ListOffsetsRequest, MetadataRequest,
    OffsetCommitRequest, OffsetFetchRequest, ProduceRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Message, Request};
use proptest::prelude::*;
use rekafka::ErrorKind;
use rekafka::protocol::codec::decode_response;
use rekafka::protocol::frame::FrameDecoder;
use rekafka::protocol::versions::decode_api_versions;

/// Counts the largest single allocation, so tests can assert that decoding hostile input never
/// asks for much memory.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Decodes `frame` as the response to every API we use, at every version, and returns whether
/// any decode succeeded. Never panics (the test fails if it does).
fn decode_everything(frame: &Bytes) -> usize {
    fn all<R: Request>(frame: &Bytes) -> usize {
        let mut ok = 0;
        for v in R::Response::VERSIONS.min..=R::Response::VERSIONS.max {
            if decode_response::<R>(frame.clone(), v).is_ok() {
                ok += 1;
            }
        }
        ok
    }
    let mut ok = 0;
    ok += all::<ProduceRequest>(frame);
    ok += all::<FetchRequest>(frame);
    ok += all::<MetadataRequest>(frame);
    ok += all::<ListOffsetsRequest>(frame);
    ok += all::<FindCoordinatorRequest>(frame);
    ok += all::<JoinGroupRequest>(frame);
    ok += all::<SyncGroupRequest>(frame);
    ok += all::<OffsetCommitRequest>(frame);
    ok += all::<OffsetFetchRequest>(frame);
    ok += all::<DescribeGroupsRequest>(frame);
    ok += all::<CreateTopicsRequest>(frame);
    for v in ApiVersionsRequest::VERSIONS.min..=ApiVersionsRequest::VERSIONS.max {
        if decode_api_versions(frame.clone(), v).is_ok() {
            ok += 1;
        }
    }
    ok
}

#[test]
fn multi_gigabyte_array_claim_is_rejected_without_allocating() {
    // Every length-prefixed array position a tiny frame can claim: an i32 and a varint array
    // length of ~2^31 / ~2^32 elements after the header, at each offset of a small prefix.
    let mut frames = Vec::new();
    for prefix in 0..24usize {
        let mut b = BytesMut::new();
        b.put_i32(1); // correlation id
        b.put_bytes(0, prefix);
        b.put_i32(i32::MAX);
        b.put_bytes(0, 8);
        frames.push(b.freeze());
        let mut b = BytesMut::new();
        b.put_i32(1);
        b.put_bytes(0, prefix);
        b.put_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
        b.put_bytes(0, 8);
        frames.push(b.freeze());
    }
    LARGEST.store(0, Ordering::Relaxed);
    for f in &frames {
        decode_everything(f);
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest < 1 << 20,
        "largest single allocation was {largest} bytes"
    );

    // The specific case: a Metadata v1 response whose brokers array claims 2^31-1 entries.
    let mut b = BytesMut::new();
    b.put_i32(9);
    b.put_i32(i32::MAX);
    b.put_bytes(0, 12);
    let e = decode_response::<MetadataRequest>(b.freeze(), 1).unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Corrupt, "{e}");
}

#[test]
fn frame_claiming_gigabytes_is_refused_before_buffering() {
    let dec = FrameDecoder::new(16 * 1024 * 1024);
    let mut b = BytesMut::new();
    b.put_i32(2_000_000_000);
    b.put_slice(b"tiny");
    LARGEST.store(0, Ordering::Relaxed);
    let e = dec.decode(&mut b).unwrap_err();
    assert!(matches!(
        e.kind(),
        ErrorKind::FrameTooLarge {
            size: 2_000_000_000,
            ..
        }
    ));
    assert!(LARGEST.load(Ordering::Relaxed) < 1 << 16);
}

#[test]
fn replayed_corpus() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/frames");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = Bytes::from(std::fs::read(&path).unwrap());
        LARGEST.store(0, Ordering::Relaxed);
        // As a stream: framing first, then each frame as every response.
        let mut stream = BytesMut::from(&bytes[..]);
        let dec = FrameDecoder::new(1 << 20);
        while let Ok(Some(frame)) = dec.decode(&mut stream) {
            decode_everything(&frame);
        }
        // And the bytes as one frame.
        decode_everything(&bytes);
        let largest = LARGEST.load(Ordering::Relaxed);
        assert!(
            largest < (1 << 20).max(bytes.len() * 64),
            "{path:?}: {largest}"
        );
        n += 1;
    }
    assert!(n >= 5, "corpus has {n} files");
}

fn valid_frames() -> Vec<Bytes> {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
    fn frame<R: Encodable + HeaderVersion>(r: &R, v: i16) -> Bytes {
        let mut b = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(3)
            .encode(&mut b, R::header_version(v))
            .unwrap();
        r.encode(&mut b, v).unwrap();
        b.freeze()
    }
    let md = MetadataResponse::default()
        .with_brokers(vec![
            metadata_response::MetadataResponseBroker::default()
                .with_node_id(BrokerId(1))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(9092),
        ])
        .with_topics(vec![
            metadata_response::MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_static_str("t"))))
                .with_partitions(vec![
                    metadata_response::MetadataResponsePartition::default()
                        .with_partition_index(0)
                        .with_replica_nodes(vec![BrokerId(1)])
                        .with_isr_nodes(vec![BrokerId(1)]),
                ]),
        ]);
    let fetch = FetchResponse::default().with_responses(vec![
        fetch_response::FetchableTopicResponse::default()
            .with_topic(TopicName(StrBytes::from_static_str("t")))
            .with_partitions(vec![
                fetch_response::PartitionData::default()
                    .with_high_watermark(10)
                    .with_records(Some(Bytes::from_static(&[0u8; 40]))),
            ]),
    ]);
    vec![
        frame(&md, 1),
        frame(&md, 12),
        frame(&fetch, 4),
        frame(&fetch, 12),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        let frame = Bytes::from(data);
        LARGEST.store(0, Ordering::Relaxed);
        decode_everything(&frame);
        prop_assert!(LARGEST.load(Ordering::Relaxed) < 1 << 20);
    }

    #[test]
    fn mutated_frames_never_panic(
        which in 0usize..4,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let frames = valid_frames();
        let mut data = frames[which].to_vec();
        for (pos, val) in flips {
            let i = pos % data.len();
            data[i] = val;
        }
        data.truncate(1 + cut % data.len());
        LARGEST.store(0, Ordering::Relaxed);
        decode_everything(&Bytes::from(data));
        prop_assert!(LARGEST.load(Ordering::Relaxed) < 1 << 20);
    }
}

#[test]
fn valid_frames_still_decode() {
    let frames = valid_frames();
    let (_, md) = decode_response::<MetadataRequest>(frames[0].clone(), 1).unwrap();
    assert_eq!(md.brokers[0].port, 9092);
    let (_, md) = decode_response::<MetadataRequest>(frames[1].clone(), 12).unwrap();
    assert_eq!(md.topics[0].partitions.len(), 1);
    let (_, f) = decode_response::<FetchRequest>(frames[3].clone(), 12).unwrap();
    assert_eq!(f.responses[0].partitions[0].high_watermark, 10);
}

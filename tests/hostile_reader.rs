//! The connection's reader task under a hostile broker: a response's size prefix is only a
//! claim, so the reader must grow its buffer with the bytes that actually arrive. Measured with
//! a global allocator that records the largest single allocation (this binary holds one test,
//! so nothing else allocates meanwhile).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, MetadataRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable};
use rekafka::ErrorKind;
use rekafka::connection::{Connection, ConnectionConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only records sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::SeqCst);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Reads one request frame; returns its API key, version and correlation id.
async fn read_request(io: &mut DuplexStream) -> (ApiKey, i16, i32) {
    let size = io.read_i32().await.unwrap() as usize;
    let mut frame = vec![0u8; size];
    io.read_exact(&mut frame).await.unwrap();
    let mut b = bytes::Bytes::from(frame);
    let key = ApiKey::try_from(i16::from_be_bytes([b[0], b[1]])).unwrap();
    let version = i16::from_be_bytes([b[2], b[3]]);
    let header = RequestHeader::decode(&mut b, key.request_header_version(version)).unwrap();
    b.advance(b.remaining());
    (key, version, header.correlation_id)
}

async fn answer_api_versions(io: &mut DuplexStream) {
    let (key, version, corr) = read_request(io).await;
    assert_eq!(key, ApiKey::ApiVersions);
    let range = |k: ApiKey, max| {
        ApiVersion::default()
            .with_api_key(k as i16)
            .with_min_version(0)
            .with_max_version(max)
    };
    let body = ApiVersionsResponse::default().with_api_keys(vec![
        range(ApiKey::ApiVersions, 3),
        range(ApiKey::Metadata, 12),
    ]);
    let mut b = BytesMut::new();
    b.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(corr)
        .encode(&mut b, key.response_header_version(version))
        .unwrap();
    body.encode(&mut b, version).unwrap();
    let size = (b.len() - 4) as i32;
    b[..4].copy_from_slice(&size.to_be_bytes());
    io.write_all(&b).await.unwrap();
}

#[tokio::test]
async fn announced_frame_size_is_not_reserved_before_the_bytes_arrive() {
    let config = ConnectionConfig::default();
    // Just below the maximum frame size, so the claim itself is acceptable.
    let claimed = (config.max_frame_size - 1) as i32;
    let (client, mut broker) = tokio::io::duplex(64 * 1024);
    let broker_task = tokio::spawn(async move {
        answer_api_versions(&mut broker).await;
        let (key, _, corr) = read_request(&mut broker).await;
        assert_eq!(key, ApiKey::Metadata);
        LARGEST.store(0, Ordering::SeqCst);
        // Four hostile bytes (and the correlation id), then nothing: the connection closes.
        let mut b = BytesMut::new();
        b.put_i32(claimed);
        b.put_i32(corr);
        broker.write_all(&b).await.unwrap();
        broker.flush().await.unwrap();
        // Closing the stream after the bytes are written: the reader sees them before the EOF.
        drop(broker);
    });
    let conn = Connection::handshake(client, 1, &config).await.unwrap();
    let err = conn.send(MetadataRequest::default()).await.unwrap_err();
    broker_task.await.unwrap();
    assert!(
        matches!(err.kind(), ErrorKind::Disconnected),
        "unexpected error {err}"
    );
    let largest = LARGEST.load(Ordering::SeqCst);
    assert!(
        largest < 1 << 20,
        "the reader allocated {largest} bytes for a frame claiming {claimed} bytes of which 4 arrived"
    );
}

//! Hostile input to the mock cluster: random and mangled request bodies at every supported API
//! and version. The mock must answer or close the connection, never panic, and keep serving.
//!
//! ```text
//! cargo test --features mock --test mock_hostile
//! ```
#![cfg(feature = "mock")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use rekafka::connection::{Connection, ConnectionConfig};
use rekafka::mock::MockCluster;
use rekafka::protocol::unstable::messages::MetadataRequest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

static PANICS: AtomicUsize = AtomicUsize::new(0);

/// xorshift64*: reproducible random bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// A request frame with a valid v1/v2 header and `body`.
fn frame(api: i16, version: i16, flexible_header: bool, body: &[u8]) -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_i32(0);
    b.put_i16(api);
    b.put_i16(version);
    b.put_i32(7);
    b.put_i16(4);
    b.put_slice(b"test");
    if flexible_header {
        b.put_u8(0);
    }
    b.put_slice(body);
    let len = (b.len() - 4) as i32;
    b[..4].copy_from_slice(&len.to_be_bytes());
    b.to_vec()
}

/// Sends one frame on a fresh connection and waits briefly for an answer or a close.
async fn poke(addr: &str, bytes: &[u8]) {
    let Ok(mut sock) = TcpStream::connect(addr).await else {
        return;
    };
    if sock.write_all(bytes).await.is_err() {
        return;
    }
    let mut buf = [0u8; 256];
    let _ = tokio::time::timeout(Duration::from_millis(100), sock.read(&mut buf)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_mangled_requests_never_panic_the_mock() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let mock = MockCluster::builder().topic("t", 2).start().await.unwrap();
    let addr = mock.bootstrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut sent = 0;
    for &(api, lo, hi) in MockCluster::supported_api_versions() {
        for version in lo..=hi {
            let flexible = api.request_header_version(version) >= 2;
            for round in 0..4 {
                let n = match round {
                    0 => 0,
                    1 => 3,
                    2 => 40,
                    _ => (rng.next() % 400) as usize,
                };
                let mut body = rng.bytes(n);
                // Some bodies start plausibly: small lengths and counts.
                if round == 2 {
                    for b in body.iter_mut().step_by(3) {
                        *b &= 0x03;
                    }
                }
                poke(&addr, &frame(api as i16, version, flexible, &body)).await;
                sent += 1;
            }
        }
    }
    assert!(sent > 300);
    // Some random bodies decode into valid requests (and are served); the rest close.
    let decoded = mock.requests().len();
    eprintln!("{sent} hostile frames, {decoded} decoded and served");
    assert!(decoded > 0);
    // Still serving.
    let conn = Connection::connect(&addr, -1, &ConnectionConfig::default())
        .await
        .unwrap();
    conn.send(MetadataRequest::default()).await.unwrap();
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the mock panicked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_valid_requests_never_panic_the_mock() {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::StrBytes;
    use rekafka::protocol::codec::encode_request;
    use rekafka::protocol::record::BatchBuilder;

    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.fetch_add(1, Ordering::SeqCst);
        default_hook(info);
    }));
    let mock = MockCluster::builder().topic("t", 2).start().await.unwrap();
    let addr = mock.bootstrap();
    let s = |x: &str| StrBytes::from_string(x.to_owned());
    let mut b = BatchBuilder::new().with_producer(5, 0, 0);
    b.append(1, Some(b"k"), Some(b"v"), &[("h", Some(b"x"))])
        .unwrap();
    let records = b.build().unwrap();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut push = |r: Result<(), rekafka::Error>, buf: BytesMut| {
        r.unwrap();
        frames.push(buf.to_vec());
    };
    for v in [3i16, 9, 11] {
        let mut buf = BytesMut::new();
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(1000)
            .with_topic_data(vec![
                produce_request::TopicProduceData::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(records.clone())),
                    ]),
            ]);
        push(encode_request(&req, v, 1, Some("c"), &mut buf), buf);
    }
    for v in [4i16, 12] {
        let mut buf = BytesMut::new();
        let req = FetchRequest::default()
            .with_max_wait_ms(0)
            .with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(TopicName(s("t")))
                    .with_partitions(vec![
                        fetch_request::FetchPartition::default().with_partition_max_bytes(1000),
                    ]),
            ]);
        push(encode_request(&req, v, 2, Some("c"), &mut buf), buf);
    }
    for v in [0i16, 5, 9] {
        let mut buf = BytesMut::new();
        let req = JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(100)
            .with_rebalance_timeout_ms(100)
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(bytes::Bytes::from_static(b"m")),
            ]);
        push(encode_request(&req, v, 3, Some("c"), &mut buf), buf);
    }
    for v in [0i16, 3] {
        let mut buf = BytesMut::new();
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s("x")))
            .with_v3_and_below_topics(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![0, 1]),
            ]);
        push(encode_request(&req, v, 4, Some("c"), &mut buf), buf);
    }
    let mut rng = Rng(42);
    let mut sent = 0;
    for f in &frames {
        poke(&addr, f).await;
        for _ in 0..60 {
            let mut m = f.clone();
            match rng.next() % 3 {
                0 => {
                    // Flip a byte after the size prefix.
                    let i = 4 + (rng.next() as usize) % (m.len() - 4);
                    m[i] ^= 1 << (rng.next() % 8);
                }
                1 => {
                    // Set a byte to an extreme value (lengths, counts, varints).
                    let i = 4 + (rng.next() as usize) % (m.len() - 4);
                    m[i] = if rng.next() & 1 == 0 { 0xff } else { 0x7f };
                }
                _ => {
                    // Truncate, fixing up the size prefix.
                    let keep = 4 + (rng.next() as usize) % (m.len() - 4);
                    m.truncate(keep);
                    let len = (m.len() - 4) as i32;
                    m[..4].copy_from_slice(&len.to_be_bytes());
                }
            }
            poke(&addr, &m).await;
            sent += 1;
        }
    }
    eprintln!("{sent} mutated frames, {} served", mock.requests().len());
    let conn = Connection::connect(&addr, -1, &ConnectionConfig::default())
        .await
        .unwrap();
    conn.send(MetadataRequest::default()).await.unwrap();
    assert_eq!(PANICS.load(Ordering::SeqCst), 0, "the mock panicked");
}

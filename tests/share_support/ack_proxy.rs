//! A Kafka-aware TCP proxy in front of the shared cluster that drops share-group
//! acknowledgements: one listener per broker, each forwarding to its broker, rewriting the
//! broker addresses in Metadata, FindCoordinator, ShareFetch and ShareAcknowledge responses to
//! the proxies' (so a client bootstrapped through it talks to every broker through it), and,
//! while armed, cutting the connection instead of forwarding a ShareAcknowledge (API key 79)
//! or a ShareFetch (78) that carries acknowledgements: the request never reaches the broker
//! (the frame is dropped, then both sides of the connection are closed).
//!
//! Included with `#[path = "share_support/ack_proxy.rs"] mod ack_proxy;` by
//! `tests/share_ack_drop_kafka.rs`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, FindCoordinatorRequest, MetadataRequest, ShareAcknowledgeRequest, ShareFetchRequest,
};
use kafka_protocol::protocol::StrBytes;
use rekafka::cluster::Cluster;
use rekafka::protocol::codec::{
    decode_request, decode_request_header, decode_response, encode_response,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy cut (a request it dropped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// `ShareAcknowledge` or `ShareFetch`.
    pub api: ApiKey,
    /// Per partition: the acknowledged offset ranges it carried (partition, first, last).
    pub acks: Vec<(i32, i64, i64)>,
}

struct Shared {
    /// Upstream `host:port` → the proxy's port for that broker.
    ports: HashMap<(String, i32), u16>,
    /// How many more acknowledgement-carrying requests to cut.
    budget: AtomicU32,
    cuts: Mutex<Vec<Cut>>,
    forwarded_acks: AtomicU64,
}

/// The proxies, one per broker.
pub struct AckDropProxy {
    shared: Arc<Shared>,
    /// The first proxy's address, to bootstrap through.
    pub bootstrap: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for AckDropProxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl AckDropProxy {
    /// A proxy per broker `cluster` knows (its metadata must be loaded).
    pub async fn start(cluster: &Cluster) -> AckDropProxy {
        let brokers = cluster.metadata().brokers;
        assert!(!brokers.is_empty(), "no brokers in the metadata");
        let mut listeners = Vec::new();
        let mut ports = HashMap::new();
        for b in brokers.values() {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let port = l.local_addr().expect("addr").port();
            ports.insert((b.host.clone(), b.port), port);
            listeners.push((l, format!("{}:{}", b.host, b.port)));
        }
        let shared = Arc::new(Shared {
            ports,
            budget: AtomicU32::new(0),
            cuts: Mutex::default(),
            forwarded_acks: AtomicU64::new(0),
        });
        let bootstrap = format!(
            "127.0.0.1:{}",
            listeners[0].0.local_addr().expect("addr").port()
        );
        let mut tasks = Vec::new();
        for (l, upstream) in listeners {
            let shared = shared.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok((client, _)) = l.accept().await {
                    let (shared, upstream) = (shared.clone(), upstream.clone());
                    tokio::spawn(async move {
                        if let Ok(broker) = TcpStream::connect(&upstream).await {
                            serve(shared, client, broker).await;
                        }
                    });
                }
            }));
        }
        AckDropProxy {
            shared,
            bootstrap,
            tasks,
        }
    }

    /// Cuts the next `n` requests carrying acknowledgements (0 disarms).
    pub fn cut_next(&self, n: u32) {
        self.shared.budget.store(n, Ordering::SeqCst);
    }

    /// The requests cut so far.
    pub fn cuts(&self) -> Vec<Cut> {
        self.shared.cuts.lock().unwrap().clone()
    }

    /// How many acknowledgement-carrying requests went through.
    pub fn forwarded_acks(&self) -> u64 {
        self.shared.forwarded_acks.load(Ordering::SeqCst)
    }
}

/// Reads one size-prefixed frame (without the prefix); `None` at EOF or on an error.
async fn read_frame(r: &mut OwnedReadHalf) -> Option<Bytes> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await.ok()?;
    let len = usize::try_from(i32::from_be_bytes(len)).ok()?;
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await.ok()?;
    Some(Bytes::from(buf))
}

async fn write_frame(w: &mut OwnedWriteHalf, frame: &[u8]) -> bool {
    let len = i32::try_from(frame.len()).unwrap_or(i32::MAX).to_be_bytes();
    w.write_all(&len).await.is_ok() && w.write_all(frame).await.is_ok()
}

/// The acknowledgements a request carries, if it is one to cut.
fn acks_of(api: ApiKey, version: i16, body: Bytes) -> Option<Vec<(i32, i64, i64)>> {
    match api {
        ApiKey::ShareAcknowledge => {
            let r: ShareAcknowledgeRequest = decode_request(body, version).ok()?;
            Some(
                r.topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .flat_map(|p| {
                        p.acknowledgement_batches
                            .iter()
                            .map(|b| (p.partition_index, b.first_offset, b.last_offset))
                    })
                    .collect(),
            )
        }
        ApiKey::ShareFetch => {
            let r: ShareFetchRequest = decode_request(body, version).ok()?;
            let acks: Vec<_> = r
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .flat_map(|p| {
                    p.acknowledgement_batches
                        .iter()
                        .map(|b| (p.partition_index, b.first_offset, b.last_offset))
                })
                .collect();
            (!acks.is_empty()).then_some(acks)
        }
        _ => None,
    }
}

async fn serve(shared: Arc<Shared>, client: TcpStream, broker: TcpStream) {
    let (mut cr, mut cw) = client.into_split();
    let (mut br, mut bw) = broker.into_split();
    // Correlation id → (API, version) of the requests in flight on this connection.
    let inflight: Arc<Mutex<HashMap<i32, (ApiKey, i16)>>> = Arc::default();
    let requests = {
        let (shared, inflight) = (shared.clone(), inflight.clone());
        async move {
            while let Some(frame) = read_frame(&mut cr).await {
                let Ok((header, body)) = decode_request_header(&frame) else {
                    return;
                };
                let Ok(api) = ApiKey::try_from(header.request_api_key) else {
                    return;
                };
                let version = header.request_api_version;
                if let Some(acks) = acks_of(api, version, body) {
                    let cut = shared
                        .budget
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                        .is_ok();
                    if cut {
                        shared.cuts.lock().unwrap().push(Cut { api, acks });
                        // Dropped unforwarded; returning closes both directions.
                        return;
                    }
                    shared.forwarded_acks.fetch_add(1, Ordering::SeqCst);
                }
                inflight
                    .lock()
                    .unwrap()
                    .insert(header.correlation_id, (api, version));
                if !write_frame(&mut bw, &frame).await {
                    return;
                }
            }
        }
    };
    let responses = async move {
        while let Some(frame) = read_frame(&mut br).await {
            let Some(correlation) = frame
                .get(..4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            else {
                return;
            };
            let call = inflight.lock().unwrap().remove(&correlation);
            let out = match call {
                Some((api, version)) => rewrite(&shared, api, version, correlation, frame),
                None => frame,
            };
            if !write_frame(&mut cw, &out).await {
                return;
            }
        }
    };
    // Either direction ending (EOF, an error, a cut) ends the connection: both halves drop.
    tokio::select! {
        () = requests => {}
        () = responses => {}
    }
}

/// The proxy's address for the broker at `host:port` (unchanged if it is not one of them).
fn map(shared: &Shared, host: &mut StrBytes, port: &mut i32) {
    if let Some(p) = shared.ports.get(&(host.to_string(), *port)) {
        *host = StrBytes::from_static_str("127.0.0.1");
        *port = i32::from(*p);
    }
}

/// The response frame with the broker addresses it carries rewritten to the proxies'.
fn rewrite(shared: &Shared, api: ApiKey, version: i16, correlation: i32, frame: Bytes) -> Bytes {
    let mut out = BytesMut::new();
    let ok = match api {
        ApiKey::Metadata => decode_response::<MetadataRequest>(frame.clone(), version)
            .ok()
            .and_then(|(_, mut r)| {
                for b in &mut r.brokers {
                    map(shared, &mut b.host, &mut b.port);
                }
                encode_response::<MetadataRequest>(&r, version, correlation, &mut out).ok()
            }),
        ApiKey::FindCoordinator => {
            decode_response::<FindCoordinatorRequest>(frame.clone(), version)
                .ok()
                .and_then(|(_, mut r)| {
                    map(shared, &mut r.host, &mut r.port);
                    for c in &mut r.coordinators {
                        map(shared, &mut c.host, &mut c.port);
                    }
                    encode_response::<FindCoordinatorRequest>(&r, version, correlation, &mut out)
                        .ok()
                })
        }
        ApiKey::ShareFetch => decode_response::<ShareFetchRequest>(frame.clone(), version)
            .ok()
            .and_then(|(_, mut r)| {
                if r.node_endpoints.is_empty() {
                    return None;
                }
                for e in &mut r.node_endpoints {
                    map(shared, &mut e.host, &mut e.port);
                }
                encode_response::<ShareFetchRequest>(&r, version, correlation, &mut out).ok()
            }),
        ApiKey::ShareAcknowledge => {
            decode_response::<ShareAcknowledgeRequest>(frame.clone(), version)
                .ok()
                .and_then(|(_, mut r)| {
                    if r.node_endpoints.is_empty() {
                        return None;
                    }
                    for e in &mut r.node_endpoints {
                        map(shared, &mut e.host, &mut e.port);
                    }
                    encode_response::<ShareAcknowledgeRequest>(&r, version, correlation, &mut out)
                        .ok()
                })
        }
        _ => None,
    };
    match ok {
        // Without the size prefix `encode_response` put first.
        Some(()) => out.freeze().slice(4..),
        None => frame,
    }
}

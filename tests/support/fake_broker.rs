//! A scriptable in-process fake Kafka broker for the `*_fake.rs` suites: it accepts
//! connections, splits the byte stream into frames, decodes each request header with the
//! crate's codec, answers ApiVersions from configurable ranges, and hands every other request
//! to the test's handler, which says what the broker does with it ([`Reply`]): answer, stay
//! silent, answer later, hold the connection for a while, or cut it. It counts accepted
//! connections, requests per API and connections the client closed.
//!
//! Declared once in the `fake` test binary (`tests/fake/main.rs`, as
//! `#[path = "../support/fake_broker.rs"] mod fake_broker;`; the failover suite's
//! `support/mod.rs` does not declare it). A suite states only its scripted behaviour:
//!
//! ```ignore
//! let broker = FakeBroker::builder()
//!     .api(ApiKey::Metadata, 0, 12)
//!     .start(|req: &FakeRequest, _conn: &mut ConnState| match req.api {
//!         ApiKey::Metadata => req.respond(&MetadataResponse::default()),
//!         _ => Reply::Builtin,
//!     })
//!     .await;
//! ```
#![allow(dead_code)]

use std::any::Any;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use rekafka::protocol::codec::{decode_request, decode_request_header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// What the broker does with one request.
pub enum Reply {
    /// Write these bytes: one or more complete frames (see [`FakeRequest::respond`]), or
    /// anything else a hostile broker might send.
    Bytes(BytesMut),
    /// Write nothing: the request stays unanswered (a stuck broker, or acks=0), and the
    /// connection goes on serving the requests after it.
    Silent,
    /// Close the connection without answering (what was written before is delivered; answers
    /// still [`Reply::Later`] are dropped).
    Close,
    /// Carry out the inner reply after the delay; meanwhile the connection serves the requests
    /// after this one (so answers come out of order).
    Later(Duration, Box<Reply>),
    /// Hold the connection for the delay (later requests on it wait, as a broker works through
    /// a connection's requests in order), then carry out the inner reply.
    Stall(Duration, Box<Reply>),
    /// The broker's own answer: ApiVersions from the configured ranges; any other API is not
    /// spoken by this fake (the connection task panics, which fails the test's requests). Only
    /// as the handler's direct answer, not inside [`Reply::Later`] or [`Reply::Stall`].
    Builtin,
}

impl Reply {
    /// [`Reply::Later`].
    pub fn later(delay: Duration, reply: Reply) -> Reply {
        Reply::Later(delay, Box::new(reply))
    }

    /// [`Reply::Stall`].
    pub fn stall(delay: Duration, reply: Reply) -> Reply {
        Reply::Stall(delay, Box::new(reply))
    }
}

/// One decoded request, as the handler sees it.
pub struct FakeRequest {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub header: RequestHeader,
    /// The body after the header.
    pub body: Bytes,
    /// The whole frame (header and body, without the size prefix).
    pub frame: Bytes,
    /// The node id this broker was started with.
    pub node: i32,
    /// This broker's listening address.
    pub addr: SocketAddr,
}

impl FakeRequest {
    /// The body decoded as `R` (the request's own type) at the request's version.
    pub fn decode<R: rekafka::protocol::unstable::Request>(&self) -> R {
        decode_request(self.body.clone(), self.version)
            .unwrap_or_else(|e| panic!("fake broker: undecodable {:?}: {e}", self.api))
    }

    /// Answers with `body` at the request's version.
    pub fn respond<M: Encodable>(&self, body: &M) -> Reply {
        Reply::Bytes(self.frame_of(body))
    }

    /// The response frame (size prefix, header, body) for `body` at the request's version.
    pub fn frame_of<M: Encodable>(&self, body: &M) -> BytesMut {
        response_frame(self.api, self.version, self.correlation_id, body)
    }
}

/// A response frame for `api` at `version` with the given correlation id.
pub fn response_frame<M: Encodable>(api: ApiKey, version: i16, corr: i32, body: &M) -> BytesMut {
    let mut b = BytesMut::new();
    b.put_i32(0);
    ResponseHeader::default()
        .with_correlation_id(corr)
        .encode(&mut b, api.response_header_version(version))
        .unwrap();
    body.encode(&mut b, version).unwrap();
    let size = (b.len() - 4) as i32;
    b[..4].copy_from_slice(&size.to_be_bytes());
    b
}

/// Per-connection state of a handler (for brokers whose answers depend on what happened
/// earlier on the same connection, such as SASL).
#[derive(Default)]
pub struct ConnState {
    /// Which connection of this broker (0 for the first accepted).
    pub id: usize,
    state: Option<Box<dyn Any + Send>>,
}

impl ConnState {
    /// The handler's state of type `T` for this connection, created on first use (a handler
    /// keeps one type per connection).
    pub fn get<T: Default + Send + 'static>(&mut self) -> &mut T {
        if !self.state.as_ref().is_some_and(|s| s.is::<T>()) {
            self.state = Some(Box::new(T::default()));
        }
        self.state.as_mut().unwrap().downcast_mut::<T>().unwrap()
    }
}

/// The handler: every request (ApiVersions included) goes through it first.
pub type Handler = dyn Fn(&FakeRequest, &mut ConnState) -> Reply + Send + Sync;

fn range(api: ApiKey, min: i16, max: i16) -> ApiVersion {
    ApiVersion::default()
        .with_api_key(api as i16)
        .with_min_version(min)
        .with_max_version(max)
}

/// How to start a [`FakeBroker`].
pub struct Builder {
    node: i32,
    addr: SocketAddr,
    ranges: Vec<(ApiKey, i16, i16)>,
    kip511: bool,
}

impl Builder {
    /// The node id handed to the handler (default 0).
    pub fn node(mut self, node: i32) -> Self {
        self.node = node;
        self
    }

    /// Listen on this address (default `127.0.0.1:0`); binding is retried for 2 s, so a
    /// broker can come back on the address of one just stopped.
    pub fn addr(mut self, addr: SocketAddr) -> Self {
        self.addr = addr;
        self
    }

    /// Advertises `min..=max` for `api` in ApiVersions. ApiVersions itself defaults to 0..=3.
    pub fn api(mut self, api: ApiKey, min: i16, max: i16) -> Self {
        self.ranges.retain(|(a, _, _)| *a != api);
        self.ranges.push((api, min, max));
        self
    }

    /// An ApiVersions request above the advertised ApiVersions range gets
    /// UNSUPPORTED_VERSION with a v0 body (KIP-511), as older brokers answer. Without this it
    /// is answered at the highest advertised version.
    pub fn kip511_fallback(mut self, on: bool) -> Self {
        self.kip511 = on;
        self
    }

    /// Binds and starts accepting; `handler` decides every answer.
    pub async fn start(
        self,
        handler: impl Fn(&FakeRequest, &mut ConnState) -> Reply + Send + Sync + 'static,
    ) -> FakeBroker {
        let deadline = Instant::now() + Duration::from_secs(2);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("bind {}: {e}; retrying", self.addr);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("bind {}: {e}", self.addr),
            }
        };
        let addr = listener.local_addr().unwrap();
        let counters = Counters::default();
        let server = Arc::new(Server {
            node: self.node,
            addr,
            ranges: self.ranges,
            kip511: self.kip511,
            handler: Box::new(handler),
            counters: counters.clone(),
        });
        let tasks: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = {
            let tasks = tasks.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let id = server.counters.accepted.fetch_add(1, Ordering::SeqCst);
                    let h = tokio::spawn(serve(stream, id, server.clone()));
                    tasks.lock().unwrap().push(h.abort_handle());
                }
            })
        };
        tasks.lock().unwrap().push(accept.abort_handle());
        FakeBroker {
            addr,
            accepted: counters.accepted,
            client_eofs: counters.client_eofs,
            requests: counters.requests,
            tasks,
        }
    }
}

#[derive(Clone, Default)]
struct Counters {
    accepted: Arc<AtomicUsize>,
    client_eofs: Arc<AtomicUsize>,
    requests: Arc<Mutex<HashMap<ApiKey, usize>>>,
}

struct Server {
    node: i32,
    addr: SocketAddr,
    ranges: Vec<(ApiKey, i16, i16)>,
    kip511: bool,
    handler: Box<Handler>,
    counters: Counters,
}

/// A running fake broker. Dropping it (or [`FakeBroker::stop`]) stops listening and drops
/// every connection, so clients see EOF.
pub struct FakeBroker {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
    /// Connections the client closed (EOF or a read error).
    pub client_eofs: Arc<AtomicUsize>,
    requests: Arc<Mutex<HashMap<ApiKey, usize>>>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl FakeBroker {
    /// A broker with node id 0 on `127.0.0.1:0` advertising ApiVersions 0..=3 only; add the
    /// APIs it speaks with [`Builder::api`].
    pub fn builder() -> Builder {
        Builder {
            node: 0,
            addr: "127.0.0.1:0".parse().unwrap(),
            ranges: vec![(ApiKey::ApiVersions, 0, 3)],
            kip511: false,
        }
    }

    /// Requests of `api` received so far (on every connection).
    pub fn requests(&self, api: ApiKey) -> usize {
        self.requests
            .lock()
            .unwrap()
            .get(&api)
            .copied()
            .unwrap_or(0)
    }

    /// Stops listening and drops every connection (the clients see EOF).
    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Waits until the broker saw `n` connections closed by the client.
    pub async fn wait_client_eofs(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.client_eofs.load(Ordering::SeqCst) < n {
            assert!(
                Instant::now() < deadline,
                "the client did not close its socket within {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for FakeBroker {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Server {
    fn api_versions(&self, req: &FakeRequest) -> Reply {
        let keys: Vec<ApiVersion> = self
            .ranges
            .iter()
            .map(|(a, min, max)| range(*a, *min, *max))
            .collect();
        let max = self
            .ranges
            .iter()
            .find(|(a, _, _)| *a == ApiKey::ApiVersions)
            .map_or(0, |r| r.2);
        let body = ApiVersionsResponse::default().with_api_keys(keys);
        if req.version <= max {
            return req.respond(&body);
        }
        if self.kip511 {
            let v0 = body.with_error_code(35);
            return Reply::Bytes(response_frame(req.api, 0, req.correlation_id, &v0));
        }
        Reply::Bytes(response_frame(req.api, max, req.correlation_id, &body))
    }

    fn handle(&self, frame: Bytes, conn: &mut ConnState) -> Reply {
        let (header, body) = decode_request_header(&frame)
            .unwrap_or_else(|e| panic!("fake broker: undecodable request header: {e}"));
        let api = ApiKey::try_from(header.request_api_key).unwrap();
        *self
            .counters
            .requests
            .lock()
            .unwrap()
            .entry(api)
            .or_default() += 1;
        let req = FakeRequest {
            api,
            version: header.request_api_version,
            correlation_id: header.correlation_id,
            header,
            body,
            frame,
            node: self.node,
            addr: self.addr,
        };
        match (self.handler)(&req, conn) {
            Reply::Builtin if api == ApiKey::ApiVersions => self.api_versions(&req),
            Reply::Builtin => panic!("the fake broker does not speak {api:?}"),
            reply => reply,
        }
    }
}

/// Carries out `reply`; false when the connection is to be closed.
async fn apply(
    stream: &mut TcpStream,
    mut reply: Reply,
    later: &mpsc::UnboundedSender<Reply>,
) -> bool {
    loop {
        match reply {
            Reply::Bytes(b) => return stream.write_all(&b).await.is_ok(),
            Reply::Silent => return true,
            Reply::Close => return false,
            Reply::Builtin => panic!("Reply::Builtin inside Later/Stall: answer the request"),
            Reply::Stall(d, r) => {
                tokio::time::sleep(d).await;
                reply = *r;
            }
            Reply::Later(d, r) => {
                let tx = later.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    let _ = tx.send(*r);
                });
                return true;
            }
        }
    }
}

async fn serve(mut stream: TcpStream, id: usize, server: Arc<Server>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    let mut conn = ConnState {
        id,
        ..ConnState::default()
    };
    let mut buf = BytesMut::new();
    loop {
        tokio::select! {
            Some(reply) = rx.recv() => {
                if !apply(&mut stream, reply, &tx).await {
                    return;
                }
            }
            n = stream.read_buf(&mut buf) => {
                if !matches!(n, Ok(n) if n > 0) {
                    server.counters.client_eofs.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                while buf.len() >= 4 {
                    let size = i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
                    if buf.len() < 4 + size {
                        break;
                    }
                    buf.advance(4);
                    let frame = buf.split_to(size).freeze();
                    let reply = server.handle(frame, &mut conn);
                    if !apply(&mut stream, reply, &tx).await {
                        return;
                    }
                }
            }
        }
    }
}

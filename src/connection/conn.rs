//! One connection to one broker: a writer task, a reader task and the in-flight table between
//! them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

#[cfg(feature = "tls")]
use super::security::map_tls_error;
use super::security::{RawExchange, SaslExchange, SaslSession, authenticate_raw, reauth_delay};
use super::{BoxTransport, ConnectionConfig, Transport};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::codec::{self, api_key};
use crate::protocol::frame::FrameDecoder;
use crate::protocol::versions::{
    API_VERSIONS_LATEST, ApiVersionRanges, ApiVersionsOutcome, api_versions_request,
    decode_api_versions,
};

/// The name this client gives itself in ApiVersions (KIP-511).
const SOFTWARE_NAME: &str = "rekafka";
/// How many frames the writer coalesces into one flush.
const WRITE_BATCH: usize = 64;
/// Offset of the correlation id in an encoded request frame: size (4), api key (2), version (2).
const CORRELATION_OFFSET: usize = 8;
/// The longest interval between two checks of the in-flight table for requests in flight
/// longer than the request timeout (see [`sweep_interval`]).
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// The shortest such interval.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(5);

/// How often the reader checks the table for expired requests whose caller is gone, and how
/// early a caller whose own deadline passed may declare its request expired: a tenth of the
/// request timeout, between 5 ms and 1 s.
fn sweep_interval(request_timeout: Duration) -> Duration {
    (request_timeout / 10).clamp(MIN_SWEEP_INTERVAL, MAX_SWEEP_INTERVAL)
}

/// A connection to one broker, shared by any number of tasks.
///
/// Created by [`connect`](Connection::connect) (TCP) or [`handshake`](Connection::handshake)
/// (any transport); both negotiate API versions before returning. Cloning is cheap and every
/// clone uses the same socket; requests from all clones are pipelined on it, at most
/// [`max_in_flight`](ConnectionConfig::max_in_flight) at a time.
///
/// Once the connection fails (EOF, reset, an oversized or undecodable frame, or a request
/// that got no response within the [request timeout](ConnectionConfig::request_timeout)) it is
/// dead for good: every request in flight fails at once with a retriable
/// [`ErrorKind::Disconnected`] error (the request that timed out with
/// [`ErrorKind::Timeout`]) and so does every later request; make a new connection (or use
/// [`BrokerConnection`](super::BrokerConnection), which does that by itself).
///
/// ```no_run
/// # async fn demo() -> rekafka::Result<()> {
/// use rekafka::connection::{Connection, ConnectionConfig};
/// use rekafka::protocol::messages::MetadataRequest;
///
/// let conn = Connection::connect("127.0.0.1:9092", -1, &ConnectionConfig::default()).await?;
/// let metadata = conn.send(MetadataRequest::default()).await?;
/// println!("{} brokers", metadata.brokers.len());
/// conn.close().await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("broker_id", &self.shared.broker_id)
            .field("in_flight", &self.in_flight())
            .field("error", &self.shared.table.error())
            .finish()
    }
}

/// What the handles share. Dropping it (the last handle) closes the connection.
struct Shared {
    broker_id: i32,
    client_id: String,
    request_timeout: Duration,
    versions: ApiVersionRanges,
    table: Arc<Table>,
    /// One permit per in-flight slot. A permit moves into the request's table entry at
    /// hand-off and is released only when the entry leaves the table (response read, or the
    /// connection died), never when the caller gives up.
    permits: Arc<Semaphore>,
    /// The number of permits in `permits` (re-authentication takes them all).
    max_in_flight: u32,
    writes: mpsc::Sender<WriteCmd>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Stops both tasks (they watch the table's dead signal); no await possible here, the
        // tasks end by themselves and drop the socket.
        self.table.fail(
            Error::with_message(
                ErrorKind::Closed,
                "every handle to the connection was dropped",
            )
            .on_broker(self.broker_id),
            true,
        );
    }
}

/// One encoded frame for the writer task.
struct WriteCmd {
    frame: Bytes,
    /// Told once the frame is flushed (for requests without a response).
    written: Option<oneshot::Sender<()>>,
}

/// The in-flight table, shared by the callers, the reader and the writer.
struct Table {
    broker_id: i32,
    /// [`ConnectionConfig::request_timeout`].
    request_timeout: Duration,
    /// How many sent-without-response ids are remembered (`max_in_flight`).
    max_no_response: usize,
    state: Mutex<State>,
    /// Set to `true` once the connection is dead or closed; both tasks watch it.
    dead: watch::Sender<bool>,
}

struct State {
    /// Requests waiting for a response (their caller waits, or gave up). Each holds an in-flight
    /// permit (re-authentication requests excepted, which run while the re-authentication task
    /// holds every permit), so there are never more than `max_in_flight`.
    in_flight: HashMap<i32, Entry>,
    next_correlation: i32,
    /// Requests sent without expecting a response, in the order written (at most
    /// `max_no_response`, the oldest forgotten first): a broker that answers them anyway
    /// (Tansu) has its answer recognised and discarded.
    no_response: VecDeque<(i32, ApiKey)>,
    /// Why the connection is dead, once it is.
    error: Option<Error>,
}

struct Entry {
    api: ApiKey,
    waiter: Waiter,
    /// When the request was handed to the writer.
    sent: Instant,
    /// The in-flight slot, released when the entry leaves the table.
    _permit: Option<OwnedSemaphorePermit>,
}

enum Waiter {
    /// A caller waits for the response frame.
    Caller(oneshot::Sender<Result<Bytes>>),
    /// The caller was dropped, or gave up before the request was in flight for the whole
    /// request timeout; the response is read and discarded, the slot is held until then.
    Abandoned,
}

/// How a request is registered in the table.
enum Registration {
    /// A caller waits for the response; the entry holds the permit (if any).
    Caller(oneshot::Sender<Result<Bytes>>, Option<OwnedSemaphorePermit>),
    /// Sent without expecting a response (acks=0 produce). Kafka does not answer, some brokers
    /// (Tansu) do; either way nothing waits and no slot is held once the frame is written.
    NoResponse,
}

/// Whether correlation id `a` was assigned before `b`, allowing for wrap-around.
fn precedes(a: i32, b: i32) -> bool {
    b.wrapping_sub(a) > 0
}

impl Table {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock; if one ever did, the table is still
        // consistent (every update is a single map operation).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self) -> Option<Error> {
        self.lock().error.clone()
    }

    /// Registers a request about to be handed to the writer and returns its correlation id.
    /// Ids are assigned in hand-off order, which is the order frames are written.
    fn register(&self, api: ApiKey, registration: Registration) -> Result<i32> {
        let mut st = self.lock();
        if let Some(e) = &st.error {
            return Err(e.clone().api(api));
        }
        let mut corr = st.next_correlation;
        while st.in_flight.contains_key(&corr) || st.no_response.iter().any(|(c, _)| *c == corr) {
            corr = corr.wrapping_add(1);
        }
        st.next_correlation = corr.wrapping_add(1);
        match registration {
            Registration::NoResponse => {
                if st.no_response.len() >= self.max_no_response {
                    // Long unanswered: Kafka never answers these. Should the broker answer it
                    // after all, the response is discarded as unknown.
                    st.no_response.pop_front();
                }
                st.no_response.push_back((corr, api));
            }
            Registration::Caller(tx, permit) => {
                st.in_flight.insert(
                    corr,
                    Entry {
                        api,
                        waiter: Waiter::Caller(tx),
                        sent: Instant::now(),
                        _permit: permit,
                    },
                );
            }
        }
        Ok(corr)
    }

    /// The caller of `corr` is gone: keep the entry (and its in-flight slot) so the response is
    /// recognised and discarded when it comes.
    fn abandon(&self, corr: i32) {
        let mut st = self.lock();
        if let Some(entry) = st.in_flight.get_mut(&corr) {
            entry.waiter = Waiter::Abandoned;
        }
    }

    /// The caller of `corr` reached its deadline without a response. If the request has been
    /// in flight for (about) the whole request timeout, the broker is considered stuck: the
    /// connection is killed (as Java's `NetworkClient` does), every other request in flight fails
    /// with [`ErrorKind::Disconnected`], and `true` is returned. Otherwise (the caller spent
    /// part of its time waiting for a slot) the entry is abandoned and keeps its slot until the
    /// response comes or the entry itself expires (see [`expire_abandoned`](Self::expire_abandoned)).
    fn time_out(&self, corr: i32, now: Instant) -> bool {
        let slack = sweep_interval(self.request_timeout);
        let expired = {
            let mut st = self.lock();
            let Some(entry) = st.in_flight.get_mut(&corr) else {
                return false;
            };
            if now + slack >= entry.sent + self.request_timeout {
                st.in_flight.remove(&corr)
            } else {
                entry.waiter = Waiter::Abandoned;
                None
            }
        };
        let Some(entry) = expired else {
            return false;
        };
        tracing::warn!(
            broker = self.broker_id,
            correlation_id = corr,
            api = ?entry.api,
            timeout = ?self.request_timeout,
            "disconnecting: request timed out"
        );
        self.fail_at(self.timeout_disconnect(entry.api, corr), false, Some(now));
        true
    }

    /// Kills the connection if a request whose caller is gone has been in flight longer than
    /// the request timeout (called periodically by the reader task). Requests whose caller
    /// still waits are left to the caller's own timer.
    fn expire_abandoned(&self, now: Instant) {
        let expired = {
            let st = self.lock();
            st.in_flight
                .iter()
                .find(|(_, e)| {
                    matches!(e.waiter, Waiter::Abandoned) && now >= e.sent + self.request_timeout
                })
                .map(|(corr, e)| (*corr, e.api))
        };
        if let Some((corr, api)) = expired {
            tracing::warn!(
                broker = self.broker_id,
                correlation_id = corr,
                ?api,
                timeout = ?self.request_timeout,
                "disconnecting: abandoned request timed out"
            );
            self.fail_at(self.timeout_disconnect(api, corr), false, Some(now));
        }
    }

    /// The error the other requests in flight get when a request timed out.
    fn timeout_disconnect(&self, api: ApiKey, corr: i32) -> Error {
        Error::with_message(
            ErrorKind::Disconnected,
            format!(
                "disconnected: a {api:?} request (correlation id {corr}) got no response within \
                 the request timeout of {:?}",
                self.request_timeout
            ),
        )
        .on_broker(self.broker_id)
    }

    /// Routes a response frame to its caller, or discards it.
    fn dispatch(&self, frame: Bytes) -> Result<()> {
        let corr = codec::response_correlation_id(&frame)?;
        let mut st = self.lock();
        // A broker answers the requests of a connection in order, so requests sent before this
        // one without expecting a response will never be answered now (Kafka does not answer
        // acks=0 produce requests); forget them.
        let mut no_response = None;
        while let Some(&(first, api)) = st.no_response.front() {
            if !precedes(first, corr) && first != corr {
                break;
            }
            st.no_response.pop_front();
            if first == corr {
                no_response = Some(api);
            }
        }
        if let Some(api) = no_response {
            drop(st);
            tracing::trace!(
                broker = self.broker_id,
                correlation_id = corr,
                ?api,
                "discarding the response to a request sent without expecting one"
            );
            return Ok(());
        }
        let Some(entry) = st.in_flight.remove(&corr) else {
            drop(st);
            tracing::warn!(
                broker = self.broker_id,
                correlation_id = corr,
                len = frame.len(),
                "discarding a response with an unknown correlation id"
            );
            return Ok(());
        };
        drop(st);
        match entry.waiter {
            Waiter::Caller(tx) => {
                if tx.send(Ok(frame)).is_err() {
                    tracing::trace!(broker = self.broker_id, correlation_id = corr, api = ?entry.api, "caller gone, response discarded");
                }
            }
            Waiter::Abandoned => {
                tracing::debug!(broker = self.broker_id, correlation_id = corr, api = ?entry.api, "discarding the late response of an abandoned request");
            }
        }
        Ok(())
    }

    /// Marks the connection dead with `error` and fails every request in flight with it.
    /// Keeps the first error unless `replace` (used by `close`, so later calls see `Closed`).
    fn fail(&self, error: Error, replace: bool) {
        self.fail_at(error, replace, None);
    }

    /// As [`fail`](Self::fail); when the connection is closed because a request timed out
    /// (`timed_out_at` is the moment), every other request that has itself been in flight for
    /// the whole request timeout fails with [`ErrorKind::Timeout`] rather than
    /// [`ErrorKind::Disconnected`]: its caller's own timer is due too, and which of the two fires
    /// first is a matter of scheduling.
    fn fail_at(&self, error: Error, replace: bool, timed_out_at: Option<Instant>) {
        let entries: Vec<Entry> = {
            let mut st = self.lock();
            if st.error.is_some() && !replace {
                return;
            }
            st.error = Some(error.clone());
            st.no_response.clear();
            st.in_flight.drain().map(|(_, e)| e).collect()
        };
        if !entries.is_empty() {
            tracing::debug!(broker = self.broker_id, count = entries.len(), %error, "failing requests in flight");
        }
        for entry in entries {
            if let Waiter::Caller(tx) = entry.waiter {
                let own_timeout =
                    timed_out_at.is_some_and(|now| now >= entry.sent + self.request_timeout);
                let e = if own_timeout {
                    Error::with_message(
                        ErrorKind::Timeout,
                        format!(
                            "no response within the request timeout of {:?}",
                            self.request_timeout
                        ),
                    )
                    .on_broker(self.broker_id)
                } else {
                    error.clone()
                };
                let _ = tx.send(Err(e.api(entry.api)));
            }
        }
        self.dead.send_replace(true);
    }
}

/// The error in-flight requests get when the connection fails because of `cause`.
fn disconnected(broker_id: i32, cause: Error) -> Error {
    if cause.kind() == &ErrorKind::Disconnected {
        return cause.on_broker(broker_id);
    }
    Error::with_message(ErrorKind::Disconnected, cause.to_string())
        .source(cause)
        .on_broker(broker_id)
}

/// Abandons a handed-off request when the caller's future is dropped before its response
/// arrived (the entry keeps its slot until the response comes or the connection dies).
struct InFlight<'a> {
    table: &'a Table,
    correlation_id: i32,
    armed: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.table.abandon(self.correlation_id);
        }
    }
}

impl Connection {
    /// Connects to `addr` (`host:port`) over TCP and negotiates API versions.
    ///
    /// `broker_id` is the node id the connection is for (use `-1` for a bootstrap address); it
    /// only labels errors and logs. Connecting and the ApiVersions exchange together must finish
    /// within [`connect_timeout`](ConnectionConfig::connect_timeout).
    pub async fn connect(
        addr: &str,
        broker_id: i32,
        config: &ConnectionConfig,
    ) -> Result<Connection> {
        config.validate()?;
        let deadline = Instant::now() + config.connect_timeout;
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                return Err(Error::from(e)
                    .message(format!("connecting to {addr}"))
                    .on_broker(broker_id));
            }
            Err(_) => {
                return Err(Error::with_message(
                    ErrorKind::Timeout,
                    format!(
                        "connecting to {addr} took longer than {:?}",
                        config.connect_timeout
                    ),
                )
                .on_broker(broker_id));
            }
        };
        stream.set_nodelay(true).map_err(|e| {
            Error::from(e)
                .message("setting TCP_NODELAY")
                .on_broker(broker_id)
        })?;
        let io: BoxTransport = if config.security.protocol.uses_tls() {
            Box::new(tls_handshake(stream, addr, broker_id, config, deadline).await?)
        } else {
            Box::new(stream)
        };
        Self::handshake_until(io, broker_id, config, deadline).await
    }

    /// Negotiates API versions over an established transport (TCP, TLS, a test stream),
    /// authenticates with SASL if the config's security protocol says so, and starts the
    /// connection's tasks. The ApiVersions and SASL exchanges must finish within
    /// [`connect_timeout`](ConnectionConfig::connect_timeout). TLS is not applied here: `io`
    /// is used as it is.
    pub async fn handshake(
        io: impl Transport,
        broker_id: i32,
        config: &ConnectionConfig,
    ) -> Result<Connection> {
        config.validate()?;
        let deadline = Instant::now() + config.connect_timeout;
        Self::handshake_until(Box::new(io), broker_id, config, deadline).await
    }

    async fn handshake_until(
        mut io: BoxTransport,
        broker_id: i32,
        config: &ConnectionConfig,
        deadline: Instant,
    ) -> Result<Connection> {
        let decoder = FrameDecoder::new(config.max_frame_size);
        let mut buf = BytesMut::new();
        let negotiated = tokio::time::timeout_at(
            deadline,
            negotiate_versions(&mut io, &mut buf, decoder, &config.client_id),
        )
        .await;
        let (versions, mut next_correlation) = match negotiated {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                return Err(map_tls_error(e)
                    .api(ApiKey::ApiVersions)
                    .on_broker(broker_id));
            }
            Err(_) => {
                return Err(Error::with_message(
                    ErrorKind::Timeout,
                    format!(
                        "ApiVersions handshake not done within {:?}",
                        config.connect_timeout
                    ),
                )
                .api(ApiKey::ApiVersions)
                .on_broker(broker_id));
            }
        };
        let mut reauth = None;
        if config.security.protocol.uses_sasl() {
            let session = SaslSession::new(&config.security.sasl);
            let mut ex = RawExchange {
                io: &mut io,
                buf: &mut buf,
                decoder,
                client_id: &config.client_id,
                next_correlation: &mut next_correlation,
                versions: &versions,
            };
            let authenticated =
                tokio::time::timeout_at(deadline, authenticate_raw(&session, &mut ex)).await;
            match authenticated {
                Ok(Ok(lifetime)) => {
                    tracing::debug!(broker = broker_id, ?lifetime, "SASL authenticated");
                    reauth = lifetime.map(|l| (session, l));
                }
                Ok(Err(e)) => return Err(map_tls_error(e).on_broker(broker_id)),
                Err(_) => {
                    return Err(Error::with_message(
                        ErrorKind::Timeout,
                        format!(
                            "SASL authentication not done within {:?}",
                            config.connect_timeout
                        ),
                    )
                    .api(ApiKey::SaslAuthenticate)
                    .on_broker(broker_id));
                }
            }
        }
        Ok(Self::start(
            io,
            buf,
            broker_id,
            config,
            versions,
            next_correlation,
            reauth,
        ))
    }

    fn start(
        io: BoxTransport,
        buf: BytesMut,
        broker_id: i32,
        config: &ConnectionConfig,
        versions: ApiVersionRanges,
        next_correlation: i32,
        reauth: Option<(SaslSession, Duration)>,
    ) -> Connection {
        let (dead_tx, dead_rx) = watch::channel(false);
        let table = Arc::new(Table {
            broker_id,
            request_timeout: config.request_timeout,
            max_no_response: config.max_in_flight,
            state: Mutex::new(State {
                in_flight: HashMap::new(),
                next_correlation,
                no_response: VecDeque::new(),
                error: None,
            }),
            dead: dead_tx,
        });
        let (read, write) = tokio::io::split(io);
        let (writes, rx) = mpsc::channel(config.max_in_flight);
        let decoder = FrameDecoder::new(config.max_frame_size);
        // The connection's tasks outlive the request that opened it: their own span.
        let span = tracing::debug_span!(parent: None, "kafka.connection", broker = broker_id, client_id = %config.client_id);
        let reader = tokio::spawn(
            read_loop(read, buf, decoder, table.clone(), dead_rx.clone()).instrument(span.clone()),
        );
        let writer = tokio::spawn(
            write_loop(write, rx, table.clone(), dead_rx.clone()).instrument(span.clone()),
        );
        let shared = Arc::new(Shared {
            broker_id,
            client_id: config.client_id.clone(),
            request_timeout: config.request_timeout,
            versions,
            table,
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
            max_in_flight: u32::try_from(config.max_in_flight).unwrap_or(u32::MAX),
            writes,
            tasks: Mutex::new(vec![reader, writer]),
        });
        if let Some((session, lifetime)) = reauth {
            let task = tokio::spawn(
                reauth_loop(Arc::downgrade(&shared), session, dead_rx, lifetime)
                    .instrument(span.clone()),
            );
            shared
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(task);
        }
        Connection { shared }
    }

    /// The node id this connection was made for.
    pub fn broker_id(&self) -> i32 {
        self.shared.broker_id
    }

    /// The API versions the broker supports (from the ApiVersions exchange at connect).
    pub fn versions(&self) -> &ApiVersionRanges {
        &self.shared.versions
    }

    /// Whether the connection is dead (failed or closed); every request on it fails at once.
    pub fn is_closed(&self) -> bool {
        self.shared.table.lock().error.is_some()
    }

    /// Why the connection is dead, if it is.
    pub fn error(&self) -> Option<Error> {
        self.shared.table.error()
    }

    /// How many requests are in the in-flight table: waiting for their response, or abandoned
    /// by their caller (dropped) but not yet answered. Never more than
    /// [`max_in_flight`](ConnectionConfig::max_in_flight): an abandoned request keeps its slot
    /// until its response is read or the connection dies. Requests sent with
    /// [`send_no_response`](Self::send_no_response) are not counted.
    pub fn in_flight(&self) -> usize {
        self.shared.table.lock().in_flight.len()
    }

    /// Sends `request` at the highest version both the broker and this client support and
    /// waits for the response.
    ///
    /// Fails with [`ErrorKind::UnsupportedVersion`] if there is no such version,
    /// [`ErrorKind::Timeout`] if no response came within
    /// [`request_timeout`](ConnectionConfig::request_timeout) (waiting for an in-flight slot
    /// included), and [`ErrorKind::Disconnected`] if the connection is or becomes dead.
    ///
    /// A request that was sent and got no response within the request timeout closes the
    /// connection (as Java's client does): its caller gets [`ErrorKind::Timeout`] (so does any
    /// other request in flight as long), every other request in flight
    /// [`ErrorKind::Disconnected`], both retriable. A caller whose time ran out
    /// while it waited for an in-flight slot only fails itself.
    pub async fn send<R: Request>(&self, request: R) -> Result<R::Response> {
        let version = self
            .shared
            .versions
            .negotiate::<R>()
            .map_err(|e| e.on_broker(self.shared.broker_id))?;
        self.send_at(request, version).await
    }

    /// Sends `request` at an explicit `version` and waits for the response.
    pub async fn send_at<R: Request>(&self, request: R, version: i16) -> Result<R::Response> {
        let api = api_key::<R>()?;
        self.request::<R>(&request, version, api, true)
            .instrument(self.request_span(api, version))
            .await
    }

    /// The `kafka.request` span of one request.
    fn request_span(&self, api: ApiKey, version: i16) -> tracing::Span {
        tracing::debug_span!(
            "kafka.request",
            api = ?api,
            version,
            broker = self.shared.broker_id,
            client_id = %self.shared.client_id
        )
    }

    /// [`send_at`](Self::send_at) without taking an in-flight slot: for re-authentication,
    /// which holds every slot while it runs.
    async fn send_unpermitted<R: Request>(&self, request: R, version: i16) -> Result<R::Response> {
        let api = api_key::<R>()?;
        self.request::<R>(&request, version, api, false).await
    }

    /// Sends a request for which the broker sends no response (a Produce with acks=0) at the
    /// highest common version. Returns once the frame is written.
    ///
    /// Kafka does not answer such a request, some brokers (Tansu) do; a response that does come
    /// is read and discarded by its correlation id.
    pub async fn send_no_response<R: Request>(&self, request: R) -> Result<()> {
        let version = self
            .shared
            .versions
            .negotiate::<R>()
            .map_err(|e| e.on_broker(self.shared.broker_id))?;
        self.send_no_response_at(request, version).await
    }

    /// [`send_no_response`](Connection::send_no_response) at an explicit `version`.
    pub async fn send_no_response_at<R: Request>(&self, request: R, version: i16) -> Result<()> {
        let api = api_key::<R>()?;
        let timeout = self.shared.request_timeout;
        let send = async {
            // The slot bounds the frames queued for the writer; it is released once the frame
            // is written (nothing waits for a response).
            let _permit = self.acquire(api).await?;
            let frame = self.encode(&request, version, api)?;
            let (tx, rx) = oneshot::channel();
            let mut in_flight = self
                .hand_off(frame, api, Registration::NoResponse, Some(tx))
                .await?;
            in_flight.armed = false;
            rx.await.map_err(|_| self.dead_error(api))
        };
        let span = self.request_span(api, version);
        match tokio::time::timeout(timeout, send).instrument(span).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout_error(api, timeout)),
        }
    }

    /// Closes the connection: fails every request in flight with [`ErrorKind::Closed`], stops
    /// the reader and writer tasks and waits for them to end (which closes the socket). Later
    /// requests on any clone fail with `Closed`. Idempotent.
    pub async fn close(&self) {
        self.close_with(
            Error::with_message(ErrorKind::Closed, "connection closed")
                .on_broker(self.shared.broker_id),
        )
        .await;
    }

    /// [`close`](Self::close), failing the requests in flight (and later ones) with `error`
    /// instead of `Closed`: for a connection the client closes while its callers live on.
    pub(crate) async fn close_with(&self, error: Error) {
        self.shared.table.fail(error, true);
        let tasks = std::mem::take(
            &mut *self
                .shared
                .tasks
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for task in tasks {
            if let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!(broker = self.shared.broker_id, "connection task panicked");
            }
        }
    }

    /// Sends one request and waits for its response, all within the request timeout. See
    /// [`send`](Self::send) for what a timeout does.
    async fn request<R: Request>(
        &self,
        request: &R,
        version: i16,
        api: ApiKey,
        permit: bool,
    ) -> Result<R::Response> {
        let timeout = self.shared.request_timeout;
        let deadline = Instant::now() + timeout;
        let permit = if permit {
            match tokio::time::timeout_at(deadline, self.acquire_owned(api)).await {
                Ok(p) => Some(p?),
                Err(_) => return Err(self.timeout_error(api, timeout)),
            }
        } else {
            None
        };
        let frame = self.encode(request, version, api)?;
        let (tx, rx) = oneshot::channel();
        let handed = tokio::time::timeout_at(
            deadline,
            self.hand_off(frame, api, Registration::Caller(tx, permit), None),
        )
        .await;
        let mut in_flight = match handed {
            Ok(r) => r?,
            Err(_) => return Err(self.timeout_error(api, timeout)),
        };
        let correlation_id = in_flight.correlation_id;
        let frame = match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(Ok(frame))) => frame,
            Ok(Ok(Err(e))) => return Err(e),
            Ok(Err(_)) => return Err(self.dead_error(api)),
            Err(_) => {
                in_flight.armed = false;
                self.shared.table.time_out(correlation_id, Instant::now());
                return Err(self.timeout_error(api, timeout));
            }
        };
        in_flight.armed = false;
        match codec::decode_response::<R>(frame, version) {
            Ok((header, response)) if header.correlation_id == correlation_id => Ok(response),
            Ok((header, _)) => Err(Error::with_message(
                ErrorKind::UnexpectedResponse,
                format!(
                    "response header has correlation id {}, expected {correlation_id}",
                    header.correlation_id
                ),
            )
            .api(api)
            .on_broker(self.shared.broker_id)),
            Err(e) => {
                // The stream (or what we think the broker speaks) cannot be trusted any more.
                let e = e.api(api).on_broker(self.shared.broker_id);
                self.shared
                    .table
                    .fail(disconnected(self.shared.broker_id, e.clone()), false);
                Err(e)
            }
        }
    }

    /// Waits for an in-flight slot to move into the request's table entry (failing at once on a
    /// dead connection).
    async fn acquire_owned(&self, api: ApiKey) -> Result<OwnedSemaphorePermit> {
        if let Some(e) = self.shared.table.error() {
            return Err(e.api(api));
        }
        self.shared
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.dead_error(api))
    }

    /// Waits for an in-flight slot (failing at once on a dead connection).
    async fn acquire(&self, api: ApiKey) -> Result<tokio::sync::SemaphorePermit<'_>> {
        if let Some(e) = self.shared.table.error() {
            return Err(e.api(api));
        }
        self.shared
            .permits
            .acquire()
            .await
            .map_err(|_| self.dead_error(api))
    }

    /// Encodes the whole frame (correlation id patched in at hand-off), so that the writer gets
    /// it as one unit.
    fn encode<R: Request>(&self, request: &R, version: i16, api: ApiKey) -> Result<BytesMut> {
        let mut frame = BytesMut::new();
        codec::encode_request(
            request,
            version,
            0,
            Some(&self.shared.client_id),
            &mut frame,
        )
        .map_err(|e| e.api(api).on_broker(self.shared.broker_id))?;
        Ok(frame)
    }

    /// Hands a frame to the writer. The only await is for a channel slot, before anything is
    /// registered; from the registration on everything is synchronous, so a dropped caller
    /// either sent nothing or handed off the whole frame.
    async fn hand_off(
        &self,
        mut frame: BytesMut,
        api: ApiKey,
        registration: Registration,
        written: Option<oneshot::Sender<()>>,
    ) -> Result<InFlight<'_>> {
        let slot = self
            .shared
            .writes
            .reserve()
            .await
            .map_err(|_| self.dead_error(api))?;
        let Some(corr_bytes) = frame.get_mut(CORRELATION_OFFSET..CORRELATION_OFFSET + 4) else {
            return Err(Error::with_message(ErrorKind::Encode, "request frame too short").api(api));
        };
        let correlation_id = self.shared.table.register(api, registration)?;
        corr_bytes.copy_from_slice(&correlation_id.to_be_bytes());
        slot.send(WriteCmd {
            frame: frame.freeze(),
            written,
        });
        Ok(InFlight {
            table: &self.shared.table,
            correlation_id,
            armed: true,
        })
    }

    fn dead_error(&self, api: ApiKey) -> Error {
        self.shared
            .table
            .error()
            .unwrap_or_else(|| {
                Error::with_message(ErrorKind::Disconnected, "connection tasks ended")
                    .on_broker(self.shared.broker_id)
            })
            .api(api)
    }

    fn timeout_error(&self, api: ApiKey, timeout: Duration) -> Error {
        Error::with_message(
            ErrorKind::Timeout,
            format!("no response within the request timeout of {timeout:?}"),
        )
        .api(api)
        .on_broker(self.shared.broker_id)
    }
}

/// The TLS handshake of [`Connection::connect`], within the connect deadline.
#[cfg(feature = "tls")]
async fn tls_handshake(
    stream: TcpStream,
    addr: &str,
    broker_id: i32,
    config: &ConnectionConfig,
    deadline: Instant,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    match tokio::time::timeout_at(
        deadline,
        super::security::tls_connect(stream, addr, &config.security.tls),
    )
    .await
    {
        Ok(r) => r.map_err(|e| e.on_broker(broker_id)),
        Err(_) => Err(Error::with_message(
            ErrorKind::Timeout,
            format!(
                "TLS handshake with {addr} not done within {:?}",
                config.connect_timeout
            ),
        )
        .on_broker(broker_id)),
    }
}

#[cfg(not(feature = "tls"))]
async fn tls_handshake(
    _stream: TcpStream,
    _addr: &str,
    _broker_id: i32,
    config: &ConnectionConfig,
    _deadline: Instant,
) -> Result<TcpStream> {
    Err(Error::config(format!(
        "security.protocol {}: this build of rekafka has no TLS (cargo feature `tls`)",
        config.security.protocol
    )))
}

/// Without TLS there is no TLS error to classify.
#[cfg(not(feature = "tls"))]
fn map_tls_error(e: Error) -> Error {
    e
}

/// Re-authentication over the running connection.
struct ConnExchange<'a> {
    conn: &'a Connection,
}

impl SaslExchange for ConnExchange<'_> {
    fn versions(&self) -> &ApiVersionRanges {
        &self.conn.shared.versions
    }

    async fn handshake(
        &mut self,
        request: SaslHandshakeRequest,
        version: i16,
    ) -> Result<SaslHandshakeResponse> {
        self.conn.send_unpermitted(request, version).await
    }

    async fn authenticate(
        &mut self,
        request: SaslAuthenticateRequest,
        version: i16,
    ) -> Result<SaslAuthenticateResponse> {
        self.conn.send_unpermitted(request, version).await
    }
}

/// The re-authentication task (KIP-368), run when the broker gave the SASL session a
/// lifetime. At 80–90% of the lifetime it takes every in-flight slot, which waits for the
/// requests in flight to be answered and holds back new ones (as Java's client does, the
/// connection sends nothing else while re-authenticating), re-runs the SASL exchange on the
/// connection (the responses are routed by correlation id like any other), then releases the
/// slots. A failed re-authentication kills the connection with its error. Holds only a weak
/// reference while it waits, so dropping every handle still closes the connection; ends when
/// the connection dies or closes.
async fn reauth_loop(
    shared: Weak<Shared>,
    session: SaslSession,
    mut dead: watch::Receiver<bool>,
    mut lifetime: Duration,
) {
    loop {
        let wait = reauth_delay(lifetime);
        tokio::select! {
            biased;
            _ = dead.wait_for(|d| *d) => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let conn = Connection { shared };
        let broker_id = conn.shared.broker_id;
        let max = conn.shared.max_in_flight;
        let permits = tokio::select! {
            biased;
            _ = dead.wait_for(|d| *d) => return,
            p = conn.shared.permits.acquire_many(max) => p,
        };
        let Ok(permits) = permits else {
            return;
        };
        tracing::debug!(broker = broker_id, ?lifetime, "re-authenticating");
        let result = session
            .run(&mut ConnExchange { conn: &conn }, Some(lifetime))
            .await;
        drop(permits);
        match result {
            Ok(Some(next)) => lifetime = next,
            Ok(None) => {
                tracing::debug!(
                    broker = broker_id,
                    "re-authenticated; no session lifetime any more"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(broker = broker_id, error = %e, "re-authentication failed");
                let e = if e.kind() == &ErrorKind::Authentication {
                    e.on_broker(broker_id)
                } else {
                    disconnected(broker_id, e)
                };
                conn.shared.table.fail(e, false);
                return;
            }
        }
    }
}

/// ApiVersions at the newest version, falling back as the broker says (KIP-511). Returns the
/// broker's ranges and the next correlation id; leftover bytes stay in `buf`.
async fn negotiate_versions(
    io: &mut BoxTransport,
    buf: &mut BytesMut,
    decoder: FrameDecoder,
    client_id: &str,
) -> Result<(ApiVersionRanges, i32)> {
    let mut version = API_VERSIONS_LATEST;
    let request = api_versions_request(SOFTWARE_NAME, env!("CARGO_PKG_VERSION"));
    for correlation_id in 0..4 {
        let mut out = BytesMut::new();
        codec::encode_request(&request, version, correlation_id, Some(client_id), &mut out)?;
        io.write_all(&out).await?;
        io.flush().await?;
        let frame = loop {
            if let Some(frame) = decoder.decode(buf)? {
                break frame;
            }
            if io.read_buf(buf).await? == 0 {
                return Err(Error::with_message(
                    ErrorKind::Disconnected,
                    "connection closed during the ApiVersions handshake",
                ));
            }
        };
        let (got, outcome) = decode_api_versions(frame, version)?;
        if got != correlation_id {
            return Err(Error::with_message(
                ErrorKind::UnexpectedResponse,
                format!(
                    "ApiVersions answered with correlation id {got}, expected {correlation_id}"
                ),
            ));
        }
        match outcome {
            ApiVersionsOutcome::Supported { ranges, .. } => {
                return Ok((ranges, correlation_id + 1));
            }
            ApiVersionsOutcome::RetryWith(v) => version = v,
        }
    }
    Err(Error::with_message(
        ErrorKind::UnexpectedResponse,
        "ApiVersions negotiation did not settle on a version",
    ))
}

/// The most the reader reserves beyond the bytes it holds while a frame is incomplete.
const READ_CHUNK: usize = 64 * 1024;

/// The reader task: splits the stream into frames and routes them by correlation id. Ends when
/// the connection dies (failing everything in flight) or is closed.
async fn read_loop(
    mut io: ReadHalf<BoxTransport>,
    mut buf: BytesMut,
    decoder: FrameDecoder,
    table: Arc<Table>,
    mut dead: watch::Receiver<bool>,
) {
    let mut sweep = tokio::time::interval(sweep_interval(table.request_timeout));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let error = loop {
        if let Err(e) = drain_frames(&mut buf, decoder, &table) {
            break e;
        }
        let want = match decoder.frame_len(&buf) {
            Ok(Some(n)) => n.saturating_sub(buf.len()),
            Ok(None) => 0,
            Err(e) => break e,
        };
        // A size prefix is only a claim (4 hostile bytes may announce 100 MiB): grow with the
        // bytes that arrived, at most doubling what the frame already holds (at least 64 KiB),
        // which keeps a large frame's copies amortised.
        let want = want.min(buf.len().max(READ_CHUNK));
        buf.reserve(want.max(8 * 1024));
        tokio::select! {
            biased;
            _ = dead.wait_for(|d| *d) => return,
            // Before the read, so a busy socket cannot starve the check (it is ready once per
            // interval only). `read_buf` is cancel safe: no bytes are lost.
            now = sweep.tick() => table.expire_abandoned(now),
            read = io.read_buf(&mut buf) => match read {
                Ok(0) => break Error::with_message(ErrorKind::Disconnected, "connection closed by the broker"),
                Ok(_) => {}
                Err(e) => break Error::from(e),
            },
        }
    };
    tracing::debug!(broker = table.broker_id, %error, "connection failed");
    table.fail(disconnected(table.broker_id, error), false);
}

fn drain_frames(buf: &mut BytesMut, decoder: FrameDecoder, table: &Table) -> Result<()> {
    while let Some(frame) = decoder.decode(buf)? {
        table.dispatch(frame)?;
    }
    Ok(())
}

/// The writer task: the only code that writes to the socket, one whole frame at a time.
async fn write_loop(
    io: WriteHalf<BoxTransport>,
    mut rx: mpsc::Receiver<WriteCmd>,
    table: Arc<Table>,
    mut dead: watch::Receiver<bool>,
) {
    let mut out = BufWriter::with_capacity(64 * 1024, io);
    let mut acks = Vec::new();
    loop {
        let cmd = tokio::select! {
            biased;
            _ = dead.wait_for(|d| *d) => return,
            cmd = rx.recv() => match cmd {
                Some(cmd) => cmd,
                None => return,
            },
        };
        let result = tokio::select! {
            biased;
            _ = dead.wait_for(|d| *d) => return,
            r = write_batch(&mut out, &mut rx, cmd, &mut acks) => r,
        };
        match result {
            Ok(()) => {
                for ack in acks.drain(..) {
                    let _ = ack.send(());
                }
            }
            Err(e) => {
                tracing::debug!(broker = table.broker_id, error = %e, "write failed");
                table.fail(disconnected(table.broker_id, Error::from(e)), false);
                return;
            }
        }
    }
}

async fn write_batch(
    out: &mut BufWriter<WriteHalf<BoxTransport>>,
    rx: &mut mpsc::Receiver<WriteCmd>,
    first: WriteCmd,
    acks: &mut Vec<oneshot::Sender<()>>,
) -> std::io::Result<()> {
    let mut next = Some(first);
    let mut n = 0;
    while let Some(cmd) = next {
        out.write_all(&cmd.frame).await?;
        acks.extend(cmd.written);
        n += 1;
        next = if n < WRITE_BATCH {
            rx.try_recv().ok()
        } else {
            None
        };
    }
    out.flush().await
}

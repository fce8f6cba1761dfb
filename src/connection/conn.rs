//! One connection to one broker: a writer task, a reader task and the in-flight table between
//! them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::Request;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::Instrument;

#[cfg(not(feature = "tls"))]
use super::handshake::map_tls_error;
use super::handshake::{negotiate_versions, tls_handshake};
use super::inflight::{InFlight, Registration, Table, disconnected};
use super::io::{WriteCmd, read_loop, write_loop};
#[cfg(feature = "tls")]
use super::security::map_tls_error;
use super::security::reauth_loop;
use super::security::{RawExchange, SaslSession, authenticate_raw};
use super::{BoxTransport, ConnectionConfig, Transport};
use crate::error::{Error, ErrorKind, Result};
use crate::protocol::codec::{self, api_key};
use crate::protocol::frame::{FrameDecoder, RequestFrame};
use crate::protocol::versions::ApiVersionRanges;

/// Offset of the correlation id in an encoded request frame: size (4), api key (2), version (2).
const CORRELATION_OFFSET: usize = 8;

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
/// use rekafka::protocol::unstable::messages::MetadataRequest;
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
    pub(crate) shared: Arc<Shared>,
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
pub(crate) struct Shared {
    pub(crate) broker_id: i32,
    pub(crate) client_id: String,
    pub(crate) request_timeout: Duration,
    pub(crate) versions: ApiVersionRanges,
    pub(crate) table: Arc<Table>,
    /// One permit per in-flight slot. A permit moves into the request's table entry at
    /// hand-off and is released only when the entry leaves the table (response read, or the
    /// connection died), never when the caller gives up.
    pub(crate) permits: Arc<Semaphore>,
    /// The number of permits in `permits` (re-authentication takes them all).
    pub(crate) max_in_flight: u32,
    pub(crate) writes: mpsc::Sender<WriteCmd>,
    pub(crate) tasks: Mutex<Vec<JoinHandle<()>>>,
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
        let (table, dead_rx) = Table::new(
            broker_id,
            config.request_timeout,
            config.max_in_flight,
            next_correlation,
        );
        let table = Arc::new(table);
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

    crate::protocol::unstable_pub! {
    /// The API versions the broker supports (from the ApiVersions exchange at connect).
    pub fn versions(&self) -> &ApiVersionRanges {
        &self.shared.versions
    }
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
    /// `send_no_response` are not counted.
    pub fn in_flight(&self) -> usize {
        self.shared.table.lock().in_flight.len()
    }

    crate::protocol::unstable_pub! {
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
        let version = self.negotiated::<R>()?;
        self.send_at(request, version).await
    }
    }

    crate::protocol::unstable_pub! {
    /// Sends `request` at an explicit `version` and waits for the response.
    pub async fn send_at<R: Request>(&self, request: R, version: i16) -> Result<R::Response> {
        let api = api_key::<R>()?;
        let encode = || self.encode(&request, version, api);
        self.request::<R>(encode, version, api, true)
            .instrument(self.request_span(api, version))
            .await
    }
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
    pub(crate) async fn send_unpermitted<R: Request>(
        &self,
        request: R,
        version: i16,
    ) -> Result<R::Response> {
        let api = api_key::<R>()?;
        let encode = || self.encode(&request, version, api);
        self.request::<R>(encode, version, api, false).await
    }

    crate::protocol::unstable_pub! {
    /// Sends a request for which the broker sends no response (a Produce with acks=0) at the
    /// highest common version. Returns once the frame is written.
    ///
    /// Kafka does not answer such a request, some brokers (Tansu) do; a response that does come
    /// is read and discarded by its correlation id.
    pub async fn send_no_response<R: Request>(&self, request: R) -> Result<()> {
        let version = self.negotiated::<R>()?;
        self.send_no_response_at(request, version).await
    }
    }

    crate::protocol::unstable_pub! {
    /// [`send_no_response`](Connection::send_no_response) at an explicit `version`.
    pub async fn send_no_response_at<R: Request>(&self, request: R, version: i16) -> Result<()> {
        let api = api_key::<R>()?;
        let encode = || self.encode(&request, version, api);
        self.no_response(encode, version, api).await
    }
    }

    /// Sends a Produce request at the highest common version and waits for the response. The
    /// request's record batches are not copied into the frame: they are written from the
    /// request's own buffers (see [`codec::encode_produce_request`]).
    pub(crate) async fn send_produce(&self, request: ProduceRequest) -> Result<ProduceResponse> {
        let api = ApiKey::Produce;
        let version = self.negotiated::<ProduceRequest>()?;
        let encode = || self.encode_produce(&request, version);
        self.request::<ProduceRequest>(encode, version, api, true)
            .instrument(self.request_span(api, version))
            .await
    }

    /// [`send_produce`](Self::send_produce) for acks=0: returns once the frame is written (see
    /// [`send_no_response`](Self::send_no_response)).
    pub(crate) async fn send_produce_no_response(&self, request: ProduceRequest) -> Result<()> {
        let version = self.negotiated::<ProduceRequest>()?;
        let encode = || self.encode_produce(&request, version);
        self.no_response(encode, version, ApiKey::Produce).await
    }

    /// The highest version of `R` both sides speak (an error tagged with the broker).
    fn negotiated<R: Request>(&self) -> Result<i16> {
        self.shared
            .versions
            .negotiate::<R>()
            .map_err(|e| e.on_broker(self.shared.broker_id))
    }

    /// Sends the frame `encode` makes, for which no response comes, within the request timeout.
    async fn no_response(
        &self,
        encode: impl FnOnce() -> Result<RequestFrame>,
        version: i16,
        api: ApiKey,
    ) -> Result<()> {
        let timeout = self.shared.request_timeout;
        let send = async {
            // The slot bounds the frames queued for the writer; it is released once the frame
            // is written (nothing waits for a response).
            let _permit = self.acquire(api).await?;
            let frame = encode()?;
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
        encode: impl FnOnce() -> Result<RequestFrame>,
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
        let frame = encode()?;
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
    fn encode<R: Request>(&self, request: &R, version: i16, api: ApiKey) -> Result<RequestFrame> {
        let mut frame = BytesMut::new();
        codec::encode_request(
            request,
            version,
            0,
            Some(&self.shared.client_id),
            &mut frame,
        )
        .map_err(|e| e.api(api).on_broker(self.shared.broker_id))?;
        Ok(RequestFrame::one(frame))
    }

    /// Encodes a Produce request as segments: the record batches are shared, not copied.
    fn encode_produce(&self, request: &ProduceRequest, version: i16) -> Result<RequestFrame> {
        codec::encode_produce_request(request, version, 0, Some(&self.shared.client_id))
            .map_err(|e| e.api(ApiKey::Produce).on_broker(self.shared.broker_id))
    }

    /// Hands a frame to the writer. The only await is for a channel slot, before anything is
    /// registered; from the registration on everything is synchronous, so a dropped caller
    /// either sent nothing or handed off the whole frame.
    async fn hand_off(
        &self,
        mut frame: RequestFrame,
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
        let Some(corr_bytes) = frame
            .head
            .get_mut(CORRELATION_OFFSET..CORRELATION_OFFSET + 4)
        else {
            return Err(Error::with_message(ErrorKind::Encode, "request frame too short").api(api));
        };
        let correlation_id = self.shared.table.register(api, registration)?;
        corr_bytes.copy_from_slice(&correlation_id.to_be_bytes());
        slot.send(WriteCmd {
            head: frame.head.freeze(),
            tail: frame.tail,
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

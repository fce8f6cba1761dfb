//! Connections to brokers.
//!
//! * [`Connection`]: one socket to one broker. Connecting negotiates API versions
//!   (ApiVersions with the KIP-511 fallback); `send` then picks the highest
//!   version of each request both sides support. Any number of tasks share a connection and
//!   their requests are pipelined on the socket, at most
//!   [`max_in_flight`](ConnectionConfig::max_in_flight) at a time.
//! * [`BrokerConnection`]: a [`Connection`] that reconnects lazily, with [`RetryDelay`].
//! * The raw request methods of both (`send`, `send_at`, `send_no_response`, …, taking a
//!   `kafka-protocol` request) and `Connection::versions` are public with the cargo feature
//!   `unstable-protocol` only: they are part of the unstable protocol surface (see
//!   [`protocol`](crate::protocol)), not covered by semver.
//! * [`ConnectionConfig`]: timeouts and limits, and [`SecurityConfig`] ([`security`]): TLS and
//!   SASL, applied when connecting (TCP, then TLS, then ApiVersions, then SASL), with KIP-368
//!   re-authentication on the live connection.
//!
//! # Tasks
//!
//! Each connection runs two tasks. The **writer** is the only code that writes to the socket;
//! callers hand it complete frames through a bounded channel, so frames never interleave. The
//! **reader** splits the stream into frames and routes each by its correlation id, through the
//! in-flight table (correlation id → API, waiting caller, in-flight slot), to the caller
//! waiting for it. A response nobody waits for (its caller was dropped, or the request was sent
//! with `send_no_response`) is read and discarded; a response
//! with an unknown correlation id is logged and discarded. The reader also checks the table
//! every tenth of the request timeout (between 5 ms and 1 s) for requests whose caller is gone
//! and which have been in flight longer than the request timeout (see *Request timeouts*).
//!
//! # Request timeouts and the in-flight bound
//!
//! A request holds one of the connection's [`max_in_flight`](ConnectionConfig::max_in_flight)
//! slots from the moment it is handed to the writer until its response is read or the
//! connection dies — not until its caller stops waiting. So the in-flight table never holds
//! more than `max_in_flight` requests, however many callers give up, and a broker never has
//! more than that many requests of this connection to work on.
//!
//! A request that has been in flight for [`request_timeout`](ConnectionConfig::request_timeout)
//! without a response (measured from its hand-off to the writer, to within a tenth of the
//! request timeout and at most 1 s) closes the connection, as Java's `NetworkClient` does ("Disconnecting
//! from node due to request timeout"): its caller gets
//! [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) (so does any other request that has been
//! in flight as long), every other request in flight fails at the same moment with
//! [`ErrorKind::Disconnected`](crate::ErrorKind::Disconnected) (both retriable), and [`BrokerConnection`] reconnects, with back-off, on the next request. The
//! broker's backlog of abandoned requests is dropped with the socket instead of growing.
//! A caller's own wait (slot included) is bounded by the request timeout too; if its time runs
//! out while its request has been in flight for less (it waited for a slot), only that caller
//! fails with `Timeout` and its request keeps its slot until the response is read, or until it
//! has been in flight for the request timeout, which closes the connection as above. SASL
//! re-authentication waits for every slot, so it too is delayed by at most one request timeout.
//!
//! Requests sent with `send_no_response` release their slot
//! once written; the last `max_in_flight` of them are remembered so that a broker that answers
//! them anyway (Tansu) has its answers recognised and discarded.
//!
//! A connection whose SASL session has a lifetime (KIP-368) runs a third task that
//! re-authenticates at 80–90% of it: it takes every in-flight slot (waiting for the requests in
//! flight, holding back new ones), runs SaslHandshake/SaslAuthenticate on the connection, and
//! gives the slots back.
//!
//! When the reader sees EOF, a reset, a frame over the maximum size, or a frame that does not
//! decode (and when a write fails), the connection is dead: every request in flight fails at
//! once with [`ErrorKind::Disconnected`](crate::ErrorKind::Disconnected) (retriable, with the
//! broker id in its context) and so does every later request. [`Connection::close`], or dropping
//! the last handle, fails them with [`ErrorKind::Closed`](crate::ErrorKind::Closed) instead;
//! either way both tasks end and the socket is closed.
//!
//! # Cancel safety
//!
//! Every `async fn` here may be dropped at any point (that is how a timeout or a `select!`
//! cancels it) without corrupting the connection:
//!
//! * a request is encoded into one complete frame *before* anything is registered or sent, and
//!   handed to the writer task as one unit, in a synchronous step after the only await that
//!   precedes it (waiting for a slot in the writer's channel). A dropped caller therefore either
//!   sent nothing or handed off the whole frame, which the writer writes in full;
//! * if the caller is dropped after the hand-off, its entry in the in-flight table is marked
//!   abandoned and the response is read and discarded by its correlation id when it comes. The
//!   entry keeps its in-flight slot until then (or until the connection dies), so dropped
//!   callers cannot grow the table beyond `max_in_flight`; an abandoned request that stays
//!   unanswered for the request timeout closes the connection;
//! * a request timeout is not such a drop: a request in flight for the whole
//!   [`request_timeout`](ConnectionConfig::request_timeout) closes the connection (see
//!   *Request timeouts* above);
//! * [`BrokerConnection::connection`] dropped while it waits for the back-off or connects leaves
//!   no state behind (a half-made connection is dropped with it).
//!
//! Only [`Connection::close`] should not be raced against other work: dropped early, it has
//! still failed the requests and told the tasks to stop, it just does not wait for them.

mod backoff;
mod broker;
pub(crate) mod conn;
mod handshake;
pub(crate) mod inflight;
mod io;
pub mod security;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};

pub use backoff::RetryDelay;
pub use broker::BrokerConnection;
pub use conn::Connection;

pub use security::SecurityConfig;

use crate::config::{self, Setting};
use crate::error::{Error, Result};
use crate::protocol::frame::DEFAULT_MAX_FRAME_SIZE;

/// Default [`ConnectionConfig::client_id`].
pub const DEFAULT_CLIENT_ID: &str = "rekafka";
/// Default [`ConnectionConfig::connect_timeout`]: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`ConnectionConfig::request_timeout`]: 30 s, as Kafka's `request.timeout.ms`.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ConnectionConfig::max_in_flight`]: 64.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;
/// Default [`ConnectionConfig::reconnect_backoff`]: 50 ms, as Kafka's `reconnect.backoff.ms`.
pub const DEFAULT_RECONNECT_BACKOFF: Duration = Duration::from_millis(50);
/// Default [`ConnectionConfig::reconnect_backoff_max`]: 1 s, as Kafka's
/// `reconnect.backoff.max.ms`.
pub const DEFAULT_RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A byte stream to a broker: TCP, TLS over TCP, or anything else that is `AsyncRead +
/// AsyncWrite` (a test stream). Implemented for every such type.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A boxed [`Transport`].
pub type BoxTransport = Box<dyn Transport>;

/// Settings of a connection.
///
/// ```
/// use std::time::Duration;
/// use rekafka::connection::ConnectionConfig;
///
/// let config = ConnectionConfig::default()
///     .with_client_id("my-app")
///     .with_request_timeout(Duration::from_secs(5));
/// assert_eq!(config.max_in_flight, 64);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// The client id sent in every request header. Default: `"rekafka"`.
    pub client_id: String,
    /// How long connecting (TCP connect and the ApiVersions exchange) may take. Default: 10 s.
    pub connect_timeout: Duration,
    /// How long a request may wait for its response, including waiting for an in-flight slot.
    /// A request in flight this long without a response closes the connection (as in Java's
    /// client), failing the other requests in flight with a retriable
    /// [`ErrorKind::Disconnected`](crate::ErrorKind::Disconnected) error. Default: 30 s
    /// (Kafka's `request.timeout.ms`).
    pub request_timeout: Duration,
    /// How many requests may be in flight on the connection at once; further callers wait. A
    /// request whose caller was dropped still counts until its response is read or the
    /// connection dies. Default: 64.
    pub max_in_flight: usize,
    /// The largest response frame accepted; a larger one kills the connection. Default:
    /// [`DEFAULT_MAX_FRAME_SIZE`] (100 MiB).
    pub max_frame_size: usize,
    /// The wait before reconnecting, doubled after each consecutive failure. Default: 50 ms
    /// (Kafka's `reconnect.backoff.ms`).
    pub reconnect_backoff: Duration,
    /// The longest wait before reconnecting. Default: 1 s (Kafka's `reconnect.backoff.max.ms`).
    pub reconnect_backoff_max: Duration,
    /// TLS and SASL (`security.protocol` and the `ssl.*`/`sasl.*` settings). Default:
    /// PLAINTEXT.
    pub security: SecurityConfig,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            reconnect_backoff: DEFAULT_RECONNECT_BACKOFF,
            reconnect_backoff_max: DEFAULT_RECONNECT_BACKOFF_MAX,
            security: SecurityConfig::default(),
        }
    }
}

impl ConnectionConfig {
    /// The connection's own settings (see [`config`] and
    /// `docs/configuration.md`); [`apply_property`](Self::apply_property) also takes
    /// [`SecurityConfig::SETTINGS`].
    pub const SETTINGS: &'static [Setting] = config::CONNECTION;

    /// Every key [`apply_property`](Self::apply_property) knows: the connection's own and the
    /// security keys, aliases included.
    pub fn property_names() -> impl Iterator<Item = &'static str> + Clone {
        config::names(Self::SETTINGS).chain(SecurityConfig::property_names())
    }

    /// Applies one Java/librdkafka-style property: `client.id`, `request.timeout.ms`,
    /// `socket.connection.setup.timeout.ms` ([`connect_timeout`](Self::connect_timeout)),
    /// `reconnect.backoff.ms`, `reconnect.backoff.max.ms`, librdkafka's
    /// `receive.message.max.bytes` ([`max_frame_size`](Self::max_frame_size)), and the
    /// security keys of [`SecurityConfig::apply_property`]. `Ok(false)`: not a key of this
    /// config; `Err` ([`ErrorKind::Config`](crate::ErrorKind::Config)): a known key with a bad
    /// value, naming the key.
    pub fn apply_property(&mut self, key: &str, value: &str) -> Result<bool> {
        let Some(s) = config::find(Self::SETTINGS, key) else {
            return self.security.apply_property(key, value);
        };
        match s.key {
            "client.id" => self.client_id = s.text(value)?.unwrap_or_default(),
            "request.timeout.ms" => self.request_timeout = s.millis(value)?,
            "socket.connection.setup.timeout.ms" => self.connect_timeout = s.millis(value)?,
            "reconnect.backoff.ms" => self.reconnect_backoff = s.millis(value)?,
            "reconnect.backoff.max.ms" => self.reconnect_backoff_max = s.millis(value)?,
            "receive.message.max.bytes" => self.max_frame_size = s.number(value)?,
            other => return Err(config::unhandled(other)),
        }
        Ok(true)
    }

    /// Sets [`client_id`](Self::client_id).
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = client_id.into();
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`request_timeout`](Self::request_timeout).
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets [`max_in_flight`](Self::max_in_flight).
    pub fn with_max_in_flight(mut self, max: usize) -> Self {
        self.max_in_flight = max;
        self
    }

    /// Sets [`max_frame_size`](Self::max_frame_size).
    pub fn with_max_frame_size(mut self, max: usize) -> Self {
        self.max_frame_size = max;
        self
    }

    /// Sets [`reconnect_backoff`](Self::reconnect_backoff) and
    /// [`reconnect_backoff_max`](Self::reconnect_backoff_max).
    pub fn with_reconnect_backoff(mut self, backoff: Duration, max: Duration) -> Self {
        self.reconnect_backoff = backoff;
        self.reconnect_backoff_max = max;
        self
    }

    /// Sets [`security`](Self::security).
    pub fn with_security(mut self, security: SecurityConfig) -> Self {
        self.security = security;
        self
    }

    /// Checks the settings; the error ([`ErrorKind::Config`](crate::ErrorKind::Config)) names
    /// the bad one.
    pub fn validate(&self) -> Result<()> {
        if self.max_in_flight == 0 {
            return Err(Error::config("max_in_flight must be at least 1"));
        }
        if self.max_in_flight > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(Error::config("max_in_flight is too large"));
        }
        if self.max_frame_size < 64 {
            return Err(Error::config("max_frame_size must be at least 64 bytes"));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::config("connect_timeout must not be zero"));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::config("request_timeout must not be zero"));
        }
        if u32::try_from(self.max_in_flight).is_err() {
            return Err(Error::config("max_in_flight is too large"));
        }
        self.security.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn properties() {
        let mut c = ConnectionConfig::default();
        assert!(c.apply_property("client.id", "app").unwrap());
        assert!(c.apply_property("request.timeout.ms", "1500").unwrap());
        assert!(
            c.apply_property("socket.connection.setup.timeout.ms", "2000")
                .unwrap()
        );
        assert!(c.apply_property("security.protocol", "SSL").unwrap());
        assert_eq!(c.client_id, "app");
        assert_eq!(c.request_timeout, Duration::from_millis(1500));
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert!(c.security.protocol.uses_tls());
        assert!(!c.apply_property("linger.ms", "5").unwrap());
        let e = c.apply_property("request.timeout.ms", "soon").unwrap_err();
        assert!(e.message_text().unwrap().contains("request.timeout.ms"));
        for k in SecurityConfig::property_names() {
            assert!(ConnectionConfig::property_names().any(|n| n == k), "{k}");
        }
        for k in ConnectionConfig::property_names() {
            let mut c = ConnectionConfig::default();
            assert!(!matches!(c.apply_property(k, "1"), Ok(false)), "{k}");
        }
    }

    #[test]
    fn defaults_and_validation() {
        let c = ConnectionConfig::default();
        assert_eq!(c.client_id, "rekafka");
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert!(c.validate().is_ok());
        let e = c.clone().with_max_in_flight(0).validate().unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Config);
        assert!(
            c.with_request_timeout(Duration::ZERO)
                .validate()
                .unwrap_err()
                .message_text()
                .is_some_and(|m| m.contains("request_timeout"))
        );
    }
}

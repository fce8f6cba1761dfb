//! A connection to one broker that reconnects by itself, with back-off.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kafka_protocol::protocol::Request;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{Connection, ConnectionConfig, RetryDelay};
use crate::error::{Error, ErrorKind, Result};

/// A connection to one broker that (re)connects lazily, on the next request after it died.
///
/// Requests in flight when the connection dies fail with a retriable
/// [`ErrorKind::Disconnected`] error (the caller decides whether to retry); the next request
/// connects again. Attempts are spaced by [`RetryDelay`]: at least
/// [`reconnect_backoff`](ConnectionConfig::reconnect_backoff) after the previous attempt,
/// doubling with every consecutive failure up to
/// [`reconnect_backoff_max`](ConnectionConfig::reconnect_backoff_max), ±20% jitter; a successful
/// connect resets it. A request that arrives during the back-off waits for it, then makes one
/// attempt; if that fails the request fails with the connect error (retriable when it is a
/// timeout or an I/O error such as "connection refused"). Only one attempt runs at a time;
/// concurrent requests wait for it and share its result.
///
/// An authentication failure (SASL, or a TLS certificate the client or the broker rejects) is
/// an [`ErrorKind::Authentication`] error, fatal ([`Error::is_fatal`]): the request that made
/// the attempt fails with it at once, it is never retried here, and the next attempt waits
/// the longest back-off ([`reconnect_backoff_max`](ConnectionConfig::reconnect_backoff_max)).
///
/// Cheap to clone; all clones share the connection.
///
/// ```no_run
/// # async fn demo() -> rekafka::Result<()> {
/// use rekafka::connection::{BrokerConnection, ConnectionConfig};
/// use rekafka::protocol::unstable::messages::MetadataRequest;
///
/// let broker = BrokerConnection::new(1, "127.0.0.1:9092", ConnectionConfig::default());
/// let metadata = broker.send(MetadataRequest::default()).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BrokerConnection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    broker_id: i32,
    addr: String,
    config: ConnectionConfig,
    closed: AtomicBool,
    /// Closed because the broker left the cluster metadata (or moved), not by the user:
    /// requests fail with the retriable `Disconnected`, not `Closed`.
    retired: AtomicBool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    conn: Option<Connection>,
    backoff: RetryDelay,
    /// When the last connect attempt started, and how long to wait after it.
    last_attempt: Option<(Instant, Duration)>,
}

impl BrokerConnection {
    /// A connection to broker `broker_id` at `addr` (`host:port`). Does not connect yet.
    pub fn new(broker_id: i32, addr: impl Into<String>, config: ConnectionConfig) -> Self {
        let backoff = RetryDelay::new(config.reconnect_backoff, config.reconnect_backoff_max);
        BrokerConnection {
            inner: Arc::new(Inner {
                broker_id,
                addr: addr.into(),
                config,
                closed: AtomicBool::new(false),
                retired: AtomicBool::new(false),
                state: Mutex::new(State {
                    conn: None,
                    backoff,
                    last_attempt: None,
                }),
            }),
        }
    }

    /// The broker's node id.
    pub fn broker_id(&self) -> i32 {
        self.inner.broker_id
    }

    /// The broker's address.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// The current live connection, connecting first if there is none (after the back-off).
    pub async fn connection(&self) -> Result<Connection> {
        let closed = || self.closed_error();
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let mut st = self.inner.state.lock().await;
        if let Some(conn) = &st.conn {
            if !conn.is_closed() {
                return Ok(conn.clone());
            }
            st.conn = None;
        }
        if let Some((at, wait)) = st.last_attempt {
            tokio::time::sleep_until(at + wait).await;
        }
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        let started = Instant::now();
        let result =
            Connection::connect(&self.inner.addr, self.inner.broker_id, &self.inner.config).await;
        match result {
            Ok(conn) => {
                st.backoff.reset();
                let wait = st.backoff.delay();
                st.last_attempt = Some((started, wait));
                st.conn = Some(conn.clone());
                tracing::debug!(broker = self.inner.broker_id, addr = %self.inner.addr, "connected");
                Ok(conn)
            }
            Err(e) => {
                st.backoff.failed();
                let mut wait = st.backoff.delay();
                if e.kind() == &ErrorKind::Authentication {
                    // Bad credentials or an untrusted certificate will not fix themselves
                    // soon: do not hammer the broker (callers still get the error at once).
                    wait = wait.max(self.inner.config.reconnect_backoff_max);
                }
                st.last_attempt = Some((started, wait));
                tracing::debug!(broker = self.inner.broker_id, addr = %self.inner.addr, error = %e, failures = st.backoff.failures(), ?wait, "connect failed");
                Err(e)
            }
        }
    }

    /// The error requests get once the connection is closed: `Closed`, or the retriable
    /// `Disconnected` if the cluster [retired](Self::retire) it.
    fn closed_error(&self) -> Error {
        if self.inner.retired.load(Ordering::Acquire) {
            Error::with_message(
                ErrorKind::Disconnected,
                "the broker left the cluster metadata (or moved)",
            )
            .on_broker(self.inner.broker_id)
        } else {
            Error::with_message(ErrorKind::Closed, "broker connection closed")
                .on_broker(self.inner.broker_id)
        }
    }

    /// Closes the connection because the broker left the cluster metadata (or moved): like
    /// [`close`](Self::close), but requests in flight and later ones on clones of this handle
    /// fail with the retriable [`ErrorKind::Disconnected`], so that their callers look the
    /// broker (leader, coordinator) up again instead of taking the client for closed.
    pub(crate) async fn retire(&self) {
        self.inner.retired.store(true, Ordering::Release);
        self.inner.closed.store(true, Ordering::Release);
        let conn = self.inner.state.lock().await.conn.take();
        if let Some(conn) = conn {
            conn.close_with(self.closed_error()).await;
        }
    }

    /// The number of consecutive failed connect attempts (0 after a success).
    pub async fn failures(&self) -> u32 {
        self.inner.state.lock().await.backoff.failures()
    }

    crate::protocol::unstable_pub! {
    /// [`Connection::send`] on the current connection, connecting first if needed.
    pub async fn send<R: Request>(&self, request: R) -> Result<R::Response> {
        self.connection().await?.send(request).await
    }
    }

    crate::protocol::unstable_pub! {
    /// [`Connection::send_at`] on the current connection, connecting first if needed.
    pub async fn send_at<R: Request>(&self, request: R, version: i16) -> Result<R::Response> {
        self.connection().await?.send_at(request, version).await
    }
    }

    crate::protocol::unstable_pub! {
    /// [`Connection::send_no_response`] on the current connection, connecting first if needed.
    pub async fn send_no_response<R: Request>(&self, request: R) -> Result<()> {
        self.connection().await?.send_no_response(request).await
    }
    }

    /// [`Connection::send_produce`] on the current connection, connecting first if needed.
    pub(crate) async fn send_produce(
        &self,
        request: crate::protocol::messages::ProduceRequest,
    ) -> Result<crate::protocol::messages::ProduceResponse> {
        self.connection().await?.send_produce(request).await
    }

    /// [`Connection::send_produce_no_response`] on the current connection, connecting first
    /// if needed.
    pub(crate) async fn send_produce_no_response(
        &self,
        request: crate::protocol::messages::ProduceRequest,
    ) -> Result<()> {
        self.connection()
            .await?
            .send_produce_no_response(request)
            .await
    }

    /// Closes the current connection (see [`Connection::close`]); later requests fail with
    /// [`ErrorKind::Closed`] and no reconnect is attempted.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let conn = self.inner.state.lock().await.conn.take();
        if let Some(conn) = conn {
            conn.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_retired_connection_fails_retriably_a_closed_one_does_not() {
        let retired = BrokerConnection::new(1, "127.0.0.1:1", ConnectionConfig::default());
        retired.retire().await;
        let e = retired.connection().await.err().map(|e| e.kind().clone());
        assert_eq!(e, Some(ErrorKind::Disconnected));
        let closed = BrokerConnection::new(2, "127.0.0.1:1", ConnectionConfig::default());
        closed.close().await;
        let e = closed.connection().await.err().map(|e| e.kind().clone());
        assert_eq!(e, Some(ErrorKind::Closed));
    }
}

//! SASL re-authentication (KIP-368) over a running connection.

use std::sync::Weak;
use std::time::Duration;

use kafka_protocol::messages::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use tokio::sync::watch;

use super::{SaslExchange, SaslSession, reauth_delay};
use crate::connection::Connection;
use crate::connection::conn::Shared;
use crate::connection::inflight::disconnected;
use crate::error::{ErrorKind, Result};
use crate::protocol::versions::ApiVersionRanges;

/// Re-authentication over the running connection.
pub(crate) struct ConnExchange<'a> {
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
pub(crate) async fn reauth_loop(
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

//! Group and transaction coordinators: FindCoordinator, cached per key, retried.

use super::*;

/// The kind of coordinator to look up with [`Cluster::coordinator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CoordinatorType {
    /// The group coordinator of a consumer group (key: the group id).
    Group,
    /// The transaction coordinator of a transactional producer (key: the transactional id).
    Transaction,
}

impl CoordinatorType {
    fn key_type(self) -> i8 {
        match self {
            CoordinatorType::Group => 0,
            CoordinatorType::Transaction => 1,
        }
    }
}

impl Cluster {
    /// The node id of the coordinator of `key` (a group id or transactional id), from the cache
    /// or with FindCoordinator (v4+ batched `coordinator_keys`, older versions `key`).
    /// Retriable errors (`COORDINATOR_NOT_AVAILABLE`, `COORDINATOR_LOAD_IN_PROGRESS`, transport
    /// failures) are retried with back-off for up to
    /// [`coordinator_timeout`](ClusterConfig::coordinator_timeout).
    pub async fn coordinator(&self, kind: CoordinatorType, key: &str) -> Result<i32> {
        let cache_key = (kind, key.to_owned());
        if let Some(id) = lock(&self.inner.coordinators).get(&cache_key) {
            return Ok(*id);
        }
        let config = &self.inner.config;
        let deadline = Instant::now() + config.coordinator_timeout;
        let mut backoff = RetryDelay::new(config.retry_backoff, config.retry_backoff_max);
        loop {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(closed_error());
            }
            let error = match self.find_coordinator(kind, key).await {
                Ok(id) => {
                    lock(&self.inner.coordinators).insert(cache_key, id);
                    return Ok(id);
                }
                Err(e) => e,
            };
            match recovery_for(&error) {
                Recovery::GiveUp => return Err(error),
                Recovery::SwitchBroker => {
                    if let Some(b) = error.context().broker {
                        self.mark_failed(b);
                    }
                }
                _ => {}
            }
            let wait = backoff.delay();
            backoff.failed();
            if Instant::now() + wait >= deadline {
                return Err(error);
            }
            tracing::debug!(?kind, key, error = %error, ?wait, "FindCoordinator failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    pub(super) async fn find_coordinator(&self, kind: CoordinatorType, key: &str) -> Result<i32> {
        let broker = self.any_connection().await?;
        let conn = broker.connection().await?;
        let version = conn
            .versions()
            .negotiate::<FindCoordinatorRequest>()
            .map_err(|e| e.on_broker(broker.broker_id()))?;
        let key_bytes = StrBytes::from_string(key.to_owned());
        let mut request = FindCoordinatorRequest::default();
        if version >= 1 {
            request.key_type = kind.key_type();
        } else if kind != CoordinatorType::Group {
            return Err(Error::new(ErrorKind::UnsupportedVersion {
                api: crate::error::Api::of(ApiKey::FindCoordinator),
            })
            .message("transaction coordinators need FindCoordinator v1+")
            .on_broker(broker.broker_id()));
        }
        if version >= 4 {
            request.coordinator_keys = vec![key_bytes];
        } else {
            request.key = key_bytes;
        }
        let resp: FindCoordinatorResponse = conn.send_at(request, version).await?;
        let (code, message, node, host, port) = if version >= 4 {
            let c = resp
                .coordinators
                .iter()
                .find(|c| c.key.as_str() == key)
                .ok_or_else(|| {
                    Error::with_message(
                        ErrorKind::UnexpectedResponse,
                        format!("FindCoordinator response does not name key {key:?}"),
                    )
                    .api(ApiKey::FindCoordinator)
                    .on_broker(broker.broker_id())
                })?;
            (
                c.error_code,
                c.error_message.clone(),
                c.node_id.0,
                c.host.to_string(),
                c.port,
            )
        } else {
            (
                resp.error_code,
                resp.error_message.clone(),
                resp.node_id.0,
                resp.host.to_string(),
                resp.port,
            )
        };
        if let Some(code) = KafkaCode::from_i16(code) {
            let mut e = Error::broker(code)
                .api(ApiKey::FindCoordinator)
                .on_broker(broker.broker_id());
            if let Some(m) = message {
                e = e.message(m.to_string());
            }
            return Err(e);
        }
        // The coordinator is normally a listed broker; if it is not (yet), connect to the
        // address the response gave.
        let addr = BrokerMetadata {
            node_id: node,
            host,
            port,
            rack: None,
        }
        .addr();
        lock(&self.inner.brokers).entry(node).or_insert_with(|| {
            BrokerConnection::new(node, addr, self.inner.config.connection.clone())
        });
        Ok(node)
    }

    /// Forgets the cached coordinator of `key`, so the next [`coordinator`](Cluster::coordinator)
    /// call looks it up again (after [`Recovery::RefreshCoordinator`]).
    pub fn invalidate_coordinator(&self, kind: CoordinatorType, key: &str) {
        lock(&self.inner.coordinators).remove(&(kind, key.to_owned()));
    }
}

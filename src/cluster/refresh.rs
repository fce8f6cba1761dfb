//! Metadata: fetching it (one refresh at a time, followers wait for the leader's), applying
//! it to the cache and the broker connections, and the background refresher task.

use super::*;

impl Cluster {
    /// Refreshes the metadata of every topic in the cluster. Concurrent refreshes are coalesced:
    /// a caller that arrives while a request covering its topics is in flight waits for that
    /// request instead of sending its own.
    pub async fn refresh(&self) -> Result<()> {
        self.refresh_set(TopicSet::All).await
    }

    /// Refreshes the metadata of `topics` (and the broker list), coalesced as
    /// [`refresh`](Cluster::refresh). Unknown topics are created if
    /// [`allow_auto_topic_creation`](ClusterConfig::allow_auto_topic_creation) is set and the
    /// broker allows it.
    pub async fn refresh_topics<S: AsRef<str>>(&self, topics: &[S]) -> Result<()> {
        let set = topics.iter().map(|t| t.as_ref().to_owned()).collect();
        self.refresh_set(TopicSet::Some(set)).await
    }

    pub(super) async fn refresh_set(&self, want: TopicSet) -> Result<()> {
        loop {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(closed_error());
            }
            let (mut rx, covers) = {
                let mut in_flight = lock(&self.inner.in_flight);
                match &*in_flight {
                    Some((set, rx)) => (rx.clone(), set.covers(&want)),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        *in_flight = Some((want.clone(), rx.clone()));
                        let cluster = self.clone();
                        let set = want.clone();
                        let span = tracing::debug_span!("kafka.metadata");
                        tokio::spawn(tracing::Instrument::instrument(
                            async move {
                                let result = cluster.fetch_and_apply(&set).await;
                                *lock(&cluster.inner.in_flight) = None;
                                let _ = tx.send(Some(result));
                            },
                            span,
                        ));
                        (rx, true)
                    }
                }
            };
            let waited = rx.wait_for(Option::is_some).await.map(|r| r.clone());
            let result = match waited {
                Ok(r) => r.unwrap_or(Ok(())),
                Err(_) => {
                    // The request task ended without a result (it panicked or the runtime is
                    // shutting down): forget it so that the next caller starts a new one.
                    let mut in_flight = lock(&self.inner.in_flight);
                    if in_flight.as_ref().is_some_and(|(_, r)| r.same_channel(&rx)) {
                        *in_flight = None;
                    }
                    return Err(closed_error());
                }
            };
            if covers {
                return result;
            }
        }
    }

    /// Sends one Metadata request for `set` (to the least recently failed broker, falling back
    /// to the others and then to the bootstrap addresses) and applies the response.
    pub(super) async fn fetch_and_apply(&self, set: &TopicSet) -> Result<()> {
        let mut last_error = None;
        let mut candidates = self.brokers_by_failure();
        let bootstrap: Vec<BrokerConnection> = self
            .inner
            .config
            .bootstrap
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let id = -1 - i32::try_from(i).unwrap_or(i32::MAX - 1);
                BrokerConnection::new(id, addr.clone(), self.inner.config.connection.clone())
            })
            .collect();
        let n_known = candidates.len();
        candidates.extend(bootstrap.iter().cloned());
        let mut result = None;
        for (i, broker) in candidates.iter().enumerate() {
            if self.inner.closed.load(Ordering::Acquire) {
                return Err(closed_error());
            }
            match self.send_metadata(broker, set).await {
                Ok(resp) => {
                    result = Some(resp);
                    break;
                }
                Err(e) if recovery_for(&e) == Recovery::SwitchBroker => {
                    tracing::debug!(broker = broker.broker_id(), addr = broker.addr(), error = %e, "metadata request failed; trying the next broker");
                    if i < n_known {
                        self.mark_failed(broker.broker_id());
                    }
                    last_error = Some(e);
                }
                Err(e) => {
                    last_error = Some(e);
                    break;
                }
            }
        }
        for b in bootstrap {
            tokio::spawn(async move { b.close().await });
        }
        let resp = match result {
            Some(resp) => resp,
            None => {
                return Err(last_error.unwrap_or_else(|| {
                    Error::with_message(ErrorKind::Disconnected, "no broker to ask for metadata")
                }));
            }
        };
        if let Some(code) = KafkaCode::from_i16(resp.error_code) {
            return Err(Error::broker(code).api(ApiKey::Metadata));
        }
        self.apply_metadata(&resp, *set == TopicSet::All);
        Ok(())
    }

    pub(super) async fn send_metadata(
        &self,
        broker: &BrokerConnection,
        set: &TopicSet,
    ) -> Result<MetadataResponse> {
        let conn = broker.connection().await?;
        let version = conn
            .versions()
            .negotiate::<MetadataRequest>()
            .map_err(|e| e.on_broker(broker.broker_id()))?;
        let topics = match set {
            // v0 has no null list: an empty list means every topic.
            TopicSet::All if version == 0 => Some(Vec::new()),
            TopicSet::All => None,
            TopicSet::Some(names) => Some(
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                    })
                    .collect(),
            ),
        };
        let mut request = MetadataRequest::default().with_topics(topics);
        if version >= 4 {
            request.allow_auto_topic_creation = self.inner.config.allow_auto_topic_creation;
        }
        self.inner.metadata_requests.fetch_add(1, Ordering::Relaxed);
        conn.send_at(request, version).await
    }

    /// Applies a Metadata response to the cache and the broker connections.
    pub(super) fn apply_metadata(
        &self,
        resp: &MetadataResponse,
        all_topics: bool,
    ) -> MetadataChanges {
        let changes = {
            let mut meta = self
                .inner
                .metadata
                .write()
                .unwrap_or_else(|e| e.into_inner());
            let changes = meta.apply(resp, all_topics);
            self.sync_brokers(&meta);
            changes
        };
        *lock(&self.inner.last_refresh) = Some(Instant::now());
        if changes != MetadataChanges::default() {
            tracing::debug!(?changes, "metadata changed");
        }
        changes
    }

    /// Gives every listed broker a connection, drops those of brokers that left and replaces
    /// those whose address changed.
    pub(super) fn sync_brokers(&self, meta: &Metadata) {
        let mut dropped = Vec::new();
        // Keeps the connections of listed brokers at their listed address; the rest go.
        let mut keep_listed = |id: &i32, conn: &mut BrokerConnection| match meta.brokers.get(id) {
            Some(b) if b.addr() == conn.addr() => true,
            _ => {
                dropped.push(conn.clone());
                false
            }
        };
        {
            let mut brokers = lock(&self.inner.brokers);
            brokers.retain(&mut keep_listed);
            for (id, b) in &meta.brokers {
                brokers.entry(*id).or_insert_with(|| {
                    BrokerConnection::new(*id, b.addr(), self.inner.config.connection.clone())
                });
            }
        }
        // The fetch connections follow the same brokers (made again on first use).
        lock(&self.inner.fetch_brokers).retain(&mut keep_listed);
        let mut failed = lock(&self.inner.failed_at);
        failed.retain(|id, _| meta.brokers.contains_key(id));
        drop(failed);
        for conn in dropped {
            tracing::debug!(
                broker = conn.broker_id(),
                addr = conn.addr(),
                "dropping broker connection"
            );
            // Retired, not closed: whoever still holds it (a group's coordinator, a sender)
            // gets a retriable error and looks the broker up again.
            tokio::spawn(async move { conn.retire().await });
        }
    }
}

/// Sets the flag to false when the refresher ends, however it ends.
pub(super) struct Running(Arc<AtomicBool>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// The background refresher: refreshes the cached topics (or just the broker list) once the
/// metadata is older than `metadata_max_age`. Stops when the cluster is closed or dropped.
///
/// With `bootstrap_now` ([`Cluster::connect_lazily`]) the first refresh is due at once, and a
/// failed one is retried with back-off like any failed refresh: the bootstrap is retried until
/// a broker answers.
pub(super) async fn refresher(
    inner: Weak<Inner>,
    mut shutdown: crate::task::StopListener,
    running: Arc<AtomicBool>,
    bootstrap_now: bool,
) {
    let _running = Running(running);
    let mut retry_at: Option<Instant> = bootstrap_now.then(Instant::now);
    // Until the first success: a caller may have bootstrapped meanwhile, then there is
    // nothing to retry.
    let mut bootstrapping = bootstrap_now;
    let mut backoff: Option<RetryDelay> = None;
    loop {
        let deadline = {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let max_age = inner.config.metadata_max_age;
            let last = *lock(&inner.last_refresh);
            let due = last.map_or_else(|| Instant::now() + max_age, |t| t + max_age);
            retry_at.unwrap_or(due)
        };
        tokio::select! {
            () = shutdown.stopped() => return,
            () = tokio::time::sleep_until(deadline) => {}
        }
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let cluster = Cluster { inner: strong };
        if bootstrapping && cluster.is_bootstrapped() {
            bootstrapping = false;
            retry_at = None;
            backoff = None;
            continue;
        }
        let fresh = lock(&cluster.inner.last_refresh)
            .is_some_and(|t| t.elapsed() < cluster.inner.config.metadata_max_age);
        if fresh && retry_at.is_none() {
            continue;
        }
        let topics: BTreeSet<String> = cluster
            .inner
            .metadata
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .topics
            .keys()
            .cloned()
            .collect();
        let result = tokio::select! {
            r = cluster.refresh_set(TopicSet::Some(topics)) => r,
            () = shutdown.stopped() => return,
        };
        match result {
            Ok(()) => {
                retry_at = None;
                backoff = None;
                bootstrapping = false;
            }
            Err(e) => {
                let config = &cluster.inner.config;
                let b = backoff.get_or_insert_with(|| {
                    RetryDelay::new(config.retry_backoff, config.retry_backoff_max)
                });
                let wait = b.delay();
                b.failed();
                if cluster.is_bootstrapped() {
                    tracing::warn!(error = %e, ?wait, "periodic metadata refresh failed");
                } else {
                    // Java's clients say the same at WARN: the brokers may not be up yet.
                    tracing::warn!(error = %e, ?wait, "bootstrap failed (no bootstrap address answered); retrying");
                }
                retry_at = Some(Instant::now() + wait);
            }
        }
    }
}

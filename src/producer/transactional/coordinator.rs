//! The requests to the transaction coordinator: InitProducerId, EndTxn, and the commit and
//! abort tasks that drain the producer first; retried with back-off by `with_retries`.

use super::*;

impl Inner {
    /// Looks the coordinator up and runs `call` on it, retrying retriable errors with
    /// back-off until `deadline` (`None`: until done). Errors carry `api`.
    pub(super) async fn with_retries<T, F, Fut>(
        &self,
        kind: CoordinatorType,
        key: &str,
        api: ApiKey,
        deadline: Option<Instant>,
        mut call: F,
    ) -> Result<T>
    where
        F: FnMut(i32) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut backoff = RetryDelay::new(self.config.retry_backoff, self.config.retry_backoff_max);
        loop {
            let attempt = async {
                let coordinator = self.cluster.coordinator(kind, key).await?;
                call(coordinator).await
            };
            let error = match attempt.await {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if e.context().api.is_none() {
                        e.api(api)
                    } else {
                        e
                    }
                }
            };
            match classify(api, &error) {
                Class::Retry { refresh } => {
                    if refresh {
                        self.cluster.invalidate_coordinator(kind, key);
                    }
                    let wait = backoff.delay();
                    backoff.failed();
                    if let Some(d) = deadline
                        && Instant::now() + wait >= d
                    {
                        return Err(Error::with_message(
                            ErrorKind::Timeout,
                            format!("{api:?} did not succeed in time; last error: {error}"),
                        )
                        .api(api)
                        .with_source(error));
                    }
                    tracing::debug!(error = %error, ?wait, ?api, "transaction request failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Class::Abortable => return Err(abortable(&error)),
                Class::Fatal => {
                    self.producer.set_fatal(error.clone());
                    return Err(self.producer.fatal_error().unwrap_or(error));
                }
            }
        }
    }

    pub(super) async fn init_pid(
        &self,
        current: Option<ProducerIdAndEpoch>,
    ) -> Result<ProducerIdAndEpoch> {
        let tid = self.link.transactional_id.clone();
        let timeout_ms = self
            .config
            .transaction_timeout
            .as_millis()
            .min(i32::MAX as u128) as i32;
        let request_timeout = self.config.request_timeout;
        let cluster = &self.cluster;
        self.with_retries(
            CoordinatorType::Transaction,
            &tid,
            ApiKey::InitProducerId,
            None,
            |coordinator| {
                let tid = tid.clone();
                async move {
                    let broker = cluster.connection_for_broker(coordinator).await?;
                    let conn = broker.connection().await?;
                    let version = conn.versions().negotiate::<InitProducerIdRequest>()?;
                    let mut req = InitProducerIdRequest::default()
                        .with_transactional_id(Some(TransactionalId(StrBytes::from_string(
                            tid.to_string(),
                        ))))
                        .with_transaction_timeout_ms(timeout_ms)
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1);
                    if let Some(cur) = current
                        && version >= 3
                    {
                        req.producer_id = ProducerId(cur.producer_id);
                        req.producer_epoch = cur.epoch;
                    }
                    let resp = tokio::time::timeout(request_timeout, conn.send_at(req, version))
                        .await
                        .map_err(|_| {
                            Error::with_message(ErrorKind::Timeout, "InitProducerId timed out")
                        })??;
                    if let Some(code) = KafkaCode::from_i16(resp.error_code) {
                        return Err(Error::broker(code)
                            .api(ApiKey::InitProducerId)
                            .on_broker(coordinator));
                    }
                    if resp.producer_id.0 < 0 {
                        return Err(Error::with_message(
                            ErrorKind::UnexpectedResponse,
                            "InitProducerId answered without a producer id",
                        )
                        .api(ApiKey::InitProducerId));
                    }
                    Ok(ProducerIdAndEpoch {
                        producer_id: resp.producer_id.0,
                        epoch: resp.producer_epoch,
                    })
                }
            },
        )
        .await
    }

    /// Hands a new producer id to the sender (sequences start over).
    pub(super) fn adopt(&self, id: ProducerIdAndEpoch) {
        lock(&self.cell).id = Some(id);
        {
            let mut st = self.link.lock();
            st.id = Some(id);
            st.new_id = Some(id);
        }
        self.producer.wake_sender();
    }

    pub(super) async fn init_task(&self) -> Result<()> {
        match self.init_pid(None).await {
            Ok(id) => {
                tracing::info!(
                    transactional_id = %self.link.transactional_id,
                    producer_id = id.producer_id,
                    epoch = id.epoch,
                    "transactions initialized"
                );
                self.adopt(id);
                self.set_state(TransactionState::Ready);
                Ok(())
            }
            Err(e) => {
                if !e.is_fatal() {
                    self.set_state(TransactionState::Uninitialized);
                }
                Err(e)
            }
        }
    }

    pub(super) fn current_id(&self) -> Result<ProducerIdAndEpoch> {
        lock(&self.cell)
            .id
            .ok_or_else(|| invalid_state("init_transactions has not completed"))
    }

    /// Sends EndTxn until it is confirmed (retriable errors and unknown outcomes are retried
    /// with the same producer id and epoch).
    /// `unknown_ok`: `INVALID_TXN_STATE` means the coordinator never saw the transaction (an
    /// abort after an AddPartitionsToTxn without answer): nothing to end.
    pub(super) async fn end_txn(&self, commit: bool, unknown_ok: bool) -> Result<()> {
        let id = self.current_id()?;
        let tid = self.link.transactional_id.clone();
        let request_timeout = self.config.request_timeout;
        let cluster = &self.cluster;
        self.with_retries(
            CoordinatorType::Transaction,
            &tid,
            ApiKey::EndTxn,
            None,
            |coordinator| {
                let tid = tid.clone();
                async move {
                    let req = EndTxnRequest::default()
                        .with_transactional_id(TransactionalId(StrBytes::from_string(
                            tid.to_string(),
                        )))
                        .with_producer_id(ProducerId(id.producer_id))
                        .with_producer_epoch(id.epoch)
                        .with_committed(commit);
                    let broker = cluster.connection_for_broker(coordinator).await?;
                    let resp = tokio::time::timeout(request_timeout, broker.send(req))
                        .await
                        .map_err(|_| {
                            Error::with_message(
                                ErrorKind::Timeout,
                                "EndTxn timed out (outcome unknown)",
                            )
                        })??;
                    match KafkaCode::from_i16(resp.error_code) {
                        Some(KafkaCode::InvalidTxnState) if unknown_ok => {
                            tracing::debug!("EndTxn: the coordinator had no transaction");
                            Ok(())
                        }
                        Some(code) => Err(Error::broker(code)
                            .api(ApiKey::EndTxn)
                            .on_broker(coordinator)),
                        None => Ok(()),
                    }
                }
            },
        )
        .await
    }

    /// Whether the coordinator knows (or may know) the transaction: `(sure, maybe)`.
    pub(super) fn registered(&self) -> (bool, bool) {
        let st = self.link.lock();
        let cell = lock(&self.cell);
        let sure = !st.added.is_empty() || !cell.offset_groups.is_empty();
        (sure, sure || st.maybe_registered || cell.offsets_maybe)
    }

    /// Forgets the finished transaction.
    pub(super) fn reset_txn(&self) {
        {
            let mut st = self.link.lock();
            st.added.clear();
            st.maybe_registered = false;
            st.error = None;
            st.aborting = false;
            st.add_retry_at = None;
            st.add_failures = 0;
            st.generation = st.generation.wrapping_add(1);
        }
        let mut cell = lock(&self.cell);
        cell.offset_groups.clear();
        cell.offsets_maybe = false;
    }

    pub(super) async fn wait_drained(&self) {
        // Sends that passed their state check before the transition finish appending first.
        while self.sends.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.producer.flush().await;
        // An AddPartitionsToTxn still in flight could otherwise reach the coordinator after
        // EndTxn and open a transaction nobody ends.
        while self.link.lock().adding {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(super) async fn commit_task(&self) -> Result<()> {
        let doomed = |s: &Self| s.link.lock().error.clone();
        if let Some(e) = doomed(self) {
            self.set_state(TransactionState::AbortableError);
            return Err(abortable(&e));
        }
        // KAFKA-12671: every batch of the transaction completes before EndTxn.
        self.wait_drained().await;
        self.check_fatal()?;
        if let Some(e) = doomed(self) {
            self.set_state(TransactionState::AbortableError);
            return Err(abortable(&e));
        }
        let (_, maybe) = self.registered();
        if maybe {
            match self.end_txn(true, false).await {
                Ok(()) => {}
                Err(e) if e.is_fatal() => return Err(e),
                Err(e) => {
                    self.link.set_error(e.clone());
                    self.set_state(TransactionState::AbortableError);
                    return Err(abortable(&e));
                }
            }
        }
        self.reset_txn();
        self.set_state(TransactionState::Ready);
        Ok(())
    }

    pub(super) async fn abort_task(&self) -> Result<()> {
        while self.sends.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.link.lock().aborting = true;
        self.producer.wake_sender();
        // Unsent batches fail as aborted; in-flight ones are waited for (KAFKA-12671).
        self.wait_drained().await;
        self.check_fatal()?;
        let (sure, maybe) = self.registered();
        if maybe {
            match self.end_txn(false, !sure).await {
                Ok(()) => {}
                Err(e) => {
                    self.link.lock().aborting = false;
                    return Err(e);
                }
            }
        }
        let bump = std::mem::take(&mut self.link.lock().bump_needed);
        if bump {
            // A record's outcome stayed unknown or the sequence has a gap: a new epoch fences
            // any late write of the aborted transaction (KIP-360, KAFKA-17754).
            let current = self.current_id()?;
            let id = self.init_pid(Some(current)).await?;
            tracing::info!(
                producer_id = id.producer_id,
                epoch = id.epoch,
                "bumped the epoch after an abort"
            );
            self.adopt(id);
        }
        self.reset_txn();
        self.set_state(TransactionState::Ready);
        Ok(())
    }
}

//! Produce responses: each partition's answer settles its batch (success, retry, failure),
//! the one place a produced batch's fate is decided.

use super::*;

impl Sender {
    pub(super) fn handle(&mut self, id: u64, result: Result<Option<ProduceResponse>>) {
        let Some(req) = self.requests.remove(&id) else {
            return;
        };
        if let Some(n) = self.broker_in_flight.get_mut(&req.broker) {
            *n = n.saturating_sub(1);
        }
        self.sh.counters.request_done(req.started.elapsed());
        let rate = self.rates.entry(req.broker).or_default();
        match &result {
            Ok(_) => {
                let bytes = req
                    .batches
                    .iter()
                    .map(|(_, b)| b.bytes.as_ref().map_or(0, Bytes::len))
                    .sum();
                rate.answered(bytes, req.started, Instant::now());
                tracing::debug!(
                    broker = req.broker,
                    bytes,
                    budget = self.request_budget(req.broker),
                    "produce response: delivery-rate estimate updated"
                );
            }
            Err(e) => {
                tracing::debug!(broker = req.broker, error = %e, "produce request failed; batches to this broker stay at batch.size until it answers again");
                rate.failed();
            }
        }
        match result {
            Ok(None) => {
                for (tp, b) in req.batches {
                    self.succeed(&tp, b, -1, -1);
                }
            }
            Ok(Some(resp)) => {
                for (tp, b) in req.batches {
                    let found = resp
                        .responses
                        .iter()
                        .filter(|t| *t.name.0 == *tp.0)
                        .flat_map(|t| t.partition_responses.iter())
                        .find(|p| p.index == tp.1);
                    match found {
                        Some(p) => {
                            let (code, base, lat) =
                                (p.error_code, p.base_offset, p.log_append_time_ms);
                            let msg = p.error_message.as_ref().map(|m| m.to_string());
                            self.on_partition(req.broker, tp, b, code, base, lat, msg);
                        }
                        None => {
                            let e = Error::with_message(
                                ErrorKind::UnexpectedResponse,
                                "the produce response does not name the partition",
                            )
                            .api(ApiKey::Produce)
                            .on_broker(req.broker);
                            self.retry(&tp, b, e, true);
                        }
                    }
                }
            }
            Err(e) => {
                if recovery_for(&e) == Recovery::SwitchBroker {
                    self.sh.cluster.mark_failed(req.broker);
                }
                for (tp, b) in req.batches {
                    let e = e.clone().on_partition(tp.0.to_string(), tp.1);
                    if recovery_for(&e) == Recovery::GiveUp {
                        self.remove_in_flight(&tp, b.order);
                        // A request that failed locally (closed client, encoding) was not
                        // written; one that failed on the wire may have been.
                        let p = if matches!(e.kind(), ErrorKind::Closed | ErrorKind::Encode) {
                            if b.ambiguous {
                                Persistence::PossiblyPersisted
                            } else {
                                Persistence::NotPersisted
                            }
                        } else {
                            Persistence::PossiblyPersisted
                        };
                        self.fail(&tp, b, e, p);
                    } else {
                        self.retry(&tp, b, e, true);
                    }
                }
            }
        }
    }

    pub(super) fn remove_in_flight(&mut self, tp: &Tp, order: u64) {
        let part = self.part(tp);
        part.in_flight.retain(|o| *o != order);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_partition(
        &mut self,
        broker: i32,
        tp: Tp,
        b: SBatch,
        code: i16,
        base_offset: i64,
        log_append_time: i64,
        message: Option<String>,
    ) {
        let Some(code) = KafkaCode::from_i16(code) else {
            self.succeed(&tp, b, base_offset, log_append_time);
            return;
        };
        let mut e = Error::broker(code)
            .api(ApiKey::Produce)
            .on_broker(broker)
            .on_partition(tp.0.to_string(), tp.1);
        if let Some(m) = message {
            e = e.message(m);
        }
        if self.sh.txn.is_some()
            && matches!(
                code,
                KafkaCode::OutOfOrderSequenceNumber
                    | KafkaCode::UnknownProducerId
                    | KafkaCode::InvalidProducerIdMapping
                    | KafkaCode::InvalidProducerEpoch
                    | KafkaCode::TransactionAbortable
                    | KafkaCode::InvalidTxnState
                    | KafkaCode::ProducerFenced
            )
        {
            // Inside a transaction these fail the batch and, through `fail`, make the
            // transaction abortable (or the producer fatal); the epoch is bumped by the
            // transaction manager after the abort, never here.
            self.remove_in_flight(&tp, b.order);
            self.fail(&tp, b, e, Persistence::NotPersisted);
            return;
        }
        match code {
            // The broker has this batch already (an earlier attempt was written).
            KafkaCode::DuplicateSequenceNumber => self.succeed(&tp, b, -1, -1),
            KafkaCode::OutOfOrderSequenceNumber if self.idem.is_some() => {
                let order = b.order;
                let gap = self.idem.as_ref().is_some_and(|i| i.has_gap(&tp));
                let part = self.part(&tp);
                let head = part.in_flight.iter().min() == Some(&order)
                    && part.queue.front().is_none_or(|q| q.order > order);
                let retrying = part.retrying;
                if head && !retrying && !gap {
                    // The broker lost a batch we never saw fail: sequences cannot be trusted.
                    self.remove_in_flight(&tp, order);
                    let fatal = e.clone().message(
                        "OUT_OF_ORDER_SEQUENCE_NUMBER on the oldest unacknowledged batch: the \
                         broker lost records of this producer",
                    );
                    // Fatal first, so that whoever sees this batch fail sees the producer
                    // fatal too.
                    self.set_fatal(fatal.clone());
                    self.fail(&tp, b, fatal, Persistence::NotPersisted);
                } else if head && retrying && !gap {
                    // The retried head's earlier outcome is unknown to the broker: resolve by
                    // bumping the epoch.
                    if let Some(idem) = &mut self.idem {
                        idem.mark_gap(&tp);
                    }
                    self.retry(&tp, b, e, false);
                } else {
                    // An earlier batch failed: this one was rejected because of the gap.
                    self.retry(&tp, b, e, false);
                }
            }
            KafkaCode::UnknownProducerId | KafkaCode::InvalidProducerIdMapping
                if self.idem.is_some() =>
            {
                // KIP-360: the broker lost our producer state; bump the epoch once nothing is
                // in flight, then renumber.
                if let Some(idem) = &mut self.idem {
                    idem.mark_gap(&tp);
                }
                self.retry(&tp, b, e, false);
            }
            _ if recovery_for(&e) != Recovery::GiveUp => {
                let ambiguous = is_ambiguous_code(code);
                self.retry(&tp, b, e, ambiguous)
            }
            _ => {
                self.remove_in_flight(&tp, b.order);
                self.fail(&tp, b, e, Persistence::NotPersisted);
            }
        }
    }

    pub(super) fn succeed(&mut self, tp: &Tp, b: SBatch, base_offset: i64, log_append_time: i64) {
        if let Some(idem) = &mut self.idem
            && b.base_seq != NO_SEQUENCE
        {
            idem.mark_confirmed(tp, b.producer_id);
        }
        let part = self.part(tp);
        part.in_flight.retain(|o| *o != b.order);
        // A later batch's success does not end a retry: while an earlier batch waits to be
        // resent (it sits at the head of the queue, which is in creation order), keep sending
        // one batch at a time. Otherwise new batches overtake it and, past the broker's window
        // of 5 batches per producer, its resend can no longer be recognised as a duplicate.
        if part.queue.front().is_none_or(|q| q.bytes.is_none()) {
            part.retrying = false;
            part.retry_at = None;
            part.backoff.reset();
        }
        if b.expired {
            // Its records were already reported as possibly persisted: they were.
            return;
        }
        self.sh.counters.sent(u64::from(b.records));
        if let Some(cb) = &self.sh.circuit {
            cb.record(false, u64::from(b.records));
        }
        b.complete(BatchOutcome::Delivered {
            base_offset,
            log_append_time,
        });
    }

    /// Puts a batch back at its place in its partition's queue, after a back-off, or fails it
    /// once `delivery.timeout` has passed.
    pub(super) fn retry(&mut self, tp: &Tp, mut b: SBatch, e: Error, ambiguous: bool) {
        b.ambiguous |= ambiguous;
        let recovery = recovery_for(&e);
        b.last_error = Some(e);
        let timeout = self.sh.config.delivery_timeout;
        let now = Instant::now();
        let part = self.part(tp);
        part.in_flight.retain(|o| *o != b.order);
        // Ambiguous attempts, and rejections caused by the producer's own sequence state (a
        // gap left by another batch, a lost producer id), do not use up `retries`.
        let counted = !ambiguous
            && !matches!(
                b.last_error.as_ref().and_then(Error::kafka_code),
                Some(
                    KafkaCode::OutOfOrderSequenceNumber
                        | KafkaCode::UnknownProducerId
                        | KafkaCode::InvalidProducerIdMapping
                )
            );
        if counted {
            b.retries = b.retries.saturating_add(1);
        }
        if b.retries > self.sh.config.retries && !b.expired {
            let p = if b.ambiguous {
                Persistence::PossiblyPersisted
            } else {
                Persistence::NotPersisted
            };
            let last = b
                .last_error
                .clone()
                .unwrap_or_else(|| Error::new(ErrorKind::Timeout));
            let note = format!(
                "gave up after {} retries (retries = {})",
                b.retries - 1,
                self.sh.config.retries
            );
            let msg = match last.message_text() {
                Some(m) => format!("{m}; {note}"),
                None => note,
            };
            self.fail(tp, b, last.message(msg), p);
            return;
        }
        let part = self.part(tp);
        if b.expired || now >= b.created + timeout {
            let p = if b.ambiguous {
                Persistence::PossiblyPersisted
            } else {
                Persistence::NotPersisted
            };
            let err = self.timeout_error(tp, b.last_error.as_ref());
            self.fail(tp, b, err, p);
            return;
        }
        tracing::debug!(topic = %tp.0, partition = tp.1, error = ?b.last_error, "retrying batch");
        let records = u64::from(b.records);
        let pos = part
            .queue
            .iter()
            .position(|q| q.order > b.order)
            .unwrap_or(part.queue.len());
        part.queue.insert(pos, b);
        part.retrying = true;
        let wait = part.backoff.delay();
        part.backoff.failed();
        part.retry_at = Some(now + wait);
        if matches!(recovery, Recovery::RefreshMetadata | Recovery::SwitchBroker) {
            part.leader = None;
            let topic = tp.0.clone();
            self.request_refresh(&topic);
        }
        self.sh.counters.retried(records);
    }

    pub(super) fn fail(&mut self, tp: &Tp, b: SBatch, e: Error, persistence: Persistence) {
        if self.sh.txn.is_some() {
            self.txn_batch_failed(&b, &e, persistence);
        }
        if let Some(idem) = &mut self.idem
            && b.base_seq != NO_SEQUENCE
            && self.sh.fatal.get().is_none()
        {
            idem.mark_gap(tp);
        }
        if b.expired {
            // Its records were already failed (possibly persisted) at the delivery timeout.
            return;
        }
        self.sh.counters.failed(u64::from(b.records));
        if let Some(cb) = &self.sh.circuit {
            cb.record(true, u64::from(b.records));
        }
        tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, ?persistence, "batch failed");
        b.complete(BatchOutcome::Failed(ProduceError::new(e, persistence)));
    }
}

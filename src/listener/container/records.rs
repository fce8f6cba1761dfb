//! Calling the record handler.

use std::sync::Arc;

use std::time::Duration;

use super::*;
use crate::listener::consumer::{ContainerConsumer, ListenerRecord};
use crate::listener::handler::{DeliveryAttemptHeader, SharedError};
use crate::listener::tracker::PartitionKey;
use crate::listener::{DELIVERY_ATTEMPT_HEADER, delivery_attempt_header_value};
use crate::protocol::record::Header;
use tracing::Instrument;

/// The `kafka.handler` span of one record's handler call.
pub(super) fn handler_span(tp: &PartitionKey, offset: i64) -> tracing::Span {
    tracing::debug_span!("kafka.handler", topic = %tp.0, partition = tp.1, offset)
}

/// What calling the record handler gave, before the listener-level error handler.
pub(super) enum Called {
    /// The handler returned this.
    Returned(Result<(), HandlerError>),
    /// The record could not be deserialized, or the handler panicked: a failure for the error
    /// handler (the listener-level one does not see it).
    Failed(SharedError),
}

/// The `kafka.handler` span of one batch handler call.
pub(super) fn batch_span(records: usize) -> tracing::Span {
    tracing::debug_span!("kafka.handler", records)
}

impl<C: ContainerConsumer> Runner<C> {
    /// Calls the record handler with `record` and, if it fails, the listener-level error
    /// handler: the failure left for the error handler, if any.
    pub(super) async fn call_record_handler(
        &mut self,
        tp: &PartitionKey,
        record: &C::Record,
    ) -> Option<SharedError> {
        let called = match self.call_sync_record_handler(tp, record) {
            Some(called) => called,
            None => self.call_async_record_handler(tp, record).await,
        };
        self.settle_call(tp, record, called).await
    }

    /// What a handler call leaves for the error handler: a failure the listener-level error
    /// handler (if any) did not turn into success.
    async fn settle_call(
        &mut self,
        tp: &PartitionKey,
        record: &C::Record,
        called: Called,
    ) -> Option<SharedError> {
        match called {
            Called::Returned(Ok(())) => None,
            Called::Returned(Err(e)) => self.through_listener_error_handler(tp, record, e).await,
            Called::Failed(e) => Some(e),
        }
    }

    /// A synchronous handler's call, made here, with no future (the container's hot path when
    /// records are handled: `handle_records` awaits nothing for a record that succeeds);
    /// `None` for an asynchronous handler.
    fn call_sync_record_handler(
        &mut self,
        tp: &PartitionKey,
        record: &C::Record,
    ) -> Option<Called> {
        let Handler::Record(f) = &self.handler else {
            return Some(Called::Returned(Ok(())));
        };
        let RecordCall::Sync(g) = &f.call else {
            return None;
        };
        if let Some(d) = record.deserialization_failure() {
            return Some(Called::Failed(Arc::new(d)));
        }
        let (delivered, ack) = self.delivery(tp, record);
        let span = handler_span(tp, record.offset());
        let called = call_guarded_now(span, || g(delivered, ack));
        Some(match called {
            Ok(result) => Called::Returned(result),
            Err(panic) => Called::Failed(Arc::from(self.handler_panicked(panic))),
        })
    }

    /// An asynchronous handler's call (a synchronous one's too, through its future-less path).
    async fn call_async_record_handler(&mut self, tp: &PartitionKey, record: &C::Record) -> Called {
        let Handler::Record(f) = &self.handler else {
            return Called::Returned(Ok(()));
        };
        if let Some(d) = record.deserialization_failure() {
            return Called::Failed(Arc::new(d));
        }
        let (delivered, ack) = self.delivery(tp, record);
        let span = handler_span(tp, record.offset());
        match call_guarded(span, || f.call(delivered, ack)).await {
            Ok(result) => Called::Returned(result),
            Err(panic) => Called::Failed(Arc::from(self.handler_panicked(panic))),
        }
    }

    /// The listener-level error handler's say on a handler's error, and the seeks it asked for:
    /// the failure left for the error handler, if any.
    async fn through_listener_error_handler(
        &mut self,
        tp: &PartitionKey,
        record: &C::Record,
        error: HandlerError,
    ) -> Option<SharedError> {
        let Some(leh) = self.leh.clone() else {
            return Some(Arc::from(error));
        };
        let attempt = self.tracker.delivery_attempt(tp, record.offset());
        let (outcome, seeks) = leh(record, error, attempt).await;
        for (target, offset) in seeks.requests {
            if &target == tp {
                self.sought = true;
            }
            self.seek_min(&target, offset);
        }
        outcome.err().map(Arc::from)
    }

    /// What the handler gets for `record`: the record (with the `kafka_deliveryAttempt`
    /// header when enabled) and its acknowledgment.
    pub(super) fn delivery(
        &self,
        tp: &PartitionKey,
        record: &C::Record,
    ) -> (C::Record, Acknowledgment) {
        let delivered = match self.attempt_header {
            DeliveryAttemptHeader::On => {
                let attempt = self.tracker.delivery_attempt(tp, record.offset());
                record.with_header(Header::new(
                    DELIVERY_ATTEMPT_HEADER,
                    Some(delivery_attempt_header_value(attempt).to_vec()),
                ))
            }
            _ => record.clone(),
        };
        let takes_ack = match &self.handler {
            Handler::Record(f) => f.takes_ack,
            Handler::Batch(_) => true,
        };
        let ack = if takes_ack {
            self.record_ack(tp, record.offset())
        } else {
            Acknowledgment::inert()
        };
        (delivered, ack)
    }

    pub(super) fn manual_acks(&self) -> bool {
        matches!(self.ack_mode, AckMode::Manual | AckMode::ManualImmediate)
    }

    /// The acknowledgment handed with the record at `offset` of `tp`.
    pub(super) fn record_ack(&self, tp: &PartitionKey, offset: i64) -> Acknowledgment {
        // `nack` works where the container handles a partition's records one at a time itself.
        let nack = (self.concurrency == 1 && self.txn.is_none())
            .then(|| (self.nacks.clone(), tp.clone(), offset));
        if self.manual_acks() {
            Acknowledgment {
                sink: Some(self.acks.clone()),
                targets: AckTargets::One(tp.clone(), offset + 1),
                nack,
            }
        } else {
            Acknowledgment {
                sink: None,
                targets: AckTargets::Automatic,
                nack,
            }
        }
    }

    /// The sleep of a `nack` of the record at `offset` of `tp`, if its handler called it (any
    /// other nack left in the sink is stale and dropped).
    pub(super) fn take_nack(&mut self, tp: &PartitionKey, offset: i64) -> Option<Duration> {
        if !self.nacks.any.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let mut list = self.nacks.list.lock().unwrap_or_else(|e| e.into_inner());
        let sleep = list
            .iter()
            .rev()
            .find(|(t, o, _)| t == tp && *o == offset)
            .map(|(_, _, sleep)| *sleep);
        list.clear();
        self.nacks
            .any
            .store(false, std::sync::atomic::Ordering::Release);
        sleep
    }

    /// Whether each handled record must be acked on its own (a commit may follow any record);
    /// otherwise a partition's handled records are acked once, up to the last one.
    pub(super) fn ack_per_record(&self) -> bool {
        !matches!(
            self.ack_mode,
            AckMode::Batch | AckMode::Manual | AckMode::Time(_)
        )
    }

    pub(super) async fn handle_records(&mut self, records: Vec<C::Record>) {
        if self.concurrency > 1 {
            return self.handle_records_concurrently(records).await;
        }
        let per_record = self.ack_per_record();
        let manual = matches!(self.ack_mode, AckMode::Manual | AckMode::ManualImmediate);
        for (tp, recs) in group_by_partition(records) {
            if self.blocked(&tp) || !self.owns(&tp) {
                continue;
            }
            // The last record handled without acking it yet (batched acks).
            let mut handled: Option<i64> = None;
            // Records handled successfully (counted once per partition).
            let mut succeeded = 0u64;
            for (i, record) in recs.iter().enumerate() {
                if self.stop_requested() {
                    break;
                }
                let offset = record.offset();
                // A synchronous handler is called without a future; only a failure awaits.
                let failure = match self.call_sync_record_handler(&tp, record) {
                    Some(Called::Returned(Ok(()))) => None,
                    Some(called) => self.settle_call(&tp, record, called).await,
                    None => {
                        let called = self.call_async_record_handler(&tp, record).await;
                        self.settle_call(&tp, record, called).await
                    }
                };
                if manual {
                    self.drain_manual_acks().await;
                }
                if std::mem::take(&mut self.panicked) {
                    // Stopping: the record is not acknowledged; those before it are.
                    break;
                }
                if std::mem::take(&mut self.sought) && failure.is_none() {
                    // The listener-level handler repositioned this partition.
                    break;
                }
                let nacked = self.take_nack(&tp, offset);
                match failure {
                    None if nacked.is_some() => {
                        // Negatively acknowledged: redelivered after the sleep, not a failure.
                        if let Some(last) = handled.take() {
                            self.ack(&tp, last, AckSource::Handler).await;
                        }
                        let sleep = nacked.unwrap_or_default();
                        self.retry_later(&tp, offset, sleep).await;
                        break;
                    }
                    None => {
                        succeeded += 1;
                        self.tracker.succeeded(&tp, offset);
                        if per_record {
                            self.ack(&tp, offset, AckSource::Handler).await;
                            self.commit_if_due().await;
                        } else {
                            handled = Some(offset);
                        }
                    }
                    Some(error) => {
                        if let Some(last) = handled.take() {
                            self.ack(&tp, last, AckSource::Handler).await;
                        }
                        if self.on_failure(&tp, record, error, &recs[i + 1..]).await
                            == Flow::SkipPartition
                        {
                            break;
                        }
                    }
                }
            }
            if let Some(last) = handled {
                self.ack(&tp, last, AckSource::Handler).await;
            }
            if succeeded > 0 {
                self.telemetry.part(&tp).handled.increment(succeeded);
            }
        }
    }

    /// Partitions handled at the same time (each partition's records still in order, one at a
    /// time); failures are then dealt with partition by partition, as in the sequential path.
    pub(super) async fn handle_records_concurrently(&mut self, records: Vec<C::Record>) {
        let Handler::Record(f) = &self.handler else {
            return;
        };
        let f = f.clone();
        let leh = self.leh.clone();
        let permits = Arc::new(tokio::sync::Semaphore::new(self.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for (tp, recs) in group_by_partition(records) {
            if self.blocked(&tp) || !self.owns(&tp) {
                continue;
            }
            let prepared: Vec<(C::Record, C::Record, Acknowledgment, u32)> = recs
                .into_iter()
                .map(|r| {
                    let (delivered, ack) = self.delivery(&tp, &r);
                    let attempt = self.tracker.delivery_attempt(&tp, r.offset());
                    (r, delivered, ack, attempt)
                })
                .collect();
            let (f, leh, permits, stop) =
                (f.clone(), leh.clone(), permits.clone(), self.stop.clone());
            tasks.spawn(
                async move {
                    let _permit = permits.acquire_owned().await;
                    let mut done = Vec::new();
                    for (original, delivered, ack, attempt) in prepared {
                        if stop.is_stopped() {
                            break;
                        }
                        if let Some(d) = original.deserialization_failure() {
                            let e: SharedError = Arc::new(d);
                            return (tp, done, Some((original, e)), Seeks::default(), None);
                        }
                        let mut seeks = Seeks::default();
                        let span = handler_span(&tp, original.offset());
                        let handled = match call_guarded(span, || f.call(delivered, ack)).await {
                            Ok(handled) => handled,
                            Err(panic) => return (tp, done, None, Seeks::default(), Some(panic)),
                        };
                        let result = match (handled, &leh) {
                            (Err(e), Some(leh)) => {
                                let outcome;
                                (outcome, seeks) = leh(&original, e, attempt).await;
                                outcome
                            }
                            (r, _) => r,
                        };
                        let sought = seeks.requests.iter().any(|(t, _)| *t == tp);
                        match result {
                            Ok(()) if sought => return (tp, done, None, seeks, None),
                            Ok(()) => done.push(original.offset()),
                            Err(e) => {
                                return (tp, done, Some((original, Arc::from(e))), seeks, None);
                            }
                        }
                    }
                    (tp, done, None, Seeks::default(), None)
                }
                .in_current_span(),
            );
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => {
                    tracing::error!(error = %e, "a record handler panicked; stopping");
                    self.stop_reason = Some(StopReason::Error);
                }
            }
        }
        self.drain_manual_acks().await;
        for (tp, done, failure, seeks, panicked) in outcomes {
            for (target, offset) in seeks.requests {
                self.seek_min(&target, offset);
            }
            if !done.is_empty() {
                self.telemetry
                    .part(&tp)
                    .handled
                    .increment(done.len() as u64);
            }
            for offset in done {
                self.tracker.succeeded(&tp, offset);
                self.ack(&tp, offset, AckSource::Handler).await;
            }
            if let Some(panic) = panicked {
                // Stopping, as on the sequential path: the records handled before are acked.
                self.handler_panicked(panic);
                self.panicked = false;
                continue;
            }
            if let Some((record, error)) = failure {
                if self.on_failure(&tp, &record, error, &[]).await == Flow::Continue {
                    // Recovered: the rest of this partition's records come again.
                    self.seek_min(&tp, record.offset() + 1);
                }
            }
        }
    }

    /// In-memory redelivery: hands the records held for partitions whose back-off is due to
    /// the handler again (the failed record first, then the rest of its poll), then resumes
    /// the partition unless it is held back again. Runs before each poll, so a partition's
    /// held records always come before anything fetched after them.
    pub(super) async fn redeliver_held(&mut self) {
        if self.held.is_empty() || self.container_paused {
            return;
        }
        let due: Vec<PartitionKey> = self
            .held
            .keys()
            .filter(|tp| !self.backing_off.contains_key(*tp) && !self.halted.contains_key(*tp))
            .cloned()
            .collect();
        for tp in due {
            if self.stop_requested() {
                return;
            }
            let Some(records) = self.held.remove(&tp) else {
                continue;
            };
            if !self.owns(&tp) {
                continue;
            }
            self.handle_records(records).await;
            if !self.blocked(&tp) && !self.container_paused {
                self.resume_partitions(std::slice::from_ref(&tp));
            }
        }
        self.complete_recoveries(false).await;
        if self.ack_mode == AckMode::Batch || self.ack_mode == AckMode::Manual {
            self.commit_pending().await;
        }
    }

    pub(super) fn owns(&self, tp: &PartitionKey) -> bool {
        self.assignment.is_empty() || self.assignment.contains(tp)
    }
}

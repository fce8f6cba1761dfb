//! The batch handler's path.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::listener::classify::HandlerError;
use crate::listener::consumer::{ContainerConsumer, ListenerRecord};
use crate::listener::error_handler::{BatchFailure, BatchRetry, Disposition};
use crate::listener::handler::{BatchListenerFailed, FailedPosition, SharedError};
use crate::listener::tracker::{PartitionKey, RecoveryFailureDecision};

impl<C: ContainerConsumer> Runner<C> {
    pub(super) async fn handle_batch(&mut self, records: Vec<C::Record>) {
        let Handler::Batch(f) = &self.handler else {
            return;
        };
        let f = f.clone();
        let mut batch = Vec::with_capacity(records.len());
        // Per partition, its first record that failed the deserialization check (and whether
        // records came after it). The batch stops there for that partition: the record goes
        // through the record path once the batch is done, and the partition's later records
        // are fetched again, so that commits follow the partition's order.
        let mut undeserializable: Vec<(C::Record, bool)> = Vec::new();
        for r in records {
            let tp = tp_of(&r);
            if self.blocked(&tp) || !self.owns(&tp) {
                continue;
            }
            if let Some((_, more)) = undeserializable
                .iter_mut()
                .find(|(u, _)| u.partition() == r.partition() && u.topic() == r.topic())
            {
                *more = true;
            } else if r.deserialization_failure().is_some() {
                undeserializable.push((r, false));
            } else {
                batch.push(r);
            }
        }
        if batch.is_empty() && undeserializable.is_empty() {
            return;
        }
        let result = if batch.is_empty() {
            Ok(())
        } else {
            let ack = self.batch_ack(&batch);
            match call_guarded(super::records::batch_span(batch.len()), || {
                f(batch.clone(), ack)
            })
            .await
            {
                Ok(result) => result,
                Err(panic) => {
                    // Stopping; the batch is not acknowledged (earlier polls' are committed).
                    self.handler_panicked(panic);
                    self.panicked = false;
                    return;
                }
            }
        };
        let (result, sought) = self.through_batch_leh(&batch, result);
        if std::mem::take(&mut self.panicked) {
            // Stopping; the batch is not acknowledged.
            return;
        }
        self.drain_manual_acks().await;
        match result {
            Ok(()) if sought.is_empty() => {
                self.batch_succeeded(&batch).await;
                self.recover_undeserializable(undeserializable).await;
            }
            Ok(()) => {
                // The listener-level handler repositioned these partitions: their records come
                // again from the new position.
                let kept: Vec<C::Record> = batch
                    .into_iter()
                    .filter(|r| !sought.contains(&tp_of(r)))
                    .collect();
                self.batch_succeeded(&kept).await;
                undeserializable.retain(|(r, _)| !sought.contains(&tp_of(r)));
                self.recover_undeserializable(undeserializable).await;
            }
            Err(e) => {
                let (position, cause) = match e.downcast::<BatchListenerFailed>() {
                    Ok(blf) => (
                        Some(blf.position),
                        Arc::<dyn std::error::Error + Send + Sync>::from(blf.cause),
                    ),
                    // Deeper in the chain: the failed record gets the whole error (its chain
                    // holds the cause, which classification finds).
                    Err(e) => (
                        BatchListenerFailed::find(e.as_ref()).map(|b| b.position.clone()),
                        Arc::from(e),
                    ),
                };
                // Spring's `FailedBatchProcessor` tells the retry listeners about the whole
                // batch first (attempt 1), then handles the record it names.
                if position.is_some() {
                    for l in &self.listeners {
                        l.failed_delivery_batch(&batch, &cause, 1);
                    }
                }
                let index = position.and_then(|p| match p {
                    FailedPosition::Index(i) if i < batch.len() => Some(i),
                    FailedPosition::Record {
                        topic,
                        partition,
                        offset,
                    } => batch.iter().position(|r| {
                        r.topic() == topic && r.partition() == partition && r.offset() == offset
                    }),
                    _ => None,
                });
                match index {
                    Some(i) => self.batch_failed_at(batch, i, cause).await,
                    None => {
                        tracing::warn!(
                            "batch handler failed without naming a record in the batch; retrying the whole batch"
                        );
                        self.batch_fallback(batch, cause).await;
                    }
                }
                // Undeserializable records come back with the re-fetched records (unless their
                // partition was sent back further).
                for (r, _) in undeserializable {
                    self.seek_min(&tp_of(&r), r.offset());
                }
            }
        }
    }

    /// A batch handler's call as the batch listener-level error handler leaves it: a failure
    /// goes through the handler (if any), whose seeks are applied; returns the outcome and the
    /// partitions it repositioned. A panic of the handler stops the container (`panicked`).
    fn through_batch_leh(
        &mut self,
        batch: &[C::Record],
        result: Result<(), HandlerError>,
    ) -> (Result<(), HandlerError>, Vec<PartitionKey>) {
        let Some(leh) = self.batch_leh.clone() else {
            return (result, Vec::new());
        };
        let Err(error) = result else {
            return (Ok(()), Vec::new());
        };
        let mut seeks = Seeks::default();
        let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            leh(batch, error, &mut seeks)
        }));
        let outcome = match called {
            Ok(outcome) => outcome,
            Err(panic) => {
                return (
                    Err(self.handler_panicked(HandlerPanicked(panic_message(panic)))),
                    Vec::new(),
                );
            }
        };
        let mut sought = Vec::new();
        for (target, offset) in seeks.requests {
            if !sought.contains(&target) {
                sought.push(target.clone());
            }
            self.seek_min(&target, offset);
        }
        (outcome, sought)
    }

    pub(super) fn batch_ack(&self, batch: &[C::Record]) -> Acknowledgment {
        if !self.manual_acks() {
            return Acknowledgment {
                sink: None,
                targets: AckTargets::Automatic,
                nack: None,
            };
        }
        Acknowledgment {
            sink: Some(self.acks.clone()),
            nack: None,
            targets: AckTargets::Many(Arc::new(
                offset_bounds(batch, i64::max)
                    .into_iter()
                    .map(|(tp, o)| (tp, o + 1))
                    .collect(),
            )),
        }
    }

    pub(super) async fn batch_succeeded(&mut self, batch: &[C::Record]) {
        self.count_records(batch, |t| &t.handled);
        for r in batch {
            let tp = tp_of(r);
            self.tracker.succeeded(&tp, r.offset());
            self.ack(&tp, r.offset(), AckSource::Handler).await;
        }
    }

    /// The record path for each partition's first undeserializable record, once the records
    /// before it are handled; the partition's later records (`more`) are fetched again.
    pub(super) async fn recover_undeserializable(&mut self, records: Vec<(C::Record, bool)>) {
        for (r, more) in records {
            let tp = tp_of(&r);
            let Some(d) = r.deserialization_failure() else {
                continue;
            };
            // A retry or a recovery failure seeks back to the record itself; otherwise the rest
            // comes again from the record after it.
            self.on_failure(&tp, &r, Arc::new(d), &[]).await;
            if more {
                self.seek_min(&tp, r.offset() + 1);
            }
        }
    }

    pub(super) async fn batch_failed_at(
        &mut self,
        batch: Vec<C::Record>,
        index: usize,
        cause: SharedError,
    ) {
        let failed = batch[index].clone();
        let failed_tp = tp_of(&failed);
        // Records before the failed one are done: commit them now (Spring always does).
        for r in &batch[..index] {
            let tp = tp_of(r);
            self.tracker.succeeded(&tp, r.offset());
            self.advance_pending(&tp, r.offset() + 1);
        }
        self.commit_pending().await;
        let remaining: Vec<C::Record> = batch[index + 1..]
            .iter()
            .filter(|r| tp_of(*r) == failed_tp)
            .cloned()
            .collect();
        let flow = self
            .on_failure(&failed_tp, &failed, cause, &remaining)
            .await;
        // The rest is re-fetched: seek each partition to its first remaining record.
        for (tp, offset) in offset_bounds(&batch[index + 1..], i64::min) {
            // A failed partition that is retrying was already sought back to the failed record.
            if tp == failed_tp && flow == Flow::SkipPartition {
                continue;
            }
            self.seek_min(&tp, offset);
        }
        self.commit_pending().await;
    }

    /// Retries the whole batch in memory with its partitions paused (membership kept), then
    /// recovers each record.
    pub(super) async fn batch_fallback(
        &mut self,
        mut batch: Vec<C::Record>,
        first_error: SharedError,
    ) {
        let Handler::Batch(f) = &self.handler else {
            return;
        };
        let f = f.clone();
        let paused: Vec<PartitionKey> = self.assignment.iter().cloned().collect();
        self.pause_partitions(&paused);
        let Some(first) = batch.first().cloned() else {
            return;
        };
        let eh = self.eh.clone();
        let mut retry = BatchRetry::default();
        let mut attempt = 1u32;
        let mut error = first_error;
        for l in &self.listeners {
            l.failed_delivery_batch(&batch, &error, attempt);
        }
        let mut succeeded = false;
        let mut stopped = false;
        // The error handler's decision once it stops redelivering (`Recover` when the batch
        // is no longer held).
        let mut last = Disposition::Recover;
        loop {
            let disposition = eh.handle_batch(&mut BatchFailure {
                records: &batch,
                error: &error,
                attempt,
                retry: &mut retry,
            });
            let Disposition::Redeliver { delay } = disposition else {
                last = disposition;
                break;
            };
            if !self.wait_paused(delay).await {
                stopped = true;
                break;
            }
            batch.retain(|r| self.owns(&tp_of(r)));
            if batch.is_empty() {
                break;
            }
            let ack = self.batch_ack(&batch);
            let mut retried = match call_guarded(super::records::batch_span(batch.len()), || {
                f(batch.clone(), ack)
            })
            .await
            {
                Ok(retried) => retried,
                Err(panic) => {
                    self.handler_panicked(panic);
                    self.panicked = false;
                    stopped = true;
                    break;
                }
            };
            let sought;
            (retried, sought) = self.through_batch_leh(&batch, retried);
            if std::mem::take(&mut self.panicked) {
                stopped = true;
                break;
            }
            match retried {
                Ok(()) => {
                    succeeded = true;
                    batch.retain(|r| !sought.contains(&tp_of(r)));
                    break;
                }
                Err(e) => {
                    attempt += 1;
                    error = Arc::from(e);
                    for l in &self.listeners {
                        l.failed_delivery_batch(&batch, &error, attempt);
                    }
                    self.count_records(&batch, |t| &t.failed);
                    self.emit(ContainerEvent::FailedDelivery {
                        partition: tp_of(&first),
                        offset: first.offset(),
                        attempt,
                        error: error.clone(),
                    });
                }
            }
        }
        self.drain_manual_acks().await;
        if succeeded {
            self.batch_succeeded(&batch).await;
        } else if stopped {
            self.seek_batch_back(&batch);
        } else if !batch.is_empty() {
            self.apply_to_batch(&batch, &error, last).await;
        }
        let resume: Vec<PartitionKey> = self
            .assignment
            .iter()
            .filter(|tp| !self.blocked(tp))
            .cloned()
            .collect();
        if !self.container_paused {
            self.resume_partitions(&resume);
        }
        self.commit_pending().await;
    }

    /// Applies the error handler's decision about a failed batch that is no longer retried.
    async fn apply_to_batch(
        &mut self,
        batch: &[C::Record],
        error: &SharedError,
        disposition: Disposition,
    ) {
        match disposition {
            Disposition::Handled => {
                if self.eh.ack_after_handle() {
                    for r in batch {
                        let tp = tp_of(r);
                        self.tracker.succeeded(&tp, r.offset());
                        self.ack(&tp, r.offset(), AckSource::Recovered).await;
                    }
                }
            }
            Disposition::StopContainer => {
                // Not acknowledged: the batch comes again from the committed offsets.
                self.seek_batch_back(batch);
                self.stop_reason.get_or_insert(StopReason::Abnormal);
            }
            Disposition::HaltPartition => {
                self.seek_batch_back(batch);
                for (tp, first) in offset_bounds(batch, i64::min) {
                    if let Some(r) = batch
                        .iter()
                        .find(|r| r.offset() == first && tp_of(*r) == tp)
                    {
                        let failures = self.tracker.recovery_failures(&tp, first);
                        self.halt(&tp, r.clone(), error.clone(), failures);
                    }
                }
            }
            _ => self.recover_batch(batch, error).await,
        }
    }

    pub(super) fn seek_batch_back(&mut self, batch: &[C::Record]) {
        for (tp, o) in offset_bounds(batch, i64::min) {
            self.seek_min(&tp, o);
        }
    }

    pub(super) async fn recover_batch(&mut self, batch: &[C::Record], error: &SharedError) {
        let recoverer = self.recoverer.clone();
        for (i, r) in batch.iter().enumerate() {
            let tp = tp_of(r);
            if self.blocked(&tp) {
                continue;
            }
            match recoverer.recover(r, error).await {
                Ok(()) => {
                    self.tracker.succeeded(&tp, r.offset());
                    self.ack(&tp, r.offset(), AckSource::Recovered).await;
                }
                Err(f) => {
                    let f: SharedError = Arc::from(f);
                    for l in &self.listeners {
                        l.recovery_failed_batch(batch, error, &f);
                    }
                    // Nothing past an unrecovered record is committed: re-fetch from it.
                    let rest = &batch[i..];
                    self.seek_batch_back(rest);
                    let decision = self.tracker.recovery_failed(&tp, r.offset());
                    let failures = self.tracker.recovery_failures(&tp, r.offset());
                    self.emit(ContainerEvent::RecoveryFailed {
                        partition: tp.clone(),
                        offset: r.offset(),
                        failures,
                        error: f,
                    });
                    if let RecoveryFailureDecision::Halt { failures } = decision {
                        self.halt(&tp, r.clone(), error.clone(), failures);
                    } else {
                        self.backing_off
                            .insert(tp, Instant::now() + self.policy.recovery_retry_interval);
                    }
                    return;
                }
            }
        }
        for l in &self.listeners {
            l.recovered_batch(batch, error);
        }
    }

    /// Waits `delay` with the partitions paused, polling so the consumer stays in its group.
    /// Records of partitions assigned meanwhile are sought back and paused. False on stop.
    pub(super) async fn wait_paused(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            if self.stop_requested() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            let slice = left.min(Duration::from_millis(100));
            let polled = tokio::select! {
                biased;
                () = self.stop.stopped() => return false,
                r = self.consumer.poll(slice) => r,
            };
            self.rewound.clear();
            let added = self.sync_assignment().await;
            self.pause_partitions(&added);
            if let Ok(records) = polled {
                let firsts = offset_bounds(&records, i64::min);
                let tps: Vec<PartitionKey> = firsts.iter().map(|(tp, _)| tp.clone()).collect();
                for (tp, o) in firsts {
                    self.seek_min(&tp, o);
                }
                self.pause_partitions(&tps);
            }
        }
    }
}

//! What happens to a failed record, and the recoveries in flight.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::hash::FastMap;
use crate::listener::classify::HandlerError;
use crate::listener::consumer::{ContainerConsumer, ListenerRecord};
use crate::listener::error_handler::{Disposition, RecordFailure};
use crate::listener::handler::{BoxFuture, Recovery, RecoveryHalt, SharedError};
use crate::listener::tracker::{PartitionKey, RecoveryFailureDecision};
use tracing::Instrument;

/// The `kafka.recovery` span of one failed record's recovery.
pub(super) fn recovery_span(tp: &PartitionKey, offset: i64) -> tracing::Span {
    tracing::debug_span!("kafka.recovery", topic = %tp.0, partition = tp.1, offset)
}

/// A recovery under way ([`Recovery::InFlight`]).
pub(super) struct InFlight<R> {
    pub(super) record: R,
    pub(super) error: SharedError,
    pub(super) done: BoxFuture<'static, std::result::Result<(), HandlerError>>,
}

pub(super) struct Halted<R> {
    pub(super) record: R,
    pub(super) error: SharedError,
    pub(super) next_probe: Instant,
}

/// The recoveries under way ([`Recovery::InFlight`]), per partition in offset order: commits
/// of a partition stop at its first one. The type keeps the total count in step with the
/// queues, and drops a partition's entry as soon as its queue is empty.
pub(super) struct Recoveries<R> {
    by_partition: FastMap<PartitionKey, VecDeque<InFlight<R>>>,
    count: usize,
}

impl<R: ListenerRecord> Recoveries<R> {
    pub(super) fn new() -> Self {
        Recoveries {
            by_partition: FastMap::default(),
            count: 0,
        }
    }

    /// The number of recoveries in flight.
    pub(super) fn len(&self) -> usize {
        self.count
    }

    /// Whether no recovery is in flight.
    pub(super) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether `tp` has a recovery in flight.
    pub(super) fn has(&self, tp: &PartitionKey) -> bool {
        self.by_partition.contains_key(tp)
    }

    /// Adds a recovery of `tp` (after every other one of `tp`: offsets only go up).
    pub(super) fn push(&mut self, tp: &PartitionKey, recovery: InFlight<R>) {
        self.by_partition
            .entry(tp.clone())
            .or_default()
            .push_back(recovery);
        self.count += 1;
    }

    /// The lowest offset of `tp` whose recovery is in flight.
    pub(super) fn low(&self, tp: &PartitionKey) -> Option<i64> {
        self.by_partition
            .get(tp)
            .and_then(VecDeque::front)
            .map(|f| f.record.offset())
    }

    /// The partitions with recoveries in flight.
    pub(super) fn partitions(&self) -> Vec<PartitionKey> {
        self.by_partition.keys().cloned().collect()
    }

    /// `tp`'s first recovery in flight.
    pub(super) fn front_mut(&mut self, tp: &PartitionKey) -> Option<&mut InFlight<R>> {
        self.by_partition.get_mut(tp).and_then(VecDeque::front_mut)
    }

    /// Takes `tp`'s first recovery in flight.
    pub(super) fn pop_front(&mut self, tp: &PartitionKey) -> Option<InFlight<R>> {
        let queue = self.by_partition.get_mut(tp)?;
        let front = queue.pop_front();
        if queue.is_empty() {
            self.by_partition.remove(tp);
        }
        if front.is_some() {
            self.count = self.count.saturating_sub(1);
        }
        front
    }

    /// Takes every recovery in flight of `tp` (revoked, or sent back by a failed recovery).
    pub(super) fn take_partition(&mut self, tp: &PartitionKey) -> VecDeque<InFlight<R>> {
        let taken = self.by_partition.remove(tp).unwrap_or_default();
        self.count = self.count.saturating_sub(taken.len());
        taken
    }
}

impl<C: ContainerConsumer> Runner<C> {
    pub(super) async fn probe_halted(&mut self) {
        let now = Instant::now();
        let due: Vec<PartitionKey> = self
            .halted
            .iter()
            .filter(|(_, h)| h.next_probe <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            let Some(h) = self.halted.remove(&tp) else {
                continue;
            };
            let offset = h.record.offset();
            let span = recovery_span(&tp, offset);
            match self
                .recoverer
                .recover(&h.record, &h.error)
                .instrument(span)
                .await
            {
                Ok(()) => {
                    self.events.resumed(&tp);
                    self.recovered(&tp, &h.record, &h.error);
                    // Forward, past the recovered record: no earlier seek bounds this one.
                    self.rewound.remove(&tp);
                    self.seek_min(&tp, offset + 1);
                    self.ack(&tp, offset, AckSource::Recovered).await;
                    self.commit_pending().await;
                    if !self.container_paused {
                        self.resume_partitions(std::slice::from_ref(&tp));
                    }
                }
                Err(f) => {
                    let f: SharedError = Arc::from(f);
                    for l in &self.listeners {
                        l.recovery_failed(&h.record, &h.error, &f);
                    }
                    let failures = self
                        .tracker
                        .recovery_failures(&tp, offset)
                        .saturating_add(1);
                    let _ = self.tracker.recovery_failed(&tp, offset);
                    self.emit(ContainerEvent::RecoveryFailed {
                        partition: tp.clone(),
                        offset,
                        failures,
                        error: f,
                    });
                    self.halted.insert(
                        tp,
                        Halted {
                            next_probe: Instant::now() + self.policy.halt_probe_interval,
                            ..h
                        },
                    );
                }
            }
        }
    }

    /// The recovery-failure cap is reached for `record`: its partition stays paused (the
    /// caller has sought it back), the alarm fires, and the recovery is probed later.
    pub(super) fn halt(
        &mut self,
        tp: &PartitionKey,
        record: C::Record,
        error: SharedError,
        failures: u32,
    ) {
        let offset = record.offset();
        self.halted.insert(
            tp.clone(),
            Halted {
                record,
                error,
                next_probe: Instant::now() + self.policy.halt_probe_interval,
            },
        );
        self.halt_alarm(tp, offset, failures);
        self.stop_if_halts_stop();
    }

    /// The alarm of a halted partition, wherever the container halts one (here, and in the
    /// exactly-once mode): the halts counter, the halted-partitions view and the
    /// [`ContainerEvent::RecoveryHalted`] event.
    pub(super) fn halt_alarm(&mut self, tp: &PartitionKey, offset: i64, failures: u32) {
        self.telemetry.part(tp).halts.increment(1);
        self.events.halted(tp, offset, failures);
        self.emit(ContainerEvent::RecoveryHalted {
            partition: tp.clone(),
            offset,
            failures,
        });
    }

    /// Stops the container (abnormally) if a halted partition should stop it
    /// ([`RecoveryHalt::StopContainer`]).
    pub(super) fn stop_if_halts_stop(&mut self) {
        if self.policy.on_recovery_halt == RecoveryHalt::StopContainer {
            self.stop_reason = Some(StopReason::Abnormal);
        }
    }

    /// A record failed: its fate is decided here, once, by the error handler
    /// ([`CommonErrorHandler`]: `handle_remaining` or `handle_one`, per its
    /// `seeks_after_handling`), and the [`Disposition`] applied. `remaining`: the partition's
    /// records after it in the poll, when the container holds them.
    pub(super) async fn on_failure(
        &mut self,
        tp: &PartitionKey,
        record: &C::Record,
        error: SharedError,
        remaining: &[C::Record],
    ) -> Flow {
        let offset = record.offset();
        let eh = self.eh.clone();
        let mut failure = RecordFailure {
            record,
            partition: tp,
            error: &error,
            attempt: self.tracker.delivery_attempt(tp, offset),
            tracker: &mut self.tracker,
            seeks: Seeks::default(),
            in_transaction: false,
            whole_batch: false,
        };
        let disposition = if eh.seeks_after_handling() {
            eh.handle_remaining(&mut failure, remaining)
        } else {
            eh.handle_one(&mut failure)
        };
        let (attempt, seeks) = (failure.attempt, failure.seeks);
        self.emit_failed_delivery(tp, offset, attempt, &error);
        // Consumer-aware handling: the handler's seeks first.
        let mut repositioned = false;
        for (target, to) in seeks.requests {
            repositioned |= &target == tp;
            self.seek_min(&target, to);
        }
        // In-memory redelivery: the failed record and the partition's records after it stay
        // here (the sequential record path is the one that holds them all).
        let hold = !repositioned
            && !eh.seeks_after_handling()
            && self.concurrency == 1
            && self.txn.is_none()
            && matches!(self.handler, Handler::Record(_));
        let flow = match disposition {
            Disposition::Redeliver { delay } if hold => {
                tracing::info!(
                    topic = %tp.0, partition = tp.1, offset, attempt, error = %error,
                    "record failed; redelivering it from memory after {delay:?}"
                );
                self.hold_for_redelivery(tp, record, remaining, delay).await;
                Flow::SkipPartition
            }
            _ => self.apply(tp, record, error, disposition, attempt).await,
        };
        if repositioned {
            Flow::SkipPartition
        } else {
            flow
        }
    }

    /// Applies the error handler's decision about `record` (outside the exactly-once mode).
    async fn apply(
        &mut self,
        tp: &PartitionKey,
        record: &C::Record,
        error: SharedError,
        disposition: Disposition,
        attempt: u32,
    ) -> Flow {
        let offset = record.offset();
        match disposition {
            Disposition::Redeliver { delay } => {
                tracing::info!(
                    topic = %tp.0, partition = tp.1, offset, attempt, error = %error,
                    "record failed; retrying after {delay:?}"
                );
                self.retry_later(tp, offset, delay).await;
                Flow::SkipPartition
            }
            Disposition::Recover | Disposition::RecoverInTransaction => {
                self.recover(tp, record, error).await
            }
            Disposition::Handled => {
                self.tracker.succeeded(tp, offset);
                if self.eh.ack_after_handle() {
                    self.ack(tp, offset, AckSource::Recovered).await;
                }
                Flow::Continue
            }
            Disposition::HaltPartition => {
                self.seek_min(tp, offset);
                self.backing_off.remove(tp);
                if !self.container_paused {
                    self.pause_partitions(std::slice::from_ref(tp));
                }
                let failures = self.tracker.recovery_failures(tp, offset);
                tracing::error!(
                    topic = %tp.0, partition = tp.1, offset, error = %error,
                    "the error handler halted the partition"
                );
                self.halt(tp, record.clone(), error, failures);
                Flow::SkipPartition
            }
            Disposition::StopContainer => {
                // Not acknowledged: it comes again from the committed offset.
                self.seek_min(tp, offset);
                self.stop_reason.get_or_insert(StopReason::Abnormal);
                Flow::SkipPartition
            }
        }
    }

    /// Seeks `tp` back to `offset` and pauses it for `delay` (other partitions keep flowing).
    pub(super) async fn retry_later(&mut self, tp: &PartitionKey, offset: i64, delay: Duration) {
        self.seek_min(tp, offset);
        self.commit_retry_state(tp, offset).await;
        if !delay.is_zero() {
            self.backing_off.insert(tp.clone(), Instant::now() + delay);
            if !self.container_paused {
                self.pause_partitions(std::slice::from_ref(tp));
            }
        }
    }

    /// Keeps `record` and the partition's `remaining` records of the poll in memory and pauses
    /// the partition for `delay`, without seeking: once the delay is due they are handed to the
    /// handler again from here (`redeliver_held`), not fetched again. The retry state is
    /// committed as for a seek-back retry, so a new owner of the partition goes on counting.
    async fn hold_for_redelivery(
        &mut self,
        tp: &PartitionKey,
        record: &C::Record,
        remaining: &[C::Record],
        delay: Duration,
    ) {
        let mut held = Vec::with_capacity(1 + remaining.len());
        held.push(record.clone());
        held.extend_from_slice(remaining);
        self.held.insert(tp.clone(), held);
        self.commit_retry_state(tp, record.offset()).await;
        self.backing_off.insert(tp.clone(), Instant::now() + delay);
        if !self.container_paused {
            self.pause_partitions(std::slice::from_ref(tp));
        }
    }

    pub(super) async fn recover(
        &mut self,
        tp: &PartitionKey,
        record: &C::Record,
        error: SharedError,
    ) -> Flow {
        let offset = record.offset();
        let recoverer = self.recoverer.clone();
        let span = recovery_span(tp, offset);
        let started = if self.txn.is_none() {
            recoverer
                .start_recovery(record, &error)
                .instrument(span.clone())
                .await
        } else {
            recoverer
                .recover(record, &error)
                .instrument(span.clone())
                .await
                .map(|()| Recovery::Done)
        };
        match started {
            Ok(Recovery::Done) => {
                self.recovered(tp, record, &error);
                if self.eh.ack_after_handle() {
                    self.ack(tp, offset, AckSource::Recovered).await;
                    if self.eh.commit_recovered() {
                        self.commit_pending().await;
                    }
                }
                Flow::Continue
            }
            Ok(Recovery::InFlight(done)) => {
                self.tracker.recovery_started(tp, offset);
                self.recoveries.push(
                    tp,
                    InFlight {
                        record: record.clone(),
                        error,
                        done: Box::pin(done.instrument(span)),
                    },
                );
                // Committed once the recovery completes (commits stop below it until then).
                if self.eh.ack_after_handle() {
                    self.ack(tp, offset, AckSource::Recovered).await;
                }
                Flow::Continue
            }
            Err(f) => {
                self.recovery_failed(tp, record, error, Arc::from(f)).await;
                Flow::SkipPartition
            }
        }
    }

    /// The recoverer handled `record`: listeners, tracker, event.
    pub(super) fn recovered(&mut self, tp: &PartitionKey, record: &C::Record, error: &SharedError) {
        for l in &self.listeners {
            l.recovered(record, error);
        }
        self.telemetry.part(tp).recovered.increment(1);
        self.tracker.recovered(tp, record.offset());
        if self.observed() {
            self.emit(ContainerEvent::Recovered {
                partition: tp.clone(),
                offset: record.offset(),
            });
        }
    }

    /// The recoverer failed (`failure`) for `record`: it is redelivered after the recovery
    /// retry interval, or its partition halts once the cap is reached.
    pub(super) async fn recovery_failed(
        &mut self,
        tp: &PartitionKey,
        record: &C::Record,
        error: SharedError,
        failure: SharedError,
    ) {
        let offset = record.offset();
        for l in &self.listeners {
            l.recovery_failed(record, &error, &failure);
        }
        let decision = self.tracker.recovery_failed(tp, offset);
        let failures = self.tracker.recovery_failures(tp, offset);
        tracing::warn!(
            topic = %tp.0, partition = tp.1, offset, failures, error = %failure,
            "recovering the record failed; it will be redelivered"
        );
        self.emit(ContainerEvent::RecoveryFailed {
            partition: tp.clone(),
            offset,
            failures,
            error: failure,
        });
        match decision {
            RecoveryFailureDecision::Halt { failures } => {
                self.seek_min(tp, offset);
                self.backing_off.remove(tp);
                if !self.container_paused {
                    self.pause_partitions(std::slice::from_ref(tp));
                }
                tracing::error!(
                    topic = %tp.0, partition = tp.1, offset, failures,
                    "recovery failed {failures} times; partition halted"
                );
                self.halt(tp, record.clone(), error, failures);
            }
            _ => {
                let interval = self.policy.recovery_retry_interval;
                self.retry_later(tp, offset, interval).await;
            }
        }
    }

    /// Waits for every recovery in flight, then commits what is pending.
    pub(super) async fn settle_recoveries(&mut self) {
        self.complete_recoveries(true).await;
        self.commit_pending().await;
    }

    /// The lowest offset of `tp` whose recovery is in flight.
    pub(super) fn in_flight_low(&self, tp: &PartitionKey) -> Option<i64> {
        self.recoveries.low(tp)
    }

    /// Completes the recoveries in flight, partition by partition in offset order: all of them
    /// (`wait`), or those already done (stopping at a partition's first unfinished one). A
    /// recovery that failed sends its partition back to that record
    /// ([`rewind_failed_recovery`](Self::rewind_failed_recovery)).
    pub(super) async fn complete_recoveries(&mut self, wait: bool) {
        if self.recoveries.is_empty() {
            return;
        }
        let mut recovered = false;
        for tp in self.recoveries.partitions() {
            while let Some(front) = self.recoveries.front_mut(&tp) {
                let result = if wait {
                    (&mut front.done).await
                } else {
                    match poll_now(&mut front.done) {
                        std::task::Poll::Ready(r) => r,
                        std::task::Poll::Pending => break,
                    }
                };
                let Some(done) = self.recoveries.pop_front(&tp) else {
                    break;
                };
                match result {
                    Ok(()) => {
                        self.recovered(&tp, &done.record, &done.error);
                        recovered = true;
                    }
                    Err(f) => {
                        self.rewind_failed_recovery(&tp, done, Arc::from(f)).await;
                        break;
                    }
                }
            }
            if !self.recoveries.has(&tp) {
                self.commits.uncap(&tp);
            }
        }
        if self.commits.owed || (recovered && self.eh.commit_recovered()) {
            // The commit that was due when the recovery held it back (or, with
            // `commit_recovered`, the recovered records' own).
            self.commits.owed = false;
            self.commit_pending().await;
        }
    }

    /// The recovery of `failed` did not complete: a recovery failure. Nothing of its partition
    /// past it may be committed, so the partition goes back to it; the partition's later
    /// recoveries are waited for, and those that completed are remembered so their records are
    /// not recovered twice when they come again.
    pub(super) async fn rewind_failed_recovery(
        &mut self,
        tp: &PartitionKey,
        failed: InFlight<C::Record>,
        failure: SharedError,
    ) {
        let rest = self.recoveries.take_partition(tp);
        for later in rest {
            let offset = later.record.offset();
            match later.done.await {
                Ok(()) => {
                    self.recovered(tp, &later.record, &later.error);
                    self.remember_recovered(tp, offset, false);
                }
                Err(f) => {
                    tracing::debug!(
                        topic = %tp.0, partition = tp.1, offset, error = %f,
                        "recovery failed after an earlier one of its partition; redelivered"
                    );
                    self.forget_recovered(tp, offset);
                }
            }
        }
        // The partition goes back below every remembered record after the failed one (none of
        // them may be acknowledged on the failed record's behalf).
        let failed_offset = failed.record.offset();
        self.forget_recovered(tp, failed_offset);
        if let Some(ahead) = self.recovered_ahead.get_mut(tp) {
            for (o, past) in ahead.iter_mut() {
                if *o > failed_offset {
                    *past = false;
                }
            }
        }
        self.commits.forget(tp);
        self.recovery_failed(tp, &failed.record, failed.error, failure)
            .await;
    }

    /// Forgets `offset` of `tp` in `recovered_ahead` (its recovery did not complete).
    pub(super) fn forget_recovered(&mut self, tp: &PartitionKey, offset: i64) {
        if let Some(ahead) = self.recovered_ahead.get_mut(tp) {
            ahead.retain(|(o, _)| *o != offset);
            if ahead.is_empty() {
                self.recovered_ahead.remove(tp);
            }
        }
    }

    /// Drops records already recovered (see `recovered_ahead`). A dropped record is acked only
    /// in order: when it leads its partition's records of the poll (everything before it came
    /// in earlier polls), or else when the ack of the record before it moves over it, so no
    /// commit passes an earlier record still to be handled (one whose dead letter failed, say).
    /// They are remembered until a commit passes them (the partition may be sought back again
    /// before that).
    pub(super) async fn skip_recovered_ahead(&mut self, records: Vec<C::Record>) -> Vec<C::Record> {
        let mut keep = Vec::with_capacity(records.len());
        // Partitions with a record kept so far, and the skipped records that lead theirs.
        let mut kept_tps: Vec<PartitionKey> = Vec::new();
        let mut leading: Vec<(PartitionKey, i64)> = Vec::new();
        for r in records {
            let tp = tp_of(&r);
            let hit = match self.recovered_ahead.get_mut(&tp) {
                Some(ahead) => match ahead.binary_search_by_key(&r.offset(), |(o, _)| *o) {
                    Ok(i) => {
                        ahead[i].1 = true;
                        true
                    }
                    Err(_) => false,
                },
                None => false,
            };
            if hit {
                tracing::debug!(
                    topic = %tp.0, partition = tp.1, offset = r.offset(),
                    "already recovered; skipped"
                );
                if !kept_tps.contains(&tp) {
                    leading.push((tp, r.offset()));
                }
            } else {
                if !kept_tps.contains(&tp) {
                    kept_tps.push(tp);
                }
                keep.push(r);
            }
        }
        for (tp, offset) in leading {
            self.ack(&tp, offset, AckSource::Recovered).await;
        }
        keep
    }
}

//! The container's task: the poll loop, the assignment, pauses and seeks.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::hash::FastMap;
use crate::listener::classify::HandlerError;
use crate::listener::consumer::{ContainerConsumer, ListenerRecord};
use crate::listener::error_handler::{
    CommonErrorHandler, Disposition, OtherFailure, RecoveryPolicy,
};
use crate::listener::events::EventHub;
use crate::listener::fetch_failure::FetchFailures;
use crate::listener::handler::{BoxFuture, SharedError};
use crate::listener::handler::{DeliveryAttemptHeader, Recoverer, RetryListener};
use crate::listener::tracker::{FailedRecordTracker, PartitionKey, RetryState};
use crate::telemetry::{ListenerPartitionTelemetry, ListenerTelemetry};
use crate::{Error, ErrorKind, KafkaCode};

/// What to do with the rest of a partition's records in hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Flow {
    Continue,
    SkipPartition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AckSource {
    Handler,
    Recovered,
}

pub(super) struct Runner<C: ContainerConsumer> {
    pub(super) consumer: C,
    pub(super) handler: Handler<C::Record>,
    /// The error handler: it decides the fate of every failure (see `recoveries.rs`).
    pub(super) eh: Arc<dyn CommonErrorHandler<C::Record>>,
    /// The error handler's recoverer.
    pub(super) recoverer: Arc<dyn Recoverer<C::Record>>,
    /// The error handler's retry listeners.
    pub(super) listeners: Vec<Arc<dyn RetryListener<C::Record>>>,
    /// The error handler's treatment of recovery failures.
    pub(super) policy: RecoveryPolicy,
    /// Whether the `kafka_deliveryAttempt` header is added.
    pub(super) attempt_header: DeliveryAttemptHeader,
    pub(super) leh: Option<ListenerErrorFn<C::Record>>,
    /// The batch listener's listener-level error handler.
    pub(super) batch_leh: Option<BatchListenerErrorFn<C::Record>>,
    pub(super) check: Option<DeserializationCheck<C::Record>>,
    pub(super) ack_mode: AckMode,
    pub(super) poll_timeout: Duration,
    pub(super) idle_interval: Option<Duration>,
    pub(super) concurrency: usize,
    pub(super) txn: Option<Transactional>,
    /// Exactly-once mode: per partition, the records (offsets `from..=to`) whose attempts are
    /// used up, to recover (with the error) when they come again, inside that poll's
    /// transaction: one record, or a partition's part of a failed batch (the records the
    /// handler saw).
    pub(super) pending_recovery: FastMap<PartitionKey, (i64, i64, SharedError)>,
    /// Recoveries under way.
    pub(super) recoveries: Recoveries<C::Record>,
    /// Recovered records not acknowledged in order yet, per partition in offset order, each
    /// with whether the consumer's position is past it: records whose recovery completed
    /// before their partition was sought back to an earlier record whose recovery failed, and
    /// (manual ack modes) recovered records the user's acknowledgments have not reached. They
    /// are skipped when they come again; an acknowledgment of the record before one moves over
    /// it ([`advance_pending`](Self::advance_pending)). Forgotten once a commit passes them and
    /// the position is past them.
    pub(super) recovered_ahead: FastMap<PartitionKey, Vec<(i64, bool)>>,
    /// Manual ack modes: per partition, the offset below which every record is acknowledged
    /// (by the user, or recovered right after an acknowledged record); from the partition's
    /// first polled record.
    pub(super) acked_to: FastMap<PartitionKey, i64>,
    /// Records recovered inside the open transaction: done only once it commits.
    pub(super) recovered_in_txn: Vec<(PartitionKey, Vec<C::Record>, SharedError)>,
    /// Partitions the listener-level handler repositioned during the open transaction.
    pub(super) sought_in_txn: HashSet<PartitionKey>,
    pub(super) events: Arc<EventHub>,
    pub(super) stop: crate::task::StopListener,
    pub(super) pause: watch::Receiver<bool>,
    pub(super) tracker: FailedRecordTracker,
    pub(super) backing_off: FastMap<PartitionKey, Instant>,
    /// In-memory redelivery (an error handler whose `seeks_after_handling` is false, Spring's
    /// `seekAfterError=false`): per partition, its failed record and the records after it in
    /// the poll, handed to the handler again from here once the partition's back-off is due
    /// (the partition stays paused meanwhile; nothing is sought or fetched again).
    pub(super) held: FastMap<PartitionKey, Vec<C::Record>>,
    pub(super) halted: FastMap<PartitionKey, Halted<C::Record>>,
    pub(super) assignment: HashSet<PartitionKey>,
    /// The consumer's id of each assigned partition's assignment
    /// ([`ContainerConsumer::assignment_ids`]): a new id means the partition was revoked and
    /// assigned again, so what the container held for it belongs to the old assignment.
    pub(super) assignment_ids: HashMap<PartitionKey, u64>,
    /// The offsets to commit.
    pub(super) commits: Commits,
    pub(super) last_records: Instant,
    pub(super) idle_notified: bool,
    pub(super) container_paused: bool,
    pub(super) acks: AckSink,
    /// Negative acknowledgments of the record handler (`Acknowledgment::nack`).
    pub(super) nacks: NackSink,
    pub(super) group: Option<String>,
    pub(super) stop_reason: Option<StopReason>,
    /// The listener-level handler sought the current record's partition.
    pub(super) sought: bool,
    /// The handler panicked on the record just handed to it (the container is stopping).
    pub(super) panicked: bool,
    /// Per partition, where the handling of the last poll has sought it back to (the lowest
    /// seek wins: see [`seek_min`](Self::seek_min)). Cleared by each poll.
    pub(super) rewound: FastMap<PartitionKey, i64>,
    /// Partitions whose fetch failed, and the policy for them.
    pub(super) fetch_failures: FetchFailures,
    /// The `metrics` facade's handles (`crate::telemetry`).
    pub(super) telemetry: ListenerTelemetry,
}

/// Recoveries in flight at most; past this many the container waits for them before polling.
pub(super) const MAX_RECOVERIES_IN_FLIGHT: usize = 10_000;
/// While recoveries are in flight in a partition, its offset (capped below the first of them)
/// is committed at most this often.
pub(super) const CAPPED_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `fut` once without a waker to be called (the caller looks again later). Outside
/// tokio's cooperative budget: the container's task has usually spent it handling the poll's
/// records, and a budget-limited poll would report a completed recovery as pending.
pub(super) fn poll_now<T>(fut: &mut BoxFuture<'static, T>) -> std::task::Poll<T> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut unbudgeted = tokio::task::unconstrained(fut.as_mut());
    std::pin::Pin::new(&mut unbudgeted).poll(&mut cx)
}

pub(super) fn tp_of<R: ListenerRecord>(r: &R) -> PartitionKey {
    (Arc::from(r.topic()), r.partition())
}

/// Groups records by partition, keeping each partition's order and the partitions' order of
/// first appearance. Consumers return records partition by partition, so the common case is a
/// comparison with the previous record; a poll touches few partitions, so the fallback is a
/// short linear search. One `PartitionKey` is made per partition, not per record.
pub(super) fn group_by_partition<R: ListenerRecord>(
    records: Vec<R>,
) -> Vec<(PartitionKey, Vec<R>)> {
    // Two passes: count each partition's records, then move each record once into a vector
    // of its final size (growing them by doubling moved every record about twice more).
    let mut counts: Vec<(PartitionKey, usize)> = Vec::new();
    let mut last: Option<usize> = None;
    let mut slot = Vec::with_capacity(records.len());
    for r in &records {
        let same = |tp: &PartitionKey| tp.1 == r.partition() && &*tp.0 == r.topic();
        let at = match last {
            Some(i) if same(&counts[i].0) => i,
            _ => match counts.iter().position(|(tp, _)| same(tp)) {
                Some(i) => i,
                None => {
                    counts.push((tp_of(r), 0));
                    counts.len() - 1
                }
            },
        };
        counts[at].1 += 1;
        last = Some(at);
        slot.push(at);
    }
    let mut out: Vec<(PartitionKey, Vec<R>)> = counts
        .into_iter()
        .map(|(tp, n)| (tp, Vec::with_capacity(n)))
        .collect();
    for (r, at) in records.into_iter().zip(slot) {
        out[at].1.push(r);
    }
    out
}

/// Per partition of `records`, the lowest (`i64::min`) or highest (`i64::max`) offset. One
/// `PartitionKey` is made per partition, not per record.
pub(super) fn offset_bounds<R: ListenerRecord>(
    records: &[R],
    pick: fn(i64, i64) -> i64,
) -> Vec<(PartitionKey, i64)> {
    let mut out: Vec<(PartitionKey, i64)> = Vec::new();
    for r in records {
        match out
            .iter_mut()
            .find(|(tp, _)| tp.1 == r.partition() && &*tp.0 == r.topic())
        {
            Some((_, o)) => *o = pick(*o, r.offset()),
            None => out.push((tp_of(r), r.offset())),
        }
    }
    out
}

pub(super) fn stop_reason_for(e: &Error) -> Option<StopReason> {
    match e.kind() {
        ErrorKind::Authentication => Some(StopReason::Authentication),
        ErrorKind::Closed => Some(StopReason::Abnormal),
        ErrorKind::Broker(
            KafkaCode::FencedInstanceId
            | KafkaCode::ProducerFenced
            | KafkaCode::InvalidProducerEpoch,
        ) => Some(StopReason::Fenced),
        ErrorKind::Broker(
            KafkaCode::TopicAuthorizationFailed
            | KafkaCode::GroupAuthorizationFailed
            | KafkaCode::SaslAuthenticationFailed,
        ) => Some(StopReason::Authentication),
        ErrorKind::Broker(KafkaCode::OffsetOutOfRange) => Some(StopReason::NoOffset),
        _ if e.is_fatal() => Some(StopReason::Error),
        _ => None,
    }
}

impl<C: ContainerConsumer> Runner<C> {
    pub(super) fn emit(&self, event: ContainerEvent) {
        self.events.emit(event);
    }

    /// Whether anybody receives events (per-record events are not built otherwise).
    pub(super) fn observed(&self) -> bool {
        self.events.observed()
    }

    /// [`ContainerEvent::FailedDelivery`], if anybody receives events; counted in the metrics.
    pub(super) fn emit_failed_delivery(
        &mut self,
        tp: &PartitionKey,
        offset: i64,
        attempt: u32,
        error: &SharedError,
    ) {
        self.telemetry.part(tp).failed.increment(1);
        if self.observed() {
            self.emit(ContainerEvent::FailedDelivery {
                partition: tp.clone(),
                offset,
                attempt,
                error: error.clone(),
            });
        }
    }

    /// A handler panicked: stop with [`StopReason::Error`] (as for any panic of a handler, on
    /// every path). The error stands for the record or batch, which is not acknowledged.
    pub(super) fn handler_panicked(&mut self, panic: HandlerPanicked) -> HandlerError {
        tracing::error!(error = %panic, "a handler panicked; stopping");
        self.stop_reason.get_or_insert(StopReason::Error);
        self.panicked = true;
        Box::new(panic)
    }

    /// The gauges: retries (partitions backing off), recoveries in flight, halted partitions.
    pub(super) fn publish_gauges(&self) {
        self.telemetry.in_flight(
            self.backing_off.len(),
            self.recoveries.len(),
            self.halted.len(),
        );
    }

    /// Counts `records` into one of the per-partition counters (`which`), once per run of
    /// records of one partition.
    pub(super) fn count_records(
        &mut self,
        records: &[C::Record],
        which: fn(&ListenerPartitionTelemetry) -> &metrics::Counter,
    ) {
        let mut i = 0;
        while i < records.len() {
            let first = &records[i];
            let run = records[i..]
                .iter()
                .take_while(|r| r.partition() == first.partition() && r.topic() == first.topic())
                .count();
            which(self.telemetry.part(&tp_of(first))).increment(run as u64);
            i += run;
        }
    }

    pub(super) fn stop_requested(&self) -> bool {
        self.stop.is_stopped() || self.stop_reason.is_some()
    }

    pub(super) fn blocked(&self, tp: &PartitionKey) -> bool {
        self.backing_off.contains_key(tp)
            || self.halted.contains_key(tp)
            || self.held.contains_key(tp)
    }

    pub(super) async fn run(mut self) -> StopReason {
        self.emit(ContainerEvent::Started);
        while !self.stop_requested() {
            self.sync_assignment().await;
            self.apply_container_pause();
            self.resume_due();
            self.redeliver_held().await;
            self.probe_halted().await;
            self.commit_if_due().await;
            self.publish_gauges();
            if !self.recoveries.is_empty() && self.consumer.rebalance_pending() {
                // Partitions may be revoked in the next poll: finish their recoveries and
                // commit first, so the next owner does not recover the same records again.
                self.settle_recoveries().await;
            }
            // With recoveries in flight, only take records already fetched: when there are
            // none, complete the recoveries and commit instead of waiting for more.
            let timeout = if !self.recoveries.is_empty() {
                Duration::ZERO
            } else {
                self.next_timeout()
            };
            let polled = tokio::select! {
                biased;
                () = self.stop.stopped() => break,
                r = self.consumer.poll(timeout) => r,
            };
            // The poll moved the positions: earlier seeks no longer bound the next ones.
            self.rewound.clear();
            match polled {
                Ok(records) if records.is_empty() => {
                    if !self.recoveries.is_empty() {
                        self.settle_recoveries().await;
                    }
                    self.maybe_idle();
                }
                Ok(mut records) => {
                    if let Some(check) = &self.check {
                        for r in records.iter_mut() {
                            if let Err(failure) = check(r) {
                                *r = r.with_deserialization_failure(failure);
                            }
                        }
                    }
                    self.last_records = Instant::now();
                    self.idle_notified = false;
                    self.sync_assignment().await;
                    records = self.hold_back_blocked(records);
                    if self.manual_acks() {
                        // Everything before a partition's first polled record is committed.
                        for (tp, first) in offset_bounds(&records, i64::min) {
                            self.acked_to.entry(tp).or_insert(first);
                        }
                    }
                    if !self.recovered_ahead.is_empty() {
                        records = self.skip_recovered_ahead(records).await;
                    }
                    match (&self.handler, self.txn.is_some()) {
                        (Handler::Record(_), false) => self.handle_records(records).await,
                        (Handler::Batch(_), false) => self.handle_batch(records).await,
                        (_, true) => self.handle_in_transaction(records).await,
                    }
                    // Recoveries stay in flight across polls (bounded); commits stop at them.
                    let wait = self.recoveries.len() >= MAX_RECOVERIES_IN_FLIGHT;
                    self.complete_recoveries(wait).await;
                    if self.txn.is_none()
                        && (self.ack_mode == AckMode::Batch || self.ack_mode == AckMode::Manual)
                    {
                        self.commit_pending().await;
                    }
                }
                Err(e) => {
                    if let Some(reason) = stop_reason_for(&e) {
                        tracing::error!(error = %e, "listener container stopping");
                        self.stop_reason = Some(reason);
                    } else if self.handle_other(&e) == Disposition::StopContainer {
                        tracing::error!(error = %e, "poll failed; the error handler stops the container");
                        self.emit(ContainerEvent::PollFailed(e));
                        self.stop_reason = Some(StopReason::Abnormal);
                    } else {
                        tracing::warn!(error = %e, "poll failed; retrying");
                        self.emit(ContainerEvent::PollFailed(e));
                        self.sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            let eh = &self.eh;
            if let Some(reason) = self
                .fetch_failures
                .check(&mut self.consumer, &self.events, |f| eh.handle_other(f))
            {
                self.stop_reason.get_or_insert(reason);
            }
        }
        self.settle_recoveries().await;
        self.publish_gauges();
        if let Err(e) = self.consumer.close().await {
            tracing::warn!(error = %e, "closing the consumer failed");
        }
        let reason = self.stop_reason.unwrap_or(StopReason::Normal);
        self.emit(ContainerEvent::Stopped(reason));
        reason
    }

    /// Sleeps up to `d`, returning early (false) when a stop is requested.
    pub(super) async fn sleep(&mut self, d: Duration) -> bool {
        if self.stop_requested() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            () = self.stop.stopped() => false,
        }
    }

    pub(super) fn next_timeout(&self) -> Duration {
        let now = Instant::now();
        let mut t = self.poll_timeout;
        for due in self.backing_off.values() {
            t = t.min(due.saturating_duration_since(now));
        }
        for h in self.halted.values() {
            t = t.min(h.next_probe.saturating_duration_since(now));
        }
        if let AckMode::Time(d) | AckMode::CountTime(_, d) = self.ack_mode {
            if !self.commits.is_empty() {
                t = t.min((self.commits.last + d).saturating_duration_since(now));
            }
        }
        if let Some(idle) = self.idle_interval {
            if !self.idle_notified {
                t = t.min((self.last_records + idle).saturating_duration_since(now));
            }
        }
        t
    }

    pub(super) fn maybe_idle(&mut self) {
        if let Some(idle) = self.idle_interval {
            let idle_for = self.last_records.elapsed();
            if !self.idle_notified && idle_for >= idle {
                self.idle_notified = true;
                self.emit(ContainerEvent::Idle { idle_for });
            }
        }
    }

    /// Follows the consumer's assignment: forgets the state of partitions revoked, and of
    /// partitions revoked and assigned again since the last look (a new assignment id: the
    /// consumer started them over, from the committed offset and not paused, inside one
    /// poll); pauses the new ones if the container is paused and resumes their retry counts
    /// from the commit metadata. Returns the partitions added (or assigned again).
    pub(super) async fn sync_assignment(&mut self) -> Vec<PartitionKey> {
        let now: HashMap<PartitionKey, u64> = self.consumer.assignment_ids().into_iter().collect();
        if now == self.assignment_ids {
            return Vec::new();
        }
        let removed: Vec<PartitionKey> = self
            .assignment_ids
            .iter()
            .filter(|(tp, id)| now.get(*tp) != Some(*id))
            .map(|(tp, _)| tp.clone())
            .collect();
        let added: Vec<PartitionKey> = now
            .iter()
            .filter(|(tp, id)| self.assignment_ids.get(*tp) != Some(*id))
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in &removed {
            self.tracker.clear(tp);
            self.backing_off.remove(tp);
            // Held records of the old assignment: the consumer starts the partition over from
            // its committed offset (at or before the first of them), or its next owner does.
            self.held.remove(tp);
            self.halted.remove(tp);
            self.events.resumed(tp);
            self.commits.forget(tp);
            self.recovered_ahead.remove(tp);
            self.acked_to.remove(tp);
            self.pending_recovery.remove(tp);
            let lost = self.recoveries.take_partition(tp);
            if !lost.is_empty() {
                // Revoked with recoveries in flight: the next owner handles these records
                // again (their dead letters may be written twice, none is lost).
                tracing::debug!(
                    topic = %tp.0, partition = tp.1, recoveries = lost.len(),
                    "partition revoked with recoveries in flight"
                );
            }
        }
        self.assignment = now.keys().cloned().collect();
        self.assignment_ids = now;
        if added.is_empty() {
            return added;
        }
        if self.container_paused {
            self.pause_partitions(&added);
        }
        if self.group.is_some() {
            // Attempt counts travel in commit metadata: continue where the last owner stopped.
            match self.consumer.committed(&added).await {
                Ok(committed) => {
                    for (tp, c) in committed {
                        if let Some((offset, metadata)) = c {
                            if let Some(state) = RetryState::decode(&metadata) {
                                if state.offset == offset {
                                    self.tracker.resume(&tp, state);
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading committed offsets failed"),
            }
        }
        added
    }

    /// Takes out the records of partitions the container holds back (backing off before a
    /// retry, halted): such a partition is paused, so none should come, but if some do (a
    /// consumer that forgot the pause) they are not dropped: the partition goes back to the
    /// first of them and is paused again, and they come again once it is free.
    pub(super) fn hold_back_blocked(&mut self, records: Vec<C::Record>) -> Vec<C::Record> {
        if self.backing_off.is_empty() && self.halted.is_empty() && self.held.is_empty() {
            return records;
        }
        let mut held: Vec<(PartitionKey, i64)> = Vec::new();
        let mut keep = Vec::with_capacity(records.len());
        for r in records {
            let tp = tp_of(&r);
            if !self.blocked(&tp) {
                keep.push(r);
            } else if !held.iter().any(|(t, _)| *t == tp) {
                held.push((tp, r.offset()));
            }
        }
        for (tp, first) in held {
            tracing::debug!(
                topic = %tp.0, partition = tp.1, offset = first,
                "records of a partition held back; sought back to the first and paused again"
            );
            self.seek_min(&tp, first);
            self.pause_partitions(std::slice::from_ref(&tp));
        }
        keep
    }

    pub(super) fn pause_partitions(&mut self, tps: &[PartitionKey]) {
        if tps.is_empty() {
            return;
        }
        match self.consumer.pause(tps) {
            Ok(()) => self.emit(ContainerEvent::PartitionsPaused(tps.to_vec())),
            Err(e) => tracing::warn!(error = %e, "pausing partitions failed"),
        }
    }

    pub(super) fn resume_partitions(&mut self, tps: &[PartitionKey]) {
        if tps.is_empty() {
            return;
        }
        match self.consumer.resume(tps) {
            Ok(()) => self.emit(ContainerEvent::PartitionsResumed(tps.to_vec())),
            Err(e) => tracing::warn!(error = %e, "resuming partitions failed"),
        }
    }

    pub(super) fn apply_container_pause(&mut self) {
        let want = *self.pause.borrow();
        if want == self.container_paused {
            return;
        }
        self.container_paused = want;
        let all: Vec<PartitionKey> = self.assignment.iter().cloned().collect();
        if want {
            self.pause_partitions(&all);
        } else {
            let free: Vec<PartitionKey> = all.into_iter().filter(|tp| !self.blocked(tp)).collect();
            self.resume_partitions(&free);
        }
    }

    pub(super) fn resume_due(&mut self) {
        let now = Instant::now();
        let due: Vec<PartitionKey> = self
            .backing_off
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in &due {
            self.backing_off.remove(tp);
        }
        if !self.container_paused {
            // A partition with records held in memory is resumed once they are handled
            // (`redeliver_held`).
            let due: Vec<PartitionKey> = due
                .into_iter()
                .filter(|tp| !self.halted.contains_key(tp) && !self.held.contains_key(tp))
                .collect();
            self.resume_partitions(&due);
        }
    }

    /// Seeks `tp` to `offset` unless the handling of this poll already sought it back as far
    /// or further: the lowest seek wins, so a later seek never moves a partition forward over
    /// records that an earlier one sent back for redelivery.
    /// A failed poll or commit goes to the error handler's `handle_other`; the seeks it asks
    /// for are applied.
    pub(super) fn handle_other(&mut self, e: &Error) -> Disposition {
        let mut failure = OtherFailure::new(e, None);
        let disposition = self.eh.handle_other(&mut failure);
        for (tp, offset) in failure.seeks.take() {
            self.seek_min(&tp, offset);
        }
        disposition
    }

    pub(super) fn seek_min(&mut self, tp: &PartitionKey, offset: i64) {
        if self.rewound.get(tp).is_some_and(|o| *o <= offset) {
            return;
        }
        if let Err(e) = self.consumer.seek(tp, offset) {
            tracing::warn!(error = %e, "seek failed");
        }
        self.rewound.insert(tp.clone(), offset);
    }
}

//! The exactly-once mode: a transaction per poll, and the after-rollback processing.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use super::*;
use crate::listener::consumer::{ContainerConsumer, ListenerRecord, OffsetToCommit};
use crate::listener::error_handler::{Disposition, RecordFailure};
use crate::listener::handler::{BoxFuture, SharedError};
use crate::listener::tracker::{PartitionKey, RecoveryFailureDecision};
use crate::transaction::TransactionalProducer;
use crate::{Error, ErrorKind, Result};
use tracing::Instrument;

/// Why a transaction of the exactly-once mode did not commit.
pub(super) enum TxnFailure<R> {
    /// The handler failed on a record.
    Handler(PartitionKey, R, SharedError),
    /// The handler failed on a batch: the error, per partition the offsets it held
    /// (`from..=to`), and the batch's first record.
    Batch(SharedError, Vec<(PartitionKey, i64, i64)>, R),
    /// Recovering a record inside the transaction failed.
    Recovery(PartitionKey, R, SharedError, SharedError),
    /// The producer refused (begin, send offsets, commit).
    Producer(Error),
}

/// Whether `disposition` recovers the record (or batch) inside the next transaction.
fn recovers_in_transaction(disposition: Disposition) -> bool {
    matches!(
        disposition,
        Disposition::Recover | Disposition::RecoverInTransaction | Disposition::Handled
    )
}

impl<C: ContainerConsumer> Runner<C> {
    /// Exactly-once: one transaction per poll (see [`ContainerBuilder::transactional`]).
    pub(super) async fn handle_in_transaction(&mut self, records: Vec<C::Record>) {
        let Some(producer) = self.txn.as_ref().map(|t| t.producer.clone()) else {
            return;
        };
        let record_handler = matches!(self.handler, Handler::Record(_));
        let groups: Vec<(PartitionKey, Vec<C::Record>)> = group_by_partition(records)
            .into_iter()
            .filter(|(tp, _)| !self.blocked(tp) && self.owns(tp))
            .map(|(tp, mut recs)| {
                // A record that failed in an earlier transaction starts a transaction of its
                // own: the records before it commit without it (as with Spring's transaction per
                // record), so a record that keeps failing never holds them back.
                if let Some(failing) = record_handler.then(|| self.failing_offset(&tp)).flatten() {
                    if recs.first().is_some_and(|r| r.offset() < failing) {
                        recs.retain(|r| r.offset() < failing);
                    }
                }
                (tp, recs)
            })
            .collect();
        // Where each partition goes back to if the transaction does not commit: its first
        // record of this poll, i.e. its committed offset (every earlier poll committed).
        let firsts: Vec<(PartitionKey, i64)> = groups
            .iter()
            .filter_map(|(tp, recs)| recs.first().map(|r| (tp.clone(), r.offset())))
            .collect();
        if firsts.is_empty() {
            return;
        }
        if let Err(e) = producer.begin_transaction() {
            self.transaction_failed(TxnFailure::Producer(e), &firsts)
                .await;
            return;
        }
        let mut next: Vec<(PartitionKey, i64)> = Vec::new();
        let failure = match &self.handler {
            Handler::Record(_) => self.run_records_in_transaction(groups, &mut next).await,
            Handler::Batch(f) => {
                let f = f.clone();
                self.run_batch_in_transaction(f, groups, &mut next).await
            }
        };
        if self.stop_requested() && failure.is_none() && next.is_empty() {
            self.abort_and_rewind(&producer, &firsts).await;
            return;
        }
        if let Some(failure) = failure {
            self.transaction_failed(failure, &firsts).await;
            return;
        }
        let offsets: Vec<(String, i32, i64)> = next
            .iter()
            .map(|(tp, o)| (tp.0.to_string(), tp.1, *o))
            .collect();
        let group = self.consumer.transaction_group_metadata();
        let mut committed = match &group {
            Some(group) => producer.send_offsets_to_transaction(&offsets, group).await,
            None => Ok(()),
        };
        if committed.is_ok() {
            committed = self.commit_transaction(&producer).await;
        }
        let recovered = std::mem::take(&mut self.recovered_in_txn);
        match committed {
            Ok(()) => {
                for (tp, records, error) in recovered {
                    let Some(first) = records.first() else {
                        continue;
                    };
                    let offset = first.offset();
                    for r in &records {
                        self.recovery_committed(r);
                    }
                    self.count_records(&records, |t| &t.recovered);
                    self.events.resumed(&tp);
                    // A batch recovered after a rollback notifies no retry listener (Spring's
                    // `DefaultAfterRollbackProcessor` calls only the recoverer for a batch).
                    if !matches!(self.handler, Handler::Batch(_)) {
                        for l in &self.listeners {
                            l.recovered(first, &error);
                        }
                    }
                    self.tracker.recovered(&tp, offset);
                    self.emit(ContainerEvent::Recovered {
                        partition: tp,
                        offset,
                    });
                }
                // Records not reached (a stop midway) come again from where the commit left;
                // partitions the listener-level handler repositioned stay where it put them.
                let sought = std::mem::take(&mut self.sought_in_txn);
                let done: HashSet<&PartitionKey> = next.iter().map(|(tp, _)| tp).collect();
                for (tp, first) in &firsts {
                    if !done.contains(tp) && !sought.contains(tp) {
                        self.seek_min(tp, *first);
                    }
                }
                for (tp, o) in &next {
                    self.events.passed(tp, *o);
                    self.tracker.succeeded(tp, o - 1);
                    if !sought.contains(tp) {
                        self.seek_min(tp, *o);
                    }
                }
                self.emit(ContainerEvent::Committed(
                    next.into_iter()
                        .map(|(partition, offset)| OffsetToCommit {
                            partition,
                            offset,
                            metadata: String::new(),
                        })
                        .collect(),
                ));
            }
            Err(e) => {
                self.transaction_failed(TxnFailure::Producer(e), &firsts)
                    .await
            }
        }
    }

    /// The offset of `tp`'s record that failed in an earlier transaction and is to be
    /// recovered or retried, if any.
    pub(super) fn failing_offset(&self, tp: &PartitionKey) -> Option<i64> {
        self.pending_recovery
            .get(tp)
            .map(|(from, _, _)| *from)
            .or_else(|| self.tracker.state(tp).map(|s| s.offset))
    }

    /// Commits the open transaction. A commit still pending after `max.block` goes on in the
    /// producer: its outcome is unknown until it ends (an abort now could not undo it), so it is
    /// waited for again until it ends, or until the container stops.
    pub(super) async fn commit_transaction(
        &mut self,
        producer: &TransactionalProducer,
    ) -> Result<()> {
        loop {
            let started = Instant::now();
            let result = producer.commit_transaction().await;
            self.telemetry.committed(started.elapsed(), result.is_ok());
            match result {
                Err(e) if *e.kind() == ErrorKind::Timeout && !self.stop_requested() => {
                    tracing::warn!(error = %e, "the transaction's commit is pending; waiting for it");
                }
                result => return result,
            }
        }
    }

    /// Handles records in the open transaction, recovering those whose attempts are used up.
    /// Fills `next` with each partition's next offset; stops at the first failure.
    pub(super) async fn run_records_in_transaction(
        &mut self,
        groups: Vec<(PartitionKey, Vec<C::Record>)>,
        next: &mut Vec<(PartitionKey, i64)>,
    ) -> Option<TxnFailure<C::Record>> {
        for (tp, recs) in groups {
            let mut last = None;
            for record in recs {
                if self.stop_requested() {
                    break;
                }
                let offset = record.offset();
                let pending = match self.pending_recovery.get(&tp) {
                    Some((from, to, e)) if (*from..=*to).contains(&offset) => Some(e.clone()),
                    _ => None,
                };
                if let Some(error) = pending {
                    let recoverer = self.recoverer.clone();
                    let recovery = recoverer
                        .recover(&record, &error)
                        .instrument(super::recoveries::recovery_span(&tp, offset));
                    match self.in_open_transaction(recovery).await {
                        Ok(()) => {
                            // Done when the transaction commits; if it aborts, the record is
                            // still pending and is recovered again in the next one.
                            self.recovered_in_txn
                                .push((tp.clone(), vec![record.clone()], error));
                            last = Some(offset);
                            continue;
                        }
                        Err(f) => {
                            if let Some(o) = last {
                                next.push((tp.clone(), o + 1));
                            }
                            return Some(TxnFailure::Recovery(tp, record, error, Arc::from(f)));
                        }
                    }
                }
                let failure = self.call_record_handler(&tp, &record).await;
                // A panic fails the transaction (aborted) and stops the container.
                self.panicked = false;
                if std::mem::take(&mut self.sought) && failure.is_none() {
                    // Repositioned by the listener-level handler: not part of this commit.
                    self.sought_in_txn.insert(tp.clone());
                    break;
                }
                match failure {
                    None => {
                        self.telemetry.part(&tp).handled.increment(1);
                        last = Some(offset);
                    }
                    Some(error) => return Some(TxnFailure::Handler(tp, record, error)),
                }
            }
            if let Some(o) = last {
                next.push((tp, o + 1));
            }
        }
        None
    }

    /// Hands the whole poll to the batch handler in the open transaction; a batch whose
    /// attempts are used up is recovered record by record instead.
    pub(super) async fn run_batch_in_transaction(
        &mut self,
        f: BatchFn<C::Record>,
        groups: Vec<(PartitionKey, Vec<C::Record>)>,
        next: &mut Vec<(PartitionKey, i64)>,
    ) -> Option<TxnFailure<C::Record>> {
        let batch: Vec<C::Record> = groups.into_iter().flat_map(|(_, r)| r).collect();
        if batch.is_empty() {
            return None;
        }
        // Records of a batch that used up its attempts (the handler saw each of them fail) are
        // recovered in this transaction, without the handler; the poll's other records are
        // not part of it and come again in the next poll.
        let mut to_recover: Vec<(C::Record, SharedError)> = Vec::new();
        if !self.pending_recovery.is_empty() {
            for r in &batch {
                if let Some((from, to, e)) = self.pending_recovery.get(&tp_of(r)) {
                    if (*from..=*to).contains(&r.offset()) {
                        to_recover.push((r.clone(), e.clone()));
                    }
                }
            }
        }
        if let Some((_, error)) = to_recover.first() {
            let error = error.clone();
            let records: Vec<C::Record> = to_recover.iter().map(|(r, _)| r.clone()).collect();
            let recoverer = self.recoverer.clone();
            for (r, e) in &to_recover {
                if let Err(f) = self.in_open_transaction(recoverer.recover(r, e)).await {
                    let f: SharedError = Arc::from(f);
                    for l in &self.listeners {
                        l.recovery_failed_batch(&records, e, &f);
                    }
                    return Some(TxnFailure::Recovery(tp_of(r), r.clone(), e.clone(), f));
                }
            }
            next.extend(
                offset_bounds(&records, i64::max)
                    .into_iter()
                    .map(|(tp, o)| (tp, o + 1)),
            );
            let tp = tp_of(&records[0]);
            self.recovered_in_txn.push((tp, records, error));
            return None;
        }
        let ack = self.batch_ack(&batch);
        let handled = match call_guarded(super::records::batch_span(batch.len()), || {
            f(batch.clone(), ack)
        })
        .await
        {
            Ok(handled) => handled,
            // The transaction is aborted and the container stops.
            Err(panic) => Err(self.handler_panicked(panic)),
        };
        self.panicked = false;
        if let Err(e) = handled {
            let ranges = offset_bounds(&batch, i64::min)
                .into_iter()
                .zip(offset_bounds(&batch, i64::max))
                .map(|((tp, from), (_, to))| (tp, from, to))
                .collect();
            let first = batch[0].clone();
            return Some(TxnFailure::Batch(Arc::from(e), ranges, first));
        }
        self.count_records(&batch, |t| &t.handled);
        next.extend(
            offset_bounds(&batch, i64::max)
                .into_iter()
                .map(|(tp, o)| (tp, o + 1)),
        );
        None
    }

    /// A recovery that runs with the container's current producer as the open transaction's
    /// (for [`TransactionalDeadLetters`](crate::listener::TransactionalDeadLetters)).
    pub(super) fn in_open_transaction<'a, T: 'a>(
        &self,
        recovery: impl Future<Output = T> + Send + 'a,
    ) -> BoxFuture<'a, T> {
        match self.txn.as_ref() {
            Some(t) => Box::pin(crate::listener::transactional::in_transaction_of(
                t.producer.clone(),
                recovery,
            )),
            None => Box::pin(recovery),
        }
    }

    /// `record`'s recovery committed: it no longer waits in `pending_recovery`.
    pub(super) fn recovery_committed(&mut self, record: &C::Record) {
        let tp = tp_of(record);
        let offset = record.offset();
        let done = match self.pending_recovery.get_mut(&tp) {
            Some((from, to, _)) if (*from..=*to).contains(&offset) => {
                *from = offset + 1;
                *from > *to
            }
            _ => false,
        };
        if done {
            self.pending_recovery.remove(&tp);
        }
    }

    pub(super) async fn abort_and_rewind(
        &mut self,
        producer: &TransactionalProducer,
        firsts: &[(PartitionKey, i64)],
    ) -> Option<Error> {
        let aborted = producer.abort_transaction().await.err();
        // KAFKA-17582: the positions go back to the committed offsets, whatever the abort said.
        for (tp, first) in firsts {
            self.seek_min(tp, *first);
        }
        aborted
    }

    /// The after-rollback processing (Spring's `DefaultAfterRollbackProcessor`).
    pub(super) async fn transaction_failed(
        &mut self,
        failure: TxnFailure<C::Record>,
        firsts: &[(PartitionKey, i64)],
    ) {
        let Some(producer) = self.txn.as_ref().map(|t| t.producer.clone()) else {
            return;
        };
        // Recoveries inside the aborted transaction did not happen; they stay pending.
        self.recovered_in_txn.clear();
        self.sought_in_txn.clear();
        if let TxnFailure::Producer(e) = &failure {
            if e.is_fatal() {
                return self.fenced(e.clone(), firsts).await;
            }
        }
        if let Some(e) = self.abort_and_rewind(&producer, firsts).await {
            if e.is_fatal() {
                return self.fenced(e, firsts).await;
            }
            tracing::warn!(error = %e, "aborting the transaction failed");
        }
        match failure {
            TxnFailure::Producer(e) => {
                tracing::warn!(error = %e, "transaction did not commit; its records come again");
                self.emit(ContainerEvent::CommitFailed(e));
            }
            TxnFailure::Handler(tp, record, error) => {
                let offset = record.offset();
                let (disposition, attempt) =
                    self.decide_after_rollback(&tp, &record, &error, false);
                self.after_rollback(tp, offset, disposition, attempt, error);
            }
            TxnFailure::Batch(error, ranges, first) => {
                let Some((tp, offset)) = firsts.first().cloned() else {
                    return;
                };
                if self.txn.is_none() {
                    return;
                }
                let (disposition, attempt) = self.decide_after_rollback(&tp, &first, &error, true);
                // The whole batch waits: pause every partition of it for the delay.
                if let Disposition::Redeliver { delay } = disposition {
                    if !delay.is_zero() {
                        for (other, _) in firsts.iter().skip(1) {
                            self.backing_off
                                .insert(other.clone(), Instant::now() + delay);
                            self.pause_partitions(std::slice::from_ref(other));
                        }
                    }
                }
                let recover = recovers_in_transaction(disposition);
                self.after_rollback(tp, offset, disposition, attempt, error.clone());
                if recover {
                    // Recovered when they come again: exactly the records the handler saw fail.
                    for (tp, from, to) in ranges {
                        self.pending_recovery.insert(tp, (from, to, error.clone()));
                    }
                }
            }
            TxnFailure::Recovery(tp, record, error, f) => {
                let offset = record.offset();
                for l in &self.listeners {
                    l.recovery_failed(&record, &error, &f);
                }
                let decision = self.tracker.recovery_failed(&tp, offset);
                let failures = self.tracker.recovery_failures(&tp, offset);
                self.emit(ContainerEvent::RecoveryFailed {
                    partition: tp.clone(),
                    offset,
                    failures,
                    error: f,
                });
                let wait = match decision {
                    RecoveryFailureDecision::Halt { failures } => {
                        self.halt_alarm(&tp, offset, failures);
                        self.stop_if_halts_stop();
                        // Keep the pending recovery; try again after the probe interval.
                        self.policy.halt_probe_interval
                    }
                    _ => {
                        // Redeliver to the handler (the back-off starts again): the whole failed
                        // record or batch.
                        self.pending_recovery
                            .retain(|_, (_, _, e)| !Arc::ptr_eq(e, &error));
                        self.policy.recovery_retry_interval
                    }
                };
                self.backing_off.insert(tp.clone(), Instant::now() + wait);
                self.pause_partitions(std::slice::from_ref(&tp));
            }
        }
    }

    /// The error handler's decision about `record`, which failed inside the rolled-back
    /// transaction (`whole_batch`: a batch's first record, for the whole batch), and the
    /// delivery attempt it counted.
    fn decide_after_rollback(
        &mut self,
        tp: &PartitionKey,
        record: &C::Record,
        error: &SharedError,
        whole_batch: bool,
    ) -> (Disposition, u32) {
        let eh = self.eh.clone();
        let mut failure = RecordFailure {
            record,
            partition: tp,
            error,
            attempt: self.tracker.delivery_attempt(tp, record.offset()),
            tracker: &mut self.tracker,
            seeks: Seeks::default(),
            in_transaction: true,
            whole_batch,
        };
        let disposition = if eh.seeks_after_handling() {
            eh.handle_remaining(&mut failure, &[])
        } else {
            eh.handle_one(&mut failure)
        };
        let (attempt, seeks) = (failure.attempt, failure.seeks);
        // The partitions are back at their committed offsets: a seek further back applies.
        for (target, to) in seeks.requests {
            self.seek_min(&target, to);
        }
        (disposition, attempt)
    }

    /// Applies the error handler's decision after a rollback (Spring's
    /// `DefaultAfterRollbackProcessor`).
    pub(super) fn after_rollback(
        &mut self,
        tp: PartitionKey,
        offset: i64,
        disposition: Disposition,
        attempt: u32,
        error: SharedError,
    ) {
        self.emit_failed_delivery(&tp, offset, attempt, &error);
        match disposition {
            Disposition::Redeliver { delay } => {
                if !delay.is_zero() {
                    self.backing_off.insert(tp.clone(), Instant::now() + delay);
                    self.pause_partitions(std::slice::from_ref(&tp));
                }
            }
            Disposition::StopContainer => {
                self.stop_reason.get_or_insert(StopReason::Abnormal);
            }
            Disposition::HaltPartition => {
                // Recovered in a transaction once a probe finds the recoverer working again.
                let failures = self.tracker.recovery_failures(&tp, offset);
                self.halt_alarm(&tp, offset, failures);
                // As on the record and batch paths: a halt stops the container when the
                // handler's policy says so (`RecoveryHalt::StopContainer`).
                self.stop_if_halts_stop();
                self.backing_off
                    .insert(tp.clone(), Instant::now() + self.policy.halt_probe_interval);
                self.pause_partitions(std::slice::from_ref(&tp));
                self.pending_recovery.insert(tp, (offset, offset, error));
            }
            // Recovered (for `Handled`: by the handler's recoverer) when the record comes
            // again, inside that poll's transaction, which commits its offset.
            _ => {
                self.pending_recovery.insert(tp, (offset, offset, error));
            }
        }
    }

    /// The producer is fenced (or otherwise fatally broken): no rollback processing.
    pub(super) async fn fenced(&mut self, error: Error, firsts: &[(PartitionKey, i64)]) {
        tracing::error!(error = %error, "transactional producer fenced");
        for (tp, first) in firsts {
            self.seek_min(tp, *first);
        }
        let (on_fenced, factory, old) = match self.txn.as_ref() {
            Some(t) => (t.on_fenced, t.factory.clone(), t.producer.clone()),
            None => return,
        };
        if on_fenced != OnFenced::Continue {
            self.stop_reason = Some(StopReason::Fenced);
            return;
        }
        let made = match factory {
            Some(factory) => factory().await,
            // Spring's producer factory replaces a fenced producer with a new one of the same
            // settings; so does this.
            None => match old.renewed() {
                Ok(p) => p.init_transactions().await.map(|()| p),
                Err(e) => Err(e),
            },
        };
        match made {
            Ok(p) => {
                if let Some(t) = self.txn.as_mut() {
                    t.producer = Arc::new(p);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "making a new transactional producer failed");
                self.stop_reason = Some(StopReason::Fenced);
            }
        }
    }
}

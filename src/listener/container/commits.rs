//! Acknowledgments and offset commits.

use tokio::time::Instant;

use super::*;
use crate::hash::FastMap;
use crate::listener::consumer::{ContainerConsumer, OffsetToCommit};
use crate::listener::error_handler::Disposition;
use crate::listener::tracker::PartitionKey;

/// The offsets to commit, and the bookkeeping of the commits held back by recoveries in flight.
///
/// Invariants it keeps: a partition's pending offset never moves backwards through
/// [`advance`](Self::advance) (only a retry state, committed at the failed record itself,
/// replaces it); a pending offset above a recovery in flight is never committed (it is capped
/// below the recovery, at most every [`CAPPED_COMMIT_INTERVAL`], and kept pending); a revoked
/// partition leaves no trace ([`forget`](Self::forget)).
pub(super) struct Commits {
    /// Per partition, the next offset to commit (with the retry state as metadata, when it is
    /// the failed record's own offset).
    pending: FastMap<PartitionKey, OffsetToCommit>,
    /// Records acknowledged since the count last started ([`AckMode::Count`]).
    pub(super) count: u32,
    /// A commit was due while a partition's offset was held below a recovery in flight: it
    /// is made when a recovery completes (as Spring would have made it, its recoveries being
    /// synchronous).
    pub(super) owed: bool,
    /// When offsets were last committed.
    pub(super) last: Instant,
    /// Per partition, the offset last committed in place of a higher one held back by a
    /// recovery in flight (not committed again).
    capped: FastMap<PartitionKey, i64>,
    /// When a capped offset was last committed.
    last_capped: Instant,
}

/// What [`Commits::plan`] would commit now.
pub(super) struct CommitPlan {
    /// The offsets to commit.
    pub(super) offsets: Vec<OffsetToCommit>,
    /// Partitions whose offset is held back below a recovery in flight (kept pending).
    held: Vec<PartitionKey>,
    /// The capped offsets committed for some of them.
    capped_now: Vec<(PartitionKey, i64)>,
}

impl CommitPlan {
    /// Whether an offset is held back below a recovery in flight.
    pub(super) fn holds_any(&self) -> bool {
        !self.held.is_empty()
    }
}

impl Commits {
    pub(super) fn new() -> Self {
        Commits {
            pending: FastMap::default(),
            count: 0,
            owed: false,
            last: Instant::now(),
            capped: FastMap::default(),
            last_capped: Instant::now(),
        }
    }

    /// Whether nothing is pending.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Drops everything pending.
    pub(super) fn clear(&mut self) {
        self.pending.clear();
    }

    /// Forgets `tp` (revoked, or sent back to a record whose recovery failed).
    pub(super) fn forget(&mut self, tp: &PartitionKey) {
        self.pending.remove(tp);
        self.capped.remove(tp);
    }

    /// `tp` has no recovery in flight any more: its offset is no longer capped.
    pub(super) fn uncap(&mut self, tp: &PartitionKey) {
        self.capped.remove(tp);
    }

    /// Drops what is pending for `tp` (its retry state is being committed on its own).
    pub(super) fn drop_pending(&mut self, tp: &PartitionKey) {
        self.pending.remove(tp);
    }

    /// Makes `next` the offset to commit for `tp`, unless a higher one is pending already (a
    /// pending offset never moves backwards).
    pub(super) fn advance(&mut self, tp: &PartitionKey, next: i64) {
        match self.pending.get_mut(tp) {
            Some(p) if p.offset >= next => {}
            Some(p) => {
                p.offset = next;
                p.metadata.clear();
            }
            None => {
                self.pending.insert(
                    tp.clone(),
                    OffsetToCommit {
                        partition: tp.clone(),
                        offset: next,
                        metadata: String::new(),
                    },
                );
            }
        }
    }

    /// Keeps `commit` (a retry state at the failed record) pending, to be committed with the
    /// poll's offsets.
    pub(super) fn hold(&mut self, commit: OffsetToCommit) {
        self.pending.insert(commit.partition.clone(), commit);
    }

    /// What to commit now, given the lowest offset with a recovery in flight per partition
    /// (`in_flight_low`). Partitions whose offset is held back below a recovery in flight stay
    /// pending, and a capped offset is committed for some of them meanwhile: at most every
    /// `CAPPED_COMMIT_INTERVAL` (during a flood of recoveries a commit per poll would mostly
    /// repeat a barely moved offset, one round trip each).
    pub(super) fn plan(&self, in_flight_low: impl Fn(&PartitionKey) -> Option<i64>) -> CommitPlan {
        let mut offsets: Vec<OffsetToCommit> = Vec::with_capacity(self.pending.len());
        let mut held: Vec<PartitionKey> = Vec::new();
        let mut capped_now: Vec<(PartitionKey, i64)> = Vec::new();
        let capped_due = self.last_capped.elapsed() >= CAPPED_COMMIT_INTERVAL;
        for o in self.pending.values() {
            match in_flight_low(&o.partition) {
                Some(low) if low < o.offset => {
                    held.push(o.partition.clone());
                    if capped_due && self.capped.get(&o.partition) != Some(&low) {
                        capped_now.push((o.partition.clone(), low));
                        offsets.push(OffsetToCommit {
                            partition: o.partition.clone(),
                            offset: low,
                            metadata: String::new(),
                        });
                    }
                }
                _ => offsets.push(o.clone()),
            }
        }
        CommitPlan {
            offsets,
            held,
            capped_now,
        }
    }

    /// `plan`'s offsets are committed: what is held back stays pending. Returns the offsets.
    pub(super) fn committed(&mut self, plan: CommitPlan) -> Vec<OffsetToCommit> {
        let CommitPlan {
            offsets,
            held,
            capped_now,
        } = plan;
        if held.is_empty() {
            self.pending.clear();
        } else {
            self.pending.retain(|tp, _| held.contains(tp));
        }
        if !capped_now.is_empty() {
            self.capped.extend(capped_now);
            self.last_capped = Instant::now();
        }
        self.owed = !held.is_empty();
        self.last = Instant::now();
        offsets
    }
}

impl<C: ContainerConsumer> Runner<C> {
    pub(super) async fn ack(&mut self, tp: &PartitionKey, offset: i64, source: AckSource) {
        let manual = matches!(self.ack_mode, AckMode::Manual | AckMode::ManualImmediate);
        if manual && source == AckSource::Handler {
            return;
        }
        if manual && self.acked_to.get(tp).is_some_and(|a| *a < offset) {
            // Recovered, but the user has not acknowledged every record before it: committed
            // once the acknowledgments reach it (nothing unacknowledged is committed).
            self.remember_recovered(tp, offset, true);
            return;
        }
        self.advance_pending(tp, offset + 1);
        self.commits.count = self.commits.count.saturating_add(1);
        match self.ack_mode {
            AckMode::Record | AckMode::ManualImmediate => self.commit_pending().await,
            AckMode::Count(n) | AckMode::CountTime(n, _) if self.commits.count >= n => {
                // Only a commit the count made starts the count again (as in Spring, whose
                // other commits do not exist here: of capped offsets, or on idle polls).
                self.commits.count = 0;
                self.commit_pending().await
            }
            _ => {}
        }
    }

    pub(super) async fn drain_manual_acks(&mut self) {
        let acked: Vec<(PartitionKey, i64)> = {
            let mut sink = self.acks.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *sink)
        };
        if acked.is_empty() {
            return;
        }
        for (tp, next) in acked {
            if !self.assignment.contains(&tp) && !self.assignment.is_empty() {
                continue;
            }
            self.advance_pending(&tp, next);
        }
        if self.ack_mode == AckMode::ManualImmediate {
            self.commit_pending().await;
        }
    }

    /// Makes `next`, moved over the recovered records right after it, the offset to commit for
    /// `tp`; a pending offset never moves backwards.
    pub(super) fn advance_pending(&mut self, tp: &PartitionKey, next: i64) {
        let mut next = next;
        if let Some(ahead) = self.recovered_ahead.get(tp) {
            let mut i = ahead.partition_point(|(o, _)| *o < next);
            while ahead.get(i).is_some_and(|(o, _)| *o == next) {
                next += 1;
                i += 1;
            }
        }
        if self.manual_acks() {
            let to = self.acked_to.entry(tp.clone()).or_insert(next);
            *to = (*to).max(next);
        }
        self.commits.advance(tp, next);
    }

    /// Remembers a recovered record in `recovered_ahead` (`past`: the position is past it).
    pub(super) fn remember_recovered(&mut self, tp: &PartitionKey, offset: i64, past: bool) {
        let ahead = self.recovered_ahead.entry(tp.clone()).or_default();
        match ahead.binary_search_by_key(&offset, |(o, _)| *o) {
            Ok(i) => ahead[i].1 = past,
            Err(i) => ahead.insert(i, (offset, past)),
        }
    }

    pub(super) async fn commit_if_due(&mut self) {
        if let AckMode::Time(d) | AckMode::CountTime(_, d) = self.ack_mode {
            if !self.commits.is_empty() && self.commits.last.elapsed() >= d {
                self.commits.count = 0;
                self.commit_pending().await;
            }
        }
    }

    pub(super) async fn commit_pending(&mut self) {
        if self.commits.is_empty() || self.group.is_none() {
            self.commits.clear();
            return;
        }
        let plan = self.commits.plan(|tp| self.recoveries.low(tp));
        if plan.offsets.is_empty() {
            if plan.holds_any() {
                // Made once the recovery completes.
                self.commits.owed = true;
            }
            return;
        }
        let offsets = plan.offsets.clone();
        let started = Instant::now();
        let result = self.consumer.commit(offsets.clone()).await;
        self.telemetry.committed(started.elapsed(), result.is_ok());
        match result {
            Ok(()) => {
                if !self.recovered_ahead.is_empty() {
                    for o in &offsets {
                        if let Some(ahead) = self.recovered_ahead.get_mut(&o.partition) {
                            // Never polled again: seeks go back only to unfinished records,
                            // which are never below a commit.
                            ahead.retain(|(a, past)| *a >= o.offset || !past);
                            if ahead.is_empty() {
                                self.recovered_ahead.remove(&o.partition);
                            }
                        }
                    }
                }
                let offsets = self.commits.committed(plan);
                self.emit(ContainerEvent::Committed(offsets));
            }
            Err(e) => {
                tracing::warn!(error = %e, "commit failed; will retry");
                if let Some(reason) = stop_reason_for(&e) {
                    self.stop_reason = Some(reason);
                } else if self.handle_other(&e) == Disposition::StopContainer {
                    // Stopping: the final commit tries the offsets again.
                    self.stop_reason.get_or_insert(StopReason::Abnormal);
                }
                self.emit(ContainerEvent::CommitFailed(e));
            }
        }
    }

    /// Commits the failed record's offset with its retry state as metadata, so a new owner
    /// continues counting. Everything before it in the partition is handled, so this never
    /// skips a record.
    pub(super) async fn commit_retry_state(&mut self, tp: &PartitionKey, offset: i64) {
        if self.group.is_none() {
            return;
        }
        let Some(state) = self.tracker.state(tp) else {
            return;
        };
        if self.manual_acks() && self.acked_to.get(tp).is_none_or(|a| *a < offset) {
            // The user has not acknowledged every record before the failed one: committing its
            // offset would pass them (the attempt count then stays in memory only).
            return;
        }
        let commit = OffsetToCommit {
            partition: tp.clone(),
            offset,
            metadata: state.encode(),
        };
        if self.in_flight_low(tp).is_some() {
            // An earlier record's recovery is in flight: commit with the poll's offsets, once
            // it has completed.
            self.commits.hold(commit);
            return;
        }
        self.commits.drop_pending(tp);
        let started = Instant::now();
        let result = self.consumer.commit(vec![commit]).await;
        self.telemetry.committed(started.elapsed(), result.is_ok());
        if let Err(e) = result {
            tracing::debug!(error = %e, "committing retry state failed");
        }
    }

    // ---- record handling ----
}

//! Acknowledgments and offset commits.

use tokio::time::Instant;

use super::*;
use crate::listener::consumer::{ContainerConsumer, OffsetToCommit};
use crate::listener::tracker::TopicPartition;

impl<C: ContainerConsumer> Runner<C> {
    pub(super) async fn ack(&mut self, tp: &TopicPartition, offset: i64, source: AckSource) {
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
        self.pending_count = self.pending_count.saturating_add(1);
        match self.ack_mode {
            AckMode::Record | AckMode::ManualImmediate => self.commit_pending().await,
            AckMode::Count(n) | AckMode::CountTime(n, _) if self.pending_count >= n => {
                // Only a commit the count made starts the count again (as in Spring, whose
                // other commits do not exist here: of capped offsets, or on idle polls).
                self.pending_count = 0;
                self.commit_pending().await
            }
            _ => {}
        }
    }

    pub(super) async fn drain_manual_acks(&mut self) {
        let acked: Vec<(TopicPartition, i64)> = {
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
    pub(super) fn advance_pending(&mut self, tp: &TopicPartition, next: i64) {
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

    /// Remembers a recovered record in `recovered_ahead` (`past`: the position is past it).
    pub(super) fn remember_recovered(&mut self, tp: &TopicPartition, offset: i64, past: bool) {
        let ahead = self.recovered_ahead.entry(tp.clone()).or_default();
        match ahead.binary_search_by_key(&offset, |(o, _)| *o) {
            Ok(i) => ahead[i].1 = past,
            Err(i) => ahead.insert(i, (offset, past)),
        }
    }

    pub(super) async fn commit_if_due(&mut self) {
        if let AckMode::Time(d) | AckMode::CountTime(_, d) = self.ack_mode {
            if !self.pending.is_empty() && self.last_commit.elapsed() >= d {
                self.pending_count = 0;
                self.commit_pending().await;
            }
        }
    }

    pub(super) async fn commit_pending(&mut self) {
        if self.pending.is_empty() || self.group.is_none() {
            self.pending.clear();
            return;
        }
        let mut offsets: Vec<OffsetToCommit> = Vec::with_capacity(self.pending.len());
        // Partitions whose offset is held back below a recovery in flight (kept pending), and
        // the capped offsets committed for some of them meanwhile: at most every
        // `CAPPED_COMMIT_INTERVAL` (during a flood of recoveries a commit per poll would mostly
        // repeat a barely moved offset, one round trip each).
        let mut held: Vec<TopicPartition> = Vec::new();
        let mut capped_now: Vec<(TopicPartition, i64)> = Vec::new();
        let capped_due = self.last_capped_commit.elapsed() >= CAPPED_COMMIT_INTERVAL;
        for o in self.pending.values() {
            match self.in_flight_low(&o.partition) {
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
        if offsets.is_empty() {
            if !held.is_empty() {
                // Made once the recovery completes.
                self.commit_owed = true;
            }
            return;
        }
        match self.consumer.commit(offsets.clone()).await {
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
                if held.is_empty() {
                    self.pending.clear();
                } else {
                    self.pending.retain(|tp, _| held.contains(tp));
                }
                if !capped_now.is_empty() {
                    self.capped.extend(capped_now);
                    self.last_capped_commit = Instant::now();
                }
                self.commit_owed = !held.is_empty();
                self.last_commit = Instant::now();
                self.emit(ContainerEvent::Committed(offsets));
            }
            Err(e) => {
                tracing::warn!(error = %e, "commit failed; will retry");
                if let Some(reason) = stop_reason_for(&e) {
                    self.stop_reason = Some(reason);
                }
                self.emit(ContainerEvent::CommitFailed(e));
            }
        }
    }

    /// Commits the failed record's offset with its retry state as metadata, so a new owner
    /// continues counting. Everything before it in the partition is handled, so this never
    /// skips a record.
    pub(super) async fn commit_retry_state(&mut self, tp: &TopicPartition, offset: i64) {
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
            self.pending.insert(tp.clone(), commit);
            return;
        }
        self.pending.remove(tp);
        if let Err(e) = self.consumer.commit(vec![commit]).await {
            tracing::debug!(error = %e, "committing retry state failed");
        }
    }

    // ---- record handling ----
}

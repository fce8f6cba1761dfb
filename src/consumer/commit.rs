//! The order of a consumer's offset commits.
//!
//! Commits run in tasks (auto-commit spawns one per interval, `commit_offsets_async` one per
//! call) and each retries on its own until the API timeout, so without care an older commit
//! whose answer was lost is retried *after* a newer one succeeded and moves the committed
//! offset back. Every commit takes a ticket when its offsets are taken (in call order); they
//! are sent one at a time, and a partition already committed by a later ticket is left out of
//! an earlier one. Offsets are committed in the order they were taken: a position the
//! application moved back with `seek` is committed as asked, but a stale commit never
//! overwrites a newer one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::Result;
use crate::group::{GroupMember, OffsetAndMetadata, TopicPartition};

/// Tickets and the serialised send of a consumer's commits.
#[derive(Debug, Default)]
pub(crate) struct CommitOrder {
    next: AtomicU64,
    /// Per partition, the ticket of the last commit that succeeded; the lock is held while a
    /// commit is in flight, so commits go out one at a time.
    applied: tokio::sync::Mutex<HashMap<TopicPartition, u64>>,
}

impl CommitOrder {
    /// A ticket for offsets taken now: later tickets win.
    pub(crate) fn ticket(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Commits `offsets` through `member`, after the commits in flight, leaving out the
    /// partitions a later ticket has already committed.
    pub(crate) async fn commit(
        &self,
        member: &GroupMember,
        ticket: u64,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        let mut applied = self.applied.lock().await;
        let current: Vec<(TopicPartition, OffsetAndMetadata)> = offsets
            .iter()
            .filter(|(tp, _)| applied.get(tp).is_none_or(|&t| t < ticket))
            .cloned()
            .collect();
        if current.len() < offsets.len() {
            tracing::debug!(
                skipped = offsets.len() - current.len(),
                "partitions left out of a commit: a later commit already committed them"
            );
        }
        if current.is_empty() {
            return Ok(());
        }
        member.commit(&current).await?;
        for (tp, _) in current {
            applied.insert(tp, ticket);
        }
        Ok(())
    }
}

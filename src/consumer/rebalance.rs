//! Group membership as seen from `poll`: joining, the rebalance callbacks and applying an
//! assignment, resumable when a `poll` is cancelled part-way (see `PendingAssignment`).

use super::*;

/// The application of one rebalance's outcome, resumable after a cancelled `poll`.
#[derive(Debug, Clone)]
pub(super) struct PendingAssignment {
    revoked: Vec<TopicPartition>,
    added: Vec<TopicPartition>,
    /// Classic cooperative protocol: revoking asks for the second rebalance.
    second_phase: bool,
    /// Revocation (commit, `on_revoked`, removal) and the addition of `added` are done; only
    /// `on_assigned` and the acknowledgement are left.
    revoked_done: bool,
}

/// Asks for a rejoin when dropped armed: a `poll` cancelled in the middle of a join (which
/// cleared the rejoin flag when it started) must not leave the member believing it joined.
pub(super) struct RejoinOnDrop<'a>(Option<&'a GroupMember>);

impl Drop for RejoinOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            m.request_rejoin();
        }
    }
}

impl Consumer {
    /// Joins or rejoins the group when needed, calling the rebalance listener.
    pub(super) async fn ensure_group(&self) -> Result<()> {
        let Some(member) = &self.core.shared.member else {
            return Ok(());
        };
        let (sub, listener, protocol, joined) = {
            let g = lock(&self.core.group);
            (
                g.subscription.clone(),
                g.listener.clone(),
                g.protocol,
                g.joined_topics.clone(),
            )
        };
        let Some(sub) = sub else { return Ok(()) };
        // An error the consumer protocol's heartbeat reported for the application while the
        // member stays in the group (TOPIC_AUTHORIZATION_FAILED): this poll returns it, as
        // Java's does; the next one goes on.
        if let Some(e) = member.take_reported_error() {
            return Err(e);
        }
        if member.take_lost() {
            // An assignment of the lost generation is void.
            lock(&self.core.group).pending = None;
            let owned = self.assignment();
            self.remove_partitions(&owned);
            if !owned.is_empty() {
                tracing::warn!(partitions = owned.len(), "group membership lost");
                if let Some(l) = &listener {
                    l.on_lost(self, &owned).await;
                }
            }
        }
        let kip848 = member.config().consumer.group_protocol == GroupProtocol::Consumer;
        if kip848 {
            member.set_topic_regex(match &sub {
                Subscription::Pattern(_, raw) => Some(raw.clone()),
                Subscription::Topics(_) => None,
            });
        }
        let topics = match &sub {
            Subscription::Topics(t) => t.clone(),
            // The coordinator resolves the regex.
            Subscription::Pattern(..) if kip848 => Vec::new(),
            Subscription::Pattern(re, _) => {
                // The metadata cache holds only the topics asked for; list them all at the
                // metadata refresh interval so that new matching topics are picked up.
                let max_age = self.core.shared.cluster.config().metadata_max_age;
                let due = lock(&self.core.group)
                    .last_pattern_refresh
                    .is_none_or(|t| t.elapsed() >= max_age);
                if due {
                    match self.core.shared.cluster.refresh().await {
                        Ok(()) => {
                            lock(&self.core.group).last_pattern_refresh = Some(Instant::now())
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "listing topics for a pattern failed")
                        }
                    }
                }
                let meta = self.core.shared.cluster.metadata();
                let mut v: Vec<String> = meta
                    .topics
                    .keys()
                    .filter(|t| re.is_match(t))
                    .cloned()
                    .collect();
                v.sort();
                v
            }
        };
        if topics != joined {
            member.request_rejoin();
        }
        // An outcome a cancelled poll left half applied is finished first.
        if lock(&self.core.group).pending.is_some() {
            self.apply_assignment(member, listener.as_ref()).await;
        }
        if !member.needs_rejoin() {
            return Ok(());
        }
        let started = Instant::now();
        let span = tracing::debug_span!(
            "kafka.rebalance",
            client_id = self.core.shared.telemetry.client_id()
        );
        let rebalanced = self
            .rebalance(member, topics, protocol, listener)
            .instrument(span)
            .await;
        match &rebalanced {
            Ok(()) => self.core.shared.telemetry.rebalanced(started.elapsed()),
            Err(_) => self.core.shared.telemetry.rebalance_failed(),
        }
        rebalanced
    }

    /// One rebalance: revocation (eager), JoinGroup/SyncGroup, the callbacks.
    pub(super) async fn rebalance(
        &self,
        member: &GroupMember,
        topics: Vec<String>,
        protocol: RebalanceProtocol,
        listener: Option<Arc<dyn RebalanceListener>>,
    ) -> Result<()> {
        let kip848 = member.config().consumer.group_protocol == GroupProtocol::Consumer;
        let owned = self.assignment();
        if protocol == RebalanceProtocol::Eager && !owned.is_empty() {
            self.auto_commit_sync(&owned).await;
            if let Some(l) = &listener {
                l.on_revoked(self, &owned).await;
            }
            self.remove_partitions(&owned);
        }
        let owned_now = self.assignment();
        let first_join = member.generation() < 0;
        let mut guard = RejoinOnDrop(Some(member));
        let joined = member.join(&topics, &owned_now).await;
        guard.0 = None;
        let outcome = joined?;
        {
            let mut g = lock(&self.core.group);
            g.protocol = outcome.protocol;
            g.joined_topics = topics;
        }
        let new: BTreeSet<TopicPartition> = outcome.assignment.iter().cloned().collect();
        let old: BTreeSet<TopicPartition> = owned_now.iter().cloned().collect();
        let revoked: Vec<TopicPartition> = old.difference(&new).cloned().collect();
        let added: Vec<TopicPartition> = new.difference(&old).cloned().collect();
        if kip848 && !first_join && revoked.is_empty() && added.is_empty() {
            // The consumer protocol reconciles only changes: nothing moved, no callbacks.
            member.assignment_applied(&owned_now);
            return Ok(());
        }
        lock(&self.core.group).pending = Some(PendingAssignment {
            revoked,
            added,
            second_phase: outcome.protocol == RebalanceProtocol::Cooperative && !kip848,
            revoked_done: false,
        });
        self.apply_assignment(member, listener.as_ref()).await;
        Ok(())
    }

    /// Applies the pending assignment: auto-commit and `on_revoked` for the revoked
    /// partitions, their removal, the added partitions, `on_assigned`, the acknowledgement.
    /// Each step is recorded as it completes, so that a cancelled `poll` resumes where it
    /// stopped (a callback the cancellation interrupted is called again).
    pub(super) async fn apply_assignment(
        &self,
        member: &GroupMember,
        listener: Option<&Arc<dyn RebalanceListener>>,
    ) {
        let Some(pending) = lock(&self.core.group).pending.clone() else {
            return;
        };
        if !pending.revoked_done {
            if !pending.revoked.is_empty() {
                self.auto_commit_sync(&pending.revoked).await;
                if let Some(l) = listener {
                    l.on_revoked(self, &pending.revoked).await;
                }
                self.remove_partitions(&pending.revoked);
                if pending.second_phase {
                    // Second phase: the revoked partitions can now go to their new owners.
                    member.request_rejoin();
                }
            }
            {
                let mut st = lock(&self.core.shared.state);
                for tp in &pending.added {
                    st.parts
                        .entry(tp.clone())
                        .or_insert_with(|| PartState::new(StartOffset::Committed));
                }
            }
            self.core.shared.wake_fetcher.notify_one();
            if let Some(p) = lock(&self.core.group).pending.as_mut() {
                p.revoked_done = true;
            }
        }
        if let Some(l) = listener {
            l.on_assigned(self, &pending.added).await;
        }
        lock(&self.core.group).pending = None;
        // The consumer protocol's acknowledgement: revoked partitions are released only now.
        member.assignment_applied(&self.assignment());
    }
}

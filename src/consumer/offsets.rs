//! Committing offsets: synchronous, asynchronous, per record, and auto-commit.

use super::*;

impl Consumer {
    /// Commits the positions of every assigned partition (the records `poll` returned) and
    /// waits for the answer.
    pub async fn commit(&self) -> Result<()> {
        let offsets = self.positions();
        self.commit_offsets(&offsets).await
    }

    /// Commits exact offsets (the offset of the next record to read, with optional metadata)
    /// and waits for the answer. A commit refused because this member was fenced by a
    /// rebalance fails with `ILLEGAL_GENERATION`, `UNKNOWN_MEMBER_ID`, `FENCED_INSTANCE_ID` or
    /// `REBALANCE_IN_PROGRESS`.
    pub async fn commit_offsets(
        &self,
        offsets: &[(TopicPartition, OffsetAndMetadata)],
    ) -> Result<()> {
        self.check_open()?;
        let member = self.member()?;
        self.check_generation(member)?;
        let ticket = self.core.shared.commits.ticket();
        self.core
            .shared
            .commits
            .commit(member, ticket, offsets)
            .await
    }

    /// Commits `record` as processed: its offset + 1 (the next record to read) with its leader
    /// epoch, for its partition only, and waits for the answer. Other partitions' positions
    /// are not committed. Java's `commitSync(Map.of(tp, new OffsetAndMetadata(offset + 1)))`.
    ///
    /// ```no_run
    /// # async fn demo(consumer: &rekafka::consumer::Consumer) -> rekafka::Result<()> {
    /// use futures_util::StreamExt;
    /// let mut stream = consumer.stream();
    /// while let Some(record) = stream.next().await {
    ///     let record = record?;
    ///     // ... process the record, then:
    ///     consumer.commit_record(&record).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn commit_record(&self, record: &ConsumerRecord) -> Result<()> {
        let mut offset = OffsetAndMetadata::new(record.offset.saturating_add(1));
        offset.leader_epoch = record.leader_epoch;
        self.commit_offsets(&[(record.topic_partition(), offset)])
            .await
    }

    /// A subscribed consumer that is not in an active generation (its membership was lost, or
    /// it never joined) must not commit: the partitions may belong to another member now.
    pub(super) fn check_generation(&self, member: &GroupMember) -> Result<()> {
        if lock(&self.core.group).subscription.is_some() && member.generation() < 0 {
            return Err(Error::broker(crate::KafkaCode::IllegalGeneration).message(
                "commit refused: this consumer is not in an active generation of its group \
                 (membership lost or not joined yet); it rejoins in the next poll",
            ));
        }
        Ok(())
    }

    /// Starts a commit of the current positions and returns at once; the returned handle
    /// resolves to the result (it may be dropped).
    pub fn commit_async(&self) -> Result<tokio::task::JoinHandle<Result<()>>> {
        let offsets = self.positions();
        self.commit_offsets_async(offsets)
    }

    /// [`commit_offsets`](Self::commit_offsets) in the background.
    pub fn commit_offsets_async(
        &self,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> Result<tokio::task::JoinHandle<Result<()>>> {
        self.check_open()?;
        self.check_generation(self.member()?)?;
        let shared = self.core.shared.clone();
        let ticket = shared.commits.ticket();
        let span = tracing::debug_span!("kafka.commit", partitions = offsets.len());
        Ok(self.core.runtime.spawn(
            async move {
                match &shared.member {
                    Some(m) => shared.commits.commit(m, ticket, &offsets).await,
                    None => Ok(()),
                }
            }
            .instrument(span),
        ))
    }

    /// The current positions of the assigned partitions whose position is known.
    pub fn positions(&self) -> Vec<(TopicPartition, OffsetAndMetadata)> {
        lock(&self.core.shared.state)
            .parts
            .iter()
            .filter_map(|(tp, p)| {
                p.position.map(|o| {
                    (
                        tp.clone(),
                        OffsetAndMetadata::new(o).with_leader_epoch(p.last_epoch),
                    )
                })
            })
            .collect()
    }

    pub(super) async fn auto_commit_sync(&self, tps: &[TopicPartition]) {
        if !self.auto_commit_enabled() {
            return;
        }
        let Some(m) = &self.core.shared.member else {
            return;
        };
        if let Err(e) = self.check_generation(m) {
            tracing::debug!(error = %e, "no auto-commit outside an active generation");
            return;
        }
        let set: BTreeSet<&TopicPartition> = tps.iter().collect();
        let ticket = self.core.shared.commits.ticket();
        let offsets: Vec<_> = self
            .positions()
            .into_iter()
            .filter(|(tp, _)| set.contains(tp))
            .collect();
        if let Err(e) = self.core.shared.commits.commit(m, ticket, &offsets).await {
            tracing::warn!(error = %e, "auto-commit before revocation failed");
        }
    }

    pub(super) fn maybe_auto_commit(&self) {
        let AutoCommit::Interval(every) = self.core.shared.config.auto_commit else {
            return;
        };
        if self.core.shared.auto_commit_off.load(Ordering::Acquire) {
            return;
        }
        if self.core.shared.member.is_none() {
            return;
        }
        {
            let mut g = lock(&self.core.group);
            if g.last_auto_commit.elapsed() < every {
                return;
            }
            g.last_auto_commit = Instant::now();
        }
        let ticket = self.core.shared.commits.ticket();
        let offsets = self.positions();
        if offsets.is_empty() {
            return;
        }
        let shared = self.core.shared.clone();
        // In its own task, but ordered after the commits already taken (`commit.rs`): a
        // retried older commit never overwrites this one.
        let span = tracing::debug_span!("kafka.commit", partitions = offsets.len());
        self.core.runtime.spawn(
            async move {
                if let Some(m) = &shared.member
                    && let Err(e) = shared.commits.commit(m, ticket, &offsets).await
                {
                    tracing::warn!(error = %e, "auto-commit failed");
                }
            }
            .instrument(span),
        );
    }
}

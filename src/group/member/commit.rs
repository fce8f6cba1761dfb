//! Offset commits and committed-offset lookups: OffsetCommit (retried, ordered) and
//! OffsetFetch.

use super::*;

impl GroupMember {
    /// Commits `offsets` for the current generation (or, when not a member of a generation,
    /// as a simple commit with generation -1, which the broker accepts only for a group with
    /// no active members). Retries coordinator moves and timeouts until the API timeout.
    ///
    /// A commit refused because this member is no longer in the group's generation fails with
    /// `ILLEGAL_GENERATION`, `UNKNOWN_MEMBER_ID`, `FENCED_INSTANCE_ID` or
    /// `REBALANCE_IN_PROGRESS` (and a rejoin is requested).
    pub async fn commit(&self, offsets: &[(TopicPartition, OffsetAndMetadata)]) -> Result<()> {
        let (generation, member_id) = {
            let st = lock(&self.inner.state);
            if st.stable {
                (st.generation, st.member_id.clone())
            } else {
                (-1, String::new())
            }
        };
        commit_with(self, offsets, generation, &member_id).await
    }

    /// The committed offsets of `partitions` (`None` where nothing is committed), asking the
    /// broker to wait for pending transactional commits (`require_stable`) where it can.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndMetadata>>> {
        let deadline = Instant::now() + self.inner.config.consumer.api_timeout;
        let mut backoff = RetryDelay::new(
            self.inner.config.consumer.retry_backoff,
            Duration::from_secs(1),
        );
        loop {
            let err = match self.committed_once(partitions).await {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            let retriable = is_coordinator_error(&err)
                || matches!(
                    err.kafka_code(),
                    Some(
                        KafkaCode::UnstableOffsetCommit
                            | KafkaCode::CoordinatorLoadInProgress
                            | KafkaCode::StaleMemberEpoch
                    )
                )
                || recovery_for(&err) != Recovery::GiveUp;
            if !retriable || Instant::now() >= deadline {
                return Err(err);
            }
            if is_coordinator_error(&err) {
                self.coordinator_failed().await;
            }
            let wait = backoff.delay();
            backoff.failed();
            tokio::time::sleep(wait).await;
        }
    }

    pub(super) async fn committed_once(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndMetadata>>> {
        let group = self.inner.config.group_id.clone();
        // With the consumer protocol, the member id and epoch go along (OffsetFetch v9+), so
        // that a fenced member does not read offsets as if it still owned the partitions.
        let member_epoch = {
            let st = lock(&self.inner.state);
            (self.inner.config.consumer.group_protocol == GroupProtocol::Consumer
                && st.stable
                && st.generation >= 0)
                .then(|| (st.member_id.clone(), st.generation))
        };
        let asked: Vec<(&str, i32)> = partitions
            .iter()
            .map(|tp| (tp.topic(), tp.partition))
            .collect();
        let query = OffsetFetchQuery {
            group: &group,
            partitions: Some(&asked),
            member: member_epoch
                .as_ref()
                .map(|(id, epoch)| (id.as_str(), *epoch)),
            require_stable: true,
        };
        let (resp, _) = self
            .send(OffsetFetchRequest::default(), |v| {
                Ok((offset_fetch::request(&query, v), v))
            })
            .await?;
        if let Some(e) = offset_fetch::group_error(&resp, &group) {
            return Err(e);
        }
        let mut out = HashMap::new();
        // The first partition error fails the lookup (it is retried as a whole).
        for (topic, p, r) in offset_fetch::partitions(&resp, &group) {
            let v = r?.map(|o| OffsetAndMetadata {
                offset: o.offset,
                leader_epoch: o.leader_epoch,
                metadata: o.metadata.filter(|m| !m.is_empty()),
            });
            out.insert(TopicPartition::new(topic, p), v);
        }
        for tp in partitions {
            out.entry(tp.clone()).or_insert(None);
        }
        Ok(out)
    }
}

pub(super) async fn commit_with(
    member: &GroupMember,
    offsets: &[(TopicPartition, OffsetAndMetadata)],
    generation: i32,
    member_id: &str,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let cfg = &member.inner.config;
    let deadline = Instant::now() + cfg.consumer.api_timeout;
    let mut backoff = RetryDelay::new(cfg.consumer.retry_backoff, Duration::from_secs(1));
    let mut by_topic: BTreeMap<Arc<str>, Vec<&(TopicPartition, OffsetAndMetadata)>> =
        BTreeMap::new();
    for o in offsets {
        by_topic.entry(o.0.topic.clone()).or_default().push(o);
    }
    let kip848 = cfg.consumer.group_protocol == GroupProtocol::Consumer;
    let mut generation = generation;
    let mut member_id = member_id.to_owned();
    loop {
        if kip848 && generation >= 0 {
            // The member epoch moves with every new assignment: each attempt sends the latest
            // (a STALE_MEMBER_EPOCH answer is retried with it, as Java does).
            let st = lock(&member.inner.state);
            if st.stable && st.generation >= 0 {
                generation = st.generation;
                member_id = st.member_id.clone();
            }
        }
        let member_id = member_id.as_str();
        let group = cfg.group_id.clone();
        let instance = cfg.consumer.group_instance_id.clone();
        let result = member
            .send(OffsetCommitRequest::default(), |v| {
                if kip848 && generation >= 0 && v < 9 {
                    return Err(Error::new(ErrorKind::UnsupportedVersion {
                        api: crate::error::Api::of(ApiKey::OffsetCommit),
                    })
                    .message(
                        "the consumer group protocol needs OffsetCommit v9+ (member epochs)",
                    ));
                }
                let mut req = OffsetCommitRequest::default()
                    .with_group_id(GroupId(str_bytes(&group)))
                    .with_generation_id_or_member_epoch(generation)
                    .with_member_id(str_bytes(member_id));
                if v >= 7 {
                    req.group_instance_id = instance.as_deref().map(str_bytes);
                }
                req.topics = by_topic
                    .iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(str_bytes(t)))
                            .with_partitions(
                                ps.iter()
                                    .map(|(tp, o)| {
                                        let mut p = OffsetCommitRequestPartition::default()
                                            .with_partition_index(tp.partition)
                                            .with_committed_offset(o.offset)
                                            .with_committed_metadata(Some(str_bytes(
                                                o.metadata.as_deref().unwrap_or(""),
                                            )));
                                        if v >= 6 {
                                            p.committed_leader_epoch = o.leader_epoch.unwrap_or(-1);
                                        }
                                        p
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                Ok((req, v))
            })
            .await;
        let err = match result {
            Ok((resp, _)) => {
                let mut first = None;
                for t in &resp.topics {
                    for p in &t.partitions {
                        if let Some(e) = code_error(p.error_code, ApiKey::OffsetCommit) {
                            first.get_or_insert(e.on_partition(t.name.as_str(), p.partition_index));
                        }
                    }
                }
                match first {
                    None => return Ok(()),
                    Some(e) => e,
                }
            }
            Err(e) => e,
        };
        match err.kafka_code() {
            Some(
                KafkaCode::IllegalGeneration
                | KafkaCode::UnknownMemberId
                | KafkaCode::FencedInstanceId
                | KafkaCode::FencedMemberEpoch,
            ) => {
                // Only if the member is still in the generation the commit was sent for: a
                // commit that raced with a completed rejoin says nothing about the new one.
                let current = {
                    let st = lock(&member.inner.state);
                    st.stable && st.generation == generation && generation >= 0
                };
                if current {
                    member.mark_lost(
                        !kip848 && err.kafka_code() == Some(KafkaCode::UnknownMemberId),
                        "offset commit refused",
                    );
                }
                return Err(err.message(
                    "commit refused: this member is no longer part of the group's current generation \
                     (its partitions may have been reassigned); rejoin and reprocess",
                ));
            }
            Some(KafkaCode::RebalanceInProgress) => {
                member.request_rejoin();
                return Err(err.message(
                    "commit refused: the group is rebalancing; the offsets may be committed after the rejoin",
                ));
            }
            _ => {}
        }
        let retriable = is_coordinator_error(&err)
            || matches!(
                err.kafka_code(),
                Some(KafkaCode::CoordinatorLoadInProgress | KafkaCode::RequestTimedOut)
            )
            || (kip848 && err.kafka_code() == Some(KafkaCode::StaleMemberEpoch))
            || err.is_retriable();
        if !retriable || Instant::now() >= deadline {
            return Err(err);
        }
        if err.kafka_code() == Some(KafkaCode::StaleMemberEpoch) {
            // The epoch this commit carried is older than the coordinator's: wait for the
            // heartbeat that brings the new one.
            member.inner.heartbeat_now.notify_one();
        }
        if is_coordinator_error(&err) {
            member.coordinator_failed().await;
        }
        let wait = backoff.delay();
        backoff.failed();
        tokio::time::sleep(wait).await;
    }
}

//! The fetching half of [`ShareConsumer`](super::ShareConsumer): the assignment's partitions and
//! their leaders (`sync_assignment`), one ShareFetch per leader's share session per round
//! (`fetch_round`), applying each answer (`apply_fetch`: session epochs, piggy-backed
//! acknowledgements' outcomes, acquired records into the buffer through `take_records`), and
//! resetting a session after an error.

use super::*;

impl Inner {
    /// Reads the membership's assignment into `parts`, resolving topic ids to names.
    pub(super) async fn sync_assignment(&mut self) -> Result<()> {
        let view = self.membership.view();
        if let Some(e) = view.fatal {
            return Err(e);
        }
        let mut names: HashMap<Uuid, Arc<str>> = self
            .parts
            .iter()
            .map(|((id, _), p)| (*id, p.tp.topic.clone()))
            .collect();
        let missing = view.assignment.keys().any(|id| !names.contains_key(id));
        if missing {
            let resolve = |names: &mut HashMap<Uuid, Arc<str>>| {
                let meta = self.cluster.metadata();
                for t in meta.topics.values() {
                    let id = Uuid::from_bytes(t.topic_id);
                    if view.assignment.contains_key(&id) {
                        names
                            .entry(id)
                            .or_insert_with(|| Arc::from(t.name.as_str()));
                    }
                }
            };
            resolve(&mut names);
            if view.assignment.keys().any(|id| !names.contains_key(id)) {
                let _ = self.cluster.refresh_topics(&self.subscription).await;
                resolve(&mut names);
            }
        }
        for p in self.parts.values_mut() {
            p.assigned = false;
        }
        for (id, partitions) in view.assignment.iter() {
            let Some(name) = names.get(id) else {
                continue;
            };
            if !self.subscription.iter().any(|t| **t == **name) {
                // Assigned under an older subscription: the next heartbeat's answer drops it.
                continue;
            }
            for &partition in partitions {
                self.parts
                    .entry((*id, partition))
                    .or_insert_with(|| Part {
                        tp: TopicPartition {
                            topic: name.clone(),
                            partition,
                        },
                        assigned: false,
                        node: None,
                        acquired: BTreeMap::new(),
                        pending: BTreeMap::new(),
                        tel: self.telemetry.partition(name, partition),
                    })
                    .assigned = true;
            }
        }
        let sessions = &self.sessions;
        self.parts.retain(|k, p| {
            p.assigned
                || !p.acquired.is_empty()
                || !p.pending.is_empty()
                || sessions.values().any(|s| s.partitions.contains(k))
        });
        Ok(())
    }

    /// One ShareFetch to each broker that leads an assigned partition or holds a session.
    /// Returns whether some broker failed.
    pub(super) async fn fetch_round(&mut self, max_wait: Duration) -> Result<bool> {
        self.sync_assignment().await?;
        if !self.stale.is_empty() {
            let topics: Vec<String> = self.stale.iter().map(|t| t.to_string()).collect();
            self.stale.clear();
            let _ = self.cluster.refresh_topics(&topics).await;
        }
        // Where each assigned partition is fetched from.
        let mut desired: BTreeMap<i32, BTreeSet<PartKey>> = BTreeMap::new();
        let keys: Vec<PartKey> = self
            .parts
            .iter()
            .filter(|(_, p)| p.assigned)
            .map(|(k, _)| *k)
            .collect();
        let mut failed = false;
        for key in keys {
            let Some(part) = self.parts.get(&key) else {
                continue;
            };
            let (topic, partition) = (part.tp.topic.clone(), part.tp.partition);
            let leader = match self.cluster.known_leader(&topic, partition) {
                Some(l) => Some(l),
                None => self
                    .cluster
                    .leader_for(&topic, partition)
                    .await
                    .ok()
                    .map(|l| l.0),
            };
            match leader {
                Some(l) => {
                    desired.entry(l).or_default().insert(key);
                }
                None => failed = true,
            }
        }
        // Acknowledgements that cannot ride on a fetch: their partition is no longer fetched
        // from the broker that delivered the records.
        let loose: Vec<PartKey> = self
            .parts
            .iter()
            .filter(|(k, p)| {
                !p.pending.is_empty()
                    && !p
                        .node
                        .is_some_and(|n| desired.get(&n).is_some_and(|d| d.contains(k)))
            })
            .map(|(k, _)| *k)
            .collect();
        if !loose.is_empty() {
            let outcomes = self.send_acknowledgements_for(&loose, false, None).await;
            self.deliver(outcomes, true);
        }

        let group_id = GroupId(StrBytes::from_string(self.config.group_id.clone()));
        let member_id = StrBytes::from_string(self.membership.member_id());
        let nodes: BTreeSet<i32> = desired
            .keys()
            .copied()
            .chain(
                self.sessions
                    .iter()
                    .filter(|(_, s)| s.epoch > 0 && !s.partitions.is_empty())
                    .map(|(n, _)| *n),
            )
            .collect();
        let mut set: JoinSet<FetchDone> = JoinSet::new();
        let max_records = self.config.max_poll_records.min(i32::MAX as usize) as i32;
        for node in nodes {
            let want = desired.remove(&node).unwrap_or_default();
            let session = self.sessions.entry(node).or_default();
            let epoch = session.epoch;
            let (added, forgotten): (BTreeSet<PartKey>, BTreeSet<PartKey>) = if epoch == 0 {
                (want.clone(), BTreeSet::new())
            } else {
                (
                    want.difference(&session.partitions).copied().collect(),
                    session.partitions.difference(&want).copied().collect(),
                )
            };
            if want.is_empty() && (epoch == 0 || forgotten.is_empty()) {
                continue;
            }
            // The partitions listed: new ones, and (open session only) those with
            // acknowledgements to carry.
            let mut listed: BTreeMap<PartKey, Vec<(i64, i64, i8)>> = BTreeMap::new();
            for k in &added {
                listed.insert(*k, Vec::new());
            }
            let mut acks: SentAcks = Vec::new();
            if epoch > 0 {
                for k in &want {
                    let Some(p) = self.parts.get_mut(k) else {
                        continue;
                    };
                    if p.pending.is_empty() || p.node != Some(node) {
                        continue;
                    }
                    let pending = std::mem::take(&mut p.pending);
                    listed.insert(*k, ack_batches(&pending));
                    let offsets = pending
                        .iter()
                        .filter(|(_, t)| **t != GAP)
                        .map(|(o, _)| *o)
                        .collect();
                    acks.push((*k, p.tp.clone(), offsets));
                }
            }
            let mut topics: BTreeMap<Uuid, Vec<share_fetch_request::FetchPartition>> =
                BTreeMap::new();
            for ((id, partition), batches) in listed {
                topics.entry(id).or_default().push(
                    share_fetch_request::FetchPartition::default()
                        .with_partition_index(partition)
                        .with_partition_max_bytes(self.config.max_partition_fetch_bytes)
                        .with_acknowledgement_batches(
                            batches
                                .into_iter()
                                .map(|(first, last, ty)| {
                                    share_fetch_request::AcknowledgementBatch::default()
                                        .with_first_offset(first)
                                        .with_last_offset(last)
                                        .with_acknowledge_types(vec![ty])
                                })
                                .collect(),
                        ),
                );
            }
            let mut forgotten_topics: BTreeMap<Uuid, Vec<i32>> = BTreeMap::new();
            for (id, partition) in &forgotten {
                forgotten_topics.entry(*id).or_default().push(*partition);
            }
            let wait = if want.is_empty() {
                Duration::ZERO
            } else {
                max_wait
            };
            let req = ShareFetchRequest::default()
                .with_group_id(Some(group_id.clone()))
                .with_member_id(Some(member_id.clone()))
                .with_share_session_epoch(epoch)
                .with_max_wait_ms(wait.as_millis().min(i32::MAX as u128) as i32)
                .with_min_bytes(self.config.fetch_min_bytes)
                .with_max_bytes(self.config.fetch_max_bytes)
                .with_max_records(max_records)
                .with_batch_size(max_records)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(id, partitions)| {
                            share_fetch_request::FetchTopic::default()
                                .with_topic_id(id)
                                .with_partitions(partitions)
                        })
                        .collect(),
                )
                .with_forgotten_topics_data(
                    forgotten_topics
                        .into_iter()
                        .map(|(id, partitions)| {
                            share_fetch_request::ForgottenTopic::default()
                                .with_topic_id(id)
                                .with_partitions(partitions)
                        })
                        .collect(),
                );
            // The epoch moves on with the request: a later request must not reuse it.
            session.epoch = next_epoch(epoch);
            let cluster = self.cluster.clone();
            let (added_c, forgotten_c) = (if epoch == 0 { want } else { added }, forgotten);
            set.spawn(async move {
                let sent = Instant::now();
                let result = async {
                    let conn = cluster.connection_for_broker(node).await?;
                    conn.send(req).await
                }
                .await;
                FetchDone {
                    node,
                    epoch,
                    added: added_c,
                    forgotten: forgotten_c,
                    acks,
                    result,
                    took: sent.elapsed(),
                }
            });
        }
        let mut fatal = None;
        while let Some(joined) = set.join_next().await {
            let Ok(done) = joined else {
                failed = true;
                continue;
            };
            match self.apply_fetch(done) {
                Ok(ok) => failed |= !ok,
                Err(e) => fatal = fatal.or(Some(e)),
            }
        }
        match fatal {
            Some(e) => Err(e),
            None => Ok(failed),
        }
    }

    /// Applies a ShareFetch answer. `Ok(false)`: the broker failed (retry after a back-off);
    /// `Err`: a fatal error.
    pub(super) fn apply_fetch(&mut self, done: FetchDone) -> Result<bool> {
        let FetchDone {
            node,
            epoch,
            added,
            forgotten,
            acks,
            result,
            took,
        } = done;
        if acks.iter().any(|(_, _, offsets)| !offsets.is_empty()) {
            self.telemetry.acknowledgements_sent(took);
        }
        let fetched_at = Instant::now();
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                if is_transport(&e) {
                    self.cluster.mark_failed(node);
                }
                self.reset_session(node);
                let fatal = matches!(e.kind(), ErrorKind::UnsupportedVersion { .. })
                    || e.kind() == &ErrorKind::Closed;
                let outcomes = failed_outcomes(acks, &e);
                self.deliver(outcomes, true);
                return if fatal { Err(e) } else { Ok(false) };
            }
        };
        if let Some(code) = KafkaCode::from_i16(resp.error_code) {
            let e =
                broker_error(code, resp.error_message.as_ref(), ApiKey::ShareFetch).on_broker(node);
            self.reset_session(node);
            let outcomes = failed_outcomes(acks, &e);
            self.deliver(outcomes, true);
            tracing::debug!(node, error = %e, "share fetch failed");
            return if is_fatal_code(code) {
                Err(e)
            } else {
                Ok(false)
            };
        }
        if resp.acquisition_lock_timeout_ms > 0 {
            self.lock_timeout = Some(Duration::from_millis(
                resp.acquisition_lock_timeout_ms as u64,
            ));
        }
        let session = self.sessions.entry(node).or_default();
        if epoch == 0 {
            session.partitions = added;
        } else {
            session.partitions.extend(added);
            for k in &forgotten {
                session.partitions.remove(k);
            }
        }
        let mut acks: HashMap<PartKey, (TopicPartition, Vec<i64>)> = acks
            .into_iter()
            .map(|(k, tp, offsets)| (k, (tp, offsets)))
            .collect();
        let mut outcomes = Vec::new();
        let mut ok = true;
        for topic in resp.responses {
            for pd in topic.partitions {
                let key = (topic.topic_id, pd.partition_index);
                if let Some((tp, offsets)) = acks.remove(&key) {
                    let result = match KafkaCode::from_i16(pd.acknowledge_error_code) {
                        None => Ok(()),
                        Some(c) => Err(broker_error(
                            c,
                            pd.acknowledge_error_message.as_ref(),
                            ApiKey::ShareFetch,
                        )
                        .on_partition(tp.topic(), tp.partition)),
                    };
                    if !offsets.is_empty() {
                        outcomes.push(AcknowledgementOutcome::new(tp, offsets, result));
                    }
                }
                let Some(part) = self.parts.get_mut(&key) else {
                    continue;
                };
                if let Some(code) = KafkaCode::from_i16(pd.error_code) {
                    tracing::debug!(partition = %part.tp, node, error = code.name(), "share fetch partition error");
                    ok = false;
                    if code.is_metadata_error()
                        || matches!(
                            code,
                            KafkaCode::NotLeaderOrFollower
                                | KafkaCode::FencedLeaderEpoch
                                | KafkaCode::UnknownTopicOrPartition
                                | KafkaCode::UnknownTopicId
                        )
                    {
                        self.stale.insert(part.tp.topic.clone());
                    }
                    continue;
                }
                if pd.acquired_records.is_empty() {
                    continue;
                }
                part.node = Some(node);
                take_records(part, key, &pd, fetched_at, &mut self.buffer);
            }
        }
        // Acknowledgements the answer did not mention.
        for (_, (tp, offsets)) in acks {
            if offsets.is_empty() {
                continue;
            }
            let e = Error::with_message(
                ErrorKind::UnexpectedResponse,
                "the ShareFetch answer did not mention an acknowledged partition",
            )
            .api(ApiKey::ShareFetch)
            .on_partition(tp.topic(), tp.partition);
            outcomes.push(AcknowledgementOutcome::new(tp, offsets, Err(e)));
        }
        self.deliver(outcomes, true);
        Ok(ok)
    }

    pub(super) fn reset_session(&mut self, node: i32) {
        if let Some(s) = self.sessions.get_mut(&node) {
            s.epoch = 0;
            s.partitions.clear();
        }
    }
}

/// Takes the acquired records of a ShareFetch partition into the buffer. Offsets acquired
/// without a record (compacted away, control batches) are acknowledged as gaps; records of a
/// batch that cannot be decoded are released (their delivery count rises, so a record that
/// never decodes ends at the delivery count limit).
pub(super) fn take_records(
    part: &mut Part,
    key: PartKey,
    pd: &kafka_protocol::messages::share_fetch_response::PartitionData,
    fetched_at: Instant,
    buffer: &mut VecDeque<(ShareRecord, PartKey, Instant)>,
) {
    let mut ranges: Vec<(i64, i64, i16)> = pd
        .acquired_records
        .iter()
        .map(|a| (a.first_offset, a.last_offset, a.delivery_count))
        .collect();
    ranges.sort_unstable();
    let range_of = |offset: i64| -> Option<i16> {
        let i = ranges.partition_point(|r| r.1 < offset);
        ranges
            .get(i)
            .filter(|r| r.0 <= offset && offset <= r.1)
            .map(|r| r.2)
    };
    let mut found: BTreeSet<i64> = BTreeSet::new();
    let mut corrupt = false;
    if let Some(bytes) = pd.records.clone() {
        'batches: for batch in RecordBatches::new(bytes) {
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(partition = %part.tp, error = %e, "corrupt share fetch batch");
                    corrupt = true;
                    break;
                }
            };
            if batch.is_control() || batch.last_offset() < ranges.first().map_or(i64::MAX, |r| r.0)
            {
                continue;
            }
            let timestamp_type = batch.timestamp_type();
            let leader_epoch = Some(batch.partition_leader_epoch()).filter(|e| *e >= 0);
            let records = match batch.records() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(partition = %part.tp, error = %e, "undecodable share fetch batch");
                    corrupt = true;
                    continue;
                }
            };
            for r in records {
                let r = match r {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::error!(partition = %part.tp, error = %e, "corrupt record in share fetch");
                        corrupt = true;
                        continue 'batches;
                    }
                };
                let Some(dc) = range_of(r.offset) else {
                    continue;
                };
                if part.acquired.contains_key(&r.offset) || !found.insert(r.offset) {
                    continue;
                }
                part.acquired.insert(r.offset, Acq::Buffered);
                buffer.push_back((
                    ShareRecord {
                        record: ConsumerRecord {
                            topic: part.tp.topic.clone(),
                            partition: part.tp.partition,
                            offset: r.offset,
                            timestamp: r.timestamp,
                            timestamp_type,
                            key: r.key,
                            value: r.value,
                            headers: r.headers,
                            leader_epoch,
                        },
                        delivery_count: dc.max(0) as u16,
                    },
                    key,
                    fetched_at,
                ));
            }
        }
    }
    let fill = if corrupt {
        AcknowledgeType::Release.wire()
    } else {
        GAP
    };
    for (first, last, _) in ranges {
        for offset in first..=last {
            if !found.contains(&offset) && !part.acquired.contains_key(&offset) {
                part.pending.insert(offset, fill);
            }
        }
    }
}

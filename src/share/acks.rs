//! The acknowledging half of [`ShareConsumer`](super::ShareConsumer): pending acknowledgements
//! grouped into ShareAcknowledge requests per broker (`ack_jobs`), sent and awaited
//! (`send_acknowledgements`) or left to run for `commit_async` (`harvest_async_commits` collects
//! them), and each answer turned into per-partition outcomes (`apply_ack_done`).

use super::*;

/// Consecutive offsets with one acknowledge type become one batch.
pub(super) fn ack_batches(pending: &BTreeMap<i64, i8>) -> Vec<(i64, i64, i8)> {
    let mut out: Vec<(i64, i64, i8)> = Vec::new();
    for (&offset, &ty) in pending {
        match out.last_mut() {
            Some((_, last, t)) if *last + 1 == offset && *t == ty => *last = offset,
            _ => out.push((offset, offset, ty)),
        }
    }
    out
}

impl Inner {
    pub(super) async fn harvest_async_commits(&mut self, wait_all: bool) {
        // A poll waits too: its fetch must not overtake an acknowledgement on the same session.
        let _ = wait_all;
        while let Some(joined) = self.async_commits.join_next().await {
            if let Ok(done) = joined {
                let outcomes = self.apply_ack_done(done);
                self.deliver(outcomes, true);
            }
        }
    }

    /// The partitions holding acknowledgements not sent yet, where
    /// `ack_jobs` and `send_acknowledgements` both start.
    fn partitions_with_pending_acks(&self) -> Vec<PartKey> {
        self.parts
            .iter()
            .filter(|(_, p)| !p.pending.is_empty())
            .map(|(k, _)| *k)
            .collect()
    }

    /// ShareAcknowledge requests for every pending acknowledgement (`close`: also one with the
    /// final epoch to every open session). Acknowledgements whose broker has no open session
    /// fail at once.
    pub(super) fn ack_jobs(
        &mut self,
        close: bool,
    ) -> (
        Vec<(AckJob, ShareAcknowledgeRequest)>,
        Vec<AcknowledgementOutcome>,
    ) {
        let keys = self.partitions_with_pending_acks();
        self.ack_jobs_for(&keys, close)
    }

    pub(super) fn ack_jobs_for(
        &mut self,
        keys: &[PartKey],
        close: bool,
    ) -> (
        Vec<(AckJob, ShareAcknowledgeRequest)>,
        Vec<AcknowledgementOutcome>,
    ) {
        let mut by_node: BTreeMap<i32, Vec<PartKey>> = BTreeMap::new();
        let mut failed = Vec::new();
        for k in keys {
            let Some(p) = self.parts.get_mut(k) else {
                continue;
            };
            if p.pending.is_empty() {
                continue;
            }
            match p.node {
                Some(n) if self.sessions.get(&n).is_some_and(|s| s.epoch > 0) => {
                    by_node.entry(n).or_default().push(*k);
                }
                _ => {
                    let pending = std::mem::take(&mut p.pending);
                    let offsets: Vec<i64> = pending
                        .iter()
                        .filter(|(_, t)| **t != GAP)
                        .map(|(o, _)| *o)
                        .collect();
                    if !offsets.is_empty() {
                        let e = Error::broker(KafkaCode::ShareSessionNotFound)
                            .api(ApiKey::ShareAcknowledge)
                            .on_partition(p.tp.topic(), p.tp.partition)
                            .message("no share session is open with the broker that delivered the records");
                        failed.push(AcknowledgementOutcome::new(p.tp.clone(), offsets, Err(e)));
                    }
                }
            }
        }
        if close {
            for (n, s) in &self.sessions {
                if s.epoch > 0 {
                    by_node.entry(*n).or_default();
                }
            }
        }
        let group_id = GroupId(StrBytes::from_string(self.config.group_id.clone()));
        let member_id = StrBytes::from_string(self.membership.member_id());
        let mut jobs = Vec::new();
        for (node, keys) in by_node {
            let Some(session) = self.sessions.get_mut(&node) else {
                continue;
            };
            let epoch = if close { FINAL_EPOCH } else { session.epoch };
            if close {
                session.epoch = 0;
                session.partitions.clear();
            } else {
                session.epoch = next_epoch(session.epoch);
            }
            let mut topics: BTreeMap<Uuid, Vec<share_acknowledge_request::AcknowledgePartition>> =
                BTreeMap::new();
            let mut acks: SentAcks = Vec::new();
            for k in keys {
                let Some(p) = self.parts.get_mut(&k) else {
                    continue;
                };
                let pending = std::mem::take(&mut p.pending);
                topics.entry(k.0).or_default().push(
                    share_acknowledge_request::AcknowledgePartition::default()
                        .with_partition_index(k.1)
                        .with_acknowledgement_batches(
                            ack_batches(&pending)
                                .into_iter()
                                .map(|(first, last, ty)| {
                                    share_acknowledge_request::AcknowledgementBatch::default()
                                        .with_first_offset(first)
                                        .with_last_offset(last)
                                        .with_acknowledge_types(vec![ty])
                                })
                                .collect(),
                        ),
                );
                let offsets = pending
                    .iter()
                    .filter(|(_, t)| **t != GAP)
                    .map(|(o, _)| *o)
                    .collect();
                acks.push((k, p.tp.clone(), offsets));
            }
            let req = ShareAcknowledgeRequest::default()
                .with_group_id(Some(group_id.clone()))
                .with_member_id(Some(member_id.clone()))
                .with_share_session_epoch(epoch)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(id, partitions)| {
                            share_acknowledge_request::AcknowledgeTopic::default()
                                .with_topic_id(id)
                                .with_partitions(partitions)
                        })
                        .collect(),
                );
            jobs.push((AckJob { node, epoch, acks }, req));
        }
        (jobs, failed)
    }

    pub(super) async fn send_acknowledgements(
        &mut self,
        close: bool,
        deadline: Option<Instant>,
    ) -> Vec<AcknowledgementOutcome> {
        let keys = self.partitions_with_pending_acks();
        self.send_acknowledgements_for(&keys, close, deadline).await
    }

    pub(super) async fn send_acknowledgements_for(
        &mut self,
        keys: &[PartKey],
        close: bool,
        deadline: Option<Instant>,
    ) -> Vec<AcknowledgementOutcome> {
        let (jobs, mut outcomes) = self.ack_jobs_for(keys, close);
        if jobs.is_empty() {
            return outcomes;
        }
        let mut set: JoinSet<AckDone> = JoinSet::new();
        // What each job carried, for a timeout.
        let mut carried: BTreeMap<i32, SentAcks> = BTreeMap::new();
        for (job, req) in jobs {
            carried.insert(job.node, job.acks.clone());
            let cluster = self.cluster.clone();
            set.spawn(async move { run_ack_job(cluster, job, req).await });
        }
        loop {
            let next = match deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), set.join_next()).await {
                    Ok(n) => n,
                    Err(_) => break,
                },
                None => set.join_next().await,
            };
            let Some(joined) = next else {
                return outcomes;
            };
            if let Ok(done) = joined {
                carried.remove(&done.job.node);
                outcomes.extend(self.apply_ack_done(done));
            }
        }
        // Timed out: the rest are in doubt; their sessions start over.
        set.abort_all();
        let e = Error::with_message(ErrorKind::Timeout, "acknowledgements timed out")
            .api(ApiKey::ShareAcknowledge);
        for (node, acks) in carried {
            self.reset_session(node);
            outcomes.extend(failed_outcomes(acks, &e));
        }
        outcomes
    }

    pub(super) fn apply_ack_done(&mut self, done: AckDone) -> Vec<AcknowledgementOutcome> {
        let AckDone { job, result, took } = done;
        self.telemetry.acknowledgements_sent(took);
        let node = job.node;
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                if is_transport(&e) {
                    self.cluster.mark_failed(node);
                }
                if job.epoch != FINAL_EPOCH {
                    self.reset_session(node);
                }
                return failed_outcomes(job.acks, &e.on_broker(node));
            }
        };
        if let Some(code) = KafkaCode::from_i16(resp.error_code) {
            let e = broker_error(code, resp.error_message.as_ref(), ApiKey::ShareAcknowledge)
                .on_broker(node);
            if job.epoch != FINAL_EPOCH {
                self.reset_session(node);
            }
            return failed_outcomes(job.acks, &e);
        }
        let mut codes: HashMap<PartKey, Result<()>> = HashMap::new();
        for topic in resp.responses {
            for pd in topic.partitions {
                let r = match KafkaCode::from_i16(pd.error_code) {
                    None => Ok(()),
                    Some(c) => Err(broker_error(
                        c,
                        pd.error_message.as_ref(),
                        ApiKey::ShareAcknowledge,
                    )),
                };
                codes.insert((topic.topic_id, pd.partition_index), r);
            }
        }
        let mut out = Vec::new();
        for (k, tp, offsets) in job.acks {
            if offsets.is_empty() {
                continue;
            }
            let result = match codes.remove(&k) {
                Some(Ok(())) => Ok(()),
                Some(Err(e)) => Err(e.on_partition(tp.topic(), tp.partition)),
                None => Err(Error::with_message(
                    ErrorKind::UnexpectedResponse,
                    "the ShareAcknowledge answer did not mention an acknowledged partition",
                )
                .api(ApiKey::ShareAcknowledge)
                .on_partition(tp.topic(), tp.partition)),
            };
            if let Err(e) = &result
                && e.kafka_code().is_some_and(|c| c.is_metadata_error())
            {
                self.stale.insert(tp.topic.clone());
            }
            out.push(AcknowledgementOutcome::new(tp, offsets, result));
        }
        out
    }
}

pub(super) fn failed_outcomes(acks: SentAcks, e: &Error) -> Vec<AcknowledgementOutcome> {
    acks.into_iter()
        .filter(|(_, _, offsets)| !offsets.is_empty())
        .map(|(_, tp, offsets)| {
            let err = e.clone().on_partition(tp.topic(), tp.partition);
            AcknowledgementOutcome::new(tp, offsets, Err(err))
        })
        .collect()
}

pub(super) async fn run_ack_job(
    cluster: Cluster,
    job: AckJob,
    req: ShareAcknowledgeRequest,
) -> AckDone {
    let sent = Instant::now();
    let result = async {
        let conn = cluster.connection_for_broker(job.node).await?;
        conn.send(req).await
    }
    .await;
    AckDone {
        job,
        result,
        took: sent.elapsed(),
    }
}

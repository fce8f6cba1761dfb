//! Positions: resolving unknown positions (committed offsets, ListOffsets) and validating
//! them after a leader change (KIP-320, OffsetForLeaderEpoch).

use super::*;

/// Records the leader epoch a partition is about to be fetched under. Returns true when it is
/// newer than the one it was last fetched under and the position has the epoch of a record
/// read: the partition then awaits validation (KIP-320), its read-ahead from the old leader
/// dropped (it is fetched again from the position once validated).
pub(crate) fn observe_leader_epoch(
    tp: &TopicPartition,
    p: &mut PartState,
    epoch: i32,
    buffered: &mut usize,
) -> bool {
    if epoch < 0 {
        return false; // a broker without leader epochs
    }
    let previous = p.leader_epoch;
    if previous.is_some_and(|old| epoch <= old) {
        return false;
    }
    p.leader_epoch = Some(epoch);
    if previous.is_none() || p.last_epoch.is_none() {
        return false;
    }
    tracing::debug!(%tp, ?previous, epoch, position = ?p.position, "new leader epoch; validating the position");
    p.release(buffered);
    p.version = next_version();
    if let Some(pos) = p.position {
        p.fetch_offset = pos;
    }
    p.await_validation = true;
    true
}

pub(crate) struct ValidateItem {
    pub(crate) tp: TopicPartition,
    pub(crate) version: u64,
    pub(crate) position: i64,
    /// The epoch of the last record read (the request's `leader_epoch`).
    pub(crate) offset_epoch: i32,
    /// The current leader epoch (the request's `current_leader_epoch`).
    pub(crate) current_epoch: i32,
}

/// Looks up the leaders of the partitions awaiting validation and sends one
/// OffsetForLeaderEpoch per leader.
pub(crate) async fn start_validations(
    shared: &Arc<Shared>,
    tasks: &mut JoinSet<()>,
    partitions: Vec<(TopicPartition, u64)>,
    next_retry: &mut Option<Instant>,
) {
    let cfg = &shared.config;
    let mut leaders = Vec::new();
    for (tp, version) in partitions {
        match shared.cluster.leader_for(tp.topic(), tp.partition).await {
            Ok((leader, epoch)) => leaders.push((tp, version, leader, epoch)),
            Err(e) => {
                tracing::debug!(%tp, error = %e, "no leader to validate the position with; retrying");
                let at = Instant::now() + cfg.retry_backoff;
                if let Some(p) = lock(&shared.state).parts.get_mut(&tp)
                    && p.version == version
                {
                    p.retry_at = Some(at);
                }
                *next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
            }
        }
    }
    let mut by_broker: BTreeMap<i32, Vec<ValidateItem>> = BTreeMap::new();
    {
        let mut st = lock(&shared.state);
        for (tp, version, leader, epoch) in leaders {
            let Some(p) = st.parts.get_mut(&tp) else {
                continue;
            };
            let (Some(position), Some(offset_epoch)) = (p.position, p.last_epoch) else {
                // Nothing to validate against.
                p.await_validation = false;
                continue;
            };
            if p.version != version || !p.await_validation || p.validating {
                continue;
            }
            p.validating = true;
            if epoch >= 0 {
                p.leader_epoch = Some(p.leader_epoch.map_or(epoch, |e| e.max(epoch)));
            }
            by_broker.entry(leader).or_default().push(ValidateItem {
                tp,
                version,
                position,
                offset_epoch,
                current_epoch: epoch,
            });
        }
    }
    for (broker, items) in by_broker {
        let s = shared.clone();
        tasks.spawn(async move { validate(s, broker, items).await }.in_current_span());
    }
}

/// OffsetForLeaderEpoch to `broker` for `items`; `Ok(None)` when the broker has no version a
/// consumer can use (v3+, as Java requires): the positions are then taken as valid.
pub(crate) async fn offsets_for_leader_epoch(
    shared: &Shared,
    broker: i32,
    items: &[ValidateItem],
) -> Result<Option<HashMap<TopicPartition, EpochEndOffset>>> {
    let (conn, v) =
        leader_connection::<OffsetForLeaderEpochRequest>(&shared.cluster, broker, false).await?;
    let v = match v {
        Ok(v) if v >= 3 => v,
        _ => return Ok(None),
    };
    let mut topics: BTreeMap<Arc<str>, Vec<OffsetForLeaderPartition>> = BTreeMap::new();
    for i in items {
        topics.entry(i.tp.topic.clone()).or_default().push(
            OffsetForLeaderPartition::default()
                .with_partition(i.tp.partition)
                .with_current_leader_epoch(i.current_epoch)
                .with_leader_epoch(i.offset_epoch),
        );
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id((-1).into())
        .with_topics(topic_entries(topics, |name, ps| {
            OffsetForLeaderTopic::default()
                .with_topic(name)
                .with_partitions(ps)
        }));
    let resp = send_to_leader(&conn, broker, req, v).await?;
    let mut out = HashMap::new();
    for t in resp.topics {
        let topic: Arc<str> = Arc::from(t.topic.as_str());
        for p in t.partitions {
            out.insert(
                TopicPartition {
                    topic: topic.clone(),
                    partition: p.partition,
                },
                p,
            );
        }
    }
    Ok(Some(out))
}

/// Validates positions (KIP-320) and applies the answers.
pub(crate) async fn validate(shared: Arc<Shared>, broker: i32, items: Vec<ValidateItem>) {
    let result = offsets_for_leader_epoch(&shared, broker, &items).await;
    let cfg = &shared.config;
    let mut refresh_topics: BTreeSet<String> = BTreeSet::new();
    let mut changed = false;
    {
        let mut guard = lock(&shared.state);
        let st = &mut *guard;
        if let Err(e) = &result {
            tracing::debug!(broker, error = %e, "OffsetForLeaderEpoch failed");
            if e.kind() != &ErrorKind::Closed {
                shared.cluster.mark_failed(broker);
            }
        }
        for i in &items {
            let Some(p) = st.parts.get_mut(&i.tp) else {
                continue;
            };
            if p.version != i.version {
                continue; // a seek or a reset meanwhile
            }
            p.validating = false;
            if p.position != Some(i.position) {
                continue; // validated again from the new position
            }
            let answer = match &result {
                Ok(None) => {
                    p.await_validation = false;
                    changed = true;
                    continue;
                }
                Ok(Some(m)) => m.get(&i.tp).map(|r| {
                    KafkaCode::from_i16(r.error_code).map_or(Ok(r), |c| {
                        Err(Error::broker(c)
                            .api(ApiKey::OffsetForLeaderEpoch)
                            .on_broker(broker)
                            .on_partition(i.tp.topic(), i.tp.partition))
                    })
                }),
                Err(e) => Some(Err(e.clone())),
            };
            match answer {
                Some(Ok(r)) => {
                    changed = true;
                    complete_validation(
                        i,
                        p,
                        r,
                        &mut st.buffered,
                        cfg.auto_offset_reset,
                        &shared.events,
                    );
                }
                Some(Err(e)) if !e.is_retriable() && e.is_fatal() || is_denied(&e) => {
                    p.error = Some(e.on_partition(i.tp.topic(), i.tp.partition));
                    announce_failure(&i.tp, p, &shared.events);
                    changed = true;
                }
                other => {
                    // A stale leader or epoch, a lost connection, a missing answer: refresh the
                    // metadata and try again.
                    if let Some(Err(e)) = other {
                        tracing::debug!(tp = %i.tp, error = %e, "position validation failed; retrying");
                    }
                    refresh_topics.insert(i.tp.topic().to_owned());
                    p.retry_at = Some(Instant::now() + cfg.retry_backoff);
                }
            }
        }
    }
    if changed {
        shared.data_ready.notify_one();
    }
    if !refresh_topics.is_empty() {
        let topics: Vec<String> = refresh_topics.into_iter().collect();
        if let Err(e) = shared.cluster.refresh_topics(&topics).await {
            tracing::debug!(error = %e, "metadata refresh after a validation error failed");
        }
    }
    shared.wake_fetcher.notify_one();
}

/// An authorization failure: no retry fixes it.
pub(crate) fn is_denied(e: &Error) -> bool {
    FetchFailureKind::of(e) == FetchFailureKind::Authorization
}

/// Java's `SubscriptionState.maybeCompleteValidation`: the position stands if the leader's log
/// for the epoch of the last record read reaches it; otherwise the log was truncated below it.
pub(crate) fn complete_validation(
    i: &ValidateItem,
    p: &mut PartState,
    r: &EpochEndOffset,
    buffered: &mut usize,
    reset: OffsetReset,
    events: &tokio::sync::broadcast::Sender<ConsumerEvent>,
) {
    let tp = &i.tp;
    let known = r.end_offset >= 0 && r.leader_epoch >= 0;
    if known && r.end_offset >= i.position {
        p.await_validation = false;
        return;
    }
    let divergent = known.then_some((r.end_offset, r.leader_epoch));
    let start = match (reset, divergent) {
        (OffsetReset::None, _) => {
            tracing::warn!(
                %tp,
                position = i.position,
                position_epoch = i.offset_epoch,
                divergent_offset = ?divergent.map(|d| d.0),
                "log truncation detected below the position and auto.offset.reset is none"
            );
            p.error = Some(
                Error::new(ErrorKind::LogTruncation {
                    divergent_offset: divergent.map(|d| d.0),
                })
                .api(ApiKey::OffsetForLeaderEpoch)
                .on_partition(tp.topic(), tp.partition)
                .message(match divergent {
                    Some((o, e)) => format!(
                        "the log was truncated below position {} (epoch {}): the leader's log for that epoch ends at {o} (epoch {e})",
                        i.position, i.offset_epoch
                    ),
                    None => format!(
                        "the log was truncated below position {}: the leader does not know epoch {}",
                        i.position, i.offset_epoch
                    ),
                }),
            );
            announce_failure(tp, p, events);
            return;
        }
        (_, Some((o, _))) => StartOffset::Offset(o),
        (OffsetReset::Earliest, None) => StartOffset::Beginning,
        (_, None) => StartOffset::End,
    };
    tracing::warn!(
        %tp,
        position = i.position,
        position_epoch = i.offset_epoch,
        divergent_offset = ?divergent.map(|d| d.0),
        ?reset,
        "log truncation detected below the position; repositioning the partition"
    );
    p.reset(start, buffered);
    if let Some((_, e)) = divergent {
        p.last_epoch = Some(e);
    }
    // No receiver is fine.
    let _ = events.send(ConsumerEvent::LogTruncated {
        partition: tp.clone(),
        position: i.position,
        position_epoch: i.offset_epoch,
        divergent_offset: divergent.map(|d| d.0),
        reset,
    });
}

/// Resolves positions: committed offsets first (through the group), then ListOffsets for the
/// rest.
pub(crate) async fn resolve(shared: Arc<Shared>, items: Vec<(TopicPartition, StartOffset, u64)>) {
    let cfg = &shared.config;
    let mut lookups: Vec<(TopicPartition, StartOffset, u64)> = Vec::new();
    let mut results: Vec<(TopicPartition, u64, Result<i64>)> = Vec::new();
    let committed: Vec<TopicPartition> = items
        .iter()
        .filter(|(_, s, _)| *s == StartOffset::Committed)
        .map(|(tp, _, _)| tp.clone())
        .collect();
    let reset_start = match cfg.auto_offset_reset {
        OffsetReset::Earliest => Some(StartOffset::Beginning),
        OffsetReset::Latest => Some(StartOffset::End),
        OffsetReset::None => None,
    };
    let mut committed_map = HashMap::new();
    // The leader epochs of the committed offsets: a position that carries one is validated
    // (KIP-320) before the first fetch.
    let mut committed_epochs: HashMap<TopicPartition, i32> = HashMap::new();
    let mut committed_err = None;
    if !committed.is_empty()
        && let Some(m) = &shared.member
    {
        match m.committed(&committed).await {
            Ok(map) => committed_map = map,
            Err(e) => committed_err = Some(e),
        }
    }
    for (tp, start, version) in items {
        match start {
            StartOffset::Committed => {
                if let Some(e) = &committed_err {
                    results.push((tp, version, Err(e.clone())));
                    continue;
                }
                match committed_map.get(&tp).cloned().flatten() {
                    Some(o) => {
                        if let Some(e) = o.leader_epoch.filter(|e| *e >= 0) {
                            committed_epochs.insert(tp.clone(), e);
                        }
                        results.push((tp, version, Ok(o.offset)))
                    }
                    None => match reset_start {
                        Some(s) => lookups.push((tp, s, version)),
                        None => results.push((
                            tp.clone(),
                            version,
                            Err(Error::broker(KafkaCode::OffsetOutOfRange)
                                .on_partition(tp.topic(), tp.partition)
                                .message("no committed offset and auto.offset.reset is none")),
                        )),
                    },
                }
            }
            StartOffset::Offset(o) => results.push((tp, version, Ok(o))),
            s => lookups.push((tp, s, version)),
        }
    }
    if !lookups.is_empty() {
        results.extend(look_up(&shared.cluster, cfg.isolation_level, lookups).await);
    }
    {
        let mut st = lock(&shared.state);
        for (tp, version, r) in results {
            let Some(p) = st.parts.get_mut(&tp) else {
                continue;
            };
            if p.version != version {
                continue;
            }
            p.resolving = false;
            match r {
                Ok(o) => {
                    p.position = Some(o);
                    p.fetch_offset = o;
                    if let Some(&e) = committed_epochs.get(&tp) {
                        p.last_epoch = Some(e);
                        p.await_validation = true;
                    }
                }
                Err(e) => {
                    if e.kafka_code() == Some(KafkaCode::OffsetOutOfRange)
                        || (!e.is_retriable() && e.is_fatal())
                    {
                        p.error = Some(e);
                        announce_failure(&tp, p, &shared.events);
                    } else {
                        tracing::debug!(%tp, error = %e, "position lookup failed; retrying");
                        p.retry_at = Some(Instant::now() + cfg.retry_backoff);
                    }
                }
            }
        }
    }
    shared.data_ready.notify_one();
    shared.wake_fetcher.notify_one();
}

/// The offsets of `Beginning`, `End`, `Timestamp` and `FromEnd` starts. A timestamp after
/// every record, and the start of `FromEnd` (the end minus n, never before the log start),
/// take a second ListOffsets round.
async fn look_up(
    cluster: &Cluster,
    isolation: IsolationLevel,
    lookups: Vec<(TopicPartition, StartOffset, u64)>,
) -> Vec<(TopicPartition, u64, Result<i64>)> {
    fn answer(
        found: &Result<HashMap<TopicPartition, Result<i64>>>,
        tp: &TopicPartition,
    ) -> Result<i64> {
        match found {
            Ok(m) => m.get(tp).cloned().unwrap_or_else(|| {
                Err(Error::new(ErrorKind::UnexpectedResponse)
                    .api(ApiKey::ListOffsets)
                    .on_partition(tp.topic(), tp.partition))
            }),
            Err(e) => Err(e.clone()),
        }
    }
    let first: Vec<(TopicPartition, i64)> = lookups
        .iter()
        .map(|(tp, s, _)| {
            let ts = match s {
                StartOffset::Beginning => list_offsets::EARLIEST,
                StartOffset::Timestamp(t) => *t,
                _ => list_offsets::LATEST,
            };
            (tp.clone(), ts)
        })
        .collect();
    let found = list_offsets(cluster, isolation, &first).await;
    // Second round: the log start for `FromEnd`, the end for a timestamp no record reaches
    // (ListOffsets answers -1).
    let second: Vec<(TopicPartition, i64)> = lookups
        .iter()
        .filter_map(|(tp, s, _)| match (s, answer(&found, tp)) {
            (StartOffset::FromEnd(_), Ok(_)) => Some((tp.clone(), list_offsets::EARLIEST)),
            (StartOffset::Timestamp(_), Ok(list_offsets::LATEST)) => {
                Some((tp.clone(), list_offsets::LATEST))
            }
            _ => None,
        })
        .collect();
    let again = if second.is_empty() {
        Ok(HashMap::new())
    } else {
        list_offsets(cluster, isolation, &second).await
    };
    lookups
        .into_iter()
        .map(|(tp, s, version)| {
            let r = answer(&found, &tp).and_then(|o| match s {
                StartOffset::FromEnd(n) => {
                    let start = answer(&again, &tp)?;
                    let back = i64::try_from(n).unwrap_or(i64::MAX);
                    Ok(o.saturating_sub(back).max(start))
                }
                StartOffset::Timestamp(_) if o == -1 => answer(&again, &tp),
                _ => Ok(o),
            });
            (tp, version, r)
        })
        .collect()
}

/// ListOffsets for each partition at `timestamp` (-2 earliest, -1 latest), grouped by leader.
pub(crate) async fn list_offsets(
    cluster: &Cluster,
    isolation: IsolationLevel,
    partitions: &[(TopicPartition, i64)],
) -> Result<HashMap<TopicPartition, Result<i64>>> {
    let mut by_broker: BTreeMap<i32, Vec<(TopicPartition, i64, i32)>> = BTreeMap::new();
    let mut out = HashMap::new();
    for (tp, ts) in partitions {
        match cluster.leader_for(tp.topic(), tp.partition).await {
            Ok((leader, epoch)) => {
                by_broker
                    .entry(leader)
                    .or_default()
                    .push((tp.clone(), *ts, epoch))
            }
            Err(e) => {
                out.insert(tp.clone(), Err(e));
            }
        }
    }
    for (broker, items) in by_broker {
        let result: Result<()> = async {
            let (conn, v) = leader_connection::<ListOffsetsRequest>(cluster, broker, false).await?;
            let v = v?;
            let queries = items.iter().map(|(tp, ts, epoch)| OffsetQuery {
                topic: tp.topic(),
                partition: tp.partition,
                timestamp: *ts,
                current_leader_epoch: *epoch,
            });
            let req = list_offsets::request(queries, isolation, v)?;
            let resp = send_to_leader(&conn, broker, req, v).await?;
            for (topic, partition, r) in list_offsets::answers(&resp) {
                // A timestamp no record reaches is -1, as the broker says it.
                let r = r
                    .map(|p| p.offset.unwrap_or(list_offsets::LATEST))
                    .map_err(|e| e.on_broker(broker));
                out.insert(TopicPartition::new(topic, partition), r);
            }
            Ok(())
        }
        .await;
        if let Err(e) = result {
            for (tp, _, _) in items {
                out.entry(tp).or_insert_with(|| Err(e.clone()));
            }
        }
    }
    let refresh: BTreeSet<String> = out
        .iter()
        .filter(|(_, r)| r.as_ref().is_err_and(|e| e.is_retriable()))
        .map(|(tp, _)| tp.topic().to_owned())
        .collect();
    if !refresh.is_empty() {
        let topics: Vec<String> = refresh.into_iter().collect();
        let _ = cluster.refresh_topics(&topics).await;
    }
    Ok(out)
}

//! Planning and sending Fetch requests: which partitions each leader is asked for, the
//! request, and the response's per-partition errors.

use super::*;

pub(crate) struct FetchItem {
    pub(crate) tp: TopicPartition,
    pub(crate) offset: i64,
    pub(crate) epoch: i32,
    pub(crate) version: u64,
}

pub(crate) async fn plan(shared: &Arc<Shared>, tasks: &mut JoinSet<()>) -> Option<Instant> {
    let now = Instant::now();
    let cfg = &shared.config;
    let mut next_retry: Option<Instant> = None;
    let mut to_resolve = Vec::new();
    let mut to_validate = Vec::new();
    let mut fetchable = Vec::new();
    // Partitions held back only by their read-ahead buffer (the application has not polled
    // them yet), and whether some fetchable partition has nothing new as far as we know.
    let mut held = Vec::new();
    let mut any_caught_up = false;
    {
        let mut st = lock(&shared.state);
        let buffered = st.buffered;
        for (tp, p) in st.parts.iter_mut() {
            if let Some(at) = p.retry_at {
                if at > now {
                    next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
                    continue;
                }
                p.retry_at = None;
            }
            if p.error.is_some() || p.in_flight || p.out_of_range.is_some() {
                continue;
            }
            if p.position.is_none() {
                if !p.resolving {
                    p.resolving = true;
                    to_resolve.push((tp.clone(), p.start, p.version));
                }
                continue;
            }
            if p.await_validation {
                if !p.validating {
                    to_validate.push((tp.clone(), p.version));
                }
                continue;
            }
            if p.paused {
                continue;
            }
            if p.bytes >= 2 * cfg.max_partition_fetch_bytes as usize
                || buffered >= cfg.max_buffered_bytes
            {
                held.push(tp.clone());
                continue;
            }
            let caught_up = p.high_watermark.is_some_and(|hw| p.fetch_offset >= hw);
            any_caught_up |= caught_up;
            fetchable.push((tp.clone(), p.fetch_offset, p.version, caught_up));
        }
    }
    if !to_resolve.is_empty() {
        let s = shared.clone();
        tasks.spawn(async move { resolve(s, to_resolve).await }.in_current_span());
    }
    if !to_validate.is_empty() {
        start_validations(shared, tasks, to_validate, &mut next_retry).await;
    }
    if fetchable.is_empty() {
        return next_retry;
    }
    // A broker asked only for partitions it has nothing new for parks the Fetch for
    // `fetch.max.wait.ms`, and it takes no other Fetch of ours meanwhile: a partition of the
    // same broker held back by its buffer could not be fetched again until the wait is over
    // (a stall of up to 500 ms at the defaults, in the middle of a backlog). Such a broker is
    // asked once the held partition can come along (a poll that frees buffer space wakes the
    // planner), as franz-go waits for a broker's buffered response to drain.
    let mut held_by: HashSet<i32> = HashSet::new();
    if any_caught_up {
        for tp in &held {
            if let Ok((leader, _)) = shared.cluster.leader_for(tp.topic(), tp.partition).await {
                held_by.insert(leader);
            }
        }
    }
    let mut idle_only: HashMap<i32, bool> = HashMap::new();
    let mut by_broker: BTreeMap<i32, Vec<FetchItem>> = BTreeMap::new();
    for (tp, offset, version, caught_up) in fetchable {
        match shared.cluster.leader_for(tp.topic(), tp.partition).await {
            Ok((leader, epoch)) => {
                *idle_only.entry(leader).or_insert(true) &= caught_up;
                by_broker.entry(leader).or_default().push(FetchItem {
                    tp,
                    offset,
                    epoch,
                    version,
                })
            }
            Err(e) => {
                tracing::debug!(%tp, error = %e, "no leader for partition; retrying");
                let at = Instant::now() + cfg.retry_backoff;
                let mut st = lock(&shared.state);
                if let Some(p) = st.parts.get_mut(&tp) {
                    if e.kind() == &ErrorKind::Closed || e.is_fatal() {
                        p.error = Some(e);
                        if !shared.closed.load(Ordering::Acquire) {
                            announce_failure(&tp, p, &shared.events);
                        }
                    } else {
                        p.retry_at = Some(at);
                    }
                }
                next_retry = Some(next_retry.map_or(at, |n| n.min(at)));
            }
        }
    }
    let mut st = lock(&shared.state);
    for (broker, items) in by_broker {
        if st.busy_brokers.contains(&broker) {
            continue;
        }
        if held_by.contains(&broker) && idle_only.get(&broker).copied().unwrap_or(false) {
            tracing::trace!(
                broker,
                "fetch deferred: a partition with buffered records comes along once polled"
            );
            continue;
        }
        let mut validate = false;
        let items: Vec<FetchItem> = {
            let st = &mut *st;
            items
                .into_iter()
                .filter(|i| {
                    let Some(p) = st.parts.get_mut(&i.tp) else {
                        return false;
                    };
                    if p.version != i.version || p.in_flight || p.position.is_none() {
                        return false;
                    }
                    // A newer leader epoch: validate the position before fetching from it.
                    if observe_leader_epoch(&i.tp, p, i.epoch, &mut st.buffered) {
                        validate = true;
                        return false;
                    }
                    true
                })
                .collect()
        };
        if validate {
            // The planner runs again at once and sends the OffsetForLeaderEpoch.
            next_retry = Some(Instant::now());
        }
        if items.is_empty() {
            continue;
        }
        for i in &items {
            if let Some(p) = st.parts.get_mut(&i.tp) {
                p.in_flight = true;
            }
        }
        st.busy_brokers.insert(broker);
        let s = shared.clone();
        tasks.spawn(async move { fetch(s, broker, items).await }.in_current_span());
    }
    next_retry
}

pub(crate) async fn fetch(shared: Arc<Shared>, broker: i32, items: Vec<FetchItem>) {
    let started = Instant::now();
    let result = fetch_request(&shared, broker, &items).await;
    shared.telemetry.fetched(started.elapsed());
    let cfg = &shared.config;
    let mut refresh_topics: BTreeSet<String> = BTreeSet::new();
    let mut got_data = false;
    {
        let mut guard = lock(&shared.state);
        let st = &mut *guard;
        st.busy_brokers.remove(&broker);
        match result {
            Err(e) => {
                tracing::debug!(broker, error = %e, "fetch failed");
                if e.kind() != &ErrorKind::Closed {
                    shared.cluster.mark_failed(broker);
                }
                let at = Instant::now() + cfg.retry_backoff;
                let give_up =
                    recovery_for(&e) == Recovery::GiveUp && e.kind() != &ErrorKind::Closed;
                for i in &items {
                    if let Some(p) = st.parts.get_mut(&i.tp) {
                        p.in_flight = false;
                        if give_up {
                            // An error no retry can fix (unsupported version, authorization):
                            // the application hears of it through poll.
                            p.error = Some(e.clone().on_partition(i.tp.topic(), i.tp.partition));
                            got_data = true;
                        } else {
                            p.retry_at = Some(at);
                        }
                    }
                    refresh_topics.insert(i.tp.topic().to_owned());
                }
            }
            Ok(mut resp) => {
                for i in &items {
                    let Some(p) = st.parts.get_mut(&i.tp) else {
                        continue;
                    };
                    p.in_flight = false;
                    let Some(data) = resp.remove(&i.tp) else {
                        continue;
                    };
                    if p.version != i.version || p.fetch_offset != i.offset {
                        continue; // a seek or reset happened meanwhile
                    }
                    if data.high_watermark >= 0 {
                        p.high_watermark = Some(data.high_watermark);
                        p.publish_lag(&shared.telemetry, &i.tp);
                    }
                    if data.last_stable_offset >= 0 {
                        p.last_stable_offset = Some(data.last_stable_offset);
                    }
                    if data.log_start_offset >= 0 {
                        p.log_start_offset = Some(data.log_start_offset);
                    }
                    if let Some(e) = KafkaCode::from_i16(data.error_code).map(|c| {
                        Error::broker(c)
                            .api(ApiKey::Fetch)
                            .on_broker(broker)
                            .on_partition(i.tp.topic(), i.tp.partition)
                    }) {
                        match e.kafka_code() {
                            Some(KafkaCode::OffsetOutOfRange) => {
                                // Applied once the records buffered before `i.offset` (a
                                // read-ahead fetch) are drained: see `settle_out_of_range`.
                                p.out_of_range = Some(OutOfRange {
                                    offset: i.offset,
                                    error: e,
                                    log_start_offset: p.log_start_offset,
                                    high_watermark: (data.high_watermark >= 0)
                                        .then_some(data.high_watermark),
                                });
                                got_data = true;
                            }
                            _ => match recovery_for(&e) {
                                Recovery::GiveUp => p.error = Some(e),
                                Recovery::RetrySame => {
                                    p.retry_at = Some(Instant::now() + cfg.retry_backoff)
                                }
                                // Stale leader (NOT_LEADER, FENCED/UNKNOWN_LEADER_EPOCH, unknown
                                // partition, storage error, …): refresh and re-route.
                                _ => {
                                    tracing::debug!(error = %e, "fetch error; refreshing metadata");
                                    refresh_topics.insert(i.tp.topic().to_owned());
                                    p.retry_at = Some(Instant::now() + cfg.retry_backoff);
                                }
                            },
                        }
                        continue;
                    }
                    let aborted: Vec<(i64, i64)> = data
                        .aborted_transactions
                        .as_deref()
                        .unwrap_or(&[])
                        .iter()
                        .map(|a| (a.first_offset, a.producer_id.0))
                        .collect();
                    match decode_partition(
                        data.records.as_ref(),
                        i.offset,
                        cfg.isolation_level,
                        &aborted,
                    ) {
                        Ok(d) => {
                            if d.end_offset > p.fetch_offset {
                                p.telemetry(&shared.telemetry, &i.tp).fetched_bytes(d.bytes);
                                p.fetch_offset = d.end_offset;
                                p.bytes += d.bytes;
                                st.buffered += d.bytes;
                                p.chunks.push_back(Chunk {
                                    entries: d.entries,
                                    current: None,
                                    end_offset: d.end_offset,
                                    bytes: d.bytes,
                                });
                                got_data = true;
                            }
                        }
                        Err(e) => {
                            p.error = Some(
                                e.api(ApiKey::Fetch)
                                    .on_broker(broker)
                                    .on_partition(i.tp.topic(), i.tp.partition),
                            );
                            got_data = true;
                        }
                    }
                }
            }
        }
        for i in &items {
            if let Some(p) = st.parts.get_mut(&i.tp) {
                settle_out_of_range(
                    &i.tp,
                    p,
                    &mut st.buffered,
                    cfg.auto_offset_reset,
                    &shared.events,
                );
            }
        }
        if !shared.closed.load(Ordering::Acquire) {
            announce_failures(st, &shared.events);
        }
    }
    if got_data {
        shared.data_ready.notify_one();
    }
    if !refresh_topics.is_empty() {
        let topics: Vec<String> = refresh_topics.into_iter().collect();
        if let Err(e) = shared.cluster.refresh_topics(&topics).await {
            tracing::debug!(error = %e, "metadata refresh after fetch error failed");
        }
    }
    shared.wake_fetcher.notify_one();
}

pub(crate) async fn fetch_request(
    shared: &Shared,
    broker: i32,
    items: &[FetchItem],
) -> Result<HashMap<TopicPartition, PartitionData>> {
    let cfg = &shared.config;
    let own = cfg.fetch_connection == crate::consumer::FetchConnection::Own;
    let (conn, v) = leader_connection::<FetchRequest>(&shared.cluster, broker, own).await?;
    let v = v?;
    if v < 4 {
        return Err(Error::new(ErrorKind::UnsupportedVersion {
            api: crate::error::Api::of(ApiKey::Fetch),
        })
        .message("Fetch v4+ (record batches v2) is required")
        .on_broker(broker));
    }
    let mut topics: BTreeMap<Arc<str>, Vec<FetchPartition>> = BTreeMap::new();
    for i in items {
        let mut fp = FetchPartition::default()
            .with_partition(i.tp.partition)
            .with_fetch_offset(i.offset)
            .with_partition_max_bytes(cfg.max_partition_fetch_bytes);
        if v >= 9 {
            fp.current_leader_epoch = i.epoch;
        }
        topics.entry(i.tp.topic.clone()).or_default().push(fp);
    }
    let req = FetchRequest::default()
        .with_max_wait_ms(cfg.fetch_max_wait.as_millis().clamp(1, i32::MAX as u128) as i32)
        .with_min_bytes(cfg.fetch_min_bytes)
        .with_max_bytes(cfg.fetch_max_bytes)
        .with_isolation_level(cfg.isolation_level.wire())
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topic_entries(topics, |name, ps| {
            FetchTopic::default().with_topic(name).with_partitions(ps)
        }));
    let resp = send_to_leader(&conn, broker, req, v).await?;
    if let Some(c) = KafkaCode::from_i16(resp.error_code) {
        return Err(Error::broker(c).api(ApiKey::Fetch).on_broker(broker));
    }
    let mut out = HashMap::new();
    for t in resp.responses {
        let topic: Arc<str> = Arc::from(t.topic.as_str());
        for p in t.partitions {
            out.insert(
                TopicPartition {
                    topic: topic.clone(),
                    partition: p.partition_index,
                },
                p,
            );
        }
    }
    Ok(out)
}

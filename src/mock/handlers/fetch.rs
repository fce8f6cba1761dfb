//! Fetch, OffsetForLeaderEpoch and ListOffsets.

use super::*;

pub(super) struct FetchBuild {
    resp: FetchResponse,
    bytes: usize,
    error: bool,
}

pub(super) fn build_fetch(ctx: &Ctx, req: &FetchRequest, v: i16) -> FetchBuild {
    use fetch_response::*;
    let st = ctx.shared.lock();
    let read_committed = req.isolation_level == 1;
    let max_bytes = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };
    let mut total = 0usize;
    let mut error = false;
    let mut topics = Vec::new();
    for t in &req.topics {
        let name = t.topic.0.to_string();
        let mut parts = Vec::new();
        for fp in &t.partitions {
            let mut pd = PartitionData::default()
                .with_partition_index(fp.partition)
                .with_aborted_transactions(None);
            let injected = ctx
                .shared
                .faults()
                .partition_error(ApiKey::Fetch, &name, fp.partition);
            let part = st.partition(&name, fp.partition);
            let err = match (injected, part) {
                (Some(c), _) => Some(c),
                (None, None) => Some(code(KafkaCode::UnknownTopicOrPartition)),
                (None, Some(p)) if p.leader != ctx.broker => {
                    Some(code(KafkaCode::NotLeaderOrFollower))
                }
                (None, Some(p))
                    if v >= 9
                        && fp.current_leader_epoch >= 0
                        && fp.current_leader_epoch < p.leader_epoch =>
                {
                    Some(code(KafkaCode::FencedLeaderEpoch))
                }
                (None, Some(p))
                    if v >= 9
                        && fp.current_leader_epoch >= 0
                        && fp.current_leader_epoch > p.leader_epoch =>
                {
                    Some(code(KafkaCode::UnknownLeaderEpoch))
                }
                (None, Some(p))
                    if fp.fetch_offset < p.log.log_start()
                        || fp.fetch_offset > p.log.high_watermark() =>
                {
                    Some(code(KafkaCode::OffsetOutOfRange))
                }
                _ => None,
            };
            if let Some(p) = part {
                pd = pd
                    .with_high_watermark(p.log.high_watermark())
                    .with_last_stable_offset(p.log.last_stable_offset());
                if v >= 5 {
                    pd = pd.with_log_start_offset(p.log.log_start());
                }
            }
            if let Some(c) = err {
                error = true;
                if v >= 12
                    && (c == code(KafkaCode::NotLeaderOrFollower)
                        || c == code(KafkaCode::FencedLeaderEpoch))
                    && let Some(p) = part
                {
                    // KIP-951: the new leader, so the client need not refresh metadata first.
                    pd = pd.with_current_leader(
                        LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(p.leader))
                            .with_leader_epoch(p.leader_epoch),
                    );
                }
                pd = pd.with_error_code(c).with_records(Some(Bytes::new()));
                if read_committed {
                    pd = pd.with_aborted_transactions(Some(Vec::new()));
                }
                parts.push(pd);
                continue;
            }
            let Some(p) = part else { continue };
            let upper = if read_committed {
                p.log.last_stable_offset()
            } else {
                p.log.high_watermark()
            };
            let pmax = if fp.partition_max_bytes <= 0 {
                0
            } else {
                fp.partition_max_bytes as usize
            };
            let room = pmax.min(max_bytes.saturating_sub(total));
            let mut out = Vec::new();
            let (n, end) = p
                .log
                .read(fp.fetch_offset, upper, room, total == 0, &mut out);
            total += n;
            let records = match out.len() {
                0 => Bytes::new(),
                1 => out.pop().unwrap_or_default(),
                _ => {
                    let mut b = BytesMut::with_capacity(n);
                    for x in &out {
                        b.extend_from_slice(x);
                    }
                    b.freeze()
                }
            };
            if read_committed {
                let aborted = p
                    .log
                    .aborted_between(fp.fetch_offset, end.max(fp.fetch_offset))
                    .into_iter()
                    .map(|a| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(a.producer_id))
                            .with_first_offset(a.first_offset)
                    })
                    .collect();
                pd = pd.with_aborted_transactions(Some(aborted));
            }
            parts.push(pd.with_records(Some(records)));
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(tn(&name))
                .with_partitions(parts),
        );
    }
    FetchBuild {
        resp: FetchResponse::default().with_responses(topics),
        bytes: total,
        error,
    }
}

impl Api for FetchRequest {
    fn describe(&self, info: &mut RequestInfo) {
        for t in &self.topics {
            for p in &t.partitions {
                info.partitions.push((t.topic.0.to_string(), p.partition));
            }
        }
    }
    fn error_response(&self, _v: i16, c: i16) -> FetchResponse {
        use fetch_response::*;
        let topics = self
            .topics
            .iter()
            .map(|t| {
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_aborted_transactions(None)
                                    .with_error_code(c)
                                    .with_records(Some(Bytes::new()))
                            })
                            .collect(),
                    )
            })
            .collect();
        FetchResponse::default().with_responses(topics)
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<FetchResponse> {
        let deadline = Instant::now() + Duration::from_millis(self.max_wait_ms.max(0) as u64);
        let min_bytes = self.min_bytes.max(0) as usize;
        loop {
            let changed = ctx.shared.data_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let built = build_fetch(ctx, &self, v);
            // As Kafka: answer at once with enough bytes (min_bytes 0: always), an error, or
            // nothing to fetch; otherwise wait for data up to max_wait.
            if built.error
                || built.bytes >= min_bytes
                || self.topics.is_empty()
                || Instant::now() >= deadline
            {
                return Some(built.resp);
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }
}

impl Api for OffsetForLeaderEpochRequest {
    fn describe(&self, info: &mut RequestInfo) {
        for t in &self.topics {
            for p in &t.partitions {
                info.partitions.push((t.topic.0.to_string(), p.partition));
            }
        }
    }
    fn error_response(&self, _v: i16, c: i16) -> OffsetForLeaderEpochResponse {
        use offset_for_leader_epoch_response::*;
        OffsetForLeaderEpochResponse::default().with_topics(
            self.topics
                .iter()
                .map(|t| {
                    OffsetForLeaderTopicResult::default()
                        .with_topic(t.topic.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    EpochEndOffset::default()
                                        .with_partition(p.partition)
                                        .with_error_code(c)
                                        .with_leader_epoch(-1)
                                        .with_end_offset(-1)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, _v: i16) -> Option<OffsetForLeaderEpochResponse> {
        use offset_for_leader_epoch_response::*;
        let st = ctx.shared.lock();
        let topics = self
            .topics
            .iter()
            .map(|t| {
                let name = t.topic.0.to_string();
                let parts = t
                    .partitions
                    .iter()
                    .map(|op| {
                        let r = EpochEndOffset::default()
                            .with_partition(op.partition)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                        let injected = ctx.shared.faults().partition_error(
                            ApiKey::OffsetForLeaderEpoch,
                            &name,
                            op.partition,
                        );
                        let part = st.partition(&name, op.partition);
                        let err = match (injected, part) {
                            (Some(c), _) => Some(c),
                            (None, None) => Some(code(KafkaCode::UnknownTopicOrPartition)),
                            (None, Some(p)) if p.leader != ctx.broker => {
                                Some(code(KafkaCode::NotLeaderOrFollower))
                            }
                            (None, Some(p))
                                if op.current_leader_epoch >= 0
                                    && op.current_leader_epoch < p.leader_epoch =>
                            {
                                Some(code(KafkaCode::FencedLeaderEpoch))
                            }
                            (None, Some(p)) if op.current_leader_epoch > p.leader_epoch => {
                                Some(code(KafkaCode::UnknownLeaderEpoch))
                            }
                            _ => None,
                        };
                        match (part, err) {
                            (Some(p), None) => {
                                let (epoch, end) = p.end_offset_for_epoch(op.leader_epoch);
                                r.with_leader_epoch(epoch).with_end_offset(end)
                            }
                            (_, err) => r.with_error_code(err.unwrap_or(NONE)),
                        }
                    })
                    .collect();
                OffsetForLeaderTopicResult::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(parts)
            })
            .collect();
        Some(OffsetForLeaderEpochResponse::default().with_topics(topics))
    }
}

impl Api for ListOffsetsRequest {
    fn describe(&self, info: &mut RequestInfo) {
        for t in &self.topics {
            for p in &t.partitions {
                info.partitions
                    .push((t.name.0.to_string(), p.partition_index));
            }
        }
    }
    fn error_response(&self, _v: i16, c: i16) -> ListOffsetsResponse {
        use list_offsets_response::*;
        ListOffsetsResponse::default().with_topics(
            self.topics
                .iter()
                .map(|t| {
                    ListOffsetsTopicResponse::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    ListOffsetsPartitionResponse::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(c)
                                        .with_offset(-1)
                                        .with_timestamp(-1)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<ListOffsetsResponse> {
        use list_offsets_response::*;
        let st = ctx.shared.lock();
        let topics = self
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let parts = t
                    .partitions
                    .iter()
                    .map(|lp| {
                        let r = ListOffsetsPartitionResponse::default()
                            .with_partition_index(lp.partition_index);
                        let injected = ctx.shared.faults().partition_error(
                            ApiKey::ListOffsets,
                            &name,
                            lp.partition_index,
                        );
                        let part = st.partition(&name, lp.partition_index);
                        let err = match (injected, part) {
                            (Some(c), _) => Some(c),
                            (None, None) => Some(code(KafkaCode::UnknownTopicOrPartition)),
                            (None, Some(p)) if p.leader != ctx.broker => {
                                Some(code(KafkaCode::NotLeaderOrFollower))
                            }
                            (None, Some(p))
                                if v >= 4
                                    && lp.current_leader_epoch >= 0
                                    && lp.current_leader_epoch < p.leader_epoch =>
                            {
                                Some(code(KafkaCode::FencedLeaderEpoch))
                            }
                            _ => None,
                        };
                        let (Some(p), None) = (part, err) else {
                            return r
                                .with_error_code(err.unwrap_or(NONE))
                                .with_offset(-1)
                                .with_timestamp(-1);
                        };
                        let (offset, ts) = match lp.timestamp {
                            -2 => (p.log.log_start(), -1),
                            -1 => (
                                if self.isolation_level == 1 {
                                    p.log.last_stable_offset()
                                } else {
                                    p.log.high_watermark()
                                },
                                -1,
                            ),
                            -3 => p.log.max_timestamp_offset().unwrap_or((-1, -1)),
                            t if t >= 0 => p.log.offset_for_timestamp(t).unwrap_or((-1, -1)),
                            _ => (-1, -1),
                        };
                        let mut r = r.with_offset(offset).with_timestamp(ts);
                        if v >= 4 {
                            r = r.with_leader_epoch(p.leader_epoch);
                        }
                        r
                    })
                    .collect();
                ListOffsetsTopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(parts)
            })
            .collect();
        Some(ListOffsetsResponse::default().with_topics(topics))
    }
}

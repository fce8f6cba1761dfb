//! The reads of a partition's leader: Fetch (v4–12), OffsetForLeaderEpoch (v2–4) and
//! ListOffsets (v1–8).
//!
//! Every partition first goes through `led_partition` (an injected error, an unknown
//! partition, `NOT_LEADER_OR_FOLLOWER`, KIP-320's `FENCED_LEADER_EPOCH` /
//! `UNKNOWN_LEADER_EPOCH`). Fetch then checks the offset (`OFFSET_OUT_OF_RANGE` outside log
//! start..high watermark), reads up to the high watermark (`read_committed`: the last stable
//! offset, with the aborted transactions of the range) within `max_bytes` and
//! `partition_max_bytes` (the first batch whole even when larger, KIP-74), and parks until
//! `min_bytes` are there or `max_wait_ms` passes, woken by every write (`answer_when`); from
//! v12 an answer `NOT_LEADER_OR_FOLLOWER` / `FENCED_LEADER_EPOCH` names the current leader
//! (KIP-951). OffsetForLeaderEpoch answers from the partition's epoch → start offset cache;
//! ListOffsets answers earliest (−2), latest (−1; `read_committed`: the last stable offset),
//! the max timestamp (−3, KIP-734) and a timestamp's first offset.
//!
//! Not modelled: fetch sessions (KIP-227: every Fetch is a full one, the session id is
//! ignored), forgotten topics, follower fetching and preferred read replicas (KIP-392: a
//! partition has one replica), Fetch's `diverging_epoch` (clients find a truncation through
//! OffsetForLeaderEpoch), quotas and throttling, ListOffsets −4 / −5 (earliest local, tiered:
//! answered offset −1), and the unknown-leader-epoch check of ListOffsets (only the fenced side
//! is checked).

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
    let topics = per_partition(
        &req.topics,
        |t| &t.partitions,
        |t, fp| {
            let mut pd = PartitionData::default()
                .with_partition_index(fp.partition)
                .with_aborted_transactions(None);
            let current_epoch = if v >= 9 { fp.current_leader_epoch } else { -1 };
            let (part, err) = led_partition(
                ctx,
                &st,
                ApiKey::Fetch,
                t.topic.0.as_str(),
                fp.partition,
                current_epoch,
                true,
            );
            let err = err.or_else(|| {
                part.filter(|p| {
                    fp.fetch_offset < p.log.log_start() || fp.fetch_offset > p.log.high_watermark()
                })
                .map(|_| code(KafkaCode::OffsetOutOfRange))
            });
            if let Some(p) = part {
                pd = pd
                    .with_high_watermark(p.log.high_watermark())
                    .with_last_stable_offset(p.log.last_stable_offset());
                if v >= 5 {
                    pd = pd.with_log_start_offset(p.log.log_start());
                }
            }
            let (Some(p), None) = (part, err) else {
                let c = err.unwrap_or(NONE);
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
                return pd;
            };
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
            pd.with_records(Some(records))
        },
        |t, parts| {
            FetchableTopicResponse::default()
                .with_topic(t.topic.clone())
                .with_partitions(parts)
        },
    );
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
        FetchResponse::default().with_responses(per_partition(
            &self.topics,
            |t| &t.partitions,
            |_, p| {
                PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_aborted_transactions(None)
                    .with_error_code(c)
                    .with_records(Some(Bytes::new()))
            },
            |t, parts| {
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(parts)
            },
        ))
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<FetchResponse> {
        let deadline = Instant::now() + Duration::from_millis(self.max_wait_ms.max(0) as u64);
        let min_bytes = self.min_bytes.max(0) as usize;
        let resp = answer_when(&ctx.shared.data_changed, Some(deadline), || {
            let built = build_fetch(ctx, &self, v);
            // As Kafka: answer at once with enough bytes (min_bytes 0: always), an error, or
            // nothing to fetch; otherwise wait for data up to max_wait.
            (built.error
                || built.bytes >= min_bytes
                || self.topics.is_empty()
                || Instant::now() >= deadline)
                .then_some(built.resp)
        })
        .await;
        Some(resp)
    }
}

/// An OffsetForLeaderEpoch partition answer: `(epoch, end offset)` or an error (−1, −1).
fn epoch_end_offset(
    partition: i32,
    answer: Result<(i32, i64), i16>,
) -> offset_for_leader_epoch_response::EpochEndOffset {
    let (code, (epoch, end)) = match answer {
        Ok(found) => (NONE, found),
        Err(c) => (c, (-1, -1)),
    };
    offset_for_leader_epoch_response::EpochEndOffset::default()
        .with_partition(partition)
        .with_error_code(code)
        .with_leader_epoch(epoch)
        .with_end_offset(end)
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
        epoch_answers(self, |_, p| epoch_end_offset(p.partition, Err(c)))
    }
    async fn handle(self, ctx: &Ctx, _v: i16) -> Option<OffsetForLeaderEpochResponse> {
        let st = ctx.shared.lock();
        Some(epoch_answers(&self, |t, op| {
            let (part, err) = led_partition(
                ctx,
                &st,
                ApiKey::OffsetForLeaderEpoch,
                t.topic.0.as_str(),
                op.partition,
                op.current_leader_epoch,
                true,
            );
            let answer = match (part, err) {
                (Some(p), None) => Ok(p.end_offset_for_epoch(op.leader_epoch)),
                (_, err) => Err(err.unwrap_or(NONE)),
            };
            epoch_end_offset(op.partition, answer)
        }))
    }
}

/// The OffsetForLeaderEpoch response with `part` answering each requested partition.
fn epoch_answers(
    req: &OffsetForLeaderEpochRequest,
    part: impl FnMut(
        &offset_for_leader_epoch_request::OffsetForLeaderTopic,
        &offset_for_leader_epoch_request::OffsetForLeaderPartition,
    ) -> offset_for_leader_epoch_response::EpochEndOffset,
) -> OffsetForLeaderEpochResponse {
    OffsetForLeaderEpochResponse::default().with_topics(per_partition(
        &req.topics,
        |t| &t.partitions,
        part,
        |t, parts| {
            offset_for_leader_epoch_response::OffsetForLeaderTopicResult::default()
                .with_topic(t.topic.clone())
                .with_partitions(parts)
        },
    ))
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
        list_offsets_answers(self, |_, p| list_offsets_error(p.partition_index, c))
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<ListOffsetsResponse> {
        let st = ctx.shared.lock();
        Some(list_offsets_answers(&self, |t, lp| {
            let current_epoch = if v >= 4 { lp.current_leader_epoch } else { -1 };
            let (part, err) = led_partition(
                ctx,
                &st,
                ApiKey::ListOffsets,
                t.name.0.as_str(),
                lp.partition_index,
                current_epoch,
                false,
            );
            let (Some(p), None) = (part, err) else {
                return list_offsets_error(lp.partition_index, err.unwrap_or(NONE));
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
            let mut r = list_offsets_response::ListOffsetsPartitionResponse::default()
                .with_partition_index(lp.partition_index)
                .with_offset(offset)
                .with_timestamp(ts);
            if v >= 4 {
                r = r.with_leader_epoch(p.leader_epoch);
            }
            r
        }))
    }
}

/// A ListOffsets partition answer with an error: offset and timestamp −1.
fn list_offsets_error(
    partition: i32,
    c: i16,
) -> list_offsets_response::ListOffsetsPartitionResponse {
    list_offsets_response::ListOffsetsPartitionResponse::default()
        .with_partition_index(partition)
        .with_error_code(c)
        .with_offset(-1)
        .with_timestamp(-1)
}

/// The ListOffsets response with `part` answering each requested partition.
fn list_offsets_answers(
    req: &ListOffsetsRequest,
    part: impl FnMut(
        &list_offsets_request::ListOffsetsTopic,
        &list_offsets_request::ListOffsetsPartition,
    ) -> list_offsets_response::ListOffsetsPartitionResponse,
) -> ListOffsetsResponse {
    ListOffsetsResponse::default().with_topics(per_partition(
        &req.topics,
        |t| &t.partitions,
        part,
        |t, parts| {
            list_offsets_response::ListOffsetsTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(parts)
        },
    ))
}

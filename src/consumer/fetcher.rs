//! The fetcher: per-partition state, the background task that fetches ahead of the
//! application into a bounded buffer, and the decoding of fetch responses.
//!
//! One task (`run`) plans: it resolves positions that are not known yet (committed offsets,
//! ListOffsets) and sends one Fetch per broker for the fetchable partitions that broker leads,
//! each in its own sub-task (at most one fetch in flight per broker). A sub-task decodes the
//! batch headers of the response (CRC, control and aborted batches) without touching the
//! records and appends the batches to the partition's buffer; `poll` walks the records lazily.
//! A partition is fetchable when it is assigned, not paused, has a position, no pending error,
//! less than two partition-fetches of data buffered, and the total buffer is under its cap.
//!
//! KIP-320 (log truncation detection): each partition remembers the leader epoch it was last
//! fetched under and the epoch of the last record the application got (`last_epoch`). When the
//! metadata shows a newer leader epoch (after a leader change; a fetch answered
//! FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH or NOT_LEADER refreshes the metadata), or when the
//! position comes from a committed offset carrying an epoch, the partition awaits validation
//! (Java's `AWAIT_VALIDATION`): its read-ahead from the old leader is dropped and it is not
//! fetched until an OffsetForLeaderEpoch to the new leader (`validate`) confirms the log still
//! reaches the position. A log truncated below it is repositioned by `auto.offset.reset` (to
//! the divergent offset, as Java does) with a `LogTruncated` event, or fails the partition with
//! a `LogTruncation` error under `none`. One validation per leader change and partition.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, FetchRequest, ListOffsetsRequest, OffsetForLeaderEpochRequest, TopicName,
    fetch_request::{FetchPartition, FetchTopic},
    fetch_response::PartitionData,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic},
    offset_for_leader_epoch_response::EpochEndOffset,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::Instrument;

use super::config::{ConsumerConfig, IsolationLevel, OffsetReset};
use super::event::{ConsumerEvent, FetchFailureKind, PartitionFailure};
use super::record::ConsumerRecord;
use crate::cluster::{Cluster, Recovery, recovery_for};
use crate::group::{GroupMember, TopicPartition};
use crate::protocol::record::{ControlType, RecordBatch, RecordBatches, Records};
use crate::telemetry::{ConsumerPartitionTelemetry, ConsumerTelemetry};
use crate::{Error, ErrorKind, KafkaCode, Result};

/// Where a partition starts when its position is not known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartOffset {
    /// The committed offset of the group, else `auto.offset.reset`.
    Committed,
    /// The earliest offset in the log.
    Beginning,
    /// The end of the log.
    End,
    /// This offset.
    Offset(i64),
    /// The first offset whose record timestamp is at or after this time (milliseconds since
    /// the epoch), as ListOffsets finds it; the end of the log when every record is older.
    Timestamp(i64),
    /// This many records before the end of the log (the end as the isolation level sees it),
    /// but never before the log's start: `FromEnd(0)` is the end.
    FromEnd(u64),
}

pub(crate) struct Shared {
    pub(crate) cluster: Cluster,
    pub(crate) config: ConsumerConfig,
    pub(crate) state: Mutex<State>,
    pub(crate) data_ready: Notify,
    pub(crate) wake_fetcher: Notify,
    pub(crate) closed: AtomicBool,
    /// Set by [`Consumer::disable_auto_commit`](super::Consumer::disable_auto_commit): no
    /// auto-commit from then on, whatever `config.auto_commit` says.
    pub(crate) auto_commit_off: AtomicBool,
    pub(crate) member: Option<GroupMember>,
    /// Orders the offset commits (see `commit.rs`).
    pub(crate) commits: super::commit::CommitOrder,
    /// Typed events (`Consumer::events`).
    pub(crate) events: tokio::sync::broadcast::Sender<ConsumerEvent>,
    /// The `metrics` facade's handles (`crate::telemetry`).
    pub(crate) telemetry: ConsumerTelemetry,
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) parts: BTreeMap<TopicPartition, PartState>,
    pub(crate) rr: usize,
    pub(crate) buffered: usize,
    busy_brokers: HashSet<i32>,
}

/// Versions are unique over all partition states, so a fetch answer for a partition that was
/// revoked and assigned again is never mistaken for one of the new assignment.
static NEXT_VERSION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_version() -> u64 {
    NEXT_VERSION.fetch_add(1, Ordering::Relaxed)
}

pub(crate) struct PartState {
    pub(crate) position: Option<i64>,
    pub(crate) start: StartOffset,
    resolving: bool,
    pub(crate) last_epoch: Option<i32>,
    /// The leader epoch the partition was last fetched (or validated) under.
    leader_epoch: Option<i32>,
    /// KIP-320: the position must be validated with OffsetForLeaderEpoch before fetching.
    await_validation: bool,
    /// An OffsetForLeaderEpoch for it is in flight.
    validating: bool,
    fetch_offset: i64,
    pub(crate) paused: bool,
    in_flight: bool,
    version: u64,
    /// Set when the partition is assigned (a new state per assignment), never changed: a
    /// partition revoked and assigned again, even within one poll, has a new one.
    pub(crate) assignment_id: u64,
    chunks: VecDeque<Chunk>,
    bytes: usize,
    pub(crate) error: Option<Error>,
    pub(crate) error_reported: bool,
    /// When the error was announced (logged, `PartitionFailed` sent); `None` until then.
    pub(crate) failed_since: Option<std::time::SystemTime>,
    /// An OFFSET_OUT_OF_RANGE answer to a read-ahead fetch, applied once the records buffered
    /// before it are drained (they were fetched at valid positions). No fetch meanwhile.
    out_of_range: Option<OutOfRange>,
    retry_at: Option<Instant>,
    pub(crate) high_watermark: Option<i64>,
    pub(crate) last_stable_offset: Option<i64>,
    pub(crate) log_start_offset: Option<i64>,
    /// The partition's metric handles, registered on first use.
    telemetry: Option<ConsumerPartitionTelemetry>,
}

impl PartState {
    pub(crate) fn new(start: StartOffset) -> PartState {
        let mut p = PartState {
            position: None,
            start,
            resolving: false,
            last_epoch: None,
            leader_epoch: None,
            await_validation: false,
            validating: false,
            fetch_offset: 0,
            paused: false,
            in_flight: false,
            version: next_version(),
            assignment_id: next_version(),
            chunks: VecDeque::new(),
            bytes: 0,
            error: None,
            error_reported: false,
            failed_since: None,
            out_of_range: None,
            retry_at: None,
            high_watermark: None,
            last_stable_offset: None,
            log_start_offset: None,
            telemetry: None,
        };
        if let StartOffset::Offset(o) = start {
            p.position = Some(o);
            p.fetch_offset = o;
        }
        p
    }

    /// Drops the buffer and anything in flight; the next fetch starts at `offset` (or after
    /// resolving `start`).
    pub(crate) fn reset(&mut self, start: StartOffset, buffered: &mut usize) {
        *buffered = buffered.saturating_sub(self.bytes);
        self.chunks.clear();
        self.bytes = 0;
        self.version = next_version();
        self.error = None;
        self.error_reported = false;
        self.failed_since = None;
        self.out_of_range = None;
        self.retry_at = None;
        self.resolving = false;
        // A position set by a seek or a reset has no epoch of a record read: nothing to
        // validate (Java's `seekUnvalidated` without an epoch).
        self.last_epoch = None;
        self.await_validation = false;
        self.validating = false;
        self.start = start;
        match start {
            StartOffset::Offset(o) => {
                self.position = Some(o);
                self.fetch_offset = o;
            }
            _ => self.position = None,
        }
    }

    /// The partition's metric handles (registered the first time).
    pub(crate) fn telemetry(
        &mut self,
        telemetry: &ConsumerTelemetry,
        tp: &TopicPartition,
    ) -> &ConsumerPartitionTelemetry {
        self.telemetry
            .get_or_insert_with(|| telemetry.partition(tp.topic(), tp.partition))
    }

    /// Publishes the lag: the last high watermark minus the position.
    pub(crate) fn publish_lag(&mut self, telemetry: &ConsumerTelemetry, tp: &TopicPartition) {
        let (hw, position) = (self.high_watermark, self.position);
        self.telemetry(telemetry, tp).lag(hw, position);
    }

    pub(crate) fn release(&mut self, buffered: &mut usize) {
        *buffered = buffered.saturating_sub(self.bytes);
        self.chunks.clear();
        self.bytes = 0;
    }
}

/// A deferred OFFSET_OUT_OF_RANGE answer.
struct OutOfRange {
    offset: i64,
    error: Error,
    log_start_offset: Option<i64>,
    high_watermark: Option<i64>,
}

impl PartState {
    /// The failure, if the partition failed and the failure was announced.
    pub(crate) fn failure(&self, tp: &TopicPartition) -> Option<PartitionFailure> {
        let error = self.error.clone()?;
        Some(PartitionFailure {
            partition: tp.clone(),
            position: self.position,
            kind: FetchFailureKind::of(&error),
            error,
            since: self.failed_since?,
        })
    }
}

/// Announces a partition's new failure once: a WARN log and a `PartitionFailed` event.
pub(crate) fn announce_failure(
    tp: &TopicPartition,
    p: &mut PartState,
    events: &tokio::sync::broadcast::Sender<ConsumerEvent>,
) {
    if p.error.is_none() || p.failed_since.is_some() {
        return;
    }
    p.failed_since = Some(std::time::SystemTime::now());
    if let Some(f) = p.failure(tp) {
        tracing::warn!(
            %tp,
            position = ?f.position,
            kind = ?f.kind,
            error = %f.error,
            "partition failed: it is not fetched until it is sought"
        );
        // No receiver is fine.
        let _ = events.send(ConsumerEvent::PartitionFailed(f));
    }
}

/// [`announce_failure`] for every partition.
pub(crate) fn announce_failures(
    st: &mut State,
    events: &tokio::sync::broadcast::Sender<ConsumerEvent>,
) {
    for (tp, p) in st.parts.iter_mut() {
        announce_failure(tp, p, events);
    }
}

/// Applies a deferred OFFSET_OUT_OF_RANGE once nothing fetched before it is left in the
/// buffer: resets the partition by `reset` (logged, `OffsetReset` event), or with `none`
/// fails it. Returns whether it did.
pub(crate) fn settle_out_of_range(
    tp: &TopicPartition,
    p: &mut PartState,
    buffered: &mut usize,
    reset: OffsetReset,
    events: &tokio::sync::broadcast::Sender<ConsumerEvent>,
) -> bool {
    if p.out_of_range.is_none() || !p.chunks.is_empty() {
        return false;
    }
    let Some(oor) = p.out_of_range.take() else {
        return false;
    };
    let start = match reset {
        OffsetReset::Earliest => StartOffset::Beginning,
        OffsetReset::Latest => StartOffset::End,
        _ => {
            p.error = Some(oor.error.message(format!(
                "offset {} is out of range and auto.offset.reset is none",
                oor.offset
            )));
            announce_failure(tp, p, events);
            return true;
        }
    };
    tracing::warn!(
        %tp,
        offset = oor.offset,
        log_start_offset = ?oor.log_start_offset,
        high_watermark = ?oor.high_watermark,
        ?reset,
        "fetch offset out of range; resetting the partition by auto.offset.reset"
    );
    p.reset(start, buffered);
    let _ = events.send(ConsumerEvent::OffsetReset {
        partition: tp.clone(),
        offset: oor.offset,
        reset,
        log_start_offset: oor.log_start_offset,
        high_watermark: oor.high_watermark,
    });
    true
}

enum Entry {
    Batch(RecordBatch),
    Skip(i64),
}

struct Current {
    records: Records,
    next_offset: i64,
    ts_type: crate::protocol::record::TimestampType,
    epoch: Option<i32>,
}

struct Chunk {
    entries: VecDeque<Entry>,
    current: Option<Current>,
    end_offset: i64,
    bytes: usize,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Moves up to `max - out.len()` records of `part` to `out`. A corrupt batch sets the
/// partition's error (the partition then stays where it is until the application seeks).
pub(crate) fn drain(
    tp: &TopicPartition,
    part: &mut PartState,
    buffered: &mut usize,
    max: usize,
    out: &mut Vec<ConsumerRecord>,
) {
    let Some(mut pos) = part.position else { return };
    while out.len() < max {
        let Some(chunk) = part.chunks.front_mut() else {
            break;
        };
        if let Some(cur) = &mut chunk.current {
            match cur.records.next() {
                Some(Ok(r)) => {
                    if r.offset < pos {
                        continue;
                    }
                    pos = r.offset + 1;
                    part.last_epoch = cur.epoch.or(part.last_epoch);
                    out.push(ConsumerRecord {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset: r.offset,
                        timestamp: r.timestamp,
                        timestamp_type: cur.ts_type,
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                        leader_epoch: cur.epoch,
                    });
                    continue;
                }
                Some(Err(e)) => {
                    part.error = Some(e.on_partition(tp.topic(), tp.partition));
                    part.release(buffered);
                    part.version = next_version();
                    part.fetch_offset = pos;
                    break;
                }
                None => {
                    pos = pos.max(cur.next_offset);
                    chunk.current = None;
                    continue;
                }
            }
        }
        match chunk.entries.pop_front() {
            Some(Entry::Skip(next)) => pos = pos.max(next),
            Some(Entry::Batch(b)) => {
                if b.next_offset() <= pos {
                    continue;
                }
                match b.records() {
                    Ok(records) => {
                        let epoch = b.partition_leader_epoch();
                        chunk.current = Some(Current {
                            records,
                            next_offset: b.next_offset(),
                            ts_type: b.timestamp_type(),
                            epoch: (epoch >= 0).then_some(epoch),
                        })
                    }
                    Err(e) => {
                        part.error = Some(e.on_partition(tp.topic(), tp.partition));
                        part.release(buffered);
                        part.version = next_version();
                        part.fetch_offset = pos;
                        break;
                    }
                }
            }
            None => {
                pos = pos.max(chunk.end_offset);
                let bytes = chunk.bytes;
                part.chunks.pop_front();
                part.bytes = part.bytes.saturating_sub(bytes);
                *buffered = buffered.saturating_sub(bytes);
            }
        }
    }
    // A partition whose buffer is exhausted continues from where the last chunk ended.
    part.position = Some(pos);
}

/// The decoded batch headers of one partition of a fetch response.
pub(crate) struct Decoded {
    entries: VecDeque<Entry>,
    end_offset: i64,
    bytes: usize,
}

/// Splits a partition's records into batches, dropping control batches and (for
/// read_committed) the batches of aborted transactions, using Kafka's algorithm: aborted
/// transactions are taken in first-offset order; a producer is "aborted" from its first
/// offset until its ABORT marker.
pub(crate) fn decode_partition(
    records: Option<&Bytes>,
    fetch_offset: i64,
    isolation: IsolationLevel,
    aborted: &[(i64, i64)],
) -> Result<Decoded> {
    let mut entries = VecDeque::new();
    let mut end_offset = fetch_offset;
    let bytes = records.map_or(0, |r| r.len());
    let Some(records) = records else {
        return Ok(Decoded {
            entries,
            end_offset,
            bytes,
        });
    };
    let mut aborted: Vec<(i64, i64)> = aborted.to_vec(); // (first_offset, producer_id)
    aborted.sort();
    let mut aborted = aborted.into_iter().peekable();
    let mut aborted_producers: HashSet<i64> = HashSet::new();
    for batch in RecordBatches::new(records.clone()) {
        let batch = batch?;
        let next = batch.next_offset();
        if next <= fetch_offset {
            continue;
        }
        end_offset = end_offset.max(next);
        if isolation == IsolationLevel::ReadCommitted {
            while let Some(&(first, pid)) = aborted.peek() {
                if first <= batch.last_offset() {
                    aborted_producers.insert(pid);
                    aborted.next();
                } else {
                    break;
                }
            }
        }
        if batch.is_control() {
            if isolation == IsolationLevel::ReadCommitted
                && let Ok(Some(c)) = batch.control_record()
                && c.control_type == ControlType::Abort
            {
                aborted_producers.remove(&batch.producer_id());
            }
            entries.push_back(Entry::Skip(next));
            continue;
        }
        if isolation == IsolationLevel::ReadCommitted
            && batch.is_transactional()
            && aborted_producers.contains(&batch.producer_id())
        {
            entries.push_back(Entry::Skip(next));
            continue;
        }
        entries.push_back(Entry::Batch(batch));
    }
    Ok(Decoded {
        entries,
        end_offset,
        bytes,
    })
}

/// Test access to [`decode_partition`] and [`drain`]: the records a consumer at `fetch_offset`
/// would see in `records`, and the position after them. `aborted` is the Fetch response's
/// aborted-transactions list as `(first_offset, producer_id)` pairs.
#[doc(hidden)]
pub fn visible_records(
    records: &Bytes,
    fetch_offset: i64,
    isolation: IsolationLevel,
    aborted: &[(i64, i64)],
) -> Result<(Vec<ConsumerRecord>, i64)> {
    let d = decode_partition(Some(records), fetch_offset, isolation, aborted)?;
    let tp = TopicPartition::new("t", 0);
    let mut part = PartState::new(StartOffset::Offset(fetch_offset));
    let mut buffered = d.bytes;
    part.bytes = d.bytes;
    part.chunks.push_back(Chunk {
        entries: d.entries,
        current: None,
        end_offset: d.end_offset,
        bytes: d.bytes,
    });
    let mut out = Vec::new();
    drain(&tp, &mut part, &mut buffered, usize::MAX, &mut out);
    if let Some(e) = part.error {
        return Err(e);
    }
    Ok((out, part.position.unwrap_or(fetch_offset)))
}

/// The background planner; ends when `shutdown` fires or its sender is dropped.
pub(crate) async fn run(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    loop {
        if shared.closed.load(Ordering::Acquire) || *shutdown.borrow() {
            break;
        }
        let next_retry = plan(&shared, &mut tasks).await;
        let sleep = tokio::time::sleep_until(
            next_retry
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600))
                .into(),
        );
        tokio::select! {
            _ = shared.wake_fetcher.notified() => {}
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            _ = sleep => {}
            r = shutdown.changed() => if r.is_err() { break },
        }
    }
    tasks.shutdown().await;
}

struct FetchItem {
    tp: TopicPartition,
    offset: i64,
    epoch: i32,
    version: u64,
}

async fn plan(shared: &Arc<Shared>, tasks: &mut JoinSet<()>) -> Option<Instant> {
    let now = Instant::now();
    let cfg = &shared.config;
    let mut next_retry: Option<Instant> = None;
    let mut to_resolve = Vec::new();
    let mut to_validate = Vec::new();
    let mut fetchable = Vec::new();
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
            if p.paused
                || p.bytes >= 2 * cfg.max_partition_fetch_bytes as usize
                || buffered >= cfg.max_buffered_bytes
            {
                continue;
            }
            fetchable.push((tp.clone(), p.fetch_offset, p.version));
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
    let mut by_broker: BTreeMap<i32, Vec<FetchItem>> = BTreeMap::new();
    for (tp, offset, version) in fetchable {
        match shared.cluster.leader_for(tp.topic(), tp.partition).await {
            Ok((leader, epoch)) => by_broker.entry(leader).or_default().push(FetchItem {
                tp,
                offset,
                epoch,
                version,
            }),
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

/// Records the leader epoch a partition is about to be fetched under. Returns true when it is
/// newer than the one it was last fetched under and the position has the epoch of a record
/// read: the partition then awaits validation (KIP-320), its read-ahead from the old leader
/// dropped (it is fetched again from the position once validated).
fn observe_leader_epoch(
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

struct ValidateItem {
    tp: TopicPartition,
    version: u64,
    position: i64,
    /// The epoch of the last record read (the request's `leader_epoch`).
    offset_epoch: i32,
    /// The current leader epoch (the request's `current_leader_epoch`).
    current_epoch: i32,
}

/// Looks up the leaders of the partitions awaiting validation and sends one
/// OffsetForLeaderEpoch per leader.
async fn start_validations(
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
async fn offsets_for_leader_epoch(
    shared: &Shared,
    broker: i32,
    items: &[ValidateItem],
) -> Result<Option<HashMap<TopicPartition, EpochEndOffset>>> {
    let conn = shared.cluster.connection_for_broker(broker).await?;
    let conn = conn.connection().await?;
    let v = match conn.versions().negotiate::<OffsetForLeaderEpochRequest>() {
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
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp = conn
        .send_at(req, v)
        .await
        .map_err(|e| e.on_broker(broker))?;
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
async fn validate(shared: Arc<Shared>, broker: i32, items: Vec<ValidateItem>) {
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
fn is_denied(e: &Error) -> bool {
    FetchFailureKind::of(e) == FetchFailureKind::Authorization
}

/// Java's `SubscriptionState.maybeCompleteValidation`: the position stands if the leader's log
/// for the epoch of the last record read reaches it; otherwise the log was truncated below it.
fn complete_validation(
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

async fn fetch(shared: Arc<Shared>, broker: i32, items: Vec<FetchItem>) {
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

async fn fetch_request(
    shared: &Shared,
    broker: i32,
    items: &[FetchItem],
) -> Result<HashMap<TopicPartition, PartitionData>> {
    let cfg = &shared.config;
    let conn = shared.cluster.connection_for_broker(broker).await?;
    let conn = conn.connection().await?;
    let v = conn
        .versions()
        .negotiate::<FetchRequest>()
        .map_err(|e| e.on_broker(broker))?;
    if v < 4 {
        return Err(
            Error::new(ErrorKind::UnsupportedVersion { api: ApiKey::Fetch })
                .message("Fetch v4+ (record batches v2) is required")
                .on_broker(broker),
        );
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
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t.to_string())))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp = conn
        .send_at(req, v)
        .await
        .map_err(|e| e.on_broker(broker))?;
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

/// Resolves positions: committed offsets first (through the group), then ListOffsets for the
/// rest.
async fn resolve(shared: Arc<Shared>, items: Vec<(TopicPartition, StartOffset, u64)>) {
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
                StartOffset::Beginning => -2,
                StartOffset::Timestamp(t) => *t,
                _ => -1,
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
            (StartOffset::FromEnd(_), Ok(_)) => Some((tp.clone(), -2)),
            (StartOffset::Timestamp(_), Ok(-1)) => Some((tp.clone(), -1)),
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
            let conn = cluster.connection_for_broker(broker).await?;
            let conn = conn.connection().await?;
            let v = conn
                .versions()
                .negotiate::<ListOffsetsRequest>()
                .map_err(|e| e.on_broker(broker))?;
            if v < 1 {
                return Err(Error::new(ErrorKind::UnsupportedVersion {
                    api: ApiKey::ListOffsets,
                }));
            }
            let mut topics: BTreeMap<Arc<str>, Vec<ListOffsetsPartition>> = BTreeMap::new();
            for (tp, ts, epoch) in &items {
                let mut p = ListOffsetsPartition::default()
                    .with_partition_index(tp.partition)
                    .with_timestamp(*ts);
                if v >= 4 {
                    p.current_leader_epoch = *epoch;
                }
                topics.entry(tp.topic.clone()).or_default().push(p);
            }
            let mut req = ListOffsetsRequest::default()
                .with_replica_id((-1).into())
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            ListOffsetsTopic::default()
                                .with_name(TopicName(StrBytes::from_string(t.to_string())))
                                .with_partitions(ps)
                        })
                        .collect(),
                );
            if v >= 2 {
                req.isolation_level = isolation.wire();
            }
            let resp = conn
                .send_at(req, v)
                .await
                .map_err(|e| e.on_broker(broker))?;
            for t in resp.topics {
                for p in t.partitions {
                    let tp = TopicPartition::new(t.name.as_str(), p.partition_index);
                    let r = match KafkaCode::from_i16(p.error_code) {
                        Some(c) => Err(Error::broker(c)
                            .api(ApiKey::ListOffsets)
                            .on_broker(broker)
                            .on_partition(tp.topic(), tp.partition)),
                        None => Ok(p.offset),
                    };
                    out.insert(tp, r);
                }
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

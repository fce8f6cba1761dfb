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
    offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic},
    offset_for_leader_epoch_response::EpochEndOffset,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::config::{ConsumerConfig, IsolationLevel, OffsetReset};
use super::event::{ConsumerEvent, FetchFailureKind, PartitionFailure};
use super::record::ConsumerRecord;
use crate::cluster::{Cluster, Recovery, recovery_for};
use crate::group::{GroupMember, TopicPartition};
use crate::protocol::record::{ControlType, RecordBatch, RecordBatches, Records};
use crate::protocol::requests::list_offsets::{self, OffsetQuery};
use crate::telemetry::{ConsumerPartitionTelemetry, ConsumerTelemetry};
use crate::{Error, ErrorKind, KafkaCode, Result};
mod decode;
mod fetch;
mod positions;

pub(crate) use decode::drain;
pub use decode::visible_records;
use decode::*;
use fetch::*;
pub(crate) use positions::list_offsets;
use positions::*;

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

/// The connection to `broker` and the version of `R` it speaks: the opening of every request
/// the fetcher sends to a partition leader (Fetch, ListOffsets, OffsetForLeaderEpoch). The
/// version is an error (tagged with the broker) when the broker has none in common with us.
/// `own`: the cluster's second connection to the broker ([`FetchConnection::Own`], Fetch only).
pub(crate) async fn leader_connection<R: kafka_protocol::protocol::Request>(
    cluster: &Cluster,
    broker: i32,
    own: bool,
) -> Result<(crate::connection::Connection, Result<i16>)> {
    let conn = if own {
        cluster.fetch_connection_for_broker(broker).await?
    } else {
        cluster.connection_for_broker(broker).await?
    };
    let conn = conn.connection().await?;
    let v = conn
        .versions()
        .negotiate::<R>()
        .map_err(|e| e.on_broker(broker));
    Ok((conn, v))
}

/// Sends `req` at `v` on `conn`, a failure tagged with `broker`.
pub(crate) async fn send_to_leader<R: kafka_protocol::protocol::Request>(
    conn: &crate::connection::Connection,
    broker: i32,
    req: R,
    v: i16,
) -> Result<R::Response> {
    conn.send_at(req, v).await.map_err(|e| e.on_broker(broker))
}

/// The topic entries of a request from its partitions grouped by topic, in topic order:
/// `entry(name, partitions)` makes one (each API has its own generated topic type).
pub(crate) fn topic_entries<P, T>(
    by_topic: BTreeMap<Arc<str>, Vec<P>>,
    entry: impl Fn(TopicName, Vec<P>) -> T,
) -> Vec<T> {
    by_topic
        .into_iter()
        .map(|(t, ps)| entry(TopicName(StrBytes::from_string(t.to_string())), ps))
        .collect()
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The background planner; ends when `shutdown` fires or its sender is dropped.
pub(crate) async fn run(shared: Arc<Shared>, mut shutdown: crate::task::StopListener) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    loop {
        if shared.closed.load(Ordering::Acquire) || shutdown.is_stopped() {
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
            _ = shutdown.stopped() => break,
        }
    }
    tasks.shutdown().await;
}

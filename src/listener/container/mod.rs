//! The listener container: drives a consumer, calls the handler, applies the error handler.
//!
//! Each file owns one part of the container's state:
//!
//! * this file: the public vocabulary (ack modes, events, stop reasons, acknowledgments);
//! * `builder.rs` / `handle.rs`: building and starting a container, and its handle;
//! * `runner.rs`: the container's task — the poll loop, the assignment, pauses and seeks;
//! * `records.rs`: calling the record handler (one partition at a time or concurrently);
//! * `recoveries.rs`: what happens to a failed record — the one place its fate (retry,
//!   recover, halt) is decided for the record and batch paths — and the recoveries in flight
//!   ([`Recoveries`](recoveries::Recoveries));
//! * `commits.rs`: acknowledgments and offset commits ([`Commits`](commits::Commits));
//! * `batch.rs`: the batch handler's path;
//! * `exactly_once.rs`: the exactly-once mode and its after-rollback processing.

mod batch;
mod builder;
mod commits;
mod exactly_once;
mod handle;
mod records;
mod recoveries;
mod runner;

pub use builder::{ContainerBuilder, ListenerContainer};
pub use handle::{ContainerHandle, StopTimedOut};

use commits::Commits;
use recoveries::{Halted, Recoveries};
use runner::{
    AckSource, CAPPED_COMMIT_INTERVAL, Flow, Runner, group_by_partition, offset_bounds, poll_now,
    stop_reason_for, tp_of,
};

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::classify::HandlerError;
use super::consumer::OffsetToCommit;
use super::fetch_failure::PartitionFailurePolicy;
use super::handler::{BoxFuture, SharedError};
use super::panic_guard::{
    HandlerCall, HandlerPanicked, call_guarded, call_guarded_now, panic_message,
};
use super::tracker::PartitionKey;
use crate::transaction::TransactionalProducer;
use crate::{Error, Result};

/// When consumed offsets are committed (Spring's `AckMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AckMode {
    /// After each record is handled.
    Record,
    /// After all records of a poll are handled (the default).
    #[default]
    Batch,
    /// When this much time has passed since the last commit (checked between records and
    /// polls).
    Time(Duration),
    /// When this many records have been handled since the last commit.
    Count(u32),
    /// Whichever of `Count` and `Time` comes first.
    CountTime(u32, Duration),
    /// Only records the handler acknowledges ([`Acknowledgment::acknowledge`]); committed with
    /// the poll's other acks.
    Manual,
    /// Only acknowledged records, committed as soon as the handler returns.
    ManualImmediate,
}

/// Why a container stopped (Spring's `ConsumerStoppedEvent.Reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// `stop()` was called (or the handle dropped).
    Normal,
    /// The container stopped itself (e.g. [`RecoveryHalt::StopContainer`](crate::listener::RecoveryHalt::StopContainer)).
    Abnormal,
    /// The consumer or producer was fenced.
    Fenced,
    /// Authentication or authorization failed.
    Authentication,
    /// A partition has no committed offset and the reset policy is `none`.
    NoOffset,
    /// A fatal error (or a panic in the handler).
    Error,
}

/// Something a container did, for users to observe ([`ContainerHandle::events`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ContainerEvent {
    /// The container's task started.
    Started,
    /// The container stopped.
    Stopped(StopReason),
    /// No records arrived for the idle interval.
    Idle {
        /// How long no records have arrived.
        idle_for: Duration,
    },
    /// Partitions were paused (back-off, batch retry, container pause, halted recovery).
    PartitionsPaused(Vec<PartitionKey>),
    /// Partitions were resumed.
    PartitionsResumed(Vec<PartitionKey>),
    /// A delivery failed.
    FailedDelivery {
        /// The partition.
        partition: PartitionKey,
        /// The record's offset.
        offset: i64,
        /// The delivery's number, from 1.
        attempt: u32,
        /// The error.
        error: SharedError,
    },
    /// The recoverer handled a record.
    Recovered {
        /// The partition.
        partition: PartitionKey,
        /// The record's offset.
        offset: i64,
    },
    /// The recoverer failed.
    RecoveryFailed {
        /// The partition.
        partition: PartitionKey,
        /// The record's offset.
        offset: i64,
        /// Consecutive recovery failures so far.
        failures: u32,
        /// The recoverer's error.
        error: SharedError,
    },
    /// The recovery-failure cap was reached: the partition stays paused (the alarm).
    RecoveryHalted {
        /// The partition.
        partition: PartitionKey,
        /// The record's offset.
        offset: i64,
        /// Consecutive recovery failures.
        failures: u32,
    },
    /// Offsets were committed.
    Committed(Vec<OffsetToCommit>),
    /// A commit failed (the offsets stay pending and are retried).
    CommitFailed(Error),
    /// `poll` failed with a non-fatal error.
    PollFailed(Error),
    /// A partition's fetch failed with an error no retry fixes (the alarm); the container
    /// applies `policy` (see [`PartitionFailurePolicy`]).
    PartitionFailed {
        /// The partition.
        partition: PartitionKey,
        /// The consumer's error.
        error: Error,
        /// What the container does about it.
        policy: PartitionFailurePolicy,
    },
}

/// Acknowledges records in the manual ack modes.
#[derive(Clone, Debug)]
pub struct Acknowledgment {
    sink: Option<AckSink>,
    targets: AckTargets,
    /// Where a `nack` goes, and the record it names (record handlers, one partition at a time).
    nack: Option<(NackSink, PartitionKey, i64)>,
}

/// Where negative acknowledgments go until the container takes them.
type NackSink = Arc<Nacks>;

/// The negative acknowledgments not yet taken: (partition, offset, sleep).
#[derive(Debug, Default)]
struct Nacks {
    /// Whether `list` may hold any: the container looks after every record, and a flag costs
    /// less than taking the lock each time (set and cleared under the lock).
    any: std::sync::atomic::AtomicBool,
    list: Mutex<Vec<(PartitionKey, i64, Duration)>>,
}

/// Where acknowledgments go until the container drains them: (partition, next offset).
type AckSink = Arc<Mutex<Vec<(PartitionKey, i64)>>>;

#[derive(Clone, Debug)]
enum AckTargets {
    /// Not a manual ack mode: the container acks by itself.
    Automatic,
    One(PartitionKey, i64),
    Many(Arc<Vec<(PartitionKey, i64)>>),
}

impl Acknowledgment {
    /// The acknowledgment of a handler that takes none: it does nothing, and costs nothing.
    fn inert() -> Acknowledgment {
        Acknowledgment {
            sink: None,
            targets: AckTargets::Automatic,
            nack: None,
        }
    }

    /// Marks the record (or the whole batch) handed with this acknowledgment as processed. Only
    /// the manual ack modes ([`AckMode::Manual`], [`AckMode::ManualImmediate`]) wait for it;
    /// in the others the container acks handled records by itself and this does nothing.
    pub fn acknowledge(&self) {
        let Some(sink) = &self.sink else {
            return;
        };
        let mut sink = sink.lock().unwrap_or_else(|e| e.into_inner());
        match &self.targets {
            AckTargets::Automatic => {}
            AckTargets::One(tp, next) => sink.push((tp.clone(), *next)),
            AckTargets::Many(all) => sink.extend(all.iter().cloned()),
        }
    }

    /// Negatively acknowledges the record handed with this acknowledgment (Spring's
    /// `nack(Duration)`): once the handler returns `Ok`, the record is not acknowledged, its
    /// partition is sought back to it and paused for `sleep` (the other partitions flow), and
    /// it comes again with the partition's records after it; the records before it are
    /// acknowledged. It is not a failure: no retry listener, no delivery attempt counted, no
    /// error handler. In every ack mode (Spring: the manual ones).
    ///
    /// Record handlers only, with the container handling a partition's records itself
    /// (concurrency 1, not the exactly-once mode); elsewhere it logs a warning and the
    /// record counts as handled.
    pub fn nack(&self, sleep: Duration) {
        match &self.nack {
            Some((sink, tp, offset)) => {
                let mut list = sink.list.lock().unwrap_or_else(|e| e.into_inner());
                list.push((tp.clone(), *offset, sleep));
                sink.any.store(true, std::sync::atomic::Ordering::Release);
            }
            None => tracing::warn!(
                "nack() works for record handlers with concurrency 1 outside the exactly-once \
                 mode; ignored, the record counts as handled"
            ),
        }
    }
}

/// The record handler: asynchronous ([`ContainerBuilder::record_handler`], a boxed future per
/// record) or synchronous ([`ContainerBuilder::sync_record_handler`], no future at all).
enum RecordCall<R> {
    Async(AsyncRecordFn<R>),
    Sync(SyncRecordFn<R>),
}

type AsyncRecordFn<R> =
    Arc<dyn Fn(R, Acknowledgment) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;
type SyncRecordFn<R> = Arc<dyn Fn(R, Acknowledgment) -> Result<(), HandlerError> + Send + Sync>;

/// The record handler and whether it takes the record's [`Acknowledgment`].
struct RecordFn<R> {
    call: RecordCall<R>,
    /// False for the handlers given without one (`record_handler`, `sync_record_handler`):
    /// they are handed an inert acknowledgment, which costs no reference count per record.
    takes_ack: bool,
}

impl<R> Clone for RecordFn<R> {
    fn clone(&self) -> Self {
        let call = match &self.call {
            RecordCall::Async(f) => RecordCall::Async(f.clone()),
            RecordCall::Sync(f) => RecordCall::Sync(f.clone()),
        };
        RecordFn {
            call,
            takes_ack: self.takes_ack,
        }
    }
}

impl<R> RecordFn<R> {
    /// Calls the handler: a synchronous one does its work here, inside the caller's panic
    /// guard and span.
    fn call(&self, record: R, ack: Acknowledgment) -> HandlerCall<Result<(), HandlerError>> {
        match &self.call {
            RecordCall::Async(f) => HandlerCall::Future(f(record, ack)),
            RecordCall::Sync(f) => HandlerCall::Done(f(record, ack)),
        }
    }
}

type BatchFn<R> = Arc<
    dyn Fn(Vec<R>, Acknowledgment) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync,
>;
type DeserializationCheck<R> = Arc<
    dyn Fn(&R) -> std::result::Result<(), crate::listener::classify::DeserializationFailed>
        + Send
        + Sync,
>;
/// A listener-level error handler: (record, error, delivery attempt) → its outcome and the
/// seeks it asks for.
type ListenerErrorFn<R> = Arc<
    dyn Fn(&R, HandlerError, u32) -> BoxFuture<'static, (Result<(), HandlerError>, Seeks)>
        + Send
        + Sync,
>;

/// A batch listener's listener-level error handler: (the batch, error, seeks) → its outcome.
type BatchListenerErrorFn<R> =
    Arc<dyn Fn(&[R], HandlerError, &mut Seeks) -> Result<(), HandlerError> + Send + Sync>;

/// A synchronous listener-level error handler as a [`ListenerErrorFn`].
fn sync_listener_error_fn<R>(
    f: impl Fn(&R, HandlerError, &mut Seeks) -> Result<(), HandlerError> + Send + Sync + 'static,
) -> ListenerErrorFn<R> {
    Arc::new(move |r, e, _attempt| {
        let mut seeks = Seeks::default();
        let outcome = f(r, e, &mut seeks);
        Box::pin(std::future::ready((outcome, seeks)))
    })
}

/// Seeks a consumer-aware listener-level error handler asks for; the container applies them to
/// the consumer right after the handler returns. A seek of the failed record's own partition
/// means the handler repositioned it: the record is not acknowledged and the partition's
/// remaining records of the poll are dropped (they come again from the new position).
#[derive(Debug, Default)]
pub struct Seeks {
    requests: Vec<(PartitionKey, i64)>,
}

impl Seeks {
    /// Asks the container to seek `topic`-`partition` to `offset`.
    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) {
        self.requests.push(((Arc::from(topic), partition), offset));
    }

    /// The requested seeks, in order.
    pub fn requests(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.requests.iter().map(|(tp, o)| (&*tp.0, tp.1, *o))
    }

    /// Takes the requested seeks out, in order.
    pub(crate) fn take(&mut self) -> Vec<(PartitionKey, i64)> {
        std::mem::take(&mut self.requests)
    }
}

enum Handler<R> {
    Record(RecordFn<R>),
    Batch(BatchFn<R>),
}

/// What the container does when its transactional producer is fenced (another instance with
/// the same `transactional.id` took over, or the transaction coordinator fenced it, e.g. after
/// a transaction timeout).
///
/// Default: [`Continue`](Self::Continue), as Spring's container
/// (`stopContainerWhenFenced=false`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnFenced {
    /// Stop with [`StopReason::Fenced`] (no rollback processing: the records are the new
    /// owner's now).
    Stop,
    /// Log it, rewind to the committed offsets, make a new producer (with the factory given to
    /// [`ContainerBuilder::transactional_with`], or else
    /// [`TransactionalProducer::renewed`](crate::transaction::TransactionalProducer::renewed)
    /// and `init_transactions`) and go on. If no new producer can be made, stops.
    #[default]
    Continue,
}

type ProducerFactory =
    Arc<dyn Fn() -> BoxFuture<'static, Result<TransactionalProducer>> + Send + Sync>;

struct Transactional {
    producer: Arc<TransactionalProducer>,
    factory: Option<ProducerFactory>,
    on_fenced: OnFenced,
}

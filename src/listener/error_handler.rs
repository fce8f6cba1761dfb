//! The one decision about a failure: the [`CommonErrorHandler`] trait (Spring's
//! `CommonErrorHandler`), the [`Disposition`] it returns, and the handlers Spring users reach
//! for: [`DefaultErrorHandler`](super::DefaultErrorHandler) (in `handler.rs`),
//! [`LoggingErrorHandler`], [`ContainerStoppingErrorHandler`] and [`DelegatingErrorHandler`].
//!
//! The container never decides what happens to a failed record itself: it asks its error
//! handler, which returns a [`Disposition`], and applies it (`container/recoveries.rs`,
//! `Runner::apply`).

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::backoff::{BackOff, BackOffExecution};
use super::classify::HandlerError;
use super::consumer::ListenerRecord;
use super::container::Seeks;
use super::handler::{
    BoxFuture, DeliveryAttemptHeader, LoggingRecoverer, RecoverFuture, Recoverer, Recovery,
    RecoveryHalt, RetryListener, SharedError,
};
use super::tracker::{FailedRecordTracker, PartitionKey};

/// What the container does with a failure, as its [`CommonErrorHandler`] decided. The container
/// only applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Redeliver the record after `delay`: its partition is sought back to it and paused for
    /// the delay while the others flow (a batch: retried in memory after the delay, its
    /// partitions paused). With [`seeks_after_handling`](CommonErrorHandler::seeks_after_handling)
    /// false, the record and its partition's rest of the poll are redelivered from memory.
    Redeliver {
        /// How long to wait before the redelivery.
        delay: Duration,
    },
    /// Recover the record now with the handler's [`recoverer`](CommonErrorHandler::recoverer)
    /// (a dead letter, a log line); once recovered it is acknowledged when
    /// [`ack_after_handle`](CommonErrorHandler::ack_after_handle) says so. A batch: each of its
    /// records is recovered.
    Recover,
    /// Exactly-once mode: recover the record when it comes again, inside that poll's
    /// transaction, so its dead letter and its offset commit together. Outside the exactly-once
    /// mode, the same as [`Recover`](Self::Recover).
    RecoverInTransaction,
    /// The handler dealt with the failure itself: the record (or batch) counts as handled and
    /// is acknowledged when [`ack_after_handle`](CommonErrorHandler::ack_after_handle) says so;
    /// the partition's next records follow. For [`handle_other`](CommonErrorHandler::handle_other):
    /// go on.
    Handled,
    /// Halt the partition: sought back to the record, paused, the
    /// [`RecoveryHalted`](super::ContainerEvent::RecoveryHalted) alarm fires, and the record's
    /// recovery is probed every [`RecoveryPolicy::halt_probe_interval`]; nothing past it is
    /// committed.
    HaltPartition,
    /// Stop the container ([`StopReason::Abnormal`](super::StopReason::Abnormal)): the record
    /// is not acknowledged (it comes again from its committed offset); the work finished
    /// before it is committed.
    StopContainer,
}

/// A record's failure, as its [`CommonErrorHandler`] sees it.
#[non_exhaustive]
pub struct RecordFailure<'a, R> {
    /// The record (as the container has it).
    pub record: &'a R,
    /// Its partition.
    pub partition: &'a PartitionKey,
    /// The error.
    pub error: &'a SharedError,
    /// The delivery attempt that failed, from 1. The container fills in its count; a handler
    /// that keeps its own (the [`DefaultErrorHandler`](super::DefaultErrorHandler), through
    /// `tracker`) sets it, and the
    /// [`FailedDelivery`](super::ContainerEvent::FailedDelivery) event reports it.
    pub attempt: u32,
    /// The container's delivery attempts per partition, which survive rebalances and restarts
    /// (commit metadata). A handler with a back-off counts attempts here.
    pub tracker: &'a mut FailedRecordTracker,
    /// Consumer-aware handling: seeks the handler asks for, applied before the disposition. A
    /// seek of the record's own partition repositions it: the partition's remaining records of
    /// the poll are dropped (they come again from the new position).
    pub seeks: Seeks,
    /// Whether the record failed inside the exactly-once mode's transaction (then already
    /// rolled back: Spring's after-rollback processing).
    pub in_transaction: bool,
    /// Exactly-once mode: the failure is a whole batch's (this is its first record).
    pub whole_batch: bool,
}

impl<R> fmt::Debug for RecordFailure<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordFailure")
            .field("partition", self.partition)
            .field("error", self.error)
            .field("attempt", &self.attempt)
            .field("in_transaction", &self.in_transaction)
            .finish_non_exhaustive()
    }
}

/// A batch handler's failure that names no record (a
/// [`BatchListenerFailed`](super::BatchListenerFailed) sends its record through
/// [`CommonErrorHandler::handle_remaining`] instead).
#[non_exhaustive]
pub struct BatchFailure<'a, R> {
    /// The batch (the records of the poll the handler saw).
    pub records: &'a [R],
    /// The error.
    pub error: &'a SharedError,
    /// The delivery of the batch that failed, from 1.
    pub attempt: u32,
    /// The back-off of this batch's in-memory retries, kept by the container between the
    /// attempts of one failure.
    pub retry: &'a mut BatchRetry,
}

/// A failure that is no record's, as [`CommonErrorHandler::handle_other`] sees it: a poll or a
/// commit failed, or a partition's fetch failed with an error no retry fixes (an offset out of
/// range with `auto.offset.reset=none`, a corrupt batch, an authorization error). Spring's
/// `handleOtherException` with its `Consumer`.
#[non_exhaustive]
#[derive(Debug)]
pub struct OtherFailure<'a> {
    /// The error.
    pub error: &'a crate::Error,
    /// The partition whose fetch failed, when the failure is one partition's (the consumer
    /// stops fetching it until it is sought); `None` for a failed poll or commit.
    pub partition: Option<&'a PartitionKey>,
    /// Consumer-aware handling: seeks the handler asks for, applied right after it returns. A
    /// seek of the failed [`partition`](Self::partition) resolves its failure: the partition
    /// is fetched again from there, and the container's
    /// [`PartitionFailurePolicy`](super::PartitionFailurePolicy) does not apply.
    pub seeks: Seeks,
}

impl<'a> OtherFailure<'a> {
    /// A failure of `error`, of `partition` if it is one partition's, with no seeks yet.
    pub fn new(error: &'a crate::Error, partition: Option<&'a PartitionKey>) -> OtherFailure<'a> {
        OtherFailure {
            error,
            partition,
            seeks: Seeks::default(),
        }
    }
}

impl<R> fmt::Debug for BatchFailure<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchFailure")
            .field("records", &self.records.len())
            .field("error", self.error)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

/// The back-off of one batch failure's in-memory retries (see [`BatchFailure::retry`]).
#[derive(Debug, Default)]
pub struct BatchRetry {
    execution: Option<Box<dyn BackOffExecution>>,
}

impl BatchRetry {
    /// The next delay of the back-off started (on the first call) from `back_off`; `None` when
    /// the retries are used up.
    pub fn next_delay(&mut self, back_off: impl FnOnce() -> Arc<dyn BackOff>) -> Option<Duration> {
        self.execution
            .get_or_insert_with(|| back_off().start())
            .next_back_off()
    }
}

/// How the container treats records whose recovery fails (settings of the
/// [`DefaultErrorHandler`](super::DefaultErrorHandler), the same for every handler that
/// recovers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryPolicy {
    /// The pause before redelivering a record whose recovery failed.
    pub recovery_retry_interval: Duration,
    /// How often a halted record's recovery is retried.
    pub halt_probe_interval: Duration,
    /// What happens at the recovery-failure cap.
    pub on_recovery_halt: RecoveryHalt,
    /// Consecutive recovery failures of one record before `on_recovery_halt` applies.
    pub max_recovery_failures: Option<u32>,
    /// Restart the back-off after a recovery failure.
    pub reset_state_on_recovery_failure: bool,
    /// Restart the back-off when a record fails with a different kind of error.
    pub reset_state_on_exception_change: bool,
}

impl Default for RecoveryPolicy {
    fn default() -> Self {
        RecoveryPolicy {
            recovery_retry_interval: Duration::from_secs(1),
            halt_probe_interval: Duration::from_secs(30),
            on_recovery_halt: RecoveryHalt::PausePartition,
            max_recovery_failures: Some(5),
            reset_state_on_recovery_failure: true,
            reset_state_on_exception_change: true,
        }
    }
}

/// The container's error handler (Spring's `CommonErrorHandler`): it decides what happens to a
/// failure and returns a [`Disposition`]; the container applies it. Implement it for a handler
/// of your own, or use [`DefaultErrorHandler`](super::DefaultErrorHandler) (back-off, then
/// recovery), [`LoggingErrorHandler`], [`ContainerStoppingErrorHandler`] or
/// [`DelegatingErrorHandler`]. Give it to
/// [`ContainerBuilder::error_handler`](super::ContainerBuilder::error_handler).
///
/// ```
/// use std::sync::Arc;
/// use rekafka::listener::{
///     BatchFailure, CommonErrorHandler, Disposition, ListenerRecord, RecordFailure,
/// };
///
/// /// Skips records whose error says "poison"; stops the container on anything else.
/// struct SkipPoison;
///
/// impl<R: ListenerRecord> CommonErrorHandler<R> for SkipPoison {
///     fn handle_one(&self, failure: &mut RecordFailure<'_, R>) -> Disposition {
///         if failure.error.to_string().contains("poison") {
///             Disposition::Handled
///         } else {
///             Disposition::StopContainer
///         }
///     }
///
///     fn handle_batch(&self, _failure: &mut BatchFailure<'_, R>) -> Disposition {
///         Disposition::StopContainer
///     }
/// }
/// ```
pub trait CommonErrorHandler<R: ListenerRecord>: Send + Sync {
    /// A record failed and [`seeks_after_handling`](Self::seeks_after_handling) is false:
    /// decide its fate (Spring's `handleOne`).
    fn handle_one(&self, failure: &mut RecordFailure<'_, R>) -> Disposition;

    /// A record failed and [`seeks_after_handling`](Self::seeks_after_handling) is true:
    /// decide its fate, knowing the partition's records after it in the poll (`remaining`;
    /// empty when the container does not hold them: concurrent partitions, the exactly-once
    /// mode). Spring's `handleRemaining`. Default: [`handle_one`](Self::handle_one).
    fn handle_remaining(&self, failure: &mut RecordFailure<'_, R>, remaining: &[R]) -> Disposition {
        let _ = remaining;
        self.handle_one(failure)
    }

    /// A batch handler failed without naming a record (Spring's `handleBatch`). Called again
    /// after each in-memory retry that failed ([`Disposition::Redeliver`]).
    fn handle_batch(&self, failure: &mut BatchFailure<'_, R>) -> Disposition;

    /// A failure that is no record's ([`OtherFailure`]): a poll or a commit failed with a
    /// retriable error (fatal ones stop the container whatever this says), or a partition's
    /// fetch failed with an error no retry fixes (e.g. its offset is out of range and
    /// `auto.offset.reset` is `none`). [`Disposition::StopContainer`] stops the container;
    /// anything else goes on (the poll is tried again, the offsets stay pending; a failed
    /// partition that the handler did not seek gets the container's
    /// [`PartitionFailurePolicy`](super::PartitionFailurePolicy)). The handler may seek
    /// ([`OtherFailure::seeks`]), e.g. a partition whose offset is out of range back to its
    /// first record. Spring's `handleOtherException`. Default: go on.
    ///
    /// ```
    /// use rekafka::listener::{
    ///     BatchFailure, CommonErrorHandler, Disposition, ListenerRecord, OtherFailure,
    ///     RecordFailure,
    /// };
    /// use rekafka::{ErrorKind, KafkaCode};
    ///
    /// /// Starts a partition whose offset is out of range over from offset 0.
    /// struct RestartOutOfRange;
    ///
    /// impl<R: ListenerRecord> CommonErrorHandler<R> for RestartOutOfRange {
    ///     fn handle_one(&self, _failure: &mut RecordFailure<'_, R>) -> Disposition {
    ///         Disposition::StopContainer
    ///     }
    ///     fn handle_batch(&self, _failure: &mut BatchFailure<'_, R>) -> Disposition {
    ///         Disposition::StopContainer
    ///     }
    ///     fn handle_other(&self, failure: &mut OtherFailure<'_>) -> Disposition {
    ///         if let (ErrorKind::Broker(KafkaCode::OffsetOutOfRange), Some((topic, p))) =
    ///             (failure.error.kind(), failure.partition)
    ///         {
    ///             failure.seeks.seek(topic, *p, 0);
    ///         }
    ///         Disposition::Handled
    ///     }
    /// }
    /// ```
    fn handle_other(&self, failure: &mut OtherFailure<'_>) -> Disposition {
        let _ = failure;
        Disposition::Handled
    }

    /// Whether a record the handler dealt with ([`Disposition::Handled`], or recovered) is
    /// acknowledged (committed per the ack mode). When false, its offset is committed only
    /// once a later record of its partition is. Default: true.
    fn ack_after_handle(&self) -> bool {
        true
    }

    /// Whether the container calls [`handle_remaining`](Self::handle_remaining) (true) or
    /// [`handle_one`](Self::handle_one) (false) for a failed record. With false, a record
    /// handler's [`Disposition::Redeliver`] is applied without seeking (Spring's
    /// `seekAfterError=false`): the failed record and its partition's records after it in the
    /// poll are kept in memory and handed to the handler again after the delay (see
    /// [`DefaultErrorHandler::seek_after_error`](super::DefaultErrorHandler::seek_after_error)).
    /// Default: true.
    fn seeks_after_handling(&self) -> bool {
        true
    }

    /// Whether a recovered record's offset is committed as soon as it is recovered (before the
    /// rest of the poll), whatever the ack mode's schedule. Default: false.
    fn commit_recovered(&self) -> bool {
        false
    }

    /// The recoverer [`Disposition::Recover`] runs. Default: [`LoggingRecoverer`].
    fn recoverer(&self) -> Arc<dyn Recoverer<R>> {
        Arc::new(LoggingRecoverer)
    }

    /// The retry listeners told about recoveries and their failures. Default: none.
    fn retry_listeners(&self) -> Vec<Arc<dyn RetryListener<R>>> {
        Vec::new()
    }

    /// How recovery failures are treated. Default: [`RecoveryPolicy::default`].
    fn recovery_policy(&self) -> RecoveryPolicy {
        RecoveryPolicy::default()
    }

    /// Whether the `kafka_deliveryAttempt` header is added. Default: off.
    fn delivery_attempt_header(&self) -> DeliveryAttemptHeader {
        DeliveryAttemptHeader::Off
    }
}

impl<R: ListenerRecord, H: CommonErrorHandler<R> + ?Sized> CommonErrorHandler<R> for Arc<H> {
    fn handle_one(&self, failure: &mut RecordFailure<'_, R>) -> Disposition {
        (**self).handle_one(failure)
    }
    fn handle_remaining(&self, failure: &mut RecordFailure<'_, R>, remaining: &[R]) -> Disposition {
        (**self).handle_remaining(failure, remaining)
    }
    fn handle_batch(&self, failure: &mut BatchFailure<'_, R>) -> Disposition {
        (**self).handle_batch(failure)
    }
    fn handle_other(&self, failure: &mut OtherFailure<'_>) -> Disposition {
        (**self).handle_other(failure)
    }
    fn ack_after_handle(&self) -> bool {
        (**self).ack_after_handle()
    }
    fn seeks_after_handling(&self) -> bool {
        (**self).seeks_after_handling()
    }
    fn commit_recovered(&self) -> bool {
        (**self).commit_recovered()
    }
    fn recoverer(&self) -> Arc<dyn Recoverer<R>> {
        (**self).recoverer()
    }
    fn retry_listeners(&self) -> Vec<Arc<dyn RetryListener<R>>> {
        (**self).retry_listeners()
    }
    fn recovery_policy(&self) -> RecoveryPolicy {
        (**self).recovery_policy()
    }
    fn delivery_attempt_header(&self) -> DeliveryAttemptHeader {
        (**self).delivery_attempt_header()
    }
}

/// Logs every failure at ERROR and goes on (Spring's `CommonLoggingErrorHandler`): a failed
/// record or batch counts as handled — acknowledged unless
/// [`ack_after_handle`](Self::ack_after_handle) is off — and poll or commit failures are
/// logged and retried.
#[derive(Debug, Clone, Copy)]
pub struct LoggingErrorHandler {
    ack_after_handle: bool,
}

impl Default for LoggingErrorHandler {
    fn default() -> Self {
        LoggingErrorHandler {
            ack_after_handle: true,
        }
    }
}

impl LoggingErrorHandler {
    /// A handler that logs and acknowledges.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a logged record is acknowledged. Default: true.
    pub fn ack_after_handle(mut self, ack: bool) -> Self {
        self.ack_after_handle = ack;
        self
    }
}

impl<R: ListenerRecord> CommonErrorHandler<R> for LoggingErrorHandler {
    fn handle_one(&self, failure: &mut RecordFailure<'_, R>) -> Disposition {
        let r = failure.record;
        tracing::error!(
            topic = r.topic(), partition = r.partition(), offset = r.offset(),
            error = %failure.error,
            "error while processing {}-{}@{}", r.topic(), r.partition(), r.offset()
        );
        Disposition::Handled
    }

    fn handle_batch(&self, failure: &mut BatchFailure<'_, R>) -> Disposition {
        tracing::error!(
            records = failure.records.len(), error = %failure.error,
            "error while processing a batch"
        );
        Disposition::Handled
    }

    fn handle_other(&self, failure: &mut OtherFailure<'_>) -> Disposition {
        tracing::error!(error = %failure.error, partition = ?failure.partition, "error in the listener container");
        Disposition::Handled
    }

    fn ack_after_handle(&self) -> bool {
        self.ack_after_handle
    }
}

/// Stops the container on any failure (Spring's `CommonContainerStoppingErrorHandler`): the
/// failed record is not acknowledged, so it comes again when a container starts from the
/// committed offsets; the records handled before it are committed.
#[derive(Debug, Clone, Copy, Default)]
pub struct ContainerStoppingErrorHandler;

impl<R: ListenerRecord> CommonErrorHandler<R> for ContainerStoppingErrorHandler {
    fn handle_one(&self, failure: &mut RecordFailure<'_, R>) -> Disposition {
        let r = failure.record;
        tracing::error!(
            topic = r.topic(), partition = r.partition(), offset = r.offset(),
            error = %failure.error, "stopping the container after a failure"
        );
        Disposition::StopContainer
    }

    fn handle_batch(&self, failure: &mut BatchFailure<'_, R>) -> Disposition {
        tracing::error!(error = %failure.error, "stopping the container after a batch failure");
        Disposition::StopContainer
    }

    fn handle_other(&self, failure: &mut OtherFailure<'_>) -> Disposition {
        tracing::error!(error = %failure.error, partition = ?failure.partition, "stopping the container after an error");
        Disposition::StopContainer
    }

    fn ack_after_handle(&self) -> bool {
        false
    }
}

type ErrorMatcher = fn(&(dyn StdError + 'static)) -> bool;

/// Whether `error` or anything in its `source()` chain is an `E`.
fn chain_has<E: StdError + 'static>(error: &(dyn StdError + 'static)) -> bool {
    super::classify::find_in_chain::<E>(error).is_some()
}

/// Chooses a handler by the error's type (Spring's `CommonDelegatingErrorHandler`, with the
/// cause chain traversed): the first delegate added whose error type is the error or anywhere in
/// its `source()` chain (outermost first, per delegate in the order added) handles the failure;
/// otherwise the default handler does.
///
/// Recoveries follow the same choice (the recoverer routes each record by its error); the
/// retry listeners, the recovery policy, `ack_after_handle`, `seeks_after_handling`,
/// `commit_recovered` and `handle_other` are the default handler's.
///
/// ```
/// use rekafka::listener::{
///     ContainerStoppingErrorHandler, DefaultErrorHandler, DelegatingErrorHandler,
///     ListenerConsumerRecord,
/// };
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("the database is gone")]
/// struct DatabaseDown;
///
/// let handler = DelegatingErrorHandler::<ListenerConsumerRecord>::new(DefaultErrorHandler::new())
///     .delegate::<DatabaseDown>(ContainerStoppingErrorHandler);
/// ```
pub struct DelegatingErrorHandler<R> {
    default: Arc<dyn CommonErrorHandler<R>>,
    delegates: Vec<(ErrorMatcher, &'static str, Arc<dyn CommonErrorHandler<R>>)>,
}

impl<R> fmt::Debug for DelegatingErrorHandler<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DelegatingErrorHandler")
            .field(
                "delegates",
                &self
                    .delegates
                    .iter()
                    .map(|(_, n, _)| *n)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl<R: ListenerRecord> DelegatingErrorHandler<R> {
    /// A handler that sends every failure to `default` until delegates are added.
    pub fn new(default: impl CommonErrorHandler<R> + 'static) -> Self {
        DelegatingErrorHandler {
            default: Arc::new(default),
            delegates: Vec::new(),
        }
    }

    /// Failures whose error is an `E` (or has one in its source chain) go to `handler`.
    pub fn delegate<E: StdError + 'static>(
        mut self,
        handler: impl CommonErrorHandler<R> + 'static,
    ) -> Self {
        self.delegates.push((
            chain_has::<E>,
            std::any::type_name::<E>(),
            Arc::new(handler),
        ));
        self
    }

    fn choose(&self, error: &SharedError) -> &Arc<dyn CommonErrorHandler<R>> {
        let error: &(dyn StdError + 'static) = error.as_ref();
        self.delegates
            .iter()
            .find(|(matches, _, _)| matches(error))
            .map_or(&self.default, |(_, _, h)| h)
    }
}

impl<R: ListenerRecord> CommonErrorHandler<R> for DelegatingErrorHandler<R> {
    fn handle_one(&self, failure: &mut RecordFailure<'_, R>) -> Disposition {
        self.choose(failure.error).handle_one(failure)
    }

    fn handle_remaining(&self, failure: &mut RecordFailure<'_, R>, remaining: &[R]) -> Disposition {
        self.choose(failure.error)
            .handle_remaining(failure, remaining)
    }

    fn handle_batch(&self, failure: &mut BatchFailure<'_, R>) -> Disposition {
        self.choose(failure.error).handle_batch(failure)
    }

    fn handle_other(&self, failure: &mut OtherFailure<'_>) -> Disposition {
        self.default.handle_other(failure)
    }

    fn ack_after_handle(&self) -> bool {
        self.default.ack_after_handle()
    }

    fn seeks_after_handling(&self) -> bool {
        self.default.seeks_after_handling()
    }

    fn commit_recovered(&self) -> bool {
        self.default.commit_recovered()
    }

    fn recoverer(&self) -> Arc<dyn Recoverer<R>> {
        Arc::new(DelegatingRecoverer {
            default: self.default.recoverer(),
            delegates: self
                .delegates
                .iter()
                .map(|(m, _, h)| (*m, h.recoverer()))
                .collect(),
        })
    }

    fn retry_listeners(&self) -> Vec<Arc<dyn RetryListener<R>>> {
        self.default.retry_listeners()
    }

    fn recovery_policy(&self) -> RecoveryPolicy {
        self.default.recovery_policy()
    }

    fn delivery_attempt_header(&self) -> DeliveryAttemptHeader {
        self.default.delivery_attempt_header()
    }
}

/// The recoverer of a [`DelegatingErrorHandler`]: each record goes to the recoverer of the
/// handler its error chose.
struct DelegatingRecoverer<R> {
    default: Arc<dyn Recoverer<R>>,
    delegates: Vec<(ErrorMatcher, Arc<dyn Recoverer<R>>)>,
}

impl<R> DelegatingRecoverer<R> {
    fn choose(&self, error: &SharedError) -> &Arc<dyn Recoverer<R>> {
        let error: &(dyn StdError + 'static) = error.as_ref();
        self.delegates
            .iter()
            .find(|(matches, _)| matches(error))
            .map_or(&self.default, |(_, r)| r)
    }
}

impl<R: ListenerRecord> Recoverer<R> for DelegatingRecoverer<R> {
    fn recover<'a>(&'a self, record: &'a R, error: &'a SharedError) -> RecoverFuture<'a> {
        self.choose(error).recover(record, error)
    }

    fn start_recovery<'a>(
        &'a self,
        record: &'a R,
        error: &'a SharedError,
    ) -> BoxFuture<'a, Result<Recovery, HandlerError>> {
        self.choose(error).start_recovery(record, error)
    }
}

//! The container's error handler (Spring's `DefaultErrorHandler`), recoverers and retry
//! listeners.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::backoff::{BackOff, FixedBackOff};
use super::classify::{Classifier, HandlerError};
use super::consumer::ListenerRecord;
use super::error_handler::{
    BatchFailure, CommonErrorHandler, Disposition, RecordFailure, RecoveryPolicy,
};
use super::tracker::Decision;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The future [`Recoverer::recover`] returns, named once for the crate's own recoverers (the
/// logging recoverer, the dead-letter publishers, republishing, the retry-topic forwarder, the
/// delegating error handler), whose `recover` signatures would otherwise spell it out each.
/// The trait itself keeps the full type, which is what its documentation shows.
pub(crate) type RecoverFuture<'a> = BoxFuture<'a, Result<(), HandlerError>>;

/// The error type handlers see: shared, so one failure can go to listeners, the recoverer and
/// events.
pub type SharedError = Arc<dyn StdError + Send + Sync + 'static>;

/// Runs when a record's retries are exhausted (or it is not retryable): log it, publish it to a
/// dead-letter topic, …
///
/// An `Err` is a *recovery failure*: the record is not skipped; it is redelivered under the
/// back-off, and after [`DefaultErrorHandler::max_recovery_failures`] its partition stays paused
/// and an alarm event fires.
pub trait Recoverer<R>: Send + Sync {
    /// Recovers `record`, which failed with `error`.
    fn recover<'a>(
        &'a self,
        record: &'a R,
        error: &'a SharedError,
    ) -> BoxFuture<'a, Result<(), HandlerError>>;

    /// Starts recovering `record` and returns without waiting for the recovery to become
    /// durable, so that the recoveries of consecutive failed records overlap (a dead-letter
    /// publisher sends the dead letter and returns its acknowledgement as
    /// [`Recovery::InFlight`]).
    ///
    /// The listener container calls this for records its record handler failed (outside the
    /// exactly-once mode). It goes on with the next records at once, but commits nothing at or
    /// past a record whose recovery is in flight, and waits for every recovery started during a
    /// poll before it commits that poll's offsets and polls again. A recovery that completes
    /// with an error is a recovery failure, as if `recover` had returned it: the partition is
    /// sought back to the record, which is redelivered (with the records after it).
    ///
    /// Default: runs [`recover`](Self::recover) to completion and returns [`Recovery::Done`].
    fn start_recovery<'a>(
        &'a self,
        record: &'a R,
        error: &'a SharedError,
    ) -> BoxFuture<'a, Result<Recovery, HandlerError>> {
        let recovery = self.recover(record, error);
        Box::pin(async move { recovery.await.map(|()| Recovery::Done) })
    }
}

/// What [`Recoverer::start_recovery`] did.
#[non_exhaustive]
pub enum Recovery {
    /// The record is recovered.
    Done,
    /// The recovery is under way: the future completes when it is durable (`Ok`) or has failed
    /// (`Err`, a recovery failure). It should only wait (for an acknowledgement, say): the work
    /// itself must already be under way, and the future must complete in bounded time (a send
    /// timeout).
    InFlight(BoxFuture<'static, Result<(), HandlerError>>),
}

impl fmt::Debug for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recovery::Done => f.write_str("Done"),
            Recovery::InFlight(_) => f.write_str("InFlight(..)"),
        }
    }
}

/// The default recoverer: logs the record at ERROR through `tracing` (Spring's "Backoff …
/// exhausted for t-p@o").
#[derive(Debug, Clone, Copy, Default)]
pub struct LoggingRecoverer;

impl<R: ListenerRecord> Recoverer<R> for LoggingRecoverer {
    fn recover<'a>(&'a self, record: &'a R, error: &'a SharedError) -> RecoverFuture<'a> {
        Box::pin(async move {
            tracing::error!(
                topic = record.topic(),
                partition = record.partition(),
                offset = record.offset(),
                error = %error,
                "retries exhausted for {}-{}@{}; record skipped",
                record.topic(),
                record.partition(),
                record.offset()
            );
            Ok(())
        })
    }
}

/// A recoverer from an async function.
pub struct RecovererFn<F>(pub F);

impl<F> fmt::Debug for RecovererFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecovererFn")
    }
}

impl<R, F, Fut> Recoverer<R> for RecovererFn<F>
where
    R: ListenerRecord,
    F: Fn(R, SharedError) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn recover<'a>(&'a self, record: &'a R, error: &'a SharedError) -> RecoverFuture<'a> {
        Box::pin((self.0)(record.clone(), error.clone()))
    }
}

/// Observes retries (Spring's `RetryListener`). Every method has an empty default.
pub trait RetryListener<R>: Send + Sync {
    /// A delivery of `record` failed; `attempt` counts deliveries from 1.
    fn failed_delivery(&self, record: &R, error: &SharedError, attempt: u32) {
        let _ = (record, error, attempt);
    }
    /// The recoverer handled `record`.
    fn recovered(&self, record: &R, error: &SharedError) {
        let _ = (record, error);
    }
    /// The recoverer failed for `record`.
    fn recovery_failed(&self, record: &R, original: &SharedError, failure: &SharedError) {
        let _ = (record, original, failure);
    }
    /// A delivery of a whole batch failed (batch handlers).
    fn failed_delivery_batch(&self, records: &[R], error: &SharedError, attempt: u32) {
        let _ = (records, error, attempt);
    }
    /// A batch was recovered record by record after its retries.
    fn recovered_batch(&self, records: &[R], error: &SharedError) {
        let _ = (records, error);
    }
    /// Recovering a batch failed.
    fn recovery_failed_batch(&self, records: &[R], original: &SharedError, failure: &SharedError) {
        let _ = (records, original, failure);
    }
}

/// A batch handler's way to say which record failed (Spring's `BatchListenerFailedException`):
/// records before it are committed, it is retried and recovered on its own, the rest follow.
/// The container finds it at the top of the handler's error or anywhere in its source chain
/// ([`find`](Self::find)). At the top, the failed record's error is its `cause`; deeper, the
/// whole error.
#[derive(Debug, thiserror::Error)]
#[error("batch listener failed at {position}")]
pub struct BatchListenerFailed {
    /// Which record failed.
    pub position: FailedPosition,
    /// Why.
    #[source]
    pub cause: HandlerError,
}

/// Which record of a batch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailedPosition {
    /// The index in the batch handed to the handler.
    Index(usize),
    /// The record's topic, partition and offset.
    Record {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
}

impl fmt::Display for FailedPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailedPosition::Index(i) => write!(f, "@-{i}"),
            FailedPosition::Record {
                topic,
                partition,
                offset,
            } => write!(f, "{topic}-{partition}@{offset}"),
        }
    }
}

impl BatchListenerFailed {
    /// The first `BatchListenerFailed` in `error`'s source chain, outermost first (the
    /// container looks for it there, as Spring looks through the causes): an application error
    /// may wrap it.
    ///
    /// ```
    /// use rekafka::listener::BatchListenerFailed;
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("billing failed")]
    /// struct BillingFailed(#[source] BatchListenerFailed);
    ///
    /// let e = BillingFailed(BatchListenerFailed::at_index(3, "bad amount"));
    /// let found = BatchListenerFailed::find(&e).map(|b| b.position.clone());
    /// assert_eq!(found, Some(rekafka::listener::FailedPosition::Index(3)));
    /// ```
    pub fn find<'a>(error: &'a (dyn StdError + 'static)) -> Option<&'a BatchListenerFailed> {
        super::classify::find_in_chain(error)
    }

    /// The record at `index` of the batch failed with `cause`.
    pub fn at_index(index: usize, cause: impl Into<HandlerError>) -> Self {
        BatchListenerFailed {
            position: FailedPosition::Index(index),
            cause: cause.into(),
        }
    }

    /// `record` failed with `cause`.
    pub fn at_record<R: ListenerRecord>(record: &R, cause: impl Into<HandlerError>) -> Self {
        BatchListenerFailed {
            position: FailedPosition::Record {
                topic: record.topic().to_owned(),
                partition: record.partition(),
                offset: record.offset(),
            },
            cause: cause.into(),
        }
    }
}

/// A record handler's failure, as an async listener-level error handler sees it
/// ([`ContainerBuilder::async_listener_error_handler`](super::ContainerBuilder::async_listener_error_handler)).
#[derive(Debug)]
#[non_exhaustive]
pub struct ListenerFailure<R> {
    /// The record (as the container has it: without the `kafka_deliveryAttempt` header).
    pub record: R,
    /// The record handler's error.
    pub error: HandlerError,
    /// The delivery attempt that failed, from 1 (attempts survive rebalances and restarts,
    /// as the error handler's).
    pub attempt: u32,
}

/// What happens when a record's recovery has failed
/// [`max_recovery_failures`](DefaultErrorHandler::max_recovery_failures) times in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RecoveryHalt {
    /// Keep the partition paused (other partitions flow), fire
    /// [`ContainerEvent::RecoveryHalted`](super::ContainerEvent::RecoveryHalted), and retry the
    /// recovery every [`halt_probe_interval`](DefaultErrorHandler::halt_probe_interval).
    #[default]
    PausePartition,
    /// Stop the container with [`StopReason::Abnormal`](super::StopReason::Abnormal).
    StopContainer,
}

/// Whether the `kafka_deliveryAttempt` header is added before the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DeliveryAttemptHeader {
    /// Not added (Spring's default).
    #[default]
    Off,
    /// Added (4-byte big-endian, from 1), replacing one already present.
    On,
}

type BackOffFunction<R> = Arc<dyn Fn(&R, &SharedError) -> Option<Arc<dyn BackOff>> + Send + Sync>;

/// Spring's `DefaultErrorHandler`: seek the failing partition back, back off, recover when
/// exhausted — with three improvements: the back-off pauses only the failing partition (the
/// group never blocks), the attempt count travels in commit metadata, and a failing recoverer
/// is capped instead of looping.
///
/// ```
/// use std::time::Duration;
/// use rekafka::listener::{DefaultErrorHandler, ExponentialBackOff, RecoveryHalt};
/// # #[derive(Clone)] struct R;
/// # impl rekafka::listener::ListenerRecord for R {
/// #   fn topic(&self) -> &str { "t" } fn partition(&self) -> i32 { 0 } fn offset(&self) -> i64 { 0 }
/// #   fn timestamp(&self) -> i64 { 0 }
/// #   fn timestamp_type(&self) -> rekafka::protocol::record::TimestampType { Default::default() }
/// #   fn key(&self) -> Option<&bytes::Bytes> { None } fn value(&self) -> Option<&bytes::Bytes> { None }
/// #   fn headers(&self) -> Vec<rekafka::protocol::record::Header> { vec![] }
/// #   fn with_header(&self, _: rekafka::protocol::record::Header) -> Self { R }
/// #   fn deserialization_failure(&self) -> Option<rekafka::listener::DeserializationFailed> { None }
/// #   fn with_deserialization_failure(&self, _: rekafka::listener::DeserializationFailed) -> Self { R }
/// # }
///
/// let handler = DefaultErrorHandler::<R>::new()
///     .back_off(ExponentialBackOff::with_max_retries(4).initial_interval(Duration::from_millis(100)))
///     .max_recovery_failures(Some(5))
///     .on_recovery_halt(RecoveryHalt::PausePartition);
/// ```
pub struct DefaultErrorHandler<R> {
    pub(crate) back_off: Arc<dyn BackOff>,
    pub(crate) back_off_fn: Option<BackOffFunction<R>>,
    pub(crate) classifier: Classifier,
    pub(crate) recoverer: Arc<dyn Recoverer<R>>,
    pub(crate) listeners: Vec<Arc<dyn RetryListener<R>>>,
    pub(crate) reset_state_on_recovery_failure: bool,
    pub(crate) reset_state_on_exception_change: bool,
    pub(crate) max_recovery_failures: Option<u32>,
    pub(crate) recovery_retry_interval: Duration,
    pub(crate) on_recovery_halt: RecoveryHalt,
    pub(crate) halt_probe_interval: Duration,
    pub(crate) delivery_attempt_header: DeliveryAttemptHeader,
    pub(crate) ack_after_handle: bool,
    pub(crate) commit_recovered: bool,
    pub(crate) seek_after_error: bool,
}

impl<R> fmt::Debug for DefaultErrorHandler<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DefaultErrorHandler")
            .field("back_off", &self.back_off)
            .field("classifier", &self.classifier)
            .field("max_recovery_failures", &self.max_recovery_failures)
            .field("on_recovery_halt", &self.on_recovery_halt)
            .finish_non_exhaustive()
    }
}

impl<R: ListenerRecord> Default for DefaultErrorHandler<R> {
    fn default() -> Self {
        DefaultErrorHandler {
            back_off: Arc::new(FixedBackOff::default()),
            back_off_fn: None,
            classifier: Classifier::default(),
            recoverer: Arc::new(LoggingRecoverer),
            listeners: Vec::new(),
            reset_state_on_recovery_failure: true,
            reset_state_on_exception_change: true,
            max_recovery_failures: Some(5),
            recovery_retry_interval: Duration::from_secs(1),
            on_recovery_halt: RecoveryHalt::PausePartition,
            halt_probe_interval: Duration::from_secs(30),
            delivery_attempt_header: DeliveryAttemptHeader::Off,
            ack_after_handle: true,
            commit_recovered: false,
            seek_after_error: true,
        }
    }
}

impl<R: ListenerRecord> DefaultErrorHandler<R> {
    /// The defaults: [`FixedBackOff::default`] (0 ms, 9 retries), [`LoggingRecoverer`], the
    /// default [`Classifier`], resets on recovery failure and on error change, at most 5
    /// recovery failures before [`RecoveryHalt::PausePartition`].
    pub fn new() -> Self {
        Self::default()
    }

    /// The back-off policy. Default: [`FixedBackOff::default`] (0 ms, 9 retries).
    pub fn back_off(mut self, back_off: impl BackOff + 'static) -> Self {
        self.back_off = Arc::new(back_off);
        self
    }

    /// Chooses the back-off per (record, error); `None` uses the default policy.
    pub fn back_off_fn(
        mut self,
        f: impl Fn(&R, &SharedError) -> Option<Arc<dyn BackOff>> + Send + Sync + 'static,
    ) -> Self {
        self.back_off_fn = Some(Arc::new(f));
        self
    }

    /// The classifier. Default: [`Classifier::default`].
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// Mutable access to the classifier, to add or remove rules.
    pub fn classifier_mut(&mut self) -> &mut Classifier {
        &mut self.classifier
    }

    /// The recoverer. Default: [`LoggingRecoverer`].
    pub fn recoverer(mut self, recoverer: impl Recoverer<R> + 'static) -> Self {
        self.recoverer = Arc::new(recoverer);
        self
    }

    /// The recoverer, shared.
    pub fn recoverer_arc(mut self, recoverer: Arc<dyn Recoverer<R>>) -> Self {
        self.recoverer = recoverer;
        self
    }

    /// Adds a retry listener.
    pub fn retry_listener(mut self, listener: impl RetryListener<R> + 'static) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Adds a shared retry listener.
    pub fn retry_listener_arc(mut self, listener: Arc<dyn RetryListener<R>>) -> Self {
        self.listeners.push(listener);
        self
    }

    /// Restart the back-off after a recovery failure. Default: true.
    pub fn reset_state_on_recovery_failure(mut self, reset: bool) -> Self {
        self.reset_state_on_recovery_failure = reset;
        self
    }

    /// Restart the back-off when a record fails with a different kind of error. Default: true.
    pub fn reset_state_on_exception_change(mut self, reset: bool) -> Self {
        self.reset_state_on_exception_change = reset;
        self
    }

    /// Consecutive recovery failures of one record before [`on_recovery_halt`]
    /// applies; `None` never halts (every failure just redelivers). Default: `Some(5)`.
    ///
    /// [`on_recovery_halt`]: Self::on_recovery_halt
    pub fn max_recovery_failures(mut self, max: Option<u32>) -> Self {
        self.max_recovery_failures = max;
        self
    }

    /// The pause before redelivering a record whose recovery failed. Default: 1 s.
    pub fn recovery_retry_interval(mut self, interval: Duration) -> Self {
        self.recovery_retry_interval = interval;
        self
    }

    /// What happens at the recovery-failure cap. Default: [`RecoveryHalt::PausePartition`].
    pub fn on_recovery_halt(mut self, halt: RecoveryHalt) -> Self {
        self.on_recovery_halt = halt;
        self
    }

    /// How often a halted record's recovery is retried. Default: 30 s.
    pub fn halt_probe_interval(mut self, interval: Duration) -> Self {
        self.halt_probe_interval = interval;
        self
    }

    /// Whether to add the `kafka_deliveryAttempt` header. Default: [`DeliveryAttemptHeader::Off`].
    pub fn delivery_attempt_header(mut self, header: DeliveryAttemptHeader) -> Self {
        self.delivery_attempt_header = header;
        self
    }

    /// Whether a recovered record is acknowledged (Spring's `ackAfterHandle`). When false, its
    /// offset is committed only once a later record of its partition is. Default: true.
    pub fn ack_after_handle(mut self, ack: bool) -> Self {
        self.ack_after_handle = ack;
        self
    }

    /// Whether a recovered record's offset is committed as soon as it is recovered, before the
    /// rest of the poll, whatever the ack mode's schedule (Spring's `commitRecovered`, which
    /// Spring applies in `MANUAL_IMMEDIATE` only; see `docs/spring-differences.md`). A dead
    /// letter in flight ([`PublishWait::PerPoll`](super::PublishWait::PerPoll)) is committed
    /// when the container completes it. Default: false.
    pub fn commit_recovered(mut self, commit: bool) -> Self {
        self.commit_recovered = commit;
        self
    }

    /// Whether a record to retry is fetched again (true: its partition is sought back to it,
    /// Spring's default) or redelivered from memory (false: Spring's `seekAfterError=false`).
    ///
    /// With `false` the container keeps the failed record and the partition's records after it
    /// in the poll, pauses the partition for the back-off, and hands them to the handler again
    /// from memory: no seek, no second fetch. Unlike Spring, which sleeps on the consumer's
    /// thread with the whole consumer paused, only the failing partition waits; the others
    /// flow. It applies to record handlers handling one partition at a time
    /// ([`concurrency`](super::ContainerBuilder::concurrency) 1) outside the exactly-once mode
    /// (Spring, too, seeks in a transaction); elsewhere, and for a record whose recovery failed,
    /// the partition is sought back as usual. Default: true.
    pub fn seek_after_error(mut self, seek: bool) -> Self {
        self.seek_after_error = seek;
        self
    }

    pub(crate) fn back_off_for(&self, record: &R, error: &SharedError) -> Arc<dyn BackOff> {
        self.back_off_fn
            .as_ref()
            .and_then(|f| f(record, error))
            .unwrap_or_else(|| self.back_off.clone())
    }
}

/// Whether `back_off` allows no retry at all (its first back-off is already the end).
fn no_retries(back_off: &dyn BackOff) -> bool {
    back_off.start().next_back_off().is_none()
}

/// The back-off, then recovery: the failed-record tracker decides between a redelivery after
/// the back-off's next delay and a recovery (classification first: a non-retryable error is
/// recovered at once).
impl<R: ListenerRecord> CommonErrorHandler<R> for DefaultErrorHandler<R> {
    fn handle_one(&self, failure: &mut RecordFailure<'_, R>) -> Disposition {
        let offset = failure.record.offset();
        // A whole batch of the exactly-once mode retries under the default back-off.
        let back_off = if failure.whole_batch {
            self.back_off.clone()
        } else {
            self.back_off_for(failure.record, failure.error)
        };
        let err_ref: &(dyn StdError + 'static) = failure.error.as_ref();
        let decision = failure.tracker.failed(
            failure.partition,
            offset,
            err_ref,
            &self.classifier,
            back_off.as_ref(),
        );
        let attempt = match decision {
            Decision::Retry { attempt, .. } | Decision::Recover { attempt } => attempt,
        };
        failure.attempt = attempt;
        // A back-off that allows no retry recovers at once, without a failed delivery
        // callback (Spring's `FailedRecordTracker` with `noRetries`, which looks at the default
        // back-off; a record whose own back-off retries is still reported). A batch of the
        // exactly-once mode notifies no retry listener (Spring's `DefaultAfterRollbackProcessor`).
        let retries = !(no_retries(self.back_off.as_ref()) && no_retries(back_off.as_ref()));
        if retries && !failure.whole_batch {
            for l in &self.listeners {
                l.failed_delivery(failure.record, failure.error, attempt);
            }
        }
        match decision {
            Decision::Retry { delay, .. } => Disposition::Redeliver { delay },
            Decision::Recover { .. } if failure.in_transaction => Disposition::RecoverInTransaction,
            Decision::Recover { .. } => Disposition::Recover,
        }
    }

    fn handle_batch(&self, failure: &mut BatchFailure<'_, R>) -> Disposition {
        let err_ref: &(dyn StdError + 'static) = failure.error.as_ref();
        if !self.classifier.is_retryable(err_ref) {
            return Disposition::Recover;
        }
        let Some(first) = failure.records.first() else {
            return Disposition::Recover;
        };
        let error = failure.error;
        match failure.retry.next_delay(|| self.back_off_for(first, error)) {
            Some(delay) => Disposition::Redeliver { delay },
            None => Disposition::Recover,
        }
    }

    fn ack_after_handle(&self) -> bool {
        self.ack_after_handle
    }

    fn commit_recovered(&self) -> bool {
        self.commit_recovered
    }

    fn seeks_after_handling(&self) -> bool {
        self.seek_after_error
    }

    fn recoverer(&self) -> Arc<dyn Recoverer<R>> {
        self.recoverer.clone()
    }

    fn retry_listeners(&self) -> Vec<Arc<dyn RetryListener<R>>> {
        self.listeners.clone()
    }

    fn recovery_policy(&self) -> RecoveryPolicy {
        RecoveryPolicy {
            recovery_retry_interval: self.recovery_retry_interval,
            halt_probe_interval: self.halt_probe_interval,
            on_recovery_halt: self.on_recovery_halt,
            max_recovery_failures: self.max_recovery_failures,
            reset_state_on_recovery_failure: self.reset_state_on_recovery_failure,
            reset_state_on_exception_change: self.reset_state_on_exception_change,
        }
    }

    fn delivery_attempt_header(&self) -> DeliveryAttemptHeader {
        self.delivery_attempt_header
    }
}

//! The listener container: drives a consumer, calls the handler, applies the error handler.

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::classify::HandlerError;
use super::consumer::{ContainerConsumer, ListenerRecord, OffsetToCommit};
use super::events::{EventHub, Events, HaltedPartition};
use super::fetch_failure::{FailedList, FetchFailures, PartitionFailurePolicy};
use super::handler::{
    BatchListenerFailed, BoxFuture, DefaultErrorHandler, DeliveryAttemptHeader, FailedPosition,
    ListenerFailure, Recovery, RecoveryHalt, SharedError,
};
use super::tracker::{
    Decision, FailedRecordTracker, RecoveryFailureDecision, RetryState, TopicPartition,
};
use super::{DELIVERY_ATTEMPT_HEADER, delivery_attempt_header_value};
use crate::hash::FastMap;
use crate::protocol::record::Header;
use crate::transaction::TransactionalProducer;
use crate::{Error, ErrorKind, KafkaCode, Result};

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
    /// The container stopped itself (e.g. [`RecoveryHalt::StopContainer`]).
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
    PartitionsPaused(Vec<TopicPartition>),
    /// Partitions were resumed.
    PartitionsResumed(Vec<TopicPartition>),
    /// A delivery failed.
    FailedDelivery {
        /// The partition.
        partition: TopicPartition,
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
        partition: TopicPartition,
        /// The record's offset.
        offset: i64,
    },
    /// The recoverer failed.
    RecoveryFailed {
        /// The partition.
        partition: TopicPartition,
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
        partition: TopicPartition,
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
        partition: TopicPartition,
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
}

/// Where acknowledgments go until the container drains them: (partition, next offset).
type AckSink = Arc<Mutex<Vec<(TopicPartition, i64)>>>;

#[derive(Clone, Debug)]
enum AckTargets {
    /// Not a manual ack mode: the container acks by itself.
    Automatic,
    One(TopicPartition, i64),
    Many(Arc<Vec<(TopicPartition, i64)>>),
}

impl Acknowledgment {
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
}

type RecordFn<R> =
    Arc<dyn Fn(R, Acknowledgment) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;
type BatchFn<R> = Arc<
    dyn Fn(Vec<R>, Acknowledgment) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync,
>;
type DeserializationCheck<R> = Arc<
    dyn Fn(&R) -> std::result::Result<(), super::classify::DeserializationFailed> + Send + Sync,
>;
/// A listener-level error handler: (record, error, delivery attempt) → its outcome and the
/// seeks it asks for.
type ListenerErrorFn<R> = Arc<
    dyn Fn(&R, HandlerError, u32) -> BoxFuture<'static, (Result<(), HandlerError>, Seeks)>
        + Send
        + Sync,
>;

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
    requests: Vec<(TopicPartition, i64)>,
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
}

enum Handler<R> {
    Record(RecordFn<R>),
    Batch(BatchFn<R>),
}

/// Builds and starts a [`ListenerContainer`].
///
/// ```no_run
/// # async fn demo<C: rekafka::listener::ContainerConsumer>(consumer: C) -> rekafka::Result<()> {
/// use std::time::Duration;
/// use rekafka::listener::{AckMode, DefaultErrorHandler, FixedBackOff, ListenerContainer};
///
/// let handle = ListenerContainer::builder(consumer)
///     .record_handler(|record| async move {
///         // process the record; an Err is retried per the back-off, then recovered
///         Ok(())
///     })
///     .error_handler(DefaultErrorHandler::new().back_off(FixedBackOff::new(Duration::from_millis(100), 3)))
///     .ack_mode(AckMode::Record)
///     .start()?;
/// let mut events = handle.events();
/// // ...
/// handle.stop().await;
/// # Ok(()) }
/// ```
pub struct ContainerBuilder<C: ContainerConsumer> {
    consumer: C,
    handler: Option<Handler<C::Record>>,
    error_handler: DefaultErrorHandler<C::Record>,
    listener_error_handler: Option<ListenerErrorFn<C::Record>>,
    deserialization_check: Option<DeserializationCheck<C::Record>>,
    ack_mode: AckMode,
    poll_timeout: Duration,
    idle_interval: Option<Duration>,
    concurrency: usize,
    transactional: Option<Transactional>,
    events: Arc<EventHub>,
    partition_failure_policy: PartitionFailurePolicy,
}

/// What the container does when its transactional producer is fenced (another instance with
/// the same `transactional.id` took over, or the transaction coordinator fenced it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnFenced {
    /// Stop with [`StopReason::Fenced`] (no rollback processing: the records are the new
    /// owner's now).
    #[default]
    Stop,
    /// Log it, rewind to the committed offsets, make a new producer with the factory given to
    /// [`ContainerBuilder::transactional_with`] and go on. Without a factory, stops.
    Continue,
}

type ProducerFactory =
    Arc<dyn Fn() -> BoxFuture<'static, Result<TransactionalProducer>> + Send + Sync>;

struct Transactional {
    producer: Arc<TransactionalProducer>,
    factory: Option<ProducerFactory>,
    on_fenced: OnFenced,
}

/// The listener container (see [`ListenerContainer::builder`]).
#[derive(Debug)]
pub struct ListenerContainer;

impl ListenerContainer {
    /// A builder for a container driving `consumer`.
    pub fn builder<C: ContainerConsumer>(consumer: C) -> ContainerBuilder<C> {
        let events = EventHub::new();
        ContainerBuilder {
            consumer,
            handler: None,
            error_handler: DefaultErrorHandler::default(),
            listener_error_handler: None,
            deserialization_check: None,
            ack_mode: AckMode::Batch,
            poll_timeout: Duration::from_secs(5),
            idle_interval: None,
            concurrency: 1,
            transactional: None,
            events,
            partition_failure_policy: PartitionFailurePolicy::default(),
        }
    }
}

impl<C: ContainerConsumer> ContainerBuilder<C> {
    /// The per-record handler. Records of one partition are handled in order, one at a time.
    pub fn record_handler<F, Fut>(self, f: F) -> Self
    where
        F: Fn(C::Record) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.record_handler_with_ack(move |r, _ack| f(r))
    }

    /// A per-record handler that receives an [`Acknowledgment`] (for the manual ack modes).
    pub fn record_handler_with_ack<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(C::Record, Acknowledgment) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handler = Some(Handler::Record(Arc::new(move |r, a| Box::pin(f(r, a)))));
        self
    }

    /// The batch handler: gets every record of a poll at once. Fail with
    /// [`BatchListenerFailed`] (the error itself, or anywhere in its source chain) to name the
    /// failed record; any other error retries the whole batch in memory.
    pub fn batch_handler<F, Fut>(self, f: F) -> Self
    where
        F: Fn(Vec<C::Record>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.batch_handler_with_ack(move |r, _ack| f(r))
    }

    /// A batch handler that receives an [`Acknowledgment`] for the whole batch.
    pub fn batch_handler_with_ack<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Vec<C::Record>, Acknowledgment) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handler = Some(Handler::Batch(Arc::new(move |r, a| Box::pin(f(r, a)))));
        self
    }

    /// The error handler. Default: [`DefaultErrorHandler::default`].
    pub fn error_handler(mut self, handler: DefaultErrorHandler<C::Record>) -> Self {
        self.error_handler = handler;
        self
    }

    /// A listener-level error handler (Spring's `KafkaListenerErrorHandler`), run before the
    /// container's: `Ok(())` treats the record as processed; `Err` passes an error on to the
    /// container's error handler.
    pub fn listener_error_handler(
        mut self,
        f: impl Fn(&C::Record, HandlerError) -> Result<(), HandlerError> + Send + Sync + 'static,
    ) -> Self {
        self.listener_error_handler =
            Some(sync_listener_error_fn(move |r, e, _: &mut Seeks| f(r, e)));
        self
    }

    /// The consumer-aware variant (Spring's `ConsumerAwareListenerErrorHandler`): the handler
    /// may also ask for seeks ([`Seeks`]), applied right after it returns.
    pub fn consumer_aware_listener_error_handler(
        mut self,
        f: impl Fn(&C::Record, HandlerError, &mut Seeks) -> Result<(), HandlerError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.listener_error_handler = Some(sync_listener_error_fn(f));
        self
    }

    /// An async listener-level error handler (Spring's `KafkaListenerErrorHandler`), run
    /// before the container's error handler. It gets a [`ListenerFailure`]: the record, the
    /// error and the delivery attempt (from 1, counted as for the `kafka_deliveryAttempt`
    /// header), and may await (publish a dead letter, call a service).
    ///
    /// * `Ok(value)`: the record is processed (acknowledged as if the record handler had
    ///   succeeded), and `value` is the listener's result for it, handed to `result` (where
    ///   Spring sends a non-null value as the reply);
    /// * `Err(e)`: `e` goes on to the container's error handler (retry, recover).
    ///
    /// It replaces any listener-level handler set before. For seeks, use
    /// [`consumer_aware_listener_error_handler`](Self::consumer_aware_listener_error_handler).
    ///
    /// Spring's recipe — after 3 attempts, dead-letter the record and answer a value:
    ///
    /// ```no_run
    /// # async fn demo(consumer: rekafka::consumer::Consumer, dlt: rekafka::listener::DeadLetterPublisher<rekafka::listener::ListenerConsumerRecord>) -> rekafka::Result<()> {
    /// use std::sync::Arc;
    /// use rekafka::listener::{
    ///     HandlerError, ListenerConsumerRecord, ListenerContainer, ListenerFailure, ListenerRecord,
    ///     SharedError,
    /// };
    ///
    /// let dlt = Arc::new(dlt);
    /// let handle = ListenerContainer::builder(consumer)
    ///     .record_handler(|record: ListenerConsumerRecord| async move {
    ///         // ...
    ///         Ok(())
    ///     })
    ///     .async_listener_error_handler(
    ///         move |failure: ListenerFailure<ListenerConsumerRecord>| {
    ///             let dlt = dlt.clone();
    ///             async move {
    ///                 if failure.attempt < 3 {
    ///                     return Err(failure.error); // the container retries
    ///                 }
    ///                 let error: SharedError = Arc::from(failure.error);
    ///                 dlt.publish(&failure.record, &error).await.map_err(|e| Box::new(e) as HandlerError)?;
    ///                 Ok("FAILED")
    ///             }
    ///         },
    ///         |record: &ListenerConsumerRecord, value: &'static str| {
    ///             tracing::info!(offset = record.offset(), value, "listener result");
    ///         },
    ///     )
    ///     .start()?;
    /// # let _ = handle; Ok(()) }
    /// ```
    pub fn async_listener_error_handler<T, F, Fut>(
        mut self,
        handler: F,
        result: impl Fn(&C::Record, T) + Send + Sync + 'static,
    ) -> Self
    where
        T: Send + 'static,
        F: Fn(ListenerFailure<C::Record>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<T, HandlerError>> + Send + 'static,
    {
        let result = Arc::new(result);
        self.listener_error_handler = Some(Arc::new(move |r: &C::Record, error, attempt| {
            let outcome = handler(ListenerFailure {
                record: r.clone(),
                error,
                attempt,
            });
            let (record, result) = (r.clone(), result.clone());
            Box::pin(async move {
                let outcome = outcome.await.map(|value| result(&record, value));
                (outcome, Seeks::default())
            })
        }));
        self
    }

    /// Checks each polled record before any handler sees it (Spring's
    /// `ErrorHandlingDeserializer`): a record that fails is never handed to the handler and goes
    /// to the recoverer on its first failure, with its raw bytes. For rekafka's consumer, build
    /// one with [`deserialization_check`](super::deserialization_check).
    pub fn deserialization_check(
        mut self,
        check: impl Fn(&C::Record) -> std::result::Result<(), super::classify::DeserializationFailed>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.deserialization_check = Some(Arc::new(check));
        self
    }

    /// The ack mode. Default: [`AckMode::Batch`].
    pub fn ack_mode(mut self, mode: AckMode) -> Self {
        self.ack_mode = mode;
        self
    }

    /// The longest a single poll waits. Default: 5 s (Spring's `pollTimeout`). Back-off
    /// resumes and stop requests do not wait for it.
    pub fn poll_timeout(mut self, timeout: Duration) -> Self {
        self.poll_timeout = timeout;
        self
    }

    /// Emit [`ContainerEvent::Idle`] when no records arrive for this long. Default: off.
    pub fn idle_event_interval(mut self, interval: Duration) -> Self {
        self.idle_interval = Some(interval);
        self
    }

    /// How many partitions' records a record handler may work on at once (each partition's
    /// records stay in order, one at a time). Default: 1, like Spring's container thread.
    pub fn concurrency(mut self, partitions: usize) -> Self {
        self.concurrency = partitions.max(1);
        self
    }

    /// Exactly-once processing: each poll's records are handled inside one transaction of
    /// `producer` (which must have run `init_transactions`); the records the handler sends
    /// through the same producer and the consumed offsets commit together or not at all. On a
    /// failure the transaction is aborted, every partition of the poll goes back to its
    /// committed offset (KAFKA-17582), and the error handler acts as Spring's
    /// `DefaultAfterRollbackProcessor`: the failed record is redelivered under the back-off
    /// and, when the attempts are used up, recovered inside a new transaction that also
    /// commits its offset — so a dead letter and the skip of the record are atomic. A batch
    /// handler's batch is retried under the same (bounded) back-off, then its records (those
    /// of the batch that failed last, never others) are recovered record by record in the
    /// next transaction. The error handler's recoverer should send through this producer (e.g. a
    /// [`TransactionalDeadLetters`](super::TransactionalDeadLetters)) for the dead letter to
    /// join the transaction.
    pub fn transactional(mut self, producer: Arc<TransactionalProducer>) -> Self {
        self.transactional = Some(Transactional {
            producer,
            factory: None,
            on_fenced: OnFenced::Stop,
        });
        self
    }

    /// [`transactional`](Self::transactional), with a factory for a new producer (already
    /// initialized) when the current one is fenced and `on_fenced` is [`OnFenced::Continue`].
    pub fn transactional_with<F, Fut>(
        mut self,
        producer: Arc<TransactionalProducer>,
        on_fenced: OnFenced,
        factory: F,
    ) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<TransactionalProducer>> + Send + 'static,
    {
        self.transactional = Some(Transactional {
            producer,
            factory: Some(Arc::new(move || Box::pin(factory()))),
            on_fenced,
        });
        self
    }

    /// What to do with a partition whose fetch fails with an error no retry fixes. Default:
    /// [`PartitionFailurePolicy::PauseWithAlarm`].
    pub fn partition_failure_policy(mut self, policy: PartitionFailurePolicy) -> Self {
        self.partition_failure_policy = policy;
        self
    }

    /// Subscribes to events before the container starts (so `Started` is seen). See [`Events`]:
    /// alarms are never lost.
    pub fn subscribe(&self) -> Events {
        self.events.subscribe()
    }

    /// Starts the container's task (inside a tokio runtime).
    pub fn start(self) -> Result<ContainerHandle> {
        let handler = self
            .handler
            .ok_or_else(|| Error::config("a listener container needs a record or batch handler"))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("a listener container must start inside a tokio runtime"))?;
        if self.consumer.auto_commit_enabled() {
            return Err(Error::config(
                "the listener container commits offsets itself (per its ack mode): create the \
                 consumer with auto-commit disabled (enable.auto.commit=false)",
            ));
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let (pause_tx, pause_rx) = watch::channel(false);
        let mut tracker = FailedRecordTracker::new();
        tracker.reset_state_on_exception_change =
            self.error_handler.reset_state_on_exception_change;
        tracker.reset_state_on_recovery_failure =
            self.error_handler.reset_state_on_recovery_failure;
        tracker.max_recovery_failures = self.error_handler.max_recovery_failures;
        let group = self.consumer.group_id();
        let failed = FailedList::default();
        let runner = Runner {
            fetch_failures: FetchFailures::new(self.partition_failure_policy, failed.clone()),
            consumer: self.consumer,
            handler,
            eh: self.error_handler,
            leh: self.listener_error_handler,
            check: self.deserialization_check,
            ack_mode: self.ack_mode,
            poll_timeout: self.poll_timeout,
            idle_interval: self.idle_interval,
            concurrency: self.concurrency,
            txn: self.transactional,
            pending_recovery: FastMap::default(),
            in_flight: FastMap::default(),
            in_flight_count: 0,
            capped: FastMap::default(),
            last_capped_commit: Instant::now(),
            recovered_ahead: FastMap::default(),
            acked_to: FastMap::default(),
            recovered_in_txn: Vec::new(),
            sought_in_txn: HashSet::new(),
            events: self.events.clone(),
            stop: stop_rx,
            pause: pause_rx,
            tracker,
            backing_off: FastMap::default(),
            halted: FastMap::default(),
            assignment: HashSet::new(),
            pending: FastMap::default(),
            pending_count: 0,
            commit_owed: false,
            last_commit: Instant::now(),
            last_records: Instant::now(),
            idle_notified: false,
            container_paused: false,
            acks: Arc::new(Mutex::new(Vec::new())),
            group,
            stop_reason: None,
            sought: false,
            rewound: FastMap::default(),
            panicked: false,
        };
        let task = runtime.spawn(runner.run());
        Ok(ContainerHandle {
            stop: stop_tx,
            pause: pause_tx,
            events: self.events,
            task: Some(task),
            failed,
        })
    }
}

/// A running container. Dropping it stops the container (without waiting).
#[derive(Debug)]
pub struct ContainerHandle {
    stop: watch::Sender<bool>,
    pause: watch::Sender<bool>,
    events: Arc<EventHub>,
    task: Option<JoinHandle<StopReason>>,
    failed: FailedList,
}

impl ContainerHandle {
    /// Subscribes to the container's events. See [`Events`]: alarms
    /// ([`ContainerEvent::RecoveryHalted`]) are never lost.
    pub fn events(&self) -> Events {
        self.events.subscribe()
    }

    /// The partitions halted now because their record could not be recovered (the state behind
    /// [`ContainerEvent::RecoveryHalted`]): each stays paused until a later recovery of its
    /// record succeeds ([`DefaultErrorHandler::halt_probe_interval`]) or it is revoked.
    ///
    /// ```no_run
    /// # fn demo(handle: &rekafka::listener::ContainerHandle) {
    /// for h in handle.halted_partitions() {
    ///     eprintln!("{}-{} halted at offset {} after {} recovery failures",
    ///         h.partition.0, h.partition.1, h.offset, h.failures);
    /// }
    /// # }
    /// ```
    pub fn halted_partitions(&self) -> Vec<HaltedPartition> {
        self.events.halted_partitions()
    }

    /// Pauses consumption (all partitions) before the next poll (within the poll timeout);
    /// membership is kept.
    pub fn pause(&self) {
        self.pause.send_replace(true);
    }

    /// Resumes after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.pause.send_replace(false);
    }

    /// The partitions whose fetch failed with an error no retry fixes, with their errors, as
    /// the container last saw them (see [`PartitionFailurePolicy`]).
    pub fn failed_partitions(&self) -> Vec<(TopicPartition, Error)> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the container's task is still running.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops gracefully: the record in hand is finished, back-off waits end at once, handled
    /// offsets are committed and the consumer leaves its group. Returns why the container
    /// stopped (it may have stopped earlier by itself).
    pub async fn stop(mut self) -> StopReason {
        self.stop.send_replace(true);
        match self.task.take() {
            Some(task) => task.await.unwrap_or(StopReason::Error),
            None => StopReason::Normal,
        }
    }

    /// [`stop`](Self::stop), waiting at most `timeout`. A container that has not stopped by
    /// then is still stopping: nothing is cut short (the record in hand is finished, the final
    /// commit made, the consumer closed, exactly as with `stop`), and [`StopTimedOut`] hands
    /// the handle back, to [`join`](Self::join) later or to drop (the container then finishes
    /// stopping in the background).
    pub async fn stop_timeout(mut self, timeout: Duration) -> Result<StopReason, StopTimedOut> {
        self.stop.send_replace(true);
        let Some(task) = self.task.as_mut() else {
            return Ok(StopReason::Normal);
        };
        match tokio::time::timeout(timeout, task).await {
            Ok(joined) => {
                self.task = None;
                Ok(joined.unwrap_or(StopReason::Error))
            }
            Err(_) => Err(StopTimedOut {
                handle: self,
                waited: timeout,
            }),
        }
    }

    /// Waits until the container stops by itself (or is stopped elsewhere).
    pub async fn join(mut self) -> StopReason {
        match self.task.take() {
            Some(task) => task.await.unwrap_or(StopReason::Error),
            None => StopReason::Normal,
        }
    }
}

/// The container did not stop within the time given to [`ContainerHandle::stop_timeout`]. It
/// is still stopping (the stop request stands; nothing was cut short, so the commit guarantees
/// hold): [`into_handle`](Self::into_handle) gives the handle back to wait for it.
#[derive(Debug)]
pub struct StopTimedOut {
    handle: ContainerHandle,
    waited: Duration,
}

impl StopTimedOut {
    /// How long `stop_timeout` waited.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The container's handle ([`ContainerHandle::join`] waits for the stop to finish).
    pub fn into_handle(self) -> ContainerHandle {
        self.handle
    }
}

impl std::fmt::Display for StopTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the listener container did not stop within {:?}; it is still stopping",
            self.waited
        )
    }
}

impl std::error::Error for StopTimedOut {}

impl Drop for ContainerHandle {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

/// A recovery under way ([`Recovery::InFlight`]).
struct InFlight<R> {
    record: R,
    error: SharedError,
    done: BoxFuture<'static, std::result::Result<(), HandlerError>>,
}

struct Halted<R> {
    record: R,
    error: SharedError,
    next_probe: Instant,
}

/// What to do with the rest of a partition's records in hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Continue,
    SkipPartition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckSource {
    Handler,
    Recovered,
}

struct Runner<C: ContainerConsumer> {
    consumer: C,
    handler: Handler<C::Record>,
    eh: DefaultErrorHandler<C::Record>,
    leh: Option<ListenerErrorFn<C::Record>>,
    check: Option<DeserializationCheck<C::Record>>,
    ack_mode: AckMode,
    poll_timeout: Duration,
    idle_interval: Option<Duration>,
    concurrency: usize,
    txn: Option<Transactional>,
    /// Exactly-once mode: per partition, the records (offsets `from..=to`) whose attempts are
    /// used up, to recover (with the error) when they come again, inside that poll's
    /// transaction: one record, or a partition's part of a failed batch (the records the
    /// handler saw).
    pending_recovery: FastMap<TopicPartition, (i64, i64, SharedError)>,
    /// Recoveries under way per partition, in offset order: commits of a partition stop at
    /// its first one.
    in_flight: FastMap<TopicPartition, VecDeque<InFlight<C::Record>>>,
    /// The number of recoveries in `in_flight`.
    in_flight_count: usize,
    /// Per partition, the offset last committed in place of a higher one held back by a
    /// recovery in flight (not committed again).
    capped: FastMap<TopicPartition, i64>,
    /// When a capped offset was last committed.
    last_capped_commit: Instant,
    /// Recovered records not acknowledged in order yet, per partition in offset order, each
    /// with whether the consumer's position is past it: records whose recovery completed
    /// before their partition was sought back to an earlier record whose recovery failed, and
    /// (manual ack modes) recovered records the user's acknowledgments have not reached. They
    /// are skipped when they come again; an acknowledgment of the record before one moves over
    /// it ([`advance_pending`](Self::advance_pending)). Forgotten once a commit passes them and
    /// the position is past them.
    recovered_ahead: FastMap<TopicPartition, Vec<(i64, bool)>>,
    /// Manual ack modes: per partition, the offset below which every record is acknowledged
    /// (by the user, or recovered right after an acknowledged record); from the partition's
    /// first polled record.
    acked_to: FastMap<TopicPartition, i64>,
    /// Records recovered inside the open transaction: done only once it commits.
    recovered_in_txn: Vec<(TopicPartition, Vec<C::Record>, SharedError)>,
    /// Partitions the listener-level handler repositioned during the open transaction.
    sought_in_txn: HashSet<TopicPartition>,
    events: Arc<EventHub>,
    stop: watch::Receiver<bool>,
    pause: watch::Receiver<bool>,
    tracker: FailedRecordTracker,
    backing_off: FastMap<TopicPartition, Instant>,
    halted: FastMap<TopicPartition, Halted<C::Record>>,
    assignment: HashSet<TopicPartition>,
    pending: FastMap<TopicPartition, OffsetToCommit>,
    pending_count: u32,
    /// A commit was due while a partition's offset was held below a recovery in flight: it
    /// is made when a recovery completes (as Spring would have made it, its recoveries being
    /// synchronous).
    commit_owed: bool,
    last_commit: Instant,
    last_records: Instant,
    idle_notified: bool,
    container_paused: bool,
    acks: AckSink,
    group: Option<String>,
    stop_reason: Option<StopReason>,
    /// The listener-level handler sought the current record's partition.
    sought: bool,
    /// The handler panicked on the record just handed to it (the container is stopping).
    panicked: bool,
    /// Per partition, where the handling of the last poll has sought it back to (the lowest
    /// seek wins: see [`seek_min`](Self::seek_min)). Cleared by each poll.
    rewound: FastMap<TopicPartition, i64>,
    /// Partitions whose fetch failed, and the policy for them.
    fetch_failures: FetchFailures,
}

/// Recoveries in flight at most; past this many the container waits for them before polling.
const MAX_RECOVERIES_IN_FLIGHT: usize = 10_000;
/// While recoveries are in flight in a partition, its offset (capped below the first of them)
/// is committed at most this often.
const CAPPED_COMMIT_INTERVAL: Duration = Duration::from_millis(100);

/// Polls `fut` once without a waker to be called (the caller looks again later). Outside
/// tokio's cooperative budget: the container's task has usually spent it handling the poll's
/// records, and a budget-limited poll would report a completed recovery as pending.
fn poll_now<T>(fut: &mut BoxFuture<'static, T>) -> std::task::Poll<T> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let mut unbudgeted = tokio::task::unconstrained(fut.as_mut());
    std::pin::Pin::new(&mut unbudgeted).poll(&mut cx)
}

/// A handler panicked: the container stops with [`StopReason::Error`] (after committing the
/// work finished before), and the record or batch is not acknowledged.
#[derive(Debug)]
struct HandlerPanicked(String);

impl std::fmt::Display for HandlerPanicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the handler panicked: {}", self.0)
    }
}

impl std::error::Error for HandlerPanicked {}

/// Polls a future, catching a panic (a handler's panic must not unwind through the container's
/// task, which would skip the final commit, the leave and the `Stopped` event).
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let fut = &mut self.0;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::pin::Pin::new(&mut *fut).poll(cx)
        })) {
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Err(panic) => std::task::Poll::Ready(Err(panic)),
        }
    }
}

/// Calls a handler and runs its future, turning a panic in either into [`HandlerPanicked`].
async fn call_guarded(
    call: impl FnOnce() -> BoxFuture<'static, Result<(), HandlerError>>,
) -> std::result::Result<Result<(), HandlerError>, HandlerPanicked> {
    let message = |panic: Box<dyn std::any::Any + Send>| {
        HandlerPanicked(match panic.downcast::<String>() {
            Ok(s) => *s,
            Err(panic) => panic
                .downcast_ref::<&str>()
                .map_or_else(|| "(no message)".to_string(), |s| s.to_string()),
        })
    };
    let fut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).map_err(message)?;
    CatchUnwind(fut).await.map_err(message)
}

fn tp_of<R: ListenerRecord>(r: &R) -> TopicPartition {
    (Arc::from(r.topic()), r.partition())
}

/// Groups records by partition, keeping each partition's order and the partitions' order of
/// first appearance. Consumers return records partition by partition, so the common case is a
/// comparison with the previous record; a poll touches few partitions, so the fallback is a
/// short linear search. One `TopicPartition` is made per partition, not per record.
fn group_by_partition<R: ListenerRecord>(records: Vec<R>) -> Vec<(TopicPartition, Vec<R>)> {
    let mut out: Vec<(TopicPartition, Vec<R>)> = Vec::new();
    let mut last: Option<usize> = None;
    for r in records {
        let same = |tp: &TopicPartition| tp.1 == r.partition() && &*tp.0 == r.topic();
        let at = match last {
            Some(i) if same(&out[i].0) => Some(i),
            _ => out.iter().position(|(tp, _)| same(tp)),
        };
        match at {
            Some(i) => {
                out[i].1.push(r);
                last = Some(i);
            }
            None => {
                last = Some(out.len());
                out.push((tp_of(&r), vec![r]));
            }
        }
    }
    out
}

/// Per partition of `records`, the lowest (`i64::min`) or highest (`i64::max`) offset. One
/// `TopicPartition` is made per partition, not per record.
fn offset_bounds<R: ListenerRecord>(
    records: &[R],
    pick: fn(i64, i64) -> i64,
) -> Vec<(TopicPartition, i64)> {
    let mut out: Vec<(TopicPartition, i64)> = Vec::new();
    for r in records {
        match out
            .iter_mut()
            .find(|(tp, _)| tp.1 == r.partition() && &*tp.0 == r.topic())
        {
            Some((_, o)) => *o = pick(*o, r.offset()),
            None => out.push((tp_of(r), r.offset())),
        }
    }
    out
}

/// Whether `back_off` allows no retry at all (its first back-off is already the end).
fn no_retries(back_off: &dyn super::backoff::BackOff) -> bool {
    back_off.start().next_back_off().is_none()
}

fn stop_reason_for(e: &Error) -> Option<StopReason> {
    match e.kind() {
        ErrorKind::Authentication => Some(StopReason::Authentication),
        ErrorKind::Closed => Some(StopReason::Abnormal),
        ErrorKind::Broker(
            KafkaCode::FencedInstanceId
            | KafkaCode::ProducerFenced
            | KafkaCode::InvalidProducerEpoch,
        ) => Some(StopReason::Fenced),
        ErrorKind::Broker(
            KafkaCode::TopicAuthorizationFailed
            | KafkaCode::GroupAuthorizationFailed
            | KafkaCode::SaslAuthenticationFailed,
        ) => Some(StopReason::Authentication),
        ErrorKind::Broker(KafkaCode::OffsetOutOfRange) => Some(StopReason::NoOffset),
        _ if e.is_fatal() => Some(StopReason::Error),
        _ => None,
    }
}

impl<C: ContainerConsumer> Runner<C> {
    fn emit(&self, event: ContainerEvent) {
        self.events.emit(event);
    }

    /// Whether anybody receives events (per-record events are not built otherwise).
    fn observed(&self) -> bool {
        self.events.observed()
    }

    /// [`ContainerEvent::FailedDelivery`], if anybody receives events.
    fn emit_failed_delivery(
        &self,
        tp: &TopicPartition,
        offset: i64,
        attempt: u32,
        error: &SharedError,
    ) {
        if self.observed() {
            self.emit(ContainerEvent::FailedDelivery {
                partition: tp.clone(),
                offset,
                attempt,
                error: error.clone(),
            });
        }
    }

    /// A handler panicked: stop with [`StopReason::Error`] (as for any panic of a handler, on
    /// every path). The error stands for the record or batch, which is not acknowledged.
    fn handler_panicked(&mut self, panic: HandlerPanicked) -> HandlerError {
        tracing::error!(error = %panic, "a handler panicked; stopping");
        self.stop_reason.get_or_insert(StopReason::Error);
        self.panicked = true;
        Box::new(panic)
    }

    fn stop_requested(&self) -> bool {
        *self.stop.borrow() || self.stop_reason.is_some()
    }

    fn blocked(&self, tp: &TopicPartition) -> bool {
        self.backing_off.contains_key(tp) || self.halted.contains_key(tp)
    }

    async fn run(mut self) -> StopReason {
        self.emit(ContainerEvent::Started);
        while !self.stop_requested() {
            self.sync_assignment().await;
            self.apply_container_pause();
            self.resume_due();
            self.probe_halted().await;
            self.commit_if_due().await;
            if self.in_flight_count > 0 && self.consumer.rebalance_pending() {
                // Partitions may be revoked in the next poll: finish their recoveries and
                // commit first, so the next owner does not recover the same records again.
                self.settle_recoveries().await;
            }
            // With recoveries in flight, only take records already fetched: when there are
            // none, complete the recoveries and commit instead of waiting for more.
            let timeout = if self.in_flight_count > 0 {
                Duration::ZERO
            } else {
                self.next_timeout()
            };
            let polled = tokio::select! {
                biased;
                changed = self.stop.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
                r = self.consumer.poll(timeout) => r,
            };
            // The poll moved the positions: earlier seeks no longer bound the next ones.
            self.rewound.clear();
            match polled {
                Ok(records) if records.is_empty() => {
                    if self.in_flight_count > 0 {
                        self.settle_recoveries().await;
                    }
                    self.maybe_idle();
                }
                Ok(mut records) => {
                    if let Some(check) = &self.check {
                        for r in records.iter_mut() {
                            if let Err(failure) = check(r) {
                                *r = r.with_deserialization_failure(failure);
                            }
                        }
                    }
                    self.last_records = Instant::now();
                    self.idle_notified = false;
                    self.sync_assignment().await;
                    if self.manual_acks() {
                        // Everything before a partition's first polled record is committed.
                        for (tp, first) in offset_bounds(&records, i64::min) {
                            self.acked_to.entry(tp).or_insert(first);
                        }
                    }
                    if !self.recovered_ahead.is_empty() {
                        records = self.skip_recovered_ahead(records).await;
                    }
                    match (&self.handler, self.txn.is_some()) {
                        (Handler::Record(_), false) => self.handle_records(records).await,
                        (Handler::Batch(_), false) => self.handle_batch(records).await,
                        (_, true) => self.handle_in_transaction(records).await,
                    }
                    // Recoveries stay in flight across polls (bounded); commits stop at them.
                    let wait = self.in_flight_count >= MAX_RECOVERIES_IN_FLIGHT;
                    self.complete_recoveries(wait).await;
                    if self.txn.is_none()
                        && (self.ack_mode == AckMode::Batch || self.ack_mode == AckMode::Manual)
                    {
                        self.commit_pending().await;
                    }
                }
                Err(e) => {
                    if let Some(reason) = stop_reason_for(&e) {
                        tracing::error!(error = %e, "listener container stopping");
                        self.stop_reason = Some(reason);
                    } else {
                        tracing::warn!(error = %e, "poll failed; retrying");
                        self.emit(ContainerEvent::PollFailed(e));
                        self.sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            if let Some(reason) = self.fetch_failures.check(&mut self.consumer, &self.events) {
                self.stop_reason.get_or_insert(reason);
            }
        }
        self.settle_recoveries().await;
        if let Err(e) = self.consumer.close().await {
            tracing::warn!(error = %e, "closing the consumer failed");
        }
        let reason = self.stop_reason.unwrap_or(StopReason::Normal);
        self.emit(ContainerEvent::Stopped(reason));
        reason
    }

    /// Sleeps up to `d`, returning early (false) when a stop is requested.
    async fn sleep(&mut self, d: Duration) -> bool {
        if self.stop_requested() {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.stop.changed() => false,
        }
    }

    fn next_timeout(&self) -> Duration {
        let now = Instant::now();
        let mut t = self.poll_timeout;
        for due in self.backing_off.values() {
            t = t.min(due.saturating_duration_since(now));
        }
        for h in self.halted.values() {
            t = t.min(h.next_probe.saturating_duration_since(now));
        }
        if let AckMode::Time(d) | AckMode::CountTime(_, d) = self.ack_mode {
            if !self.pending.is_empty() {
                t = t.min((self.last_commit + d).saturating_duration_since(now));
            }
        }
        if let Some(idle) = self.idle_interval {
            if !self.idle_notified {
                t = t.min((self.last_records + idle).saturating_duration_since(now));
            }
        }
        t
    }

    fn maybe_idle(&mut self) {
        if let Some(idle) = self.idle_interval {
            let idle_for = self.last_records.elapsed();
            if !self.idle_notified && idle_for >= idle {
                self.idle_notified = true;
                self.emit(ContainerEvent::Idle { idle_for });
            }
        }
    }

    async fn sync_assignment(&mut self) {
        let now: HashSet<TopicPartition> = self.consumer.assignment().into_iter().collect();
        if now == self.assignment {
            return;
        }
        let removed: Vec<TopicPartition> = self.assignment.difference(&now).cloned().collect();
        let added: Vec<TopicPartition> = now.difference(&self.assignment).cloned().collect();
        for tp in &removed {
            self.tracker.clear(tp);
            self.backing_off.remove(tp);
            self.halted.remove(tp);
            self.events.resumed(tp);
            self.pending.remove(tp);
            self.recovered_ahead.remove(tp);
            self.acked_to.remove(tp);
            self.pending_recovery.remove(tp);
            self.capped.remove(tp);
            if let Some(lost) = self.in_flight.remove(tp) {
                // Revoked with recoveries in flight: the next owner handles these records
                // again (their dead letters may be written twice, none is lost).
                self.in_flight_count = self.in_flight_count.saturating_sub(lost.len());
                tracing::debug!(
                    topic = %tp.0, partition = tp.1, recoveries = lost.len(),
                    "partition revoked with recoveries in flight"
                );
            }
        }
        self.assignment = now;
        if added.is_empty() {
            return;
        }
        if self.container_paused {
            self.pause_partitions(&added);
        }
        if self.group.is_some() {
            // Attempt counts travel in commit metadata: continue where the last owner stopped.
            match self.consumer.committed(&added).await {
                Ok(committed) => {
                    for (tp, c) in committed {
                        if let Some((offset, metadata)) = c {
                            if let Some(state) = RetryState::decode(&metadata) {
                                if state.offset == offset {
                                    self.tracker.resume(&tp, state);
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading committed offsets failed"),
            }
        }
    }

    fn pause_partitions(&mut self, tps: &[TopicPartition]) {
        if tps.is_empty() {
            return;
        }
        match self.consumer.pause(tps) {
            Ok(()) => self.emit(ContainerEvent::PartitionsPaused(tps.to_vec())),
            Err(e) => tracing::warn!(error = %e, "pausing partitions failed"),
        }
    }

    fn resume_partitions(&mut self, tps: &[TopicPartition]) {
        if tps.is_empty() {
            return;
        }
        match self.consumer.resume(tps) {
            Ok(()) => self.emit(ContainerEvent::PartitionsResumed(tps.to_vec())),
            Err(e) => tracing::warn!(error = %e, "resuming partitions failed"),
        }
    }

    fn apply_container_pause(&mut self) {
        let want = *self.pause.borrow();
        if want == self.container_paused {
            return;
        }
        self.container_paused = want;
        let all: Vec<TopicPartition> = self.assignment.iter().cloned().collect();
        if want {
            self.pause_partitions(&all);
        } else {
            let free: Vec<TopicPartition> =
                all.into_iter().filter(|tp| !self.blocked(tp)).collect();
            self.resume_partitions(&free);
        }
    }

    fn resume_due(&mut self) {
        let now = Instant::now();
        let due: Vec<TopicPartition> = self
            .backing_off
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in &due {
            self.backing_off.remove(tp);
        }
        if !self.container_paused {
            let due: Vec<TopicPartition> = due
                .into_iter()
                .filter(|tp| !self.halted.contains_key(tp))
                .collect();
            self.resume_partitions(&due);
        }
    }

    async fn probe_halted(&mut self) {
        let now = Instant::now();
        let due: Vec<TopicPartition> = self
            .halted
            .iter()
            .filter(|(_, h)| h.next_probe <= now)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            let Some(h) = self.halted.remove(&tp) else {
                continue;
            };
            let offset = h.record.offset();
            match self.eh.recoverer.recover(&h.record, &h.error).await {
                Ok(()) => {
                    self.events.resumed(&tp);
                    self.recovered(&tp, &h.record, &h.error);
                    // Forward, past the recovered record: no earlier seek bounds this one.
                    self.rewound.remove(&tp);
                    self.seek_min(&tp, offset + 1);
                    self.ack(&tp, offset, AckSource::Recovered).await;
                    self.commit_pending().await;
                    if !self.container_paused {
                        self.resume_partitions(std::slice::from_ref(&tp));
                    }
                }
                Err(f) => {
                    let f: SharedError = Arc::from(f);
                    for l in &self.eh.listeners {
                        l.recovery_failed(&h.record, &h.error, &f);
                    }
                    let failures = self
                        .tracker
                        .recovery_failures(&tp, offset)
                        .saturating_add(1);
                    let _ = self.tracker.recovery_failed(&tp, offset);
                    self.emit(ContainerEvent::RecoveryFailed {
                        partition: tp.clone(),
                        offset,
                        failures,
                        error: f,
                    });
                    self.halted.insert(
                        tp,
                        Halted {
                            next_probe: Instant::now() + self.eh.halt_probe_interval,
                            ..h
                        },
                    );
                }
            }
        }
    }

    /// The recovery-failure cap is reached for `record`: its partition stays paused (the
    /// caller has sought it back), the alarm fires, and the recovery is probed later.
    fn halt(&mut self, tp: &TopicPartition, record: C::Record, error: SharedError, failures: u32) {
        let offset = record.offset();
        self.halted.insert(
            tp.clone(),
            Halted {
                record,
                error,
                next_probe: Instant::now() + self.eh.halt_probe_interval,
            },
        );
        self.events.halted(tp, offset, failures);
        self.emit(ContainerEvent::RecoveryHalted {
            partition: tp.clone(),
            offset,
            failures,
        });
        if self.eh.on_recovery_halt == RecoveryHalt::StopContainer {
            self.stop_reason = Some(StopReason::Abnormal);
        }
    }

    // ---- acks and commits ----

    async fn ack(&mut self, tp: &TopicPartition, offset: i64, source: AckSource) {
        let manual = matches!(self.ack_mode, AckMode::Manual | AckMode::ManualImmediate);
        if manual && source == AckSource::Handler {
            return;
        }
        if manual && self.acked_to.get(tp).is_some_and(|a| *a < offset) {
            // Recovered, but the user has not acknowledged every record before it: committed
            // once the acknowledgments reach it (nothing unacknowledged is committed).
            self.remember_recovered(tp, offset, true);
            return;
        }
        self.advance_pending(tp, offset + 1);
        self.pending_count = self.pending_count.saturating_add(1);
        match self.ack_mode {
            AckMode::Record | AckMode::ManualImmediate => self.commit_pending().await,
            AckMode::Count(n) | AckMode::CountTime(n, _) if self.pending_count >= n => {
                // Only a commit the count made starts the count again (as in Spring, whose
                // other commits do not exist here: of capped offsets, or on idle polls).
                self.pending_count = 0;
                self.commit_pending().await
            }
            _ => {}
        }
    }

    async fn drain_manual_acks(&mut self) {
        let acked: Vec<(TopicPartition, i64)> = {
            let mut sink = self.acks.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::take(&mut *sink)
        };
        if acked.is_empty() {
            return;
        }
        for (tp, next) in acked {
            if !self.assignment.contains(&tp) && !self.assignment.is_empty() {
                continue;
            }
            self.advance_pending(&tp, next);
        }
        if self.ack_mode == AckMode::ManualImmediate {
            self.commit_pending().await;
        }
    }

    /// Makes `next`, moved over the recovered records right after it, the offset to commit for
    /// `tp`; a pending offset never moves backwards.
    fn advance_pending(&mut self, tp: &TopicPartition, next: i64) {
        let mut next = next;
        if let Some(ahead) = self.recovered_ahead.get(tp) {
            let mut i = ahead.partition_point(|(o, _)| *o < next);
            while ahead.get(i).is_some_and(|(o, _)| *o == next) {
                next += 1;
                i += 1;
            }
        }
        if self.manual_acks() {
            let to = self.acked_to.entry(tp.clone()).or_insert(next);
            *to = (*to).max(next);
        }
        match self.pending.get_mut(tp) {
            Some(p) if p.offset >= next => {}
            Some(p) => {
                p.offset = next;
                p.metadata.clear();
            }
            None => {
                self.pending.insert(
                    tp.clone(),
                    OffsetToCommit {
                        partition: tp.clone(),
                        offset: next,
                        metadata: String::new(),
                    },
                );
            }
        }
    }

    /// Remembers a recovered record in `recovered_ahead` (`past`: the position is past it).
    fn remember_recovered(&mut self, tp: &TopicPartition, offset: i64, past: bool) {
        let ahead = self.recovered_ahead.entry(tp.clone()).or_default();
        match ahead.binary_search_by_key(&offset, |(o, _)| *o) {
            Ok(i) => ahead[i].1 = past,
            Err(i) => ahead.insert(i, (offset, past)),
        }
    }

    async fn commit_if_due(&mut self) {
        if let AckMode::Time(d) | AckMode::CountTime(_, d) = self.ack_mode {
            if !self.pending.is_empty() && self.last_commit.elapsed() >= d {
                self.pending_count = 0;
                self.commit_pending().await;
            }
        }
    }

    async fn commit_pending(&mut self) {
        if self.pending.is_empty() || self.group.is_none() {
            self.pending.clear();
            return;
        }
        let mut offsets: Vec<OffsetToCommit> = Vec::with_capacity(self.pending.len());
        // Partitions whose offset is held back below a recovery in flight (kept pending), and
        // the capped offsets committed for some of them meanwhile: at most every
        // `CAPPED_COMMIT_INTERVAL` (during a flood of recoveries a commit per poll would mostly
        // repeat a barely moved offset, one round trip each).
        let mut held: Vec<TopicPartition> = Vec::new();
        let mut capped_now: Vec<(TopicPartition, i64)> = Vec::new();
        let capped_due = self.last_capped_commit.elapsed() >= CAPPED_COMMIT_INTERVAL;
        for o in self.pending.values() {
            match self.in_flight_low(&o.partition) {
                Some(low) if low < o.offset => {
                    held.push(o.partition.clone());
                    if capped_due && self.capped.get(&o.partition) != Some(&low) {
                        capped_now.push((o.partition.clone(), low));
                        offsets.push(OffsetToCommit {
                            partition: o.partition.clone(),
                            offset: low,
                            metadata: String::new(),
                        });
                    }
                }
                _ => offsets.push(o.clone()),
            }
        }
        if offsets.is_empty() {
            if !held.is_empty() {
                // Made once the recovery completes.
                self.commit_owed = true;
            }
            return;
        }
        match self.consumer.commit(offsets.clone()).await {
            Ok(()) => {
                if !self.recovered_ahead.is_empty() {
                    for o in &offsets {
                        if let Some(ahead) = self.recovered_ahead.get_mut(&o.partition) {
                            // Never polled again: seeks go back only to unfinished records,
                            // which are never below a commit.
                            ahead.retain(|(a, past)| *a >= o.offset || !past);
                            if ahead.is_empty() {
                                self.recovered_ahead.remove(&o.partition);
                            }
                        }
                    }
                }
                if held.is_empty() {
                    self.pending.clear();
                } else {
                    self.pending.retain(|tp, _| held.contains(tp));
                }
                if !capped_now.is_empty() {
                    self.capped.extend(capped_now);
                    self.last_capped_commit = Instant::now();
                }
                self.commit_owed = !held.is_empty();
                self.last_commit = Instant::now();
                self.emit(ContainerEvent::Committed(offsets));
            }
            Err(e) => {
                tracing::warn!(error = %e, "commit failed; will retry");
                if let Some(reason) = stop_reason_for(&e) {
                    self.stop_reason = Some(reason);
                }
                self.emit(ContainerEvent::CommitFailed(e));
            }
        }
    }

    /// Commits the failed record's offset with its retry state as metadata, so a new owner
    /// continues counting. Everything before it in the partition is handled, so this never
    /// skips a record.
    async fn commit_retry_state(&mut self, tp: &TopicPartition, offset: i64) {
        if self.group.is_none() {
            return;
        }
        let Some(state) = self.tracker.state(tp) else {
            return;
        };
        if self.manual_acks() && self.acked_to.get(tp).is_none_or(|a| *a < offset) {
            // The user has not acknowledged every record before the failed one: committing its
            // offset would pass them (the attempt count then stays in memory only).
            return;
        }
        let commit = OffsetToCommit {
            partition: tp.clone(),
            offset,
            metadata: state.encode(),
        };
        if self.in_flight_low(tp).is_some() {
            // An earlier record's recovery is in flight: commit with the poll's offsets, once
            // it has completed.
            self.pending.insert(tp.clone(), commit);
            return;
        }
        self.pending.remove(tp);
        if let Err(e) = self.consumer.commit(vec![commit]).await {
            tracing::debug!(error = %e, "committing retry state failed");
        }
    }

    // ---- record handling ----

    async fn call_record_handler(
        &mut self,
        tp: &TopicPartition,
        record: &C::Record,
    ) -> Option<SharedError> {
        let Handler::Record(f) = &self.handler else {
            return None;
        };
        if let Some(d) = record.deserialization_failure() {
            return Some(Arc::new(d));
        }
        let f = f.clone();
        let (delivered, ack) = self.delivery(tp, record);
        let result = match call_guarded(|| f(delivered, ack)).await {
            Ok(result) => result,
            Err(panic) => return Some(Arc::from(self.handler_panicked(panic))),
        };
        let mut seeks = Seeks::default();
        let result = match (result, self.leh.clone()) {
            (Err(e), Some(leh)) => {
                let attempt = self.tracker.delivery_attempt(tp, record.offset());
                let outcome;
                (outcome, seeks) = leh(record, e, attempt).await;
                outcome
            }
            (r, _) => r,
        };
        for (target, offset) in seeks.requests {
            if &target == tp {
                self.sought = true;
            }
            self.seek_min(&target, offset);
        }
        result.err().map(Arc::from)
    }

    /// What the handler gets for `record`: the record (with the `kafka_deliveryAttempt`
    /// header when enabled) and its acknowledgment.
    fn delivery(&self, tp: &TopicPartition, record: &C::Record) -> (C::Record, Acknowledgment) {
        let delivered = match self.eh.delivery_attempt_header {
            DeliveryAttemptHeader::On => {
                let attempt = self.tracker.delivery_attempt(tp, record.offset());
                record.with_header(Header::new(
                    DELIVERY_ATTEMPT_HEADER,
                    Some(delivery_attempt_header_value(attempt).to_vec()),
                ))
            }
            _ => record.clone(),
        };
        (delivered, self.record_ack(tp, record.offset()))
    }

    fn manual_acks(&self) -> bool {
        matches!(self.ack_mode, AckMode::Manual | AckMode::ManualImmediate)
    }

    /// The acknowledgment handed with the record at `offset` of `tp`.
    fn record_ack(&self, tp: &TopicPartition, offset: i64) -> Acknowledgment {
        if self.manual_acks() {
            Acknowledgment {
                sink: Some(self.acks.clone()),
                targets: AckTargets::One(tp.clone(), offset + 1),
            }
        } else {
            Acknowledgment {
                sink: None,
                targets: AckTargets::Automatic,
            }
        }
    }

    /// Whether each handled record must be acked on its own (a commit may follow any record);
    /// otherwise a partition's handled records are acked once, up to the last one.
    fn ack_per_record(&self) -> bool {
        !matches!(
            self.ack_mode,
            AckMode::Batch | AckMode::Manual | AckMode::Time(_)
        )
    }

    async fn handle_records(&mut self, records: Vec<C::Record>) {
        if self.concurrency > 1 {
            return self.handle_records_concurrently(records).await;
        }
        let per_record = self.ack_per_record();
        let manual = matches!(self.ack_mode, AckMode::Manual | AckMode::ManualImmediate);
        for (tp, recs) in group_by_partition(records) {
            if self.blocked(&tp) || !self.owns(&tp) {
                continue;
            }
            // The last record handled without acking it yet (batched acks).
            let mut handled: Option<i64> = None;
            for record in recs {
                if self.stop_requested() {
                    break;
                }
                let offset = record.offset();
                let failure = self.call_record_handler(&tp, &record).await;
                if manual {
                    self.drain_manual_acks().await;
                }
                if std::mem::take(&mut self.panicked) {
                    // Stopping: the record is not acknowledged; those before it are.
                    break;
                }
                if std::mem::take(&mut self.sought) && failure.is_none() {
                    // The listener-level handler repositioned this partition.
                    break;
                }
                match failure {
                    None => {
                        self.tracker.succeeded(&tp, offset);
                        if per_record {
                            self.ack(&tp, offset, AckSource::Handler).await;
                            self.commit_if_due().await;
                        } else {
                            handled = Some(offset);
                        }
                    }
                    Some(error) => {
                        if let Some(last) = handled.take() {
                            self.ack(&tp, last, AckSource::Handler).await;
                        }
                        if self.on_failure(&tp, &record, error).await == Flow::SkipPartition {
                            break;
                        }
                    }
                }
            }
            if let Some(last) = handled {
                self.ack(&tp, last, AckSource::Handler).await;
            }
        }
    }

    /// Partitions handled at the same time (each partition's records still in order, one at a
    /// time); failures are then dealt with partition by partition, as in the sequential path.
    async fn handle_records_concurrently(&mut self, records: Vec<C::Record>) {
        let Handler::Record(f) = &self.handler else {
            return;
        };
        let f = f.clone();
        let leh = self.leh.clone();
        let permits = Arc::new(tokio::sync::Semaphore::new(self.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        for (tp, recs) in group_by_partition(records) {
            if self.blocked(&tp) || !self.owns(&tp) {
                continue;
            }
            let prepared: Vec<(C::Record, C::Record, Acknowledgment, u32)> = recs
                .into_iter()
                .map(|r| {
                    let (delivered, ack) = self.delivery(&tp, &r);
                    let attempt = self.tracker.delivery_attempt(&tp, r.offset());
                    (r, delivered, ack, attempt)
                })
                .collect();
            let (f, leh, permits, stop) =
                (f.clone(), leh.clone(), permits.clone(), self.stop.clone());
            tasks.spawn(async move {
                let _permit = permits.acquire_owned().await;
                let mut done = Vec::new();
                for (original, delivered, ack, attempt) in prepared {
                    if *stop.borrow() {
                        break;
                    }
                    if let Some(d) = original.deserialization_failure() {
                        let e: SharedError = Arc::new(d);
                        return (tp, done, Some((original, e)), Seeks::default(), None);
                    }
                    let mut seeks = Seeks::default();
                    let handled = match call_guarded(|| f(delivered, ack)).await {
                        Ok(handled) => handled,
                        Err(panic) => return (tp, done, None, Seeks::default(), Some(panic)),
                    };
                    let result = match (handled, &leh) {
                        (Err(e), Some(leh)) => {
                            let outcome;
                            (outcome, seeks) = leh(&original, e, attempt).await;
                            outcome
                        }
                        (r, _) => r,
                    };
                    let sought = seeks.requests.iter().any(|(t, _)| *t == tp);
                    match result {
                        Ok(()) if sought => return (tp, done, None, seeks, None),
                        Ok(()) => done.push(original.offset()),
                        Err(e) => {
                            return (tp, done, Some((original, Arc::from(e))), seeks, None);
                        }
                    }
                }
                (tp, done, None, Seeks::default(), None)
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(outcome) => outcomes.push(outcome),
                Err(e) => {
                    tracing::error!(error = %e, "a record handler panicked; stopping");
                    self.stop_reason = Some(StopReason::Error);
                }
            }
        }
        self.drain_manual_acks().await;
        for (tp, done, failure, seeks, panicked) in outcomes {
            for (target, offset) in seeks.requests {
                self.seek_min(&target, offset);
            }
            for offset in done {
                self.tracker.succeeded(&tp, offset);
                self.ack(&tp, offset, AckSource::Handler).await;
            }
            if let Some(panic) = panicked {
                // Stopping, as on the sequential path: the records handled before are acked.
                self.handler_panicked(panic);
                self.panicked = false;
                continue;
            }
            if let Some((record, error)) = failure {
                if self.on_failure(&tp, &record, error).await == Flow::Continue {
                    // Recovered: the rest of this partition's records come again.
                    self.seek_min(&tp, record.offset() + 1);
                }
            }
        }
    }

    fn owns(&self, tp: &TopicPartition) -> bool {
        self.assignment.is_empty() || self.assignment.contains(tp)
    }

    async fn on_failure(
        &mut self,
        tp: &TopicPartition,
        record: &C::Record,
        error: SharedError,
    ) -> Flow {
        let offset = record.offset();
        let back_off = self.eh.back_off_for(record, &error);
        let err_ref: &(dyn std::error::Error + 'static) = error.as_ref();
        let decision =
            self.tracker
                .failed(tp, offset, err_ref, &self.eh.classifier, back_off.as_ref());
        let attempt = match decision {
            Decision::Retry { attempt, .. } | Decision::Recover { attempt } => attempt,
        };
        // A back-off that allows no retry recovers at once, without a failed delivery
        // callback (Spring's `FailedRecordTracker` with `noRetries`, which looks at the default
        // back-off; a record whose own back-off retries is still reported).
        if !(no_retries(self.eh.back_off.as_ref()) && no_retries(back_off.as_ref())) {
            for l in &self.eh.listeners {
                l.failed_delivery(record, &error, attempt);
            }
        }
        self.emit_failed_delivery(tp, offset, attempt, &error);
        match decision {
            Decision::Retry { delay, .. } => {
                tracing::info!(
                    topic = %tp.0, partition = tp.1, offset, attempt, error = %error,
                    "record failed; retrying after {delay:?}"
                );
                self.retry_later(tp, offset, delay).await;
                Flow::SkipPartition
            }
            Decision::Recover { .. } => self.recover(tp, record, error).await,
        }
    }

    /// Seeks `tp` back to `offset` and pauses it for `delay` (other partitions keep flowing).
    async fn retry_later(&mut self, tp: &TopicPartition, offset: i64, delay: Duration) {
        self.seek_min(tp, offset);
        self.commit_retry_state(tp, offset).await;
        if !delay.is_zero() {
            self.backing_off.insert(tp.clone(), Instant::now() + delay);
            if !self.container_paused {
                self.pause_partitions(std::slice::from_ref(tp));
            }
        }
    }

    async fn recover(
        &mut self,
        tp: &TopicPartition,
        record: &C::Record,
        error: SharedError,
    ) -> Flow {
        let offset = record.offset();
        let recoverer = self.eh.recoverer.clone();
        let started = if self.txn.is_none() {
            recoverer.start_recovery(record, &error).await
        } else {
            recoverer
                .recover(record, &error)
                .await
                .map(|()| Recovery::Done)
        };
        match started {
            Ok(Recovery::Done) => {
                self.recovered(tp, record, &error);
                self.ack(tp, offset, AckSource::Recovered).await;
                Flow::Continue
            }
            Ok(Recovery::InFlight(done)) => {
                self.tracker.recovery_started(tp, offset);
                self.in_flight
                    .entry(tp.clone())
                    .or_default()
                    .push_back(InFlight {
                        record: record.clone(),
                        error,
                        done,
                    });
                self.in_flight_count += 1;
                // Committed once the recovery completes (commits stop below it until then).
                self.ack(tp, offset, AckSource::Recovered).await;
                Flow::Continue
            }
            Err(f) => {
                self.recovery_failed(tp, record, error, Arc::from(f)).await;
                Flow::SkipPartition
            }
        }
    }

    /// The recoverer handled `record`: listeners, tracker, event.
    fn recovered(&mut self, tp: &TopicPartition, record: &C::Record, error: &SharedError) {
        for l in &self.eh.listeners {
            l.recovered(record, error);
        }
        self.tracker.recovered(tp, record.offset());
        if self.observed() {
            self.emit(ContainerEvent::Recovered {
                partition: tp.clone(),
                offset: record.offset(),
            });
        }
    }

    /// The recoverer failed (`failure`) for `record`: it is redelivered after the recovery
    /// retry interval, or its partition halts once the cap is reached.
    async fn recovery_failed(
        &mut self,
        tp: &TopicPartition,
        record: &C::Record,
        error: SharedError,
        failure: SharedError,
    ) {
        let offset = record.offset();
        for l in &self.eh.listeners {
            l.recovery_failed(record, &error, &failure);
        }
        let decision = self.tracker.recovery_failed(tp, offset);
        let failures = self.tracker.recovery_failures(tp, offset);
        tracing::warn!(
            topic = %tp.0, partition = tp.1, offset, failures, error = %failure,
            "recovering the record failed; it will be redelivered"
        );
        self.emit(ContainerEvent::RecoveryFailed {
            partition: tp.clone(),
            offset,
            failures,
            error: failure,
        });
        match decision {
            RecoveryFailureDecision::Halt { failures } => {
                self.seek_min(tp, offset);
                self.backing_off.remove(tp);
                if !self.container_paused {
                    self.pause_partitions(std::slice::from_ref(tp));
                }
                tracing::error!(
                    topic = %tp.0, partition = tp.1, offset, failures,
                    "recovery failed {failures} times; partition halted"
                );
                self.halt(tp, record.clone(), error, failures);
            }
            _ => {
                let interval = self.eh.recovery_retry_interval;
                self.retry_later(tp, offset, interval).await;
            }
        }
    }

    /// Waits for every recovery in flight, then commits what is pending.
    async fn settle_recoveries(&mut self) {
        self.complete_recoveries(true).await;
        self.commit_pending().await;
    }

    /// The lowest offset of `tp` whose recovery is in flight.
    fn in_flight_low(&self, tp: &TopicPartition) -> Option<i64> {
        self.in_flight
            .get(tp)
            .and_then(VecDeque::front)
            .map(|f| f.record.offset())
    }

    /// Completes the recoveries in flight, partition by partition in offset order: all of them
    /// (`wait`), or those already done (stopping at a partition's first unfinished one). A
    /// recovery that failed sends its partition back to that record
    /// ([`rewind_failed_recovery`](Self::rewind_failed_recovery)).
    async fn complete_recoveries(&mut self, wait: bool) {
        if self.in_flight_count == 0 {
            return;
        }
        let tps: Vec<TopicPartition> = self.in_flight.keys().cloned().collect();
        for tp in tps {
            while let Some(front) = self.in_flight.get_mut(&tp).and_then(VecDeque::front_mut) {
                let result = if wait {
                    (&mut front.done).await
                } else {
                    match poll_now(&mut front.done) {
                        std::task::Poll::Ready(r) => r,
                        std::task::Poll::Pending => break,
                    }
                };
                let Some(done) = self.in_flight.get_mut(&tp).and_then(VecDeque::pop_front) else {
                    break;
                };
                self.in_flight_count = self.in_flight_count.saturating_sub(1);
                match result {
                    Ok(()) => self.recovered(&tp, &done.record, &done.error),
                    Err(f) => {
                        self.rewind_failed_recovery(&tp, done, Arc::from(f)).await;
                        break;
                    }
                }
            }
            if self.in_flight.get(&tp).is_none_or(VecDeque::is_empty) {
                self.in_flight.remove(&tp);
                self.capped.remove(&tp);
            }
        }
        if self.commit_owed {
            // The commit that was due when the recovery held it back.
            self.commit_owed = false;
            self.commit_pending().await;
        }
    }

    /// The recovery of `failed` did not complete: a recovery failure. Nothing of its partition
    /// past it may be committed, so the partition goes back to it; the partition's later
    /// recoveries are waited for, and those that completed are remembered so their records are
    /// not recovered twice when they come again.
    async fn rewind_failed_recovery(
        &mut self,
        tp: &TopicPartition,
        failed: InFlight<C::Record>,
        failure: SharedError,
    ) {
        let rest = self.in_flight.remove(tp).unwrap_or_default();
        self.in_flight_count = self.in_flight_count.saturating_sub(rest.len());
        for later in rest {
            let offset = later.record.offset();
            match later.done.await {
                Ok(()) => {
                    self.recovered(tp, &later.record, &later.error);
                    self.remember_recovered(tp, offset, false);
                }
                Err(f) => {
                    tracing::debug!(
                        topic = %tp.0, partition = tp.1, offset, error = %f,
                        "recovery failed after an earlier one of its partition; redelivered"
                    );
                    self.forget_recovered(tp, offset);
                }
            }
        }
        // The partition goes back below every remembered record after the failed one (none of
        // them may be acknowledged on the failed record's behalf).
        let failed_offset = failed.record.offset();
        self.forget_recovered(tp, failed_offset);
        if let Some(ahead) = self.recovered_ahead.get_mut(tp) {
            for (o, past) in ahead.iter_mut() {
                if *o > failed_offset {
                    *past = false;
                }
            }
        }
        self.capped.remove(tp);
        self.pending.remove(tp);
        self.recovery_failed(tp, &failed.record, failed.error, failure)
            .await;
    }

    /// Forgets `offset` of `tp` in `recovered_ahead` (its recovery did not complete).
    fn forget_recovered(&mut self, tp: &TopicPartition, offset: i64) {
        if let Some(ahead) = self.recovered_ahead.get_mut(tp) {
            ahead.retain(|(o, _)| *o != offset);
            if ahead.is_empty() {
                self.recovered_ahead.remove(tp);
            }
        }
    }

    /// Drops records already recovered (see `recovered_ahead`). A dropped record is acked only
    /// in order: when it leads its partition's records of the poll (everything before it came
    /// in earlier polls), or else when the ack of the record before it moves over it, so no
    /// commit passes an earlier record still to be handled (one whose dead letter failed, say).
    /// They are remembered until a commit passes them (the partition may be sought back again
    /// before that).
    async fn skip_recovered_ahead(&mut self, records: Vec<C::Record>) -> Vec<C::Record> {
        let mut keep = Vec::with_capacity(records.len());
        // Partitions with a record kept so far, and the skipped records that lead theirs.
        let mut kept_tps: Vec<TopicPartition> = Vec::new();
        let mut leading: Vec<(TopicPartition, i64)> = Vec::new();
        for r in records {
            let tp = tp_of(&r);
            let hit = match self.recovered_ahead.get_mut(&tp) {
                Some(ahead) => match ahead.binary_search_by_key(&r.offset(), |(o, _)| *o) {
                    Ok(i) => {
                        ahead[i].1 = true;
                        true
                    }
                    Err(_) => false,
                },
                None => false,
            };
            if hit {
                tracing::debug!(
                    topic = %tp.0, partition = tp.1, offset = r.offset(),
                    "already recovered; skipped"
                );
                if !kept_tps.contains(&tp) {
                    leading.push((tp, r.offset()));
                }
            } else {
                if !kept_tps.contains(&tp) {
                    kept_tps.push(tp);
                }
                keep.push(r);
            }
        }
        for (tp, offset) in leading {
            self.ack(&tp, offset, AckSource::Recovered).await;
        }
        keep
    }

    // ---- batch handling ----

    async fn handle_batch(&mut self, records: Vec<C::Record>) {
        let Handler::Batch(f) = &self.handler else {
            return;
        };
        let f = f.clone();
        let mut batch = Vec::with_capacity(records.len());
        // Per partition, its first record that failed the deserialization check (and whether
        // records came after it). The batch stops there for that partition: the record goes
        // through the record path once the batch is done, and the partition's later records
        // are fetched again, so that commits follow the partition's order.
        let mut undeserializable: Vec<(C::Record, bool)> = Vec::new();
        for r in records {
            let tp = tp_of(&r);
            if self.blocked(&tp) || !self.owns(&tp) {
                continue;
            }
            if let Some((_, more)) = undeserializable
                .iter_mut()
                .find(|(u, _)| u.partition() == r.partition() && u.topic() == r.topic())
            {
                *more = true;
            } else if r.deserialization_failure().is_some() {
                undeserializable.push((r, false));
            } else {
                batch.push(r);
            }
        }
        if batch.is_empty() && undeserializable.is_empty() {
            return;
        }
        let result = if batch.is_empty() {
            Ok(())
        } else {
            let ack = self.batch_ack(&batch);
            match call_guarded(|| f(batch.clone(), ack)).await {
                Ok(result) => result,
                Err(panic) => {
                    // Stopping; the batch is not acknowledged (earlier polls' are committed).
                    self.handler_panicked(panic);
                    self.panicked = false;
                    return;
                }
            }
        };
        self.drain_manual_acks().await;
        match result {
            Ok(()) => {
                self.batch_succeeded(&batch).await;
                self.recover_undeserializable(undeserializable).await;
            }
            Err(e) => {
                let (position, cause) = match e.downcast::<BatchListenerFailed>() {
                    Ok(blf) => (
                        Some(blf.position),
                        Arc::<dyn std::error::Error + Send + Sync>::from(blf.cause),
                    ),
                    // Deeper in the chain: the failed record gets the whole error (its chain
                    // holds the cause, which classification finds).
                    Err(e) => (
                        BatchListenerFailed::find(e.as_ref()).map(|b| b.position.clone()),
                        Arc::from(e),
                    ),
                };
                // Spring's `FailedBatchProcessor` tells the retry listeners about the whole
                // batch first (attempt 1), then handles the record it names.
                if position.is_some() {
                    for l in &self.eh.listeners {
                        l.failed_delivery_batch(&batch, &cause, 1);
                    }
                }
                let index = position.and_then(|p| match p {
                    FailedPosition::Index(i) if i < batch.len() => Some(i),
                    FailedPosition::Record {
                        topic,
                        partition,
                        offset,
                    } => batch.iter().position(|r| {
                        r.topic() == topic && r.partition() == partition && r.offset() == offset
                    }),
                    _ => None,
                });
                match index {
                    Some(i) => self.batch_failed_at(batch, i, cause).await,
                    None => {
                        tracing::warn!(
                            "batch handler failed without naming a record in the batch; retrying the whole batch"
                        );
                        self.batch_fallback(batch, cause).await;
                    }
                }
                // Undeserializable records come back with the re-fetched records (unless their
                // partition was sent back further).
                for (r, _) in undeserializable {
                    self.seek_min(&tp_of(&r), r.offset());
                }
            }
        }
    }

    fn batch_ack(&self, batch: &[C::Record]) -> Acknowledgment {
        if !self.manual_acks() {
            return Acknowledgment {
                sink: None,
                targets: AckTargets::Automatic,
            };
        }
        Acknowledgment {
            sink: Some(self.acks.clone()),
            targets: AckTargets::Many(Arc::new(
                offset_bounds(batch, i64::max)
                    .into_iter()
                    .map(|(tp, o)| (tp, o + 1))
                    .collect(),
            )),
        }
    }

    async fn batch_succeeded(&mut self, batch: &[C::Record]) {
        for r in batch {
            let tp = tp_of(r);
            self.tracker.succeeded(&tp, r.offset());
            self.ack(&tp, r.offset(), AckSource::Handler).await;
        }
    }

    /// The record path for each partition's first undeserializable record, once the records
    /// before it are handled; the partition's later records (`more`) are fetched again.
    async fn recover_undeserializable(&mut self, records: Vec<(C::Record, bool)>) {
        for (r, more) in records {
            let tp = tp_of(&r);
            let Some(d) = r.deserialization_failure() else {
                continue;
            };
            // A retry or a recovery failure seeks back to the record itself; otherwise the rest
            // comes again from the record after it.
            self.on_failure(&tp, &r, Arc::new(d)).await;
            if more {
                self.seek_min(&tp, r.offset() + 1);
            }
        }
    }

    /// Seeks `tp` to `offset` unless the handling of this poll already sought it back as far
    /// or further: the lowest seek wins, so a later seek never moves a partition forward over
    /// records that an earlier one sent back for redelivery.
    fn seek_min(&mut self, tp: &TopicPartition, offset: i64) {
        if self.rewound.get(tp).is_some_and(|o| *o <= offset) {
            return;
        }
        if let Err(e) = self.consumer.seek(tp, offset) {
            tracing::warn!(error = %e, "seek failed");
        }
        self.rewound.insert(tp.clone(), offset);
    }

    async fn batch_failed_at(&mut self, batch: Vec<C::Record>, index: usize, cause: SharedError) {
        let failed = batch[index].clone();
        let failed_tp = tp_of(&failed);
        // Records before the failed one are done: commit them now (Spring always does).
        for r in &batch[..index] {
            let tp = tp_of(r);
            self.tracker.succeeded(&tp, r.offset());
            self.advance_pending(&tp, r.offset() + 1);
        }
        self.commit_pending().await;
        let flow = self.on_failure(&failed_tp, &failed, cause).await;
        // The rest is re-fetched: seek each partition to its first remaining record.
        for (tp, offset) in offset_bounds(&batch[index + 1..], i64::min) {
            // A failed partition that is retrying was already sought back to the failed record.
            if tp == failed_tp && flow == Flow::SkipPartition {
                continue;
            }
            self.seek_min(&tp, offset);
        }
        self.commit_pending().await;
    }

    /// Retries the whole batch in memory with its partitions paused (membership kept), then
    /// recovers each record.
    async fn batch_fallback(&mut self, mut batch: Vec<C::Record>, first_error: SharedError) {
        let Handler::Batch(f) = &self.handler else {
            return;
        };
        let f = f.clone();
        let paused: Vec<TopicPartition> = self.assignment.iter().cloned().collect();
        self.pause_partitions(&paused);
        let Some(first) = batch.first().cloned() else {
            return;
        };
        let back_off = self.eh.back_off_for(&first, &first_error);
        let mut execution = back_off.start();
        let mut attempt = 1u32;
        let mut error = first_error;
        for l in &self.eh.listeners {
            l.failed_delivery_batch(&batch, &error, attempt);
        }
        let mut succeeded = false;
        let mut stopped = false;
        loop {
            let err_ref: &(dyn std::error::Error + 'static) = error.as_ref();
            if !self.eh.classifier.is_retryable(err_ref) {
                break;
            }
            let Some(delay) = execution.next_back_off() else {
                break;
            };
            if !self.wait_paused(delay).await {
                stopped = true;
                break;
            }
            batch.retain(|r| self.owns(&tp_of(r)));
            if batch.is_empty() {
                break;
            }
            let ack = self.batch_ack(&batch);
            let retried = match call_guarded(|| f(batch.clone(), ack)).await {
                Ok(retried) => retried,
                Err(panic) => {
                    self.handler_panicked(panic);
                    self.panicked = false;
                    stopped = true;
                    break;
                }
            };
            match retried {
                Ok(()) => {
                    succeeded = true;
                    break;
                }
                Err(e) => {
                    attempt += 1;
                    error = Arc::from(e);
                    for l in &self.eh.listeners {
                        l.failed_delivery_batch(&batch, &error, attempt);
                    }
                    self.emit(ContainerEvent::FailedDelivery {
                        partition: tp_of(&first),
                        offset: first.offset(),
                        attempt,
                        error: error.clone(),
                    });
                }
            }
        }
        self.drain_manual_acks().await;
        if succeeded {
            self.batch_succeeded(&batch).await;
        } else if stopped {
            self.seek_batch_back(&batch);
        } else if !batch.is_empty() {
            self.recover_batch(&batch, &error).await;
        }
        let resume: Vec<TopicPartition> = self
            .assignment
            .iter()
            .filter(|tp| !self.blocked(tp))
            .cloned()
            .collect();
        if !self.container_paused {
            self.resume_partitions(&resume);
        }
        self.commit_pending().await;
    }

    fn seek_batch_back(&mut self, batch: &[C::Record]) {
        for (tp, o) in offset_bounds(batch, i64::min) {
            self.seek_min(&tp, o);
        }
    }

    async fn recover_batch(&mut self, batch: &[C::Record], error: &SharedError) {
        let recoverer = self.eh.recoverer.clone();
        for (i, r) in batch.iter().enumerate() {
            let tp = tp_of(r);
            if self.blocked(&tp) {
                continue;
            }
            match recoverer.recover(r, error).await {
                Ok(()) => {
                    self.tracker.succeeded(&tp, r.offset());
                    self.ack(&tp, r.offset(), AckSource::Recovered).await;
                }
                Err(f) => {
                    let f: SharedError = Arc::from(f);
                    for l in &self.eh.listeners {
                        l.recovery_failed_batch(batch, error, &f);
                    }
                    // Nothing past an unrecovered record is committed: re-fetch from it.
                    let rest = &batch[i..];
                    self.seek_batch_back(rest);
                    let decision = self.tracker.recovery_failed(&tp, r.offset());
                    let failures = self.tracker.recovery_failures(&tp, r.offset());
                    self.emit(ContainerEvent::RecoveryFailed {
                        partition: tp.clone(),
                        offset: r.offset(),
                        failures,
                        error: f,
                    });
                    if let RecoveryFailureDecision::Halt { failures } = decision {
                        self.halt(&tp, r.clone(), error.clone(), failures);
                    } else {
                        self.backing_off
                            .insert(tp, Instant::now() + self.eh.recovery_retry_interval);
                    }
                    return;
                }
            }
        }
        for l in &self.eh.listeners {
            l.recovered_batch(batch, error);
        }
    }

    /// Waits `delay` with the partitions paused, polling so the consumer stays in its group.
    /// Records of partitions assigned meanwhile are sought back and paused. False on stop.
    async fn wait_paused(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            if self.stop_requested() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            let slice = left.min(Duration::from_millis(100));
            let polled = tokio::select! {
                biased;
                changed = self.stop.changed() => {
                    if changed.is_err() { return false; }
                    continue;
                }
                r = self.consumer.poll(slice) => r,
            };
            self.rewound.clear();
            let before = self.assignment.clone();
            self.sync_assignment().await;
            let added: Vec<TopicPartition> = self.assignment.difference(&before).cloned().collect();
            self.pause_partitions(&added);
            if let Ok(records) = polled {
                let firsts = offset_bounds(&records, i64::min);
                let tps: Vec<TopicPartition> = firsts.iter().map(|(tp, _)| tp.clone()).collect();
                for (tp, o) in firsts {
                    self.seek_min(&tp, o);
                }
                self.pause_partitions(&tps);
            }
        }
    }
}

/// Why a transaction of the exactly-once mode did not commit.
enum TxnFailure<R> {
    /// The handler failed on a record.
    Handler(TopicPartition, R, SharedError),
    /// The handler failed on a batch: the error and, per partition, the offsets it held
    /// (`from..=to`).
    Batch(SharedError, Vec<(TopicPartition, i64, i64)>),
    /// Recovering a record inside the transaction failed.
    Recovery(TopicPartition, R, SharedError, SharedError),
    /// The producer refused (begin, send offsets, commit).
    Producer(Error),
}

impl<C: ContainerConsumer> Runner<C> {
    /// Exactly-once: one transaction per poll (see [`ContainerBuilder::transactional`]).
    async fn handle_in_transaction(&mut self, records: Vec<C::Record>) {
        let Some(producer) = self.txn.as_ref().map(|t| t.producer.clone()) else {
            return;
        };
        let record_handler = matches!(self.handler, Handler::Record(_));
        let groups: Vec<(TopicPartition, Vec<C::Record>)> = group_by_partition(records)
            .into_iter()
            .filter(|(tp, _)| !self.blocked(tp) && self.owns(tp))
            .map(|(tp, mut recs)| {
                // A record that failed in an earlier transaction starts a transaction of its
                // own: the records before it commit without it (as with Spring's transaction per
                // record), so a record that keeps failing never holds them back.
                if let Some(failing) = record_handler.then(|| self.failing_offset(&tp)).flatten() {
                    if recs.first().is_some_and(|r| r.offset() < failing) {
                        recs.retain(|r| r.offset() < failing);
                    }
                }
                (tp, recs)
            })
            .collect();
        // Where each partition goes back to if the transaction does not commit: its first
        // record of this poll, i.e. its committed offset (every earlier poll committed).
        let firsts: Vec<(TopicPartition, i64)> = groups
            .iter()
            .filter_map(|(tp, recs)| recs.first().map(|r| (tp.clone(), r.offset())))
            .collect();
        if firsts.is_empty() {
            return;
        }
        if let Err(e) = producer.begin_transaction() {
            self.transaction_failed(TxnFailure::Producer(e), &firsts)
                .await;
            return;
        }
        let mut next: Vec<(TopicPartition, i64)> = Vec::new();
        let failure = match &self.handler {
            Handler::Record(_) => self.run_records_in_transaction(groups, &mut next).await,
            Handler::Batch(f) => {
                let f = f.clone();
                self.run_batch_in_transaction(f, groups, &mut next).await
            }
        };
        if self.stop_requested() && failure.is_none() && next.is_empty() {
            self.abort_and_rewind(&producer, &firsts).await;
            return;
        }
        if let Some(failure) = failure {
            self.transaction_failed(failure, &firsts).await;
            return;
        }
        let offsets: Vec<(String, i32, i64)> = next
            .iter()
            .map(|(tp, o)| (tp.0.to_string(), tp.1, *o))
            .collect();
        let group = self.consumer.transaction_group_metadata();
        let mut committed = match &group {
            Some(group) => producer.send_offsets_to_transaction(&offsets, group).await,
            None => Ok(()),
        };
        if committed.is_ok() {
            committed = self.commit_transaction(&producer).await;
        }
        let recovered = std::mem::take(&mut self.recovered_in_txn);
        match committed {
            Ok(()) => {
                for (tp, records, error) in recovered {
                    let Some(first) = records.first() else {
                        continue;
                    };
                    let offset = first.offset();
                    for r in &records {
                        self.recovery_committed(r);
                    }
                    self.events.resumed(&tp);
                    // A batch recovered after a rollback notifies no retry listener (Spring's
                    // `DefaultAfterRollbackProcessor` calls only the recoverer for a batch).
                    if !matches!(self.handler, Handler::Batch(_)) {
                        for l in &self.eh.listeners {
                            l.recovered(first, &error);
                        }
                    }
                    self.tracker.recovered(&tp, offset);
                    self.emit(ContainerEvent::Recovered {
                        partition: tp,
                        offset,
                    });
                }
                // Records not reached (a stop midway) come again from where the commit left;
                // partitions the listener-level handler repositioned stay where it put them.
                let sought = std::mem::take(&mut self.sought_in_txn);
                let done: HashSet<&TopicPartition> = next.iter().map(|(tp, _)| tp).collect();
                for (tp, first) in &firsts {
                    if !done.contains(tp) && !sought.contains(tp) {
                        self.seek_min(tp, *first);
                    }
                }
                for (tp, o) in &next {
                    self.events.passed(tp, *o);
                    self.tracker.succeeded(tp, o - 1);
                    if !sought.contains(tp) {
                        self.seek_min(tp, *o);
                    }
                }
                self.emit(ContainerEvent::Committed(
                    next.into_iter()
                        .map(|(partition, offset)| OffsetToCommit {
                            partition,
                            offset,
                            metadata: String::new(),
                        })
                        .collect(),
                ));
            }
            Err(e) => {
                self.transaction_failed(TxnFailure::Producer(e), &firsts)
                    .await
            }
        }
    }

    /// The offset of `tp`'s record that failed in an earlier transaction and is to be
    /// recovered or retried, if any.
    fn failing_offset(&self, tp: &TopicPartition) -> Option<i64> {
        self.pending_recovery
            .get(tp)
            .map(|(from, _, _)| *from)
            .or_else(|| self.tracker.state(tp).map(|s| s.offset))
    }

    /// Commits the open transaction. A commit still pending after `max.block` goes on in the
    /// producer: its outcome is unknown until it ends (an abort now could not undo it), so it is
    /// waited for again until it ends, or until the container stops.
    async fn commit_transaction(&mut self, producer: &TransactionalProducer) -> Result<()> {
        loop {
            match producer.commit_transaction().await {
                Err(e) if *e.kind() == ErrorKind::Timeout && !self.stop_requested() => {
                    tracing::warn!(error = %e, "the transaction's commit is pending; waiting for it");
                }
                result => return result,
            }
        }
    }

    /// Handles records in the open transaction, recovering those whose attempts are used up.
    /// Fills `next` with each partition's next offset; stops at the first failure.
    async fn run_records_in_transaction(
        &mut self,
        groups: Vec<(TopicPartition, Vec<C::Record>)>,
        next: &mut Vec<(TopicPartition, i64)>,
    ) -> Option<TxnFailure<C::Record>> {
        for (tp, recs) in groups {
            let mut last = None;
            for record in recs {
                if self.stop_requested() {
                    break;
                }
                let offset = record.offset();
                let pending = match self.pending_recovery.get(&tp) {
                    Some((from, to, e)) if (*from..=*to).contains(&offset) => Some(e.clone()),
                    _ => None,
                };
                if let Some(error) = pending {
                    let recoverer = self.eh.recoverer.clone();
                    let recovery = recoverer.recover(&record, &error);
                    match self.in_open_transaction(recovery).await {
                        Ok(()) => {
                            // Done when the transaction commits; if it aborts, the record is
                            // still pending and is recovered again in the next one.
                            self.recovered_in_txn
                                .push((tp.clone(), vec![record.clone()], error));
                            last = Some(offset);
                            continue;
                        }
                        Err(f) => {
                            if let Some(o) = last {
                                next.push((tp.clone(), o + 1));
                            }
                            return Some(TxnFailure::Recovery(tp, record, error, Arc::from(f)));
                        }
                    }
                }
                let failure = self.call_record_handler(&tp, &record).await;
                // A panic fails the transaction (aborted) and stops the container.
                self.panicked = false;
                if std::mem::take(&mut self.sought) && failure.is_none() {
                    // Repositioned by the listener-level handler: not part of this commit.
                    self.sought_in_txn.insert(tp.clone());
                    break;
                }
                match failure {
                    None => last = Some(offset),
                    Some(error) => return Some(TxnFailure::Handler(tp, record, error)),
                }
            }
            if let Some(o) = last {
                next.push((tp, o + 1));
            }
        }
        None
    }

    /// Hands the whole poll to the batch handler in the open transaction; a batch whose
    /// attempts are used up is recovered record by record instead.
    async fn run_batch_in_transaction(
        &mut self,
        f: BatchFn<C::Record>,
        groups: Vec<(TopicPartition, Vec<C::Record>)>,
        next: &mut Vec<(TopicPartition, i64)>,
    ) -> Option<TxnFailure<C::Record>> {
        let batch: Vec<C::Record> = groups.into_iter().flat_map(|(_, r)| r).collect();
        if batch.is_empty() {
            return None;
        }
        // Records of a batch that used up its attempts (the handler saw each of them fail) are
        // recovered in this transaction, without the handler; the poll's other records are
        // not part of it and come again in the next poll.
        let mut to_recover: Vec<(C::Record, SharedError)> = Vec::new();
        if !self.pending_recovery.is_empty() {
            for r in &batch {
                if let Some((from, to, e)) = self.pending_recovery.get(&tp_of(r)) {
                    if (*from..=*to).contains(&r.offset()) {
                        to_recover.push((r.clone(), e.clone()));
                    }
                }
            }
        }
        if let Some((_, error)) = to_recover.first() {
            let error = error.clone();
            let records: Vec<C::Record> = to_recover.iter().map(|(r, _)| r.clone()).collect();
            let recoverer = self.eh.recoverer.clone();
            for (r, e) in &to_recover {
                if let Err(f) = self.in_open_transaction(recoverer.recover(r, e)).await {
                    let f: SharedError = Arc::from(f);
                    for l in &self.eh.listeners {
                        l.recovery_failed_batch(&records, e, &f);
                    }
                    return Some(TxnFailure::Recovery(tp_of(r), r.clone(), e.clone(), f));
                }
            }
            next.extend(
                offset_bounds(&records, i64::max)
                    .into_iter()
                    .map(|(tp, o)| (tp, o + 1)),
            );
            let tp = tp_of(&records[0]);
            self.recovered_in_txn.push((tp, records, error));
            return None;
        }
        let ack = self.batch_ack(&batch);
        let handled = match call_guarded(|| f(batch.clone(), ack)).await {
            Ok(handled) => handled,
            // The transaction is aborted and the container stops.
            Err(panic) => Err(self.handler_panicked(panic)),
        };
        self.panicked = false;
        if let Err(e) = handled {
            let ranges = offset_bounds(&batch, i64::min)
                .into_iter()
                .zip(offset_bounds(&batch, i64::max))
                .map(|((tp, from), (_, to))| (tp, from, to))
                .collect();
            return Some(TxnFailure::Batch(Arc::from(e), ranges));
        }
        next.extend(
            offset_bounds(&batch, i64::max)
                .into_iter()
                .map(|(tp, o)| (tp, o + 1)),
        );
        None
    }

    /// A recovery that runs with the container's current producer as the open transaction's
    /// (for [`TransactionalDeadLetters`](super::TransactionalDeadLetters)).
    fn in_open_transaction<'a, T: 'a>(
        &self,
        recovery: impl Future<Output = T> + Send + 'a,
    ) -> BoxFuture<'a, T> {
        match self.txn.as_ref() {
            Some(t) => Box::pin(super::transactional::in_transaction_of(
                t.producer.clone(),
                recovery,
            )),
            None => Box::pin(recovery),
        }
    }

    /// `record`'s recovery committed: it no longer waits in `pending_recovery`.
    fn recovery_committed(&mut self, record: &C::Record) {
        let tp = tp_of(record);
        let offset = record.offset();
        let done = match self.pending_recovery.get_mut(&tp) {
            Some((from, to, _)) if (*from..=*to).contains(&offset) => {
                *from = offset + 1;
                *from > *to
            }
            _ => false,
        };
        if done {
            self.pending_recovery.remove(&tp);
        }
    }

    async fn abort_and_rewind(
        &mut self,
        producer: &TransactionalProducer,
        firsts: &[(TopicPartition, i64)],
    ) -> Option<Error> {
        let aborted = producer.abort_transaction().await.err();
        // KAFKA-17582: the positions go back to the committed offsets, whatever the abort said.
        for (tp, first) in firsts {
            self.seek_min(tp, *first);
        }
        aborted
    }

    /// The after-rollback processing (Spring's `DefaultAfterRollbackProcessor`).
    async fn transaction_failed(
        &mut self,
        failure: TxnFailure<C::Record>,
        firsts: &[(TopicPartition, i64)],
    ) {
        let Some(producer) = self.txn.as_ref().map(|t| t.producer.clone()) else {
            return;
        };
        // Recoveries inside the aborted transaction did not happen; they stay pending.
        self.recovered_in_txn.clear();
        self.sought_in_txn.clear();
        if let TxnFailure::Producer(e) = &failure {
            if e.is_fatal() {
                return self.fenced(e.clone(), firsts).await;
            }
        }
        if let Some(e) = self.abort_and_rewind(&producer, firsts).await {
            if e.is_fatal() {
                return self.fenced(e, firsts).await;
            }
            tracing::warn!(error = %e, "aborting the transaction failed");
        }
        match failure {
            TxnFailure::Producer(e) => {
                tracing::warn!(error = %e, "transaction did not commit; its records come again");
                self.emit(ContainerEvent::CommitFailed(e));
            }
            TxnFailure::Handler(tp, record, error) => {
                let offset = record.offset();
                let back_off = self.eh.back_off_for(&record, &error);
                let err_ref: &(dyn std::error::Error + 'static) = error.as_ref();
                let decision = self.tracker.failed(
                    &tp,
                    offset,
                    err_ref,
                    &self.eh.classifier,
                    back_off.as_ref(),
                );
                let notify =
                    !(no_retries(self.eh.back_off.as_ref()) && no_retries(back_off.as_ref()));
                self.after_rollback(tp, offset, decision, error, |l, a, e| {
                    if notify {
                        l.failed_delivery(&record, e, a)
                    }
                });
            }
            TxnFailure::Batch(error, ranges) => {
                let Some((tp, offset)) = firsts.first().cloned() else {
                    return;
                };
                let back_off = match self.txn.as_ref() {
                    Some(_) => self.eh.back_off.clone(),
                    None => return,
                };
                let err_ref: &(dyn std::error::Error + 'static) = error.as_ref();
                let decision = self.tracker.failed(
                    &tp,
                    offset,
                    err_ref,
                    &self.eh.classifier,
                    back_off.as_ref(),
                );
                // The whole batch waits: pause every partition of it for the delay.
                if let Decision::Retry { delay, .. } = decision {
                    if !delay.is_zero() {
                        for (other, _) in firsts.iter().skip(1) {
                            self.backing_off
                                .insert(other.clone(), Instant::now() + delay);
                            self.pause_partitions(std::slice::from_ref(other));
                        }
                    }
                }
                let recover = matches!(decision, Decision::Recover { .. });
                self.after_rollback(tp, offset, decision, error.clone(), |_, _, _| {});
                if recover {
                    // Recovered when they come again: exactly the records the handler saw fail.
                    for (tp, from, to) in ranges {
                        self.pending_recovery.insert(tp, (from, to, error.clone()));
                    }
                }
            }
            TxnFailure::Recovery(tp, record, error, f) => {
                let offset = record.offset();
                for l in &self.eh.listeners {
                    l.recovery_failed(&record, &error, &f);
                }
                let decision = self.tracker.recovery_failed(&tp, offset);
                let failures = self.tracker.recovery_failures(&tp, offset);
                self.emit(ContainerEvent::RecoveryFailed {
                    partition: tp.clone(),
                    offset,
                    failures,
                    error: f,
                });
                let wait = match decision {
                    RecoveryFailureDecision::Halt { failures } => {
                        self.events.halted(&tp, offset, failures);
                        self.emit(ContainerEvent::RecoveryHalted {
                            partition: tp.clone(),
                            offset,
                            failures,
                        });
                        if self.eh.on_recovery_halt == RecoveryHalt::StopContainer {
                            self.stop_reason = Some(StopReason::Abnormal);
                        }
                        // Keep the pending recovery; try again after the probe interval.
                        self.eh.halt_probe_interval
                    }
                    _ => {
                        // Redeliver to the handler (the back-off starts again): the whole failed
                        // record or batch.
                        self.pending_recovery
                            .retain(|_, (_, _, e)| !Arc::ptr_eq(e, &error));
                        self.eh.recovery_retry_interval
                    }
                };
                self.backing_off.insert(tp.clone(), Instant::now() + wait);
                self.pause_partitions(std::slice::from_ref(&tp));
            }
        }
    }

    fn after_rollback(
        &mut self,
        tp: TopicPartition,
        offset: i64,
        decision: Decision,
        error: SharedError,
        notify: impl Fn(&dyn super::handler::RetryListener<C::Record>, u32, &SharedError),
    ) {
        let attempt = match decision {
            Decision::Retry { attempt, .. } | Decision::Recover { attempt } => attempt,
        };
        for l in &self.eh.listeners {
            notify(l.as_ref(), attempt, &error);
        }
        self.emit_failed_delivery(&tp, offset, attempt, &error);
        match decision {
            Decision::Retry { delay, .. } => {
                if !delay.is_zero() {
                    self.backing_off.insert(tp.clone(), Instant::now() + delay);
                    self.pause_partitions(std::slice::from_ref(&tp));
                }
            }
            Decision::Recover { .. } => {
                // Recovered when the record comes again, inside that poll's transaction.
                self.pending_recovery.insert(tp, (offset, offset, error));
            }
        }
    }

    /// The producer is fenced (or otherwise fatally broken): no rollback processing.
    async fn fenced(&mut self, error: Error, firsts: &[(TopicPartition, i64)]) {
        tracing::error!(error = %error, "transactional producer fenced");
        for (tp, first) in firsts {
            self.seek_min(tp, *first);
        }
        let (on_fenced, factory) = match self.txn.as_ref() {
            Some(t) => (t.on_fenced, t.factory.clone()),
            None => return,
        };
        match (on_fenced, factory) {
            (OnFenced::Continue, Some(factory)) => match factory().await {
                Ok(p) => {
                    if let Some(t) = self.txn.as_mut() {
                        t.producer = Arc::new(p);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "making a new transactional producer failed");
                    self.stop_reason = Some(StopReason::Fenced);
                }
            },
            _ => self.stop_reason = Some(StopReason::Fenced),
        }
    }
}

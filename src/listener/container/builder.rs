//! Building and starting a listener container.

use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::*;
use crate::hash::FastMap;
use crate::listener::classify::HandlerError;
use crate::listener::consumer::ContainerConsumer;
use crate::listener::error_handler::CommonErrorHandler;
use crate::listener::events::{EventHub, Events};
use crate::listener::fetch_failure::{FailedList, FetchFailures, PartitionFailurePolicy};
use crate::listener::handler::{DefaultErrorHandler, ListenerFailure};
use crate::listener::tracker::FailedRecordTracker;
use crate::telemetry::ListenerTelemetry;
use crate::transaction::TransactionalProducer;
use crate::{Error, Result};
use tracing::Instrument;

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
    error_handler: Arc<dyn CommonErrorHandler<C::Record>>,
    listener_error_handler: Option<ListenerErrorFn<C::Record>>,
    batch_listener_error_handler: Option<BatchListenerErrorFn<C::Record>>,
    deserialization_check: Option<DeserializationCheck<C::Record>>,
    ack_mode: AckMode,
    poll_timeout: Duration,
    idle_interval: Option<Duration>,
    concurrency: usize,
    transactional: Option<Transactional>,
    events: Arc<EventHub>,
    partition_failure_policy: PartitionFailurePolicy,
}

/// The listener container (see [`ListenerContainer::builder`]): Spring's
/// `KafkaMessageListenerContainer`. It polls a consumer, calls the handler for each record (or
/// batch), commits per its [`AckMode`], and hands failures to its error handler: retried in
/// place with a back-off, then recovered (here: published to a dead-letter topic).
///
/// ```no_run
/// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
/// use std::time::Duration;
/// use rekafka::listener::{
///     AckMode, DefaultErrorHandler, ExponentialBackOff, ListenerConsumerRecord,
/// };
///
/// let dead_letters = client
///     .dead_letter_publisher::<ListenerConsumerRecord>()
///     .group("billing")
///     .build()
///     .await?;
/// let error_handler = DefaultErrorHandler::new()
///     .back_off(ExponentialBackOff::with_max_retries(4).initial_interval(Duration::from_millis(200)))
///     .recoverer(dead_letters); // orders -> orders-dlt after the retries
/// let container = client
///     .listener_container(["orders"], |c| c.group_id = Some("billing".into()))?
///     .record_handler(|record: ListenerConsumerRecord| async move {
///         println!("{:?}", record.value_str());
///         Ok(())
///     })
///     .error_handler(error_handler)
///     .ack_mode(AckMode::Batch)
///     .start()?;
/// // ... on shutdown: finishes the record in hand, commits, leaves the group.
/// container.stop().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ListenerContainer;

impl ListenerContainer {
    /// A builder for a container driving `consumer`.
    pub fn builder<C: ContainerConsumer>(consumer: C) -> ContainerBuilder<C> {
        let events = EventHub::new();
        ContainerBuilder {
            consumer,
            handler: None,
            error_handler: Arc::new(DefaultErrorHandler::default()),
            listener_error_handler: None,
            batch_listener_error_handler: None,
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
    pub fn record_handler<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(C::Record) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handler = Some(Handler::Record(RecordFn {
            call: RecordCall::Async(Arc::new(move |r, _ack| Box::pin(f(r)))),
            takes_ack: false,
        }));
        self
    }

    /// A per-record handler that receives an [`Acknowledgment`] (for the manual ack modes).
    pub fn record_handler_with_ack<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(C::Record, Acknowledgment) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handler = Some(Handler::Record(RecordFn {
            call: RecordCall::Async(Arc::new(move |r, a| Box::pin(f(r, a)))),
            takes_ack: true,
        }));
        self
    }

    /// A per-record handler that does its work synchronously and returns its result, with no
    /// future: for handlers that never wait (they compute, count, or hand the record on with a
    /// non-blocking send). It runs on the container's task, between polls, so it must not
    /// block; a handler that waits for I/O belongs in [`record_handler`](Self::record_handler).
    /// Everything else is the same: records of one partition in order, failures through the
    /// error handler, a panic stops the container.
    ///
    /// Why: the asynchronous form boxes one future per record. For a handler that does little,
    /// that allocation and the future's poll are a measurable share of the container's cost
    /// (BENCHMARKS.md, "Listener container vs a bare consumer loop").
    ///
    /// ```no_run
    /// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use rekafka::listener::ListenerConsumerRecord;
    ///
    /// let bytes = Arc::new(AtomicU64::new(0));
    /// let seen = bytes.clone();
    /// let container = client
    ///     .listener_container(["orders"], |c| c.group_id = Some("billing".into()))?
    ///     .sync_record_handler(move |record: ListenerConsumerRecord| {
    ///         let n = record.value_bytes().map_or(0, |v| v.len() as u64);
    ///         seen.fetch_add(n, Ordering::Relaxed);
    ///         Ok(())
    ///     })
    ///     .start()?;
    /// // ...
    /// container.stop().await;
    /// # Ok(()) }
    /// ```
    pub fn sync_record_handler<F>(mut self, f: F) -> Self
    where
        F: Fn(C::Record) -> Result<(), HandlerError> + Send + Sync + 'static,
    {
        self.handler = Some(Handler::Record(RecordFn {
            call: RecordCall::Sync(Arc::new(move |r, _ack| f(r))),
            takes_ack: false,
        }));
        self
    }

    /// [`sync_record_handler`](Self::sync_record_handler) that also receives the record's
    /// [`Acknowledgment`] (for the manual ack modes).
    pub fn sync_record_handler_with_ack<F>(mut self, f: F) -> Self
    where
        F: Fn(C::Record, Acknowledgment) -> Result<(), HandlerError> + Send + Sync + 'static,
    {
        self.handler = Some(Handler::Record(RecordFn {
            call: RecordCall::Sync(Arc::new(f)),
            takes_ack: true,
        }));
        self
    }

    /// The batch handler: gets every record of a poll at once. Fail with
    /// [`BatchListenerFailed`](crate::listener::BatchListenerFailed) (the error itself, or anywhere in its source chain) to name the
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
    ///
    /// Any [`CommonErrorHandler`]: a [`DefaultErrorHandler`], Spring's other handlers
    /// ([`LoggingErrorHandler`](crate::listener::LoggingErrorHandler),
    /// [`ContainerStoppingErrorHandler`](crate::listener::ContainerStoppingErrorHandler),
    /// [`DelegatingErrorHandler`](crate::listener::DelegatingErrorHandler)), one of your own, or
    /// a shared `Arc<dyn CommonErrorHandler<_>>`. It decides the fate of every failure; the
    /// container applies its [`Disposition`](crate::listener::Disposition).
    pub fn error_handler(mut self, handler: impl CommonErrorHandler<C::Record> + 'static) -> Self {
        self.error_handler = Arc::new(handler);
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

    /// The listener-level error handler of a batch handler (Spring's `KafkaListenerErrorHandler`
    /// / `ConsumerAwareListenerErrorHandler` on a batch listener), run before the container's
    /// error handler whenever the batch handler fails (its first call and each in-memory retry).
    /// It sees the whole batch, the error, and may ask for seeks ([`Seeks`]):
    ///
    /// * `Ok(())`: the batch is processed and acknowledged — except the records of partitions
    ///   it sought, which come again from the new position (Spring would commit them all);
    /// * `Err(e)`: `e` goes on to the container's error handler — a
    ///   [`BatchListenerFailed`](crate::listener::BatchListenerFailed) names the failed record
    ///   (the records before it are committed, the rest redelivered), any other error retries
    ///   the whole batch.
    ///
    /// Record handlers use [`listener_error_handler`](Self::listener_error_handler) and its
    /// variants instead; each kind of handler ignores the other's.
    ///
    /// ```no_run
    /// # async fn demo(consumer: rekafka::consumer::Consumer) -> rekafka::Result<()> {
    /// use rekafka::listener::{BatchListenerFailed, ListenerConsumerRecord, ListenerContainer};
    ///
    /// let handle = ListenerContainer::builder(consumer)
    ///     .batch_handler(|records: Vec<ListenerConsumerRecord>| async move {
    ///         // ... fails somewhere in the batch
    ///         Ok(())
    ///     })
    ///     .batch_listener_error_handler(|records: &[ListenerConsumerRecord], error, _seeks| {
    ///         // Name the first record whose value is empty as the failed one.
    ///         match records.iter().position(|r| r.value_bytes().is_none_or(|v| v.is_empty())) {
    ///             Some(i) => Err(Box::new(BatchListenerFailed::at_index(i, error))),
    ///             None => Err(error),
    ///         }
    ///     })
    ///     .start()?;
    /// # let _ = handle; Ok(()) }
    /// ```
    pub fn batch_listener_error_handler(
        mut self,
        f: impl Fn(&[C::Record], HandlerError, &mut Seeks) -> Result<(), HandlerError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.batch_listener_error_handler = Some(Arc::new(f));
        self
    }

    /// Checks each polled record before any handler sees it (Spring's
    /// `ErrorHandlingDeserializer`): a record that fails is never handed to the handler and goes
    /// to the recoverer on its first failure, with its raw bytes. For rekafka's consumer, build
    /// one with [`deserialization_check`](crate::listener::deserialization_check).
    pub fn deserialization_check(
        mut self,
        check: impl Fn(
            &C::Record,
        )
            -> std::result::Result<(), crate::listener::classify::DeserializationFailed>
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
    /// [`TransactionalDeadLetters`](crate::listener::TransactionalDeadLetters)) for the dead letter to
    /// join the transaction.
    ///
    /// When the producer is fenced, the container rewinds to the committed offsets and goes on
    /// with a new producer of the same settings ([`OnFenced::Continue`], Spring's default); use
    /// [`transactional_with`](Self::transactional_with) to stop instead or to make the producer
    /// yourself.
    pub fn transactional(mut self, producer: Arc<TransactionalProducer>) -> Self {
        self.transactional = Some(Transactional {
            producer,
            factory: None,
            on_fenced: OnFenced::Continue,
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
    pub fn start(mut self) -> Result<ContainerHandle> {
        let handler = self
            .handler
            .ok_or_else(|| Error::config("a listener container needs a record or batch handler"))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("a listener container must start inside a tokio runtime"))?;
        if self.consumer.auto_commit_enabled() {
            // As Spring's container does with `enable.auto.commit`: the container commits per
            // its ack mode, and an auto-commit could store positions of unhandled records.
            tracing::info!("the listener container turns the consumer's auto-commit off");
            self.consumer.disable_auto_commit();
        }
        if self.consumer.auto_commit_enabled() {
            return Err(Error::config(
                "the listener container commits offsets itself (per its ack mode): create the \
                 consumer with auto-commit disabled (enable.auto.commit=false)",
            ));
        }
        let (stop_tx, stop_rx, done) = crate::task::StopAndWait::new();
        let stop_tx = Arc::new(stop_tx);
        // A container over a consumer a client made is stopped by `Client::close` first.
        self.consumer
            .close_link()
            .register(crate::task::CloseStage::Containers, &stop_tx);
        let (pause_tx, pause_rx) = watch::channel(false);
        let policy = self.error_handler.recovery_policy();
        let mut tracker = FailedRecordTracker::new();
        tracker.reset_state_on_exception_change = policy.reset_state_on_exception_change;
        tracker.reset_state_on_recovery_failure = policy.reset_state_on_recovery_failure;
        tracker.max_recovery_failures = policy.max_recovery_failures;
        let group = self.consumer.group_id();
        let client_id = self.consumer.client_id().to_owned();
        let failed = FailedList::default();
        let runner = Runner {
            fetch_failures: FetchFailures::new(self.partition_failure_policy, failed.clone()),
            consumer: self.consumer,
            handler,
            recoverer: self.error_handler.recoverer(),
            listeners: self.error_handler.retry_listeners(),
            attempt_header: self.error_handler.delivery_attempt_header(),
            policy,
            eh: self.error_handler,
            leh: self.listener_error_handler,
            batch_leh: self.batch_listener_error_handler,
            check: self.deserialization_check,
            ack_mode: self.ack_mode,
            poll_timeout: self.poll_timeout,
            idle_interval: self.idle_interval,
            concurrency: self.concurrency,
            txn: self.transactional,
            pending_recovery: FastMap::default(),
            recoveries: Recoveries::new(),
            recovered_ahead: FastMap::default(),
            acked_to: FastMap::default(),
            recovered_in_txn: Vec::new(),
            sought_in_txn: HashSet::new(),
            events: self.events.clone(),
            stop: stop_rx,
            pause: pause_rx,
            tracker,
            backing_off: FastMap::default(),
            held: FastMap::default(),
            halted: FastMap::default(),
            assignment: HashSet::new(),
            assignment_ids: std::collections::HashMap::new(),
            commits: Commits::new(),
            last_records: Instant::now(),
            idle_notified: false,
            container_paused: false,
            acks: Arc::new(Mutex::new(Vec::new())),
            nacks: Arc::default(),
            group,
            stop_reason: None,
            sought: false,
            rewound: FastMap::default(),
            panicked: false,
            telemetry: ListenerTelemetry::new(&client_id),
        };
        let span = tracing::debug_span!("kafka.listener", client_id = %client_id);
        let task = runtime.spawn(
            async move {
                let _done = done;
                runner.run().await
            }
            .instrument(span),
        );
        Ok(ContainerHandle {
            stop: stop_tx,
            pause: pause_tx,
            events: self.events,
            task: Some(task),
            failed,
        })
    }
}

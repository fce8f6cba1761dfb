//! The listener container over a share group: [`ShareContainer`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use super::adapter::listener_record_methods;
use super::backoff::{BackOff, FixedBackOff};
use super::classify::{Classifier, DeserializationFailed, HandlerError};
use super::consumer::ListenerRecord;
use super::handler::{BoxFuture, Recoverer, Recovery, SharedError};
use super::panic_guard::call_guarded;
use super::tracker::PartitionKey;
use super::{DELIVERY_ATTEMPT_HEADER, delivery_attempt_header_value};
use crate::protocol::record::Header;
use crate::share::{AcknowledgeType, AcknowledgementMode, ShareConsumer, ShareRecord};
use crate::{Error, ErrorKind, Result};

/// Kafka's default `share.delivery.count.limit`.
pub const DEFAULT_DELIVERY_COUNT_LIMIT: u16 = 5;
/// The default poll timeout (Spring's `pollTimeout`, 5 s).
pub const DEFAULT_SHARE_POLL_TIMEOUT: Duration = Duration::from_secs(5);
/// Events buffered per subscriber; a slower subscriber loses the oldest.
const EVENT_CAPACITY: usize = 1024;

/// A record of a share group as the listener sees it: the [`ShareRecord`] plus headers the
/// container adds and the group it was consumed in.
#[derive(Debug, Clone)]
pub struct ShareListenerRecord {
    record: Arc<ShareRecord>,
    extra_headers: Option<Arc<Vec<Header>>>,
    failure: Option<Arc<DeserializationFailed>>,
    group: Arc<str>,
}

impl ShareListenerRecord {
    /// Wraps `record`, consumed in share group `group`.
    pub fn new(record: ShareRecord, group: impl Into<Arc<str>>) -> Self {
        ShareListenerRecord {
            record: Arc::new(record),
            extra_headers: None,
            failure: None,
            group: group.into(),
        }
    }

    /// The share consumer's record.
    pub fn record(&self) -> &ShareRecord {
        &self.record
    }

    /// How many times the broker has delivered the record, this delivery included (from 1).
    pub fn delivery_count(&self) -> u16 {
        self.record.delivery_count
    }

    listener_record_methods!(text);
}

impl ListenerRecord for ShareListenerRecord {
    listener_record_methods!(record);

    fn consumer_group(&self) -> Option<&str> {
        Some(&self.group)
    }
}

/// What the share container reports ([`ShareContainerHandle::events`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ShareContainerEvent {
    /// The container's task started.
    Started,
    /// A delivery failed.
    FailedDelivery {
        /// The partition.
        partition: PartitionKey,
        /// The record's offset.
        offset: i64,
        /// The delivery count (from 1).
        delivery_count: u16,
        /// The handler's error.
        error: SharedError,
    },
    /// A failed record was released for redelivery (after its back-off).
    Released {
        /// The partition.
        partition: PartitionKey,
        /// The record's offset.
        offset: i64,
        /// The delivery count of the failed delivery.
        delivery_count: u16,
    },
    /// The recoverer handled a record; it is accepted.
    Recovered {
        /// The partition.
        partition: PartitionKey,
        /// The record's offset.
        offset: i64,
        /// The delivery count of the last delivery.
        delivery_count: u16,
    },
    /// A record was rejected: no recoverer, or the recoverer failed (then `error` is its
    /// error).
    Rejected {
        /// The partition.
        partition: PartitionKey,
        /// The record's offset.
        offset: i64,
        /// The delivery count of the last delivery.
        delivery_count: u16,
        /// The recoverer's error, if it failed.
        error: Option<SharedError>,
    },
    /// An acknowledgement could not be recorded or the broker refused it (an expired
    /// acquisition lock: the broker delivers the record again).
    AcknowledgementFailed {
        /// The partition.
        partition: PartitionKey,
        /// The error.
        error: Error,
    },
    /// `poll` failed with a retriable error (the container goes on).
    PollFailed(Error),
    /// The container stopped; `Some` with the error that stopped it.
    Stopped(Option<Error>),
}

type Handler = Arc<
    dyn Fn(ShareListenerRecord) -> BoxFuture<'static, std::result::Result<(), HandlerError>>
        + Send
        + Sync,
>;

/// The listener container over a share group ([`ShareConsumer`], KIP-932): Spring for Apache
/// Kafka's share listener container, with this layer's back-off policies, classification and
/// recoverers.
///
/// The container polls its consumer in explicit acknowledgement mode and calls the record
/// handler for each record, one at a time. What happens to the record then:
///
/// | outcome | acknowledgement |
/// |---|---|
/// | handled | accepted |
/// | failed, retryable, attempts left | the back-off's delay for that delivery is waited, then released: the broker delivers it again (to any member) with its delivery count one higher |
/// | failed, not retryable ([`Classifier`]), or attempts exhausted (the back-off gives no delay for this delivery, or the delivery count reached the group's `share.delivery.count.limit`) | the recoverer runs; accepted once the recovery is done (a dead letter acknowledged), rejected if it fails or there is no recoverer |
///
/// The delivery attempt is the record's `delivery_count`, counted by the broker: attempts
/// survive members leaving and the container restarting. The record handed to the recoverer
/// carries it in Spring's `kafka_deliveryAttempt` header (4-byte big-endian), so a
/// [`DeadLetterPublisher`](super::DeadLetterPublisher) writes it into the dead letter next to
/// Spring's `kafka_dlt-*` headers.
///
/// Semantics differ from the consumer group container: records of a partition are spread over
/// the group's members, so there is no per-partition order and no seek; a retry is a
/// redelivery by the broker, not a seek; the back-off delay is waited while the record's
/// acquisition lock is held (keep every delay well below `share.record.lock.duration.ms`, or
/// the lock expires, the broker redelivers the record elsewhere and the release fails).
///
/// ```no_run
/// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
/// use std::time::Duration;
/// use rekafka::listener::{FixedBackOff, ShareContainer, ShareListenerRecord};
/// use rekafka::share::{AcknowledgementMode, ShareConsumerConfig};
///
/// let mut consumer = client.share_consumer(
///     ShareConsumerConfig::new("workers").with_acknowledgement_mode(AcknowledgementMode::Explicit),
/// )?;
/// consumer.subscribe(["jobs"]);
/// let dead_letters = client.dead_letter_publisher::<ShareListenerRecord>().build().await?;
/// let container = ShareContainer::builder(consumer)
///     .handler(|record: ShareListenerRecord| async move {
///         println!("{:?}", record.value_str());
///         Ok(())
///     })
///     .back_off(FixedBackOff::new(Duration::from_secs(1), 3))
///     .recoverer(dead_letters)
///     .start()?;
/// // ...
/// container.stop().await?;
/// # Ok(())
/// # }
/// ```
///
/// Built by [`ShareContainer::builder`].
#[derive(Debug)]
pub struct ShareContainer;

impl ShareContainer {
    /// A builder over `consumer`, which must be in explicit acknowledgement mode
    /// ([`AcknowledgementMode::Explicit`]) and subscribed.
    pub fn builder(consumer: ShareConsumer) -> ShareContainerBuilder {
        ShareContainerBuilder {
            consumer,
            handler: None,
            back_off: Arc::new(FixedBackOff::default()),
            classifier: Classifier::default(),
            recoverer: None,
            delivery_count_limit: DEFAULT_DELIVERY_COUNT_LIMIT,
            poll_timeout: DEFAULT_SHARE_POLL_TIMEOUT,
        }
    }
}

/// Builds a [`ShareContainer`]. Defaults: [`FixedBackOff::default`] (9 retries, no delay),
/// [`Classifier::default`], no recoverer (exhausted records are rejected), delivery count
/// limit 5 (Kafka's `share.delivery.count.limit` default: set the group's value with
/// [`delivery_count_limit`](Self::delivery_count_limit)), poll timeout 5 s.
pub struct ShareContainerBuilder {
    consumer: ShareConsumer,
    handler: Option<Handler>,
    back_off: Arc<dyn BackOff>,
    classifier: Classifier,
    recoverer: Option<Arc<dyn Recoverer<ShareListenerRecord>>>,
    delivery_count_limit: u16,
    poll_timeout: Duration,
}

impl std::fmt::Debug for ShareContainerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShareContainerBuilder")
            .field("handler", &self.handler.is_some())
            .field("back_off", &self.back_off)
            .field("classifier", &self.classifier)
            .field("recoverer", &self.recoverer.is_some())
            .field("delivery_count_limit", &self.delivery_count_limit)
            .field("poll_timeout", &self.poll_timeout)
            .finish()
    }
}

impl ShareContainerBuilder {
    /// The record handler (required): `Ok` accepts the record, `Err` is a failed delivery.
    pub fn handler<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(ShareListenerRecord) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::result::Result<(), HandlerError>> + Send + 'static,
    {
        self.handler = Some(Arc::new(move |r| Box::pin(handler(r))));
        self
    }

    /// The back-off policy: its `n`-th delay is waited after a failure of delivery `n` before
    /// the release; when it has none for delivery `n`, the record is recovered.
    pub fn back_off(mut self, back_off: impl BackOff + 'static) -> Self {
        self.back_off = Arc::new(back_off);
        self
    }

    /// Which errors are retried (the others go to the recoverer at once).
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        self.classifier = classifier;
        self
    }

    /// The recoverer for records whose attempts ran out or whose error is not retryable;
    /// the record is accepted only once it succeeded.
    pub fn recoverer(mut self, recoverer: impl Recoverer<ShareListenerRecord> + 'static) -> Self {
        self.recoverer = Some(Arc::new(recoverer));
        self
    }

    /// The group's `share.delivery.count.limit` (or read it with
    /// [`delivery_count_limit_from`](Self::delivery_count_limit_from)): a
    /// record failing on this delivery is recovered, since the broker would archive it on
    /// release. Default 5; values below 1 count as 1.
    pub fn delivery_count_limit(mut self, limit: u16) -> Self {
        self.delivery_count_limit = limit.max(1);
        self
    }

    /// Sets the [delivery count limit](Self::delivery_count_limit) to the group's
    /// `share.delivery.count.limit` as the brokers report it
    /// ([`Admin::describe_group_configs`](crate::admin::Admin::describe_group_configs): the
    /// group's own value, else the broker's default); keeps the current setting when the
    /// answer has no such entry. Fails with the admin call's error.
    pub async fn delivery_count_limit_from(mut self, admin: &crate::admin::Admin) -> Result<Self> {
        let group = self.consumer.config().group_id.clone();
        let mut answers = admin.describe_group_configs(&[group.as_str()]).await?;
        let entries = match answers.pop() {
            Some(entries) => entries?,
            None => return Ok(self),
        };
        let limit = entries
            .iter()
            .find(|e| e.name == crate::admin::SHARE_DELIVERY_COUNT_LIMIT)
            .and_then(|e| e.value.as_deref())
            .and_then(|v| v.trim().parse::<u16>().ok());
        if let Some(limit) = limit {
            self.delivery_count_limit = limit.max(1);
        }
        Ok(self)
    }

    /// How long one poll waits for records (Spring's `pollTimeout`); a stop waits for the
    /// poll in progress. Default 5 s.
    pub fn poll_timeout(mut self, timeout: Duration) -> Self {
        self.poll_timeout = timeout;
        self
    }

    /// Starts the container's task (inside a tokio runtime). Fails with
    /// [`ErrorKind::Config`] without a handler or when the consumer is not in explicit
    /// acknowledgement mode.
    pub fn start(self) -> Result<ShareContainerHandle> {
        let Some(handler) = self.handler else {
            return Err(Error::config("the share container needs a handler"));
        };
        if self.consumer.config().acknowledgement_mode != AcknowledgementMode::Explicit {
            return Err(Error::config(
                "the share container needs share.acknowledgement.mode=explicit",
            ));
        }
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        let (stop_tx, stop_rx, done) = crate::task::StopAndWait::new();
        let stop_tx = Arc::new(stop_tx);
        // A container over a share consumer a client made is stopped by `Client::close` first.
        self.consumer
            .close_link()
            .register(crate::task::CloseStage::Containers, &stop_tx);
        let group: Arc<str> = Arc::from(self.consumer.config().group_id.as_str());
        let runner = Runner {
            consumer: self.consumer,
            handler,
            back_off: self.back_off,
            classifier: self.classifier,
            recoverer: self.recoverer,
            limit: self.delivery_count_limit,
            poll_timeout: self.poll_timeout,
            events: events.clone(),
            stop: stop_rx,
            _done: done,
            group,
        };
        let task = tokio::spawn(runner.run());
        Ok(ShareContainerHandle {
            stop: stop_tx,
            task: Some(task),
            events,
        })
    }
}

/// A running share container. Dropping it stops the container as [`stop`](Self::stop) does,
/// without waiting. A container over a share consumer made by a [`Client`](crate::Client) is
/// also stopped by [`Client::close`](crate::Client::close), first of all.
#[derive(Debug)]
pub struct ShareContainerHandle {
    /// Shared with the client that made the consumer (weakly), which may stop it on close.
    stop: Arc<crate::task::StopAndWait>,
    task: Option<JoinHandle<Result<()>>>,
    events: broadcast::Sender<ShareContainerEvent>,
}

impl ShareContainerHandle {
    /// A subscription to the container's events from now on (bounded: a subscriber more
    /// than 1024 events behind loses the oldest).
    pub fn events(&self) -> broadcast::Receiver<ShareContainerEvent> {
        self.events.subscribe()
    }

    /// Whether the container's task has ended.
    pub fn is_stopped(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stops the container: the record in hand is finished (its acknowledgement recorded),
    /// the records the last poll returned and not handled yet are released, and the consumer
    /// is closed (pending acknowledgements sent, the group left). Returns the error that
    /// stopped the container, if any.
    pub async fn stop(mut self) -> Result<()> {
        self.stop.stop();
        match self.task.take() {
            Some(task) => task.await.unwrap_or_else(|e| {
                Err(Error::with_message(
                    ErrorKind::InvalidState,
                    format!("the share container's task failed: {e}"),
                ))
            }),
            None => Ok(()),
        }
    }
}

/// What to do with a failed record.
enum Fate {
    Release(Duration),
    Recover,
}

struct Runner {
    consumer: ShareConsumer,
    handler: Handler,
    back_off: Arc<dyn BackOff>,
    classifier: Classifier,
    recoverer: Option<Arc<dyn Recoverer<ShareListenerRecord>>>,
    limit: u16,
    poll_timeout: Duration,
    events: broadcast::Sender<ShareContainerEvent>,
    stop: crate::task::StopListener,
    /// Held while the task runs (dropped once the consumer is closed): what a stop by
    /// [`Client::close`](crate::Client::close) waits for.
    _done: crate::task::TaskDone,
    group: Arc<str>,
}

/// The delay the back-off gives after a failure of delivery `attempt` (from 1), or `None`
/// when its retries are exhausted at that delivery.
fn delay_for(back_off: &dyn BackOff, attempt: u32) -> Option<Duration> {
    let mut execution = back_off.start();
    let mut delay = None;
    for _ in 0..attempt.max(1) {
        delay = Some(execution.next_back_off()?);
    }
    delay
}

impl Runner {
    fn emit(&self, event: ShareContainerEvent) {
        let _ = self.events.send(event);
    }

    fn stopping(&self) -> bool {
        self.stop.is_stopped()
    }

    async fn run(mut self) -> Result<()> {
        self.emit(ShareContainerEvent::Started);
        let mut failure = None;
        let mut poll_backoff = Duration::from_millis(100);
        while !self.stopping() {
            let records = match self.consumer.poll(self.poll_timeout).await {
                Ok(records) => {
                    poll_backoff = Duration::from_millis(100);
                    records
                }
                Err(e) if e.is_retriable() => {
                    tracing::warn!(group = %self.group, error = %e, "share container: poll failed");
                    self.emit(ShareContainerEvent::PollFailed(e));
                    self.sleep_or_stop(poll_backoff).await;
                    poll_backoff = (poll_backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => {
                    tracing::error!(group = %self.group, error = %e, "share container: poll failed; stopping");
                    failure = Some(e);
                    break;
                }
            };
            for outcome in self.consumer.take_acknowledgement_outcomes() {
                if let Err(e) = outcome.result {
                    tracing::warn!(group = %self.group, partition = %outcome.partition, error = %e,
                        "share container: acknowledgements failed; the broker delivers those records again");
                    self.emit(ShareContainerEvent::AcknowledgementFailed {
                        partition: (outcome.partition.topic.clone(), outcome.partition.partition),
                        error: e,
                    });
                }
            }
            for record in records {
                if self.stopping() {
                    // Not acknowledged: `close` releases it.
                    break;
                }
                let ack = self.process(&record).await;
                if let Err(e) = self.consumer.acknowledge(&record, ack) {
                    // The record was taken from this member (a rebalance): the broker
                    // delivers it again once its lock is gone.
                    tracing::warn!(group = %self.group, topic = %record.topic, partition = record.partition,
                        offset = record.offset, error = %e, "share container: acknowledgement not recorded");
                    self.emit(ShareContainerEvent::AcknowledgementFailed {
                        partition: (record.topic.clone(), record.partition),
                        error: e,
                    });
                }
            }
        }
        let closed = self.consumer.close().await;
        for outcome in self.consumer.take_acknowledgement_outcomes() {
            if let Err(e) = outcome.result {
                self.emit(ShareContainerEvent::AcknowledgementFailed {
                    partition: (outcome.partition.topic.clone(), outcome.partition.partition),
                    error: e,
                });
            }
        }
        let result = match (failure, closed) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(())) => Ok(()),
        };
        self.emit(ShareContainerEvent::Stopped(result.as_ref().err().cloned()));
        result
    }

    /// Sleeps for `delay` or until the container is stopped.
    async fn sleep_or_stop(&mut self, delay: Duration) {
        if self.stopping() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            () = self.stop.stopped() => {}
        }
    }

    /// Handles one record and decides its acknowledgement.
    async fn process(&mut self, record: &ShareRecord) -> AcknowledgeType {
        let listener_record = ShareListenerRecord {
            record: Arc::new(record.clone()),
            extra_headers: None,
            failure: None,
            group: self.group.clone(),
        };
        let call = call_guarded(tracing::Span::none(), || {
            (self.handler)(listener_record.clone())
        });
        let outcome = match call.await {
            Ok(r) => r,
            Err(panicked) => Err(Box::new(panicked) as HandlerError),
        };
        let error: SharedError = match outcome {
            Ok(()) => return AcknowledgeType::Accept,
            Err(e) => Arc::from(e),
        };
        let tp: PartitionKey = (record.topic.clone(), record.partition);
        let count = record.delivery_count;
        tracing::debug!(group = %self.group, topic = %record.topic, partition = record.partition,
            offset = record.offset, delivery_count = count, error = %error, "share container: delivery failed");
        self.emit(ShareContainerEvent::FailedDelivery {
            partition: tp.clone(),
            offset: record.offset,
            delivery_count: count,
            error: error.clone(),
        });
        let fate = if !self.classifier.is_retryable(&*error) || count >= self.limit {
            Fate::Recover
        } else {
            match delay_for(&*self.back_off, u32::from(count)) {
                Some(delay) => Fate::Release(delay),
                None => Fate::Recover,
            }
        };
        match fate {
            Fate::Release(delay) => {
                if let Some(lock) = self.consumer.acquisition_lock_timeout()
                    && delay >= lock
                {
                    tracing::warn!(group = %self.group, topic = %record.topic, partition = record.partition,
                        offset = record.offset, ?delay, ?lock,
                        "share container: the back-off delay is not shorter than the record lock; the release will fail and the broker redelivers the record when the lock expires");
                }
                if !delay.is_zero() {
                    self.sleep_or_stop(delay).await;
                }
                self.emit(ShareContainerEvent::Released {
                    partition: tp,
                    offset: record.offset,
                    delivery_count: count,
                });
                AcknowledgeType::Release
            }
            Fate::Recover => self.recover(listener_record, tp, &error).await,
        }
    }

    /// Runs the recoverer: accepted once it succeeded, rejected otherwise.
    async fn recover(
        &mut self,
        record: ShareListenerRecord,
        tp: PartitionKey,
        error: &SharedError,
    ) -> AcknowledgeType {
        let offset = record.offset();
        let count = record.delivery_count();
        let Some(recoverer) = self.recoverer.clone() else {
            tracing::error!(group = %self.group, topic = record.topic(), partition = record.partition(),
                offset, delivery_count = count, error = %error,
                "share container: attempts exhausted and no recoverer; record rejected");
            self.emit(ShareContainerEvent::Rejected {
                partition: tp,
                offset,
                delivery_count: count,
                error: None,
            });
            return AcknowledgeType::Reject;
        };
        let record = record.with_header(Header::new(
            DELIVERY_ATTEMPT_HEADER,
            Some(Bytes::copy_from_slice(&delivery_attempt_header_value(
                u32::from(count),
            ))),
        ));
        let result = match recoverer.start_recovery(&record, error).await {
            Ok(Recovery::Done) => Ok(()),
            Ok(Recovery::InFlight(wait)) => wait.await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                self.emit(ShareContainerEvent::Recovered {
                    partition: tp,
                    offset,
                    delivery_count: count,
                });
                AcknowledgeType::Accept
            }
            Err(e) => {
                let e: SharedError = Arc::from(e);
                tracing::error!(group = %self.group, topic = record.topic(), partition = record.partition(),
                    offset, delivery_count = count, error = %e, "share container: recovery failed; record rejected");
                self.emit(ShareContainerEvent::Rejected {
                    partition: tp,
                    offset,
                    delivery_count: count,
                    error: Some(e),
                });
                AcknowledgeType::Reject
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::ExponentialBackOff;

    #[test]
    fn delay_for_follows_the_back_off() {
        let fixed = FixedBackOff::new(Duration::from_millis(10), 2);
        assert_eq!(delay_for(&fixed, 1), Some(Duration::from_millis(10)));
        assert_eq!(delay_for(&fixed, 2), Some(Duration::from_millis(10)));
        assert_eq!(delay_for(&fixed, 3), None);
        let exp = ExponentialBackOff::with_max_retries(3)
            .initial_interval(Duration::from_millis(100))
            .multiplier(2.0);
        assert_eq!(delay_for(&exp, 1), Some(Duration::from_millis(100)));
        assert_eq!(delay_for(&exp, 3), Some(Duration::from_millis(400)));
        assert_eq!(delay_for(&exp, 4), None);
        assert_eq!(delay_for(&FixedBackOff::no_retries(), 1), None);
    }
}

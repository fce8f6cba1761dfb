//! Starting the main, retry and DLT containers of a [`RetryTopicConfiguration`], the recoverer
//! that forwards failed records, and the [`RetryTopicHandle`] that stops them all.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::headers::{self, forward_headers};
use super::{Next, RetryTopicConfiguration, RetryTopology, TopicCreation};
use crate::admin::{Admin, NewTopic};
use crate::cluster::Cluster;
use crate::consumer::{AutoCommit, Consumer, ConsumerConfig, Deserializer};
use crate::error::KafkaCode;
use crate::listener::classify::HandlerError;
use crate::listener::dead_letter_publisher::{DeadLetterPublisher, PublishWait, log_sent};
use crate::listener::handler::{BoxFuture, RecoverFuture, Recoverer, SharedError};
use crate::listener::typed::typed_record;
use crate::listener::{
    Acknowledgment, ContainerConsumer, ContainerHandle, DefaultErrorHandler, Events, FixedBackOff,
    ListenerConsumerRecord, ListenerContainer, ListenerRecord, StopReason, TypedConsumer,
    TypedRecord,
};
use crate::producer::Record;
use crate::{Error, Result};

/// A record handler, boxed.
type RecordFn<R> = Arc<dyn Fn(R) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// The main, retry and DLT containers of a [`RetryTopicConfiguration`], run and stopped
/// together. Dropping it stops every container (without waiting).
#[derive(Debug)]
pub struct RetryTopicHandle {
    topology: RetryTopology,
    containers: Vec<(String, ContainerHandle)>,
    publisher: Arc<DeadLetterPublisher<ListenerConsumerRecord>>,
    clusters: Vec<Cluster>,
}

impl RetryTopicHandle {
    /// The topics in use.
    pub fn topology(&self) -> &RetryTopology {
        &self.topology
    }

    /// The container consuming `topic` (the main topic, a retry topic, the DLT or a routed DLT).
    pub fn container(&self, topic: &str) -> Option<&ContainerHandle> {
        self.containers
            .iter()
            .find(|(t, _)| t == topic)
            .map(|(_, c)| c)
    }

    /// The events of the container consuming `topic`.
    pub fn events(&self, topic: &str) -> Option<Events> {
        self.container(topic).map(ContainerHandle::events)
    }

    /// Whether every container is still running.
    pub fn is_running(&self) -> bool {
        self.containers.iter().all(|(_, c)| c.is_running())
    }

    /// Stops every container gracefully (each finishes the record in hand and commits what it
    /// handled or forwarded), then closes the forwarding producer and the consumers'
    /// connections. Returns why each container (by topic) stopped.
    pub async fn stop(self) -> Vec<(String, StopReason)> {
        let RetryTopicHandle {
            containers,
            publisher,
            clusters,
            ..
        } = self;
        let stops: Vec<_> = containers
            .into_iter()
            .map(|(topic, c)| tokio::spawn(async move { (topic, c.stop().await) }))
            .collect();
        let mut reasons = Vec::with_capacity(stops.len());
        for s in stops {
            if let Ok(r) = s.await {
                reasons.push(r);
            }
        }
        publisher.close().await;
        for c in clusters {
            c.close().await;
        }
        reasons
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The recoverer of every container: forwards a failed record to its next topic (retry topic
/// or DLT) with Spring's headers and waits for the broker's acknowledgement, or logs and skips
/// it when it has nowhere to go.
struct Forwarder {
    config: RetryTopicConfiguration,
    topology: RetryTopology,
    publisher: Arc<DeadLetterPublisher<ListenerConsumerRecord>>,
    group: String,
}

impl<R: ListenerRecord> Recoverer<R> for Forwarder {
    fn recover<'a>(&'a self, record: &'a R, error: &'a SharedError) -> RecoverFuture<'a> {
        Box::pin(async move {
            let hs = record.headers();
            let attempt = headers::attempts(&hs);
            let original = headers::original_timestamp(&hs).unwrap_or(record.timestamp());
            let now = now_ms();
            let next = {
                let err: &(dyn std::error::Error + 'static) = &**error;
                self.config
                    .next(&self.topology, record.topic(), attempt, err, original, now)
            };
            let (topic, due) = match next {
                Next::Retry { topic, delay } => (
                    topic,
                    now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                ),
                Next::Dlt(topic) => (topic, now),
                Next::Drop => {
                    tracing::error!(
                        topic = record.topic(),
                        partition = record.partition(),
                        offset = record.offset(),
                        attempt,
                        error = %error,
                        "retries exhausted for {}-{}@{} and no DLT to send it to; record skipped",
                        record.topic(),
                        record.partition(),
                        record.offset()
                    );
                    return Ok(());
                }
            };
            let partition = self
                .publisher
                .sender
                .verified_partition(&topic, record.partition())
                .await;
            let out = Record {
                topic: Arc::from(topic.as_str()),
                partition,
                key: record.key().cloned(),
                value: record.value().cloned(),
                headers: forward_headers(
                    record,
                    &**error,
                    attempt,
                    due,
                    Some(&self.group),
                    self.config.retain_all_retry_header_values,
                ),
                timestamp: None,
            };
            let meta = self.publisher.sender.publish(record, out).await?;
            log_sent(
                record,
                &meta,
                &format_args!("failed record forwarded (attempt {attempt})"),
            );
            Ok(())
        })
    }
}

/// The DLT handler used when none is given: logs the dead letter at ERROR.
fn log_dead_letter(record: ListenerConsumerRecord) -> BoxFuture<'static, Result<(), HandlerError>> {
    let hs = record.headers();
    let text = |name: &str| {
        hs.iter()
            .rev()
            .find(|h| h.key() == name)
            .and_then(|h| h.value())
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .unwrap_or_default()
    };
    tracing::error!(
        topic = record.topic(),
        partition = record.partition(),
        offset = record.offset(),
        original_topic = %text(headers::KAFKA_ORIGINAL_TOPIC),
        attempts = headers::attempts(&hs),
        error = %text(headers::KAFKA_EXCEPTION_MESSAGE),
        "dead letter received in {}-{}@{}",
        record.topic(),
        record.partition(),
        record.offset()
    );
    Box::pin(std::future::ready(Ok(())))
}

/// Where retry topics connect: a [`Client`](crate::Client) (`&client`, the usual way: its
/// [`close`](crate::Client::close) then stops the containers and closes their consumers and
/// publisher) or a [`Cluster`]. Each container still gets connections of its own, made from
/// the same settings.
#[derive(Debug, Clone)]
pub struct RetryTopicSource {
    cluster: Cluster,
    link: crate::task::CloseLink,
}

impl RetryTopicSource {
    /// A source whose containers the client behind `link` closes.
    pub(crate) fn linked(cluster: Cluster, link: crate::task::CloseLink) -> RetryTopicSource {
        RetryTopicSource { cluster, link }
    }
}

impl From<Cluster> for RetryTopicSource {
    fn from(cluster: Cluster) -> RetryTopicSource {
        RetryTopicSource {
            cluster,
            link: crate::task::CloseLink::default(),
        }
    }
}

impl From<&Cluster> for RetryTopicSource {
    fn from(cluster: &Cluster) -> RetryTopicSource {
        cluster.clone().into()
    }
}

impl RetryTopicConfiguration {
    /// Starts the containers for `main_topic` with `handler` and the default DLT handler (it
    /// logs each dead letter at ERROR). See [`start_with_dlt_handler`](Self::start_with_dlt_handler).
    pub async fn start<F, Fut>(
        &self,
        source: impl Into<RetryTopicSource>,
        consumer_config: ConsumerConfig,
        main_topic: &str,
        handler: F,
    ) -> Result<RetryTopicHandle>
    where
        F: Fn(ListenerConsumerRecord) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.start_with_dlt_handler(
            source,
            consumer_config,
            main_topic,
            handler,
            log_dead_letter,
        )
        .await
    }

    /// Starts the containers for `main_topic` (inside a tokio runtime): creates the retry
    /// topics and the DLT if so configured, then one container per topic, each with its own
    /// consumer (and connections) made from `consumer_config` (which must name the group `G`;
    /// retry and DLT containers use `G<suffix>`, as Spring does; auto-commit is turned off:
    /// the containers commit). `handler` handles records of the main and retry topics (read
    /// the attempt with [`headers::attempts`]); `dlt_handler` handles dead letters.
    pub async fn start_with_dlt_handler<F, Fut, G, GFut>(
        &self,
        source: impl Into<RetryTopicSource>,
        consumer_config: ConsumerConfig,
        main_topic: &str,
        handler: F,
        dlt_handler: G,
    ) -> Result<RetryTopicHandle>
    where
        F: Fn(ListenerConsumerRecord) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
        G: Fn(ListenerConsumerRecord) -> GFut + Send + Sync + 'static,
        GFut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler: RecordFn<ListenerConsumerRecord> = Arc::new(move |r| Box::pin(handler(r)));
        let dlt_handler: RecordFn<ListenerConsumerRecord> =
            Arc::new(move |r| Box::pin(dlt_handler(r)));
        self.run(
            source.into(),
            consumer_config,
            main_topic,
            |config, consumer, forwarder, waits| {
                config.container(consumer, forwarder, waits, handler.clone())
            },
            |config, consumer, forwarder| {
                config.container(consumer, forwarder, false, dlt_handler.clone())
            },
        )
        .await
    }

    /// [`start_with_dlt_handler`](Self::start_with_dlt_handler) over typed records (Spring's
    /// `@RetryableTopic` on a listener with deserializers): the main and retry containers
    /// consume through a [`TypedConsumer`] with clones of `key` and `value`, so `handler` gets
    /// [`TypedRecord`]s. A record whose key or value does not deserialize never reaches
    /// `handler`: it goes straight to the DLT (a [`DeserializationFailed`] is not retryable
    /// unless a [classifier](super::RetryTopicConfigurationBuilder::classifier) says otherwise) with
    /// its raw bytes and Spring's headers. The DLT containers read raw records and hand
    /// `dlt_handler` every dead letter as a [`TypedRecord`]: typed when it deserializes, else
    /// with [`typed_key`](TypedRecord::typed_key) / [`typed_value`](TypedRecord::typed_value)
    /// `None`, its raw bytes in [`raw`](TypedRecord::raw) and the failure in
    /// [`deserialization_failure`](ListenerRecord::deserialization_failure).
    ///
    /// [`DeserializationFailed`]: crate::listener::DeserializationFailed
    ///
    /// ```no_run
    /// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
    /// use rekafka::consumer::{ConsumerConfig, StringDeserializer};
    /// use rekafka::listener::TypedRecord;
    /// use rekafka::listener::retry_topic::RetryTopicConfiguration;
    ///
    /// type Rec = TypedRecord<Option<String>, Option<String>>;
    /// let handle = RetryTopicConfiguration::builder()
    ///     .build()
    ///     .start_typed(
    ///         &client,
    ///         ConsumerConfig::new().with_group_id("billing"),
    ///         "orders",
    ///         StringDeserializer,
    ///         StringDeserializer,
    ///         |record: Rec| async move {
    ///             println!("{:?}", record.typed_value());
    ///             Ok(())
    ///         },
    ///         |dead: Rec| async move {
    ///             println!("dead letter {:?} ({:?})", dead.typed_value(), dead.raw().value_str());
    ///             Ok(())
    ///         },
    ///     )
    ///     .await?;
    /// handle.stop().await;
    /// # Ok(()) }
    /// ```
    #[allow(clippy::too_many_arguments)]
    pub async fn start_typed<KD, VD, F, Fut, G, GFut>(
        &self,
        source: impl Into<RetryTopicSource>,
        consumer_config: ConsumerConfig,
        main_topic: &str,
        key: KD,
        value: VD,
        handler: F,
        dlt_handler: G,
    ) -> Result<RetryTopicHandle>
    where
        KD: Deserializer + Clone + 'static,
        VD: Deserializer + Clone + 'static,
        KD::Output: Send + Sync + 'static,
        VD::Output: Send + Sync + 'static,
        F: Fn(TypedRecord<KD::Output, VD::Output>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
        G: Fn(TypedRecord<KD::Output, VD::Output>) -> GFut + Send + Sync + 'static,
        GFut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler: RecordFn<TypedRecord<KD::Output, VD::Output>> =
            Arc::new(move |r| Box::pin(handler(r)));
        let dlt_handler = Arc::new(dlt_handler);
        let (dlt_key, dlt_value) = (Arc::new(key.clone()), Arc::new(value.clone()));
        let dlt: RecordFn<ListenerConsumerRecord> = Arc::new(move |r| {
            let typed = typed_record(&*dlt_key, &*dlt_value, r);
            Box::pin(dlt_handler(typed))
        });
        self.run(
            source.into(),
            consumer_config,
            main_topic,
            |config, consumer, forwarder, waits| {
                let typed = TypedConsumer::new(consumer, key.clone(), value.clone());
                config.container(typed, forwarder, waits, handler.clone())
            },
            |config, consumer, forwarder| config.container(consumer, forwarder, false, dlt.clone()),
        )
        .await
    }

    /// Creates the topics, the forwarding publisher and one consumer per topic, and starts a
    /// container on each: `handling` for the main and retry topics (`true`: a retry topic,
    /// whose records wait for their due time), `dlt` for the DLTs.
    async fn run<H, D>(
        &self,
        source: RetryTopicSource,
        consumer_config: ConsumerConfig,
        main_topic: &str,
        mut handling: H,
        mut dlt: D,
    ) -> Result<RetryTopicHandle>
    where
        H: FnMut(&Self, Consumer, Forwarder, bool) -> Result<ContainerHandle>,
        D: FnMut(&Self, Consumer, Forwarder) -> Result<ContainerHandle>,
    {
        let RetryTopicSource { cluster, link } = source;
        let group = consumer_config.group_id.clone().ok_or_else(|| {
            Error::config("retry topics need a consumer group (ConsumerConfig::with_group_id)")
        })?;
        let topology = self.topology(main_topic);
        self.check(&topology)?;
        if let TopicCreation::Auto {
            partitions,
            replication_factor,
        } = self.creation
        {
            create_topics(&cluster, &topology, partitions, replication_factor).await?;
        }
        let publisher = Arc::new(
            DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
                .wait(PublishWait::PerRecord)
                .group(group.clone())
                .close_link(link.clone())
                .build()
                .await?,
        );
        // (topic, group, is a DLT, waits for due times)
        let mut plan: Vec<(String, String, bool, bool)> =
            vec![(topology.main.clone(), group.clone(), false, false)];
        for t in &topology.retries {
            let suffix = &t.name[topology.main.len()..];
            plan.push((t.name.clone(), format!("{group}{suffix}"), false, true));
        }
        for d in topology.routed_dlts.iter().chain(&topology.dlt) {
            let suffix = &d[topology.main.len()..];
            plan.push((d.clone(), format!("{group}{suffix}"), true, false));
        }
        let mut handle = RetryTopicHandle {
            topology: topology.clone(),
            containers: Vec::with_capacity(plan.len()),
            publisher: publisher.clone(),
            clusters: Vec::with_capacity(plan.len()),
        };
        for (topic, group_id, is_dlt, waits) in plan {
            // Each consumer has its own connections: a long-poll Fetch of one never delays
            // another's (the brokers answer a connection's requests in order).
            let own = Cluster::connect(cluster.config().clone()).await?;
            handle.clusters.push(own.clone());
            let config = consumer_config
                .clone()
                .with_group_id(group_id)
                .with_auto_commit(AutoCommit::Disabled);
            let consumer = Consumer::new(own, config)?;
            // A client's `close` stops these containers and closes their consumers.
            consumer.set_close_link(link.clone());
            consumer.subscribe([topic.as_str()])?;
            let forwarder = Forwarder {
                config: self.clone(),
                topology: topology.clone(),
                publisher: publisher.clone(),
                group: group.clone(),
            };
            let container = if is_dlt {
                dlt(self, consumer, forwarder)?
            } else {
                handling(self, consumer, forwarder, waits)?
            };
            handle.containers.push((topic, container));
        }
        Ok(handle)
    }

    /// Starts one container on `consumer`: records go to `handler` (on a retry topic, once
    /// due), failures to `forwarder`.
    fn container<C>(
        &self,
        consumer: C,
        forwarder: Forwarder,
        waits: bool,
        handler: RecordFn<C::Record>,
    ) -> Result<ContainerHandle>
    where
        C: ContainerConsumer,
    {
        ListenerContainer::builder(consumer)
            .record_handler_with_ack(move |r: C::Record, ack: Acknowledgment| {
                if waits {
                    if let Some(due) = headers::backoff_timestamp(&r.headers()) {
                        let wait = due.saturating_sub(now_ms());
                        if wait > 0 {
                            // Not due: the partition goes back to the record and pauses
                            // until it is; nothing else waits.
                            ack.nack(Duration::from_millis(wait.unsigned_abs()));
                            return Box::pin(std::future::ready(Ok(())))
                                as BoxFuture<'static, Result<(), HandlerError>>;
                        }
                    }
                }
                handler(r)
            })
            .error_handler(
                DefaultErrorHandler::new()
                    .back_off(FixedBackOff::new(Duration::ZERO, 0))
                    .recoverer(forwarder),
            )
            .ack_mode(self.ack_mode)
            .poll_timeout(self.poll_timeout)
            .start()
    }
}

/// Creates the retry topics and the DLT that do not exist, as the main topic unless told.
async fn create_topics(
    cluster: &Cluster,
    topology: &RetryTopology,
    partitions: Option<i32>,
    replication_factor: Option<i16>,
) -> Result<()> {
    let admin = Admin::new(cluster.clone());
    let (mut count, mut factor) = (partitions, replication_factor);
    if count.is_none() || factor.is_none() {
        // The main topic may have been created a moment ago: a broker that has not learnt of
        // it yet answers UNKNOWN_TOPIC_OR_PARTITION, so that answer is retried for a while.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let described = loop {
            let answer = admin
                .describe_topics(&[topology.main.as_str()])
                .await?
                .pop()
                .ok_or_else(|| Error::broker(KafkaCode::UnknownTopicOrPartition))?;
            match answer {
                Err(e)
                    if e.kafka_code() == Some(KafkaCode::UnknownTopicOrPartition)
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => break other?,
            }
        };
        count.get_or_insert(i32::try_from(described.partitions.len()).unwrap_or(i32::MAX));
        factor.get_or_insert(
            described
                .partitions
                .first()
                .map_or(1, |p| i16::try_from(p.replicas.len()).unwrap_or(i16::MAX)),
        );
    }
    let mut topics: Vec<NewTopic> = topology
        .retries
        .iter()
        .map(|t| t.name.clone())
        .chain(topology.routed_dlts.iter().cloned())
        .chain(topology.dlt.clone())
        .map(|name| {
            let mut t = NewTopic::new(name, count.unwrap_or(1));
            if let Some(f) = factor {
                t = t.with_replication_factor(f);
            }
            t
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    topics.retain(|t| seen.insert(t.name.clone()));
    for r in admin.create_topics(&topics).await? {
        match r {
            Ok(_) => {}
            Err(e) if e.kafka_code() == Some(KafkaCode::TopicAlreadyExists) => {}
            Err(e) => return Err(e),
        }
    }
    // A consumer that joins its group before the new topics reach the metadata gets no
    // partitions of them until its next metadata refresh: wait (bounded) until every new
    // topic has its partitions with leaders.
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut ready = cluster.refresh_topics(&names).await.is_ok();
        for (t, name) in topics.iter().zip(&names) {
            if !ready {
                break;
            }
            ready = cluster.partitions(name).await.is_ok_and(|ps| {
                !ps.is_empty()
                    && ps.len() >= usize::try_from(t.partitions.unwrap_or(1)).unwrap_or(0)
                    && ps.iter().all(|p| p.leader >= 0)
            });
        }
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(topics = ?names, "retry topics created, but not all have leaders yet");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

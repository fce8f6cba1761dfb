//! The entry point: [`Client`], built with [`Client::builder`] or from Java-style properties.
//!
//! A client owns one [`Cluster`] (broker connections, metadata, coordinators) that everything
//! made from it shares, and makes everything an application needs:
//!
//! | what | made by |
//! |---|---|
//! | [`Producer`] | [`Client::producer`], [`Client::producer_with`] |
//! | [`TransactionalProducer`] | [`Client::transactional_producer`], [`Client::transactional_producer_with`] |
//! | [`Consumer`] | [`Client::consumer`], [`Client::consumer_with`] |
//! | [`Admin`] | [`Client::admin`] |
//! | [`DeadLetterPublisher`](crate::listener::DeadLetterPublisher) | [`Client::dead_letter_publisher`] |
//! | listener container ([`ContainerBuilder`]) | [`Client::listener_container`] |
//!
//! # Connecting
//!
//! A client connects lazily, as Java's clients do: [`ClientBuilder::build`] does no I/O, so a
//! client can be created while every broker is down. It bootstraps in the background (asking
//! the `bootstrap.servers` for the broker list, again and again with back-off —
//! `retry.backoff.ms` doubling to `retry.backoff.max.ms` — until one answers), and each call
//! that needs a broker before then bootstraps itself, retrying as that call's own rules say
//! (an admin call for `default.api.timeout.ms`, a producer's send within `delivery.timeout.ms`).
//! A tool that would rather fail at once when no broker answers uses
//! [`ClientBuilder::connect`].
//!
//! ```no_run
//! # async fn demo() -> rekafka::Result<()> {
//! use std::time::Duration;
//! use rekafka::Client;
//!
//! let client = Client::builder()
//!     .bootstrap_servers(["127.0.0.1:9092"])
//!     .client_id("billing")
//!     .request_timeout(Duration::from_secs(10))
//!     .build()
//!     .await?;
//! let topics = client.admin().list_topics(rekafka::admin::Internal::Exclude).await?;
//! client.close().await;
//!
//! // The same from properties, as a Java or librdkafka user would write them:
//! let client = Client::from_properties([
//!     ("bootstrap.servers", "127.0.0.1:9092"),
//!     ("client.id", "billing"),
//!     ("request.timeout.ms", "10000"),
//! ])
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Properties
//!
//! [`ClientBuilder::property`] takes the keys of every config type the client knows:
//! [`ClientConfig::property_names`] (with the `security.protocol`, `sasl.*` and `ssl.*` keys),
//! [`ProducerConfig::SETTINGS`] and [`ConsumerConfig::SETTINGS`] (all of them in
//! `docs/configuration.md`, made from [`config`](crate::config)). A key none of
//! them knows is an [`ErrorKind::Config`](crate::ErrorKind::Config) error that lists the closest
//! known keys; a bad value is one that names the key and the expected form (producer and
//! consumer values are checked when the property is set, not only when a producer or consumer
//! is made). librdkafka spellings are accepted where they differ: aliases that mean a Java key
//! exactly (`metadata.broker.list`, `queue.buffering.max.ms`, `message.timeout.ms`, …, logged at
//! debug level), librdkafka-only keys converted to a Java key
//! (`queue.buffering.max.kbytes` → `buffer.memory`), and librdkafka-only keys without effect in
//! rekafka, accepted with an info log saying why (`statistics.interval.ms`,
//! `enable.partition.eof`, `batch.num.messages`, …; see [`config::LIBRDKAFKA`](crate::config::LIBRDKAFKA)).
//!
//! When a builder method and a property set the same setting, the last one set wins, as in a
//! Java properties map. Properties given to the builder are kept and applied to each producer
//! or consumer config when it is made (see below), so within one config type, write the
//! property or the field, not both.
//!
//! Producer and consumer keys are kept ([`Client::properties`]) and applied to every producer
//! and consumer made from the client. As with one Java properties map, a key that several
//! config types know sets each of them: `request.timeout.ms` is both the connections' request
//! timeout and the producer's; `retry.backoff.ms` the client's, the producer's and the
//! consumer's; `retry.backoff.max.ms` the client's and the producer's;
//! `default.api.timeout.ms` the client's and the consumer's. `client.id` is a client key only:
//! producers and consumers share the client's connections, so they send its client id.
//!
//! ```no_run
//! # async fn demo() -> rekafka::Result<()> {
//! use std::time::Duration;
//! use rekafka::Client;
//! use rekafka::consumer::ConsumerConfig;
//! use rekafka::producer::{ProducerConfig, Record};
//!
//! let client = Client::from_properties([
//!     ("bootstrap.servers", "127.0.0.1:9092"),
//!     ("linger.ms", "20"),
//!     ("compression.type", "lz4"),
//!     ("group.id", "billing"),
//!     ("auto.offset.reset", "earliest"),
//! ])
//! .await?;
//! // The kept properties are applied onto the given config (they win over its fields) ...
//! let producer = client.producer(ProducerConfig::default()).await?;
//! producer.send_and_wait(Record::new("invoices").with_value("42")).await?;
//! // ... or start from them and override in code (the closure wins).
//! let consumer = client.consumer_with(|c| c.max_poll_records = 100)?;
//! consumer.subscribe(["invoices"])?;
//! let records = consumer.poll(Duration::from_secs(1)).await?;
//! # Ok(())
//! # }
//! ```

pub mod properties;

use std::sync::Arc;
use std::time::Duration;

use crate::admin::Admin;
pub use crate::admin::DEFAULT_API_TIMEOUT;
use crate::cluster::{
    Cluster, ClusterConfig, DEFAULT_METADATA_MAX_AGE, DEFAULT_RETRY_BACKOFF,
    DEFAULT_RETRY_BACKOFF_MAX,
};
use crate::connection::{
    ConnectionConfig, DEFAULT_CLIENT_ID, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_RECONNECT_BACKOFF, DEFAULT_RECONNECT_BACKOFF_MAX, DEFAULT_REQUEST_TIMEOUT,
    SecurityConfig,
};
use crate::consumer::{AutoCommit, Consumer, ConsumerConfig};
use crate::error::{Error, Result};
use crate::listener::{
    ContainerBuilder, DeadLetterPublisherBuilder, ListenerContainer, ListenerRecord,
};
use crate::producer::{Producer, ProducerConfig};
use crate::protocol::frame::DEFAULT_MAX_FRAME_SIZE;
use crate::transaction::TransactionalProducer;

mod builder;
mod config;
pub use builder::ClientBuilder;
pub use config::ClientConfig;
#[allow(unused_imports)]
use config::*;

/// A connection to a Kafka cluster, shared by everything made from it: the entry point (see
/// the [module docs](self) for what it makes).
///
/// Cheap to clone. Made by [`Client::builder`] or [`Client::from_properties`]; connects lazily
/// (see [Connecting](self#connecting)).
///
/// ```no_run
/// # async fn demo() -> rekafka::Result<()> {
/// use std::time::Duration;
/// use rekafka::Client;
/// use rekafka::producer::Record;
///
/// let client = Client::builder().bootstrap_servers(["h1:9092,h2:9092"]).build().await?;
/// let producer = client.producer_with(|_| {}).await?;
/// producer.send_and_wait(Record::new("orders").with_value("42")).await?;
/// let consumer = client.consumer_with(|c| c.group_id = Some("billing".into()))?;
/// consumer.subscribe(["orders"])?;
/// let records = consumer.poll(Duration::from_secs(1)).await?;
/// client.close().await;
/// # Ok(())
/// # }
/// ```
/// [`close`](Self::close) closes every broker connection and stops the background tasks
/// (dropping the last clone does too).
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<ClientInner>,
}

#[derive(Debug)]
struct ClientInner {
    config: ClientConfig,
    cluster: Cluster,
    deferred: Vec<(String, String)>,
    /// The producers made from this client, closed (flushed) by [`Client::close`] before the
    /// connections. Weak: a producer the application dropped is not kept alive.
    producers: std::sync::Mutex<Vec<crate::producer::WeakProducer>>,
    /// The containers, consumers, transactional producers and dead-letter publishers made
    /// from this client (weakly), closed by [`Client::close`] in that order.
    closers: Arc<crate::task::CloseRegistry>,
}

impl Client {
    /// A [`ClientBuilder`] with every setting at its default.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// A client from Java-style properties (see [`ClientBuilder::property`]), built lazily as
    /// [`ClientBuilder::build`].
    pub async fn from_properties<I, K, V>(properties: I) -> Result<Client>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        Client::builder().properties(properties).build().await
    }

    /// The client-level settings.
    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// The cluster: broker connections, metadata, coordinators.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// The properties given to the builder that belong to the producer or consumer configs
    /// made from this client, one per key (the last value given), in the order given.
    pub fn properties(&self) -> &[(String, String)] {
        &self.inner.deferred
    }

    /// [`ProducerConfig::default`] with the producer properties given to the builder applied
    /// (e.g. `linger.ms`, `acks`, `request.timeout.ms`).
    pub fn producer_config(&self) -> Result<ProducerConfig> {
        let mut config = ProducerConfig::default();
        apply_kept(
            &self.inner.deferred,
            &mut config,
            ProducerConfig::apply_property,
        )?;
        Ok(config)
    }

    /// A [`Producer`] sharing this client's cluster (its connections and metadata).
    ///
    /// The producer properties given to the builder are applied onto `config` first: they
    /// override the corresponding fields of `config` (a property is an explicit setting too).
    /// To start from the properties and override some of them in code, use
    /// [`producer_with`](Self::producer_with). See [`Producer::new`] for what creating one does
    /// (InitProducerId with idempotence, the default).
    pub async fn producer(&self, mut config: ProducerConfig) -> Result<Producer> {
        apply_kept(
            &self.inner.deferred,
            &mut config,
            ProducerConfig::apply_property,
        )?;
        self.track(Producer::new(self.inner.cluster.clone(), config).await)
    }

    /// Remembers a producer made from this client, for [`close`](Self::close).
    fn track(&self, made: Result<Producer>) -> Result<Producer> {
        if let Ok(p) = &made {
            let mut producers = self
                .inner
                .producers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            producers.retain(|w| !w.is_gone());
            producers.push(p.downgrade());
        }
        made
    }

    /// A [`Producer`] from [`producer_config`](Self::producer_config) changed by `configure`:
    /// what the closure sets wins over the properties, everything else comes from them (or the
    /// defaults).
    ///
    /// ```no_run
    /// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
    /// use std::time::Duration;
    /// let producer = client
    ///     .producer_with(|c| c.linger = Duration::from_millis(50))
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn producer_with(
        &self,
        configure: impl FnOnce(&mut ProducerConfig),
    ) -> Result<Producer> {
        let mut config = self.producer_config()?;
        configure(&mut config);
        self.track(Producer::new(self.inner.cluster.clone(), config).await)
    }

    /// [`ConsumerConfig::default`] with the consumer properties given to the builder applied
    /// (e.g. `group.id`, `auto.offset.reset`).
    pub fn consumer_config(&self) -> Result<ConsumerConfig> {
        let mut config = ConsumerConfig::default();
        apply_kept(
            &self.inner.deferred,
            &mut config,
            ConsumerConfig::apply_property,
        )?;
        Ok(config)
    }

    /// A [`Consumer`] sharing this client's cluster. The consumer properties given to the
    /// builder are applied onto `config` first and override its corresponding fields (as in
    /// [`producer`](Self::producer)); use [`consumer_with`](Self::consumer_with) to override
    /// them in code. Must be called inside a tokio runtime (see [`Consumer::new`]).
    pub fn consumer(&self, mut config: ConsumerConfig) -> Result<Consumer> {
        apply_kept(
            &self.inner.deferred,
            &mut config,
            ConsumerConfig::apply_property,
        )?;
        self.track_consumer(Consumer::new(self.inner.cluster.clone(), config))
    }

    /// A [`Consumer`] from [`consumer_config`](Self::consumer_config) changed by `configure`
    /// (the closure wins over the properties).
    pub fn consumer_with(&self, configure: impl FnOnce(&mut ConsumerConfig)) -> Result<Consumer> {
        let mut config = self.consumer_config()?;
        configure(&mut config);
        self.track_consumer(Consumer::new(self.inner.cluster.clone(), config))
    }

    /// The link what this client makes registers with, for [`close`](Self::close).
    fn close_link(&self) -> crate::task::CloseLink {
        crate::task::CloseLink::new(&self.inner.closers)
    }

    /// Registers a consumer made from this client, for [`close`](Self::close) (a container
    /// started over it registers through it too).
    fn track_consumer(&self, made: Result<Consumer>) -> Result<Consumer> {
        if let Ok(c) = &made {
            c.set_close_link(self.close_link());
        }
        made
    }

    /// Registers a transactional producer made from this client, for [`close`](Self::close).
    fn track_transactional(
        &self,
        made: Result<TransactionalProducer>,
    ) -> Result<TransactionalProducer> {
        if let Ok(p) = &made {
            p.set_close_link(self.close_link());
        }
        made
    }

    /// A [`ShareConsumer`](crate::share::ShareConsumer) (KIP-932 share group member) sharing
    /// this client's cluster. The share consumer properties given to the builder (`group.id`,
    /// `share.acknowledgement.mode`, `max.poll.records`, `fetch.*`, …) are applied onto
    /// `config` first and override its corresponding fields. Must be called inside a tokio
    /// runtime.
    ///
    /// ```no_run
    /// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
    /// use rekafka::share::ShareConsumerConfig;
    ///
    /// let mut consumer = client.share_consumer(ShareConsumerConfig::new("workers"))?;
    /// consumer.subscribe(["jobs"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn share_consumer(
        &self,
        mut config: crate::share::ShareConsumerConfig,
    ) -> Result<crate::share::ShareConsumer> {
        apply_kept(
            &self.inner.deferred,
            &mut config,
            crate::share::ShareConsumerConfig::apply_property,
        )?;
        self.track_share_consumer(crate::share::ShareConsumer::new(
            self.inner.cluster.clone(),
            config,
        ))
    }

    /// A [`ShareConsumer`](crate::share::ShareConsumer) from the share consumer properties
    /// given to the builder, changed by `configure` (the closure wins over the properties).
    pub fn share_consumer_with(
        &self,
        configure: impl FnOnce(&mut crate::share::ShareConsumerConfig),
    ) -> Result<crate::share::ShareConsumer> {
        let mut config = crate::share::ShareConsumerConfig::default();
        apply_kept(
            &self.inner.deferred,
            &mut config,
            crate::share::ShareConsumerConfig::apply_property,
        )?;
        configure(&mut config);
        self.track_share_consumer(crate::share::ShareConsumer::new(
            self.inner.cluster.clone(),
            config,
        ))
    }

    /// Registers a share consumer made from this client, for [`close`](Self::close) (a share
    /// container started over it registers through it too).
    fn track_share_consumer(
        &self,
        made: Result<crate::share::ShareConsumer>,
    ) -> Result<crate::share::ShareConsumer> {
        if let Ok(c) = &made {
            c.set_close_link(self.close_link());
        }
        made
    }

    /// A [`TransactionalProducer`] sharing this client's cluster. The producer properties
    /// given to the builder are applied onto `config` first (as in
    /// [`producer`](Self::producer)); `transactional.id` must be set by then. Call
    /// [`init_transactions`](TransactionalProducer::init_transactions) before anything else.
    ///
    /// ```no_run
    /// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
    /// use rekafka::producer::{ProducerConfig, Record};
    ///
    /// let p = client.transactional_producer(ProducerConfig::default().with_transactional_id("copier"))?;
    /// p.init_transactions().await?;
    /// p.begin_transaction()?;
    /// p.send(Record::new("out").with_value("v")).await?;
    /// p.commit_transaction().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn transactional_producer(
        &self,
        mut config: ProducerConfig,
    ) -> Result<TransactionalProducer> {
        apply_kept(
            &self.inner.deferred,
            &mut config,
            ProducerConfig::apply_property,
        )?;
        self.track_transactional(TransactionalProducer::new(
            self.inner.cluster.clone(),
            config,
        ))
    }

    /// A [`TransactionalProducer`] with `transactional_id`, from
    /// [`producer_config`](Self::producer_config) changed by `configure` (the closure wins
    /// over the properties).
    pub fn transactional_producer_with(
        &self,
        transactional_id: impl Into<String>,
        configure: impl FnOnce(&mut ProducerConfig),
    ) -> Result<TransactionalProducer> {
        let mut config = self
            .producer_config()?
            .with_transactional_id(transactional_id);
        configure(&mut config);
        self.track_transactional(TransactionalProducer::new(
            self.inner.cluster.clone(),
            config,
        ))
    }

    /// An admin client sharing this client's cluster; its calls retry for
    /// [`ClientConfig::api_timeout`].
    pub fn admin(&self) -> Admin {
        Admin::new(self.inner.cluster.clone()).with_api_timeout(self.inner.config.api_timeout)
    }

    /// A [`DeadLetterPublisher`](crate::listener::DeadLetterPublisher) builder publishing
    /// through this client's cluster (with a producer of its own, from
    /// [`default_producer_config`](crate::listener::default_producer_config); give it
    /// another with [`producer`](DeadLetterPublisherBuilder::producer) or
    /// [`producer_config`](DeadLetterPublisherBuilder::producer_config)). `R` is the record
    /// type of the container it recovers for: [`ListenerConsumerRecord`](crate::listener::ListenerConsumerRecord)
    /// for a container over a [`Consumer`].
    ///
    /// ```no_run
    /// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
    /// use rekafka::listener::ListenerConsumerRecord;
    /// let dead_letters = client
    ///     .dead_letter_publisher::<ListenerConsumerRecord>()
    ///     .group("billing")
    ///     .build()
    ///     .await?; // failed records of `orders` go to `orders-dlt`
    /// # Ok(())
    /// # }
    /// ```
    pub fn dead_letter_publisher<R: ListenerRecord>(&self) -> DeadLetterPublisherBuilder<R> {
        crate::listener::DeadLetterPublisher::builder(self.inner.cluster.clone())
            .close_link(self.close_link())
    }

    /// A listener container builder over a new [`Consumer`] subscribed to `topics`: the
    /// consumer comes from [`consumer_config`](Self::consumer_config) with auto-commit off
    /// (the container commits, as Spring's does), then `configure` (which wins; it must leave
    /// a `group.id`). Set the handler and error handler on the builder, then
    /// [`start`](ContainerBuilder::start) it.
    ///
    /// ```no_run
    /// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
    /// use rekafka::listener::ListenerConsumerRecord;
    /// let container = client
    ///     .listener_container(["orders"], |c| c.group_id = Some("billing".into()))?
    ///     .record_handler(|record: ListenerConsumerRecord| async move {
    ///         println!("{:?}", record.value_str());
    ///         Ok(())
    ///     })
    ///     .start()?;
    /// // ...
    /// container.stop().await;
    /// # Ok(())
    /// # }
    /// ```
    pub fn listener_container<I, S>(
        &self,
        topics: I,
        configure: impl FnOnce(&mut ConsumerConfig),
    ) -> Result<ContainerBuilder<Consumer>>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let consumer = self.consumer_with(|c| {
            c.auto_commit = AutoCommit::Disabled;
            configure(c);
        })?;
        consumer.subscribe(topics)?;
        Ok(ListenerContainer::builder(consumer))
    }

    /// A listener container over typed records: as
    /// [`listener_container`](Self::listener_container), with the consumer wrapped in a
    /// [`TypedConsumer`](crate::listener::TypedConsumer) of the `key` and `value`
    /// deserializers, so the handler gets [`TypedRecord`](crate::listener::TypedRecord)s (a
    /// record that does not deserialize goes to the recoverer with its raw bytes).
    ///
    /// ```no_run
    /// # #[cfg(feature = "json")]
    /// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
    /// use rekafka::consumer::{JsonDeserializer, StringDeserializer};
    /// use rekafka::listener::TypedRecord;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Order { id: u64 }
    ///
    /// let container = client
    ///     .typed_listener_container(["orders"], StringDeserializer, JsonDeserializer::<Order>::new(), |c| {
    ///         c.group_id = Some("billing".into());
    ///     })?
    ///     .record_handler(|r: TypedRecord<Option<String>, Option<Order>>| async move {
    ///         if let Some(Some(order)) = r.typed_value() { println!("order {}", order.id); }
    ///         Ok(())
    ///     })
    ///     .start()?;
    /// # let _ = container; Ok(()) }
    /// ```
    pub fn typed_listener_container<I, S, KD, VD>(
        &self,
        topics: I,
        key: KD,
        value: VD,
        configure: impl FnOnce(&mut ConsumerConfig),
    ) -> Result<ContainerBuilder<crate::listener::TypedConsumer<KD, VD>>>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
        KD: crate::consumer::Deserializer + 'static,
        VD: crate::consumer::Deserializer + 'static,
        KD::Output: Send + Sync + 'static,
        VD::Output: Send + Sync + 'static,
    {
        let consumer = self.consumer_with(|c| {
            c.auto_commit = AutoCommit::Disabled;
            configure(c);
        })?;
        consumer.subscribe(topics)?;
        Ok(ListenerContainer::builder(
            crate::listener::TypedConsumer::new(consumer, key, value),
        ))
    }

    /// Closes the client and everything made from it that is still in use, in order, each
    /// step waiting for the one before:
    ///
    /// 1. **Listener containers** started over a consumer this client made
    ///    ([`listener_container`](Self::listener_container),
    ///    [`typed_listener_container`](Self::typed_listener_container), or
    ///    [`ContainerBuilder::start`] over a [`consumer`](Self::consumer), and the main,
    ///    retry and DLT containers of retry topics started from this client,
    ///    `RetryTopicConfiguration::start(&client, ..)`): each stops as
    ///    [`ContainerHandle::stop`](crate::listener::ContainerHandle::stop) does (the record in
    ///    hand is finished, handled offsets are committed, its consumer leaves the group); and
    ///    [share containers](crate::listener::ShareContainer) started over a
    ///    [`share_consumer`](Self::share_consumer): each stops as
    ///    [`ShareContainerHandle::stop`](crate::listener::ShareContainerHandle::stop) does (the
    ///    record in hand is finished and acknowledged, its share consumer is closed).
    /// 2. **Consumers** ([`consumer`](Self::consumer), [`consumer_with`](Self::consumer_with)):
    ///    each [`Consumer::close`] (the final commit with auto-commit on, the rebalance
    ///    listener's `on_revoked`, leaving the group); and **share consumers**
    ///    ([`share_consumer`](Self::share_consumer),
    ///    [`share_consumer_with`](Self::share_consumer_with)): each
    ///    [`ShareConsumer::close`](crate::share::ShareConsumer::close) (pending
    ///    acknowledgements sent, acquired records not acknowledged released, share sessions
    ///    closed, leaving the group; a poll in progress returns
    ///    [`ErrorKind::Closed`](crate::ErrorKind::Closed) after its fetch round).
    /// 3. **Transactional producers and dead-letter publishers**: an open transaction is
    ///    aborted (so its `transactional.id` can be used again at once), then each
    ///    [`TransactionalProducer::close`]; each publisher's
    ///    [`close`](crate::listener::DeadLetterPublisher::close) (flush, and close the
    ///    producer and connections it built).
    /// 4. **Producers** ([`producer`](Self::producer), [`producer_with`](Self::producer_with)):
    ///    each [`Producer::close`] (its buffered records are delivered, within
    ///    `delivery.timeout.ms`, then its sender stops).
    /// 5. **Connections**: every broker connection and the metadata refresher.
    ///
    /// The things of steps 1 to 3 close concurrently within their step, and each of these
    /// steps is bounded by [`ClientConfig::api_timeout`] (`default.api.timeout.ms`): a step that
    /// has not finished by then is left finishing in the background (with failing
    /// connections, after step 5) and the next step starts. Each step is logged at debug
    /// level. The client keeps none of them alive: what the application dropped is not
    /// closed again (dropping closes it).
    /// Retry topics keep a connection set per container, which closes when their
    /// [`RetryTopicHandle`](crate::listener::retry_topic::RetryTopicHandle) is stopped or
    /// dropped.
    ///
    /// Later calls on this client and everything made from it fail with
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed).
    pub async fn close(&self) {
        use crate::task::CloseStage;
        let bound = self.inner.config.api_timeout;
        for stage in [
            CloseStage::Containers,
            CloseStage::Consumers,
            CloseStage::Transactional,
        ] {
            close_step(stage, self.inner.closers.take(stage), bound).await;
        }
        let producers: Vec<Producer> = {
            let mut made = self
                .inner
                .producers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            made.drain(..).filter_map(|w| w.upgrade()).collect()
        };
        tracing::debug!(count = producers.len(), "client close: closing producers");
        for p in producers {
            p.close().await;
        }
        tracing::debug!("client close: closing connections");
        self.inner.cluster.close().await;
    }
}

/// One step of [`Client::close`]: closes `items` concurrently, waiting at most `bound`; what
/// has not finished by then goes on in the background, so a hanging step does not stop the
/// later ones.
async fn close_step(
    stage: crate::task::CloseStage,
    items: Vec<Arc<dyn crate::task::Closeable>>,
    bound: Duration,
) {
    if items.is_empty() {
        return;
    }
    tracing::debug!(?stage, count = items.len(), "client close: closing");
    let mut running = tokio::task::JoinSet::new();
    for item in items {
        running.spawn(item.close_now());
    }
    let all = async { while running.join_next().await.is_some() {} };
    if tokio::time::timeout(bound, all).await.is_err() {
        tracing::debug!(
            ?stage,
            ?bound,
            "client close: step not done within its bound; going on"
        );
        running.detach_all();
    }
}

/// Retry topics started from a client (`config.start(&client, ..)`) connect with its
/// settings, and [`Client::close`] stops their containers and closes their consumers and
/// publisher, as it does for [`listener_container`](Client::listener_container)s.
impl From<&Client> for crate::listener::retry_topic::RetryTopicSource {
    fn from(client: &Client) -> Self {
        crate::listener::retry_topic::RetryTopicSource::linked(
            client.inner.cluster.clone(),
            client.close_link(),
        )
    }
}

#[cfg(test)]
mod tests;

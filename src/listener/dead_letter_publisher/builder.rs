//! Building a [`DeadLetterPublisher`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::Error;
use crate::cluster::Cluster;
use crate::producer::{Idempotence, Producer, ProducerConfig};
use crate::protocol::record::Compression;

/// Builds a [`DeadLetterPublisher`].
pub struct DeadLetterPublisherBuilder<R> {
    pub(super) cluster: Cluster,
    pub(super) producer: Option<Producer>,
    pub(super) producer_config: ProducerConfig,
    pub(super) naming: DltNaming,
    pub(super) resolver: Option<Resolver<R>>,
    pub(super) missing: MissingDestination,
    pub(super) verification: PartitionVerification,
    pub(super) headers: DeadLetterHeaders,
    pub(super) group: Option<String>,
    pub(super) timeout: SendTimeout,
    pub(super) connections: PublisherConnections,
    pub(super) wait: PublishWait,
    /// The client that made the builder (empty otherwise): the publisher registers there, so
    /// that `Client::close` closes it.
    pub(super) close_link: crate::task::CloseLink,
}

impl<R> fmt::Debug for DeadLetterPublisherBuilder<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterPublisherBuilder")
            .field("naming", &self.naming)
            .field("missing", &self.missing)
            .field("verification", &self.verification)
            .field("group", &self.group)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<R: ListenerRecord> DeadLetterPublisherBuilder<R> {
    /// Links the publisher to be built to the client that made this builder.
    pub(crate) fn close_link(mut self, link: crate::task::CloseLink) -> Self {
        self.close_link = link;
        self
    }

    /// A producer to publish with, instead of one built from the cluster. It should be
    /// idempotent (the default), or a retried batch may write a dead letter twice. It is
    /// flushed, not closed, by [`DeadLetterPublisher::close`]. Default: the publisher builds
    /// its own idempotent producer from [`producer_config`](Self::producer_config).
    pub fn producer(mut self, producer: Producer) -> Self {
        self.producer = Some(producer);
        self
    }

    /// The configuration of the publisher's own producer (idempotence is always enabled).
    /// Default: [`default_producer_config`]: [`ProducerConfig::default`] with
    /// `compression.type` lz4 and `batch.size` 1 MiB ([`DEFAULT_BATCH_SIZE`]).
    ///
    /// Dead letters are small records with about ten Spring headers each, whose names and
    /// most values repeat from one letter to the next: lz4 makes them about four times
    /// smaller on the wire and in the dead-letter topic, and brokers ingest them in a few large
    /// requests rather than many small ones. A batch's buffer grows as records arrive, so the
    /// large `batch.size` costs memory only under a flood. `linger` (5 ms) adds no latency to
    /// a recovery: waiting for a dead letter sends it at once ([`Producer::send_buffered`]).
    pub fn producer_config(mut self, config: ProducerConfig) -> Self {
        self.producer_config = config;
        self
    }

    /// Which connections the publisher's own producer uses (ignored with
    /// [`producer`](Self::producer)). Default: [`PublisherConnections::Own`].
    pub fn connections(mut self, connections: PublisherConnections) -> Self {
        self.connections = connections;
        self
    }

    /// How the default destination is named. Default: [`DltNaming::Spring33`] (`-dlt`).
    pub fn naming(mut self, naming: DltNaming) -> Self {
        self.naming = naming;
        self
    }

    /// Chooses the destination per (record, error); `None` means "no destination" (see
    /// [`on_missing_destination`](Self::on_missing_destination)). Default: `<topic>-dlt`, same
    /// partition.
    pub fn resolver(
        mut self,
        resolver: impl Fn(&R, &SharedError) -> Option<Destination> + Send + Sync + 'static,
    ) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// What happens when the resolver gives no destination. Default: [`MissingDestination::Skip`].
    pub fn on_missing_destination(mut self, missing: MissingDestination) -> Self {
        self.missing = missing;
        self
    }

    /// Whether the destination partition is verified. Default:
    /// [`PartitionVerification::FallBackToPartitioner`].
    pub fn partition_verification(mut self, verification: PartitionVerification) -> Self {
        self.verification = verification;
        self
    }

    /// How the headers are built. Default: [`DeadLetterHeaders::default`] (append original-*,
    /// strip previous exception headers, exclude nothing).
    pub fn headers(mut self, headers: DeadLetterHeaders) -> Self {
        self.headers = headers;
        self
    }

    /// The consumer group written in `kafka_dlt-original-consumer-group`. Default: the group of
    /// the consumer that polled the record ([`ListenerRecord::consumer_group`]), as Spring
    /// writes it whenever the group is known; no header for a record consumed outside a group.
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// How long `recover` waits for the acknowledgement. Default:
    /// [`SendTimeout::DeliveryTimeoutPlus5s`].
    pub fn send_timeout(mut self, timeout: SendTimeout) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether the container waits for each dead letter before it handles the next record, or
    /// for a poll's dead letters together. Default: [`PublishWait::PerPoll`].
    pub fn wait(mut self, wait: PublishWait) -> Self {
        self.wait = wait;
        self
    }

    /// Builds the publisher (and its producer, unless one was given).
    pub async fn build(self) -> crate::Result<DeadLetterPublisher<R>> {
        let mut cluster = self.cluster;
        let mut owns_cluster = false;
        let (producer, owns_producer) = match self.producer {
            Some(p) => (p, false),
            None => {
                if self.connections == PublisherConnections::Own {
                    cluster = Cluster::connect(cluster.config().clone()).await?;
                    owns_cluster = true;
                }
                let mut config = self.producer_config;
                config.idempotence = Idempotence::Enabled;
                match Producer::new(cluster.clone(), config).await {
                    Ok(p) => (p, true),
                    Err(e) => {
                        if owns_cluster {
                            cluster.close().await;
                        }
                        return Err(e);
                    }
                }
            }
        };
        let timeout = match self.timeout {
            SendTimeout::DeliveryTimeoutPlus5s => {
                producer.config().delivery_timeout + Duration::from_secs(5)
            }
            SendTimeout::Fixed(d) => d,
        };
        if timeout.is_zero() {
            return Err(Error::config(
                "the dead-letter send timeout must be positive",
            ));
        }
        let sender = Arc::new(Sender {
            cluster,
            owns_cluster,
            producer,
            owns_producer,
            timeout,
            verification: self.verification,
            partitions: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        });
        self.close_link
            .register(crate::task::CloseStage::Transactional, &sender);
        Ok(DeadLetterPublisher {
            sender,
            naming: self.naming,
            resolver: self.resolver,
            missing: self.missing,
            headers: self.headers,
            group: self.group,
            wait: self.wait,
            topic_names: Mutex::new(Vec::new()),
            queue: None,
        }
        .with_publishing_task())
    }
}

/// The default configuration of a publisher's own producer (see
/// [`DeadLetterPublisherBuilder::producer_config`]).
pub fn default_producer_config() -> ProducerConfig {
    ProducerConfig::default()
        .with_compression(Compression::Lz4)
        .with_batch_size(DEFAULT_BATCH_SIZE)
}

/// The default `batch.size` of a publisher's own producer: 1 MiB.
pub const DEFAULT_BATCH_SIZE: usize = 1024 * 1024;

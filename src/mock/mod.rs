//! An embedded Kafka cluster for tests, with fault injection (cargo feature `mock`).
//!
//! [`MockCluster`] runs N brokers in-process, each listening on its own `127.0.0.1` port. It
//! speaks the Kafka protocol as Kafka does (ApiVersions, Metadata, Produce with idempotent
//! sequence checks, Fetch with long polling and both isolation levels, ListOffsets,
//! OffsetForLeaderEpoch, FindCoordinator, the classic group protocol, KIP-848's consumer group
//! protocol (ConsumerGroupHeartbeat with member epochs, the `uniform` and `range` broker-side
//! assignors, regex subscriptions, incremental reconciliation, static members; a builder switch,
//! [`consumer_group_protocol(false)`](MockClusterBuilder::consumer_group_protocol), makes it a
//! broker without it, like Kafka 3.x), offsets, transactions and the admin APIs: CreateTopics,
//! DeleteTopics, CreatePartitions, DeleteRecords, DescribeGroups, ConsumerGroupDescribe,
//! ListGroups, DescribeConfigs), so any Kafka client — ours, librdkafka, the Java client — can
//! run against it. Stored batches keep the producer's encoding. Like Kafka, a broker serves the
//! requests of one connection one at a time, in order.
//!
//! What a real broker cannot do on demand, the mock can, deterministically:
//!
//! * [`push_request_errors`](MockCluster::push_request_errors): answer the next requests of an
//!   API with the given error codes (cluster-wide), or only on one broker
//!   ([`push_broker_request_errors`](MockCluster::push_broker_request_errors), with a delay per
//!   error: [`push_broker_request_errors_rtt`](MockCluster::push_broker_request_errors_rtt)),
//!   or only for one partition of Produce / Fetch / ListOffsets / OffsetForLeaderEpoch
//!   ([`push_partition_errors`](MockCluster::push_partition_errors));
//! * [`push_topic_metadata_errors`](MockCluster::push_topic_metadata_errors): hide a topic from
//!   the next Metadata responses;
//! * [`close_connection_on`](MockCluster::close_connection_on): close the connection instead
//!   of answering the Nth request of an API;
//! * [`set_api_versions`](MockCluster::set_api_versions): narrow or remove an API's advertised
//!   versions;
//! * [`set_broker_rtt`](MockCluster::set_broker_rtt): delay every response of a broker;
//! * [`broker_down`](MockCluster::broker_down) / [`broker_up`](MockCluster::broker_up): stop
//!   listening and close every connection, then listen again on the same port;
//! * [`set_partition_leader`](MockCluster::set_partition_leader) and
//!   [`set_coordinator`](MockCluster::set_coordinator): move leadership;
//! * [`hold`](MockCluster::hold): park matching requests until the test releases them;
//! * [`drop_responses`](MockCluster::drop_responses): apply a request and never answer it
//!   (the lost acknowledgement);
//! * [`requests`](MockCluster::requests) and
//!   [`wait_for_requests`](MockCluster::wait_for_requests): the request log (API, version,
//!   broker, correlation id, producer id, epoch, base sequence, group, member, member epoch).
//!
//! Faults on the consumer group heartbeat use the same calls, e.g.
//! `push_request_errors(ApiKey::ConsumerGroupHeartbeat, &[KafkaCode::FencedMemberEpoch])`
//! fences the next member that heartbeats.
//!
//! # Example: a produce retry path
//!
//! Fail the next three Produce requests with `NOT_ENOUGH_REPLICAS`, then check the record was
//! stored exactly once (here with raw requests; a producer's retry loop does the same):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use bytes::Bytes;
//! use rekafka::KafkaCode;
//! use rekafka::connection::{Connection, ConnectionConfig};
//! use rekafka::mock::MockCluster;
//! use rekafka::protocol::unstable::ApiKey;
//! use rekafka::protocol::unstable::messages::produce_request::{PartitionProduceData, TopicProduceData};
//! use rekafka::protocol::unstable::messages::{ProduceRequest, TopicName};
//! use rekafka::protocol::record::BatchBuilder;
//!
//! let mock = MockCluster::builder().topic("orders", 1).start().await.unwrap();
//! mock.push_request_errors(ApiKey::Produce, &[KafkaCode::NotEnoughReplicas; 3]);
//!
//! let conn = Connection::connect(&mock.bootstrap(), -1, &ConnectionConfig::default())
//!     .await
//!     .unwrap();
//! let mut batch = BatchBuilder::new();
//! batch.append(0, None, Some(b"hello"), &[]).unwrap();
//! let records: Bytes = batch.build().unwrap();
//! let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![
//!     TopicProduceData::default()
//!         .with_name(TopicName("orders".to_string().into()))
//!         .with_partition_data(vec![PartitionProduceData::default()
//!             .with_index(0)
//!             .with_records(Some(records))]),
//! ]);
//! let mut attempts = 0;
//! loop {
//!     attempts += 1;
//!     let resp = conn.send(request.clone()).await.unwrap();
//!     let code = resp.responses[0].partition_responses[0].error_code;
//!     if code == 0 {
//!         break;
//!     }
//!     assert_eq!(code, KafkaCode::NotEnoughReplicas.code());
//! }
//! assert_eq!(attempts, 4);
//! let stored = mock.records("orders", 0).unwrap();
//! assert_eq!(stored.len(), 1);
//! assert_eq!(stored[0].value.as_deref(), Some(&b"hello"[..]));
//! # }
//! ```
//!
//! With rekafka's producer the same test reads (the producer retries by itself, within its
//! delivery timeout):
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> rekafka::Result<()> {
//! use std::time::Duration;
//! use rekafka::{Client, KafkaCode};
//! use rekafka::mock::MockCluster;
//! use rekafka::producer::Record;
//! use rekafka::protocol::unstable::ApiKey;
//!
//! let mock = MockCluster::builder().topic("orders", 1).start().await?;
//! mock.push_request_errors(ApiKey::Produce, &[KafkaCode::NotEnoughReplicas; 3]);
//! let client = Client::builder().bootstrap_servers([mock.bootstrap()]).build().await?;
//! let producer = client
//!     .producer_with(|c| c.retry_backoff = Duration::from_millis(10))
//!     .await?;
//! let delivered = producer
//!     .send_and_wait(Record::new("orders").with_partition(0).with_value("hello"))
//!     .await
//!     .map_err(|e| e.error)?;
//! assert_eq!(delivered.offset, 0);
//! assert_eq!(mock.records("orders", 0)?.len(), 1, "stored once, after three refusals");
//! producer.close().await;
//! # Ok(()) }
//! ```
//!
//! # Example: a lost acknowledgement
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use rekafka::mock::MockCluster;
//! use rekafka::protocol::unstable::ApiKey;
//!
//! let mock = MockCluster::builder().brokers(3).topic("t", 6).start().await.unwrap();
//! // The next Produce is written to the log but its response never arrives.
//! mock.drop_responses(|r| r.api_key == ApiKey::Produce, 1);
//! // Hold every Fetch to broker 2 until `held` is released or dropped.
//! let held = mock.hold(|r| r.api_key == ApiKey::Fetch && r.broker == 2);
//! held.release();
//! # }
//! ```

mod consumer_group;
mod faults;
mod group;
mod handlers;
mod log;
mod server;
mod state;

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Duration;

use tokio::sync::Notify;

pub use faults::{HeldRequests, RequestMatcher};

use crate::cluster::CoordinatorType;
use crate::error::{Error, ErrorKind, KafkaCode, Result};
use crate::protocol::ApiKey;
use crate::protocol::record::{Record, RecordBatch};
use server::Shared;
use state::{Settings, State};

/// A record's key and value (`None`: null), for [`MockCluster::append_records`].
pub type KeyValue<'a> = (Option<&'a [u8]>, Option<&'a [u8]>);

/// One request as the mock received it, for the request log and for matchers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RequestInfo {
    /// The API.
    pub api_key: ApiKey,
    /// The version the client used.
    pub api_version: i16,
    /// The node id of the broker that received it.
    pub broker: i32,
    /// The request's correlation id.
    pub correlation_id: i32,
    /// The client id from the request header.
    pub client_id: Option<String>,
    /// Producer id (Produce: of the first batch; InitProducerId, AddPartitionsToTxn, EndTxn, …).
    pub producer_id: Option<i64>,
    /// Producer epoch, like `producer_id`.
    pub producer_epoch: Option<i16>,
    /// Base sequence of the first Produce batch.
    pub base_sequence: Option<i32>,
    /// The transactional id, where the request has one.
    pub transactional_id: Option<String>,
    /// The group id of group requests.
    pub group_id: Option<String>,
    /// The member id of group requests.
    pub member_id: Option<String>,
    /// The `acks` of a Produce request.
    pub acks: Option<i16>,
    /// The topic partitions a Produce, Fetch, ListOffsets or AddPartitionsToTxn names.
    pub partitions: Vec<(String, i32)>,
    /// The offsets an OffsetCommit commits, as (topic, partition, offset).
    pub offsets: Vec<(String, i32, i64)>,
    /// The member epoch a ConsumerGroupHeartbeat sends (0: join, -1: leave, -2: static leave).
    pub member_epoch: Option<i32>,
}

impl RequestInfo {
    pub(crate) fn new(
        api_key: ApiKey,
        api_version: i16,
        broker: i32,
        correlation_id: i32,
        client_id: Option<String>,
    ) -> RequestInfo {
        RequestInfo {
            api_key,
            api_version,
            broker,
            correlation_id,
            client_id,
            producer_id: None,
            producer_epoch: None,
            base_sequence: None,
            transactional_id: None,
            group_id: None,
            member_id: None,
            acks: None,
            partitions: Vec::new(),
            offsets: Vec::new(),
            member_epoch: None,
        }
    }
}

/// Settings of a [`MockCluster`]; build one with [`MockCluster::builder`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MockClusterBuilder {
    /// How many brokers. Default: 1.
    pub brokers: usize,
    /// The node id of the first broker; the others follow. Default: 1.
    pub first_node_id: i32,
    /// The port of the first broker; the others follow. `0` picks free ports. Default: 0.
    pub first_port: u16,
    /// Topics created at start: (name, partitions). Default: none.
    pub topics: Vec<(String, i32)>,
    /// Whether Metadata requests create unknown topics (when the request allows it).
    /// Default: true (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, and of CreateTopics with `-1`. Default: 1 (Kafka's
    /// `num.partitions`).
    pub default_partitions: i32,
    /// How long a new group waits for more members before its first rebalance completes.
    /// Default: zero (Kafka's `group.initial.rebalance.delay.ms` is 3 s).
    pub initial_rebalance_delay: Duration,
    /// The smallest session timeout JoinGroup accepts. Default: 1 ms (Kafka: 6 s).
    pub min_session_timeout: Duration,
    /// The largest session timeout JoinGroup accepts. Default: 30 min (Kafka's).
    pub max_session_timeout: Duration,
    /// The largest `transaction.timeout.ms` InitProducerId accepts. Default: 15 min (Kafka's).
    pub max_transaction_timeout: Duration,
    /// The largest request frame accepted; larger ones close the connection. Default: 100 MiB
    /// (Kafka's `socket.request.max.bytes`).
    pub max_request_size: usize,
    /// How many requests the request log keeps (the oldest are dropped). Default: 100 000.
    pub request_log_capacity: usize,
    /// Whether the brokers serve the consumer group protocol of KIP-848
    /// (ConsumerGroupHeartbeat, ConsumerGroupDescribe), as Kafka 4.x does. `false` makes them
    /// answer ApiVersions like a Kafka 3.x broker without it (and close the connection on
    /// those requests). Default: true.
    pub consumer_group_protocol: bool,
    /// The heartbeat interval the coordinator gives consumer-protocol members. Default: 5 s
    /// (Kafka's `group.consumer.heartbeat.interval.ms`).
    pub consumer_heartbeat_interval: Duration,
    /// How long a consumer-protocol member (or a static member that left with epoch -2) is
    /// kept without a heartbeat. Default: 45 s (Kafka's `group.consumer.session.timeout.ms`).
    pub consumer_session_timeout: Duration,
    /// The largest number of members of a consumer-protocol group; a member joining beyond it
    /// gets `GROUP_MAX_SIZE_REACHED`. Default: `usize::MAX` (Kafka's
    /// `group.consumer.max.size`: `Integer.MAX_VALUE`).
    pub consumer_group_max_size: usize,
}

impl Default for MockClusterBuilder {
    fn default() -> Self {
        MockClusterBuilder {
            brokers: 1,
            first_node_id: 1,
            first_port: 0,
            topics: Vec::new(),
            auto_create_topics: true,
            default_partitions: 1,
            initial_rebalance_delay: Duration::ZERO,
            min_session_timeout: Duration::from_millis(1),
            max_session_timeout: Duration::from_secs(1800),
            max_transaction_timeout: Duration::from_secs(900),
            max_request_size: crate::protocol::frame::DEFAULT_MAX_FRAME_SIZE,
            request_log_capacity: 100_000,
            consumer_group_protocol: true,
            consumer_heartbeat_interval: Duration::from_secs(5),
            consumer_session_timeout: Duration::from_secs(45),
            consumer_group_max_size: usize::MAX,
        }
    }
}

impl MockClusterBuilder {
    /// Sets [`brokers`](MockClusterBuilder::brokers).
    pub fn brokers(mut self, n: usize) -> Self {
        self.brokers = n;
        self
    }

    /// Sets [`first_node_id`](MockClusterBuilder::first_node_id).
    pub fn first_node_id(mut self, id: i32) -> Self {
        self.first_node_id = id;
        self
    }

    /// Sets [`first_port`](MockClusterBuilder::first_port).
    pub fn first_port(mut self, port: u16) -> Self {
        self.first_port = port;
        self
    }

    /// Adds a topic created at start.
    pub fn topic(mut self, name: impl Into<String>, partitions: i32) -> Self {
        self.topics.push((name.into(), partitions));
        self
    }

    /// Sets [`auto_create_topics`](MockClusterBuilder::auto_create_topics).
    pub fn auto_create_topics(mut self, enabled: bool) -> Self {
        self.auto_create_topics = enabled;
        self
    }

    /// Sets [`default_partitions`](MockClusterBuilder::default_partitions).
    pub fn default_partitions(mut self, n: i32) -> Self {
        self.default_partitions = n;
        self
    }

    /// Sets [`initial_rebalance_delay`](MockClusterBuilder::initial_rebalance_delay).
    pub fn initial_rebalance_delay(mut self, d: Duration) -> Self {
        self.initial_rebalance_delay = d;
        self
    }

    /// Sets [`min_session_timeout`](MockClusterBuilder::min_session_timeout).
    pub fn min_session_timeout(mut self, d: Duration) -> Self {
        self.min_session_timeout = d;
        self
    }

    /// Sets [`max_session_timeout`](MockClusterBuilder::max_session_timeout).
    pub fn max_session_timeout(mut self, d: Duration) -> Self {
        self.max_session_timeout = d;
        self
    }

    /// Sets [`max_transaction_timeout`](MockClusterBuilder::max_transaction_timeout).
    pub fn max_transaction_timeout(mut self, d: Duration) -> Self {
        self.max_transaction_timeout = d;
        self
    }

    /// Sets [`max_request_size`](MockClusterBuilder::max_request_size).
    pub fn max_request_size(mut self, bytes: usize) -> Self {
        self.max_request_size = bytes;
        self
    }

    /// Sets [`request_log_capacity`](MockClusterBuilder::request_log_capacity).
    pub fn request_log_capacity(mut self, n: usize) -> Self {
        self.request_log_capacity = n;
        self
    }

    /// Sets [`consumer_group_protocol`](MockClusterBuilder::consumer_group_protocol): `false`
    /// for a broker without KIP-848 (like Kafka 3.x).
    pub fn consumer_group_protocol(mut self, enabled: bool) -> Self {
        self.consumer_group_protocol = enabled;
        self
    }

    /// Sets [`consumer_heartbeat_interval`](MockClusterBuilder::consumer_heartbeat_interval).
    pub fn consumer_heartbeat_interval(mut self, d: Duration) -> Self {
        self.consumer_heartbeat_interval = d;
        self
    }

    /// Sets [`consumer_session_timeout`](MockClusterBuilder::consumer_session_timeout).
    pub fn consumer_session_timeout(mut self, d: Duration) -> Self {
        self.consumer_session_timeout = d;
        self
    }

    /// Sets [`consumer_group_max_size`](MockClusterBuilder::consumer_group_max_size).
    pub fn consumer_group_max_size(mut self, n: usize) -> Self {
        self.consumer_group_max_size = n;
        self
    }

    /// Starts the cluster on the current tokio runtime: binds every broker's port and spawns
    /// its acceptor. Fails when a port cannot be bound or a setting is invalid.
    pub async fn start(self) -> Result<MockCluster> {
        if self.brokers == 0 || self.brokers > 1000 {
            return Err(Error::config("mock cluster needs 1..=1000 brokers"));
        }
        if self
            .first_node_id
            .checked_add(self.brokers as i32)
            .is_none_or(|_| self.first_node_id < 0)
        {
            return Err(Error::config(
                "first_node_id must be non-negative and leave room for every broker",
            ));
        }
        if self.default_partitions <= 0 {
            return Err(Error::config("default_partitions must be positive"));
        }
        let ids: Vec<i32> = (0..self.brokers)
            .map(|i| self.first_node_id + i as i32)
            .collect();
        let settings = Settings {
            auto_create_topics: self.auto_create_topics,
            default_partitions: self.default_partitions,
            initial_rebalance_delay: self.initial_rebalance_delay,
            max_transaction_timeout: self.max_transaction_timeout,
            consumer_heartbeat_interval: self.consumer_heartbeat_interval,
            consumer_session_timeout: self.consumer_session_timeout,
            consumer_group_max_size: self.consumer_group_max_size,
        };
        let mut state = State::new(settings, ids.clone());
        for (name, parts) in &self.topics {
            state
                .create_topic(name, *parts, BTreeMap::new())
                .map_err(|code| Error::broker(code).on_topic(name.clone()))?;
        }
        let shared = Shared::new(state, &self, &ids);
        let shared = Arc::new(shared);
        for i in 0..ids.len() {
            let port = if self.first_port == 0 {
                0
            } else {
                self.first_port.saturating_add(i as u16)
            };
            server::start_broker(&shared, i, port)?;
        }
        server::start_ticker(&shared);
        Ok(MockCluster { shared })
    }
}

/// An in-process Kafka cluster for tests. See the [module documentation](self).
///
/// Dropping it (or [`shutdown`](MockCluster::shutdown)) stops every task and closes every
/// connection.
pub struct MockCluster {
    shared: Arc<Shared>,
}

impl fmt::Debug for MockCluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockCluster")
            .field("bootstrap", &self.bootstrap())
            .finish()
    }
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        self.shared.stop();
    }
}

fn unknown_partition(topic: &str, partition: i32) -> Error {
    Error::broker(KafkaCode::UnknownTopicOrPartition).on_partition(topic.to_string(), partition)
}

impl MockCluster {
    /// Settings for a new cluster.
    pub fn builder() -> MockClusterBuilder {
        MockClusterBuilder::default()
    }

    /// A one-broker cluster with default settings.
    pub async fn start() -> Result<MockCluster> {
        MockCluster::builder().start().await
    }

    /// The bootstrap list: `127.0.0.1:port` of every broker, comma separated.
    pub fn bootstrap(&self) -> String {
        self.broker_addrs().join(",")
    }

    /// `host:port` of every broker, in node id order.
    pub fn broker_addrs(&self) -> Vec<String> {
        self.shared
            .brokers
            .iter()
            .map(|b| format!("127.0.0.1:{}", b.port()))
            .collect()
    }

    /// The node ids of the brokers.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.shared.brokers.iter().map(|b| b.id).collect()
    }

    /// Stops every broker and waits for the acceptors to exit. Connections are closed.
    pub async fn shutdown(self) {
        self.shared.stop();
        for i in 0..self.shared.brokers.len() {
            server::stop_acceptor(&self.shared, i).await;
        }
    }

    /// Creates a topic (as CreateTopics would).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<()> {
        self.shared
            .lock()
            .create_topic(name, partitions, BTreeMap::new())
            .map(|_| ())
            .map_err(|code| Error::broker(code).on_topic(name.to_string()))
    }

    /// Appends records (key, value) to a partition directly, as one uncompressed batch stamped
    /// with the current time, as if a non-idempotent producer had sent them. Returns the offset
    /// of the first. Seeds data for consumer tests without a producer.
    pub fn append_records(
        &self,
        topic: &str,
        partition: i32,
        records: &[KeyValue<'_>],
    ) -> Result<i64> {
        let now = state::now_ms();
        let mut b = crate::protocol::record::BatchBuilder::new();
        for (k, v) in records {
            b.append(now, *k, *v, &[])?;
        }
        let batch = RecordBatch::decode(b.build()?)?;
        let base = {
            let mut st = self.shared.lock();
            let p = st
                .partition_mut(topic, partition)
                .ok_or_else(|| unknown_partition(topic, partition))?;
            let le = p.leader_epoch;
            p.log
                .append(&batch, le, None)
                .map_err(|code| Error::broker(code).on_partition(topic.to_string(), partition))?
                .base_offset
        };
        self.shared.data_changed.notify_waiters();
        Ok(base)
    }

    /// The high watermark of a partition.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Result<i64> {
        let st = self.shared.lock();
        st.partition(topic, partition)
            .map(|p| p.log.high_watermark())
            .ok_or_else(|| unknown_partition(topic, partition))
    }

    /// The last stable offset of a partition.
    pub fn last_stable_offset(&self, topic: &str, partition: i32) -> Result<i64> {
        let st = self.shared.lock();
        st.partition(topic, partition)
            .map(|p| p.log.last_stable_offset())
            .ok_or_else(|| unknown_partition(topic, partition))
    }

    /// Every stored batch of a partition, as stored (for assertions; walks the whole log).
    pub fn batches(&self, topic: &str, partition: i32) -> Result<Vec<RecordBatch>> {
        let raw = {
            let st = self.shared.lock();
            let p = st
                .partition(topic, partition)
                .ok_or_else(|| unknown_partition(topic, partition))?;
            let mut out = Vec::new();
            p.log
                .read(p.log.log_start(), i64::MAX, usize::MAX, true, &mut out);
            out
        };
        raw.into_iter().map(RecordBatch::decode).collect()
    }

    /// Every data record of a partition (control records left out, aborted ones included), in
    /// offset order. For assertions; walks the whole log.
    pub fn records(&self, topic: &str, partition: i32) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        for b in self.batches(topic, partition)? {
            if b.is_control() {
                continue;
            }
            for r in b.records()? {
                out.push(r?);
            }
        }
        Ok(out)
    }

    /// A group's committed offset for a partition.
    pub fn committed_offset(&self, group: &str, topic: &str, partition: i32) -> Option<i64> {
        let st = self.shared.lock();
        st.groups
            .get(group)?
            .offsets
            .get(&(topic.to_string(), partition))
            .map(|c| c.offset)
    }

    /// Answers the next `errors.len()` requests of `api` (on any broker) with these errors, one
    /// each, in order, without applying them. For Produce and Fetch every partition of the
    /// request gets the error.
    pub fn push_request_errors(&self, api: ApiKey, errors: &[KafkaCode]) {
        let mut f = self.shared.faults();
        f.errors
            .entry(api)
            .or_default()
            .extend(errors.iter().map(|c| c.code()));
    }

    /// Like [`push_request_errors`](MockCluster::push_request_errors), for requests to one
    /// broker only.
    pub fn push_broker_request_errors(&self, broker: i32, api: ApiKey, errors: &[KafkaCode]) {
        let mut f = self.shared.faults();
        f.broker_errors
            .entry((broker, api))
            .or_default()
            .extend(errors.iter().map(|c| (c.code(), Duration::ZERO)));
    }

    /// Like [`push_broker_request_errors`](MockCluster::push_broker_request_errors), each error
    /// answered after its own delay (librdkafka's `push_request_error_rtts`): a slow failure,
    /// e.g. `REQUEST_TIMED_OUT` after the client's own timeout. For a delay without an error
    /// use [`hold`](MockCluster::hold) or [`set_broker_rtt`](MockCluster::set_broker_rtt).
    pub fn push_broker_request_errors_rtt(
        &self,
        broker: i32,
        api: ApiKey,
        errors: &[(KafkaCode, Duration)],
    ) {
        let mut f = self.shared.faults();
        f.broker_errors
            .entry((broker, api))
            .or_default()
            .extend(errors.iter().map(|(c, d)| (c.code(), *d)));
    }

    /// Answers the next `errors.len()` requests of `api` (Produce, Fetch, ListOffsets or
    /// OffsetForLeaderEpoch) that
    /// name this partition with these errors for that partition only; the request's other
    /// partitions are served normally.
    pub fn push_partition_errors(
        &self,
        topic: &str,
        partition: i32,
        api: ApiKey,
        errors: &[KafkaCode],
    ) {
        let mut f = self.shared.faults();
        f.partition_errors
            .entry((topic.to_string(), partition, api))
            .or_default()
            .extend(errors.iter().map(|c| c.code()));
    }

    /// Answers the next `errors.len()` Metadata responses that include `topic` with these
    /// errors for that topic (and no partitions): a topic that vanishes from metadata for a
    /// while, or one whose leader is not available (`LEADER_NOT_AVAILABLE`).
    pub fn push_topic_metadata_errors(&self, topic: &str, errors: &[KafkaCode]) {
        let mut f = self.shared.faults();
        f.topic_errors
            .entry(topic.to_string())
            .or_default()
            .extend(errors.iter().map(|c| c.code()));
    }

    /// Narrows the version range the brokers advertise for `api` (within what the mock
    /// implements), or with `None` stops supporting it: ApiVersions leaves it out and requests
    /// of it close the connection. Lets a test check a client's version negotiation.
    pub fn set_api_versions(&self, api: ApiKey, range: Option<(i16, i16)>) {
        self.shared.faults().versions.insert(api, range);
    }

    /// The version ranges the mock implements (before
    /// [`set_api_versions`](MockCluster::set_api_versions)): (API, min, max).
    pub fn supported_api_versions() -> &'static [(ApiKey, i16, i16)] {
        handlers::SUPPORTED
    }

    /// Closes the connection, without applying or answering it, on the `nth` (1-based) next
    /// request of `api`.
    pub fn close_connection_on(&self, api: ApiKey, nth: u64) {
        self.shared.faults().close_on.push((api, nth.max(1)));
    }

    /// Delays every response of `broker` by `rtt` (zero removes the delay).
    pub fn set_broker_rtt(&self, broker: i32, rtt: Duration) {
        let mut f = self.shared.faults();
        if rtt.is_zero() {
            f.rtt.remove(&broker);
        } else {
            f.rtt.insert(broker, rtt);
        }
    }

    /// Takes a broker down: it stops listening and closes every connection (requests in flight
    /// get no answer). Leadership does not move. Returns when the port is closed.
    pub async fn broker_down(&self, broker: i32) -> Result<()> {
        let i = self.broker_index(broker)?;
        server::stop_acceptor(&self.shared, i).await;
        self.shared.brokers[i].kill_connections();
        Ok(())
    }

    /// Brings a broker back up on the same port.
    pub async fn broker_up(&self, broker: i32) -> Result<()> {
        let i = self.broker_index(broker)?;
        let port = self.shared.brokers[i].port();
        server::stop_acceptor(&self.shared, i).await;
        server::start_broker(&self.shared, i, port)
    }

    /// Whether a broker is up.
    pub fn is_broker_up(&self, broker: i32) -> bool {
        self.broker_index(broker)
            .map(|i| self.shared.brokers[i].is_up())
            .unwrap_or(false)
    }

    fn broker_index(&self, broker: i32) -> Result<usize> {
        self.shared
            .brokers
            .iter()
            .position(|b| b.id == broker)
            .ok_or_else(|| {
                Error::with_message(ErrorKind::Config, format!("no mock broker {broker}"))
            })
    }

    /// Moves a partition's leadership to `broker` (and bumps its leader epoch). The old leader
    /// answers NOT_LEADER_OR_FOLLOWER from now on.
    pub fn set_partition_leader(&self, topic: &str, partition: i32, broker: i32) -> Result<()> {
        self.broker_index(broker)?;
        let mut st = self.shared.lock();
        let p = st
            .partition_mut(topic, partition)
            .ok_or_else(|| unknown_partition(topic, partition))?;
        p.move_leader(broker);
        drop(st);
        self.shared.data_changed.notify_waiters();
        Ok(())
    }

    /// Simulates an unclean leader election: `broker` becomes the partition's leader with a
    /// log that ends at `log_end` (rounded down to a batch boundary). The records from there
    /// on are gone, a new leader epoch starts at the new end (OffsetForLeaderEpoch answers
    /// accordingly) and the old leader answers NOT_LEADER_OR_FOLLOWER. Returns the new log
    /// end. Records appended afterwards reuse the lost offsets: what a consumer must detect
    /// (KIP-320).
    pub fn elect_unclean_leader(
        &self,
        topic: &str,
        partition: i32,
        broker: i32,
        log_end: i64,
    ) -> Result<i64> {
        self.broker_index(broker)?;
        let mut st = self.shared.lock();
        let p = st
            .partition_mut(topic, partition)
            .ok_or_else(|| unknown_partition(topic, partition))?;
        let end = p.elect_unclean(broker, log_end);
        drop(st);
        self.shared.data_changed.notify_waiters();
        Ok(end)
    }

    /// The current leader of a partition.
    pub fn partition_leader(&self, topic: &str, partition: i32) -> Result<i32> {
        let st = self.shared.lock();
        st.partition(topic, partition)
            .map(|p| p.leader)
            .ok_or_else(|| unknown_partition(topic, partition))
    }

    /// Moves the coordinator of a group or transactional id to `broker`; the old one answers
    /// NOT_COORDINATOR from now on.
    pub fn set_coordinator(&self, kind: CoordinatorType, key: &str, broker: i32) -> Result<()> {
        self.broker_index(broker)?;
        self.shared.lock().set_coordinator(kind, key, broker);
        self.shared.groups_changed.notify_waiters();
        Ok(())
    }

    /// The coordinator of a group or transactional id.
    pub fn coordinator(&self, kind: CoordinatorType, key: &str) -> i32 {
        self.shared.lock().coordinator(kind, key)
    }

    /// Holds every request matching `matcher` (before it is applied) until the returned handle
    /// is released or dropped. The matcher runs under the mock's fault lock: it must be quick
    /// and must not call the `MockCluster`.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use rekafka::connection::{Connection, ConnectionConfig};
    /// use rekafka::mock::MockCluster;
    /// use rekafka::protocol::unstable::ApiKey;
    /// use rekafka::protocol::unstable::messages::MetadataRequest;
    ///
    /// let mock = MockCluster::start().await.unwrap();
    /// let conn = Connection::connect(&mock.bootstrap(), -1, &ConnectionConfig::default())
    ///     .await
    ///     .unwrap();
    /// let held = mock.hold(|r| r.api_key == ApiKey::Metadata);
    /// let pending = tokio::spawn({
    ///     let conn = conn.clone();
    ///     async move { conn.send(MetadataRequest::default()).await }
    /// });
    /// held.wait_matched(1).await; // the request reached the broker and waits there
    /// assert!(!pending.is_finished());
    /// held.release();
    /// assert!(pending.await.unwrap().is_ok());
    /// # }
    /// ```
    pub fn hold(
        &self,
        matcher: impl Fn(&RequestInfo) -> bool + Send + Sync + 'static,
    ) -> HeldRequests {
        let inner = Arc::new(faults::HoldInner {
            released: AtomicBool::new(false),
            release: Notify::new(),
            held: AtomicUsize::new(0),
            matched: AtomicUsize::new(0),
            changed: Notify::new(),
        });
        self.shared.faults().holds.push(faults::Hold {
            matcher: Arc::new(matcher),
            inner: inner.clone(),
        });
        HeldRequests { inner }
    }

    /// Applies the next `count` requests matching `matcher` but drops their responses (the
    /// connection stays open; the client sees a timeout). The matcher runs under the mock's
    /// fault lock: it must be quick and must not call the `MockCluster`.
    pub fn drop_responses(
        &self,
        matcher: impl Fn(&RequestInfo) -> bool + Send + Sync + 'static,
        count: usize,
    ) {
        self.shared.faults().drops.push(faults::DropRule {
            matcher: Arc::new(matcher),
            remaining: count,
        });
    }

    /// The request log, oldest first (at most
    /// [`request_log_capacity`](MockClusterBuilder::request_log_capacity) entries).
    pub fn requests(&self) -> Vec<RequestInfo> {
        self.shared.log_lock().iter().cloned().collect()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.shared.log_lock().clear();
    }

    /// Waits until the request log holds at least `count` requests matching `pred`, and returns
    /// them. Wrap it in `tokio::time::timeout` to bound the wait.
    pub async fn wait_for_requests(
        &self,
        pred: impl Fn(&RequestInfo) -> bool,
        count: usize,
    ) -> Vec<RequestInfo> {
        loop {
            let changed = self.shared.log_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let found: Vec<RequestInfo> = self
                .shared
                .log_lock()
                .iter()
                .filter(|r| pred(r))
                .cloned()
                .collect();
            if found.len() >= count {
                return found;
            }
            changed.await;
        }
    }
}

pub(crate) type RequestLog = VecDeque<RequestInfo>;

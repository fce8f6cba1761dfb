//! What the listener container needs from a consumer and its records.
//!
//! The container is written against these two traits so that it uses the consumer's public API
//! only (and can be tested against an in-memory consumer). rekafka's own consumer implements
//! them; so can any other source of records.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use super::classify::DeserializationFailed;
use super::tracker::PartitionKey;
use crate::protocol::record::{Header, TimestampType};
use crate::{Error, Result};

/// A committed offset and its metadata, per partition (`None` when nothing is committed).
pub type CommittedOffsets = Vec<(PartitionKey, Option<(i64, String)>)>;

/// An offset to commit, with its metadata string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetToCommit {
    /// The partition.
    pub partition: PartitionKey,
    /// The next offset to consume (the last handled offset + 1).
    pub offset: i64,
    /// The commit metadata (empty for none).
    pub metadata: String,
}

/// A consumed record as the container sees it.
pub trait ListenerRecord: Clone + Send + Sync + 'static {
    /// The topic.
    fn topic(&self) -> &str;
    /// The partition.
    fn partition(&self) -> i32;
    /// The offset.
    fn offset(&self) -> i64;
    /// The timestamp (ms since the epoch).
    fn timestamp(&self) -> i64;
    /// The timestamp type.
    fn timestamp_type(&self) -> TimestampType;
    /// The raw key bytes (`None` for a null key).
    fn key(&self) -> Option<&Bytes>;
    /// The raw value bytes (`None` for a null value).
    fn value(&self) -> Option<&Bytes>;
    /// The headers, in wire order.
    fn headers(&self) -> Vec<Header>;
    /// The same record with `header` added (replacing headers of the same name).
    fn with_header(&self, header: Header) -> Self;
    /// The deserialization failure of the key or value, if the record could not be
    /// deserialized. Such a record never reaches the handler.
    fn deserialization_failure(&self) -> Option<DeserializationFailed>;
    /// The same record marked as not deserializable.
    fn with_deserialization_failure(&self, failure: DeserializationFailed) -> Self;
    /// The consumer group the record was consumed in, if any: the dead-letter publisher writes
    /// it in `kafka_dlt-original-consumer-group`, as Spring's does whenever the group is known.
    /// Default: `None`.
    fn consumer_group(&self) -> Option<&str> {
        None
    }
}

/// The consumer operations the container uses. Every method concerns only the partitions it
/// names: seeking, pausing or committing one partition never disturbs the others.
pub trait ContainerConsumer: Send + 'static {
    /// The record type.
    type Record: ListenerRecord;

    /// Waits up to `timeout` for records; records of one partition come in offset order.
    fn poll(&mut self, timeout: Duration)
    -> impl Future<Output = Result<Vec<Self::Record>>> + Send;

    /// The next record of `partition` returned will be the one at `offset`; buffered records
    /// of that partition are discarded.
    fn seek(&mut self, partition: &PartitionKey, offset: i64) -> Result<()>;

    /// Stops returning (and fetching) records of `partitions` until resumed.
    fn pause(&mut self, partitions: &[PartitionKey]) -> Result<()>;

    /// Undoes [`pause`](Self::pause).
    fn resume(&mut self, partitions: &[PartitionKey]) -> Result<()>;

    /// The partitions currently assigned.
    fn assignment(&self) -> Vec<PartitionKey>;

    /// The partitions currently assigned, each with an id that changes whenever the partition
    /// is assigned anew: a partition revoked (or lost) and assigned again inside one `poll`
    /// has a new id, because the consumer started it over (from its committed offset, not
    /// paused). The container compares ids to forget what it held for the old assignment
    /// (back-offs, pauses, pending offsets, recoveries) and pause the partition again if it
    /// has to. Default: [`assignment`](Self::assignment) with id 0 (a consumer that never
    /// gives a partition back within one poll).
    fn assignment_ids(&self) -> Vec<(PartitionKey, u64)> {
        self.assignment().into_iter().map(|tp| (tp, 0)).collect()
    }

    /// Commits the offsets (synchronously).
    fn commit(&mut self, offsets: Vec<OffsetToCommit>) -> impl Future<Output = Result<()>> + Send;

    /// The committed offset and metadata of each partition (`None` when nothing is committed).
    fn committed(
        &mut self,
        partitions: &[PartitionKey],
    ) -> impl Future<Output = Result<CommittedOffsets>> + Send;

    /// The consumer group, if the consumer is in one.
    fn group_id(&self) -> Option<String>;

    /// The group membership to send with a transaction's offsets (KIP-447), for the
    /// exactly-once mode. Default: `None` (no group).
    fn transaction_group_metadata(&self) -> Option<crate::transaction::ConsumerGroupMetadata> {
        None
    }

    /// Whether the consumer commits offsets by itself. The container commits (per its ack
    /// mode): it turns auto-commit off with [`disable_auto_commit`](Self::disable_auto_commit)
    /// and refuses to start on a consumer that still auto-commits after that. Default: false.
    fn auto_commit_enabled(&self) -> bool {
        false
    }

    /// The link to the [`Client`](crate::Client) that made the consumer: a container started
    /// over it registers there, so that [`Client::close`](crate::Client::close) stops it.
    /// Default: none (a consumer not made by a client).
    #[doc(hidden)]
    fn close_link(&self) -> crate::task::CloseLink {
        crate::task::CloseLink::default()
    }

    /// Turns the consumer's auto-commit off for good (the container calls it before it starts,
    /// as Spring's container overrides `enable.auto.commit`). Default: does nothing.
    fn disable_auto_commit(&mut self) {}

    /// Whether the next `poll` may revoke partitions (a rebalance is pending): the container
    /// then completes the recoveries in flight and commits before it polls, so the next owner
    /// of a partition does not recover the same records again. Default: false.
    fn rebalance_pending(&self) -> bool {
        false
    }

    /// The assigned partitions whose fetch failed with an error no retry fixes (a corrupt
    /// batch, an authorization error, an offset out of range with `auto.offset.reset=none`):
    /// they are no longer fetched until sought. The container applies its
    /// [`PartitionFailurePolicy`](super::PartitionFailurePolicy) to each, once. Default: none.
    fn failed_partitions(&self) -> Vec<(PartitionKey, Error)> {
        Vec::new()
    }

    /// The `client.id` the container's metrics are labelled with ([`crate::telemetry`]).
    /// Default: [`DEFAULT_CLIENT_ID`](crate::connection::DEFAULT_CLIENT_ID).
    fn client_id(&self) -> &str {
        crate::connection::DEFAULT_CLIENT_ID
    }

    /// Leaves the group and closes the consumer.
    fn close(&mut self) -> impl Future<Output = Result<()>> + Send;
}

//! Typed events of the consumer: what it did on its own (an `auto.offset.reset`, a reset after
//! a detected log truncation) or what stopped a partition (a fetch failure no retry fixes).
//! Receive them with
//! [`Consumer::events`](super::Consumer::events); the failed partitions are also queryable with
//! [`Consumer::failed_partitions`](super::Consumer::failed_partitions).

use std::time::SystemTime;

use super::config::OffsetReset;
use crate::group::TopicPartition;
use crate::{Error, ErrorKind, KafkaCode};

/// How many events a slow [`events`](super::Consumer::events) receiver may fall behind before
/// it loses the oldest (it then sees `RecvError::Lagged`).
pub const EVENT_CAPACITY: usize = 1024;

/// Something the consumer did or hit on its own.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ConsumerEvent {
    /// A fetch offset was out of range (OFFSET_OUT_OF_RANGE: the log was truncated or deleted
    /// past it) and `auto.offset.reset` moved the partition (to the log start for `earliest`,
    /// the end for `latest`). Records fetched before `offset` were returned first; the
    /// records between `offset` and the new position are skipped (or, for a reset back,
    /// read again). With `auto.offset.reset=none` there is no reset: the partition fails
    /// ([`PartitionFailed`](Self::PartitionFailed)).
    OffsetReset {
        /// The partition.
        partition: TopicPartition,
        /// The offset that was out of range.
        offset: i64,
        /// The policy that moved it (`Earliest` or `Latest`).
        reset: OffsetReset,
        /// The log start offset in the answer, if the broker gave one.
        log_start_offset: Option<i64>,
        /// The high watermark in the answer, if the broker gave one.
        high_watermark: Option<i64>,
    },
    /// KIP-320: after a leader change the consumer validated its position with
    /// OffsetForLeaderEpoch and found the log truncated below it (an unclean leader election:
    /// records it had read are gone, and the offsets from `divergent_offset` on may now hold
    /// other records). `auto.offset.reset` repositioned the partition as the Java client does:
    /// to `divergent_offset`, the first offset known to diverge, when the leader knew the epoch
    /// of the last record read, else by the policy (the log start for `earliest`, the end for
    /// `latest`). Records buffered from the old leader were dropped, never returned. With
    /// `auto.offset.reset=none` there is no reset: the partition fails
    /// ([`PartitionFailed`](Self::PartitionFailed), an error of kind
    /// [`ErrorKind::LogTruncation`](crate::ErrorKind::LogTruncation)).
    LogTruncated {
        /// The partition.
        partition: TopicPartition,
        /// The position that was validated (the next offset the application would have got).
        position: i64,
        /// The leader epoch of the last record read before `position`.
        position_epoch: i32,
        /// The first offset known to diverge, and the new position, if the leader knew the
        /// epoch; `None` when the partition was reset by the policy instead.
        divergent_offset: Option<i64>,
        /// The policy that moved it (`Earliest` or `Latest`).
        reset: OffsetReset,
    },
    /// A partition stopped: its fetch failed with an error no retry fixes. It is no longer
    /// fetched until the application seeks it (or it is revoked). Also listed by
    /// [`failed_partitions`](super::Consumer::failed_partitions) and reported once in
    /// [`ConsumerRecords::errors`](super::ConsumerRecords::errors).
    PartitionFailed(PartitionFailure),
}

/// Why a partition's fetch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FetchFailureKind {
    /// OFFSET_OUT_OF_RANGE with `auto.offset.reset=none` (or no committed offset to start from).
    OffsetOutOfRange,
    /// A batch that failed its CRC, could not be decompressed or parsed.
    Corrupt,
    /// TOPIC_AUTHORIZATION_FAILED and the like: the principal may not read the topic.
    Authorization,
    /// KIP-320 log truncation below the position with `auto.offset.reset=none`
    /// ([`ErrorKind::LogTruncation`](crate::ErrorKind::LogTruncation)).
    LogTruncation,
    /// Any other error no retry fixes (an unsupported version, …).
    Other,
}

impl FetchFailureKind {
    /// The kind of a partition's fetch error.
    pub fn of(error: &Error) -> FetchFailureKind {
        match error.kafka_code() {
            Some(KafkaCode::OffsetOutOfRange) => return FetchFailureKind::OffsetOutOfRange,
            Some(
                KafkaCode::TopicAuthorizationFailed
                | KafkaCode::ClusterAuthorizationFailed
                | KafkaCode::GroupAuthorizationFailed,
            ) => return FetchFailureKind::Authorization,
            Some(KafkaCode::CorruptMessage) => return FetchFailureKind::Corrupt,
            _ => {}
        }
        match error.kind() {
            ErrorKind::Corrupt | ErrorKind::Compression => FetchFailureKind::Corrupt,
            ErrorKind::Authentication => FetchFailureKind::Authorization,
            ErrorKind::LogTruncation { .. } => FetchFailureKind::LogTruncation,
            _ => FetchFailureKind::Other,
        }
    }
}

/// A partition whose fetch failed and that waits for the application.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PartitionFailure {
    /// The partition.
    pub partition: TopicPartition,
    /// Its position (the next record the application would get), if known.
    pub position: Option<i64>,
    /// Why it failed.
    pub kind: FetchFailureKind,
    /// The error.
    pub error: Error,
    /// When the consumer noticed.
    pub since: SystemTime,
}

//! Records of a share group and their acknowledgement.

use std::sync::Arc;

use bytes::Bytes;

use crate::group::TopicPartition;
use crate::protocol::record::{Headers, TimestampType};
use crate::{Error, Result};

/// One record acquired from a share group. Key, value and headers are zero-copy slices of the
/// ShareFetch response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShareRecord {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The timestamp (ms since the epoch).
    pub timestamp: i64,
    /// What the timestamp means.
    pub timestamp_type: TimestampType,
    /// The key; `None` for a null key.
    pub key: Option<Bytes>,
    /// The value; `None` for a null value.
    pub value: Option<Bytes>,
    /// The headers in wire order.
    pub headers: Headers,
    /// How many times the broker has delivered this record, this delivery included (1 for the
    /// first delivery). The group's `share.delivery.count.limit` (broker default 5) bounds it:
    /// a record released on its last delivery is archived, never delivered again.
    pub delivery_count: u16,
}

impl ShareRecord {
    /// The record's topic partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }
}

/// How a record is acknowledged (Java's `AcknowledgeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AcknowledgeType {
    /// Processed: the record is done for the group.
    Accept,
    /// Not processed: the record becomes available again and is delivered again (with a
    /// higher delivery count) unless its delivery count reached the group's limit.
    Release,
    /// Unprocessable: the record is archived and never delivered again.
    Reject,
}

impl AcknowledgeType {
    /// The wire value (ShareFetch/ShareAcknowledge `AcknowledgeTypes`).
    pub(crate) fn wire(self) -> i8 {
        match self {
            AcknowledgeType::Accept => 1,
            AcknowledgeType::Release => 2,
            AcknowledgeType::Reject => 3,
        }
    }
}

/// The broker's answer to acknowledgements of one partition: which offsets were acknowledged
/// (gaps left out) and whether it took them. An acknowledgement of a record whose acquisition
/// lock had expired fails (`INVALID_RECORD_STATE`): the broker has made the record available
/// again and will deliver it again.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AcknowledgementOutcome {
    /// The partition.
    pub partition: TopicPartition,
    /// The acknowledged offsets, ascending.
    pub offsets: Vec<i64>,
    /// `Ok` if the broker took them; the broker's (or the transport's) error otherwise.
    pub result: Result<()>,
}

impl AcknowledgementOutcome {
    pub(crate) fn new(partition: TopicPartition, offsets: Vec<i64>, result: Result<()>) -> Self {
        AcknowledgementOutcome {
            partition,
            offsets,
            result,
        }
    }

    /// The error, if the acknowledgements failed.
    pub fn error(&self) -> Option<&Error> {
        self.result.as_ref().err()
    }
}

//! Records of a share group and their acknowledgement.

use crate::consumer::ConsumerRecord;
use crate::group::TopicPartition;
use crate::{Error, Result};

/// One record acquired from a share group: the record as a consumer in a group receives it,
/// plus its delivery count (Java's share consumer, likewise, hands out `ConsumerRecord`s whose
/// `deliveryCount()` is set). Key, value and headers are zero-copy slices of the ShareFetch
/// response. Derefs to its [`ConsumerRecord`], so `record.offset`, `record.value`,
/// [`topic_partition`](ConsumerRecord::topic_partition) and
/// [`deserialize`](ConsumerRecord::deserialize) read as on a consumer's record.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShareRecord {
    /// The record: topic, partition, offset, timestamp, key, value (`None` for a null value),
    /// headers and its batch's leader epoch.
    pub record: ConsumerRecord,
    /// How many times the broker has delivered this record, this delivery included (1 for the
    /// first delivery). The group's `share.delivery.count.limit` (broker default 5) bounds it:
    /// a record released on its last delivery is archived, never delivered again.
    pub delivery_count: u16,
}

impl std::ops::Deref for ShareRecord {
    type Target = ConsumerRecord;

    fn deref(&self) -> &ConsumerRecord {
        &self.record
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

//! The Kafka wire protocol, without I/O.
//!
//! * [`frame`]: length-prefixed framing with a maximum frame size.
//! * [`codec`]: typed request encoding and response decoding over `kafka-protocol`'s message
//!   types, with allocation-bounded decoding of untrusted bytes.
//! * [`versions`]: ApiVersions negotiation (with the KIP-511 fallback).
//! * [`record`]: our own RecordBatch v2 codec, compression and control records.
//! * `requests`: requests several layers send (OffsetFetch, ListOffsets), built per version
//!   and answered into our own types in one place.
//!
//! The message types are `kafka-protocol`'s, re-exported as [`messages`].

pub mod codec;
pub mod frame;
mod guard;
pub mod record;
pub(crate) mod requests;
pub mod versions;

/// The message types of every Kafka API (re-exported from the `kafka-protocol` crate).
pub use kafka_protocol::messages;
pub use kafka_protocol::messages::ApiKey;
/// Protocol primitives of the `kafka-protocol` crate that appear in message fields.
pub use kafka_protocol::protocol::{Request, StrBytes, VersionRange};

/// Which records a read sees (`isolation.level`): the consumer's fetches and the admin's
/// offset lookups. Re-exported as [`consumer::IsolationLevel`](crate::consumer::IsolationLevel)
/// and [`admin::IsolationLevel`](crate::admin::IsolationLevel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[non_exhaustive]
pub enum IsolationLevel {
    /// Every record, including those of open and aborted transactions. Java's default.
    #[default]
    ReadUncommitted,
    /// Only records of committed transactions (and non-transactional ones), up to the last
    /// stable offset.
    ReadCommitted,
}

impl IsolationLevel {
    /// The value on the wire (Fetch, ListOffsets).
    pub(crate) fn wire(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        }
    }
}

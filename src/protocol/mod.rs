//! The Kafka wire protocol, without I/O.
//!
//! * [`frame`]: length-prefixed framing with a maximum frame size.
//! * [`codec`]: typed request encoding and response decoding over `kafka-protocol`'s message
//!   types, with allocation-bounded decoding of untrusted bytes.
//! * [`versions`]: ApiVersions negotiation (with the KIP-511 fallback).
//! * [`record`]: our own RecordBatch v2 codec, compression and control records.
//!
//! The message types are `kafka-protocol`'s, re-exported as [`messages`].

pub mod codec;
pub mod frame;
mod guard;
pub mod record;
pub mod versions;

/// The message types of every Kafka API (re-exported from the `kafka-protocol` crate).
pub use kafka_protocol::messages;
pub use kafka_protocol::messages::ApiKey;
/// Protocol primitives of the `kafka-protocol` crate that appear in message fields.
pub use kafka_protocol::protocol::{Request, StrBytes, VersionRange};

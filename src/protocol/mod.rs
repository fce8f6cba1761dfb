//! The Kafka wire protocol, without I/O.
//!
//! Stable (covered by semver):
//!
//! * [`frame`]: length-prefixed framing with a maximum frame size.
//! * [`record`]: our own RecordBatch v2 codec, compression and control records.
//! * [`IsolationLevel`].
//!
//! Crate-private: `requests`, the requests several layers send (OffsetFetch, ListOffsets),
//! built per version and answered into our own types in one place.
//!
//! Unstable, with the cargo feature `unstable-protocol` only (not covered by semver: it
//! follows the releases of the `kafka-protocol` crate, whose types it exposes):
//!
//! * `unstable`: `kafka-protocol`'s message types (`messages`), `ApiKey`, and the
//!   `Request`, `StrBytes` and `VersionRange` primitives.
//! * `codec`: typed request encoding and response decoding over those message types, with
//!   allocation-bounded decoding of untrusted bytes.
//! * `versions`: ApiVersions negotiation (with the KIP-511 fallback).
//!
//! Inside the crate all of them are used directly, whatever the features.

/// Declares an item `pub` with the `unstable-protocol` feature and `pub(crate)` without it:
/// the one switch between the stable API and the unstable protocol surface. Without the
/// feature, an item the crate itself does not use is allowed to be dead.
macro_rules! unstable_pub {
    ($(#[$meta:meta])* pub $($item:tt)*) => {
        #[cfg(feature = "unstable-protocol")]
        $(#[$meta])*
        pub $($item)*
        #[cfg(not(feature = "unstable-protocol"))]
        #[allow(dead_code, unused_imports, unreachable_pub)]
        $(#[$meta])*
        pub(crate) $($item)*
    };
}
pub(crate) use unstable_pub;

unstable_pub! { pub mod codec; }
pub mod frame;
mod guard;
pub mod record;
pub(crate) mod requests;
unstable_pub! { pub mod versions; }

// What the crate uses of `kafka-protocol`, by these paths; public only as `unstable`.
pub(crate) use kafka_protocol::messages;
#[allow(unused_imports)]
pub(crate) use kafka_protocol::messages::ApiKey;
#[allow(unused_imports)]
pub(crate) use kafka_protocol::protocol::{Request, StrBytes, VersionRange};

/// `kafka-protocol`'s types, for the raw request API (feature `unstable-protocol`).
///
/// **Not covered by semver**: this module follows the releases of the `kafka-protocol`
/// crate (a new release of it may change these types in a patch release of rekafka). The
/// stable API never needs them.
///
/// ```
/// use rekafka::protocol::unstable::messages::MetadataRequest;
/// use rekafka::protocol::unstable::Request;
///
/// fn key_of<R: Request>(_: &R) -> i16 {
///     R::KEY
/// }
/// assert_eq!(key_of(&MetadataRequest::default()), 3);
/// ```
#[cfg(feature = "unstable-protocol")]
pub mod unstable {
    /// The message types of every Kafka API (re-exported from the `kafka-protocol` crate).
    pub use kafka_protocol::messages;
    pub use kafka_protocol::messages::ApiKey;
    /// Protocol primitives of the `kafka-protocol` crate that appear in message fields.
    pub use kafka_protocol::protocol::{Request, StrBytes, VersionRange};
}

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

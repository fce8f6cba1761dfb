//! Dead-letter headers exactly as Spring for Apache Kafka writes them, and reading them back.
//!
//! A dead letter keeps the original key, value and headers, and adds provenance and exception
//! headers under Spring's names and encodings, so Spring tooling reads rekafka's dead letters and
//! rekafka reads Spring's:
//!
//! | header | value |
//! |---|---|
//! | `kafka_dlt-exception-fqcn` | the error's [class](super::error_class): its type path |
//! | `kafka_dlt-exception-cause-fqcn` | the class of its cause (its own when it has none) |
//! | `kafka_dlt-exception-message` | its message, plus `"; "` and the cause's message if different |
//! | `kafka_dlt-exception-stacktrace` | the error chain, one `class: message` per line |
//! | `kafka_dlt-key-exception-*` | fqcn, message and stack trace, when the *key* failed to deserialize (the key failure's cause class goes to `kafka_dlt-exception-cause-fqcn`, as in Spring); when the value failed too, the four value headers follow |
//! | `kafka_dlt-original-topic` | UTF-8 |
//! | `kafka_dlt-original-partition` | 4-byte big-endian |
//! | `kafka_dlt-original-offset` | 8-byte big-endian |
//! | `kafka_dlt-original-timestamp` | 8-byte big-endian |
//! | `kafka_dlt-original-timestamp-type` | `CreateTime` / `LogAppendTime` |
//! | `kafka_dlt-original-consumer-group` | UTF-8, when consumed in a group |
//!
//! ```
//! use rekafka::listener::{DeadLetterHeaders, DeadLetterInfo, Provenance};
//! use rekafka::protocol::record::{Header, TimestampType};
//!
//! #[derive(Debug, thiserror::Error)]
//! #[error("price is negative")]
//! struct InvalidOrder;
//!
//! let provenance = Provenance {
//!     topic: "orders".into(),
//!     partition: 2,
//!     offset: 42,
//!     timestamp: 1_700_000_000_000,
//!     timestamp_type: TimestampType::CreateTime,
//!     group: Some("billing".into()),
//! };
//! let original = vec![Header::new("trace", Some(&b"t1"[..]))];
//! let headers = DeadLetterHeaders::default().build(&original, &provenance, &InvalidOrder, None);
//! let info = DeadLetterInfo::from_headers(&headers);
//! assert_eq!(info.original_topic.as_deref(), Some("orders"));
//! assert_eq!(info.original_offset, Some(42));
//! assert_eq!(info.exception_fqcn.as_deref(), Some("InvalidOrder"));
//! assert_eq!(headers[0].key(), "trace"); // original headers come first, unchanged
//! ```

use std::error::Error as StdError;
use std::sync::Arc;

use bytes::Bytes;

use super::classify::{DeserializationFailed, RecordPart, error_class};
use crate::protocol::record::{Header, TimestampType};

/// The failure headers of one naming family, every name its `prefix` plus Spring's suffix:
/// the dead-letter names (`kafka_dlt-`) and the retry-topic names (`kafka_`) are the same set
/// of headers, so the set is written once, here.
macro_rules! failure_header_names {
    ($prefix:literal) => {
        #[doc = concat!("`", $prefix, "exception-fqcn`: the error's class ([`error_class`](crate::listener::error_class)).")]
        pub const EXCEPTION_FQCN: &str = concat!($prefix, "exception-fqcn");
        #[doc = concat!("`", $prefix, "exception-cause-fqcn`: the cause's class.")]
        pub const EXCEPTION_CAUSE_FQCN: &str = concat!($prefix, "exception-cause-fqcn");
        #[doc = concat!("`", $prefix, "exception-message`: the error message.")]
        pub const EXCEPTION_MESSAGE: &str = concat!($prefix, "exception-message");
        #[doc = concat!("`", $prefix, "exception-stacktrace`: the error chain.")]
        pub const EXCEPTION_STACKTRACE: &str = concat!($prefix, "exception-stacktrace");
        #[doc = concat!("`", $prefix, "key-exception-fqcn`: the key-failure class.")]
        pub const KEY_EXCEPTION_FQCN: &str = concat!($prefix, "key-exception-fqcn");
        #[doc = concat!("`", $prefix, "key-exception-message`: the key-failure message.")]
        pub const KEY_EXCEPTION_MESSAGE: &str = concat!($prefix, "key-exception-message");
        #[doc = concat!("`", $prefix, "key-exception-stacktrace`: the key-failure chain.")]
        pub const KEY_EXCEPTION_STACKTRACE: &str = concat!($prefix, "key-exception-stacktrace");
        #[doc = concat!("`", $prefix, "original-topic`: the original topic.")]
        pub const ORIGINAL_TOPIC: &str = concat!($prefix, "original-topic");
        #[doc = concat!("`", $prefix, "original-partition`: the original partition (4-byte big-endian).")]
        pub const ORIGINAL_PARTITION: &str = concat!($prefix, "original-partition");
        #[doc = concat!("`", $prefix, "original-offset`: the original offset (8-byte big-endian).")]
        pub const ORIGINAL_OFFSET: &str = concat!($prefix, "original-offset");
        #[doc = concat!("`", $prefix, "original-timestamp`: the original timestamp (8-byte big-endian).")]
        pub const ORIGINAL_TIMESTAMP: &str = concat!($prefix, "original-timestamp");
        #[doc = concat!("`", $prefix, "original-timestamp-type`: the original timestamp type (`CreateTime` / `LogAppendTime`).")]
        pub const ORIGINAL_TIMESTAMP_TYPE: &str = concat!($prefix, "original-timestamp-type");

        /// The exception headers (value and key side): removed before the new ones are added
        /// when stripping.
        pub const EXCEPTION_HEADERS: [&str; 7] = [
            EXCEPTION_FQCN,
            EXCEPTION_CAUSE_FQCN,
            EXCEPTION_MESSAGE,
            EXCEPTION_STACKTRACE,
            KEY_EXCEPTION_FQCN,
            KEY_EXCEPTION_MESSAGE,
            KEY_EXCEPTION_STACKTRACE,
        ];
    };
}

/// Spring's header names (`kafka_dlt-…`).
pub mod names {
    failure_header_names!("kafka_dlt-");

    /// `kafka_dlt-original-consumer-group`: the consumer group that failed to process the
    /// record.
    pub const ORIGINAL_CONSUMER_GROUP: &str = "kafka_dlt-original-consumer-group";

    /// The names Spring's retry topics (`@RetryableTopic`) write instead: the same headers
    /// without `dlt-` (the consumer group keeps `kafka_dlt-original-consumer-group`). Read by
    /// [`DeadLetterInfo::from_headers`](crate::listener::DeadLetterInfo::from_headers) like
    /// the others.
    pub mod retry_topic {
        failure_header_names!("kafka_");
    }
}

/// Where a failed record came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The original topic.
    pub topic: String,
    /// The original partition.
    pub partition: i32,
    /// The original offset.
    pub offset: i64,
    /// The original timestamp (ms since the epoch).
    pub timestamp: i64,
    /// The original timestamp type.
    pub timestamp_type: TimestampType,
    /// The consumer group, when the record was consumed in one.
    pub group: Option<String>,
}

/// How original-* headers are added when the record already carries some (a dead letter that is
/// replayed and fails again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OriginalHeaders {
    /// Append them even if present (Spring's `appendOriginalHeaders = true`, the default).
    #[default]
    Append,
    /// Add them only if absent, keeping the first provenance.
    OnlyIfAbsent,
}

/// What happens to exception headers already on the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PreviousExceptionHeaders {
    /// Remove them before adding the new ones (Spring's default since 2.8).
    #[default]
    Strip,
    /// Keep them; the new ones are appended.
    Keep,
}

type HeadersFn = Arc<dyn Fn(&Provenance, &(dyn StdError + 'static)) -> Vec<Header> + Send + Sync>;

/// Builds dead-letter headers (see the [module docs](self)).
#[derive(Clone, Default)]
pub struct DeadLetterHeaders {
    /// How original-* headers are added. Default: [`OriginalHeaders::Append`].
    pub original_headers: OriginalHeaders,
    /// What happens to earlier exception headers. Default: [`PreviousExceptionHeaders::Strip`].
    pub previous_exception_headers: PreviousExceptionHeaders,
    /// Header names never written (neither standard nor original ones). Default: none.
    pub exclude: Vec<String>,
    extra: Option<HeadersFn>,
}

impl std::fmt::Debug for DeadLetterHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterHeaders")
            .field("original_headers", &self.original_headers)
            .field(
                "previous_exception_headers",
                &self.previous_exception_headers,
            )
            .field("exclude", &self.exclude)
            .field("extra", &self.extra.is_some())
            .finish()
    }
}

/// The class of an error: its type path, never its message (see [`error_class`]).
fn fqcn(e: &(dyn StdError + 'static)) -> String {
    error_class(e)
}

/// The error chain, one `Type: message` per line, `Caused by: ` before each cause.
pub fn error_chain(e: &(dyn StdError + 'static)) -> String {
    let mut out = String::new();
    let mut current = Some(e);
    let mut first = true;
    let mut depth = 0;
    while let Some(err) = current {
        if !first {
            out.push_str("\nCaused by: ");
        }
        first = false;
        out.push_str(&fqcn(err));
        out.push_str(": ");
        out.push_str(&err.to_string());
        current = err.source();
        depth += 1;
        if depth > 64 {
            out.push_str("\n...");
            break;
        }
    }
    out
}

/// The exception headers' values: class, cause class, message, chain (each level formatted
/// once).
pub(crate) fn exception_triple(e: &(dyn StdError + 'static)) -> (Bytes, Bytes, Bytes, Bytes) {
    let class = fqcn(e);
    let message = e.to_string();
    let mut chain = String::with_capacity(class.len() + message.len() + 2);
    chain.push_str(&class);
    chain.push_str(": ");
    chain.push_str(&message);
    let (cause_class, message) = match e.source() {
        Some(cause) => {
            let cause_class = fqcn(cause);
            let cm = cause.to_string();
            chain.push_str("\nCaused by: ");
            chain.push_str(&cause_class);
            chain.push_str(": ");
            chain.push_str(&cm);
            let mut current = cause.source();
            let mut depth = 2;
            while let Some(err) = current {
                if depth > 64 {
                    chain.push_str("\n...");
                    break;
                }
                chain.push_str("\nCaused by: ");
                chain.push_str(&fqcn(err));
                chain.push_str(": ");
                chain.push_str(&err.to_string());
                current = err.source();
                depth += 1;
            }
            let full = if cm != message && !message.contains(&cm) {
                format!("{message}; {cm}")
            } else {
                message
            };
            (Bytes::from(cause_class), full)
        }
        None => (Bytes::new(), message),
    };
    let class = Bytes::from(class);
    // Spring names the exception itself as the cause when it has none.
    let cause_class = if cause_class.is_empty() {
        class.clone()
    } else {
        cause_class
    };
    (class, cause_class, Bytes::from(message), Bytes::from(chain))
}

impl DeadLetterHeaders {
    /// Adds headers computed by `f` after the standard ones (Spring's `addHeadersFunction`).
    pub fn with_headers_fn(
        mut self,
        f: impl Fn(&Provenance, &(dyn StdError + 'static)) -> Vec<Header> + Send + Sync + 'static,
    ) -> Self {
        self.extra = Some(Arc::new(f));
        self
    }

    /// The headers of the dead letter for a record with `original` headers that failed with
    /// `error`. `failed_part` is `Some(RecordPart::Key)` when the key failed to deserialize
    /// (the exception headers then use the `kafka_dlt-key-exception-*` names).
    pub fn build(
        &self,
        original: &[Header],
        provenance: &Provenance,
        error: &(dyn StdError + 'static),
        failed_part: Option<RecordPart>,
    ) -> Vec<Header> {
        let excluded = |name: &str| self.exclude.iter().any(|x| x == name);
        let mut out: Vec<Header> = Vec::with_capacity(original.len() + 11);
        out.extend(
            original
                .iter()
                .filter(|h| {
                    !(self.previous_exception_headers == PreviousExceptionHeaders::Strip
                        && names::EXCEPTION_HEADERS.contains(&h.key()))
                })
                .filter(|h| !excluded(h.key()))
                .cloned(),
        );
        let add = |out: &mut Vec<Header>, name: &'static str, value: Bytes, original: bool| {
            if excluded(name) {
                return;
            }
            if original
                && self.original_headers == OriginalHeaders::OnlyIfAbsent
                && out.iter().any(|h| h.key() == name)
            {
                return;
            }
            out.push(Header::from_static(name, Some(value)));
        };
        let (class, cause, message, chain) = exception_triple(error);
        if failed_part == Some(RecordPart::Key) {
            // The value failed too: its headers follow the key's (Spring's
            // `ErrorHandlingDeserializer` reports both).
            let value_failure = super::dead_letter_publisher::deserialization_failure(error)
                .and_then(|d| d.value_failure.clone())
                .map(|message| DeserializationFailed {
                    part: RecordPart::Value,
                    message,
                    value_failure: None,
                });
            add(&mut out, names::KEY_EXCEPTION_FQCN, class, false);
            if value_failure.is_none() {
                // Spring has no key variant of the cause header: the key failure's cause is
                // written under the value's name.
                add(&mut out, names::EXCEPTION_CAUSE_FQCN, cause, false);
            }
            add(&mut out, names::KEY_EXCEPTION_MESSAGE, message, false);
            add(&mut out, names::KEY_EXCEPTION_STACKTRACE, chain, false);
            if let Some(v) = &value_failure {
                let (class, cause, message, chain) = exception_triple(v);
                add(&mut out, names::EXCEPTION_FQCN, class, false);
                add(&mut out, names::EXCEPTION_CAUSE_FQCN, cause, false);
                add(&mut out, names::EXCEPTION_MESSAGE, message, false);
                add(&mut out, names::EXCEPTION_STACKTRACE, chain, false);
            }
        } else {
            add(&mut out, names::EXCEPTION_FQCN, class, false);
            add(&mut out, names::EXCEPTION_CAUSE_FQCN, cause, false);
            add(&mut out, names::EXCEPTION_MESSAGE, message, false);
            add(&mut out, names::EXCEPTION_STACKTRACE, chain, false);
        }
        let p = provenance;
        add(
            &mut out,
            names::ORIGINAL_TOPIC,
            Bytes::from(p.topic.clone()),
            true,
        );
        add(
            &mut out,
            names::ORIGINAL_PARTITION,
            Bytes::copy_from_slice(&p.partition.to_be_bytes()),
            true,
        );
        add(
            &mut out,
            names::ORIGINAL_OFFSET,
            Bytes::copy_from_slice(&p.offset.to_be_bytes()),
            true,
        );
        add(
            &mut out,
            names::ORIGINAL_TIMESTAMP,
            Bytes::copy_from_slice(&p.timestamp.to_be_bytes()),
            true,
        );
        let ts_type = match p.timestamp_type {
            TimestampType::LogAppendTime => "LogAppendTime",
            _ => "CreateTime",
        };
        add(
            &mut out,
            names::ORIGINAL_TIMESTAMP_TYPE,
            Bytes::from_static(ts_type.as_bytes()),
            true,
        );
        if let Some(group) = &p.group {
            add(
                &mut out,
                names::ORIGINAL_CONSUMER_GROUP,
                Bytes::from(group.clone()),
                true,
            );
        }
        if let Some(f) = &self.extra {
            out.extend(
                f(provenance, error)
                    .into_iter()
                    .filter(|h| !excluded(h.key())),
            );
        }
        out
    }
}

/// The provenance and exception headers of a dead letter, decoded (the last occurrence of each
/// header wins, as Spring reads them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterInfo {
    /// `kafka_dlt-original-topic`.
    pub original_topic: Option<String>,
    /// `kafka_dlt-original-partition`.
    pub original_partition: Option<i32>,
    /// `kafka_dlt-original-offset`.
    pub original_offset: Option<i64>,
    /// `kafka_dlt-original-timestamp`.
    pub original_timestamp: Option<i64>,
    /// `kafka_dlt-original-timestamp-type`.
    pub original_timestamp_type: Option<String>,
    /// `kafka_dlt-original-consumer-group`.
    pub original_consumer_group: Option<String>,
    /// `kafka_dlt-exception-fqcn` (or the key variant).
    pub exception_fqcn: Option<String>,
    /// `kafka_dlt-exception-cause-fqcn`.
    pub exception_cause_fqcn: Option<String>,
    /// `kafka_dlt-exception-message` (or the key variant).
    pub exception_message: Option<String>,
    /// `kafka_dlt-exception-stacktrace` (or the key variant).
    pub exception_stacktrace: Option<String>,
    /// Whether the key (rather than the value or the handler) failed.
    pub key_failure: bool,
}

fn be<const N: usize>(v: &[u8]) -> Option<[u8; N]> {
    v.try_into().ok()
}

impl DeadLetterInfo {
    /// Decodes the dead-letter headers among `headers`; headers with a wrong length or invalid
    /// UTF-8 are left as `None`.
    pub fn from_headers<'a>(headers: impl IntoIterator<Item = &'a Header>) -> DeadLetterInfo {
        let mut info = DeadLetterInfo::default();
        let text = |v: &[u8]| std::str::from_utf8(v).ok().map(str::to_owned);
        for h in headers {
            let Some(v) = h.value() else { continue };
            use names::retry_topic as rt;
            match h.key() {
                names::ORIGINAL_TOPIC | rt::ORIGINAL_TOPIC => info.original_topic = text(v),
                names::ORIGINAL_PARTITION | rt::ORIGINAL_PARTITION => {
                    info.original_partition = be::<4>(v).map(i32::from_be_bytes)
                }
                names::ORIGINAL_OFFSET | rt::ORIGINAL_OFFSET => {
                    info.original_offset = be::<8>(v).map(i64::from_be_bytes)
                }
                names::ORIGINAL_TIMESTAMP | rt::ORIGINAL_TIMESTAMP => {
                    info.original_timestamp = be::<8>(v).map(i64::from_be_bytes)
                }
                names::ORIGINAL_TIMESTAMP_TYPE | rt::ORIGINAL_TIMESTAMP_TYPE => {
                    info.original_timestamp_type = text(v)
                }
                names::ORIGINAL_CONSUMER_GROUP => info.original_consumer_group = text(v),
                names::EXCEPTION_FQCN | rt::EXCEPTION_FQCN => info.exception_fqcn = text(v),
                names::EXCEPTION_CAUSE_FQCN | rt::EXCEPTION_CAUSE_FQCN => {
                    info.exception_cause_fqcn = text(v)
                }
                names::EXCEPTION_MESSAGE | rt::EXCEPTION_MESSAGE => {
                    info.exception_message = text(v)
                }
                names::EXCEPTION_STACKTRACE | rt::EXCEPTION_STACKTRACE => {
                    info.exception_stacktrace = text(v)
                }
                names::KEY_EXCEPTION_FQCN | rt::KEY_EXCEPTION_FQCN => {
                    info.key_failure = true;
                    info.exception_fqcn = text(v);
                }
                names::KEY_EXCEPTION_MESSAGE | rt::KEY_EXCEPTION_MESSAGE => {
                    info.exception_message = text(v)
                }
                names::KEY_EXCEPTION_STACKTRACE | rt::KEY_EXCEPTION_STACKTRACE => {
                    info.exception_stacktrace = text(v)
                }
                _ => {}
            }
        }
        info
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("db down")]
    struct DbDown;

    #[derive(Debug, thiserror::Error)]
    #[error("saving order failed")]
    struct SaveFailed(#[source] DbDown);

    fn prov() -> Provenance {
        Provenance {
            topic: "orders".into(),
            partition: 3,
            offset: 0x0102_0304_0506,
            timestamp: 1_700_000_000_123,
            timestamp_type: TimestampType::LogAppendTime,
            group: Some("g1".into()),
        }
    }

    fn get<'a>(hs: &'a [Header], name: &str) -> Vec<&'a [u8]> {
        hs.iter()
            .filter(|h| h.key() == name)
            .filter_map(|h| h.value())
            .collect()
    }

    #[test]
    fn spring_encodings() {
        let hs = DeadLetterHeaders::default().build(&[], &prov(), &SaveFailed(DbDown), None);
        assert_eq!(get(&hs, names::ORIGINAL_TOPIC), [b"orders".as_slice()]);
        assert_eq!(
            get(&hs, names::ORIGINAL_PARTITION),
            [[0, 0, 0, 3].as_slice()]
        );
        assert_eq!(
            get(&hs, names::ORIGINAL_OFFSET),
            [[0, 0, 1, 2, 3, 4, 5, 6].as_slice()]
        );
        assert_eq!(
            get(&hs, names::ORIGINAL_TIMESTAMP),
            [1_700_000_000_123i64.to_be_bytes().as_slice()]
        );
        assert_eq!(
            get(&hs, names::ORIGINAL_TIMESTAMP_TYPE),
            [b"LogAppendTime".as_slice()]
        );
        assert_eq!(get(&hs, names::ORIGINAL_CONSUMER_GROUP), [b"g1".as_slice()]);
        assert_eq!(get(&hs, names::EXCEPTION_FQCN), [b"SaveFailed".as_slice()]);
        assert_eq!(
            get(&hs, names::EXCEPTION_CAUSE_FQCN),
            [b"DbDown".as_slice()]
        );
        assert_eq!(
            get(&hs, names::EXCEPTION_MESSAGE),
            [b"saving order failed; db down".as_slice()]
        );
        assert_eq!(
            get(&hs, names::EXCEPTION_STACKTRACE),
            [b"SaveFailed: saving order failed\nCaused by: DbDown: db down".as_slice()]
        );
        let info = DeadLetterInfo::from_headers(&hs);
        assert_eq!(info.original_partition, Some(3));
        assert_eq!(info.original_offset, Some(0x0102_0304_0506));
        assert_eq!(
            info.original_timestamp_type.as_deref(),
            Some("LogAppendTime")
        );
        assert!(!info.key_failure);
    }

    #[test]
    fn strips_previous_exception_headers_and_appends_originals() {
        let first = DeadLetterHeaders::default().build(&[], &prov(), &DbDown, None);
        let mut p2 = prov();
        p2.topic = "orders-dlt".into();
        let second = DeadLetterHeaders::default().build(&first, &p2, &SaveFailed(DbDown), None);
        assert_eq!(
            get(&second, names::EXCEPTION_FQCN),
            [b"SaveFailed".as_slice()]
        );
        assert_eq!(
            get(&second, names::ORIGINAL_TOPIC),
            [b"orders".as_slice(), b"orders-dlt".as_slice()]
        );
        // Last one wins when read back.
        assert_eq!(
            DeadLetterInfo::from_headers(&second)
                .original_topic
                .as_deref(),
            Some("orders-dlt")
        );
        let keep = DeadLetterHeaders {
            original_headers: OriginalHeaders::OnlyIfAbsent,
            previous_exception_headers: PreviousExceptionHeaders::Keep,
            ..Default::default()
        };
        let third = keep.build(&first, &p2, &SaveFailed(DbDown), None);
        assert_eq!(get(&third, names::ORIGINAL_TOPIC), [b"orders".as_slice()]);
        assert_eq!(get(&third, names::EXCEPTION_FQCN).len(), 2);
    }

    #[test]
    fn key_failures_exclusions_and_extra_headers() {
        let b = DeadLetterHeaders {
            exclude: vec![names::EXCEPTION_STACKTRACE.into(), "secret".into()],
            ..Default::default()
        }
        .with_headers_fn(|p, _| vec![Header::new("dlt-by", Some(Bytes::from(p.topic.clone())))]);
        let original = vec![
            Header::new("secret", Some(&b"x"[..])),
            Header::new("dup", None::<Bytes>),
            Header::new("dup", Some(&b"2"[..])),
        ];
        let hs = b.build(&original, &prov(), &DbDown, Some(RecordPart::Key));
        assert!(get(&hs, "secret").is_empty());
        assert_eq!(hs.iter().filter(|h| h.key() == "dup").count(), 2);
        assert_eq!(get(&hs, names::KEY_EXCEPTION_FQCN), [b"DbDown".as_slice()]);
        assert!(get(&hs, names::EXCEPTION_FQCN).is_empty());
        assert_eq!(get(&hs, "dlt-by"), [b"orders".as_slice()]);
        let info = DeadLetterInfo::from_headers(&hs);
        assert!(info.key_failure);
        assert_eq!(info.exception_fqcn.as_deref(), Some("DbDown"));
    }

    #[test]
    fn decode_tolerates_bad_lengths() {
        let hs = vec![
            Header::new(names::ORIGINAL_OFFSET, Some(&[1u8, 2][..])),
            Header::new(names::ORIGINAL_PARTITION, None::<Bytes>),
            Header::new(names::ORIGINAL_TOPIC, Some(&[0xffu8, 0xfe][..])),
        ];
        let info = DeadLetterInfo::from_headers(&hs);
        assert_eq!(info, DeadLetterInfo::default());
    }
}

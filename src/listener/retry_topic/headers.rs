//! Spring's retry-topic headers: names, encodings, and the headers of a forwarded record.
//!
//! Spring for Apache Kafka 4.1 (`DeadLetterPublishingRecovererFactory`) writes, on every record
//! it forwards to a retry topic or the DLT (appending the three `retry_topic-*` headers after
//! those of the earlier forwards, which stay unless `retainAllRetryHeaderValues` is off;
//! readers take the last of each):
//!
//! * `retry_topic-attempts`: the attempt the record is on next, a 4-byte big-endian `int`
//!   (read back also from the 1-byte form older versions wrote; anything else counts as 1);
//! * `retry_topic-backoff-timestamp`: when the record is due (ms since the epoch), as
//!   `BigInteger.toByteArray()`: the shortest two's-complement big-endian form (6 bytes for
//!   today's timestamps), read back from any length up to 8;
//! * `retry_topic-original-timestamp`: the timestamp of the record when it first failed, same
//!   encoding, copied unchanged once present;
//! * `kafka_original-topic` / `-partition` (4-byte int) / `-offset` (8-byte long) /
//!   `-timestamp` (8-byte long) / `-timestamp-type` and `kafka_dlt-original-consumer-group`:
//!   the first failure's provenance, written only when absent (Spring's factory sets
//!   `appendOriginalHeaders = false`), so they stay those of the first failure;
//! * `kafka_exception-fqcn` / `-cause-fqcn` / `-message` / `-stacktrace`: the last failure's
//!   error (earlier ones are stripped).

use std::error::Error as StdError;

use bytes::Bytes;

use crate::listener::ListenerRecord;
use crate::listener::dead_letter::exception_triple;
use crate::protocol::record::{Header, TimestampType};

/// `retry_topic-attempts`.
pub const ATTEMPTS: &str = "retry_topic-attempts";
/// `retry_topic-backoff-timestamp`.
pub const BACKOFF_TIMESTAMP: &str = "retry_topic-backoff-timestamp";
/// `retry_topic-original-timestamp`.
pub const ORIGINAL_TIMESTAMP: &str = "retry_topic-original-timestamp";
/// `kafka_original-topic`.
pub const KAFKA_ORIGINAL_TOPIC: &str = "kafka_original-topic";
/// `kafka_original-partition` (4-byte big-endian).
pub const KAFKA_ORIGINAL_PARTITION: &str = "kafka_original-partition";
/// `kafka_original-offset` (8-byte big-endian).
pub const KAFKA_ORIGINAL_OFFSET: &str = "kafka_original-offset";
/// `kafka_original-timestamp` (8-byte big-endian).
pub const KAFKA_ORIGINAL_TIMESTAMP: &str = "kafka_original-timestamp";
/// `kafka_original-timestamp-type`.
pub const KAFKA_ORIGINAL_TIMESTAMP_TYPE: &str = "kafka_original-timestamp-type";
/// `kafka_dlt-original-consumer-group`.
pub const KAFKA_ORIGINAL_CONSUMER_GROUP: &str = "kafka_dlt-original-consumer-group";
/// `kafka_exception-fqcn`.
pub const KAFKA_EXCEPTION_FQCN: &str = "kafka_exception-fqcn";
/// `kafka_exception-cause-fqcn`.
pub const KAFKA_EXCEPTION_CAUSE_FQCN: &str = "kafka_exception-cause-fqcn";
/// `kafka_exception-message`.
pub const KAFKA_EXCEPTION_MESSAGE: &str = "kafka_exception-message";
/// `kafka_exception-stacktrace`.
pub const KAFKA_EXCEPTION_STACKTRACE: &str = "kafka_exception-stacktrace";

/// The exception headers a forward replaces (the key variants too, as Spring strips them).
const EXCEPTION_HEADERS: [&str; 7] = [
    KAFKA_EXCEPTION_FQCN,
    KAFKA_EXCEPTION_CAUSE_FQCN,
    KAFKA_EXCEPTION_MESSAGE,
    KAFKA_EXCEPTION_STACKTRACE,
    "kafka_key-exception-fqcn",
    "kafka_key-exception-message",
    "kafka_key-exception-stacktrace",
];

/// A `long` as Java's `BigInteger.valueOf(v).toByteArray()`: the shortest big-endian
/// two's-complement form.
pub fn encode_big_integer(v: i64) -> Bytes {
    let full = v.to_be_bytes();
    let mut start = 0;
    while start < 7 {
        let (b, next) = (full[start], full[start + 1]);
        // A leading byte is redundant when it only repeats the sign of the next one.
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    Bytes::copy_from_slice(&full[start..])
}

/// Java's `new BigInteger(bytes).longValue()` for 1 to 8 bytes (sign-extended); `None` for
/// anything else.
pub fn decode_big_integer(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xff } else { 0x00 };
    let mut full = [fill; 8];
    full[8 - bytes.len()..].copy_from_slice(bytes);
    Some(i64::from_be_bytes(full))
}

fn last<'a>(headers: &'a [Header], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .rev()
        .find(|h| h.key() == name)
        .and_then(|h| h.value())
}

/// The attempt a record is on, from its `retry_topic-attempts` header, as Spring reads it: a
/// 4-byte (or legacy 1-byte) big-endian value in `1..=32767`; anything else (or no header: a
/// record on its main topic) is attempt 1.
pub fn attempts(headers: &[Header]) -> u32 {
    let n = match last(headers, ATTEMPTS) {
        Some([b]) => i32::from(*b),
        Some(b) if b.len() == 4 => i32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        _ => 1,
    };
    if (1..=32767).contains(&n) {
        n.unsigned_abs()
    } else {
        1
    }
}

/// When a record is due, from its `retry_topic-backoff-timestamp` header (ms since the epoch);
/// `None` without a (readable) header.
pub fn backoff_timestamp(headers: &[Header]) -> Option<i64> {
    last(headers, BACKOFF_TIMESTAMP).and_then(decode_big_integer)
}

/// The timestamp the record had when it first failed, from `retry_topic-original-timestamp`;
/// `None` without a (readable) header.
pub fn original_timestamp(headers: &[Header]) -> Option<i64> {
    last(headers, ORIGINAL_TIMESTAMP).and_then(decode_big_integer)
}

/// The headers of `record`, which failed with `error` on attempt `attempt`, forwarded to the
/// next topic, due at `due` (ms since the epoch). `retain_all`: the earlier forwards'
/// `retry_topic-*` headers stay (Spring's default), else they are replaced.
pub(crate) fn forward_headers<R: ListenerRecord>(
    record: &R,
    error: &(dyn StdError + 'static),
    attempt: u32,
    due: i64,
    group: Option<&str>,
    retain_all: bool,
) -> Vec<Header> {
    let original = record.headers();
    let original_ts = last(&original, ORIGINAL_TIMESTAMP)
        .filter(|b| !b.is_empty() && b.len() <= 8)
        .map(Bytes::copy_from_slice)
        .unwrap_or_else(|| encode_big_integer(record.timestamp()));
    let present = |name: &str| original.iter().any(|h| h.key() == name);
    let mut out: Vec<Header> = Vec::with_capacity(original.len() + 14);
    let mut provenance: Vec<Header> = Vec::new();
    if !present(KAFKA_ORIGINAL_TOPIC) {
        provenance.push(Header::from_static(
            KAFKA_ORIGINAL_TOPIC,
            Some(Bytes::from(record.topic().to_owned())),
        ));
    }
    if !present(KAFKA_ORIGINAL_PARTITION) {
        provenance.push(Header::from_static(
            KAFKA_ORIGINAL_PARTITION,
            Some(Bytes::copy_from_slice(&record.partition().to_be_bytes())),
        ));
    }
    if !present(KAFKA_ORIGINAL_OFFSET) {
        provenance.push(Header::from_static(
            KAFKA_ORIGINAL_OFFSET,
            Some(Bytes::copy_from_slice(&record.offset().to_be_bytes())),
        ));
    }
    if !present(KAFKA_ORIGINAL_TIMESTAMP) {
        provenance.push(Header::from_static(
            KAFKA_ORIGINAL_TIMESTAMP,
            Some(Bytes::copy_from_slice(&record.timestamp().to_be_bytes())),
        ));
    }
    if !present(KAFKA_ORIGINAL_TIMESTAMP_TYPE) {
        let ts_type = match record.timestamp_type() {
            TimestampType::LogAppendTime => "LogAppendTime",
            _ => "CreateTime",
        };
        provenance.push(Header::from_static(
            KAFKA_ORIGINAL_TIMESTAMP_TYPE,
            Some(Bytes::from_static(ts_type.as_bytes())),
        ));
    }
    if let Some(group) = group.filter(|_| !present(KAFKA_ORIGINAL_CONSUMER_GROUP)) {
        provenance.push(Header::from_static(
            KAFKA_ORIGINAL_CONSUMER_GROUP,
            Some(Bytes::from(group.to_owned())),
        ));
    }
    out.extend(original.into_iter().filter(|h| {
        !EXCEPTION_HEADERS.contains(&h.key())
            && (retain_all
                || (h.key() != ATTEMPTS
                    && h.key() != BACKOFF_TIMESTAMP
                    && h.key() != ORIGINAL_TIMESTAMP))
    }));
    let (class, cause, message, chain) = exception_triple(error);
    out.push(Header::from_static(KAFKA_EXCEPTION_FQCN, Some(class)));
    out.push(Header::from_static(KAFKA_EXCEPTION_CAUSE_FQCN, Some(cause)));
    out.push(Header::from_static(KAFKA_EXCEPTION_MESSAGE, Some(message)));
    out.push(Header::from_static(KAFKA_EXCEPTION_STACKTRACE, Some(chain)));
    out.extend(provenance);
    out.push(Header::from_static(ORIGINAL_TIMESTAMP, Some(original_ts)));
    let next = i32::try_from(attempt.saturating_add(1)).unwrap_or(i32::MAX);
    out.push(Header::from_static(
        ATTEMPTS,
        Some(Bytes::copy_from_slice(&next.to_be_bytes())),
    ));
    out.push(Header::from_static(
        BACKOFF_TIMESTAMP,
        Some(encode_big_integer(due)),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::DeserializationFailed;

    /// A record on a retry topic, with these headers.
    #[derive(Debug, Clone)]
    struct Rec(Vec<Header>);

    impl ListenerRecord for Rec {
        fn topic(&self) -> &str {
            "orders-retry"
        }
        fn partition(&self) -> i32 {
            1
        }
        fn offset(&self) -> i64 {
            7
        }
        fn timestamp(&self) -> i64 {
            1_700_000_000_500
        }
        fn timestamp_type(&self) -> TimestampType {
            TimestampType::CreateTime
        }
        fn key(&self) -> Option<&Bytes> {
            None
        }
        fn value(&self) -> Option<&Bytes> {
            None
        }
        fn headers(&self) -> Vec<Header> {
            self.0.clone()
        }
        fn with_header(&self, header: Header) -> Self {
            let mut hs = self.0.clone();
            hs.push(header);
            Rec(hs)
        }
        fn deserialization_failure(&self) -> Option<DeserializationFailed> {
            None
        }
        fn with_deserialization_failure(&self, _failure: DeserializationFailed) -> Self {
            self.clone()
        }
    }

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    #[test]
    fn forwards_append_retry_headers_as_spring_unless_told_to_keep_the_latest() {
        // A record Spring (or rekafka) forwarded once: attempt 2, first failure on the main
        // topic at 1_700_000_000_000.
        let first = Rec(vec![
            Header::new("trace", Some(Bytes::from_static(b"t"))),
            Header::new(
                ORIGINAL_TIMESTAMP,
                Some(encode_big_integer(1_700_000_000_000)),
            ),
            Header::new(ATTEMPTS, Some(Bytes::copy_from_slice(&2_i32.to_be_bytes()))),
            Header::new(
                BACKOFF_TIMESTAMP,
                Some(encode_big_integer(1_800_000_000_000)),
            ),
            Header::new(KAFKA_EXCEPTION_MESSAGE, Some(Bytes::from_static(b"old"))),
        ]);
        let names = |hs: &[Header]| hs.iter().map(|h| h.key().to_owned()).collect::<Vec<_>>();
        let all = forward_headers(&first, &Boom, 2, 1_800_000_001_000, None, true);
        let retry = [ORIGINAL_TIMESTAMP, ATTEMPTS, BACKOFF_TIMESTAMP];
        // Spring's order: the record's headers without the old exception, the new exception,
        // the (missing) provenance, then this forward's retry headers.
        let got = names(&all);
        assert_eq!(got[..4], ["trace", retry[0], retry[1], retry[2]]);
        assert_eq!(got[got.len() - 3..], retry);
        assert_eq!(
            got.iter().filter(|n| *n == KAFKA_EXCEPTION_MESSAGE).count(),
            1
        );
        assert_eq!(attempts(&all), 3);
        assert_eq!(backoff_timestamp(&all), Some(1_800_000_001_000));
        assert_eq!(original_timestamp(&all), Some(1_700_000_000_000));
        let attempt_values: Vec<i32> = all
            .iter()
            .filter(|h| h.key() == ATTEMPTS)
            .filter_map(|h| Some(i32::from_be_bytes(h.value()?.try_into().ok()?)))
            .collect();
        assert_eq!(attempt_values, [2, 3]);
        // retainAllRetryHeaderValues = false: one of each, the latest.
        let latest = forward_headers(&first, &Boom, 2, 1_800_000_001_000, None, false);
        for name in retry {
            assert_eq!(
                latest.iter().filter(|h| h.key() == name).count(),
                1,
                "{name}"
            );
        }
        assert_eq!(attempts(&latest), 3);
        assert_eq!(original_timestamp(&latest), Some(1_700_000_000_000));
    }

    #[test]
    fn big_integer_round_trips_like_java() {
        // BigInteger.valueOf(v).toByteArray() for these values.
        assert_eq!(&encode_big_integer(0)[..], &[0]);
        assert_eq!(&encode_big_integer(127)[..], &[0x7f]);
        assert_eq!(&encode_big_integer(128)[..], &[0x00, 0x80]);
        assert_eq!(&encode_big_integer(-1)[..], &[0xff]);
        assert_eq!(&encode_big_integer(-129)[..], &[0xff, 0x7f]);
        let ts = 1_765_000_000_000_i64;
        assert_eq!(encode_big_integer(ts).len(), 6);
        for v in [0, 1, -1, 127, 128, -128, -129, ts, i64::MAX, i64::MIN] {
            assert_eq!(decode_big_integer(&encode_big_integer(v)), Some(v), "{v}");
        }
        assert_eq!(decode_big_integer(&[]), None);
        assert_eq!(decode_big_integer(&[0; 9]), None);
    }

    #[test]
    fn attempts_read_as_spring_reads_them() {
        let h = |v: &[u8]| vec![Header::new(ATTEMPTS, Some(Bytes::copy_from_slice(v)))];
        assert_eq!(attempts(&[]), 1);
        assert_eq!(attempts(&h(&[3])), 3);
        assert_eq!(attempts(&h(&4_i32.to_be_bytes())), 4);
        assert_eq!(attempts(&h(&[0, 0])), 1);
        assert_eq!(attempts(&h(&0_i32.to_be_bytes())), 1);
        assert_eq!(attempts(&h(&40_000_i32.to_be_bytes())), 1);
        // The last header wins.
        let mut two = h(&[2]);
        two.extend(h(&5_i32.to_be_bytes()));
        assert_eq!(attempts(&two), 5);
    }
}

//! What the application hands the producer, and what it gets back.

use bytes::Bytes;

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::record::Header;

/// One record to send.
///
/// ```
/// use rekafka::producer::Record;
/// let r = Record::new("orders")
///     .with_key("customer-7")
///     .with_value(r#"{"total":12}"#)
///     .with_header("source", Some("web"))
///     .with_header("source", Some("retry")) // duplicates are kept
///     .with_header("trace", None::<&[u8]>); // null values too
/// assert_eq!(r.headers.len(), 3);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// The topic (an `Arc<str>` so that sending many records to one topic copies no string).
    pub topic: std::sync::Arc<str>,
    /// The partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    /// The key; `None` is a null key.
    pub key: Option<Bytes>,
    /// The value; `None` is a null value (a tombstone on compacted topics).
    pub value: Option<Bytes>,
    /// The headers, in order; duplicate keys and null values are allowed.
    pub headers: Vec<Header>,
    /// The timestamp (ms since the epoch); `None` uses the time of `send`.
    pub timestamp: Option<i64>,
}

impl Record {
    /// A record for `topic` with no key, value or headers. Pass an `Arc<str>` you keep to
    /// avoid copying the topic name per record.
    pub fn new(topic: impl Into<std::sync::Arc<str>>) -> Record {
        Record {
            topic: topic.into(),
            partition: None,
            key: None,
            value: None,
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Record {
        self.key = Some(key.into());
        self
    }

    /// Sets the value.
    pub fn with_value(mut self, value: impl Into<Bytes>) -> Record {
        self.value = Some(value.into());
        self
    }

    /// Sets the partition.
    pub fn with_partition(mut self, partition: i32) -> Record {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp (ms since the epoch).
    pub fn with_timestamp(mut self, timestamp: i64) -> Record {
        self.timestamp = Some(timestamp);
        self
    }

    /// Appends a header (`None` is a null value).
    pub fn with_header(
        mut self,
        key: impl Into<String>,
        value: Option<impl Into<Bytes>>,
    ) -> Record {
        self.headers.push(Header::new(key, value));
        self
    }

    /// Sets the key from `key` through `serializer`.
    pub fn with_serialized_key<T: ?Sized, S: Serializer<T>>(
        mut self,
        serializer: &S,
        key: &T,
    ) -> Result<Record> {
        self.key = serializer.serialize(&self.topic, key)?;
        Ok(self)
    }

    /// Sets the value from `value` through `serializer`.
    pub fn with_serialized_value<T: ?Sized, S: Serializer<T>>(
        mut self,
        serializer: &S,
        value: &T,
    ) -> Result<Record> {
        self.value = serializer.serialize(&self.topic, value)?;
        Ok(self)
    }
}

/// Turns an application value into record bytes.
pub trait Serializer<T: ?Sized> {
    /// The bytes for `value` in `topic`; `None` is a null key or value.
    fn serialize(&self, topic: &str, value: &T) -> Result<Option<Bytes>>;
}

/// Bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesSerializer;

impl Serializer<[u8]> for BytesSerializer {
    fn serialize(&self, _topic: &str, value: &[u8]) -> Result<Option<Bytes>> {
        Ok(Some(Bytes::copy_from_slice(value)))
    }
}

impl Serializer<Bytes> for BytesSerializer {
    fn serialize(&self, _topic: &str, value: &Bytes) -> Result<Option<Bytes>> {
        Ok(Some(value.clone()))
    }
}

/// Strings as UTF-8.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringSerializer;

impl Serializer<str> for StringSerializer {
    fn serialize(&self, _topic: &str, value: &str) -> Result<Option<Bytes>> {
        Ok(Some(Bytes::copy_from_slice(value.as_bytes())))
    }
}

impl Serializer<String> for StringSerializer {
    fn serialize(&self, _topic: &str, value: &String) -> Result<Option<Bytes>> {
        Ok(Some(Bytes::copy_from_slice(value.as_bytes())))
    }
}

/// Any `serde::Serialize` value as JSON (feature `json`).
#[cfg(feature = "json")]
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonSerializer;

#[cfg(feature = "json")]
impl<T: serde::Serialize + ?Sized> Serializer<T> for JsonSerializer {
    fn serialize(&self, _topic: &str, value: &T) -> Result<Option<Bytes>> {
        serde_json::to_vec(value)
            .map(|v| Some(Bytes::from(v)))
            .map_err(|e| {
                Error::with_message(ErrorKind::Encode, "JSON serialization failed").with_source(e)
            })
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecordMetadata {
    /// The topic.
    pub topic: std::sync::Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset; -1 when unknown (acks=0, or a retried batch the broker reported as a
    /// duplicate of one it already had without saying where).
    pub offset: i64,
    /// The record's timestamp: its create time, or the broker's log-append time if the topic
    /// uses `LogAppendTime`.
    pub timestamp: i64,
}

/// Whether a record that failed may still have been written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Persistence {
    /// The record was certainly not written (it was never sent, or the broker rejected it).
    NotPersisted,
    /// The record may have been written: a request carrying it got no definite answer (a
    /// timeout or a lost connection) before the producer gave up. A consumer may see it once.
    PossiblyPersisted,
}

/// Why a record was not delivered.
///
/// ```
/// use rekafka::producer::{Persistence, ProduceError};
/// use rekafka::{Error, ErrorKind};
/// let e = ProduceError::new(Error::new(ErrorKind::Timeout), Persistence::PossiblyPersisted);
/// assert!(e.is_possibly_persisted());
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error} ({persistence:?})")]
#[non_exhaustive]
pub struct ProduceError {
    /// The cause.
    pub error: Error,
    /// Whether the record may have been written nonetheless.
    pub persistence: Persistence,
}

impl ProduceError {
    /// A failure with the given cause and persistence.
    pub fn new(error: Error, persistence: Persistence) -> ProduceError {
        ProduceError { error, persistence }
    }

    /// A failure of a record that was certainly not written.
    pub fn not_persisted(error: Error) -> ProduceError {
        ProduceError::new(error, Persistence::NotPersisted)
    }

    /// Whether the record may have been written nonetheless.
    pub fn is_possibly_persisted(&self) -> bool {
        self.persistence == Persistence::PossiblyPersisted
    }

    /// The error kind of the cause.
    pub fn kind(&self) -> &ErrorKind {
        self.error.kind()
    }

    /// Whether the producer can no longer be used (every later send fails the same way).
    pub fn is_fatal(&self) -> bool {
        self.error.is_fatal()
    }
}

impl From<ProduceError> for Error {
    fn from(e: ProduceError) -> Error {
        e.error
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializers() {
        assert_eq!(
            StringSerializer.serialize("t", "hé").unwrap().as_deref(),
            Some("hé".as_bytes())
        );
        assert_eq!(
            BytesSerializer
                .serialize("t", &b"\x00\x01"[..])
                .unwrap()
                .as_deref(),
            Some(&b"\x00\x01"[..])
        );
        let r = Record::new("t")
            .with_serialized_key(&StringSerializer, "k")
            .unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"k"[..]));
    }

    #[cfg(feature = "json")]
    #[test]
    fn json() {
        let v = JsonSerializer
            .serialize("t", &std::collections::BTreeMap::from([("a", 1)]))
            .unwrap();
        assert_eq!(v.as_deref(), Some(&br#"{"a":1}"#[..]));
    }
}

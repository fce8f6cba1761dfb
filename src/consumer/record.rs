//! Records as the application receives them, and deserialization.

use std::sync::Arc;

use bytes::Bytes;

use crate::group::TopicPartition;
use crate::protocol::record::{Headers, TimestampType};
use crate::{Error, ErrorKind};

/// One record handed to the application. Key, value and headers are zero-copy slices of the
/// fetch response (or of the decompressed batch).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerRecord {
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
    /// The value; `None` for a null value (a tombstone).
    pub value: Option<Bytes>,
    /// The headers in wire order.
    pub headers: Headers,
    /// The leader epoch of the batch, if the producer's broker set one.
    pub leader_epoch: Option<i32>,
}

impl ConsumerRecord {
    /// The record's topic partition.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition {
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }

    /// Deserializes key and value. Never fails: a failure is a [`Deserialized::Failed`] value
    /// carrying the raw record, so the application can skip, dead-letter or retry it. Its
    /// error is of kind [`ErrorKind::Deserialization`] and names the part and the record
    /// (`deserialization failed: value of orders-3@42: not valid UTF-8`), with the
    /// deserializer's error as its source.
    pub fn deserialize<K: Deserializer, V: Deserializer>(
        &self,
        key: &K,
        value: &V,
    ) -> Deserialized<K::Output, V::Output> {
        match self.deserialize_parts(key, value) {
            Ok((key, value)) => Deserialized::Ok { key, value },
            Err((error, is_key)) => Deserialized::Failed {
                record: self.clone(),
                error: Error::with_message(
                    ErrorKind::Deserialization,
                    format!(
                        "{} of {}: {}",
                        if is_key { "key" } else { "value" },
                        self.coordinates(),
                        failure_detail(&error)
                    ),
                )
                .with_source(error),
                is_key,
            },
        }
    }

    /// Key and value, or the deserializer's own error and whether the key failed.
    pub(crate) fn deserialize_parts<K: Deserializer, V: Deserializer>(
        &self,
        key: &K,
        value: &V,
    ) -> Result<(K::Output, V::Output), (Error, bool)> {
        let k = key
            .deserialize(&self.topic, self.key.as_ref())
            .map_err(|e| (e, true))?;
        let v = value
            .deserialize(&self.topic, self.value.as_ref())
            .map_err(|e| (e, false))?;
        Ok((k, v))
    }

    /// The value alone, or the deserializer's own error.
    pub(crate) fn deserialize_value<V: Deserializer>(&self, value: &V) -> Result<V::Output, Error> {
        value.deserialize(&self.topic, self.value.as_ref())
    }

    /// `topic-partition@offset`.
    pub(crate) fn coordinates(&self) -> String {
        format!("{}-{}@{}", self.topic, self.partition, self.offset)
    }
}

/// What a deserializer's error says about the bytes: its message (whatever its kind: a
/// deserializer failing with [`ErrorKind::Corrupt`] means the payload, not the protocol), or
/// the error itself when it has none.
pub(crate) fn failure_detail(error: &Error) -> String {
    match (error.message_text(), error.kind()) {
        (Some(m), _) => m.to_owned(),
        (None, ErrorKind::Corrupt | ErrorKind::Deserialization) => "invalid bytes".to_owned(),
        (None, _) => error.to_string(),
    }
}

/// Turns the bytes of a key or value into a typed value. Fail with
/// [`Error::deserialization`] (any error is taken as a deserialization failure of the part,
/// though).
///
/// The counterpart of [`Serializer`](crate::producer::Serializer): both take the topic and
/// the bytes of one part, a null being `None` on both sides. A serializer is generic over its
/// input (one `producer::JsonSerializer` (feature `json`) writes any `Serialize`
/// value); a deserializer names its one output type (`JsonDeserializer<T>`), which is what a
/// typed container's records hold.
pub trait Deserializer: Send + Sync {
    /// The typed value.
    type Output;

    /// Deserializes `data` (`None` for a null key or value) of a record of `topic`.
    fn deserialize(&self, topic: &str, data: Option<&Bytes>) -> Result<Self::Output, Error>;
}

/// Keeps the bytes as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesDeserializer;

impl Deserializer for BytesDeserializer {
    type Output = Option<Bytes>;

    fn deserialize(&self, _topic: &str, data: Option<&Bytes>) -> Result<Option<Bytes>, Error> {
        Ok(data.cloned())
    }
}

/// UTF-8 strings; a null stays `None`; invalid UTF-8 is a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct StringDeserializer;

impl Deserializer for StringDeserializer {
    type Output = Option<String>;

    fn deserialize(&self, _topic: &str, data: Option<&Bytes>) -> Result<Option<String>, Error> {
        match data {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b)
                .map(|s| Some(s.to_owned()))
                .map_err(|e| Error::deserialization("not valid UTF-8").with_source(e)),
        }
    }
}

/// Any `serde::Deserialize` value from JSON (feature `json`), the counterpart of
/// [`JsonSerializer`](crate::producer::JsonSerializer); a null stays `None`; bytes that are not
/// JSON of `T` are a deserialization failure.
///
/// ```
/// # #[cfg(feature = "json")] {
/// use bytes::Bytes;
/// use rekafka::consumer::{Deserializer, JsonDeserializer};
///
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Order { id: u32 }
///
/// let orders = JsonDeserializer::<Order>::new();
/// let bytes = Bytes::from_static(br#"{"id":7}"#);
/// assert_eq!(orders.deserialize("orders", Some(&bytes)).unwrap(), Some(Order { id: 7 }));
/// assert!(orders.deserialize("orders", Some(&Bytes::from_static(b"not json"))).is_err());
/// # }
/// ```
#[cfg(feature = "json")]
pub struct JsonDeserializer<T> {
    _type: std::marker::PhantomData<fn() -> T>,
}

#[cfg(feature = "json")]
impl<T> JsonDeserializer<T> {
    /// A deserializer of `T`.
    pub fn new() -> Self {
        JsonDeserializer {
            _type: std::marker::PhantomData,
        }
    }
}

#[cfg(feature = "json")]
impl<T> Default for JsonDeserializer<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "json")]
impl<T> Clone for JsonDeserializer<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

#[cfg(feature = "json")]
impl<T> std::fmt::Debug for JsonDeserializer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JsonDeserializer<{}>", std::any::type_name::<T>())
    }
}

#[cfg(feature = "json")]
impl<T: serde::de::DeserializeOwned> Deserializer for JsonDeserializer<T> {
    type Output = Option<T>;

    fn deserialize(&self, _topic: &str, data: Option<&Bytes>) -> Result<Option<T>, Error> {
        match data {
            None => Ok(None),
            Some(b) => serde_json::from_slice(b).map(Some).map_err(|e| {
                Error::deserialization(format!("not JSON of the expected type: {e}")).with_source(e)
            }),
        }
    }
}

/// The outcome of [`ConsumerRecord::deserialize`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Deserialized<K, V> {
    /// Both key and value deserialized.
    Ok {
        /// The key.
        key: K,
        /// The value.
        value: V,
    },
    /// Key or value did not deserialize; the raw record is kept.
    Failed {
        /// The record as received.
        record: ConsumerRecord,
        /// Why.
        error: Error,
        /// Whether the key (rather than the value) failed.
        is_key: bool,
    },
}

/// The records of one `poll`, grouped by partition (each partition's in offset order).
#[derive(Debug, Clone, Default)]
pub struct ConsumerRecords {
    pub(crate) parts: Vec<(TopicPartition, Vec<ConsumerRecord>)>,
    pub(crate) errors: Vec<(TopicPartition, Error)>,
}

impl ConsumerRecords {
    /// Number of records.
    pub fn len(&self) -> usize {
        self.parts.iter().map(|(_, r)| r.len()).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(|(_, r)| r.is_empty())
    }

    /// The partitions that have records.
    pub fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.parts.iter().map(|(tp, _)| tp)
    }

    /// The records of one partition (empty if none).
    pub fn records(&self, tp: &TopicPartition) -> &[ConsumerRecord] {
        self.parts
            .iter()
            .find(|(t, _)| t == tp)
            .map(|(_, r)| r.as_slice())
            .unwrap_or(&[])
    }

    /// Every record, partition by partition.
    pub fn iter(&self) -> impl Iterator<Item = &ConsumerRecord> {
        self.parts.iter().flat_map(|(_, r)| r.iter())
    }

    /// Per-partition failures of this poll (each reported once; the partition is not fetched
    /// again until the application seeks it).
    pub fn errors(&self) -> &[(TopicPartition, Error)] {
        &self.errors
    }

    /// The records grouped by partition.
    pub fn by_partition(&self) -> &[(TopicPartition, Vec<ConsumerRecord>)] {
        &self.parts
    }

    /// The records grouped by partition, taken out without moving a record (what
    /// [`IntoIterator`] would move one at a time).
    pub fn into_partitions(self) -> Vec<(TopicPartition, Vec<ConsumerRecord>)> {
        self.parts
    }
}

impl IntoIterator for ConsumerRecords {
    type Item = ConsumerRecord;
    type IntoIter = std::iter::FlatMap<
        std::vec::IntoIter<(TopicPartition, Vec<ConsumerRecord>)>,
        Vec<ConsumerRecord>,
        fn((TopicPartition, Vec<ConsumerRecord>)) -> Vec<ConsumerRecord>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        let f: fn((TopicPartition, Vec<ConsumerRecord>)) -> Vec<ConsumerRecord> = |(_, r)| r;
        self.parts.into_iter().flat_map(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::{IsolationLevel, visible_records};
    use crate::protocol::record::BatchBuilder;

    #[test]
    fn a_failed_deserialization_is_a_value_with_the_raw_record() {
        let mut b = BatchBuilder::new();
        b.append(1, Some(b"key"), Some(&[0xff, 0xfe]), &[]).unwrap();
        b.append(2, None, Some(b"ok"), &[]).unwrap();
        let (recs, _) =
            visible_records(&b.build().unwrap(), 0, IsolationLevel::ReadUncommitted, &[]).unwrap();
        match recs[0].deserialize(&StringDeserializer, &StringDeserializer) {
            Deserialized::Failed {
                record,
                error,
                is_key,
            } => {
                assert!(!is_key);
                assert_eq!(record.value.as_deref(), Some(&[0xff, 0xfe][..]));
                assert_eq!(record.offset, 0);
                assert_eq!(error.kind(), &crate::ErrorKind::Deserialization);
                assert_eq!(
                    error.to_string(),
                    "deserialization failed: value of t-0@0: not valid UTF-8"
                );
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        match recs[1].deserialize(&StringDeserializer, &StringDeserializer) {
            Deserialized::Ok { key, value } => {
                assert_eq!(key, None);
                assert_eq!(value.as_deref(), Some("ok"));
            }
            other => panic!("{other:?}"),
        }
        match recs[0].deserialize(&BytesDeserializer, &BytesDeserializer) {
            Deserialized::Ok { value, .. } => assert_eq!(value.unwrap().len(), 2),
            other => panic!("{other:?}"),
        }
    }
}

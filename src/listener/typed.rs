//! Typed records: a listener container over `K` and `V` made by deserializers (Spring's
//! `ErrorHandlingDeserializer` around the consumer's deserializers).
//!
//! [`TypedConsumer`] wraps rekafka's [`Consumer`] with a key and a value [`Deserializer`]
//! (`String`, `Bytes`, JSON through serde with feature `json`, or your own) and hands the
//! container [`TypedRecord`]s: the typed key and value beside the raw record. A record that
//! fails to deserialize never reaches the handler: it goes to the recoverer on its first failure
//! with its raw bytes, and when both its key and its value fail, both failures are reported
//! ([`DeserializationFailed::value_failure`]). A failed-key or failed-value function may supply
//! a substitute instead (Spring's `failedDeserializationFunction`): the record then reaches the
//! handler with it, and [`TypedRecord::substituted`] says what failed.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::adapter::ListenerConsumerRecord;
use super::classify::{DeserializationFailed, RecordPart};
use super::consumer::{CommittedOffsets, ContainerConsumer, ListenerRecord, OffsetToCommit};
use super::tracker::PartitionKey;
use crate::consumer::{Consumer, ConsumerRecord, Deserializer, failure_detail};
use crate::protocol::record::{Header, TimestampType};
use crate::{Error, Result};

/// A consumed record with its typed key and value (see [`TypedConsumer`]).
pub struct TypedRecord<K, V> {
    raw: ListenerConsumerRecord,
    /// The typed key and value; `None` when they did not deserialize (such a record never
    /// reaches the handler).
    typed: Option<Arc<(K, V)>>,
    /// The failure a failed-key or failed-value function supplied a substitute for.
    substituted: Option<Arc<DeserializationFailed>>,
}

impl<K, V> Clone for TypedRecord<K, V> {
    fn clone(&self) -> Self {
        TypedRecord {
            raw: self.raw.clone(),
            typed: self.typed.clone(),
            substituted: self.substituted.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for TypedRecord<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedRecord")
            .field("raw", &self.raw)
            .field("typed", &self.typed.is_some())
            .field("substituted", &self.substituted)
            .finish()
    }
}

impl<K, V> TypedRecord<K, V> {
    /// The typed key. `None` only for a record that did not deserialize, which a handler never
    /// gets (a recoverer may).
    pub fn typed_key(&self) -> Option<&K> {
        self.typed.as_deref().map(|(k, _)| k)
    }

    /// The typed value. `None` only for a record that did not deserialize, which a handler
    /// never gets (a recoverer may).
    pub fn typed_value(&self) -> Option<&V> {
        self.typed.as_deref().map(|(_, v)| v)
    }

    /// The record as consumed (raw bytes, headers, coordinates).
    pub fn raw(&self) -> &ListenerConsumerRecord {
        &self.raw
    }

    /// The deserialization failure a failed-key or failed-value function supplied a substitute
    /// for, if any.
    pub fn substituted(&self) -> Option<&DeserializationFailed> {
        self.substituted.as_deref()
    }
}

impl<K, V> ListenerRecord for TypedRecord<K, V>
where
    K: Send + Sync + 'static,
    V: Send + Sync + 'static,
{
    fn topic(&self) -> &str {
        self.raw.topic()
    }
    fn partition(&self) -> i32 {
        self.raw.partition()
    }
    fn offset(&self) -> i64 {
        self.raw.offset()
    }
    fn timestamp(&self) -> i64 {
        self.raw.timestamp()
    }
    fn timestamp_type(&self) -> TimestampType {
        self.raw.timestamp_type()
    }
    fn key(&self) -> Option<&Bytes> {
        ListenerRecord::key(&self.raw)
    }
    fn value(&self) -> Option<&Bytes> {
        ListenerRecord::value(&self.raw)
    }
    fn headers(&self) -> Vec<Header> {
        self.raw.headers()
    }
    fn with_header(&self, header: Header) -> Self {
        TypedRecord {
            raw: self.raw.with_header(header),
            ..self.clone()
        }
    }
    fn deserialization_failure(&self) -> Option<DeserializationFailed> {
        self.raw.deserialization_failure()
    }
    fn with_deserialization_failure(&self, failure: DeserializationFailed) -> Self {
        TypedRecord {
            raw: self.raw.with_deserialization_failure(failure),
            ..self.clone()
        }
    }
    fn consumer_group(&self) -> Option<&str> {
        self.raw.consumer_group()
    }
}

/// A function that supplies a substitute for a key or value that did not deserialize (Spring's
/// `failedDeserializationFunction`): it gets the raw record and the failure; `None` keeps the
/// failure (the record goes to the recoverer).
type FailedFn<T> = Arc<dyn Fn(&ConsumerRecord, &DeserializationFailed) -> Option<T> + Send + Sync>;

/// rekafka's [`Consumer`] with a key and a value [`Deserializer`], as a
/// [`ContainerConsumer`] of [`TypedRecord`]s: give it to
/// [`ListenerContainer::builder`](super::ListenerContainer::builder) and the handler gets typed
/// keys and values (see the module docs for failures).
///
/// ```no_run
/// # #[cfg(feature = "json")]
/// # async fn demo(consumer: rekafka::consumer::Consumer) -> rekafka::Result<()> {
/// use rekafka::consumer::{JsonDeserializer, StringDeserializer};
/// use rekafka::listener::{ListenerContainer, TypedConsumer, TypedRecord};
///
/// #[derive(serde::Deserialize)]
/// struct Order { id: u64, amount: u32 }
///
/// let typed = TypedConsumer::new(consumer, StringDeserializer, JsonDeserializer::<Order>::new());
/// let handle = ListenerContainer::builder(typed)
///     .record_handler(|record: TypedRecord<Option<String>, Option<Order>>| async move {
///         if let Some(Some(order)) = record.typed_value() {
///             println!("order {} for {}", order.id, order.amount);
///         }
///         Ok(())
///     })
///     .start()?;
/// # let _ = handle; Ok(()) }
/// ```
pub struct TypedConsumer<KD: Deserializer, VD: Deserializer> {
    inner: Consumer,
    key: KD,
    value: VD,
    failed_key: Option<FailedFn<KD::Output>>,
    failed_value: Option<FailedFn<VD::Output>>,
}

impl<KD: Deserializer, VD: Deserializer> TypedConsumer<KD, VD> {
    /// `consumer` (subscribed or assigned) with the key and value deserializers.
    pub fn new(consumer: Consumer, key: KD, value: VD) -> Self {
        TypedConsumer {
            inner: consumer,
            key,
            value,
            failed_key: None,
            failed_value: None,
        }
    }

    /// A substitute for a key that does not deserialize (Spring's
    /// `failedDeserializationFunction` of the key's `ErrorHandlingDeserializer`). Default: none
    /// (the record is recovered).
    pub fn failed_key(
        mut self,
        f: impl Fn(&ConsumerRecord, &DeserializationFailed) -> Option<KD::Output>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.failed_key = Some(Arc::new(f));
        self
    }

    /// A substitute for a value that does not deserialize (Spring's
    /// `failedDeserializationFunction` of the value's `ErrorHandlingDeserializer`): with one,
    /// the record reaches the handler with the substitute (and
    /// [`TypedRecord::substituted`]); without, or when it returns `None`, the record is
    /// recovered. Default: none.
    pub fn failed_value(
        mut self,
        f: impl Fn(&ConsumerRecord, &DeserializationFailed) -> Option<VD::Output>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.failed_value = Some(Arc::new(f));
        self
    }

    /// The consumer.
    pub fn consumer(&self) -> &Consumer {
        &self.inner
    }

    fn typed(&self, raw: ListenerConsumerRecord) -> TypedRecord<KD::Output, VD::Output> {
        typed_with(
            &self.key,
            &self.value,
            self.failed_key.as_ref(),
            self.failed_value.as_ref(),
            raw,
        )
    }
}

/// `raw` with its key and value deserialized by `key` and `value`; a record that does not
/// deserialize keeps its raw bytes, has no typed key and value, and carries the failure
/// ([`ListenerRecord::deserialization_failure`]).
pub(crate) fn typed_record<KD: Deserializer, VD: Deserializer>(
    key: &KD,
    value: &VD,
    raw: ListenerConsumerRecord,
) -> TypedRecord<KD::Output, VD::Output> {
    typed_with(key, value, None, None, raw)
}

fn typed_with<KD: Deserializer, VD: Deserializer>(
    key_deserializer: &KD,
    value_deserializer: &VD,
    failed_key: Option<&FailedFn<KD::Output>>,
    failed_value: Option<&FailedFn<VD::Output>>,
    raw: ListenerConsumerRecord,
) -> TypedRecord<KD::Output, VD::Output> {
    let r = raw.record();
    let key = key_deserializer.deserialize(&r.topic, r.key.as_ref());
    let value = value_deserializer.deserialize(&r.topic, r.value.as_ref());
    let detail = |e: &Error| format!("{}: {}", r.coordinates(), failure_detail(e));
    let failure = match (&key, &value) {
        (Ok(_), Ok(_)) => None,
        (Err(k), v) => Some(DeserializationFailed {
            part: RecordPart::Key,
            message: detail(k),
            // Both failed: both are reported.
            value_failure: v.as_ref().err().map(detail),
        }),
        (Ok(_), Err(v)) => Some(DeserializationFailed {
            part: RecordPart::Value,
            message: detail(v),
            value_failure: None,
        }),
    };
    let Some(failure) = failure else {
        let typed = key.ok().zip(value.ok()).map(Arc::new);
        return TypedRecord {
            raw,
            typed,
            substituted: None,
        };
    };
    let key = key.ok().or_else(|| failed_key.and_then(|f| f(r, &failure)));
    let value = value
        .ok()
        .or_else(|| failed_value.and_then(|f| f(r, &failure)));
    match key.zip(value) {
        Some(typed) => TypedRecord {
            raw,
            typed: Some(Arc::new(typed)),
            substituted: Some(Arc::new(failure)),
        },
        None => TypedRecord {
            raw: raw.with_deserialization_failure(failure),
            typed: None,
            substituted: None,
        },
    }
}

impl<KD, VD> ContainerConsumer for TypedConsumer<KD, VD>
where
    KD: Deserializer + 'static,
    VD: Deserializer + 'static,
    KD::Output: Send + Sync + 'static,
    VD::Output: Send + Sync + 'static,
{
    type Record = TypedRecord<KD::Output, VD::Output>;

    async fn poll(&mut self, timeout: Duration) -> Result<Vec<Self::Record>> {
        let raw = ContainerConsumer::poll(&mut self.inner, timeout).await?;
        Ok(raw.into_iter().map(|r| self.typed(r)).collect())
    }
    fn seek(&mut self, partition: &PartitionKey, offset: i64) -> Result<()> {
        ContainerConsumer::seek(&mut self.inner, partition, offset)
    }
    fn pause(&mut self, partitions: &[PartitionKey]) -> Result<()> {
        ContainerConsumer::pause(&mut self.inner, partitions)
    }
    fn resume(&mut self, partitions: &[PartitionKey]) -> Result<()> {
        ContainerConsumer::resume(&mut self.inner, partitions)
    }
    fn assignment(&self) -> Vec<PartitionKey> {
        ContainerConsumer::assignment(&self.inner)
    }
    fn assignment_ids(&self) -> Vec<(PartitionKey, u64)> {
        ContainerConsumer::assignment_ids(&self.inner)
    }
    async fn commit(&mut self, offsets: Vec<OffsetToCommit>) -> Result<()> {
        ContainerConsumer::commit(&mut self.inner, offsets).await
    }
    async fn committed(&mut self, partitions: &[PartitionKey]) -> Result<CommittedOffsets> {
        ContainerConsumer::committed(&mut self.inner, partitions).await
    }
    fn group_id(&self) -> Option<String> {
        ContainerConsumer::group_id(&self.inner)
    }
    fn transaction_group_metadata(&self) -> Option<crate::transaction::ConsumerGroupMetadata> {
        ContainerConsumer::transaction_group_metadata(&self.inner)
    }
    fn auto_commit_enabled(&self) -> bool {
        ContainerConsumer::auto_commit_enabled(&self.inner)
    }
    fn disable_auto_commit(&mut self) {
        ContainerConsumer::disable_auto_commit(&mut self.inner)
    }
    fn close_link(&self) -> crate::task::CloseLink {
        ContainerConsumer::close_link(&self.inner)
    }
    fn rebalance_pending(&self) -> bool {
        ContainerConsumer::rebalance_pending(&self.inner)
    }
    fn failed_partitions(&self) -> Vec<(PartitionKey, Error)> {
        ContainerConsumer::failed_partitions(&self.inner)
    }
    fn client_id(&self) -> &str {
        ContainerConsumer::client_id(&self.inner)
    }
    async fn close(&mut self) -> Result<()> {
        ContainerConsumer::close(&mut self.inner).await
    }
}

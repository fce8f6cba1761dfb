//! Republishing a failed record to the tail of its own topic, a bounded number of times, before
//! dead-lettering it.
//!
//! This is the pattern for records that depend on each other but may arrive out of order (an
//! order update before the order): instead of blocking the partition with back-off, the record
//! is written again at the end of its partition and the partition moves on; by the time it
//! comes round again, what it depends on has usually arrived. After
//! [`max_republishes`](RepublishToTail::new) republications the record goes to the dead-letter
//! topic through the wrapped [`DeadLetterPublisher`].
//!
//! The count travels in the [`REPUBLISH_COUNT_HEADER`] header (`rekafka_republish-count`), a
//! 4-byte big-endian integer: how many times the record has been republished (absent = 0;
//! the first republication writes 1). It mirrors Spring's `retry_topic-attempts`, which counts
//! attempts rather than republications (its first forward writes 2). Like Spring's, a value of
//! another length is read as a big-endian integer of that length (1 to 4 bytes) and an
//! unreadable or negative value counts as 0.
//!
//! The republished record keeps its key, value and headers (the count header replaced), goes
//! to the **same partition** (so it stays behind newer records of the same key) and gets a new
//! timestamp. Publication uses the dead-letter publisher's idempotent producer and the same
//! wait/timeout rules: a failed republication is a recovery failure, never a skip.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

use super::consumer::ListenerRecord;
use super::dead_letter_publisher::{DeadLetterPublisher, count_bytes, log_sent};
use super::handler::{RecoverFuture, Recoverer, SharedError};
use crate::producer::Record;
use crate::protocol::record::Header;

/// The republish-count header: a 4-byte big-endian count of republications (see the
/// [module docs](self)).
pub const REPUBLISH_COUNT_HEADER: &str = "rekafka_republish-count";

/// The republish count of a record with `headers` (the last [`REPUBLISH_COUNT_HEADER`] wins;
/// absent, unreadable or negative: 0).
pub fn republish_count(headers: &[Header]) -> u32 {
    headers
        .iter()
        .rev()
        .find(|h| h.key() == REPUBLISH_COUNT_HEADER)
        .and_then(|h| h.value())
        .and_then(|v| {
            if v.is_empty() || v.len() > 4 {
                return None;
            }
            let mut buf = [0u8; 4];
            buf[4 - v.len()..].copy_from_slice(v);
            // Sign-extend shorter forms.
            if v.len() < 4 && v[0] & 0x80 != 0 {
                for b in &mut buf[..4 - v.len()] {
                    *b = 0xff;
                }
            }
            u32::try_from(i32::from_be_bytes(buf)).ok()
        })
        .unwrap_or(0)
}

/// A recoverer that republishes a failed record to the tail of its own partition up to
/// `max_republishes` times, then dead-letters it (see the [module docs](self)).
///
/// ```no_run
/// use rekafka::cluster::Cluster;
/// use rekafka::listener::{
///     DeadLetterPublisher, DefaultErrorHandler, FixedBackOff, ListenerRecord, RepublishToTail,
/// };
///
/// async fn handler<R: ListenerRecord>(cluster: Cluster) -> rekafka::Result<DefaultErrorHandler<R>> {
///     let dlt = DeadLetterPublisher::<R>::builder(cluster).build().await?;
///     // Republished with counts 1 and 2, dead-lettered on the third failure.
///     Ok(DefaultErrorHandler::new()
///         .back_off(FixedBackOff::no_retries())
///         .recoverer(RepublishToTail::new(dlt, 2)))
/// }
/// ```
pub struct RepublishToTail<R> {
    dlt: Arc<DeadLetterPublisher<R>>,
    max_republishes: u32,
}

impl<R> fmt::Debug for RepublishToTail<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepublishToTail")
            .field("dlt", &self.dlt)
            .field("max_republishes", &self.max_republishes)
            .finish()
    }
}

impl<R: ListenerRecord> RepublishToTail<R> {
    /// Republishes up to `max_republishes` times, then publishes to `dlt` (through whose
    /// producer republications go too).
    pub fn new(dlt: DeadLetterPublisher<R>, max_republishes: u32) -> Self {
        RepublishToTail {
            dlt: Arc::new(dlt),
            max_republishes,
        }
    }

    /// The same, with a shared publisher.
    pub fn with_shared(dlt: Arc<DeadLetterPublisher<R>>, max_republishes: u32) -> Self {
        RepublishToTail {
            dlt,
            max_republishes,
        }
    }

    /// The dead-letter publisher.
    pub fn dead_letter_publisher(&self) -> &DeadLetterPublisher<R> {
        &self.dlt
    }

    /// The record republished with count `count`.
    fn republished(record: &R, count: u32) -> Record {
        let mut headers: Vec<Header> = record
            .headers()
            .into_iter()
            .filter(|h| h.key() != REPUBLISH_COUNT_HEADER)
            .collect();
        headers.push(Header::new(
            REPUBLISH_COUNT_HEADER,
            Some(count_bytes(count)),
        ));
        Record {
            topic: Arc::from(record.topic()),
            partition: Some(record.partition()),
            key: record.key().cloned(),
            value: record.value().cloned(),
            headers,
            timestamp: None,
        }
    }
}

impl<R: ListenerRecord> Recoverer<R> for RepublishToTail<R> {
    fn recover<'a>(&'a self, record: &'a R, error: &'a SharedError) -> RecoverFuture<'a> {
        Box::pin(async move {
            let count = republish_count(&record.headers());
            // A record that cannot be deserialized will not get better by waiting.
            let err: &(dyn StdError + 'static) = &**error;
            let undeserializable = super::dead_letter_publisher::deserialization_failure(err)
                .is_some()
                || record.deserialization_failure().is_some();
            if count >= self.max_republishes || undeserializable {
                return self.dlt.recover(record, error).await;
            }
            let republish = count + 1;
            let out = Self::republished(record, republish);
            let meta = self.dlt.sender.publish(record, out).await?;
            log_sent(
                record,
                &meta,
                &format_args!(
                    "record republished to the tail of its partition \
                     (republish_count {republish}, error: {error})"
                ),
            );
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn count_header_forms() {
        let h = |v: &[u8]| {
            vec![Header::new(
                REPUBLISH_COUNT_HEADER,
                Some(Bytes::copy_from_slice(v)),
            )]
        };
        assert_eq!(republish_count(&[]), 0);
        assert_eq!(republish_count(&h(&[0, 0, 0, 2])), 2);
        assert_eq!(republish_count(&h(&[3])), 3);
        assert_eq!(republish_count(&h(&[0xff, 0xff, 0xff, 0xff])), 0);
        assert_eq!(republish_count(&h(&[0xff])), 0);
        assert_eq!(republish_count(&h(&[1, 2, 3, 4, 5])), 0);
        let mut two = h(&[0, 0, 0, 1]);
        two.extend(h(&[0, 0, 0, 5]));
        assert_eq!(republish_count(&two), 5);
    }
}

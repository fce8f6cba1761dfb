//! Producer id, epoch and per-partition sequence numbers (idempotence, KIP-98 and KIP-360).
//!
//! Kept apart from the sender so that the transactional producer can build on it (its
//! InitProducerId goes to the transaction coordinator with a `transactional.id`; the sequence
//! bookkeeping is the same).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use super::config::ProducerConfig;
use crate::cluster::{Cluster, Recovery, recovery_for};
use crate::connection::RetryDelay;
use crate::error::{Error, ErrorKind, KafkaCode, Result};
use crate::protocol::messages::{ApiKey, InitProducerIdRequest, ProducerId};

/// A producer id and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerIdAndEpoch {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
}

/// Asks any broker for a producer id (InitProducerId without a transactional id), retrying
/// retriable errors with back-off until `deadline`. With `current` and a broker that supports
/// InitProducerId v3+, asks for the current id's epoch to be bumped (KIP-360).
pub(crate) async fn init_producer_id(
    cluster: &Cluster,
    config: &ProducerConfig,
    current: Option<ProducerIdAndEpoch>,
    deadline: Instant,
) -> Result<ProducerIdAndEpoch> {
    let mut backoff = RetryDelay::new(config.retry_backoff, config.retry_backoff_max);
    loop {
        let error = match init_once(cluster, config, current).await {
            Ok(p) => return Ok(p),
            Err(e) => e,
        };
        if recovery_for(&error) == Recovery::GiveUp {
            return Err(error);
        }
        if let (Recovery::SwitchBroker, Some(b)) = (recovery_for(&error), error.context().broker) {
            cluster.mark_failed(b);
        }
        let wait = backoff.delay();
        backoff.failed();
        if Instant::now() + wait >= deadline {
            return Err(error);
        }
        tracing::debug!(error = %error, ?wait, "InitProducerId failed; retrying");
        tokio::time::sleep(wait).await;
    }
}

async fn init_once(
    cluster: &Cluster,
    config: &ProducerConfig,
    current: Option<ProducerIdAndEpoch>,
) -> Result<ProducerIdAndEpoch> {
    let broker = cluster.any_connection().await?;
    let conn = broker.connection().await?;
    let version = conn
        .versions()
        .negotiate::<InitProducerIdRequest>()
        .map_err(|e| e.on_broker(broker.broker_id()))?;
    let mut req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(i32::MAX);
    req.producer_id = ProducerId(-1);
    req.producer_epoch = -1;
    if let Some(cur) = current
        && version >= 3
    {
        req.producer_id = ProducerId(cur.producer_id);
        req.producer_epoch = cur.epoch;
    }
    let resp = tokio::time::timeout(config.request_timeout, conn.send_at(req, version))
        .await
        .map_err(|_| {
            Error::with_message(ErrorKind::Timeout, "InitProducerId timed out")
                .api(ApiKey::InitProducerId)
                .on_broker(broker.broker_id())
        })??;
    if let Some(code) = KafkaCode::from_i16(resp.error_code) {
        return Err(Error::broker(code)
            .api(ApiKey::InitProducerId)
            .on_broker(broker.broker_id()));
    }
    if resp.producer_id.0 < 0 {
        return Err(Error::with_message(
            ErrorKind::UnexpectedResponse,
            "InitProducerId answered without a producer id",
        )
        .api(ApiKey::InitProducerId));
    }
    tracing::debug!(
        producer_id = resp.producer_id.0,
        epoch = resp.producer_epoch,
        "producer id"
    );
    Ok(ProducerIdAndEpoch {
        producer_id: resp.producer_id.0,
        epoch: resp.producer_epoch,
    })
}

/// Kafka's sequence increment: wraps from `i32::MAX` to 0.
pub(crate) fn increment_sequence(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

/// The sequence state of one partition.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartitionSequence {
    /// The base sequence of the next batch to number.
    pub(crate) next: i32,
    /// A batch of this partition failed for good (or the broker lost our state): the sequence
    /// has a gap that only an epoch bump closes.
    pub(crate) gap: bool,
    /// A batch of this producer id was acknowledged on this partition, so the broker holds
    /// state for it and rejects a batch whose sequence does not follow the last one written.
    /// Until then Kafka accepts *any* sequence from the producer (it has nothing to compare
    /// with), so a later batch could be written ahead of an earlier one that failed: the
    /// sender keeps one batch of such a partition in flight at a time.
    pub(crate) confirmed: bool,
}

/// The idempotent producer's state: id, epoch, sequences, and whether an epoch bump is due.
#[derive(Debug)]
pub(crate) struct IdempotentState {
    pub(crate) id: ProducerIdAndEpoch,
    pub(crate) partitions: HashMap<(Arc<str>, i32), PartitionSequence>,
    /// Some partition has a gap: stop numbering new batches, bump once nothing is in flight.
    pub(crate) bump_required: bool,
}

impl IdempotentState {
    pub(crate) fn new(id: ProducerIdAndEpoch) -> IdempotentState {
        IdempotentState {
            id,
            partitions: HashMap::new(),
            bump_required: false,
        }
    }

    /// Numbers a batch of `count` records of `tp`: returns its base sequence.
    pub(crate) fn assign(&mut self, tp: &(Arc<str>, i32), count: i32) -> i32 {
        let s = self.partitions.entry(tp.clone()).or_default();
        let base = s.next;
        s.next = increment_sequence(base, count);
        base
    }

    /// Records a gap in `tp`'s sequence: an epoch bump is due.
    pub(crate) fn mark_gap(&mut self, tp: &(Arc<str>, i32)) {
        self.partitions.entry(tp.clone()).or_default().gap = true;
        self.bump_required = true;
    }

    pub(crate) fn has_gap(&self, tp: &(Arc<str>, i32)) -> bool {
        self.partitions.get(tp).is_some_and(|s| s.gap)
    }

    /// Records that the broker acknowledged a batch of producer `producer_id` on `tp` (ignored
    /// for an older producer id).
    pub(crate) fn mark_confirmed(&mut self, tp: &(Arc<str>, i32), producer_id: i64) {
        if producer_id == self.id.producer_id {
            self.partitions.entry(tp.clone()).or_default().confirmed = true;
        }
    }

    /// Whether the broker is known to hold this producer id's state for `tp` (see
    /// [`PartitionSequence::confirmed`]).
    pub(crate) fn is_confirmed(&self, tp: &(Arc<str>, i32)) -> bool {
        self.partitions.get(tp).is_some_and(|s| s.confirmed)
    }

    /// Takes a new id or epoch: every sequence starts over at 0. An epoch bump of the same id
    /// keeps the partitions' `confirmed` (the broker still has the id's state there, with the
    /// old epoch, and rejects a new-epoch batch that does not start at 0); a new id clears it.
    pub(crate) fn reset(&mut self, id: ProducerIdAndEpoch) {
        let same_id = id.producer_id == self.id.producer_id;
        self.id = id;
        if same_id {
            self.partitions.retain(|_, s| s.confirmed);
            for s in self.partitions.values_mut() {
                s.next = 0;
                s.gap = false;
            }
        } else {
            self.partitions.clear();
        }
        self.bump_required = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_wrap_like_kafka() {
        assert_eq!(increment_sequence(0, 5), 5);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    }

    #[test]
    fn gaps_require_a_bump_that_resets_sequences() {
        let mut s = IdempotentState::new(ProducerIdAndEpoch {
            producer_id: 7,
            epoch: 0,
        });
        let tp = (Arc::<str>::from("t"), 0);
        assert_eq!(s.assign(&tp, 10), 0);
        assert_eq!(s.assign(&tp, 5), 10);
        s.mark_gap(&tp);
        assert!(s.bump_required && s.has_gap(&tp));
        s.reset(ProducerIdAndEpoch {
            producer_id: 7,
            epoch: 1,
        });
        assert!(!s.bump_required && !s.has_gap(&tp));
        assert_eq!(s.assign(&tp, 1), 0);
    }

    #[test]
    fn confirmation_survives_a_bump_but_not_a_new_id() {
        let id = |producer_id, epoch| ProducerIdAndEpoch { producer_id, epoch };
        let mut s = IdempotentState::new(id(7, 0));
        let (a, b) = ((Arc::<str>::from("t"), 0), (Arc::<str>::from("t"), 1));
        assert_eq!(s.assign(&a, 3), 0);
        assert_eq!(s.assign(&b, 3), 0);
        assert!(!s.is_confirmed(&a));
        s.mark_confirmed(&a, 7);
        s.mark_confirmed(&b, 6); // an older id's batch says nothing about this one
        assert!(s.is_confirmed(&a) && !s.is_confirmed(&b));
        s.mark_gap(&b);
        s.reset(id(7, 1));
        assert!(s.is_confirmed(&a) && !s.is_confirmed(&b) && !s.has_gap(&b));
        assert_eq!(s.assign(&a, 1), 0);
        s.reset(id(8, 0));
        assert!(!s.is_confirmed(&a));
    }
}

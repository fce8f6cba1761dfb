//! Failed-record tracking: attempts, back-off state and recovery failures per partition.
//!
//! Spring's `FailedRecordTracker` keeps one slot per partition (a failure at another offset
//! replaces it), counts deliveries from 1, and forgets everything on rebalance or restart. This
//! tracker keeps the same slot semantics, and adds two things:
//!
//! * a [`RetryState`] that can be written into the committed offset's metadata
//!   ([`RetryState::encode`]) and read back by the next owner of the partition
//!   ([`FailedRecordTracker::resume`]), so the attempt count survives rebalances and restarts;
//! * a count of consecutive *recovery* failures per partition, so a recoverer that keeps failing
//!   (a dead-letter topic that is down) can be capped instead of looping hot.

use crate::hash::FastMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::backoff::{BackOff, BackOffExecution};
use super::classify::{Classifier, error_class, same_class};

/// A topic and partition as the listener layer's map key: a plain tuple, cheap to hash and
/// clone. Convert to and from [`TopicPartition`](crate::consumer::TopicPartition) with
/// `TopicPartition::new(&*key.0, key.1)` and `(tp.topic.clone(), tp.partition)`.
pub type PartitionKey = (Arc<str>, i32);

/// The retry state of one failing record, as carried in commit metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryState {
    /// The offset of the failing record.
    pub offset: i64,
    /// How many deliveries of it have failed so far.
    pub attempts: u32,
    /// When it first failed, in milliseconds since the Unix epoch.
    pub first_failure_ms: i64,
}

const METADATA_PREFIX: &str = "rekafka.retry/1";

impl RetryState {
    /// The commit-metadata form: `rekafka.retry/1 offset=O attempts=A first=MS`.
    pub fn encode(&self) -> String {
        format!(
            "{METADATA_PREFIX} offset={} attempts={} first={}",
            self.offset, self.attempts, self.first_failure_ms
        )
    }

    /// Parses [`encode`](Self::encode)'s form; anything else (another client's metadata, an
    /// empty string, garbage) is `None`.
    pub fn decode(metadata: &str) -> Option<RetryState> {
        let rest = metadata.strip_prefix(METADATA_PREFIX)?;
        let mut offset = None;
        let mut attempts = None;
        let mut first = None;
        for part in rest.split_ascii_whitespace() {
            let (k, v) = part.split_once('=')?;
            match k {
                "offset" => offset = v.parse::<i64>().ok(),
                "attempts" => attempts = v.parse::<u32>().ok(),
                "first" => first = v.parse::<i64>().ok(),
                _ => {}
            }
        }
        let state = RetryState {
            offset: offset?,
            attempts: attempts?,
            first_failure_ms: first?,
        };
        (state.offset >= 0).then_some(state)
    }
}

/// What to do after a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Decision {
    /// Deliver the record again after `delay`. `attempt` is the failed delivery's number.
    Retry {
        /// The wait before the next delivery.
        delay: Duration,
        /// The number of the delivery that failed (from 1).
        attempt: u32,
    },
    /// Retries are exhausted (or the error is not retryable): run the recoverer.
    Recover {
        /// The number of the delivery that failed (from 1).
        attempt: u32,
    },
}

/// What to do after the recoverer failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryFailureDecision {
    /// Redeliver the record (under a fresh back-off if the state was reset).
    Redeliver,
    /// The cap on consecutive recovery failures is reached: keep the partition paused and raise
    /// the alarm. `failures` is the count so far.
    Halt {
        /// Consecutive recovery failures so far.
        failures: u32,
    },
}

struct Slot {
    offset: i64,
    execution: Option<Box<dyn BackOffExecution>>,
    attempts: u32,
    first_failure_ms: i64,
    class: Option<String>,
}

/// Attempts, back-off executions and recovery failures per partition.
pub struct FailedRecordTracker {
    slots: FastMap<PartitionKey, Slot>,
    recovery_failures: FastMap<PartitionKey, (i64, u32)>,
    /// Drop the slot when the recoverer fails, so the back-offs start again. Default: true.
    pub reset_state_on_recovery_failure: bool,
    /// Start a fresh back-off when the error's kind changes. Default: true.
    pub reset_state_on_exception_change: bool,
    /// Consecutive recovery failures of one record before [`RecoveryFailureDecision::Halt`];
    /// `None` never halts. Default: `Some(5)`.
    pub max_recovery_failures: Option<u32>,
}

impl std::fmt::Debug for FailedRecordTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FailedRecordTracker")
            .field("failing_partitions", &self.slots.len())
            .finish()
    }
}

impl Default for FailedRecordTracker {
    fn default() -> Self {
        FailedRecordTracker {
            slots: FastMap::default(),
            recovery_failures: FastMap::default(),
            reset_state_on_recovery_failure: true,
            reset_state_on_exception_change: true,
            max_recovery_failures: Some(5),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl FailedRecordTracker {
    /// A tracker with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a failed delivery of the record at `offset` of `tp` and decides what follows.
    ///
    /// `backoff` is the policy for this (record, error) pair; a not-retryable error (per
    /// `classifier`) is recovered at once.
    pub fn failed(
        &mut self,
        tp: &PartitionKey,
        offset: i64,
        error: &(dyn std::error::Error + 'static),
        classifier: &Classifier,
        backoff: &dyn BackOff,
    ) -> Decision {
        // The error's class ([`error_class`]) is computed only when it is compared
        // or kept for a later comparison: not for a record recovered at its first failure.
        let mut class: Option<String> = None;
        // (attempts so far, first failure) of the slot to (re)build, or None to keep the slot.
        let rebuild = match self.slots.get(tp) {
            None => Some((0, now_ms())),
            Some(s) if s.offset != offset => Some((0, now_ms())),
            // Resumed from commit metadata, or reset after a recovery failure: keep counting.
            Some(s) if s.execution.is_none() => Some((s.attempts, s.first_failure_ms)),
            Some(s)
                if self.reset_state_on_exception_change
                    && s.class.as_deref().is_some_and(|c| {
                        !same_class(c, class.get_or_insert_with(|| error_class(error)))
                    }) =>
            {
                Some((0, now_ms()))
            }
            Some(_) => None,
        };
        if let Some((attempts, first)) = rebuild {
            let mut execution = backoff.start();
            // A resumed count consumes the intervals the earlier deliveries already used.
            for _ in 0..attempts {
                if execution.next_back_off().is_none() {
                    break;
                }
            }
            self.slots.insert(
                tp.clone(),
                Slot {
                    offset,
                    execution: Some(execution),
                    attempts,
                    first_failure_ms: first,
                    class: None,
                },
            );
        }
        let Some(slot) = self.slots.get_mut(tp) else {
            return Decision::Recover { attempt: 1 };
        };
        slot.attempts = slot.attempts.saturating_add(1);
        let attempt = slot.attempts;
        let decision = if !classifier.is_retryable(error) {
            Decision::Recover { attempt }
        } else {
            match slot.execution.as_mut().and_then(|e| e.next_back_off()) {
                Some(delay) => Decision::Retry { delay, attempt },
                None => Decision::Recover { attempt },
            }
        };
        // The slot outlives this failure when the record is retried, or when a failed
        // recovery keeps it: then the class is kept for the next comparison.
        let kept =
            matches!(decision, Decision::Retry { .. }) || !self.reset_state_on_recovery_failure;
        slot.class = if kept {
            Some(class.unwrap_or_else(|| error_class(error)))
        } else {
            None
        };
        decision
    }

    /// The recoverer succeeded for the record at `offset`: forget it (and recovery failures
    /// counted for it or for an earlier record).
    pub fn recovered(&mut self, tp: &PartitionKey, offset: i64) {
        self.recovery_started(tp, offset);
        if self
            .recovery_failures
            .get(tp)
            .is_some_and(|(o, _)| *o <= offset)
        {
            self.recovery_failures.remove(tp);
        }
    }

    /// A recovery of the record at `offset` is under way (its outcome comes later): its
    /// attempts are over, but recovery failures counted for it are kept until it completes.
    pub fn recovery_started(&mut self, tp: &PartitionKey, offset: i64) {
        if self.slots.get(tp).is_some_and(|s| s.offset == offset) {
            self.slots.remove(tp);
        }
    }

    /// The recoverer failed for the record at `offset`.
    pub fn recovery_failed(&mut self, tp: &PartitionKey, offset: i64) -> RecoveryFailureDecision {
        let entry = self
            .recovery_failures
            .entry(tp.clone())
            .or_insert((offset, 0));
        if entry.0 != offset {
            *entry = (offset, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        let failures = entry.1;
        if self.reset_state_on_recovery_failure {
            if let Some(slot) = self.slots.get_mut(tp) {
                if slot.offset == offset {
                    slot.execution = None;
                    slot.class = None;
                    slot.attempts = 0;
                }
            }
        }
        match self.max_recovery_failures {
            Some(max) if failures >= max => RecoveryFailureDecision::Halt { failures },
            _ => RecoveryFailureDecision::Redeliver,
        }
    }

    /// Consecutive recovery failures of the record at `offset` of `tp`.
    pub fn recovery_failures(&self, tp: &PartitionKey, offset: i64) -> u32 {
        match self.recovery_failures.get(tp) {
            Some((o, n)) if *o == offset => *n,
            _ => 0,
        }
    }

    /// The number the next delivery of the record at `offset` will have (1 for a record that
    /// has not failed): the value of the `kafka_deliveryAttempt` header.
    pub fn delivery_attempt(&self, tp: &PartitionKey, offset: i64) -> u32 {
        match self.slots.get(tp) {
            Some(s) if s.offset == offset => s.attempts.saturating_add(1),
            _ => 1,
        }
    }

    /// The retry state of `tp`'s failing record, for commit metadata.
    pub fn state(&self, tp: &PartitionKey) -> Option<RetryState> {
        self.slots.get(tp).map(|s| RetryState {
            offset: s.offset,
            attempts: s.attempts,
            first_failure_ms: s.first_failure_ms,
        })
    }

    /// Continues counting from a state read from commit metadata (a new owner of the partition,
    /// or a restart). Ignored when the tracker already has fresher state for the same record.
    pub fn resume(&mut self, tp: &PartitionKey, state: RetryState) {
        match self.slots.get(tp) {
            Some(s) if s.offset == state.offset && s.attempts >= state.attempts => {}
            _ => {
                self.slots.insert(
                    tp.clone(),
                    Slot {
                        offset: state.offset,
                        execution: None,
                        attempts: state.attempts,
                        first_failure_ms: state.first_failure_ms,
                        class: None,
                    },
                );
            }
        }
    }

    /// Forgets `tp` (partition revoked, or a record of it succeeded).
    pub fn clear(&mut self, tp: &PartitionKey) {
        self.slots.remove(tp);
        self.recovery_failures.remove(tp);
    }

    /// Forgets `tp`'s state unless it concerns the record at `offset` (a later record
    /// succeeded, so an older failure is over).
    pub fn succeeded(&mut self, tp: &PartitionKey, offset: i64) {
        if self.slots.is_empty() && self.recovery_failures.is_empty() {
            return;
        }
        if self.slots.get(tp).is_some_and(|s| s.offset <= offset) {
            self.slots.remove(tp);
        }
        if self
            .recovery_failures
            .get(tp)
            .is_some_and(|(o, _)| *o <= offset)
        {
            self.recovery_failures.remove(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listener::FixedBackOff;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    #[derive(Debug, thiserror::Error)]
    #[error("other")]
    struct Other;

    fn tp() -> PartitionKey {
        (Arc::from("t"), 0)
    }

    #[test]
    fn counts_deliveries_then_recovers() {
        let mut t = FailedRecordTracker::new();
        let c = Classifier::default();
        let b = FixedBackOff::new(Duration::from_millis(10), 3);
        assert_eq!(t.delivery_attempt(&tp(), 5), 1);
        for attempt in 1..=3 {
            assert_eq!(
                t.failed(&tp(), 5, &Boom, &c, &b),
                Decision::Retry {
                    delay: Duration::from_millis(10),
                    attempt
                }
            );
            assert_eq!(t.delivery_attempt(&tp(), 5), attempt + 1);
        }
        assert_eq!(
            t.failed(&tp(), 5, &Boom, &c, &b),
            Decision::Recover { attempt: 4 }
        );
        t.recovered(&tp(), 5);
        assert_eq!(t.delivery_attempt(&tp(), 5), 1);
    }

    #[test]
    fn a_type_registered_between_failures_is_the_same_class() {
        #[derive(Debug, thiserror::Error)]
        #[error("late")]
        struct LateRegistered;
        let mut t = FailedRecordTracker::new();
        let c = Classifier::default();
        let b = FixedBackOff::new(Duration::from_millis(10), 3);
        let short = error_class(&LateRegistered);
        assert_eq!(short, "LateRegistered");
        assert!(matches!(
            t.failed(&tp(), 5, &LateRegistered, &c, &b),
            Decision::Retry { attempt: 1, .. }
        ));
        crate::listener::register_error_type::<LateRegistered>();
        assert_ne!(error_class(&LateRegistered), short);
        assert!(matches!(
            t.failed(&tp(), 5, &LateRegistered, &c, &b),
            Decision::Retry { attempt: 2, .. }
        ));
        // A different type is still a change.
        assert!(matches!(
            t.failed(&tp(), 5, &Other, &c, &b),
            Decision::Retry { attempt: 1, .. }
        ));
        assert!(same_class("X", "a::X") && same_class("a::X", "X"));
        assert!(!same_class("a::X", "b::X"));
    }

    #[test]
    fn not_retryable_recovers_first_time() {
        let mut t = FailedRecordTracker::new();
        let mut c = Classifier::default();
        c.add_not_retryable::<Boom>();
        let b = FixedBackOff::default();
        assert_eq!(
            t.failed(&tp(), 1, &Boom, &c, &b),
            Decision::Recover { attempt: 1 }
        );
    }

    #[test]
    fn other_offset_or_exception_change_resets() {
        let mut t = FailedRecordTracker::new();
        let c = Classifier::default();
        let b = FixedBackOff::new(Duration::ZERO, 1);
        assert!(matches!(
            t.failed(&tp(), 1, &Boom, &c, &b),
            Decision::Retry { .. }
        ));
        // Another error kind: a fresh slot, counting from 1 again (Spring's behaviour).
        assert_eq!(
            t.failed(&tp(), 1, &Other, &c, &b),
            Decision::Retry {
                delay: Duration::ZERO,
                attempt: 1
            }
        );
        assert_eq!(
            t.failed(&tp(), 1, &Other, &c, &b),
            Decision::Recover { attempt: 2 }
        );
        // Without reset on change, the same sequence exhausts sooner.
        let mut t = FailedRecordTracker::new();
        t.reset_state_on_exception_change = false;
        assert!(matches!(
            t.failed(&tp(), 1, &Boom, &c, &b),
            Decision::Retry { .. }
        ));
        assert_eq!(
            t.failed(&tp(), 1, &Other, &c, &b),
            Decision::Recover { attempt: 2 }
        );
        // A failure at another offset replaces the slot.
        assert_eq!(
            t.failed(&tp(), 2, &Boom, &c, &b),
            Decision::Retry {
                delay: Duration::ZERO,
                attempt: 1
            }
        );
    }

    #[test]
    fn state_survives_through_metadata() {
        let c = Classifier::default();
        let b = FixedBackOff::new(Duration::from_millis(1), 3);
        let mut a = FailedRecordTracker::new();
        a.failed(&tp(), 9, &Boom, &c, &b);
        a.failed(&tp(), 9, &Boom, &c, &b);
        let meta = a.state(&tp()).map(|s| s.encode()).unwrap_or_default();
        let state = RetryState::decode(&meta);
        assert_eq!(state.as_ref().map(|s| (s.offset, s.attempts)), Some((9, 2)));
        // The next owner continues: two deliveries failed, so two retries remain... one retry
        // (attempt 3), then recovery at attempt 4.
        let mut b2 = FailedRecordTracker::new();
        if let Some(s) = state {
            b2.resume(&tp(), s);
        }
        assert_eq!(b2.delivery_attempt(&tp(), 9), 3);
        assert!(matches!(
            b2.failed(&tp(), 9, &Boom, &c, &b),
            Decision::Retry { attempt: 3, .. }
        ));
        assert_eq!(
            b2.failed(&tp(), 9, &Boom, &c, &b),
            Decision::Recover { attempt: 4 }
        );
    }

    #[test]
    fn metadata_decode_rejects_foreign_and_garbage() {
        assert_eq!(RetryState::decode(""), None);
        assert_eq!(RetryState::decode("some other client"), None);
        assert_eq!(
            RetryState::decode("rekafka.retry/1 offset=x attempts=1 first=0"),
            None
        );
        assert_eq!(
            RetryState::decode("rekafka.retry/1 offset=-4 attempts=1 first=0"),
            None
        );
        let s = RetryState {
            offset: 3,
            attempts: 7,
            first_failure_ms: 1_700_000_000_000,
        };
        assert_eq!(RetryState::decode(&s.encode()), Some(s));
    }

    #[test]
    fn recovery_failures_are_capped() {
        let mut t = FailedRecordTracker::new();
        t.max_recovery_failures = Some(3);
        let c = Classifier::default();
        let b = FixedBackOff::no_retries();
        for _ in 1..=2 {
            // The state is reset after each recovery failure, so each round starts at 1.
            assert_eq!(
                t.failed(&tp(), 4, &Boom, &c, &b),
                Decision::Recover { attempt: 1 }
            );
            assert_eq!(
                t.recovery_failed(&tp(), 4),
                RecoveryFailureDecision::Redeliver
            );
        }
        t.failed(&tp(), 4, &Boom, &c, &b);
        assert_eq!(
            t.recovery_failed(&tp(), 4),
            RecoveryFailureDecision::Halt { failures: 3 }
        );
        assert_eq!(t.recovery_failures(&tp(), 4), 3);
        t.recovered(&tp(), 4);
        assert_eq!(t.recovery_failures(&tp(), 4), 0);
    }
}

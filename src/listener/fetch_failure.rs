//! What the container does with a partition whose fetch failed with an error no retry fixes
//! (a corrupt batch, an authorization error, an offset out of range with
//! `auto.offset.reset=none`): the consumer stops fetching such a partition until it is sought,
//! so without a policy it would stall silently while the others flow.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::events::EventHub;

use super::consumer::ContainerConsumer;
use super::container::{ContainerEvent, StopReason};
use super::error_handler::{Disposition, OtherFailure};
use super::tracker::PartitionKey;
use crate::{Error, ErrorKind, KafkaCode};

/// What the container does when a partition's fetch fails with an error no retry fixes
/// ([`ContainerBuilder::partition_failure_policy`](super::ContainerBuilder::partition_failure_policy)).
/// Either way the failure is logged and announced with [`ContainerEvent::PartitionFailed`],
/// and [`ContainerHandle::failed_partitions`](super::ContainerHandle::failed_partitions)
/// lists it while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PartitionFailurePolicy {
    /// Pause the partition (the alarm: [`ContainerEvent::PartitionFailed`], then
    /// [`ContainerEvent::PartitionsPaused`]); the other partitions go on. Nothing past the
    /// failed position is committed. The partition comes back when it is reassigned (a
    /// restart or a rebalance reads its committed offset again), after the cause is fixed.
    #[default]
    PauseWithAlarm,
    /// Stop the container: [`StopReason::Authentication`] for an authorization error,
    /// [`StopReason::NoOffset`] for an offset out of range, [`StopReason::Error`] otherwise.
    Stop,
}

/// The failed partitions the container has handled, shared with its handle.
pub(crate) type FailedList = Arc<Mutex<Vec<(PartitionKey, Error)>>>;

/// The container's side of partition failures: applies the policy once per failure.
#[derive(Debug, Default)]
pub(crate) struct FetchFailures {
    pub(crate) policy: PartitionFailurePolicy,
    handled: HashMap<PartitionKey, Error>,
    pub(crate) shared: FailedList,
}

impl FetchFailures {
    /// Failures under `policy`, listed in `shared`.
    pub(crate) fn new(policy: PartitionFailurePolicy, shared: FailedList) -> FetchFailures {
        FetchFailures {
            policy,
            handled: HashMap::new(),
            shared,
        }
    }

    /// Looks at the consumer's failed partitions (after each poll): a new one goes to the
    /// error handler first (`other`: its `handle_other`, which may seek or stop the
    /// container); one the handler did not seek is logged, announced and paused, or stops the
    /// container (the returned reason). A partition that is no longer failed (sought, revoked)
    /// is forgotten.
    pub(crate) fn check<C: ContainerConsumer>(
        &mut self,
        consumer: &mut C,
        events: &EventHub,
        mut other: impl FnMut(&mut OtherFailure<'_>) -> Disposition,
    ) -> Option<StopReason> {
        let now = consumer.failed_partitions();
        if now.is_empty() && self.handled.is_empty() {
            return None;
        }
        let before = self.handled.len();
        self.handled
            .retain(|tp, _| now.iter().any(|(failed, _)| failed == tp));
        let forgotten = self.handled.len() != before;
        let new: Vec<(PartitionKey, Error)> = now
            .into_iter()
            .filter(|(tp, _)| !self.handled.contains_key(tp))
            .collect();
        if !forgotten && new.is_empty() {
            return None;
        }
        // The error handler's turn (Spring's `handleOtherException`): a partition it seeks is
        // fetched again from there, so it is no failure of the container's.
        let mut stop = None;
        let mut unresolved = Vec::with_capacity(new.len());
        for (tp, error) in new {
            let mut failure = OtherFailure::new(&error, Some(&tp));
            let disposition = other(&mut failure);
            let mut sought = false;
            for (target, offset) in failure.seeks.take() {
                match consumer.seek(&target, offset) {
                    Ok(()) => sought |= target == tp,
                    Err(e) => tracing::warn!(
                        topic = %target.0, partition = target.1, offset, error = %e,
                        "a seek the error handler asked for failed"
                    ),
                }
            }
            if disposition == Disposition::StopContainer {
                tracing::error!(
                    topic = %tp.0, partition = tp.1, error = %error,
                    "partition failed; the error handler stops the container"
                );
                events.emit(ContainerEvent::PartitionFailed {
                    partition: tp.clone(),
                    error: error.clone(),
                    policy: self.policy,
                });
                stop.get_or_insert(StopReason::Abnormal);
            }
            if sought {
                tracing::warn!(
                    topic = %tp.0, partition = tp.1, error = %error,
                    "partition failed; the error handler sought it"
                );
            } else if disposition != Disposition::StopContainer {
                unresolved.push((tp, error));
            }
        }
        let new = unresolved;
        for (tp, error) in &new {
            self.handled.insert(tp.clone(), error.clone());
        }
        // Listed before it is announced, so an event's receiver finds it.
        let mut list: Vec<(PartitionKey, Error)> = self
            .handled
            .iter()
            .map(|(tp, e)| (tp.clone(), e.clone()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        *self.shared.lock().unwrap_or_else(|e| e.into_inner()) = list;
        for (tp, error) in new {
            tracing::error!(
                topic = %tp.0, partition = tp.1, error = %error, policy = ?self.policy,
                "partition failed: its fetch failed with an error no retry fixes"
            );
            events.emit(ContainerEvent::PartitionFailed {
                partition: tp.clone(),
                error: error.clone(),
                policy: self.policy,
            });
            match self.policy {
                PartitionFailurePolicy::PauseWithAlarm => {
                    match consumer.pause(std::slice::from_ref(&tp)) {
                        Ok(()) => {
                            events.emit(ContainerEvent::PartitionsPaused(vec![tp]));
                        }
                        Err(e) => tracing::warn!(error = %e, "pausing a failed partition failed"),
                    }
                }
                PartitionFailurePolicy::Stop => {
                    stop.get_or_insert(stop_reason(&error));
                }
            }
        }
        stop
    }
}

fn stop_reason(e: &Error) -> StopReason {
    match e.kafka_code() {
        Some(KafkaCode::OffsetOutOfRange) => StopReason::NoOffset,
        Some(
            KafkaCode::TopicAuthorizationFailed
            | KafkaCode::GroupAuthorizationFailed
            | KafkaCode::ClusterAuthorizationFailed,
        ) => StopReason::Authentication,
        _ if e.kind() == &ErrorKind::Authentication => StopReason::Authentication,
        _ => StopReason::Error,
    }
}

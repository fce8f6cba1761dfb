//! The running container's handle.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::*;
use crate::listener::events::{EventHub, Events, HaltedPartition};
use crate::listener::fetch_failure::FailedList;
use crate::listener::tracker::PartitionKey;
use crate::{Error, Result};

/// A running container. Dropping it stops the container (without waiting).
#[derive(Debug)]
pub struct ContainerHandle {
    /// Shared with the client that made the consumer (weakly), which may stop it on close.
    pub(super) stop: Arc<crate::task::StopAndWait>,
    pub(super) pause: watch::Sender<bool>,
    pub(super) events: Arc<EventHub>,
    pub(super) task: Option<JoinHandle<StopReason>>,
    pub(super) failed: FailedList,
}

impl ContainerHandle {
    /// Subscribes to the container's events. See [`Events`]: alarms
    /// ([`ContainerEvent::RecoveryHalted`]) are never lost.
    pub fn events(&self) -> Events {
        self.events.subscribe()
    }

    /// The partitions halted now because their record could not be recovered (the state behind
    /// [`ContainerEvent::RecoveryHalted`]): each stays paused until a later recovery of its
    /// record succeeds ([`DefaultErrorHandler::halt_probe_interval`](crate::listener::DefaultErrorHandler::halt_probe_interval)) or it is revoked.
    ///
    /// ```no_run
    /// # fn demo(handle: &rekafka::listener::ContainerHandle) {
    /// for h in handle.halted_partitions() {
    ///     eprintln!("{}-{} halted at offset {} after {} recovery failures",
    ///         h.partition.0, h.partition.1, h.offset, h.failures);
    /// }
    /// # }
    /// ```
    pub fn halted_partitions(&self) -> Vec<HaltedPartition> {
        self.events.halted_partitions()
    }

    /// Pauses consumption (all partitions) before the next poll (within the poll timeout);
    /// membership is kept.
    pub fn pause(&self) {
        self.pause.send_replace(true);
    }

    /// Resumes after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.pause.send_replace(false);
    }

    /// The partitions whose fetch failed with an error no retry fixes, with their errors, as
    /// the container last saw them (see [`PartitionFailurePolicy`]).
    pub fn failed_partitions(&self) -> Vec<(PartitionKey, Error)> {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the container's task is still running.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops gracefully: the record in hand is finished, back-off waits end at once, handled
    /// offsets are committed and the consumer leaves its group. Returns why the container
    /// stopped (it may have stopped earlier by itself).
    pub async fn stop(mut self) -> StopReason {
        self.stop.stop();
        match self.task.take() {
            Some(task) => task.await.unwrap_or(StopReason::Error),
            None => StopReason::Normal,
        }
    }

    /// [`stop`](Self::stop), waiting at most `timeout`. A container that has not stopped by
    /// then is still stopping: nothing is cut short (the record in hand is finished, the final
    /// commit made, the consumer closed, exactly as with `stop`), and [`StopTimedOut`] hands
    /// the handle back, to [`join`](Self::join) later or to drop (the container then finishes
    /// stopping in the background).
    pub async fn stop_timeout(mut self, timeout: Duration) -> Result<StopReason, StopTimedOut> {
        self.stop.stop();
        let Some(task) = self.task.as_mut() else {
            return Ok(StopReason::Normal);
        };
        match tokio::time::timeout(timeout, task).await {
            Ok(joined) => {
                self.task = None;
                Ok(joined.unwrap_or(StopReason::Error))
            }
            Err(_) => Err(StopTimedOut {
                handle: self,
                waited: timeout,
            }),
        }
    }

    /// Waits until the container stops by itself (or is stopped elsewhere).
    pub async fn join(mut self) -> StopReason {
        match self.task.take() {
            Some(task) => task.await.unwrap_or(StopReason::Error),
            None => StopReason::Normal,
        }
    }
}

/// The container did not stop within the time given to [`ContainerHandle::stop_timeout`]. It
/// is still stopping (the stop request stands; nothing was cut short, so the commit guarantees
/// hold): [`into_handle`](Self::into_handle) gives the handle back to wait for it.
#[derive(Debug)]
pub struct StopTimedOut {
    handle: ContainerHandle,
    waited: Duration,
}

impl StopTimedOut {
    /// How long `stop_timeout` waited.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The container's handle ([`ContainerHandle::join`] waits for the stop to finish).
    pub fn into_handle(self) -> ContainerHandle {
        self.handle
    }
}

impl std::fmt::Display for StopTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the listener container did not stop within {:?}; it is still stopping",
            self.waited
        )
    }
}

impl std::error::Error for StopTimedOut {}

impl Drop for ContainerHandle {
    fn drop(&mut self) {
        self.stop.stop();
    }
}

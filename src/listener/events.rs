//! The container's events: a bounded broadcast for the stream of events, a lossless queue per
//! subscriber for alarms, and the set of halted partitions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc};

use super::container::ContainerEvent;
use super::tracker::PartitionKey;

/// Events a subscriber has not taken yet, at most this many (older ones are dropped for a
/// subscriber that lags; alarms never are).
const EVENT_CAPACITY: usize = 1024;

/// A partition whose record could not be recovered
/// [`max_recovery_failures`](super::DefaultErrorHandler::max_recovery_failures) times in a row:
/// it stays paused ([`ContainerEvent::RecoveryHalted`]) until a later recovery of the record
/// succeeds or the partition is revoked. See [`ContainerHandle::halted_partitions`].
///
/// [`ContainerHandle::halted_partitions`]: super::ContainerHandle::halted_partitions
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HaltedPartition {
    /// The partition.
    pub partition: PartitionKey,
    /// The offset of the record that cannot be recovered.
    pub offset: i64,
    /// Consecutive recovery failures when it halted.
    pub failures: u32,
}

type Sequenced = (u64, ContainerEvent);

/// The sending side, shared by the container's builder, task and handle.
#[derive(Debug)]
pub(crate) struct EventHub {
    seq: AtomicU64,
    events: broadcast::Sender<Sequenced>,
    alarms: Mutex<Vec<mpsc::UnboundedSender<Sequenced>>>,
    halted: Mutex<Vec<HaltedPartition>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl EventHub {
    pub(crate) fn new() -> Arc<EventHub> {
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Arc::new(EventHub {
            seq: AtomicU64::new(0),
            events,
            alarms: Mutex::new(Vec::new()),
            halted: Mutex::new(Vec::new()),
        })
    }

    /// Sends `event` to every subscriber: alarms through each one's lossless queue, the rest
    /// through the broadcast.
    ///
    /// Only the container's task emits, so events are numbered in the order they are sent.
    pub(crate) fn emit(&self, event: ContainerEvent) {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        if matches!(event, ContainerEvent::RecoveryHalted { .. }) {
            lock(&self.alarms).retain(|a| a.send((seq, event.clone())).is_ok());
        } else {
            let _ = self.events.send((seq, event));
        }
    }

    /// Whether anybody receives events.
    pub(crate) fn observed(&self) -> bool {
        self.events.receiver_count() > 0
    }

    pub(crate) fn subscribe(&self) -> Events {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.alarms).push(tx);
        Events {
            events: self.events.subscribe(),
            alarms: rx,
            alarms_open: true,
            next_event: None,
            next_alarm: None,
        }
    }

    /// `partition` halted at `offset` (replacing an earlier halt of it).
    pub(crate) fn halted(&self, partition: &PartitionKey, offset: i64, failures: u32) {
        let mut halted = lock(&self.halted);
        halted.retain(|h| h.partition != *partition);
        halted.push(HaltedPartition {
            partition: partition.clone(),
            offset,
            failures,
        });
    }

    /// `partition` is no longer halted (recovered, or revoked).
    pub(crate) fn resumed(&self, partition: &PartitionKey) {
        let mut halted = lock(&self.halted);
        if !halted.is_empty() {
            halted.retain(|h| h.partition != *partition);
        }
    }

    /// Records of `partition` before `next` are done: a halt at one of them is over.
    pub(crate) fn passed(&self, partition: &PartitionKey, next: i64) {
        let mut halted = lock(&self.halted);
        if !halted.is_empty() {
            halted.retain(|h| h.partition != *partition || h.offset >= next);
        }
    }

    pub(crate) fn halted_partitions(&self) -> Vec<HaltedPartition> {
        lock(&self.halted).clone()
    }
}

/// A subscription to a container's events ([`ContainerHandle::events`]).
///
/// Events come in the order the container emitted them. The stream is bounded: a subscriber
/// that falls more than 1024 events behind loses the oldest ones (`recv` reports
/// [`RecvError::Lagged`] with their number, then goes on). Alarms —
/// [`ContainerEvent::RecoveryHalted`] — are never lost: each subscriber has its own unbounded
/// queue for them, and they keep their place among the events that were not lost.
///
/// [`ContainerHandle::events`]: super::ContainerHandle::events
#[derive(Debug)]
pub struct Events {
    events: broadcast::Receiver<Sequenced>,
    alarms: mpsc::UnboundedReceiver<Sequenced>,
    alarms_open: bool,
    next_event: Option<Sequenced>,
    next_alarm: Option<Sequenced>,
}

impl Events {
    /// The next event, waiting for one. `Err(RecvError::Lagged(n))` when `n` events were lost
    /// to lagging (never an alarm); `Err(RecvError::Closed)` once the container is gone and
    /// every event is taken.
    pub async fn recv(&mut self) -> Result<ContainerEvent, RecvError> {
        loop {
            match self.try_recv() {
                Ok(e) => return Ok(e),
                Err(TryRecvError::Lagged(n)) => return Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => return Err(RecvError::Closed),
                Err(TryRecvError::Empty) => {}
            }
            if self.alarms_open {
                tokio::select! {
                    e = self.events.recv() => match e {
                        Ok(e) => self.next_event = Some(e),
                        Err(RecvError::Lagged(n)) => return Err(RecvError::Lagged(n)),
                        Err(RecvError::Closed) => {
                            // Only alarms may come still.
                            match self.alarms.recv().await {
                                Some(a) => return Ok(a.1),
                                None => return Err(RecvError::Closed),
                            }
                        }
                    },
                    a = self.alarms.recv() => match a {
                        Some(a) => self.next_alarm = Some(a),
                        None => self.alarms_open = false,
                    },
                }
            } else {
                let e = self.events.recv().await?;
                return Ok(e.1);
            }
        }
    }

    /// The next event if one is there. `Err(TryRecvError::Empty)` when none is.
    pub fn try_recv(&mut self) -> Result<ContainerEvent, TryRecvError> {
        if self.next_alarm.is_none() && self.alarms_open {
            match self.alarms.try_recv() {
                Ok(a) => self.next_alarm = Some(a),
                Err(mpsc::error::TryRecvError::Empty) => {}
                Err(mpsc::error::TryRecvError::Disconnected) => self.alarms_open = false,
            }
        }
        // Taken after the alarm: every event sent before it is in the broadcast by now.
        let mut closed = false;
        if self.next_event.is_none() {
            match self.events.try_recv() {
                Ok(e) => self.next_event = Some(e),
                Err(TryRecvError::Lagged(n)) => return Err(TryRecvError::Lagged(n)),
                Err(TryRecvError::Closed) => closed = true,
                Err(TryRecvError::Empty) => {}
            }
        }
        match (self.next_alarm.take(), self.next_event.take()) {
            (Some(a), Some(e)) if a.0 < e.0 => {
                self.next_event = Some(e);
                Ok(a.1)
            }
            (a, Some(e)) => {
                self.next_alarm = a;
                Ok(e.1)
            }
            (Some(a), None) => Ok(a.1),
            (None, None) if closed && !self.alarms_open => Err(TryRecvError::Closed),
            (None, None) => Err(TryRecvError::Empty),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn halted(offset: i64) -> ContainerEvent {
        ContainerEvent::RecoveryHalted {
            partition: (Arc::from("t"), 0),
            offset,
            failures: 1,
        }
    }

    fn offset_of(e: &ContainerEvent) -> Option<i64> {
        match e {
            ContainerEvent::RecoveryHalted { offset, .. } => Some(*offset),
            _ => None,
        }
    }

    #[tokio::test]
    async fn alarms_keep_their_place_and_survive_lagging() {
        let hub = EventHub::new();
        let mut rx = hub.subscribe();
        hub.emit(ContainerEvent::Started);
        hub.emit(halted(1));
        hub.emit(ContainerEvent::Stopped(super::super::StopReason::Normal));
        assert!(matches!(rx.recv().await, Ok(ContainerEvent::Started)));
        assert_eq!(rx.recv().await.ok().as_ref().and_then(offset_of), Some(1));
        assert!(matches!(rx.recv().await, Ok(ContainerEvent::Stopped(_))));
        assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));

        hub.emit(halted(2));
        for _ in 0..EVENT_CAPACITY + 10 {
            hub.emit(ContainerEvent::Started);
        }
        hub.emit(halted(3));
        let mut alarms = Vec::new();
        let mut lagged = 0;
        loop {
            match rx.try_recv() {
                Ok(e) => alarms.extend(offset_of(&e)),
                Err(TryRecvError::Lagged(n)) => lagged += n,
                Err(_) => break,
            }
        }
        assert_eq!(lagged, 10);
        assert_eq!(alarms, vec![2, 3]);
        drop(hub);
        assert!(matches!(rx.recv().await, Err(RecvError::Closed)));
    }

    #[test]
    fn halted_partitions_come_and_go() {
        let hub = EventHub::new();
        let tp: PartitionKey = (Arc::from("t"), 0);
        hub.halted(&tp, 5, 3);
        hub.halted(&tp, 5, 4);
        assert_eq!(hub.halted_partitions().len(), 1);
        assert_eq!(hub.halted_partitions()[0].failures, 4);
        hub.passed(&tp, 5);
        assert_eq!(hub.halted_partitions().len(), 1);
        hub.passed(&tp, 6);
        assert!(hub.halted_partitions().is_empty());
        hub.halted(&tp, 7, 1);
        hub.resumed(&tp);
        assert!(hub.halted_partitions().is_empty());
    }
}

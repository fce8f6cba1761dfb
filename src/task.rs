//! The one shutdown signal of every background task (crate-private).
//!
//! A task that must stop when its owner closes *or is dropped* gets a [`StopListener`]; its
//! owner keeps the [`StopSignal`]. [`StopSignal::stop`] stops it at once (`close()`), and
//! dropping the signal stops it too, so no task outlives what made it. The listener also
//! reads a dropped signal as "stop", so a task never waits on an owner that is gone.
//!
//! Used by the producer's sender, the consumer's fetcher, the group member's heartbeat (both
//! protocols), the cluster's metadata refresher, the share consumer's membership and both
//! listener containers.

use tokio::sync::watch;

/// The owner's side: stops the task when told, or when dropped.
#[derive(Debug)]
pub(crate) struct StopSignal {
    tx: watch::Sender<bool>,
}

/// The task's side: asks whether to stop, or waits until it should. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct StopListener {
    rx: watch::Receiver<bool>,
}

impl StopSignal {
    /// A signal and the listener for its task.
    pub(crate) fn new() -> (StopSignal, StopListener) {
        let (tx, rx) = watch::channel(false);
        (StopSignal { tx }, StopListener { rx })
    }

    /// Stops the task (idempotent).
    pub(crate) fn stop(&self) {
        self.tx.send_replace(true);
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        self.tx.send_replace(true);
    }
}

impl StopListener {
    /// Whether the task should stop now: stopped, or its signal dropped.
    pub(crate) fn is_stopped(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Resolves once the task should stop (at once if it already should). Cancel-safe: use it
    /// as a `select!` branch.
    pub(crate) async fn stopped(&mut self) {
        // `wait_for` fails only when the signal is dropped, which means "stop" as well.
        let _ = self.rx.wait_for(|stopped| *stopped).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn stop_and_drop_both_stop_the_task() {
        let (signal, mut listener) = StopSignal::new();
        assert!(!listener.is_stopped());
        let other = listener.clone();
        signal.stop();
        assert!(listener.is_stopped() && other.is_stopped());
        tokio::time::timeout(Duration::from_secs(5), listener.stopped())
            .await
            .unwrap_or_else(|_| panic!("stopped() after stop()"));

        let (signal, mut listener) = StopSignal::new();
        let waiting = tokio::spawn(async move { listener.stopped().await });
        tokio::task::yield_now().await;
        drop(signal);
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap_or_else(|_| panic!("stopped() after the signal was dropped"))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn a_dropped_signal_reads_as_stopped() {
        let (signal, listener) = StopSignal::new();
        drop(signal);
        assert!(listener.is_stopped());
    }
}

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
//!
//! It also holds the client's close registry ([`CloseRegistry`], [`CloseLink`]): what a
//! [`Client`](crate::Client) made registers itself there, weakly, so that
//! [`Client::close`](crate::Client::close) closes it, in order, before the connections.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::watch;

/// The owner's side: stops the task when told, or when dropped.
#[derive(Debug)]
pub(crate) struct StopSignal {
    tx: watch::Sender<bool>,
    /// The same state as the channel's value, for [`StopListener::is_stopped`]: loops ask it
    /// once per record, and an atomic load costs less than the channel's read lock.
    stopped: Arc<AtomicBool>,
}

/// The task's side: asks whether to stop, or waits until it should. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct StopListener {
    rx: watch::Receiver<bool>,
    stopped: Arc<AtomicBool>,
}

impl StopSignal {
    /// A signal and the listener for its task.
    pub(crate) fn new() -> (StopSignal, StopListener) {
        let (tx, rx) = watch::channel(false);
        let stopped = Arc::new(AtomicBool::new(false));
        (
            StopSignal {
                tx,
                stopped: stopped.clone(),
            },
            StopListener { rx, stopped },
        )
    }

    /// Stops the task (idempotent).
    pub(crate) fn stop(&self) {
        // The flag first: whoever wakes on the channel sees it set.
        self.stopped.store(true, Ordering::Release);
        self.tx.send_replace(true);
    }
}

impl Drop for StopSignal {
    fn drop(&mut self) {
        self.stop();
    }
}

impl StopListener {
    /// Whether the task should stop now: stopped, or its signal dropped.
    pub(crate) fn is_stopped(&self) -> bool {
        // The signal sets the flag before it sends and when it is dropped, so the flag alone
        // answers both.
        self.stopped.load(Ordering::Acquire)
    }

    /// Resolves once the task should stop (at once if it already should). Cancel-safe: use it
    /// as a `select!` branch.
    pub(crate) async fn stopped(&mut self) {
        // `wait_for` fails only when the signal is dropped, which means "stop" as well.
        let _ = self.rx.wait_for(|stopped| *stopped).await;
    }
}

/// A boxed close future (what [`Closeable::close_now`] returns).
pub(crate) type CloseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a thing a client made stands in [`Client::close`](crate::Client::close)'s order: the
/// stages close in this order, each waiting for its things before the next starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum CloseStage {
    /// Listener containers and share containers: they own consumers and finish in-flight work.
    Containers,
    /// Consumers (final commit, leave the group) and share consumers (acknowledgements sent,
    /// acquired records released, leave the group).
    Consumers,
    /// Transactional producers (an open transaction is aborted) and dead-letter publishers.
    Transactional,
}

/// Something a client closes before its connections.
pub(crate) trait Closeable: Send + Sync + 'static {
    /// Closes it (as its own `close`/`stop` does).
    fn close_now(self: Arc<Self>) -> CloseFuture;
}

/// What a client made and closes on [`Client::close`](crate::Client::close). Weak: the
/// registry keeps nothing alive, and dead entries are pruned on every insert, so it stays as
/// long as what is alive.
#[derive(Default)]
pub(crate) struct CloseRegistry {
    entries: Mutex<Vec<(CloseStage, Weak<dyn Closeable>)>>,
}

impl std::fmt::Debug for CloseRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.entries.lock().map(|e| e.len()).unwrap_or(0);
        f.debug_struct("CloseRegistry")
            .field("entries", &n)
            .finish()
    }
}

impl CloseRegistry {
    /// Registers `item` for `stage` (after pruning the entries whose thing is gone).
    pub(crate) fn register<T: Closeable>(&self, stage: CloseStage, item: &Arc<T>) {
        let weak: Weak<dyn Closeable> = Arc::downgrade(item) as Weak<dyn Closeable>;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(_, w)| w.strong_count() > 0);
        entries.push((stage, weak));
    }

    /// Removes the entries of `stage` and returns those still alive.
    pub(crate) fn take(&self, stage: CloseStage) -> Vec<Arc<dyn Closeable>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let mut alive = Vec::new();
        entries.retain(|(s, w)| {
            if *s != stage {
                return true;
            }
            alive.extend(w.upgrade());
            false
        });
        alive
    }

    /// How many entries (alive or not yet pruned) the registry holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

/// A weak link to the close registry of the [`Client`](crate::Client) that made a consumer,
/// share consumer, producer or publisher: what that thing (or a container started over it)
/// registers with.
/// Empty for things made without a client. Opaque; it keeps nothing alive.
#[derive(Debug, Clone, Default)]
pub struct CloseLink(Weak<CloseRegistry>);

impl CloseLink {
    /// A link to `registry`.
    pub(crate) fn new(registry: &Arc<CloseRegistry>) -> CloseLink {
        CloseLink(Arc::downgrade(registry))
    }

    /// Registers `item` with the client, if there is one and it is still alive.
    pub(crate) fn register<T: Closeable>(&self, stage: CloseStage, item: &Arc<T>) {
        if let Some(registry) = self.0.upgrade() {
            registry.register(stage, item);
        }
    }
}

/// The stop side of a task that [`Client::close`](crate::Client::close) may stop too: the
/// task's [`StopSignal`], shared, and a way to wait until the task has ended (the task holds
/// the [`TaskDone`] and drops it when it ends, panicking or not).
#[derive(Debug)]
pub(crate) struct StopAndWait {
    signal: StopSignal,
    done: watch::Receiver<()>,
}

/// Held by a task while it runs (see [`StopAndWait`]).
#[derive(Debug)]
pub(crate) struct TaskDone(#[allow(dead_code)] watch::Sender<()>);

impl StopAndWait {
    /// A stopper, the listener for its task, and the guard the task holds while it runs.
    pub(crate) fn new() -> (StopAndWait, StopListener, TaskDone) {
        let (signal, listener) = StopSignal::new();
        let (done_tx, done) = watch::channel(());
        (StopAndWait { signal, done }, listener, TaskDone(done_tx))
    }

    /// Stops the task (idempotent); does not wait.
    pub(crate) fn stop(&self) {
        self.signal.stop();
    }

    /// Stops the task and waits until it has ended.
    pub(crate) async fn stop_and_wait(&self) {
        self.signal.stop();
        let mut done = self.done.clone();
        // `changed` fails once the task dropped its `TaskDone`; nothing is ever sent.
        while done.changed().await.is_ok() {}
    }
}

impl Closeable for StopAndWait {
    fn close_now(self: Arc<Self>) -> CloseFuture {
        Box::pin(async move { self.stop_and_wait().await })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Item;
    impl Closeable for Item {
        fn close_now(self: Arc<Self>) -> CloseFuture {
            Box::pin(async {})
        }
    }

    #[test]
    fn the_registry_is_weak_and_pruned_on_insert() {
        let registry = Arc::new(CloseRegistry::default());
        let link = CloseLink::new(&registry);
        let kept = Arc::new(Item);
        link.register(CloseStage::Consumers, &kept);
        for _ in 0..10 {
            link.register(CloseStage::Containers, &Arc::new(Item));
        }
        // Each insert pruned the dropped ones before it: the kept item and the last one.
        assert_eq!(registry.len(), 2);
        assert!(registry.take(CloseStage::Containers).is_empty());
        assert_eq!(registry.take(CloseStage::Consumers).len(), 1);
        assert_eq!(registry.len(), 0);
        drop(registry);
        link.register(CloseStage::Consumers, &kept); // no client any more: a no-op
    }

    #[tokio::test]
    async fn stop_and_wait_waits_for_the_task_to_end() {
        let (stopper, mut listener, done) = StopAndWait::new();
        let ended = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = ended.clone();
        tokio::spawn(async move {
            let _done = done;
            listener.stopped().await;
            tokio::task::yield_now().await;
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Arc::new(stopper).close_now().await;
        assert!(ended.load(std::sync::atomic::Ordering::SeqCst));
    }

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

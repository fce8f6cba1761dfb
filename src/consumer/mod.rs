//! The consumer: assignment (manual or through a group), a background fetcher that reads ahead
//! into a bounded buffer, positions, pause/resume/seek, commits and rebalance callbacks.
//!
//! The consumer exposes mechanism, not policy: an error-handling layer built on it can seek one
//! partition back to a failed offset, pause just that partition during a back-off, and commit
//! an exact offset, without touching any other partition.
//!
//! ```no_run
//! # async fn demo() -> rekafka::Result<()> {
//! use std::time::Duration;
//! use rekafka::Client;
//! use rekafka::consumer::{ConsumerConfig, OffsetReset};
//!
//! let client = Client::builder().bootstrap_servers(["127.0.0.1:9092"]).build().await?;
//! let config = ConsumerConfig::new()
//!     .with_group_id("orders-app")
//!     .with_auto_offset_reset(OffsetReset::Earliest);
//! let consumer = client.consumer(config)?;
//! consumer.subscribe(["orders"])?;
//! loop {
//!     let records = consumer.poll(Duration::from_secs(1)).await?;
//!     for r in records.iter() {
//!         println!("{}-{}@{}: {:?}", r.topic, r.partition, r.offset, r.value);
//!     }
//!     consumer.commit().await?;
//! }
//! # }
//! ```

mod commit;
mod config;
mod event;
mod fetcher;
mod record;
pub(crate) use record::failure_detail;

pub use config::{AutoCommit, ConsumerConfig, FetchConnection, IsolationLevel, OffsetReset};
pub use event::{ConsumerEvent, EVENT_CAPACITY, FetchFailureKind, PartitionFailure};
pub use fetcher::StartOffset;
#[doc(hidden)]
pub use fetcher::visible_records;
#[cfg(feature = "json")]
pub use record::JsonDeserializer;
pub use record::{
    BytesDeserializer, ConsumerRecord, ConsumerRecords, Deserialized, Deserializer,
    StringDeserializer,
};

pub use crate::group::{GroupProtocol, OffsetAndMetadata, TopicPartition};

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::cluster::Cluster;
use crate::group::{GroupMember, RebalanceProtocol};
use crate::{Error, ErrorKind, Result};
use fetcher::{PartState, Shared, State, lock};

mod offsets;
mod positions;
mod rebalance;
mod stream;
use rebalance::*;
pub use stream::RecordStream;

/// A boxed future, as returned by [`RebalanceListener`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Callbacks around rebalances, called from inside [`Consumer::poll`] with the consumer, so
/// they may commit, seek or pause.
///
/// Java semantics: with an eager assignor every partition is revoked before each rebalance and
/// the full new assignment is then assigned; with a cooperative one only partitions that move
/// are revoked (after the rebalance), and `on_assigned` receives only the added partitions
/// (possibly none). `on_revoked` runs before ownership moves, so offsets committed in it are
/// the ones the next owner starts from. `on_lost` runs when the membership was lost (session
/// expired, fenced, `max.poll.interval` exceeded): the partitions already belong to someone
/// else, so committing is pointless; by default it calls `on_revoked`.
///
/// A callback interrupted by a cancelled [`Consumer::poll`] is called again by the next one
/// (see its "Cancel safety"), so callbacks should be safe to repeat.
///
/// Committing what was processed before partitions move (Java's
/// `onPartitionsRevoked(..) { consumer.commitSync(..) }`), and starting newly assigned
/// partitions one hour back:
///
/// ```no_run
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use rekafka::consumer::{BoxFuture, Consumer, RebalanceListener, TopicPartition};
///
/// struct CommitOnRevoke;
///
/// impl RebalanceListener for CommitOnRevoke {
///     fn on_revoked<'a>(
///         &'a self,
///         consumer: &'a Consumer,
///         partitions: &'a [TopicPartition],
///     ) -> BoxFuture<'a, ()> {
///         Box::pin(async move {
///             let offsets: Vec<_> = consumer
///                 .positions()
///                 .into_iter()
///                 .filter(|(tp, _)| partitions.contains(tp))
///                 .collect();
///             if let Err(e) = consumer.commit_offsets(&offsets).await {
///                 eprintln!("commit before revocation failed: {e}");
///             }
///         })
///     }
///
///     fn on_assigned<'a>(
///         &'a self,
///         consumer: &'a Consumer,
///         partitions: &'a [TopicPartition],
///     ) -> BoxFuture<'a, ()> {
///         Box::pin(async move {
///             let hour_ago = SystemTime::now() - Duration::from_secs(3600);
///             let ms = hour_ago.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
///             let _ = consumer.seek_to_timestamp(partitions, ms);
///         })
///     }
/// }
///
/// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
/// let consumer = client.consumer_with(|c| c.group_id = Some("billing".into()))?;
/// consumer.set_rebalance_listener(std::sync::Arc::new(CommitOnRevoke));
/// consumer.subscribe(["orders"])?;
/// # Ok(()) }
/// ```
pub trait RebalanceListener: Send + Sync {
    /// Partitions were assigned to this consumer.
    fn on_assigned<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        let _ = (consumer, partitions);
        Box::pin(async {})
    }

    /// Partitions are about to be taken away from this consumer.
    fn on_revoked<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        let _ = (consumer, partitions);
        Box::pin(async {})
    }

    /// Partitions were lost without a chance to commit.
    fn on_lost<'a>(
        &'a self,
        consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        self.on_revoked(consumer, partitions)
    }
}

#[derive(Debug, Clone)]
enum Subscription {
    Topics(Vec<String>),
    /// The anchored regex (matched here with the classic protocol) and the pattern as given
    /// (sent to the coordinator with the consumer protocol).
    Pattern(regex::Regex, String),
}

struct GroupState {
    subscription: Option<Subscription>,
    /// The topics of the last join.
    joined_topics: Vec<String>,
    protocol: RebalanceProtocol,
    listener: Option<Arc<dyn RebalanceListener>>,
    last_auto_commit: Instant,
    manual: bool,
    /// When a pattern subscription last listed every topic of the cluster.
    last_pattern_refresh: Option<Instant>,
    /// An assignment the group gave that is not fully applied yet: set as soon as a join
    /// returns, cleared once the callbacks ran. A `poll` cancelled in between leaves it here
    /// and the next `poll` finishes it (see "Cancel safety" on [`Consumer::poll`]).
    pending: Option<PendingAssignment>,
}

/// A Kafka consumer. See the [module documentation](self).
///
/// Every method takes `&self`; one task should drive `poll`. Dropping the consumer stops its
/// background tasks; [`close`](Self::close) also commits (with auto-commit) and leaves the group.
pub struct Consumer {
    core: Arc<Core>,
}

/// The consumer's state, behind an `Arc` so that the [`Client`](crate::Client) that made it
/// can close it (weakly held: [`Client::close`](crate::Client::close)) while the application
/// owns the [`Consumer`].
struct Core {
    runtime: tokio::runtime::Handle,
    shared: Arc<Shared>,
    group: Mutex<GroupState>,
    poll_lock: tokio::sync::Mutex<()>,
    shutdown: crate::task::StopSignal,
    /// The client that made the consumer (empty otherwise): a container started over the
    /// consumer registers with it.
    link: Mutex<crate::task::CloseLink>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("group_id", &self.core.shared.config.group_id)
            .finish_non_exhaustive()
    }
}

fn closed() -> Error {
    Error::with_message(ErrorKind::Closed, "consumer closed")
}

impl Consumer {
    /// A consumer over `cluster`. Starts the fetcher task (and, with a `group_id`, the group
    /// member's heartbeat task); must be called inside a tokio runtime.
    pub fn new(cluster: Cluster, config: ConsumerConfig) -> Result<Consumer> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("a Consumer must be created inside a tokio runtime"))?;
        let member = match &config.group_id {
            Some(g) => Some(GroupMember::new(cluster.clone(), config.group_config(g))?),
            None => None,
        };
        // The consumer protocol is incremental: only partitions that move are revoked.
        let protocol = match config.group_protocol {
            GroupProtocol::Consumer => RebalanceProtocol::Cooperative,
            _ => config.assignors[0].protocol(),
        };
        let client_id = cluster.config().connection.client_id.clone();
        let shared = Arc::new(Shared {
            cluster,
            config,
            state: Mutex::new(State::default()),
            data_ready: tokio::sync::Notify::new(),
            wake_fetcher: tokio::sync::Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            auto_commit_off: std::sync::atomic::AtomicBool::new(false),
            member,
            commits: commit::CommitOrder::default(),
            events: tokio::sync::broadcast::channel(EVENT_CAPACITY).0,
            telemetry: crate::telemetry::ConsumerTelemetry::new(&client_id),
        });
        let (shutdown, rx) = crate::task::StopSignal::new();
        let span = tracing::debug_span!("kafka.consumer", client_id = %client_id);
        runtime.spawn(fetcher::run(shared.clone(), rx).instrument(span));
        Ok(Consumer {
            core: Arc::new(Core {
                runtime,
                shared,
                group: Mutex::new(GroupState {
                    subscription: None,
                    joined_topics: Vec::new(),
                    protocol,
                    listener: None,
                    last_auto_commit: Instant::now(),
                    manual: false,
                    last_pattern_refresh: None,
                    pending: None,
                }),
                poll_lock: tokio::sync::Mutex::new(()),
                shutdown,
                link: Mutex::new(crate::task::CloseLink::default()),
            }),
        })
    }

    /// Registers the consumer with the client that made it, for
    /// [`Client::close`](crate::Client::close), and keeps the link for a container started
    /// over it.
    pub(crate) fn set_close_link(&self, link: crate::task::CloseLink) {
        link.register(crate::task::CloseStage::Consumers, &self.core);
        *lock(&self.core.link) = link;
    }

    /// The link to the client that made the consumer (empty if none).
    pub(crate) fn close_link(&self) -> crate::task::CloseLink {
        lock(&self.core.link).clone()
    }

    /// A receiver of the consumer's typed events from now on: resets by `auto.offset.reset`
    /// and partitions that stopped on a fetch failure. Each receiver gets every event; one
    /// that falls more than [`EVENT_CAPACITY`] behind loses the oldest.
    pub fn events(&self) -> tokio::sync::broadcast::Receiver<ConsumerEvent> {
        self.core.shared.events.subscribe()
    }

    /// The assigned partitions that stopped on a fetch failure (corrupt batch, authorization,
    /// out of range with `auto.offset.reset=none`, …) and wait for a seek, in partition order.
    pub fn failed_partitions(&self) -> Vec<PartitionFailure> {
        lock(&self.core.shared.state)
            .parts
            .iter()
            .filter_map(|(tp, p)| p.failure(tp))
            .collect()
    }

    /// The settings.
    pub fn config(&self) -> &ConsumerConfig {
        &self.core.shared.config
    }

    /// The cluster this consumer reads from.
    pub fn cluster(&self) -> &Cluster {
        &self.core.shared.cluster
    }

    fn check_open(&self) -> Result<()> {
        if self.core.shared.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        Ok(())
    }

    fn member(&self) -> Result<&GroupMember> {
        self.core
            .shared
            .member
            .as_ref()
            .ok_or_else(|| Error::config("this operation needs group.id"))
    }

    /// Assigns partitions manually (no group membership), each with where to start. Replaces
    /// the previous assignment; partitions kept keep their position and buffer.
    pub fn assign<I>(&self, partitions: I) -> Result<()>
    where
        I: IntoIterator<Item = (TopicPartition, StartOffset)>,
    {
        self.check_open()?;
        {
            let g = lock(&self.core.group);
            if g.subscription.is_some() {
                return Err(Error::config(
                    "assign() cannot be mixed with subscribe(); call unsubscribe() first",
                ));
            }
        }
        lock(&self.core.group).manual = true;
        let new: HashMap<TopicPartition, StartOffset> = partitions.into_iter().collect();
        {
            let mut guard = lock(&self.core.shared.state);
            let st = &mut *guard;
            let mut buffered = st.buffered;
            st.parts.retain(|tp, p| {
                if new.contains_key(tp) {
                    true
                } else {
                    p.release(&mut buffered);
                    false
                }
            });
            for (tp, start) in new {
                match st.parts.get_mut(&tp) {
                    Some(p) => {
                        if !matches!(start, StartOffset::Committed) || p.position.is_none() {
                            p.reset(start, &mut buffered);
                        }
                    }
                    None => {
                        st.parts.insert(tp, PartState::new(start));
                    }
                }
            }
            st.buffered = buffered;
        }
        self.core.shared.wake_fetcher.notify_one();
        Ok(())
    }

    /// Subscribes to `topics` through the group (`group.id` needed); the assignment arrives in
    /// the next [`poll`](Self::poll).
    pub fn subscribe<I, S>(&self, topics: I) -> Result<()>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let topics: Vec<String> = topics.into_iter().map(Into::into).collect();
        self.set_subscription(Subscription::Topics(topics))
    }

    /// Subscribes to every topic whose name matches `pattern` (anchored at both ends, like
    /// Java's), re-evaluated on every metadata refresh.
    ///
    /// With `group.protocol=consumer` the pattern is sent to the coordinator (KIP-848's
    /// `SubscribedTopicRegex`, RE2/J syntax), which matches it against the cluster's topics
    /// itself and picks up topics created later.
    pub fn subscribe_pattern(&self, pattern: &str) -> Result<()> {
        let re = regex::Regex::new(&format!("^(?:{pattern})$"))
            .map_err(|e| Error::config(format!("invalid topic pattern {pattern:?}: {e}")))?;
        self.set_subscription(Subscription::Pattern(re, pattern.to_owned()))
    }

    fn set_subscription(&self, sub: Subscription) -> Result<()> {
        self.check_open()?;
        let member = self.member()?;
        let mut g = lock(&self.core.group);
        if g.manual {
            return Err(Error::config(
                "subscribe() cannot be mixed with assign(); call unsubscribe() first",
            ));
        }
        g.subscription = Some(sub);
        member.request_rejoin();
        Ok(())
    }

    /// Sets the rebalance listener.
    pub fn set_rebalance_listener(&self, listener: Arc<dyn RebalanceListener>) {
        lock(&self.core.group).listener = Some(listener);
    }

    /// Drops the subscription or manual assignment (leaving the group if a member).
    pub async fn unsubscribe(&self) -> Result<()> {
        let (was_sub, listener) = {
            let mut g = lock(&self.core.group);
            let was = g.subscription.take().is_some();
            g.manual = false;
            (was, g.listener.clone())
        };
        let owned = self.assignment();
        if was_sub && !owned.is_empty() {
            self.auto_commit_sync(&owned).await;
            if let Some(l) = &listener {
                l.on_revoked(self, &owned).await;
            }
        }
        self.remove_partitions(&owned);
        if was_sub && let Some(m) = &self.core.shared.member {
            m.leave(true).await?;
        }
        Ok(())
    }

    /// The group member id and generation of the current membership (`None` without a
    /// group, generation -1 when not a member of a generation).
    pub fn group_metadata(&self) -> Option<(String, i32)> {
        self.core
            .shared
            .member
            .as_ref()
            .map(|m| (m.member_id(), m.generation()))
    }

    /// Whether this consumer commits its positions by itself: `enable.auto.commit` is on and
    /// [`disable_auto_commit`](Self::disable_auto_commit) was not called.
    pub fn auto_commit_enabled(&self) -> bool {
        matches!(self.core.shared.config.auto_commit, AutoCommit::Interval(_))
            && !self.core.shared.auto_commit_off.load(Ordering::Acquire)
    }

    /// Turns auto-commit off for the rest of this consumer's life, whatever
    /// `enable.auto.commit` says: from now on only explicit commits store offsets. The listener
    /// container calls this on the consumer it is given, as Spring's container overrides
    /// `enable.auto.commit`, because it commits per its ack mode and an auto-commit could store
    /// the position of records not handled yet.
    pub fn disable_auto_commit(&self) {
        self.core
            .shared
            .auto_commit_off
            .store(true, Ordering::Release);
    }

    /// Whether the next [`poll`](Consumer::poll) will rejoin the group (a rebalance is under
    /// way or the membership was lost), so it may revoke partitions: work whose offsets are
    /// not committed yet should be finished and committed first. Always false without a
    /// subscription.
    pub fn rebalance_pending(&self) -> bool {
        match &self.core.shared.member {
            Some(m) if lock(&self.core.group).subscription.is_some() => m.needs_rejoin(),
            _ => false,
        }
    }

    /// The partitions assigned now.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        lock(&self.core.shared.state)
            .parts
            .keys()
            .cloned()
            .collect()
    }

    /// The partitions assigned now, each with an id that is new each time the partition is
    /// assigned: a partition revoked or lost and assigned again (within one
    /// [`poll`](Self::poll), say, when an eager rebalance or a lost membership gives the same
    /// partitions back) has a new id, and starts over: from its committed offset, not paused,
    /// nothing buffered. Seeks, pauses and a manual [`assign`](Self::assign) that keeps a
    /// partition keep its id. Someone keeping per-partition state across polls (the listener
    /// container) compares the ids to see that the partition it knew was taken away.
    pub fn assignment_ids(&self) -> Vec<(TopicPartition, u64)> {
        lock(&self.core.shared.state)
            .parts
            .iter()
            .map(|(tp, p)| (tp.clone(), p.assignment_id))
            .collect()
    }

    fn remove_partitions(&self, tps: &[TopicPartition]) {
        let mut guard = lock(&self.core.shared.state);
        let st = &mut *guard;
        for tp in tps {
            if let Some(mut p) = st.parts.remove(tp) {
                p.release(&mut st.buffered);
            }
        }
        drop(guard);
        self.core.shared.wake_fetcher.notify_one();
    }

    fn with_part<T>(
        &self,
        tp: &TopicPartition,
        f: impl FnOnce(&mut PartState, &mut usize) -> T,
    ) -> Result<T> {
        let mut guard = lock(&self.core.shared.state);
        let st = &mut *guard;
        let p = st.parts.get_mut(tp).ok_or_else(|| {
            Error::with_message(
                ErrorKind::Config,
                format!("partition {tp} is not assigned to this consumer"),
            )
        })?;
        let r = f(p, &mut st.buffered);
        drop(guard);
        self.core.shared.wake_fetcher.notify_one();
        Ok(r)
    }

    /// Returns the next records (at most `max.poll.records`), waiting up to `timeout` for some
    /// to arrive. Runs group rebalances (and their callbacks) when needed.
    ///
    /// Per-partition failures (an offset out of range with `auto.offset.reset=none`, a corrupt
    /// batch, an authorization error) are reported once in [`ConsumerRecords::errors`], logged
    /// once, sent as [`ConsumerEvent::PartitionFailed`] and listed by
    /// [`failed_partitions`](Self::failed_partitions); the partition then stays where it is,
    /// and is not fetched, until the application seeks it.
    ///
    /// # Cancel safety
    ///
    /// `poll` is cancel safe: dropping its future (a `tokio::time::timeout` that fires, the
    /// losing branch of `tokio::select!`) loses no record and skips none. Records leave the
    /// consumer's buffer, and its positions move past them, only in the step that returns
    /// them, with no await in between; a cancelled `poll` has taken nothing, and the next one
    /// returns what it would have returned.
    ///
    /// A rebalance the cancelled `poll` was running is finished by the next one: a join cut
    /// short is made again, and an assignment already received is applied where it stopped
    /// (revoked partitions committed, `on_revoked`, the partitions moved, `on_assigned`). A
    /// [`RebalanceListener`] callback that was itself interrupted is called again, with the
    /// same partitions, so callbacks should be safe to repeat (a commit is). Until the next
    /// `poll`, [`assignment`](Self::assignment) may still list partitions being revoked.
    ///
    /// ```no_run
    /// # async fn demo(consumer: &rekafka::consumer::Consumer) -> rekafka::Result<()> {
    /// use std::time::Duration;
    /// let (tx, mut shutdown) = tokio::sync::oneshot::channel::<()>();
    /// # drop(tx);
    /// loop {
    ///     tokio::select! {
    ///         records = consumer.poll(Duration::from_secs(1)) => {
    ///             for r in records?.iter() {
    ///                 println!("{}@{}", r.partition, r.offset);
    ///             }
    ///         }
    ///         // Cancelling the poll here loses nothing.
    ///         _ = &mut shutdown => break,
    ///     }
    /// }
    /// consumer.close().await
    /// # }
    /// ```
    pub async fn poll(&self, timeout: Duration) -> Result<ConsumerRecords> {
        let span = tracing::debug_span!(
            "kafka.poll",
            client_id = self.core.shared.telemetry.client_id(),
            records = tracing::field::Empty
        );
        let records = self.poll_inner(timeout).instrument(span.clone()).await;
        if let Ok(r) = &records {
            span.record("records", r.len());
        }
        records
    }

    async fn poll_inner(&self, timeout: Duration) -> Result<ConsumerRecords> {
        let _guard = self.core.poll_lock.lock().await;
        self.check_open()?;
        let deadline = Instant::now() + timeout;
        if let Some(m) = &self.core.shared.member {
            m.polled();
        }
        self.maybe_auto_commit();
        self.ensure_group().await?;
        loop {
            let recs = self.collect();
            if !recs.is_empty() || !recs.errors.is_empty() {
                return Ok(recs);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(recs);
            }
            let group_event = async {
                match &self.core.shared.member {
                    Some(m) if lock(&self.core.group).subscription.is_some() => m.changed().await,
                    _ => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.core.shared.data_ready.notified() => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
                _ = group_event => {
                    self.ensure_group().await?;
                }
            }
            self.check_open()?;
        }
    }

    /// A [`Stream`](futures_core::Stream) of records, one at a time: use `StreamExt::next`
    /// (from `futures`) or [`RecordStream::next_record`] in a loop. It polls in batches;
    /// records of a batch are handed out one by one, and auto-commit (which runs inside
    /// `poll`) only commits a batch once the stream asks for the next one. The stream ends
    /// (`None`) when the consumer is closed; a partition error is an `Err` item, after which
    /// the stream goes on.
    ///
    /// # Cancel safety
    ///
    /// `stream.next()` is cancel safe: the poll it runs is kept inside the stream, so a
    /// `next()` dropped by `select!` or a timeout loses nothing, and the next call resumes
    /// it. Dropping the stream itself gives back the records it had taken but not handed out
    /// (their partitions are sought to the first of them), so a later `poll` or stream
    /// returns them; it cancels its poll in flight as [`poll`](Self::poll) describes.
    ///
    /// ```no_run
    /// # async fn demo(consumer: &rekafka::consumer::Consumer) -> rekafka::Result<()> {
    /// use futures_util::StreamExt;
    ///
    /// let mut stream = consumer.stream();
    /// while let Some(record) = stream.next().await {
    ///     let record = record?;
    ///     println!("{}-{}@{}: {:?}", record.topic, record.partition, record.offset, record.value);
    ///     consumer.commit_record(&record).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream(&self) -> RecordStream<'_> {
        RecordStream {
            consumer: self,
            pending: std::collections::VecDeque::new(),
            errors: std::collections::VecDeque::new(),
            in_flight: None,
        }
    }

    fn collect(&self) -> ConsumerRecords {
        let max = self.core.shared.config.max_poll_records;
        let mut out = ConsumerRecords::default();
        let released;
        let mut settled = false;
        {
            let mut guard = lock(&self.core.shared.state);
            let st = &mut *guard;
            let n = st.parts.len();
            if n == 0 {
                return out;
            }
            let start = st.rr % n;
            st.rr = st.rr.wrapping_add(1);
            let before = st.buffered;
            let mut total = 0;
            let keys: Vec<TopicPartition> = st.parts.keys().cloned().collect();
            for i in 0..n {
                if total >= max {
                    break;
                }
                let tp = &keys[(start + i) % n];
                let Some(p) = st.parts.get_mut(tp) else {
                    continue;
                };
                if p.paused {
                    continue;
                }
                if let Some(e) = &p.error {
                    // Reported once; the partition then waits for a seek.
                    if !p.error_reported {
                        p.error_reported = true;
                        out.errors.push((tp.clone(), e.clone()));
                    }
                    continue;
                }
                let mut v = Vec::new();
                fetcher::drain(tp, p, &mut st.buffered, max - total, &mut v);
                if !v.is_empty() {
                    p.telemetry(&self.core.shared.telemetry, tp)
                        .consumed(v.len());
                    p.publish_lag(&self.core.shared.telemetry, tp);
                }
                // A deferred OFFSET_OUT_OF_RANGE applies once the records before it are out.
                settled |= fetcher::settle_out_of_range(
                    tp,
                    p,
                    &mut st.buffered,
                    self.core.shared.config.auto_offset_reset,
                    &self.core.shared.events,
                );
                // A corrupt batch found while draining.
                fetcher::announce_failure(tp, p, &self.core.shared.events);
                if !v.is_empty() {
                    total += v.len();
                    out.parts.push((tp.clone(), v));
                }
            }
            released = st.buffered < before || settled;
        }
        if released {
            self.core.shared.wake_fetcher.notify_one();
        }
        out
    }

    /// Commits (with auto-commit), leaves the group (a static member stays), stops the
    /// background tasks. Later calls fail with [`ErrorKind::Closed`].
    pub async fn close(&self) -> Result<()> {
        if self.core.shared.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let owned = self.assignment();
        self.auto_commit_sync(&owned).await;
        let sub = lock(&self.core.group).subscription.is_some();
        if sub && !owned.is_empty() {
            let listener = lock(&self.core.group).listener.clone();
            if let Some(l) = listener {
                l.on_revoked(self, &owned).await;
            }
        }
        self.core.shared.closed.store(true, Ordering::Release);
        self.core.shutdown.stop();
        if let Some(m) = &self.core.shared.member {
            m.close().await;
        }
        Ok(())
    }
}

impl crate::task::Closeable for Core {
    fn close_now(self: Arc<Self>) -> crate::task::CloseFuture {
        Box::pin(async move {
            let consumer = Consumer { core: self };
            if let Err(e) = consumer.close().await {
                tracing::debug!(error = %e, "closing a consumer on client close failed");
            }
        })
    }
}

impl Drop for Core {
    fn drop(&mut self) {
        // The fetcher reads `closed` between rounds; the signal's own drop wakes it.
        self.shared.closed.store(true, Ordering::Release);
    }
}

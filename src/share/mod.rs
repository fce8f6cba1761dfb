//! Share groups (KIP-932, "queues for Kafka"): [`ShareConsumer`].
//!
//! Several members of a share group take records from the same partitions; the broker tracks
//! each record: acquired by one member under a time-limited *acquisition lock*, then accepted,
//! released (delivered again, its delivery count one higher) or rejected (never delivered
//! again). A record whose lock expires, or that was released, is delivered again until the
//! group's delivery count limit (`share.delivery.count.limit`, broker default 5); then it is
//! archived.
//!
//! The consumer speaks the three RPCs: ShareGroupHeartbeat (membership, in a background task:
//! `membership.rs`), ShareFetch with share sessions (one per leader broker: session epoch 0
//! opens it with every partition, later requests add new partitions and forget removed ones,
//! and carry the acknowledgements of records fetched from that broker) and ShareAcknowledge
//! (acknowledgements with no fetch to carry them: [`commit_sync`](ShareConsumer::commit_sync),
//! [`commit_async`](ShareConsumer::commit_async), partitions no longer assigned, and
//! [`close`](ShareConsumer::close), whose final request (epoch -1) closes each session).
//!
//! A share consumer made by a [`Client`](crate::Client), and a share container started over it,
//! are closed by [`Client::close`](crate::Client::close) as [`ShareConsumer::close`] closes them.
//!
//! Semantics differ from a consumer group: records of a partition may go to several members,
//! so there is no per-partition order across the group and no seek; there are no offsets to
//! commit, only acknowledgements. Where the group starts reading a partition is the group
//! config `share.auto.offset.reset` (broker default `latest`: records written before the
//! group first reads a partition are not delivered).
//!
//! ```no_run
//! # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
//! use std::time::Duration;
//! use rekafka::share::{AcknowledgeType, AcknowledgementMode, ShareConsumerConfig};
//!
//! let mut consumer = client.share_consumer(
//!     ShareConsumerConfig::new("workers").with_acknowledgement_mode(AcknowledgementMode::Explicit),
//! )?;
//! consumer.subscribe(["jobs"]);
//! for _ in 0..10 {
//!     for record in consumer.poll(Duration::from_secs(1)).await? {
//!         let ok = record.value.as_deref().is_some_and(|v| !v.is_empty());
//!         let ack = if ok { AcknowledgeType::Accept } else { AcknowledgeType::Reject };
//!         consumer.acknowledge(&record, ack)?;
//!     }
//!     for (partition, result) in consumer.commit_sync().await? {
//!         if let Err(e) = result {
//!             eprintln!("{partition}: acknowledgements failed: {e}");
//!         }
//!     }
//! }
//! consumer.close().await?;
//! # Ok(())
//! # }
//! ```

mod acks;
mod config;
mod fetch;
mod membership;
mod record;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    ApiKey, GroupId, ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest,
    ShareFetchResponse, share_acknowledge_request, share_fetch_request,
};
use kafka_protocol::protocol::StrBytes;
use tokio::task::JoinSet;
use uuid::Uuid;

pub use config::{AcknowledgementMode, ShareConsumerConfig};
pub use record::{AcknowledgeType, AcknowledgementOutcome, ShareRecord};

use crate::cluster::Cluster;
use crate::connection::RetryDelay;
use crate::consumer::ConsumerRecord;
use crate::group::TopicPartition;
use crate::protocol::record::RecordBatches;
use crate::task::{CloseFuture, CloseLink, CloseStage, Closeable, StopListener, StopSignal};
use crate::telemetry::{SharePartitionTelemetry, ShareTelemetry};
use crate::{Error, ErrorKind, KafkaCode, Result};
use membership::{MemberIdentity, Membership};

use acks::*;

/// The acknowledge type of offsets that hold no record (compacted away, control records).
const GAP: i8 = 0;

/// Session epoch that closes a share session.
const FINAL_EPOCH: i32 = -1;

/// At most this many acknowledgement outcomes wait for
/// [`take_acknowledgement_outcomes`](ShareConsumer::take_acknowledgement_outcomes); older ones
/// are dropped (and counted) past it.
const MAX_QUEUED_OUTCOMES: usize = 4096;

type PartKey = (Uuid, i32);

/// Where an acquired record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Acq {
    /// Fetched, not yet returned by a poll.
    Buffered,
    /// Returned by a poll, not yet acknowledged.
    Delivered,
}

#[derive(Debug)]
struct Part {
    tp: TopicPartition,
    /// In the member's current assignment.
    assigned: bool,
    /// The broker whose share session delivered the acquired records (their acknowledgements
    /// go there).
    node: Option<i32>,
    /// Acquired records not acknowledged yet.
    acquired: BTreeMap<i64, Acq>,
    /// Acknowledgements not sent yet: offset → wire type.
    pending: BTreeMap<i64, i8>,
    /// The partition's metrics.
    tel: SharePartitionTelemetry,
}

#[derive(Debug, Default)]
struct Session {
    /// The epoch of the next request (0: the session is not open).
    epoch: i32,
    /// The partitions in the broker's session.
    partitions: BTreeSet<PartKey>,
}

fn next_epoch(epoch: i32) -> i32 {
    if epoch == i32::MAX { 1 } else { epoch + 1 }
}

/// Acknowledgements in one request: per partition, the non-gap offsets.
type SentAcks = Vec<(PartKey, TopicPartition, Vec<i64>)>;

/// A ShareAcknowledge to send (or sent).
struct AckJob {
    node: i32,
    epoch: i32,
    acks: SentAcks,
}

/// A finished ShareAcknowledge.
struct AckDone {
    job: AckJob,
    result: Result<ShareAcknowledgeResponse>,
    /// From sending to the answer.
    took: Duration,
}

/// A finished ShareFetch.
struct FetchDone {
    node: i32,
    epoch: i32,
    added: BTreeSet<PartKey>,
    forgotten: BTreeSet<PartKey>,
    acks: SentAcks,
    result: Result<ShareFetchResponse>,
    /// From sending to the answer.
    took: Duration,
}

/// The per-partition results of a commit: `Ok` if the broker took every acknowledgement of the
/// partition, else the first error.
pub type CommitResults = BTreeMap<TopicPartition, Result<()>>;

type Callback = Box<dyn FnMut(&AcknowledgementOutcome) + Send>;

/// A member of a share group (Java's `KafkaShareConsumer`). Made by
/// [`Client::share_consumer`](crate::Client::share_consumer) or [`ShareConsumer::new`].
///
/// [`poll`](Self::poll) returns acquired records with their delivery counts; each is
/// acknowledged (accept, release, reject) explicitly with [`acknowledge`](Self::acknowledge)
/// or implicitly (see [`AcknowledgementMode`]). Acknowledgements ride on the next ShareFetch to
/// the record's broker where there is one, else go in a ShareAcknowledge; their outcomes go to
/// the [callback](Self::set_acknowledgement_commit_callback) and to
/// [`take_acknowledgement_outcomes`](Self::take_acknowledgement_outcomes), and
/// [`commit_sync`](Self::commit_sync) returns them per partition.
///
/// Memory is bounded: a poll fetches only when the records fetched before are all returned,
/// and asks each broker for at most `max.poll.records` records. The heartbeat task stops on
/// [`close`](Self::close) and on drop (a dropped, unclosed consumer leaves the group on a
/// best-effort basis; its acquired records come back when their locks expire).
///
/// [`close`](Self::close) takes `&self`; the other calls take `&mut self` (one task drives the
/// consumer). A share consumer made by a [`Client`](crate::Client) is also closed by
/// [`Client::close`](crate::Client::close) (weakly held: the client keeps it alive no longer
/// than the application does); a poll in progress then returns [`ErrorKind::Closed`] after its
/// fetch round, and every later call fails with it.
pub struct ShareConsumer {
    core: Arc<Core>,
    /// The subscription (the state holds it too), kept here so that
    /// [`subscription`](Self::subscription) can lend it.
    subscription: Vec<String>,
}

/// The share consumer's state, behind an `Arc` so that the [`Client`](crate::Client) that made
/// it can close it ([`Client::close`](crate::Client::close), weakly) while the application owns
/// the [`ShareConsumer`]. The state sits behind an async mutex because a poll, a commit and a
/// close hold it across their requests; the application's own calls never wait for it (they
/// take `&mut self`, one at a time), so the only call that ever finds it taken is a close by
/// the client, or an application call during one, which then reads as closed.
struct Core {
    config: ShareConsumerConfig,
    identity: MemberIdentity,
    /// Dropped outcomes: read without the state (a close may hold it).
    outcomes_dropped: Arc<AtomicU64>,
    state: tokio::sync::Mutex<Inner>,
    /// Stopped once a close starts: later calls fail with [`ErrorKind::Closed`] and a poll in
    /// progress stops waiting.
    closing: StopSignal,
    closing_rx: StopListener,
    /// The client that made the consumer (empty otherwise): a container started over the
    /// consumer registers with it.
    link: std::sync::Mutex<CloseLink>,
}

/// What the consumer holds and the requests change (see [`Core`]).
struct Inner {
    cluster: Cluster,
    config: ShareConsumerConfig,
    membership: Membership,
    subscription: Vec<String>,
    parts: HashMap<PartKey, Part>,
    /// Acquired records not yet returned, with when they were fetched.
    buffer: VecDeque<(ShareRecord, PartKey, Instant)>,
    sessions: BTreeMap<i32, Session>,
    lock_timeout: Option<Duration>,
    outcomes: VecDeque<AcknowledgementOutcome>,
    outcomes_dropped: Arc<AtomicU64>,
    callback: Option<Callback>,
    async_commits: JoinSet<AckDone>,
    /// Topics whose leaders must be looked up again.
    stale: BTreeSet<Arc<str>>,
    backoff: RetryDelay,
    closed: bool,
    telemetry: ShareTelemetry,
}
impl fmt::Debug for ShareConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShareConsumer")
            .field("group_id", &self.core.config.group_id)
            .field("member_id", &self.core.identity.member_id())
            .field("subscription", &self.subscription)
            .field("closed", &self.core.closing_rx.is_stopped())
            .finish_non_exhaustive()
    }
}

fn closed_error() -> Error {
    Error::with_message(ErrorKind::Closed, "share consumer closed")
}

fn broker_error(code: KafkaCode, message: Option<&StrBytes>, api: ApiKey) -> Error {
    let e = Error::broker(code).api(api);
    match message {
        Some(m) if !m.is_empty() => e.message(m.to_string()),
        _ => e,
    }
}

fn is_transport(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Io(_) | ErrorKind::Disconnected | ErrorKind::Timeout
    )
}

/// Fatal for the consumer: authorization and requests the broker will never take.
fn is_fatal_code(code: KafkaCode) -> bool {
    matches!(
        code,
        KafkaCode::GroupAuthorizationFailed
            | KafkaCode::TopicAuthorizationFailed
            | KafkaCode::InvalidRequest
            | KafkaCode::UnsupportedVersion
    )
}

impl ShareConsumer {
    /// A share consumer on `cluster`. Starts the heartbeat task (idle until
    /// [`subscribe`](Self::subscribe)); must be called inside a tokio runtime. Fails with
    /// [`ErrorKind::Config`] for bad settings (no `group.id`).
    pub fn new(cluster: Cluster, config: ShareConsumerConfig) -> Result<ShareConsumer> {
        let inner = Inner::new(cluster, config.clone())?;
        let (closing, closing_rx) = StopSignal::new();
        Ok(ShareConsumer {
            core: Arc::new(Core {
                config,
                identity: inner.membership.identity(),
                outcomes_dropped: inner.outcomes_dropped.clone(),
                state: tokio::sync::Mutex::new(inner),
                closing,
                closing_rx,
                link: std::sync::Mutex::new(CloseLink::default()),
            }),
            subscription: Vec::new(),
        })
    }

    /// Registers the consumer with the client that made it, for
    /// [`Client::close`](crate::Client::close), and keeps the link for a container started
    /// over it.
    pub(crate) fn set_close_link(&self, link: CloseLink) {
        link.register(CloseStage::Consumers, &self.core);
        *self.core.link.lock().unwrap_or_else(|e| e.into_inner()) = link;
    }

    /// The link to the client that made the consumer (empty if none).
    pub(crate) fn close_link(&self) -> CloseLink {
        self.core
            .link
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The settings.
    pub fn config(&self) -> &ShareConsumerConfig {
        &self.core.config
    }

    /// The member id this consumer chose (KIP-1082).
    pub fn member_id(&self) -> String {
        self.core.identity.member_id()
    }

    /// The member epoch (0 until the coordinator answered the first heartbeat).
    pub fn member_epoch(&self) -> i32 {
        self.core.identity.epoch()
    }

    /// Subscribes to `topics` (replacing the subscription); the heartbeat sends it at once.
    /// Partitions of topics no longer subscribed are not fetched from again, and their fetched
    /// records not yet returned are released. An empty list is
    /// [`unsubscribe`](Self::unsubscribe). No effect on the group once the consumer is closed.
    pub fn subscribe<I, S>(&mut self, topics: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut topics: Vec<String> = topics.into_iter().map(|t| t.as_ref().to_owned()).collect();
        topics.sort();
        topics.dedup();
        self.subscription = topics.clone();
        if let Ok(mut state) = self.core.open_state() {
            state.subscribe(topics);
        }
    }

    /// Subscribes to nothing: the member leaves the group (a heartbeat with epoch -1); a later
    /// [`subscribe`](Self::subscribe) joins again.
    pub fn unsubscribe(&mut self) {
        self.subscribe(std::iter::empty::<&str>());
    }

    /// The subscribed topics, sorted.
    pub fn subscription(&self) -> &[String] {
        &self.subscription
    }

    /// The partitions the coordinator assigned to this member (the topics whose names are
    /// known), sorted. Empty once the consumer is closed.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.core
            .open_state()
            .map(|state| state.assignment())
            .unwrap_or_default()
    }

    /// The acquisition lock duration the brokers last reported (ShareFetch
    /// `AcquisitionLockTimeoutMs`), once a fetch was answered. A record not acknowledged
    /// within it after its fetch becomes available to other members again. `None` while a
    /// close is in progress.
    pub fn acquisition_lock_timeout(&self) -> Option<Duration> {
        self.core.state.try_lock().ok().and_then(|s| s.lock_timeout)
    }

    /// Calls `callback` with the outcome of every acknowledgement sent to a broker (piggy-backed
    /// on a fetch, by a commit or by close), in the task that calls the consumer (Java's
    /// `AcknowledgementCommitCallback`; a close by the [`Client`](crate::Client) calls it in
    /// the closing task). Ignored once the consumer is closed.
    pub fn set_acknowledgement_commit_callback(
        &mut self,
        callback: impl FnMut(&AcknowledgementOutcome) + Send + 'static,
    ) {
        if let Ok(mut state) = self.core.open_state() {
            state.callback = Some(Box::new(callback));
        }
    }

    /// The outcomes of acknowledgements sent by polls, [`commit_async`](Self::commit_async)
    /// and [`close`](Self::close) since the last call (not those
    /// [`commit_sync`](Self::commit_sync) returned). At most 4096 are kept; see
    /// [`dropped_acknowledgement_outcomes`](Self::dropped_acknowledgement_outcomes). Those of a
    /// close are here once it has finished (empty while it runs).
    pub fn take_acknowledgement_outcomes(&mut self) -> Vec<AcknowledgementOutcome> {
        match self.core.state.try_lock() {
            Ok(mut state) => state.outcomes.drain(..).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// How many outcomes were dropped because nobody took them in time.
    pub fn dropped_acknowledgement_outcomes(&self) -> u64 {
        self.core.outcomes_dropped.load(Ordering::Relaxed)
    }

    /// Records an acknowledgement of a record the last poll returned; it is sent with the next
    /// fetch from the record's broker or the next commit. Fails with
    /// [`ErrorKind::InvalidState`] if the record is not awaiting acknowledgement from this
    /// consumer (not returned by it, already acknowledged, or dropped by a rebalance), with
    /// [`ErrorKind::Closed`] once the consumer is closed.
    pub fn acknowledge(&mut self, record: &ShareRecord, ack: AcknowledgeType) -> Result<()> {
        self.core.open_state()?.acknowledge(record, ack)
    }

    /// Returns acquired records: those fetched before and not yet returned, else the result of
    /// fetching from every assigned partition's leader, waiting up to `timeout` for records
    /// (an empty batch when none came). Returns at most `max.poll.records` records.
    ///
    /// First settles the previous batch: in implicit mode its records not acknowledged are
    /// accepted; in explicit mode every one must have been acknowledged, else the call fails
    /// with [`ErrorKind::InvalidState`] (the records can still be acknowledged). Pending
    /// acknowledgements ride on the fetches. Fails with the membership's fatal error, or
    /// [`ErrorKind::Closed`] (also when a close starts during the poll: the poll returns after
    /// its fetch round in progress, and the close releases what it fetched).
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ShareRecord>> {
        let mut state = self.core.lock_open().await?;
        state.poll(timeout, self.core.closing_rx.clone()).await
    }

    /// Sends every pending acknowledgement (in implicit mode, first accepting the records the
    /// last poll returned) with ShareAcknowledge and waits for the answers, at most
    /// `default.api.timeout.ms`. Returns each partition's result; an acknowledgement of a
    /// record whose acquisition lock expired fails with `INVALID_RECORD_STATE` (the broker
    /// delivers the record again). Outcomes also go to the callback. Fails with
    /// [`ErrorKind::Closed`] once the consumer is closed.
    pub async fn commit_sync(&mut self) -> Result<CommitResults> {
        self.core.lock_open().await?.commit_sync().await
    }

    /// As [`commit_sync`](Self::commit_sync) without waiting: the outcomes go to the callback
    /// and [`take_acknowledgement_outcomes`](Self::take_acknowledgement_outcomes) once the
    /// next poll, commit or close collects them (a poll waits for them before its next fetch,
    /// so that each share session sees its requests in order).
    pub fn commit_async(&mut self) -> Result<()> {
        self.core.open_state()?.commit_async()
    }

    /// Leaves the group cleanly (Java's `KafkaShareConsumer.close`): sends the pending
    /// acknowledgements and releases every acquired record not acknowledged (the last poll's
    /// records too, in implicit mode, as Java's consumer does), closing each share session
    /// (ShareAcknowledge with epoch -1), then leaves the group (heartbeat with epoch -1) and
    /// stops the heartbeat task. Bounded by `default.api.timeout.ms`. Later calls fail with
    /// [`ErrorKind::Closed`]; closing twice is a no-op (a close while another runs, e.g.
    /// [`Client::close`](crate::Client::close)'s, waits for it).
    pub async fn close(&self) -> Result<()> {
        self.core.close().await
    }
}

impl Core {
    /// The state for a call that does not wait: `Closed` once a close started (a close holds
    /// the state; the application's calls never hold it while another runs).
    fn open_state(&self) -> Result<tokio::sync::MutexGuard<'_, Inner>> {
        if self.closing_rx.is_stopped() {
            return Err(closed_error());
        }
        self.state.try_lock().map_err(|_| closed_error())
    }

    /// The state for a call that waits (poll, commit): `Closed` once a close started.
    async fn lock_open(&self) -> Result<tokio::sync::MutexGuard<'_, Inner>> {
        if self.closing_rx.is_stopped() {
            return Err(closed_error());
        }
        let state = self.state.lock().await;
        if state.closed {
            return Err(closed_error());
        }
        Ok(state)
    }

    /// [`ShareConsumer::close`]: marks the consumer closing (a poll in progress stops waiting
    /// and gives the state back), then closes the state.
    async fn close(&self) -> Result<()> {
        self.closing.stop();
        self.state.lock().await.close().await
    }
}

impl Closeable for Core {
    fn close_now(self: Arc<Self>) -> CloseFuture {
        Box::pin(async move {
            if let Err(e) = self.close().await {
                tracing::debug!(group = %self.config.group_id, error = %e,
                    "closing a share consumer on client close failed");
            }
        })
    }
}

impl Inner {
    fn new(cluster: Cluster, config: ShareConsumerConfig) -> Result<Inner> {
        config.validate()?;
        let membership = Membership::start(
            cluster.clone(),
            config.group_id.clone(),
            config.client_rack.clone(),
            (config.retry_backoff, config.retry_backoff_max),
            config.max_poll_interval,
        );
        let backoff = RetryDelay::new(config.retry_backoff, config.retry_backoff_max);
        let telemetry = ShareTelemetry::new(&cluster.config().connection.client_id);
        Ok(Inner {
            cluster,
            config,
            membership,
            subscription: Vec::new(),
            parts: HashMap::new(),
            buffer: VecDeque::new(),
            sessions: BTreeMap::new(),
            lock_timeout: None,
            outcomes: VecDeque::new(),
            outcomes_dropped: Arc::new(AtomicU64::new(0)),
            callback: None,
            async_commits: JoinSet::new(),
            stale: BTreeSet::new(),
            backoff,
            closed: false,
            telemetry,
        })
    }

    /// [`ShareConsumer::subscribe`] with `topics` sorted and deduplicated.
    fn subscribe(&mut self, topics: Vec<String>) {
        self.subscription = topics.clone();
        self.membership.subscribe(topics);
        // Fetched records of topics no longer subscribed are released, not handed out; their
        // partitions are not fetched from again (even before the coordinator's new assignment).
        let subscription = &self.subscription;
        let parts = &mut self.parts;
        self.buffer.retain(|(r, key, _)| {
            let keep = subscription.iter().any(|t| **t == *r.topic);
            if !keep && let Some(p) = parts.get_mut(key) {
                p.acquired.remove(&r.offset);
                p.pending.insert(r.offset, AcknowledgeType::Release.wire());
            }
            keep
        });
    }

    fn assignment(&self) -> Vec<TopicPartition> {
        let mut out: Vec<TopicPartition> = self
            .parts
            .values()
            .filter(|p| p.assigned)
            .map(|p| p.tp.clone())
            .collect();
        out.sort();
        out
    }

    /// [`ShareConsumer::acknowledge`].
    fn acknowledge(&mut self, record: &ShareRecord, ack: AcknowledgeType) -> Result<()> {
        if self.closed {
            return Err(closed_error());
        }
        let part = self
            .parts
            .values_mut()
            .find(|p| p.tp.partition == record.partition && *p.tp.topic == *record.topic);
        let Some(part) = part else {
            return Err(not_awaiting(record));
        };
        match part.acquired.get(&record.offset) {
            Some(Acq::Delivered) => {
                part.acquired.remove(&record.offset);
                part.pending.insert(record.offset, ack.wire());
                part.tel.acknowledged(ack.wire());
                Ok(())
            }
            _ => Err(not_awaiting(record)),
        }
    }

    /// [`ShareConsumer::poll`]; returns `Closed` as soon as `closing` says a close started
    /// (between fetch rounds: a round in flight is finished so that the sessions stay in step
    /// with the brokers, and the close releases what it fetched).
    async fn poll(
        &mut self,
        timeout: Duration,
        mut closing: StopListener,
    ) -> Result<Vec<ShareRecord>> {
        if self.closed {
            return Err(closed_error());
        }
        self.membership.polled();
        self.harvest_async_commits(false).await;
        self.settle_delivered()?;
        let deadline = Instant::now() + timeout;
        let mut watch = self.membership.watch();
        loop {
            if closing.is_stopped() {
                return Err(closed_error());
            }
            self.membership.polled();
            self.drop_expired();
            if !self.buffer.is_empty() {
                if self.has_pending() {
                    let outcomes = self.send_acknowledgements(false, None).await;
                    self.deliver(outcomes, true);
                }
                return Ok(self.hand_out());
            }
            let view = self.membership.view();
            if let Some(e) = view.fatal {
                return Err(e);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if view.assignment.is_empty() && !self.has_pending() && !self.has_sessions() {
                if remaining.is_zero() {
                    return Ok(Vec::new());
                }
                watch.mark_unchanged();
                tokio::select! {
                    _ = tokio::time::timeout(remaining, watch.changed()) => {}
                    () = closing.stopped() => {}
                }
                continue;
            }
            let failed = self
                .fetch_round(remaining.min(self.config.fetch_max_wait))
                .await?;
            if self.buffer.is_empty() {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    return Ok(Vec::new());
                }
                if failed {
                    self.backoff.failed();
                    tokio::select! {
                        () = tokio::time::sleep(self.backoff.delay().min(remaining)) => {}
                        () = closing.stopped() => {}
                    }
                } else {
                    self.backoff.reset();
                }
            }
        }
    }

    /// [`ShareConsumer::commit_sync`].
    async fn commit_sync(&mut self) -> Result<CommitResults> {
        if self.closed {
            return Err(closed_error());
        }
        self.harvest_async_commits(true).await;
        if self.config.acknowledgement_mode == AcknowledgementMode::Implicit {
            self.accept_delivered();
        }
        let deadline = Instant::now() + self.config.default_api_timeout;
        let outcomes = self.send_acknowledgements(false, Some(deadline)).await;
        self.deliver(outcomes.clone(), false);
        let mut results = CommitResults::new();
        for o in outcomes {
            let entry = results.entry(o.partition).or_insert(Ok(()));
            if entry.is_ok() {
                *entry = o.result;
            }
        }
        Ok(results)
    }

    /// [`ShareConsumer::commit_async`].
    fn commit_async(&mut self) -> Result<()> {
        if self.closed {
            return Err(closed_error());
        }
        if self.config.acknowledgement_mode == AcknowledgementMode::Implicit {
            self.accept_delivered();
        }
        let (jobs, failed) = self.ack_jobs(false);
        self.deliver(failed, true);
        for (job, req) in jobs {
            let cluster = self.cluster.clone();
            self.async_commits
                .spawn(async move { run_ack_job(cluster, job, req).await });
        }
        Ok(())
    }

    /// [`ShareConsumer::close`] (a no-op the second time).
    async fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let deadline = Instant::now() + self.config.default_api_timeout;
        self.harvest_async_commits(true).await;
        self.closed = true;
        self.buffer.clear();
        for part in self.parts.values_mut() {
            for (offset, _) in std::mem::take(&mut part.acquired) {
                if let std::collections::btree_map::Entry::Vacant(v) = part.pending.entry(offset) {
                    v.insert(AcknowledgeType::Release.wire());
                    part.tel.acknowledged(AcknowledgeType::Release.wire());
                }
            }
        }
        let outcomes = self.send_acknowledgements(true, Some(deadline)).await;
        let failed = outcomes.iter().find_map(|o| o.result.clone().err());
        self.deliver(outcomes, true);
        self.sessions.clear();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let left = self
            .membership
            .leave(remaining.max(Duration::from_millis(1)))
            .await;
        if let Some(e) = failed {
            tracing::warn!(group = %self.config.group_id, error = %e,
                "some acknowledgements at close failed; those records come back when their locks expire");
        }
        left
    }

    // ---------------------------------------------------------------------------- internals

    fn has_pending(&self) -> bool {
        self.parts.values().any(|p| !p.pending.is_empty())
    }

    fn has_sessions(&self) -> bool {
        self.sessions
            .values()
            .any(|s| s.epoch > 0 && !s.partitions.is_empty())
    }

    fn accept_delivered(&mut self) {
        for part in self.parts.values_mut() {
            let delivered: Vec<i64> = part
                .acquired
                .iter()
                .filter(|(_, a)| **a == Acq::Delivered)
                .map(|(o, _)| *o)
                .collect();
            for o in delivered {
                part.acquired.remove(&o);
                part.pending.insert(o, AcknowledgeType::Accept.wire());
                part.tel.acknowledged(AcknowledgeType::Accept.wire());
            }
        }
    }

    fn settle_delivered(&mut self) -> Result<()> {
        match self.config.acknowledgement_mode {
            AcknowledgementMode::Implicit => {
                self.accept_delivered();
                Ok(())
            }
            AcknowledgementMode::Explicit => {
                let unacked = self
                    .parts
                    .values()
                    .map(|p| {
                        p.acquired
                            .values()
                            .filter(|a| **a == Acq::Delivered)
                            .count()
                    })
                    .sum::<usize>();
                if unacked > 0 {
                    Err(Error::with_message(
                        ErrorKind::InvalidState,
                        format!(
                            "{unacked} records of the last poll are not acknowledged; in explicit \
                             acknowledgement mode every record must be acknowledged before the next poll"
                        ),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Drops buffered records whose acquisition lock has expired: the broker gives them to
    /// others, and acknowledging them would fail.
    fn drop_expired(&mut self) {
        let Some(lock) = self.lock_timeout else {
            return;
        };
        let now = Instant::now();
        let parts = &mut self.parts;
        self.buffer.retain(|(r, key, at)| {
            let live = now.saturating_duration_since(*at) < lock;
            if !live {
                if let Some(p) = parts.get_mut(key) {
                    p.acquired.remove(&r.offset);
                }
                tracing::debug!(topic = %r.topic, partition = r.partition, offset = r.offset,
                    "acquisition lock expired before the record was polled");
            }
            live
        });
    }

    fn hand_out(&mut self) -> Vec<ShareRecord> {
        let n = self.buffer.len().min(self.config.max_poll_records);
        let mut out = Vec::with_capacity(n);
        for (record, key, _) in self.buffer.drain(..n) {
            if let Some(p) = self.parts.get_mut(&key) {
                p.acquired.insert(record.offset, Acq::Delivered);
                p.tel.acquired(1);
            }
            out.push(record);
        }
        out
    }

    fn deliver(&mut self, outcomes: Vec<AcknowledgementOutcome>, queue: bool) {
        for o in outcomes {
            if let Some(cb) = self.callback.as_mut() {
                cb(&o);
            }
            if let Err(e) = &o.result {
                if let Some(p) = self.parts.values().find(|p| p.tp == o.partition) {
                    p.tel.acknowledgements_failed(o.offsets.len());
                }
                tracing::debug!(partition = %o.partition, offsets = o.offsets.len(), error = %e,
                    "share acknowledgements failed");
            }
            if queue {
                if self.outcomes.len() >= MAX_QUEUED_OUTCOMES {
                    self.outcomes.pop_front();
                    self.outcomes_dropped.fetch_add(1, Ordering::Relaxed);
                }
                self.outcomes.push_back(o);
            }
        }
    }
}

fn not_awaiting(record: &ShareRecord) -> Error {
    Error::with_message(
        ErrorKind::InvalidState,
        format!(
            "record {}-{}@{} is not awaiting acknowledgement from this consumer (not returned \
             by its last poll, already acknowledged, or its acquisition lock expired)",
            record.topic, record.partition, record.offset
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::fetch::take_records;
    use super::*;
    use bytes::Bytes;

    #[test]
    fn ack_batches_merge_runs_of_one_type() {
        let pending: BTreeMap<i64, i8> = [(1, 1), (2, 1), (3, 2), (4, 2), (6, 2), (7, 0)]
            .into_iter()
            .collect();
        assert_eq!(
            ack_batches(&pending),
            vec![(1, 2, 1), (3, 4, 2), (6, 6, 2), (7, 7, 0)]
        );
        assert!(ack_batches(&BTreeMap::new()).is_empty());
    }

    fn part() -> Part {
        Part {
            tp: TopicPartition::new("t", 0),
            assigned: true,
            node: Some(1),
            acquired: BTreeMap::new(),
            pending: BTreeMap::new(),
            tel: ShareTelemetry::new("test").partition("t", 0),
        }
    }

    fn partition_data(
        records: Bytes,
        acquired: &[(i64, i64, i16)],
    ) -> kafka_protocol::messages::share_fetch_response::PartitionData {
        use kafka_protocol::messages::share_fetch_response::{AcquiredRecords, PartitionData};
        PartitionData::default()
            .with_records(Some(records))
            .with_acquired_records(
                acquired
                    .iter()
                    .map(|(f, l, dc)| {
                        AcquiredRecords::default()
                            .with_first_offset(*f)
                            .with_last_offset(*l)
                            .with_delivery_count(*dc)
                    })
                    .collect(),
            )
    }

    /// A batch at `base` with `n` records `v<offset>`, then a transaction marker after it.
    fn log(base: i64, n: usize) -> Bytes {
        use crate::protocol::record::{BatchBuilder, ControlType, encode_transaction_marker};
        let mut b = BatchBuilder::new().with_base_offset(base);
        for i in 0..n {
            let v = format!("v{}", base + i as i64);
            b.append(1000, None, Some(v.as_bytes()), &[]).unwrap();
        }
        let mut out = b.build().unwrap().to_vec();
        let marker =
            encode_transaction_marker(base + n as i64, 7, 0, 1000, ControlType::Commit, 0).unwrap();
        out.extend_from_slice(&marker);
        Bytes::from(out)
    }

    #[test]
    fn acquired_records_are_buffered_with_their_delivery_counts_and_gaps_acknowledged() {
        let mut p = part();
        let mut buffer = VecDeque::new();
        let key = (Uuid::nil(), 0);
        // Records 10..=14 and a marker at 15; acquired: 8..=11 (delivery 1), 13..=16
        // (delivery 3). 12 was not acquired (another member's); 8, 9 hold no record
        // (compacted), 15 is the marker, 16 is past the data.
        let pd = partition_data(log(10, 5), &[(8, 11, 1), (13, 16, 3)]);
        take_records(&mut p, key, &pd, Instant::now(), &mut buffer);
        let got: Vec<(i64, u16, Option<Bytes>)> = buffer
            .iter()
            .map(|(r, _, _)| (r.offset, r.delivery_count, r.value.clone()))
            .collect();
        let v = |o: i64| Some(Bytes::from(format!("v{o}")));
        assert_eq!(
            got,
            vec![
                (10, 1, v(10)),
                (11, 1, v(11)),
                (13, 3, v(13)),
                (14, 3, v(14))
            ]
        );
        assert_eq!(
            p.pending,
            [(8, GAP), (9, GAP), (15, GAP), (16, GAP)]
                .into_iter()
                .collect()
        );
        assert_eq!(p.acquired.len(), 4);
        assert!(p.acquired.values().all(|a| *a == Acq::Buffered));
    }

    #[test]
    fn a_corrupt_batch_releases_its_acquired_records() {
        let mut p = part();
        let mut buffer = VecDeque::new();
        let mut bytes = log(0, 3).to_vec();
        // Break the first batch's CRC.
        bytes[20] ^= 0xff;
        let pd = partition_data(Bytes::from(bytes), &[(0, 2, 1)]);
        take_records(&mut p, (Uuid::nil(), 0), &pd, Instant::now(), &mut buffer);
        assert!(buffer.is_empty());
        assert_eq!(
            p.pending,
            (0..=2)
                .map(|o| (o, AcknowledgeType::Release.wire()))
                .collect()
        );
    }

    #[test]
    fn session_epochs_wrap_to_one() {
        assert_eq!(next_epoch(0), 1);
        assert_eq!(next_epoch(i32::MAX), 1);
    }
}

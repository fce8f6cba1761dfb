//! Share group membership (KIP-932): ShareGroupHeartbeat with member epochs, in a background
//! task.
//!
//! As with the KIP-848 consumer protocol (`group/consumer_protocol.rs`), the member chooses
//! its member id (KIP-1082), joins with epoch 0 and its subscription, and the coordinator
//! answers with the member epoch, the heartbeat interval and, when it changed, the assignment
//! (topic ids → partitions). Share groups have no revocation step: partitions are shared, so
//! the heartbeat carries no owned partitions and a new assignment applies at once. Errors as
//! Java's `ShareMembershipManager` handles them: `FENCED_MEMBER_EPOCH` and `UNKNOWN_MEMBER_ID`
//! rejoin with epoch 0 (same member id); coordinator errors and transport failures look the
//! coordinator up again after a back-off; anything else not retriable (authorization,
//! `GROUP_MAX_SIZE_REACHED`, `INVALID_REQUEST`, `INCONSISTENT_GROUP_PROTOCOL` when the group id
//! belongs to a consumer group, …) is fatal: the task stops and the consumer's calls return
//! the error.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, GroupId, ShareGroupHeartbeatRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::cluster::{Cluster, CoordinatorType};
use crate::connection::RetryDelay;
use crate::group::new_member_id;
use crate::{Error, ErrorKind, KafkaCode, Result};

/// Member epoch of a member leaving the group.
const LEAVE_EPOCH: i32 = -1;

/// An assignment: topic id → partitions.
pub(crate) type Assignment = BTreeMap<Uuid, BTreeSet<i32>>;

/// What the consumer reads of the membership.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemberView {
    /// The latest assignment (empty until the first one arrives).
    pub assignment: Arc<Assignment>,
    /// A fatal error: the member is out of the group for good.
    pub fatal: Option<Error>,
}

#[derive(Debug)]
struct State {
    member_id: String,
    epoch: i32,
    subscription: Vec<String>,
    /// The subscription the coordinator accepted last (`None`: send it with the next heartbeat).
    sent: Option<Vec<String>>,
    /// When the application last polled.
    last_poll: Instant,
    /// The member left because no poll came within `max.poll.interval.ms`; the next poll
    /// rejoins.
    left_for_poll: bool,
}

#[derive(Debug)]
struct Shared {
    cluster: Cluster,
    group_id: String,
    rack: Option<String>,
    retry_backoff: (Duration, Duration),
    max_poll_interval: Duration,
    state: Mutex<State>,
    view: watch::Sender<MemberView>,
    wake: Arc<Notify>,
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The membership of one share consumer: the heartbeat task and its state.
#[derive(Debug)]
pub(crate) struct Membership {
    shared: Arc<Shared>,
    view: watch::Receiver<MemberView>,
    task: Option<JoinHandle<()>>,
    stop: crate::task::StopSignal,
}

impl Membership {
    /// Starts the heartbeat task (idle until there is a subscription). Needs a tokio runtime.
    pub(crate) fn start(
        cluster: Cluster,
        group_id: String,
        rack: Option<String>,
        retry_backoff: (Duration, Duration),
        max_poll_interval: Duration,
    ) -> Membership {
        let (view_tx, view) = watch::channel(MemberView::default());
        let (stop, stop_rx) = crate::task::StopSignal::new();
        let shared = Arc::new(Shared {
            cluster,
            group_id,
            rack,
            retry_backoff,
            max_poll_interval,
            state: Mutex::new(State {
                member_id: new_member_id(),
                epoch: 0,
                subscription: Vec::new(),
                sent: None,
                last_poll: Instant::now(),
                left_for_poll: false,
            }),
            view: view_tx,
            wake: Arc::new(Notify::new()),
        });
        let task = tokio::spawn(run(Arc::downgrade(&shared), shared.wake.clone(), stop_rx));
        Membership {
            shared,
            view,
            task: Some(task),
            stop,
        }
    }

    /// The member id this consumer uses.
    pub(crate) fn member_id(&self) -> String {
        lock(&self.shared.state).member_id.clone()
    }

    /// A read-only view of the member id and epoch that can be kept apart from the
    /// membership (the share consumer reads them without locking its state).
    pub(crate) fn identity(&self) -> MemberIdentity {
        MemberIdentity(self.shared.clone())
    }

    /// Sets the subscription; the next heartbeat (sent at once) carries it.
    pub(crate) fn subscribe(&self, mut topics: Vec<String>) {
        topics.sort();
        topics.dedup();
        let mut st = lock(&self.shared.state);
        st.subscription = topics;
        st.sent = None;
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Records a poll (`max.poll.interval.ms`); rejoins if the member left for want of polls.
    pub(crate) fn polled(&self) {
        let mut st = lock(&self.shared.state);
        st.last_poll = Instant::now();
        if st.left_for_poll {
            st.left_for_poll = false;
            st.sent = None;
            drop(st);
            tracing::info!(group = %self.shared.group_id, "polled again; rejoining the share group");
            self.shared.wake.notify_one();
        }
    }

    /// The latest view (assignment, fatal error).
    pub(crate) fn view(&self) -> MemberView {
        self.view.borrow().clone()
    }

    /// A receiver that changes with the view.
    pub(crate) fn watch(&self) -> watch::Receiver<MemberView> {
        self.view.clone()
    }

    /// Stops the heartbeat task and leaves the group (a heartbeat with epoch -1), if the
    /// member joined. Bounded by `timeout`.
    pub(crate) async fn leave(&mut self, timeout: Duration) -> Result<()> {
        self.stop.stop();
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        let joined = lock(&self.shared.state).epoch > 0;
        if !joined {
            return Ok(());
        }
        let shared = self.shared.clone();
        match tokio::time::timeout(timeout, send_leave(&shared)).await {
            Ok(r) => r,
            Err(_) => Err(Error::with_message(
                ErrorKind::Timeout,
                "leaving the share group timed out",
            )),
        }
    }
}

/// The member id and epoch of a [`Membership`] (see [`Membership::identity`]). Keeps no task
/// alive: the heartbeat task stops with the membership.
#[derive(Debug, Clone)]
pub(crate) struct MemberIdentity(Arc<Shared>);

impl MemberIdentity {
    /// The member id.
    pub(crate) fn member_id(&self) -> String {
        lock(&self.0.state).member_id.clone()
    }

    /// The member epoch (0 before the first heartbeat answer).
    pub(crate) fn epoch(&self) -> i32 {
        lock(&self.0.state).epoch
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(task) = self.task.take() {
            task.abort();
            // Not closed: leave the group on a best-effort basis (as the coordinator would
            // after the session timeout anyway).
            let joined = lock(&self.shared.state).epoch > 0;
            if joined && let Ok(rt) = tokio::runtime::Handle::try_current() {
                let shared = self.shared.clone();
                rt.spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(5), send_leave(&shared)).await;
                });
            }
        }
    }
}

async fn send_leave(shared: &Shared) -> Result<()> {
    let member_id = lock(&shared.state).member_id.clone();
    let coordinator = shared
        .cluster
        .coordinator(CoordinatorType::Group, &shared.group_id)
        .await?;
    let conn = shared.cluster.connection_for_broker(coordinator).await?;
    let req = ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(shared.group_id.clone())))
        .with_member_id(StrBytes::from_string(member_id))
        .with_member_epoch(LEAVE_EPOCH);
    let resp = conn.send(req).await?;
    lock(&shared.state).epoch = 0;
    match KafkaCode::from_i16(resp.error_code) {
        None | Some(KafkaCode::UnknownMemberId | KafkaCode::FencedMemberEpoch) => Ok(()),
        Some(code) => Err(Error::broker(code).api(ApiKey::ShareGroupHeartbeat)),
    }
}

/// What one heartbeat led to.
enum Beat {
    /// Answered: the next heartbeat after the interval.
    Ok(Duration),
    /// A retriable failure: after a back-off.
    Retry,
    /// Fenced: rejoin at once.
    Rejoin,
}

async fn run(
    shared: std::sync::Weak<Shared>,
    wake: Arc<Notify>,
    mut stop: crate::task::StopListener,
) {
    let mut backoff = match shared.upgrade() {
        Some(s) => RetryDelay::new(s.retry_backoff.0, s.retry_backoff.1),
        None => return,
    };
    loop {
        if stop.is_stopped() {
            return;
        }
        let Some(s) = shared.upgrade() else { return };
        let (idle, poll_deadline) = {
            let st = lock(&s.state);
            (
                st.subscription.is_empty() || st.left_for_poll,
                st.last_poll + s.max_poll_interval,
            )
        };
        let unsubscribed_member = {
            let st = lock(&s.state);
            st.subscription.is_empty() && st.epoch > 0
        };
        if unsubscribed_member {
            // Unsubscribed: leave the group (Java's `unsubscribe`); a later subscription joins
            // again at epoch 0.
            if let Err(e) = send_leave(&s).await {
                tracing::debug!(group = %s.group_id, error = %e, "leave heartbeat failed");
            }
            {
                let mut st = lock(&s.state);
                st.epoch = 0;
                st.sent = None;
            }
            s.view
                .send_modify(|v| v.assignment = Arc::new(Assignment::new()));
            continue;
        }
        let now = Instant::now();
        if !idle && now >= poll_deadline {
            // Java's liveness rule: a member that stopped polling leaves, so its partitions'
            // records go to members that poll; the next poll rejoins.
            tracing::warn!(group = %s.group_id, max_poll_interval = ?s.max_poll_interval,
                "no poll within max.poll.interval.ms; leaving the share group");
            if let Err(e) = send_leave(&s).await {
                tracing::debug!(group = %s.group_id, error = %e, "leave heartbeat failed");
            }
            {
                let mut st = lock(&s.state);
                st.left_for_poll = true;
                st.epoch = 0;
                st.sent = None;
            }
            s.view
                .send_modify(|v| v.assignment = Arc::new(Assignment::new()));
            continue;
        }
        let wait = if idle {
            None
        } else {
            match heartbeat(&s).await {
                Ok(Beat::Ok(interval)) => {
                    backoff.reset();
                    Some(interval)
                }
                Ok(Beat::Rejoin) => Some(Duration::ZERO),
                Ok(Beat::Retry) => {
                    backoff.failed();
                    Some(backoff.delay())
                }
                Err(fatal) => {
                    tracing::error!(group = %s.group_id, error = %fatal, "share group membership failed");
                    s.view.send_modify(|v| {
                        v.fatal = Some(fatal);
                        v.assignment = Arc::new(Assignment::new());
                    });
                    return;
                }
            }
        };
        let notified = wake.notified();
        tokio::pin!(notified);
        // Register before dropping the strong reference, so a wake-up in between is kept.
        notified.as_mut().enable();
        drop(s);
        // Wake up in time to notice a missed poll.
        let wait = wait.map(|d| d.min(poll_deadline.saturating_duration_since(Instant::now())));
        match wait {
            Some(d) if d.is_zero() => {}
            Some(d) => {
                tokio::select! {
                    _ = tokio::time::sleep(d) => {}
                    _ = &mut notified => {}
                    () = stop.stopped() => return,
                }
            }
            None => {
                tokio::select! {
                    _ = &mut notified => {}
                    () = stop.stopped() => return,
                }
            }
        }
    }
}

/// Sends one heartbeat and applies its answer. `Err` only for a fatal error.
async fn heartbeat(s: &Shared) -> Result<Beat> {
    let (member_id, epoch, topics) = {
        let st = lock(&s.state);
        let topics = match &st.sent {
            Some(sent) if *sent == st.subscription && st.epoch > 0 => None,
            _ => Some(st.subscription.clone()),
        };
        (st.member_id.clone(), st.epoch, topics)
    };
    let coordinator = match s
        .cluster
        .coordinator(CoordinatorType::Group, &s.group_id)
        .await
    {
        Ok(c) => c,
        Err(e) if e.kind() == &ErrorKind::Closed => return Err(e),
        Err(e) if e.is_retriable() || is_transport(&e) => return Ok(Beat::Retry),
        Err(e) => return Err(e),
    };
    let req = ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(s.group_id.clone())))
        .with_member_id(StrBytes::from_string(member_id))
        .with_member_epoch(epoch)
        .with_rack_id(
            (epoch == 0)
                .then(|| s.rack.clone().map(StrBytes::from_string))
                .flatten(),
        )
        .with_subscribed_topic_names(topics.clone().map(|t| {
            t.into_iter()
                .map(|n| TopicName(StrBytes::from_string(n)))
                .collect()
        }));
    let sent = async {
        let conn = s.cluster.connection_for_broker(coordinator).await?;
        conn.send(req).await
    }
    .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            if e.kind() == &ErrorKind::Closed {
                return Err(e);
            }
            if matches!(e.kind(), ErrorKind::UnsupportedVersion { .. }) {
                return Err(e.message("the broker does not serve share groups (KIP-932)"));
            }
            tracing::debug!(group = %s.group_id, error = %e, "share heartbeat failed");
            s.cluster
                .invalidate_coordinator(CoordinatorType::Group, &s.group_id);
            return Ok(Beat::Retry);
        }
    };
    if let Some(code) = KafkaCode::from_i16(resp.error_code) {
        let err = Error::broker(code).api(ApiKey::ShareGroupHeartbeat);
        let err = match resp.error_message.as_ref() {
            Some(m) => err.message(m.to_string()),
            None => err,
        };
        return match code {
            KafkaCode::FencedMemberEpoch | KafkaCode::UnknownMemberId => {
                tracing::info!(group = %s.group_id, error = %err, "share member fenced; rejoining");
                let mut st = lock(&s.state);
                st.epoch = 0;
                st.sent = None;
                drop(st);
                s.view
                    .send_modify(|v| v.assignment = Arc::new(Assignment::new()));
                Ok(Beat::Rejoin)
            }
            KafkaCode::NotCoordinator
            | KafkaCode::CoordinatorNotAvailable
            | KafkaCode::CoordinatorLoadInProgress => {
                s.cluster
                    .invalidate_coordinator(CoordinatorType::Group, &s.group_id);
                Ok(Beat::Retry)
            }
            c if c.is_retriable() => Ok(Beat::Retry),
            _ => Err(err),
        };
    }
    {
        let mut st = lock(&s.state);
        // A subscription changed while the heartbeat was in flight is sent next time.
        if topics.as_ref().is_none_or(|t| *t == st.subscription) {
            st.sent = Some(st.subscription.clone());
        }
        st.epoch = resp.member_epoch;
    }
    if let Some(a) = resp.assignment {
        let mut assignment = Assignment::new();
        for tp in a.topic_partitions {
            assignment
                .entry(tp.topic_id)
                .or_default()
                .extend(tp.partitions);
        }
        tracing::debug!(group = %s.group_id, epoch = resp.member_epoch, ?assignment, "share assignment");
        s.view.send_modify(|v| v.assignment = Arc::new(assignment));
    }
    let interval = Duration::from_millis(resp.heartbeat_interval_ms.max(100) as u64);
    Ok(Beat::Ok(interval))
}

fn is_transport(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Io(_) | ErrorKind::Disconnected | ErrorKind::Timeout
    )
}

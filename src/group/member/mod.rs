//! One member of a consumer group: join/sync (`join.rs`), heartbeats (`heartbeat.rs`), leave,
//! offset commit and fetch (`commit.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    ApiKey, GroupId, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest, TopicName,
    join_group_request::JoinGroupRequestProtocol,
    leave_group_request::MemberIdentity,
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    sync_group_request::SyncGroupRequestAssignment,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::Notify;

use super::assignor::{MemberSubscription, RebalanceProtocol};
use super::consumer_protocol::{self, Kip848State};
use super::protocol::{Assignment, Subscription};
use super::{GroupProtocol, TopicPartition};
use crate::cluster::{Cluster, CoordinatorType, Recovery, recovery_for};
use crate::connection::{BrokerConnection, RetryDelay};
use crate::consumer::ConsumerConfig;
use crate::protocol::requests::offset_fetch::{self, OffsetFetchQuery};
use crate::{Error, ErrorKind, KafkaCode, Result};

mod commit;
mod heartbeat;
mod join;
pub(in crate::group) use heartbeat::task_member;
use heartbeat::*;

/// The settings of a group member: its group id and the consumer settings it follows. The
/// group settings (`group.instance.id`, `session.timeout.ms`, `heartbeat.interval.ms`,
/// `max.poll.interval.ms`, the assignors, `retry.backoff.ms`, `default.api.timeout.ms`,
/// `group.protocol`, `group.remote.assignor`, `client.rack`) are declared once, in
/// [`ConsumerConfig`] (with their defaults and docs); the member reads only those.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GroupConfig {
    /// The group id (`group.id`). No default.
    pub group_id: String,
    /// The consumer's settings, of which the member follows the group settings.
    /// Default: [`ConsumerConfig::default`].
    pub consumer: ConsumerConfig,
    /// Whether a static member sends LeaveGroup on close (Java never does, so that a restart
    /// within the session timeout causes no rebalance). Default: false.
    pub static_leave_on_close: bool,
}

impl GroupConfig {
    /// Defaults for `group_id`.
    pub fn new(group_id: impl Into<String>) -> GroupConfig {
        GroupConfig::of_consumer(group_id, ConsumerConfig::default())
    }

    /// The member settings for `group_id` following `consumer`'s group settings, the rest
    /// (`static_leave_on_close`) at their defaults.
    pub fn of_consumer(group_id: impl Into<String>, consumer: ConsumerConfig) -> GroupConfig {
        GroupConfig {
            group_id: group_id.into(),
            consumer,
            static_leave_on_close: false,
        }
    }
}

/// An offset to commit, or a committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OffsetAndMetadata {
    /// The offset of the next record to consume.
    pub offset: i64,
    /// The leader epoch of the last consumed record, if known.
    pub leader_epoch: Option<i32>,
    /// Free-form metadata stored with the offset.
    pub metadata: Option<String>,
}

impl OffsetAndMetadata {
    /// An offset without metadata.
    pub fn new(offset: i64) -> OffsetAndMetadata {
        OffsetAndMetadata {
            offset,
            leader_epoch: None,
            metadata: None,
        }
    }

    /// Sets the metadata string.
    pub fn with_metadata(mut self, metadata: impl Into<String>) -> Self {
        self.metadata = Some(metadata.into());
        self
    }

    /// Sets the leader epoch.
    pub fn with_leader_epoch(mut self, epoch: Option<i32>) -> Self {
        self.leader_epoch = epoch;
        self
    }
}

/// The result of a completed join: the generation and this member's assignment.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JoinOutcome {
    /// The generation joined.
    pub generation: i32,
    /// This member's id.
    pub member_id: String,
    /// Whether the chosen assignor is eager or cooperative.
    pub protocol: RebalanceProtocol,
    /// The chosen assignor's name.
    pub protocol_name: String,
    /// The partitions assigned to this member.
    pub assignment: Vec<TopicPartition>,
    /// Whether this member is the group's leader.
    pub leader: bool,
}

#[derive(Debug)]
pub(super) struct MemberState {
    pub(super) member_id: String,
    /// The generation (classic) or the member epoch (consumer protocol); -1 when not a member.
    pub(super) generation: i32,
    pub(super) stable: bool,
    /// The consumer protocol's state (unused with the classic protocol).
    pub(super) kip848: Kip848State,
}

/// A member of a consumer group (classic protocol).
///
/// Created by the consumer in subscribe mode; usable on its own for tools that need raw group
/// membership. Dropping it stops the heartbeat task; [`close`](Self::close) also leaves the
/// group.
#[derive(Debug)]
pub struct GroupMember {
    pub(super) inner: Arc<Inner>,
    /// Whether dropping this handle stops the heartbeat task (false for the task's own handle).
    pub(super) owner: bool,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) cluster: Cluster,
    pub(super) config: GroupConfig,
    pub(super) state: Mutex<MemberState>,
    coordinator: tokio::sync::Mutex<Option<BrokerConnection>>,
    pub(super) rejoin_needed: AtomicBool,
    pub(super) lost: AtomicBool,
    pub(super) events: Notify,
    pub(super) last_poll: Mutex<Instant>,
    pub(super) closed: AtomicBool,
    pub(super) shutdown: crate::task::StopSignal,
    /// Wakes the consumer protocol's heartbeat task for an immediate heartbeat.
    pub(super) heartbeat_now: Notify,
    /// One consumer-protocol heartbeat at a time (the task's, a join's, a leave's).
    pub(super) heartbeat_lock: tokio::sync::Mutex<()>,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn code_error(code: i16, api: ApiKey) -> Option<Error> {
    KafkaCode::from_i16(code).map(|c| Error::broker(c).api(api))
}

pub(super) fn is_coordinator_error(e: &Error) -> bool {
    matches!(
        e.kafka_code(),
        Some(KafkaCode::NotCoordinator | KafkaCode::CoordinatorNotAvailable)
    ) || matches!(
        e.kind(),
        ErrorKind::Io(_) | ErrorKind::Disconnected | ErrorKind::Timeout
    )
}

pub(super) fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

impl GroupMember {
    /// A member of `config.group_id` that has not joined yet; starts the heartbeat task. Must be
    /// called inside a tokio runtime (fails with [`ErrorKind::Config`] otherwise).
    pub fn new(cluster: Cluster, config: GroupConfig) -> Result<GroupMember> {
        if config.group_id.is_empty() {
            return Err(Error::config("group.id must not be empty"));
        }
        if config.consumer.heartbeat_interval >= config.consumer.session_timeout {
            return Err(Error::config(
                "heartbeat.interval.ms must be lower than session.timeout.ms",
            ));
        }
        if config.consumer.assignors.is_empty() {
            return Err(Error::config(
                "partition.assignment.strategy must name at least one assignor",
            ));
        }
        if config.consumer.group_protocol == GroupProtocol::Consumer
            && config
                .consumer
                .group_remote_assignor
                .as_deref()
                .is_some_and(|a| a.trim().is_empty())
        {
            return Err(Error::config("group.remote.assignor must not be empty"));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("a GroupMember must be created inside a tokio runtime"))?;
        let (shutdown, shutdown_rx) = crate::task::StopSignal::new();
        let inner = Arc::new(Inner {
            cluster,
            config,
            state: Mutex::new(MemberState {
                member_id: String::new(),
                generation: -1,
                stable: false,
                kip848: Kip848State::new(),
            }),
            coordinator: tokio::sync::Mutex::new(None),
            rejoin_needed: AtomicBool::new(true),
            lost: AtomicBool::new(false),
            events: Notify::new(),
            last_poll: Mutex::new(Instant::now()),
            closed: AtomicBool::new(false),
            shutdown,
            heartbeat_now: Notify::new(),
            heartbeat_lock: tokio::sync::Mutex::new(()),
        });
        let weak = Arc::downgrade(&inner);
        // The heartbeat task's requests are children of this span (and of the span current
        // where the member was made, e.g. the consumer's).
        let span = tracing::debug_span!("kafka.heartbeat", group_id = %inner.config.group_id);
        match inner.config.consumer.group_protocol {
            GroupProtocol::Consumer => runtime.spawn(tracing::Instrument::instrument(
                consumer_protocol::heartbeat_loop(weak, shutdown_rx),
                span,
            )),
            _ => runtime.spawn(tracing::Instrument::instrument(
                heartbeat_loop(weak, shutdown_rx),
                span,
            )),
        };
        Ok(GroupMember { inner, owner: true })
    }

    /// The settings.
    pub fn config(&self) -> &GroupConfig {
        &self.inner.config
    }

    /// The current member id (empty before the first join).
    pub fn member_id(&self) -> String {
        lock(&self.inner.state).member_id.clone()
    }

    /// The current generation, -1 when not a member.
    pub fn generation(&self) -> i32 {
        lock(&self.inner.state).generation
    }

    /// Whether the member must (re)join before its assignment can be trusted.
    pub fn needs_rejoin(&self) -> bool {
        self.inner.rejoin_needed.load(Ordering::Acquire)
    }

    /// Asks for a rejoin at the next opportunity (cooperative follow-up rebalance, a changed
    /// subscription).
    pub fn request_rejoin(&self) {
        self.inner.rejoin_needed.store(true, Ordering::Release);
        self.inner.events.notify_one();
    }

    /// Whether the membership was lost (session expired, fenced, `max.poll.interval`
    /// exceeded) since the last call; clears the flag.
    pub fn take_lost(&self) -> bool {
        self.inner.lost.swap(false, Ordering::AcqRel)
    }

    /// Resolves when the heartbeat task has news: a rebalance started or membership was lost.
    pub async fn changed(&self) {
        self.inner.events.notified().await
    }

    /// Records that the application polled (for `max.poll.interval`).
    pub fn polled(&self) {
        *lock(&self.inner.last_poll) = Instant::now();
    }

    pub(super) async fn coordinator(&self) -> Result<BrokerConnection> {
        let inner = &self.inner;
        let mut g = inner.coordinator.lock().await;
        if let Some(c) = &*g {
            return Ok(c.clone());
        }
        let node = inner
            .cluster
            .coordinator(CoordinatorType::Group, &inner.config.group_id)
            .await?;
        let shared = inner.cluster.connection_for_broker(node).await?;
        // A JoinGroup is held by the coordinator for up to the rebalance timeout, so this
        // member's own connection to the coordinator must wait longer than that.
        let mut cfg = inner.cluster.config().connection.clone();
        cfg.request_timeout = inner.config.consumer.max_poll_interval + Duration::from_secs(5);
        let conn = BrokerConnection::new(node, shared.addr(), cfg);
        *g = Some(conn.clone());
        Ok(conn)
    }

    pub(super) async fn coordinator_failed(&self) {
        let inner = &self.inner;
        inner
            .cluster
            .invalidate_coordinator(CoordinatorType::Group, &inner.config.group_id);
        if let Some(c) = inner.coordinator.lock().await.take() {
            // Retired, not closed: a request racing on a clone (a commit while the heartbeat
            // found the coordinator gone) fails retriably and looks the coordinator up again,
            // instead of reporting the client closed.
            tokio::spawn(tracing::Instrument::in_current_span(async move {
                c.retire().await
            }));
        }
    }

    /// A request to the coordinator with the normal request timeout.
    pub(super) async fn send<R: kafka_protocol::protocol::Request>(
        &self,
        request: R,
        build_version: impl FnOnce(i16) -> Result<(R, i16)>,
    ) -> Result<(R::Response, i16)> {
        let _ = request;
        let broker = self.coordinator().await?;
        let conn = broker.connection().await?;
        let v = conn
            .versions()
            .negotiate::<R>()
            .map_err(|e| e.on_broker(broker.broker_id()))?;
        let (req, v) = build_version(v)?;
        let timeout = self.inner.cluster.config().connection.request_timeout;
        match tokio::time::timeout(timeout, conn.send_at(req, v)).await {
            Ok(r) => Ok((r.map_err(|e| e.on_broker(broker.broker_id()))?, v)),
            Err(_) => Err(Error::with_message(
                ErrorKind::Timeout,
                "no answer from the group coordinator",
            )
            .on_broker(broker.broker_id())),
        }
    }

    /// Leaves the group (LeaveGroup), forgetting the generation. A static member leaves only if
    /// [`static_leave_on_close`](GroupConfig::static_leave_on_close) is set or `force` is.
    ///
    /// With the consumer protocol, a heartbeat with member epoch -1 (or -2 for a static member,
    /// which keeps its assignment for the session timeout, unless `static_leave_on_close`).
    pub async fn leave(&self, force: bool) -> Result<()> {
        if self.inner.config.consumer.group_protocol == GroupProtocol::Consumer {
            return self.leave_consumer_protocol().await;
        }
        let cfg = &self.inner.config;
        let (member_id, was_member) = {
            let mut st = lock(&self.inner.state);
            let was = st.generation >= 0 || !st.member_id.is_empty();
            st.stable = false;
            st.generation = -1;
            (st.member_id.clone(), was)
        };
        if !was_member
            || (cfg.consumer.group_instance_id.is_some() && !cfg.static_leave_on_close && !force)
        {
            return Ok(());
        }
        let group = cfg.group_id.clone();
        let instance = cfg.consumer.group_instance_id.clone();
        let (resp, _) = self
            .send(LeaveGroupRequest::default(), |v| {
                let mut req =
                    LeaveGroupRequest::default().with_group_id(GroupId(str_bytes(&group)));
                if v >= 3 {
                    let mut m = MemberIdentity::default()
                        .with_member_id(str_bytes(&member_id))
                        .with_group_instance_id(instance.as_deref().map(str_bytes));
                    if v >= 5 {
                        m.reason = Some(StrBytes::from_static_str("rekafka consumer leaving"));
                    }
                    req.members = vec![m];
                } else {
                    req.member_id = str_bytes(&member_id);
                }
                Ok((req, v))
            })
            .await?;
        lock(&self.inner.state).member_id.clear();
        if let Some(e) = code_error(resp.error_code, ApiKey::LeaveGroup) {
            return Err(e);
        }
        Ok(())
    }

    /// Stops the heartbeat task, leaves the group (see [`leave`](Self::leave)) and closes the
    /// coordinator connection.
    pub async fn close(&self) {
        self.inner.shutdown.stop();
        if let Err(e) = self.leave(false).await {
            tracing::debug!(error = %e, "LeaveGroup failed on close");
        }
        self.inner.closed.store(true, Ordering::Release);
        if let Some(c) = self.inner.coordinator.lock().await.take() {
            c.close().await;
        }
    }

    pub(super) fn mark_lost(&self, reset_member_id: bool, reason: &str) {
        tracing::warn!(group = %self.inner.config.group_id, member = %self.member_id(), reason, "group membership lost");
        {
            let mut st = lock(&self.inner.state);
            st.stable = false;
            st.generation = -1;
            if reset_member_id {
                st.member_id.clear();
            }
            st.kip848.forget_assignment();
        }
        self.inner.lost.store(true, Ordering::Release);
        self.inner.rejoin_needed.store(true, Ordering::Release);
        self.inner.events.notify_one();
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        // The heartbeat task holds the inner state only while it works, so the owner's drop
        // stops it here rather than when the last reference goes.
        if self.owner {
            self.inner.shutdown.stop();
        }
    }
}

//! One member of a consumer group: join/sync, heartbeats, leave, offset commit and fetch.

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
    offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    },
    sync_group_request::SyncGroupRequestAssignment,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::{Notify, watch};

use super::assignor::{Assignor, MemberSubscription, RebalanceProtocol};
use super::consumer_protocol::{self, Kip848State};
use super::protocol::{Assignment, Subscription};
use super::{GroupProtocol, TopicPartition};
use crate::cluster::{Cluster, CoordinatorType, Recovery, recovery_for};
use crate::connection::{Backoff, BrokerConnection};
use crate::{Error, ErrorKind, KafkaCode, Result};

/// The settings of a group member. Built by the consumer from its
/// [`ConsumerConfig`](crate::consumer::ConsumerConfig).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GroupConfig {
    /// The group id (`group.id`). No default.
    pub group_id: String,
    /// The static member id (`group.instance.id`). Default: none (a dynamic member).
    pub group_instance_id: Option<String>,
    /// The session timeout (`session.timeout.ms`). Default: 45 s.
    pub session_timeout: Duration,
    /// The rebalance timeout: how long the coordinator waits for members to rejoin; also the
    /// longest allowed gap between polls (`max.poll.interval.ms`). Default: 5 min.
    pub max_poll_interval: Duration,
    /// The interval between heartbeats (`heartbeat.interval.ms`). Default: 3 s.
    pub heartbeat_interval: Duration,
    /// The assignors offered, in order of preference. Default: range, cooperative-sticky.
    pub assignors: Vec<Arc<dyn Assignor>>,
    /// The first wait between retries (`retry.backoff.ms`). Default: 100 ms.
    pub retry_backoff: Duration,
    /// How long commits and offset fetches keep retrying retriable errors
    /// (`default.api.timeout.ms`). Default: 60 s.
    pub api_timeout: Duration,
    /// Whether a static member sends LeaveGroup on close (Java never does, so that a restart
    /// within the session timeout causes no rebalance). Default: false.
    pub static_leave_on_close: bool,
    /// The membership protocol (`group.protocol`). Default: [`GroupProtocol::Classic`].
    pub protocol: GroupProtocol,
    /// The broker-side assignor asked for with the consumer protocol
    /// (`group.remote.assignor`: `uniform`, `range`). Default: none (the broker's default).
    pub remote_assignor: Option<String>,
}

impl GroupConfig {
    /// Defaults for `group_id`.
    pub fn new(group_id: impl Into<String>) -> GroupConfig {
        GroupConfig {
            group_id: group_id.into(),
            group_instance_id: None,
            session_timeout: Duration::from_secs(45),
            max_poll_interval: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(3),
            assignors: vec![
                Arc::new(super::RangeAssignor),
                Arc::new(super::CooperativeStickyAssignor),
            ],
            retry_backoff: Duration::from_millis(100),
            api_timeout: Duration::from_secs(60),
            static_leave_on_close: false,
            protocol: GroupProtocol::Classic,
            remote_assignor: None,
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
    pub(super) shutdown: watch::Sender<bool>,
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
        if config.heartbeat_interval >= config.session_timeout {
            return Err(Error::config(
                "heartbeat.interval.ms must be lower than session.timeout.ms",
            ));
        }
        if config.assignors.is_empty() {
            return Err(Error::config(
                "partition.assignment.strategy must name at least one assignor",
            ));
        }
        if config.protocol == GroupProtocol::Consumer
            && config
                .remote_assignor
                .as_deref()
                .is_some_and(|a| a.trim().is_empty())
        {
            return Err(Error::config("group.remote.assignor must not be empty"));
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::config("a GroupMember must be created inside a tokio runtime"))?;
        let (shutdown, shutdown_rx) = watch::channel(false);
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
        match inner.config.protocol {
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

    /// Joins (or rejoins) the group with a subscription to `topics`, owning `owned`; runs the
    /// assignor if this member is elected leader; returns this member's assignment. Retries
    /// rebalances, coordinator moves and unknown member ids until it succeeds or meets an
    /// error retrying cannot fix.
    ///
    /// With the consumer protocol ([`GroupProtocol::Consumer`]) this sends the subscription
    /// (joining with member epoch 0 when not a member) and returns the latest assignment the
    /// coordinator sent; the caller revokes what is no longer assigned, then reports what it
    /// owns with [`assignment_applied`](Self::assignment_applied).
    pub async fn join(&self, topics: &[String], owned: &[TopicPartition]) -> Result<JoinOutcome> {
        if self.inner.config.protocol == GroupProtocol::Consumer {
            return self.join_consumer_protocol(topics).await;
        }
        let inner = &self.inner;
        let mut backoff = Backoff::new(inner.config.retry_backoff, Duration::from_secs(1));
        inner.rejoin_needed.store(false, Ordering::Release);
        // No heartbeats with the old generation while the rejoin is under way: the coordinator
        // answers them with REBALANCE_IN_PROGRESS, which would ask for yet another rejoin.
        lock(&inner.state).stable = false;
        loop {
            if inner.closed.load(Ordering::Acquire) {
                return Err(Error::with_message(
                    ErrorKind::Closed,
                    "group member closed",
                ));
            }
            match self.join_once(topics, owned).await {
                Ok(Some(outcome)) => {
                    backoff.reset();
                    {
                        let mut st = lock(&inner.state);
                        st.generation = outcome.generation;
                        st.member_id = outcome.member_id.clone();
                        st.stable = true;
                    }
                    self.polled();
                    return Ok(outcome);
                }
                Ok(None) => {}
                Err(e) => {
                    if is_coordinator_error(&e)
                        || e.kafka_code() == Some(KafkaCode::CoordinatorLoadInProgress)
                    {
                        self.coordinator_failed().await;
                    } else if recovery_for(&e) == Recovery::GiveUp {
                        return Err(e);
                    }
                    let wait = backoff.delay();
                    backoff.failed();
                    tracing::debug!(error = %e, ?wait, "group join failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
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
        cfg.request_timeout = inner.config.max_poll_interval + Duration::from_secs(5);
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

    async fn join_once(
        &self,
        topics: &[String],
        owned: &[TopicPartition],
    ) -> Result<Option<JoinOutcome>> {
        let inner = &self.inner;
        let cfg = &inner.config;
        let (member_id, generation) = {
            let st = lock(&inner.state);
            (st.member_id.clone(), st.generation)
        };
        let mut owned_map: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for tp in owned {
            owned_map
                .entry(tp.topic.to_string())
                .or_default()
                .push(tp.partition);
        }
        let protocols: Vec<JoinGroupRequestProtocol> = cfg
            .assignors
            .iter()
            .map(|a| {
                let mut s = Subscription::new(topics.to_vec());
                s.owned_partitions = owned_map.clone();
                s.generation_id = generation;
                JoinGroupRequestProtocol::default()
                    .with_name(str_bytes(a.name()))
                    .with_metadata(s.encode())
            })
            .collect();
        let broker = self.coordinator().await?;
        let conn = broker.connection().await?;
        let v = conn
            .versions()
            .negotiate::<JoinGroupRequest>()
            .map_err(|e| e.on_broker(broker.broker_id()))?;
        if v < 1 {
            return Err(Error::new(ErrorKind::UnsupportedVersion {
                api: ApiKey::JoinGroup,
            })
            .message("JoinGroup v1+ (rebalance timeout) is required"));
        }
        if cfg.group_instance_id.is_some() && v < 5 {
            return Err(Error::config(
                "group.instance.id needs a broker with JoinGroup v5+",
            ));
        }
        let mut req = JoinGroupRequest::default()
            .with_group_id(GroupId(str_bytes(&cfg.group_id)))
            .with_session_timeout_ms(cfg.session_timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_rebalance_timeout_ms(
                cfg.max_poll_interval.as_millis().min(i32::MAX as u128) as i32
            )
            .with_member_id(str_bytes(&member_id))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(protocols);
        if v >= 5 {
            req.group_instance_id = cfg.group_instance_id.as_deref().map(str_bytes);
        }
        if v >= 8 {
            req.reason = Some(StrBytes::from_static_str("rekafka consumer joining"));
        }
        tracing::debug!(member = %member_id, generation, owned = owned.len(), "JoinGroup");
        let resp = conn
            .send_at(req, v)
            .await
            .map_err(|e| e.on_broker(broker.broker_id()))?;
        tracing::debug!(
            error = resp.error_code,
            generation = resp.generation_id,
            leader = %resp.leader,
            member = %resp.member_id,
            members = resp.members.len(),
            "JoinGroup response"
        );
        if let Some(e) = code_error(resp.error_code, ApiKey::JoinGroup) {
            let code = e.kafka_code();
            match code {
                Some(KafkaCode::MemberIdRequired) => {
                    lock(&inner.state).member_id = resp.member_id.to_string();
                    return Ok(None);
                }
                Some(KafkaCode::UnknownMemberId) | Some(KafkaCode::IllegalGeneration) => {
                    let mut st = lock(&inner.state);
                    st.member_id.clear();
                    st.generation = -1;
                    return Ok(None);
                }
                Some(KafkaCode::RebalanceInProgress) => return Err(e.message("retry join")),
                _ => return Err(e.on_broker(broker.broker_id())),
            }
        }
        let my_id = resp.member_id.to_string();
        let protocol_name = resp
            .protocol_name
            .as_ref()
            .map(|s| s.to_string())
            .unwrap_or_default();
        let assignor = cfg
            .assignors
            .iter()
            .find(|a| a.name() == protocol_name)
            .cloned()
            .ok_or_else(|| {
                Error::with_message(
                    ErrorKind::UnexpectedResponse,
                    format!("the coordinator chose protocol {protocol_name:?}, which this member did not offer"),
                )
                .api(ApiKey::JoinGroup)
            })?;
        let is_leader = resp.leader.as_str() == my_id;
        let mut assignments = Vec::new();
        if is_leader && !resp.skip_assignment {
            let mut members = Vec::with_capacity(resp.members.len());
            let mut all_topics = BTreeSet::new();
            for m in &resp.members {
                let sub = match Subscription::decode(&m.metadata) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(member = %m.member_id, error = %e, "undecodable subscription; member gets nothing");
                        Subscription::new(Vec::new())
                    }
                };
                all_topics.extend(sub.topics.iter().cloned());
                members.push(
                    MemberSubscription::new(m.member_id.to_string(), sub).with_group_instance_id(
                        m.group_instance_id.as_ref().map(|s| s.to_string()),
                    ),
                );
            }
            let topic_list: Vec<String> = all_topics.into_iter().collect();
            if !topic_list.is_empty() {
                inner.cluster.refresh_topics(&topic_list).await?;
            }
            let mut counts = BTreeMap::new();
            for t in &topic_list {
                match inner.cluster.partitions(t).await {
                    Ok(ps) => {
                        counts.insert(t.clone(), ps.len() as i32);
                    }
                    Err(e) => {
                        tracing::debug!(topic = %t, error = %e, "subscribed topic not assignable")
                    }
                }
            }
            let result = assignor.assign(&counts, &members);
            for m in &members {
                let a = result.get(&m.member_id).cloned().unwrap_or_default();
                assignments.push(
                    SyncGroupRequestAssignment::default()
                        .with_member_id(str_bytes(&m.member_id))
                        .with_assignment(a.encode()),
                );
            }
        }
        // SyncGroup.
        let sv = conn
            .versions()
            .negotiate::<SyncGroupRequest>()
            .map_err(|e| e.on_broker(broker.broker_id()))?;
        let mut sreq = SyncGroupRequest::default()
            .with_group_id(GroupId(str_bytes(&cfg.group_id)))
            .with_generation_id(resp.generation_id)
            .with_member_id(str_bytes(&my_id))
            .with_assignments(assignments);
        if sv >= 3 {
            sreq.group_instance_id = cfg.group_instance_id.as_deref().map(str_bytes);
        }
        if sv >= 5 {
            sreq.protocol_type = Some(StrBytes::from_static_str("consumer"));
            sreq.protocol_name = Some(str_bytes(&protocol_name));
        }
        let sresp = conn
            .send_at(sreq, sv)
            .await
            .map_err(|e| e.on_broker(broker.broker_id()))?;
        tracing::debug!(member = %my_id, error = sresp.error_code, "SyncGroup response");
        if let Some(e) = code_error(sresp.error_code, ApiKey::SyncGroup) {
            match e.kafka_code() {
                Some(KafkaCode::RebalanceInProgress) => {
                    lock(&inner.state).member_id = my_id;
                    return Ok(None);
                }
                Some(KafkaCode::UnknownMemberId) | Some(KafkaCode::IllegalGeneration) => {
                    let mut st = lock(&inner.state);
                    if e.kafka_code() == Some(KafkaCode::UnknownMemberId) {
                        st.member_id.clear();
                    } else {
                        st.member_id = my_id;
                    }
                    st.generation = -1;
                    return Ok(None);
                }
                _ => return Err(e.on_broker(broker.broker_id())),
            }
        }
        let assignment = Assignment::decode(&sresp.assignment)?;
        let mut parts = Vec::new();
        for (t, ps) in &assignment.partitions {
            for p in ps {
                parts.push(TopicPartition::new(t, *p));
            }
        }
        parts.sort();
        parts.dedup();
        tracing::info!(
            group = %cfg.group_id,
            member = %my_id,
            generation = resp.generation_id,
            protocol = %protocol_name,
            leader = is_leader,
            partitions = parts.len(),
            "joined group"
        );
        Ok(Some(JoinOutcome {
            generation: resp.generation_id,
            member_id: my_id,
            protocol: assignor.protocol(),
            protocol_name,
            assignment: parts,
            leader: is_leader,
        }))
    }

    /// Commits `offsets` for the current generation (or, when not a member of a generation,
    /// as a simple commit with generation -1, which the broker accepts only for a group with
    /// no active members). Retries coordinator moves and timeouts until the API timeout.
    ///
    /// A commit refused because this member is no longer in the group's generation fails with
    /// `ILLEGAL_GENERATION`, `UNKNOWN_MEMBER_ID`, `FENCED_INSTANCE_ID` or
    /// `REBALANCE_IN_PROGRESS` (and a rejoin is requested).
    pub async fn commit(&self, offsets: &[(TopicPartition, OffsetAndMetadata)]) -> Result<()> {
        let (generation, member_id) = {
            let st = lock(&self.inner.state);
            if st.stable {
                (st.generation, st.member_id.clone())
            } else {
                (-1, String::new())
            }
        };
        commit_with(self, offsets, generation, &member_id).await
    }

    /// The committed offsets of `partitions` (`None` where nothing is committed), asking the
    /// broker to wait for pending transactional commits (`require_stable`) where it can.
    pub async fn committed(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndMetadata>>> {
        let deadline = Instant::now() + self.inner.config.api_timeout;
        let mut backoff = Backoff::new(self.inner.config.retry_backoff, Duration::from_secs(1));
        loop {
            let err = match self.committed_once(partitions).await {
                Ok(r) => return Ok(r),
                Err(e) => e,
            };
            let retriable = is_coordinator_error(&err)
                || matches!(
                    err.kafka_code(),
                    Some(
                        KafkaCode::UnstableOffsetCommit
                            | KafkaCode::CoordinatorLoadInProgress
                            | KafkaCode::StaleMemberEpoch
                    )
                )
                || recovery_for(&err) != Recovery::GiveUp;
            if !retriable || Instant::now() >= deadline {
                return Err(err);
            }
            if is_coordinator_error(&err) {
                self.coordinator_failed().await;
            }
            let wait = backoff.delay();
            backoff.failed();
            tokio::time::sleep(wait).await;
        }
    }

    async fn committed_once(
        &self,
        partitions: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndMetadata>>> {
        let group = self.inner.config.group_id.clone();
        // With the consumer protocol, the member id and epoch go along (OffsetFetch v9+), so
        // that a fenced member does not read offsets as if it still owned the partitions.
        let member_epoch = {
            let st = lock(&self.inner.state);
            (self.inner.config.protocol == GroupProtocol::Consumer
                && st.stable
                && st.generation >= 0)
                .then(|| (st.member_id.clone(), st.generation))
        };
        let mut by_topic: BTreeMap<Arc<str>, Vec<i32>> = BTreeMap::new();
        for tp in partitions {
            by_topic
                .entry(tp.topic.clone())
                .or_default()
                .push(tp.partition);
        }
        let (resp, v) = self
            .send(OffsetFetchRequest::default(), |v| {
                let mut req = OffsetFetchRequest::default();
                if v >= 8 {
                    let mut g = OffsetFetchRequestGroup::default();
                    if v >= 9
                        && let Some((id, epoch)) = &member_epoch
                    {
                        g.member_id = Some(str_bytes(id));
                        g.member_epoch = *epoch;
                    }
                    req.groups = vec![
                        g.with_group_id(GroupId(str_bytes(&group)))
                            .with_topics(Some(
                                by_topic
                                    .iter()
                                    .map(|(t, ps)| {
                                        OffsetFetchRequestTopics::default()
                                            .with_name(TopicName(str_bytes(t)))
                                            .with_partition_indexes(ps.clone())
                                    })
                                    .collect(),
                            )),
                    ];
                } else {
                    req.group_id = GroupId(str_bytes(&group));
                    req.topics = Some(
                        by_topic
                            .iter()
                            .map(|(t, ps)| {
                                OffsetFetchRequestTopic::default()
                                    .with_name(TopicName(str_bytes(t)))
                                    .with_partition_indexes(ps.clone())
                            })
                            .collect(),
                    );
                }
                if v >= 7 {
                    req.require_stable = true;
                }
                Ok((req, v))
            })
            .await?;
        let mut out = HashMap::new();
        let mut handle = |topic: &str,
                          p: i32,
                          offset: i64,
                          epoch: i32,
                          meta: Option<&StrBytes>,
                          code: i16|
         -> Result<()> {
            if let Some(e) = code_error(code, ApiKey::OffsetFetch) {
                return Err(e.on_partition(topic, p));
            }
            let v = (offset >= 0).then(|| OffsetAndMetadata {
                offset,
                leader_epoch: (epoch >= 0).then_some(epoch),
                metadata: meta.map(|m| m.to_string()).filter(|m| !m.is_empty()),
            });
            out.insert(TopicPartition::new(topic, p), v);
            Ok(())
        };
        if v >= 8 {
            for g in &resp.groups {
                if let Some(e) = code_error(g.error_code, ApiKey::OffsetFetch) {
                    return Err(e);
                }
                for t in &g.topics {
                    for p in &t.partitions {
                        handle(
                            &t.name,
                            p.partition_index,
                            p.committed_offset,
                            p.committed_leader_epoch,
                            p.metadata.as_ref(),
                            p.error_code,
                        )?;
                    }
                }
            }
        } else {
            if let Some(e) = code_error(resp.error_code, ApiKey::OffsetFetch) {
                return Err(e);
            }
            for t in &resp.topics {
                for p in &t.partitions {
                    handle(
                        &t.name,
                        p.partition_index,
                        p.committed_offset,
                        p.committed_leader_epoch,
                        p.metadata.as_ref(),
                        p.error_code,
                    )?;
                }
            }
        }
        for tp in partitions {
            out.entry(tp.clone()).or_insert(None);
        }
        Ok(out)
    }

    /// Leaves the group (LeaveGroup), forgetting the generation. A static member leaves only if
    /// [`static_leave_on_close`](GroupConfig::static_leave_on_close) is set or `force` is.
    ///
    /// With the consumer protocol, a heartbeat with member epoch -1 (or -2 for a static member,
    /// which keeps its assignment for the session timeout, unless `static_leave_on_close`).
    pub async fn leave(&self, force: bool) -> Result<()> {
        if self.inner.config.protocol == GroupProtocol::Consumer {
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
        if !was_member || (cfg.group_instance_id.is_some() && !cfg.static_leave_on_close && !force)
        {
            return Ok(());
        }
        let group = cfg.group_id.clone();
        let instance = cfg.group_instance_id.clone();
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
        self.inner.shutdown.send_replace(true);
        if let Err(e) = self.leave(false).await {
            tracing::debug!(error = %e, "LeaveGroup failed on close");
        }
        self.inner.closed.store(true, Ordering::Release);
        if let Some(c) = self.inner.coordinator.lock().await.take() {
            c.close().await;
        }
    }

    async fn heartbeat_once(&self) -> Result<()> {
        let cfg = &self.inner.config;
        let (generation, member_id) = {
            let st = lock(&self.inner.state);
            (st.generation, st.member_id.clone())
        };
        let group = cfg.group_id.clone();
        let instance = cfg.group_instance_id.clone();
        let (resp, _) = self
            .send(HeartbeatRequest::default(), |v| {
                let mut req = HeartbeatRequest::default()
                    .with_group_id(GroupId(str_bytes(&group)))
                    .with_generation_id(generation)
                    .with_member_id(str_bytes(&member_id));
                if v >= 3 {
                    req.group_instance_id = instance.as_deref().map(str_bytes);
                }
                Ok((req, v))
            })
            .await?;
        match code_error(resp.error_code, ApiKey::Heartbeat) {
            None => Ok(()),
            Some(e) => Err(e),
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
        if self.owner {
            self.inner.shutdown.send_replace(true);
        }
    }
}

async fn commit_with(
    member: &GroupMember,
    offsets: &[(TopicPartition, OffsetAndMetadata)],
    generation: i32,
    member_id: &str,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let cfg = &member.inner.config;
    let deadline = Instant::now() + cfg.api_timeout;
    let mut backoff = Backoff::new(cfg.retry_backoff, Duration::from_secs(1));
    let mut by_topic: BTreeMap<Arc<str>, Vec<&(TopicPartition, OffsetAndMetadata)>> =
        BTreeMap::new();
    for o in offsets {
        by_topic.entry(o.0.topic.clone()).or_default().push(o);
    }
    let kip848 = cfg.protocol == GroupProtocol::Consumer;
    let mut generation = generation;
    let mut member_id = member_id.to_owned();
    loop {
        if kip848 && generation >= 0 {
            // The member epoch moves with every new assignment: each attempt sends the latest
            // (a STALE_MEMBER_EPOCH answer is retried with it, as Java does).
            let st = lock(&member.inner.state);
            if st.stable && st.generation >= 0 {
                generation = st.generation;
                member_id = st.member_id.clone();
            }
        }
        let member_id = member_id.as_str();
        let group = cfg.group_id.clone();
        let instance = cfg.group_instance_id.clone();
        let result = member
            .send(OffsetCommitRequest::default(), |v| {
                if kip848 && generation >= 0 && v < 9 {
                    return Err(Error::new(ErrorKind::UnsupportedVersion {
                        api: ApiKey::OffsetCommit,
                    })
                    .message(
                        "the consumer group protocol needs OffsetCommit v9+ (member epochs)",
                    ));
                }
                let mut req = OffsetCommitRequest::default()
                    .with_group_id(GroupId(str_bytes(&group)))
                    .with_generation_id_or_member_epoch(generation)
                    .with_member_id(str_bytes(member_id));
                if v >= 7 {
                    req.group_instance_id = instance.as_deref().map(str_bytes);
                }
                req.topics = by_topic
                    .iter()
                    .map(|(t, ps)| {
                        OffsetCommitRequestTopic::default()
                            .with_name(TopicName(str_bytes(t)))
                            .with_partitions(
                                ps.iter()
                                    .map(|(tp, o)| {
                                        let mut p = OffsetCommitRequestPartition::default()
                                            .with_partition_index(tp.partition)
                                            .with_committed_offset(o.offset)
                                            .with_committed_metadata(Some(str_bytes(
                                                o.metadata.as_deref().unwrap_or(""),
                                            )));
                                        if v >= 6 {
                                            p.committed_leader_epoch = o.leader_epoch.unwrap_or(-1);
                                        }
                                        p
                                    })
                                    .collect(),
                            )
                    })
                    .collect();
                Ok((req, v))
            })
            .await;
        let err = match result {
            Ok((resp, _)) => {
                let mut first = None;
                for t in &resp.topics {
                    for p in &t.partitions {
                        if let Some(e) = code_error(p.error_code, ApiKey::OffsetCommit) {
                            first.get_or_insert(e.on_partition(t.name.as_str(), p.partition_index));
                        }
                    }
                }
                match first {
                    None => return Ok(()),
                    Some(e) => e,
                }
            }
            Err(e) => e,
        };
        match err.kafka_code() {
            Some(
                KafkaCode::IllegalGeneration
                | KafkaCode::UnknownMemberId
                | KafkaCode::FencedInstanceId
                | KafkaCode::FencedMemberEpoch,
            ) => {
                // Only if the member is still in the generation the commit was sent for: a
                // commit that raced with a completed rejoin says nothing about the new one.
                let current = {
                    let st = lock(&member.inner.state);
                    st.stable && st.generation == generation && generation >= 0
                };
                if current {
                    member.mark_lost(
                        !kip848 && err.kafka_code() == Some(KafkaCode::UnknownMemberId),
                        "offset commit refused",
                    );
                }
                return Err(err.message(
                    "commit refused: this member is no longer part of the group's current generation \
                     (its partitions may have been reassigned); rejoin and reprocess",
                ));
            }
            Some(KafkaCode::RebalanceInProgress) => {
                member.request_rejoin();
                return Err(err.message(
                    "commit refused: the group is rebalancing; the offsets may be committed after the rejoin",
                ));
            }
            _ => {}
        }
        let retriable = is_coordinator_error(&err)
            || matches!(
                err.kafka_code(),
                Some(KafkaCode::CoordinatorLoadInProgress | KafkaCode::RequestTimedOut)
            )
            || (kip848 && err.kafka_code() == Some(KafkaCode::StaleMemberEpoch))
            || err.is_retriable();
        if !retriable || Instant::now() >= deadline {
            return Err(err);
        }
        if err.kafka_code() == Some(KafkaCode::StaleMemberEpoch) {
            // The epoch this commit carried is older than the coordinator's: wait for the
            // heartbeat that brings the new one.
            member.inner.heartbeat_now.notify_one();
        }
        if is_coordinator_error(&err) {
            member.coordinator_failed().await;
        }
        let wait = backoff.delay();
        backoff.failed();
        tokio::time::sleep(wait).await;
    }
}

async fn heartbeat_loop(weak: Weak<Inner>, mut shutdown: watch::Receiver<bool>) {
    let mut wait = match weak.upgrade() {
        Some(i) => i.config.heartbeat_interval,
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            r = shutdown.changed() => if r.is_err() || *shutdown.borrow() { return },
        }
        let Some(inner) = weak.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) || *shutdown.borrow() {
            return;
        }
        let member = GroupMember {
            inner,
            owner: false,
        };
        let cfg = member.inner.config.clone();
        wait = cfg.heartbeat_interval;
        let stable = lock(&member.inner.state).stable;
        if !stable {
            continue;
        }
        let since_poll = lock(&member.inner.last_poll).elapsed();
        if since_poll > cfg.max_poll_interval {
            tracing::warn!(
                group = %cfg.group_id,
                ?since_poll,
                "poll() was not called within max.poll.interval; leaving the group"
            );
            let _ = member.leave(false).await;
            member.mark_lost(
                cfg.group_instance_id.is_none(),
                "max.poll.interval exceeded",
            );
            continue;
        }
        if member.inner.rejoin_needed.load(Ordering::Acquire) {
            continue;
        }
        let sent_generation = member.generation();
        let hb = member.heartbeat_once().await;
        // An answer about a generation this member has left since (a rejoin completed while the
        // heartbeat was in flight) says nothing about the current one.
        if member.generation() != sent_generation || !lock(&member.inner.state).stable {
            continue;
        }
        match hb {
            Ok(()) => {}
            Err(e) => match e.kafka_code() {
                Some(KafkaCode::RebalanceInProgress) => member.request_rejoin(),
                Some(KafkaCode::IllegalGeneration) => {
                    member.mark_lost(false, "heartbeat: ILLEGAL_GENERATION")
                }
                Some(KafkaCode::UnknownMemberId | KafkaCode::FencedInstanceId) => {
                    member.mark_lost(true, "heartbeat: unknown or fenced member")
                }
                _ => {
                    if is_coordinator_error(&e)
                        || e.kafka_code() == Some(KafkaCode::CoordinatorLoadInProgress)
                    {
                        member.coordinator_failed().await;
                    }
                    tracing::debug!(error = %e, "heartbeat failed");
                    wait = cfg.retry_backoff.max(Duration::from_millis(100));
                }
            },
        }
    }
}

//! The consumer group protocol of KIP-848 (`group.protocol=consumer`): membership through
//! ConsumerGroupHeartbeat with member epochs and broker-side assignment.
//!
//! The member sends its subscription (topic names or a broker-side regex) and the partitions
//! it owns; the coordinator answers with the member epoch, the heartbeat interval and, when it
//! changed, the member's assignment (by topic id). Only partitions no other member still owns
//! are ever assigned, so the member takes new partitions at once; partitions no longer
//! assigned are revoked by the consumer (callback, commit) and then acknowledged by the next
//! heartbeat, which leaves them out of the owned partitions. The same [`GroupMember`] API as
//! the classic protocol: [`GroupMember::join`] sends the subscription and returns the latest
//! assignment, [`GroupMember::assignment_applied`] acknowledges what the consumer owns.
//!
//! Errors as Java's `ConsumerMembershipManager` handles them: `FENCED_MEMBER_EPOCH` and
//! `UNKNOWN_MEMBER_ID` lose the partitions and rejoin with epoch 0; coordinator errors look
//! the coordinator up again; `TOPIC_AUTHORIZATION_FAILED` is reported to the application
//! (the next `poll` returns it, once) while the member keeps heartbeating after the retry
//! back-off, so that it recovers when the missing ACLs are added; `UNRELEASED_INSTANCE_ID`,
//! `GROUP_MAX_SIZE_REACHED`, `UNSUPPORTED_ASSIGNOR`, `INVALID_REGULAR_EXPRESSION`, group
//! authorization and other errors are fatal: the member stops and every later join returns
//! the error.
//!
//! Like Java's `HeartbeatState`, a heartbeat carries only the fields that changed since the
//! last one (member id, epoch and instance id always): every field when joining (epoch 0) and
//! after any failed heartbeat, then the subscription, the server assignor and the rack only
//! when they change, the owned partitions only when the consumer acknowledged a change, the
//! rebalance timeout only on join. The coordinator reads a missing (null) field as unchanged.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, GroupId, TopicName,
    consumer_group_heartbeat_request::TopicPartitions,
};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::assignor::RebalanceProtocol;
use super::member::{
    GroupMember, Inner, JoinOutcome, code_error, is_coordinator_error, lock, str_bytes, task_member,
};
use super::{GroupConfig, GroupProtocol, TopicPartition};
use crate::cluster::{Recovery, recovery_for};
use crate::connection::RetryDelay;
use crate::{Error, ErrorKind, KafkaCode, Result};

/// Member epoch of a dynamic member leaving the group.
const LEAVE_EPOCH: i32 = -1;
/// Member epoch of a static member leaving for now (it keeps its assignment for the session
/// timeout, so a restart with the same `group.instance.id` takes it back).
const STATIC_LEAVE_EPOCH: i32 = -2;

/// What a member sent as its subscription: topic names and regex.
type SentSubscription = (Vec<String>, Option<String>);

/// The consumer protocol's part of a member's state.
#[derive(Debug, Default)]
pub(super) struct Kip848State {
    /// The latest assignment the coordinator sent (topic id → partitions), if any since the
    /// last (re)join.
    target: Option<BTreeMap<Uuid, BTreeSet<i32>>>,
    /// The partitions the consumer owns (acknowledged in every heartbeat).
    owned: BTreeMap<Uuid, BTreeSet<i32>>,
    /// Topic names of the ids seen.
    names: HashMap<Uuid, Arc<str>>,
    /// The heartbeat interval the coordinator asked for.
    heartbeat_interval: Option<Duration>,
    /// The subscription to send.
    topics: Vec<String>,
    regex: Option<String>,
    /// The subscription the coordinator accepted last.
    sent: Option<SentSubscription>,
    /// A fatal error: the member is out of the group for good.
    fatal: Option<Error>,
    /// An error reported to the application (the next `poll` returns it) while the member
    /// stays in the group: `TOPIC_AUTHORIZATION_FAILED`.
    reported: Option<Error>,
    /// The fields the last heartbeat carried: the next one sends only what differs.
    sent_fields: SentFields,
}

/// The optional fields of the heartbeats sent since the last join or failure (None: not sent,
/// so the next heartbeat must carry it).
#[derive(Debug, Default, Clone, PartialEq)]
struct SentFields {
    rebalance_timeout_ms: Option<i32>,
    subscription: Option<SentSubscription>,
    server_assignor: Option<String>,
    rack: Option<String>,
    owned: Option<BTreeMap<Uuid, BTreeSet<i32>>>,
}

impl Kip848State {
    pub(super) fn new() -> Kip848State {
        Kip848State::default()
    }

    /// Forgets the assignment (membership lost or left): the next join starts at epoch 0.
    pub(super) fn forget_assignment(&mut self) {
        self.target = None;
        self.owned.clear();
        self.sent = None;
        self.sent_fields = SentFields::default();
    }

    /// The next heartbeat (except the leave): every field at epoch 0 or after a failure
    /// ([`SentFields`] reset), otherwise only those that changed since the last one; records
    /// what it carries. No I/O.
    fn build_heartbeat(
        &mut self,
        cfg: &GroupConfig,
        member_id: &str,
        epoch: i32,
        version: i16,
    ) -> Result<ConsumerGroupHeartbeatRequest> {
        let all = epoch == 0;
        if all {
            self.sent_fields = SentFields::default();
        }
        let sent = &mut self.sent_fields;
        let mut req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(str_bytes(&cfg.group_id)))
            .with_member_id(str_bytes(member_id))
            .with_member_epoch(epoch)
            .with_instance_id(cfg.consumer.group_instance_id.as_deref().map(str_bytes));
        let rebalance_timeout = cfg
            .consumer
            .max_poll_interval
            .as_millis()
            .min(i32::MAX as u128) as i32;
        if sent.rebalance_timeout_ms != Some(rebalance_timeout) {
            req.rebalance_timeout_ms = rebalance_timeout;
            sent.rebalance_timeout_ms = Some(rebalance_timeout);
        }
        let wanted: SentSubscription = (self.topics.clone(), self.regex.clone());
        if sent.subscription.as_ref() != Some(&wanted) {
            let had_regex = self.sent.as_ref().is_some_and(|s| s.1.is_some());
            match &wanted.1 {
                Some(r) => {
                    if version < 1 {
                        return Err(Error::config(
                            "a broker-side topic regex needs ConsumerGroupHeartbeat v1 (Kafka 4.0+)",
                        ));
                    }
                    req.subscribed_topic_names = Some(Vec::new());
                    req.subscribed_topic_regex = Some(str_bytes(r));
                }
                None => {
                    req.subscribed_topic_names =
                        Some(wanted.0.iter().map(|t| TopicName(str_bytes(t))).collect());
                    if had_regex && version >= 1 {
                        // An empty regex removes the one sent before.
                        req.subscribed_topic_regex = Some(StrBytes::from_static_str(""));
                    }
                }
            }
            sent.subscription = Some(wanted);
        }
        if let Some(a) = &cfg.consumer.group_remote_assignor
            && sent.server_assignor.as_ref() != Some(a)
        {
            req.server_assignor = Some(str_bytes(a));
            sent.server_assignor = Some(a.clone());
        }
        if let Some(r) = &cfg.consumer.client_rack
            && sent.rack.as_ref() != Some(r)
        {
            req.rack_id = Some(str_bytes(r));
            sent.rack = Some(r.clone());
        }
        // A joining member owns nothing (its partitions were given up when it lost them).
        let owned = if epoch == 0 {
            BTreeMap::new()
        } else {
            self.owned.clone()
        };
        if sent.owned.as_ref() != Some(&owned) {
            req.topic_partitions = Some(
                owned
                    .iter()
                    .map(|(id, ps)| {
                        TopicPartitions::default()
                            .with_topic_id(*id)
                            .with_partitions(ps.iter().copied().collect())
                    })
                    .collect(),
            );
            sent.owned = Some(owned);
        }
        Ok(req)
    }

    /// A heartbeat failed (not answered, or answered with an error): the next one carries
    /// every field again, as Java resets its `SentFields`.
    fn heartbeat_failed(&mut self) {
        self.sent_fields = SentFields::default();
    }

    fn reconciled(&self) -> bool {
        self.target.as_ref().is_none_or(|t| *t == self.owned)
    }
}

/// A member id as Java's consumer makes one (KIP-1082: the client chooses it): 16 random
/// bytes, URL-safe base64. Share consumers (KIP-932) choose theirs the same way, so
/// `share::membership` uses this one too.
pub(crate) fn new_member_id() -> String {
    let mut raw = [0u8; 16];
    if getrandom::fill(&mut raw).is_err() {
        // No entropy source: fall back on the clock and the process id, unique enough for a
        // member id (the coordinator only needs it to differ from the group's other members).
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        raw.copy_from_slice(&(now ^ ((std::process::id() as u128) << 64)).to_be_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// Heartbeat errors reported to the application while the member stays in the group and
/// heartbeats again after the retry back-off (Java: an `ErrorEvent` that `poll` throws, the
/// member keeps its state so that it recovers once the missing ACLs are added).
fn is_reported_not_fatal(code: KafkaCode) -> bool {
    code == KafkaCode::TopicAuthorizationFailed
}

/// Heartbeat errors after which the member stops for good (Java's fatal heartbeat errors).
fn is_fatal(code: KafkaCode) -> bool {
    !matches!(
        code,
        KafkaCode::TopicAuthorizationFailed
            | KafkaCode::FencedMemberEpoch
            | KafkaCode::UnknownMemberId
            | KafkaCode::NotCoordinator
            | KafkaCode::CoordinatorNotAvailable
            | KafkaCode::CoordinatorLoadInProgress
            | KafkaCode::RequestTimedOut
            | KafkaCode::NetworkException
    ) && !code.is_retriable()
}

impl GroupMember {
    /// Sets the broker-side topic regex of the consumer protocol's subscription (KIP-848
    /// `SubscribedTopicRegex`, RE2/J syntax, matched against whole topic names by the
    /// coordinator); `None` for a subscription by topic names. Sent by the next
    /// [`join`](Self::join). Ignored by the classic protocol.
    pub fn set_topic_regex(&self, regex: Option<String>) {
        let mut st = lock(&self.inner.state);
        if st.kip848.regex != regex {
            st.kip848.regex = regex;
            drop(st);
            self.request_rejoin();
        }
    }

    /// Reports the partitions the consumer owns after applying an assignment (revoked ones
    /// removed, after their callbacks and commits). With the consumer protocol this is the
    /// acknowledgement the coordinator waits for before it gives the revoked partitions to
    /// other members: a heartbeat carrying it is sent at once. A no-op with the classic
    /// protocol.
    pub fn assignment_applied(&self, owned: &[TopicPartition]) {
        if self.inner.config.consumer.group_protocol != GroupProtocol::Consumer {
            return;
        }
        let mut st = lock(&self.inner.state);
        let by_name: HashMap<&str, Uuid> =
            st.kip848.names.iter().map(|(id, n)| (&**n, *id)).collect();
        let mut map: BTreeMap<Uuid, BTreeSet<i32>> = BTreeMap::new();
        for tp in owned {
            if let Some(id) = by_name.get(tp.topic()) {
                map.entry(*id).or_default().insert(tp.partition);
            }
        }
        if map != st.kip848.owned {
            st.kip848.owned = map;
            drop(st);
            self.inner.heartbeat_now.notify_one();
        }
    }

    /// Takes the error the consumer protocol's heartbeat reported for the application while
    /// the member stays in the group (`TOPIC_AUTHORIZATION_FAILED`: the subscription names a
    /// topic this principal may not describe), if any since the last call. The consumer's
    /// `poll` returns it once, as Java's throws it; the member keeps heartbeating and gets its
    /// assignment when the ACLs allow. Always `None` with the classic protocol.
    pub fn take_reported_error(&self) -> Option<Error> {
        lock(&self.inner.state).kip848.reported.take()
    }

    /// The heartbeat interval the coordinator asked for (consumer protocol), once known.
    pub fn broker_heartbeat_interval(&self) -> Option<Duration> {
        lock(&self.inner.state).kip848.heartbeat_interval
    }

    pub(super) async fn join_consumer_protocol(&self, topics: &[String]) -> Result<JoinOutcome> {
        let inner = &self.inner;
        let mut backoff =
            RetryDelay::new(inner.config.consumer.retry_backoff, Duration::from_secs(1));
        inner.rejoin_needed.store(false, Ordering::Release);
        lock(&inner.state).kip848.topics = topics.to_vec();
        loop {
            if inner.closed.load(Ordering::Acquire) {
                return Err(Error::with_message(
                    ErrorKind::Closed,
                    "group member closed",
                ));
            }
            let need = {
                let st = lock(&inner.state);
                if let Some(e) = &st.kip848.fatal {
                    return Err(e.clone());
                }
                let wanted = (st.kip848.topics.clone(), st.kip848.regex.clone());
                st.generation < 0 || st.kip848.sent.as_ref() != Some(&wanted)
            };
            if !need {
                break;
            }
            match self.heartbeat_consumer_protocol().await {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    if let Some(f) = lock(&inner.state).kip848.fatal.clone() {
                        return Err(f);
                    }
                    if e.kafka_code().is_some_and(is_reported_not_fatal) {
                        // For the application now (poll returns it); the next poll joins again.
                        lock(&inner.state).kip848.reported = None;
                        self.request_rejoin();
                        return Err(e);
                    }
                    if let ErrorKind::UnsupportedVersion { .. } = e.kind() {
                        return Err(e.message(
                            "the broker does not serve the consumer group protocol (KIP-848, \
                             Kafka 4.0+); use group.protocol=classic",
                        ));
                    }
                    // A local failure retrying cannot fix (broker codes are classified by
                    // `heartbeat_error`: fencing retried, the rest fatal).
                    if e.kafka_code().is_none() && recovery_for(&e) == Recovery::GiveUp {
                        return Err(e);
                    }
                    let wait = backoff.delay();
                    backoff.failed();
                    tracing::debug!(error = %e, ?wait, "consumer group heartbeat (join) failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
        let assignment = self.resolve_assignment().await;
        self.polled();
        let st = lock(&inner.state);
        Ok(JoinOutcome {
            generation: st.generation,
            member_id: st.member_id.clone(),
            protocol: RebalanceProtocol::Cooperative,
            protocol_name: inner
                .config
                .consumer
                .group_remote_assignor
                .clone()
                .unwrap_or_else(|| "consumer".to_owned()),
            assignment,
            leader: false,
        })
    }

    /// The latest assignment by topic name (topic ids resolved through the metadata; a topic
    /// not known yet is left out until a later heartbeat, like Java's pending assignment).
    async fn resolve_assignment(&self) -> Vec<TopicPartition> {
        let inner = &self.inner;
        let (target, mut names) = {
            let st = lock(&inner.state);
            let t = st
                .kip848
                .target
                .clone()
                .unwrap_or_else(|| st.kip848.owned.clone());
            (t, st.kip848.names.clone())
        };
        let lookup = |names: &mut HashMap<Uuid, Arc<str>>| {
            let missing: Vec<Uuid> = target
                .keys()
                .filter(|id| !names.contains_key(id))
                .copied()
                .collect();
            if missing.is_empty() {
                return false;
            }
            let meta = inner.cluster.metadata();
            for t in meta.topics.values() {
                let id = Uuid::from_bytes(t.topic_id);
                if missing.contains(&id) {
                    names.insert(id, Arc::from(t.name.as_str()));
                }
            }
            target.keys().any(|id| !names.contains_key(id))
        };
        if lookup(&mut names) {
            // A topic id this client has not seen: list the cluster's topics.
            if let Err(e) = inner.cluster.refresh().await {
                tracing::debug!(error = %e, "metadata refresh for assigned topic ids failed");
            }
            if lookup(&mut names) {
                tracing::debug!("assigned topic ids not in the metadata yet; they wait");
            }
        }
        let mut out = Vec::new();
        for (id, ps) in &target {
            if let Some(n) = names.get(id) {
                out.extend(ps.iter().map(|p| TopicPartition {
                    topic: n.clone(),
                    partition: *p,
                }));
            }
        }
        out.sort();
        lock(&inner.state).kip848.names = names;
        out
    }

    /// One ConsumerGroupHeartbeat (every field when joining or after a failure, otherwise
    /// the changed ones); joins with epoch 0 when not a member. Handles the answer.
    async fn heartbeat_consumer_protocol(&self) -> Result<()> {
        let inner = &self.inner;
        let cfg = &inner.config;
        let _one = inner.heartbeat_lock.lock().await;
        let (member_id, epoch) = {
            let mut st = lock(&inner.state);
            if st.member_id.is_empty() {
                st.member_id = new_member_id();
            }
            (st.member_id.clone(), st.generation.max(0))
        };
        let mut topics_sent: Option<SentSubscription> = None;
        let sent = self
            .send(ConsumerGroupHeartbeatRequest::default(), |v| {
                let mut st = lock(&inner.state);
                topics_sent = Some((st.kip848.topics.clone(), st.kip848.regex.clone()));
                let req = st.kip848.build_heartbeat(cfg, &member_id, epoch, v);
                if req.is_err() {
                    st.kip848.heartbeat_failed();
                }
                Ok((req?, v))
            })
            .await;
        let (resp, _) = match sent {
            Ok(r) => r,
            Err(e) => {
                lock(&inner.state).kip848.heartbeat_failed();
                self.heartbeat_transport_failed(&e);
                return Err(e);
            }
        };
        let (topics, regex) = topics_sent.unwrap_or_default();
        if let Some(e) = code_error(resp.error_code, ApiKey::ConsumerGroupHeartbeat) {
            let e = match &resp.error_message {
                Some(m) if !m.is_empty() => e.message(m.to_string()),
                _ => e,
            };
            lock(&inner.state).kip848.heartbeat_failed();
            self.heartbeat_error(&e, epoch).await;
            return Err(e);
        }
        let mut st = lock(&inner.state);
        if let Some(id) = &resp.member_id
            && !id.is_empty()
        {
            st.member_id = id.to_string();
        }
        let joined = st.generation < 0;
        st.generation = resp.member_epoch;
        st.stable = true;
        if resp.heartbeat_interval_ms > 0 {
            st.kip848.heartbeat_interval =
                Some(Duration::from_millis(resp.heartbeat_interval_ms as u64));
        }
        st.kip848.sent = Some((topics, regex));
        if let Some(a) = &resp.assignment {
            let mut map: BTreeMap<Uuid, BTreeSet<i32>> = BTreeMap::new();
            for t in &a.topic_partitions {
                map.entry(t.topic_id)
                    .or_default()
                    .extend(t.partitions.iter().copied());
            }
            map.retain(|_, ps| !ps.is_empty());
            st.kip848.target = Some(map);
        }
        if joined {
            tracing::info!(
                group = %cfg.group_id,
                member = %st.member_id,
                epoch = st.generation,
                "joined group (consumer protocol)"
            );
        }
        let pending = !st.kip848.reconciled();
        drop(st);
        if pending {
            self.request_rejoin();
        }
        Ok(())
    }

    fn heartbeat_transport_failed(&self, e: &Error) {
        tracing::debug!(error = %e, "consumer group heartbeat not answered");
    }

    async fn heartbeat_error(&self, e: &Error, sent_epoch: i32) {
        let Some(code) = e.kafka_code() else { return };
        match code {
            KafkaCode::FencedMemberEpoch | KafkaCode::UnknownMemberId => {
                let current = lock(&self.inner.state).generation.max(0) == sent_epoch;
                if current {
                    self.mark_lost(false, "consumer group heartbeat: fenced or unknown member");
                }
            }
            KafkaCode::NotCoordinator
            | KafkaCode::CoordinatorNotAvailable
            | KafkaCode::CoordinatorLoadInProgress => self.coordinator_failed().await,
            c if is_reported_not_fatal(c) => {
                tracing::error!(
                    group = %self.inner.config.group_id,
                    error = %e,
                    "consumer group heartbeat failed; reported to the application, the member \
                     stays and retries"
                );
                lock(&self.inner.state).kip848.reported = Some(e.clone());
                self.inner.events.notify_one();
            }
            c if is_fatal(c) => {
                tracing::error!(
                    group = %self.inner.config.group_id,
                    error = %e,
                    "consumer group heartbeat failed fatally; the member leaves the group"
                );
                {
                    let mut st = lock(&self.inner.state);
                    st.kip848.fatal = Some(e.clone());
                    st.stable = false;
                    st.generation = -1;
                    st.kip848.forget_assignment();
                }
                self.inner.lost.store(true, Ordering::Release);
                self.request_rejoin();
            }
            _ => {}
        }
    }

    pub(super) async fn leave_consumer_protocol(&self) -> Result<()> {
        let inner = &self.inner;
        let cfg = &inner.config;
        let (member_id, was) = {
            let mut st = lock(&inner.state);
            let was = st.generation >= 0;
            st.generation = -1;
            st.stable = false;
            st.kip848.forget_assignment();
            (st.member_id.clone(), was)
        };
        if !was || member_id.is_empty() {
            return Ok(());
        }
        let epoch = if cfg.consumer.group_instance_id.is_some() && !cfg.static_leave_on_close {
            STATIC_LEAVE_EPOCH
        } else {
            LEAVE_EPOCH
        };
        let _one = inner.heartbeat_lock.lock().await;
        let group = cfg.group_id.clone();
        let (resp, _) = self
            .send(ConsumerGroupHeartbeatRequest::default(), |v| {
                let req = ConsumerGroupHeartbeatRequest::default()
                    .with_group_id(GroupId(str_bytes(&group)))
                    .with_member_id(str_bytes(&member_id))
                    .with_member_epoch(epoch)
                    .with_instance_id(cfg.consumer.group_instance_id.as_deref().map(str_bytes));
                Ok((req, v))
            })
            .await?;
        tracing::info!(group = %cfg.group_id, member = %member_id, epoch, "left group (consumer protocol)");
        match code_error(resp.error_code, ApiKey::ConsumerGroupHeartbeat) {
            // Already out of the group: nothing to leave.
            Some(e)
                if matches!(
                    e.kafka_code(),
                    Some(KafkaCode::UnknownMemberId | KafkaCode::FencedMemberEpoch)
                ) =>
            {
                Ok(())
            }
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// The consumer protocol's heartbeat task: a heartbeat every interval the coordinator asked
/// for (the configured one until it says), and at once when the consumer acknowledged a new
/// assignment; leaves the group when `poll` was not called within `max.poll.interval`.
pub(super) async fn heartbeat_loop(weak: Weak<Inner>, mut shutdown: crate::task::StopListener) {
    let (mut backoff, configured) = match weak.upgrade() {
        Some(i) => (
            RetryDelay::new(i.config.consumer.retry_backoff, Duration::from_secs(1)),
            i.config.consumer.heartbeat_interval,
        ),
        None => return,
    };
    let mut next_heartbeat = Instant::now() + configured;
    loop {
        let forced = {
            let Some(inner) = weak.upgrade() else { return };
            // Wake for the next heartbeat, or when max.poll.interval runs out if that is sooner.
            let member = {
                let st = lock(&inner.state);
                st.stable && st.generation >= 0
            };
            let poll_deadline = *lock(&inner.last_poll)
                + inner.config.consumer.max_poll_interval
                + Duration::from_millis(1);
            let wake = if member && poll_deadline > Instant::now() {
                next_heartbeat.min(poll_deadline)
            } else {
                next_heartbeat
            };
            // Holding `inner` while waiting is fine: dropping the member's owner handle sends
            // the shutdown that ends this wait.
            let notified = inner.heartbeat_now.notified();
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => false,
                _ = notified => true,
                _ = shutdown.stopped() => return,
            }
        };
        let Some(member) = task_member(&weak, &shutdown) else {
            return;
        };
        let (member_now, interval) = {
            let st = lock(&member.inner.state);
            (
                st.stable && st.generation >= 0 && st.kip848.fatal.is_none(),
                st.kip848.heartbeat_interval.unwrap_or(configured),
            )
        };
        if !member_now {
            next_heartbeat = Instant::now() + interval;
            continue;
        }
        if member.max_poll_interval_exceeded() {
            if let Err(e) = member.leave(false).await {
                tracing::debug!(error = %e, "leave heartbeat failed");
            }
            member.mark_lost(false, "max.poll.interval exceeded");
            continue;
        }
        if !forced && Instant::now() < next_heartbeat {
            continue;
        }
        next_heartbeat = Instant::now() + interval;
        match member.heartbeat_consumer_protocol().await {
            Ok(()) => backoff.reset(),
            Err(e) => {
                if is_coordinator_error(&e)
                    || e.is_retriable()
                    || e.kafka_code().is_some_and(is_reported_not_fatal)
                {
                    next_heartbeat = Instant::now() + backoff.delay().min(interval);
                    backoff.failed();
                }
                tracing::debug!(error = %e, "consumer group heartbeat failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_java_style_and_unique() {
        let a = new_member_id();
        let b = new_member_id();
        assert_eq!(a.len(), 22, "16 bytes in unpadded base64: {a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(a, b);
    }

    #[test]
    fn fencing_and_coordinator_errors_are_not_fatal_the_rest_is() {
        for c in [
            KafkaCode::FencedMemberEpoch,
            KafkaCode::UnknownMemberId,
            KafkaCode::NotCoordinator,
            KafkaCode::CoordinatorNotAvailable,
            KafkaCode::CoordinatorLoadInProgress,
        ] {
            assert!(!is_fatal(c), "{c:?}");
        }
        for c in [
            KafkaCode::UnreleasedInstanceId,
            KafkaCode::GroupMaxSizeReached,
            KafkaCode::UnsupportedAssignor,
            KafkaCode::InvalidRegularExpression,
            KafkaCode::GroupAuthorizationFailed,
            KafkaCode::InvalidRequest,
        ] {
            assert!(is_fatal(c), "{c:?}");
        }
    }

    #[test]
    fn reconciled_compares_the_target_with_what_is_owned() {
        let mut st = Kip848State::new();
        assert!(st.reconciled(), "no assignment yet: nothing to do");
        let id = Uuid::from_bytes([7; 16]);
        st.target = Some(BTreeMap::from([(id, BTreeSet::from([0, 1]))]));
        assert!(!st.reconciled());
        st.owned = BTreeMap::from([(id, BTreeSet::from([0, 1]))]);
        assert!(st.reconciled());
        st.forget_assignment();
        assert!(st.target.is_none() && st.owned.is_empty() && st.sent.is_none());
    }

    fn owned(id: Uuid, ps: &[i32]) -> BTreeMap<Uuid, BTreeSet<i32>> {
        BTreeMap::from([(id, ps.iter().copied().collect())])
    }

    fn names(req: &ConsumerGroupHeartbeatRequest) -> Option<Vec<String>> {
        req.subscribed_topic_names
            .as_ref()
            .map(|v| v.iter().map(|t| t.0.to_string()).collect())
    }

    fn parts(req: &ConsumerGroupHeartbeatRequest) -> Option<Vec<(Uuid, Vec<i32>)>> {
        req.topic_partitions.as_ref().map(|v| {
            v.iter()
                .map(|t| (t.topic_id, t.partitions.clone()))
                .collect()
        })
    }

    fn config() -> GroupConfig {
        let mut cfg = GroupConfig::new("g");
        cfg.consumer.group_protocol = GroupProtocol::Consumer;
        cfg.consumer.group_remote_assignor = Some("range".into());
        cfg.consumer.client_rack = Some("rack-a".into());
        cfg.consumer.group_instance_id = Some("i-1".into());
        cfg.consumer.max_poll_interval = Duration::from_secs(60);
        cfg
    }

    #[test]
    fn the_join_heartbeat_carries_every_field_including_the_rack() {
        let cfg = config();
        let mut st = Kip848State::new();
        st.topics = vec!["a".into(), "b".into()];
        let req = st.build_heartbeat(&cfg, "m", 0, 1).unwrap();
        assert_eq!(req.group_id.0.as_str(), "g");
        assert_eq!(req.member_id.as_str(), "m");
        assert_eq!(req.member_epoch, 0);
        assert_eq!(req.instance_id.as_deref(), Some("i-1"));
        assert_eq!(req.rack_id.as_deref(), Some("rack-a"));
        assert_eq!(req.rebalance_timeout_ms, 60_000);
        assert_eq!(req.server_assignor.as_deref(), Some("range"));
        assert_eq!(names(&req), Some(vec!["a".to_owned(), "b".to_owned()]));
        assert_eq!(req.subscribed_topic_regex, None);
        assert_eq!(parts(&req), Some(vec![]), "a joining member owns nothing");
    }

    #[test]
    fn later_heartbeats_carry_only_what_changed() {
        let cfg = config();
        let id = Uuid::from_bytes([3; 16]);
        let mut st = Kip848State::new();
        st.topics = vec!["a".into()];
        st.build_heartbeat(&cfg, "m", 0, 1).unwrap();
        st.sent = Some((st.topics.clone(), None));

        // Nothing changed: only the identity fields.
        let req = st.build_heartbeat(&cfg, "m", 5, 1).unwrap();
        assert_eq!(req.member_epoch, 5);
        assert_eq!(req.instance_id.as_deref(), Some("i-1"), "always sent");
        assert_eq!(req.rack_id, None);
        assert_eq!(req.rebalance_timeout_ms, -1, "-1: unchanged");
        assert_eq!(req.server_assignor, None);
        assert_eq!(req.subscribed_topic_names, None);
        assert_eq!(req.subscribed_topic_regex, None);
        assert_eq!(req.topic_partitions, None);

        // The consumer acknowledged an assignment: the owned partitions, once.
        st.owned = owned(id, &[0, 2]);
        let req = st.build_heartbeat(&cfg, "m", 5, 1).unwrap();
        assert_eq!(parts(&req), Some(vec![(id, vec![0, 2])]));
        assert_eq!(req.subscribed_topic_names, None);
        let req = st.build_heartbeat(&cfg, "m", 5, 1).unwrap();
        assert_eq!(req.topic_partitions, None);

        // A new subscription: the topic names, once.
        st.topics = vec!["a".into(), "c".into()];
        let req = st.build_heartbeat(&cfg, "m", 6, 1).unwrap();
        assert_eq!(names(&req), Some(vec!["a".to_owned(), "c".to_owned()]));
        assert_eq!(req.topic_partitions, None);
        let req = st.build_heartbeat(&cfg, "m", 6, 1).unwrap();
        assert_eq!(req.subscribed_topic_names, None);
    }

    #[test]
    fn a_failed_heartbeat_or_a_rejoin_sends_every_field_again() {
        let cfg = config();
        let id = Uuid::from_bytes([4; 16]);
        let mut st = Kip848State::new();
        st.topics = vec!["a".into()];
        st.build_heartbeat(&cfg, "m", 0, 1).unwrap();
        st.owned = owned(id, &[1]);
        st.build_heartbeat(&cfg, "m", 3, 1).unwrap();
        assert_eq!(
            st.build_heartbeat(&cfg, "m", 3, 1)
                .unwrap()
                .topic_partitions,
            None
        );

        st.heartbeat_failed();
        let req = st.build_heartbeat(&cfg, "m", 3, 1).unwrap();
        assert_eq!(names(&req), Some(vec!["a".to_owned()]));
        assert_eq!(parts(&req), Some(vec![(id, vec![1])]));
        assert_eq!(req.rack_id.as_deref(), Some("rack-a"));
        assert_eq!(req.server_assignor.as_deref(), Some("range"));
        assert_eq!(req.rebalance_timeout_ms, 60_000);

        // Fenced: the member rejoins at epoch 0 with everything and no partitions.
        st.build_heartbeat(&cfg, "m", 3, 1).unwrap();
        st.forget_assignment();
        let req = st.build_heartbeat(&cfg, "m", 0, 1).unwrap();
        assert_eq!(names(&req), Some(vec!["a".to_owned()]));
        assert_eq!(parts(&req), Some(vec![]));
        assert_eq!(req.rack_id.as_deref(), Some("rack-a"));
    }

    #[test]
    fn regex_subscription_changes_are_sent_once_and_removed_with_an_empty_regex() {
        let cfg = GroupConfig::new("g");
        let mut st = Kip848State::new();
        st.regex = Some("orders-.*".into());
        let req = st.build_heartbeat(&cfg, "m", 0, 1).unwrap();
        assert_eq!(req.subscribed_topic_regex.as_deref(), Some("orders-.*"));
        assert_eq!(names(&req), Some(vec![]));
        assert_eq!(req.rack_id, None, "no client.rack: no RackId");
        assert_eq!(req.server_assignor, None);
        st.sent = Some((Vec::new(), st.regex.clone()));
        let req = st.build_heartbeat(&cfg, "m", 2, 1).unwrap();
        assert_eq!(req.subscribed_topic_regex, None);
        // Back to topic names: the names and an empty regex that removes the old one.
        st.regex = None;
        st.topics = vec!["x".into()];
        let req = st.build_heartbeat(&cfg, "m", 2, 1).unwrap();
        assert_eq!(names(&req), Some(vec!["x".to_owned()]));
        assert_eq!(req.subscribed_topic_regex.as_deref(), Some(""));
        // A regex needs v1.
        let mut st = Kip848State::new();
        st.regex = Some("r".into());
        let e = st.build_heartbeat(&cfg, "m", 0, 0).unwrap_err();
        assert!(matches!(e.kind(), ErrorKind::Config), "{e:?}");
    }

    #[test]
    fn topic_authorization_failures_are_reported_not_fatal() {
        assert!(is_reported_not_fatal(KafkaCode::TopicAuthorizationFailed));
        assert!(!is_fatal(KafkaCode::TopicAuthorizationFailed));
        assert!(is_fatal(KafkaCode::GroupAuthorizationFailed));
        assert!(!is_reported_not_fatal(KafkaCode::GroupAuthorizationFailed));
        assert!(!is_reported_not_fatal(KafkaCode::FencedMemberEpoch));
    }
}

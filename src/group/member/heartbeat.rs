//! The heartbeat task: keeps the membership alive and notices rebalances and a lost
//! membership.

use super::*;

impl GroupMember {
    /// Whether `poll` was not called within `max.poll.interval` (logged as a warning): both
    /// heartbeat tasks then leave the group, each as its protocol does.
    pub(in crate::group) fn max_poll_interval_exceeded(&self) -> bool {
        let since_poll = lock(&self.inner.last_poll).elapsed();
        let exceeded = since_poll > self.inner.config.consumer.max_poll_interval;
        if exceeded {
            tracing::warn!(
                group = %self.inner.config.group_id,
                ?since_poll,
                "poll() was not called within max.poll.interval; leaving the group"
            );
        }
        exceeded
    }

    pub(super) async fn heartbeat_once(&self) -> Result<()> {
        let cfg = &self.inner.config;
        let (generation, member_id) = {
            let st = lock(&self.inner.state);
            (st.generation, st.member_id.clone())
        };
        let group = cfg.group_id.clone();
        let instance = cfg.consumer.group_instance_id.clone();
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
}

/// What both heartbeat tasks (this one, the classic protocol's, and the consumer protocol's
/// in `group::consumer_protocol`) act through on each round: a non-owner handle on the member,
/// or `None` once the member is gone or closed or the task was told to stop (the task ends).
pub(in crate::group) fn task_member(
    weak: &Weak<Inner>,
    shutdown: &crate::task::StopListener,
) -> Option<GroupMember> {
    let inner = weak.upgrade()?;
    if inner.closed.load(Ordering::Acquire) || shutdown.is_stopped() {
        return None;
    }
    Some(GroupMember {
        inner,
        owner: false,
    })
}

pub(super) async fn heartbeat_loop(weak: Weak<Inner>, mut shutdown: crate::task::StopListener) {
    let mut wait = match weak.upgrade() {
        Some(i) => i.config.consumer.heartbeat_interval,
        None => return,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.stopped() => return,
        }
        let Some(member) = task_member(&weak, &shutdown) else {
            return;
        };
        let cfg = member.inner.config.clone();
        wait = cfg.consumer.heartbeat_interval;
        let stable = lock(&member.inner.state).stable;
        if !stable {
            continue;
        }
        if member.max_poll_interval_exceeded() {
            let _ = member.leave(false).await;
            member.mark_lost(
                cfg.consumer.group_instance_id.is_none(),
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
                    wait = cfg.consumer.retry_backoff.max(Duration::from_millis(100));
                }
            },
        }
    }
}

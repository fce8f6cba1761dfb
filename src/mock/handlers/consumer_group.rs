//! The consumer group protocol of KIP-848: ConsumerGroupHeartbeat (membership, epochs,
//! broker-side assignment, reconciliation; the state machine is `super::super::consumer_group`)
//! and ConsumerGroupDescribe (both v0–1, left out of ApiVersions by
//! `MockClusterBuilder::consumer_group_protocol(false)`). Also the member-epoch check of
//! OffsetCommit, OffsetFetch and TxnOffsetCommit for consumer-protocol groups.
//!
//! Not modelled: client-side assignors (only the broker-side `uniform` and `range`), rack-aware assignment (the rack id is kept
//! and described, not used), the classic / consumer migration of a non-empty group, share
//! groups (KIP-932; the share tests run against Kafka only), authorized operations, and ACLs.

use uuid::Uuid;

use super::super::consumer_group::{
    ASSIGNORS, Assignment, CgMember, ConsumerGroup, LEAVE_EPOCH, STATIC_LEAVE_EPOCH, compile_regex,
    subset,
};
use super::*;

fn hb_error(c: KafkaCode, message: Option<String>) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(code(c))
        .with_error_message(message.map(StrBytes::from_string))
}

/// The member-epoch check of a commit (or offset fetch) to a consumer-protocol group, as
/// Kafka's `ConsumerGroup.validateOffsetCommit`: without a member (epoch < 0, no member id)
/// only an empty group accepts it; a member must exist and send its current epoch
/// (`STALE_MEMBER_EPOCH` otherwise); a non-transactional commit of a consumer-protocol
/// member needs OffsetCommit v9+.
pub(super) fn check_consumer_commit(
    cg: &ConsumerGroup,
    member_id: &str,
    epoch: i32,
    need_v9: Option<i16>,
) -> Result<(), KafkaCode> {
    if epoch < 0 && member_id.is_empty() {
        return if cg.members.is_empty() {
            Ok(())
        } else {
            Err(KafkaCode::UnknownMemberId)
        };
    }
    let Some(m) = cg.members.get(member_id) else {
        return Err(KafkaCode::UnknownMemberId);
    };
    if need_v9.is_some_and(|v| v < 9) {
        return Err(KafkaCode::UnsupportedVersion);
    }
    if epoch != m.epoch {
        return Err(KafkaCode::StaleMemberEpoch);
    }
    Ok(())
}

impl Api for ConsumerGroupHeartbeatRequest {
    fn describe(&self, info: &mut RequestInfo) {
        info.group_id = Some(self.group_id.0.to_string());
        info.member_id = Some(self.member_id.to_string());
        info.member_epoch = Some(self.member_epoch);
    }
    fn error_response(&self, _v: i16, c: i16) -> ConsumerGroupHeartbeatResponse {
        ConsumerGroupHeartbeatResponse::default().with_error_code(c)
    }
    async fn handle(self, ctx: &Ctx, _v: i16) -> Option<ConsumerGroupHeartbeatResponse> {
        let group_id = self.group_id.0.to_string();
        let epoch = self.member_epoch;
        let instance = self.instance_id.as_ref().map(|i| i.to_string());
        let now = Instant::now();
        let mut guard = ctx.shared.lock();
        let st = &mut *guard;
        if not_coordinator(st, ctx, &group_id) {
            return Some(hb_error(KafkaCode::NotCoordinator, None));
        }
        if group_id.is_empty() {
            return Some(hb_error(
                KafkaCode::InvalidRequest,
                Some("GroupId can't be empty.".into()),
            ));
        }
        let member_id = if self.member_id.is_empty() {
            if epoch != 0 {
                return Some(hb_error(KafkaCode::UnknownMemberId, None));
            }
            st.new_member_id(&ctx.client_id)
        } else {
            self.member_id.to_string()
        };
        if epoch == 0
            && self.subscribed_topic_names.is_none()
            && self.subscribed_topic_regex.is_none()
        {
            return Some(hb_error(
                KafkaCode::InvalidRequest,
                Some("SubscribedTopicNames or SubscribedTopicRegex must be set in the first request.".into()),
            ));
        }
        if let Some(a) = self.server_assignor.as_deref().filter(|a| !a.is_empty())
            && !ASSIGNORS.contains(&a)
        {
            return Some(hb_error(
                KafkaCode::UnsupportedAssignor,
                Some(format!(
                    "ServerAssignor {} is not supported. Supported assignors: {}.",
                    a,
                    ASSIGNORS.join(", ")
                )),
            ));
        }
        if let Some(re) = self
            .subscribed_topic_regex
            .as_deref()
            .filter(|r| !r.is_empty())
            && compile_regex(re).is_err()
        {
            return Some(hb_error(
                KafkaCode::InvalidRegularExpression,
                Some(format!(
                    "SubscribedTopicRegex `{}` is not a valid regular expression.",
                    re
                )),
            ));
        }
        let settings = st.settings.clone();
        let topics: BTreeMap<String, i32> = st
            .topics
            .iter()
            .map(|(n, t)| (n.clone(), t.partitions.len() as i32))
            .collect();
        let by_id: HashMap<Uuid, String> =
            st.topics.iter().map(|(n, t)| (t.id, n.clone())).collect();
        let ids: HashMap<String, Uuid> = st.topics.iter().map(|(n, t)| (n.clone(), t.id)).collect();
        let owned: Option<Assignment> = self.topic_partitions.as_ref().map(|tps| {
            let mut a = Assignment::new();
            for tp in tps {
                if let Some(name) = by_id.get(&tp.topic_id) {
                    a.entry(name.clone())
                        .or_default()
                        .extend(tp.partitions.iter().copied());
                }
            }
            a.retain(|_, ps| !ps.is_empty());
            a
        });
        if epoch != 0 && !st.groups.contains_key(&group_id) {
            return Some(hb_error(
                KafkaCode::GroupIdNotFound,
                Some(format!("Group {group_id} not found.")),
            ));
        }
        if !st.groups.contains_key(&group_id) {
            st.groups.insert(group_id.clone(), Group::new());
            st.group_created.insert(group_id.clone(), now);
        }
        let Some(g) = st.groups.get_mut(&group_id) else {
            return Some(hb_error(KafkaCode::UnknownServerError, None));
        };
        if g.consumer.is_none() {
            if !g.members.is_empty() {
                return Some(hb_error(
                    KafkaCode::GroupIdNotFound,
                    Some(format!("Group {group_id} is not a consumer group.")),
                ));
            }
            // An empty classic group (e.g. only committed offsets) becomes a consumer group.
            g.consumer = Some(ConsumerGroup::default());
            g.protocol_type = "consumer".into();
        }
        let Some(cg) = g.consumer.as_mut() else {
            return Some(hb_error(KafkaCode::UnknownServerError, None));
        };
        let interval = settings
            .consumer_heartbeat_interval
            .as_millis()
            .min(i32::MAX as u128) as i32;
        // Leaving.
        if epoch == LEAVE_EPOCH || epoch == STATIC_LEAVE_EPOCH {
            let id = match &instance {
                Some(inst) => match cg.static_members.get(inst) {
                    Some(known) if *known != member_id => {
                        return Some(hb_error(KafkaCode::FencedInstanceId, None));
                    }
                    Some(known) => known.clone(),
                    None => member_id.clone(),
                },
                None => member_id.clone(),
            };
            let Some(m) = cg.members.get_mut(&id) else {
                return Some(hb_error(KafkaCode::UnknownMemberId, None));
            };
            let resp_epoch = if epoch == STATIC_LEAVE_EPOCH && m.instance_id.is_some() {
                // A static member away for now: it keeps its assignment for the session
                // timeout, so the same instance id coming back takes it over.
                if m.epoch >= 0 {
                    m.epoch_before_leave = m.epoch;
                }
                m.epoch = STATIC_LEAVE_EPOCH;
                m.last_seen = now;
                STATIC_LEAVE_EPOCH
            } else {
                cg.remove_member(&id);
                cg.refresh(&topics);
                LEAVE_EPOCH
            };
            return Some(
                ConsumerGroupHeartbeatResponse::default()
                    .with_member_id(Some(s(&id)))
                    .with_member_epoch(resp_epoch)
                    .with_heartbeat_interval_ms(interval),
            );
        }
        if epoch == 0 {
            let mut joined = false;
            if let Some(inst) = &instance
                && let Some(old) = cg.static_members.get(inst).cloned()
                && old != member_id
            {
                let away = cg
                    .members
                    .get(&old)
                    .is_none_or(|m| m.epoch == STATIC_LEAVE_EPOCH);
                if !away {
                    return Some(hb_error(
                        KafkaCode::UnreleasedInstanceId,
                        Some(format!(
                            "Static member {old} with instance id {inst} is not released yet."
                        )),
                    ));
                }
                // The static member comes back under a new member id: it takes over the old
                // one's assignment and epoch, without a rebalance.
                if let Some(mut m) = cg.members.remove(&old) {
                    m.epoch = m.epoch_before_leave;
                    m.last_seen = now;
                    if let Some(t) = cg.target.remove(&old) {
                        cg.target.insert(member_id.clone(), t);
                    }
                    cg.members.insert(member_id.clone(), m);
                    joined = true;
                }
                cg.static_members.insert(inst.clone(), member_id.clone());
            }
            if !joined {
                if cg.members.contains_key(&member_id) {
                    // A known member rejoining with epoch 0 (after being fenced) starts over.
                    cg.remove_member(&member_id);
                }
                if cg.members.len() >= settings.consumer_group_max_size {
                    return Some(hb_error(
                        KafkaCode::GroupMaxSizeReached,
                        Some(format!(
                            "The consumer group has reached its maximum capacity of {} members.",
                            settings.consumer_group_max_size
                        )),
                    ));
                }
                let mut m = CgMember::new(ctx.client_id.clone(), now);
                m.instance_id = instance.clone();
                cg.members.insert(member_id.clone(), m);
                if let Some(inst) = &instance {
                    cg.static_members.insert(inst.clone(), member_id.clone());
                }
                cg.dirty = true;
            }
        } else {
            if let Some(inst) = &instance
                && cg.static_members.get(inst) != Some(&member_id)
            {
                return Some(hb_error(
                    if cg.static_members.contains_key(inst) {
                        KafkaCode::FencedInstanceId
                    } else {
                        KafkaCode::UnknownMemberId
                    },
                    None,
                ));
            }
            let Some(m) = cg.members.get(&member_id) else {
                return Some(hb_error(
                    KafkaCode::UnknownMemberId,
                    Some(format!(
                        "Member {member_id} is not a member of group {group_id}."
                    )),
                ));
            };
            // Kafka's `throwIfMemberEpochIsInvalid`: a newer epoch is fenced; an older one is
            // accepted only as the previous epoch with owned partitions the member still has
            // (the response that moved it on was lost).
            let ok = epoch == m.epoch
                || epoch == m.previous_epoch
                    && epoch < m.epoch
                    && owned.as_ref().is_none_or(|o| {
                        let mut all = m.assigned.clone();
                        for (t, ps) in &m.revoking {
                            all.entry(t.clone()).or_default().extend(ps.iter().copied());
                        }
                        subset(o, &all)
                    });
            if !ok {
                return Some(hb_error(
                    KafkaCode::FencedMemberEpoch,
                    Some(format!(
                        "The member epoch {epoch} is fenced; the current one is {}.",
                        m.epoch
                    )),
                ));
            }
        }
        let Some(m) = cg.members.get_mut(&member_id) else {
            return Some(hb_error(KafkaCode::UnknownServerError, None));
        };
        m.last_seen = now;
        if !ctx.client_id.is_empty() {
            m.client_id = ctx.client_id.clone();
        }
        if self.rebalance_timeout_ms > 0 {
            m.rebalance_timeout = Duration::from_millis(self.rebalance_timeout_ms as u64);
        }
        if let Some(r) = &self.rack_id {
            m.rack_id = Some(r.to_string());
        }
        let mut changed = false;
        if let Some(names) = &self.subscribed_topic_names {
            let names: Vec<String> = names.iter().map(|t| t.0.to_string()).collect();
            changed |= names != m.topics;
            m.topics = names;
        }
        if let Some(re) = &self.subscribed_topic_regex {
            let re = (!re.is_empty()).then(|| re.to_string());
            changed |= re != m.regex;
            m.regex = re;
        }
        if let Some(a) = &self.server_assignor {
            let a = (!a.is_empty()).then(|| a.to_string());
            changed |= a != m.assignor;
            m.assignor = a;
        }
        if changed {
            cg.dirty = true;
        }
        cg.refresh(&topics);
        let moved = cg.reconcile(&member_id, owned.as_ref(), now);
        let Some(m) = cg.members.get(&member_id) else {
            return Some(hb_error(KafkaCode::UnknownServerError, None));
        };
        let send = epoch == 0
            || moved
            || epoch != m.epoch
            || owned.as_ref().is_some_and(|o| *o != m.assigned);
        let assignment = send.then(|| {
            consumer_group_heartbeat_response::Assignment::default().with_topic_partitions(
                m.assigned
                    .iter()
                    .filter_map(|(t, ps)| {
                        ids.get(t).map(|id| {
                            consumer_group_heartbeat_response::TopicPartitions::default()
                                .with_topic_id(*id)
                                .with_partitions(ps.iter().copied().collect())
                        })
                    })
                    .collect(),
            )
        });
        Some(
            ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(s(&member_id)))
                .with_member_epoch(m.epoch)
                .with_heartbeat_interval_ms(interval)
                .with_assignment(assignment),
        )
    }
}

fn describe_assignment(
    a: &Assignment,
    ids: &HashMap<String, Uuid>,
) -> consumer_group_describe_response::Assignment {
    use consumer_group_describe_response::*;
    Assignment::default().with_topic_partitions(
        a.iter()
            .map(|(t, ps)| {
                TopicPartitions::default()
                    .with_topic_id(ids.get(t).copied().unwrap_or_default())
                    .with_topic_name(tn(t))
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect(),
    )
}

/// A ConsumerGroupDescribe answer naming the group (for the handler and the whole-request
/// error); authorized operations are not modelled (`i32::MIN`, Kafka's "not asked for").
fn consumer_group_described(g: &GroupId) -> consumer_group_describe_response::DescribedGroup {
    consumer_group_describe_response::DescribedGroup::default()
        .with_group_id(g.clone())
        .with_authorized_operations(i32::MIN)
}

impl Api for ConsumerGroupDescribeRequest {
    fn error_response(&self, _v: i16, c: i16) -> ConsumerGroupDescribeResponse {
        ConsumerGroupDescribeResponse::default().with_groups(
            self.group_ids
                .iter()
                .map(|g| consumer_group_described(g).with_error_code(c))
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<ConsumerGroupDescribeResponse> {
        use consumer_group_describe_response::*;
        let st = ctx.shared.lock();
        let ids: HashMap<String, Uuid> = st.topics.iter().map(|(n, t)| (n.clone(), t.id)).collect();
        let groups = self
            .group_ids
            .iter()
            .map(|gid| {
                let name = gid.0.to_string();
                let r = consumer_group_described(gid);
                if not_coordinator(&st, ctx, &name) {
                    return r.with_error_code(code(KafkaCode::NotCoordinator));
                }
                let Some(cg) = st.groups.get(&name).and_then(|g| g.consumer.as_ref()) else {
                    let msg = if st.groups.contains_key(&name) {
                        format!("Group {name} is not a consumer group.")
                    } else {
                        format!("Group {name} not found.")
                    };
                    return r
                        .with_error_code(code(KafkaCode::GroupIdNotFound))
                        .with_error_message(Some(StrBytes::from_string(msg)));
                };
                let members = cg
                    .members
                    .iter()
                    .map(|(id, m)| {
                        let mut dm = Member::default()
                            .with_member_id(s(id))
                            .with_instance_id(m.instance_id.as_deref().map(s))
                            .with_rack_id(m.rack_id.as_deref().map(s))
                            .with_member_epoch(m.epoch)
                            .with_client_id(s(&m.client_id))
                            .with_client_host(s("/127.0.0.1"))
                            .with_subscribed_topic_names(m.topics.iter().map(|t| tn(t)).collect())
                            .with_subscribed_topic_regex(m.regex.as_deref().map(s))
                            .with_assignment(describe_assignment(&m.assigned, &ids))
                            .with_target_assignment(describe_assignment(
                                &cg.target.get(id).cloned().unwrap_or_default(),
                                &ids,
                            ));
                        if v >= 1 {
                            dm = dm.with_member_type(1);
                        }
                        dm
                    })
                    .collect();
                r.with_group_state(s(cg.state_name()))
                    .with_group_epoch(cg.epoch)
                    .with_assignment_epoch(cg.assignment_epoch)
                    .with_assignor_name(s(if cg.assignor.is_empty() {
                        ASSIGNORS[0]
                    } else {
                        &cg.assignor
                    }))
                    .with_members(members)
            })
            .collect();
        Some(ConsumerGroupDescribeResponse::default().with_groups(groups))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_with(member: &str, epoch: i32) -> ConsumerGroup {
        let mut cg = ConsumerGroup::default();
        let mut m = CgMember::new("c".into(), Instant::now());
        m.epoch = epoch;
        cg.members.insert(member.into(), m);
        cg
    }

    #[test]
    fn commits_to_a_consumer_group_carry_the_current_member_epoch() {
        let cg = group_with("m", 5);
        assert_eq!(check_consumer_commit(&cg, "m", 5, Some(9)), Ok(()));
        assert_eq!(
            check_consumer_commit(&cg, "m", 4, Some(9)),
            Err(KafkaCode::StaleMemberEpoch)
        );
        assert_eq!(
            check_consumer_commit(&cg, "m", 6, Some(9)),
            Err(KafkaCode::StaleMemberEpoch)
        );
        assert_eq!(
            check_consumer_commit(&cg, "other", 5, Some(9)),
            Err(KafkaCode::UnknownMemberId)
        );
        // A consumer-protocol member must commit with OffsetCommit v9+ (not transactional).
        assert_eq!(
            check_consumer_commit(&cg, "m", 5, Some(8)),
            Err(KafkaCode::UnsupportedVersion)
        );
        assert_eq!(check_consumer_commit(&cg, "m", 5, None), Ok(()));
        // Without a member: only an empty group takes it.
        assert_eq!(
            check_consumer_commit(&cg, "", -1, Some(9)),
            Err(KafkaCode::UnknownMemberId)
        );
        assert_eq!(
            check_consumer_commit(&ConsumerGroup::default(), "", -1, Some(9)),
            Ok(())
        );
    }
}

//! The classic group protocol: JoinGroup (v0–9), SyncGroup (v0–5), Heartbeat (v0–4),
//! LeaveGroup (v0–5, batched from v3), DescribeGroups (v0–5) and ListGroups (v0–5, state and
//! type filters).
//!
//! JoinGroup and SyncGroup park until the round completes (`answer_when` on group changes):
//! the state machine is `super::super::group` (initial rebalance delay, rebalance timeout,
//! `MEMBER_ID_REQUIRED` from v4, static members with `FENCED_INSTANCE_ID`, KIP-345). Heartbeat
//! reports `REBALANCE_IN_PROGRESS` while members rejoin; the mock's ticker expires sessions.
//!
//! Not modelled: group size limits (`group.max.size`), Kafka's vote on the group protocol (the
//! mock takes the leader's first choice every member supports), authorized operations
//! (KIP-430), and mixed classic / consumer-protocol groups (KIP-848's migration policy; see
//! `super::super::group`).

use super::*;

pub(super) fn not_coordinator(st: &State, ctx: &Ctx, group: &str) -> bool {
    st.coordinator(CoordinatorType::Group, group) != ctx.broker
}

pub(super) fn join_response(v: i16, c: i16, member_id: &str) -> JoinGroupResponse {
    let mut r = JoinGroupResponse::default()
        .with_error_code(c)
        .with_generation_id(-1)
        .with_member_id(s(member_id));
    if v < 7 {
        r = r.with_protocol_name(Some(StrBytes::default()));
    }
    r
}

impl Api for JoinGroupRequest {
    fn describe(&self, info: &mut RequestInfo) {
        info.group_id = Some(self.group_id.0.to_string());
        info.member_id = Some(self.member_id.to_string());
    }
    fn error_response(&self, v: i16, c: i16) -> JoinGroupResponse {
        join_response(v, c, &self.member_id)
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<JoinGroupResponse> {
        let group_id = self.group_id.0.to_string();
        let instance = self.group_instance_id.as_ref().map(|i| i.to_string());
        let session = Duration::from_millis(self.session_timeout_ms.max(0) as u64);
        let rebalance = if v >= 1 {
            Duration::from_millis(self.rebalance_timeout_ms.max(0) as u64)
        } else {
            session
        };
        let member_id;
        {
            let mut st = ctx.shared.lock();
            if not_coordinator(&st, ctx, &group_id) {
                return Some(join_response(v, code(KafkaCode::NotCoordinator), ""));
            }
            if group_id.is_empty() {
                return Some(join_response(v, code(KafkaCode::InvalidGroupId), ""));
            }
            if session < ctx.shared.min_session_timeout || session > ctx.shared.max_session_timeout
            {
                return Some(join_response(
                    v,
                    code(KafkaCode::InvalidSessionTimeout),
                    &self.member_id,
                ));
            }
            if self.protocol_type.is_empty() || self.protocols.is_empty() {
                return Some(join_response(
                    v,
                    code(KafkaCode::InconsistentGroupProtocol),
                    &self.member_id,
                ));
            }
            let client_id = ctx.client_id.clone();
            let now = Instant::now();
            if !st.groups.contains_key(&group_id) {
                st.groups.insert(group_id.clone(), Group::new());
                st.group_created.insert(group_id.clone(), now);
            }
            let delay = st.settings.initial_rebalance_delay;
            let fresh_id = if self.member_id.is_empty() {
                Some(st.new_member_id(&client_id))
            } else {
                None
            };
            let Some(g) = st.groups.get_mut(&group_id) else {
                return Some(join_response(v, code(KafkaCode::UnknownServerError), ""));
            };
            if let Some(cg) = &g.consumer {
                // A consumer-protocol group: the classic protocol may not join it while it
                // has members; an empty one becomes a classic group again.
                if !cg.members.is_empty() {
                    return Some(join_response(
                        v,
                        code(KafkaCode::InconsistentGroupProtocol),
                        &self.member_id,
                    ));
                }
                g.consumer = None;
                g.protocol_type.clear();
            }
            if !g.members.is_empty() && g.protocol_type != self.protocol_type.as_str() {
                return Some(join_response(
                    v,
                    code(KafkaCode::InconsistentGroupProtocol),
                    &self.member_id,
                ));
            }
            let protocols: Vec<(String, Bytes)> = self
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect();
            if let Some(l) = g.leader.as_ref().and_then(|l| g.members.get(l))
                && !l
                    .protocols
                    .iter()
                    .any(|(n, _)| protocols.iter().any(|(m, _)| m == n))
                && g.members.len() > 1
            {
                return Some(join_response(
                    v,
                    code(KafkaCode::InconsistentGroupProtocol),
                    &self.member_id,
                ));
            }
            let id = match fresh_id {
                Some(new_id) => {
                    if let Some(inst) = &instance {
                        // A static member (re)joining: it replaces its previous incarnation.
                        if let Some(old) = g.static_members.insert(inst.clone(), new_id.clone()) {
                            let prev = g.members.remove(&old);
                            if g.leader.as_deref() == Some(old.as_str()) {
                                g.leader = Some(new_id.clone());
                            }
                            if let Some(mut m) = prev {
                                // KIP-345: a known static member restarting into a stable group
                                // takes over its assignment without a rebalance, as long as the
                                // group's selected protocol stays selectable (Kafka compares the
                                // selected protocol, not the metadata bytes: a restarted member's
                                // subscription no longer lists owned partitions).
                                let unchanged = g.state == GroupState::Stable
                                    && g.protocol
                                        .as_deref()
                                        .is_some_and(|p| protocols.iter().any(|(n, _)| n == p))
                                    && m.assignment.is_some();
                                if unchanged {
                                    m.protocols = protocols.clone();
                                }
                                m.joined = unchanged;
                                m.last_seen = now;
                                m.session_timeout = session;
                                m.rebalance_timeout = rebalance;
                                g.members.insert(new_id.clone(), m);
                                if unchanged {
                                    let leader = g.leader.clone().unwrap_or_default();
                                    let mut r = JoinGroupResponse::default()
                                        .with_generation_id(g.generation)
                                        .with_protocol_name(g.protocol.as_deref().map(s))
                                        .with_leader(s(&leader))
                                        .with_member_id(s(&new_id));
                                    if v >= 7 {
                                        r = r.with_protocol_type(Some(s(&g.protocol_type)));
                                    }
                                    if v >= 9 && leader == new_id {
                                        r = r.with_skip_assignment(true);
                                    }
                                    drop(st);
                                    ctx.shared.groups_changed.notify_waiters();
                                    return Some(r);
                                }
                            }
                        }
                        new_id
                    } else if v >= 4 {
                        g.pending.insert(new_id.clone(), now);
                        return Some(join_response(v, code(KafkaCode::MemberIdRequired), &new_id));
                    } else {
                        new_id
                    }
                }
                None => {
                    let id = self.member_id.to_string();
                    if let Some(inst) = &instance
                        && let Some(known) = g.static_members.get(inst)
                        && *known != id
                    {
                        return Some(join_response(v, code(KafkaCode::FencedInstanceId), &id));
                    }
                    if !g.members.contains_key(&id) && g.pending.remove(&id).is_none() {
                        return Some(join_response(v, code(KafkaCode::UnknownMemberId), &id));
                    }
                    id
                }
            };
            if let Some(inst) = &instance {
                g.static_members.insert(inst.clone(), id.clone());
            }
            g.protocol_type = self.protocol_type.to_string();
            let member = g.members.entry(id.clone()).or_insert_with(|| Member {
                instance_id: instance.clone(),
                client_id: client_id.clone(),
                protocols: Vec::new(),
                session_timeout: session,
                rebalance_timeout: rebalance,
                last_seen: now,
                joined: false,
                join_result: None,
                assignment: None,
            });
            member.protocols = protocols;
            member.session_timeout = session;
            member.rebalance_timeout = rebalance;
            member.last_seen = now;
            member.instance_id = instance.clone();
            g.prepare_rebalance(now, delay);
            if let Some(m) = g.members.get_mut(&id) {
                m.joined = true;
                m.join_result = None;
            }
            let created = st.group_created.get(&group_id).copied();
            let delay_over = created.is_none_or(|t| now >= t + delay);
            if let Some(g) = st.groups.get_mut(&group_id) {
                g.try_complete_join(now, delay_over);
            }
            member_id = id;
        }
        ctx.shared.groups_changed.notify_waiters();
        let resp = answer_when(&ctx.shared.groups_changed, None, || {
            let st = ctx.shared.lock();
            let Some(g) = st.groups.get(&group_id) else {
                return Some(join_response(
                    v,
                    code(KafkaCode::UnknownMemberId),
                    &member_id,
                ));
            };
            let Some(m) = g.members.get(&member_id) else {
                return Some(join_response(
                    v,
                    code(KafkaCode::UnknownMemberId),
                    &member_id,
                ));
            };
            if let Some(res) = &m.join_result {
                let members = res
                    .members
                    .iter()
                    .map(|(id, inst, meta)| {
                        let mut jm = join_group_response::JoinGroupResponseMember::default()
                            .with_member_id(s(id))
                            .with_metadata(meta.clone());
                        if v >= 5 {
                            jm = jm.with_group_instance_id(inst.as_deref().map(s));
                        }
                        jm
                    })
                    .collect();
                let mut r = JoinGroupResponse::default()
                    .with_generation_id(res.generation)
                    .with_protocol_name(Some(s(&res.protocol)))
                    .with_leader(s(&res.leader))
                    .with_member_id(s(&member_id))
                    .with_members(members);
                if v >= 7 {
                    r = r.with_protocol_type(Some(s(&g.protocol_type)));
                }
                return Some(r);
            }
            None
        })
        .await;
        Some(resp)
    }
}

pub(super) fn sync_response(v: i16, c: i16) -> SyncGroupResponse {
    let _ = v;
    SyncGroupResponse::default().with_error_code(c)
}

impl Api for SyncGroupRequest {
    fn describe(&self, info: &mut RequestInfo) {
        info.group_id = Some(self.group_id.0.to_string());
        info.member_id = Some(self.member_id.to_string());
    }
    fn error_response(&self, v: i16, c: i16) -> SyncGroupResponse {
        sync_response(v, c)
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<SyncGroupResponse> {
        let group_id = self.group_id.0.to_string();
        let member_id = self.member_id.to_string();
        {
            let mut st = ctx.shared.lock();
            if not_coordinator(&st, ctx, &group_id) {
                return Some(sync_response(v, code(KafkaCode::NotCoordinator)));
            }
            let Some(g) = st.groups.get_mut(&group_id) else {
                return Some(sync_response(v, code(KafkaCode::UnknownMemberId)));
            };
            if let Err(c) = g.check_member(&member_id, self.generation_id) {
                return Some(sync_response(v, code(c)));
            }
            match g.state {
                GroupState::Empty => {
                    return Some(sync_response(v, code(KafkaCode::UnknownMemberId)));
                }
                GroupState::PreparingRebalance => {
                    return Some(sync_response(v, code(KafkaCode::RebalanceInProgress)));
                }
                GroupState::CompletingRebalance => {
                    if let Some(m) = g.members.get_mut(&member_id) {
                        m.last_seen = Instant::now();
                    }
                    if g.leader.as_deref() == Some(member_id.as_str()) {
                        let given: BTreeMap<String, Bytes> = self
                            .assignments
                            .iter()
                            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                            .collect();
                        for (id, m) in g.members.iter_mut() {
                            m.assignment = Some(given.get(id).cloned().unwrap_or_default());
                        }
                        g.state = GroupState::Stable;
                    }
                }
                GroupState::Stable => {}
            }
        }
        ctx.shared.groups_changed.notify_waiters();
        let generation = self.generation_id;
        let resp = answer_when(&ctx.shared.groups_changed, None, || {
            let st = ctx.shared.lock();
            let Some(g) = st.groups.get(&group_id) else {
                return Some(sync_response(v, code(KafkaCode::UnknownMemberId)));
            };
            let Some(m) = g.members.get(&member_id) else {
                return Some(sync_response(v, code(KafkaCode::UnknownMemberId)));
            };
            if g.generation != generation || g.state == GroupState::PreparingRebalance {
                return Some(sync_response(v, code(KafkaCode::RebalanceInProgress)));
            }
            if let Some(a) = &m.assignment {
                let mut r = SyncGroupResponse::default().with_assignment(a.clone());
                if v >= 5 {
                    r = r
                        .with_protocol_type(Some(s(&g.protocol_type)))
                        .with_protocol_name(g.protocol.as_deref().map(s));
                }
                return Some(r);
            }
            None
        })
        .await;
        Some(resp)
    }
}

impl Api for HeartbeatRequest {
    fn describe(&self, info: &mut RequestInfo) {
        info.group_id = Some(self.group_id.0.to_string());
        info.member_id = Some(self.member_id.to_string());
    }
    fn error_response(&self, _v: i16, c: i16) -> HeartbeatResponse {
        HeartbeatResponse::default().with_error_code(c)
    }
    async fn handle(self, ctx: &Ctx, _v: i16) -> Option<HeartbeatResponse> {
        let group_id = self.group_id.0.to_string();
        let member_id = self.member_id.to_string();
        let mut st = ctx.shared.lock();
        let c = if not_coordinator(&st, ctx, &group_id) {
            code(KafkaCode::NotCoordinator)
        } else {
            match st.groups.get_mut(&group_id) {
                None => code(KafkaCode::UnknownMemberId),
                Some(g)
                    if self
                        .group_instance_id
                        .as_ref()
                        .and_then(|i| g.static_members.get(i.as_str()))
                        .is_some_and(|known| *known != member_id) =>
                {
                    code(KafkaCode::FencedInstanceId)
                }
                Some(g) => match g.members.get_mut(&member_id) {
                    None => code(KafkaCode::UnknownMemberId),
                    Some(m) => {
                        m.last_seen = Instant::now();
                        if g.state == GroupState::PreparingRebalance {
                            code(KafkaCode::RebalanceInProgress)
                        } else if self.generation_id != g.generation {
                            code(KafkaCode::IllegalGeneration)
                        } else {
                            NONE
                        }
                    }
                },
            }
        };
        Some(HeartbeatResponse::default().with_error_code(c))
    }
}

impl Api for LeaveGroupRequest {
    fn describe(&self, info: &mut RequestInfo) {
        info.group_id = Some(self.group_id.0.to_string());
        info.member_id = if self.member_id.is_empty() {
            self.members.first().map(|m| m.member_id.to_string())
        } else {
            Some(self.member_id.to_string())
        };
    }
    fn error_response(&self, _v: i16, c: i16) -> LeaveGroupResponse {
        LeaveGroupResponse::default().with_error_code(c)
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<LeaveGroupResponse> {
        use leave_group_response::MemberResponse;
        let group_id = self.group_id.0.to_string();
        let resp = {
            let mut st = ctx.shared.lock();
            if not_coordinator(&st, ctx, &group_id) {
                return Some(
                    LeaveGroupResponse::default().with_error_code(code(KafkaCode::NotCoordinator)),
                );
            }
            let now = Instant::now();
            let Some(g) = st.groups.get_mut(&group_id) else {
                return Some(
                    LeaveGroupResponse::default().with_error_code(code(KafkaCode::UnknownMemberId)),
                );
            };
            if v < 3 {
                let id = self.member_id.to_string();
                if g.members.contains_key(&id) {
                    g.member_left(&id, now);
                    LeaveGroupResponse::default()
                } else {
                    LeaveGroupResponse::default().with_error_code(code(KafkaCode::UnknownMemberId))
                }
            } else {
                let members = self
                    .members
                    .iter()
                    .map(|m| {
                        let id = if m.member_id.is_empty() {
                            m.group_instance_id
                                .as_ref()
                                .and_then(|i| g.static_members.get(i.as_str()).cloned())
                                .unwrap_or_default()
                        } else {
                            m.member_id.to_string()
                        };
                        let c = if g.members.contains_key(&id) {
                            g.member_left(&id, now);
                            NONE
                        } else {
                            code(KafkaCode::UnknownMemberId)
                        };
                        MemberResponse::default()
                            .with_member_id(s(&id))
                            .with_group_instance_id(m.group_instance_id.clone())
                            .with_error_code(c)
                    })
                    .collect();
                LeaveGroupResponse::default().with_members(members)
            }
        };
        ctx.shared.groups_changed.notify_waiters();
        Some(resp)
    }
}

/// A DescribeGroups answer naming the group (for the handler and the whole-request error).
fn group_described(g: &GroupId) -> describe_groups_response::DescribedGroup {
    describe_groups_response::DescribedGroup::default().with_group_id(g.clone())
}

impl Api for DescribeGroupsRequest {
    fn error_response(&self, _v: i16, c: i16) -> DescribeGroupsResponse {
        DescribeGroupsResponse::default().with_groups(
            self.groups
                .iter()
                .map(|g| group_described(g).with_error_code(c))
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<DescribeGroupsResponse> {
        use describe_groups_response::*;
        let st = ctx.shared.lock();
        let groups = self
            .groups
            .iter()
            .map(|gid| {
                let name = gid.0.to_string();
                let r = group_described(gid);
                if not_coordinator(&st, ctx, &name) {
                    return r.with_error_code(code(KafkaCode::NotCoordinator));
                }
                let Some(g) = st.groups.get(&name) else {
                    return r.with_group_state(s("Dead"));
                };
                if g.consumer.is_some() {
                    // Kafka 4.x: DescribeGroups describes classic groups only.
                    return r
                        .with_error_code(code(KafkaCode::GroupIdNotFound))
                        .with_group_state(s("Dead"));
                }
                let stable = g.state == GroupState::Stable;
                let members = g
                    .members
                    .iter()
                    .map(|(id, m)| {
                        let mut dm = DescribedGroupMember::default()
                            .with_member_id(s(id))
                            .with_client_id(s(&m.client_id))
                            .with_client_host(s("/127.0.0.1"));
                        if v >= 4 {
                            dm = dm.with_group_instance_id(m.instance_id.as_deref().map(s));
                        }
                        if stable {
                            let proto = g.protocol.clone().unwrap_or_default();
                            dm = dm
                                .with_member_metadata(
                                    m.protocols
                                        .iter()
                                        .find(|(n, _)| *n == proto)
                                        .map(|(_, b)| b.clone())
                                        .unwrap_or_default(),
                                )
                                .with_member_assignment(m.assignment.clone().unwrap_or_default());
                        }
                        dm
                    })
                    .collect();
                r.with_group_state(s(g.state.name()))
                    .with_protocol_type(s(&g.protocol_type))
                    .with_protocol_data(s(g.protocol.as_deref().unwrap_or("")))
                    .with_members(members)
            })
            .collect();
        Some(DescribeGroupsResponse::default().with_groups(groups))
    }
}

impl Api for ListGroupsRequest {
    fn error_response(&self, _v: i16, c: i16) -> ListGroupsResponse {
        ListGroupsResponse::default().with_error_code(c)
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<ListGroupsResponse> {
        let st = ctx.shared.lock();
        let groups = st
            .groups
            .iter()
            .filter(|(name, _)| !not_coordinator(&st, ctx, name))
            .filter(|(_, g)| {
                self.states_filter.is_empty()
                    || self
                        .states_filter
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case(list_state(g)))
            })
            .filter(|(_, g)| {
                v < 5
                    || self.types_filter.is_empty()
                    || self
                        .types_filter
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case(list_type(g)))
            })
            .map(|(name, g)| {
                let mut lg = list_groups_response::ListedGroup::default()
                    .with_group_id(GroupId(s(name)))
                    .with_protocol_type(s(&g.protocol_type));
                if v >= 4 {
                    lg = lg.with_group_state(s(list_state(g)));
                }
                if v >= 5 {
                    lg = lg.with_group_type(s(list_type(g)));
                }
                lg
            })
            .collect();
        Some(ListGroupsResponse::default().with_groups(groups))
    }
}

/// The state ListGroups reports: the classic state, or a consumer group's KIP-848 state.
fn list_state(g: &Group) -> &'static str {
    match &g.consumer {
        Some(cg) => cg.state_name(),
        None => g.state.name(),
    }
}

/// The group type ListGroups v5 reports (KIP-848).
fn list_type(g: &Group) -> &'static str {
    if g.consumer.is_some() {
        "consumer"
    } else {
        "classic"
    }
}

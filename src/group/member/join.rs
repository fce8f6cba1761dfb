//! Joining the group (classic protocol): JoinGroup, the leader's assignment, SyncGroup.

use super::*;

impl GroupMember {
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
        if self.inner.config.consumer.group_protocol == GroupProtocol::Consumer {
            return self.join_consumer_protocol(topics).await;
        }
        let inner = &self.inner;
        let mut backoff =
            RetryDelay::new(inner.config.consumer.retry_backoff, Duration::from_secs(1));
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

    pub(super) async fn join_once(
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
            .consumer
            .assignors
            .iter()
            .map(|a| {
                let mut s = Subscription::new(topics.to_vec());
                s.owned_partitions = owned_map.clone();
                s.generation_id = generation;
                s.rack_id = cfg.consumer.client_rack.clone();
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
                api: crate::error::Api::of(ApiKey::JoinGroup),
            })
            .message("JoinGroup v1+ (rebalance timeout) is required"));
        }
        if cfg.consumer.group_instance_id.is_some() && v < 5 {
            return Err(Error::config(
                "group.instance.id needs a broker with JoinGroup v5+",
            ));
        }
        let mut req = JoinGroupRequest::default()
            .with_group_id(GroupId(str_bytes(&cfg.group_id)))
            .with_session_timeout_ms(
                cfg.consumer
                    .session_timeout
                    .as_millis()
                    .min(i32::MAX as u128) as i32,
            )
            .with_rebalance_timeout_ms(
                cfg.consumer
                    .max_poll_interval
                    .as_millis()
                    .min(i32::MAX as u128) as i32,
            )
            .with_member_id(str_bytes(&member_id))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(protocols);
        if v >= 5 {
            req.group_instance_id = cfg.consumer.group_instance_id.as_deref().map(str_bytes);
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
            .consumer.assignors
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
            sreq.group_instance_id = cfg.consumer.group_instance_id.as_deref().map(str_bytes);
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
}

//! Admin APIs: CreateTopics (v2–7), DeleteTopics (v1–6, by name or topic id), CreatePartitions
//! (v0–3), DeleteRecords (v0–2), DescribeConfigs (v1–4), IncrementalAlterConfigs (v0–1) and
//! DeleteGroups (v0–2).
//!
//! Topics are created with the asked (or default) partition count and their configs; the
//! replication factor is checked for validity only (`validate_only` is honoured). DeleteRecords
//! moves a partition's log start on its leader. DescribeConfigs answers a few topic defaults
//! (source 5) merged with the topic's own configs (source 1) and a few broker configs;
//! IncrementalAlterConfigs applies SET / DELETE / APPEND / SUBTRACT to topic configs, all of a
//! resource or none. DeleteGroups removes empty groups on their coordinator.
//!
//! Not modelled: replicas (every partition has one, on its leader: replica assignments only
//! count partitions), config validation (any name and value is stored; the mock's behaviour
//! follows only `message.timestamp.type`), broker configs being altered, config synonyms and
//! documentation, ACLs and authorized operations, and the controller (a change applies at once
//! on every broker).

use super::*;

impl Api for DeleteRecordsRequest {
    fn error_response(&self, _v: i16, c: i16) -> DeleteRecordsResponse {
        delete_records_answers(self, |_, _| Err(c))
    }
    async fn handle(self, ctx: &Ctx, _v: i16) -> Option<DeleteRecordsResponse> {
        let mut st = ctx.shared.lock();
        let resp = delete_records_answers(&self, |t, dp| {
            let Some(p) = st.partition_mut(t.name.0.as_str(), dp.partition_index) else {
                return Err(code(KafkaCode::UnknownTopicOrPartition));
            };
            if p.leader != ctx.broker {
                return Err(code(KafkaCode::NotLeaderOrFollower));
            }
            let hw = p.log.high_watermark();
            let target = if dp.offset == -1 { hw } else { dp.offset };
            if target < 0 || target > hw {
                return Err(code(KafkaCode::OffsetOutOfRange));
            }
            p.log.delete_before(target);
            Ok(p.log.log_start())
        });
        drop(st);
        ctx.shared.data_changed.notify_waiters();
        Some(resp)
    }
}

/// The DeleteRecords response with `delete` giving each partition's new low watermark or
/// error code (low watermark −1).
fn delete_records_answers(
    req: &DeleteRecordsRequest,
    mut delete: impl FnMut(
        &delete_records_request::DeleteRecordsTopic,
        &delete_records_request::DeleteRecordsPartition,
    ) -> Result<i64, i16>,
) -> DeleteRecordsResponse {
    use delete_records_response::*;
    DeleteRecordsResponse::default().with_topics(per_partition(
        &req.topics,
        |t| &t.partitions,
        |t, p| {
            let r = DeleteRecordsPartitionResult::default().with_partition_index(p.partition_index);
            match delete(t, p) {
                Ok(low_watermark) => r.with_low_watermark(low_watermark),
                Err(c) => r.with_low_watermark(-1).with_error_code(c),
            }
        },
        |t, parts| {
            DeleteRecordsTopicResult::default()
                .with_name(t.name.clone())
                .with_partitions(parts)
        },
    ))
}

// The per-item admin APIs answer each item with a result naming it; one constructor per API
// serves the handler and the whole-request error answer alike.

/// A CreateTopics answer naming the topic.
fn created_topic(
    t: &create_topics_request::CreatableTopic,
) -> create_topics_response::CreatableTopicResult {
    create_topics_response::CreatableTopicResult::default().with_name(t.name.clone())
}

impl Api for CreateTopicsRequest {
    fn error_response(&self, _v: i16, c: i16) -> CreateTopicsResponse {
        CreateTopicsResponse::default().with_topics(
            self.topics
                .iter()
                .map(|t| created_topic(t).with_error_code(c))
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<CreateTopicsResponse> {
        let mut st = ctx.shared.lock();
        let default_parts = st.settings.default_partitions;
        let topics = self
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let r = created_topic(t);
                let parts = if !t.assignments.is_empty() {
                    t.assignments.len() as i32
                } else if t.num_partitions == -1 {
                    default_parts
                } else {
                    t.num_partitions
                };
                if t.replication_factor == 0 || t.replication_factor < -1 {
                    return r.with_error_code(code(KafkaCode::InvalidReplicationFactor));
                }
                if st.topics.contains_key(&name) {
                    return r
                        .with_error_code(code(KafkaCode::TopicAlreadyExists))
                        .with_error_message(Some(s(&format!("Topic '{name}' already exists."))));
                }
                let configs: BTreeMap<String, String> = t
                    .configs
                    .iter()
                    .filter_map(|c| {
                        c.value
                            .as_ref()
                            .map(|v| (c.name.to_string(), v.to_string()))
                    })
                    .collect();
                let result = if self.validate_only {
                    if parts <= 0 {
                        Err(KafkaCode::InvalidPartitions)
                    } else {
                        Ok(None)
                    }
                } else {
                    st.create_topic(&name, parts, configs).map(Some)
                };
                match result {
                    Ok(id) => {
                        let mut r = r;
                        if v >= 5 {
                            r = r.with_num_partitions(parts).with_replication_factor(1);
                        }
                        if v >= 7
                            && let Some(id) = id
                        {
                            r = r.with_topic_id(id);
                        }
                        r
                    }
                    Err(c) => r.with_error_code(code(c)),
                }
            })
            .collect();
        Some(CreateTopicsResponse::default().with_topics(topics))
    }
}

impl Api for DeleteTopicsRequest {
    fn error_response(&self, v: i16, c: i16) -> DeleteTopicsResponse {
        let names: Vec<Option<TopicName>> = if v >= 6 {
            self.topics.iter().map(|t| t.name.clone()).collect()
        } else {
            self.topic_names.iter().cloned().map(Some).collect()
        };
        DeleteTopicsResponse::default().with_responses(
            names
                .into_iter()
                .map(|n| {
                    delete_topics_response::DeletableTopicResult::default()
                        .with_name(n)
                        .with_error_code(c)
                })
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<DeleteTopicsResponse> {
        let mut st = ctx.shared.lock();
        let wanted: Vec<(Option<String>, uuid::Uuid)> = if v >= 6 {
            self.topics
                .iter()
                .map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id))
                .collect()
        } else {
            self.topic_names
                .iter()
                .map(|n| (Some(n.0.to_string()), uuid::Uuid::nil()))
                .collect()
        };
        let responses = wanted
            .into_iter()
            .map(|(name, id)| {
                let name = name.or_else(|| {
                    st.topics
                        .iter()
                        .find(|(_, t)| t.id == id)
                        .map(|(n, _)| n.clone())
                });
                let mut r = delete_topics_response::DeletableTopicResult::default()
                    .with_name(name.as_deref().map(tn));
                match name.and_then(|n| st.topics.remove(&n)) {
                    Some(t) => {
                        if v >= 6 {
                            r = r.with_topic_id(t.id);
                        }
                        r
                    }
                    None => r.with_error_code(code(if v >= 6 && !id.is_nil() {
                        KafkaCode::UnknownTopicId
                    } else {
                        KafkaCode::UnknownTopicOrPartition
                    })),
                }
            })
            .collect();
        drop(st);
        ctx.shared.data_changed.notify_waiters();
        Some(DeleteTopicsResponse::default().with_responses(responses))
    }
}

/// A CreatePartitions answer naming the topic.
fn partitions_created(
    t: &create_partitions_request::CreatePartitionsTopic,
) -> create_partitions_response::CreatePartitionsTopicResult {
    create_partitions_response::CreatePartitionsTopicResult::default().with_name(t.name.clone())
}

impl Api for CreatePartitionsRequest {
    fn error_response(&self, _v: i16, c: i16) -> CreatePartitionsResponse {
        CreatePartitionsResponse::default().with_results(
            self.topics
                .iter()
                .map(|t| partitions_created(t).with_error_code(c))
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, _v: i16) -> Option<CreatePartitionsResponse> {
        let mut st = ctx.shared.lock();
        let results = self
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let r = partitions_created(t);
                let res = if self.validate_only {
                    match st.topics.get(&name) {
                        None => Err(KafkaCode::UnknownTopicOrPartition),
                        Some(x) if t.count <= x.partitions.len() as i32 => {
                            Err(KafkaCode::InvalidPartitions)
                        }
                        Some(_) => Ok(()),
                    }
                } else {
                    st.add_partitions(&name, t.count)
                };
                match res {
                    Ok(()) => r,
                    Err(c) => r.with_error_code(code(c)),
                }
            })
            .collect();
        Some(CreatePartitionsResponse::default().with_results(results))
    }
}

/// A DescribeConfigs answer naming the resource.
fn configs_described(
    r: &describe_configs_request::DescribeConfigsResource,
) -> describe_configs_response::DescribeConfigsResult {
    describe_configs_response::DescribeConfigsResult::default()
        .with_resource_type(r.resource_type)
        .with_resource_name(r.resource_name.clone())
}

impl Api for DescribeConfigsRequest {
    fn error_response(&self, _v: i16, c: i16) -> DescribeConfigsResponse {
        DescribeConfigsResponse::default().with_results(
            self.resources
                .iter()
                .map(|r| configs_described(r).with_error_code(c))
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<DescribeConfigsResponse> {
        use describe_configs_response::*;
        let st = ctx.shared.lock();
        let results = self
            .resources
            .iter()
            .map(|res| {
                let r = configs_described(res);
                let mut configs: BTreeMap<String, (String, bool)> = BTreeMap::new();
                match res.resource_type {
                    // Topic.
                    2 => {
                        let Some(t) = st.topics.get(res.resource_name.as_str()) else {
                            return r.with_error_code(code(KafkaCode::UnknownTopicOrPartition));
                        };
                        for (k, v) in [
                            ("cleanup.policy", "delete"),
                            ("retention.ms", "604800000"),
                            ("message.timestamp.type", "CreateTime"),
                            ("max.message.bytes", "1048588"),
                            ("min.insync.replicas", "1"),
                        ] {
                            configs.insert(k.into(), (v.into(), true));
                        }
                        for (k, v) in &t.configs {
                            configs.insert(k.clone(), (v.clone(), false));
                        }
                    }
                    // Broker.
                    4 => {
                        for (k, v) in [
                            ("auto.create.topics.enable", "true"),
                            ("num.partitions", "1"),
                            ("transaction.max.timeout.ms", "900000"),
                        ] {
                            configs.insert(k.into(), (v.into(), true));
                        }
                    }
                    _ => return r.with_error_code(code(KafkaCode::InvalidRequest)),
                }
                let wanted = res.configuration_keys.as_ref();
                let entries = configs
                    .into_iter()
                    .filter(|(k, _)| wanted.is_none_or(|w| w.iter().any(|x| x.as_str() == k)))
                    .map(|(k, (val, default))| {
                        let mut e = DescribeConfigsResourceResult::default()
                            .with_name(s(&k))
                            .with_value(Some(s(&val)))
                            .with_read_only(false);
                        // Source: 5 = default config, 1 = dynamic topic config.
                        e = e.with_config_source(if default { 5 } else { 1 });
                        if v >= 3 {
                            e = e.with_config_type(2);
                        }
                        e
                    })
                    .collect();
                r.with_configs(entries)
            })
            .collect();
        Some(DescribeConfigsResponse::default().with_results(results))
    }
}

/// An IncrementalAlterConfigs answer naming the resource.
fn configs_altered(
    r: &incremental_alter_configs_request::AlterConfigsResource,
) -> incremental_alter_configs_response::AlterConfigsResourceResponse {
    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
        .with_resource_type(r.resource_type)
        .with_resource_name(r.resource_name.clone())
}

impl Api for IncrementalAlterConfigsRequest {
    fn error_response(&self, _v: i16, c: i16) -> IncrementalAlterConfigsResponse {
        IncrementalAlterConfigsResponse::default().with_responses(
            self.resources
                .iter()
                .map(|r| configs_altered(r).with_error_code(c))
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, _v: i16) -> Option<IncrementalAlterConfigsResponse> {
        let mut st = ctx.shared.lock();
        let responses = self
            .resources
            .iter()
            .map(|res| {
                let r = configs_altered(res);
                // Only topic configs (resource type 2) can be altered on the mock.
                if res.resource_type != 2 {
                    return r.with_error_code(code(KafkaCode::InvalidRequest));
                }
                let Some(topic) = st.topics.get_mut(res.resource_name.as_str()) else {
                    return r.with_error_code(code(KafkaCode::UnknownTopicOrPartition));
                };
                // Validate every operation first: the whole resource applies or none of it.
                if res
                    .configs
                    .iter()
                    .any(|c| !(0..=3).contains(&c.config_operation))
                {
                    return r
                        .with_error_code(code(KafkaCode::InvalidRequest))
                        .with_error_message(Some(s("unknown config operation")));
                }
                if self.validate_only {
                    return r;
                }
                for c in &res.configs {
                    let name = c.name.to_string();
                    let value = c.value.as_ref().map(|v| v.to_string()).unwrap_or_default();
                    match c.config_operation {
                        // SET
                        0 => {
                            topic.configs.insert(name, value);
                        }
                        // DELETE
                        1 => {
                            topic.configs.remove(&name);
                        }
                        // APPEND (list configs)
                        2 => {
                            let e = topic.configs.entry(name).or_default();
                            let mut items: Vec<String> = e
                                .split(',')
                                .filter(|x| !x.is_empty())
                                .map(str::to_owned)
                                .collect();
                            for v in value.split(',').filter(|x| !x.is_empty()) {
                                if !items.iter().any(|i| i == v) {
                                    items.push(v.to_owned());
                                }
                            }
                            *e = items.join(",");
                        }
                        // SUBTRACT
                        _ => {
                            if let Some(e) = topic.configs.get_mut(&name) {
                                let remove: Vec<&str> = value.split(',').collect();
                                *e = e
                                    .split(',')
                                    .filter(|x| !x.is_empty() && !remove.contains(x))
                                    .collect::<Vec<_>>()
                                    .join(",");
                            }
                        }
                    }
                }
                r
            })
            .collect();
        Some(IncrementalAlterConfigsResponse::default().with_responses(responses))
    }
}

/// A DeleteGroups answer naming the group.
fn group_deleted(g: &GroupId) -> delete_groups_response::DeletableGroupResult {
    delete_groups_response::DeletableGroupResult::default().with_group_id(g.clone())
}

impl Api for DeleteGroupsRequest {
    fn error_response(&self, _v: i16, c: i16) -> DeleteGroupsResponse {
        DeleteGroupsResponse::default().with_results(
            self.groups_names
                .iter()
                .map(|g| group_deleted(g).with_error_code(c))
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, _v: i16) -> Option<DeleteGroupsResponse> {
        let mut st = ctx.shared.lock();
        let results = self
            .groups_names
            .iter()
            .map(|g| {
                let name = g.0.to_string();
                let r = group_deleted(g);
                if not_coordinator(&st, ctx, &name) {
                    return r.with_error_code(code(KafkaCode::NotCoordinator));
                }
                match st.groups.get(&name) {
                    None => r.with_error_code(code(KafkaCode::GroupIdNotFound)),
                    Some(group) if group.has_members() => {
                        r.with_error_code(code(KafkaCode::NonEmptyGroup))
                    }
                    Some(_) => {
                        st.groups.remove(&name);
                        r
                    }
                }
            })
            .collect();
        Some(DeleteGroupsResponse::default().with_results(results))
    }
}

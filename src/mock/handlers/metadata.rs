//! ApiVersions (v0–3), Metadata (v0–12) and FindCoordinator (v0–4, batched from v4).
//!
//! ApiVersions advertises `SUPPORTED` as narrowed by `MockCluster::set_api_versions` (an
//! unsupported ApiVersions version gets a v0 answer, KIP-511). Metadata lists the brokers, the
//! topics asked for (by name, or by topic id from v12; all topics for a null list) with their
//! leaders and leader epochs, and creates an unknown topic when auto-creation is on and the
//! request allows it; injected topic errors answer first. FindCoordinator places a group or a
//! transactional id on a broker (hash of the key, or `MockCluster::set_coordinator`).
//!
//! Not modelled: replicas and ISR beyond the leader, racks, offline replicas, authorized
//! operations (KIP-430), internal topics (`__consumer_offsets` is not listed), and
//! `COORDINATOR_LOAD_IN_PROGRESS` (only when injected).

use super::*;

pub(super) fn api_versions_response(
    ranges: &[(ApiKey, i16, i16)],
    error: i16,
) -> ApiVersionsResponse {
    let keys = ranges
        .iter()
        .map(|&(k, lo, hi)| {
            api_versions_response::ApiVersion::default()
                .with_api_key(k as i16)
                .with_min_version(lo)
                .with_max_version(hi)
        })
        .collect();
    ApiVersionsResponse::default()
        .with_error_code(error)
        .with_api_keys(keys)
}

impl Api for ApiVersionsRequest {
    fn error_response(&self, _v: i16, c: i16) -> ApiVersionsResponse {
        api_versions_response(SUPPORTED, c)
    }
    async fn handle(self, ctx: &Ctx, _v: i16) -> Option<ApiVersionsResponse> {
        Some(api_versions_response(&ranges(ctx), NONE))
    }
}

pub(super) fn metadata_topic(
    st: &State,
    faults: &mut Faults,
    name: &str,
    v: i16,
) -> metadata_response::MetadataResponseTopic {
    use metadata_response::*;
    if let Some(c) = faults.topic_error(name) {
        return MetadataResponseTopic::default()
            .with_name(Some(tn(name)))
            .with_error_code(c);
    }
    let Some(t) = st.topics.get(name) else {
        return MetadataResponseTopic::default()
            .with_name(Some(tn(name)))
            .with_error_code(code(KafkaCode::UnknownTopicOrPartition));
    };
    let parts = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut mp = MetadataResponsePartition::default()
                .with_partition_index(i as i32)
                .with_leader_id(BrokerId(p.leader))
                .with_replica_nodes(vec![BrokerId(p.leader)])
                .with_isr_nodes(vec![BrokerId(p.leader)]);
            if v >= 7 {
                mp = mp.with_leader_epoch(p.leader_epoch);
            }
            mp
        })
        .collect();
    let mut mt = MetadataResponseTopic::default()
        .with_name(Some(tn(name)))
        .with_partitions(parts);
    if v >= 10 {
        mt = mt.with_topic_id(t.id);
    }
    mt
}

impl Api for MetadataRequest {
    fn error_response(&self, v: i16, c: i16) -> MetadataResponse {
        let mut r = MetadataResponse::default();
        if let Some(topics) = &self.topics {
            r.topics = topics
                .iter()
                .map(|t| {
                    metadata_response::MetadataResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_error_code(c)
                })
                .collect();
        }
        let _ = v;
        r
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<MetadataResponse> {
        use metadata_response::*;
        let mut st = ctx.shared.lock();
        let allow = v < 4 || self.allow_auto_topic_creation;
        let topics: Vec<MetadataResponseTopic> = match &self.topics {
            Some(list) if !(v == 0 && list.is_empty()) => list
                .iter()
                .map(|t| {
                    let name = match &t.name {
                        Some(n) => n.0.to_string(),
                        None => match st.topics.iter().find(|(_, x)| x.id == t.topic_id) {
                            Some((n, _)) => n.clone(),
                            None => {
                                return MetadataResponseTopic::default()
                                    .with_topic_id(t.topic_id)
                                    .with_error_code(code(KafkaCode::UnknownTopicId));
                            }
                        },
                    };
                    st.topic_or_create(&name, allow);
                    metadata_topic(&st, &mut ctx.shared.faults(), &name, v)
                })
                .collect(),
            _ => st
                .topics
                .keys()
                .map(|name| metadata_topic(&st, &mut ctx.shared.faults(), name, v))
                .collect(),
        };
        let brokers = st
            .brokers
            .iter()
            .map(|&id| {
                let (host, port) = ctx.shared.broker_addr(id);
                MetadataResponseBroker::default()
                    .with_node_id(BrokerId(id))
                    .with_host(s(&host))
                    .with_port(i32::from(port))
            })
            .collect();
        let controller = st.brokers.first().copied().unwrap_or(-1);
        let mut r = MetadataResponse::default()
            .with_brokers(brokers)
            .with_topics(topics);
        if v >= 1 {
            r = r.with_controller_id(BrokerId(controller));
        }
        if v >= 2 {
            r = r.with_cluster_id(Some(s("rekafka-mock")));
        }
        Some(r)
    }
}

impl Api for FindCoordinatorRequest {
    fn error_response(&self, v: i16, c: i16) -> FindCoordinatorResponse {
        let mut r = FindCoordinatorResponse::default();
        if v >= 4 {
            r.coordinators = self
                .coordinator_keys
                .iter()
                .map(|k| {
                    find_coordinator_response::Coordinator::default()
                        .with_key(k.clone())
                        .with_node_id(BrokerId(-1))
                        .with_error_code(c)
                })
                .collect();
        } else {
            r = r.with_error_code(c).with_node_id(BrokerId(-1));
        }
        r
    }
    fn describe(&self, info: &mut RequestInfo) {
        if self.key_type == 0 && !self.key.is_empty() {
            info.group_id = Some(self.key.to_string());
        } else if self.key_type == 1 && !self.key.is_empty() {
            info.transactional_id = Some(self.key.to_string());
        }
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<FindCoordinatorResponse> {
        let kind = match self.key_type {
            0 => CoordinatorType::Group,
            1 => CoordinatorType::Transaction,
            _ => {
                return Some(self.error_response(v, code(KafkaCode::InvalidRequest)));
            }
        };
        let st = ctx.shared.lock();
        if v >= 4 {
            let coordinators = self
                .coordinator_keys
                .iter()
                .map(|k| {
                    let id = st.coordinator(kind, k);
                    let (host, port) = ctx.shared.broker_addr(id);
                    find_coordinator_response::Coordinator::default()
                        .with_key(k.clone())
                        .with_node_id(BrokerId(id))
                        .with_host(s(&host))
                        .with_port(i32::from(port))
                })
                .collect();
            Some(FindCoordinatorResponse::default().with_coordinators(coordinators))
        } else {
            let id = st.coordinator(kind, &self.key);
            let (host, port) = ctx.shared.broker_addr(id);
            Some(
                FindCoordinatorResponse::default()
                    .with_node_id(BrokerId(id))
                    .with_host(s(&host))
                    .with_port(i32::from(port)),
            )
        }
    }
}

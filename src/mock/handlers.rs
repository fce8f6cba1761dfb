//! Request handlers: one `Api` implementation per supported request type.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Request, StrBytes};

use super::RequestInfo;
use super::faults::{Faults, Pre};
use super::group::{Committed, Group, GroupState, Member};
use super::server::{Ctx, Outcome, pre_faults};
use super::state::{State, Txn, now_ms};
use crate::KafkaCode;
use crate::cluster::CoordinatorType;
use crate::protocol::codec;
use crate::protocol::record::{RecordBatch, RecordBatches};

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}

fn tn(x: &str) -> TopicName {
    TopicName(s(x))
}

const NONE: i16 = 0;

fn code(c: KafkaCode) -> i16 {
    c.code()
}

/// The version ranges the mock advertises: what it implements fully, within what the
/// `kafka-protocol` crate can encode.
pub(crate) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
];

/// The advertised ranges: `SUPPORTED`, narrowed or removed by `set_api_versions`.
fn ranges(ctx: &Ctx) -> Vec<(ApiKey, i16, i16)> {
    let f = ctx.shared.faults();
    SUPPORTED
        .iter()
        .filter_map(|&(k, lo, hi)| match f.versions.get(&k) {
            None => Some((k, lo, hi)),
            Some(None) => None,
            Some(Some((a, b))) => {
                let (lo, hi) = (lo.max(*a), hi.min(*b));
                (lo <= hi).then_some((k, lo, hi))
            }
        })
        .collect()
}

fn supported(ranges: &[(ApiKey, i16, i16)], api: ApiKey, version: i16) -> bool {
    ranges
        .iter()
        .any(|&(k, lo, hi)| k == api && (lo..=hi).contains(&version))
}

pub(crate) trait Api: Request + Sized + Send + 'static {
    /// Fills the request-log fields this request carries.
    fn describe(&self, _info: &mut RequestInfo) {}
    /// The response that answers the whole request with `code`.
    fn error_response(&self, version: i16, code: i16) -> Self::Response;
    /// Applies the request. `None`: no response (acks=0).
    fn handle(self, ctx: &Ctx, version: i16)
    -> impl Future<Output = Option<Self::Response>> + Send;
}

pub(crate) async fn handle_frame(ctx: &Ctx, frame: Bytes) -> Outcome {
    let Ok((header, body)) = codec::decode_request_header(&frame) else {
        return Outcome::Close;
    };
    let Ok(api) = ApiKey::try_from(header.request_api_key) else {
        return Outcome::Close;
    };
    let version = header.request_api_version;
    let ranges = ranges(ctx);
    if api == ApiKey::ApiVersions && !supported(&ranges, api, version) {
        // KIP-511: answer with a v0 body listing what we support.
        let resp = api_versions_response(&ranges, code(KafkaCode::UnsupportedVersion));
        let mut buf = BytesMut::new();
        return match codec::encode_response::<ApiVersionsRequest>(
            &resp,
            0,
            header.correlation_id,
            &mut buf,
        ) {
            Ok(()) => Outcome::Respond(buf),
            Err(_) => Outcome::Close,
        };
    }
    if !supported(&ranges, api, version) {
        tracing::debug!(?api, version, "mock: unsupported request version, closing");
        return Outcome::Close;
    }
    macro_rules! serve {
        ($($key:ident => $ty:ty),* $(,)?) => {
            match api {
                $(ApiKey::$key => serve::<$ty>(ctx, &header, body).await,)*
                _ => Outcome::Close,
            }
        };
    }
    serve!(
        Produce => ProduceRequest,
        Fetch => FetchRequest,
        ListOffsets => ListOffsetsRequest,
        Metadata => MetadataRequest,
        OffsetCommit => OffsetCommitRequest,
        OffsetFetch => OffsetFetchRequest,
        FindCoordinator => FindCoordinatorRequest,
        JoinGroup => JoinGroupRequest,
        Heartbeat => HeartbeatRequest,
        LeaveGroup => LeaveGroupRequest,
        SyncGroup => SyncGroupRequest,
        DescribeGroups => DescribeGroupsRequest,
        ListGroups => ListGroupsRequest,
        ApiVersions => ApiVersionsRequest,
        CreateTopics => CreateTopicsRequest,
        DeleteTopics => DeleteTopicsRequest,
        DeleteRecords => DeleteRecordsRequest,
        InitProducerId => InitProducerIdRequest,
        AddPartitionsToTxn => AddPartitionsToTxnRequest,
        AddOffsetsToTxn => AddOffsetsToTxnRequest,
        EndTxn => EndTxnRequest,
        TxnOffsetCommit => TxnOffsetCommitRequest,
        DescribeConfigs => DescribeConfigsRequest,
        CreatePartitions => CreatePartitionsRequest,
        OffsetForLeaderEpoch => OffsetForLeaderEpochRequest,
        IncrementalAlterConfigs => IncrementalAlterConfigsRequest,
        DeleteGroups => DeleteGroupsRequest,
    )
}

async fn serve<R: Api>(ctx: &Ctx, header: &RequestHeader, body: Bytes) -> Outcome {
    let version = header.request_api_version;
    let Ok(req) = codec::decode_request::<R>(body, version) else {
        return Outcome::Close;
    };
    let api = match ApiKey::try_from(R::KEY) {
        Ok(a) => a,
        Err(_) => return Outcome::Close,
    };
    let mut info = RequestInfo::new(
        api,
        version,
        ctx.broker,
        header.correlation_id,
        header.client_id.as_ref().map(|c| c.to_string()),
    );
    req.describe(&mut info);
    ctx.shared.record(info.clone());
    let resp = match pre_faults(&ctx.shared, &info).await {
        Pre::Close => return Outcome::Close,
        Pre::Error(c, delay) => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if api == ApiKey::Produce && is_acks0(&info) {
                None
            } else {
                Some(req.error_response(version, c))
            }
        }
        Pre::Pass | Pre::Hold(_) => {
            let ctx = Ctx {
                shared: ctx.shared.clone(),
                broker: ctx.broker,
                client_id: info.client_id.clone().unwrap_or_default(),
            };
            req.handle(&ctx, version).await
        }
    };
    let Some(resp) = resp else {
        return Outcome::NoResponse;
    };
    if ctx.shared.faults().drop_response(&info) {
        return Outcome::NoResponse;
    }
    let mut buf = BytesMut::new();
    match codec::encode_response::<R>(&resp, version, header.correlation_id, &mut buf) {
        Ok(()) => Outcome::Respond(buf),
        Err(e) => {
            tracing::warn!(?api, version, error = %e, "mock: encoding a response failed");
            Outcome::Close
        }
    }
}

fn is_acks0(info: &RequestInfo) -> bool {
    info.acks == Some(0)
}

fn api_versions_response(ranges: &[(ApiKey, i16, i16)], error: i16) -> ApiVersionsResponse {
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

// ---------------------------------------------------------------------------------------------
// ApiVersions, Metadata, FindCoordinator

impl Api for ApiVersionsRequest {
    fn error_response(&self, _v: i16, c: i16) -> ApiVersionsResponse {
        api_versions_response(SUPPORTED, c)
    }
    async fn handle(self, ctx: &Ctx, _v: i16) -> Option<ApiVersionsResponse> {
        Some(api_versions_response(&ranges(ctx), NONE))
    }
}

fn metadata_topic(
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

// ---------------------------------------------------------------------------------------------
// Produce

fn decode_batches(records: Option<Bytes>) -> Result<Vec<RecordBatch>, KafkaCode> {
    let Some(records) = records else {
        return Err(KafkaCode::InvalidRecord);
    };
    let mut it = RecordBatches::new(records);
    let mut out = Vec::new();
    for b in it.by_ref() {
        out.push(b.map_err(|_| KafkaCode::CorruptMessage)?);
    }
    if it.truncated_tail() || out.is_empty() {
        return Err(KafkaCode::CorruptMessage);
    }
    Ok(out)
}

impl Api for ProduceRequest {
    fn describe(&self, info: &mut RequestInfo) {
        info.transactional_id = self.transactional_id.as_ref().map(|t| t.0.to_string());
        info.acks = Some(self.acks);
        for t in &self.topic_data {
            for p in &t.partition_data {
                info.partitions.push((t.name.0.to_string(), p.index));
                if info.producer_id.is_none()
                    && let Some(r) = &p.records
                    && let Some(Ok(b)) = RecordBatches::new(r.clone()).next()
                {
                    info.producer_id = Some(b.producer_id());
                    info.producer_epoch = Some(b.producer_epoch());
                    info.base_sequence = Some(b.base_sequence());
                }
            }
        }
    }
    fn error_response(&self, v: i16, c: i16) -> ProduceResponse {
        let responses = self
            .topic_data
            .iter()
            .map(|t| {
                produce_response::TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(
                        t.partition_data
                            .iter()
                            .map(|p| produce_partition_response(v, p.index, c, -1, -1))
                            .collect(),
                    )
            })
            .collect();
        ProduceResponse::default().with_responses(responses)
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<ProduceResponse> {
        let acks = self.acks;
        let txn_id = self.transactional_id.as_ref().map(|t| t.0.to_string());
        let mut appended = false;
        let mut responses = Vec::new();
        let mut endpoints: Vec<i32> = Vec::new();
        {
            let mut st = ctx.shared.lock();
            for t in self.topic_data {
                let name = t.name.0.to_string();
                let mut parts = Vec::new();
                for p in t.partition_data {
                    let injected =
                        ctx.shared
                            .faults()
                            .partition_error(ApiKey::Produce, &name, p.index);
                    let result = match injected {
                        Some(c) => Err(c),
                        None if !matches!(acks, -1..=1) => {
                            Err(code(KafkaCode::InvalidRequiredAcks))
                        }
                        None => produce_partition(
                            &mut st,
                            ctx.broker,
                            &name,
                            p.index,
                            p.records,
                            txn_id.as_deref(),
                        )
                        .map_err(code),
                    };
                    match result {
                        Ok((base, dup, log_start, append_time)) => {
                            appended |= !dup;
                            parts.push(
                                produce_partition_response(v, p.index, NONE, base, log_start)
                                    .with_log_append_time_ms(append_time),
                            );
                        }
                        Err(c) => {
                            let mut r = produce_partition_response(v, p.index, c, -1, -1);
                            // KIP-951: tell the client where the partition went.
                            if v >= 10
                                && c == code(KafkaCode::NotLeaderOrFollower)
                                && let Some(part) = st.partition(&name, p.index)
                            {
                                r = r.with_current_leader(
                                    produce_response::LeaderIdAndEpoch::default()
                                        .with_leader_id(BrokerId(part.leader))
                                        .with_leader_epoch(part.leader_epoch),
                                );
                                if !endpoints.contains(&part.leader) {
                                    endpoints.push(part.leader);
                                }
                            }
                            parts.push(r);
                        }
                    }
                }
                responses.push(
                    produce_response::TopicProduceResponse::default()
                        .with_name(tn(&name))
                        .with_partition_responses(parts),
                );
            }
        }
        if appended {
            ctx.shared.data_changed.notify_waiters();
        }
        if acks == 0 {
            return None;
        }
        let node_endpoints = endpoints
            .into_iter()
            .map(|id| {
                let (host, port) = ctx.shared.broker_addr(id);
                produce_response::NodeEndpoint::default()
                    .with_node_id(BrokerId(id))
                    .with_host(s(&host))
                    .with_port(i32::from(port))
            })
            .collect();
        Some(
            ProduceResponse::default()
                .with_responses(responses)
                .with_node_endpoints(node_endpoints),
        )
    }
}

fn produce_partition_response(
    v: i16,
    index: i32,
    error: i16,
    base: i64,
    log_start: i64,
) -> produce_response::PartitionProduceResponse {
    let mut r = produce_response::PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(error)
        .with_base_offset(base)
        .with_log_append_time_ms(-1);
    if v >= 5 {
        r = r.with_log_start_offset(log_start);
    }
    r
}

/// Appends a partition's records. Returns (base offset, duplicate, log start offset,
/// log append time or -1).
fn produce_partition(
    st: &mut State,
    broker: i32,
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
    txn_id: Option<&str>,
) -> Result<(i64, bool, i64, i64), KafkaCode> {
    let leader = st
        .partition(topic, partition)
        .map(|p| p.leader)
        .ok_or(KafkaCode::UnknownTopicOrPartition)?;
    if leader != broker {
        return Err(KafkaCode::NotLeaderOrFollower);
    }
    let batches = decode_batches(records)?;
    if batches.iter().any(|b| b.magic() != 2) {
        return Err(KafkaCode::UnsupportedForMessageFormat);
    }
    if batches.len() > 1 && batches.iter().any(|b| b.producer_id() >= 0) {
        return Err(KafkaCode::InvalidRecord);
    }
    for b in &batches {
        if b.is_control() {
            return Err(KafkaCode::InvalidRecord);
        }
        if b.is_transactional() {
            let txn = txn_id
                .and_then(|id| st.txns.get(id))
                .ok_or(KafkaCode::TransactionalIdAuthorizationFailed)?;
            if txn.producer_id != b.producer_id() {
                return Err(KafkaCode::InvalidProducerIdMapping);
            }
            if b.producer_epoch() < txn.epoch {
                return Err(KafkaCode::InvalidProducerEpoch);
            }
            if !txn.ongoing || !txn.partitions.contains(&(topic.to_string(), partition)) {
                return Err(KafkaCode::InvalidTxnState);
            }
        }
    }
    let log_append_time = st
        .topics
        .get(topic)
        .and_then(|t| t.configs.get("message.timestamp.type"))
        .is_some_and(|v| v == "LogAppendTime")
        .then(now_ms);
    let p = st
        .partition_mut(topic, partition)
        .ok_or(KafkaCode::UnknownTopicOrPartition)?;
    let le = p.leader_epoch;
    let mut first = None;
    let mut dup_all = true;
    for b in &batches {
        let a = p.log.append(b, le, log_append_time)?;
        dup_all &= a.duplicate;
        first.get_or_insert(a.base_offset);
    }
    Ok((
        first.unwrap_or(-1),
        dup_all,
        p.log.log_start(),
        log_append_time.unwrap_or(-1),
    ))
}

// ---------------------------------------------------------------------------------------------
// Fetch

struct FetchBuild {
    resp: FetchResponse,
    bytes: usize,
    error: bool,
}

fn build_fetch(ctx: &Ctx, req: &FetchRequest, v: i16) -> FetchBuild {
    use fetch_response::*;
    let st = ctx.shared.lock();
    let read_committed = req.isolation_level == 1;
    let max_bytes = if req.max_bytes <= 0 {
        usize::MAX
    } else {
        req.max_bytes as usize
    };
    let mut total = 0usize;
    let mut error = false;
    let mut topics = Vec::new();
    for t in &req.topics {
        let name = t.topic.0.to_string();
        let mut parts = Vec::new();
        for fp in &t.partitions {
            let mut pd = PartitionData::default()
                .with_partition_index(fp.partition)
                .with_aborted_transactions(None);
            let injected = ctx
                .shared
                .faults()
                .partition_error(ApiKey::Fetch, &name, fp.partition);
            let part = st.partition(&name, fp.partition);
            let err = match (injected, part) {
                (Some(c), _) => Some(c),
                (None, None) => Some(code(KafkaCode::UnknownTopicOrPartition)),
                (None, Some(p)) if p.leader != ctx.broker => {
                    Some(code(KafkaCode::NotLeaderOrFollower))
                }
                (None, Some(p))
                    if v >= 9
                        && fp.current_leader_epoch >= 0
                        && fp.current_leader_epoch < p.leader_epoch =>
                {
                    Some(code(KafkaCode::FencedLeaderEpoch))
                }
                (None, Some(p))
                    if v >= 9
                        && fp.current_leader_epoch >= 0
                        && fp.current_leader_epoch > p.leader_epoch =>
                {
                    Some(code(KafkaCode::UnknownLeaderEpoch))
                }
                (None, Some(p))
                    if fp.fetch_offset < p.log.log_start()
                        || fp.fetch_offset > p.log.high_watermark() =>
                {
                    Some(code(KafkaCode::OffsetOutOfRange))
                }
                _ => None,
            };
            if let Some(p) = part {
                pd = pd
                    .with_high_watermark(p.log.high_watermark())
                    .with_last_stable_offset(p.log.last_stable_offset());
                if v >= 5 {
                    pd = pd.with_log_start_offset(p.log.log_start());
                }
            }
            if let Some(c) = err {
                error = true;
                if v >= 12
                    && (c == code(KafkaCode::NotLeaderOrFollower)
                        || c == code(KafkaCode::FencedLeaderEpoch))
                    && let Some(p) = part
                {
                    // KIP-951: the new leader, so the client need not refresh metadata first.
                    pd = pd.with_current_leader(
                        LeaderIdAndEpoch::default()
                            .with_leader_id(BrokerId(p.leader))
                            .with_leader_epoch(p.leader_epoch),
                    );
                }
                pd = pd.with_error_code(c).with_records(Some(Bytes::new()));
                if read_committed {
                    pd = pd.with_aborted_transactions(Some(Vec::new()));
                }
                parts.push(pd);
                continue;
            }
            let Some(p) = part else { continue };
            let upper = if read_committed {
                p.log.last_stable_offset()
            } else {
                p.log.high_watermark()
            };
            let pmax = if fp.partition_max_bytes <= 0 {
                0
            } else {
                fp.partition_max_bytes as usize
            };
            let room = pmax.min(max_bytes.saturating_sub(total));
            let mut out = Vec::new();
            let (n, end) = p
                .log
                .read(fp.fetch_offset, upper, room, total == 0, &mut out);
            total += n;
            let records = match out.len() {
                0 => Bytes::new(),
                1 => out.pop().unwrap_or_default(),
                _ => {
                    let mut b = BytesMut::with_capacity(n);
                    for x in &out {
                        b.extend_from_slice(x);
                    }
                    b.freeze()
                }
            };
            if read_committed {
                let aborted = p
                    .log
                    .aborted_between(fp.fetch_offset, end.max(fp.fetch_offset))
                    .into_iter()
                    .map(|a| {
                        AbortedTransaction::default()
                            .with_producer_id(ProducerId(a.producer_id))
                            .with_first_offset(a.first_offset)
                    })
                    .collect();
                pd = pd.with_aborted_transactions(Some(aborted));
            }
            parts.push(pd.with_records(Some(records)));
        }
        topics.push(
            FetchableTopicResponse::default()
                .with_topic(tn(&name))
                .with_partitions(parts),
        );
    }
    FetchBuild {
        resp: FetchResponse::default().with_responses(topics),
        bytes: total,
        error,
    }
}

impl Api for FetchRequest {
    fn describe(&self, info: &mut RequestInfo) {
        for t in &self.topics {
            for p in &t.partitions {
                info.partitions.push((t.topic.0.to_string(), p.partition));
            }
        }
    }
    fn error_response(&self, _v: i16, c: i16) -> FetchResponse {
        use fetch_response::*;
        let topics = self
            .topics
            .iter()
            .map(|t| {
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_aborted_transactions(None)
                                    .with_error_code(c)
                                    .with_records(Some(Bytes::new()))
                            })
                            .collect(),
                    )
            })
            .collect();
        FetchResponse::default().with_responses(topics)
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<FetchResponse> {
        let deadline = Instant::now() + Duration::from_millis(self.max_wait_ms.max(0) as u64);
        let min_bytes = self.min_bytes.max(0) as usize;
        loop {
            let changed = ctx.shared.data_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let built = build_fetch(ctx, &self, v);
            // As Kafka: answer at once with enough bytes (min_bytes 0: always), an error, or
            // nothing to fetch; otherwise wait for data up to max_wait.
            if built.error
                || built.bytes >= min_bytes
                || self.topics.is_empty()
                || Instant::now() >= deadline
            {
                return Some(built.resp);
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// OffsetForLeaderEpoch

impl Api for OffsetForLeaderEpochRequest {
    fn describe(&self, info: &mut RequestInfo) {
        for t in &self.topics {
            for p in &t.partitions {
                info.partitions.push((t.topic.0.to_string(), p.partition));
            }
        }
    }
    fn error_response(&self, _v: i16, c: i16) -> OffsetForLeaderEpochResponse {
        use offset_for_leader_epoch_response::*;
        OffsetForLeaderEpochResponse::default().with_topics(
            self.topics
                .iter()
                .map(|t| {
                    OffsetForLeaderTopicResult::default()
                        .with_topic(t.topic.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    EpochEndOffset::default()
                                        .with_partition(p.partition)
                                        .with_error_code(c)
                                        .with_leader_epoch(-1)
                                        .with_end_offset(-1)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, _v: i16) -> Option<OffsetForLeaderEpochResponse> {
        use offset_for_leader_epoch_response::*;
        let st = ctx.shared.lock();
        let topics = self
            .topics
            .iter()
            .map(|t| {
                let name = t.topic.0.to_string();
                let parts = t
                    .partitions
                    .iter()
                    .map(|op| {
                        let r = EpochEndOffset::default()
                            .with_partition(op.partition)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                        let injected = ctx.shared.faults().partition_error(
                            ApiKey::OffsetForLeaderEpoch,
                            &name,
                            op.partition,
                        );
                        let part = st.partition(&name, op.partition);
                        let err = match (injected, part) {
                            (Some(c), _) => Some(c),
                            (None, None) => Some(code(KafkaCode::UnknownTopicOrPartition)),
                            (None, Some(p)) if p.leader != ctx.broker => {
                                Some(code(KafkaCode::NotLeaderOrFollower))
                            }
                            (None, Some(p))
                                if op.current_leader_epoch >= 0
                                    && op.current_leader_epoch < p.leader_epoch =>
                            {
                                Some(code(KafkaCode::FencedLeaderEpoch))
                            }
                            (None, Some(p)) if op.current_leader_epoch > p.leader_epoch => {
                                Some(code(KafkaCode::UnknownLeaderEpoch))
                            }
                            _ => None,
                        };
                        match (part, err) {
                            (Some(p), None) => {
                                let (epoch, end) = p.end_offset_for_epoch(op.leader_epoch);
                                r.with_leader_epoch(epoch).with_end_offset(end)
                            }
                            (_, err) => r.with_error_code(err.unwrap_or(NONE)),
                        }
                    })
                    .collect();
                OffsetForLeaderTopicResult::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(parts)
            })
            .collect();
        Some(OffsetForLeaderEpochResponse::default().with_topics(topics))
    }
}

// ---------------------------------------------------------------------------------------------
// ListOffsets, DeleteRecords

impl Api for ListOffsetsRequest {
    fn describe(&self, info: &mut RequestInfo) {
        for t in &self.topics {
            for p in &t.partitions {
                info.partitions
                    .push((t.name.0.to_string(), p.partition_index));
            }
        }
    }
    fn error_response(&self, _v: i16, c: i16) -> ListOffsetsResponse {
        use list_offsets_response::*;
        ListOffsetsResponse::default().with_topics(
            self.topics
                .iter()
                .map(|t| {
                    ListOffsetsTopicResponse::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    ListOffsetsPartitionResponse::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(c)
                                        .with_offset(-1)
                                        .with_timestamp(-1)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<ListOffsetsResponse> {
        use list_offsets_response::*;
        let st = ctx.shared.lock();
        let topics = self
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let parts = t
                    .partitions
                    .iter()
                    .map(|lp| {
                        let r = ListOffsetsPartitionResponse::default()
                            .with_partition_index(lp.partition_index);
                        let injected = ctx.shared.faults().partition_error(
                            ApiKey::ListOffsets,
                            &name,
                            lp.partition_index,
                        );
                        let part = st.partition(&name, lp.partition_index);
                        let err = match (injected, part) {
                            (Some(c), _) => Some(c),
                            (None, None) => Some(code(KafkaCode::UnknownTopicOrPartition)),
                            (None, Some(p)) if p.leader != ctx.broker => {
                                Some(code(KafkaCode::NotLeaderOrFollower))
                            }
                            (None, Some(p))
                                if v >= 4
                                    && lp.current_leader_epoch >= 0
                                    && lp.current_leader_epoch < p.leader_epoch =>
                            {
                                Some(code(KafkaCode::FencedLeaderEpoch))
                            }
                            _ => None,
                        };
                        let (Some(p), None) = (part, err) else {
                            return r
                                .with_error_code(err.unwrap_or(NONE))
                                .with_offset(-1)
                                .with_timestamp(-1);
                        };
                        let (offset, ts) = match lp.timestamp {
                            -2 => (p.log.log_start(), -1),
                            -1 => (
                                if self.isolation_level == 1 {
                                    p.log.last_stable_offset()
                                } else {
                                    p.log.high_watermark()
                                },
                                -1,
                            ),
                            -3 => p.log.max_timestamp_offset().unwrap_or((-1, -1)),
                            t if t >= 0 => p.log.offset_for_timestamp(t).unwrap_or((-1, -1)),
                            _ => (-1, -1),
                        };
                        let mut r = r.with_offset(offset).with_timestamp(ts);
                        if v >= 4 {
                            r = r.with_leader_epoch(p.leader_epoch);
                        }
                        r
                    })
                    .collect();
                ListOffsetsTopicResponse::default()
                    .with_name(t.name.clone())
                    .with_partitions(parts)
            })
            .collect();
        Some(ListOffsetsResponse::default().with_topics(topics))
    }
}

impl Api for DeleteRecordsRequest {
    fn error_response(&self, _v: i16, c: i16) -> DeleteRecordsResponse {
        use delete_records_response::*;
        DeleteRecordsResponse::default().with_topics(
            self.topics
                .iter()
                .map(|t| {
                    DeleteRecordsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    DeleteRecordsPartitionResult::default()
                                        .with_partition_index(p.partition_index)
                                        .with_low_watermark(-1)
                                        .with_error_code(c)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, _v: i16) -> Option<DeleteRecordsResponse> {
        use delete_records_response::*;
        let mut st = ctx.shared.lock();
        let topics = self
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let parts = t
                    .partitions
                    .iter()
                    .map(|dp| {
                        let r = DeleteRecordsPartitionResult::default()
                            .with_partition_index(dp.partition_index)
                            .with_low_watermark(-1);
                        let Some(p) = st.partition_mut(&name, dp.partition_index) else {
                            return r.with_error_code(code(KafkaCode::UnknownTopicOrPartition));
                        };
                        if p.leader != ctx.broker {
                            return r.with_error_code(code(KafkaCode::NotLeaderOrFollower));
                        }
                        let hw = p.log.high_watermark();
                        let target = if dp.offset == -1 { hw } else { dp.offset };
                        if target < 0 || target > hw {
                            return r.with_error_code(code(KafkaCode::OffsetOutOfRange));
                        }
                        p.log.delete_before(target);
                        r.with_low_watermark(p.log.log_start())
                    })
                    .collect();
                DeleteRecordsTopicResult::default()
                    .with_name(t.name.clone())
                    .with_partitions(parts)
            })
            .collect();
        drop(st);
        ctx.shared.data_changed.notify_waiters();
        Some(DeleteRecordsResponse::default().with_topics(topics))
    }
}

// ---------------------------------------------------------------------------------------------
// Admin: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs

impl Api for CreateTopicsRequest {
    fn error_response(&self, _v: i16, c: i16) -> CreateTopicsResponse {
        CreateTopicsResponse::default().with_topics(
            self.topics
                .iter()
                .map(|t| {
                    create_topics_response::CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(c)
                })
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
                let r = create_topics_response::CreatableTopicResult::default()
                    .with_name(t.name.clone());
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

impl Api for CreatePartitionsRequest {
    fn error_response(&self, _v: i16, c: i16) -> CreatePartitionsResponse {
        CreatePartitionsResponse::default().with_results(
            self.topics
                .iter()
                .map(|t| {
                    create_partitions_response::CreatePartitionsTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(c)
                })
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
                let r = create_partitions_response::CreatePartitionsTopicResult::default()
                    .with_name(t.name.clone());
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

impl Api for DescribeConfigsRequest {
    fn error_response(&self, _v: i16, c: i16) -> DescribeConfigsResponse {
        DescribeConfigsResponse::default().with_results(
            self.resources
                .iter()
                .map(|r| {
                    describe_configs_response::DescribeConfigsResult::default()
                        .with_resource_type(r.resource_type)
                        .with_resource_name(r.resource_name.clone())
                        .with_error_code(c)
                })
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
                let r = DescribeConfigsResult::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone());
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

impl Api for IncrementalAlterConfigsRequest {
    fn error_response(&self, _v: i16, c: i16) -> IncrementalAlterConfigsResponse {
        IncrementalAlterConfigsResponse::default().with_responses(
            self.resources
                .iter()
                .map(|r| {
                    incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                        .with_resource_type(r.resource_type)
                        .with_resource_name(r.resource_name.clone())
                        .with_error_code(c)
                })
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, _v: i16) -> Option<IncrementalAlterConfigsResponse> {
        use incremental_alter_configs_response::AlterConfigsResourceResponse;
        let mut st = ctx.shared.lock();
        let responses = self
            .resources
            .iter()
            .map(|res| {
                let r = AlterConfigsResourceResponse::default()
                    .with_resource_type(res.resource_type)
                    .with_resource_name(res.resource_name.clone());
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

// ---------------------------------------------------------------------------------------------
// Groups

impl Api for DeleteGroupsRequest {
    fn error_response(&self, _v: i16, c: i16) -> DeleteGroupsResponse {
        DeleteGroupsResponse::default().with_results(
            self.groups_names
                .iter()
                .map(|g| {
                    delete_groups_response::DeletableGroupResult::default()
                        .with_group_id(g.clone())
                        .with_error_code(c)
                })
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
                let r = delete_groups_response::DeletableGroupResult::default()
                    .with_group_id(g.clone());
                if not_coordinator(&st, ctx, &name) {
                    return r.with_error_code(code(KafkaCode::NotCoordinator));
                }
                match st.groups.get(&name) {
                    None => r.with_error_code(code(KafkaCode::GroupIdNotFound)),
                    Some(group) if !group.members.is_empty() => {
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

fn not_coordinator(st: &State, ctx: &Ctx, group: &str) -> bool {
    st.coordinator(CoordinatorType::Group, group) != ctx.broker
}

fn join_response(v: i16, c: i16, member_id: &str) -> JoinGroupResponse {
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
        loop {
            let changed = ctx.shared.groups_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
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
            }
            changed.await;
        }
    }
}

fn sync_response(v: i16, c: i16) -> SyncGroupResponse {
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
        loop {
            let changed = ctx.shared.groups_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
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
            }
            changed.await;
        }
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

impl Api for OffsetCommitRequest {
    fn describe(&self, info: &mut RequestInfo) {
        info.group_id = Some(self.group_id.0.to_string());
        info.member_id = Some(self.member_id.to_string());
        info.offsets = self
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.partition_index, p.committed_offset))
            })
            .collect();
    }
    fn error_response(&self, _v: i16, c: i16) -> OffsetCommitResponse {
        use offset_commit_response::*;
        OffsetCommitResponse::default().with_topics(
            self.topics
                .iter()
                .map(|t| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(c)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<OffsetCommitResponse> {
        use offset_commit_response::*;
        let group_id = self.group_id.0.to_string();
        let member_id = self.member_id.to_string();
        let generation = self.generation_id_or_member_epoch;
        let mut st = ctx.shared.lock();
        let group_error = if not_coordinator(&st, ctx, &group_id) {
            Some(KafkaCode::NotCoordinator)
        } else {
            let g = st.groups.entry(group_id.clone()).or_insert_with(Group::new);
            if generation < 0 && member_id.is_empty() {
                if g.members.is_empty() {
                    None
                } else {
                    Some(KafkaCode::UnknownMemberId)
                }
            } else if g.state == GroupState::CompletingRebalance {
                // Kafka answers this before checking the member: assignments are being handed
                // out, commits wait for them.
                Some(KafkaCode::RebalanceInProgress)
            } else {
                g.check_member(&member_id, generation).err()
            }
        };
        let topics: Vec<OffsetCommitResponseTopic> = self
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.to_string();
                let parts = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let err = group_error.or_else(|| {
                            if st.partition(&name, p.partition_index).is_none() {
                                Some(KafkaCode::UnknownTopicOrPartition)
                            } else if p
                                .committed_metadata
                                .as_ref()
                                .is_some_and(|m| m.len() > 4096)
                            {
                                Some(KafkaCode::OffsetMetadataTooLarge)
                            } else {
                                None
                            }
                        });
                        if err.is_none()
                            && let Some(g) = st.groups.get_mut(&group_id)
                        {
                            g.offsets.insert(
                                (name.clone(), p.partition_index),
                                Committed {
                                    offset: p.committed_offset,
                                    leader_epoch: if v >= 6 {
                                        p.committed_leader_epoch
                                    } else {
                                        -1
                                    },
                                    metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                                },
                            );
                        }
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(err.map_or(NONE, code))
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(parts)
            })
            .collect();
        Some(OffsetCommitResponse::default().with_topics(topics))
    }
}

/// (partition, offset, leader epoch, metadata, error code).
type OffsetRow = (i32, i64, i32, Option<String>, i16);

/// The committed offsets of a group for the requested partitions (`None`: all).
fn fetch_offsets(
    st: &State,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Vec<(String, Vec<OffsetRow>)> {
    let g = st.groups.get(group_id);
    let wanted = match wanted {
        Some(w) => w,
        None => {
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            if let Some(g) = g {
                for (t, p) in g.offsets.keys() {
                    by_topic.entry(t.clone()).or_default().push(*p);
                }
            }
            by_topic
                .into_iter()
                .map(|(t, mut ps)| {
                    ps.sort_unstable();
                    (t, ps)
                })
                .collect()
        }
    };
    wanted
        .into_iter()
        .map(|(topic, parts)| {
            let rows = parts
                .into_iter()
                .map(|p| {
                    let key = (topic.clone(), p);
                    let pending = require_stable
                        && g.is_some_and(|g| {
                            g.pending_txn
                                .values()
                                .any(|v| v.iter().any(|(k, _)| *k == key))
                        });
                    if pending {
                        return (
                            p,
                            -1,
                            -1,
                            Some(String::new()),
                            code(KafkaCode::UnstableOffsetCommit),
                        );
                    }
                    match g.and_then(|g| g.offsets.get(&key)) {
                        Some(c) => (
                            p,
                            c.offset,
                            c.leader_epoch,
                            Some(c.metadata.clone().unwrap_or_default()),
                            NONE,
                        ),
                        None => (p, -1, -1, Some(String::new()), NONE),
                    }
                })
                .collect();
            (topic, rows)
        })
        .collect()
}

impl Api for OffsetFetchRequest {
    fn describe(&self, info: &mut RequestInfo) {
        if self.groups.is_empty() {
            info.group_id = Some(self.group_id.0.to_string());
        } else {
            info.group_id = self.groups.first().map(|g| g.group_id.0.to_string());
        }
    }
    fn error_response(&self, v: i16, c: i16) -> OffsetFetchResponse {
        use offset_fetch_response::*;
        if v >= 8 {
            OffsetFetchResponse::default().with_groups(
                self.groups
                    .iter()
                    .map(|g| {
                        OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id.clone())
                            .with_error_code(c)
                    })
                    .collect(),
            )
        } else if v >= 2 {
            OffsetFetchResponse::default().with_error_code(c)
        } else {
            OffsetFetchResponse::default().with_topics(
                self.topics
                    .iter()
                    .flatten()
                    .map(|t| {
                        OffsetFetchResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partition_indexes
                                    .iter()
                                    .map(|&p| {
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(-1)
                                            .with_error_code(c)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
        }
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<OffsetFetchResponse> {
        use offset_fetch_response::*;
        let st = ctx.shared.lock();
        if v >= 8 {
            let groups = self
                .groups
                .iter()
                .map(|gr| {
                    let gid = gr.group_id.0.to_string();
                    let r = OffsetFetchResponseGroup::default().with_group_id(gr.group_id.clone());
                    if not_coordinator(&st, ctx, &gid) {
                        return r.with_error_code(code(KafkaCode::NotCoordinator));
                    }
                    let wanted = gr.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                            .collect()
                    });
                    let topics = fetch_offsets(&st, &gid, wanted, self.require_stable)
                        .into_iter()
                        .map(|(t, rows)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(tn(&t))
                                .with_partitions(
                                    rows.into_iter()
                                        .map(|(p, o, e, m, c)| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(o)
                                                .with_committed_leader_epoch(e)
                                                .with_metadata(m.as_deref().map(s))
                                                .with_error_code(c)
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                    r.with_topics(topics)
                })
                .collect();
            return Some(OffsetFetchResponse::default().with_groups(groups));
        }
        let gid = self.group_id.0.to_string();
        if not_coordinator(&st, ctx, &gid) {
            return Some(self.error_response(v, code(KafkaCode::NotCoordinator)));
        }
        let wanted = self.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect()
        });
        let topics = fetch_offsets(&st, &gid, wanted, v >= 7 && self.require_stable)
            .into_iter()
            .map(|(t, rows)| {
                OffsetFetchResponseTopic::default()
                    .with_name(tn(&t))
                    .with_partitions(
                        rows.into_iter()
                            .map(|(p, o, e, m, c)| {
                                let mut r = OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o)
                                    .with_metadata(m.as_deref().map(s))
                                    .with_error_code(c);
                                if v >= 5 {
                                    r = r.with_committed_leader_epoch(e);
                                }
                                r
                            })
                            .collect(),
                    )
            })
            .collect();
        Some(OffsetFetchResponse::default().with_topics(topics))
    }
}

impl Api for DescribeGroupsRequest {
    fn error_response(&self, _v: i16, c: i16) -> DescribeGroupsResponse {
        DescribeGroupsResponse::default().with_groups(
            self.groups
                .iter()
                .map(|g| {
                    describe_groups_response::DescribedGroup::default()
                        .with_group_id(g.clone())
                        .with_error_code(c)
                })
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
                let r = DescribedGroup::default().with_group_id(gid.clone());
                if not_coordinator(&st, ctx, &name) {
                    return r.with_error_code(code(KafkaCode::NotCoordinator));
                }
                let Some(g) = st.groups.get(&name) else {
                    return r.with_group_state(s("Dead"));
                };
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
                        .any(|f| f.eq_ignore_ascii_case(g.state.name()))
            })
            .map(|(name, g)| {
                let mut lg = list_groups_response::ListedGroup::default()
                    .with_group_id(GroupId(s(name)))
                    .with_protocol_type(s(&g.protocol_type));
                if v >= 4 {
                    lg = lg.with_group_state(s(g.state.name()));
                }
                lg
            })
            .collect();
        Some(ListGroupsResponse::default().with_groups(groups))
    }
}

// ---------------------------------------------------------------------------------------------
// Transactions

fn fenced(v: i16, fenced_from: i16) -> KafkaCode {
    if v >= fenced_from {
        KafkaCode::ProducerFenced
    } else {
        KafkaCode::InvalidProducerEpoch
    }
}

fn not_txn_coordinator(st: &State, ctx: &Ctx, txn_id: &str) -> bool {
    st.coordinator(CoordinatorType::Transaction, txn_id) != ctx.broker
}

/// Checks a transactional request's producer id and epoch against the coordinator's state.
fn check_txn(
    st: &State,
    ctx: &Ctx,
    txn_id: &str,
    pid: i64,
    epoch: i16,
    v: i16,
    fenced_from: i16,
) -> Result<(), KafkaCode> {
    if not_txn_coordinator(st, ctx, txn_id) {
        return Err(KafkaCode::NotCoordinator);
    }
    let txn = st
        .txns
        .get(txn_id)
        .ok_or(KafkaCode::InvalidProducerIdMapping)?;
    if txn.producer_id != pid {
        return Err(KafkaCode::InvalidProducerIdMapping);
    }
    if txn.epoch != epoch {
        return Err(fenced(v, fenced_from));
    }
    Ok(())
}

impl Api for InitProducerIdRequest {
    fn describe(&self, info: &mut RequestInfo) {
        info.transactional_id = self.transactional_id.as_ref().map(|t| t.0.to_string());
        if self.producer_id.0 >= 0 {
            info.producer_id = Some(self.producer_id.0);
            info.producer_epoch = Some(self.producer_epoch);
        }
    }
    fn error_response(&self, _v: i16, c: i16) -> InitProducerIdResponse {
        InitProducerIdResponse::default()
            .with_error_code(c)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<InitProducerIdResponse> {
        let ok = |pid: i64, epoch: i16| {
            InitProducerIdResponse::default()
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch)
        };
        let mut st = ctx.shared.lock();
        let Some(txn_id) = self.transactional_id.as_ref().map(|t| t.0.to_string()) else {
            // Idempotent producer; with a producer id and epoch: KIP-360 epoch bump.
            if self.producer_id.0 >= 0 && self.producer_epoch < i16::MAX - 1 {
                return Some(ok(self.producer_id.0, self.producer_epoch + 1));
            }
            let pid = st.new_producer_id();
            return Some(ok(pid, 0));
        };
        if not_txn_coordinator(&st, ctx, &txn_id) {
            return Some(self.error_response(v, code(KafkaCode::NotCoordinator)));
        }
        let timeout = Duration::from_millis(self.transaction_timeout_ms.max(0) as u64);
        if self.transaction_timeout_ms <= 0 || timeout > st.settings.max_transaction_timeout {
            return Some(self.error_response(v, code(KafkaCode::InvalidTransactionTimeout)));
        }
        let (pid, epoch, abort) = match st.txns.get(&txn_id) {
            None => {
                let pid = st.new_producer_id();
                st.txns.insert(
                    txn_id.clone(),
                    Txn {
                        producer_id: pid,
                        epoch: 0,
                        timeout,
                        ongoing: false,
                        started: Instant::now(),
                        partitions: Default::default(),
                        groups: Default::default(),
                        last_result: None,
                    },
                );
                drop(st);
                return Some(ok(pid, 0));
            }
            Some(t) => {
                if self.producer_id.0 >= 0
                    && (self.producer_id.0 != t.producer_id || self.producer_epoch != t.epoch)
                {
                    return Some(self.error_response(v, code(fenced(v, 4))));
                }
                (t.producer_id, t.epoch, t.ongoing)
            }
        };
        let (new_pid, new_epoch) = if epoch >= i16::MAX - 1 {
            (st.new_producer_id(), 0)
        } else {
            (pid, epoch + 1)
        };
        if abort {
            // Fence the previous incarnation: abort its transaction with the bumped epoch.
            if let Some(t) = st.txns.get_mut(&txn_id) {
                t.epoch = if new_pid == pid { new_epoch } else { epoch };
            }
            let marker_epoch = if new_pid == pid { new_epoch } else { epoch };
            st.end_txn(&txn_id, false, marker_epoch);
        }
        if let Some(t) = st.txns.get_mut(&txn_id) {
            t.producer_id = new_pid;
            t.epoch = new_epoch;
            t.timeout = timeout;
            t.ongoing = false;
            t.last_result = None;
        }
        drop(st);
        if abort {
            ctx.shared.data_changed.notify_waiters();
        }
        Some(ok(new_pid, new_epoch))
    }
}

impl Api for AddPartitionsToTxnRequest {
    fn describe(&self, info: &mut RequestInfo) {
        info.transactional_id = Some(self.v3_and_below_transactional_id.0.to_string());
        info.producer_id = Some(self.v3_and_below_producer_id.0);
        info.producer_epoch = Some(self.v3_and_below_producer_epoch);
        for t in &self.v3_and_below_topics {
            for p in &t.partitions {
                info.partitions.push((t.name.0.to_string(), *p));
            }
        }
    }
    fn error_response(&self, _v: i16, c: i16) -> AddPartitionsToTxnResponse {
        use add_partitions_to_txn_response::*;
        AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(
            self.v3_and_below_topics
                .iter()
                .map(|t| {
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(t.name.clone())
                        .with_results_by_partition(
                            t.partitions
                                .iter()
                                .map(|&p| {
                                    AddPartitionsToTxnPartitionResult::default()
                                        .with_partition_index(p)
                                        .with_partition_error_code(c)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<AddPartitionsToTxnResponse> {
        use add_partitions_to_txn_response::*;
        let txn_id = self.v3_and_below_transactional_id.0.to_string();
        let mut st = ctx.shared.lock();
        if let Err(c) = check_txn(
            &st,
            ctx,
            &txn_id,
            self.v3_and_below_producer_id.0,
            self.v3_and_below_producer_epoch,
            v,
            2,
        ) {
            return Some(self.error_response(v, code(c)));
        }
        let unknown: Vec<(String, i32)> = self
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |&p| (t.name.0.to_string(), p)))
            .filter(|(t, p)| st.partition(t, *p).is_none())
            .collect();
        let mut results = Vec::new();
        for t in &self.v3_and_below_topics {
            let name = t.name.0.to_string();
            let parts = t
                .partitions
                .iter()
                .map(|&p| {
                    let c = if unknown.is_empty() {
                        NONE
                    } else if unknown.contains(&(name.clone(), p)) {
                        code(KafkaCode::UnknownTopicOrPartition)
                    } else {
                        code(KafkaCode::OperationNotAttempted)
                    };
                    AddPartitionsToTxnPartitionResult::default()
                        .with_partition_index(p)
                        .with_partition_error_code(c)
                })
                .collect();
            results.push(
                AddPartitionsToTxnTopicResult::default()
                    .with_name(t.name.clone())
                    .with_results_by_partition(parts),
            );
        }
        if unknown.is_empty()
            && let Some(txn) = st.txns.get_mut(&txn_id)
        {
            if !txn.ongoing {
                txn.ongoing = true;
                txn.started = Instant::now();
            }
            for t in &self.v3_and_below_topics {
                for &p in &t.partitions {
                    txn.partitions.insert((t.name.0.to_string(), p));
                }
            }
        }
        Some(AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results))
    }
}

impl Api for AddOffsetsToTxnRequest {
    fn describe(&self, info: &mut RequestInfo) {
        info.transactional_id = Some(self.transactional_id.0.to_string());
        info.producer_id = Some(self.producer_id.0);
        info.producer_epoch = Some(self.producer_epoch);
        info.group_id = Some(self.group_id.0.to_string());
    }
    fn error_response(&self, _v: i16, c: i16) -> AddOffsetsToTxnResponse {
        AddOffsetsToTxnResponse::default().with_error_code(c)
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<AddOffsetsToTxnResponse> {
        let txn_id = self.transactional_id.0.to_string();
        let mut st = ctx.shared.lock();
        if let Err(c) = check_txn(
            &st,
            ctx,
            &txn_id,
            self.producer_id.0,
            self.producer_epoch,
            v,
            2,
        ) {
            return Some(self.error_response(v, code(c)));
        }
        if let Some(txn) = st.txns.get_mut(&txn_id) {
            if !txn.ongoing {
                txn.ongoing = true;
                txn.started = Instant::now();
            }
            txn.groups.insert(self.group_id.0.to_string());
        }
        Some(AddOffsetsToTxnResponse::default())
    }
}

impl Api for TxnOffsetCommitRequest {
    fn describe(&self, info: &mut RequestInfo) {
        info.transactional_id = Some(self.transactional_id.0.to_string());
        info.producer_id = Some(self.producer_id.0);
        info.producer_epoch = Some(self.producer_epoch);
        info.group_id = Some(self.group_id.0.to_string());
        info.member_id = Some(self.member_id.to_string());
    }
    fn error_response(&self, _v: i16, c: i16) -> TxnOffsetCommitResponse {
        use txn_offset_commit_response::*;
        TxnOffsetCommitResponse::default().with_topics(
            self.topics
                .iter()
                .map(|t| {
                    TxnOffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    TxnOffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(c)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<TxnOffsetCommitResponse> {
        let group_id = self.group_id.0.to_string();
        let txn_id = self.transactional_id.0.to_string();
        let mut st = ctx.shared.lock();
        if not_coordinator(&st, ctx, &group_id) {
            return Some(self.error_response(v, code(KafkaCode::NotCoordinator)));
        }
        // The group coordinator checks the producer against the partition state Kafka keeps;
        // the mock asks its transaction state directly.
        if let Some(txn) = st.txns.get(&txn_id) {
            if txn.producer_id != self.producer_id.0 {
                return Some(self.error_response(v, code(KafkaCode::InvalidProducerIdMapping)));
            }
            if txn.epoch != self.producer_epoch {
                return Some(self.error_response(v, code(fenced(v, 3))));
            }
            if !txn.ongoing || !txn.groups.contains(&group_id) {
                return Some(self.error_response(v, code(KafkaCode::InvalidTxnState)));
            }
        } else {
            return Some(self.error_response(v, code(KafkaCode::InvalidProducerIdMapping)));
        }
        let g = st.groups.entry(group_id.clone()).or_insert_with(Group::new);
        if v >= 3 && !self.member_id.is_empty() {
            if let Err(c) = g.check_member(&self.member_id, self.generation_id) {
                return Some(self.error_response(v, code(c)));
            }
        }
        let pid = self.producer_id.0;
        let mut pending = Vec::new();
        for t in &self.topics {
            for p in &t.partitions {
                pending.push((
                    (t.name.0.to_string(), p.partition_index),
                    Committed {
                        offset: p.committed_offset,
                        leader_epoch: if v >= 2 { p.committed_leader_epoch } else { -1 },
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    },
                ));
            }
        }
        g.pending_txn.entry(pid).or_default().extend(pending);
        Some(self.error_response(v, NONE))
    }
}

impl Api for EndTxnRequest {
    fn describe(&self, info: &mut RequestInfo) {
        info.transactional_id = Some(self.transactional_id.0.to_string());
        info.producer_id = Some(self.producer_id.0);
        info.producer_epoch = Some(self.producer_epoch);
    }
    fn error_response(&self, _v: i16, c: i16) -> EndTxnResponse {
        EndTxnResponse::default().with_error_code(c)
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<EndTxnResponse> {
        let txn_id = self.transactional_id.0.to_string();
        let mut st = ctx.shared.lock();
        if let Err(c) = check_txn(
            &st,
            ctx,
            &txn_id,
            self.producer_id.0,
            self.producer_epoch,
            v,
            2,
        ) {
            return Some(self.error_response(v, code(c)));
        }
        let Some(txn) = st.txns.get(&txn_id) else {
            return Some(self.error_response(v, code(KafkaCode::InvalidProducerIdMapping)));
        };
        if !txn.ongoing {
            // A retry of the EndTxn that completed the transaction succeeds; anything else is
            // out of order.
            let c = if txn.last_result == Some(self.committed) {
                NONE
            } else {
                code(KafkaCode::InvalidTxnState)
            };
            return Some(self.error_response(v, c));
        }
        let epoch = txn.epoch;
        st.end_txn(&txn_id, self.committed, epoch);
        drop(st);
        ctx.shared.data_changed.notify_waiters();
        Some(EndTxnResponse::default())
    }
}

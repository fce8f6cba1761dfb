//! Request handlers: one `Api` implementation per supported request type, one file per API
//! family: `metadata.rs` (ApiVersions, Metadata, FindCoordinator), `produce.rs`, `fetch.rs`
//! (Fetch, OffsetForLeaderEpoch, ListOffsets), `admin.rs` (topics, partitions, records,
//! configs, group deletion), `group.rs` (the classic group protocol), `offsets.rs`
//! (OffsetCommit, OffsetFetch), `txn.rs` (transactions) and `consumer_group.rs` (KIP-848's
//! ConsumerGroupHeartbeat and ConsumerGroupDescribe); each file's doc says which versions it
//! serves and what it does not model. `common.rs` holds what several handlers share: the
//! per-topic, per-partition walk into a response, the leader lookup of a partition request, the
//! wait of a parked request and the transactional producer check. This file holds the dispatch
//! (`handle_frame`: header, version check, fault injection, then `Api::handle`) and the
//! version table the mock advertises (`SUPPORTED`).

use std::collections::{BTreeMap, HashMap};
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

mod admin;
mod common;
mod consumer_group;
mod fetch;
mod group;
mod metadata;
mod offsets;
mod produce;
mod txn;
use common::*;
use group::*;
use metadata::*;

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
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
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
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The APIs of KIP-848's consumer group protocol (left out when the mock acts as a broker
/// without it).
const KIP848: &[ApiKey] = &[
    ApiKey::ConsumerGroupHeartbeat,
    ApiKey::ConsumerGroupDescribe,
];

/// The advertised ranges: `SUPPORTED`, narrowed or removed by `set_api_versions`.
fn ranges(ctx: &Ctx) -> Vec<(ApiKey, i16, i16)> {
    let f = ctx.shared.faults();
    let kip848 = ctx.shared.consumer_group_protocol;
    SUPPORTED
        .iter()
        .filter(|(k, _, _)| kip848 || !KIP848.contains(k))
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
        ConsumerGroupHeartbeat => ConsumerGroupHeartbeatRequest,
        ConsumerGroupDescribe => ConsumerGroupDescribeRequest,
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

//! Produce (v3–11): batches validated, sequences checked (idempotence), appended to the log.
//!
//! Per partition: an injected error first, `INVALID_REQUIRED_ACKS`, an unknown partition,
//! `NOT_LEADER_OR_FOLLOWER` (from v10 with the current leader and its endpoint, KIP-951), then
//! the batches: magic 2 only, one batch per partition for idempotent producers, no control
//! batches from clients, transactional batches only from the transaction's producer in an
//! ongoing transaction holding the partition; the log checks sequences (a duplicate batch is
//! acknowledged, not appended again). `acks=0` gets no response. Topics with
//! `message.timestamp.type=LogAppendTime` get their batches stamped.
//!
//! Not modelled: replication (`acks=all` is `acks=1`: `min.insync.replicas` is never short),
//! recompression (batches are stored as the producer encoded them), size limits
//! (`max.message.bytes` is not enforced), quotas and throttling, and ACLs.

use super::*;

pub(super) fn decode_batches(records: Option<Bytes>) -> Result<Vec<RecordBatch>, KafkaCode> {
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

pub(super) fn produce_partition_response(
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
pub(super) fn produce_partition(
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

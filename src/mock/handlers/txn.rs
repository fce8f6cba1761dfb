//! Transactions: InitProducerId (v0–5), AddPartitionsToTxn (v0–3), AddOffsetsToTxn (v0–3),
//! TxnOffsetCommit (v0–3) and EndTxn (v0–3).
//!
//! InitProducerId hands out producer ids (idempotent producers; KIP-360 epoch bumps) and, with
//! a transactional id on its coordinator, bumps the epoch, aborting the previous incarnation's
//! open transaction (fencing it). AddPartitionsToTxn / AddOffsetsToTxn / EndTxn check the
//! producer first (`lock_producer`: coordinator, producer id, epoch; `PRODUCER_FENCED` from
//! v2), AddPartitionsToTxn is all or nothing (`OPERATION_NOT_ATTEMPTED` beside an unknown
//! partition), EndTxn writes the commit or abort markers at once (a retry of the completed
//! EndTxn succeeds). TxnOffsetCommit stages offsets in the group until the transaction ends
//! (KIP-447 member checks from v3).
//!
//! Not modelled: the transaction log and its two-phase `PREPARE_*` states (markers are written
//! in the same step, so `CONCURRENT_TRANSACTIONS` never answers), AddPartitionsToTxn v4+
//! (batched, broker-verified: KIP-890 is not advertised) and KIP-890's epoch bump per
//! transaction, producer-id expiry, and ACLs.

use super::*;

pub(super) fn fenced(v: i16, fenced_from: i16) -> KafkaCode {
    if v >= fenced_from {
        KafkaCode::ProducerFenced
    } else {
        KafkaCode::InvalidProducerEpoch
    }
}

pub(super) fn not_txn_coordinator(st: &State, ctx: &Ctx, txn_id: &str) -> bool {
    st.coordinator(CoordinatorType::Transaction, txn_id) != ctx.broker
}

/// Checks a transactional request's producer id and epoch against the coordinator's state.
pub(super) fn check_txn(
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

/// `TxnProducer` for the requests whose producer fields have the common names
/// (`transactional_id`, `producer_id`, `producer_epoch`).
macro_rules! txn_producer {
    ($($req:ty),* $(,)?) => {$(
        impl TxnProducer for $req {
            fn producer(&self) -> (&str, i64, i16) {
                (self.transactional_id.0.as_str(), self.producer_id.0, self.producer_epoch)
            }
        }
    )*};
}

txn_producer!(
    AddOffsetsToTxnRequest,
    EndTxnRequest,
    TxnOffsetCommitRequest
);

impl TxnProducer for AddPartitionsToTxnRequest {
    fn producer(&self) -> (&str, i64, i16) {
        (
            self.v3_and_below_transactional_id.0.as_str(),
            self.v3_and_below_producer_id.0,
            self.v3_and_below_producer_epoch,
        )
    }
}

impl Api for AddPartitionsToTxnRequest {
    fn describe(&self, info: &mut RequestInfo) {
        self.describe_producer(info);
        for t in &self.v3_and_below_topics {
            for p in &t.partitions {
                info.partitions.push((t.name.0.to_string(), *p));
            }
        }
    }
    fn error_response(&self, _v: i16, c: i16) -> AddPartitionsToTxnResponse {
        add_partitions_answers(self, |_, _| c)
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<AddPartitionsToTxnResponse> {
        let txn_id = self.v3_and_below_transactional_id.0.to_string();
        let mut st = match lock_producer(&self, ctx, v) {
            Ok(st) => st,
            Err(resp) => return Some(resp),
        };
        let unknown: Vec<(String, i32)> = self
            .v3_and_below_topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |&p| (t.name.0.to_string(), p)))
            .filter(|(t, p)| st.partition(t, *p).is_none())
            .collect();
        // All or nothing, as Kafka: with one unknown partition the others are not attempted.
        let resp = add_partitions_answers(&self, |t, &p| {
            if unknown.is_empty() {
                NONE
            } else if unknown.contains(&(t.name.0.to_string(), p)) {
                code(KafkaCode::UnknownTopicOrPartition)
            } else {
                code(KafkaCode::OperationNotAttempted)
            }
        });
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
        Some(resp)
    }
}

/// The AddPartitionsToTxn (v0–3) response with `error` giving each partition's error code.
fn add_partitions_answers(
    req: &AddPartitionsToTxnRequest,
    mut error: impl FnMut(&add_partitions_to_txn_request::AddPartitionsToTxnTopic, &i32) -> i16,
) -> AddPartitionsToTxnResponse {
    use add_partitions_to_txn_response::*;
    AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(per_partition(
        &req.v3_and_below_topics,
        |t| &t.partitions,
        |t, &p| {
            AddPartitionsToTxnPartitionResult::default()
                .with_partition_index(p)
                .with_partition_error_code(error(t, &p))
        },
        |t, parts| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(parts)
        },
    ))
}

impl Api for AddOffsetsToTxnRequest {
    fn describe(&self, info: &mut RequestInfo) {
        self.describe_producer(info);
        info.group_id = Some(self.group_id.0.to_string());
    }
    fn error_response(&self, _v: i16, c: i16) -> AddOffsetsToTxnResponse {
        AddOffsetsToTxnResponse::default().with_error_code(c)
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<AddOffsetsToTxnResponse> {
        let txn_id = self.transactional_id.0.to_string();
        let mut st = match lock_producer(&self, ctx, v) {
            Ok(st) => st,
            Err(resp) => return Some(resp),
        };
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
        self.describe_producer(info);
        info.group_id = Some(self.group_id.0.to_string());
        info.member_id = Some(self.member_id.to_string());
    }
    fn error_response(&self, _v: i16, c: i16) -> TxnOffsetCommitResponse {
        use txn_offset_commit_response::*;
        TxnOffsetCommitResponse::default().with_topics(per_partition(
            &self.topics,
            |t| &t.partitions,
            |_, p| {
                TxnOffsetCommitResponsePartition::default()
                    .with_partition_index(p.partition_index)
                    .with_error_code(c)
            },
            |t, parts| {
                TxnOffsetCommitResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(parts)
            },
        ))
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
        if let Some(cg) = &g.consumer {
            // KIP-447 over KIP-848: the generation field carries the member epoch.
            if v >= 3
                && let Err(c) = consumer_group::check_consumer_commit(
                    cg,
                    &self.member_id,
                    self.generation_id,
                    None,
                )
            {
                return Some(self.error_response(v, code(c)));
            }
        } else if v >= 3 && !self.member_id.is_empty() {
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
        self.describe_producer(info);
    }
    fn error_response(&self, _v: i16, c: i16) -> EndTxnResponse {
        EndTxnResponse::default().with_error_code(c)
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<EndTxnResponse> {
        let txn_id = self.transactional_id.0.to_string();
        let mut st = match lock_producer(&self, ctx, v) {
            Ok(st) => st,
            Err(resp) => return Some(resp),
        };
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

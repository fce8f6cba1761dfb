//! What the handlers share: the per-topic, per-partition walk of a request into a response
//! (`per_partition`), the leader lookup of a partition request with the error Kafka gives first
//! (`led_partition`), the wait of a request that parks until the cluster state changes
//! (`answer_when`), and the producer check every transactional request starts with
//! (`TxnProducer`, `lock_producer`).
//!
//! Each helper has one home so that a handler keeps only what its API answers: Kafka's brokers
//! share the same steps (the replica manager's partition lookup, the purgatory's wait, the
//! transaction coordinator's producer check), and a behaviour fixed here is fixed for every API.

use std::sync::MutexGuard;

use tokio::sync::Notify;

use super::*;
use crate::mock::state::Partition;

/// Maps a request's topics and partitions to a response's: `part` answers one partition (with
/// its topic at hand), `topic` wraps a topic's answers into the response topic. Every
/// partition-level API nests request and response this way (Fetch, ListOffsets,
/// OffsetForLeaderEpoch, OffsetCommit, DeleteRecords, AddPartitionsToTxn, TxnOffsetCommit, and
/// their whole-request error answers); the answers keep the request's order.
pub(super) fn per_partition<T, P, RT, RP>(
    topics: &[T],
    parts: impl Fn(&T) -> &[P],
    mut part: impl FnMut(&T, &P) -> RP,
    topic: impl Fn(&T, Vec<RP>) -> RT,
) -> Vec<RT> {
    let mut out = Vec::with_capacity(topics.len());
    for t in topics {
        let answers = parts(t).iter().map(|p| part(t, p)).collect();
        out.push(topic(t, answers));
    }
    out
}

/// Looks up a partition a request wants its leader for (Fetch, ListOffsets,
/// OffsetForLeaderEpoch) and the error Kafka's replica manager answers first, in its order:
/// an error injected for `api` (`MockCluster::push_partition_errors`, consumed here),
/// `UNKNOWN_TOPIC_OR_PARTITION`, `NOT_LEADER_OR_FOLLOWER` (this broker does not lead it), then
/// KIP-320's leader-epoch check: `current_epoch` (−1 or a request version without the field:
/// not checked) below the partition's is `FENCED_LEADER_EPOCH`; above it is
/// `UNKNOWN_LEADER_EPOCH` where `newer_unknown` (ListOffsets on the mock checks only the
/// fenced side). The partition comes back with an error too when it exists: answers carry its
/// watermarks or its leader (KIP-951).
pub(super) fn led_partition<'a>(
    ctx: &Ctx,
    st: &'a State,
    api: ApiKey,
    topic: &str,
    partition: i32,
    current_epoch: i32,
    newer_unknown: bool,
) -> (Option<&'a Partition>, Option<i16>) {
    let injected = ctx.shared.faults().partition_error(api, topic, partition);
    let part = st.partition(topic, partition);
    let err = match (injected, part) {
        (Some(c), _) => Some(c),
        (None, None) => Some(KafkaCode::UnknownTopicOrPartition.code()),
        (None, Some(p)) if p.leader != ctx.broker => Some(KafkaCode::NotLeaderOrFollower.code()),
        (None, Some(p)) if current_epoch >= 0 && current_epoch < p.leader_epoch => {
            Some(KafkaCode::FencedLeaderEpoch.code())
        }
        (None, Some(p)) if newer_unknown && current_epoch > p.leader_epoch => {
            Some(KafkaCode::UnknownLeaderEpoch.code())
        }
        _ => None,
    };
    (part, err)
}

/// Answers a request that waits on the cluster state (a Fetch below `min_bytes`, a JoinGroup
/// or SyncGroup before its round completes), as a broker's purgatory does: `poll` is asked
/// now and again after every notification of `changed`, and, with a `deadline`, once more when
/// it passes (`poll` must answer then). The notification is armed before each poll, so a change
/// between the poll and the wait is not missed. `poll` takes the state lock itself and drops it
/// before the wait.
pub(super) async fn answer_when<T>(
    changed: &Notify,
    deadline: Option<Instant>,
    mut poll: impl FnMut() -> Option<T>,
) -> T {
    loop {
        let notified = changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(answer) = poll() {
            return answer;
        }
        match deadline {
            Some(d) => {
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(d.into()) => {}
                }
            }
            None => notified.await,
        }
    }
}

/// A request of a transactional producer (AddPartitionsToTxn v0–3, AddOffsetsToTxn, EndTxn to
/// its transaction coordinator; TxnOffsetCommit to the group coordinator, which checks it
/// itself): the producer it speaks for.
pub(super) trait TxnProducer: Api {
    /// (transactional id, producer id, producer epoch).
    fn producer(&self) -> (&str, i64, i16);

    /// The request-log fields of the producer.
    fn describe_producer(&self, info: &mut RequestInfo) {
        let (txn_id, pid, epoch) = self.producer();
        info.transactional_id = Some(txn_id.to_owned());
        info.producer_id = Some(pid);
        info.producer_epoch = Some(epoch);
    }
}

/// Locks the state for a transactional request whose producer the coordinator accepts
/// (`check_txn`: coordinator, producer id, epoch; `PRODUCER_FENCED` from v2), or the
/// whole-request error answer.
pub(super) fn lock_producer<'a, R: TxnProducer>(
    req: &R,
    ctx: &'a Ctx,
    v: i16,
) -> Result<MutexGuard<'a, State>, R::Response> {
    let st = ctx.shared.lock();
    let (txn_id, pid, epoch) = req.producer();
    match txn::check_txn(&st, ctx, txn_id, pid, epoch, v, 2) {
        Ok(()) => Ok(st),
        Err(c) => Err(req.error_response(v, code(c))),
    }
}

//! The sender's side of a transactional producer: the state the transaction manager
//! ([`crate::transaction`]) shares with the sender task, and AddPartitionsToTxn.
//!
//! The transaction manager owns the transaction's state machine and its coordinator calls
//! (InitProducerId, AddOffsetsToTxn, TxnOffsetCommit, EndTxn). The sender owns everything
//! per batch: it registers a partition with the transaction (AddPartitionsToTxn, batched over
//! every partition waiting) before the partition's first batch is sent, marks batches
//! transactional, and reports the first failed batch of a transaction as the transaction's
//! abortable error. Only transactional producers have a link; the non-transactional path
//! never looks at it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::accumulator::lock;
use super::config::ProducerConfig;
use super::idempotence::ProducerIdAndEpoch;
use crate::cluster::{Cluster, CoordinatorType};
use crate::error::{Error, ErrorKind, KafkaCode, Result};
use crate::protocol::StrBytes;
use crate::protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use crate::protocol::messages::{
    AddPartitionsToTxnRequest, ApiKey, ProducerId, TopicName, TransactionalId,
};

pub(crate) type Tp = (Arc<str>, i32);

/// What the transaction manager and the sender share.
#[derive(Debug)]
pub(crate) struct TxnLink {
    pub(crate) transactional_id: Arc<str>,
    state: Mutex<LinkState>,
}

/// The shared state; see the field docs for who writes what.
#[derive(Debug, Default)]
pub(crate) struct LinkState {
    /// Manager → sender: adopt this producer id and epoch (sequences start over).
    pub(crate) new_id: Option<ProducerIdAndEpoch>,
    /// The producer id and epoch the manager uses now.
    pub(crate) id: Option<ProducerIdAndEpoch>,
    /// Sender: partitions registered with the current transaction.
    pub(crate) added: HashSet<Tp>,
    /// Sender: an AddPartitionsToTxn is in flight.
    pub(crate) adding: bool,
    /// Sender: when the next AddPartitionsToTxn may be tried after a retriable error.
    pub(crate) add_retry_at: Option<Instant>,
    /// Sender: consecutive retriable AddPartitionsToTxn failures (for the back-off).
    pub(crate) add_failures: u32,
    /// Sender: an AddPartitionsToTxn was sent in this transaction (its outcome may be unknown),
    /// so the coordinator may know the transaction.
    pub(crate) maybe_registered: bool,
    /// Sender or manager: the first abortable error of the current transaction.
    pub(crate) error: Option<Error>,
    /// Manager: an abort is under way; the sender fails every batch not in flight with
    /// [`ErrorKind::TransactionAborted`].
    pub(crate) aborting: bool,
    /// Sender: a batch's outcome is unknown or the sequence has a gap; the manager bumps the
    /// epoch after the transaction ends so that a late write is fenced.
    pub(crate) bump_needed: bool,
    /// Manager: incremented when a transaction ends; an AddPartitionsToTxn result of an
    /// earlier transaction is dropped.
    pub(crate) generation: u64,
}

impl TxnLink {
    pub(crate) fn new(transactional_id: &str) -> TxnLink {
        TxnLink {
            transactional_id: Arc::from(transactional_id),
            state: Mutex::new(LinkState::default()),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, LinkState> {
        lock(&self.state)
    }

    /// Records the transaction's first abortable error (later ones are dropped).
    pub(crate) fn set_error(&self, e: Error) {
        let mut st = self.lock();
        if st.error.is_none() && !st.aborting {
            tracing::debug!(error = %e, "transaction hit an abortable error");
            st.error = Some(e);
        }
    }

    /// The error a batch that cannot be sent any more fails with: aborted, or the
    /// transaction's abortable error.
    pub(crate) fn doom(&self) -> Option<Error> {
        let st = self.lock();
        if st.aborting {
            Some(Error::with_message(
                ErrorKind::TransactionAborted,
                "the transaction was aborted before this record was sent",
            ))
        } else {
            st.error.as_ref().map(|e| {
                Error::with_message(
                    ErrorKind::Abortable,
                    format!("the transaction failed earlier and must be aborted: {e}"),
                )
                .with_source(e.clone())
            })
        }
    }
}

/// Sends one AddPartitionsToTxn for `tps` to the transaction coordinator (no retry; the
/// sender schedules those). The error names the first partition that failed.
pub(crate) async fn add_partitions(
    cluster: &Cluster,
    config: &ProducerConfig,
    transactional_id: &str,
    id: ProducerIdAndEpoch,
    tps: &[Tp],
) -> Result<()> {
    let coordinator = cluster
        .coordinator(CoordinatorType::Transaction, transactional_id)
        .await?;
    let result = add_partitions_at(cluster, config, transactional_id, id, tps, coordinator).await;
    if let Err(e) = &result
        && matches!(
            e.kind(),
            ErrorKind::Broker(
                KafkaCode::NotCoordinator
                    | KafkaCode::CoordinatorNotAvailable
                    | KafkaCode::CoordinatorLoadInProgress
            ) | ErrorKind::Disconnected
                | ErrorKind::Io(_)
                | ErrorKind::Timeout
        )
    {
        cluster.invalidate_coordinator(CoordinatorType::Transaction, transactional_id);
    }
    result
}

async fn add_partitions_at(
    cluster: &Cluster,
    config: &ProducerConfig,
    transactional_id: &str,
    id: ProducerIdAndEpoch,
    tps: &[Tp],
    coordinator: i32,
) -> Result<()> {
    let broker = cluster.connection_for_broker(coordinator).await?;
    let conn = broker.connection().await?;
    let version = conn
        .versions()
        .negotiate::<AddPartitionsToTxnRequest>()
        .map_err(|e| e.on_broker(coordinator))?;
    let mut topics: Vec<AddPartitionsToTxnTopic> = Vec::new();
    for (t, p) in tps {
        match topics.iter_mut().find(|x| *x.name.0 == **t) {
            Some(x) => x.partitions.push(*p),
            None => topics.push(
                AddPartitionsToTxnTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t.to_string())))
                    .with_partitions(vec![*p]),
            ),
        }
    }
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(
            transactional_id.to_string(),
        )))
        .with_v3_and_below_producer_id(ProducerId(id.producer_id))
        .with_v3_and_below_producer_epoch(id.epoch)
        .with_v3_and_below_topics(topics);
    let resp = tokio::time::timeout(config.request_timeout, conn.send_at(req, version))
        .await
        .map_err(|_| {
            Error::with_message(ErrorKind::Timeout, "AddPartitionsToTxn timed out")
                .api(ApiKey::AddPartitionsToTxn)
                .on_broker(coordinator)
        })?
        .map_err(|e| e.api(ApiKey::AddPartitionsToTxn).on_broker(coordinator))?;
    if let Some(code) = KafkaCode::from_i16(resp.error_code) {
        return Err(Error::broker(code)
            .api(ApiKey::AddPartitionsToTxn)
            .on_broker(coordinator));
    }
    let mut first: Option<Error> = None;
    let mut seen = 0usize;
    for t in &resp.results_by_topic_v3_and_below {
        for p in &t.results_by_partition {
            seen += 1;
            if let Some(code) = KafkaCode::from_i16(p.partition_error_code) {
                let e = Error::broker(code)
                    .api(ApiKey::AddPartitionsToTxn)
                    .on_broker(coordinator)
                    .on_partition(t.name.0.to_string(), p.partition_index);
                // OPERATION_NOT_ATTEMPTED only says another partition failed.
                let replace = match &first {
                    None => true,
                    Some(f) => f.kafka_code() == Some(KafkaCode::OperationNotAttempted),
                };
                if replace {
                    first = Some(e);
                }
            }
        }
    }
    if let Some(e) = first {
        return Err(e);
    }
    if seen < tps.len() {
        return Err(Error::with_message(
            ErrorKind::UnexpectedResponse,
            "the AddPartitionsToTxn response does not name every partition",
        )
        .api(ApiKey::AddPartitionsToTxn)
        .on_broker(coordinator));
    }
    Ok(())
}

//! The transactional producer (KIP-98, KIP-447, KIP-360, KIP-654, KIP-1050).
//!
//! ```no_run
//! # async fn demo() -> rekafka::Result<()> {
//! use rekafka::Client;
//! use rekafka::producer::{ProducerConfig, Record};
//!
//! let client = Client::builder().bootstrap_servers(["127.0.0.1:9092"]).build().await?;
//! let config = ProducerConfig::default().with_transactional_id("orders-copier");
//! let producer = client.transactional_producer(config)?;
//! producer.init_transactions().await?; // fences older instances with the same id
//! producer.begin_transaction()?;
//! producer.send(Record::new("orders").with_value("v")).await?;
//! match producer.commit_transaction().await {
//!     Ok(()) => {}
//!     Err(e) if e.is_abortable() => producer.abort_transaction().await?,
//!     Err(e) => return Err(e), // fatal (fenced, ...): make a new producer
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! A [`TransactionalProducer`] wraps a [`Producer`] whose sender task knows it is
//! transactional (the non-transactional path is untouched):
//!
//! * the **sender task** registers each partition with the transaction (AddPartitionsToTxn,
//!   one request for every partition waiting, retried with back-off) before the partition's
//!   first batch is sent, marks batches transactional, and reports the first batch that fails
//!   (a produce error, a local delivery timeout) as the transaction's abortable error;
//! * the **transaction manager** (this module) runs the state machine of Java's
//!   `TransactionManager` ([`TransactionState`]) and the coordinator calls: InitProducerId,
//!   AddOffsetsToTxn, TxnOffsetCommit (to the group coordinator, with the consumer's
//!   generation, member id and instance id, KIP-447) and EndTxn. `init`, `commit` and `abort`
//!   run in a task of their own: a call that times out returns [`ErrorKind::Timeout`] and the
//!   same call made again waits for the same operation (its result is kept), so an EndTxn whose
//!   outcome is unknown is retried until confirmed and never reported as committed.
//!
//! Before EndTxn every batch of the transaction is completed: `commit` waits for all of them
//! (they are delivered, or the transaction becomes abortable), `abort` fails those not yet
//! sent with [`ErrorKind::TransactionAborted`] and waits for those in flight (KAFKA-12671).
//! When a batch's outcome stayed unknown, or the sequence has a gap (`UNKNOWN_PRODUCER_ID`,
//! `OUT_OF_ORDER_SEQUENCE_NUMBER`), the abort ends with an epoch bump (InitProducerId with the
//! current id and epoch, KIP-360), so a late write of the aborted transaction is fenced and
//! never lands in the next one.
//!
//! Errors (KIP-1050): retriable ones (`CONCURRENT_TRANSACTIONS`, coordinator moves and loads,
//! timeouts, lost connections) are retried inside the call; abortable ones put the
//! producer in [`TransactionState::AbortableError`]: `commit` fails with
//! [`ErrorKind::Abortable`] (the source is the first error), `abort` works and the producer is
//! usable again; fatal ones (`PRODUCER_FENCED`, `INVALID_PRODUCER_EPOCH` on a
//! transaction-control request, `TRANSACTIONAL_ID_AUTHORIZATION_FAILED`, unsupported
//! versions) make every later call fail with [`ErrorKind::Fatal`] whose source is the first.
//! A call not allowed in the current state fails with [`ErrorKind::InvalidState`].

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::{Cluster, CoordinatorType};
use crate::connection::RetryDelay;
use crate::consumer::Consumer;
use crate::error::{Error, ErrorKind, KafkaCode, Result};
use crate::producer::idempotence::ProducerIdAndEpoch;
use crate::producer::txn::TxnLink;
use crate::producer::{
    DeliveryFuture, ProduceError, Producer, ProducerConfig, ProducerMetrics, Record,
};
use crate::protocol::StrBytes;
use crate::protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use crate::protocol::messages::{
    AddOffsetsToTxnRequest, ApiKey, EndTxnRequest, GroupId, InitProducerIdRequest, ProducerId,
    TopicName, TransactionalId, TxnOffsetCommitRequest,
};

mod classify;
mod coordinator;
mod offsets;
use classify::*;

/// The state of a transactional producer, as Java's `TransactionManager` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionState {
    /// Created; [`init_transactions`](TransactionalProducer::init_transactions) not done yet.
    Uninitialized,
    /// `init_transactions` is running (or timed out and may be called again).
    Initializing,
    /// Ready to [`begin_transaction`](TransactionalProducer::begin_transaction).
    Ready,
    /// In a transaction.
    InTransaction,
    /// A commit is running (or timed out: call `commit_transaction` again).
    CommittingTransaction,
    /// An abort is running (or timed out: call `abort_transaction` again).
    AbortingTransaction,
    /// The transaction hit an abortable error: only `abort_transaction` is allowed.
    AbortableError,
    /// The producer hit a fatal error: every call fails; make a new producer.
    FatalError,
}

/// A consumer's group membership, sent with the offsets of a transaction (KIP-447) so that
/// the group coordinator refuses the offsets of a zombie (a member fenced by a rebalance).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerGroupMetadata {
    /// The group id.
    pub group_id: String,
    /// The generation of the group the consumer is a member of; -1 when unknown (the
    /// coordinator then checks nothing, as before KIP-447).
    pub generation_id: i32,
    /// The consumer's member id; empty when unknown.
    pub member_id: String,
    /// The consumer's static group instance id (`group.instance.id`), if any.
    pub group_instance_id: Option<String>,
}

impl ConsumerGroupMetadata {
    /// Metadata of group `group_id` with no membership (generation -1, no member id).
    pub fn new(group_id: impl Into<String>) -> ConsumerGroupMetadata {
        ConsumerGroupMetadata {
            group_id: group_id.into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
        }
    }

    /// The group metadata of `consumer`'s current membership (group id, generation, member id,
    /// instance id), as Java's `consumer.groupMetadata()`; `None` without a `group.id`.
    pub fn from_consumer(consumer: &Consumer) -> Option<ConsumerGroupMetadata> {
        let group_id = consumer.config().group_id.clone()?;
        let (member_id, generation_id) = consumer.group_metadata()?;
        Some(ConsumerGroupMetadata {
            group_id,
            generation_id,
            member_id,
            group_instance_id: consumer.config().group_instance_id.clone(),
        })
    }

    /// Sets the member id and generation (as [`Consumer::group_metadata`] returns them).
    ///
    pub fn with_member(mut self, member_id: impl Into<String>, generation_id: i32) -> Self {
        self.member_id = member_id.into();
        self.generation_id = generation_id;
        self
    }

    /// Sets the static group instance id.
    pub fn with_group_instance_id(mut self, id: Option<String>) -> Self {
        self.group_instance_id = id;
        self
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Init,
    Commit,
    Abort,
}

impl OpKind {
    fn name(self) -> &'static str {
        match self {
            OpKind::Init => "init_transactions",
            OpKind::Commit => "commit_transaction",
            OpKind::Abort => "abort_transaction",
        }
    }
}

struct PendingOp {
    kind: OpKind,
    task: JoinHandle<Result<()>>,
}

#[derive(Debug)]
struct Cell {
    state: TransactionState,
    id: Option<ProducerIdAndEpoch>,
    /// AddOffsetsToTxn succeeded in this transaction for these groups.
    offset_groups: HashSet<String>,
    /// AddOffsetsToTxn was sent in this transaction (its outcome may be unknown).
    offsets_maybe: bool,
}

struct Inner {
    producer: Producer,
    link: Arc<TxnLink>,
    cluster: Cluster,
    config: ProducerConfig,
    cell: Mutex<Cell>,
    /// `send` calls past their state check and not yet appended: commit and abort wait for
    /// them after leaving `InTransaction`, so no record joins a transaction that is ending.
    sends: AtomicUsize,
}

/// A transactional producer: records sent between
/// [`begin_transaction`](Self::begin_transaction) and
/// [`commit_transaction`](Self::commit_transaction) become visible to `read_committed`
/// consumers together, or (after [`abort_transaction`](Self::abort_transaction)) never.
///
/// See the [module documentation](self). Dropping it stops its tasks and fails records not
/// yet delivered with [`ErrorKind::Closed`].
///
/// Consume, transform, produce, exactly once (KIP-447): the output records and the input
/// offsets commit in one transaction, or neither does.
///
/// ```no_run
/// # async fn demo(client: rekafka::Client) -> rekafka::Result<()> {
/// use std::time::Duration;
/// use rekafka::consumer::{AutoCommit, IsolationLevel};
/// use rekafka::producer::{ProducerConfig, Record};
/// use rekafka::transaction::ConsumerGroupMetadata;
///
/// let consumer = client.consumer_with(|c| {
///     c.group_id = Some("enricher".into());
///     c.auto_commit = AutoCommit::Disabled;
///     c.isolation_level = IsolationLevel::ReadCommitted;
/// })?;
/// consumer.subscribe(["orders"])?;
/// let producer = client.transactional_producer(
///     ProducerConfig::default().with_transactional_id("enricher-1"),
/// )?;
/// producer.init_transactions().await?;
/// loop {
///     let records = consumer.poll(Duration::from_secs(1)).await?;
///     if records.is_empty() {
///         continue;
///     }
///     producer.begin_transaction()?;
///     let mut offsets = Vec::new();
///     for r in records.iter() {
///         let value = format!("enriched {:?}", r.value);
///         producer.send(Record::new("orders-enriched").with_value(value)).await?;
///         offsets.push((r.topic.clone(), r.partition, r.offset + 1));
///     }
///     let group = ConsumerGroupMetadata::from_consumer(&consumer).expect("a group.id is set");
///     producer.send_offsets_to_transaction(&offsets, &group).await?;
///     if let Err(e) = producer.commit_transaction().await {
///         if !e.is_abortable() {
///             return Err(e); // fenced or fatal: make a new producer
///         }
///         producer.abort_transaction().await?;
///         // Rewind to the last committed offsets and process those records again.
///         for (tp, committed) in consumer.committed(&consumer.assignment()).await? {
///             match committed {
///                 Some(o) => consumer.seek(&tp, o.offset)?,
///                 None => consumer.seek_to_beginning(&[tp])?,
///             }
///         }
///     }
/// }
/// # }
/// ```
pub struct TransactionalProducer {
    inner: Arc<Inner>,
    op: tokio::sync::Mutex<Option<PendingOp>>,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("transactional_id", &self.inner.link.transactional_id)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// What [`Client::close`](crate::Client::close) does with a transactional producer it made:
/// aborts an open transaction (bounded by the producer's `max.block.ms`, as
/// [`abort_transaction`](TransactionalProducer::abort_transaction) is), so its records are
/// never read by a read_committed consumer and the `transactional.id` is free at once, then
/// [`close`](TransactionalProducer::close).
impl crate::task::Closeable for Inner {
    fn close_now(self: Arc<Self>) -> crate::task::CloseFuture {
        Box::pin(async move {
            let producer = TransactionalProducer {
                inner: self,
                op: tokio::sync::Mutex::new(None),
            };
            if matches!(
                producer.state(),
                TransactionState::InTransaction | TransactionState::AbortableError
            ) {
                if let Err(e) = producer.abort_transaction().await {
                    tracing::debug!(error = %e, "client close: aborting an open transaction failed");
                }
            }
            producer.close().await;
        })
    }
}

impl Drop for TransactionalProducer {
    fn drop(&mut self) {
        if let Some(p) = self.op.get_mut().take() {
            p.task.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn invalid_state(msg: impl Into<String>) -> Error {
    Error::with_message(ErrorKind::InvalidState, msg)
}

impl TransactionalProducer {
    /// A transactional producer on `cluster`. `config.transactional_id` must be set (and
    /// idempotence on, the default). Call [`init_transactions`](Self::init_transactions) before
    /// anything else. Must be called inside a tokio runtime.
    pub fn new(cluster: Cluster, config: ProducerConfig) -> Result<TransactionalProducer> {
        config.validate()?;
        let Some(id) = config.transactional_id.clone() else {
            return Err(Error::config(
                "a TransactionalProducer needs transactional.id (ProducerConfig::transactional_id)",
            ));
        };
        if id.is_empty() {
            return Err(Error::config("transactional.id must not be empty"));
        }
        let link = Arc::new(TxnLink::new(&id));
        let producer = Producer::new_transactional(cluster.clone(), config.clone(), link.clone());
        Ok(TransactionalProducer {
            inner: Arc::new(Inner {
                producer,
                link,
                cluster,
                config,
                cell: Mutex::new(Cell {
                    state: TransactionState::Uninitialized,
                    id: None,
                    offset_groups: HashSet::new(),
                    offsets_maybe: false,
                }),
                sends: AtomicUsize::new(0),
            }),
            op: tokio::sync::Mutex::new(None),
        })
    }

    /// A new producer on the same cluster with the same settings (so the same
    /// `transactional.id`), not initialized yet: what replaces a fenced producer. Its
    /// [`init_transactions`](Self::init_transactions) bumps the epoch, which fences this one.
    pub fn renewed(&self) -> Result<TransactionalProducer> {
        TransactionalProducer::new(self.inner.cluster.clone(), self.inner.config.clone())
    }

    /// Registers the producer with the client that made it, for
    /// [`Client::close`](crate::Client::close) (which aborts an open transaction, then closes).
    pub(crate) fn set_close_link(&self, link: crate::task::CloseLink) {
        link.register(crate::task::CloseStage::Transactional, &self.inner);
    }

    /// The transactional id.
    pub fn transactional_id(&self) -> &str {
        &self.inner.link.transactional_id
    }

    /// The settings.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// The current state.
    pub fn state(&self) -> TransactionState {
        self.inner.state()
    }

    /// The producer id and epoch in use (`None` before `init_transactions`).
    pub fn producer_id_and_epoch(&self) -> Option<(i64, i16)> {
        lock(&self.inner.cell)
            .id
            .map(|id| (id.producer_id, id.epoch))
    }

    /// A snapshot of the producer's metrics.
    pub fn metrics(&self) -> ProducerMetrics {
        self.inner.producer.metrics()
    }

    /// The fatal error that stopped the producer, if any.
    pub fn fatal_error(&self) -> Option<Error> {
        self.inner.producer.fatal_error()
    }

    /// Finds the transaction coordinator and obtains a producer id and epoch for the
    /// transactional id (InitProducerId), which fences every older producer with the same id
    /// and aborts its open transaction. Retriable errors (`CONCURRENT_TRANSACTIONS`,
    /// coordinator moves and loads) are retried inside the call; waits up to `max_block`
    /// ([`ErrorKind::Timeout`]: call it again to keep waiting for the same operation).
    pub async fn init_transactions(&self) -> Result<()> {
        self.init_transactions_within(self.inner.config.max_block)
            .await
    }

    /// [`init_transactions`](Self::init_transactions), waiting at most `timeout`.
    pub async fn init_transactions_within(&self, timeout: Duration) -> Result<()> {
        self.run_op(OpKind::Init, timeout).await
    }

    /// Starts a transaction (local only: the coordinator learns of it with the first record or
    /// offsets). Fails with [`ErrorKind::InvalidState`] unless the producer is
    /// [`Ready`](TransactionState::Ready).
    pub fn begin_transaction(&self) -> Result<()> {
        if let Ok(mut slot) = self.op.try_lock() {
            // A commit or abort that ended after its caller stopped waiting.
            self.clear_finished(&mut slot);
        }
        self.inner.check_fatal()?;
        let mut cell = lock(&self.inner.cell);
        match cell.state {
            TransactionState::Ready => {
                cell.state = TransactionState::InTransaction;
                Ok(())
            }
            s => Err(invalid_state(format!(
                "begin_transaction is not allowed in state {s:?}"
            ))),
        }
    }

    /// Sends a record in the current transaction: as [`Producer::send`], and its partition is
    /// registered with the transaction before its batch is sent. Outside a transaction it
    /// fails with [`ErrorKind::InvalidState`]; after an abortable error with
    /// [`ErrorKind::Abortable`]; after a fatal one with [`ErrorKind::Fatal`]. A record refused
    /// here (no buffer room within `max_block`, too large, ...) makes the transaction
    /// abortable, so that a commit cannot silently leave it out.
    pub async fn send(&self, record: Record) -> std::result::Result<DeliveryFuture, ProduceError> {
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.inner.sends.fetch_add(1, Ordering::SeqCst);
        let _counted = Counted(&self.inner.sends);
        if let Err(e) = self.inner.check_in_transaction("send") {
            return Err(ProduceError::not_persisted(e));
        }
        let result = self.inner.producer.send(record).await;
        if let Err(e) = &result
            && !matches!(e.error.kind(), ErrorKind::Fatal | ErrorKind::Closed)
        {
            // As Java: a record the transaction could not take (no buffer room within
            // max.block, too large, ...) makes it abortable, so the commit cannot silently
            // leave it out.
            self.inner.link.set_error(e.error.clone());
        }
        result
    }

    /// Adds consumed offsets to the transaction (AddOffsetsToTxn to the transaction
    /// coordinator, then TxnOffsetCommit to the group's coordinator with the group metadata,
    /// KIP-447): they are committed for the group if and only if the transaction commits.
    /// `offsets` are `(topic, partition, next offset to consume)`. Retriable errors are retried
    /// up to `max_block`; a zombie member's offsets (`ILLEGAL_GENERATION`,
    /// `UNKNOWN_MEMBER_ID`, `FENCED_INSTANCE_ID`) make the transaction abortable.
    pub async fn send_offsets_to_transaction<T: AsRef<str>>(
        &self,
        offsets: &[(T, i32, i64)],
        group: &ConsumerGroupMetadata,
    ) -> Result<()> {
        let mut _guard = self.op.try_lock().map_err(|_| {
            invalid_state("another transactional call is in progress on this producer")
        })?;
        self.clear_finished(&mut _guard);
        if let Some(p) = _guard.as_ref() {
            return Err(invalid_state(format!(
                "{} is pending; call it again to complete it",
                p.kind.name()
            )));
        }
        self.inner
            .check_in_transaction("send_offsets_to_transaction")?;
        let deadline = Instant::now() + self.inner.config.max_block;
        let offsets: Vec<(String, i32, i64)> = offsets
            .iter()
            .map(|(t, p, o)| (t.as_ref().to_string(), *p, *o))
            .collect();
        let result = self.inner.send_offsets(&offsets, group, deadline).await;
        if let Err(e) = &result {
            self.inner.note_error(e);
        }
        result
    }

    /// Commits the transaction: waits for every record of it to be delivered (KAFKA-12671),
    /// then EndTxn(commit). Fails with [`ErrorKind::Abortable`] if any record of the
    /// transaction failed (a local delivery timeout too) or the coordinator answered an
    /// abortable error; abort then. Waits up to `max_block`: on [`ErrorKind::Timeout`] the
    /// commit goes on, and calling `commit_transaction` again waits for the same commit (as
    /// Java's `KafkaProducer` resumes it). An `abort_transaction` meanwhile first completes the
    /// pending commit: it aborts if the commit failed, and fails with
    /// [`ErrorKind::InvalidState`] if the commit succeeded. Once the pending commit has ended,
    /// the next call of any kind proceeds (its outcome is in [`state`](Self::state)). An EndTxn
    /// without a definite answer is resent until it is confirmed; it is never reported as
    /// committed.
    pub async fn commit_transaction(&self) -> Result<()> {
        self.commit_transaction_within(self.inner.config.max_block)
            .await
    }

    /// [`commit_transaction`](Self::commit_transaction), waiting at most `timeout`.
    pub async fn commit_transaction_within(&self, timeout: Duration) -> Result<()> {
        self.run_op(OpKind::Commit, timeout).await
    }

    /// Aborts the transaction: records not yet sent fail with
    /// [`ErrorKind::TransactionAborted`] (KIP-654), records in flight are waited for, then
    /// EndTxn(abort); the epoch is bumped when a record's outcome stayed unknown. Allowed in a
    /// transaction and after an abortable error; afterwards the producer is
    /// [`Ready`](TransactionState::Ready). Resumable like
    /// [`commit_transaction`](Self::commit_transaction).
    pub async fn abort_transaction(&self) -> Result<()> {
        self.abort_transaction_within(self.inner.config.max_block)
            .await
    }

    /// [`abort_transaction`](Self::abort_transaction), waiting at most `timeout`.
    pub async fn abort_transaction_within(&self, timeout: Duration) -> Result<()> {
        self.run_op(OpKind::Abort, timeout).await
    }

    /// Waits until every record sent so far is delivered or failed (does not end the
    /// transaction).
    pub async fn flush(&self) {
        self.inner.producer.flush().await;
    }

    /// Stops the producer: a pending operation is cancelled, buffered records are delivered
    /// as by [`Producer::close`] (an open transaction is not committed; the coordinator
    /// aborts it after `transaction.timeout`, or the next instance's `init_transactions`
    /// does).
    pub async fn close(&self) {
        if let Some(p) = self.op.lock().await.take() {
            p.task.abort();
        }
        self.inner.producer.close().await;
    }

    /// Drops a pending operation that ended after its caller gave up waiting, as Java drops an
    /// acknowledged pending result: the operation's outcome is in the state already (a failure
    /// was noted by its task), so it no longer holds up other calls. A task that ended
    /// abnormally makes the producer fatal.
    fn clear_finished(&self, slot: &mut Option<PendingOp>) {
        let Some(p) = slot.as_mut() else {
            return;
        };
        if !p.task.is_finished() {
            return;
        }
        let kind = p.kind;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let joined = std::pin::Pin::new(&mut p.task).poll(&mut cx);
        *slot = None;
        match joined {
            std::task::Poll::Ready(Ok(Ok(()))) => {
                tracing::debug!("{} completed after its caller stopped waiting", kind.name());
            }
            std::task::Poll::Ready(Ok(Err(e))) => {
                tracing::debug!(error = %e, "{} failed after its caller stopped waiting", kind.name());
            }
            std::task::Poll::Ready(Err(e)) => {
                self.inner.producer.set_fatal(Error::with_message(
                    ErrorKind::Fatal,
                    format!("the {} task ended abnormally: {e}", kind.name()),
                ));
            }
            std::task::Poll::Pending => {}
        }
    }

    /// Waits up to `timeout` for a pending commit (for an abort asked for meanwhile). Ok when
    /// the commit failed and the transaction can be aborted; an error when it is still
    /// pending ([`ErrorKind::Timeout`]), committed ([`ErrorKind::InvalidState`]: nothing to
    /// abort) or the producer is fatally broken.
    async fn complete_pending_commit(
        &self,
        slot: &mut Option<PendingOp>,
        timeout: Duration,
    ) -> Result<()> {
        let Some(pending) = slot.as_mut() else {
            return Ok(());
        };
        let joined = match tokio::time::timeout(timeout, &mut pending.task).await {
            Err(_) => {
                return Err(Error::with_message(
                    ErrorKind::Timeout,
                    format!(
                        "abort_transaction waited {timeout:?} for the pending commit_transaction,                          which goes on: call either again"
                    ),
                ));
            }
            Ok(joined) => joined,
        };
        *slot = None;
        match joined {
            Ok(Ok(())) => Err(invalid_state(
                "the pending commit_transaction completed: the transaction is committed and                  cannot be aborted",
            )),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "the pending commit failed; aborting");
                self.inner.check_fatal()
            }
            Err(e) => {
                let err = Error::with_message(
                    ErrorKind::Fatal,
                    format!("the commit_transaction task ended abnormally: {e}"),
                );
                self.inner.producer.set_fatal(err.clone());
                Err(err)
            }
        }
    }

    async fn run_op(&self, kind: OpKind, timeout: Duration) -> Result<()> {
        let mut slot = self.op.try_lock().map_err(|_| {
            invalid_state("another transactional call is in progress on this producer")
        })?;
        self.clear_finished(&mut slot);
        if kind == OpKind::Abort && slot.as_ref().is_some_and(|p| p.kind == OpKind::Commit) {
            // An abort after a commit that timed out: the commit's EndTxn may already be
            // decided, so it is completed first, never raced. A commit that failed is aborted;
            // one that succeeded cannot be.
            self.complete_pending_commit(&mut slot, timeout).await?;
        }
        match slot.as_ref() {
            Some(p) if p.kind != kind => {
                return Err(invalid_state(format!(
                    "{} is pending (it timed out earlier); call it again to complete it",
                    p.kind.name()
                )));
            }
            Some(_) => {} // Resume the same operation.
            None => {
                self.inner.check_fatal()?;
                self.inner.start(kind)?;
                let inner = self.inner.clone();
                let span = tracing::debug_span!("kafka.transaction", op = kind.name());
                let task = tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        let result = match kind {
                            OpKind::Init => inner.init_task().await,
                            OpKind::Commit => inner.commit_task().await,
                            OpKind::Abort => inner.abort_task().await,
                        };
                        if let Err(e) = &result {
                            inner.note_error(e);
                        }
                        result
                    },
                    span,
                ));
                *slot = Some(PendingOp { kind, task });
            }
        }
        let Some(pending) = slot.as_mut() else {
            return Err(invalid_state("no pending operation"));
        };
        match tokio::time::timeout(timeout, &mut pending.task).await {
            Err(_) => Err(Error::with_message(
                ErrorKind::Timeout,
                format!(
                    "{} did not finish within {timeout:?}; it goes on: call it again to wait \
                     for it",
                    kind.name()
                ),
            )),
            Ok(joined) => {
                *slot = None;
                match joined {
                    Ok(r) => r,
                    Err(e) => {
                        let err = Error::with_message(
                            ErrorKind::Fatal,
                            format!("the {} task ended abnormally: {e}", kind.name()),
                        );
                        self.inner.producer.set_fatal(err.clone());
                        Err(err)
                    }
                }
            }
        }
    }
}

impl Inner {
    fn state(&self) -> TransactionState {
        if self.producer.fatal_error().is_some() {
            return TransactionState::FatalError;
        }
        let s = lock(&self.cell).state;
        if s == TransactionState::InTransaction && self.link.lock().error.is_some() {
            return TransactionState::AbortableError;
        }
        s
    }

    fn check_fatal(&self) -> Result<()> {
        match self.producer.fatal_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn check_in_transaction(&self, call: &str) -> Result<()> {
        self.check_fatal()?;
        match self.state() {
            TransactionState::InTransaction => Ok(()),
            TransactionState::AbortableError => {
                let st = self.link.lock();
                Err(match &st.error {
                    Some(e) => abortable(e),
                    None => {
                        Error::with_message(ErrorKind::Abortable, "the transaction must be aborted")
                    }
                })
            }
            s => Err(invalid_state(format!(
                "{call} is not allowed in state {s:?}"
            ))),
        }
    }

    /// Records a failed call's error: fatal ones stop the producer, abortable ones doom the
    /// transaction.
    fn note_error(&self, e: &Error) {
        match e.kind() {
            ErrorKind::Fatal => {
                if let Some(src) = std::error::Error::source(e)
                    && let Some(inner) = src.downcast_ref::<Error>()
                {
                    self.producer.set_fatal(inner.clone());
                } else {
                    self.producer.set_fatal(e.clone());
                }
            }
            ErrorKind::Abortable => {
                let cause = std::error::Error::source(e)
                    .and_then(|s| s.downcast_ref::<Error>())
                    .cloned()
                    .unwrap_or_else(|| e.clone());
                self.link.set_error(cause);
                self.producer.wake_sender();
            }
            _ => {}
        }
    }

    /// Checks the transition for `kind` and makes it.
    fn start(&self, kind: OpKind) -> Result<()> {
        let state = self.state();
        let mut cell = lock(&self.cell);
        let next = match (kind, state) {
            (OpKind::Init, TransactionState::Uninitialized) => TransactionState::Initializing,
            (OpKind::Commit, TransactionState::InTransaction) => {
                TransactionState::CommittingTransaction
            }
            (OpKind::Commit, TransactionState::AbortableError) => {
                let st = self.link.lock();
                return Err(match &st.error {
                    Some(e) => abortable(e),
                    None => Error::with_message(ErrorKind::Abortable, "abort the transaction"),
                });
            }
            // An abort that failed (not timed out: that one is resumed) may be tried again.
            (
                OpKind::Abort,
                TransactionState::InTransaction
                | TransactionState::AbortableError
                | TransactionState::AbortingTransaction,
            ) => TransactionState::AbortingTransaction,
            (k, s) => {
                return Err(invalid_state(format!(
                    "{} is not allowed in state {s:?}",
                    k.name()
                )));
            }
        };
        cell.state = next;
        Ok(())
    }

    fn set_state(&self, s: TransactionState) {
        lock(&self.cell).state = s;
    }
}

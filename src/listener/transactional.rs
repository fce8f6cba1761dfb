//! Dead letters inside the container's transaction (exactly-once mode).

use std::future::Future;
use std::sync::Arc;

use super::classify::HandlerError;
use super::consumer::ListenerRecord;
use super::dead_letter_publisher::DeadLetterPublisher;
use super::handler::{RecoverFuture, Recoverer, SharedError};
use crate::transaction::TransactionalProducer;

/// A recoverer for the exactly-once container
/// ([`ContainerBuilder::transactional`](super::ContainerBuilder::transactional)): it writes the
/// dead letter (destination, record and Spring headers from a [`DeadLetterPublisher`]) through
/// the container's transactional producer, so the dead letter commits in the same transaction
/// as the failed record's offset — atomically, or not at all. A failed send is a recovery
/// failure (the transaction aborts; the record comes again).
///
/// It follows the layout's rules as [`DeadLetterPublisher`] does: no destination is a skip or a
/// recovery failure per its [`MissingDestination`](super::MissingDestination), and a destination
/// partition the dead-letter topic does not have (it has fewer partitions than the source) is
/// left to the partitioner per its [`PartitionVerification`](super::PartitionVerification).
///
/// Inside the container it sends through the producer of the container's current
/// transaction — after [`OnFenced::Continue`](super::OnFenced::Continue) replaced a fenced
/// producer, the new one; the producer given to [`new`](Self::new) is used only outside the
/// container.
///
/// ```no_run
/// # async fn demo(cluster: rekafka::cluster::Cluster, producer: std::sync::Arc<rekafka::transaction::TransactionalProducer>) -> rekafka::Result<()> {
/// use rekafka::listener::{DeadLetterPublisher, DefaultErrorHandler, ListenerConsumerRecord, TransactionalDeadLetters};
///
/// let layout = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster).group("billing").build().await?;
/// let handler = DefaultErrorHandler::new().recoverer(TransactionalDeadLetters::new(layout, producer));
/// # let _ = handler; Ok(()) }
/// ```
pub struct TransactionalDeadLetters<R> {
    layout: DeadLetterPublisher<R>,
    producer: Arc<TransactionalProducer>,
}

impl<R> std::fmt::Debug for TransactionalDeadLetters<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalDeadLetters")
            .field("producer", &self.producer)
            .finish_non_exhaustive()
    }
}

impl<R: ListenerRecord> TransactionalDeadLetters<R> {
    /// Dead letters laid out by `layout` (destination, headers, group), sent through
    /// `producer` (the container's).
    pub fn new(layout: DeadLetterPublisher<R>, producer: Arc<TransactionalProducer>) -> Self {
        TransactionalDeadLetters { layout, producer }
    }
}

tokio::task_local! {
    /// The producer of the container's open transaction, while the container runs a recoverer.
    static CONTAINER_PRODUCER: Arc<TransactionalProducer>;
}

/// Runs `recovery` with `producer` as the producer of the container's open transaction (what
/// [`TransactionalDeadLetters`] sends through).
pub(crate) async fn in_transaction_of<F: Future>(
    producer: Arc<TransactionalProducer>,
    recovery: F,
) -> F::Output {
    CONTAINER_PRODUCER.scope(producer, recovery).await
}

impl<R: ListenerRecord> Recoverer<R> for TransactionalDeadLetters<R> {
    fn recover<'a>(&'a self, record: &'a R, error: &'a SharedError) -> RecoverFuture<'a> {
        Box::pin(async move {
            let Some(out) = self
                .layout
                .prepare(record, error)
                .await
                .map_err(|e| Box::new(e) as HandlerError)?
            else {
                return Ok(());
            };
            let producer = CONTAINER_PRODUCER
                .try_with(Arc::clone)
                .unwrap_or_else(|_| self.producer.clone());
            let delivery = producer
                .send(out)
                .await
                .map_err(|e| Box::new(e.error) as HandlerError)?;
            delivery
                .await
                .map_err(|e| Box::new(e.error) as HandlerError)?;
            Ok(())
        })
    }
}

//! Dead letters inside the container's transaction (exactly-once mode).

use std::sync::Arc;

use super::classify::HandlerError;
use super::consumer::ListenerRecord;
use super::dead_letter_publisher::DeadLetterPublisher;
use super::handler::{BoxFuture, Recoverer, SharedError};
use crate::transaction::TransactionalProducer;

/// A recoverer for the exactly-once container
/// ([`ContainerBuilder::transactional`](super::ContainerBuilder::transactional)): it writes the
/// dead letter (destination, record and Spring headers from a [`DeadLetterPublisher`]) through
/// the container's transactional producer, so the dead letter commits in the same transaction
/// as the failed record's offset — atomically, or not at all. A failed send is a recovery
/// failure (the transaction aborts; the record comes again).
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

impl<R: ListenerRecord> Recoverer<R> for TransactionalDeadLetters<R> {
    fn recover<'a>(
        &'a self,
        record: &'a R,
        error: &'a SharedError,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            let Some(destination) = self.layout.destination(record, error) else {
                tracing::warn!(
                    topic = record.topic(),
                    partition = record.partition(),
                    offset = record.offset(),
                    "no dead-letter destination; record skipped"
                );
                return Ok(());
            };
            let out = self.layout.dead_letter(record, error, &destination);
            let delivery = self
                .producer
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

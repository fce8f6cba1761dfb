//! `RecordStream`: the consumer as a `futures::Stream` of records.

use super::*;

/// One record at a time from a [`Consumer`]; see [`Consumer::stream`]. Implements
/// `futures_core::Stream<Item = Result<ConsumerRecord>>` (the stream ends when the consumer is
/// closed), and has an inherent [`next_record`](RecordStream::next_record).
pub struct RecordStream<'a> {
    pub(super) consumer: &'a Consumer,
    pub(super) pending: std::collections::VecDeque<ConsumerRecord>,
    pub(super) errors: std::collections::VecDeque<Error>,
    pub(super) in_flight: Option<BoxFuture<'a, Result<ConsumerRecords>>>,
}

impl std::fmt::Debug for RecordStream<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStream")
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl RecordStream<'_> {
    /// The next record, polling as long as it takes. A partition error is returned as `Err`
    /// (the stream can go on afterwards: other partitions keep flowing); a closed consumer is
    /// an [`ErrorKind::Closed`] error.
    ///
    /// Named so as not to shadow `StreamExt::next`: with `futures::StreamExt` in scope,
    /// `while let Some(r) = stream.next().await` works too (it ends when the consumer is
    /// closed).
    pub async fn next_record(&mut self) -> Result<ConsumerRecord> {
        std::future::poll_fn(|cx| futures_core::Stream::poll_next(Pin::new(&mut *self), cx))
            .await
            .unwrap_or_else(|| Err(closed()))
    }
}

impl Drop for RecordStream<'_> {
    /// Records the stream took from the consumer but did not hand out are given back: each
    /// partition with such records is sought to the first of them, so the next `poll` (or
    /// stream) returns them and no commit moves past them.
    fn drop(&mut self) {
        let mut first: Vec<(TopicPartition, i64)> = Vec::new();
        for r in &self.pending {
            if !first
                .iter()
                .any(|(tp, _)| tp.partition == r.partition && *tp.topic == *r.topic)
            {
                first.push((r.topic_partition(), r.offset));
            }
        }
        for (tp, offset) in first {
            // A partition revoked meanwhile is no longer ours to seek.
            if let Err(e) = self.consumer.seek(&tp, offset) {
                tracing::debug!(%tp, offset, error = %e, "undelivered records not given back");
            }
        }
    }
}

impl futures_core::Stream for RecordStream<'_> {
    type Item = Result<ConsumerRecord>;

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<ConsumerRecord>>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if let Some(e) = this.errors.pop_front() {
                return Poll::Ready(Some(Err(e)));
            }
            if let Some(r) = this.pending.pop_front() {
                return Poll::Ready(Some(Ok(r)));
            }
            let consumer = this.consumer;
            let fut = this
                .in_flight
                .get_or_insert_with(|| Box::pin(consumer.poll(Duration::from_secs(1))));
            match fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    this.in_flight = None;
                    match result {
                        Err(e) if e.kind() == &ErrorKind::Closed => return Poll::Ready(None),
                        Err(e) => return Poll::Ready(Some(Err(e))),
                        Ok(recs) => {
                            this.errors.extend(
                                recs.errors
                                    .into_iter()
                                    .map(|(tp, e)| e.on_partition(tp.topic(), tp.partition)),
                            );
                            this.pending
                                .extend(recs.parts.into_iter().flat_map(|(_, r)| r));
                        }
                    }
                }
            }
        }
    }
}

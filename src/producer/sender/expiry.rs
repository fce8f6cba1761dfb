//! `delivery.timeout`: failing queued batches, and requests in flight, that ran out of time.

use super::*;

impl Sender {
    /// Fails queued batches older than `delivery.timeout`.
    pub(super) fn expire(&mut self, now: Instant) -> Option<Instant> {
        let timeout = self.sh.config.delivery_timeout;
        let mut expired = Vec::new();
        let mut next = None;
        for (tp, part) in self.parts.iter_mut() {
            while let Some(front) = part.queue.front() {
                let due = front.created + timeout;
                if due <= now {
                    if let Some(b) = part.queue.pop_front() {
                        expired.push((tp.clone(), b));
                    }
                } else {
                    next = min_instant(next, due);
                    break;
                }
            }
        }
        for (tp, b) in expired {
            let persistence = if b.ambiguous {
                Persistence::PossiblyPersisted
            } else {
                Persistence::NotPersisted
            };
            let e = self.timeout_error(&tp, b.last_error.as_ref());
            self.fail(&tp, b, e, persistence);
        }
        next
    }

    pub(super) fn timeout_error(&self, tp: &Tp, last: Option<&Error>) -> Error {
        let timeout = self.sh.config.delivery_timeout;
        let mut e = Error::with_message(
            ErrorKind::Timeout,
            format!(
                "not delivered within delivery.timeout ({timeout:?}){}",
                last.map(|e| format!("; last error: {e}"))
                    .unwrap_or_default()
            ),
        )
        .api(ApiKey::Produce)
        .on_partition(tp.0.to_string(), tp.1);
        if let Some(l) = last {
            e = e.with_source(l.clone());
        }
        e
    }

    /// Fails the records of in-flight batches older than `delivery.timeout` as possibly
    /// persisted (as Java expires in-flight batches), without waiting for the response.
    pub(super) fn expire_in_flight(&mut self, now: Instant) -> Option<Instant> {
        let timeout = self.sh.config.delivery_timeout;
        let mut next = None;
        let mut due_now = Vec::new();
        for (id, req) in &self.requests {
            for (i, (_, b)) in req.batches.iter().enumerate() {
                if b.expired {
                    continue;
                }
                let due = b.created + timeout;
                if due <= now {
                    due_now.push((*id, i));
                } else {
                    next = min_instant(next, due);
                }
            }
        }
        for (id, i) in due_now {
            let Some((tp, last)) = self
                .requests
                .get(&id)
                .and_then(|r| r.batches.get(i))
                .map(|(tp, b)| (tp.clone(), b.last_error.clone()))
            else {
                continue;
            };
            let e = self.timeout_error(&tp, last.as_ref());
            let Some((_, b)) = self
                .requests
                .get_mut(&id)
                .and_then(|r| r.batches.get_mut(i))
            else {
                continue;
            };
            b.expired = true;
            if let Some(link) = &self.sh.txn {
                link.lock().bump_needed = true;
                link.set_error(e.clone());
            }
            let records = u64::from(b.records);
            self.sh.counters.failed(records);
            if let Some(cb) = &self.sh.circuit {
                cb.record(true, records);
            }
            b.complete(BatchOutcome::Failed(ProduceError::new(
                e,
                Persistence::PossiblyPersisted,
            )));
        }
        next
    }
}

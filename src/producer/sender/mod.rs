//! The sender task: collects ready batches, numbers them, sends them per leader, and handles
//! the responses (success, retry, failure, fatal).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use crate::task::StopListener;
use bytes::Bytes;
use tokio::time::Instant;
use tracing::Instrument;

use super::accumulator::{BatchOutcome, BatchShared, OpenBatch, PartitionQueue, lock};
use super::config::Acks;
use super::idempotence::{IdempotentState, ProducerIdAndEpoch, init_producer_id};
use super::record::{Persistence, ProduceError};
use super::{REQUEST_OVERHEAD, Shared};
use crate::cluster::{Recovery, recovery_for};
use crate::connection::RetryDelay;
use crate::error::{Error, ErrorKind, KafkaCode, Result};
use crate::protocol::StrBytes;
use crate::protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use crate::protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use crate::protocol::record::{BatchBuilder, NO_SEQUENCE, set_producer};

mod drain;
mod expiry;
mod growth;
mod response;

type Tp = (Arc<str>, i32);
type ResponseFuture = Pin<Box<dyn Future<Output = Result<Option<ProduceResponse>>> + Send>>;

/// A sealed batch's share of `buffer.memory`. Dropping it gives the permits back and counts
/// the batch as done (waking `flush` when it was the last), so the memory returns on every
/// path a batch leaves the sender by: delivered, failed, expired, or dropped at shutdown.
struct Reservation {
    sh: Arc<Shared>,
    permits: u32,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.sh.batch_done(self.permits);
    }
}

/// A batch owned by the sender.
struct SBatch {
    shared: Arc<BatchShared>,
    /// Batches queued behind this one and merged into it before its first send (see
    /// `Sender::merge_queued`), in order: their records follow this batch's own.
    absorbed: Vec<Absorbed>,
    /// Until the first send.
    builder: Option<BatchBuilder>,
    /// From the first send on (kept for retries).
    bytes: Option<Bytes>,
    /// Creation order within the producer: retried batches go back in this order.
    order: u64,
    records: u32,
    uncompressed: usize,
    created: Instant,
    /// Its share of `buffer.memory`, given back when the batch is dropped.
    _memory: Reservation,
    /// The base sequence; [`NO_SEQUENCE`] until numbered.
    base_seq: i32,
    /// The producer id it was numbered for (idempotence).
    producer_id: i64,
    /// Some attempt ended without a definite answer: the batch may be written.
    ambiguous: bool,
    last_error: Option<Error>,
    /// Its records were failed at `delivery.timeout` while a request carrying it was still in
    /// flight; the response only settles the bookkeeping.
    expired: bool,
    /// Retries after definite failures (ambiguous ones do not count).
    retries: u32,
}

/// A batch merged into another before either was sent: its records' completion slot, where
/// they start in the merged batch, and its share of `buffer.memory` (given back, and counted
/// done for `flush`, with the merged batch).
struct Absorbed {
    shared: Arc<BatchShared>,
    /// The merged batch's record index of this batch's first record.
    first: u32,
    _memory: Reservation,
}

impl SBatch {
    /// Settles every record of the batch: its own and those of the batches merged into it
    /// (whose offsets start further on in the merged batch).
    fn complete(&self, outcome: BatchOutcome) {
        for a in &self.absorbed {
            let shifted = match &outcome {
                BatchOutcome::Delivered {
                    base_offset,
                    log_append_time,
                } if *base_offset >= 0 => BatchOutcome::Delivered {
                    base_offset: base_offset + i64::from(a.first),
                    log_append_time: *log_append_time,
                },
                other => other.clone(),
            };
            a.shared.complete(shifted);
        }
        self.shared.complete(outcome);
    }
}

struct SPart {
    queue: VecDeque<SBatch>,
    /// Orders of this partition's batches in flight.
    in_flight: Vec<u64>,
    /// A batch failed and is being retried: send one batch at a time until a success.
    retrying: bool,
    backoff: RetryDelay,
    retry_at: Option<Instant>,
    leader: Option<i32>,
}

struct InFlightReq {
    broker: i32,
    batches: Vec<(Tp, SBatch)>,
    started: Instant,
}

struct Sender {
    sh: Arc<Shared>,
    parts: HashMap<Tp, SPart>,
    requests: HashMap<u64, InFlightReq>,
    /// Response futures, polled in the order they were created so that requests to one broker
    /// reach its connection in order.
    futures: Vec<(u64, ResponseFuture)>,
    broker_in_flight: HashMap<i32, usize>,
    /// Each broker's estimated delivery rate: how far batches to it may grow (`growth`).
    rates: HashMap<i32, growth::DeliveryRate>,
    idem: Option<IdempotentState>,
    next_id: u64,
    next_order: u64,
    meta_seen: u64,
    meta_dirty: Arc<AtomicBool>,
    refreshing: Arc<AtomicBool>,
    bump_retry_at: Option<Instant>,
    bump_backoff: RetryDelay,
    /// Where the next drain round starts among the partitions, so that a request that cannot
    /// take every partition (`max.request.size`) does not favour the same ones each time.
    drain_start: usize,
    /// The AddPartitionsToTxn task of a transactional producer, aborted at shutdown.
    add_task: Option<tokio::task::JoinHandle<()>>,
}

pub(crate) async fn run(
    sh: Arc<Shared>,
    mut shutdown: StopListener,
    pid: Option<ProducerIdAndEpoch>,
) {
    let mut s = Sender {
        bump_backoff: RetryDelay::new(sh.config.retry_backoff, sh.config.retry_backoff_max),
        sh,
        parts: HashMap::new(),
        requests: HashMap::new(),
        futures: Vec::new(),
        broker_in_flight: HashMap::new(),
        rates: HashMap::new(),
        idem: pid.map(IdempotentState::new),
        next_id: 0,
        next_order: 0,
        meta_seen: u64::MAX,
        meta_dirty: Arc::new(AtomicBool::new(true)),
        refreshing: Arc::new(AtomicBool::new(false)),
        bump_retry_at: None,
        drain_start: 0,
        add_task: None,
    };
    loop {
        if shutdown.is_stopped() {
            s.shut_down();
            return;
        }
        let next = s.run_once().await;
        let sh = s.sh.clone();
        let wake = sh.wake.notified();
        let far = Instant::now() + Duration::from_secs(3600);
        let futures = &mut s.futures;
        let done = tokio::select! {
            biased;
            _ = shutdown.stopped() => None,
            out = poll_in_order(futures) => Some(out),
            _ = wake => None,
            _ = tokio::time::sleep_until(next.unwrap_or(far)) => None,
        };
        if let Some((id, result)) = done {
            s.handle(id, result);
        }
    }
}

impl Drop for Sender {
    /// The task ended without `shut_down` (the runtime shut down, or a bug panicked it): fail
    /// every record still held rather than leave its future pending forever.
    fn drop(&mut self) {
        if !self.sh.stopped.load(Ordering::Acquire) {
            self.shut_down();
        }
    }
}

/// Polls every future in creation order; resolves with the first that is ready.
fn poll_in_order(
    futures: &mut Vec<(u64, ResponseFuture)>,
) -> impl Future<Output = (u64, Result<Option<ProduceResponse>>)> + '_ {
    std::future::poll_fn(move |cx| {
        for i in 0..futures.len() {
            if let Poll::Ready(out) = futures[i].1.as_mut().poll(cx) {
                let (id, _) = futures.remove(i);
                return Poll::Ready((id, out));
            }
        }
        Poll::Pending
    })
}

fn min_instant(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn is_ambiguous_code(code: KafkaCode) -> bool {
    matches!(
        code,
        KafkaCode::RequestTimedOut
            | KafkaCode::NotEnoughReplicasAfterAppend
            | KafkaCode::NetworkException
            | KafkaCode::UnknownServerError
    )
}

impl Sender {
    fn part(&mut self, tp: &Tp) -> &mut SPart {
        let sh = &self.sh;
        self.parts.entry(tp.clone()).or_insert_with(|| SPart {
            queue: VecDeque::new(),
            in_flight: Vec::new(),
            retrying: false,
            backoff: RetryDelay::new(sh.config.retry_backoff, sh.config.retry_backoff_max),
            retry_at: None,
            // The leader as the metadata cache knows it already (else the first batch of a
            // partition would wait for a refresh, spaced by `retry.backoff`).
            leader: sh.cluster.known_leader(&tp.0, tp.1),
        })
    }

    fn total_in_flight(&self) -> usize {
        self.requests.len()
    }

    /// One round: collect ready batches, expire old ones, bump the epoch if due, send.
    /// Returns when the sender should look again at the latest.
    async fn run_once(&mut self) -> Option<Instant> {
        let now = Instant::now();
        // Conservative until the end of the round shows every broker busy.
        self.sh.sender_wants_sealed.store(true, Ordering::Release);
        let mut next = self.collect(now);
        if self.sh.txn.is_some()
            && let Some(t) = self.txn_round(now)
        {
            next = min_instant(next, t);
        }
        self.refresh_leaders();
        if let Some(t) = self.expire(now) {
            next = min_instant(next, t);
        }
        if let Some(t) = self.expire_in_flight(now) {
            next = min_instant(next, t);
        }
        if let Some(t) = self.maybe_bump().await {
            next = min_instant(next, t);
        }
        if let Some(t) = self.send_ready(Instant::now()) {
            next = min_instant(next, t);
        }
        if self.all_brokers_busy() {
            self.sh.sender_wants_sealed.store(false, Ordering::Release);
        }
        self.publish_backlog(Instant::now());
        next
    }

    /// Bumps the epoch when a sequence gap needs it and nothing is in flight (KIP-360).
    async fn maybe_bump(&mut self) -> Option<Instant> {
        let Some(idem) = &self.idem else {
            return None;
        };
        if !idem.bump_required
            || self.total_in_flight() > 0
            || self.sh.fatal.get().is_some()
            || self.sh.txn.is_some()
        {
            // A transactional producer's epoch is bumped by its transaction manager, between
            // transactions (never silently inside one, librdkafka #3575).
            return None;
        }
        if let Some(at) = self.bump_retry_at
            && at > Instant::now()
        {
            return Some(at);
        }
        let current = idem.id;
        let deadline = Instant::now() + self.sh.config.request_timeout;
        let result =
            init_producer_id(&self.sh.cluster, &self.sh.config, Some(current), deadline).await;
        let id = match result {
            Ok(id) => id,
            Err(e) if e.is_fatal() => {
                self.set_fatal(e);
                return None;
            }
            Err(e) => {
                let wait = self.bump_backoff.delay();
                self.bump_backoff.failed();
                tracing::warn!(error = %e, ?wait, "epoch bump failed; retrying");
                let at = Instant::now() + wait;
                self.bump_retry_at = Some(at);
                return Some(at);
            }
        };
        self.bump_backoff.reset();
        self.bump_retry_at = None;
        tracing::info!(
            producer_id = id.producer_id,
            epoch = id.epoch,
            "bumped the producer epoch; renumbering waiting batches"
        );
        // Waiting batches: those that may be written already cannot be renumbered without
        // risking a duplicate, so they fail as possibly persisted; the others are renumbered
        // from 0 when next sent, in order.
        let mut failed = Vec::new();
        for (tp, part) in self.parts.iter_mut() {
            part.retrying = false;
            let queue = std::mem::take(&mut part.queue);
            for mut b in queue {
                if b.base_seq != NO_SEQUENCE && b.ambiguous {
                    failed.push((tp.clone(), b));
                } else {
                    b.base_seq = NO_SEQUENCE;
                    part.queue.push_back(b);
                }
            }
        }
        if let Some(idem) = &mut self.idem {
            idem.reset(id);
        }
        for (tp, b) in failed {
            let e = Error::with_message(
                ErrorKind::Broker(KafkaCode::OutOfOrderSequenceNumber),
                "the producer had to reset its sequence numbers while this batch's earlier \
                 attempt had no definite answer; it was not resent to avoid a duplicate",
            )
            .api(ApiKey::Produce)
            .on_partition(tp.0.to_string(), tp.1);
            self.fail(&tp, b, e, Persistence::PossiblyPersisted);
        }
        None
    }

    /// Transactional producers: adopts a new producer id from the transaction manager, fails
    /// every waiting batch of a doomed transaction (aborting, abortable error, fatal), and
    /// registers partitions with waiting batches with the transaction (one
    /// AddPartitionsToTxn for all of them, in a task of its own so responses keep flowing).
    fn txn_round(&mut self, now: Instant) -> Option<Instant> {
        let link = self.sh.txn.clone()?;
        if let Some(id) = link.lock().new_id.take() {
            tracing::debug!(
                producer_id = id.producer_id,
                epoch = id.epoch,
                "transactional producer id"
            );
            match &mut self.idem {
                Some(idem) => idem.reset(id),
                None => self.idem = Some(IdempotentState::new(id)),
            }
            for part in self.parts.values_mut() {
                part.retrying = false;
                part.retry_at = None;
                for b in part.queue.iter_mut() {
                    b.base_seq = NO_SEQUENCE;
                }
            }
        }
        let doom = self.sh.fatal_error().or_else(|| link.doom());
        if let Some(e) = doom {
            self.fail_queued(&e);
            return None;
        }
        let id = self.idem.as_ref()?.id;
        let (want, generation) = {
            let mut st = link.lock();
            if st.adding {
                return None;
            }
            if let Some(at) = st.add_retry_at
                && at > now
            {
                return Some(at);
            }
            let want: Vec<Tp> = self
                .parts
                .iter()
                .filter(|(tp, p)| !p.queue.is_empty() && !st.added.contains(*tp))
                .map(|(tp, _)| tp.clone())
                .collect();
            if want.is_empty() {
                return None;
            }
            st.adding = true;
            st.maybe_registered = true;
            (want, st.generation)
        };
        let sh = self.sh.clone();
        let span = tracing::debug_span!("kafka.transaction", op = "add_partitions");
        self.add_task = Some(tokio::spawn(
            async move {
                let result = super::txn::add_partitions(
                    &sh.cluster,
                    &sh.config,
                    &link.transactional_id,
                    id,
                    &want,
                )
                .await;
                if link.lock().generation != generation {
                    // The transaction ended meanwhile (the manager waits for this request before
                    // EndTxn, so this is only a safety net): its result is not this one's.
                    link.lock().adding = false;
                    sh.wake.notify_one();
                    return;
                }
                match result {
                    Ok(()) => {
                        let mut st = link.lock();
                        st.adding = false;
                        st.add_failures = 0;
                        st.add_retry_at = None;
                        st.added.extend(want);
                    }
                    Err(e) if e.is_fatal() => {
                        link.lock().adding = false;
                        let _ = sh.fatal.set(e);
                    }
                    Err(e) if e.is_retriable() => {
                        let mut st = link.lock();
                        st.adding = false;
                        st.add_failures = st.add_failures.saturating_add(1);
                        let exp = st.add_failures.min(16) - 1;
                        let wait = sh
                            .config
                            .retry_backoff
                            .saturating_mul(1u32 << exp.min(10))
                            .min(sh.config.retry_backoff_max);
                        tracing::debug!(error = %e, ?wait, "AddPartitionsToTxn failed; retrying");
                        st.add_retry_at = Some(Instant::now() + wait);
                    }
                    Err(e) => {
                        link.lock().adding = false;
                        link.set_error(e);
                    }
                }
                sh.wake.notify_one();
            }
            .instrument(span),
        ));
        None
    }

    /// Fails every batch waiting in the sender's queues (not those in flight) with `e`.
    fn fail_queued(&mut self, e: &Error) {
        for part in self.parts.values_mut() {
            part.retrying = false;
            part.retry_at = None;
        }
        self.fail_waiting(e);
    }

    /// Fails every batch waiting in the sender's queues with `e`: possibly persisted if an
    /// earlier attempt had no definite answer, else not persisted. The one place the three
    /// ways a queue is given up (doomed transaction, fatal error, shutdown) decide that, so
    /// they cannot disagree on what a waiting batch's failure means.
    fn fail_waiting(&mut self, e: &Error) {
        let mut waiting = Vec::new();
        for (tp, part) in self.parts.iter_mut() {
            for b in part.queue.drain(..) {
                waiting.push((tp.clone(), b));
            }
        }
        for (tp, b) in waiting {
            let p = if b.ambiguous {
                Persistence::PossiblyPersisted
            } else {
                Persistence::NotPersisted
            };
            self.fail(&tp, b, e.clone(), p);
        }
    }

    /// A transactional batch failed: the transaction becomes abortable (or the producer
    /// fatal), and a batch that may be written or left a sequence gap needs an epoch bump
    /// after the transaction ends.
    fn txn_batch_failed(&self, b: &SBatch, e: &Error, persistence: Persistence) {
        let Some(link) = &self.sh.txn else {
            return;
        };
        if b.expired {
            return;
        }
        if b.base_seq != NO_SEQUENCE || persistence == Persistence::PossiblyPersisted {
            link.lock().bump_needed = true;
        }
        match e.kind() {
            ErrorKind::TransactionAborted | ErrorKind::Abortable | ErrorKind::Fatal => {}
            ErrorKind::Closed => {}
            _ if e.is_fatal() => {
                let _ = self.sh.fatal.set(e.clone());
                self.sh.wake.notify_one();
            }
            _ => link.set_error(e.clone()),
        }
    }

    /// Makes the producer unusable: fails every waiting batch with the fatal error.
    fn set_fatal(&mut self, e: Error) {
        if self.sh.fatal.set(e).is_err() {
            return;
        }
        tracing::error!(error = ?self.sh.fatal.get(), "producer hit a fatal error");
        let Some(fatal) = self.sh.fatal_error() else {
            return;
        };
        self.fail_waiting(&fatal);
        // Batches still in the accumulator are failed by `collect`.
        self.sh.wake.notify_one();
    }

    /// The last handle was dropped: fail everything still held with `Closed`.
    fn shut_down(&mut self) {
        // Before collecting: a `send` that starts a batch after this sees the flag (the
        // partition lock orders the two) and fails it itself.
        self.sh.stopped.store(true, Ordering::Release);
        if let Some(t) = self.add_task.take() {
            t.abort();
        }
        let closed =
            || Error::with_message(ErrorKind::Closed, "the producer was dropped or closed");
        let _ = self.collect(Instant::now() + Duration::from_secs(365 * 24 * 3600));
        self.fail_waiting(&closed());
        let requests: Vec<InFlightReq> = self.requests.drain().map(|(_, r)| r).collect();
        self.futures.clear();
        for req in requests {
            for (tp, b) in req.batches {
                self.fail(&tp, b, closed(), Persistence::PossiblyPersisted);
            }
        }
        self.sh.memory.close();
    }
}

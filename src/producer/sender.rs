//! The sender task: collects ready batches, numbers them, sends them per leader, and handles
//! the responses (success, retry, failure, fatal).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use super::accumulator::{BatchOutcome, BatchShared, OpenBatch, lock};
use super::config::Acks;
use super::idempotence::{IdempotentState, ProducerIdAndEpoch, init_producer_id};
use super::record::{Persistence, ProduceError};
use super::{REQUEST_OVERHEAD, Shared};
use crate::cluster::{Recovery, recovery_for};
use crate::connection::Backoff;
use crate::error::{Error, ErrorKind, KafkaCode, Result};
use crate::protocol::StrBytes;
use crate::protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use crate::protocol::messages::{ApiKey, ProduceRequest, ProduceResponse, TopicName};
use crate::protocol::record::{BatchBuilder, NO_SEQUENCE, set_producer};

type Tp = (Arc<str>, i32);
type ResponseFuture = Pin<Box<dyn Future<Output = Result<Option<ProduceResponse>>> + Send>>;

/// A batch owned by the sender.
struct SBatch {
    shared: Arc<BatchShared>,
    /// Until the first send.
    builder: Option<BatchBuilder>,
    /// From the first send on (kept for retries).
    bytes: Option<Bytes>,
    /// Creation order within the producer: retried batches go back in this order.
    order: u64,
    records: u32,
    uncompressed: usize,
    created: Instant,
    permits: u32,
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

struct SPart {
    queue: VecDeque<SBatch>,
    /// Orders of this partition's batches in flight.
    in_flight: Vec<u64>,
    /// A batch failed and is being retried: send one batch at a time until a success.
    retrying: bool,
    backoff: Backoff,
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
    idem: Option<IdempotentState>,
    next_id: u64,
    next_order: u64,
    meta_seen: u64,
    meta_dirty: Arc<AtomicBool>,
    refreshing: Arc<AtomicBool>,
    bump_retry_at: Option<Instant>,
    bump_backoff: Backoff,
    /// Where the next drain round starts among the partitions, so that a request that cannot
    /// take every partition (`max.request.size`) does not favour the same ones each time.
    drain_start: usize,
    /// The AddPartitionsToTxn task of a transactional producer, aborted at shutdown.
    add_task: Option<tokio::task::JoinHandle<()>>,
}

pub(crate) async fn run(
    sh: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    pid: Option<ProducerIdAndEpoch>,
) {
    let mut s = Sender {
        bump_backoff: Backoff::new(sh.config.retry_backoff, sh.config.retry_backoff_max),
        sh,
        parts: HashMap::new(),
        requests: HashMap::new(),
        futures: Vec::new(),
        broker_in_flight: HashMap::new(),
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
        if *shutdown.borrow() {
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
            _ = shutdown.changed() => None,
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
            backoff: Backoff::new(sh.config.retry_backoff, sh.config.retry_backoff_max),
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

    /// Whether a new batch of `tp` would have to wait now: the partition has queued batches,
    /// or requests out (on it or on its leader: one with batch growth on, `max.in.flight`
    /// with it off), or it is retrying or waiting
    /// for its first acknowledgement (idempotence) with a batch in flight. A response (or a
    /// retry timer) ends every one of these, and the sender then looks again.
    fn is_backlogged(&self, tp: &Tp, now: Instant) -> bool {
        let Some(part) = self.parts.get(tp) else {
            return false;
        };
        let Some(leader) = part.leader else {
            // Collected at once, so that the missing leader is asked for.
            return false;
        };
        // With growth on, a request in flight is a backlog already: Kafka serves one request
        // of a connection at a time (it mutes the channel until the response is sent), so a
        // second request would only wait there; the records wait here instead and leave in
        // one larger batch when the response comes (measured: BENCHMARKS.md, issue 21). With
        // growth off (Java's batches), `max.in.flight` as in the Java client.
        let max = if super::backlog_limit(&self.sh.config) > self.sh.config.batch_size {
            1
        } else {
            self.sh.config.max_in_flight
        };
        !part.queue.is_empty()
            || part.retry_at.is_some_and(|at| at > now)
            || part.in_flight.len() >= max
            || (!part.in_flight.is_empty()
                && (part.retrying
                    || self
                        .idem
                        .as_ref()
                        .is_some_and(|idem| !idem.is_confirmed(tp))))
            || self.broker_in_flight.get(&leader).copied().unwrap_or(0) >= max
    }

    /// Tells the `send` path which partitions have a backlog (their open batch may grow past
    /// `batch.size`, see [`ProducerConfig::backlog_batch_size`](super::ProducerConfig)).
    fn publish_backlog(&self, now: Instant) {
        let grow = super::backlog_limit(&self.sh.config) > self.sh.config.batch_size;
        for topic in self.sh.acc.topics() {
            for pq in &topic.partitions {
                let tp: Tp = (topic.name.clone(), pq.partition);
                let backlog = grow && self.is_backlogged(&tp, now);
                if pq.backlog.load(Ordering::Relaxed) != backlog {
                    pq.backlog.store(backlog, Ordering::Release);
                }
            }
        }
    }

    /// Whether requests are in flight and every partition's leader already has
    /// `max.in.flight` of them: a newly sealed batch could not be sent before a response.
    fn all_brokers_busy(&self) -> bool {
        if self.requests.is_empty() {
            return false;
        }
        let max = self.sh.config.max_in_flight;
        self.parts.values().all(|p| {
            p.leader
                .is_some_and(|l| self.broker_in_flight.get(&l).copied().unwrap_or(0) >= max)
        })
    }

    /// Moves sealed batches, and open batches older than `linger` or at `batch.size` (or all
    /// when flushing), from the accumulator into the sender's queues. An open batch of a
    /// partition with a backlog ([`is_backlogged`](Self::is_backlogged)) stays open and keeps
    /// filling until the partition can send (a response wakes the sender), as the Java
    /// client's accumulator keeps appending to the last batch of a deque it cannot drain; a
    /// batch held for `request.timeout` is taken in any case.
    fn collect(&mut self, now: Instant) -> Option<Instant> {
        let linger = self.sh.config.linger;
        let batch_size = self.sh.config.batch_size;
        let hold_max = self.sh.config.request_timeout;
        self.sh.sender_idle.store(true, Ordering::Release);
        let doom = self.sh.txn.as_ref().and_then(|l| l.doom());
        let all = self.sh.send_now.swap(false, Ordering::AcqRel)
            || self.sh.flushing.load(Ordering::Acquire) > 0
            || self.sh.closing.load(Ordering::Acquire)
            || doom.is_some();
        let mut next = None;
        let mut taken: Vec<(Tp, OpenBatch)> = Vec::new();
        for topic in self.sh.acc.topics() {
            for pq in &topic.partitions {
                let mut inner = lock(&pq.inner);
                let tp: Tp = (topic.name.clone(), pq.partition);
                while let Some(b) = inner.sealed.pop_front() {
                    taken.push((tp.clone(), b));
                }
                if let Some(open) = &inner.open {
                    let due = open.created + linger;
                    let ready = due <= now || open.builder.estimated_size() >= batch_size;
                    let take = all
                        || (ready
                            && (!self.is_backlogged(&tp, now) || open.created + hold_max <= now));
                    if take {
                        if let Some(b) = inner.open.take() {
                            taken.push((tp, b));
                        }
                    } else if ready {
                        next = min_instant(next, open.created + hold_max);
                    } else {
                        next = min_instant(next, due);
                    }
                }
            }
        }
        if next.is_some() {
            // The linger timer will look again; appenders need not wake us.
            self.sh.sender_idle.store(false, Ordering::Release);
        }
        let fatal = self.sh.fatal_error().or(doom);
        for (tp, b) in taken {
            let order = self.next_order;
            self.next_order += 1;
            let sb = SBatch {
                shared: b.shared,
                records: b.builder.len() as u32,
                uncompressed: b.builder.estimated_size(),
                builder: Some(b.builder),
                bytes: None,
                order,
                created: b.created,
                permits: b.permits,
                base_seq: NO_SEQUENCE,
                producer_id: -1,
                ambiguous: false,
                last_error: None,
                expired: false,
                retries: 0,
            };
            if let Some(e) = &fatal {
                self.fail(&tp, sb, e.clone(), Persistence::NotPersisted);
            } else {
                self.part(&tp).queue.push_back(sb);
            }
        }
        next
    }

    /// Re-reads leaders (and partition counts) after the cluster's metadata changed.
    fn refresh_leaders(&mut self) {
        let seen = self.sh.cluster.metadata_requests();
        let dirty = self.meta_dirty.swap(false, Ordering::AcqRel);
        if !dirty && seen == self.meta_seen {
            return;
        }
        self.meta_seen = seen;
        let meta = self.sh.cluster.metadata();
        for ((topic, partition), part) in self.parts.iter_mut() {
            part.leader = meta
                .partition(topic, *partition)
                .map(|p| p.leader)
                .filter(|l| *l >= 0);
        }
        for t in self.sh.acc.topics() {
            if let Some(tm) = meta.topics.get(&*t.name) {
                let count = tm
                    .partitions
                    .iter()
                    .map(|p| p.partition + 1)
                    .max()
                    .unwrap_or(0);
                if count > t.count() as i32 {
                    self.sh.acc.ensure(&t.name, count as u32);
                }
            }
        }
    }

    /// Asks for a metadata refresh of `topic` (one at a time, spaced by `retry.backoff`).
    fn request_refresh(&self, topic: &Arc<str>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut topics: Vec<String> = self
            .parts
            .iter()
            .filter(|(_, p)| p.leader.is_none())
            .map(|((t, _), _)| t.to_string())
            .collect();
        topics.push(topic.to_string());
        topics.sort();
        topics.dedup();
        let sh = self.sh.clone();
        let dirty = self.meta_dirty.clone();
        let refreshing = self.refreshing.clone();
        let span = tracing::debug_span!("kafka.metadata", topics = topics.len());
        tokio::spawn(
            async move {
                if let Err(e) = sh.cluster.refresh_topics(&topics).await {
                    tracing::debug!(error = %e, "producer metadata refresh failed");
                }
                dirty.store(true, Ordering::Release);
                sh.wake.notify_one();
                tokio::time::sleep(sh.config.retry_backoff).await;
                refreshing.store(false, Ordering::Release);
                sh.wake.notify_one();
            }
            .instrument(span),
        );
    }

    /// Fails queued batches older than `delivery.timeout`.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
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

    fn timeout_error(&self, tp: &Tp, last: Option<&Error>) -> Error {
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
            e = e.source(l.clone());
        }
        e
    }

    /// Fails the records of in-flight batches older than `delivery.timeout` as possibly
    /// persisted (as Java expires in-flight batches), without waiting for the response.
    fn expire_in_flight(&mut self, now: Instant) -> Option<Instant> {
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
            b.shared.complete(BatchOutcome::Failed(ProduceError::new(
                e,
                Persistence::PossiblyPersisted,
            )));
        }
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

    /// Whether the head batch of `tp` may be sent now.
    fn sendable(
        &self,
        tp: &Tp,
        part: &SPart,
        now: Instant,
    ) -> std::result::Result<(), Option<Instant>> {
        let Some(front) = part.queue.front() else {
            return Err(None);
        };
        if let Some(at) = part.retry_at
            && at > now
        {
            return Err(Some(at));
        }
        if part.retrying && !part.in_flight.is_empty() {
            return Err(None);
        }
        if part.in_flight.len() >= self.sh.config.max_in_flight {
            return Err(None);
        }
        if let Some(idem) = &self.idem
            && !part.in_flight.is_empty()
            && !idem.is_confirmed(tp)
        {
            // No batch of this producer id acknowledged here yet: the broker has no state to
            // check sequences against and would write a later batch even if an earlier one in
            // flight fails (a cut connection, a retriable error), which then comes after it.
            // One batch at a time until the first acknowledgement.
            return Err(None);
        }
        if let Some(link) = &self.sh.txn
            && !link.lock().added.contains(tp)
        {
            // Not registered with the transaction yet (`txn_round` does it).
            return Err(None);
        }
        if let Some(idem) = &self.idem {
            if self.sh.fatal.get().is_some() {
                return Err(None);
            }
            if idem.bump_required {
                // Only resolve earlier ambiguous attempts, one at a time, on gap-free
                // partitions; everything else waits for the bump.
                let ok = front.base_seq != NO_SEQUENCE
                    && front.ambiguous
                    && !idem.has_gap(tp)
                    && part.in_flight.is_empty();
                if !ok {
                    return Err(None);
                }
            }
        }
        Ok(())
    }

    /// Groups sendable head batches by leader into requests and sends them.
    fn send_ready(&mut self, now: Instant) -> Option<Instant> {
        let mut next = None;
        let max_request = self.sh.config.max_request_size;
        let max_in_flight = self.sh.config.max_in_flight;
        loop {
            // One round: at most one request per broker, one batch per partition.
            let mut by_broker: HashMap<i32, (usize, Vec<Tp>)> = HashMap::new();
            let mut need_refresh: Option<Arc<str>> = None;
            let start = self.drain_start % self.parts.len().max(1);
            self.drain_start = self.drain_start.wrapping_add(1);
            for (tp, part) in self
                .parts
                .iter()
                .skip(start)
                .chain(self.parts.iter().take(start))
            {
                match self.sendable(tp, part, now) {
                    Ok(()) => {}
                    Err(at) => {
                        if let Some(at) = at {
                            next = min_instant(next, at);
                        }
                        continue;
                    }
                }
                let Some(leader) = part.leader else {
                    need_refresh = Some(tp.0.clone());
                    continue;
                };
                if self.broker_in_flight.get(&leader).copied().unwrap_or(0) >= max_in_flight {
                    continue;
                }
                let size = part
                    .queue
                    .front()
                    .map(|b| b.bytes.as_ref().map_or(b.uncompressed, Bytes::len))
                    .unwrap_or(0)
                    + REQUEST_OVERHEAD;
                let entry = by_broker.entry(leader).or_insert((0, Vec::new()));
                if !entry.1.is_empty() && entry.0 + size > max_request {
                    continue;
                }
                entry.0 += size;
                entry.1.push(tp.clone());
            }
            if let Some(t) = need_refresh {
                self.request_refresh(&t);
            }
            if by_broker.is_empty() {
                return next;
            }
            for (broker, (_, tps)) in by_broker {
                self.send_request(broker, tps);
            }
        }
    }

    /// Numbers and builds the head batch of each partition and sends them in one request.
    fn send_request(&mut self, broker: i32, tps: Vec<Tp>) {
        let mut batches = Vec::with_capacity(tps.len());
        for tp in tps {
            let Some(mut b) = self.part(&tp).queue.pop_front() else {
                continue;
            };
            if let Err(e) = self.prepare(&tp, &mut b) {
                self.fail(&tp, b, e, Persistence::NotPersisted);
                continue;
            }
            let order = b.order;
            self.part(&tp).in_flight.push(order);
            batches.push((tp, b));
        }
        if batches.is_empty() {
            return;
        }
        let acks = self.sh.config.acks;
        let timeout = self.sh.config.request_timeout;
        let mut topics: Vec<TopicProduceData> = Vec::new();
        let mut records = 0u64;
        for (tp, b) in &batches {
            records += u64::from(b.records);
            let data = PartitionProduceData::default()
                .with_index(tp.1)
                .with_records(b.bytes.clone());
            match topics.iter_mut().find(|t| *t.name.0 == *tp.0) {
                Some(t) => t.partition_data.push(data),
                None => topics.push(
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(tp.0.to_string())))
                        .with_partition_data(vec![data]),
                ),
            }
        }
        let request = ProduceRequest::default()
            .with_transactional_id(self.sh.txn.as_ref().map(|l| {
                crate::protocol::messages::TransactionalId(StrBytes::from_string(
                    l.transactional_id.to_string(),
                ))
            }))
            .with_acks(acks.as_i16())
            .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topic_data(topics);
        let id = self.next_id;
        self.next_id += 1;
        let cluster = self.sh.cluster.clone();
        let span = tracing::debug_span!(
            "produce",
            broker,
            request = id,
            batches = batches.len(),
            records
        );
        let fut = async move {
            let conn = cluster.connection_for_broker(broker).await?;
            let send = async {
                if acks == Acks::None {
                    conn.send_no_response(request).await.map(|()| None)
                } else {
                    conn.send(request).await.map(Some)
                }
            };
            match tokio::time::timeout(timeout + Duration::from_secs(1), send).await {
                Ok(r) => r,
                Err(_) => Err(Error::with_message(
                    ErrorKind::Timeout,
                    format!("no produce response within request.timeout ({timeout:?})"),
                )),
            }
            .map_err(|e| e.api(ApiKey::Produce).on_broker(broker))
        }
        .instrument(span);
        self.futures.push((id, Box::pin(fut)));
        *self.broker_in_flight.entry(broker).or_insert(0) += 1;
        self.sh.counters.request_started();
        self.requests.insert(
            id,
            InFlightReq {
                broker,
                batches,
                started: Instant::now(),
            },
        );
    }

    /// Numbers (idempotence) and builds a batch before a send.
    fn prepare(&mut self, tp: &Tp, b: &mut SBatch) -> Result<()> {
        if let Some(builder) = b.builder.take() {
            let builder = match &mut self.idem {
                Some(idem) => {
                    b.base_seq = idem.assign(tp, b.records as i32);
                    b.producer_id = idem.id.producer_id;
                    builder
                        .with_producer(idem.id.producer_id, idem.id.epoch, b.base_seq)
                        .with_transactional(self.sh.txn.is_some())
                }
                None => builder,
            };
            let bytes = builder.build()?;
            self.sh.counters.batch(bytes.len(), b.uncompressed);
            b.bytes = Some(bytes);
        } else if let Some(idem) = &mut self.idem
            && b.base_seq == NO_SEQUENCE
        {
            // Renumbered after an epoch bump.
            b.base_seq = idem.assign(tp, b.records as i32);
            b.producer_id = idem.id.producer_id;
            let mut raw = b.bytes.as_deref().unwrap_or_default().to_vec();
            set_producer(&mut raw, idem.id.producer_id, idem.id.epoch, b.base_seq)?;
            b.bytes = Some(Bytes::from(raw));
        }
        Ok(())
    }

    fn handle(&mut self, id: u64, result: Result<Option<ProduceResponse>>) {
        let Some(req) = self.requests.remove(&id) else {
            return;
        };
        if let Some(n) = self.broker_in_flight.get_mut(&req.broker) {
            *n = n.saturating_sub(1);
        }
        self.sh.counters.request_done(req.started.elapsed());
        match result {
            Ok(None) => {
                for (tp, b) in req.batches {
                    self.succeed(&tp, b, -1, -1);
                }
            }
            Ok(Some(resp)) => {
                for (tp, b) in req.batches {
                    let found = resp
                        .responses
                        .iter()
                        .filter(|t| *t.name.0 == *tp.0)
                        .flat_map(|t| t.partition_responses.iter())
                        .find(|p| p.index == tp.1);
                    match found {
                        Some(p) => {
                            let (code, base, lat) =
                                (p.error_code, p.base_offset, p.log_append_time_ms);
                            let msg = p.error_message.as_ref().map(|m| m.to_string());
                            self.on_partition(req.broker, tp, b, code, base, lat, msg);
                        }
                        None => {
                            let e = Error::with_message(
                                ErrorKind::UnexpectedResponse,
                                "the produce response does not name the partition",
                            )
                            .api(ApiKey::Produce)
                            .on_broker(req.broker);
                            self.retry(&tp, b, e, true);
                        }
                    }
                }
            }
            Err(e) => {
                if recovery_for(&e) == Recovery::SwitchBroker {
                    self.sh.cluster.mark_failed(req.broker);
                }
                for (tp, b) in req.batches {
                    let e = e.clone().on_partition(tp.0.to_string(), tp.1);
                    if recovery_for(&e) == Recovery::GiveUp {
                        self.remove_in_flight(&tp, b.order);
                        // A request that failed locally (closed client, encoding) was not
                        // written; one that failed on the wire may have been.
                        let p = if matches!(e.kind(), ErrorKind::Closed | ErrorKind::Encode) {
                            if b.ambiguous {
                                Persistence::PossiblyPersisted
                            } else {
                                Persistence::NotPersisted
                            }
                        } else {
                            Persistence::PossiblyPersisted
                        };
                        self.fail(&tp, b, e, p);
                    } else {
                        self.retry(&tp, b, e, true);
                    }
                }
            }
        }
    }

    fn remove_in_flight(&mut self, tp: &Tp, order: u64) {
        let part = self.part(tp);
        part.in_flight.retain(|o| *o != order);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_partition(
        &mut self,
        broker: i32,
        tp: Tp,
        b: SBatch,
        code: i16,
        base_offset: i64,
        log_append_time: i64,
        message: Option<String>,
    ) {
        let Some(code) = KafkaCode::from_i16(code) else {
            self.succeed(&tp, b, base_offset, log_append_time);
            return;
        };
        let mut e = Error::broker(code)
            .api(ApiKey::Produce)
            .on_broker(broker)
            .on_partition(tp.0.to_string(), tp.1);
        if let Some(m) = message {
            e = e.message(m);
        }
        if self.sh.txn.is_some()
            && matches!(
                code,
                KafkaCode::OutOfOrderSequenceNumber
                    | KafkaCode::UnknownProducerId
                    | KafkaCode::InvalidProducerIdMapping
                    | KafkaCode::InvalidProducerEpoch
                    | KafkaCode::TransactionAbortable
                    | KafkaCode::InvalidTxnState
                    | KafkaCode::ProducerFenced
            )
        {
            // Inside a transaction these fail the batch and, through `fail`, make the
            // transaction abortable (or the producer fatal); the epoch is bumped by the
            // transaction manager after the abort, never here.
            self.remove_in_flight(&tp, b.order);
            self.fail(&tp, b, e, Persistence::NotPersisted);
            return;
        }
        match code {
            // The broker has this batch already (an earlier attempt was written).
            KafkaCode::DuplicateSequenceNumber => self.succeed(&tp, b, -1, -1),
            KafkaCode::OutOfOrderSequenceNumber if self.idem.is_some() => {
                let order = b.order;
                let gap = self.idem.as_ref().is_some_and(|i| i.has_gap(&tp));
                let part = self.part(&tp);
                let head = part.in_flight.iter().min() == Some(&order)
                    && part.queue.front().is_none_or(|q| q.order > order);
                let retrying = part.retrying;
                if head && !retrying && !gap {
                    // The broker lost a batch we never saw fail: sequences cannot be trusted.
                    self.remove_in_flight(&tp, order);
                    let fatal = e.clone().message(
                        "OUT_OF_ORDER_SEQUENCE_NUMBER on the oldest unacknowledged batch: the \
                         broker lost records of this producer",
                    );
                    // Fatal first, so that whoever sees this batch fail sees the producer
                    // fatal too.
                    self.set_fatal(fatal.clone());
                    self.fail(&tp, b, fatal, Persistence::NotPersisted);
                } else if head && retrying && !gap {
                    // The retried head's earlier outcome is unknown to the broker: resolve by
                    // bumping the epoch.
                    if let Some(idem) = &mut self.idem {
                        idem.mark_gap(&tp);
                    }
                    self.retry(&tp, b, e, false);
                } else {
                    // An earlier batch failed: this one was rejected because of the gap.
                    self.retry(&tp, b, e, false);
                }
            }
            KafkaCode::UnknownProducerId | KafkaCode::InvalidProducerIdMapping
                if self.idem.is_some() =>
            {
                // KIP-360: the broker lost our producer state; bump the epoch once nothing is
                // in flight, then renumber.
                if let Some(idem) = &mut self.idem {
                    idem.mark_gap(&tp);
                }
                self.retry(&tp, b, e, false);
            }
            _ if recovery_for(&e) != Recovery::GiveUp => {
                let ambiguous = is_ambiguous_code(code);
                self.retry(&tp, b, e, ambiguous)
            }
            _ => {
                self.remove_in_flight(&tp, b.order);
                self.fail(&tp, b, e, Persistence::NotPersisted);
            }
        }
    }

    fn succeed(&mut self, tp: &Tp, b: SBatch, base_offset: i64, log_append_time: i64) {
        if let Some(idem) = &mut self.idem
            && b.base_seq != NO_SEQUENCE
        {
            idem.mark_confirmed(tp, b.producer_id);
        }
        let part = self.part(tp);
        part.in_flight.retain(|o| *o != b.order);
        // A later batch's success does not end a retry: while an earlier batch waits to be
        // resent (it sits at the head of the queue, which is in creation order), keep sending
        // one batch at a time. Otherwise new batches overtake it and, past the broker's window
        // of 5 batches per producer, its resend can no longer be recognised as a duplicate.
        if part.queue.front().is_none_or(|q| q.bytes.is_none()) {
            part.retrying = false;
            part.retry_at = None;
            part.backoff.reset();
        }
        if b.expired {
            // Its records were already reported as possibly persisted: they were.
            self.sh.batch_done(b.permits);
            return;
        }
        self.sh.counters.sent(u64::from(b.records));
        if let Some(cb) = &self.sh.circuit {
            cb.record(false, u64::from(b.records));
        }
        b.shared.complete(BatchOutcome::Delivered {
            base_offset,
            log_append_time,
        });
        self.sh.batch_done(b.permits);
    }

    /// Puts a batch back at its place in its partition's queue, after a back-off, or fails it
    /// once `delivery.timeout` has passed.
    fn retry(&mut self, tp: &Tp, mut b: SBatch, e: Error, ambiguous: bool) {
        b.ambiguous |= ambiguous;
        let recovery = recovery_for(&e);
        b.last_error = Some(e);
        let timeout = self.sh.config.delivery_timeout;
        let now = Instant::now();
        let part = self.part(tp);
        part.in_flight.retain(|o| *o != b.order);
        // Ambiguous attempts, and rejections caused by the producer's own sequence state (a
        // gap left by another batch, a lost producer id), do not use up `retries`.
        let counted = !ambiguous
            && !matches!(
                b.last_error.as_ref().and_then(Error::kafka_code),
                Some(
                    KafkaCode::OutOfOrderSequenceNumber
                        | KafkaCode::UnknownProducerId
                        | KafkaCode::InvalidProducerIdMapping
                )
            );
        if counted {
            b.retries = b.retries.saturating_add(1);
        }
        if b.retries > self.sh.config.retries && !b.expired {
            let p = if b.ambiguous {
                Persistence::PossiblyPersisted
            } else {
                Persistence::NotPersisted
            };
            let last = b
                .last_error
                .clone()
                .unwrap_or_else(|| Error::new(ErrorKind::Timeout));
            let note = format!(
                "gave up after {} retries (retries = {})",
                b.retries - 1,
                self.sh.config.retries
            );
            let msg = match last.message_text() {
                Some(m) => format!("{m}; {note}"),
                None => note,
            };
            self.fail(tp, b, last.message(msg), p);
            return;
        }
        let part = self.part(tp);
        if b.expired || now >= b.created + timeout {
            let p = if b.ambiguous {
                Persistence::PossiblyPersisted
            } else {
                Persistence::NotPersisted
            };
            let err = self.timeout_error(tp, b.last_error.as_ref());
            self.fail(tp, b, err, p);
            return;
        }
        tracing::debug!(topic = %tp.0, partition = tp.1, error = ?b.last_error, "retrying batch");
        let records = u64::from(b.records);
        let pos = part
            .queue
            .iter()
            .position(|q| q.order > b.order)
            .unwrap_or(part.queue.len());
        part.queue.insert(pos, b);
        part.retrying = true;
        let wait = part.backoff.delay();
        part.backoff.failed();
        part.retry_at = Some(now + wait);
        if matches!(recovery, Recovery::RefreshMetadata | Recovery::SwitchBroker) {
            part.leader = None;
            let topic = tp.0.clone();
            self.request_refresh(&topic);
        }
        self.sh.counters.retried(records);
    }

    fn fail(&mut self, tp: &Tp, b: SBatch, e: Error, persistence: Persistence) {
        if self.sh.txn.is_some() {
            self.txn_batch_failed(&b, &e, persistence);
        }
        if let Some(idem) = &mut self.idem
            && b.base_seq != NO_SEQUENCE
            && self.sh.fatal.get().is_none()
        {
            idem.mark_gap(tp);
        }
        if b.expired {
            // Its records were already failed (possibly persisted) at the delivery timeout.
            self.sh.batch_done(b.permits);
            return;
        }
        self.sh.counters.failed(u64::from(b.records));
        if let Some(cb) = &self.sh.circuit {
            cb.record(true, u64::from(b.records));
        }
        tracing::debug!(topic = %tp.0, partition = tp.1, error = %e, ?persistence, "batch failed");
        b.shared
            .complete(BatchOutcome::Failed(ProduceError::new(e, persistence)));
        self.sh.batch_done(b.permits);
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
        let mut waiting = Vec::new();
        for (tp, part) in self.parts.iter_mut() {
            part.retrying = false;
            part.retry_at = None;
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
            self.fail(&tp, b, fatal.clone(), p);
        }
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
            self.fail(&tp, b, closed(), p);
        }
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

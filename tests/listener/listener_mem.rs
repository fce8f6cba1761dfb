//! The listener container against an in-memory consumer: deterministic tests of the error
//! handler's semantics (retries, recovery, back-off pauses, batch failures, recovery caps,
//! attempt counts that survive a change of owner). Virtual time (`start_paused`) makes
//! back-offs instant and exact.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rekafka::listener::{
    AckMode, BatchListenerFailed, ContainerConsumer, ContainerEvent, DefaultErrorHandler,
    DeliveryAttemptHeader, DeserializationFailed, FixedBackOff, HandlerError, ListenerContainer,
    ListenerRecord, OffsetToCommit, PartitionKey, RecordPart, RecovererFn, RetryListener,
    SharedError, StopReason,
};
use rekafka::protocol::record::{Header, TimestampType};
use tokio::time::Instant;

#[derive(Clone, Debug)]
struct Rec {
    topic: Arc<str>,
    partition: i32,
    offset: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: Vec<Header>,
    bad: bool,
}

impl ListenerRecord for Rec {
    fn topic(&self) -> &str {
        &self.topic
    }
    fn partition(&self) -> i32 {
        self.partition
    }
    fn offset(&self) -> i64 {
        self.offset
    }
    fn timestamp(&self) -> i64 {
        0
    }
    fn timestamp_type(&self) -> TimestampType {
        TimestampType::CreateTime
    }
    fn key(&self) -> Option<&Bytes> {
        self.key.as_ref()
    }
    fn value(&self) -> Option<&Bytes> {
        self.value.as_ref()
    }
    fn headers(&self) -> Vec<Header> {
        self.headers.clone()
    }
    fn with_header(&self, header: Header) -> Self {
        let mut r = self.clone();
        r.headers.retain(|h| h.key() != header.key());
        r.headers.push(header);
        r
    }
    fn deserialization_failure(&self) -> Option<DeserializationFailed> {
        self.bad.then(|| DeserializationFailed {
            part: RecordPart::Value,
            message: "not JSON".into(),
            value_failure: None,
        })
    }
    fn with_deserialization_failure(&self, _: DeserializationFailed) -> Self {
        Rec {
            bad: true,
            ..self.clone()
        }
    }
}

#[derive(Default)]
struct Store {
    logs: HashMap<PartitionKey, Vec<Rec>>,
    committed: HashMap<PartitionKey, (i64, String)>,
    commits: Vec<OffsetToCommit>,
}

type Shared = Arc<Mutex<Store>>;

struct MemConsumer {
    store: Shared,
    assignment: Vec<PartitionKey>,
    positions: HashMap<PartitionKey, i64>,
    paused: HashSet<PartitionKey>,
    max_poll: usize,
    closed: Arc<AtomicU32>,
    /// `pause` does nothing: a consumer that forgets pauses (as one does whose partition was
    /// revoked and assigned again inside a poll) without telling the container.
    forget_pauses: bool,
}

impl MemConsumer {
    fn new(store: &Shared, assignment: Vec<PartitionKey>) -> Self {
        let committed = store.lock().unwrap().committed.clone();
        let positions = assignment
            .iter()
            .map(|tp| (tp.clone(), committed.get(tp).map(|c| c.0).unwrap_or(0)))
            .collect();
        MemConsumer {
            store: store.clone(),
            assignment,
            positions,
            paused: HashSet::new(),
            max_poll: 50,
            closed: Arc::new(AtomicU32::new(0)),
            forget_pauses: false,
        }
    }
}

impl ContainerConsumer for MemConsumer {
    type Record = Rec;

    async fn poll(&mut self, timeout: Duration) -> rekafka::Result<Vec<Rec>> {
        let mut out = Vec::new();
        {
            let store = self.store.lock().unwrap();
            for tp in &self.assignment {
                if self.paused.contains(tp) {
                    continue;
                }
                let pos = self.positions.get(tp).copied().unwrap_or(0);
                if let Some(log) = store.logs.get(tp) {
                    for r in log.iter().skip(pos as usize) {
                        if out.len() >= self.max_poll {
                            break;
                        }
                        out.push(r.clone());
                    }
                }
            }
        }
        for r in &out {
            self.positions
                .insert((r.topic.clone(), r.partition), r.offset + 1);
        }
        if out.is_empty() {
            tokio::time::sleep(timeout.min(Duration::from_millis(5))).await;
        } else if self.forget_pauses {
            // Records of a partition held back come at every poll: let (virtual) time pass,
            // as a real poll's round trip would, so its back-off ends.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Ok(out)
    }

    fn seek(&mut self, tp: &PartitionKey, offset: i64) -> rekafka::Result<()> {
        self.positions.insert(tp.clone(), offset);
        Ok(())
    }

    fn pause(&mut self, tps: &[PartitionKey]) -> rekafka::Result<()> {
        if self.forget_pauses {
            return Ok(());
        }
        self.paused.extend(tps.iter().cloned());
        Ok(())
    }

    fn resume(&mut self, tps: &[PartitionKey]) -> rekafka::Result<()> {
        for tp in tps {
            self.paused.remove(tp);
        }
        Ok(())
    }

    fn assignment(&self) -> Vec<PartitionKey> {
        self.assignment.clone()
    }

    async fn commit(&mut self, offsets: Vec<OffsetToCommit>) -> rekafka::Result<()> {
        let mut store = self.store.lock().unwrap();
        for o in offsets {
            store
                .committed
                .insert(o.partition.clone(), (o.offset, o.metadata.clone()));
            store.commits.push(o);
        }
        Ok(())
    }

    async fn committed(
        &mut self,
        tps: &[PartitionKey],
    ) -> rekafka::Result<Vec<(PartitionKey, Option<(i64, String)>)>> {
        let store = self.store.lock().unwrap();
        Ok(tps
            .iter()
            .map(|tp| (tp.clone(), store.committed.get(tp).cloned()))
            .collect())
    }

    fn group_id(&self) -> Option<String> {
        Some("g".into())
    }

    async fn close(&mut self) -> rekafka::Result<()> {
        self.closed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

fn tp(p: i32) -> PartitionKey {
    (Arc::from("t"), p)
}

/// A store with `per_partition` records in each of `partitions`; keys "k{i}" numbered
/// globally; records whose number is in `poison` have key "poison-{i}".
fn store(partitions: i32, per_partition: i64, poison: &HashSet<i64>, bad: &HashSet<i64>) -> Shared {
    let mut s = Store::default();
    let mut n = 0i64;
    for p in 0..partitions {
        let log = (0..per_partition)
            .map(|o| {
                let i = n;
                n += 1;
                let key = if poison.contains(&i) {
                    format!("poison-{i}")
                } else {
                    format!("k{i}")
                };
                Rec {
                    topic: Arc::from("t"),
                    partition: p,
                    offset: o,
                    key: Some(Bytes::from(key)),
                    value: Some(Bytes::from(format!("v{i}"))),
                    headers: vec![Header::new("h", Some(&b"1"[..]))],
                    bad: bad.contains(&i),
                }
            })
            .collect();
        s.logs.insert(tp(p), log);
    }
    Arc::new(Mutex::new(s))
}

fn is_poison(r: &Rec) -> bool {
    r.key.as_deref().is_some_and(|k| k.starts_with(b"poison"))
}

#[derive(Debug, thiserror::Error)]
#[error("poison record")]
struct Poison;

#[derive(Debug, thiserror::Error)]
#[error("invalid input")]
struct Invalid;

#[derive(Default)]
struct Counts {
    failed: AtomicU32,
    recovered: AtomicU32,
    recovery_failed: AtomicU32,
}

struct Counter(Arc<Counts>);

impl RetryListener<Rec> for Counter {
    fn failed_delivery(&self, _: &Rec, _: &SharedError, _: u32) {
        self.0.failed.fetch_add(1, Ordering::SeqCst);
    }
    fn recovered(&self, _: &Rec, _: &SharedError) {
        self.0.recovered.fetch_add(1, Ordering::SeqCst);
    }
    fn recovery_failed(&self, _: &Rec, _: &SharedError, _: &SharedError) {
        self.0.recovery_failed.fetch_add(1, Ordering::SeqCst);
    }
}

type Log<T> = Arc<Mutex<Vec<T>>>;

async fn wait_until(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn poison_run(ack_mode: AckMode) {
    poison_run_with(ack_mode, 1).await;
}

async fn poison_run_with(ack_mode: AckMode, concurrency: usize) {
    let poison: HashSet<i64> = (0..1000).filter(|i| i % 100 == 37).collect();
    let s = store(4, 250, &poison, &HashSet::new());
    let consumer = MemConsumer::new(&s, (0..4).map(tp).collect());
    let handled: Log<(i32, i64)> = Arc::default();
    let attempts: Log<(i64, i32, u32)> = Arc::default();
    let recovered: Log<(i32, i64)> = Arc::default();
    let counts = Arc::new(Counts::default());
    let (h, a, rc) = (handled.clone(), attempts.clone(), recovered.clone());
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: Rec| {
            let (h, a) = (h.clone(), a.clone());
            async move {
                let attempt = r
                    .headers
                    .iter()
                    .find(|x| x.key() == "kafka_deliveryAttempt")
                    .and_then(|x| x.value())
                    .and_then(|v| <[u8; 4]>::try_from(v).ok())
                    .map(u32::from_be_bytes)
                    .unwrap_or(0);
                if is_poison(&r) {
                    a.lock().unwrap().push((r.offset, r.partition, attempt));
                    return Err(Box::new(Poison) as HandlerError);
                }
                h.lock().unwrap().push((r.partition, r.offset));
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(10), 3))
                .delivery_attempt_header(DeliveryAttemptHeader::On)
                .retry_listener(Counter(counts.clone()))
                .recoverer(RecovererFn(move |r: Rec, _e: SharedError| {
                    let rc = rc.clone();
                    async move {
                        rc.lock().unwrap().push((r.partition, r.offset));
                        Ok::<(), HandlerError>(())
                    }
                })),
        )
        .ack_mode(ack_mode)
        .concurrency(concurrency)
        .poll_timeout(Duration::from_millis(50))
        .start()
        .unwrap();
    wait_until(
        || {
            let c = s.lock().unwrap();
            (0..4).all(|p| c.committed.get(&tp(p)).map(|x| x.0) == Some(250))
        },
        "all offsets committed",
    )
    .await;
    assert_eq!(handle.stop().await, StopReason::Normal);

    let handled = handled.lock().unwrap().clone();
    assert_eq!(handled.len(), 990, "each good record handled exactly once");
    let unique: HashSet<_> = handled.iter().collect();
    assert_eq!(unique.len(), 990);
    // Per partition, handled in offset order.
    for p in 0..4 {
        let offs: Vec<i64> = handled.iter().filter(|x| x.0 == p).map(|x| x.1).collect();
        assert!(
            offs.windows(2).all(|w| w[0] < w[1]),
            "partition {p} in order"
        );
    }
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts.len(), 40, "10 poison records x 4 deliveries");
    let mut by_record: HashMap<(i32, i64), Vec<u32>> = HashMap::new();
    for (o, p, a) in attempts {
        by_record.entry((p, o)).or_default().push(a);
    }
    assert_eq!(by_record.len(), 10);
    for v in by_record.values() {
        assert_eq!(v, &vec![1, 2, 3, 4], "delivery-attempt header counts 1..4");
    }
    let recovered = recovered.lock().unwrap().clone();
    assert_eq!(recovered.len(), 10);
    assert_eq!(
        recovered.iter().collect::<HashSet<_>>(),
        by_record.keys().collect::<HashSet<_>>()
    );
    assert_eq!(counts.failed.load(Ordering::SeqCst), 40);
    assert_eq!(counts.recovered.load(Ordering::SeqCst), 10);
    assert_eq!(counts.recovery_failed.load(Ordering::SeqCst), 0);
}

/// A consumer that forgets the back-off pause (and cannot say so through its assignment ids)
/// keeps returning the records after a failed one while its partition backs off. The container
/// used to drop them (the partition was "blocked") without rewinding, so the records between
/// the failed one and the poll's end were never handled and later commits passed them. They
/// must come again: every record is handled or recovered, the poison one after its retries,
/// with one worker and with several.
#[tokio::test(start_paused = true)]
async fn records_of_a_partition_backing_off_are_held_back_not_dropped() {
    for concurrency in [1usize, 3] {
        let poison: HashSet<i64> = [3, 12].into_iter().collect();
        let s = store(2, 20, &poison, &HashSet::new());
        let mut consumer = MemConsumer::new(&s, (0..2).map(tp).collect());
        consumer.forget_pauses = true;
        consumer.max_poll = 7;
        let handled: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
        let recovered: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
        let attempts = Arc::new(AtomicU32::new(0));
        let (h, rc, a) = (handled.clone(), recovered.clone(), attempts.clone());
        let handle = ListenerContainer::builder(consumer)
            .record_handler(move |r: Rec| {
                let (h, a) = (h.clone(), a.clone());
                async move {
                    if is_poison(&r) {
                        a.fetch_add(1, Ordering::SeqCst);
                        return Err(Box::new(Poison) as HandlerError);
                    }
                    h.lock().unwrap().push((r.partition, r.offset));
                    Ok(())
                }
            })
            .error_handler(
                DefaultErrorHandler::new()
                    .back_off(FixedBackOff::new(Duration::from_millis(200), 2))
                    .recoverer(RecovererFn(move |r: Rec, _e: SharedError| {
                        let rc = rc.clone();
                        async move {
                            rc.lock().unwrap().push((r.partition, r.offset));
                            Ok::<(), HandlerError>(())
                        }
                    })),
            )
            .ack_mode(AckMode::Record)
            .concurrency(concurrency)
            .poll_timeout(Duration::from_millis(50))
            .start()
            .unwrap();
        let all_committed = || {
            let c = s.lock().unwrap();
            (0..2).all(|p| c.committed.get(&tp(p)).map(|x| x.0) == Some(20))
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !all_committed() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(handle.stop().await, StopReason::Normal);
        let mut done: Vec<(i32, i64)> = handled.lock().unwrap().clone();
        done.extend(recovered.lock().unwrap().iter().copied());
        let committed = s.lock().unwrap().committed.clone();
        let lost: Vec<(i32, i64)> = (0..2)
            .flat_map(|p| {
                let end = committed.get(&tp(p)).map_or(0, |c| c.0);
                (0..end).map(move |o| (p, o))
            })
            .filter(|r| !done.contains(r))
            .collect();
        assert!(
            lost.is_empty(),
            "concurrency {concurrency}: below the committed offset but never handled nor \
             recovered: {lost:?}"
        );
        assert!(
            all_committed(),
            "concurrency {concurrency}: committed {committed:?}, not 20 everywhere"
        );
        let mut recovered = recovered.lock().unwrap().clone();
        recovered.sort();
        assert_eq!(
            recovered,
            vec![(0, 3), (0, 12)],
            "concurrency {concurrency}"
        );
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            6,
            "concurrency {concurrency}: 2 poison records x 3 deliveries"
        );
        let commits = s.lock().unwrap().commits.clone();
        for p in 0..2 {
            let offs: Vec<i64> = commits
                .iter()
                .filter(|c| c.partition == tp(p))
                .map(|c| c.offset)
                .collect();
            assert!(
                offs.windows(2).all(|w| w[0] <= w[1]),
                "concurrency {concurrency}: partition {p}'s commits never go back: {offs:?}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn poison_records_retried_then_recovered_record_ack() {
    poison_run(AckMode::Record).await;
}

#[tokio::test(start_paused = true)]
async fn poison_records_retried_then_recovered_batch_ack() {
    poison_run(AckMode::Batch).await;
}

#[tokio::test(start_paused = true)]
async fn not_retryable_and_undeserializable_recovered_on_first_failure() {
    let poison: HashSet<i64> = [3].into();
    let bad: HashSet<i64> = [6].into();
    let s = store(1, 10, &poison, &bad);
    let consumer = MemConsumer::new(&s, vec![tp(0)]);
    let calls: Log<i64> = Arc::default();
    let recovered: Log<(i64, String, Option<Bytes>)> = Arc::default();
    let (c, rc) = (calls.clone(), recovered.clone());
    let mut eh =
        DefaultErrorHandler::new().recoverer(RecovererFn(move |r: Rec, e: SharedError| {
            let rc = rc.clone();
            async move {
                rc.lock()
                    .unwrap()
                    .push((r.offset, e.to_string(), r.value.clone()));
                Ok::<(), HandlerError>(())
            }
        }));
    eh.classifier_mut().add_not_retryable::<Invalid>();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: Rec| {
            let c = c.clone();
            async move {
                c.lock().unwrap().push(r.offset);
                if is_poison(&r) {
                    return Err(Box::new(Invalid) as HandlerError);
                }
                Ok(())
            }
        })
        .error_handler(eh)
        .start()
        .unwrap();
    wait_until(
        || s.lock().unwrap().committed.get(&tp(0)).map(|x| x.0) == Some(10),
        "commit",
    )
    .await;
    handle.stop().await;
    let calls = calls.lock().unwrap().clone();
    // Offset 3 delivered once (not retryable); offset 6 never reaches the handler.
    assert_eq!(calls, vec![0, 1, 2, 3, 4, 5, 7, 8, 9]);
    let recovered = recovered.lock().unwrap().clone();
    assert_eq!(recovered.len(), 2);
    assert_eq!(recovered[0].0, 3);
    assert_eq!(recovered[1].0, 6);
    assert!(recovered[1].1.contains("not JSON"));
    assert_eq!(
        recovered[1].2.as_deref(),
        Some(&b"v6"[..]),
        "raw bytes kept"
    );
}

#[tokio::test(start_paused = true)]
async fn back_off_pauses_only_the_failing_partition() {
    let poison: HashSet<i64> = [0].into(); // partition 0, offset 0
    let s = store(2, 5, &poison, &HashSet::new());
    let consumer = MemConsumer::new(&s, vec![tp(0), tp(1)]);
    let handled: Log<(i32, i64, Instant)> = Arc::default();
    let h = handled.clone();
    let fail_once = Arc::new(AtomicU32::new(0));
    let f1 = fail_once.clone();
    let start = Instant::now();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: Rec| {
            let (h, f1) = (h.clone(), f1.clone());
            async move {
                if is_poison(&r) && f1.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(Box::new(Poison) as HandlerError);
                }
                h.lock()
                    .unwrap()
                    .push((r.partition, r.offset, Instant::now()));
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new().back_off(FixedBackOff::new(Duration::from_secs(5), 1)),
        )
        .poll_timeout(Duration::from_secs(1))
        .start()
        .unwrap();
    wait_until(|| handled.lock().unwrap().len() == 10, "all handled").await;
    handle.stop().await;
    let handled = handled.lock().unwrap().clone();
    let p1_last = handled
        .iter()
        .filter(|x| x.0 == 1)
        .map(|x| x.2)
        .max()
        .unwrap();
    let p0_first = handled
        .iter()
        .filter(|x| x.0 == 0)
        .map(|x| x.2)
        .min()
        .unwrap();
    assert!(
        p1_last - start < Duration::from_millis(100),
        "partition 1 flows during partition 0's back-off"
    );
    let waited = p0_first - start;
    assert!(
        waited >= Duration::from_secs(5) && waited < Duration::from_millis(5100),
        "partition 0 resumes after its 5 s back-off, got {waited:?}"
    );
}

#[tokio::test]
async fn stop_during_long_back_off_returns_quickly() {
    let poison: HashSet<i64> = [0].into();
    let s = store(1, 3, &poison, &HashSet::new());
    let consumer = MemConsumer::new(&s, vec![tp(0)]);
    let closed = consumer.closed.clone();
    let failed = Arc::new(AtomicU32::new(0));
    let f = failed.clone();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: Rec| {
            let f = f.clone();
            async move {
                if is_poison(&r) {
                    f.fetch_add(1, Ordering::SeqCst);
                    return Err(Box::new(Poison) as HandlerError);
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new().back_off(FixedBackOff::new(Duration::from_secs(10), 5)),
        )
        .start()
        .unwrap();
    wait_until(|| failed.load(Ordering::SeqCst) == 1, "first failure").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let t = std::time::Instant::now();
    assert_eq!(handle.stop().await, StopReason::Normal);
    // Without waiting for the 10 s back-off (the margin is for a loaded machine).
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "stop took {:?}",
        t.elapsed()
    );
    assert_eq!(closed.load(Ordering::SeqCst), 1, "consumer closed");
    // Nothing was committed past the failed record.
    let committed = s.lock().unwrap().committed.get(&tp(0)).cloned();
    assert!(committed.as_ref().is_none_or(|c| c.0 == 0), "{committed:?}");
}

#[tokio::test(start_paused = true)]
async fn batch_failure_at_index_commits_before_and_recovers_failed() {
    let poison: HashSet<i64> = [4].into();
    let s = store(1, 10, &poison, &HashSet::new());
    let mut consumer = MemConsumer::new(&s, vec![tp(0)]);
    consumer.max_poll = 10;
    let seen: Log<Vec<i64>> = Arc::default();
    let done: Log<i64> = Arc::default();
    let recovered: Log<i64> = Arc::default();
    let (sn, d, rc) = (seen.clone(), done.clone(), recovered.clone());
    let handle = ListenerContainer::builder(consumer)
        .batch_handler(move |batch: Vec<Rec>| {
            let (sn, d) = (sn.clone(), d.clone());
            async move {
                sn.lock()
                    .unwrap()
                    .push(batch.iter().map(|r| r.offset).collect());
                for (i, r) in batch.iter().enumerate() {
                    if is_poison(r) {
                        return Err(
                            Box::new(BatchListenerFailed::at_index(i, Poison)) as HandlerError
                        );
                    }
                    d.lock().unwrap().push(r.offset);
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(10), 2))
                .recoverer(RecovererFn(move |r: Rec, _| {
                    let rc = rc.clone();
                    async move {
                        rc.lock().unwrap().push(r.offset);
                        Ok::<(), HandlerError>(())
                    }
                })),
        )
        .start()
        .unwrap();
    wait_until(
        || s.lock().unwrap().committed.get(&tp(0)).map(|x| x.0) == Some(10),
        "commit",
    )
    .await;
    handle.stop().await;
    let seen = seen.lock().unwrap().clone();
    // First batch 0..10 fails at index 4 (offset 4): 0..4 committed, offset 4 retried twice as
    // the head of the re-fetched batch, then recovered; 5..10 follow.
    assert_eq!(seen[0], (0..10).collect::<Vec<_>>());
    assert_eq!(seen[1][0], 4);
    assert_eq!(seen[2][0], 4);
    let done = done.lock().unwrap().clone();
    let distinct: Vec<i64> = {
        let mut v = done.clone();
        v.dedup();
        v
    };
    assert_eq!(
        done.iter().filter(|o| **o < 4).count(),
        4,
        "records before the failed one handled exactly once"
    );
    assert_eq!(recovered.lock().unwrap().clone(), vec![4]);
    assert!(distinct.contains(&9));
    let commits = s.lock().unwrap().commits.clone();
    assert_eq!(
        commits.first().map(|c| c.offset),
        Some(4),
        "records before k committed first"
    );
}

#[tokio::test(start_paused = true)]
async fn whole_batch_retry_then_per_record_recovery() {
    let s = store(2, 3, &HashSet::new(), &HashSet::new());
    let mut consumer = MemConsumer::new(&s, vec![tp(0), tp(1)]);
    consumer.max_poll = 100;
    let calls = Arc::new(AtomicU32::new(0));
    let recovered: Log<(i32, i64)> = Arc::default();
    let (c, rc) = (calls.clone(), recovered.clone());
    let handle = ListenerContainer::builder(consumer)
        .batch_handler(move |_batch: Vec<Rec>| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                Err(Box::new(Poison) as HandlerError)
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_secs(20), 2))
                .recoverer(RecovererFn(move |r: Rec, _| {
                    let rc = rc.clone();
                    async move {
                        rc.lock().unwrap().push((r.partition, r.offset));
                        Ok::<(), HandlerError>(())
                    }
                })),
        )
        .start()
        .unwrap();
    wait_until(
        || {
            let st = s.lock().unwrap();
            st.committed.get(&tp(0)).map(|x| x.0) == Some(3)
                && st.committed.get(&tp(1)).map(|x| x.0) == Some(3)
        },
        "commit",
    )
    .await;
    handle.stop().await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        3,
        "1 delivery + 2 retries of the batch"
    );
    let mut rec = recovered.lock().unwrap().clone();
    rec.sort();
    assert_eq!(rec, vec![(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
}

#[tokio::test(start_paused = true)]
async fn attempts_survive_a_change_of_owner() {
    let poison: HashSet<i64> = [2].into();
    let s = store(1, 5, &poison, &HashSet::new());
    let deliveries: Log<(char, u32)> = Arc::default();
    let recovered: Log<i64> = Arc::default();
    let make = |who: char| {
        let consumer = MemConsumer::new(&s, vec![tp(0)]);
        let (d, rc) = (deliveries.clone(), recovered.clone());
        ListenerContainer::builder(consumer)
            .record_handler(move |r: Rec| {
                let d = d.clone();
                async move {
                    if is_poison(&r) {
                        let a = r
                            .headers
                            .iter()
                            .find(|x| x.key() == "kafka_deliveryAttempt")
                            .and_then(|x| x.value())
                            .and_then(|v| <[u8; 4]>::try_from(v).ok())
                            .map(u32::from_be_bytes)
                            .unwrap_or(0);
                        d.lock().unwrap().push((who, a));
                        return Err(Box::new(Poison) as HandlerError);
                    }
                    Ok(())
                }
            })
            .error_handler(
                DefaultErrorHandler::new()
                    .back_off(FixedBackOff::new(Duration::from_secs(1), 4))
                    .delivery_attempt_header(DeliveryAttemptHeader::On)
                    .recoverer(RecovererFn(move |r: Rec, _| {
                        let rc = rc.clone();
                        async move {
                            rc.lock().unwrap().push(r.offset);
                            Ok::<(), HandlerError>(())
                        }
                    })),
            )
            .start()
            .unwrap()
    };
    let a = make('A');
    wait_until(|| deliveries.lock().unwrap().len() == 2, "A fails twice").await;
    a.stop().await;
    let b = make('B');
    wait_until(
        || s.lock().unwrap().committed.get(&tp(0)).map(|x| x.0) == Some(5),
        "B finishes",
    )
    .await;
    b.stop().await;
    let d = deliveries.lock().unwrap().clone();
    // 5 deliveries in all (4 retries): A saw 1 and 2, B continues at 3.
    assert_eq!(d, vec![('A', 1), ('A', 2), ('B', 3), ('B', 4), ('B', 5)]);
    assert_eq!(recovered.lock().unwrap().clone(), vec![2]);
}

#[tokio::test(start_paused = true)]
async fn failing_recoverer_is_capped_then_heals() {
    let poison: HashSet<i64> = [1].into();
    let s = store(2, 4, &poison, &HashSet::new());
    let consumer = MemConsumer::new(&s, vec![tp(0), tp(1)]);
    let heal = Arc::new(AtomicU32::new(0)); // 0 = failing
    let attempts = Arc::new(AtomicU32::new(0));
    let recovered: Log<i64> = Arc::default();
    let (hl, at, rc) = (heal.clone(), attempts.clone(), recovered.clone());
    let handle = ListenerContainer::builder(consumer)
        .record_handler(|r: Rec| async move {
            if is_poison(&r) {
                return Err(Box::new(Poison) as HandlerError);
            }
            Ok(())
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::no_retries())
                .max_recovery_failures(Some(5))
                .recovery_retry_interval(Duration::from_millis(100))
                .halt_probe_interval(Duration::from_secs(10))
                .recoverer(RecovererFn(move |r: Rec, _| {
                    let (hl, at, rc) = (hl.clone(), at.clone(), rc.clone());
                    async move {
                        at.fetch_add(1, Ordering::SeqCst);
                        if hl.load(Ordering::SeqCst) == 0 {
                            return Err::<(), HandlerError>("DLT down".into());
                        }
                        rc.lock().unwrap().push(r.offset);
                        Ok(())
                    }
                })),
        )
        .start()
        .unwrap();
    let mut events = handle.events();
    let halted = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Ok(ContainerEvent::RecoveryHalted {
                failures, offset, ..
            }) = events.recv().await
            {
                return (failures, offset);
            }
        }
    })
    .await
    .expect("halt event");
    assert_eq!(halted, (5, 1));
    assert_eq!(attempts.load(Ordering::SeqCst), 5);
    // While halted: idle (no further recovery attempts until the probe), nothing committed
    // past the record, and partition 1 fully handled.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(attempts.load(Ordering::SeqCst), 5, "no hot loop");
    {
        let st = s.lock().unwrap();
        assert_eq!(st.committed.get(&tp(0)).map(|x| x.0), Some(1));
        assert_eq!(st.committed.get(&tp(1)).map(|x| x.0), Some(4));
    }
    heal.store(1, Ordering::SeqCst);
    wait_until(
        || s.lock().unwrap().committed.get(&tp(0)).map(|x| x.0) == Some(4),
        "healed",
    )
    .await;
    handle.stop().await;
    assert_eq!(recovered.lock().unwrap().clone(), vec![1]);
}

#[tokio::test(start_paused = true)]
async fn poison_records_with_partitions_handled_concurrently() {
    poison_run_with(AckMode::Batch, 4).await;
}

#[tokio::test(start_paused = true)]
async fn concurrency_overlaps_partitions_but_keeps_each_in_order() {
    let s = store(4, 5, &HashSet::new(), &HashSet::new());
    let consumer = MemConsumer::new(&s, (0..4).map(tp).collect());
    let log: Log<(i32, i64)> = Arc::default();
    let in_flight = Arc::new(AtomicU32::new(0));
    let max_in_flight = Arc::new(AtomicU32::new(0));
    let (l, inf, mx) = (log.clone(), in_flight.clone(), max_in_flight.clone());
    let start = Instant::now();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: Rec| {
            let (l, inf, mx) = (l.clone(), inf.clone(), mx.clone());
            async move {
                let now = inf.fetch_add(1, Ordering::SeqCst) + 1;
                mx.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                inf.fetch_sub(1, Ordering::SeqCst);
                l.lock().unwrap().push((r.partition, r.offset));
                Ok(())
            }
        })
        .concurrency(4)
        .start()
        .unwrap();
    wait_until(|| log.lock().unwrap().len() == 20, "all handled").await;
    let took = Instant::now() - start;
    handle.stop().await;
    assert_eq!(
        max_in_flight.load(Ordering::SeqCst),
        4,
        "four partitions at once"
    );
    assert!(
        took < Duration::from_millis(1000),
        "5 x 100 ms per partition in parallel, took {took:?}"
    );
    let log = log.lock().unwrap().clone();
    for p in 0..4 {
        let offs: Vec<i64> = log.iter().filter(|x| x.0 == p).map(|x| x.1).collect();
        assert_eq!(offs, vec![0, 1, 2, 3, 4], "partition {p} in order");
    }
    let st = s.lock().unwrap();
    assert!((0..4).all(|p| st.committed.get(&tp(p)).map(|x| x.0) == Some(5)));
}

#[tokio::test(start_paused = true)]
async fn count_and_manual_ack_modes_commit_what_they_should() {
    // Count(3): commits after every third handled record.
    let s = store(1, 7, &HashSet::new(), &HashSet::new());
    let mut consumer = MemConsumer::new(&s, vec![tp(0)]);
    consumer.max_poll = 100;
    let handle = ListenerContainer::builder(consumer)
        .record_handler(|_r: Rec| async move { Ok(()) })
        .ack_mode(AckMode::Count(3))
        .start()
        .unwrap();
    wait_until(|| s.lock().unwrap().commits.len() >= 2, "two count commits").await;
    handle.stop().await;
    let commits: Vec<i64> = s.lock().unwrap().commits.iter().map(|c| c.offset).collect();
    assert_eq!(commits, vec![3, 6, 7], "every 3 records, the rest on stop");

    // Manual: only acknowledged records are committed (odd offsets are acked here).
    let s = store(1, 6, &HashSet::new(), &HashSet::new());
    let consumer = MemConsumer::new(&s, vec![tp(0)]);
    let handled = Arc::new(AtomicU32::new(0));
    let h = handled.clone();
    let handle = ListenerContainer::builder(consumer)
        .record_handler_with_ack(move |r: Rec, ack| {
            let h = h.clone();
            async move {
                if r.offset < 3 {
                    ack.acknowledge();
                }
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .ack_mode(AckMode::Manual)
        .start()
        .unwrap();
    wait_until(|| handled.load(Ordering::SeqCst) == 6, "all handled").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    handle.stop().await;
    assert_eq!(
        s.lock().unwrap().committed.get(&tp(0)).map(|c| c.0),
        Some(3),
        "records 3..6 were never acknowledged"
    );
}

#[tokio::test(start_paused = true)]
async fn listener_level_handlers_handle_or_pass_on_and_may_seek() {
    // Records 2 and 5 fail. The listener-level handler handles 2 (treated as processed) and
    // passes 5 on to the container's error handler (recovered there, no retries).
    let poison: HashSet<i64> = [2, 5].into();
    let s = store(1, 8, &poison, &HashSet::new());
    let consumer = MemConsumer::new(&s, vec![tp(0)]);
    let recovered: Log<i64> = Arc::default();
    let rc = recovered.clone();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(|r: Rec| async move {
            if is_poison(&r) {
                return Err(Box::new(Poison) as HandlerError);
            }
            Ok(())
        })
        .listener_error_handler(|r: &Rec, e| if r.offset == 2 { Ok(()) } else { Err(e) })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::no_retries())
                .recoverer(RecovererFn(move |r: Rec, _| {
                    let rc = rc.clone();
                    async move {
                        rc.lock().unwrap().push(r.offset);
                        Ok::<(), HandlerError>(())
                    }
                })),
        )
        .start()
        .unwrap();
    wait_until(
        || s.lock().unwrap().committed.get(&tp(0)).map(|c| c.0) == Some(8),
        "all committed",
    )
    .await;
    handle.stop().await;
    assert_eq!(
        recovered.lock().unwrap().clone(),
        vec![5],
        "2 handled at listener level"
    );

    // The consumer-aware variant seeks past a bad stretch: on offset 2 it skips to 6.
    let poison: HashSet<i64> = [2].into();
    let s = store(1, 8, &poison, &HashSet::new());
    let consumer = MemConsumer::new(&s, vec![tp(0)]);
    let seen: Log<i64> = Arc::default();
    let sn = seen.clone();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: Rec| {
            let sn = sn.clone();
            async move {
                sn.lock().unwrap().push(r.offset);
                if is_poison(&r) {
                    return Err(Box::new(Poison) as HandlerError);
                }
                Ok(())
            }
        })
        .consumer_aware_listener_error_handler(|r: &Rec, _e, seeks| {
            seeks.seek(&r.topic, r.partition, 6);
            Ok(())
        })
        .start()
        .unwrap();
    wait_until(
        || s.lock().unwrap().committed.get(&tp(0)).map(|c| c.0) == Some(8),
        "all committed",
    )
    .await;
    handle.stop().await;
    assert_eq!(seen.lock().unwrap().clone(), vec![0, 1, 2, 6, 7]);
}

/// A recoverer whose recoveries stay in flight until the test settles them: `Ok` or `Err` per
/// offset, from a table the test fills.
struct InFlightRecoverer {
    /// Offsets recovery was started for, in order.
    started: Log<i64>,
    /// The outcome of an offset's next recovery attempt once known (absent: in flight).
    outcomes: Arc<Mutex<HashMap<i64, bool>>>,
}

impl rekafka::listener::Recoverer<Rec> for InFlightRecoverer {
    fn recover<'a>(
        &'a self,
        record: &'a Rec,
        error: &'a SharedError,
    ) -> rekafka::listener::BoxFuture<'a, Result<(), HandlerError>> {
        let started = self.start_recovery(record, error);
        Box::pin(async move {
            match started.await? {
                rekafka::listener::Recovery::InFlight(done) => done.await,
                _ => Ok(()),
            }
        })
    }

    fn start_recovery<'a>(
        &'a self,
        record: &'a Rec,
        _error: &'a SharedError,
    ) -> rekafka::listener::BoxFuture<'a, Result<rekafka::listener::Recovery, HandlerError>> {
        let offset = record.offset;
        self.started.lock().unwrap().push(offset);
        let outcomes = self.outcomes.clone();
        Box::pin(async move {
            Ok(rekafka::listener::Recovery::InFlight(Box::pin(
                async move {
                    loop {
                        // Each outcome is for one attempt.
                        let outcome = outcomes.lock().unwrap().remove(&offset);
                        if let Some(ok) = outcome {
                            return if ok {
                                Ok(())
                            } else {
                                Err::<(), HandlerError>("dead-letter topic refused it".into())
                            };
                        }
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                },
            )))
        })
    }
}

#[tokio::test(start_paused = true)]
async fn recoveries_in_flight_hold_commits_and_a_failed_one_rewinds_without_recovering_twice() {
    // Partition 0: offsets 2 and 5 are poison (of 0..8); partition 1: all good.
    let poison: HashSet<i64> = [2, 5].into();
    let s = store(2, 8, &poison, &HashSet::new());
    let consumer = MemConsumer::new(&s, vec![tp(0), tp(1)]);
    let started: Log<i64> = Arc::default();
    let outcomes: Arc<Mutex<HashMap<i64, bool>>> = Arc::default();
    let handled: Log<(i32, i64)> = Arc::default();
    let counts = Arc::new(Counts::default());
    let h = handled.clone();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: Rec| {
            let h = h.clone();
            async move {
                if is_poison(&r) {
                    return Err(Box::new(Poison) as HandlerError);
                }
                h.lock().unwrap().push((r.partition, r.offset));
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::no_retries())
                .recovery_retry_interval(Duration::from_millis(100))
                .retry_listener(Counter(counts.clone()))
                .recoverer(InFlightRecoverer {
                    started: started.clone(),
                    outcomes: outcomes.clone(),
                }),
        )
        .start()
        .unwrap();
    // Both recoveries start without waiting for each other; the records after them are
    // handled meanwhile, but partition 0 is committed no further than the first in flight.
    wait_until(
        || started.lock().unwrap().len() == 2,
        "two recoveries started",
    )
    .await;
    wait_until(|| handled.lock().unwrap().len() == 14, "the good records").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    {
        let st = s.lock().unwrap();
        assert!(
            st.committed.get(&tp(0)).is_none_or(|c| c.0 <= 2),
            "committed past a recovery in flight: {:?}",
            st.committed.get(&tp(0))
        );
        assert_eq!(st.committed.get(&tp(1)).map(|c| c.0), Some(8));
    }
    assert_eq!(counts.recovered.load(Ordering::SeqCst), 0);
    // The later recovery completes; the earlier one fails: the partition goes back to 2.
    outcomes.lock().unwrap().insert(5, true);
    tokio::time::sleep(Duration::from_millis(20)).await;
    outcomes.lock().unwrap().insert(2, false);
    wait_until(
        || counts.recovery_failed.load(Ordering::SeqCst) == 1,
        "a recovery failure",
    )
    .await;
    // Redelivered from 2: recovery starts again for 2 only (5's dead letter is written, so 5
    // is skipped when it comes again), and this time it completes.
    wait_until(
        || started.lock().unwrap().len() == 3,
        "recovery started again",
    )
    .await;
    assert_eq!(started.lock().unwrap().clone(), vec![2, 5, 2]);
    outcomes.lock().unwrap().insert(2, true);
    wait_until(
        || s.lock().unwrap().committed.get(&tp(0)).map(|c| c.0) == Some(8),
        "partition 0 committed",
    )
    .await;
    handle.stop().await;
    assert_eq!(
        started.lock().unwrap().clone(),
        vec![2, 5, 2],
        "5 recovered once"
    );
    assert_eq!(counts.recovered.load(Ordering::SeqCst), 2);
    // The good records after 2 were handled before the failure was known and again after the
    // rewind: at least once each, never skipped.
    let handled = handled.lock().unwrap().clone();
    for o in [0, 1, 3, 4, 6, 7] {
        assert!(handled.contains(&(0, o)), "{o} never handled: {handled:?}");
    }
    assert_eq!(handled.iter().filter(|(p, _)| *p == 1).count(), 8);
}

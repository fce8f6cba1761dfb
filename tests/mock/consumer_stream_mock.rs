//! Stream ergonomics and cancel safety of the consumer (issue 20), on the embedded
//! [`MockCluster`]: `while let Some(r) = stream.next().await` with `StreamExt`, `commit_record`
//! (offset + 1, that partition only), `seek_to_timestamp` and `seek_from_end`, a dropped stream
//! giving back what it had not handed out, and polls cancelled over and over (timeouts and
//! `select!`) while a second member joins and leaves a cooperative group: no record lost, none
//! duplicated, positions and commits at the end of every partition.
//!
//! ```text
//! cargo test --features mock --test mock consumer_stream_mock::
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rekafka::admin::Admin;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{
    AutoCommit, BoxFuture, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset,
    RebalanceListener, StartOffset, TopicPartition,
};
use rekafka::group::CooperativeStickyAssignor;
use rekafka::mock::MockCluster;
use rekafka::producer::{Producer, ProducerConfig, Record};

async fn cluster(mock: &MockCluster) -> Cluster {
    Cluster::connect(ClusterConfig::new(mock.broker_addrs()))
        .await
        .expect("connect")
}

fn assign_config() -> ConsumerConfig {
    ConsumerConfig::new()
        .with_auto_commit(AutoCommit::Disabled)
        .with_fetch_max_wait(Duration::from_millis(50))
}

fn group_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_session_timeout(Duration::from_secs(6))
        .with_heartbeat_interval(Duration::from_millis(300))
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(50))
}

/// Seeds `n` records `v<i>` into one partition.
fn seed(mock: &MockCluster, topic: &str, partition: i32, from: usize, n: usize) {
    let vals: Vec<String> = (from..from + n).map(|i| format!("v{i}")).collect();
    let kv: Vec<_> = vals.iter().map(|v| (None, Some(v.as_bytes()))).collect();
    mock.append_records(topic, partition, &kv).unwrap();
}

fn text(r: &ConsumerRecord) -> String {
    String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_ext_next_reads_every_record_in_order_and_ends_when_closed() {
    let mock = MockCluster::builder().topic("t", 2).start().await.unwrap();
    seed(&mock, "t", 0, 0, 40);
    seed(&mock, "t", 1, 0, 25);
    let c = Consumer::new(cluster(&mock).await, assign_config()).unwrap();
    c.assign((0..2).map(|p| (TopicPartition::new("t", p), StartOffset::Beginning)))
        .unwrap();
    let mut got: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    let mut stream = c.stream();
    let mut n = 0;
    while let Some(r) = stream.next().await {
        let r = r.expect("record");
        got.entry(r.partition)
            .or_default()
            .push((r.offset, text(&r)));
        n += 1;
        if n == 65 {
            break;
        }
    }
    for (p, want) in [(0, 40), (1, 25)] {
        let expect: Vec<(i64, String)> = (0..want).map(|i| (i as i64, format!("v{i}"))).collect();
        assert_eq!(
            got[&p], expect,
            "partition {p}: every record once, in order"
        );
    }
    c.close().await.unwrap();
    assert!(stream.next().await.is_none(), "the stream ends on close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_record_commits_the_next_offset_of_that_partition_only() {
    let mock = MockCluster::builder().topic("t", 2).start().await.unwrap();
    seed(&mock, "t", 0, 0, 10);
    seed(&mock, "t", 1, 0, 10);
    let c = Consumer::new(
        cluster(&mock).await,
        group_config("gcommitrec").with_auto_commit(AutoCommit::Disabled),
    )
    .unwrap();
    c.subscribe(["t"]).unwrap();
    let mut stream = c.stream();
    let mut seen = 0;
    let mut picked = None;
    while seen < 20 {
        let r = stream.next().await.expect("open").expect("record");
        seen += 1;
        if r.partition == 0 && r.offset == 6 {
            picked = Some(r);
        }
    }
    let r = picked.expect("record 0@6");
    c.commit_record(&r).await.unwrap();
    assert_eq!(mock.committed_offset("gcommitrec", "t", 0), Some(7));
    assert_eq!(
        mock.committed_offset("gcommitrec", "t", 1),
        None,
        "the other partition's position is not committed"
    );
    let committed = c.committed(&[TopicPartition::new("t", 0)]).await.unwrap();
    let o = committed[&TopicPartition::new("t", 0)]
        .clone()
        .expect("committed");
    assert_eq!(o.offset, 7);
    assert_eq!(o.leader_epoch, r.leader_epoch);
    drop(stream);
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seek_to_timestamp_and_seek_from_end() {
    let mock = MockCluster::builder().topic("t", 1).start().await.unwrap();
    let producer = Producer::new(cluster(&mock).await, ProducerConfig::default())
        .await
        .unwrap();
    // Ten records with timestamps 1000, 2000, .., 10000.
    for i in 0..10i64 {
        let d = producer
            .send(
                Record::new("t")
                    .with_partition(0)
                    .with_timestamp((i + 1) * 1000)
                    .with_value(format!("v{i}")),
            )
            .await
            .unwrap();
        assert_eq!(d.await.unwrap().offset, i);
    }
    producer.close().await;
    let tp = TopicPartition::new("t", 0);
    let c = Consumer::new(cluster(&mock).await, assign_config()).unwrap();
    c.assign([(tp.clone(), StartOffset::Beginning)]).unwrap();
    async fn first(c: &Consumer) -> ConsumerRecord {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(Instant::now() < deadline, "no record");
            let recs = c.poll(Duration::from_millis(100)).await.unwrap();
            assert!(recs.errors().is_empty(), "{:?}", recs.errors());
            if let Some(r) = recs.iter().next() {
                return r.clone();
            }
        }
    }

    // Between two timestamps: the first record at or after it.
    c.seek_to_timestamp(std::slice::from_ref(&tp), 3500)
        .unwrap();
    let r = first(&c).await;
    assert_eq!((r.offset, r.timestamp), (3, 4000));
    // Exactly a record's timestamp.
    c.seek_to_timestamp(std::slice::from_ref(&tp), 7000)
        .unwrap();
    assert_eq!(first(&c).await.offset, 6);
    // Before every record: the first one.
    c.seek_to_timestamp(std::slice::from_ref(&tp), 0).unwrap();
    assert_eq!(first(&c).await.offset, 0);
    // After every record: the end.
    c.seek_to_timestamp(std::slice::from_ref(&tp), 99_000)
        .unwrap();
    assert_eq!(c.position(&tp).await.unwrap(), 10);
    assert!(c.seek_to_timestamp(std::slice::from_ref(&tp), -5).is_err());

    // From the end by N.
    c.seek_from_end(std::slice::from_ref(&tp), 3).unwrap();
    assert_eq!(c.position(&tp).await.unwrap(), 7);
    assert_eq!(text(&first(&c).await), "v7");
    c.seek_from_end(std::slice::from_ref(&tp), 0).unwrap();
    assert_eq!(c.position(&tp).await.unwrap(), 10);
    // Never before the log start: delete the first four records.
    let admin = Admin::new(cluster(&mock).await);
    admin
        .delete_records(&[(rekafka::admin::TopicPartition::new("t", 0), 4)])
        .await
        .unwrap()[0]
        .clone()
        .unwrap();
    c.seek_from_end(std::slice::from_ref(&tp), 100).unwrap();
    assert_eq!(c.position(&tp).await.unwrap(), 4);
    assert_eq!(first(&c).await.offset, 4);
    // Unassigned partitions are refused.
    assert!(c.seek_from_end(&[TopicPartition::new("t", 5)], 1).is_err());
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_gives_back_the_records_it_had_not_handed_out() {
    let mock = MockCluster::builder().topic("t", 2).start().await.unwrap();
    seed(&mock, "t", 0, 0, 30);
    seed(&mock, "t", 1, 0, 30);
    let c = Consumer::new(cluster(&mock).await, assign_config()).unwrap();
    c.assign((0..2).map(|p| (TopicPartition::new("t", p), StartOffset::Beginning)))
        .unwrap();
    let mut seen: Vec<(i32, i64)> = Vec::new();
    // Several streams, each dropped after a few records (with more of its batch still held).
    for take in [1usize, 7, 3, 12, 5] {
        let mut stream = c.stream();
        for _ in 0..take {
            let r = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("records given back by the dropped streams")
                .expect("open")
                .expect("record");
            seen.push((r.partition, r.offset));
        }
    }
    // A `next()` cancelled by a timeout also loses nothing.
    let mut stream = c.stream();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 60 {
        assert!(Instant::now() < deadline, "only {} records", seen.len());
        if let Ok(r) = tokio::time::timeout(Duration::from_millis(2), stream.next()).await {
            let r = r.expect("open").expect("record");
            seen.push((r.partition, r.offset));
        }
    }
    drop(stream);
    let unique: BTreeSet<(i32, i64)> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no record twice: {seen:?}");
    let want: BTreeSet<(i32, i64)> = (0..2).flat_map(|p| (0..30).map(move |o| (p, o))).collect();
    assert_eq!(unique, want, "every record once");
    for p in 0..2 {
        let offsets: Vec<i64> = seen.iter().filter(|(q, _)| *q == p).map(|x| x.1).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "order of {p}");
        assert_eq!(c.position(&TopicPartition::new("t", p)).await.unwrap(), 30);
    }
    c.close().await.unwrap();
}

/// A listener whose callbacks take a while, so that cancelled polls interrupt them; counts
/// the calls started and finished.
#[derive(Default)]
struct SlowListener {
    started: AtomicUsize,
    finished: AtomicUsize,
    /// The partitions of each finished `on_revoked` and `on_assigned`.
    revoked: Mutex<Vec<TopicPartition>>,
    assigned: Mutex<Vec<TopicPartition>>,
}

impl SlowListener {
    fn call<'a>(
        &'a self,
        into: &'a Mutex<Vec<TopicPartition>>,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.started.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(25)).await;
            into.lock().unwrap().extend(partitions.iter().cloned());
            self.finished.fetch_add(1, Ordering::SeqCst);
        })
    }
}

impl RebalanceListener for SlowListener {
    fn on_assigned<'a>(
        &'a self,
        _consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        self.call(&self.assigned, partitions)
    }

    fn on_revoked<'a>(
        &'a self,
        _consumer: &'a Consumer,
        partitions: &'a [TopicPartition],
    ) -> BoxFuture<'a, ()> {
        self.call(&self.revoked, partitions)
    }
}

/// Issue 20: `poll` is cancel safe, also in the middle of a cooperative rebalance. Member A's
/// polls are cancelled over and over (timeouts of 0 to 10 ms, and `select!` against a short
/// sleep; one poll in eight gets its full time) while records keep arriving and member B
/// joins (two partitions move to B) and later leaves (they come back). Every record is read
/// exactly once by A or B, in order per partition; A ends owning every partition, positioned,
/// and committed, at its end.
/// One poll of A, cancelled by a timeout or a `select!` against a sleep (of 0 to 10 ms) in
/// seven rounds of eight; the eighth gets its full time. Returns whether it was cancelled.
async fn step(a: &Consumer, round: usize, seen: &mut Vec<(i32, i64)>) -> bool {
    let budget = Duration::from_millis([0, 1, 2, 5, 10, 3, 7, 0][round % 8]);
    let polled = if round % 8 == 7 {
        Some(a.poll(Duration::from_millis(200)).await)
    } else if round.is_multiple_of(2) {
        tokio::time::timeout(budget, a.poll(Duration::from_millis(200)))
            .await
            .ok()
    } else {
        tokio::select! {
            r = a.poll(Duration::from_millis(200)) => Some(r),
            _ = tokio::time::sleep(budget) => None,
        }
    };
    match polled {
        Some(recs) => {
            let recs = recs.expect("poll");
            assert!(recs.errors().is_empty(), "{:?}", recs.errors());
            seen.extend(recs.iter().map(|r| (r.partition, r.offset)));
            false
        }
        None => true,
    }
}

/// Issue 20: `poll` is cancel safe, also in the middle of a cooperative rebalance. Member A's
/// polls are cancelled over and over (timeouts and `select!`, 0 to 10 ms; one poll in eight
/// gets its full time) while records keep arriving and member B joins (two partitions move
/// to B) and later leaves (they come back). A's rebalance callbacks take longer than most of
/// its polls, so cancellations interrupt them. Every record is read exactly once by A or B, in
/// order per partition; A ends owning every partition, positioned and committed at its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_cancelled_during_cooperative_rebalances_lose_and_duplicate_nothing() {
    const PARTS: i32 = 4;
    let mock = Arc::new(
        MockCluster::builder()
            .topic("t", PARTS)
            .start()
            .await
            .unwrap(),
    );
    let config = group_config("gcancel")
        .with_auto_commit(AutoCommit::Interval(Duration::from_millis(200)))
        .with_max_poll_records(7)
        .with_assignors(vec![Arc::new(CooperativeStickyAssignor)]);
    for p in 0..PARTS {
        seed(&mock, "t", p, 0, 50);
    }
    // Records keep arriving until the end of the scenario.
    let stop_seeding = Arc::new(AtomicBool::new(false));
    let seeder = {
        let (mock, stop) = (mock.clone(), stop_seeding.clone());
        tokio::spawn(async move {
            let mut next = 50;
            while !stop.load(Ordering::Acquire) {
                for p in 0..PARTS {
                    seed(&mock, "t", p, next, 3);
                }
                next += 3;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    let listener = Arc::new(SlowListener::default());
    let a = Consumer::new(cluster(&mock).await, config.clone()).unwrap();
    a.set_rebalance_listener(listener.clone());
    a.subscribe(["t"]).unwrap();
    let mut seen_a: Vec<(i32, i64)> = Vec::new();
    let (mut round, mut cancelled) = (0usize, 0usize);
    let deadline = Instant::now() + Duration::from_secs(60);
    macro_rules! until {
        ($what:expr, $cond:expr) => {
            while !$cond {
                assert!(Instant::now() < deadline, "timed out waiting: {}", $what);
                cancelled += step(&a, round, &mut seen_a).await as usize;
                round += 1;
            }
        };
    }

    // A alone.
    until!(
        "A owns every partition and reads",
        a.assignment().len() == PARTS as usize && seen_a.len() >= 40
    );

    // B joins: two partitions move to it.
    let b = Arc::new(Consumer::new(cluster(&mock).await, config.clone()).unwrap());
    b.subscribe(["t"]).unwrap();
    let seen_b: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let stop_b = Arc::new(AtomicBool::new(false));
    let b_task = {
        let (b, seen, stop) = (b.clone(), seen_b.clone(), stop_b.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let recs = b.poll(Duration::from_millis(100)).await.expect("B polls");
                assert!(recs.errors().is_empty(), "{:?}", recs.errors());
                seen.lock()
                    .unwrap()
                    .extend(recs.iter().map(|r| (r.partition, r.offset)));
            }
        })
    };
    until!(
        "two partitions move to B and B reads both",
        a.assignment().len() == 2
            && b.assignment().len() == 2
            && seen_b
                .lock()
                .unwrap()
                .iter()
                .map(|x| x.0)
                .collect::<BTreeSet<_>>()
                .len()
                == 2
    );
    let moved: BTreeSet<TopicPartition> = b.assignment().into_iter().collect();
    // Some more records on both sides.
    let mark = seen_a.len();
    until!("A reads on", seen_a.len() >= mark + 20);

    // B leaves (committing what it read); its partitions come back to A.
    stop_b.store(true, Ordering::Release);
    b_task.await.unwrap();
    b.close().await.unwrap();
    until!(
        "A owns every partition again",
        a.assignment().len() == PARTS as usize
    );

    // No more records; A reads to the end of every partition.
    stop_seeding.store(true, Ordering::Release);
    seeder.await.unwrap();
    let ends: BTreeMap<i32, i64> = (0..PARTS)
        .map(|p| (p, mock.high_watermark("t", p).unwrap()))
        .collect();
    let total: i64 = ends.values().sum();
    until!(
        "every record read",
        seen_a.len() + seen_b.lock().unwrap().len() >= total as usize
    );
    // A last few polls: nothing more may come.
    for _ in 0..16 {
        cancelled += step(&a, round, &mut seen_a).await as usize;
        round += 1;
    }

    let seen_b = seen_b.lock().unwrap().clone();
    let mut all: Vec<(i32, i64)> = seen_a.iter().chain(seen_b.iter()).copied().collect();
    let n = all.len();
    all.sort();
    let twice: Vec<(i32, i64)> = all
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    assert!(
        twice.is_empty(),
        "records read twice (partition, offset): {twice:?}; B read {seen_b:?}"
    );
    all.dedup();
    assert_eq!(all.len(), n, "a record was read twice");
    let want: Vec<(i32, i64)> = ends
        .iter()
        .flat_map(|(&p, &end)| (0..end).map(move |o| (p, o)))
        .collect();
    assert_eq!(all, want, "every record read exactly once");
    for seen in [&seen_a, &seen_b] {
        for p in 0..PARTS {
            let o: Vec<i64> = seen.iter().filter(|x| x.0 == p).map(|x| x.1).collect();
            assert!(o.windows(2).all(|w| w[0] < w[1]), "order of partition {p}");
        }
    }
    let b_parts: BTreeSet<TopicPartition> = seen_b
        .iter()
        .map(|(p, _)| TopicPartition::new("t", *p))
        .collect();
    assert_eq!(b_parts, moved, "B read only the partitions that moved");
    let revoked: BTreeSet<TopicPartition> =
        listener.revoked.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        revoked, moved,
        "A's on_revoked saw exactly the moved partitions"
    );

    // Positions and commits at the end of every partition.
    for (&p, &end) in &ends {
        assert_eq!(a.position(&TopicPartition::new("t", p)).await.unwrap(), end);
    }
    a.commit().await.unwrap();
    for (&p, &end) in &ends {
        assert_eq!(mock.committed_offset("gcancel", "t", p), Some(end));
    }
    let (started, finished) = (
        listener.started.load(Ordering::SeqCst),
        listener.finished.load(Ordering::SeqCst),
    );
    eprintln!(
        "{round} polls, {cancelled} cancelled; {started} callbacks started, {finished} finished"
    );
    assert!(
        started > finished,
        "no rebalance callback was interrupted: the scenario did not cancel a poll mid-rebalance"
    );
    assert!(cancelled > 0, "no poll was cancelled");
    a.close().await.unwrap();
}

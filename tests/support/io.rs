//! Producing with every outcome recorded, and reading a topic back, for the fault tests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::admin::{Admin, NewTopic};
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::connection::ConnectionConfig;
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, IsolationLevel, StartOffset, TopicPartition,
};
use rekafka::producer::{DeliveryFuture, ProduceError, Producer, Record};

use super::invariants::{Acked, Failed, LogEntry, RecordId, Tp};

/// A client cluster on `bootstrap` with the given request timeout.
pub async fn connect(bootstrap: &[String], request_timeout: Duration) -> Cluster {
    let conn = ConnectionConfig::default()
        .with_request_timeout(request_timeout)
        .with_connect_timeout(Duration::from_secs(5))
        .with_reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500));
    let config = ClusterConfig::new(bootstrap.to_vec())
        .with_connection(conn)
        .with_retry_backoff(Duration::from_millis(100), Duration::from_millis(500));
    Cluster::connect(config).await.expect("connect")
}

/// Creates `name` with `partitions` partitions, replication 3, and `configs`.
pub async fn create_topic(
    cluster: &Cluster,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) {
    let admin = Admin::new(cluster.clone());
    let mut t = NewTopic::new(name, partitions).with_replication_factor(3);
    for (k, v) in configs {
        t = t.with_config(*k, *v);
    }
    for r in admin.create_topics(&[t]).await.expect("create_topics") {
        r.expect("topic created");
    }
    // Every partition has a leader before the scenario starts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _ = cluster.refresh_topics(&[name]).await;
        if let Ok(parts) = cluster.partitions(name).await {
            if parts.len() == partitions as usize && parts.iter().all(|p| p.leader >= 0) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{name}: no leaders after 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a producer run saw, shared with the collector task.
#[derive(Default)]
pub struct Tracked {
    /// Every record handed to `send`.
    pub sent: Mutex<Vec<(RecordId, Tp)>>,
    /// Delivery reports.
    pub acked: Mutex<Vec<Acked>>,
    /// Typed failures.
    pub failed: Mutex<Vec<Failed>>,
    /// How many reports (either kind) arrived.
    pub reports: AtomicU64,
    /// How many acknowledgements arrived.
    pub acks: AtomicU64,
}

impl Tracked {
    fn fail(&self, id: RecordId, tp: Tp, e: &ProduceError) {
        self.failed.lock().unwrap().push(Failed {
            id,
            tp,
            persistence: e.persistence,
            error: format!("{:?}: {}", e.kind(), e.error),
        });
        self.reports.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits until the acknowledgement count passes `from` (progress), at most `bound`;
    /// returns how long it took.
    pub async fn progress_after(&self, from: u64, bound: Duration) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() <= bound {
            if self.acks.load(Ordering::Relaxed) > from {
                return Some(t.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

/// Sends records `seqs` of producer `pid` to `topic`, record `s` to partition
/// `s % partitions`, values of `size` bytes carrying the id; `pause` between sends (if any).
/// Every outcome lands in `tracked`; returns when every send has been reported.
#[allow(clippy::too_many_arguments)]
pub async fn produce_tracked(
    producer: &Producer,
    topic: &str,
    pid: u32,
    seqs: std::ops::Range<u64>,
    partitions: i32,
    size: usize,
    pause: Option<Duration>,
    tracked: Arc<Tracked>,
) {
    produce_until(
        producer, topic, pid, seqs, partitions, size, pause, tracked, None,
    )
    .await
}

/// [`produce_tracked`] that also stops sending once `stop` is set.
#[allow(clippy::too_many_arguments)]
pub async fn produce_until(
    producer: &Producer,
    topic: &str,
    pid: u32,
    seqs: std::ops::Range<u64>,
    partitions: i32,
    size: usize,
    pause: Option<Duration>,
    tracked: Arc<Tracked>,
    stop: Option<Arc<std::sync::atomic::AtomicBool>>,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(RecordId, Tp, DeliveryFuture)>();
    let t = tracked.clone();
    let collector = tokio::spawn(async move {
        while let Some((id, tp, f)) = rx.recv().await {
            match f.await {
                Ok(md) => {
                    t.acked.lock().unwrap().push(Acked {
                        id,
                        tp: (md.topic.to_string(), md.partition),
                        offset: Some(md.offset),
                    });
                    t.reports.fetch_add(1, Ordering::Relaxed);
                    t.acks.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => t.fail(id, tp, &e),
            }
        }
    });
    let topic: Arc<str> = Arc::from(topic);
    for s in seqs {
        if stop.as_ref().is_some_and(|f| f.load(Ordering::Relaxed)) {
            break;
        }
        let id = RecordId::new(pid, s);
        let p = (s % partitions as u64) as i32;
        let tp: Tp = (topic.to_string(), p);
        tracked.sent.lock().unwrap().push((id, tp.clone()));
        let r = Record::new(topic.clone())
            .with_partition(p)
            .with_value(id.encode(size));
        match producer.send(r).await {
            Ok(f) => {
                let _ = tx.send((id, tp, f));
            }
            Err(e) => tracked.fail(id, tp, &e),
        }
        if let Some(d) = pause {
            tokio::time::sleep(d).await;
        }
    }
    drop(tx);
    collector.await.expect("collector");
}

/// Reads `topic` (partitions `0..partitions`) from the beginning to the end it has now, with
/// `isolation`, through `bootstrap`; gives up after `within` (what was read is returned: a
/// missing record then shows as I1).
pub async fn read_log(
    bootstrap: &[String],
    topic: &str,
    partitions: i32,
    isolation: IsolationLevel,
    within: Duration,
) -> Vec<LogEntry> {
    let cluster = connect(bootstrap, Duration::from_secs(10)).await;
    let consumer = Consumer::new(
        cluster.clone(),
        ConsumerConfig::new()
            .with_auto_commit(AutoCommit::Disabled)
            .with_isolation_level(isolation)
            .with_fetch_max_wait(Duration::from_millis(100)),
    )
    .expect("consumer");
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    consumer
        .assign(tps.iter().map(|tp| (tp.clone(), StartOffset::Beginning)))
        .expect("assign");
    let deadline = Instant::now() + within;
    let mut ends = Vec::new();
    for tp in &tps {
        let end = loop {
            match consumer.fetch_watermarks(tp).await {
                Ok((_, hi)) => break hi,
                Err(e) => {
                    assert!(Instant::now() < deadline, "watermarks of {tp:?}: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        ends.push(end);
    }
    let mut log = Vec::new();
    loop {
        match consumer.poll(Duration::from_millis(500)).await {
            Ok(recs) => {
                for r in recs.iter() {
                    log.push(LogEntry {
                        tp: (r.topic.to_string(), r.partition),
                        offset: r.offset,
                        id: r.value.as_deref().and_then(RecordId::decode),
                    });
                }
            }
            Err(e) => eprintln!("[failover] read_log poll: {e}"),
        }
        let mut done = true;
        for (tp, end) in tps.iter().zip(&ends) {
            if consumer.position(tp).await.unwrap_or(0) < *end {
                done = false;
            }
        }
        if done {
            break;
        }
        if Instant::now() >= deadline {
            eprintln!("[failover] read_log {topic}: gave up after {within:?}");
            break;
        }
    }
    consumer.close().await.ok();
    cluster.close().await;
    log
}

/// What a listener container's handler finished.
#[derive(Default)]
pub struct Consumed {
    /// (topic-partition, offset, id) per finished record, in handling order.
    pub handled: Mutex<Vec<(Tp, i64, Option<RecordId>)>>,
    /// How many records were handled.
    pub count: AtomicU64,
}

impl Consumed {
    /// Waits until the handled count passes `from`, at most `bound`; returns how long it took.
    pub async fn progress_after(&self, from: u64, bound: Duration) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() <= bound {
            if self.count.load(Ordering::Relaxed) > from {
                return Some(t.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// The (topic-partition, offset) pairs handled.
    pub fn handled_offsets(&self) -> Vec<(Tp, i64)> {
        self.handled
            .lock()
            .unwrap()
            .iter()
            .map(|(tp, o, _)| (tp.clone(), *o))
            .collect()
    }
}

/// A group consumer config for the fault tests: manual commits (the container commits),
/// 6 s session, earliest.
pub fn group_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_auto_commit(AutoCommit::Disabled)
        .with_session_timeout(Duration::from_secs(6))
        .with_heartbeat_interval(Duration::from_millis(1000))
        .with_auto_offset_reset(rekafka::consumer::OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(100))
}

/// Starts a listener container (record ack mode) in `group` on `topic` whose handler records
/// every record in `consumed`.
pub fn start_recording_container(
    cluster: &Cluster,
    group: &str,
    topic: &str,
    consumed: Arc<Consumed>,
) -> rekafka::listener::ContainerHandle {
    use rekafka::listener::{AckMode, ListenerConsumerRecord, ListenerContainer, ListenerRecord};
    let consumer = Consumer::new(cluster.clone(), group_config(group)).expect("consumer");
    consumer.subscribe([topic.to_owned()]).expect("subscribe");
    ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let c = consumed.clone();
            async move {
                let id = r.value().and_then(|v| RecordId::decode(v));
                c.handled.lock().unwrap().push((
                    (r.topic().to_owned(), r.partition()),
                    r.offset(),
                    id,
                ));
                c.count.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .ack_mode(AckMode::Record)
        .poll_timeout(Duration::from_millis(500))
        .start()
        .expect("container")
}

/// The committed offsets of `group` on `topic` (partitions `0..partitions`).
pub async fn committed(
    bootstrap: &[String],
    group: &str,
    topic: &str,
    partitions: i32,
) -> std::collections::BTreeMap<Tp, i64> {
    let cluster = connect(bootstrap, Duration::from_secs(10)).await;
    let c = Consumer::new(cluster.clone(), group_config(group)).expect("consumer");
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let mut out = std::collections::BTreeMap::new();
    for attempt in 0..10 {
        match c.committed(&tps).await {
            Ok(m) => {
                for tp in &tps {
                    if let Some(Some(o)) = m.get(tp) {
                        out.insert((topic.to_owned(), tp.partition), o.offset);
                    }
                }
                break;
            }
            Err(e) => {
                eprintln!("[failover] committed (attempt {attempt}): {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
    c.close().await.ok();
    cluster.close().await;
    out
}

//! Dead-letter throughput: 10,000 poison records with no back-off through a listener container
//! and the `DeadLetterPublisher`, against the plain produce rate of the same records. Prints
//! both rates; no timing assertion (see BENCHMARKS.md).
//!
//! ```text
//! scripts/with-broker.sh cargo test --release --test dlt_bench -- --ignored --nocapture
//! REKAFKA_TEST_BROKER=mock cargo test --release --test dlt_bench -- --ignored --nocapture
//! ```

mod common;
mod listener_dlt_support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bootstrap, unique};
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::listener::{
    DeadLetterPublisher, DefaultErrorHandler, FixedBackOff, HandlerError, ListenerContainer,
    PublishWait,
};
use rekafka::producer::{Producer, ProducerConfig, Record};

use listener_dlt_support::KConsumer;
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, OffsetReset, StartOffset};
use rekafka::listener::ListenerConsumerRecord as Rec;

#[derive(Debug, thiserror::Error)]
#[error("poison")]
struct Poison;

const N: usize = 10_000;
const PARTITIONS: i32 = 4;

fn records(topic: &str) -> Vec<Record> {
    (0..N)
        .map(|i| {
            Record::new(topic)
                .with_partition((i % PARTITIONS as usize) as i32)
                .with_key(format!("poison-{i}"))
                .with_value(vec![b'x'; 100])
                .with_header("trace", Some(format!("t{i}")))
        })
        .collect()
}

/// Creates `topic` with [`PARTITIONS`] partitions (and its `-dlt` topic), so neither the plain
/// producer nor the dead-letter publisher waits for a topic to be auto-created.
async fn create(cluster: &Cluster, topic: &str) {
    let admin = rekafka::admin::Admin::new(cluster.clone());
    let topics = [
        rekafka::admin::NewTopic::new(topic, PARTITIONS),
        rekafka::admin::NewTopic::new(format!("{topic}-dlt"), PARTITIONS),
    ];
    for r in admin.create_topics(&topics).await.unwrap() {
        r.unwrap();
    }
    cluster
        .refresh_topics(&[topic, &format!("{topic}-dlt")])
        .await
        .unwrap();
}

/// Sends every record, then waits for every acknowledgement; returns records per second.
async fn produce_rate(cluster: &Cluster, topic: &str) -> f64 {
    create(cluster, topic).await;
    let p = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .unwrap();
    let recs = records(topic);
    let start = Instant::now();
    let mut futs = Vec::with_capacity(N);
    for r in recs {
        futs.push(p.send(r).await.unwrap());
    }
    for f in futs {
        f.await.unwrap();
    }
    let rate = N as f64 / start.elapsed().as_secs_f64();
    p.close().await;
    rate
}

/// Runs the poison flood from `src` through a container; returns dead letters per second,
/// counted until every offset is committed (commits come after the dead letters' acks).
/// Which container runs the flood.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Every record succeeds (the container's own cost).
    Baseline,
    /// Every record fails; the recoverer does nothing.
    NoopRecoverer,
    /// Every record fails and is dead-lettered with `wait`.
    DeadLetters(PublishWait),
}

/// Rates of one flood: from the container's start, and from the first record's failure (the
/// steady rate, without the consumer's start-up), both until every offset is committed.
struct Flood {
    /// From the container's start until every offset is committed.
    from_start: f64,
    /// From the first record's failure until every offset is committed.
    from_first: Option<f64>,
    /// From the first record's failure until the last dead letter is acknowledged (the
    /// container has seen its acknowledgement: the last `RetryListener::recovered`).
    acked: Option<f64>,
}

async fn flood(cluster: &Cluster, src: &str, mode: Mode) -> Flood {
    let group = unique("bench-g");
    // rekafka's consumer as the container's consumer (`ListenerConsumerRecord`s), manually
    // assigned, committing in `group`.
    let consumer = Consumer::new(
        cluster.clone(),
        ConsumerConfig::new()
            .with_group_id(&group)
            .with_auto_offset_reset(OffsetReset::Earliest)
            .with_auto_commit(AutoCommit::Disabled)
            .with_fetch_max_wait(Duration::from_millis(50)),
    )
    .unwrap();
    consumer
        .assign((0..PARTITIONS).map(|p| {
            (
                rekafka::consumer::TopicPartition::new(src, p),
                StartOffset::Committed,
            )
        }))
        .unwrap();
    let mut builder = DeadLetterPublisher::<Rec>::builder(cluster.clone());
    if let Ok(v) = std::env::var("DLT_PCFG") {
        let mut c = rekafka::listener::default_producer_config();
        for kv in v.split(',') {
            let (k, val) = kv.split_once('=').unwrap();
            assert!(c.apply_property(k, val).unwrap(), "{k}");
        }
        builder = builder.producer_config(c);
    }
    let recovered = Arc::new(Mutex::new((0usize, None::<Duration>)));
    let start = Instant::now();
    let eh = DefaultErrorHandler::new()
        .back_off(FixedBackOff::no_retries())
        .retry_listener(LastRecovered(recovered.clone(), start));
    let container = ListenerContainer::builder(consumer).poll_timeout(Duration::from_millis(100));
    let fail = |_r: Rec| async { Err::<(), HandlerError>(Box::new(Poison)) };
    let handle = match mode {
        Mode::Baseline => container
            .record_handler(|_r: Rec| async { Ok::<(), HandlerError>(()) })
            .start()
            .unwrap(),
        Mode::NoopRecoverer => container
            .record_handler(fail)
            .error_handler(
                eh.recoverer(rekafka::listener::RecovererFn(|_r: Rec, _e| async {
                    Ok::<(), HandlerError>(())
                })),
            )
            .start()
            .unwrap(),
        Mode::DeadLetters(wait) => {
            let dlt = builder.wait(wait).build().await.unwrap();
            container
                .record_handler(fail)
                .error_handler(eh.recoverer(dlt))
                .start()
                .unwrap()
        }
    };
    let probe = KConsumer::new(cluster.clone(), &group, src, PARTITIONS);
    let tps: Vec<_> = (0..PARTITIONS)
        .map(|p| rekafka::consumer::TopicPartition::new(src, p))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let c = probe.consumer.committed(&tps).await.unwrap();
        let sum: i64 = c.values().map(|o| o.as_ref().map_or(0, |o| o.offset)).sum();
        if sum == N as i64 {
            break;
        }
        assert!(Instant::now() < deadline, "stalled at {sum}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let first = FIRST_FAILURE.lock().unwrap().take();
    let (recovered_count, last_recovered) = *recovered.lock().unwrap();
    handle.stop().await;
    let _ = probe.consumer.close().await;
    Flood {
        from_start: N as f64 / elapsed.as_secs_f64(),
        from_first: first.map(|f| N as f64 / (elapsed - f).as_secs_f64()),
        acked: match (first, last_recovered) {
            (Some(f), Some(l)) if recovered_count == N => Some(N as f64 / (l - f).as_secs_f64()),
            _ => None,
        },
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture (release)"]
async fn poison_flood_to_dlt_vs_plain_produce() {
    let rounds: usize = std::env::var("DLT_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(9);
    let cluster = Cluster::connect(ClusterConfig::new([bootstrap()]))
        .await
        .unwrap();
    // Warm up (connections, metadata).
    let _ = produce_rate(&cluster, &unique("bench-warm")).await;
    if std::env::var_os("DLT_BENCH_PROFILE").is_some() {
        // Only floods (for a profiler): sources filled first, then one flood after another.
        let mut srcs = Vec::new();
        for _ in 0..rounds {
            let src = unique("bench-prof");
            let _ = produce_rate(&cluster, &src).await;
            srcs.push(src);
        }
        eprintln!("DLT_BENCH_PROFILE: floods start");
        for src in srcs {
            let _ = flood(&cluster, &src, Mode::DeadLetters(PublishWait::PerPoll)).await;
        }
        return;
    }
    let (mut plain, mut dlt_acked, mut dlt_first, mut dlt_start) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        let p = produce_rate(&cluster, &unique("bench-plain")).await;
        let src = unique("bench-src");
        let _ = produce_rate(&cluster, &src).await;
        let f = flood(&cluster, &src, Mode::DeadLetters(PublishWait::PerPoll)).await;
        let acked = f.acked.expect("every record dead-lettered");
        let first = f.from_first.expect("records failed");
        println!(
            "round {round}: plain produce {p:.0} rec/s; poison -> DLT {acked:.0} rec/s until the \
             last dead letter is acknowledged ({:.0}% of plain); {first:.0} rec/s until every \
             offset is committed; {:.0} rec/s from the container's start",
            100.0 * acked / p,
            f.from_start
        );
        plain.push(p);
        dlt_acked.push(acked);
        dlt_first.push(first);
        dlt_start.push(f.from_start);
    }
    let (p, a, d, ds) = (
        median(plain),
        median(dlt_acked),
        median(dlt_first),
        median(dlt_start),
    );
    println!(
        "median of {rounds}: plain produce {p:.0} rec/s; poison -> DLT (PublishWait::PerPoll): \
         {a:.0} rec/s to the last acknowledgement = {:.0}% of plain; {d:.0} rec/s to the last \
         commit = {:.0}%; {ds:.0} rec/s from the container's start to the last commit = {:.0}%",
        100.0 * a / p,
        100.0 * d / p,
        100.0 * ds / p
    );
    for (name, mode) in [
        ("the container without failures", Mode::Baseline),
        (
            "every record failing, a recoverer doing nothing",
            Mode::NoopRecoverer,
        ),
        (
            "poison -> DLT, PublishWait::PerRecord",
            Mode::DeadLetters(PublishWait::PerRecord),
        ),
    ] {
        let src = unique("bench-other");
        let _ = produce_rate(&cluster, &src).await;
        let f = flood(&cluster, &src, mode).await;
        println!(
            "{name}: {:.0} rec/s from the container's start{}",
            f.from_start,
            f.from_first
                .map(|r| format!(", {r:.0} rec/s from the first failure"))
                .unwrap_or_default()
        );
    }
    cluster.close().await;
}

/// Counts recoveries and remembers when the last one returned.
struct LastRecovered(Arc<Mutex<(usize, Option<Duration>)>>, Instant);

static FIRST_FAILURE: Mutex<Option<Duration>> = Mutex::new(None);

impl rekafka::listener::RetryListener<Rec> for LastRecovered {
    fn failed_delivery(&self, _: &Rec, _: &rekafka::listener::SharedError, _: u32) {
        let mut f = FIRST_FAILURE.lock().unwrap();
        if f.is_none() {
            *f = Some(self.1.elapsed());
        }
    }
    fn recovered(&self, _: &Rec, _: &rekafka::listener::SharedError) {
        let mut g = self.0.lock().unwrap();
        g.0 += 1;
        g.1 = Some(self.1.elapsed());
    }
}

//! The listener container's cost over a bare consumer loop, on the same records.
//!
//! Run each mode as its own process so whole-process CPU time can be compared:
//!
//! ```text
//! export REKAFKA_BOOTSTRAP=127.0.0.1:9092
//! cargo bench --bench listener -- fill TOPIC 1000000      # once: 1M x 100 B over 3 partitions
//! /usr/bin/time -v cargo bench --bench listener -- consume TOPIC 1000000
//! /usr/bin/time -v cargo bench --bench listener -- listen TOPIC 1000000
//! /usr/bin/time -v cargo bench --bench listener -- listen-async TOPIC 1000000
//! ```
//!
//! (Or run the built binary under `target/release/deps/listener-*` directly, which keeps cargo's
//! own time out of the measurement; `benches/listener.sh` and `benches/peers/run.sh` do that.)
//!
//! `consume` polls with a group consumer and commits after each poll (the container's default
//! ack mode, `Batch`); `listen` runs a `ListenerContainer` whose record handler does the loop's
//! per-record work, synchronously (`sync_record_handler`), with the default error handler and
//! `AckMode::Batch`; `listen-async` the same through `record_handler` (a boxed future per record). Both start from the beginning in a fresh group
//! and stop after `COUNT` records.
//!
//! The poison flood (`benches/peers/run.sh`'s `poison` workload):
//!
//! ```text
//! cargo bench --bench listener -- fill-poison TOPIC 100000    # 1 % of the values start with "poison"
//! cargo bench --bench listener -- plain TOPIC 100000 GROUP    # the container, nothing fails
//! cargo bench --bench listener -- poison TOPIC 100000 GROUP   # poison records fail -> TOPIC.DLT
//! ```
//!
//! `fill-poison` writes `COUNT` values of 100 B with the default partitioner, record *i* starting
//! with `poison` when *i* % 100 == 0. `poison` and `plain` run one container (record handler,
//! `DefaultErrorHandler` with `FixedBackOff::no_retries()` and a default `DeadLetterPublisher`
//! naming the dead-letter topic `<topic>.DLT`, `AckMode::Batch`) whose handler fails the
//! `poison` records in `poison` mode and accepts every record in `plain` mode; both stop (and
//! commit, on stop) once the handler has been called `COUNT` times. The caller checks the
//! dead-letter topic and the group's committed offsets (`benches/peers/admin.py`).
//!
//! An optional `GROUP` after `COUNT` names the consumer group (default: a fresh
//! `bench-MODE-MILLIS`). The output line's `rec_per_s` runs from the first record handed to the
//! handler (loop body) to the end (after the last commit), so it leaves out connecting and the
//! group join; `rec_per_s_from_start` counts from the consumer's creation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, OffsetReset};
use rekafka::listener::{
    AckMode, DeadLetterPublisher, DefaultErrorHandler, DltNaming, FixedBackOff, HandlerError,
    ListenerConsumerRecord, ListenerContainer,
};
use rekafka::producer::{Producer, ProducerConfig, Record};

/// When the first record reached the handler (loop body): `rec_per_s` is counted from it, so it
/// leaves out connecting and the group join.
static FIRST: OnceLock<Instant> = OnceLock::new();

fn first_record() {
    FIRST.get_or_init(Instant::now);
}

fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_auto_commit(AutoCommit::Disabled)
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_session_timeout(Duration::from_secs(6))
}

fn group_name(mode: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("bench-{mode}-{t}")
}

async fn fill(cluster: Cluster, topic: &str, count: u64) -> rekafka::Result<()> {
    let producer =
        Producer::new(cluster, ProducerConfig::default().with_batch_size(1 << 20)).await?;
    let value = vec![b'x'; 100];
    let mut pending = Vec::new();
    for i in 0..count {
        let r = Record::new(topic)
            .with_partition((i % 3) as i32)
            .with_value(value.clone());
        pending.push(producer.send(r).await.map_err(|e| e.error)?);
        if pending.len() >= 100_000 {
            for f in pending.drain(..) {
                f.await.map_err(|e| e.error)?;
            }
        }
    }
    for f in pending {
        f.await.map_err(|e| e.error)?;
    }
    producer.close().await;
    Ok(())
}

/// A mode that has not seen `COUNT` records by then fails (rather than waiting for ever).
const GIVE_UP: Duration = Duration::from_secs(600);

fn gave_up(yes: bool, seen: &AtomicU64, count: u64) -> rekafka::Result<()> {
    if yes {
        return Err(rekafka::Error::config(format!(
            "saw {} of {count} records in {} s",
            seen.load(Ordering::Relaxed),
            GIVE_UP.as_secs()
        )));
    }
    Ok(())
}

/// How often a `fill-poison` value starts with `POISON` (1 %).
const POISON_EVERY: u64 = 100;
const POISON: &[u8] = b"poison";

async fn fill_poison(cluster: Cluster, topic: &str, count: u64) -> rekafka::Result<()> {
    let producer = Producer::new(cluster, ProducerConfig::default()).await?;
    let mut poison = POISON.to_vec();
    poison.resize(100, b'x');
    let plain = vec![b'x'; 100];
    let mut pending = Vec::new();
    for i in 0..count {
        let value = if i % POISON_EVERY == 0 {
            &poison
        } else {
            &plain
        };
        let r = Record::new(topic).with_value(value.clone());
        pending.push(producer.send(r).await.map_err(|e| e.error)?);
        if pending.len() >= 100_000 {
            for f in pending.drain(..) {
                f.await.map_err(|e| e.error)?;
            }
        }
    }
    for f in pending {
        f.await.map_err(|e| e.error)?;
    }
    producer.close().await;
    Ok(())
}

/// The handler's error for a poison record.
#[derive(Debug)]
struct Poison;

impl std::fmt::Display for Poison {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("poison record")
    }
}

impl std::error::Error for Poison {}

/// The poison flood's container: fails the `poison` records when `fail` (they go to
/// `<topic>.DLT` with no retries), accepts every record otherwise; stops after `count` handler
/// calls.
async fn dead_letters(
    cluster: Cluster,
    topic: &str,
    count: u64,
    group: &str,
    fail: bool,
) -> rekafka::Result<u64> {
    let consumer = Consumer::new(cluster.clone(), config(group))?;
    consumer.subscribe([topic])?;
    let publisher = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster)
        .naming(DltNaming::Legacy)
        .build()
        .await?;
    let seen = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let (s, b, d) = (seen.clone(), bytes.clone(), done.clone());
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            first_record();
            let value = r.value_bytes();
            b.fetch_add(value.map_or(0, |v| v.len() as u64), Ordering::Relaxed);
            let poison = value.is_some_and(|v| v.starts_with(POISON));
            if s.fetch_add(1, Ordering::Relaxed) + 1 == count {
                d.notify_one();
            }
            std::future::ready(if poison && fail {
                Err::<(), HandlerError>(Box::new(Poison))
            } else {
                Ok(())
            })
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::no_retries())
                .recoverer(publisher),
        )
        .ack_mode(AckMode::Batch)
        .poll_timeout(Duration::from_secs(1))
        .start()?;
    let finished = tokio::time::timeout(GIVE_UP, done.notified()).await;
    handle.stop().await;
    gave_up(finished.is_err(), &seen, count)?;
    Ok(bytes.load(Ordering::Relaxed))
}

async fn consume(cluster: Cluster, topic: &str, count: u64, group: &str) -> rekafka::Result<u64> {
    let consumer = Consumer::new(cluster, config(group))?;
    consumer.subscribe([topic])?;
    // The same per-record work as the listener's handler: two shared counters.
    let seen = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    let start = Instant::now();
    while seen.load(Ordering::Relaxed) < count {
        gave_up(start.elapsed() > GIVE_UP, &seen, count)?;
        let records = consumer.poll(Duration::from_secs(1)).await?;
        for r in records.iter() {
            first_record();
            bytes.fetch_add(
                r.value.as_ref().map_or(0, |v| v.len() as u64),
                Ordering::Relaxed,
            );
            seen.fetch_add(1, Ordering::Relaxed);
        }
        if !records.is_empty() {
            consumer.commit().await?;
        }
    }
    consumer.close().await?;
    Ok(bytes.load(Ordering::Relaxed))
}

/// The container with a record handler doing the bare loop's per-record work: `sync` a
/// synchronous handler (`sync_record_handler`, what a handler that never waits uses), else an
/// asynchronous one (`record_handler`, a boxed future per record).
async fn listen(
    cluster: Cluster,
    topic: &str,
    count: u64,
    group: &str,
    sync: bool,
) -> rekafka::Result<u64> {
    let consumer = Consumer::new(cluster, config(group))?;
    consumer.subscribe([topic])?;
    let seen = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let (s, b, d) = (seen.clone(), bytes.clone(), done.clone());
    let work = move |r: ListenerConsumerRecord| {
        first_record();
        b.fetch_add(
            r.value_bytes().map_or(0, |v| v.len() as u64),
            Ordering::Relaxed,
        );
        if s.fetch_add(1, Ordering::Relaxed) + 1 == count {
            d.notify_one();
        }
        Ok(())
    };
    let builder = ListenerContainer::builder(consumer);
    let builder = if sync {
        builder.sync_record_handler(work)
    } else {
        builder.record_handler(move |r| std::future::ready(work(r)))
    };
    let handle = builder
        .ack_mode(AckMode::Batch)
        .poll_timeout(Duration::from_secs(1))
        .start()?;
    let finished = tokio::time::timeout(GIVE_UP, done.notified()).await;
    handle.stop().await;
    gave_up(finished.is_err(), &seen, count)?;
    Ok(bytes.load(Ordering::Relaxed))
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(mode), Some(topic)) = (args.first(), args.get(1)) else {
        eprintln!(
            "usage: listener fill|consume|listen|listen-async|fill-poison|plain|poison TOPIC [COUNT [GROUP]]"
        );
        return;
    };
    let count: u64 = args
        .get(2)
        .and_then(|c| c.parse().ok())
        .unwrap_or(1_000_000);
    let group = args.get(3).cloned().unwrap_or_else(|| group_name(mode));
    let Ok(bootstrap) = std::env::var("REKAFKA_BOOTSTRAP") else {
        eprintln!("REKAFKA_BOOTSTRAP is not set");
        std::process::exit(2);
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async {
        let cluster = Cluster::connect(ClusterConfig::new([bootstrap])).await?;
        let start = Instant::now();
        let bytes = match mode.as_str() {
            "fill" => fill(cluster.clone(), topic, count)
                .await
                .map(|()| count * 100)?,
            "fill-poison" => fill_poison(cluster.clone(), topic, count)
                .await
                .map(|()| count * 100)?,
            "consume" => consume(cluster.clone(), topic, count, &group).await?,
            "listen" => listen(cluster.clone(), topic, count, &group, true).await?,
            "listen-async" => listen(cluster.clone(), topic, count, &group, false).await?,
            "plain" => dead_letters(cluster.clone(), topic, count, &group, false).await?,
            "poison" => dead_letters(cluster.clone(), topic, count, &group, true).await?,
            other => {
                return Err(rekafka::Error::config(format!("unknown mode {other}")));
            }
        };
        let secs = start.elapsed().as_secs_f64();
        let from_first = FIRST.get().map_or(secs, |f| f.elapsed().as_secs_f64());
        cluster.close().await;
        Ok::<_, rekafka::Error>((secs, from_first, bytes))
    });
    match result {
        Ok((secs, from_first, bytes)) => println!(
            "mode={mode} records={count} secs={secs:.3} from_first_s={from_first:.3} \
             rec_per_s={:.0} mb_per_s={:.1} rec_per_s_from_start={:.0}",
            count as f64 / from_first,
            bytes as f64 / from_first / 1e6,
            count as f64 / secs,
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

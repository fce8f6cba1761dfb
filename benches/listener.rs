//! The listener container's cost over a bare consumer loop, on the same records.
//!
//! Run each mode as its own process so whole-process CPU time can be compared:
//!
//! ```text
//! export REKAFKA_BOOTSTRAP=127.0.0.1:9092
//! cargo bench --bench listener -- fill TOPIC 1000000      # once: 1M x 100 B over 3 partitions
//! /usr/bin/time -v cargo bench --bench listener -- consume TOPIC 1000000
//! /usr/bin/time -v cargo bench --bench listener -- listen TOPIC 1000000
//! ```
//!
//! (Or run the built binary under `target/release/deps/listener-*` directly, which keeps cargo's
//! own time out of the measurement; `benches/listener.sh` does that.)
//!
//! `consume` polls with a group consumer and commits after each poll (the container's default
//! ack mode, `Batch`); `listen` runs a `ListenerContainer` with a no-op record handler, the
//! default error handler and `AckMode::Batch`. Both start from the beginning in a fresh group
//! and stop after `COUNT` records.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, OffsetReset};
use rekafka::listener::{AckMode, ListenerConsumerRecord, ListenerContainer};
use rekafka::producer::{Producer, ProducerConfig, Record};

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

async fn consume(cluster: Cluster, topic: &str, count: u64) -> rekafka::Result<u64> {
    let consumer = Consumer::new(cluster, config(&group_name("consume")))?;
    consumer.subscribe([topic])?;
    // The same per-record work as the listener's handler: two shared counters.
    let seen = AtomicU64::new(0);
    let bytes = AtomicU64::new(0);
    while seen.load(Ordering::Relaxed) < count {
        let records = consumer.poll(Duration::from_secs(1)).await?;
        for r in records.iter() {
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

async fn listen(cluster: Cluster, topic: &str, count: u64) -> rekafka::Result<u64> {
    let consumer = Consumer::new(cluster, config(&group_name("listen")))?;
    consumer.subscribe([topic])?;
    let seen = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let done = Arc::new(tokio::sync::Notify::new());
    let (s, b, d) = (seen.clone(), bytes.clone(), done.clone());
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            b.fetch_add(
                r.value_bytes().map_or(0, |v| v.len() as u64),
                Ordering::Relaxed,
            );
            if s.fetch_add(1, Ordering::Relaxed) + 1 == count {
                d.notify_one();
            }
            std::future::ready(Ok(()))
        })
        .ack_mode(AckMode::Batch)
        .poll_timeout(Duration::from_secs(1))
        .start()?;
    done.notified().await;
    handle.stop().await;
    Ok(bytes.load(Ordering::Relaxed))
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let (Some(mode), Some(topic)) = (args.first(), args.get(1)) else {
        eprintln!("usage: listener fill|consume|listen TOPIC [COUNT]");
        return;
    };
    let count: u64 = args
        .get(2)
        .and_then(|c| c.parse().ok())
        .unwrap_or(1_000_000);
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
            "consume" => consume(cluster.clone(), topic, count).await?,
            "listen" => listen(cluster.clone(), topic, count).await?,
            other => {
                return Err(rekafka::Error::config(format!("unknown mode {other}")));
            }
        };
        let secs = start.elapsed().as_secs_f64();
        cluster.close().await;
        Ok::<_, rekafka::Error>((secs, bytes))
    });
    match result {
        Ok((secs, bytes)) => println!(
            "mode={mode} records={count} secs={secs:.3} rec_per_s={:.0} mb_per_s={:.1}",
            count as f64 / secs,
            bytes as f64 / secs / 1e6
        ),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

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
};
use rekafka::producer::{Producer, ProducerConfig, Record};

use listener_dlt_support::{KConsumer, KRec};

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

/// Sends every record, then waits for every acknowledgement; returns records per second.
async fn produce_rate(cluster: &Cluster, topic: &str) -> f64 {
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

async fn dlt_end(cluster: &Cluster, dlt: &str) -> i64 {
    let c = KConsumer::new(cluster.clone(), &unique("bench-probe"), dlt, PARTITIONS);
    let mut total = 0;
    for p in 0..PARTITIONS {
        // ListOffsets LATEST: fine on the mock; on Tansu the records are counted by reading.
        let tp = rekafka::consumer::TopicPartition::new(dlt, p);
        total += c
            .consumer
            .fetch_watermarks(&tp)
            .await
            .map(|w| w.1)
            .unwrap_or(0);
    }
    let _ = c.consumer.close().await;
    total
}

/// Runs the poison flood from `src` through a container; returns dead letters per second,
/// counted until every offset is committed (commits come after the dead letters' acks).
async fn flood(cluster: &Cluster, src: &str, pipelined: bool, baseline: bool) -> f64 {
    let group = unique("bench-g");
    let consumer = KConsumer::new(cluster.clone(), &group, src, PARTITIONS);
    let builder = DeadLetterPublisher::<KRec>::builder(cluster.clone());
    let recovered = Arc::new(Mutex::new((0usize, None::<Duration>)));
    let start = Instant::now();
    let eh = DefaultErrorHandler::new()
        .back_off(FixedBackOff::no_retries())
        .retry_listener(LastRecovered(recovered.clone(), start));
    let handle = if baseline {
        ListenerContainer::builder(consumer)
            .record_handler(|_r: KRec| async { Ok::<(), HandlerError>(()) })
            .poll_timeout(Duration::from_millis(100))
            .start()
            .unwrap()
    } else if pipelined {
        let (dlt, gate) = builder.build_pipelined(consumer).await.unwrap();
        ListenerContainer::builder(gate)
            .record_handler(|_r: KRec| async { Err::<(), HandlerError>(Box::new(Poison)) })
            .error_handler(eh.recoverer(dlt))
            .poll_timeout(Duration::from_millis(100))
            .start()
            .unwrap()
    } else {
        let dlt = builder.build().await.unwrap();
        ListenerContainer::builder(consumer)
            .record_handler(|_r: KRec| async { Err::<(), HandlerError>(Box::new(Poison)) })
            .error_handler(eh.recoverer(dlt))
            .poll_timeout(Duration::from_millis(100))
            .start()
            .unwrap()
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
    let rate = N as f64 / elapsed.as_secs_f64();
    if let (n, Some(last)) = *recovered.lock().unwrap() {
        println!(
            "  {n} recoveries returned after {last:?}; everything committed after {elapsed:?}"
        );
    }
    handle.stop().await;
    let _ = probe.consumer.close().await;
    rate
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture (release)"]
async fn poison_flood_to_dlt_vs_plain_produce() {
    let cluster = Cluster::connect(ClusterConfig::new([bootstrap()]))
        .await
        .unwrap();
    // Warm up (topic creation, metadata), then measure on a fresh topic.
    let _ = produce_rate(&cluster, &unique("bench-warm")).await;
    let plain = produce_rate(&cluster, &unique("bench-plain")).await;
    let src = unique("bench-base");
    let _ = produce_rate(&cluster, &src).await;
    let base = flood(&cluster, &src, false, true).await;
    println!(
        "baseline: the container consuming the same records without failures: {base:.0} rec/s"
    );
    for pipelined in [true, false] {
        let src = unique("bench-src");
        let _ = produce_rate(&cluster, &src).await;
        let rate = flood(&cluster, &src, pipelined, false).await;
        let written = dlt_end(&cluster, &format!("{src}-dlt")).await;
        println!(
            "plain produce: {plain:.0} rec/s; poison -> DLT ({}): {rate:.0} rec/s ({:.0}% of \
             plain); {written} dead letters (ListOffsets)",
            if pipelined {
                "pipelined"
            } else {
                "per-record ack"
            },
            100.0 * rate / plain
        );
    }
    cluster.close().await;
}

/// Counts recoveries and remembers when the last one returned.
struct LastRecovered(Arc<Mutex<(usize, Option<Duration>)>>, Instant);

impl rekafka::listener::RetryListener<KRec> for LastRecovered {
    fn recovered(&self, _: &KRec, _: &rekafka::listener::SharedError) {
        let mut g = self.0.lock().unwrap();
        g.0 += 1;
        g.1 = Some(self.1.elapsed());
    }
}

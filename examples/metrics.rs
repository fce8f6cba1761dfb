//! Prints rekafka's metrics (see `docs/metrics.md`) after a short run on the embedded mock
//! cluster: a producer, and a listener container whose handler fails a few records, which
//! are retried and then dead-lettered.
//!
//! ```text
//! cargo run --example metrics --features mock
//! ```
//!
//! Any recorder of the `metrics` facade works the same way (a Prometheus exporter, say);
//! this one is `metrics_util`'s debugging recorder, read once at the end.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use rekafka::Client;
use rekafka::consumer::OffsetReset;
use rekafka::listener::{DefaultErrorHandler, FixedBackOff, HandlerError, ListenerConsumerRecord};
use rekafka::mock::MockCluster;
use rekafka::producer::{ProducerConfig, Record};

const TOPIC: &str = "orders";
const RECORDS: usize = 200;

/// Every 17th record (by key) fails every time, and then goes to `orders-dlt`.
fn fails(key: usize) -> bool {
    key % 17 == 5
}

#[derive(Debug, thiserror::Error)]
#[error("order {0} cannot be processed")]
struct Rejected(String);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The recorder first: clients register their metrics when they are built.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install()?;

    let mock = MockCluster::builder()
        .topic(TOPIC, 3)
        .topic("orders-dlt", 3)
        .start()
        .await?;
    let connect = |client_id: &'static str| {
        Client::builder()
            .bootstrap_servers([mock.bootstrap()])
            .client_id(client_id)
            .build()
    };

    let producer = connect("orders-producer")
        .await?
        .producer(ProducerConfig::default())
        .await?;
    let mut deliveries = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let record = Record::new(TOPIC)
            .with_key(i.to_string())
            .with_value(format!("order {i}"));
        deliveries.push(producer.send(record).await?);
    }
    for d in deliveries {
        d.await?;
    }
    producer.close().await;

    let client = connect("orders-listener").await?;
    let dead_letters = client
        .dead_letter_publisher::<ListenerConsumerRecord>()
        .group("billing")
        .build()
        .await?;
    let done = Arc::new(AtomicUsize::new(0));
    let seen = done.clone();
    let container = client
        .listener_container([TOPIC], |c| {
            c.group_id = Some("billing".into());
            c.auto_offset_reset = OffsetReset::Earliest;
        })?
        .record_handler(move |r: ListenerConsumerRecord| {
            let seen = seen.clone();
            async move {
                let key: usize = r.key_str().and_then(|k| k.parse().ok()).unwrap_or(0);
                if fails(key) {
                    return Err(Box::new(Rejected(key.to_string())) as HandlerError);
                }
                seen.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(10), 2))
                .recoverer(dead_letters),
        )
        .start()?;
    let failing = (0..RECORDS).filter(|i| fails(*i)).count();
    let dlt = || -> i64 {
        (0..3)
            .map(|p| mock.high_watermark("orders-dlt", p).unwrap_or(0))
            .sum()
    };
    while done.load(Ordering::SeqCst) + failing < RECORDS || dlt() < failing as i64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    container.stop().await;

    let mut rows: Vec<(String, String)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels: Vec<String> = key
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            let value = match value {
                DebugValue::Counter(c) => c.to_string(),
                DebugValue::Gauge(g) => format!("{:.3}", g.into_inner()),
                DebugValue::Histogram(h) => {
                    let n = h.len();
                    let max = h.iter().map(|x| x.into_inner()).fold(0.0, f64::max);
                    let mean = h.iter().map(|x| x.into_inner()).sum::<f64>() / n.max(1) as f64;
                    format!("n={n} mean={mean:.6} max={max:.6}")
                }
            };
            (format!("{}{{{}}}", key.name(), labels.join(",")), value)
        })
        .collect();
    rows.sort();
    println!("{RECORDS} records, {failing} failing every attempt (dead-lettered)\n");
    for (name, value) in rows {
        println!("{name:<100} {value}");
    }
    mock.shutdown().await;
    Ok(())
}

//! The rekafka walk-through: produce, consume through a listener container, retry with
//! exponential back-off, dead-letter what cannot be processed, and show what happened.
//!
//! ```text
//! cargo run --example demo --features mock
//! ```
//!
//! With no broker configured it starts rekafka's embedded mock cluster (three brokers, in this
//! process). With `REKAFKA_BOOTSTRAP=host:port` it runs against that broker instead.
//!
//! The 1,000 orders it produces include three kinds of trouble:
//! * every tenth order (`i % 10 == 3`) hits a *transient* failure on its first delivery (a
//!   payment service timing out) and succeeds when retried;
//! * orders with `i % 97 == 0` are *invalid* (a negative amount): not retryable, so they go
//!   to the dead-letter topic on their first failure;
//! * four orders (`i % 250 == 125`) are not even valid UTF-8: they fail to deserialize, never
//!   reach the handler, and are dead-lettered with their raw bytes.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::Client;
use rekafka::admin::NewTopic;
use rekafka::consumer::{
    AutoCommit, ConsumerConfig, OffsetReset, StartOffset, StringDeserializer, TopicPartition,
};
use rekafka::listener::{
    AckMode, DeadLetterInfo, DefaultErrorHandler, ExponentialBackOff, HandlerError,
    ListenerConsumerRecord, RetryListener, SharedError, deserialization_check,
};
use rekafka::mock::MockCluster;
use rekafka::producer::{ProducerConfig, Record};

/// How many orders the demo produces.
pub const ORDERS: u64 = 1000;
/// Partitions of the orders topic (and of its dead-letter topic).
pub const PARTITIONS: i32 = 3;

/// What the demo saw; printed by `main`, asserted by the test suite.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Orders the handler processed successfully.
    pub handled: u64,
    /// Failed deliveries (each is followed by a retry or a dead letter).
    pub failed_deliveries: u64,
    /// Retries: deliveries after a failed one.
    pub retries: u64,
    /// Dead letters read back from the dead-letter topic.
    pub dead_letters: Vec<DeadLetter>,
    /// Final committed offset per partition of the orders topic.
    pub committed: BTreeMap<i32, i64>,
    /// Log end per partition of the orders topic (from the producer's delivery reports).
    pub log_end: BTreeMap<i32, i64>,
    /// Wall time of the consuming part.
    pub elapsed: Duration,
}

/// One dead letter as read back.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The dead letter's key.
    pub key: String,
    /// Its raw value.
    pub value: Vec<u8>,
    /// Its provenance and exception headers, decoded.
    pub info: DeadLetterInfo,
}

#[derive(Debug, thiserror::Error)]
#[error("order {0} has a negative amount")]
struct InvalidOrder(u64);

#[derive(Debug, thiserror::Error)]
#[error("payment service timed out for order {0}")]
struct PaymentTimeout(u64);

fn order(i: u64) -> Vec<u8> {
    if i % 250 == 125 {
        // Not UTF-8: fails the string deserializer.
        return vec![0xff, 0xfe, b'{', (i % 256) as u8];
    }
    let amount: i64 = if i.is_multiple_of(97) {
        -5
    } else {
        (i as i64 % 50) + 1
    };
    format!("{{\"id\":{i},\"amount\":{amount}}}").into_bytes()
}

struct Counts {
    failed: AtomicU64,
}

impl RetryListener<ListenerConsumerRecord> for Counts {
    fn failed_delivery(&self, _record: &ListenerConsumerRecord, _e: &SharedError, _attempt: u32) {
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Runs the walk-through against `bootstrap`, with topics `topic` and `<topic>-dlt`.
pub async fn run(bootstrap: &str, topic: &str, group: &str) -> rekafka::Result<Summary> {
    // One client makes everything below; it connects when first needed.
    let client = Client::builder()
        .bootstrap_servers([bootstrap])
        .build()
        .await?;
    let admin = client.admin();
    let dlt = format!("{topic}-dlt");
    for r in admin
        .create_topics(&[
            NewTopic::new(topic, PARTITIONS),
            NewTopic::new(&dlt, PARTITIONS),
        ])
        .await?
    {
        if let Err(e) = r {
            if e.kafka_code() != Some(rekafka::KafkaCode::TopicAlreadyExists) {
                return Err(e);
            }
        }
    }

    // 1. Produce the orders (idempotent producer, keyed by order id).
    let producer = client.producer(ProducerConfig::default()).await?;
    let mut deliveries = Vec::new();
    for i in 0..ORDERS {
        let record = Record::new(topic)
            .with_key(format!("order-{i}"))
            .with_value(order(i))
            .with_header("source", Some("demo"));
        deliveries.push(producer.send(record).await.map_err(|e| e.error)?);
    }
    let mut summary = Summary::default();
    for d in deliveries {
        let md = d.await.map_err(|e| e.error)?;
        let end = summary.log_end.entry(md.partition).or_insert(0);
        *end = (*end).max(md.offset + 1);
    }
    producer.close().await;

    // 2. Consume through a listener container: exponential back-off, then the dead-letter topic.
    let dead_letters = client
        .dead_letter_publisher::<ListenerConsumerRecord>()
        .group(group)
        .build()
        .await?;
    let mut error_handler = DefaultErrorHandler::new()
        .back_off(
            ExponentialBackOff::with_max_retries(3)
                .initial_interval(Duration::from_millis(20))
                .multiplier(2.0),
        )
        .recoverer(dead_letters);
    error_handler
        .classifier_mut()
        .add_not_retryable::<InvalidOrder>();
    let counts = Arc::new(Counts {
        failed: AtomicU64::new(0),
    });
    let error_handler = error_handler.retry_listener_arc(counts.clone());

    let handled = Arc::new(AtomicU64::new(0));
    let retried: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let (h, seen_failure) = (handled.clone(), retried.clone());
    let started = Instant::now();
    // The container's consumer: subscribed to the orders, auto-commit off (the container commits).
    let container = client
        .listener_container([topic], |c| {
            c.group_id = Some(group.to_owned());
            c.auto_offset_reset = OffsetReset::Earliest;
            c.session_timeout = Duration::from_secs(6);
            c.fetch_max_wait = Duration::from_millis(50);
        })?
        .record_handler(move |r: ListenerConsumerRecord| {
            let (h, seen_failure) = (h.clone(), seen_failure.clone());
            async move {
                let text = r.value_str().unwrap_or_default();
                let id: u64 = text
                    .split("\"id\":")
                    .nth(1)
                    .and_then(|s| s.split(',').next())
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if text.contains("\"amount\":-") {
                    return Err(Box::new(InvalidOrder(id)) as HandlerError);
                }
                if id % 10 == 3
                    && seen_failure
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id)
                {
                    return Err(Box::new(PaymentTimeout(id)) as HandlerError);
                }
                h.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .deserialization_check(deserialization_check(
            StringDeserializer,
            StringDeserializer,
        ))
        .error_handler(error_handler)
        .ack_mode(AckMode::Batch)
        .poll_timeout(Duration::from_millis(200))
        .start()?;
    let mut events = container.events();

    // 3. Wait until every order is committed (handled or dead-lettered).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Ok(rekafka::listener::ContainerEvent::Committed(offsets))) =
            tokio::time::timeout(Duration::from_millis(200), events.recv()).await
        {
            for o in offsets {
                summary.committed.insert(o.partition.1, o.offset);
            }
        }
        if summary
            .log_end
            .iter()
            .all(|(p, end)| summary.committed.get(p) == Some(end))
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(rekafka::Error::with_message(
                rekafka::ErrorKind::Timeout,
                format!("not every order was committed: {:?}", summary.committed),
            ));
        }
    }
    container.stop().await;
    summary.elapsed = started.elapsed();
    summary.handled = handled.load(Ordering::Relaxed);
    summary.failed_deliveries = counts.failed.load(Ordering::Relaxed);
    summary.retries = retried.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;

    // 4. Read the dead letters back.
    let reader = client.consumer(
        ConsumerConfig::new()
            .with_auto_commit(AutoCommit::Disabled)
            .with_fetch_max_wait(Duration::from_millis(50)),
    )?;
    reader
        .assign((0..PARTITIONS).map(|p| (TopicPartition::new(&dlt, p), StartOffset::Beginning)))?;
    let expected = (0..ORDERS)
        .filter(|i| i % 97 == 0 || i % 250 == 125)
        .count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while summary.dead_letters.len() < expected && Instant::now() < deadline {
        for r in reader.poll(Duration::from_millis(200)).await?.iter() {
            let headers: Vec<_> = r.headers.iter().collect();
            summary.dead_letters.push(DeadLetter {
                key: r
                    .key
                    .as_deref()
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .unwrap_or_default(),
                value: r.value.as_deref().map(<[u8]>::to_vec).unwrap_or_default(),
                info: DeadLetterInfo::from_headers(&headers),
            });
        }
    }
    reader.close().await?;
    summary.dead_letters.sort_by_key(|d| {
        d.key
            .trim_start_matches("order-")
            .parse::<u64>()
            .unwrap_or(u64::MAX)
    });
    client.close().await;
    Ok(summary)
}

fn print(summary: &Summary, broker: &str) {
    println!("rekafka demo — {ORDERS} orders through a listener container ({broker})\n");
    println!("  handled successfully      {}", summary.handled);
    println!(
        "  failed deliveries         {}  (transient failures retried with exponential back-off: {})",
        summary.failed_deliveries, summary.retries
    );
    println!(
        "  dead letters              {}  (invalid orders and undeserializable bytes)",
        summary.dead_letters.len()
    );
    println!("  consumed in               {:.2?}\n", summary.elapsed);
    println!("  dead letters (provenance headers as Spring for Apache Kafka writes them):");
    for d in &summary.dead_letters {
        let i = &d.info;
        println!(
            "    {:<10} from {}-{}@{}  group={}  {}: {}",
            d.key,
            i.original_topic.as_deref().unwrap_or("?"),
            i.original_partition.unwrap_or(-1),
            i.original_offset.unwrap_or(-1),
            i.original_consumer_group.as_deref().unwrap_or("-"),
            i.exception_fqcn.as_deref().unwrap_or("?"),
            i.exception_message.as_deref().unwrap_or(""),
        );
    }
    println!("\n  final committed offsets (= log end, nothing lost, nothing skipped):");
    for (p, end) in &summary.log_end {
        println!(
            "    partition {p}: committed {}  log end {end}",
            summary.committed.get(p).copied().unwrap_or(-1)
        );
    }
}

#[allow(dead_code)]
fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async {
        let suffix = std::process::id();
        match std::env::var("REKAFKA_BOOTSTRAP") {
            Ok(b) if !b.is_empty() => {
                let topic = format!("orders-{suffix}");
                run(&b, &topic, &format!("billing-{suffix}"))
                    .await
                    .map(|s| (s, b))
            }
            _ => {
                let mock = MockCluster::builder().brokers(3).start().await?;
                let bootstrap = mock.bootstrap();
                let s = run(&bootstrap, "orders", "billing").await?;
                mock.shutdown().await;
                Ok((
                    s,
                    format!("embedded mock cluster, 3 brokers at {bootstrap}"),
                ))
            }
        }
    });
    match result {
        Ok((summary, broker)) => print(&summary, &broker),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

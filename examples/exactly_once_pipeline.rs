//! An exactly-once pipeline: read `orders`, write `order-totals`, and commit the consumed
//! offsets in the same transaction, so every order's output is visible exactly once to
//! `read_committed` readers, even when processing fails midway.
//!
//! ```text
//! cargo run --example exactly_once_pipeline --features mock
//! ```
//!
//! It runs on rekafka's embedded mock cluster (three brokers, in this process). The listener
//! container runs a transaction per poll over a [`TransactionalProducer`] made by the client:
//! the handler's sends join it, and the container adds the poll's offsets and commits. Every
//! order ending in 7 fails once after its output was sent: the transaction aborts (the output
//! never becomes visible) and the poll is redelivered. Order 42 always fails: after its retries
//! it is dead-lettered inside a transaction that also commits its offset.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::Client;
use rekafka::consumer::{IsolationLevel, OffsetReset, StartOffset, TopicPartition};
use rekafka::listener::{
    DefaultErrorHandler, FixedBackOff, HandlerError, ListenerConsumerRecord,
    TransactionalDeadLetters,
};
use rekafka::mock::MockCluster;
use rekafka::producer::Record;

const IN: &str = "orders";
const OUT: &str = "order-totals";
const PARTITIONS: i32 = 3;
pub const ORDERS: u64 = 200;
pub const POISON: u64 = 42;

#[derive(Debug, thiserror::Error)]
#[error("pricing service failed for order {0}")]
struct PricingFailed(u64);

/// What the example saw; printed by `main`.
#[derive(Debug, Default)]
pub struct Summary {
    /// The committed outputs, by order id: how many times each is visible.
    pub outputs: BTreeMap<u64, u32>,
    /// Failed deliveries the handler returned (transient and poison).
    pub failures: u64,
    /// The orders in the dead-letter topic.
    pub dead_letters: Vec<u64>,
}

fn id_of(r: &ListenerConsumerRecord) -> u64 {
    r.value_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Reads every committed record of `topic` from the beginning (`read_committed`).
async fn read_committed(client: &Client, topic: &str, expect: usize) -> rekafka::Result<Vec<u64>> {
    let reader = client.consumer_with(|c| c.isolation_level = IsolationLevel::ReadCommitted)?;
    reader
        .assign((0..PARTITIONS).map(|p| (TopicPartition::new(topic, p), StartOffset::Beginning)))?;
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    // Read until the expected count, then a little longer: a duplicate would show up.
    let mut quiet_polls = 0;
    while Instant::now() < deadline && (ids.len() < expect || quiet_polls < 3) {
        let records = reader.poll(Duration::from_millis(200)).await?;
        if records.is_empty() {
            quiet_polls += 1;
        }
        for r in records.iter() {
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            // "id" in the dead-letter topic, "id:total" in the output topic.
            if let Some(id) = v.split(':').next().and_then(|s| s.parse().ok()) {
                ids.push(id);
            }
        }
    }
    reader.close().await?;
    Ok(ids)
}

/// The example's mock cluster: three brokers, the input, output and dead-letter topics.
pub async fn mock() -> rekafka::Result<MockCluster> {
    MockCluster::builder()
        .brokers(3)
        .topic(IN, PARTITIONS)
        .topic(OUT, PARTITIONS)
        .topic(format!("{IN}-dlt"), PARTITIONS)
        .start()
        .await
}

/// Produces the orders, runs the pipeline until every order is committed, reads the results.
pub async fn run(bootstrap: &str) -> rekafka::Result<Summary> {
    let client = Client::builder()
        .bootstrap_servers([bootstrap])
        .build()
        .await?;
    let producer = client.producer_with(|_| {}).await?;
    let mut log_end = BTreeMap::new();
    for i in 0..ORDERS {
        let md = producer
            .send_and_wait(
                Record::new(IN)
                    .with_key(format!("order-{i}"))
                    .with_value(i.to_string()),
            )
            .await?;
        log_end.insert(md.partition, md.offset + 1);
    }
    producer.close().await;

    // The pipeline's transactional producer: one transactional.id per pipeline instance.
    let txn = Arc::new(client.transactional_producer_with("totals-pipeline-1", |_| {})?);
    txn.init_transactions().await?;
    let layout = client
        .dead_letter_publisher::<ListenerConsumerRecord>()
        .group("totals")
        .build()
        .await?;
    let failed_once: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let failures = Arc::new(Mutex::new(0u64));
    let (p, once, fails) = (txn.clone(), failed_once.clone(), failures.clone());
    let container = client
        .listener_container([IN], |c| {
            c.group_id = Some("totals".into());
            c.auto_offset_reset = OffsetReset::Earliest;
            // Read only committed inputs (they might come from another transactional stage).
            c.isolation_level = IsolationLevel::ReadCommitted;
            // An aborted poll is fetched again: a short fetch wait keeps that quick.
            c.fetch_max_wait = Duration::from_millis(50);
        })?
        .record_handler(move |r: ListenerConsumerRecord| {
            let (p, once, fails) = (p.clone(), once.clone(), fails.clone());
            async move {
                let id = id_of(&r);
                // The output joins the poll's transaction (whose commit waits for it).
                let _delivery = p
                    .send(
                        Record::new(OUT)
                            .with_key(format!("order-{id}"))
                            .with_value(format!("{id}:{}", id * 3)),
                    )
                    .await
                    .map_err(|e| Box::new(e.error) as HandlerError)?;
                let fail = id == POISON
                    || (id % 10 == 7 && once.lock().unwrap_or_else(|e| e.into_inner()).insert(id));
                if fail {
                    *fails.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    return Err(Box::new(PricingFailed(id)) as HandlerError);
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(20), 2))
                .recoverer(TransactionalDeadLetters::new(layout, txn.clone())),
        )
        .transactional(txn.clone())
        .poll_timeout(Duration::from_millis(200))
        .start()?;

    let admin = client.admin();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let committed = admin.list_group_offsets("totals", None).await?;
        let done = log_end.iter().all(|(p, end)| {
            committed.iter().any(|(tp, c)| {
                tp.topic() == IN
                    && tp.partition == *p
                    && matches!(c, Ok(Some(c)) if c.offset == *end)
            })
        });
        if done {
            break;
        }
        if Instant::now() > deadline {
            return Err(rekafka::Error::with_message(
                rekafka::ErrorKind::Timeout,
                "the orders were not all committed",
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    container.stop().await;

    let mut summary = Summary::default();
    for id in read_committed(&client, OUT, ORDERS as usize - 1).await? {
        *summary.outputs.entry(id).or_default() += 1;
    }
    summary.dead_letters = read_committed(&client, &format!("{IN}-dlt"), 1).await?;
    summary.failures = *failures.lock().unwrap_or_else(|e| e.into_inner());
    client.close().await;
    Ok(summary)
}

#[allow(dead_code)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mock = mock().await?;
        let s = run(&mock.bootstrap()).await?;
        mock.shutdown().await;
        let twice: Vec<_> = s.outputs.iter().filter(|(_, n)| **n > 1).collect();
        let missing: Vec<u64> = (0..ORDERS)
            .filter(|i| *i != POISON && !s.outputs.contains_key(i))
            .collect();
        println!("rekafka exactly-once pipeline (embedded mock cluster, 3 brokers)\n");
        println!(
            "  {ORDERS} orders in, {} failed deliveries (aborted transactions)",
            s.failures
        );
        println!(
            "  {} outputs visible to read_committed; duplicates {:?}, missing {:?}",
            s.outputs.len(),
            twice,
            missing
        );
        println!("  dead letters: orders {:?}", s.dead_letters);
        Ok(())
    })
}

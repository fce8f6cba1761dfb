//! Dead letters and their replay: records that cannot be processed go to `shipments-dlt` with
//! Spring-compatible provenance headers; once the cause is fixed, they are republished to where
//! they came from and processed like any other record.
//!
//! ```text
//! cargo run --example dead_letters_and_replay --features mock
//! ```
//!
//! It runs on rekafka's embedded mock cluster (three brokers, in this process). 100 shipments
//! are produced; those with `i % 12 == 5` name a warehouse the service does not know yet, a
//! non-retryable error, so they are dead-lettered on their first failure. Then the warehouse is
//! "deployed" and a replayer reads the dead-letter topic, republishes each dead letter to its
//! original topic and partition (the `kafka_dlt-original-*` headers say where) without the
//! `kafka_dlt-*` headers, and commits its progress in a group of its own so that a second
//! replay republishes nothing twice. (The `rekafka dlt replay` command does the same from the
//! command line.)

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::Client;
use rekafka::admin::OffsetSpec;
use rekafka::consumer::{OffsetReset, StartOffset, TopicPartition};
use rekafka::listener::{
    DeadLetterInfo, DefaultErrorHandler, HandlerError, ListenerConsumerRecord,
};
use rekafka::mock::MockCluster;
use rekafka::producer::Record;

const TOPIC: &str = "shipments";
const DLT: &str = "shipments-dlt";
const PARTITIONS: i32 = 3;
pub const SHIPMENTS: u64 = 100;

#[derive(Debug, thiserror::Error)]
#[error("unknown warehouse for shipment {0}")]
struct UnknownWarehouse(u64);

/// What the example saw; printed by `main`.
#[derive(Debug, Default)]
pub struct Summary {
    /// How many times each shipment was processed successfully.
    pub processed: BTreeMap<u64, u32>,
    /// The dead letters before the replay: shipment id and where it came from.
    pub dead_letters: Vec<(u64, String, i32, i64)>,
    /// Dead letters the first replay republished, and the second.
    pub replayed: (usize, usize),
}

/// Republishes every dead letter of `DLT` not yet replayed by the `replayer` group; returns how
/// many it republished.
async fn replay(client: &Client) -> rekafka::Result<usize> {
    let reader = client.consumer_with(|c| {
        c.group_id = Some("shipments-dlt-replay".into());
        c.auto_offset_reset = OffsetReset::Earliest;
        c.auto_commit = rekafka::consumer::AutoCommit::Disabled;
    })?;
    reader.subscribe([DLT])?;
    // Replay up to the dead-letter topic's current end.
    let spec: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            (
                rekafka::admin::TopicPartition::new(DLT, p),
                OffsetSpec::Latest,
            )
        })
        .collect();
    let mut ends = BTreeMap::new();
    for (p, listed) in (0..PARTITIONS).zip(client.admin().list_offsets(&spec).await?) {
        ends.insert(p, listed?.offset.unwrap_or(0));
    }
    let producer = client.producer_with(|_| {}).await?;
    let mut replayed = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let assigned = reader.assignment();
        let mut at_end = assigned.len() == ends.len();
        for tp in &assigned {
            at_end &= reader.position(tp).await? >= ends[&tp.partition];
        }
        if at_end || Instant::now() > deadline {
            break;
        }
        let records = reader.poll(Duration::from_millis(200)).await?;
        for r in records.iter() {
            let headers: Vec<_> = r.headers.iter().collect();
            let info = DeadLetterInfo::from_headers(&headers);
            let Some(topic) = info.original_topic.clone() else {
                continue; // not a dead letter
            };
            let mut record = Record::new(topic);
            if let Some(p) = info.original_partition {
                record = record.with_partition(p);
            }
            if let Some(k) = &r.key {
                record = record.with_key(k.clone());
            }
            if let Some(v) = &r.value {
                record = record.with_value(v.clone());
            }
            for h in r.headers.iter() {
                if !h.key().starts_with("kafka_dlt-") {
                    record = record.with_header(h.key().to_owned(), h.value().map(<[u8]>::to_vec));
                }
            }
            producer.send_and_wait(record).await?;
            replayed += 1;
        }
        // Commit only what was acknowledged: an interrupted replay resumes after it.
        reader.commit().await?;
    }
    producer.close().await;
    reader.close().await?;
    Ok(replayed)
}

/// The example's mock cluster: three brokers, the topic and its dead-letter topic.
pub async fn mock() -> rekafka::Result<MockCluster> {
    MockCluster::builder()
        .brokers(3)
        .topic(TOPIC, PARTITIONS)
        .topic(DLT, PARTITIONS)
        .start()
        .await
}

/// Produces the shipments, processes them (dead-lettering the unknown warehouses), then fixes
/// the cause and replays the dead letters twice.
pub async fn run(bootstrap: &str) -> rekafka::Result<Summary> {
    let client = Client::builder()
        .bootstrap_servers([bootstrap])
        .build()
        .await?;
    let producer = client.producer_with(|_| {}).await?;
    for i in 0..SHIPMENTS {
        let warehouse = if i % 12 == 5 { "oslo" } else { "lyon" };
        let record = Record::new(TOPIC)
            .with_key(format!("shipment-{i}"))
            .with_value(format!("{i}:{warehouse}"))
            .with_header("source", Some("example"));
        producer.send_and_wait(record).await?;
    }
    producer.close().await;

    let oslo_known = Arc::new(AtomicBool::new(false));
    let processed: Arc<Mutex<BTreeMap<u64, u32>>> = Arc::default();
    let (known, done) = (oslo_known.clone(), processed.clone());
    let dead_letters = client
        .dead_letter_publisher::<ListenerConsumerRecord>()
        .group("shipping")
        .build()
        .await?;
    let mut error_handler = DefaultErrorHandler::new().recoverer(dead_letters);
    error_handler
        .classifier_mut()
        .add_not_retryable::<UnknownWarehouse>();
    let container = client
        .listener_container([TOPIC], |c| {
            c.group_id = Some("shipping".into());
            c.auto_offset_reset = OffsetReset::Earliest;
            c.fetch_max_wait = Duration::from_millis(50);
        })?
        .record_handler(move |r: ListenerConsumerRecord| {
            let (known, done) = (known.clone(), done.clone());
            async move {
                let (id, warehouse) = r
                    .value_str()
                    .and_then(|v| v.split_once(':'))
                    .map(|(id, w)| (id.parse::<u64>().unwrap_or(u64::MAX), w.to_owned()))
                    .unwrap_or((u64::MAX, String::new()));
                if warehouse == "oslo" && !known.load(Ordering::SeqCst) {
                    return Err(Box::new(UnknownWarehouse(id)) as HandlerError);
                }
                *done
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(id)
                    .or_default() += 1;
                Ok(())
            }
        })
        .error_handler(error_handler)
        .poll_timeout(Duration::from_millis(200))
        .start()?;

    // Wait for every shipment to be processed or dead-lettered, and read the dead letters.
    let mut summary = Summary::default();
    let expected_dead = (0..SHIPMENTS).filter(|i| i % 12 == 5).count();
    let reader = client.consumer_with(|c| c.auto_offset_reset = OffsetReset::Earliest)?;
    reader
        .assign((0..PARTITIONS).map(|p| (TopicPartition::new(DLT, p), StartOffset::Beginning)))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while summary.dead_letters.len() < expected_dead && Instant::now() < deadline {
        for r in reader.poll(Duration::from_millis(200)).await?.iter() {
            let headers: Vec<_> = r.headers.iter().collect();
            let info = DeadLetterInfo::from_headers(&headers);
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            let id = v
                .split(':')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            summary.dead_letters.push((
                id,
                info.original_topic.unwrap_or_default(),
                info.original_partition.unwrap_or(-1),
                info.original_offset.unwrap_or(-1),
            ));
        }
    }
    reader.close().await?;

    // The fix is deployed; replay the dead letters, then once more (it finds nothing new).
    oslo_known.store(true, Ordering::SeqCst);
    let first = replay(&client).await?;
    let second = replay(&client).await?;
    summary.replayed = (first, second);

    let deadline = Instant::now() + Duration::from_secs(30);
    while processed.lock().unwrap_or_else(|e| e.into_inner()).len() < SHIPMENTS as usize
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    container.stop().await;
    summary.processed = processed.lock().unwrap_or_else(|e| e.into_inner()).clone();
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
        println!("rekafka dead letters and replay (embedded mock cluster, 3 brokers)\n");
        println!("  dead letters (shipment, original topic, partition, offset):");
        for d in &s.dead_letters {
            println!("    {d:?}");
        }
        println!(
            "  replayed {} after the fix; a second replay found {} to republish",
            s.replayed.0, s.replayed.1
        );
        let twice = s.processed.values().filter(|n| **n > 1).count();
        println!(
            "  {} of {SHIPMENTS} shipments processed, {twice} more than once",
            s.processed.len()
        );
        Ok(())
    })
}

//! A batch listener: the handler gets every record of a poll at once, and names the record that
//! failed so that only that one is retried and dead-lettered.
//!
//! ```text
//! cargo run --example batch_listener --features mock
//! ```
//!
//! It runs on rekafka's embedded mock cluster (three brokers, in this process). 300 invoices
//! are produced; those with `i % 53 == 7` have a negative total. The batch handler books the
//! invoices of a batch in order and, at the first bad one, fails with
//! [`BatchListenerFailed`] at its index (Spring's `BatchListenerFailedException`): the invoices
//! before it are committed, the bad one is retried under the back-off and then sent to
//! `invoices-dlt`, and the ones after it are delivered again in the next batch.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::Client;
use rekafka::consumer::OffsetReset;
use rekafka::listener::{
    BatchListenerFailed, DefaultErrorHandler, FixedBackOff, HandlerError, ListenerConsumerRecord,
};
use rekafka::mock::MockCluster;
use rekafka::producer::Record;

pub const TOPIC: &str = "invoices";
pub const INVOICES: i64 = 300;

#[derive(Debug, thiserror::Error)]
#[error("invoice {0} has a negative total")]
struct NegativeTotal(i64);

/// What the example saw; printed by `main`.
#[derive(Debug, Default)]
pub struct Summary {
    /// How many times each invoice was booked (every good one exactly once).
    pub booked: BTreeMap<i64, u32>,
    /// Batches the handler was given, and their sizes.
    pub batch_sizes: Vec<usize>,
    /// The invoices found in the dead-letter topic.
    pub dead_letters: Vec<i64>,
}

pub fn total(i: i64) -> i64 {
    if i % 53 == 7 { -i } else { i * 10 }
}

/// The example's mock cluster: three brokers, the topic.
pub async fn mock() -> rekafka::Result<MockCluster> {
    MockCluster::builder()
        .brokers(3)
        .topic(TOPIC, 3)
        .start()
        .await
}

/// Produces the invoices, books them with a batch listener, reads the dead letters back.
pub async fn run(bootstrap: &str) -> rekafka::Result<Summary> {
    let client = Client::builder()
        .bootstrap_servers([bootstrap])
        .build()
        .await?;
    let producer = client.producer_with(|_| {}).await?;
    let mut log_end = BTreeMap::new();
    for i in 0..INVOICES {
        let record = Record::new(TOPIC)
            .with_key(format!("invoice-{i}"))
            .with_value(format!("{i}:{}", total(i)));
        let md = producer.send_and_wait(record).await?;
        log_end.insert(md.partition, md.offset + 1);
    }
    producer.close().await;

    let booked: Arc<Mutex<BTreeMap<i64, u32>>> = Arc::default();
    let batch_sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
    let (b, sizes) = (booked.clone(), batch_sizes.clone());
    let dead_letters = client
        .dead_letter_publisher::<ListenerConsumerRecord>()
        .group("invoicing")
        .build()
        .await?;
    let container = client
        .listener_container([TOPIC], |c| {
            c.group_id = Some("invoicing".into());
            c.auto_offset_reset = OffsetReset::Earliest;
            c.max_poll_records = 50;
            c.fetch_max_wait = Duration::from_millis(50);
        })?
        .batch_handler(move |batch: Vec<ListenerConsumerRecord>| {
            let (b, sizes) = (b.clone(), sizes.clone());
            async move {
                sizes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(batch.len());
                for (index, record) in batch.iter().enumerate() {
                    let (id, total) = record
                        .value_str()
                        .and_then(|v| v.split_once(':'))
                        .and_then(|(id, t)| Some((id.parse::<i64>().ok()?, t.parse::<i64>().ok()?)))
                        .unwrap_or((-1, -1));
                    if total < 0 {
                        // Everything before `index` is booked and will be committed.
                        return Err(
                            Box::new(BatchListenerFailed::at_index(index, NegativeTotal(id)))
                                as HandlerError,
                        );
                    }
                    *b.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(id)
                        .or_default() += 1;
                }
                Ok(())
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(20), 2))
                .recoverer(dead_letters),
        )
        .poll_timeout(Duration::from_millis(200))
        .start()?;

    // Wait until the group's committed offsets reach the log end (every invoice booked or
    // dead-lettered).
    let admin = client.admin();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let committed = admin.list_group_offsets("invoicing", None).await?;
        let done = log_end.iter().all(|(p, end)| {
            committed.iter().any(|(tp, c)| {
                tp.topic() == TOPIC
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
                "the invoices were not all committed",
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    container.stop().await;

    // Read the dead letters back.
    let reader = client.consumer_with(|c| c.auto_offset_reset = OffsetReset::Earliest)?;
    let dlt = format!("{TOPIC}-dlt");
    let partitions = client.admin().describe_topics(&[&dlt]).await?;
    let count = partitions[0].as_ref().map_or(0, |d| d.partitions.len());
    reader.assign((0..count as i32).map(|p| {
        (
            rekafka::consumer::TopicPartition::new(&dlt, p),
            rekafka::consumer::StartOffset::Beginning,
        )
    }))?;
    let expected = (0..INVOICES).filter(|i| total(*i) < 0).count();
    let mut dead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead.len() < expected && Instant::now() < deadline {
        for r in reader.poll(Duration::from_millis(200)).await?.iter() {
            let v = String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            if let Some(id) = v.split_once(':').and_then(|(id, _)| id.parse().ok()) {
                dead.push(id);
            }
        }
    }
    reader.close().await?;
    client.close().await;
    dead.sort_unstable();
    let booked = booked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let batch_sizes = batch_sizes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    Ok(Summary {
        booked,
        batch_sizes,
        dead_letters: dead,
    })
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
        let twice = s.booked.values().filter(|n| **n > 1).count();
        println!("rekafka batch listener (embedded mock cluster, 3 brokers)\n");
        println!(
            "  {} batches handed to the handler (sizes {:?}...)",
            s.batch_sizes.len(),
            &s.batch_sizes[..s.batch_sizes.len().min(8)]
        );
        println!(
            "  {} invoices booked, {} of them more than once",
            s.booked.len(),
            twice
        );
        println!(
            "  {} dead letters in {TOPIC}-dlt: invoices {:?}",
            s.dead_letters.len(),
            s.dead_letters
        );
        Ok(())
    })
}

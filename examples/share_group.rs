//! A share group (KIP-932, "queues for Kafka"): two share consumers take jobs from the same
//! topic; each job is accepted, released for another try, or rejected.
//!
//! ```text
//! cargo run --example share_group -- -b 127.0.0.1:9092
//! ```
//!
//! Needs a Kafka 4.x cluster with share groups (on by default since Kafka 4.2): the address
//! comes from `-b host:port[,...]` or `REKAFKA_BOOTSTRAP`. It creates a topic `share-demo-…`,
//! sets the group's `share.auto.offset.reset=earliest` (a share group starts at the end of
//! the partitions by default), and writes 1,000 jobs: every 10th fails on its first delivery
//! (released, so the broker delivers it again with delivery count 2, maybe to the other
//! consumer), every 100th can never be processed (rejected, never delivered again).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::Client;
use rekafka::admin::{AlterConfigOp, NewTopic, SHARE_AUTO_OFFSET_RESET};
use rekafka::producer::{ProducerConfig, Record};
use rekafka::share::{AcknowledgeType, AcknowledgementMode, ShareConsumerConfig};

const JOBS: usize = 1000;

/// (job, delivery count, verdict, consumer) of one delivery.
type Delivery = (usize, u16, AcknowledgeType, usize);

fn bootstrap() -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "-b" || a == "--bootstrap")
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var("REKAFKA_BOOTSTRAP").ok())
        .filter(|b| !b.is_empty())
}

/// The handler's verdict for job `i` on delivery `delivery_count`.
fn verdict(i: usize, delivery_count: u16) -> AcknowledgeType {
    if i.is_multiple_of(100) {
        AcknowledgeType::Reject
    } else if i.is_multiple_of(10) && delivery_count == 1 {
        AcknowledgeType::Release
    } else {
        AcknowledgeType::Accept
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(bootstrap) = bootstrap() else {
        eprintln!("usage: share_group -b host:port[,host:port...] (or set REKAFKA_BOOTSTRAP)");
        std::process::exit(2);
    };
    let client = Client::builder()
        .bootstrap_servers(bootstrap.split(','))
        .connect()
        .await?;
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let topic = format!("share-demo-{}", stamp.as_millis());
    let group = format!("{topic}-workers");

    let admin = client.admin();
    for r in admin.create_topics(&[NewTopic::new(&topic, 3)]).await? {
        r?;
    }
    // A share group starts at the end of the partitions unless told otherwise.
    admin
        .alter_group_configs(
            &group,
            &[AlterConfigOp::set(SHARE_AUTO_OFFSET_RESET, "earliest")],
        )
        .await?;

    // Both consumers join first (the group's heartbeats bring their assignments), so both
    // take part.
    let mut consumers = Vec::new();
    for _ in 0..2 {
        let mut consumer = client.share_consumer(
            ShareConsumerConfig::new(group.as_str())
                .with_acknowledgement_mode(AcknowledgementMode::Explicit)
                .with_max_poll_records(50),
        )?;
        consumer.subscribe([&topic]);
        consumers.push(consumer);
    }
    let joined_by = Instant::now() + Duration::from_secs(30);
    while consumers.iter().any(|c| c.assignment().is_empty()) && Instant::now() < joined_by {
        for c in &mut consumers {
            c.poll(Duration::from_millis(100)).await?;
        }
    }

    let producer = client.producer(ProducerConfig::default()).await?;
    // In chunks of 50, so that batches are small: a broker hands out whole batches, so one
    // fetch of a 1,000-record batch would give every job to one consumer.
    for chunk in (0..JOBS).collect::<Vec<_>>().chunks(50) {
        let mut sent = Vec::with_capacity(chunk.len());
        for i in chunk {
            sent.push(
                producer
                    .send(
                        Record::new(topic.as_str())
                            .with_partition((i % 3) as i32)
                            .with_value(format!("job-{i}")),
                    )
                    .await?,
            );
        }
        for s in sent {
            s.await?;
        }
    }
    producer.close().await;

    let log: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let mut workers = Vec::new();
    for (worker, mut consumer) in consumers.into_iter().enumerate() {
        let log = log.clone();
        workers.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut idle = 0;
            while Instant::now() < deadline && idle < 6 {
                let records = consumer.poll(Duration::from_millis(500)).await?;
                // Done after 3 s without records once the group assigned partitions (the
                // coordinator's heartbeats, 5 s apart by default, bring the assignment).
                let assigned = !consumer.assignment().is_empty();
                idle = if records.is_empty() && assigned {
                    idle + 1
                } else {
                    0
                };
                for record in records {
                    let text = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default())
                        .into_owned();
                    let i: usize = text.trim_start_matches("job-").parse().unwrap_or(0);
                    let ack = verdict(i, record.delivery_count);
                    consumer.acknowledge(&record, ack)?;
                    log.lock()
                        .unwrap()
                        .push((i, record.delivery_count, ack, worker));
                }
                for (partition, result) in consumer.commit_sync().await? {
                    if let Err(e) = result {
                        eprintln!("worker {worker}: acknowledgements of {partition} failed: {e}");
                    }
                }
            }
            consumer.close().await?;
            Ok::<_, rekafka::Error>(())
        }));
    }
    for w in workers {
        w.await??;
    }

    let log = log.lock().unwrap().clone();
    let mut by_verdict: BTreeMap<&str, usize> = BTreeMap::new();
    let mut per_worker: BTreeMap<usize, usize> = BTreeMap::new();
    for (_, _, ack, worker) in &log {
        let name = match ack {
            AcknowledgeType::Accept => "accepted",
            AcknowledgeType::Release => "released",
            _ => "rejected",
        };
        *by_verdict.entry(name).or_default() += 1;
        *per_worker.entry(*worker).or_default() += 1;
    }
    let second_deliveries = log.iter().filter(|d| d.1 == 2).count();
    println!("topic {topic}, share group {group}");
    println!("{} deliveries of {JOBS} jobs: {by_verdict:?}", log.len());
    println!("deliveries per consumer: {per_worker:?}");
    println!("released jobs delivered again (delivery count 2): {second_deliveries}");
    Ok(())
}

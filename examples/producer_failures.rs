//! What a producer does when sending fails, and what it tells you.
//!
//! ```text
//! cargo run --example producer_failures --features mock
//! ```
//!
//! It runs on rekafka's embedded mock cluster (three brokers, in this process), whose fault
//! injection plays the failures; the code talking to it is the same as against Kafka:
//!
//! 1. *Retriable* errors (`NOT_ENOUGH_REPLICAS` three times) are retried within
//!    `delivery.timeout.ms`: every record arrives once, in order (idempotence, the default,
//!    keeps retries from writing duplicates).
//! 2. A *non-retriable* error (`INVALID_RECORD`) fails the send at once with a typed error that
//!    says the record was certainly not written.
//! 3. A *broker outage* longer than `delivery.timeout.ms` fails the sends with a timeout; after
//!    the broker is back, the same producer delivers again.

use std::time::Duration;

use rekafka::mock::MockCluster;
use rekafka::producer::{Persistence, Record};
use rekafka::protocol::unstable::ApiKey;
use rekafka::{Client, ErrorKind, KafkaCode};

const TOPIC: &str = "payments";

/// What the example saw; printed by `main`.
#[derive(Debug, Default)]
pub struct Summary {
    /// Records delivered in part 1 despite the injected errors, and the offsets they got.
    pub delivered: Vec<i64>,
    /// Produce retries the producer counted in part 1.
    pub retries: u64,
    /// Part 2's error: the Kafka code and whether the record may have been written.
    pub rejected: Option<(Option<KafkaCode>, Persistence)>,
    /// Part 3: the error kinds of the sends during the outage.
    pub outage_errors: Vec<ErrorKind>,
    /// Part 3: the offset of the record sent after the broker came back.
    pub after_outage: Option<i64>,
}

/// The example's mock cluster: three brokers, the topic.
pub async fn mock() -> rekafka::Result<MockCluster> {
    MockCluster::builder()
        .brokers(3)
        .topic(TOPIC, 3)
        .start()
        .await
}

/// Runs the three parts against `mock`.
pub async fn run(mock: &MockCluster) -> rekafka::Result<Summary> {
    let mut summary = Summary::default();
    let client = Client::builder()
        .bootstrap_servers([mock.bootstrap()])
        .build()
        .await?;
    let producer = client
        .producer_with(|c| {
            c.delivery_timeout = Duration::from_secs(3);
            c.request_timeout = Duration::from_secs(1);
            c.linger = Duration::from_millis(5);
        })
        .await?;

    // 1. Retriable errors: retried, nothing lost, nothing twice.
    mock.push_partition_errors(
        TOPIC,
        0,
        ApiKey::Produce,
        &[KafkaCode::NotEnoughReplicas; 3],
    );
    for i in 0..10 {
        let record = Record::new(TOPIC)
            .with_partition(0)
            .with_key(format!("payment-{i}"))
            .with_value(format!("{{\"amount\":{i}}}"));
        let md = producer.send_and_wait(record).await?;
        summary.delivered.push(md.offset);
    }
    summary.retries = producer.metrics().record_retry_total;

    // 2. A non-retriable error: the send fails at once, and says the record is not written.
    mock.push_partition_errors(TOPIC, 1, ApiKey::Produce, &[KafkaCode::InvalidRecord]);
    match producer
        .send_and_wait(Record::new(TOPIC).with_partition(1).with_value("bad"))
        .await
    {
        Ok(md) => println!("unexpectedly delivered at {}", md.offset),
        Err(e) => {
            // `e.error` is the one rekafka::Error: kind, Kafka code, retriable/fatal, context.
            summary.rejected = Some((e.error.kafka_code(), e.persistence));
        }
    }

    // 3. The partition's leader goes away for longer than delivery.timeout.ms.
    let leader = mock.partition_leader(TOPIC, 2)?;
    mock.broker_down(leader).await?;
    let mut pending = Vec::new();
    for i in 0..3 {
        let record = Record::new(TOPIC)
            .with_partition(2)
            .with_value(format!("during-outage-{i}"));
        // `send` hands the record over; its delivery future reports the outcome.
        pending.push(producer.send(record).await?);
    }
    for delivery in pending {
        if let Err(e) = delivery.await {
            summary.outage_errors.push(e.kind().clone());
        }
    }
    mock.broker_up(leader).await?;
    let md = producer
        .send_and_wait(Record::new(TOPIC).with_partition(2).with_value("after"))
        .await?;
    summary.after_outage = Some(md.offset);

    producer.close().await;
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
        let s = run(&mock).await?;
        mock.shutdown().await;
        println!("rekafka producer failures (embedded mock cluster, 3 brokers)\n");
        println!(
            "1. NOT_ENOUGH_REPLICAS x3: {} records delivered at offsets {:?} after {} retries",
            s.delivered.len(),
            s.delivered,
            s.retries
        );
        match &s.rejected {
            Some((code, persistence)) => println!(
                "2. INVALID_RECORD: failed at once with {code:?}, {persistence:?} (not retried)"
            ),
            None => println!("2. INVALID_RECORD: the record was delivered"),
        }
        println!(
            "3. leader down past delivery.timeout.ms: {} sends failed ({:?}); after it came back \
             the next record went to offset {:?}",
            s.outage_errors.len(),
            s.outage_errors,
            s.after_outage
        );
        Ok(())
    })
}

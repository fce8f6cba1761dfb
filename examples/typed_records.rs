//! Typed records and JSON: the handler gets `Order`s, not bytes, and a bad payload goes to the
//! dead-letter topic with its raw bytes without ever reaching the handler.
//!
//! ```text
//! cargo run --example typed_records --features mock,json
//! ```
//!
//! It runs on rekafka's embedded mock cluster (in this process). Orders are produced as JSON
//! with rekafka's `JsonSerializer`, plus two bad payloads (a value that is not JSON, and one
//! whose key is not UTF-8 and whose value is not JSON either). The container reads them through
//! a `TypedConsumer` (`Client::typed_listener_container`: `StringDeserializer` keys, `JsonDeserializer<Order>` values; Spring's
//! `ErrorHandlingDeserializer`): the good orders reach the handler typed, the bad records go to
//! `orders-dlt` on their first failure, with both failures named when key and value fail.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::Client;
use rekafka::consumer::{
    JsonDeserializer, OffsetReset, StartOffset, StringDeserializer, TopicPartition,
};
use rekafka::listener::{DefaultErrorHandler, TypedRecord};
use rekafka::mock::MockCluster;
use rekafka::producer::{JsonSerializer, Record};

const TOPIC: &str = "orders";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    amount_cents: u64,
}

type OrderRecord = TypedRecord<Option<String>, Option<Order>>;
/// The orders billed: (customer key, order).
type Billed = Arc<Mutex<Vec<(Option<String>, Order)>>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mock = MockCluster::builder().topic(TOPIC, 1).start().await?;
    let client = Client::builder()
        .bootstrap_servers([mock.bootstrap()])
        .build()
        .await?;

    let producer = client.producer_with(|_| {}).await?;
    for id in 1..=5u64 {
        let order = Order {
            id,
            amount_cents: id * 1250,
        };
        let record = Record::new(TOPIC)
            .with_key(format!("customer-{}", id % 2))
            .with_serialized_value(&JsonSerializer, &order)?;
        producer.send_and_wait(record).await?;
        if id == 2 {
            // Two bad payloads among the orders.
            producer
                .send_and_wait(
                    Record::new(TOPIC)
                        .with_key("customer-9")
                        .with_value("{\"id\": oops"),
                )
                .await?;
            producer
                .send_and_wait(
                    Record::new(TOPIC)
                        .with_key(vec![0xffu8, 0xfe])
                        .with_value("<order/>"),
                )
                .await?;
        }
    }
    producer.close().await;

    let billed: Billed = Arc::default();
    let b = billed.clone();
    let dead_letters = client
        .dead_letter_publisher::<OrderRecord>()
        .group("billing")
        .build()
        .await?;
    let container = client
        .typed_listener_container(
            [TOPIC],
            StringDeserializer,
            JsonDeserializer::<Order>::new(),
            |c| {
                c.group_id = Some("billing".into());
                c.auto_offset_reset = OffsetReset::Earliest;
                c.fetch_max_wait = Duration::from_millis(50);
            },
        )?
        .record_handler(move |record: OrderRecord| {
            let b = b.clone();
            async move {
                // Only records that deserialized get here.
                if let (Some(key), Some(Some(order))) = (record.typed_key(), record.typed_value()) {
                    b.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((key.clone(), order.clone()));
                }
                Ok(())
            }
        })
        .error_handler(DefaultErrorHandler::new().recoverer(dead_letters))
        .poll_timeout(Duration::from_millis(100))
        .start()?;

    // Read the two dead letters back.
    let reader = client.consumer_with(|c| c.auto_offset_reset = OffsetReset::Earliest)?;
    reader.assign([(TopicPartition::new("orders-dlt", 0), StartOffset::Beginning)])?;
    let mut letters = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while letters.len() < 2 && Instant::now() < deadline {
        letters.extend(
            reader
                .poll(Duration::from_millis(200))
                .await?
                .iter()
                .cloned(),
        );
    }
    reader.close().await?;
    container.stop().await;

    println!("rekafka typed records (embedded mock cluster)\n");
    println!("billed (typed, from JSON):");
    for (key, order) in billed.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        println!(
            "  {:<12} order {} = {} cents",
            key.as_deref().unwrap_or("-"),
            order.id,
            order.amount_cents
        );
    }
    println!("\ndead letters (raw bytes kept, never handed to the handler):");
    for letter in &letters {
        println!(
            "  key {:?} value {:?}",
            letter.key.as_deref().map(String::from_utf8_lossy),
            letter.value.as_deref().map(String::from_utf8_lossy),
        );
        // Both failures, when key and value failed (Spring's key and value exception headers).
        for h in letter.headers.iter() {
            if h.key().ends_with("exception-message") {
                let text = h
                    .value
                    .as_deref()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                println!("    {}: {text}", h.key());
            }
        }
    }
    client.close().await;
    mock.shutdown().await;
    Ok(())
}

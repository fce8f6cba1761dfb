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

pub const TOPIC: &str = "orders";

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    amount_cents: u64,
}

type OrderRecord = TypedRecord<Option<String>, Option<Order>>;
/// The orders billed: (customer key, order).
type Billed = Arc<Mutex<Vec<(Option<String>, Order)>>>;

/// What the example saw; printed by `main`.
#[derive(Debug, Default)]
pub struct Summary {
    /// The orders the handler got, typed: (customer key, order id, amount).
    pub billed: Vec<(Option<String>, u64, u64)>,
    /// The dead letters: raw key, raw value, and their `*exception-message` headers.
    pub dead_letters: Vec<DeadLetter>,
}

/// One dead letter as read back.
#[derive(Debug)]
pub struct DeadLetter {
    /// The raw key.
    pub key: Option<Vec<u8>>,
    /// The raw value.
    pub value: Option<Vec<u8>>,
    /// The `kafka_dlt-*exception-message` headers: (name, text).
    pub messages: Vec<(String, String)>,
}

/// The orders produced (ids 1..=ORDERS), with two bad payloads after the second one.
pub const ORDERS: u64 = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mock = MockCluster::builder().topic(TOPIC, 1).start().await?;
        let s = run(&mock.bootstrap()).await?;
        mock.shutdown().await;
        println!("rekafka typed records (embedded mock cluster)\n");
        println!("billed (typed, from JSON):");
        for (key, id, cents) in &s.billed {
            println!(
                "  {:<12} order {id} = {cents} cents",
                key.as_deref().unwrap_or("-")
            );
        }
        println!("\ndead letters (raw bytes kept, never handed to the handler):");
        for d in &s.dead_letters {
            println!(
                "  key {:?} value {:?}",
                d.key.as_deref().map(String::from_utf8_lossy),
                d.value.as_deref().map(String::from_utf8_lossy),
            );
            // Both failures, when key and value failed (Spring's key and value exception
            // headers).
            for (name, text) in &d.messages {
                println!("    {name}: {text}");
            }
        }
        Ok(())
    })
}

/// Produces the orders (JSON) and the bad payloads, bills them through a typed container,
/// waits until everything is committed, and reads the dead letters back.
pub async fn run(bootstrap: &str) -> rekafka::Result<Summary> {
    let client = Client::builder()
        .bootstrap_servers([bootstrap])
        .build()
        .await?;

    let producer = client.producer_with(|_| {}).await?;
    let mut end = 0;
    for id in 1..=ORDERS {
        let order = Order {
            id,
            amount_cents: id * 1250,
        };
        let record = Record::new(TOPIC)
            .with_key(format!("customer-{}", id % 2))
            .with_serialized_value(&JsonSerializer, &order)?;
        end = producer.send_and_wait(record).await?.offset + 1;
        if id == 2 {
            // Two bad payloads among the orders: a value that is not JSON; a key that is not
            // UTF-8 with a value that is not JSON either.
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

    // Everything is handled or dead-lettered once the group's offset reaches the log end.
    let admin = client.admin();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let committed = admin.list_group_offsets("billing", None).await?;
        if committed
            .iter()
            .any(|(tp, c)| tp.topic() == TOPIC && matches!(c, Ok(Some(c)) if c.offset == end))
        {
            break;
        }
        if Instant::now() > deadline {
            return Err(rekafka::Error::with_message(
                rekafka::ErrorKind::Timeout,
                "the orders were not all committed",
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    container.stop().await;

    // Read the two dead letters back.
    let reader = client.consumer_with(|c| c.auto_offset_reset = OffsetReset::Earliest)?;
    reader.assign([(TopicPartition::new("orders-dlt", 0), StartOffset::Beginning)])?;
    let mut dead = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while dead.len() < 2 && Instant::now() < deadline {
        for letter in reader.poll(Duration::from_millis(200)).await?.iter() {
            let messages = letter
                .headers
                .iter()
                .filter(|h| h.key().ends_with("exception-message"))
                .map(|h| {
                    let text = h.value.as_deref().map(String::from_utf8_lossy);
                    (h.key().to_string(), text.unwrap_or_default().into_owned())
                })
                .collect();
            dead.push(DeadLetter {
                key: letter.key.as_deref().map(<[u8]>::to_vec),
                value: letter.value.as_deref().map(<[u8]>::to_vec),
                messages,
            });
        }
    }
    reader.close().await?;
    client.close().await;
    let billed = billed
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(k, o)| (k.clone(), o.id, o.amount_cents))
        .collect();
    Ok(Summary {
        billed,
        dead_letters: dead,
    })
}

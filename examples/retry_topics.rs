//! Non-blocking retries through retry topics and a dead-letter topic, as Spring's
//! `@RetryableTopic` does them (same topic names, headers and encodings).
//!
//! ```text
//! REKAFKA_BOOTSTRAP=127.0.0.1:9092 cargo run --example retry_topics
//! ```
//!
//! It produces 100 orders to a fresh topic. Every tenth order fails on its first two attempts
//! (a flaky payment service) and succeeds on its third, in `<topic>-retry-1`; order 42 always
//! fails and ends in `<topic>-dlt`, handled by the DLT handler. Order 13 is invalid: that error
//! is not retried and is routed to a DLT of its own, `<topic>-invalid-dlt`. The other orders are
//! handled once, without waiting for the retries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rekafka::Client;
use rekafka::admin::NewTopic;
use rekafka::consumer::{ConsumerConfig, OffsetReset};
use rekafka::listener::retry_topic::{
    RetryBackOff, RetryTopicConfiguration, TopicSuffixing, headers,
};
use rekafka::listener::{HandlerError, ListenerConsumerRecord, ListenerRecord};
use rekafka::producer::{ProducerConfig, Record};

#[derive(Debug, thiserror::Error)]
#[error("payment service unavailable for {0}")]
struct PaymentUnavailable(String);

#[derive(Debug, thiserror::Error)]
#[error("order {0} is invalid")]
struct InvalidOrder(String);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let bootstrap =
        std::env::var("REKAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:9092".to_owned());
    let client = Client::builder()
        .bootstrap_servers([bootstrap])
        .build()
        .await?;
    let suffix = std::process::id();
    let topic = format!("orders-{suffix}");
    let admin = client.admin();
    for r in admin.create_topics(&[NewTopic::new(&topic, 3)]).await? {
        r?;
    }

    let producer = client.producer(ProducerConfig::default()).await?;
    for i in 0..100 {
        let record = Record::new(topic.as_str())
            .with_key(format!("order-{i}"))
            .with_value(format!("{{\"amount\": {i}}}"));
        producer.send(record).await?.await?;
    }
    producer.close().await;

    // 3 attempts: the main topic, then `-retry-0` after 500 ms, then `-retry-1` after 1 s;
    // then the DLT. Retry and DLT topics are created like the main topic. An invalid order is
    // not retried and goes to its own DLT.
    let config = RetryTopicConfiguration::builder()
        .max_attempts(3)
        .back_off(RetryBackOff::Exponential {
            initial: Duration::from_millis(500),
            multiplier: 2.0,
            max: Duration::from_secs(10),
        })
        .suffixing(TopicSuffixing::ByIndex)
        .not_retry_on::<InvalidOrder>()
        .dlt_route::<InvalidOrder>("-invalid")
        .build();
    let handled = Arc::new(Mutex::new(0_usize));
    let dead = Arc::new(Mutex::new(Vec::new()));
    let (h, d) = (handled.clone(), dead.clone());
    let handle = config
        .start_with_dlt_handler(
            &client,
            ConsumerConfig::new()
                .with_group_id(format!("billing-{suffix}"))
                .with_auto_offset_reset(OffsetReset::Earliest),
            &topic,
            move |record: ListenerConsumerRecord| {
                let h = h.clone();
                async move {
                    let key = record.key_str().unwrap_or_default().to_owned();
                    let attempt = headers::attempts(&record.headers());
                    let n: usize = key.trim_start_matches("order-").parse().unwrap_or(0);
                    if n == 13 {
                        println!("{key}: invalid");
                        return Err(Box::new(InvalidOrder(key)) as HandlerError);
                    }
                    if n == 42 || (n.is_multiple_of(10) && attempt < 3) {
                        println!("{key}: attempt {attempt} in {} failed", record.topic());
                        return Err(Box::new(PaymentUnavailable(key)) as HandlerError);
                    }
                    if attempt > 1 {
                        println!("{key}: attempt {attempt} in {} succeeded", record.topic());
                    }
                    *h.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                    Ok(())
                }
            },
            move |record: ListenerConsumerRecord| {
                let d = d.clone();
                async move {
                    let key = record.key_str().unwrap_or_default().to_owned();
                    println!("{key}: dead letter in {}", record.topic());
                    d.lock().unwrap_or_else(|e| e.into_inner()).push(key);
                    Ok(())
                }
            },
        )
        .await?;
    println!("topics: {:?}", handle.topology());

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while (*handled.lock().unwrap_or_else(|e| e.into_inner()) < 98
        || dead.lock().unwrap_or_else(|e| e.into_inner()).len() < 2)
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let topology = handle.topology().clone();
    for (topic, reason) in handle.stop().await {
        println!("{topic}: stopped ({reason:?})");
    }
    println!(
        "{} orders handled, dead letters: {:?}",
        handled.lock().unwrap_or_else(|e| e.into_inner()),
        dead.lock().unwrap_or_else(|e| e.into_inner())
    );
    // Leave nothing behind on the cluster.
    let mut topics: Vec<String> = vec![topology.main.clone()];
    topics.extend(topology.retries.iter().map(|t| t.name.clone()));
    topics.extend(topology.routed_dlts.iter().cloned());
    topics.extend(topology.dlt.clone());
    admin.delete_topics(&topics).await?;
    client.close().await;
    Ok(())
}

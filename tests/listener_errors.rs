//! Error handling in the listener container (issue 15): error classes that do not depend on
//! messages, the exactly-once dead-letter recoverer, the halt alarm, batch failures named deep
//! in the cause chain, async listener-level handlers, deserialization failures. On the mock
//! cluster.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, OffsetReset};
use rekafka::listener::{
    DeadLetterInfo, DeadLetterPublisher, DefaultErrorHandler, FixedBackOff, HandlerError,
    ListenerConsumerRecord, ListenerContainer, ListenerRecord, PublishWait, typed_error,
};
use rekafka::mock::MockCluster;
use rekafka::producer::{Producer, ProducerConfig, Record};

async fn connect(mock: &MockCluster) -> Cluster {
    Cluster::connect(ClusterConfig::new([mock.bootstrap()]))
        .await
        .expect("connect")
}

async fn produce(cluster: &Cluster, records: Vec<Record>) {
    let p = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    for r in records {
        p.send_and_wait(r).await.expect("sent");
    }
    p.close().await;
}

fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_auto_commit(AutoCommit::Disabled)
        .with_session_timeout(Duration::from_secs(6))
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(20))
}

async fn wait_until(mut f: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The dead letters in `topic` partition 0, decoded.
fn dead_letters(mock: &MockCluster, topic: &str) -> Vec<(String, DeadLetterInfo)> {
    mock.records(topic, 0)
        .expect("records")
        .into_iter()
        .map(|r| {
            let headers: Vec<_> = r.headers.iter().collect();
            (
                String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                DeadLetterInfo::from_headers(&headers),
            )
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
#[error("invalid order {0}")]
struct InvalidOrder(u32);

/// An error whose `Debug` prints its message (as anyhow-style errors do).
#[derive(thiserror::Error)]
#[error("upstream said {0}")]
struct Upstream(u32);

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "upstream said {}", self.0)
    }
}

/// Issue 15, item 1: an error whose message changes on every attempt is still the same error
/// class, so `FixedBackOff(10 ms, 2)` gives three deliveries and one dead letter; the dead
/// letter's class headers carry the error's type path, never its message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_messages_keep_the_error_class_and_the_back_off_ends() {
    let mock = MockCluster::builder()
        .topic("orders", 1)
        .topic("orders-dlt", 1)
        .start()
        .await
        .expect("mock");
    let cluster = connect(&mock).await;
    let keys = ["string", "typed", "upstream", "ok"];
    produce(
        &cluster,
        keys.iter()
            .map(|k| Record::new("orders").with_key(*k).with_value("v"))
            .collect(),
    )
    .await;
    let deliveries: Arc<Mutex<Vec<String>>> = Arc::default();
    let d = deliveries.clone();
    let dlt = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
        .group("g")
        .wait(PublishWait::PerRecord)
        .build()
        .await
        .expect("publisher");
    let consumer = Consumer::new(cluster.clone(), config("g")).expect("consumer");
    consumer.subscribe(["orders"]).expect("subscribe");
    let n = Arc::new(AtomicU32::new(0));
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let (d, n) = (d.clone(), n.clone());
            async move {
                let key = r.key_str().unwrap_or_default().to_owned();
                d.lock().unwrap().push(key.clone());
                let i = n.fetch_add(1, Ordering::SeqCst);
                match key.as_str() {
                    "string" => Err(format!("attempt {i} failed").into()),
                    "typed" => Err(typed_error(InvalidOrder(i))),
                    "upstream" => Err(Box::new(Upstream(i)) as HandlerError),
                    _ => Ok(()),
                }
            }
        })
        .error_handler(
            DefaultErrorHandler::new()
                .back_off(FixedBackOff::new(Duration::from_millis(10), 2))
                .recoverer(dlt),
        )
        .poll_timeout(Duration::from_millis(200))
        .start()
        .expect("start");
    wait_until(
        || dead_letters(&mock, "orders-dlt").len() == 3 || deliveries.lock().unwrap().len() > 30,
        "three dead letters",
    )
    .await;
    handle.stop().await;
    let deliveries = deliveries.lock().unwrap().clone();
    for k in &keys[..3] {
        assert_eq!(
            deliveries.iter().filter(|d| d == k).count(),
            3,
            "{k}: one delivery and two retries, then recovered; deliveries: {deliveries:?}"
        );
    }
    let letters = dead_letters(&mock, "orders-dlt");
    let class = |key: &str| {
        let (_, info) = letters
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("no dead letter for {key}"));
        (
            info.exception_fqcn.clone().unwrap_or_default(),
            info.exception_cause_fqcn.clone().unwrap_or_default(),
        )
    };
    let string = std::any::type_name::<String>();
    assert_eq!(class("string"), (string.to_owned(), string.to_owned()));
    let typed = std::any::type_name::<InvalidOrder>();
    assert_eq!(typed, "listener_errors::InvalidOrder");
    assert_eq!(class("typed"), (typed.to_owned(), typed.to_owned()));
    // A type never named to rekafka, whose `Debug` is its message: a stable class, never text
    // from the message.
    let (upstream, _) = class("upstream");
    assert!(!upstream.contains("said"), "{upstream}");
}

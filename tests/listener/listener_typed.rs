//! Typed records on rekafka's embedded mock cluster: a container over `K` and `V` made by
//! deserializers (`TypedConsumer`: `StringDeserializer` keys, `JsonDeserializer` values) hands
//! the handler typed keys and values; a bad payload never reaches the handler and goes to the
//! recoverer with its raw bytes; both failures are reported when key and value fail; a
//! failed-value function supplies a substitute.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, JsonDeserializer, OffsetReset, StringDeserializer,
};
use rekafka::listener::{
    DefaultErrorHandler, DeserializationFailed, HandlerError, ListenerContainer, ListenerRecord,
    RecordPart, RecovererFn, SharedError, StopReason, TypedConsumer, TypedRecord,
};
use rekafka::mock::MockCluster;
use rekafka::producer::{Producer, ProducerConfig, Record};

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
struct Order {
    id: u64,
    amount: u32,
}

type OrderRecord = TypedRecord<Option<String>, Option<Order>>;

/// `orders` (one partition): a good order, a value that is not JSON, a record whose key is not
/// UTF-8 and whose value is not JSON either, a good order.
async fn setup(topic: &str) -> (MockCluster, Cluster) {
    let mock = MockCluster::builder()
        .topic(topic, 1)
        .start()
        .await
        .expect("mock");
    let cluster = Cluster::connect(ClusterConfig::new([mock.bootstrap()]))
        .await
        .expect("connect");
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let records = [
        (
            Bytes::from_static(b"k0"),
            Bytes::from_static(br#"{"id":1,"amount":10}"#),
        ),
        (Bytes::from_static(b"k1"), Bytes::from_static(b"not json")),
        (
            Bytes::from_static(&[0xff, 0xfe]),
            Bytes::from_static(b"{truncated"),
        ),
        (
            Bytes::from_static(b"k3"),
            Bytes::from_static(br#"{"id":4,"amount":40}"#),
        ),
    ];
    for (k, v) in records {
        producer
            .send_and_wait(Record::new(topic).with_key(k).with_value(v))
            .await
            .expect("sent");
    }
    producer.close().await;
    (mock, cluster)
}

fn typed_consumer(
    cluster: &Cluster,
    group: &str,
    topic: &str,
) -> TypedConsumer<StringDeserializer, JsonDeserializer<Order>> {
    let config = ConsumerConfig::new()
        .with_group_id(group)
        .with_auto_commit(AutoCommit::Disabled)
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(20));
    let consumer = Consumer::new(cluster.clone(), config).expect("consumer");
    consumer.subscribe([topic]).expect("subscribe");
    TypedConsumer::new(
        consumer,
        StringDeserializer,
        JsonDeserializer::<Order>::new(),
    )
}

async fn wait_committed(mock: &MockCluster, group: &str, topic: &str, offset: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while mock.committed_offset(group, topic, 0) != Some(offset) {
        assert!(
            Instant::now() < deadline,
            "offset {offset} never committed (now {:?})",
            mock.committed_offset(group, topic, 0)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the handler saw: (offset, key, value, substituted part).
type Handled = Arc<Mutex<Vec<(i64, Option<String>, Option<Order>, Option<RecordPart>)>>>;
/// What the recoverer saw: (offset, raw key, raw value, the deserialization failure).
type Recovered = Arc<Mutex<Vec<(i64, Option<Bytes>, Option<Bytes>, DeserializationFailed)>>>;

async fn run(
    topic: &str,
    with_substitute: bool,
) -> (
    Vec<(i64, Option<String>, Option<Order>, Option<RecordPart>)>,
    Vec<(i64, Option<Bytes>, Option<Bytes>, DeserializationFailed)>,
) {
    let group = format!("g-{topic}");
    let (mock, cluster) = setup(topic).await;
    let handled: Handled = Arc::default();
    let recovered: Recovered = Arc::default();
    let mut typed = typed_consumer(&cluster, &group, topic);
    if with_substitute {
        typed = typed.failed_value(|_raw, _failure| Some(Some(Order { id: 0, amount: 0 })));
    }
    let (h, rec) = (handled.clone(), recovered.clone());
    let handle = ListenerContainer::builder(typed)
        .record_handler(move |r: OrderRecord| {
            let h = h.clone();
            async move {
                h.lock().unwrap().push((
                    r.offset(),
                    r.typed_key().cloned().flatten(),
                    r.typed_value().cloned().flatten(),
                    r.substituted().map(|f| f.part),
                ));
                Ok(())
            }
        })
        .error_handler(DefaultErrorHandler::new().recoverer(RecovererFn(
            move |r: OrderRecord, e: SharedError| {
                let failure = e
                    .downcast_ref::<DeserializationFailed>()
                    .cloned()
                    .expect("a deserialization failure");
                assert!(
                    r.typed_value().is_none(),
                    "a failed record has no typed value"
                );
                rec.lock().unwrap().push((
                    r.offset(),
                    r.key().cloned(),
                    r.value().cloned(),
                    failure,
                ));
                std::future::ready(Ok::<(), HandlerError>(()))
            },
        )))
        .poll_timeout(Duration::from_millis(100))
        .start()
        .expect("start");
    wait_committed(&mock, &group, topic, 4).await;
    assert_eq!(handle.stop().await, StopReason::Normal);
    let handled = handled.lock().unwrap().clone();
    let recovered = recovered.lock().unwrap().clone();
    (handled, recovered)
}

/// Good records reach the handler typed; the bad payloads go to the recoverer with their raw
/// bytes, once each (never retried); the record whose key and value both fail reports both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_json_container_recovers_bad_payloads_with_raw_bytes() {
    let (handled, recovered) = run("typed-orders", false).await;
    assert_eq!(
        handled,
        vec![
            (
                0,
                Some("k0".into()),
                Some(Order { id: 1, amount: 10 }),
                None
            ),
            (
                3,
                Some("k3".into()),
                Some(Order { id: 4, amount: 40 }),
                None
            ),
        ]
    );
    assert_eq!(recovered.len(), 2, "{recovered:?}");
    let (offset, key, value, failure) = &recovered[0];
    assert_eq!(*offset, 1);
    assert_eq!(key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(value.as_deref(), Some(&b"not json"[..]), "raw bytes");
    assert_eq!(failure.part, RecordPart::Value);
    assert!(
        failure.message.contains("typed-orders-0@1"),
        "{}",
        failure.message
    );
    assert!(failure.value_failure.is_none());
    let (offset, key, value, failure) = &recovered[1];
    assert_eq!(*offset, 2);
    assert_eq!(key.as_deref(), Some(&[0xff, 0xfe][..]), "raw key bytes");
    assert_eq!(
        value.as_deref(),
        Some(&b"{truncated"[..]),
        "raw value bytes"
    );
    assert_eq!(failure.part, RecordPart::Key);
    assert!(failure.message.contains("UTF-8"), "{}", failure.message);
    let value_failure = failure
        .value_failure
        .as_deref()
        .expect("both failures reported");
    assert!(
        value_failure.contains("typed-orders-0@2"),
        "{value_failure}"
    );
}

/// A failed-value function supplies a substitute: the record with the bad value reaches the
/// handler with it (and says what failed); the record whose key fails too is still recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_value_function_supplies_a_substitute() {
    let (handled, recovered) = run("typed-substitute", true).await;
    assert_eq!(
        handled,
        vec![
            (
                0,
                Some("k0".into()),
                Some(Order { id: 1, amount: 10 }),
                None
            ),
            (
                1,
                Some("k1".into()),
                Some(Order { id: 0, amount: 0 }),
                Some(RecordPart::Value)
            ),
            (
                3,
                Some("k3".into()),
                Some(Order { id: 4, amount: 40 }),
                None
            ),
        ]
    );
    let offsets: Vec<i64> = recovered.iter().map(|(o, ..)| *o).collect();
    assert_eq!(
        offsets,
        vec![2],
        "only the record whose key failed is recovered"
    );
}

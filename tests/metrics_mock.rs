//! Metrics (the `metrics` facade, `rekafka::telemetry`) and tracing spans after known runs on
//! the embedded mock cluster.
//!
//! Each test runs its clients on a current-thread runtime inside
//! `metrics::with_local_recorder` (and a scoped tracing subscriber), so every task it spawns
//! records into this test's recorder only, and tests running in parallel do not mix.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use rekafka::KafkaCode;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::connection::ConnectionConfig;
use rekafka::consumer::TopicPartition;
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, OffsetReset, StartOffset};
use rekafka::listener::{
    DeadLetterPublisher, DefaultErrorHandler, FixedBackOff, HandlerError, ListenerConsumerRecord,
    ListenerContainer, StopReason,
};
use rekafka::mock::MockCluster;
use rekafka::producer::{Producer, ProducerConfig, Record};
use rekafka::protocol::unstable::ApiKey;
use rekafka::telemetry as t;

#[derive(Debug, thiserror::Error)]
#[error("poison record")]
struct Poison;

/// Runs `fut` to completion on a current-thread runtime with `recorder` as the thread's
/// metrics recorder and `spans` as its tracing subscriber.
fn run<T>(recorder: &DebuggingRecorder, spans: SpanLog, fut: impl Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    tracing::subscriber::with_default(spans, || {
        metrics::with_local_recorder(recorder, || rt.block_on(fut))
    })
}

/// The metrics of a snapshot by (name, labels sorted by key).
type Values = HashMap<(String, Vec<(String, String)>), DebugValue>;

fn values(snapshotter: &Snapshotter) -> Values {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), value)
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

fn client(id: &str) -> Vec<(String, String)> {
    labels(&[(t::CLIENT_ID, id)])
}

fn part(id: &str, topic: &str, partition: i32) -> Vec<(String, String)> {
    let p = partition.to_string();
    labels(&[(t::CLIENT_ID, id), (t::TOPIC, topic), (t::PARTITION, &p)])
}

/// A counter's value (0 when never registered).
fn counter(v: &Values, name: &str, labels: Vec<(String, String)>) -> u64 {
    match v.get(&(name.to_owned(), labels)) {
        Some(DebugValue::Counter(c)) => *c,
        None => 0,
        Some(other) => panic!("{name} is not a counter: {other:?}"),
    }
}

fn gauge(v: &Values, name: &str, labels: Vec<(String, String)>) -> Option<f64> {
    match v.get(&(name.to_owned(), labels.clone())) {
        Some(DebugValue::Gauge(g)) => Some(g.into_inner()),
        None => None,
        Some(other) => panic!("{name} {labels:?} is not a gauge: {other:?}"),
    }
}

fn histogram(v: &Values, name: &str, labels: Vec<(String, String)>) -> Vec<f64> {
    match v.get(&(name.to_owned(), labels)) {
        Some(DebugValue::Histogram(h)) => h.iter().map(|x| x.into_inner()).collect(),
        None => Vec::new(),
        Some(other) => panic!("{name} is not a histogram: {other:?}"),
    }
}

fn cluster_config(mock: &MockCluster, client_id: &str) -> ClusterConfig {
    ClusterConfig::new([mock.bootstrap()])
        .with_connection(ConnectionConfig::default().with_client_id(client_id))
}

async fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---- a span log: a minimal tracing subscriber (one thread: the current-thread runtime) ----

#[derive(Debug, Clone)]
struct SpanInfo {
    name: &'static str,
    metadata: &'static tracing::Metadata<'static>,
    parent: Option<u64>,
    fields: BTreeMap<&'static str, String>,
}

#[derive(Clone, Default)]
struct SpanLog {
    next: Arc<AtomicU64>,
    spans: Arc<Mutex<HashMap<u64, SpanInfo>>>,
    stack: Arc<Mutex<Vec<u64>>>,
}

struct Fields<'a>(&'a mut BTreeMap<&'static str, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
}

impl tracing::Subscriber for SpanLog {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, attrs: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let parent = if attrs.is_root() {
            None
        } else if let Some(p) = attrs.parent() {
            Some(p.into_u64())
        } else {
            self.stack.lock().unwrap().last().copied()
        };
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        self.spans.lock().unwrap().insert(
            id,
            SpanInfo {
                name: attrs.metadata().name(),
                metadata: attrs.metadata(),
                parent,
                fields,
            },
        );
        tracing::span::Id::from_u64(id)
    }

    fn record(&self, span: &tracing::span::Id, values: &tracing::span::Record<'_>) {
        if let Some(s) = self.spans.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut Fields(&mut s.fields));
        }
    }

    /// `Span::current()` (what `in_current_span` carries into a spawned task).
    fn current_span(&self) -> tracing_core::span::Current {
        let top = self.stack.lock().unwrap().last().copied();
        match top.and_then(|id| Some((id, self.spans.lock().unwrap().get(&id)?.metadata))) {
            Some((id, metadata)) => {
                tracing_core::span::Current::new(tracing::span::Id::from_u64(id), metadata)
            }
            None => tracing_core::span::Current::none(),
        }
    }

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, _: &tracing::Event<'_>) {}

    fn enter(&self, span: &tracing::span::Id) {
        self.stack.lock().unwrap().push(span.into_u64());
    }

    fn exit(&self, span: &tracing::span::Id) {
        let mut stack = self.stack.lock().unwrap();
        if let Some(i) = stack.iter().rposition(|s| *s == span.into_u64()) {
            stack.remove(i);
        }
    }
}

impl SpanLog {
    fn named(&self, name: &str) -> Vec<SpanInfo> {
        self.spans
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.name == name)
            .cloned()
            .collect()
    }

    /// The names of `span`'s ancestors, nearest first.
    fn ancestors(&self, span: &SpanInfo) -> Vec<&'static str> {
        let spans = self.spans.lock().unwrap();
        let mut out = Vec::new();
        let mut next = span.parent;
        while let Some(id) = next {
            let Some(s) = spans.get(&id) else { break };
            out.push(s.name);
            next = s.parent;
        }
        out
    }

    /// Whether some `kafka.request` span for `api` runs under a span named `ancestor`.
    fn request_under(&self, api: &str, ancestor: &str) -> bool {
        self.named("kafka.request").iter().any(|s| {
            s.fields.get("api").map(String::as_str) == Some(api)
                && self.ancestors(s).contains(&ancestor)
        })
    }
}

/// Produce N records to two partitions; a container (record handler, 0 ms back-off with R
/// retries, dead letters) fails the poison ones (k of them) every time. The metrics then hold
/// N, N - k, k × (R + 1), k, … for the labels of each client, and the spans one handler call
/// per delivery.
#[test]
fn a_known_run_gives_known_counts() {
    const TOPIC: &str = "orders";
    const PARTITIONS: i32 = 2;
    const N: usize = 30;
    const RETRIES: u32 = 2;
    let is_poison = |i: usize| i % 7 == 3;
    let partition_of = |i: usize| (i % PARTITIONS as usize) as i32;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let spans = SpanLog::default();
    let started = Instant::now();
    let (handled_seen, producer_metrics) = run(&recorder, spans.clone(), async move {
        let mock = MockCluster::builder()
            .topic(TOPIC, PARTITIONS)
            .topic("orders-dlt", PARTITIONS)
            .start()
            .await
            .expect("mock");
        let pcluster = Cluster::connect(cluster_config(&mock, "producer-app"))
            .await
            .expect("connect");
        let producer = Producer::new(pcluster.clone(), ProducerConfig::default())
            .await
            .expect("producer");
        let mut deliveries = Vec::new();
        for i in 0..N {
            let key = if is_poison(i) {
                format!("poison-{i}")
            } else {
                format!("k{i}")
            };
            let record = Record::new(TOPIC)
                .with_partition(partition_of(i))
                .with_key(key)
                .with_value(format!("v{i}"));
            deliveries.push(producer.send(record).await.expect("send"));
        }
        for d in deliveries {
            d.await.expect("delivered");
        }
        let producer_metrics = producer.metrics();
        producer.close().await;

        let cluster = Cluster::connect(cluster_config(&mock, "listener-app"))
            .await
            .expect("connect");
        let consumer = Consumer::new(
            cluster.clone(),
            ConsumerConfig::new()
                .with_group_id("billing")
                .with_auto_commit(AutoCommit::Disabled)
                .with_auto_offset_reset(OffsetReset::Earliest)
                .with_fetch_max_wait(Duration::from_millis(20)),
        )
        .expect("consumer");
        consumer.subscribe([TOPIC]).expect("subscribe");
        let dlt = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
            .group("billing")
            .build()
            .await
            .expect("dead-letter publisher");
        let handled = Arc::new(AtomicUsize::new(0));
        let h = handled.clone();
        let container = ListenerContainer::builder(consumer)
            .record_handler(move |r: ListenerConsumerRecord| {
                let h = h.clone();
                async move {
                    if r.key_str().is_some_and(|k| k.starts_with("poison")) {
                        return Err(Box::new(Poison) as HandlerError);
                    }
                    h.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .error_handler(
                DefaultErrorHandler::new()
                    .back_off(FixedBackOff::new(Duration::ZERO, RETRIES))
                    .recoverer(dlt),
            )
            .poll_timeout(Duration::from_millis(50))
            .start()
            .expect("start");
        let poison = (0..N).filter(|i| is_poison(*i)).count() as i64;
        let dead_letters = || {
            (0..PARTITIONS)
                .map(|p| mock.high_watermark("orders-dlt", p).unwrap_or(0))
                .sum::<i64>()
        };
        wait_until(
            || handled.load(Ordering::SeqCst) + poison as usize >= N && dead_letters() >= poison,
            "every record handled or dead-lettered",
        )
        .await;
        assert_eq!(container.stop().await, StopReason::Normal);
        (handled.load(Ordering::SeqCst), producer_metrics)
    });
    let elapsed = started.elapsed().as_secs_f64();
    let v = values(&snapshotter);

    let k = (0..N).filter(|i| is_poison(*i)).count();
    assert!(k > 0 && k < N);
    assert_eq!(handled_seen, N - k);

    // Producer: totals, and Java's windowed rate (the run is shorter than a window, so the
    // rate is N over 30 s plus the time since the producer started).
    assert_eq!(
        counter(&v, t::PRODUCER_RECORD_SEND_TOTAL, client("producer-app")),
        N as u64
    );
    assert_eq!(producer_metrics.record_send_total, N as u64);
    assert_eq!(
        counter(&v, t::PRODUCER_RECORD_ERROR_TOTAL, client("producer-app")),
        0
    );
    let rate = gauge(&v, t::PRODUCER_RECORD_SEND_RATE, client("producer-app")).expect("rate");
    let window = t::SAMPLE_WINDOW.as_secs_f64();
    assert!(
        rate <= N as f64 / window + 1e-9 && rate >= N as f64 / (window + elapsed) - 1e-9,
        "record-send-rate {rate} for {N} records in {elapsed} s"
    );
    assert!(producer_metrics.record_send_rate <= N as f64 / window + 1e-9);
    assert!(producer_metrics.record_send_rate >= N as f64 / (window + elapsed) - 1e-9);
    assert!(producer_metrics.record_send_rate_lifetime >= N as f64 / elapsed - 1e-9);
    // The dead-letter publisher's producer: its own client, k records.
    assert_eq!(
        counter(&v, t::PRODUCER_RECORD_SEND_TOTAL, client("listener-app")),
        k as u64
    );

    // Listener container and consumer, per partition.
    for p in 0..PARTITIONS {
        let n_p = (0..N).filter(|i| partition_of(*i) == p).count() as u64;
        let k_p = (0..N)
            .filter(|i| partition_of(*i) == p && is_poison(*i))
            .count() as u64;
        let l = || part("listener-app", TOPIC, p);
        let handled = counter(&v, t::LISTENER_RECORDS_HANDLED, l());
        let failed = counter(&v, t::LISTENER_FAILED_DELIVERIES, l());
        assert_eq!(handled, n_p - k_p, "partition {p}: handled");
        assert_eq!(
            failed,
            k_p * u64::from(RETRIES + 1),
            "partition {p}: failed"
        );
        assert_eq!(
            counter(&v, t::LISTENER_RECOVERED, l()),
            k_p,
            "partition {p}"
        );
        assert_eq!(
            counter(&v, t::DEAD_LETTERS_PUBLISHED, l()),
            k_p,
            "partition {p}"
        );
        assert_eq!(counter(&v, t::LISTENER_HALTS, l()), 0);
        // Every handler call was of a record the consumer returned (redeliveries come again).
        let consumed = counter(&v, t::CONSUMER_RECORDS_CONSUMED, l());
        assert!(
            consumed >= handled + failed,
            "partition {p}: consumed {consumed} < handled {handled} + failed {failed}"
        );
        assert!(counter(&v, t::CONSUMER_BYTES_CONSUMED, l()) > 0);
        assert_eq!(
            gauge(&v, t::CONSUMER_RECORDS_LAG, l()),
            Some(0.0),
            "lag of {p}"
        );
        // The producer's client consumed nothing.
        assert_eq!(
            counter(
                &v,
                t::CONSUMER_RECORDS_CONSUMED,
                part("producer-app", TOPIC, p)
            ),
            0
        );
    }
    let c = || client("listener-app");
    assert_eq!(gauge(&v, t::LISTENER_RETRIES_IN_FLIGHT, c()), Some(0.0));
    assert_eq!(gauge(&v, t::LISTENER_RECOVERIES_IN_FLIGHT, c()), Some(0.0));
    assert_eq!(gauge(&v, t::LISTENER_HALTED_PARTITIONS, c()), Some(0.0));
    assert!(!histogram(&v, t::LISTENER_COMMIT_LATENCY, c()).is_empty());
    // One latency sample per fetch, per rebalance.
    let fetches = counter(&v, t::CONSUMER_FETCH_TOTAL, c());
    assert!(fetches > 0);
    assert_eq!(
        histogram(&v, t::CONSUMER_FETCH_LATENCY, c()).len() as u64,
        fetches
    );
    let rebalances = counter(&v, t::CONSUMER_REBALANCE_TOTAL, c());
    assert!(rebalances >= 1);
    assert_eq!(
        histogram(&v, t::CONSUMER_REBALANCE_LATENCY, c()).len() as u64,
        rebalances
    );
    assert!(gauge(&v, t::CONSUMER_FETCH_RATE, c()).is_some_and(|r| r > 0.0));

    // Spans: one per handler call, one per recovery; requests inside the spawned tasks carry
    // the client's span.
    assert_eq!(
        spans.named("kafka.handler").len(),
        (N - k) + k * (RETRIES as usize + 1)
    );
    assert_eq!(spans.named("kafka.recovery").len(), k);
    assert!(!spans.named("kafka.poll").is_empty());
    assert!(!spans.named("kafka.rebalance").is_empty());
    assert!(spans.request_under("Fetch", "kafka.consumer"));
    assert!(spans.request_under("Produce", "kafka.producer"));
    assert!(spans.request_under("OffsetCommit", "kafka.listener"));
    // The spawned metadata fetches and the group's heartbeat task have their own spans.
    assert!(spans.request_under("Metadata", "kafka.metadata"));
    assert!(!spans.named("kafka.heartbeat").is_empty());
    assert!(!spans.named("kafka.metadata.refresher").is_empty());
    for s in spans.named("kafka.handler") {
        assert!(spans.ancestors(&s).contains(&"kafka.listener"), "{s:?}");
    }
}

/// Two clients with different client ids in one process: each keeps its own values.
#[test]
fn two_clients_keep_their_own_values() {
    const TOPIC: &str = "shared";
    const A: usize = 7;
    const B: usize = 12;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    run(&recorder, SpanLog::default(), async {
        let mock = MockCluster::builder()
            .topic(TOPIC, 1)
            .start()
            .await
            .expect("mock");
        let mut clusters = Vec::new();
        for (id, n) in [("alpha", A), ("beta", B)] {
            let cluster = Cluster::connect(cluster_config(&mock, id))
                .await
                .expect("connect");
            let producer = Producer::new(cluster.clone(), ProducerConfig::default())
                .await
                .expect("producer");
            for i in 0..n {
                producer
                    .send_and_wait(Record::new(TOPIC).with_value(format!("{id}-{i}")))
                    .await
                    .expect("sent");
            }
            producer.close().await;
            clusters.push(cluster);
        }
        // alpha reads everything; beta only what beta wrote (from offset A).
        let tp = TopicPartition::new(TOPIC, 0);
        for (cluster, start, expect) in [
            (&clusters[0], StartOffset::Beginning, A + B),
            (&clusters[1], StartOffset::Offset(A as i64), B),
        ] {
            let consumer = Consumer::new(
                cluster.clone(),
                ConsumerConfig::new().with_fetch_max_wait(Duration::from_millis(20)),
            )
            .expect("consumer");
            consumer.assign([(tp.clone(), start)]).expect("assign");
            let mut got = 0;
            let deadline = Instant::now() + Duration::from_secs(30);
            while got < expect {
                assert!(Instant::now() < deadline, "timed out reading");
                got += consumer
                    .poll(Duration::from_millis(100))
                    .await
                    .expect("poll")
                    .len();
            }
            assert_eq!(got, expect);
            consumer.close().await.expect("close");
        }
    });
    let v = values(&snapshotter);
    assert_eq!(
        counter(&v, t::PRODUCER_RECORD_SEND_TOTAL, client("alpha")),
        A as u64
    );
    assert_eq!(
        counter(&v, t::PRODUCER_RECORD_SEND_TOTAL, client("beta")),
        B as u64
    );
    assert_eq!(
        counter(&v, t::CONSUMER_RECORDS_CONSUMED, part("alpha", TOPIC, 0)),
        (A + B) as u64
    );
    assert_eq!(
        counter(&v, t::CONSUMER_RECORDS_CONSUMED, part("beta", TOPIC, 0)),
        B as u64
    );
    assert_eq!(
        gauge(&v, t::CONSUMER_RECORDS_LAG, part("alpha", TOPIC, 0)),
        Some(0.0)
    );
    assert_eq!(
        gauge(&v, t::CONSUMER_RECORDS_LAG, part("beta", TOPIC, 0)),
        Some(0.0)
    );
    for id in ["alpha", "beta"] {
        assert!(counter(&v, t::CONSUMER_FETCH_TOTAL, client(id)) > 0, "{id}");
        // No group: no rebalance.
        assert_eq!(
            counter(&v, t::CONSUMER_REBALANCE_TOTAL, client(id)),
            0,
            "{id}"
        );
    }
    // Nothing was labelled with the default client id.
    assert!(
        v.keys()
            .all(|(_, labels)| !labels.contains(&(t::CLIENT_ID.to_owned(), "rekafka".to_owned()))),
        "a metric without its client's id"
    );
}

/// The producer's error and retry counts and their windowed rates after known broker errors:
/// R retriable errors on one record (retried R times, then written), one final error on
/// another (failed), M records without trouble.
#[test]
fn producer_errors_and_retries_are_counted() {
    const TOPIC: &str = "payments";
    const RETRIABLE: usize = 2;
    const M: usize = 5;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let started = Instant::now();
    let snapshot = run(&recorder, SpanLog::default(), async {
        let mock = MockCluster::builder()
            .topic(TOPIC, 1)
            .start()
            .await
            .expect("mock");
        let cluster = Cluster::connect(cluster_config(&mock, "payments-app"))
            .await
            .expect("connect");
        let producer = Producer::new(
            cluster,
            ProducerConfig::default()
                .with_retry_backoff(Duration::from_millis(5), Duration::from_millis(20)),
        )
        .await
        .expect("producer");
        let send = |i: usize| {
            producer.send_and_wait(
                Record::new(TOPIC)
                    .with_partition(0)
                    .with_value(format!("p{i}")),
            )
        };
        mock.push_partition_errors(
            TOPIC,
            0,
            ApiKey::Produce,
            &[KafkaCode::NotLeaderOrFollower; RETRIABLE],
        );
        send(0).await.expect("written after its retries");
        mock.push_partition_errors(TOPIC, 0, ApiKey::Produce, &[KafkaCode::MessageTooLarge]);
        send(1).await.expect_err("a final error");
        for i in 0..M {
            send(2 + i).await.expect("written");
        }
        let snapshot = producer.metrics();
        producer.close().await;
        snapshot
    });
    let elapsed = started.elapsed().as_secs_f64();
    let v = values(&snapshotter);
    let c = || client("payments-app");
    assert_eq!(
        counter(&v, t::PRODUCER_RECORD_SEND_TOTAL, c()),
        (1 + M) as u64
    );
    assert_eq!(
        counter(&v, t::PRODUCER_RECORD_RETRY_TOTAL, c()),
        RETRIABLE as u64
    );
    assert_eq!(counter(&v, t::PRODUCER_RECORD_ERROR_TOTAL, c()), 1);
    assert_eq!(snapshot.record_send_total, (1 + M) as u64);
    assert_eq!(snapshot.record_retry_total, RETRIABLE as u64);
    assert_eq!(snapshot.record_error_total, 1);
    let window = t::SAMPLE_WINDOW.as_secs_f64();
    for (name, n, from_snapshot) in [
        (
            t::PRODUCER_RECORD_SEND_RATE,
            1 + M,
            snapshot.record_send_rate,
        ),
        (
            t::PRODUCER_RECORD_RETRY_RATE,
            RETRIABLE,
            snapshot.record_retry_rate,
        ),
        (t::PRODUCER_RECORD_ERROR_RATE, 1, snapshot.record_error_rate),
    ] {
        let rate = gauge(&v, name, c()).expect(name);
        for r in [rate, from_snapshot] {
            assert!(
                r <= n as f64 / window + 1e-9 && r >= n as f64 / (window + elapsed) - 1e-9,
                "{name}: {r} for {n} in {elapsed} s"
            );
        }
    }
    // The lifetime averages are kept beside the windowed rates.
    assert!(snapshot.record_error_rate_lifetime >= 1.0 / elapsed - 1e-9);
}

/// A transaction's background work runs in `kafka.transaction` spans: the InitProducerId of
/// `init_transactions`, the AddPartitionsToTxn of a send and the EndTxn of the commit.
#[test]
fn transaction_tasks_have_spans() {
    const TOPIC: &str = "ledger";
    let recorder = DebuggingRecorder::new();
    let spans = SpanLog::default();
    run(&recorder, spans.clone(), async {
        let mock = MockCluster::builder()
            .topic(TOPIC, 1)
            .start()
            .await
            .expect("mock");
        let cluster = Cluster::connect(cluster_config(&mock, "ledger-app"))
            .await
            .expect("connect");
        let mut config = ProducerConfig::default().with_transactional_id("ledger-tx");
        config.linger = Duration::from_millis(1);
        let producer =
            rekafka::transaction::TransactionalProducer::new(cluster, config).expect("producer");
        producer.init_transactions().await.expect("init");
        producer.begin_transaction().expect("begin");
        let delivery = producer
            .send(Record::new(TOPIC).with_partition(0).with_value("entry"))
            .await
            .expect("send");
        producer.commit_transaction().await.expect("commit");
        delivery.await.expect("delivered");
        producer.close().await;
        mock.shutdown().await;
    });
    let ops: Vec<String> = spans
        .named("kafka.transaction")
        .iter()
        .filter_map(|s| s.fields.get("op").cloned())
        .collect();
    for op in ["init_transactions", "add_partitions", "commit_transaction"] {
        assert!(
            ops.iter().any(|o| o == op),
            "no kafka.transaction span for {op}: {ops:?}"
        );
    }
    assert!(spans.request_under("EndTxn", "kafka.transaction"));
    assert!(spans.request_under("AddPartitionsToTxn", "kafka.transaction"));
}

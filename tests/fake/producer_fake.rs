//! The producer against a small in-process fake broker with fault injection: back-pressure,
//! retries and back-off, lost acknowledgements, fatal and non-fatal sequence errors.
//!
//! The fake broker keeps a log per partition and checks idempotent sequences as Kafka does
//! (next expected sequence per producer id and epoch; a retried batch among the last five is a
//! duplicate; a gap is OUT_OF_ORDER_SEQUENCE_NUMBER; a higher epoch must start at 0). Faults
//! are injected per Produce request from a script of actions.

use crate::fake_broker;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fake_broker::{ConnState, FakeBroker, FakeRequest, Reply};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    ApiKey, BrokerId, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest,
    MetadataResponse, ProduceRequest, ProduceResponse, ProducerId,
};
use kafka_protocol::protocol::StrBytes;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::producer::{Persistence, Producer, ProducerConfig, Record};
use rekafka::protocol::record::RecordBatches;
use rekafka::{ErrorKind, KafkaCode};
use tokio::time::Instant;

/// What the fake does with one Produce request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Action {
    /// Validate and append as a broker would.
    Normal,
    /// Answer every partition with this error, appending nothing.
    Error(KafkaCode),
    /// Append as normal, then answer every partition with this error (a lost acknowledgement).
    AppendThenError(KafkaCode),
    /// Never answer.
    Hold,
    /// Append as normal, then close the connection without answering (ack lost, then a
    /// disconnect).
    AppendThenClose,
}

#[derive(Default)]
struct PartitionLog {
    values: Vec<Bytes>,
    /// (producer id, epoch) → next expected sequence.
    next_seq: HashMap<(i64, i16), i32>,
    /// The last 5 batches: (pid, epoch, base seq, count, base offset).
    recent: VecDeque<(i64, i16, i32, i32, i64)>,
    epoch: HashMap<i64, i16>,
}

/// Arrival time and (partition, base sequence, epoch) of each batch of a Produce request.
type ProduceLogEntry = (Instant, Vec<(i32, i32, i16)>);

#[derive(Default)]
struct State {
    partitions: usize,
    logs: HashMap<i32, PartitionLog>,
    script: VecDeque<Action>,
    /// Applied when the script is empty.
    default_action: Option<Action>,
    /// Arrival time and (partition, base sequence, epoch) of each Produce request.
    produce_log: Vec<ProduceLogEntry>,
    init_calls: Vec<(i64, i16)>,
    next_pid: i64,
    /// The partition leader (node id); Produce requests to another node get
    /// NOT_LEADER_OR_FOLLOWER.
    leader: i32,
    /// Brokers: node id and address.
    brokers: Vec<(i32, SocketAddr)>,
    /// Metadata answers still to give with the topic missing (UNKNOWN_TOPIC_OR_PARTITION).
    hide_topic: usize,
    metadata_requests: usize,
}

struct Fake {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _brokers: Vec<FakeBroker>,
}

impl Fake {
    async fn start(partitions: usize) -> Fake {
        Self::start_brokers(partitions, 1).await
    }

    /// `brokers` brokers (node ids 1..) sharing one log; node 1 leads every partition.
    async fn start_brokers(partitions: usize, brokers: i32) -> Fake {
        let state = Arc::new(Mutex::new(State {
            partitions,
            next_pid: 1000,
            leader: 1,
            ..State::default()
        }));
        let mut started = Vec::new();
        for node in 1..=brokers {
            let st = state.clone();
            let broker = FakeBroker::builder()
                .node(node)
                .api(ApiKey::Metadata, 0, 12)
                .api(ApiKey::Produce, 3, 9)
                .api(ApiKey::InitProducerId, 0, 4)
                .start(move |req: &FakeRequest, _: &mut ConnState| handle(req, &st))
                .await;
            state.lock().unwrap().brokers.push((node, broker.addr));
            started.push(broker);
        }
        Fake {
            addr: started[0].addr,
            state,
            _brokers: started,
        }
    }

    fn script(&self, actions: impl IntoIterator<Item = Action>) {
        self.state.lock().unwrap().script.extend(actions);
    }

    fn set_default(&self, a: Action) {
        self.state.lock().unwrap().default_action = Some(a);
    }

    fn values(&self, p: i32) -> Vec<String> {
        let st = self.state.lock().unwrap();
        st.logs
            .get(&p)
            .map(|l| {
                l.values
                    .iter()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn producer(&self, config: ProducerConfig) -> Producer {
        let cluster = Cluster::connect(ClusterConfig::new([self.addr.to_string()]))
            .await
            .unwrap();
        Producer::new(cluster, config).await.unwrap()
    }
}

fn handle(req: &FakeRequest, state: &Mutex<State>) -> Reply {
    let node = req.node;
    match req.api {
        ApiKey::Metadata => {
            let q: MetadataRequest = req.decode();
            let mut st = state.lock().unwrap();
            st.metadata_requests += 1;
            let n = st.partitions;
            let leader = st.leader;
            let hide = st.hide_topic > 0;
            st.hide_topic = st.hide_topic.saturating_sub(1);
            let brokers = st.brokers.clone();
            drop(st);
            let topics = q
                .topics
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| t.name)
                .map(|name| {
                    if hide {
                        return MetadataResponseTopic::default()
                            .with_name(Some(name))
                            .with_error_code(KafkaCode::UnknownTopicOrPartition.code());
                    }
                    MetadataResponseTopic::default()
                        .with_name(Some(name))
                        .with_partitions(
                            (0..n as i32)
                                .map(|p| {
                                    MetadataResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_leader_id(BrokerId(leader))
                                        .with_replica_nodes(vec![BrokerId(1)])
                                        .with_isr_nodes(vec![BrokerId(1)])
                                })
                                .collect(),
                        )
                })
                .collect();
            let r = MetadataResponse::default()
                .with_brokers(
                    brokers
                        .iter()
                        .map(|(id, addr)| {
                            MetadataResponseBroker::default()
                                .with_node_id(BrokerId(*id))
                                .with_host(StrBytes::from_string(addr.ip().to_string()))
                                .with_port(addr.port() as i32)
                        })
                        .collect(),
                )
                .with_topics(topics);
            req.respond(&r)
        }
        ApiKey::InitProducerId => {
            let q: InitProducerIdRequest = req.decode();
            let mut st = state.lock().unwrap();
            st.init_calls.push((q.producer_id.0, q.producer_epoch));
            let (pid, epoch) = if q.producer_id.0 >= 0 {
                (q.producer_id.0, q.producer_epoch + 1)
            } else {
                st.next_pid += 1;
                (st.next_pid, 0)
            };
            let r = InitProducerIdResponse::default()
                .with_producer_id(ProducerId(pid))
                .with_producer_epoch(epoch);
            req.respond(&r)
        }
        ApiKey::Produce => {
            let q: ProduceRequest = req.decode();
            let mut st = state.lock().unwrap();
            let action = if node != st.leader {
                Action::Error(KafkaCode::NotLeaderOrFollower)
            } else {
                match st.script.pop_front() {
                    Some(a) => a,
                    None => st.default_action.unwrap_or(Action::Normal),
                }
            };
            let mut seen = Vec::new();
            let mut topics = Vec::new();
            for t in q.topic_data {
                let mut parts = Vec::new();
                for p in t.partition_data {
                    let records = p.records.unwrap_or_default();
                    let batch = RecordBatches::new(records).next().unwrap().unwrap();
                    seen.push((p.index, batch.base_sequence(), batch.producer_epoch()));
                    let (code, base) = match action {
                        Action::Error(c) => (c.code(), -1),
                        Action::Hold => (0, -1),
                        Action::Normal | Action::AppendThenError(_) | Action::AppendThenClose => {
                            let (code, base) = append(st.logs.entry(p.index).or_default(), &batch);
                            match action {
                                Action::AppendThenError(c) => (c.code(), -1),
                                _ => (code, base),
                            }
                        }
                    };
                    parts.push(
                        PartitionProduceResponse::default()
                            .with_index(p.index)
                            .with_error_code(code)
                            .with_base_offset(base)
                            .with_log_append_time_ms(-1),
                    );
                }
                topics.push(
                    TopicProduceResponse::default()
                        .with_name(t.name)
                        .with_partition_responses(parts),
                );
            }
            st.produce_log.push((Instant::now(), seen));
            match action {
                Action::Hold => Reply::Silent,
                Action::AppendThenClose => Reply::Close,
                _ => req.respond(&ProduceResponse::default().with_responses(topics)),
            }
        }
        _ => Reply::Builtin,
    }
}

/// Kafka's idempotent append check, simplified to one producer per partition.
fn append(log: &mut PartitionLog, batch: &rekafka::protocol::record::RecordBatch) -> (i16, i64) {
    let (pid, epoch, seq, count) = (
        batch.producer_id(),
        batch.producer_epoch(),
        batch.base_sequence(),
        batch.record_count(),
    );
    if pid >= 0 {
        let current = log.epoch.get(&pid).copied();
        if current.is_some_and(|c| epoch < c) {
            return (KafkaCode::InvalidProducerEpoch.code(), -1);
        }
        if current.is_none_or(|c| epoch > c) {
            if seq != 0 && current.is_some() {
                return (KafkaCode::OutOfOrderSequenceNumber.code(), -1);
            }
            log.epoch.insert(pid, epoch);
        }
        if log
            .recent
            .iter()
            .any(|r| r.0 == pid && r.1 == epoch && r.2 == seq && r.3 == count)
        {
            return (KafkaCode::DuplicateSequenceNumber.code(), -1);
        }
        let next = log.next_seq.get(&(pid, epoch)).copied().unwrap_or(0);
        if seq != next {
            return (KafkaCode::OutOfOrderSequenceNumber.code(), -1);
        }
        log.next_seq.insert((pid, epoch), seq + count);
    }
    let base = log.values.len() as i64;
    for r in batch.records().unwrap() {
        log.values.push(r.unwrap().value.unwrap_or_default());
    }
    log.recent.push_back((pid, epoch, seq, count, base));
    if log.recent.len() > 5 {
        log.recent.pop_front();
    }
    (0, base)
}

fn fast() -> ProducerConfig {
    ProducerConfig::default()
        .with_linger(Duration::from_millis(1))
        .with_retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
        .with_request_timeout(Duration::from_secs(2))
        .with_delivery_timeout(Duration::from_secs(20))
}

/// Checks that each partition's log holds the values sent to it exactly once, in send order.
fn assert_exactly_once_in_order(fake: &Fake, sent: &HashMap<i32, Vec<String>>) {
    for (p, want) in sent {
        let got = fake.values(*p);
        assert_eq!(got.len(), want.len(), "partition {p}: record count");
        assert_eq!(&got, want, "partition {p}: order or duplicates");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_pressure_blocks_then_fails_after_max_block() {
    let fake = Fake::start(1).await;
    fake.set_default(Action::Hold);
    const BUFFER: usize = 1 << 20;
    let producer = fake
        .producer(
            fast()
                .with_buffer_memory(BUFFER)
                .with_batch_size(16 * 1024)
                .with_max_block(Duration::from_millis(500)),
        )
        .await;
    let value = Bytes::from(vec![b'x'; 1000]);
    let mut accepted = Vec::new();
    let started = Instant::now();
    let err = loop {
        match producer
            .send(Record::new("t").with_value(value.clone()))
            .await
        {
            Ok(f) => accepted.push(f),
            Err(e) => break e,
        }
        assert!(
            producer.metrics().buffer_available_bytes <= BUFFER as u64,
            "accounting above the buffer"
        );
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "send never blocked"
        );
    };
    let blocked = started.elapsed();
    assert_eq!(err.kind(), &ErrorKind::BufferFull, "{err}");
    assert_eq!(err.persistence, Persistence::NotPersisted);
    assert!(blocked >= Duration::from_millis(500), "{blocked:?}");
    // Everything accepted fits in the buffer (each record takes > 1000 bytes).
    assert!(
        accepted.len() * 1000 <= BUFFER,
        "{} records accepted",
        accepted.len()
    );
    assert!(
        accepted.len() * 1100 >= BUFFER / 2,
        "only {} records accepted",
        accepted.len()
    );
    // The send failed because the next batch (16 KiB and its header) did not fit.
    let available = producer.metrics().buffer_available_bytes;
    assert!(available < 16 * 1024 + 61, "{available} bytes were free");
    // Dropping the producer fails what it holds, typed, never silently.
    drop(producer);
    let r = tokio::time::timeout(Duration::from_secs(5), accepted.pop().unwrap())
        .await
        .expect("dropped producer resolves its records");
    let e = r.expect_err("not delivered");
    assert_eq!(e.kind(), &ErrorKind::Closed);
}

/// Scenario 1: every 5th Produce fails with a retriable error; 10 000 records on 3 partitions
/// arrive exactly once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_error_storm_delivers_exactly_once_in_order() {
    let fake = Fake::start(3).await;
    let codes = [
        KafkaCode::NotLeaderOrFollower,
        KafkaCode::NotEnoughReplicas,
        KafkaCode::RequestTimedOut,
        KafkaCode::LeaderNotAvailable,
    ];
    let mut script = Vec::new();
    for i in 0..400 {
        script.push(if i % 5 == 4 {
            Action::Error(codes[(i / 5) % 4])
        } else {
            Action::Normal
        });
    }
    fake.script(script);
    let producer = fake.producer(fast().with_batch_size(2048)).await;
    let mut sent: HashMap<i32, Vec<String>> = HashMap::new();
    let mut futures = Vec::new();
    for i in 0..10_000 {
        let r = Record::new("t")
            .with_key(format!("k{}", i % 97))
            .with_value(format!("{i}"));
        let f = producer.send(r).await.unwrap();
        sent.entry(f.partition()).or_default().push(format!("{i}"));
        futures.push(f);
    }
    for f in futures {
        f.await.expect("delivered");
    }
    let m = producer.metrics();
    assert_eq!(m.record_send_total, 10_000);
    assert!(m.record_retry_total > 0, "the storm caused no retry");
    producer.close().await;
    assert_exactly_once_in_order(&fake, &sent);
}

/// Scenario 3 (implicit ack / lost ack): batches are written but their responses say
/// REQUEST_TIMED_OUT; the retries are duplicates and count as success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_are_resolved_as_duplicates() {
    let fake = Fake::start(1).await;
    let mut script = vec![Action::Normal];
    for _ in 0..20 {
        script.push(Action::AppendThenError(KafkaCode::RequestTimedOut));
        script.push(Action::Normal);
    }
    fake.script(script);
    let producer = fake.producer(fast().with_batch_size(1024)).await;
    let mut sent = Vec::new();
    let mut futures = Vec::new();
    for i in 0..1000 {
        futures.push(
            producer
                .send(Record::new("t").with_value(format!("{i}")))
                .await
                .unwrap(),
        );
        sent.push(format!("{i}"));
    }
    let mut unknown_offsets = 0;
    for f in futures {
        let m = f.await.expect("delivered");
        if m.offset < 0 {
            unknown_offsets += 1;
        }
    }
    assert!(
        unknown_offsets > 0,
        "no retried batch was reported as a duplicate"
    );
    producer.close().await;
    assert_exactly_once_in_order(&fake, &HashMap::from([(0, sent)]));
}

/// Scenario 4: OUT_OF_ORDER_SEQUENCE_NUMBER on the oldest unacknowledged batch is fatal: no
/// success is reported for it, and every later send fails with the same fatal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_of_line_out_of_order_sequence_is_fatal() {
    let fake = Fake::start(1).await;
    fake.script([
        Action::Normal,
        Action::Error(KafkaCode::OutOfOrderSequenceNumber),
    ]);
    let producer = fake.producer(fast()).await;
    let first = producer
        .send_and_wait(Record::new("t").with_value("a"))
        .await;
    assert!(first.is_ok());
    let second = producer
        .send_and_wait(Record::new("t").with_value("b"))
        .await;
    let e = second.expect_err("OOS on the head batch must fail it");
    assert_eq!(
        e.error.kafka_code(),
        Some(KafkaCode::OutOfOrderSequenceNumber)
    );
    assert!(producer.fatal_error().is_some());
    let later = producer.send(Record::new("t").with_value("c")).await;
    let e = later.expect_err("a fatal producer refuses sends");
    assert_eq!(e.kind(), &ErrorKind::Fatal);
    assert!(e.is_fatal());
    assert_eq!(fake.values(0), vec!["a".to_string()]);
}

/// Scenario 5: a batch fails for good (MESSAGE_TOO_LARGE) while others are in flight: its
/// records fail as not persisted; the later ones are delivered in order after an epoch bump,
/// with no duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_error_mid_window_bumps_epoch_and_keeps_order() {
    let fake = Fake::start(1).await;
    fake.script([
        Action::Normal,
        Action::Error(KafkaCode::MessageTooLarge),
        Action::Normal,
        Action::Normal,
    ]);
    let producer = fake
        .producer(
            fast()
                .with_batch_size(200)
                .with_linger(Duration::from_millis(20)),
        )
        .await;
    let mut futures = Vec::new();
    for i in 0..60 {
        futures.push(
            producer
                .send(Record::new("t").with_value(format!("{i:040}")))
                .await
                .unwrap(),
        );
    }
    let mut failed = Vec::new();
    let mut delivered = Vec::new();
    for (i, f) in futures.into_iter().enumerate() {
        match f.await {
            Ok(_) => delivered.push(format!("{i:040}")),
            Err(e) => {
                assert_eq!(e.persistence, Persistence::NotPersisted, "{e}");
                assert!(!e.is_fatal(), "{e}");
                failed.push(i);
            }
        }
    }
    assert!(!failed.is_empty(), "the injected error failed nothing");
    // The failed records are one contiguous batch.
    assert_eq!(failed.last().unwrap() - failed[0] + 1, failed.len());
    assert_eq!(
        fake.values(0),
        delivered,
        "delivered records once each, in order"
    );
    let inits = fake.state.lock().unwrap().init_calls.clone();
    assert_eq!(inits.len(), 2, "one epoch bump: {inits:?}");
    assert!(
        inits[1].0 >= 0,
        "the bump names the current producer id (KIP-360)"
    );
    // The producer stays usable.
    producer
        .send_and_wait(Record::new("t").with_value("after"))
        .await
        .expect("usable after the bump");
}

/// Scenario 11: LEADER_NOT_AVAILABLE for a while: retries back off exponentially with ±20%
/// jitter; the record fails at its delivery timeout (+1 s at most) with a typed timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_is_exponential_with_jitter_and_bounded_by_delivery_timeout() {
    let fake = Fake::start(1).await;
    fake.set_default(Action::Error(KafkaCode::LeaderNotAvailable));
    let base = Duration::from_millis(40);
    let max = Duration::from_millis(320);
    let delivery = Duration::from_secs(3);
    let producer = fake
        .producer(
            ProducerConfig::default()
                .with_linger(Duration::ZERO)
                .with_retry_backoff(base, max)
                .with_request_timeout(Duration::from_secs(1))
                .with_delivery_timeout(delivery),
        )
        .await;
    let started = Instant::now();
    let r = producer
        .send_and_wait(Record::new("t").with_value("x"))
        .await;
    let took = started.elapsed();
    let e = r.expect_err("never delivered");
    assert_eq!(e.kind(), &ErrorKind::Timeout, "{e}");
    assert_eq!(e.persistence, Persistence::NotPersisted);
    assert!(took <= delivery + Duration::from_secs(1), "{took:?}");
    assert!(took >= delivery - Duration::from_millis(400), "{took:?}");
    let times: Vec<Instant> = fake
        .state
        .lock()
        .unwrap()
        .produce_log
        .iter()
        .map(|(t, _)| *t)
        .collect();
    assert!(times.len() >= 6, "{} attempts", times.len());
    for (i, w) in times.windows(2).enumerate() {
        let gap = w[1] - w[0];
        let nominal = base.saturating_mul(1 << i.min(10)).min(max);
        let lo = nominal.mul_f64(0.8);
        let hi = nominal.mul_f64(1.2) + Duration::from_millis(60);
        assert!(
            gap >= lo && gap <= hi,
            "attempt {}: gap {gap:?}, nominal {nominal:?}",
            i + 1
        );
    }
}

/// Scenario 2: an acknowledgement is lost and the connection drops; the retry is a duplicate,
/// which counts as success: no fatal error, every record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_ack_then_disconnect_is_not_fatal() {
    let fake = Fake::start(1).await;
    fake.script([Action::Normal, Action::AppendThenClose, Action::Normal]);
    let producer = fake.producer(fast()).await;
    let mut sent = Vec::new();
    for i in 0..10 {
        let v = format!("{i}");
        producer
            .send_and_wait(Record::new("t").with_value(v.clone()))
            .await
            .expect("delivered");
        sent.push(v);
    }
    assert!(producer.fatal_error().is_none());
    producer.close().await;
    assert_exactly_once_in_order(&fake, &HashMap::from([(0, sent)]));
}

/// KIP-360: UNKNOWN_PRODUCER_ID bumps the epoch (InitProducerId with the current id and
/// epoch) once nothing is in flight; the batch is renumbered from 0 and delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_producer_id_bumps_the_epoch() {
    let fake = Fake::start(1).await;
    fake.script([Action::Normal, Action::Error(KafkaCode::UnknownProducerId)]);
    let producer = fake.producer(fast()).await;
    let a = producer
        .send_and_wait(Record::new("t").with_value("a"))
        .await;
    let b = producer
        .send_and_wait(Record::new("t").with_value("b"))
        .await;
    assert_eq!(a.expect("a").offset, 0);
    assert_eq!(b.expect("b").offset, 1);
    let st = fake.state.lock().unwrap();
    assert_eq!(st.init_calls.len(), 2, "{:?}", st.init_calls);
    let last = st.produce_log.last().unwrap();
    assert_eq!(last.1, vec![(0, 0, 1)], "renumbered from 0 at epoch 1");
    drop(st);
    assert_eq!(fake.values(0), vec!["a".to_string(), "b".to_string()]);
}

/// The circuit breaker opens after consecutive failures, fails sends fast, lets a probe
/// through after the cool-down and closes when it succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_opens_fails_fast_half_opens_and_closes() {
    use rekafka::producer::{Acks, CircuitBreakerConfig, CircuitState, Idempotence};
    let fake = Fake::start(1).await;
    fake.set_default(Action::Error(KafkaCode::InvalidRecord));
    let producer = fake
        .producer(
            fast()
                .with_acks(Acks::Leader)
                .with_idempotence(Idempotence::Disabled)
                .with_circuit_breaker(Some(
                    CircuitBreakerConfig::default()
                        .with_failure_threshold(3)
                        .with_open_for(Duration::from_millis(300)),
                )),
        )
        .await;
    let mut watch = producer.circuit_watch().expect("a breaker");
    for _ in 0..3 {
        let e = producer
            .send_and_wait(Record::new("t").with_value("x"))
            .await
            .expect_err("rejected");
        assert_eq!(e.error.kafka_code(), Some(KafkaCode::InvalidRecord));
    }
    assert_eq!(producer.circuit_state(), CircuitState::Open);
    assert!(watch.has_changed().unwrap());
    assert_eq!(*watch.borrow_and_update(), CircuitState::Open);
    let sent_before = fake.state.lock().unwrap().produce_log.len();
    let e = producer
        .send(Record::new("t").with_value("y"))
        .await
        .expect_err("fails fast");
    assert_eq!(e.kind(), &ErrorKind::CircuitOpen);
    assert_eq!(e.persistence, Persistence::NotPersisted);
    tokio::time::sleep(Duration::from_millis(350)).await;
    fake.set_default(Action::Normal);
    let probe = producer
        .send(Record::new("t").with_value("probe"))
        .await
        .expect("probe allowed");
    assert_eq!(producer.circuit_state(), CircuitState::HalfOpen);
    let second = producer.send(Record::new("t").with_value("z")).await;
    assert_eq!(
        second.expect_err("only one probe").kind(),
        &ErrorKind::CircuitOpen
    );
    probe.await.expect("probe delivered");
    assert_eq!(producer.circuit_state(), CircuitState::Closed);
    assert_eq!(
        fake.state.lock().unwrap().produce_log.len(),
        sent_before + 1
    );
    producer
        .send_and_wait(Record::new("t").with_value("after"))
        .await
        .expect("closed again");
}

/// Leader change: the leader moves to another broker mid-stream; NOT_LEADER_OR_FOLLOWER makes
/// the producer refresh metadata and re-route; every record arrives once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_change_reroutes_without_loss_duplicates_or_reordering() {
    let fake = Fake::start_brokers(2, 2).await;
    // Java's batch rules (no growth under a backlog): the scenario needs requests to leave
    // while the leader is moved, and a batch growing behind a slow response (a loaded machine)
    // could cross the whole window in one request (a fresh-clone run saw no retry that way).
    let producer = fake
        .producer(fast().with_batch_size(512).with_backlog_batch_size(0))
        .await;
    let mut sent: HashMap<i32, Vec<String>> = HashMap::new();
    let mut futures = Vec::new();
    for i in 0..3000 {
        if i == 1000 {
            fake.state.lock().unwrap().leader = 2;
        }
        if i == 2000 {
            fake.state.lock().unwrap().leader = 1;
        }
        let f = producer
            .send(
                Record::new("t")
                    .with_key(format!("{}", i % 10))
                    .with_value(format!("{i}")),
            )
            .await
            .unwrap();
        sent.entry(f.partition()).or_default().push(format!("{i}"));
        futures.push(f);
        if i % 100 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    for f in futures {
        f.await.expect("delivered");
    }
    let m = producer.metrics();
    assert!(
        m.record_retry_total > 0,
        "the leader change caused no retry"
    );
    producer.close().await;
    assert_exactly_once_in_order(&fake, &sent);
}

/// Scenario 10(a): the topic disappears from metadata for three refreshes after a leader
/// error, then comes back: nothing is lost, duplicated or reordered, and the producer keeps
/// its sequence numbers (no epoch bump).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_hidden_from_metadata_for_a_while_loses_nothing() {
    let fake = Fake::start(1).await;
    let producer = fake.producer(fast()).await;
    producer
        .send_and_wait(Record::new("t").with_value("0"))
        .await
        .expect("first");
    {
        let mut st = fake.state.lock().unwrap();
        st.hide_topic = 3;
        st.script
            .push_back(Action::Error(KafkaCode::NotLeaderOrFollower));
    }
    let mut futures = Vec::new();
    let mut sent = vec!["0".to_string()];
    for i in 1..200 {
        futures.push(
            producer
                .send(Record::new("t").with_value(format!("{i}")))
                .await
                .unwrap(),
        );
        sent.push(format!("{i}"));
    }
    for f in futures {
        f.await.expect("delivered");
    }
    assert_eq!(
        fake.state.lock().unwrap().hide_topic,
        0,
        "the hidden metadata was asked for"
    );
    assert_eq!(
        fake.state.lock().unwrap().init_calls.len(),
        1,
        "no epoch bump"
    );
    producer.close().await;
    assert_exactly_once_in_order(&fake, &HashMap::from([(0, sent)]));
}

/// Scenario 8 (delivery timeout under delay): the broker never answers. The record fails at
/// `delivery.timeout` (+1 s at most) with a typed timeout marked possibly persisted (the
/// request was on the wire), although the request timeout has not yet fired for its retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_fail_possibly_persisted_at_delivery_timeout() {
    let fake = Fake::start(1).await;
    fake.set_default(Action::Hold);
    let delivery = Duration::from_millis(2500);
    let producer = fake
        .producer(
            ProducerConfig::default()
                .with_linger(Duration::ZERO)
                .with_request_timeout(Duration::from_secs(2))
                .with_delivery_timeout(delivery),
        )
        .await;
    let started = Instant::now();
    let e = producer
        .send_and_wait(Record::new("t").with_value("x"))
        .await
        .expect_err("never answered");
    let took = started.elapsed();
    assert_eq!(e.kind(), &ErrorKind::Timeout, "{e}");
    assert_eq!(e.persistence, Persistence::PossiblyPersisted);
    assert!(
        took >= delivery - Duration::from_millis(100) && took <= delivery + Duration::from_secs(1),
        "{took:?}"
    );
    assert_eq!(producer.metrics().record_error_total, 1);
}

/// Scenario 6: an ambiguous error (NOT_ENOUGH_REPLICAS_AFTER_APPEND: written, not replicated),
/// then NOT_LEADER_OR_FOLLOWER, then success: the record is delivered once (the last attempt
/// is a duplicate of the first), not failed and not duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_then_not_leader_then_ok_delivers_once() {
    let fake = Fake::start(1).await;
    fake.script([
        Action::AppendThenError(KafkaCode::NotEnoughReplicasAfterAppend),
        Action::Error(KafkaCode::NotLeaderOrFollower),
        Action::Normal,
    ]);
    let producer = fake.producer(fast()).await;
    let m = producer
        .send_and_wait(Record::new("t").with_value("only"))
        .await
        .expect("delivered");
    assert_eq!(m.offset, -1, "resolved as a duplicate of the first attempt");
    assert_eq!(fake.values(0), vec!["only".to_string()]);
    assert_eq!(fake.state.lock().unwrap().produce_log.len(), 3);
    assert_eq!(producer.metrics().record_retry_total, 2);
}

/// Round-robin spreads records over the partitions in turn; a custom partitioner decides
/// alone and hears about new batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_and_custom_partitioners() {
    use rekafka::producer::{Partitioner, Partitioning};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fake = Fake::start(3).await;
    let producer = fake
        .producer(fast().with_partitioning(Partitioning::RoundRobin))
        .await;
    let mut parts = Vec::new();
    for i in 0..9 {
        let f = producer
            .send(Record::new("t").with_key("same").with_value(format!("{i}")))
            .await
            .unwrap();
        parts.push(f.partition());
        f.await.unwrap();
    }
    assert_eq!(parts, [0, 1, 2, 0, 1, 2, 0, 1, 2]);
    producer.close().await;

    struct Last(AtomicUsize);
    impl Partitioner for Last {
        fn partition(&self, _: &str, _: Option<&[u8]>, _: Option<&[u8]>, count: u32) -> u32 {
            count - 1
        }
        fn on_new_batch(&self, _: &str, partition: u32, _: u32) {
            assert_eq!(partition, 2);
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let custom = Arc::new(Last(AtomicUsize::new(0)));
    let producer = fake
        .producer(fast().with_partitioning(Partitioning::Custom(custom.clone())))
        .await;
    for i in 0..5 {
        let m = producer
            .send_and_wait(Record::new("t").with_value(format!("c{i}")))
            .await
            .unwrap();
        assert_eq!(m.partition, 2);
    }
    assert_eq!(
        custom.0.load(Ordering::SeqCst),
        5,
        "one new batch per awaited record"
    );
}

/// Scenario 10(b): the topic exists with zero partitions and no error: `send` does not fake a
/// success; it retries the metadata and fails with a typed error at `max.block`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_partitions_fail_send_at_max_block() {
    let fake = Fake::start(0).await;
    let producer = fake
        .producer(fast().with_max_block(Duration::from_millis(600)))
        .await;
    let started = Instant::now();
    let e = producer
        .send(Record::new("t").with_value("x"))
        .await
        .expect_err("no partition to send to");
    let took = started.elapsed();
    assert_eq!(e.persistence, Persistence::NotPersisted);
    assert!(
        matches!(
            e.kind(),
            ErrorKind::Timeout | ErrorKind::Broker(KafkaCode::LeaderNotAvailable)
        ),
        "{e}"
    );
    assert!(took <= Duration::from_secs(2), "{took:?}");
    assert!(
        fake.state.lock().unwrap().metadata_requests >= 3,
        "metadata was retried"
    );
    assert!(fake.state.lock().unwrap().produce_log.is_empty());
}

/// Several tasks share one producer (clones) under a retriable-error storm: every record
/// arrives once, and each task's records of a partition keep that task's send order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_keep_per_task_order() {
    let fake = Fake::start(3).await;
    let mut script = Vec::new();
    for i in 0..300 {
        script.push(if i % 7 == 6 {
            Action::Error(KafkaCode::NotEnoughReplicas)
        } else {
            Action::Normal
        });
    }
    fake.script(script);
    let producer = fake.producer(fast().with_batch_size(1024)).await;
    let mut tasks = Vec::new();
    for t in 0..4 {
        let p = producer.clone();
        tasks.push(tokio::spawn(async move {
            let mut futures = Vec::new();
            for i in 0..2000 {
                let r = Record::new("t")
                    .with_key(format!("task{t}-{}", i % 13))
                    .with_value(format!("{t}:{i}"));
                futures.push(p.send(r).await.unwrap());
                if i % 256 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            for f in futures {
                f.await.expect("delivered");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    producer.close().await;
    let mut total = 0;
    for p in 0..3 {
        let values = fake.values(p);
        total += values.len();
        let mut last: HashMap<u32, i64> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for v in values {
            assert!(seen.insert(v.clone()), "duplicate {v}");
            let (t, i) = v.split_once(':').unwrap();
            let (t, i): (u32, i64) = (t.parse().unwrap(), i.parse().unwrap());
            let prev = last.insert(t, i).unwrap_or(-1);
            assert!(
                prev < i,
                "partition {p}: task {t} reordered ({prev} then {i})"
            );
        }
    }
    assert_eq!(total, 8000);
}

/// The runtime running the sender shuts down while records are held: their futures resolve
/// with a typed error instead of hanging.
#[test]
fn runtime_shutdown_fails_held_records() {
    let main = tokio::runtime::Runtime::new().unwrap();
    let fake = main.block_on(async {
        let fake = Fake::start(1).await;
        fake.set_default(Action::Hold);
        fake
    });
    let other = tokio::runtime::Runtime::new().unwrap();
    let (producer, delivery) = other.block_on(async {
        let producer = fake.producer(fast()).await;
        let d = producer
            .send(Record::new("t").with_value("x"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        (producer, d)
    });
    drop(other);
    let r = main.block_on(async { tokio::time::timeout(Duration::from_secs(5), delivery).await });
    let e = r.expect("resolved").expect_err("not delivered");
    assert_eq!(e.kind(), &ErrorKind::Closed);
    assert_eq!(
        e.persistence,
        Persistence::PossiblyPersisted,
        "it was on the wire"
    );
    drop(producer);
}

/// With a large `batch.size`, a batch charges `buffer.memory` as it grows (from 16 KiB, by
/// doubling), not all at once: many partitions with a little traffic each fit in a small
/// buffer, and the charge never exceeds the buffer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_charge_memory_as_they_grow() {
    let fake = Fake::start(40).await;
    fake.set_default(Action::Hold);
    const BUFFER: usize = 1 << 20;
    let producer = fake
        .producer(
            fast()
                .with_buffer_memory(BUFFER)
                .with_batch_size(1 << 20)
                .with_linger(Duration::from_secs(10))
                .with_max_block(Duration::from_millis(300)),
        )
        .await;
    // One small record in each of 40 partitions: 40 batches of 16 KiB, 655 KiB < 1 MiB.
    let mut held = Vec::new();
    for p in 0..40 {
        held.push(
            producer
                .send(Record::new("t").with_partition(p).with_value("x"))
                .await
                .expect("room for a small batch per partition"),
        );
    }
    let used = BUFFER as u64 - producer.metrics().buffer_available_bytes;
    assert_eq!(used, 40 * (16 * 1024 + 61));
    // One partition grows its batch until the buffer is exhausted, then `send` waits and
    // fails: the charge never passes the buffer.
    let value = Bytes::from(vec![b'y'; 1000]);
    let mut n = 0;
    let e = loop {
        match producer
            .send(Record::new("t").with_partition(0).with_value(value.clone()))
            .await
        {
            Ok(f) => held.push(f),
            Err(e) => break e,
        }
        n += 1;
        assert!(n < 2000, "never ran out of buffer");
    };
    assert_eq!(e.kind(), &ErrorKind::BufferFull, "{e}");
    assert!(n >= 100, "only {n} records fitted");
    assert!(producer.metrics().buffer_available_bytes <= BUFFER as u64);
}

/// Scenario 6 with `retries` = 1: the ambiguous attempt does not use up the retry budget, so
/// the record is still delivered after NOT_LEADER; two definite failures exhaust it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_attempts_do_not_use_up_retries() {
    let fake = Fake::start(1).await;
    fake.script([
        Action::AppendThenError(KafkaCode::RequestTimedOut),
        Action::Error(KafkaCode::NotLeaderOrFollower),
        Action::Normal,
        Action::Error(KafkaCode::NotEnoughReplicas),
        Action::Error(KafkaCode::NotEnoughReplicas),
    ]);
    let producer = fake.producer(fast().with_retries(1)).await;
    producer
        .send_and_wait(Record::new("t").with_value("a"))
        .await
        .expect("one definite failure fits in retries = 1");
    let e = producer
        .send_and_wait(Record::new("t").with_value("b"))
        .await
        .expect_err("two definite failures exceed retries = 1");
    assert_eq!(
        e.error.kafka_code(),
        Some(KafkaCode::NotEnoughReplicas),
        "{e}"
    );
    assert_eq!(e.persistence, Persistence::NotPersisted);
    assert!(producer.fatal_error().is_none());
    assert_eq!(fake.values(0), vec!["a".to_string()]);
}

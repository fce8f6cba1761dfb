//! rekafka's side of the Spring conformance harness: runs every scenario of
//! `protocol-tests/spring/scenarios/` through rekafka's listener container and writes one
//! observation log (JSON lines) per scenario, in the format the Spring runner
//! (`protocol-tests/spring/runner`) writes. `protocol-tests/spring/README.md` describes both.
//!
//! ```text
//! spring-runner --bootstrap HOST:PORT --scenarios DIR --out DIR [--only a,b] [--parallel N]
//! ```

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rekafka::admin::{Admin, AlterConfigOp, NewTopic};
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, IsolationLevel, OffsetReset, StartOffset,
    StringDeserializer, TopicPartition,
};
use rekafka::listener::retry_topic::{
    RetryBackOff, RetryTopicConfiguration, TopicCreation, headers as retry_headers,
};
use rekafka::listener::{
    AckMode, Acknowledgment, BackOff, BatchFailure, BatchListenerFailed, BoxFuture,
    CommonErrorHandler, ContainerStoppingErrorHandler, DeadLetterPublisher, DefaultErrorHandler,
    DelegatingErrorHandler, DeliveryAttemptHeader, DeserializationFailed, Destination, Disposition,
    DltNaming, ExponentialBackOff, FixedBackOff, HandlerError, ListenerConsumerRecord,
    ListenerContainer, ListenerFailure, ListenerRecord, LoggingErrorHandler, LoggingRecoverer,
    MissingDestination, OtherFailure, RecordFailure, Recoverer, Recovery, RecoveryPolicy,
    RepublishToTail, RetryListener, SharedError, TransactionalDeadLetters, deserialization_check,
};
use rekafka::listener::{Classifier, ShareContainer, ShareContainerEvent, ShareListenerRecord};
use rekafka::producer::{Producer, ProducerConfig, Record};
use rekafka::share::{AcknowledgementMode, ShareConsumer, ShareConsumerConfig};
use rekafka::transaction::TransactionalProducer;
use serde_json::{Value, json};

const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

// ---- the harness's error types (the same simple names as the Spring runner's) ----

macro_rules! harness_error {
    ($name:ident) => {
        /// A scenario's error type (see the scenario format).
        #[derive(Debug)]
        pub struct $name {
            message: String,
            cause: Option<HandlerError>,
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.message)
            }
        }

        impl StdError for $name {
            fn source(&self) -> Option<&(dyn StdError + 'static)> {
                self.cause
                    .as_deref()
                    .map(|e| e as &(dyn StdError + 'static))
            }
        }
    };
}

harness_error!(Transient);
harness_error!(Fatal);
harness_error!(Wrapper);
harness_error!(Slow);
harness_error!(RecovererDown);

fn make_error(kind: &str, message: String, cause: Option<HandlerError>) -> HandlerError {
    match kind {
        "Transient" => Box::new(Transient { message, cause }),
        "Fatal" => Box::new(Fatal { message, cause }),
        "Wrapper" => Box::new(Wrapper { message, cause }),
        "Slow" => Box::new(Slow { message, cause }),
        // A bare message, as `Box<dyn Error>` from a String (Java: a plain RuntimeException).
        "Plain" => message.into(),
        other => panic!("unknown error kind {other}"),
    }
}

fn harness_kind(e: &(dyn StdError + 'static)) -> Option<&'static str> {
    if e.is::<Transient>() {
        Some("Transient")
    } else if e.is::<Fatal>() {
        Some("Fatal")
    } else if e.is::<Wrapper>() {
        Some("Wrapper")
    } else if e.is::<Slow>() {
        Some("Slow")
    } else if e.is::<RecovererDown>() {
        Some("RecovererDown")
    } else if e.is::<DeserializationFailed>() {
        Some("Deserialization")
    } else if e.source().is_none() && format!("{e:?}").starts_with('"') {
        Some("Plain")
    } else {
        None
    }
}

/// The harness error kinds in the error's source chain, e.g. `Wrapper(Fatal)`.
fn kind(e: &(dyn StdError + 'static)) -> String {
    let mut kinds = Vec::new();
    let mut current = Some(e);
    let mut depth = 0;
    while let Some(err) = current {
        if let Some(k) = harness_kind(err) {
            kinds.push(k);
        }
        current = err.source();
        depth += 1;
        if depth > 32 {
            break;
        }
    }
    if kinds.is_empty() {
        let debug = format!("{e:?}");
        let ident: String = debug
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        return format!("Other:{ident}");
    }
    let mut s = kinds[0].to_owned();
    for k in &kinds[1..] {
        s.push('(');
        s.push_str(k);
    }
    for _ in 1..kinds.len() {
        s.push(')');
    }
    s
}

/// The message of the outermost harness error (not of a deserialization failure, as Spring's
/// runner does).
fn harness_message(e: &(dyn StdError + 'static)) -> Option<String> {
    let mut current = Some(e);
    while let Some(err) = current {
        match harness_kind(err) {
            Some("Deserialization") | None => {}
            Some(_) => return Some(err.to_string()),
        }
        current = err.source();
    }
    None
}

// ---- the observation log ----

fn text(b: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(b).ok()?;
    if s.chars()
        .any(|c| (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r')
    {
        return None;
    }
    Some(s)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

struct Scenario {
    name: String,
    sc: Value,
    prefix: String,
    input: String,
    group: String,
    transactional: bool,
    batch: bool,
    failures: HashMap<String, Value>,
    log: Mutex<Vec<String>>,
    last_event: Mutex<Instant>,
    attempts: Mutex<HashMap<(i32, i64), u32>>,
    value_invocations: Mutex<HashMap<String, u32>>,
    recoverer_calls: AtomicU32,
    frozen: std::sync::atomic::AtomicBool,
}

type Event = serde_json::Map<String, Value>;

impl Scenario {
    fn new(run_id: &str, name: &str, sc: Value) -> Scenario {
        let prefix = format!("{run_id}-{name}-");
        let input = format!(
            "{prefix}{}",
            sc.get("input_topic")
                .and_then(Value::as_str)
                .unwrap_or("in")
        );
        let failures = sc
            .get("failures")
            .and_then(Value::as_array)
            .map(|fs| {
                fs.iter()
                    .map(|f| {
                        (
                            f["value"].as_str().unwrap_or_default().to_owned(),
                            f.clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Scenario {
            name: name.to_owned(),
            group: format!("{prefix}group"),
            transactional: sc["transactional"].as_bool().unwrap_or(false),
            batch: sc["listener"].as_str() == Some("batch"),
            failures,
            input,
            prefix,
            sc,
            log: Mutex::default(),
            last_event: Mutex::new(Instant::now()),
            attempts: Mutex::default(),
            value_invocations: Mutex::default(),
            recoverer_calls: AtomicU32::new(0),
            frozen: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn topic(&self, logical: &str) -> String {
        format!("{}{logical}", self.prefix)
    }

    fn norm(&self, s: &str) -> String {
        s.replace(&self.prefix, "")
    }

    fn event(&self, e: Event) {
        // At the safety cap the container's later events are not recorded: where the runner
        // notices the cap depends on timing, the cap itself does not.
        if self.frozen.load(Ordering::SeqCst) {
            return;
        }
        let line = serde_json::to_string(&Value::Object(e)).expect("json");
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line);
        *self.last_event.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    fn ev(&self, ty: &str) -> Event {
        let mut e = Event::new();
        e.insert("type".into(), json!(ty));
        e
    }

    fn ev_rec<R: ListenerRecord>(&self, ty: &str, r: &R) -> Event {
        let mut e = self.ev(ty);
        e.insert("topic".into(), json!(self.norm(r.topic())));
        e.insert("p".into(), json!(r.partition()));
        e.insert("o".into(), json!(r.offset()));
        e
    }

    fn put_bytes(&self, e: &mut Event, field: &str, b: Option<&[u8]>) {
        match b {
            None => {
                e.insert(field.into(), Value::Null);
            }
            Some(b) => match text(b) {
                Some(t) => {
                    e.insert(field.into(), json!(self.norm(t)));
                }
                None => {
                    e.insert(format!("{field}_hex"), json!(hex(b)));
                }
            },
        }
    }

    fn next_attempt(&self, r: &ListenerConsumerRecord) -> u32 {
        let mut a = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let n = a.entry((r.partition(), r.offset())).or_insert(0);
        *n += 1;
        *n
    }

    fn invoked(&self, r: &ListenerConsumerRecord, attempt: u32) {
        let mut e = self.ev_rec("invoke", r);
        e.insert("attempt".into(), json!(attempt));
        e.insert("value".into(), json!(r.value_str()));
        self.event(e);
        if let Some(v) = r.value_str() {
            *self
                .value_invocations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .entry(v.to_owned())
                .or_insert(0) += 1;
        }
        if self.stop_condition_reached() {
            self.frozen.store(true, Ordering::SeqCst);
        }
    }

    fn failure_for(&self, value: Option<&str>, attempt: u32) -> Option<&Value> {
        let f = self.failures.get(value?)?;
        match f.get("attempts").and_then(Value::as_array) {
            Some(at) => at
                .iter()
                .any(|n| n.as_u64() == Some(u64::from(attempt)))
                .then_some(f),
            None => Some(f),
        }
    }

    fn error(&self, f: &Value, value: &str, attempt: u32) -> HandlerError {
        let msg = f["message"]
            .as_str()
            .unwrap_or("failed {value}")
            .replace("{value}", value)
            .replace("{attempt}", &attempt.to_string());
        let cause = f.get("cause").filter(|c| c.is_object()).map(|c| {
            make_error(
                c["error"].as_str().unwrap_or("Transient"),
                c["message"]
                    .as_str()
                    .unwrap_or("cause")
                    .replace("{value}", value),
                None,
            )
        });
        make_error(f["error"].as_str().unwrap_or("Transient"), msg, cause)
    }

    fn manual(&self) -> bool {
        matches!(
            self.sc["ack_mode"].as_str(),
            Some("MANUAL") | Some("MANUAL_IMMEDIATE")
        )
    }

    /// The sleep of a `nack` of this delivery (scenario `nack`), if any.
    fn nack_for(&self, value: Option<&str>, attempt: u32) -> Option<Duration> {
        self.sc["nack"].as_array()?.iter().find_map(|n| {
            let at = n["attempts"].as_array();
            let matches = n["value"].as_str() == value
                && at.is_none_or(|at| at.iter().any(|a| a.as_u64() == Some(u64::from(attempt))));
            matches.then(|| Duration::from_millis(n["sleep_ms"].as_u64().unwrap_or(0)))
        })
    }

    fn skip_ack(&self, value: Option<&str>) -> bool {
        self.sc["manual_ack_skip"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v.as_str() == value))
    }

    fn stop_condition_reached(&self) -> bool {
        let st = &self.sc["stop"];
        if st["recoverer_calls"]
            .as_u64()
            .is_some_and(|n| u64::from(self.recoverer_calls.load(Ordering::SeqCst)) >= n)
        {
            return true;
        }
        if let Some(inv) = st.get("invocations") {
            let v = inv["value"].as_str().unwrap_or_default();
            let n = self
                .value_invocations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(v)
                .copied()
                .unwrap_or(0);
            return u64::from(n) >= inv["count"].as_u64().unwrap_or(u64::MAX);
        }
        false
    }

    fn partitions(&self, logical: &str) -> Vec<TopicPartition> {
        let n = self.sc["topics"][logical].as_i64().unwrap_or(0) as i32;
        (0..n)
            .map(|p| TopicPartition::new(self.topic(logical), p))
            .collect()
    }
}

fn back_off(b: &Value) -> Arc<dyn BackOff> {
    if b.is_null() {
        return Arc::new(FixedBackOff::default());
    }
    match b["kind"].as_str().unwrap_or("fixed") {
        "fixed" => {
            let interval = Duration::from_millis(b["interval_ms"].as_u64().unwrap_or(0));
            match b["max_retries"].as_u64() {
                Some(n) => Arc::new(FixedBackOff::new(interval, n as u32)),
                None => Arc::new(FixedBackOff::unlimited(interval)),
            }
        }
        "exponential" => {
            let e = match b["max_retries"].as_u64() {
                Some(n) => ExponentialBackOff::with_max_retries(n as u32),
                None => ExponentialBackOff::new(),
            };
            Arc::new(
                e.initial_interval(Duration::from_millis(
                    b["initial_ms"].as_u64().unwrap_or(2000),
                ))
                .multiplier(b["multiplier"].as_f64().unwrap_or(1.5))
                .max_interval(Duration::from_millis(b["max_ms"].as_u64().unwrap_or(30000))),
            )
        }
        other => panic!("back-off kind {other}"),
    }
}

/// A shared back-off as a `BackOff` value for `DefaultErrorHandler::back_off`.
#[derive(Debug)]
struct SharedBackOff(Arc<dyn BackOff>);

impl BackOff for SharedBackOff {
    fn start(&self) -> Box<dyn rekafka::listener::BackOffExecution> {
        self.0.start()
    }
}

// ---- retry listener and recoverer, logged ----

struct Listener(Arc<Scenario>);

fn coords(records: &[ListenerConsumerRecord]) -> Value {
    Value::Array(
        records
            .iter()
            .map(|r| json!([r.partition(), r.offset()]))
            .collect(),
    )
}

impl RetryListener<ListenerConsumerRecord> for Listener {
    fn failed_delivery(&self, r: &ListenerConsumerRecord, error: &SharedError, attempt: u32) {
        let s = &self.0;
        let mut e = s.ev_rec("failed", r);
        e.insert("attempt".into(), json!(attempt));
        e.insert("error".into(), json!(kind(&**error)));
        e.insert("message".into(), json!(harness_message(&**error)));
        s.event(e);
    }
    fn recovered(&self, r: &ListenerConsumerRecord, _error: &SharedError) {
        self.0.event(self.0.ev_rec("recovered", r));
    }
    fn recovery_failed(
        &self,
        r: &ListenerConsumerRecord,
        _original: &SharedError,
        failure: &SharedError,
    ) {
        let mut e = self.0.ev_rec("recovery_failed", r);
        e.insert("failure".into(), json!(kind(&**failure)));
        self.0.event(e);
    }
    fn failed_delivery_batch(
        &self,
        records: &[ListenerConsumerRecord],
        error: &SharedError,
        attempt: u32,
    ) {
        let mut e = self.0.ev("failed_batch");
        e.insert("records".into(), coords(records));
        e.insert("attempt".into(), json!(attempt));
        e.insert("error".into(), json!(kind(&**error)));
        self.0.event(e);
    }
    fn recovered_batch(&self, records: &[ListenerConsumerRecord], _error: &SharedError) {
        let mut e = self.0.ev("recovered_batch");
        e.insert("records".into(), coords(records));
        self.0.event(e);
    }
    fn recovery_failed_batch(
        &self,
        records: &[ListenerConsumerRecord],
        _original: &SharedError,
        failure: &SharedError,
    ) {
        let mut e = self.0.ev("recovery_failed_batch");
        e.insert("records".into(), coords(records));
        e.insert("failure".into(), json!(kind(&**failure)));
        self.0.event(e);
    }
}

/// Logs every recoverer call, fails the first `fail_first` calls, then delegates.
struct LoggedRecoverer {
    s: Arc<Scenario>,
    inner: Arc<dyn Recoverer<ListenerConsumerRecord>>,
    fail_first: u32,
}

impl LoggedRecoverer {
    fn call(&self, r: &ListenerConsumerRecord, error: &SharedError) -> Result<(), HandlerError> {
        let n = self.s.recoverer_calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut e = self.s.ev_rec("recoverer", r);
        e.insert("error".into(), json!(kind(&**error)));
        self.s.event(e);
        if self.s.stop_condition_reached() {
            self.s.frozen.store(true, Ordering::SeqCst);
        }
        if n <= self.fail_first {
            return Err(Box::new(RecovererDown {
                message: format!("recoverer down #{n}"),
                cause: None,
            }));
        }
        Ok(())
    }
}

impl Recoverer<ListenerConsumerRecord> for LoggedRecoverer {
    fn recover<'a>(
        &'a self,
        record: &'a ListenerConsumerRecord,
        error: &'a SharedError,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            self.call(record, error)?;
            self.inner.recover(record, error).await
        })
    }

    fn start_recovery<'a>(
        &'a self,
        record: &'a ListenerConsumerRecord,
        error: &'a SharedError,
    ) -> BoxFuture<'a, Result<Recovery, HandlerError>> {
        Box::pin(async move {
            self.call(record, error)?;
            self.inner.start_recovery(record, error).await
        })
    }
}

// ---- running one scenario ----

/// `"error_handler": "other-seek"`: the default handler, with a custom `handle_other` (Spring's
/// `handleOtherException` with the `Consumer`) that logs an `other` event per failed partition
/// and seeks a partition whose offset is out of range to offset 0 (the scenarios' topics are
/// new: their first record).
struct OtherSeek {
    s: Arc<Scenario>,
    inner: Arc<dyn CommonErrorHandler<ListenerConsumerRecord>>,
}

impl CommonErrorHandler<ListenerConsumerRecord> for OtherSeek {
    fn handle_one(&self, failure: &mut RecordFailure<'_, ListenerConsumerRecord>) -> Disposition {
        self.inner.handle_one(failure)
    }
    fn handle_remaining(
        &self,
        failure: &mut RecordFailure<'_, ListenerConsumerRecord>,
        remaining: &[ListenerConsumerRecord],
    ) -> Disposition {
        self.inner.handle_remaining(failure, remaining)
    }
    fn handle_batch(&self, failure: &mut BatchFailure<'_, ListenerConsumerRecord>) -> Disposition {
        self.inner.handle_batch(failure)
    }
    fn handle_other(&self, failure: &mut OtherFailure<'_>) -> Disposition {
        let mut e = self.s.ev("other");
        if let Some((topic, p)) = failure.partition {
            e.insert("topic".into(), json!(self.s.norm(topic)));
            e.insert("p".into(), json!(p));
        }
        let code = failure
            .error
            .kafka_code()
            .map(|c| format!("{c:?}"))
            .unwrap_or_else(|| format!("{:?}", failure.error.kind()));
        e.insert("error".into(), json!(code));
        self.s.event(e);
        if let (Some(rekafka::KafkaCode::OffsetOutOfRange), Some((topic, p))) =
            (failure.error.kafka_code(), failure.partition)
        {
            failure.seeks.seek(topic, *p, 0);
        }
        Disposition::Handled
    }
    fn ack_after_handle(&self) -> bool {
        self.inner.ack_after_handle()
    }
    fn seeks_after_handling(&self) -> bool {
        self.inner.seeks_after_handling()
    }
    fn commit_recovered(&self) -> bool {
        self.inner.commit_recovered()
    }
    fn recoverer(&self) -> Arc<dyn Recoverer<ListenerConsumerRecord>> {
        self.inner.recoverer()
    }
    fn retry_listeners(&self) -> Vec<Arc<dyn RetryListener<ListenerConsumerRecord>>> {
        self.inner.retry_listeners()
    }
    fn recovery_policy(&self) -> RecoveryPolicy {
        self.inner.recovery_policy()
    }
    fn delivery_attempt_header(&self) -> DeliveryAttemptHeader {
        self.inner.delivery_attempt_header()
    }
}

/// `"error_handler": "halt"`: a handler of one's own that halts the failed record's partition
/// (`Disposition::HaltPartition`) and logs a `halt` event; the Spring runner's counterpart
/// seeks the partition back to the record and pauses it (`pausePartition`).
struct Halt(Arc<Scenario>);

impl CommonErrorHandler<ListenerConsumerRecord> for Halt {
    fn handle_one(&self, failure: &mut RecordFailure<'_, ListenerConsumerRecord>) -> Disposition {
        let mut e = self.0.ev_rec("halt", failure.record);
        e.insert("error".into(), json!(kind(&**failure.error)));
        self.0.event(e);
        Disposition::HaltPartition
    }
    fn handle_batch(&self, _failure: &mut BatchFailure<'_, ListenerConsumerRecord>) -> Disposition {
        Disposition::StopContainer
    }
}

async fn create_topics(cluster: &Cluster, s: &Scenario) -> rekafka::Result<()> {
    let admin = Admin::new(cluster.clone());
    let topics: Vec<NewTopic> = s.sc["topics"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let mut t = NewTopic::new(s.topic(k), v.as_i64().unwrap_or(1) as i32);
                    t.replication_factor = Some(1);
                    t
                })
                .collect()
        })
        .unwrap_or_default();
    for r in admin.create_topics(&topics).await? {
        r?;
    }
    Ok(())
}

fn bytes_of(rec: &Value, field: &str) -> Option<Bytes> {
    if let Some(h) = rec[format!("{field}_hex")].as_str() {
        return Some(Bytes::from(unhex(h)));
    }
    rec[field].as_str().map(|s| Bytes::from(s.to_owned()))
}

async fn produce_input(cluster: &Cluster, s: &Scenario) -> rekafka::Result<()> {
    let producer = Producer::new(cluster.clone(), ProducerConfig::default()).await?;
    for (i, r) in s.sc["records"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let mut rec = Record::new(s.input.as_str())
            .with_partition(r["p"].as_i64().unwrap_or(0) as i32)
            .with_timestamp(BASE_TIMESTAMP + i as i64);
        rec.key = bytes_of(r, "key");
        rec.value = bytes_of(r, "value");
        if let Some(hs) = r["headers"].as_object() {
            for (k, v) in hs {
                rec = rec.with_header(k.clone(), Some(v.as_str().unwrap_or_default().to_owned()));
            }
        }
        let d = producer.send(rec).await.map_err(|e| e.error)?;
        d.await.map_err(|e| e.error)?;
    }
    producer.close().await;
    Ok(())
}

async fn dlt_publisher(
    cluster: &Cluster,
    s: &Arc<Scenario>,
    rc: &Value,
) -> rekafka::Result<DeadLetterPublisher<ListenerConsumerRecord>> {
    let mut b = DeadLetterPublisher::<ListenerConsumerRecord>::builder(cluster.clone())
        .group(s.group.clone());
    if rc["naming"].as_str() == Some(".DLT") {
        b = b.naming(DltNaming::Legacy);
    }
    if rc["missing_destination"].as_str() == Some("fail") {
        b = b.on_missing_destination(MissingDestination::Fail);
    }
    if let Some(routes) = rc.get("resolver").and_then(Value::as_object).cloned() {
        let s2 = s.clone();
        b = b.resolver(move |r: &ListenerConsumerRecord, e: &SharedError| {
            let k = kind(&**e);
            let k = k.split('(').next().unwrap_or_default();
            let route = routes.get(k).or_else(|| routes.get("*"))?;
            if route.is_null() {
                return None;
            }
            let partition = route["partition"]
                .as_i64()
                .map(|p| p as i32)
                .unwrap_or(r.partition());
            Some(Destination::new(
                s2.topic(route["topic"].as_str().unwrap_or_default()),
                partition,
            ))
        });
    }
    b.build().await
}

/// A share scenario (`"container": "share"`): rekafka's `ShareContainer` over a share consumer,
/// with the scenario's back-off and not-retryable errors and no recoverer, in a share group whose
/// `share.delivery.count.limit` is the scenario's. Logs `share_invoke` (the delivery count as
/// `attempt`) per handler call and `share_ack` per acknowledgement: `accept` when the handler
/// returned, `release` / `reject` from the container's events.
async fn run_share_scenario(bootstrap: &str, s: Arc<Scenario>) -> rekafka::Result<Vec<String>> {
    let cluster = Cluster::connect(ClusterConfig::new(bootstrap.split(','))).await?;
    create_topics(&cluster, &s).await?;
    let limit = s.sc["share_delivery_count_limit"].as_u64().unwrap_or(5);
    let limit_text = limit.to_string();
    Admin::new(cluster.clone())
        .alter_group_configs(
            &s.group,
            &[
                AlterConfigOp::set("share.auto.offset.reset", "earliest"),
                AlterConfigOp::set("share.delivery.count.limit", limit_text.as_str()),
            ],
        )
        .await?;
    produce_input(&cluster, &s).await?;
    let mut consumer = ShareConsumer::new(
        cluster.clone(),
        ShareConsumerConfig::new(&s.group)
            .with_acknowledgement_mode(AcknowledgementMode::Explicit)
            .with_fetch_max_wait(Duration::from_millis(100)),
    )?;
    consumer.subscribe([s.input.as_str()]);
    let mut classifier = Classifier::default();
    if let Some(nr) = s.sc["not_retryable"].as_array() {
        for n in nr {
            match n.as_str() {
                Some("Transient") => classifier.add_not_retryable::<Transient>(),
                Some("Fatal") => classifier.add_not_retryable::<Fatal>(),
                Some("Wrapper") => classifier.add_not_retryable::<Wrapper>(),
                Some("Slow") => classifier.add_not_retryable::<Slow>(),
                other => panic!("not_retryable {other:?}"),
            };
        }
    }
    let ack = |s: &Scenario, p: i32, o: i64, attempt: u16, ack: &str| {
        let mut e = s.ev("share_ack");
        e.insert("topic".into(), json!(s.norm(&s.input)));
        e.insert("p".into(), json!(p));
        e.insert("o".into(), json!(o));
        e.insert("attempt".into(), json!(attempt));
        e.insert("ack".into(), json!(ack));
        s.event(e);
    };
    let hs = s.clone();
    let container = ShareContainer::builder(consumer)
        .handler(move |r: ShareListenerRecord| {
            let s = hs.clone();
            async move {
                let dc = r.delivery_count();
                let mut e = s.ev_rec("share_invoke", &r);
                e.insert("attempt".into(), json!(dc));
                e.insert("value".into(), json!(r.value_str()));
                s.event(e);
                let value = r.value_str().unwrap_or_default().to_owned();
                if let Some(f) = s.failure_for(Some(&value), u32::from(dc)) {
                    return Err(s.error(f, &value, u32::from(dc)));
                }
                ack(&s, r.partition(), r.offset(), dc, "accept");
                Ok(())
            }
        })
        .back_off(SharedBackOff(back_off(&s.sc["backoff"])))
        .classifier(classifier)
        .delivery_count_limit(u16::try_from(limit).unwrap_or(u16::MAX))
        .start()?;
    let mut events = container.events();
    let es = s.clone();
    let event_task = tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ShareContainerEvent::Released {
                    partition,
                    offset,
                    delivery_count,
                    ..
                }) => ack(&es, partition.1, offset, delivery_count, "release"),
                Ok(ShareContainerEvent::Rejected {
                    partition,
                    offset,
                    delivery_count,
                    ..
                }) => ack(&es, partition.1, offset, delivery_count, "reject"),
                Ok(ShareContainerEvent::Recovered {
                    partition,
                    offset,
                    delivery_count,
                    ..
                }) => ack(&es, partition.1, offset, delivery_count, "accept"),
                Ok(ShareContainerEvent::Stopped(_))
                | Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            }
        }
    });
    let deadline =
        Instant::now() + Duration::from_millis(s.sc["timeout_ms"].as_u64().unwrap_or(60_000));
    let quiet = Duration::from_millis(s.sc["quiet_ms"].as_u64().unwrap_or(3000));
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if Instant::now() > deadline {
            s.event(s.ev("timeout"));
            break;
        }
        let idle_for = s
            .last_event
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        // Nothing happens before the member's first assignment: not quiet yet.
        if idle_for >= quiet && !s.log.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            break;
        }
    }
    container.stop().await?;
    let _ = event_task.await;
    cluster.close().await;
    let log = s.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(log)
}

async fn run_scenario(bootstrap: &str, s: Arc<Scenario>) -> rekafka::Result<Vec<String>> {
    if s.sc["container"].as_str() == Some("share") {
        return run_share_scenario(bootstrap, s).await;
    }
    if s.sc.get("retry_topics").is_some() {
        return run_retry_topics(bootstrap, s).await;
    }
    let cluster = Cluster::connect(ClusterConfig::new(bootstrap.split(','))).await?;
    create_topics(&cluster, &s).await?;
    produce_input(&cluster, &s).await?;

    // Offsets committed for the group before the container starts.
    if let Some(initial) = s.sc["initial_offsets"].as_object() {
        let offsets: Vec<(rekafka::admin::TopicPartition, i64)> = initial
            .iter()
            .map(|(p, o)| {
                (
                    rekafka::admin::TopicPartition::new(&s.input, p.parse().unwrap_or(0)),
                    o.as_i64().unwrap_or(0),
                )
            })
            .collect();
        for (_, r) in Admin::new(cluster.clone())
            .alter_consumer_group_offsets(&s.group, &offsets)
            .await?
        {
            r?;
        }
    }
    let reset = match s.sc["auto_offset_reset"].as_str().unwrap_or("earliest") {
        "earliest" => OffsetReset::Earliest,
        "latest" => OffsetReset::Latest,
        "none" => OffsetReset::None,
        other => panic!("auto_offset_reset {other}"),
    };
    let mut cc = ConsumerConfig::new()
        .with_group_id(s.group.clone())
        .with_auto_commit(AutoCommit::Disabled)
        .with_auto_offset_reset(reset)
        .with_fetch_max_wait(Duration::from_millis(100))
        .with_max_poll_records(s.sc["max_poll_records"].as_u64().unwrap_or(500) as usize);
    if s.transactional {
        cc = cc.with_isolation_level(IsolationLevel::ReadCommitted);
    }
    let consumer = Consumer::new(cluster.clone(), cc)?;
    consumer.subscribe([s.input.as_str()])?;

    let txn = if s.transactional {
        let p = TransactionalProducer::new(
            cluster.clone(),
            ProducerConfig::default().with_transactional_id(format!("{}tx", s.prefix)),
        )?;
        p.init_transactions().await?;
        Some(Arc::new(p))
    } else {
        None
    };
    let output = match (&txn, s.sc["output_topic"].as_str()) {
        (None, Some(_)) => Some(Producer::new(cluster.clone(), ProducerConfig::default()).await?),
        _ => None,
    };

    // The recoverer.
    let rc = s.sc["recoverer"].clone();
    let rkind = rc["kind"].as_str().unwrap_or("log");
    let inner: Arc<dyn Recoverer<ListenerConsumerRecord>> = match (rkind, &txn) {
        ("log", _) => Arc::new(LoggingRecoverer),
        ("dlt" | "failing", Some(p)) => Arc::new(TransactionalDeadLetters::new(
            dlt_publisher(&cluster, &s, &rc).await?,
            p.clone(),
        )),
        ("dlt" | "failing", None) => Arc::new(dlt_publisher(&cluster, &s, &rc).await?),
        ("republish", _) => Arc::new(RepublishToTail::new(
            dlt_publisher(&cluster, &s, &rc).await?,
            rc["max"].as_u64().unwrap_or(1) as u32,
        )),
        (other, _) => panic!("recoverer kind {other}"),
    };
    let fail_first = if rkind == "failing" {
        rc["fail_first"].as_u64().unwrap_or(u64::from(u32::MAX)) as u32
    } else {
        0
    };
    let recoverer: Arc<dyn Recoverer<ListenerConsumerRecord>> = Arc::new(LoggedRecoverer {
        s: s.clone(),
        inner,
        fail_first,
    });

    let mut eh = DefaultErrorHandler::new()
        .back_off(SharedBackOff(back_off(&s.sc["backoff"])))
        .recoverer_arc(recoverer.clone())
        .retry_listener(Listener(s.clone()));
    if let Some(nr) = s.sc["not_retryable"].as_array() {
        for n in nr {
            match n.as_str() {
                Some("Transient") => eh.classifier_mut().add_not_retryable::<Transient>(),
                Some("Fatal") => eh.classifier_mut().add_not_retryable::<Fatal>(),
                Some("Wrapper") => eh.classifier_mut().add_not_retryable::<Wrapper>(),
                Some("Slow") => eh.classifier_mut().add_not_retryable::<Slow>(),
                other => panic!("not_retryable {other:?}"),
            };
        }
    }
    if let Some(seek) = s.sc["seek_after_error"].as_bool() {
        eh = eh.seek_after_error(seek);
    }
    if let Some(ack) = s.sc["ack_after_handle"].as_bool() {
        eh = eh.ack_after_handle(ack);
    }
    if let Some(commit) = s.sc["commit_recovered"].as_bool() {
        eh = eh.commit_recovered(commit);
    }
    if let Some(per) = s.sc["backoff_per_error"].as_object() {
        let map: HashMap<String, Arc<dyn BackOff>> =
            per.iter().map(|(k, v)| (k.clone(), back_off(v))).collect();
        eh = eh.back_off_fn(move |_r, e| {
            let k = kind(&**e);
            map.get(k.split('(').next().unwrap_or_default()).cloned()
        });
    }

    // Spring's `CommonDelegatingErrorHandler` (cause chain traversed): per error type, a
    // `DefaultErrorHandler` of its own back-off with the same recoverer and retry listener.
    let error_handler: Arc<dyn CommonErrorHandler<ListenerConsumerRecord>> =
        match s.sc["delegates"].as_object() {
            _ if s.sc["error_handler"] == "logging" => Arc::new(LoggingErrorHandler::new()),
            _ if s.sc["error_handler"] == "stopping" => Arc::new(ContainerStoppingErrorHandler),
            _ if s.sc["error_handler"] == "halt" => Arc::new(Halt(s.clone())),
            _ if s.sc["error_handler"] == "other-seek" => Arc::new(OtherSeek {
                s: s.clone(),
                inner: Arc::new(eh),
            }),
            None => Arc::new(eh),
            Some(delegates) => {
                let mut d = DelegatingErrorHandler::new(eh);
                for (error, spec) in delegates {
                    let delegate = DefaultErrorHandler::new()
                        .back_off(SharedBackOff(back_off(&spec["backoff"])))
                        .recoverer_arc(recoverer.clone())
                        .retry_listener(Listener(s.clone()));
                    d = match error.as_str() {
                        "Transient" => d.delegate::<Transient>(delegate),
                        "Fatal" => d.delegate::<Fatal>(delegate),
                        "Wrapper" => d.delegate::<Wrapper>(delegate),
                        "Slow" => d.delegate::<Slow>(delegate),
                        other => panic!("delegate for {other}"),
                    };
                }
                Arc::new(d)
            }
        };

    let ack_mode = match s.sc["ack_mode"].as_str().unwrap_or("BATCH") {
        "RECORD" => AckMode::Record,
        "BATCH" => AckMode::Batch,
        "COUNT" => AckMode::Count(s.sc["ack_count"].as_u64().unwrap_or(1) as u32),
        "TIME" => AckMode::Time(Duration::from_millis(
            s.sc["ack_time_ms"].as_u64().unwrap_or(5000),
        )),
        "MANUAL" => AckMode::Manual,
        "MANUAL_IMMEDIATE" => AckMode::ManualImmediate,
        other => panic!("ack mode {other}"),
    };

    let out_topic = s.sc["output_topic"].as_str().map(|t| s.topic(t));
    let mut builder = ListenerContainer::builder(consumer)
        .error_handler(error_handler)
        .deserialization_check(deserialization_check(
            StringDeserializer,
            StringDeserializer,
        ))
        .ack_mode(ack_mode)
        .poll_timeout(Duration::from_millis(200));
    let sender: Arc<dyn Fn(Record) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync> =
        match (&txn, output) {
            (Some(p), _) => {
                let p = p.clone();
                Arc::new(move |r| {
                    let p = p.clone();
                    Box::pin(async move {
                        // The transaction's commit waits for it.
                        let delivery = p
                            .send(r)
                            .await
                            .map_err(|e| Box::new(e.error) as HandlerError)?;
                        drop(delivery);
                        Ok(())
                    })
                })
            }
            (None, Some(p)) => {
                let p = Arc::new(p);
                Arc::new(move |r| {
                    let p = p.clone();
                    Box::pin(async move {
                        let d = p
                            .send(r)
                            .await
                            .map_err(|e| Box::new(e.error) as HandlerError)?;
                        d.await.map_err(|e| Box::new(e.error) as HandlerError)?;
                        Ok(())
                    })
                })
            }
            (None, None) => Arc::new(|_r| Box::pin(async { Ok(()) })),
        };
    let out_record = move |r: &ListenerConsumerRecord| -> Option<Record> {
        let t = out_topic.as_ref()?;
        let mut rec = Record::new(t.as_str())
            .with_partition(r.partition())
            .with_value(format!("out:{}", r.value_str().unwrap_or_default()));
        rec.key = r.key_bytes().cloned();
        Some(rec)
    };
    if s.batch {
        let (s2, send, out) = (s.clone(), sender.clone(), out_record.clone());
        builder = builder.batch_handler_with_ack(
            move |records: Vec<ListenerConsumerRecord>, ack: Acknowledgment| {
                let (s, send, out) = (s2.clone(), send.clone(), out.clone());
                async move {
                    let mut b = s.ev("batch");
                    b.insert("size".into(), json!(records.len()));
                    s.event(b);
                    let attempts: Vec<u32> = records
                        .iter()
                        .map(|r| {
                            let a = s.next_attempt(r);
                            s.invoked(r, a);
                            a
                        })
                        .collect();
                    for (i, r) in records.iter().enumerate() {
                        if let Some(f) = s.failure_for(r.value_str(), attempts[i]) {
                            let cause = s.error(f, r.value_str().unwrap_or_default(), attempts[i]);
                            return Err(match f["batch"].as_str().unwrap_or("index") {
                                "index" => Box::new(BatchListenerFailed::at_index(i, cause))
                                    as HandlerError,
                                "record" => Box::new(BatchListenerFailed::at_record(r, cause)),
                                "nested" => Box::new(Wrapper {
                                    message: "batch wrapper".into(),
                                    cause: Some(Box::new(BatchListenerFailed::at_record(r, cause))),
                                }),
                                _ => cause,
                            });
                        }
                        if let Some(o) = out(r) {
                            send(o).await?;
                        }
                    }
                    if s.manual() {
                        ack.acknowledge();
                    }
                    Ok(())
                }
            },
        );
        if let Some(leh) = s.sc["batch_listener_error_handler"].as_str() {
            let (s2, leh) = (s.clone(), leh.to_owned());
            builder = builder.batch_listener_error_handler(move |records, e, _seeks| {
                let mut ev = s2.ev("listener_error_handler_batch");
                ev.insert("records".into(), coords(records));
                ev.insert("error".into(), json!(kind(&*e)));
                s2.event(ev);
                let named = records
                    .iter()
                    .position(|r| r.value_str().is_some_and(|v| s2.failures.contains_key(v)));
                match (leh.as_str(), named) {
                    ("swallow", _) => Ok(()),
                    ("name", Some(i)) => Err(Box::new(BatchListenerFailed::at_index(i, e))),
                    _ => Err(e),
                }
            });
        }
    } else {
        let (s2, send, out) = (s.clone(), sender.clone(), out_record.clone());
        builder = builder.record_handler_with_ack(
            move |r: ListenerConsumerRecord, ack: Acknowledgment| {
                let (s, send, out) = (s2.clone(), send.clone(), out.clone());
                async move {
                    let attempt = s.next_attempt(&r);
                    s.invoked(&r, attempt);
                    if let Some(f) = s.failure_for(r.value_str(), attempt) {
                        return Err(s.error(f, r.value_str().unwrap_or_default(), attempt));
                    }
                    if let Some(sleep) = s.nack_for(r.value_str(), attempt).filter(|_| s.manual()) {
                        ack.nack(sleep);
                        return Ok(());
                    }
                    if let Some(o) = out(&r) {
                        send(o).await?;
                    }
                    if s.manual() && !s.skip_ack(r.value_str()) {
                        ack.acknowledge();
                    }
                    Ok(())
                }
            },
        );
        if s.sc["listener_error_handler"] == "value" {
            // The async listener-level handler: it sees the delivery attempt and, from
            // `leh_handle_from_attempt` on, returns a value (the listener's result).
            let (s2, s3) = (s.clone(), s.clone());
            let from = s.sc["leh_handle_from_attempt"].as_u64().unwrap_or(1);
            builder = builder.async_listener_error_handler(
                move |failure: ListenerFailure<ListenerConsumerRecord>| {
                    let mut ev = s2.ev_rec("listener_error_handler", &failure.record);
                    ev.insert("error".into(), json!(kind(&*failure.error)));
                    ev.insert("attempt".into(), json!(failure.attempt));
                    s2.event(ev);
                    let handled = u64::from(failure.attempt) >= from;
                    let value =
                        format!("FAILED:{}", failure.record.value_str().unwrap_or_default());
                    async move {
                        if handled {
                            Ok(value)
                        } else {
                            Err(failure.error)
                        }
                    }
                },
                move |r: &ListenerConsumerRecord, value: String| {
                    let mut ev = s3.ev_rec("listener_result", r);
                    ev.insert("value".into(), json!(value));
                    s3.event(ev);
                },
            );
        } else if let Some(leh) = s.sc["listener_error_handler"].as_str() {
            let (s2, leh) = (s.clone(), leh.to_owned());
            builder = builder.consumer_aware_listener_error_handler(move |r, e, seeks| {
                let mut ev = s2.ev_rec("listener_error_handler", r);
                ev.insert("error".into(), json!(kind(&*e)));
                s2.event(ev);
                match leh.as_str() {
                    "seek" => {
                        seeks.seek(r.topic(), r.partition(), r.offset());
                        Ok(())
                    }
                    "swallow" => Ok(()),
                    _ => Err(e),
                }
            });
        }
    }
    if let Some(p) = &txn {
        builder = builder.transactional(p.clone());
    }
    let container = builder.start()?;

    // Wait for the end of the scenario.
    let admin = Admin::new(cluster.clone());
    let probe = Consumer::new(cluster.clone(), ConsumerConfig::new())?;
    let in_tps = s.partitions(s.sc["input_topic"].as_str().unwrap_or("in"));
    let admin_tps: Vec<rekafka::admin::TopicPartition> = in_tps
        .iter()
        .map(|tp| rekafka::admin::TopicPartition::new(&tp.topic, tp.partition))
        .collect();
    let deadline =
        Instant::now() + Duration::from_millis(s.sc["timeout_ms"].as_u64().unwrap_or(60_000));
    let expect_end = s.sc["expect_committed_end"].as_bool().unwrap_or(true);
    let quiet = Duration::from_millis(s.sc["quiet_ms"].as_u64().unwrap_or(1000));
    let quiet_no_end = Duration::from_millis(s.sc["quiet_ms"].as_u64().unwrap_or(3000));
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // A safety cap (a record retried forever): stop there.
        if s.stop_condition_reached() {
            break;
        }
        if Instant::now() > deadline {
            s.event(s.ev("timeout"));
            break;
        }
        let idle_for = s
            .last_event
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        // Nothing happens before the group's first assignment: not quiet yet.
        if idle_for < quiet || s.log.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            continue;
        }
        if !expect_end {
            if idle_for >= quiet_no_end {
                break;
            }
            continue;
        }
        // A broker being away: look again.
        let Ok(committed) = admin.list_group_offsets(&s.group, Some(&admin_tps)).await else {
            continue;
        };
        let mut done = true;
        for ((_, c), tp) in committed.into_iter().zip(&in_tps) {
            let Ok((_, end)) = probe.fetch_watermarks(tp).await else {
                done = false;
                continue;
            };
            let c = c.ok().flatten().map(|c| c.offset).unwrap_or(0);
            if c != end {
                done = false;
            }
        }
        if done {
            break;
        }
    }
    container.stop().await;
    s.frozen.store(false, Ordering::SeqCst);
    for (tp, c) in admin.list_group_offsets(&s.group, Some(&admin_tps)).await? {
        let mut e = s.ev("committed");
        e.insert("topic".into(), json!(s.norm(&tp.topic)));
        e.insert("p".into(), json!(tp.partition));
        match c.ok().flatten() {
            Some(c) => {
                e.insert("offset".into(), json!(c.offset));
                e.insert("metadata".into(), json!(c.metadata.unwrap_or_default()));
            }
            None => {
                e.insert("offset".into(), Value::Null);
                e.insert("metadata".into(), json!(""));
            }
        }
        s.event(e);
    }
    probe.close().await.ok();
    if let Some(dlts) = s.sc["dlt_topics"].as_array() {
        for t in dlts {
            read_topic(
                &cluster,
                &s,
                t.as_str().unwrap_or_default(),
                "dead_letter",
                s.transactional,
            )
            .await?;
        }
    }
    if let Some(t) = s.sc["output_topic"].as_str() {
        read_topic(&cluster, &s, t, "output", true).await?;
    }
    if let Some(p) = txn {
        p.close().await;
    }
    cluster.close().await;
    let log = s.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(log)
}

async fn read_topic(
    cluster: &Cluster,
    s: &Scenario,
    logical: &str,
    ty: &str,
    read_committed: bool,
) -> rekafka::Result<()> {
    read_partitions(cluster, s, s.partitions(logical), ty, read_committed).await
}

/// Reads `tps` from the beginning to their ends into `ty` events (`read_topic`).
async fn read_partitions(
    cluster: &Cluster,
    s: &Scenario,
    tps: Vec<TopicPartition>,
    ty: &str,
    read_committed: bool,
) -> rekafka::Result<()> {
    let consumer = Consumer::new(
        cluster.clone(),
        ConsumerConfig::new()
            .with_auto_commit(AutoCommit::Disabled)
            .with_fetch_max_wait(Duration::from_millis(50))
            .with_isolation_level(if read_committed {
                IsolationLevel::ReadCommitted
            } else {
                IsolationLevel::ReadUncommitted
            }),
    )?;
    let mut end = HashMap::new();
    for tp in &tps {
        end.insert(tp.clone(), consumer.fetch_watermarks(tp).await?.1);
    }
    consumer.assign(tps.iter().map(|tp| (tp.clone(), StartOffset::Beginning)))?;
    let mut all = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let mut at_end = true;
        for tp in &tps {
            if consumer.position(tp).await? < end[tp] {
                at_end = false;
            }
        }
        if at_end {
            break;
        }
        for r in consumer.poll(Duration::from_millis(200)).await?.iter() {
            all.push(r.clone());
        }
    }
    consumer.close().await.ok();
    all.sort_by_key(|r| (r.partition, r.offset));
    for r in all {
        let mut e = s.ev(ty);
        e.insert("topic".into(), json!(s.norm(&r.topic)));
        e.insert("p".into(), json!(r.partition));
        s.put_bytes(&mut e, "key", r.key.as_deref());
        s.put_bytes(&mut e, "value", r.value.as_deref());
        let headers: Vec<Value> = r
            .headers
            .iter()
            .map(|h| {
                let mut o = Event::new();
                o.insert("name".into(), json!(h.key()));
                s.put_bytes(&mut o, "value", h.value());
                Value::Object(o)
            })
            .collect();
        e.insert("headers".into(), Value::Array(headers));
        s.event(e);
    }
    Ok(())
}

// ---- retry topics ----

fn millis(v: &Value, default: u64) -> Duration {
    Duration::from_millis(v.as_u64().unwrap_or(default))
}

/// The group consuming a topic of a retry-topics scenario: `G` for the input, `G` plus the
/// topic's suffix for a retry topic or DLT (as Spring names them).
fn group_of(s: &Scenario, topic: &str) -> String {
    match topic.strip_prefix(s.input.as_str()) {
        Some(suffix) => format!("{}{suffix}", s.group),
        None => s.group.clone(),
    }
}

/// The scenario's topics (the input, and every topic named after it), sorted by name, with
/// their partition counts.
async fn scenario_topics(admin: &Admin, s: &Scenario) -> rekafka::Result<Vec<(String, usize)>> {
    Ok(admin
        .list_topics(rekafka::admin::Internal::Exclude)
        .await?
        .into_iter()
        .filter(|t| t.name.starts_with(s.input.as_str()))
        .map(|t| (t.name, t.partitions))
        .collect())
}

fn topic_partitions(topic: &str, n: usize) -> Vec<rekafka::admin::TopicPartition> {
    (0..n)
        .map(|p| rekafka::admin::TopicPartition::new(topic, p as i32))
        .collect()
}

/// Whether every topic's group has committed every partition to its end.
async fn all_committed(
    admin: &Admin,
    probe: &Consumer,
    s: &Scenario,
    topics: &[(String, usize)],
) -> rekafka::Result<bool> {
    for (t, n) in topics {
        let tps = topic_partitions(t, *n);
        for (tp, c) in admin
            .list_group_offsets(&group_of(s, t), Some(&tps))
            .await?
        {
            let (_, end) = probe
                .fetch_watermarks(&TopicPartition::new(tp.topic.clone(), tp.partition))
                .await?;
            if c?.map_or(0, |c| c.offset) != end {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// A `retry_topics` scenario through rekafka's `RetryTopicConfiguration` (the Spring runner
/// runs it through Spring's `@RetryableTopic` machinery): the handler logs each invocation
/// with the attempt from `retry_topic-attempts` and fails as the scenario says; the DLT
/// handler logs each dead letter. The run ends when every topic's group has committed every
/// partition to its end; then the topics, every group's commits and the dead letters of every
/// DLT are logged.
async fn run_retry_topics(bootstrap: &str, s: Arc<Scenario>) -> rekafka::Result<Vec<String>> {
    let cluster = Cluster::connect(ClusterConfig::new(bootstrap.split(','))).await?;
    create_topics(&cluster, &s).await?;
    produce_input(&cluster, &s).await?;
    let rt = &s.sc["retry_topics"];
    let bo = &rt["backoff"];
    let back_off = match bo["kind"].as_str().unwrap_or("fixed") {
        "fixed" => RetryBackOff::Fixed(millis(&bo["interval_ms"], 1000)),
        "exponential" => RetryBackOff::Exponential {
            initial: millis(&bo["initial_ms"], 1000),
            multiplier: bo["multiplier"].as_f64().unwrap_or(2.0),
            max: millis(&bo["max_ms"], 30_000),
        },
        other => panic!("retry_topics back-off {other}"),
    };
    let mut b = RetryTopicConfiguration::builder()
        .max_attempts(rt["max_attempts"].as_u64().unwrap_or(3) as u32)
        .back_off(back_off)
        .topic_creation(TopicCreation::Auto {
            partitions: Some(rt["partitions"].as_i64().unwrap_or(1) as i32),
            replication_factor: Some(rt["replication_factor"].as_i64().unwrap_or(1) as i16),
        })
        .poll_timeout(Duration::from_millis(200));
    for n in rt["not_retry_on"].as_array().cloned().unwrap_or_default() {
        b = match n.as_str() {
            Some("Transient") => b.not_retry_on::<Transient>(),
            Some("Fatal") => b.not_retry_on::<Fatal>(),
            Some("Wrapper") => b.not_retry_on::<Wrapper>(),
            Some("Slow") => b.not_retry_on::<Slow>(),
            other => panic!("not_retry_on {other:?}"),
        };
    }
    let (s2, s3) = (s.clone(), s.clone());
    let handle = b
        .build()
        .start_with_dlt_handler(
            cluster.clone(),
            ConsumerConfig::new()
                .with_group_id(s.group.clone())
                .with_auto_offset_reset(OffsetReset::Earliest)
                .with_fetch_max_wait(Duration::from_millis(100)),
            &s.input,
            move |r: ListenerConsumerRecord| {
                let s = s2.clone();
                async move {
                    let attempt = retry_headers::attempts(&r.headers());
                    s.invoked(&r, attempt);
                    match s.failure_for(r.value_str(), attempt) {
                        Some(f) => Err(s.error(f, r.value_str().unwrap_or_default(), attempt)),
                        None => Ok(()),
                    }
                }
            },
            move |r: ListenerConsumerRecord| {
                let s = s3.clone();
                async move {
                    s.invoked(&r, retry_headers::attempts(&r.headers()));
                    Ok(())
                }
            },
        )
        .await?;

    let admin = Admin::new(cluster.clone());
    let probe = Consumer::new(cluster.clone(), ConsumerConfig::new())?;
    let deadline =
        Instant::now() + Duration::from_millis(s.sc["timeout_ms"].as_u64().unwrap_or(60_000));
    let quiet = Duration::from_millis(s.sc["quiet_ms"].as_u64().unwrap_or(1000));
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if Instant::now() > deadline {
            s.event(s.ev("timeout"));
            break;
        }
        let idle_for = s
            .last_event
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed();
        if idle_for < quiet || s.log.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            continue;
        }
        // A broker being away: look again.
        let Ok(topics) = scenario_topics(&admin, &s).await else {
            continue;
        };
        if all_committed(&admin, &probe, &s, &topics)
            .await
            .unwrap_or(false)
        {
            break;
        }
    }
    // Stops every container (each commits what it handled).
    handle.stop().await;
    probe.close().await.ok();
    let topics = scenario_topics(&admin, &s).await?;
    for (t, n) in &topics {
        let mut e = s.ev("topic");
        e.insert("topic".into(), json!(s.norm(t)));
        e.insert("partitions".into(), json!(n));
        s.event(e);
    }
    for (t, n) in &topics {
        let tps = topic_partitions(t, *n);
        for (tp, c) in admin
            .list_group_offsets(&group_of(&s, t), Some(&tps))
            .await?
        {
            let mut e = s.ev("committed");
            e.insert("topic".into(), json!(s.norm(&tp.topic)));
            e.insert("p".into(), json!(tp.partition));
            match c? {
                Some(c) => {
                    e.insert("offset".into(), json!(c.offset));
                    e.insert("metadata".into(), json!(c.metadata.unwrap_or_default()));
                }
                None => {
                    e.insert("offset".into(), Value::Null);
                    e.insert("metadata".into(), json!(""));
                }
            }
            s.event(e);
        }
    }
    for (t, n) in &topics {
        if t.ends_with("-dlt") {
            let tps = (0..*n)
                .map(|p| TopicPartition::new(t.clone(), p as i32))
                .collect();
            read_partitions(&cluster, &s, tps, "dead_letter", false).await?;
        }
    }
    cluster.close().await;
    let log = s.log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(log)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts: HashMap<String, String> = HashMap::new();
    for pair in args.chunks(2) {
        if let [k, v] = pair {
            opts.insert(k.clone(), v.clone());
        }
    }
    let bootstrap = opts
        .get("--bootstrap")
        .cloned()
        .or_else(|| std::env::var("REKAFKA_BOOTSTRAP").ok())
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| {
            eprintln!("no --bootstrap and REKAFKA_BOOTSTRAP is not set");
            std::process::exit(2)
        });
    let scenarios = PathBuf::from(opts.get("--scenarios").map_or(".", String::as_str));
    let out = PathBuf::from(opts.get("--out").map_or("out", String::as_str));
    std::fs::create_dir_all(&out).expect("out dir");
    let only: Option<Vec<String>> = opts
        .get("--only")
        .map(|o| o.split(',').map(str::to_owned).collect());
    let parallel: usize = opts
        .get("--parallel")
        .and_then(|p| p.parse().ok())
        .unwrap_or(4);
    let run_id = opts.get("--run-id").cloned().unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        format!("rk{t:x}")
    });
    let mut files: Vec<PathBuf> = std::fs::read_dir(&scenarios)
        .unwrap_or_else(|e| {
            eprintln!("no scenario directory {}: {e}", scenarios.display());
            std::process::exit(2)
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter(|p| {
            only.as_ref().is_none_or(|o| {
                o.iter()
                    .any(|n| p.file_stem().is_some_and(|s| s == n.as_str()))
            })
        })
        .collect();
    files.sort();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let failed = rt.block_on(async move {
        let permits = Arc::new(tokio::sync::Semaphore::new(parallel.max(1)));
        let mut tasks = Vec::new();
        for f in files {
            let (permits, bootstrap, out, run_id) = (
                permits.clone(),
                bootstrap.clone(),
                out.clone(),
                run_id.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let _permit = permits.acquire_owned().await.expect("semaphore");
                run_file(&bootstrap, &run_id, &f, &out).await
            }));
        }
        let mut failed = 0;
        for t in tasks {
            if !t.await.unwrap_or(false) {
                failed += 1;
            }
        }
        failed
    });
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

async fn run_file(bootstrap: &str, run_id: &str, f: &Path, out: &Path) -> bool {
    let name = f
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();
    let started = Instant::now();
    let sc: Value = match std::fs::read_to_string(f)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(v) => v,
        Err(e) => {
            eprintln!("[rekafka] {name}: bad scenario: {e}");
            return false;
        }
    };
    let s = Arc::new(Scenario::new(run_id, &name, sc));
    let result = run_scenario(bootstrap, s.clone()).await;
    let path = out.join(format!("{}.jsonl", s.name));
    match result {
        Ok(log) => {
            let mut text = log.join("\n");
            text.push('\n');
            std::fs::write(&path, text).expect("write log");
            eprintln!(
                "[rekafka] {name}: {} events in {} ms",
                log.len(),
                started.elapsed().as_millis()
            );
            true
        }
        Err(e) => {
            eprintln!("[rekafka] {name} failed: {e}");
            let line = json!({"type": "runner_error", "error": e.to_string()}).to_string();
            std::fs::write(&path, line + "\n").expect("write log");
            false
        }
    }
}

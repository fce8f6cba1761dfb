//! Issue 23's "done when" scenario through the share listener container, on the three-node
//! Apache Kafka cluster: three rekafka `ShareContainer`s and one Java `KafkaShareConsumer`
//! (`protocol-tests/java-interop`, ShareMember.java with `--dead-letter-topic`; build it with
//! `protocol-tests/java-interop/build.sh`) share one group over 20,000 records, 2 % failing
//! twice and 0.5 % failing always:
//!
//! * every record is accepted exactly once (one terminal outcome per record, every
//!   acknowledgement taken by the broker, nothing left for a fresh member);
//! * each twice-failing record is accepted on delivery 3;
//! * each always-failing record is in the dead-letter topic exactly once, with its delivery
//!   count (the group's `share.delivery.count.limit`), whichever client dead-lettered it, and
//!   the Java member's dead letters carry the same headers, in the same order, as rekafka's;
//! * the delivery counts seen by rekafka and by Java agree: every record's deliveries, across
//!   both clients, are 1, 2, … with none twice and none skipped.
//!
//! One partition, which every member shares (more members than partitions), so a released
//! record goes to either client.
//!
//! Named `*_kafka.rs`: the embedded mock cluster does not serve share groups.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, create_topic_with_leaders, unique};
use rekafka::Client;
use rekafka::admin::{Admin, AlterConfigOp};
use rekafka::cluster::Cluster;
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, ConsumerRecord, StartOffset};
use rekafka::listener::{
    BoxFuture, DELIVERY_ATTEMPT_HEADER, DeadLetterInfo, DeadLetterPublisher, FixedBackOff,
    HandlerError, PublishWait, Recoverer, ShareContainer, ShareContainerEvent, ShareListenerRecord,
    SharedError,
};
use rekafka::producer::{ProducerConfig, Record};
use rekafka::share::{AcknowledgeType, AcknowledgementMode, ShareConsumerConfig};

const N: usize = 20_000;
/// The group's `share.delivery.count.limit`: an always-failing record is dead-lettered on this
/// delivery.
const LIMIT: u16 = 4;
/// 2 %: fail on deliveries 1 and 2, accepted on delivery 3.
const TWICE: (usize, usize) = (50, 7);
/// 0.5 %: fail on every delivery, dead-lettered on delivery `LIMIT`.
const ALWAYS: (usize, usize) = (200, 13);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Ok,
    Twice,
    Always,
}

fn kind(i: usize) -> Kind {
    if i % TWICE.0 == TWICE.1 {
        Kind::Twice
    } else if i % ALWAYS.0 == ALWAYS.1 {
        Kind::Always
    } else {
        Kind::Ok
    }
}

#[derive(Debug, thiserror::Error)]
#[error("transient failure of {0}")]
struct Transient(usize);

/// What a member did with one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Handled: accepted.
    Accepted,
    /// Failed: released for redelivery.
    Released,
    /// Failed on the last attempt: dead-lettered, then accepted.
    DeadLettered,
}

/// One delivery: (record index, delivery count, member).
type Delivery = (usize, u16, String);

/// What a member did with one delivery: (record index, delivery count, outcome, member).
type Settled = (usize, u16, Outcome, String);

fn index_of(value: Option<&[u8]>) -> usize {
    let v = std::str::from_utf8(value.expect("value")).expect("utf-8");
    v.strip_prefix("v-").expect("v-").parse().expect("index")
}

/// The dead-letter publisher, logging each dead letter once its send was acknowledged.
struct LoggingDlt {
    inner: DeadLetterPublisher<ShareListenerRecord>,
    /// (record index, delivery count, member).
    log: Arc<Mutex<Vec<Delivery>>>,
    member: String,
}

impl Recoverer<ShareListenerRecord> for LoggingDlt {
    fn recover<'a>(
        &'a self,
        record: &'a ShareListenerRecord,
        error: &'a SharedError,
    ) -> BoxFuture<'a, Result<(), HandlerError>> {
        Box::pin(async move {
            self.inner.recover(record, error).await?;
            let i = index_of(record.record().value.as_deref());
            self.log
                .lock()
                .unwrap()
                .push((i, record.delivery_count(), self.member.clone()));
            Ok(())
        })
    }
}

/// Reads `topic` (one partition) from the beginning until `expected` records came, then a
/// little longer to catch duplicates.
async fn read_topic(cluster: &Cluster, topic: &str, expected: usize) -> Vec<ConsumerRecord> {
    let consumer = Consumer::new(
        cluster.clone(),
        ConsumerConfig::new()
            .with_auto_commit(AutoCommit::Disabled)
            .with_fetch_max_wait(Duration::from_millis(50)),
    )
    .expect("consumer");
    consumer
        .assign([(
            rekafka::consumer::TopicPartition::new(topic, 0),
            StartOffset::Beginning,
        )])
        .expect("assign");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < expected && Instant::now() < deadline {
        out.extend(
            consumer
                .poll(Duration::from_millis(200))
                .await
                .expect("poll"),
        );
    }
    let linger = Instant::now() + Duration::from_millis(500);
    while Instant::now() < linger {
        out.extend(
            consumer
                .poll(Duration::from_millis(100))
                .await
                .expect("poll"),
        );
    }
    let _ = consumer.close().await;
    out
}

fn java_share_member(topic: &str, group: &str, dlt: &str) -> std::process::Child {
    use std::process::{Command, Stdio};
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("protocol-tests/java-interop/target");
    let jar = dir.join("java-interop.jar");
    assert!(
        jar.is_file() && dir.join("lib").is_dir(),
        "{} is missing: run `protocol-tests/java-interop/build.sh` first (needs Maven and Java 17)",
        jar.display()
    );
    let bootstrap = std::env::var("REKAFKA_BOOTSTRAP").expect("REKAFKA_BOOTSTRAP");
    Command::new("java")
        .arg("-cp")
        .arg(format!("{}:{}/lib/*", jar.display(), dir.display()))
        .arg("rekafka.interop.ShareMember")
        .args([
            "--bootstrap",
            &bootstrap,
            "--topic",
            topic,
            "--group",
            group,
        ])
        .args(["--fail-twice-mod", &TWICE.0.to_string()])
        .args(["--fail-twice-rem", &TWICE.1.to_string()])
        .args(["--fail-always-mod", &ALWAYS.0.to_string()])
        .args(["--fail-always-rem", &ALWAYS.1.to_string()])
        .args(["--max-deliveries", &LIMIT.to_string()])
        .args(["--dead-letter-topic", dlt])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `java` (is a JDK 17+ installed?): {e}"))
}

/// Nothing is left for the group: a fresh member, once assigned the partition, gets no record
/// within a few fetches.
async fn assert_nothing_left(client: &Client, group: &str, topic: &str) {
    let mut c = client
        .share_consumer(
            ShareConsumerConfig::new(group)
                .with_acknowledgement_mode(AcknowledgementMode::Explicit)
                .with_fetch_max_wait(Duration::from_millis(200)),
        )
        .expect("share consumer");
    c.subscribe([topic]);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut assigned_at = None;
    while Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(500)).await.expect("poll") {
            got.push((r.offset, r.delivery_count));
            c.acknowledge(&r, AcknowledgeType::Release)
                .expect("release");
        }
        if assigned_at.is_none() && !c.assignment().is_empty() {
            assigned_at = Some(Instant::now());
        }
        if assigned_at.is_some_and(|t| t.elapsed() > Duration::from_secs(2)) {
            break;
        }
    }
    assert!(
        assigned_at.is_some(),
        "the checking member was never assigned"
    );
    c.close().await.expect("close");
    assert!(got.is_empty(), "records left for the group: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_share_containers_and_a_java_member_dead_letter_and_agree_on_delivery_counts() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-done");
    let dlt_topic = format!("{topic}-dlt");
    create_topic_with_leaders(&cluster, &topic, 1).await;
    create_topic_with_leaders(&cluster, &dlt_topic, 1).await;
    let group = unique("share-done-g");
    let limit = LIMIT.to_string();
    Admin::new(cluster.clone())
        .alter_group_configs(
            &group,
            &[
                AlterConfigOp::set("share.auto.offset.reset", "earliest"),
                AlterConfigOp::set("share.delivery.count.limit", limit.as_str()),
            ],
        )
        .await
        .expect("group configs");

    // Every delivery a handler saw, every outcome, and every dead letter, from both clients.
    let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let outcomes: Arc<Mutex<Vec<Settled>>> = Arc::default();
    let dead_letters: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();

    // The Java member, its output read by a thread.
    let mut java = java_share_member(&topic, &group, &dlt_topic);
    let stdout = java.stdout.take().expect("stdout");
    let reader = {
        let (deliveries, outcomes, dead_letters, failures) = (
            deliveries.clone(),
            outcomes.clone(),
            dead_letters.clone(),
            failures.clone(),
        );
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                match v["ev"].as_str() {
                    Some("record") => {
                        let i: usize = v["v"].as_str().unwrap_or_default()[2..]
                            .parse()
                            .expect("index");
                        let dc = u16::try_from(v["dc"].as_i64().unwrap_or(-1)).unwrap_or(0);
                        let dlt = v["dlt"].as_bool().unwrap_or(false);
                        let outcome = match (v["ack"].as_str(), dlt) {
                            (Some("accept"), true) => Outcome::DeadLettered,
                            (Some("accept"), false) => Outcome::Accepted,
                            (Some("release"), _) => Outcome::Released,
                            _ => {
                                failures.lock().unwrap().push(line.clone());
                                continue;
                            }
                        };
                        let java = "java".to_owned();
                        deliveries.lock().unwrap().push((i, dc, java.clone()));
                        if dlt {
                            dead_letters.lock().unwrap().push((i, dc, java.clone()));
                        }
                        outcomes.lock().unwrap().push((i, dc, outcome, java));
                    }
                    Some("commit_failed" | "dlt_failed") => failures.lock().unwrap().push(line),
                    _ => {}
                }
            }
        })
    };

    // Three containers, each with its own dead-letter publisher.
    let mut handles = Vec::new();
    let mut event_tasks = Vec::new();
    for m in 0..3 {
        let member = format!("rekafka-{m}");
        let mut consumer = client
            .share_consumer(
                ShareConsumerConfig::new(&group)
                    .with_acknowledgement_mode(AcknowledgementMode::Explicit)
                    .with_fetch_max_wait(Duration::from_millis(200)),
            )
            .expect("share consumer");
        consumer.subscribe([topic.as_str()]);
        let f = failures.clone();
        let name = member.clone();
        consumer.set_acknowledgement_commit_callback(move |o| {
            if let Err(e) = &o.result {
                f.lock()
                    .unwrap()
                    .push(format!("{name}: {:?} {:?}: {e}", o.partition, o.offsets));
            }
        });
        let dlt = client
            .dead_letter_publisher::<ShareListenerRecord>()
            .wait(PublishWait::PerRecord)
            .build()
            .await
            .expect("dead-letter publisher");
        let (d, o, name) = (deliveries.clone(), outcomes.clone(), member.clone());
        let handle = ShareContainer::builder(consumer)
            .handler(move |r: ShareListenerRecord| {
                let (d, o, name) = (d.clone(), o.clone(), name.clone());
                async move {
                    let i = index_of(r.record().value.as_deref());
                    let count = r.delivery_count();
                    d.lock().unwrap().push((i, count, name.clone()));
                    match kind(i) {
                        Kind::Twice if count < 3 => Err(Box::new(Transient(i)) as HandlerError),
                        Kind::Always => Err(Box::new(Transient(i)) as HandlerError),
                        _ => {
                            o.lock().unwrap().push((i, count, Outcome::Accepted, name));
                            Ok(())
                        }
                    }
                }
            })
            .back_off(FixedBackOff::new(Duration::from_millis(5), 9))
            .recoverer(LoggingDlt {
                inner: dlt,
                log: dead_letters.clone(),
                member: member.clone(),
            })
            .poll_timeout(Duration::from_millis(500))
            .delivery_count_limit_from(&Admin::new(cluster.clone()))
            .await
            .expect("the group's delivery count limit")
            .start()
            .expect("start");
        // The container's events: its releases and recoveries (the outcomes the handler does
        // not see) and anything that went wrong.
        let mut events = handle.events();
        let f = failures.clone();
        event_tasks.push(tokio::spawn(async move {
            let mut stopped = false;
            let mut pending = Vec::new();
            loop {
                match events.recv().await {
                    Ok(ShareContainerEvent::Released {
                        offset,
                        delivery_count,
                        ..
                    }) => pending.push((offset, delivery_count, Outcome::Released)),
                    Ok(ShareContainerEvent::Recovered {
                        offset,
                        delivery_count,
                        ..
                    }) => pending.push((offset, delivery_count, Outcome::DeadLettered)),
                    Ok(ShareContainerEvent::Stopped(err)) => {
                        if let Some(e) = err {
                            f.lock().unwrap().push(format!("{member} stopped: {e}"));
                        }
                        stopped = true;
                        break;
                    }
                    Ok(
                        ev @ (ShareContainerEvent::Rejected { .. }
                        | ShareContainerEvent::AcknowledgementFailed { .. }),
                    ) => f.lock().unwrap().push(format!("{member}: {ev:?}")),
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        f.lock().unwrap().push(format!("{member}: {n} events lost"))
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
            (member, pending, stopped)
        }));
        handles.push(handle);
    }

    // Produce in small chunks until every member handled a record (they join through the
    // coordinator's heartbeats, 5 s apart), then the rest. Record `i` is at offset `i`.
    let producer = client
        .producer(ProducerConfig::default())
        .await
        .expect("producer");
    let mut sent = 0;
    let warm_until = Instant::now() + Duration::from_secs(60);
    while sent < N {
        let members = deliveries
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.2.clone())
            .collect::<BTreeSet<_>>()
            .len();
        let warming = members < 4 && Instant::now() < warm_until;
        let chunk = if warming { 50.min(N - sent) } else { N - sent };
        let mut futures = Vec::with_capacity(chunk);
        for i in sent..sent + chunk {
            let r = Record::new(topic.as_str())
                .with_partition(0)
                .with_key(format!("k-{i}"))
                .with_value(format!("v-{i}"));
            futures.push(producer.send(r).await.expect("enqueue"));
        }
        for f in futures {
            f.await.expect("delivered");
        }
        sent += chunk;
        if warming {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    producer.close().await;

    // Until every record met its end: handled, or dead-lettered (the container's dead letters
    // are logged by the recoverer, Java's by its record line).
    let expected_dead: BTreeSet<usize> = (0..N).filter(|i| kind(*i) == Kind::Always).collect();
    let terminal = || {
        let handled = outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.2 == Outcome::Accepted)
            .count();
        handled + dead_letters.lock().unwrap().len()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while terminal() < N && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let anything extra (a duplicate delivery) show up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for h in handles {
        h.stop().await.expect("stopped cleanly");
    }
    if let Some(mut stdin) = java.stdin.take() {
        let _ = stdin.write_all(b"stop\n");
    }
    let status = java.wait().expect("java exits");
    reader.join().expect("reader");
    assert!(status.success(), "java member: {status}");

    // The containers' releases and recoveries, by record (record `i` is at offset `i`).
    for t in event_tasks {
        let (member, pending, stopped) = t.await.expect("event task");
        assert!(stopped, "{member} sent no Stopped event");
        let mut o = outcomes.lock().unwrap();
        for (offset, dc, outcome) in pending {
            o.push((
                usize::try_from(offset).expect("offset"),
                dc,
                outcome,
                member.clone(),
            ));
        }
    }
    let failures = failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failures: {failures:#?}");

    // Every record: delivered 1, 2, … with no count twice and none skipped, whichever client
    // had it; each delivery's outcome is the rule's; exactly one terminal outcome, the last.
    let deliveries = deliveries.lock().unwrap().clone();
    let outcomes = outcomes.lock().unwrap().clone();
    let mut by_record: BTreeMap<usize, Vec<(u16, String)>> = BTreeMap::new();
    for (i, dc, member) in &deliveries {
        by_record.entry(*i).or_default().push((*dc, member.clone()));
    }
    let mut outcome_of: BTreeMap<usize, Vec<(u16, Outcome, String)>> = BTreeMap::new();
    for (i, dc, outcome, member) in &outcomes {
        outcome_of
            .entry(*i)
            .or_default()
            .push((*dc, *outcome, member.clone()));
    }
    assert_eq!(by_record.len(), N, "every record delivered");
    let (mut crossed, mut java_records) = (0, 0);
    for (i, ds) in &mut by_record {
        ds.sort();
        let counts: Vec<u16> = ds.iter().map(|d| d.0).collect();
        let expected: Vec<u16> = match kind(*i) {
            Kind::Ok => vec![1],
            Kind::Twice => vec![1, 2, 3],
            Kind::Always => (1..=LIMIT).collect(),
        };
        assert_eq!(counts, expected, "record {i}'s deliveries: {ds:?}");
        let mut os = outcome_of.remove(i).unwrap_or_default();
        os.sort();
        let want: Vec<(u16, Outcome)> = expected
            .iter()
            .map(|&dc| {
                let last = dc == *expected.last().expect("a delivery");
                let outcome = match (kind(*i), last) {
                    (_, false) => Outcome::Released,
                    (Kind::Always, true) => Outcome::DeadLettered,
                    (_, true) => Outcome::Accepted,
                };
                (dc, outcome)
            })
            .collect();
        assert_eq!(
            os.iter().map(|o| (o.0, o.1)).collect::<Vec<_>>(),
            want,
            "record {i}'s outcomes: {os:?} (deliveries {ds:?})"
        );
        // The member that saw a delivery is the one that settled it.
        for ((dc, m), (odc, _, om)) in ds.iter().zip(&os) {
            assert_eq!((dc, m), (odc, om), "record {i}: {ds:?} {os:?}");
        }
        let members: BTreeSet<&str> = ds.iter().map(|d| d.1.as_str()).collect();
        if members.contains("java") {
            java_records += 1;
            if members.len() > 1 {
                crossed += 1;
            }
        }
    }
    assert!(outcome_of.is_empty(), "outcomes of records never delivered");
    let per_member: BTreeMap<&str, usize> = deliveries.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d.2.as_str()).or_default() += 1;
        m
    });
    eprintln!(
        "{N} records, {} deliveries {per_member:?}; java handled {java_records} records, \
         {crossed} crossed clients",
        deliveries.len()
    );
    assert_eq!(
        per_member.len(),
        4,
        "every member took part: {per_member:?}"
    );
    assert!(
        crossed > 0,
        "some record was delivered to both clients (so their delivery counts were compared): {per_member:?}"
    );

    // The dead letters: exactly one per always-failing record, with its provenance and its
    // delivery count; Java's carry the same headers in the same order as rekafka's.
    let logged = dead_letters.lock().unwrap().clone();
    let letters = read_topic(&cluster, &dlt_topic, expected_dead.len()).await;
    let mut by_index: BTreeMap<usize, &ConsumerRecord> = BTreeMap::new();
    for l in &letters {
        let i = index_of(l.value.as_deref());
        assert!(
            by_index.insert(i, l).is_none(),
            "two dead letters for record {i}"
        );
    }
    assert_eq!(
        by_index.keys().copied().collect::<BTreeSet<_>>(),
        expected_dead,
        "dead-lettered records"
    );
    let writer: BTreeMap<usize, bool> = logged
        .iter()
        .map(|(i, _, member)| (*i, member == "java"))
        .collect();
    let mut layouts: BTreeMap<bool, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (i, l) in &by_index {
        let headers: Vec<_> = l.headers.iter().collect();
        let info = DeadLetterInfo::from_headers(&headers);
        assert_eq!(info.original_topic.as_deref(), Some(topic.as_str()));
        assert_eq!(info.original_partition, Some(0));
        assert_eq!(info.original_offset, Some(*i as i64), "record {i}");
        assert_eq!(
            info.original_consumer_group.as_deref(),
            Some(group.as_str())
        );
        assert!(info.exception_fqcn.is_some(), "record {i}: no exception");
        assert_eq!(
            l.key.as_deref(),
            Some(format!("k-{i}").as_bytes()),
            "record {i}'s key"
        );
        let attempt = headers
            .iter()
            .rev()
            .find(|h| h.key() == DELIVERY_ATTEMPT_HEADER)
            .and_then(|h| h.value.clone())
            .expect("delivery attempt header");
        let attempt = i32::from_be_bytes(attempt.as_ref().try_into().expect("4 bytes"));
        assert_eq!(
            attempt,
            i32::from(LIMIT),
            "record {i}'s delivery count in its dead letter"
        );
        let java = *writer.get(i).expect("dead letter logged by its writer");
        layouts
            .entry(java)
            .or_default()
            .insert(headers.iter().map(|h| h.key().to_owned()).collect());
    }
    let rust_layout = layouts.get(&false).expect("rekafka wrote dead letters");
    let java_layout = layouts.get(&true).expect("java wrote dead letters");
    assert_eq!(
        rust_layout.len(),
        1,
        "rekafka's header layouts: {rust_layout:?}"
    );
    assert_eq!(
        rust_layout, java_layout,
        "the two clients' dead-letter headers"
    );

    assert_nothing_left(&client, &group, &topic).await;
    cluster.close().await;
}

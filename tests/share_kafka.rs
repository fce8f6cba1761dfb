//! Share groups (KIP-932) against the three-node Apache Kafka 4.x cluster: several share
//! consumers splitting a topic (every record accepted exactly once), release and reject,
//! explicit acknowledgement, a closing member's records going to another, the delivery count
//! limit, an expired acquisition lock (late acknowledgements fail, records redelivered),
//! `commit_async`, `max.poll.interval.ms`, subscription changes, a leader change, a SIGKILLed
//! member (child process), and three rekafka members with a Java `KafkaShareConsumer`
//! (`protocol-tests/java-interop`, ShareMember.java; build it with
//! `protocol-tests/java-interop/build.sh`) agreeing on delivery counts over 20,000 records.
//!
//! Group configs (`share.auto.offset.reset=earliest`, `share.delivery.count.limit`,
//! `share.record.lock.duration.ms`, whose broker minimum is 15 s) are set with the admin's
//! `alter_group_configs` (IncrementalAlterConfigs on the GROUP resource). The coordinator's heartbeat interval
//! (`group.share.heartbeat.interval.ms`, 5 s) paces assignments.
//!
//! Named `*_kafka.rs`: the embedded mock cluster does not serve share groups.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bootstrap, client, create_topic_with_leaders, unique};
use kafka_protocol::protocol::StrBytes;
use rekafka::admin::{Admin, AlterConfigOp};
use rekafka::cluster::Cluster;
use rekafka::producer::{ProducerConfig, Record};
use rekafka::share::{
    AcknowledgeType, AcknowledgementMode, ShareConsumer, ShareConsumerConfig, ShareRecord,
};
use rekafka::{Client, KafkaCode};

/// Sets share group configs (IncrementalAlterConfigs on the GROUP resource, through the
/// admin client).
async fn set_group_config(cluster: &Cluster, group: &str, configs: &[(&str, &str)]) {
    let ops: Vec<AlterConfigOp> = configs
        .iter()
        .map(|(k, v)| AlterConfigOp::set(*k, *v))
        .collect();
    Admin::new(cluster.clone())
        .alter_group_configs(group, &ops)
        .await
        .unwrap_or_else(|e| panic!("group config {configs:?}: {e}"));
}

/// A share group reading from the earliest offset.
async fn new_group(cluster: &Cluster, extra: &[(&str, &str)]) -> String {
    let group = unique("share-g");
    let mut configs = vec![("share.auto.offset.reset", "earliest")];
    configs.extend_from_slice(extra);
    set_group_config(cluster, &group, &configs).await;
    group
}

/// Produces `n` records round-robin over `partitions` (values `v-i`).
async fn produce(client: &Client, topic: &str, partitions: i32, n: usize) {
    let producer = client
        .producer(ProducerConfig::default())
        .await
        .expect("producer");
    let mut futures = Vec::with_capacity(n);
    for i in 0..n {
        let r = Record::new(topic)
            .with_partition((i % partitions as usize) as i32)
            .with_key(format!("k-{i}"))
            .with_value(format!("v-{i}"));
        futures.push(producer.send(r).await.expect("enqueue"));
    }
    for f in futures {
        f.await.expect("delivered");
    }
    producer.close().await;
}

fn value(r: &ShareRecord) -> String {
    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
}

fn consumer(client: &Client, group: &str, mode: AcknowledgementMode) -> ShareConsumer {
    client
        .share_consumer(
            ShareConsumerConfig::new(group)
                .with_acknowledgement_mode(mode)
                .with_fetch_max_wait(Duration::from_millis(200)),
        )
        .expect("share consumer")
}

/// Nothing is left for the group: a fresh member, once assigned the topic's partitions, gets
/// no record within a few fetches.
async fn assert_nothing_left(client: &Client, group: &str, topic: &str) {
    let mut c = consumer(client, group, AcknowledgementMode::Explicit);
    c.subscribe([topic]);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut assigned_at = None;
    while Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(500)).await.expect("poll") {
            got.push((r.partition, r.offset, value(&r), r.delivery_count));
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
async fn three_members_accept_every_record_exactly_once() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-split");
    create_topic_with_leaders(&cluster, &topic, 3).await;
    let group = new_group(&cluster, &[]).await;
    const N: usize = 3000;

    // Every member joined and has partitions before the records are written.
    let mut members: Vec<ShareConsumer> = (0..3)
        .map(|_| {
            let mut c = consumer(&client, &group, AcknowledgementMode::Implicit);
            c.subscribe([&topic]);
            c
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while members.iter().any(|c| c.assignment().is_empty()) && Instant::now() < deadline {
        for c in &mut members {
            assert!(
                c.poll(Duration::from_millis(100))
                    .await
                    .expect("poll")
                    .is_empty()
            );
        }
    }
    produce(&client, &topic, 3, N).await;

    // (partition, offset, value, delivery count, member) per record.
    type Seen = (i32, i64, String, u16, usize);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let mut tasks = Vec::new();
    for (member, mut c) in members.into_iter().enumerate() {
        let seen = seen.clone();
        tasks.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let batch = c.poll(Duration::from_millis(300)).await.expect("poll");
                let mut s = seen.lock().unwrap();
                for r in &batch {
                    s.push((r.partition, r.offset, value(r), r.delivery_count, member));
                }
                if s.len() >= N && batch.is_empty() {
                    break;
                }
            }
            let results = c.commit_sync().await.expect("commit");
            for (tp, r) in &results {
                assert!(r.is_ok(), "{tp}: {r:?}");
            }
            let outcomes = c.take_acknowledgement_outcomes();
            let failed: Vec<_> = outcomes.iter().filter(|o| o.result.is_err()).collect();
            assert!(failed.is_empty(), "failed acknowledgements: {failed:?}");
            c.close().await.expect("close");
        }));
    }
    for t in tasks {
        t.await.expect("member");
    }
    let seen = seen.lock().unwrap().clone();
    let mut values: BTreeMap<String, usize> = BTreeMap::new();
    for (_, _, v, dc, _) in &seen {
        assert_eq!(*dc, 1, "first delivery");
        *values.entry(v.clone()).or_default() += 1;
    }
    let dups: Vec<_> = values.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "records delivered twice: {dups:?}");
    let expected: BTreeSet<String> = (0..N).map(|i| format!("v-{i}")).collect();
    let got: BTreeSet<String> = values.keys().cloned().collect();
    assert_eq!(got, expected, "every record once");
    let members: BTreeSet<usize> = seen.iter().map(|s| s.4).collect();
    assert!(members.len() >= 2, "the records were shared: {members:?}");
    assert_nothing_left(&client, &group, &topic).await;
}

/// Polls `c` until `n` records came (or 30 s passed); returns them.
async fn poll_n(c: &mut ShareConsumer, n: usize) -> Vec<ShareRecord> {
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < n && Instant::now() < deadline {
        out.extend(c.poll(Duration::from_millis(500)).await.expect("poll"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_redelivers_with_count_two_and_reject_never_redelivers() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-ack");
    create_topic_with_leaders(&cluster, &topic, 1).await;
    let group = new_group(&cluster, &[]).await;
    produce(&client, &topic, 1, 30).await;

    let mut c = consumer(&client, &group, AcknowledgementMode::Explicit);
    c.subscribe([&topic]);
    let first = poll_n(&mut c, 30).await;
    assert_eq!(first.len(), 30, "every record delivered");
    let mut released = BTreeSet::new();
    let mut rejected = BTreeSet::new();
    for r in &first {
        assert_eq!(r.delivery_count, 1);
        let ack = match r.offset % 3 {
            0 => AcknowledgeType::Accept,
            1 => {
                released.insert(r.offset);
                AcknowledgeType::Release
            }
            _ => {
                rejected.insert(r.offset);
                AcknowledgeType::Reject
            }
        };
        c.acknowledge(r, ack).expect("acknowledge");
    }
    // Acknowledging twice is refused.
    let again = c
        .acknowledge(&first[0], AcknowledgeType::Accept)
        .unwrap_err();
    assert_eq!(again.kind(), &rekafka::ErrorKind::InvalidState);
    let results = c.commit_sync().await.expect("commit");
    assert_eq!(results.len(), 1, "{results:?}");
    for (tp, r) in &results {
        assert!(r.is_ok(), "{tp}: {r:?}");
    }

    // The released ones come back, on their second delivery; the rejected ones never.
    let second = poll_n(&mut c, released.len()).await;
    let offsets: BTreeSet<i64> = second.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, released, "released records redelivered");
    for r in &second {
        assert_eq!(r.delivery_count, 2, "second delivery of {}", r.offset);
        c.acknowledge(r, AcknowledgeType::Accept).expect("accept");
    }
    // Nothing else arrives (the rejected records are archived).
    let more = c.poll(Duration::from_secs(2)).await.expect("poll");
    assert!(more.is_empty(), "unexpected redelivery: {more:?}");
    c.close().await.expect("close");
    assert_nothing_left(&client, &group, &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_mode_refuses_a_poll_before_every_record_is_acknowledged() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-explicit");
    create_topic_with_leaders(&cluster, &topic, 1).await;
    let group = new_group(&cluster, &[]).await;
    produce(&client, &topic, 1, 5).await;
    let mut c = consumer(&client, &group, AcknowledgementMode::Explicit);
    c.subscribe([&topic]);
    let got = poll_n(&mut c, 5).await;
    assert_eq!(got.len(), 5);
    for r in &got[..4] {
        c.acknowledge(r, AcknowledgeType::Accept).expect("accept");
    }
    let e = c.poll(Duration::from_millis(100)).await.unwrap_err();
    assert_eq!(e.kind(), &rekafka::ErrorKind::InvalidState, "{e}");
    c.acknowledge(&got[4], AcknowledgeType::Accept)
        .expect("still acknowledgeable");
    assert!(
        c.poll(Duration::from_millis(100))
            .await
            .expect("poll")
            .is_empty()
    );
    c.close().await.expect("close");
    assert_nothing_left(&client, &group, &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closing_member_releases_its_records_to_another() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-close");
    create_topic_with_leaders(&cluster, &topic, 1).await;
    let group = new_group(&cluster, &[]).await;
    produce(&client, &topic, 1, 20).await;

    let mut a = consumer(&client, &group, AcknowledgementMode::Implicit);
    a.subscribe([&topic]);
    let held = poll_n(&mut a, 20).await;
    assert_eq!(held.len(), 20);
    // Implicit mode: close releases the last poll's records rather than accepting them.
    a.close().await.expect("close");
    let outcomes = a.take_acknowledgement_outcomes();
    assert!(
        outcomes.iter().all(|o| o.result.is_ok()),
        "release at close: {outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().map(|o| o.offsets.len()).sum::<usize>(),
        20,
        "every held record released: {outcomes:?}"
    );
    assert_eq!(
        a.poll(Duration::ZERO).await.unwrap_err().kind(),
        &rekafka::ErrorKind::Closed
    );

    let mut b = consumer(&client, &group, AcknowledgementMode::Implicit);
    b.subscribe([&topic]);
    let got = poll_n(&mut b, 20).await;
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    let held_offsets: Vec<i64> = held.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, held_offsets, "the released records, in order");
    assert!(got.iter().all(|r| r.delivery_count == 2), "{got:?}");
    let results = b.commit_sync().await.expect("commit");
    assert!(results.values().all(|r| r.is_ok()), "{results:?}");
    b.close().await.expect("close");
    assert_nothing_left(&client, &group, &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_count_limit_ends_redelivery() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-limit");
    create_topic_with_leaders(&cluster, &topic, 1).await;
    // The broker's minimum limit is 2 (group.share.min.delivery.count.limit).
    let group = new_group(&cluster, &[("share.delivery.count.limit", "2")]).await;
    produce(&client, &topic, 1, 4).await;

    let mut c = consumer(&client, &group, AcknowledgementMode::Explicit);
    c.subscribe([&topic]);
    let mut deliveries: BTreeMap<i64, Vec<u16>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut quiet_polls = 0;
    while Instant::now() < deadline {
        let batch = c.poll(Duration::from_millis(500)).await.expect("poll");
        if batch.is_empty() && deliveries.values().all(|d| d.len() >= 2) && deliveries.len() == 4 {
            quiet_polls += 1;
            if quiet_polls == 4 {
                break;
            }
        }
        for r in batch {
            deliveries
                .entry(r.offset)
                .or_default()
                .push(r.delivery_count);
            c.acknowledge(&r, AcknowledgeType::Release)
                .expect("release");
        }
    }
    c.close().await.expect("close");
    assert_eq!(deliveries.len(), 4, "{deliveries:?}");
    for (offset, counts) in &deliveries {
        assert_eq!(
            counts,
            &vec![1, 2],
            "offset {offset}: delivered until the limit, no more"
        );
    }
    assert_nothing_left(&client, &group, &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_acquisition_lock_redelivers_and_fails_the_late_acknowledgement() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-lock");
    create_topic_with_leaders(&cluster, &topic, 1).await;
    // The broker's minimum lock duration is 15 s (group.share.min.record.lock.duration.ms).
    let group = new_group(&cluster, &[("share.record.lock.duration.ms", "15000")]).await;
    produce(&client, &topic, 1, 10).await;

    let mut slow = consumer(&client, &group, AcknowledgementMode::Explicit);
    slow.subscribe([&topic]);
    let held = poll_n(&mut slow, 10).await;
    assert_eq!(held.len(), 10);
    assert_eq!(
        slow.acquisition_lock_timeout(),
        Some(Duration::from_millis(15000)),
        "the broker reports the group's lock duration"
    );

    // Another member gets them once the lock expires, on delivery 2.
    let mut other = consumer(&client, &group, AcknowledgementMode::Explicit);
    other.subscribe([&topic]);
    let mut again = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while again.len() < 10 && Instant::now() < deadline {
        again.extend(other.poll(Duration::from_millis(500)).await.expect("poll"));
    }
    let offsets: BTreeSet<i64> = again.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets,
        held.iter().map(|r| r.offset).collect::<BTreeSet<_>>()
    );
    assert!(again.iter().all(|r| r.delivery_count == 2), "{again:?}");
    // The slow member's acknowledgements come too late (the records are another member's
    // now): the broker says so, per partition.
    for r in &held {
        slow.acknowledge(r, AcknowledgeType::Accept)
            .expect("accept");
    }
    let results = slow.commit_sync().await.expect("commit");
    assert_eq!(results.len(), 1, "{results:?}");
    for (tp, r) in &results {
        let e = r.as_ref().expect_err("late acknowledgement fails");
        assert_eq!(
            e.kafka_code(),
            Some(KafkaCode::InvalidRecordState),
            "{tp}: {e}"
        );
    }
    for r in &again {
        other
            .acknowledge(r, AcknowledgeType::Accept)
            .expect("accept");
    }
    let results = other.commit_sync().await.expect("commit");
    assert!(results.values().all(|r| r.is_ok()), "{results:?}");
    slow.close().await.expect("close");
    other.close().await.expect("close");
    assert_nothing_left(&client, &group, &topic).await;
}

// ---------------------------------------------------------------------------------------------
// With a Java KafkaShareConsumer in the group (protocol-tests/java-interop, ShareMember.java;
// build it with protocol-tests/java-interop/build.sh).

const TWICE: (usize, usize) = (50, 7); // 2 %: released on deliveries 1 and 2
const ALWAYS: (usize, usize) = (200, 13); // 0.5 %: released until the last attempt, then rejected
const MAX_DELIVERIES: u16 = 3;

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

/// The handler's verdict for record `i` on delivery `dc` (the same rule as ShareMember.java).
fn verdict(i: usize, dc: u16) -> AcknowledgeType {
    match kind(i) {
        Kind::Ok => AcknowledgeType::Accept,
        Kind::Twice if dc < 3 => AcknowledgeType::Release,
        Kind::Twice => AcknowledgeType::Accept,
        Kind::Always if dc < MAX_DELIVERIES => AcknowledgeType::Release,
        Kind::Always => AcknowledgeType::Reject,
    }
}

fn ack_name(a: AcknowledgeType) -> &'static str {
    match a {
        AcknowledgeType::Accept => "accept",
        AcknowledgeType::Release => "release",
        _ => "reject",
    }
}

/// One delivery as a member handled it: (index, delivery count, ack, member).
type Delivery = (usize, u16, &'static str, String);

fn java_share_member(topic: &str, group: &str) -> std::process::Child {
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
        .args(["--max-deliveries", &MAX_DELIVERIES.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `java` (is a JDK 17+ installed?): {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_rekafka_members_and_a_java_member_agree_on_delivery_counts() {
    use std::io::{BufRead, BufReader, Write};
    use std::sync::atomic::{AtomicBool, Ordering};

    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-java");
    // One partition, which every member of the group shares (more members than partitions),
    // so released records go to either client.
    create_topic_with_leaders(&cluster, &topic, 1).await;
    let group = new_group(&cluster, &[]).await;
    const N: usize = 20_000;

    let deliveries: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let java_failures: Arc<Mutex<Vec<String>>> = Arc::default();
    // The Java member, its output read by a thread.
    let mut java = java_share_member(&topic, &group);
    let stdout = java.stdout.take().expect("stdout");
    let reader = {
        let deliveries = deliveries.clone();
        let failures = java_failures.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let v: serde_json::Value = match serde_json::from_str(&line) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                match v["ev"].as_str() {
                    Some("record") => {
                        let value = v["v"].as_str().unwrap_or_default();
                        let i: usize = value[2..].parse().expect("index");
                        let dc = v["dc"].as_i64().unwrap_or(-1) as u16;
                        let ack = match v["ack"].as_str() {
                            Some("accept") => "accept",
                            Some("release") => "release",
                            _ => "reject",
                        };
                        deliveries
                            .lock()
                            .unwrap()
                            .push((i, dc, ack, "java".to_owned()));
                    }
                    Some("commit_failed") => failures.lock().unwrap().push(line),
                    _ => {}
                }
            }
        })
    };

    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for member in 0..3 {
        let mut c = consumer(&client, &group, AcknowledgementMode::Explicit);
        c.subscribe([&topic]);
        let deliveries = deliveries.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("rekafka-{member}");
            let mut failed = Vec::new();
            while !stop.load(Ordering::Acquire) {
                let batch = c.poll(Duration::from_millis(200)).await.expect("poll");
                let mut seen = Vec::with_capacity(batch.len());
                for r in &batch {
                    let i: usize = value(r)[2..].parse().expect("index");
                    let ack = verdict(i, r.delivery_count);
                    c.acknowledge(r, ack).expect("acknowledge");
                    seen.push((i, r.delivery_count, ack_name(ack), name.clone()));
                }
                deliveries.lock().unwrap().extend(seen);
                failed.extend(
                    c.take_acknowledgement_outcomes()
                        .into_iter()
                        .filter(|o| o.result.is_err()),
                );
            }
            let results = c.commit_sync().await.expect("commit");
            failed.extend(
                c.take_acknowledgement_outcomes()
                    .into_iter()
                    .filter(|o| o.result.is_err()),
            );
            c.close().await.expect("close");
            (failed, results)
        }));
    }

    // Produce in small chunks until every member handled a record (they join through the
    // coordinator's heartbeats, 5 s apart), then the rest.
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
            .map(|d| d.3.clone())
            .collect::<BTreeSet<_>>()
            .len();
        let warming = members < 4 && Instant::now() < warm_until;
        let chunk = if warming { 50.min(N - sent) } else { N - sent };
        let mut futures = Vec::with_capacity(chunk);
        for i in sent..sent + chunk {
            let r = Record::new(topic.as_str())
                .with_partition(0)
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

    // Until every record met its end (accepted, or rejected after its last attempt).
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let done = deliveries
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.2 != "release")
            .count();
        if done >= N || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Release);
    let mut rust_failed = Vec::new();
    for t in tasks {
        let (failed, results) = t.await.expect("member");
        rust_failed.extend(failed);
        assert!(results.values().all(|r| r.is_ok()), "{results:?}");
    }
    if let Some(mut stdin) = java.stdin.take() {
        let _ = stdin.write_all(b"stop\n");
    }
    let status = java.wait().expect("java exits");
    reader.join().expect("reader");
    assert!(status.success(), "java member: {status}");
    assert!(
        rust_failed.is_empty(),
        "rekafka acknowledgements failed: {rust_failed:?}"
    );
    let java_failures = java_failures.lock().unwrap().clone();
    assert!(
        java_failures.is_empty(),
        "java acknowledgements failed: {java_failures:?}"
    );

    // Every record: delivered 1, 2, 3, … with no count twice and none skipped, whichever client
    // had it; the verdict each delivery got is the rule's; exactly one terminal acknowledgement.
    let deliveries = deliveries.lock().unwrap().clone();
    let mut by_record: BTreeMap<usize, Vec<(u16, &'static str, String)>> = BTreeMap::new();
    for (i, dc, ack, member) in &deliveries {
        by_record
            .entry(*i)
            .or_default()
            .push((*dc, *ack, member.clone()));
    }
    assert_eq!(by_record.len(), N, "every record delivered");
    let mut crossed = 0;
    let mut java_records = 0;
    for (i, ds) in &mut by_record {
        ds.sort_by_key(|d| d.0);
        let counts: Vec<u16> = ds.iter().map(|d| d.0).collect();
        let expected: Vec<u16> = match kind(*i) {
            Kind::Ok => vec![1],
            Kind::Twice => vec![1, 2, 3],
            Kind::Always => (1..=MAX_DELIVERIES).collect(),
        };
        assert_eq!(counts, expected, "record {i}: {ds:?}");
        for (dc, ack, _) in ds.iter() {
            assert_eq!(*ack, ack_name(verdict(*i, *dc)), "record {i}: {ds:?}");
        }
        let members: BTreeSet<&str> = ds.iter().map(|d| d.2.as_str()).collect();
        if members.contains("java") {
            java_records += 1;
            if members.len() > 1 {
                crossed += 1;
            }
        }
    }
    let per_member: BTreeMap<&str, usize> = deliveries.iter().fold(BTreeMap::new(), |mut m, d| {
        *m.entry(d.3.as_str()).or_default() += 1;
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
    assert_nothing_left(&client, &group, &topic).await;
}

// ---------------------------------------------------------------------------------------------
// SIGKILL of a member holding acquired records.

const CHILD_ENV: &str = "REKAFKA_SHARE_CHILD";

/// The member process of [`sigkill_of_a_member_loses_nothing`]: accepts its first poll's
/// records (logging `acc OFFSET` once the broker took them), then holds its second poll's
/// records unacknowledged (logging `held OFFSET DC`) until killed. Not a test by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the child process of sigkill_of_a_member_loses_nothing"]
async fn share_member_child_process() {
    use std::io::Write;
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let args: Vec<String> = args.split(' ').map(str::to_owned).collect();
    let (topic, group, path) = (&args[0], &args[1], &args[2]);
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let client = client().await;
    let mut c = client
        .share_consumer(
            ShareConsumerConfig::new(group.as_str())
                .with_acknowledgement_mode(AcknowledgementMode::Explicit)
                .with_max_poll_records(20),
        )
        .unwrap();
    c.subscribe([topic]);
    let first = poll_n(&mut c, 1).await;
    for r in &first {
        c.acknowledge(r, AcknowledgeType::Accept).unwrap();
    }
    let results = c.commit_sync().await.unwrap();
    assert!(results.values().all(|r| r.is_ok()), "{results:?}");
    for r in &first {
        writeln!(log, "acc {}", r.offset).unwrap();
    }
    let held = poll_n(&mut c, 1).await;
    for r in &held {
        writeln!(log, "held {} {}", r.offset, r.delivery_count).unwrap();
    }
    log.flush().unwrap();
    // Runs until killed, holding the records (its heartbeats go on).
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_member_loses_nothing() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-kill");
    create_topic_with_leaders(&cluster, &topic, 1).await;
    let group = new_group(&cluster, &[("share.record.lock.duration.ms", "15000")]).await;
    const N: usize = 200;
    produce(&client, &topic, 1, N).await;
    let path = std::env::temp_dir()
        .join(unique("share-kill-log"))
        .to_string_lossy()
        .into_owned();

    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "share_member_child_process",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ENV, format!("{topic} {group} {path}"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let read_log = || -> Vec<String> {
        std::fs::read_to_string(&path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !read_log().iter().any(|l| l.starts_with("held ")) {
        assert!(Instant::now() < deadline, "the child never held records");
        assert!(child.try_wait().unwrap().is_none(), "the child exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let lines = read_log();
    let _ = std::fs::remove_file(&path);
    let accepted: BTreeSet<i64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("acc ")?.parse().ok())
        .collect();
    let held: BTreeSet<i64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("held ")?.split(' ').next()?.parse().ok())
        .collect();
    assert!(!accepted.is_empty() && !held.is_empty(), "{lines:?}");

    // Another member gets every record the dead one did not accept; the ones it held come
    // back after the lock timeout, on delivery 2.
    let mut c = consumer(&client, &group, AcknowledgementMode::Implicit);
    c.subscribe([&topic]);
    let mut got: BTreeMap<i64, u16> = BTreeMap::new();
    let want = N - accepted.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < want && Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(500)).await.expect("poll") {
            assert!(
                got.insert(r.offset, r.delivery_count).is_none(),
                "offset {} twice",
                r.offset
            );
        }
    }
    let results = c.commit_sync().await.expect("commit");
    assert!(results.values().all(|r| r.is_ok()), "{results:?}");
    c.close().await.expect("close");
    let all: BTreeSet<i64> = (0..N as i64).collect();
    let survivor: BTreeSet<i64> = got.keys().copied().collect();
    assert!(
        accepted.is_disjoint(&survivor),
        "accepted records came back"
    );
    assert_eq!(
        accepted.union(&survivor).copied().collect::<BTreeSet<_>>(),
        all,
        "nothing lost"
    );
    for o in &held {
        assert_eq!(
            got.get(o),
            Some(&2),
            "held offset {o} redelivered on delivery 2"
        );
    }
    assert_nothing_left(&client, &group, &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_async_outcomes_reach_the_callback_and_the_queue() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-async");
    create_topic_with_leaders(&cluster, &topic, 1).await;
    let group = new_group(&cluster, &[]).await;
    produce(&client, &topic, 1, 10).await;

    let mut c = consumer(&client, &group, AcknowledgementMode::Implicit);
    let called: Arc<Mutex<Vec<(i64, bool)>>> = Arc::default();
    let sink = called.clone();
    c.set_acknowledgement_commit_callback(move |o| {
        let mut s = sink.lock().unwrap();
        s.extend(o.offsets.iter().map(|off| (*off, o.result.is_ok())));
    });
    c.subscribe([&topic]);
    let got = poll_n(&mut c, 10).await;
    assert_eq!(got.len(), 10);
    c.commit_async().expect("commit_async");
    // The next poll collects the outcomes (and finds nothing new).
    assert!(
        c.poll(Duration::from_millis(300))
            .await
            .expect("poll")
            .is_empty()
    );
    let queued: Vec<i64> = c
        .take_acknowledgement_outcomes()
        .into_iter()
        .inspect(|o| assert!(o.result.is_ok(), "{o:?}"))
        .flat_map(|o| o.offsets)
        .collect();
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(queued, offsets, "every accepted record's outcome queued");
    let called = called.lock().unwrap().clone();
    assert_eq!(
        called,
        offsets.iter().map(|o| (*o, true)).collect::<Vec<_>>(),
        "the callback saw the same"
    );
    c.close().await.expect("close");
    assert_nothing_left(&client, &group, &topic).await;
}

#[tokio::test]
async fn client_properties_reach_the_share_consumer() {
    let client = Client::builder()
        .bootstrap_servers([bootstrap()])
        .property("share.acknowledgement.mode", "explicit")
        .property("max.poll.records", "42")
        .property("group.id", "from-properties")
        .build()
        .await
        .expect("client");
    let c = client
        .share_consumer(ShareConsumerConfig::default())
        .expect("share consumer");
    assert_eq!(
        c.config().acknowledgement_mode,
        AcknowledgementMode::Explicit
    );
    assert_eq!(c.config().max_poll_records, 42);
    assert_eq!(c.config().group_id, "from-properties");
    let e = Client::builder()
        .bootstrap_servers([bootstrap()])
        .property("share.acknowledgement.mode", "sometimes")
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("share.acknowledgement.mode"), "{e}");
    let plain = Client::builder()
        .bootstrap_servers([bootstrap()])
        .build()
        .await
        .expect("client");
    let e = plain
        .share_consumer(ShareConsumerConfig::default())
        .unwrap_err();
    assert_eq!(e.kind(), &rekafka::ErrorKind::Config, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_stops_polling_leaves_and_its_records_go_to_another() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-poll-interval");
    create_topic_with_leaders(&cluster, &topic, 1).await;
    let group = new_group(&cluster, &[("share.record.lock.duration.ms", "15000")]).await;
    produce(&client, &topic, 1, 10).await;

    let mut stuck = client
        .share_consumer(
            ShareConsumerConfig::new(group.as_str())
                .with_acknowledgement_mode(AcknowledgementMode::Explicit)
                .with_max_poll_interval(Duration::from_secs(2)),
        )
        .expect("share consumer");
    stuck.subscribe([&topic]);
    let held = poll_n(&mut stuck, 10).await;
    assert_eq!(held.len(), 10);
    assert!(stuck.member_epoch() > 0, "joined");
    // It stops polling: after max.poll.interval.ms it leaves the group (its heartbeat task
    // does, with no poll running).
    let deadline = Instant::now() + Duration::from_secs(15);
    while stuck.member_epoch() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(stuck.member_epoch(), 0, "the stuck member left");
    // The records it holds come back when their locks expire (leaving does not release
    // them on Kafka 4.4), to the member that polls, on delivery 2.
    let mut other = consumer(&client, &group, AcknowledgementMode::Implicit);
    other.subscribe([&topic]);
    let got = poll_n(&mut other, 10).await;
    let offsets: Vec<i64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, held.iter().map(|r| r.offset).collect::<Vec<_>>());
    assert!(got.iter().all(|r| r.delivery_count == 2), "{got:?}");
    let results = other.commit_sync().await.expect("commit");
    assert!(results.values().all(|r| r.is_ok()), "{results:?}");
    other.close().await.expect("close");
    // Polling again rejoins.
    let deadline = Instant::now() + Duration::from_secs(20);
    while stuck.member_epoch() == 0 && Instant::now() < deadline {
        // Its unacknowledged records are refused by explicit mode: settle them first.
        for r in &held {
            let _ = stuck.acknowledge(r, AcknowledgeType::Release);
        }
        let _ = stuck.poll(Duration::from_millis(500)).await.expect("poll");
    }
    assert!(stuck.member_epoch() > 0, "rejoined after polling again");
    stuck.close().await.expect("close");
    assert_nothing_left(&client, &group, &topic).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_the_subscription_moves_the_share_sessions_to_the_new_topic() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let (a, b) = (unique("share-sub-a"), unique("share-sub-b"));
    create_topic_with_leaders(&cluster, &a, 3).await;
    create_topic_with_leaders(&cluster, &b, 3).await;
    let group = new_group(&cluster, &[]).await;
    produce(&client, &a, 3, 30).await;
    produce(&client, &b, 3, 30).await;

    let mut c = consumer(&client, &group, AcknowledgementMode::Implicit);
    c.subscribe([&a]);
    let from_a = poll_n(&mut c, 30).await;
    assert_eq!(from_a.len(), 30);
    assert!(from_a.iter().all(|r| *r.topic == *a));
    c.subscribe([&b]);
    // Records written to `a` from now on are not this member's any more.
    produce(&client, &a, 3, 30).await;
    let mut from_b = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while from_b.len() < 30 && Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(500)).await.expect("poll") {
            assert_eq!(*r.topic, *b, "a record of the old subscription: {r:?}");
            from_b.push(r);
        }
    }
    assert_eq!(from_b.len(), 30);
    let mut values: Vec<String> = from_b.iter().map(value).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 30, "every record of b once");
    assert!(c.assignment().iter().all(|tp| tp.topic() == b));
    let results = c.commit_sync().await.expect("commit");
    assert!(results.values().all(|r| r.is_ok()), "{results:?}");
    // Unsubscribing leaves the group (Java's `unsubscribe`).
    assert!(c.member_epoch() > 0);
    c.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.member_epoch() != 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(c.member_epoch(), 0, "left the group");
    c.close().await.expect("close");
    assert_nothing_left(&client, &group, &b).await;
}

/// Moves the leadership of `topic`-0 to another replica (same replicas, new order, then a
/// preferred leader election); returns the new leader. Only this test's topic is touched.
async fn move_leader(cluster: &Cluster, topic: &str) -> i32 {
    use kafka_protocol::messages::alter_partition_reassignments_request::{
        ReassignablePartition, ReassignableTopic,
    };
    use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
    use kafka_protocol::messages::{
        AlterPartitionReassignmentsRequest, BrokerId, ElectLeadersRequest, TopicName,
    };
    cluster.refresh_topics(&[topic]).await.expect("metadata");
    let p = cluster.partitions(topic).await.expect("partitions")[0].clone();
    let mut replicas = p.replicas.clone();
    assert!(replicas.len() > 1, "needs replicas: {p:?}");
    while replicas[0] == p.leader {
        replicas.rotate_left(1);
    }
    let target = replicas[0];
    let conn = cluster.any_connection().await.expect("a broker");
    let resp = conn
        .send(
            AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![
                    ReassignableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                        .with_partitions(vec![
                            ReassignablePartition::default()
                                .with_partition_index(0)
                                .with_replicas(Some(
                                    replicas.iter().map(|r| BrokerId(*r)).collect(),
                                )),
                        ]),
                ]),
        )
        .await
        .expect("AlterPartitionReassignments");
    assert_eq!(resp.error_code, 0, "{:?}", resp.error_message);
    for t in &resp.responses {
        for p in &t.partitions {
            assert_eq!(p.error_code, 0, "{:?}", p.error_message);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let resp = conn
            .send(
                ElectLeadersRequest::default()
                    .with_election_type(0)
                    .with_timeout_ms(30_000)
                    .with_topic_partitions(Some(vec![
                        TopicPartitions::default()
                            .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                            .with_partitions(vec![0]),
                    ])),
            )
            .await
            .expect("ElectLeaders");
        let _ = cluster.refresh_topics(&[topic]).await;
        if cluster.known_leader(topic, 0) == Some(target) {
            return target;
        }
        assert!(Instant::now() < deadline, "leader never moved: {resp:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_change_moves_the_share_fetches_to_the_new_leader() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-leader");
    create_topic_with_leaders(&cluster, &topic, 1).await;
    let group = new_group(&cluster, &[]).await;
    produce(&client, &topic, 1, 50).await;

    let mut c = consumer(&client, &group, AcknowledgementMode::Implicit);
    c.subscribe([&topic]);
    let first = poll_n(&mut c, 50).await;
    assert_eq!(first.len(), 50);
    let results = c.commit_sync().await.expect("commit");
    assert!(results.values().all(|r| r.is_ok()), "{results:?}");

    let old = cluster.known_leader(&topic, 0);
    // Moved through another client, so the consumer's metadata is stale and its next fetch
    // meets NOT_LEADER_OR_FOLLOWER.
    let other = common::client().await;
    let new = move_leader(other.cluster(), &topic).await;
    assert_eq!(
        cluster.known_leader(&topic, 0),
        old,
        "the consumer's client still has the old leader"
    );
    assert_ne!(old, Some(new));
    produce(&client, &topic, 1, 50).await;
    // The consumer finds the new leader (NOT_LEADER_OR_FOLLOWER → metadata) and gets the new
    // records there; the accepted ones stay accepted.
    let mut offsets = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while offsets.len() < 50 && Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(500)).await.expect("poll") {
            assert!(r.offset >= 50, "an accepted record came back: {r:?}");
            assert_eq!(r.delivery_count, 1, "{r:?}");
            assert!(offsets.insert(r.offset), "offset {} twice", r.offset);
        }
    }
    assert_eq!(offsets, (50..100).collect::<BTreeSet<i64>>());
    let results = c.commit_sync().await.expect("commit");
    assert!(results.values().all(|r| r.is_ok()), "{results:?}");
    c.close().await.expect("close");
    assert_nothing_left(&client, &group, &topic).await;
}

/// The member ids of a share group, as its coordinator describes them (ShareGroupDescribe).
async fn group_members(cluster: &Cluster, group: &str) -> BTreeSet<String> {
    use kafka_protocol::messages::{GroupId, ShareGroupDescribeRequest};
    use rekafka::cluster::CoordinatorType;
    let coordinator = cluster
        .coordinator(CoordinatorType::Group, group)
        .await
        .expect("coordinator");
    let conn = cluster
        .connection_for_broker(coordinator)
        .await
        .expect("connection");
    let resp = conn
        .send(
            ShareGroupDescribeRequest::default()
                .with_group_ids(vec![GroupId(StrBytes::from_string(group.to_owned()))]),
        )
        .await
        .expect("ShareGroupDescribe");
    resp.groups
        .iter()
        .flat_map(|g| g.members.iter().map(|m| m.member_id.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_and_drop_leave_the_group() {
    let client = client().await;
    let cluster = client.cluster().clone();
    let topic = unique("share-leave");
    create_topic_with_leaders(&cluster, &topic, 1).await;
    let group = new_group(&cluster, &[]).await;

    let mut closed = consumer(&client, &group, AcknowledgementMode::Implicit);
    let mut dropped = consumer(&client, &group, AcknowledgementMode::Implicit);
    for c in [&mut closed, &mut dropped] {
        c.subscribe([&topic]);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while (closed.member_epoch() == 0 || dropped.member_epoch() == 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (a, b) = (closed.member_id(), dropped.member_id());
    assert_eq!(
        group_members(&cluster, &group).await,
        [a.clone(), b.clone()].into_iter().collect(),
        "both joined (their heartbeats run without polls)"
    );
    closed.close().await.expect("close");
    assert_eq!(
        group_members(&cluster, &group).await,
        [b.clone()].into_iter().collect(),
        "close left the group at once"
    );
    // Dropped without close: the heartbeat task stops and a leave is sent on the way out.
    drop(dropped);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut members = group_members(&cluster, &group).await;
    while !members.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        members = group_members(&cluster, &group).await;
    }
    assert!(members.is_empty(), "the dropped member left: {members:?}");
}

/// The member ids of share groups, as the admin client describes them (ShareGroupDescribe).
async fn described_members(admin: &Admin, groups: &[&str]) -> BTreeMap<String, Vec<String>> {
    let described = admin
        .describe_share_groups(groups)
        .await
        .expect("describe share groups");
    groups
        .iter()
        .zip(described)
        .map(|(g, d)| {
            let d = d.unwrap_or_else(|e| panic!("describe {g}: {e}"));
            let members = d.members.into_iter().map(|m| m.member_id).collect();
            (g.to_string(), members)
        })
        .collect()
}

/// `Client::close` closes the share consumers and share containers the client made (issue 19):
/// the consumer's pending acknowledgements are sent, its acquired records not acknowledged are
/// released (redelivered to the next member with delivery count 2), the container's accepted
/// records stay accepted, both members leave their groups, and the closed consumer's calls fail
/// with `Closed`. Checked with a second client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_closes_share_consumers_and_share_containers() {
    use rekafka::listener::{ListenerRecord, ShareContainer, ShareListenerRecord};

    let client = client().await;
    let cluster = client.cluster().clone();
    let (topic, container_topic) = (unique("share-cc"), unique("share-cc-container"));
    create_topic_with_leaders(&cluster, &topic, 1).await;
    create_topic_with_leaders(&cluster, &container_topic, 1).await;
    let group = new_group(&cluster, &[]).await;
    let container_group = new_group(&cluster, &[]).await;
    produce(&client, &topic, 1, 20).await;
    produce(&client, &container_topic, 1, 10).await;

    // The container: accepts every record, noting it.
    let handled = Arc::new(Mutex::new(Vec::new()));
    let mut container_consumer = consumer(&client, &container_group, AcknowledgementMode::Explicit);
    container_consumer.subscribe([&container_topic]);
    let seen = handled.clone();
    let container = ShareContainer::builder(container_consumer)
        .handler(move |r: ShareListenerRecord| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(r.offset());
                Ok(())
            }
        })
        .poll_timeout(Duration::from_millis(500))
        .start()
        .expect("start the container");

    // The consumer: every record polled, the even offsets accepted (not committed), the odd
    // ones left acquired.
    let mut c = consumer(&client, &group, AcknowledgementMode::Explicit);
    c.subscribe([&topic]);
    let got = poll_n(&mut c, 20).await;
    assert_eq!(got.len(), 20, "every record delivered");
    let mut held = BTreeSet::new();
    for r in &got {
        assert_eq!(r.delivery_count, 1);
        if r.offset % 2 == 0 {
            c.acknowledge(r, AcknowledgeType::Accept).expect("accept");
        } else {
            held.insert(r.offset);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while handled.lock().unwrap().len() < 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let handled_offsets: BTreeSet<i64> = handled.lock().unwrap().iter().copied().collect();
    assert_eq!(
        handled_offsets,
        (0..10).collect(),
        "the container handled every record"
    );
    let admin = Admin::new(cluster.clone());
    let members = described_members(&admin, &[&group, &container_group]).await;
    assert!(
        members.values().all(|m| m.len() == 1),
        "one member in each group before the close: {members:?}"
    );

    client.close().await;

    assert!(container.is_stopped(), "the client stopped the container");
    let e = c.poll(Duration::from_millis(100)).await.unwrap_err();
    assert_eq!(e.kind(), &rekafka::ErrorKind::Closed, "{e}");
    let e = c.acknowledge(&got[1], AcknowledgeType::Accept).unwrap_err();
    assert_eq!(e.kind(), &rekafka::ErrorKind::Closed, "{e}");
    let outcomes = c.take_acknowledgement_outcomes();
    let sent: usize = outcomes.iter().map(|o| o.offsets.len()).sum();
    assert!(
        outcomes.iter().all(|o| o.result.is_ok()),
        "acknowledgements at close: {outcomes:?}"
    );
    assert_eq!(
        sent, 20,
        "10 accepted and 10 released at close: {outcomes:?}"
    );

    // An independent look, from another client.
    let checker = common::client().await;
    let admin = Admin::new(checker.cluster().clone());
    let members = described_members(&admin, &[&group, &container_group]).await;
    assert!(
        members.values().all(Vec::is_empty),
        "both members left: {members:?}"
    );
    // The held records come back, on their second delivery; the accepted ones never.
    let mut next = consumer(&checker, &group, AcknowledgementMode::Explicit);
    next.subscribe([&topic]);
    let redelivered = poll_n(&mut next, held.len()).await;
    let offsets: BTreeSet<i64> = redelivered.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, held, "the released records, and only those");
    assert!(
        redelivered.iter().all(|r| r.delivery_count >= 2),
        "{redelivered:?}"
    );
    for r in &redelivered {
        next.acknowledge(r, AcknowledgeType::Accept)
            .expect("accept");
    }
    let more = next.poll(Duration::from_secs(1)).await.expect("poll");
    assert!(more.is_empty(), "unexpected redelivery: {more:?}");
    next.close().await.expect("close");
    // The container's acceptances reached the broker.
    assert_nothing_left(&checker, &container_group, &container_topic).await;
    checker.close().await;
}

//! A broker dropping share-group acknowledgements, on the three-node Apache Kafka cluster:
//! the client talks to every broker through a Kafka-aware proxy (`share_support/ack_proxy.rs`)
//! that, while armed, cuts the connection instead of forwarding a ShareAcknowledge or a
//! ShareFetch carrying acknowledgements, so the broker never sees them.
//!
//! * `ShareConsumer::commit_sync` returns a typed error for every partition whose
//!   acknowledgements were dropped; the records come back (when their acquisition locks expire,
//!   or sooner when the broker releases the closed connection's share session) with delivery
//!   count 2, and are then accepted; nothing else is left.
//! * The share container goes on through dropped acknowledgements: every record ends accepted
//!   exactly once (one acknowledgement the broker took per record), a record whose
//!   acknowledgement failed is delivered again with the next delivery count, and handled at
//!   most once more than the failed acknowledgements that covered it (the at-least-once bound).
//!
//! Named `*_kafka.rs`: the embedded mock cluster does not serve share groups.

#[path = "share_support/ack_proxy.rs"]
mod ack_proxy;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ack_proxy::AckDropProxy;
use common::{bootstrap, create_topic_with_leaders, unique};
use rekafka::Client;
use rekafka::admin::{Admin, AlterConfigOp};
use rekafka::listener::{ShareContainer, ShareContainerEvent, ShareListenerRecord};
use rekafka::producer::{ProducerConfig, Record};
use rekafka::share::{AcknowledgeType, AcknowledgementMode, ShareConsumer, ShareConsumerConfig};

const PARTITIONS: i32 = 2;

/// An acknowledgement outcome of one record: ((partition, offset), whether the broker took it).
type Acked = ((i32, i64), bool);

async fn connect(addr: String) -> Client {
    Client::builder()
        .bootstrap_servers([addr])
        .connect()
        .await
        .expect("connect")
}

/// A topic with `n` records (`v-i`, round-robin over the partitions) and a share group
/// reading it from the earliest offset with the broker's shortest lock (15 s).
async fn setup(client: &Client, prefix: &str, n: usize) -> (String, String) {
    let cluster = client.cluster();
    let topic = unique(prefix);
    create_topic_with_leaders(cluster, &topic, PARTITIONS).await;
    let group = unique(&format!("{prefix}-g"));
    Admin::new(cluster.clone())
        .alter_group_configs(
            &group,
            &[
                AlterConfigOp::set("share.auto.offset.reset", "earliest"),
                AlterConfigOp::set("share.record.lock.duration.ms", "15000"),
            ],
        )
        .await
        .expect("group configs");
    let producer = client
        .producer(ProducerConfig::default())
        .await
        .expect("producer");
    let mut acks = Vec::with_capacity(n);
    for i in 0..n {
        let r = Record::new(topic.as_str())
            .with_partition((i % PARTITIONS as usize) as i32)
            .with_value(format!("v-{i}"));
        acks.push(producer.send(r).await.expect("enqueue"));
    }
    for a in acks {
        a.await.expect("delivered");
    }
    producer.close().await;
    (topic, group)
}

fn index_of(value: Option<&[u8]>) -> usize {
    let v = std::str::from_utf8(value.expect("value")).expect("utf-8");
    v.strip_prefix("v-").expect("v-").parse().expect("index")
}

fn share_consumer(client: &Client, group: &str) -> ShareConsumer {
    client
        .share_consumer(
            ShareConsumerConfig::new(group)
                .with_acknowledgement_mode(AcknowledgementMode::Explicit)
                .with_fetch_max_wait(Duration::from_millis(200)),
        )
        .expect("share consumer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_acknowledgements_fail_per_partition_and_the_records_come_back() {
    const N: usize = 20;
    let direct = connect(bootstrap()).await;
    let (topic, group) = setup(&direct, "share-ackdrop", N).await;
    let proxy = AckDropProxy::start(direct.cluster()).await;
    let client = connect(proxy.bootstrap.clone()).await;

    let mut c = share_consumer(&client, &group);
    c.subscribe([topic.as_str()]);
    // The acknowledgements that failed, as the callback saw them.
    let failed: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let f = failed.clone();
    c.set_acknowledgement_commit_callback(move |o| {
        if o.result.is_err() {
            let p = o.partition.partition;
            f.lock()
                .unwrap()
                .extend(o.offsets.iter().map(|off| (p, *off)));
        }
    });
    // The first poll's records, delivery 1.
    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while first.len() < N && Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(500)).await.expect("poll") {
            c.acknowledge(&r, AcknowledgeType::Accept)
                .expect("acknowledge");
            first.push(r);
        }
        if first.len() < N && !first.is_empty() {
            // Acknowledged but not committed yet: the next poll would carry them on its
            // ShareFetch; commit them through the proxy's cut below instead.
            break;
        }
    }
    assert!(!first.is_empty(), "no record within 60 s");
    for r in &first {
        assert_eq!(r.delivery_count, 1, "{r:?}");
    }

    // The broker never sees these acknowledgements.
    proxy.cut_next(u32::MAX);
    let results = c.commit_sync().await.expect("commit_sync");
    proxy.cut_next(0);
    let partitions: BTreeSet<i32> = first.iter().map(|r| r.partition).collect();
    assert_eq!(
        results
            .keys()
            .map(|tp| tp.partition)
            .collect::<BTreeSet<_>>(),
        partitions,
        "a result per partition acknowledged: {results:?}"
    );
    for (tp, r) in &results {
        let e = r
            .as_ref()
            .expect_err("a dropped acknowledgement is an error");
        assert!(
            matches!(e.kind(), rekafka::ErrorKind::Disconnected),
            "{tp:?}: the transport's typed error, not {e}"
        );
    }
    let cut: BTreeSet<(i32, i64)> = proxy
        .cuts()
        .iter()
        .flat_map(|c| c.acks.clone())
        .flat_map(|(p, a, b)| (a..=b).map(move |o| (p, o)))
        .collect();
    let held: BTreeSet<(i32, i64)> = first.iter().map(|r| (r.partition, r.offset)).collect();
    assert!(
        held.is_subset(&cut),
        "every acknowledged record was in a cut request: {held:?} vs {cut:?}"
    );
    let failed: BTreeSet<(i32, i64)> = failed.lock().unwrap().iter().copied().collect();
    assert_eq!(
        failed, held,
        "every dropped acknowledgement reported as failed to the callback"
    );

    // The records come back at delivery 2 (never accepted), with every other record at 1.
    let mut again: BTreeMap<(i32, i64), u16> = BTreeMap::new();
    let mut rest: BTreeMap<(i32, i64), u16> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while (again.len() < held.len() || held.len() + rest.len() < N) && Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(500)).await.expect("poll") {
            let at = (r.partition, r.offset);
            let slot = if held.contains(&at) {
                &mut again
            } else {
                &mut rest
            };
            assert!(
                slot.insert(at, r.delivery_count).is_none(),
                "{at:?} delivered twice after the cut"
            );
            c.acknowledge(&r, AcknowledgeType::Accept)
                .expect("acknowledge");
        }
    }
    assert_eq!(
        again.keys().copied().collect::<BTreeSet<_>>(),
        held,
        "the dropped records came back"
    );
    assert!(
        again.values().all(|dc| *dc == 2),
        "redelivered at delivery 2: {again:?}"
    );
    assert!(
        rest.values().all(|dc| *dc == 1),
        "the others at delivery 1: {rest:?}"
    );
    assert_eq!(held.len() + rest.len(), N, "every record");
    let results = c.commit_sync().await.expect("commit_sync");
    assert!(results.values().all(|r| r.is_ok()), "{results:?}");

    // Nothing left: a few more polls bring nothing.
    let linger = Instant::now() + Duration::from_secs(3);
    while Instant::now() < linger {
        let extra = c.poll(Duration::from_millis(500)).await.expect("poll");
        assert!(
            extra.is_empty(),
            "records after every one was accepted: {extra:?}"
        );
    }
    c.close().await.expect("close");
    client.cluster().close().await;
    direct.cluster().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_container_goes_on_through_dropped_acknowledgements() {
    const N: usize = 200;
    const CUTS: u32 = 3;
    let direct = connect(bootstrap()).await;
    let (topic, group) = setup(&direct, "share-ackdrop-c", N).await;
    let proxy = AckDropProxy::start(direct.cluster()).await;
    let client = connect(proxy.bootstrap.clone()).await;

    // Every delivery handled: (index, delivery count).
    let handled: Arc<Mutex<Vec<(usize, u16)>>> = Arc::default();
    // Every acknowledgement outcome: ((partition, offset), ok).
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut consumer = share_consumer(&client, &group);
    consumer.subscribe([topic.as_str()]);
    let a = acked.clone();
    consumer.set_acknowledgement_commit_callback(move |o| {
        let mut a = a.lock().unwrap();
        for off in &o.offsets {
            a.push(((o.partition.partition, *off), o.result.is_ok()));
        }
    });
    // Where each index lives.
    let at_of: Arc<Mutex<BTreeMap<usize, (i32, i64)>>> = Arc::default();
    let (h, at) = (handled.clone(), at_of.clone());
    proxy.cut_next(CUTS);
    let handle = ShareContainer::builder(consumer)
        .handler(move |r: ShareListenerRecord| {
            let (h, at) = (h.clone(), at.clone());
            async move {
                let rec = r.record();
                let i = index_of(rec.value.as_deref());
                at.lock().unwrap().insert(i, (rec.partition, rec.offset));
                h.lock().unwrap().push((i, rec.delivery_count));
                Ok(())
            }
        })
        .poll_timeout(Duration::from_millis(500))
        .start()
        .expect("start");
    let mut events = handle.events();

    let accepted = || {
        acked
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.1)
            .map(|a| a.0)
            .collect::<BTreeSet<_>>()
            .len()
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while (accepted() < N || proxy.cuts().len() < CUTS as usize) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Let a duplicate show up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    handle.stop().await.expect("stopped cleanly");
    let mut ack_failed_events = 0;
    while let Ok(ev) = events.try_recv() {
        match ev {
            ShareContainerEvent::AcknowledgementFailed { .. } => ack_failed_events += 1,
            ShareContainerEvent::Stopped(err) => assert!(err.is_none(), "stopped with {err:?}"),
            ShareContainerEvent::Rejected { .. } => panic!("a record was rejected: {ev:?}"),
            _ => {}
        }
    }

    let cuts = proxy.cuts();
    assert_eq!(cuts.len(), CUTS as usize, "the proxy cut {cuts:?}");
    let handled = handled.lock().unwrap().clone();
    let acked = acked.lock().unwrap().clone();
    let at_of = at_of.lock().unwrap().clone();
    assert_eq!(at_of.len(), N, "every record handled");
    assert!(ack_failed_events > 0, "no AcknowledgementFailed event");

    // Per record: exactly one acknowledgement the broker took (the accept: the handler never
    // fails); deliveries 1, 2, … consecutive; handled at most once more than its failed
    // acknowledgements.
    let mut deliveries: BTreeMap<usize, Vec<u16>> = BTreeMap::new();
    for (i, dc) in &handled {
        deliveries.entry(*i).or_default().push(*dc);
    }
    let mut redelivered = 0;
    for (i, at) in &at_of {
        let ok = acked.iter().filter(|a| a.0 == *at && a.1).count();
        let failed = acked.iter().filter(|a| a.0 == *at && !a.1).count();
        assert_eq!(ok, 1, "record {i} at {at:?}: {ok} acknowledgements taken");
        let mut ds = deliveries[i].clone();
        ds.sort_unstable();
        ds.dedup();
        let expected: Vec<u16> = (1..=u16::try_from(ds.len()).expect("few")).collect();
        assert_eq!(ds, expected, "record {i}'s delivery counts");
        let times = deliveries[i].len();
        assert!(
            times <= 1 + failed,
            "record {i} handled {times} times with {failed} failed acknowledgements"
        );
        if times > 1 {
            redelivered += 1;
        }
    }
    // The cut acknowledgements' records came back.
    let cut: BTreeSet<(i32, i64)> = cuts
        .iter()
        .flat_map(|c| c.acks.clone())
        .flat_map(|(p, a, b)| (a..=b).map(move |o| (p, o)))
        .collect();
    for (i, at) in &at_of {
        if cut.contains(at) {
            assert!(
                deliveries[i].len() > 1,
                "record {i}: its acknowledgement was dropped but it was not delivered again"
            );
        }
    }
    eprintln!(
        "{N} records, {} deliveries, {redelivered} redelivered, {} acknowledgements cut, \
         {ack_failed_events} AcknowledgementFailed events",
        handled.len(),
        cut.len()
    );
    client.cluster().close().await;
    direct.cluster().close().await;
}

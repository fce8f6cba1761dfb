//! Share-consumer metrics (`rekafka::telemetry`'s `kafka.share.*`) after a known run on the
//! three-node Apache Kafka cluster: per partition, the records acquired, accepted, released and
//! rejected and the failed acknowledgements (one request's acknowledgements dropped by the
//! proxy of `share_support/ack_proxy.rs`) equal what the run did; the acknowledgement latency
//! histogram has a sample per request that carried acknowledgements.
//!
//! The consumer runs on a current-thread runtime inside `metrics::with_local_recorder`, so its
//! tasks record into this test's recorder only.
//!
//! Named `*_kafka.rs`: the embedded mock cluster does not serve share groups.

#[path = "share_support/ack_proxy.rs"]
mod ack_proxy;
mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ack_proxy::AckDropProxy;
use common::{bootstrap, unique};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use rekafka::Client;
use rekafka::admin::{Admin, AlterConfigOp, NewTopic};
use rekafka::producer::{ProducerConfig, Record};
use rekafka::share::{AcknowledgeType, AcknowledgementMode, ShareConsumerConfig};
use rekafka::telemetry as t;

const N: usize = 30;
const PARTITIONS: i32 = 2;

/// What the run does with record `i` on delivery `dc`.
fn verdict(i: usize, dc: u16) -> AcknowledgeType {
    match i % 5 {
        1 => AcknowledgeType::Reject,
        2 if dc == 1 => AcknowledgeType::Release,
        _ => AcknowledgeType::Accept,
    }
}

type Values = HashMap<(String, Vec<(String, String)>), DebugValue>;

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.sort();
    v
}

fn counter(values: &Values, name: &str, l: &[(String, String)]) -> u64 {
    match values.get(&(name.to_owned(), l.to_vec())) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name} {l:?}: {other:?}"),
    }
}

#[test]
fn share_consumer_metrics_count_what_the_run_did() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client_id = unique("share-metrics-client");
    // Per partition: acquired, accepted, released, rejected (as the run did them), and the
    // offsets whose acknowledgement failed.
    type Tally = BTreeMap<i32, [u64; 4]>;
    let (tally, failed, topic) = metrics::with_local_recorder(&recorder, || {
        rt.block_on(async {
            let direct = Client::builder()
                .bootstrap_servers([bootstrap()])
                .connect()
                .await
                .expect("connect");
            let cluster = direct.cluster().clone();
            let topic = unique("share-metrics");
            let admin = Admin::new(cluster.clone());
            for r in admin
                .create_topics(&[NewTopic::new(topic.as_str(), PARTITIONS)])
                .await
                .expect("create")
            {
                r.expect("created");
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while !(0..PARTITIONS).all(|p| cluster.known_leader(&topic, p).is_some())
                && Instant::now() < deadline
            {
                let _ = cluster.refresh_topics(&[topic.as_str()]).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let group = unique("share-metrics-g");
            admin
                .alter_group_configs(
                    &group,
                    &[AlterConfigOp::set("share.auto.offset.reset", "earliest")],
                )
                .await
                .expect("group configs");
            let producer = direct
                .producer(ProducerConfig::default())
                .await
                .expect("producer");
            let mut acks = Vec::new();
            for i in 0..N {
                let r = Record::new(topic.as_str())
                    .with_partition((i % PARTITIONS as usize) as i32)
                    .with_value(format!("v-{i}"));
                acks.push(producer.send(r).await.expect("enqueue"));
            }
            for a in acks {
                a.await.expect("delivered");
            }
            producer.close().await;

            let proxy = AckDropProxy::start(&cluster).await;
            let client = Client::builder()
                .bootstrap_servers([proxy.bootstrap.clone()])
                .client_id(client_id.as_str())
                .connect()
                .await
                .expect("connect through the proxy");
            let mut c = client
                .share_consumer(
                    ShareConsumerConfig::new(&group)
                        .with_acknowledgement_mode(AcknowledgementMode::Explicit)
                        .with_fetch_max_wait(Duration::from_millis(200)),
                )
                .expect("share consumer");
            let failed: Arc<Mutex<BTreeMap<i32, u64>>> = Arc::default();
            let f = failed.clone();
            c.set_acknowledgement_commit_callback(move |o| {
                if o.result.is_err() {
                    *f.lock().unwrap().entry(o.partition.partition).or_default() +=
                        o.offsets.len() as u64;
                }
            });
            c.subscribe([topic.as_str()]);
            let mut tally: Tally = BTreeMap::new();
            // Index → whether it met its end (accepted or rejected, and the broker took it).
            let mut ended: BTreeMap<usize, bool> = BTreeMap::new();
            let mut cut_once = false;
            let deadline = Instant::now() + Duration::from_secs(90);
            while ended.values().filter(|e| **e).count() < N && Instant::now() < deadline {
                let batch = c.poll(Duration::from_millis(500)).await.expect("poll");
                let mut terminal = Vec::new();
                for r in &batch {
                    let i: usize = std::str::from_utf8(r.value.as_deref().expect("value"))
                        .expect("utf-8")[2..]
                        .parse()
                        .expect("index");
                    let v = verdict(i, r.delivery_count);
                    c.acknowledge(r, v).expect("acknowledge");
                    let counts = tally.entry(r.partition).or_default();
                    counts[0] += 1;
                    match v {
                        AcknowledgeType::Accept => counts[1] += 1,
                        AcknowledgeType::Release => counts[2] += 1,
                        _ => counts[3] += 1,
                    }
                    if v != AcknowledgeType::Release {
                        terminal.push(i);
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                // The first commit's acknowledgements are dropped: they fail, and their
                // records come back.
                if !cut_once {
                    proxy.cut_next(1);
                    cut_once = true;
                }
                let results = c.commit_sync().await.expect("commit_sync");
                proxy.cut_next(0);
                let parts_failed: Vec<i32> = results
                    .iter()
                    .filter(|(_, r)| r.is_err())
                    .map(|(tp, _)| tp.partition)
                    .collect();
                for r in &batch {
                    let i: usize = std::str::from_utf8(r.value.as_deref().expect("value"))
                        .expect("utf-8")[2..]
                        .parse()
                        .expect("index");
                    if terminal.contains(&i) && !parts_failed.contains(&r.partition) {
                        ended.insert(i, true);
                    }
                }
            }
            assert_eq!(ended.len(), N, "every record met its end");
            assert_eq!(proxy.cuts().len(), 1, "one request cut");
            c.close().await.expect("close");
            client.cluster().close().await;
            cluster.close().await;
            let failed = failed.lock().unwrap().clone();
            (tally, failed, topic)
        })
    });

    let values: Values = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let mut l: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            l.sort();
            ((key.name().to_owned(), l), value)
        })
        .collect();
    assert!(
        failed.values().sum::<u64>() > 0,
        "the cut request's acknowledgements failed"
    );
    for (p, [acquired, accepted, released, rejected]) in &tally {
        let ps = p.to_string();
        let l = labels(&[
            (t::CLIENT_ID, client_id.as_str()),
            (t::TOPIC, topic.as_str()),
            (t::PARTITION, ps.as_str()),
        ]);
        assert_eq!(
            counter(&values, t::SHARE_RECORDS_ACQUIRED, &l),
            *acquired,
            "acquired, partition {p}"
        );
        assert_eq!(
            counter(&values, t::SHARE_RECORDS_ACCEPTED, &l),
            *accepted,
            "accepted, partition {p}"
        );
        assert_eq!(
            counter(&values, t::SHARE_RECORDS_RELEASED, &l),
            *released,
            "released, partition {p}"
        );
        assert_eq!(
            counter(&values, t::SHARE_RECORDS_REJECTED, &l),
            *rejected,
            "rejected, partition {p}"
        );
        assert_eq!(
            counter(&values, t::SHARE_ACKNOWLEDGEMENT_ERRORS, &l),
            failed.get(p).copied().unwrap_or(0),
            "acknowledgement errors, partition {p}"
        );
    }
    assert_eq!(tally.len(), PARTITIONS as usize, "both partitions consumed");
    match values.get(&(
        t::SHARE_ACKNOWLEDGEMENT_LATENCY.to_owned(),
        labels(&[(t::CLIENT_ID, client_id.as_str())]),
    )) {
        Some(DebugValue::Histogram(samples)) => assert!(
            !samples.is_empty(),
            "an acknowledgement latency sample per request carrying acknowledgements"
        ),
        other => panic!("acknowledgement latency: {other:?}"),
    }
}

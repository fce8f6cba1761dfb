//! `rekafka consume --share-group` against the real Kafka cluster: two runs in one share group
//! read every record exactly once between them (the first run's printed records accepted, the
//! records it fetched and did not print released and printed by the second run with delivery
//! count 2). Named `*_kafka.rs`: the mock cluster does not serve share groups. Needs
//! `REKAFKA_BOOTSTRAP`.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rekafka::admin::{Admin, AlterConfigOp, NewTopic};
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::producer::{Producer, ProducerConfig, Record};

const PARTITIONS: i32 = 2;
const N: usize = 20;

fn bootstrap() -> String {
    match std::env::var("REKAFKA_BOOTSTRAP") {
        Ok(s) if !s.is_empty() => s,
        _ => panic!(
            "REKAFKA_BOOTSTRAP is not set: run `scripts/with-broker.sh cargo test -p rekafka-cli`"
        ),
    }
}

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{t}", std::process::id())
}

/// Runs `rekafka consume` (killed after 60 s) and parses its JSON lines.
fn consume(topic: &str, group: &str, count: usize) -> Vec<serde_json::Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rekafka"))
        .args(["consume", "-t", topic, "--share-group", group, "-c"])
        .arg(count.to_string())
        .env("REKAFKA_BOOTSTRAP", bootstrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rekafka");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rekafka consume --share-group did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().expect("output");
    assert!(
        out.status.success(),
        "rekafka consume failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_share_the_records_exactly_once() {
    let cluster = Cluster::connect(ClusterConfig::new(
        bootstrap()
            .split(',')
            .map(str::to_owned)
            .collect::<Vec<_>>(),
    ))
    .await
    .expect("connect");
    let topic = unique("cli-share");
    let group = unique("cli-share-g");
    let admin = Admin::new(cluster.clone());
    for r in admin
        .create_topics(&[NewTopic::new(&topic, PARTITIONS)])
        .await
        .expect("create")
    {
        r.expect("created");
    }
    admin
        .alter_group_configs(
            &group,
            &[AlterConfigOp::set("share.auto.offset.reset", "earliest")],
        )
        .await
        .expect("group config");
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let mut acks = Vec::new();
    for i in 0..N {
        let r = Record::new(topic.as_str())
            .with_partition((i % PARTITIONS as usize) as i32)
            .with_value(format!("v-{i}"));
        acks.push(producer.send(r).await.expect("send"));
    }
    for a in acks {
        a.await.expect("delivered");
    }
    producer.close().await;

    let first = consume(&topic, &group, 5);
    assert_eq!(first.len(), 5);
    let second = consume(&topic, &group, N - 5);
    assert_eq!(second.len(), N - 5);

    // value → delivery count, across both runs: each value exactly once.
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for (run, line) in [(1, &first), (2, &second)]
        .into_iter()
        .flat_map(|(run, lines)| lines.iter().map(move |l| (run, l)))
    {
        assert_eq!(line["topic"].as_str(), Some(topic.as_str()));
        let value = line["value"].as_str().expect("value").to_owned();
        let count = line["delivery_count"].as_u64().expect("delivery_count");
        if run == 1 {
            assert_eq!(count, 1, "{line}");
        } else {
            assert!(count == 1 || count == 2, "{line}");
        }
        assert!(
            seen.insert(value.clone(), count).is_none(),
            "{value} printed twice"
        );
    }
    let expected: Vec<String> = (0..N).map(|i| format!("v-{i}")).collect();
    assert_eq!(
        seen.keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        expected.into_iter().collect(),
    );
    cluster.close().await;
}

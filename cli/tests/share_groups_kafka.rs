//! `rekafka groups` on a share group (KIP-932) against the real Kafka cluster: `config`,
//! `list --type share`, `describe` (members, assignments, start offsets), `reset-offsets`
//! (refused while a member is active; a dry run, then `--execute`), `offsets`,
//! `delete-offsets` and `delete`.
//!
//! The share-group member is made of raw requests (`tests/share_support`, shared with the
//! library's `tests/share_admin_kafka.rs`). Named `*_kafka.rs`: the mock cluster does not serve
//! share groups. Needs `REKAFKA_BOOTSTRAP` (the tests fail without it).

#[path = "../../tests/share_support/mod.rs"]
mod share_support;

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use rekafka::admin::{Admin, NewTopic, OffsetSpec, TopicPartition};
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::producer::{Producer, ProducerConfig, Record};
use share_support::RawShareMember;

const PARTITIONS: i32 = 2;
const PER_PARTITION: usize = 5;

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

fn rekafka(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rekafka"))
        .args(args)
        .env("REKAFKA_BOOTSTRAP", bootstrap())
        .output()
        .unwrap_or_else(|e| panic!("running rekafka: {e}"))
}

fn ok(args: &[&str]) -> String {
    let o = rekafka(args);
    assert!(
        o.status.success(),
        "rekafka {args:?} failed ({:?}): {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `args` until `check` accepts the output (Kafka applies some changes asynchronously).
fn until(args: &[&str], what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = ok(args);
        if check(&out) {
            return out;
        }
        assert!(Instant::now() < deadline, "{what}: not seen in\n{out}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The table rows (after the header) whose first column is `first`, split on whitespace.
fn rows_of<'a>(out: &'a str, first: &str) -> Vec<Vec<&'a str>> {
    out.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|r| r.first() == Some(&first))
        .collect()
}

/// `groups offsets` of a share group: partition → (start offset, end offset).
fn share_offsets(group: &str, topic: &str) -> BTreeMap<String, (String, String)> {
    let out = ok(&["groups", "offsets", group]);
    rows_of(&out, topic)
        .into_iter()
        .map(|r| (r[1].to_owned(), (r[2].to_owned(), r[3].to_owned())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_commands_on_a_share_group() {
    let topic = unique("cli-share");
    let group = unique("cli-share-g");
    let cluster = Cluster::connect(ClusterConfig::new(
        bootstrap()
            .split(',')
            .map(str::to_owned)
            .collect::<Vec<_>>(),
    ))
    .await
    .expect("connect");
    let admin = Admin::new(cluster.clone());
    for r in admin
        .create_topics(&[NewTopic::new(&topic, PARTITIONS)])
        .await
        .expect("create_topics")
    {
        r.expect("topic created");
    }

    // Group configs: set, then shown with their source.
    let out = ok(&[
        "groups",
        "config",
        &group,
        "--config",
        "share.auto.offset.reset=earliest",
        "--config",
        "share.delivery.count.limit=3",
    ]);
    assert!(out.contains(&format!("altered: group {group}")), "{out}");
    let shown = until(&["groups", "config", &group], "the group's configs", |o| {
        rows_of(o, "share.auto.offset.reset")
            .iter()
            .any(|r| r[1] == "earliest")
    });
    assert_eq!(
        rows_of(&shown, "share.delivery.count.limit"),
        [vec!["share.delivery.count.limit", "3", "group"]],
        "{shown}"
    );

    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let mut sent = Vec::new();
    for i in 0..PER_PARTITION * PARTITIONS as usize {
        let r = Record::new(topic.as_str())
            .with_partition(i as i32 % PARTITIONS)
            .with_value(format!("v-{i}"));
        sent.push(producer.send(r).await.expect("enqueue"));
    }
    for s in sent {
        s.await.expect("delivered");
    }
    producer.close().await;
    let ends: BTreeMap<String, i64> = admin
        .list_offsets(
            &(0..PARTITIONS)
                .map(|p| (TopicPartition::new(&topic, p), OffsetSpec::Latest))
                .collect::<Vec<_>>(),
        )
        .await
        .expect("list_offsets")
        .into_iter()
        .enumerate()
        .map(|(p, r)| {
            (
                p.to_string(),
                r.expect("end offset").offset.expect("an end offset"),
            )
        })
        .collect();

    // A member joins, takes every record and accepts it.
    let member_id = unique("cli-member");
    let mut member = RawShareMember::new(cluster.clone(), &group, &topic, &member_id);
    member.join_until_assigned(PARTITIONS as usize).await;
    let expected: BTreeMap<i32, usize> = (0..PARTITIONS).map(|p| (p, PER_PARTITION)).collect();
    member.consume_and_accept(&expected).await;

    let listed = ok(&["groups", "list", "--type", "share"]);
    assert!(listed.starts_with("GROUP"), "{listed}");
    let row = rows_of(&listed, &group);
    assert_eq!(row.len(), 1, "{listed}");
    assert_eq!(row[0][2..], ["share", "share"], "{listed}");
    let everything = ok(&["groups", "list"]);
    assert_eq!(rows_of(&everything, &group), row, "{everything}");
    let consumers = ok(&["groups", "list", "--type", "consumer"]);
    assert!(rows_of(&consumers, &group).is_empty(), "{consumers}");

    // describe: the member, its assignment, the start offsets next to the end offsets.
    let described = until(&["groups", "describe", &group], "the member", |o| {
        o.contains(&member_id)
    });
    assert!(
        described.contains(&format!("Group: {group}  State: Stable  Type: share")),
        "{described}"
    );
    assert!(described.contains("Members: 1"), "{described}");
    let m = rows_of(&described, &member_id);
    assert_eq!(m.len(), 1, "{described}");
    assert_eq!(
        m[0].last().copied(),
        Some(format!("{topic}-0,{topic}-1").as_str()),
        "{described}"
    );
    assert!(m[0].contains(&topic.as_str()), "subscription: {described}");
    let offsets = rows_of(&described, &topic);
    assert_eq!(offsets.len(), PARTITIONS as usize, "{described}");
    for r in &offsets {
        let start: i64 = r[2].parse().unwrap_or_else(|_| panic!("{described}"));
        assert!((0..=ends[r[1]]).contains(&start), "{described}");
        assert_eq!(r[3], ends[r[1]].to_string(), "{described}");
    }

    // A reset is refused while the member is active.
    member.heartbeat().await;
    let o = rekafka(&[
        "groups",
        "reset-offsets",
        &group,
        "-t",
        &topic,
        "--to-latest",
        "--execute",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("NON_EMPTY_GROUP"), "{err}");
    assert!(err.contains("stop the group's consumers first"), "{err}");

    // Once the member left: a dry run changes nothing, --execute moves the start offsets.
    member.leave().await;
    until(&["groups", "describe", &group], "the group empty", |o| {
        o.contains("State: Empty") && o.contains("Members: 0")
    });
    let before = share_offsets(&group, &topic);
    let dry = rekafka(&[
        "groups",
        "reset-offsets",
        &group,
        "-t",
        &topic,
        "--to-latest",
    ]);
    assert!(dry.status.success());
    assert!(String::from_utf8_lossy(&dry.stderr).contains("dry run"));
    let planned = String::from_utf8_lossy(&dry.stdout).into_owned();
    for r in rows_of(&planned, &topic) {
        assert_eq!(r[3], ends[r[1]].to_string(), "{planned}");
    }
    assert_eq!(share_offsets(&group, &topic), before);
    let done = ok(&[
        "groups",
        "reset-offsets",
        &group,
        "-t",
        &format!("{topic}:1"),
        "--to-latest",
        "--execute",
    ]);
    assert!(
        done.contains(&format!("reset: share group {group} (1 partitions)")),
        "{done}"
    );
    let after = share_offsets(&group, &topic);
    let end1 = ends["1"].to_string();
    assert_eq!(after["1"], (end1.clone(), end1));
    assert_eq!(after["0"], before["0"]);

    // delete-offsets forgets the topic; delete removes the group.
    let out = ok(&["groups", "delete-offsets", &group, "-t", &topic]);
    assert!(out.contains("deleted: start offsets"), "{out}");
    let out = ok(&["groups", "offsets", &group]);
    assert!(out.contains("has no start offsets"), "{out}");
    let out = ok(&["groups", "delete", &group]);
    assert!(out.contains(&format!("deleted: group {group}")), "{out}");
    let listed = ok(&["groups", "list", "--type", "share"]);
    assert!(rows_of(&listed, &group).is_empty(), "{listed}");
    cluster.close().await;
}

//! The `rekafka` binary against a real cluster (Apache Kafka from `scripts/kafka.sh`): topics
//! and groups commands, and that errors are one line on stderr with a non-zero exit. Kafka
//! propagates a new topic, an altered config or a deletion to every broker asynchronously, so
//! the commands that read them after a change are run again until they see it (`until`).
//!
//! Needs `REKAFKA_BOOTSTRAP` (the tests fail without it).

use std::process::{Command, Output};
use std::time::Duration;

use rekafka::cluster::CoordinatorType;
use rekafka::protocol::unstable::StrBytes;
use rekafka::protocol::unstable::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use rekafka::protocol::unstable::messages::{GroupId, OffsetCommitRequest, TopicName};

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

/// Runs `rekafka ARGS` with the test broker in `REKAFKA_BOOTSTRAP`.
fn rekafka(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rekafka"))
        .args(args)
        .env("REKAFKA_BOOTSTRAP", bootstrap())
        .output()
        .unwrap_or_else(|e| panic!("running rekafka: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str]) -> String {
    let o = rekafka(args);
    assert!(
        o.status.success(),
        "rekafka {args:?} failed ({:?}): {}",
        o.status.code(),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs `rekafka ARGS` until its output satisfies `check` (30 s at most): what a command reads
/// right after a change may come from a broker the change has not reached yet.
fn until(args: &[&str], what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let o = rekafka(args);
        let out = stdout(&o);
        if o.status.success() && check(&out) {
            return out;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rekafka {args:?}: {what} not seen within 30 s: {out}{}",
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The command fails with `code` and exactly one line on stderr, starting with "error: ",
/// without a panic or backtrace.
fn fails(args: &[&str], code: i32) -> String {
    let o = rekafka(args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "rekafka {args:?}: {}",
        stderr(&o)
    );
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "rekafka {args:?} stderr: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("backtrace"),
        "{err}"
    );
    err
}

#[test]
fn topics_create_list_describe_delete() {
    let topic = unique("cli-topic");
    let out = ok(&[
        "topics",
        "create",
        &topic,
        "--partitions",
        "3",
        "--replication-factor",
        "1",
        "--config",
        "retention.ms=86400000",
    ]);
    assert!(
        out.contains(&format!("created: topic {topic} with 3 partitions")),
        "{out}"
    );

    until(&["topics", "list"], "the new topic", |l| {
        l.lines().any(|l| l == topic)
    });

    let described = until(
        &["topics", "describe", &topic],
        "three partitions with leaders",
        |d| {
            d.contains("Partitions: 3")
                && d.lines()
                    .skip_while(|l| !l.starts_with("PARTITION"))
                    .skip(1)
                    .filter(|l| {
                        l.split_whitespace()
                            .nth(1)
                            .is_some_and(|x| x != "-1" && x != "none")
                    })
                    .count()
                    == 3
        },
    );
    assert!(
        described.contains(&format!("Topic: {topic}")),
        "{described}"
    );
    assert!(described.contains("Partitions: 3"), "{described}");
    assert!(described.contains("retention.ms=86400000"), "{described}");
    let partition_rows: Vec<Vec<&str>> = described
        .lines()
        .skip_while(|l| !l.starts_with("PARTITION"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(partition_rows.len(), 3, "{described}");
    for (i, row) in partition_rows.iter().enumerate() {
        assert_eq!(row[0], i.to_string());
        // --replication-factor 1: the leader is the only replica.
        assert!(
            row[1].parse::<i32>().is_ok_and(|l| l >= 0),
            "leader: {row:?}"
        );
        assert_eq!(row[2], row[1], "replicas: {row:?}");
    }

    // Creating it again fails, with the broker's reason, in one line; unless asked not to.
    let err = fails(&["topics", "create", &topic, "--partitions", "3"], 1);
    assert!(err.contains("TOPIC_ALREADY_EXISTS"), "{err}");
    let out = ok(&[
        "topics",
        "create",
        &topic,
        "--partitions",
        "3",
        "--if-not-exists",
    ]);
    assert!(out.contains(&format!("exists: topic {topic}")), "{out}");

    // Configs: set one, delete another.
    let out = ok(&[
        "topics",
        "alter",
        &topic,
        "--config",
        "retention.ms=3600000",
        "--config",
        "cleanup.policy=compact",
    ]);
    assert!(out.contains(&format!("altered: topic {topic}")), "{out}");
    ok(&[
        "topics",
        "alter",
        &topic,
        "--delete-config",
        "cleanup.policy",
    ]);
    until(
        &["topics", "describe", &topic],
        "the altered configs",
        |d| d.contains("retention.ms=3600000") && !d.contains("cleanup.policy=compact"),
    );
    let e = fails(&["topics", "alter", &topic], 2);
    assert!(e.contains("--config"), "{e}");

    let out = ok(&["topics", "delete", &topic]);
    assert!(out.contains(&format!("deleted: topic {topic}")), "{out}");
    until(&["topics", "list"], "the topic gone", |l| {
        !l.lines().any(|l| l == topic)
    });
    let err = fails(&["topics", "describe", &topic], 1);
    assert!(err.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{err}");
}

#[test]
fn groups_list_describe_offsets() {
    let topic = unique("cli-group-topic");
    let group = unique("cli-group");
    ok(&["topics", "create", &topic, "--partitions", "2"]);
    // A group with committed offsets (a standalone commit, as `assign()` users make).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let client = rekafka::Client::builder()
            .bootstrap_servers([bootstrap()])
            .request_timeout(Duration::from_secs(10))
            .build()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // The coordinator may still be loading its offsets partition, or have moved: look
        // it up again, as a client does.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let id = client
                .cluster()
                .coordinator(CoordinatorType::Group, &group)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let conn = client
                .cluster()
                .connection_for_broker(id)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let req = OffsetCommitRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_topics(vec![
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(vec![
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(1)
                                .with_committed_offset(0),
                        ]),
                ]);
            let resp = conn.send(req).await.unwrap_or_else(|e| panic!("{e}"));
            let code = resp.topics[0].partitions[0].error_code;
            // NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS, or a
            // topic the coordinator does not know yet.
            if [16, 15, 14, 3].contains(&code) && std::time::Instant::now() < deadline {
                client
                    .cluster()
                    .invalidate_coordinator(CoordinatorType::Group, &group);
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            assert_eq!(code, 0);
            break;
        }
        client.close().await;
    });

    let listed = until(&["groups", "list"], "the group", |l| {
        l.lines()
            .any(|l| l.split_whitespace().next() == Some(&group))
    });
    assert!(listed.starts_with("GROUP"), "{listed}");
    assert!(
        listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&group)),
        "{listed}"
    );
    let described = ok(&["groups", "describe", &group]);
    assert!(
        described.contains(&format!("Group: {group}")),
        "{described}"
    );
    assert!(described.contains("Members: 0"), "{described}");

    let offsets = ok(&["groups", "offsets", &group]);
    let rows: Vec<Vec<&str>> = offsets
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    // TOPIC PARTITION COMMITTED END LAG: offset 0 committed on an empty partition.
    assert_eq!(
        rows,
        [vec![topic.as_str(), "1", "0", "0", "0"]],
        "{offsets}"
    );

    let out = ok(&["groups", "delete", &group]);
    assert!(out.contains(&format!("deleted: group {group}")), "{out}");
    let listed = ok(&["groups", "list"]);
    assert!(
        !listed
            .lines()
            .any(|l| l.split_whitespace().next() == Some(&group)),
        "{listed}"
    );
    ok(&["topics", "delete", &topic]);
}

#[test]
fn bad_arguments_give_one_line_and_a_non_zero_exit() {
    let e = fails(&["topics", "create", "x", "--partitions", "many"], 2);
    assert!(e.contains("--partitions"), "{e}");
    let e = fails(&["topics", "create", "x"], 2);
    assert!(e.contains("--partitions"), "{e}");
    let e = fails(&["topics", "frobnicate"], 2);
    assert!(e.contains("frobnicate"), "{e}");
    let e = fails(&["nosuchcommand"], 2);
    assert!(e.contains("nosuchcommand"), "{e}");
    let e = fails(&["topics", "list", "--bogus"], 2);
    assert!(e.contains("--bogus"), "{e}");
    let e = fails(&["-X", "bootstrap.server=x", "topics", "list"], 2);
    assert!(e.contains("did you mean 'bootstrap.servers'?"), "{e}");
    let e = fails(&["-X", "request.timeout.ms=soon", "topics", "list"], 2);
    assert!(e.contains("request.timeout.ms"), "{e}");
    let e = fails(&["-X", "oops", "topics", "list"], 2);
    assert!(e.contains("key=value"), "{e}");
    // An unreachable broker: a failed operation (1), still one line.
    let e = fails(
        &[
            "-b",
            "127.0.0.1:1",
            "-X",
            "socket.connection.setup.timeout.ms=500",
            "topics",
            "list",
        ],
        1,
    );
    assert!(e.contains("127.0.0.1:1"), "{e}");
    // No bootstrap at all.
    let o = Command::new(env!("CARGO_BIN_EXE_rekafka"))
        .args(["topics", "list"])
        .env_remove("REKAFKA_BOOTSTRAP")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("REKAFKA_BOOTSTRAP"));
    // Help lists the commands.
    let help = ok(&["--help"]);
    for cmd in [
        "topics create",
        "topics list",
        "topics describe",
        "topics alter",
        "topics delete",
        "groups list",
        "groups describe",
        "groups offsets",
        "groups delete",
        "groups delete-offsets",
        "groups config",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help");
    }
}

/// Runs `rekafka ARGS` with `stdin` as its input.
fn with_stdin(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rekafka"))
        .args(args)
        .env("REKAFKA_BOOTSTRAP", bootstrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running rekafka: {e}"));
    if let Some(mut input) = child.stdin.take() {
        input
            .write_all(stdin.as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("running rekafka: {e}"))
}

#[test]
fn produce_and_consume_with_kcat_habits() {
    let topic = unique("cli-kcat");
    ok(&["topics", "create", &topic, "--partitions", "2"]);
    let o = with_stdin(
        &[
            "produce", "-t", &topic, "-p", "1", "-K", ":", "-H", "src=cli",
        ],
        "k1:v1\nk2:v2\nk3:v3\n",
    );
    assert!(o.status.success(), "{}", stderr(&o));
    // Every field through -f; the records are where -p put them, with -K's keys.
    let out = until(
        &[
            "consume",
            "-t",
            &topic,
            "-o",
            "beginning",
            "-e",
            "-f",
            "%t %p %o %k %s %h\\n",
        ],
        "the three records",
        |o| o.lines().count() == 3,
    );
    let want: Vec<String> = (0..3)
        .map(|i| format!("{topic} 1 {i} k{} v{} src=cli", i + 1, i + 1))
        .collect();
    assert_eq!(out.lines().collect::<Vec<_>>(), want);
    // -o -1: the last record of each partition (partition 0 is empty); -K prints key:value.
    let out = ok(&["consume", "-t", &topic, "-o", "-1", "-e", "-K", ":"]);
    assert_eq!(out, "k3:v3\n");
    // -J with -c: kcat's envelope, and %T agrees with its ts.
    let out = ok(&[
        "consume", "-t", &topic, "-p", "1", "-o", "1", "-c", "1", "-J",
    ]);
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["offset"], 1);
    assert_eq!(v["key"], "k2");
    assert_eq!(v["payload"], "v2");
    assert_eq!(v["headers"], serde_json::json!(["src", "cli"]));
    let ts = v["ts"].as_i64().unwrap_or_default();
    let out = ok(&[
        "consume", "-t", &topic, "-p", "1", "-o", "1", "-c", "1", "-f", "%T",
    ]);
    assert_eq!(out.parse::<i64>().ok(), Some(ts));
    // s@TS: from the first record at or after that time: the second one or an earlier one
    // with the same millisecond, never one after it.
    let at = format!("s@{ts}");
    let out = ok(&["consume", "-t", &topic, "-o", &at, "-e", "-f", "%o\\n"]);
    let offsets: Vec<i64> = out.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(offsets.first().is_some_and(|&o| o <= 1), "{offsets:?}");
    assert_eq!(offsets.last(), Some(&2), "{offsets:?}");
    ok(&["topics", "delete", &topic]);
}

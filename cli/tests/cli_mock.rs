//! The `rekafka` command line against an in-process mock cluster: every global flag reaches
//! every command (produce, dlt inspect, dlt replay) and a bad property is an error on each;
//! `produce` from files and stdin with keys, headers and a partition; kcat's `-f`, `-J`,
//! `-K`, `-o -N` and `-o s@TS` in `consume`; a closed stdout and SIGTERM stop `consume`
//! cleanly: exit 0, the group commits what was printed (no more) and is left; and every
//! subcommand has its own `--help`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rekafka::mock::{KeyValue, MockCluster};
use rekafka::protocol::unstable::ApiKey;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rekafka"));
    c.env_remove("REKAFKA_BOOTSTRAP");
    c
}

/// Runs `rekafka -b BOOTSTRAP ARGS` with `stdin`, off the test's runtime.
async fn run(bootstrap: &str, args: &[&str], stdin: &str) -> Output {
    let mut cmd = bin();
    cmd.arg("-b").arg(bootstrap).args(args);
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).unwrap();
        drop(input);
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok_lines(args: &[&str], o: &Output) -> Vec<String> {
    assert!(
        o.status.success(),
        "rekafka {args:?} exited {:?}: {}",
        o.status.code(),
        stderr(o)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The command fails with exit code 2 and one line on stderr that names `key`.
fn usage_error(o: &Output, key: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: ") && err.contains(key), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_properties_fail_every_command() {
    // No broker is needed to refuse them: they fail before connecting.
    let nowhere = "127.0.0.1:1";
    for cmd in [
        &["produce", "-t", "t"][..],
        &["consume", "-t", "t"],
        &["perf", "produce", "-t", "t", "-n", "1"],
        &["dlt", "inspect", "-t", "t"],
        &["dlt", "replay", "-t", "t"],
        &["topics", "list"],
    ] {
        let mut args = vec!["-X", "linger.mss=5"];
        args.extend_from_slice(cmd);
        usage_error(&run(nowhere, &args, "x\n").await, "linger.mss");
        let mut args = cmd.to_vec();
        args.extend_from_slice(&["-X", "no.such.key=1"]);
        usage_error(&run(nowhere, &args, "x\n").await, "no.such.key");
    }
    // Invalid values of keys the command knows.
    usage_error(
        &run(
            nowhere,
            &["-X", "linger.ms=notanumber", "produce", "-t", "t"],
            "x\n",
        )
        .await,
        "linger.ms",
    );
    usage_error(
        &run(
            nowhere,
            &["-X", "acks=some", "dlt", "replay", "-t", "t"],
            "",
        )
        .await,
        "acks",
    );
    usage_error(
        &run(
            nowhere,
            &["-X", "isolation.level=x", "dlt", "inspect", "-t", "t"],
            "",
        )
        .await,
        "isolation.level",
    );
    // A -F file is checked the same way.
    let dir = std::env::temp_dir().join(format!("cli-mock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.properties");
    std::fs::write(&file, "batch.sizee=5\n").unwrap();
    usage_error(
        &run(
            nowhere,
            &["-F", file.to_str().unwrap(), "produce", "-t", "t"],
            "x\n",
        )
        .await,
        "batch.sizee",
    );
    // A secret from a file that is not there.
    usage_error(
        &run(
            nowhere,
            &["-X", "sasl.password=@/nonexistent/pw", "topics", "list"],
            "",
        )
        .await,
        "/nonexistent/pw",
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn properties_reach_produce_and_dlt_replay() {
    let mock = MockCluster::builder()
        .topic("orders", 2)
        .topic("orders-dlt", 1)
        .start()
        .await
        .unwrap();
    let b = mock.bootstrap();
    // produce: client.id and enable.idempotence=false from -X reach the Produce requests.
    let out = run(
        &b,
        &[
            "produce",
            "-t",
            "orders-dlt",
            "-H",
            "kafka_dlt-original-topic=orders",
            "-X",
            "client.id=produce-x",
            "-X",
            "enable.idempotence=false",
        ],
        "a\nb\nc\n",
    )
    .await;
    ok_lines(&["produce"], &out);
    assert_eq!(mock.high_watermark("orders-dlt", 0).unwrap(), 3);
    let produces: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key == ApiKey::Produce)
        .collect();
    assert!(!produces.is_empty());
    for r in &produces {
        assert_eq!(r.client_id.as_deref(), Some("produce-x"));
        assert!(r.producer_id.is_none_or(|p| p < 0), "{r:?}");
    }
    // dlt inspect: a consumer key applies (max.poll.records=1 still reads all three).
    let args = [
        "dlt",
        "inspect",
        "-t",
        "orders-dlt",
        "-e",
        "-X",
        "max.poll.records=1",
    ];
    let lines = ok_lines(&args, &run(&b, &args, "").await);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["dead_letter"]["original_topic"], "orders");
    // dlt replay: producer keys (acks=1, no idempotence, client.id) reach the republishing producer.
    mock.clear_requests();
    let args = [
        "dlt",
        "replay",
        "-t",
        "orders-dlt",
        "-X",
        "acks=1",
        "-X",
        "enable.idempotence=false",
        "-X",
        "client.id=replay-x",
    ];
    let lines = ok_lines(&args, &run(&b, &args, "").await);
    assert_eq!(lines.len(), 3, "{lines:?}");
    let republished =
        mock.high_watermark("orders", 0).unwrap() + mock.high_watermark("orders", 1).unwrap();
    assert_eq!(republished, 3);
    let produces: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key == ApiKey::Produce)
        .collect();
    assert!(!produces.is_empty());
    for r in &produces {
        assert_eq!(r.acks, Some(1), "{r:?}");
        assert!(r.producer_id.is_none_or(|p| p < 0), "{r:?}");
        assert_eq!(r.client_id.as_deref(), Some("replay-x"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_from_files_and_kcat_formats() {
    let mock = MockCluster::builder().topic("k", 2).start().await.unwrap();
    let b = mock.bootstrap();
    let dir = std::env::temp_dir().join(format!("cli-mock-kcat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("records.txt");
    std::fs::write(&file, "k1:v1\nk2:v2\n").unwrap();
    // A file, then stdin ("-"), with -K, a header, and partition 1.
    let args = [
        "produce",
        "-t",
        "k",
        "-p",
        "1",
        "-K",
        ":",
        "-H",
        "h=x",
        file.to_str().unwrap(),
        "-",
    ];
    ok_lines(&args, &run(&b, &args, "k3:v3\nnokey\n").await);
    let recs = mock.records("k", 1).unwrap();
    let kv: Vec<KeyValue<'_>> = recs
        .iter()
        .map(|r| (r.key.as_deref(), r.value.as_deref()))
        .collect();
    assert_eq!(
        kv,
        [
            (Some(&b"k1"[..]), Some(&b"v1"[..])),
            (Some(b"k2"), Some(b"v2")),
            (Some(b"k3"), Some(b"v3")),
            (None, Some(b"nokey")),
        ]
    );
    assert!(mock.records("k", 0).unwrap().is_empty());
    // -f with every field.
    let args = [
        "consume",
        "-t",
        "k",
        "-p",
        "1",
        "-o",
        "beginning",
        "-e",
        "-f",
        "%t|%p|%o|%k|%s|%h|%K|%S\\n",
    ];
    let lines = ok_lines(&args, &run(&b, &args, "").await);
    assert_eq!(
        lines,
        [
            "k|1|0|k1|v1|h=x|2|2",
            "k|1|1|k2|v2|h=x|2|2",
            "k|1|2|k3|v3|h=x|2|2",
            "k|1|3||nokey|h=x|-1|5"
        ]
    );
    // %T is the record's timestamp.
    let args = [
        "consume",
        "-t",
        "k",
        "-p",
        "1",
        "-o",
        "beginning",
        "-c",
        "1",
        "-f",
        "%T",
    ];
    let out = ok_lines(&args, &run(&b, &args, "").await);
    let ts: i64 = out[0].parse().unwrap();
    assert_eq!(ts, recs[0].timestamp);
    // -o -2: the last two records of each partition; -K: key SEP value; -Z: NULL.
    let args = ["consume", "-t", "k", "-o", "-2", "-e", "-K", "=", "-Z"];
    let lines = ok_lines(&args, &run(&b, &args, "").await);
    assert_eq!(lines, ["k3=v3", "NULL=nokey"]);
    // -o s@TS: from the first record at or after the time of the third.
    let at = format!("s@{}", recs[2].timestamp);
    let args = [
        "consume", "-t", "k", "-p", "1", "-o", &at, "-e", "--format", "value",
    ];
    let lines = ok_lines(&args, &run(&b, &args, "").await);
    assert!(
        lines.ends_with(&["v3".to_owned(), "nokey".to_owned()]),
        "{lines:?}"
    );
    assert!(!lines.contains(&"v1".to_owned()) || recs[0].timestamp == recs[2].timestamp);
    // A time after every record: nothing.
    let args = ["consume", "-t", "k", "-o", "s@99999999999999", "-e"];
    assert!(ok_lines(&args, &run(&b, &args, "").await).is_empty());
    // -J: kcat's envelope.
    let args = ["consume", "-t", "k", "-p", "1", "-o", "3", "-c", "1", "-J"];
    let lines = ok_lines(&args, &run(&b, &args, "").await);
    let v: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(v["topic"], "k");
    assert_eq!(v["partition"], 1);
    assert_eq!(v["offset"], 3);
    assert_eq!(v["tstype"], "create");
    assert_eq!(v["ts"], recs[3].timestamp);
    assert_eq!(v["key"], serde_json::Value::Null);
    assert_eq!(v["payload"], "nokey");
    assert_eq!(v["headers"], serde_json::json!(["h", "x"]));
    // A bad format and a bad offset are usage errors.
    usage_error(
        &run(&b, &["consume", "-t", "k", "-f", "%q"], "").await,
        "%q",
    );
    usage_error(
        &run(&b, &["consume", "-t", "k", "-o", "s@soon"], "").await,
        "s@soon",
    );
    // A missing file is a usage error too.
    usage_error(
        &run(&b, &["produce", "-t", "k", "/nonexistent/records"], "").await,
        "/nonexistent/records",
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Spawns `rekafka consume` in `group` from the beginning of `topic`, reads `n` lines.
fn spawn_consumer(
    bootstrap: &str,
    topic: &str,
    group: &str,
    n: usize,
) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = bin()
        .args(["-b", bootstrap, "consume", "-t", topic, "-g", group])
        .args(["-o", "beginning", "-X", "session.timeout.ms=30000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    for i in 0..n {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["offset"], i as i64, "{line}");
    }
    (child, out)
}

/// Waits (30 s at most: a liveness bound, generous for a machine at load 15, where 10 s was
/// once not enough) for `child` to exit, returning its exit code and stderr.
fn wait_exit(mut child: std::process::Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                std::io::Read::read_to_string(&mut e, &mut err).unwrap();
            }
            return (status.code(), err);
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("rekafka consume did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn left_group(mock: &MockCluster, group: &str) -> bool {
    mock.requests()
        .iter()
        .any(|r| r.api_key == ApiKey::LeaveGroup && r.group_id.as_deref() == Some(group))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_commits_what_was_printed_and_leaves_the_group() {
    let mock = MockCluster::builder()
        .topic("pipe", 1)
        .start()
        .await
        .unwrap();
    let b = mock.bootstrap();
    let five = "0\n1\n2\n3\n4\n";
    ok_lines(
        &["produce"],
        &run(&b, &["produce", "-t", "pipe"], five).await,
    );
    let bb = b.clone();
    let (child, out) =
        tokio::task::spawn_blocking(move || spawn_consumer(&bb, "pipe", "pipe-group", 5))
            .await
            .unwrap();
    // The reader goes away (as `| head -5` does); the next records cannot be printed.
    drop(out);
    ok_lines(
        &["produce"],
        &run(&b, &["produce", "-t", "pipe"], five).await,
    );
    let (code, err) = tokio::task::spawn_blocking(move || wait_exit(child))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(err.is_empty(), "{err}");
    // The five printed are committed, the five refused by the pipe are not.
    assert_eq!(mock.committed_offset("pipe-group", "pipe", 0), Some(5));
    assert!(left_group(&mock, "pipe-group"));
}

/// `kill -<signal>` to a `consume` in a group: it commits what it printed, leaves the group
/// and exits 0.
#[cfg(unix)]
async fn signal_commits_and_leaves_the_group(signal: &str) {
    let topic = format!("sig{}", signal.to_lowercase());
    let group = format!("{topic}-group");
    let mock = MockCluster::builder()
        .topic(topic.as_str(), 1)
        .start()
        .await
        .unwrap();
    let b = mock.bootstrap();
    ok_lines(
        &["produce"],
        &run(&b, &["produce", "-t", &topic], "a\nb\nc\n").await,
    );
    let (bb, t, g) = (b.clone(), topic.clone(), group.clone());
    let (child, out) = tokio::task::spawn_blocking(move || spawn_consumer(&bb, &t, &g, 3))
        .await
        .unwrap();
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args([format!("-{signal}").as_str(), &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let (code, err) = tokio::task::spawn_blocking(move || wait_exit(child))
        .await
        .unwrap();
    drop(out);
    assert_eq!(code, Some(0), "SIG{signal}: {err}");
    assert_eq!(mock.committed_offset(&group, &topic, 0), Some(3));
    assert!(
        left_group(&mock, &group),
        "SIG{signal}: the group was not left"
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_commits_and_leaves_the_group() {
    signal_commits_and_leaves_the_group("TERM").await;
}

/// Ctrl-C in a terminal is SIGINT to the process.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_commits_and_leaves_the_group() {
    signal_commits_and_leaves_the_group("INT").await;
}

#[test]
fn every_subcommand_has_its_own_help() {
    let help = |args: &[&str]| {
        let o = bin().args(args).arg("--help").output().unwrap();
        assert!(o.status.success(), "{args:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["topics", "create"],
            &[
                "Usage: rekafka topics create",
                "--partitions <N>",
                "--if-not-exists",
            ],
        ),
        (
            &["topics", "list"],
            &["Usage: rekafka topics list", "--internal"],
        ),
        (&["topics", "alter"], &["--delete-config <KEY>"]),
        (
            &["groups", "offsets"],
            &["Usage: rekafka groups offsets", "<GROUP>"],
        ),
        (
            &["groups", "list"],
            &["Usage: rekafka groups list", "--type <TYPE>"],
        ),
        (
            &["groups", "delete-offsets"],
            &["Usage: rekafka groups delete-offsets", "--topic <TOPIC>"],
        ),
        (
            &["groups", "config"],
            &[
                "Usage: rekafka groups config",
                "--config <KEY=VALUE>",
                "--delete-config <KEY>",
            ],
        ),
        (
            &["produce"],
            &[
                "Usage: rekafka produce",
                "--key-separator <SEP>",
                "--transactional-id <ID>",
                "[FILE]...",
            ],
        ),
        (
            &["consume"],
            &[
                "Usage: rekafka consume",
                "-f, --fmt <FORMAT>",
                "-J, --json-envelope",
                "s@TIMESTAMP",
                "%T",
            ],
        ),
        (
            &["perf", "produce"],
            &["Usage: rekafka perf produce", "--threads <N>"],
        ),
        (
            &["perf", "consume"],
            &["Usage: rekafka perf consume", "--count <COUNT>"],
        ),
        (
            &["dlt", "inspect"],
            &["Usage: rekafka dlt inspect", "read_committed"],
        ),
        (
            &["dlt", "replay"],
            &[
                "Usage: rekafka dlt replay",
                "--where <COND>",
                "--strip-provenance",
            ],
        ),
        (&["mock"], &["Usage: rekafka mock", "--brokers <N>"]),
        (
            &["groups", "reset-offsets"],
            &[
                "Usage: rekafka groups reset-offsets",
                "--to-datetime <TIME>",
                "--execute",
            ],
        ),
    ];
    for (cmd, wants) in cases {
        let text = help(cmd);
        for want in *wants {
            assert!(
                text.contains(want),
                "{cmd:?} --help lacks {want:?}:\n{text}"
            );
        }
        // The global flags are listed on every command's help, aligned by clap.
        assert!(
            text.contains("-X, --property <KEY=VALUE>"),
            "{cmd:?}:\n{text}"
        );
    }
    // Help of one subcommand is not the global help.
    assert!(!help(&["consume"]).contains("Commands in full"));
    assert!(help(&[]).contains("Exit status:"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_produce_limits_the_rate_and_reports_latency_percentiles() {
    let mock = MockCluster::builder()
        .topic("perf", 1)
        .start()
        .await
        .unwrap();
    let b = mock.bootstrap();
    let args = [
        "perf",
        "produce",
        "-t",
        "perf",
        "-n",
        "200",
        "-s",
        "10",
        "--throughput",
        "400",
    ];
    let lines = ok_lines(&args, &run(&b, &args, "").await);
    let last = lines.last().cloned().unwrap_or_default();
    let field = |name: &str| -> f64 {
        last.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {last}"))
    };
    assert_eq!(field("records"), 200.0);
    // 200 records at 400 a second: the last is due after 199/400 s.
    assert!(field("secs") >= 0.49, "{last}");
    let (p50, p95, p99, max) = (
        field("p50_ms"),
        field("p95_ms"),
        field("p99_ms"),
        field("max_ms"),
    );
    assert!(p50 <= p95 && p95 <= p99 && p99 <= max, "{last}");
    assert!(max > 0.0, "{last}");
    assert_eq!(mock.high_watermark("perf", 0).unwrap(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_reset_offsets_is_a_dry_run_unless_executed() {
    let mock = MockCluster::builder()
        .topic("reset", 2)
        .start()
        .await
        .unwrap();
    let b = mock.bootstrap();
    let five = "0\n1\n2\n3\n4\n";
    for p in ["0", "1"] {
        let args = ["produce", "-t", "reset", "-p", p];
        ok_lines(&args, &run(&b, &args, five).await);
    }
    // The group reads everything and commits 5 on each partition as it leaves.
    let args = [
        "consume",
        "-t",
        "reset",
        "-g",
        "rg",
        "-o",
        "beginning",
        "-c",
        "10",
    ];
    assert_eq!(ok_lines(&args, &run(&b, &args, "").await).len(), 10);
    assert_eq!(mock.committed_offset("rg", "reset", 0), Some(5));
    let committed = || {
        (
            mock.committed_offset("rg", "reset", 0),
            mock.committed_offset("rg", "reset", 1),
        )
    };
    // A dry run shows the plan and changes nothing.
    let args = [
        "groups",
        "reset-offsets",
        "rg",
        "-t",
        "reset",
        "--to-earliest",
    ];
    let plan = ok_lines(&args, &run(&b, &args, "").await);
    assert_eq!(
        plan[0].split_whitespace().collect::<Vec<_>>(),
        ["TOPIC", "PARTITION", "CURRENT", "NEW"]
    );
    assert_eq!(
        plan[1].split_whitespace().collect::<Vec<_>>(),
        ["reset", "0", "5", "0"]
    );
    assert_eq!(committed(), (Some(5), Some(5)));
    // --execute commits it; one partition only with TOPIC:P.
    let args = [
        "groups",
        "reset-offsets",
        "rg",
        "-t",
        "reset:1",
        "--to-earliest",
        "--execute",
    ];
    ok_lines(&args, &run(&b, &args, "").await);
    assert_eq!(committed(), (Some(5), Some(0)));
    let args = [
        "groups",
        "reset-offsets",
        "rg",
        "-t",
        "reset",
        "--shift-by",
        "-2",
        "--execute",
    ];
    ok_lines(&args, &run(&b, &args, "").await);
    // 5 - 2 = 3; 0 - 2 is kept at the earliest offset, 0.
    assert_eq!(committed(), (Some(3), Some(0)));
    let args = [
        "groups",
        "reset-offsets",
        "rg",
        "-t",
        "reset",
        "--to-offset",
        "100",
        "--execute",
    ];
    ok_lines(&args, &run(&b, &args, "").await);
    assert_eq!(committed(), (Some(5), Some(5)), "kept at the latest offset");
    let args = [
        "groups",
        "reset-offsets",
        "rg",
        "-t",
        "reset",
        "--to-datetime",
        "1970-01-01T00:00:00Z",
        "--execute",
    ];
    ok_lines(&args, &run(&b, &args, "").await);
    assert_eq!(committed(), (Some(0), Some(0)));
    // The consumer resumes where the reset put it.
    let args = [
        "consume", "-t", "reset", "-g", "rg", "-e", "--format", "value",
    ];
    assert_eq!(ok_lines(&args, &run(&b, &args, "").await).len(), 10);
    // Exactly one --to-*/--shift-by.
    let o = run(&b, &["groups", "reset-offsets", "rg", "-t", "reset"], "").await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run(
        &b,
        &[
            "groups",
            "reset-offsets",
            "rg",
            "-t",
            "reset",
            "--to-earliest",
            "--to-latest",
        ],
        "",
    )
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// Progress (count, percentage, rate, ETA) goes to stderr once a second when stderr is a
/// terminal (here a pseudo-terminal made by util-linux `script`), and never otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perf_progress_is_shown_on_a_terminal_only() {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    }
    let mock = MockCluster::builder()
        .topic("progress", 1)
        .start()
        .await
        .unwrap();
    let b = mock.bootstrap();
    let args = [
        "perf",
        "produce",
        "-t",
        "progress",
        "-n",
        "600",
        "-s",
        "10",
        "--throughput",
        "200",
    ];
    // Not a terminal: no progress line.
    let piped = run(&b, &args, "").await;
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert!(!stderr(&piped).contains("ETA"), "{}", stderr(&piped));
    // A terminal: at least one progress line during the three seconds.
    let line = format!(
        "'{}' -b {b} {}",
        env!("CARGO_BIN_EXE_rekafka"),
        args.join(" ")
    );
    let out = tokio::task::spawn_blocking(move || {
        Command::new("script")
            .args(["-qefc", &line, "/dev/null"])
            .env_remove("REKAFKA_BOOTSTRAP")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{shown}");
    assert!(
        shown.contains("/600 records (") && shown.contains("/s, ETA "),
        "no progress line on the terminal: {shown:?}"
    );
    // Both runs produced all their records.
    assert_eq!(mock.high_watermark("progress", 0).unwrap(), 2 * 600);
}

//! `rekafka consume` end to end against an in-process mock cluster: the JSON line format of
//! issue 6 item 8 exactly (field order, UTF-8 vs `_b64` fields, null key/value, headers as
//! `[[name, value-or-null], ...]` in wire order with `{"b64": ...}` for non-UTF-8 values), and
//! the global `-F`/`-X` properties reaching the client (client.id) and the consumer (group.id,
//! auto.offset.reset, isolation.level).

use std::process::{Command, Output};

use bytes::Bytes;
use rekafka::connection::{Connection, ConnectionConfig};
use rekafka::mock::MockCluster;
use rekafka::protocol::record::BatchBuilder;
use rekafka::protocol::unstable::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use rekafka::protocol::unstable::messages::{ProduceRequest, TopicName};

type Rec<'a> = (
    i64,
    Option<&'a [u8]>,
    Option<&'a [u8]>,
    Vec<(&'a str, Option<&'a [u8]>)>,
);

async fn produce(mock: &MockCluster, topic: &str, partition: i32, recs: &[Rec<'_>]) {
    let leader = mock.partition_leader(topic, partition).unwrap();
    let i = mock.broker_ids().iter().position(|&b| b == leader).unwrap();
    let conn = Connection::connect(
        &mock.broker_addrs()[i],
        leader,
        &ConnectionConfig::default(),
    )
    .await
    .unwrap();
    let mut b = BatchBuilder::new();
    for (ts, k, v, h) in recs {
        b.append(*ts, *k, *v, h).unwrap();
    }
    let records: Bytes = b.build().unwrap();
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(topic.to_string().into()))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ]);
    let resp = conn.send(req).await.unwrap();
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
}

async fn rekafka(bootstrap: &str, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let bootstrap = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_rekafka"))
            .arg("-b")
            .arg(bootstrap)
            .args(args)
            .env_remove("REKAFKA_BOOTSTRAP")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn stdout_lines(o: &Output) -> Vec<String> {
    assert!(
        o.status.success(),
        "exit {:?}: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_prints_the_documented_json_lines() {
    let mock = MockCluster::builder()
        .brokers(2)
        .topic("j", 2)
        .start()
        .await
        .unwrap();
    produce(
        &mock,
        "j",
        0,
        &[
            (
                1000,
                Some(b"k0"),
                Some(b"hello"),
                vec![("h1", Some(b"a")), ("h2", None), ("h1", Some(b"b"))],
            ),
            (1001, None, Some(&[0xff, 0x00]), vec![]),
            (
                1002,
                Some(&[0xfe]),
                Some(b"x\"y\n\\\t\x01"),
                vec![("bin", Some(&[0xff]))],
            ),
        ],
    )
    .await;
    produce(
        &mock,
        "j",
        1,
        &[(
            2000,
            Some(b"only"),
            None,
            vec![("\u{e9}", Some("\u{e9}".as_bytes()))],
        )],
    )
    .await;
    let out = rekafka(
        &mock.bootstrap(),
        &[
            "consume",
            "-t",
            "j",
            "-o",
            "beginning",
            "-e",
            "--format",
            "json",
        ],
    )
    .await;
    let mut lines = stdout_lines(&out);
    lines.sort();
    let mut want = vec![
        r#"{"topic":"j","partition":0,"offset":0,"timestamp":1000,"key":"k0","value":"hello","headers":[["h1","a"],["h2",null],["h1","b"]]}"#.to_owned(),
        r#"{"topic":"j","partition":0,"offset":1,"timestamp":1001,"key":null,"value_b64":"/wA=","headers":[]}"#.to_owned(),
        r#"{"topic":"j","partition":0,"offset":2,"timestamp":1002,"key_b64":"/g==","value":"x\"y\n\\\t\u0001","headers":[["bin",{"b64":"/w=="}]]}"#.to_owned(),
        "{\"topic\":\"j\",\"partition\":1,\"offset\":0,\"timestamp\":2000,\"key\":\"only\",\"value\":null,\"headers\":[[\"\u{e9}\",\"\u{e9}\"]]}".to_owned(),
    ];
    want.sort();
    assert_eq!(lines, want);
    // Every line is valid JSON.
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        assert_eq!(v["topic"], "j");
    }
    // -p and -c: one partition, a count.
    let out = rekafka(
        &mock.bootstrap(),
        &[
            "consume", "-t", "j", "-p", "0", "-o", "1", "-c", "1", "--format", "value",
        ],
    )
    .await;
    assert_eq!(out.stdout, b"\xff\x00\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_properties_reach_the_client_and_the_consumer() {
    let mock = MockCluster::builder().topic("p", 1).start().await.unwrap();
    let recs: Vec<Rec<'_>> = (0..4).map(|i| (i, None, Some(&b"v"[..]), vec![])).collect();
    produce(&mock, "p", 0, &recs).await;
    let dir = std::env::temp_dir().join(format!("consume-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("consumer.properties");
    std::fs::write(
        &file,
        "# a Java properties file\ngroup.id=from-file\nauto.offset.reset=earliest\n",
    )
    .unwrap();
    // group.id and auto.offset.reset from -F (no -g, no -o), client.id and
    // session.timeout.ms from -X: a group member reading from the beginning.
    let out = rekafka(
        &mock.bootstrap(),
        &[
            "-F",
            file.to_str().unwrap(),
            "-X",
            "client.id=cli-props",
            "-X",
            "session.timeout.ms=7000",
            "consume",
            "-t",
            "p",
            "-e",
        ],
    )
    .await;
    assert_eq!(
        stdout_lines(&out).len(),
        4,
        "auto.offset.reset=earliest applied"
    );
    assert_eq!(
        mock.committed_offset("from-file", "p", 0),
        Some(4),
        "group.id applied"
    );
    let reqs = mock.requests();
    assert!(
        reqs.iter()
            .any(|r| r.client_id.as_deref() == Some("cli-props")
                && r.group_id.as_deref() == Some("from-file")),
        "client.id applied to the consumer's connections"
    );
    // -X overrides -F: another group starts at the end (latest) and reads nothing.
    let out = rekafka(
        &mock.bootstrap(),
        &[
            "-F",
            file.to_str().unwrap(),
            "-X",
            "group.id=latest-group",
            "-X",
            "auto.offset.reset=latest",
            "consume",
            "-t",
            "p",
            "-e",
        ],
    )
    .await;
    assert!(stdout_lines(&out).is_empty());
    assert_eq!(mock.committed_offset("latest-group", "p", 0), Some(4));
    // A bad consumer value and an unknown key are usage errors naming the key.
    let out = rekafka(
        &mock.bootstrap(),
        &[
            "-X",
            "isolation.level=sometimes",
            "consume",
            "-t",
            "p",
            "-e",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("isolation.level"));
    let out = rekafka(
        &mock.bootstrap(),
        &["-X", "no.such.key=1", "consume", "-t", "p", "-e"],
    )
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no.such.key"));
    // perf consume takes the same properties.
    let out = rekafka(
        &mock.bootstrap(),
        &[
            "-X",
            "fetch.max.bytes=1024",
            "perf",
            "consume",
            "-t",
            "p",
            "-n",
            "4",
        ],
    )
    .await;
    let lines = stdout_lines(&out);
    assert!(lines.last().unwrap().starts_with("records=4 "), "{lines:?}");
    // perf produce too: -X producer properties reach the producer (no idempotence: no
    // producer id on the Produce requests), the flags still work.
    mock.create_topic("perf", 1).unwrap();
    mock.clear_requests();
    let out = rekafka(
        &mock.bootstrap(),
        &[
            "-X",
            "enable.idempotence=false",
            "-X",
            "client.id=perf-cli",
            "perf",
            "produce",
            "-t",
            "perf",
            "-n",
            "300",
            "-s",
            "10",
        ],
    )
    .await;
    let lines = stdout_lines(&out);
    assert!(
        lines.last().unwrap().starts_with("records=300 "),
        "{lines:?}"
    );
    assert_eq!(mock.high_watermark("perf", 0).unwrap(), 300);
    let produces: Vec<_> = mock
        .requests()
        .into_iter()
        .filter(|r| r.api_key == rekafka::protocol::unstable::ApiKey::Produce)
        .collect();
    assert!(!produces.is_empty());
    for r in &produces {
        assert_eq!(r.client_id.as_deref(), Some("perf-cli"));
        assert!(r.producer_id.is_none_or(|p| p < 0), "{r:?}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

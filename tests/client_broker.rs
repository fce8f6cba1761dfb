//! The `Client` against a real cluster (Apache Kafka from `scripts/kafka.sh`, or the mock in
//! the second pass): built from properties, shared by admin calls, and recovering by itself
//! when the broker is killed and restarted under it.
//!
//! Needs `REKAFKA_BOOTSTRAP`; the tests fail (they do not skip) without it.
//!
//! `client_recovers_after_broker_restart` starts, kills and restarts a broker of its own: a
//! one-node Kafka through `scripts/kafka.sh` (in its own cluster directory), or in the mock
//! pass a mock cluster of its own, so it never disturbs the shared cluster.

mod common;
use common::{bootstrap, unique};

use std::time::Duration;

use rekafka::admin::{Internal, NewTopic};
use rekafka::consumer::{ConsumerConfig, OffsetReset};
use rekafka::producer::{ProducerConfig, Record};
use rekafka::protocol::record::Compression;
use rekafka::{Client, ErrorKind};
use tokio::time::Instant;

#[tokio::test]
async fn from_properties_connects_and_shares_one_cluster() {
    // `connect` bootstraps before it returns (`build` and `from_properties` connect lazily).
    let client = Client::builder()
        .properties([
            (
                "bootstrap.servers",
                format!("127.0.0.1:1,{}", bootstrap()).as_str(),
            ),
            ("client.id", "rekafka-client-tests"),
            ("request.timeout.ms", "10000"),
            ("socket.connection.setup.timeout.ms", "2000"),
            ("allow.auto.create.topics", "false"),
        ])
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    assert_eq!(client.config().client_id, "rekafka-client-tests");
    assert_eq!(client.config().request_timeout, Duration::from_secs(10));
    assert!(!client.cluster().config().allow_auto_topic_creation);
    // The dead first bootstrap address was skipped: every broker is known.
    assert_eq!(
        client.cluster().metadata().brokers.len(),
        common::broker_count()
    );
    // With auto-creation off, asking for an unknown topic does not create it.
    let missing = unique("client-missing");
    assert!(client.cluster().partitions(&missing).await.is_err());
    let topics = client.admin().list_topics(Internal::Include).await;
    assert!(
        !topics
            .unwrap_or_else(|e| panic!("{e}"))
            .iter()
            .any(|t| t.name == missing)
    );
    // Admin clients made from the client use its cluster: no second bootstrap.
    let before = client.cluster().metadata_requests();
    let admin = client.admin();
    let _ = admin.describe_cluster().await;
    assert!(client.cluster().metadata_requests() <= before + 1);
    client.close().await;
    let e = client
        .admin()
        .list_topics(Internal::Exclude)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Closed, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_and_consumer_from_client_properties() {
    let topic = unique("client-pc");
    let group = unique("client-pc-group");
    let client = Client::from_properties([
        ("bootstrap.servers", bootstrap()),
        ("client.id", "rekafka-client-pc".into()),
        // Producer keys.
        ("linger.ms", "7".into()),
        ("acks", "all".into()),
        ("compression.type", "lz4".into()),
        // Consumer keys.
        ("group.id", group.clone()),
        ("auto.offset.reset", "earliest".into()),
        ("session.timeout.ms", "6000".into()),
        ("heartbeat.interval.ms", "1000".into()),
        ("fetch.max.wait.ms", "100".into()),
        ("enable.auto.commit", "false".into()),
        // Shared by the client and the producer.
        ("request.timeout.ms", "15000".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("from_properties: {e}"));
    let created = client
        .admin()
        .create_topics(&[NewTopic::new(&topic, 2)])
        .await
        .unwrap_or_else(|e| panic!("create_topics: {e}"));
    for r in created {
        r.unwrap_or_else(|e| panic!("create: {e}"));
    }

    // The kept properties win over the given config's fields.
    let producer = client
        .producer(ProducerConfig::default().with_linger(Duration::from_millis(500)))
        .await
        .unwrap_or_else(|e| panic!("producer: {e}"));
    assert_eq!(producer.config().linger, Duration::from_millis(7));
    assert_eq!(producer.config().compression, Compression::Lz4);
    assert_eq!(producer.config().request_timeout, Duration::from_secs(15));
    assert_eq!(client.config().request_timeout, Duration::from_secs(15));
    let mut sent = Vec::new();
    for i in 0..10 {
        let md = producer
            .send_and_wait(
                Record::new(topic.as_str())
                    .with_key(format!("k{i}"))
                    .with_value(format!("v{i}"))
                    .with_header("n", Some(i.to_string().into_bytes())),
            )
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e:?}"));
        assert!(md.offset >= 0, "{md:?}");
        sent.push((
            format!("k{i}"),
            format!("v{i}"),
            i.to_string(),
            md.partition,
            md.offset,
        ));
    }
    producer.close().await;

    // `consumer_with`: the properties, then the closure wins.
    let consumer = client
        .consumer_with(|c| c.max_poll_records = 3)
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    assert_eq!(consumer.config().group_id.as_deref(), Some(group.as_str()));
    assert_eq!(consumer.config().max_poll_records, 3);
    assert_eq!(consumer.config().auto_offset_reset, OffsetReset::Earliest);
    consumer
        .subscribe([topic.as_str()])
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < sent.len() && Instant::now() < deadline {
        let recs = consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap_or_else(|e| panic!("poll: {e}"));
        assert!(recs.errors().is_empty(), "{:?}", recs.errors());
        assert!(recs.len() <= 3, "max.poll.records from the closure");
        for r in recs.iter() {
            let text = |b: &Option<bytes::Bytes>| {
                String::from_utf8(b.as_ref().map(|b| b.to_vec()).unwrap_or_default())
                    .unwrap_or_default()
            };
            let header: Vec<String> = r
                .headers
                .iter()
                .filter(|h| h.key() == "n")
                .map(|h| text(&h.value().map(bytes::Bytes::copy_from_slice)))
                .collect();
            assert_eq!(header.len(), 1, "one 'n' header");
            got.push((
                text(&r.key),
                text(&r.value),
                header[0].clone(),
                r.partition,
                r.offset,
            ));
        }
    }
    consumer
        .close()
        .await
        .unwrap_or_else(|e| panic!("close: {e}"));
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "every record, once, where the producer put it");

    // `client.consumer(config)`: the kept properties are applied onto the given config.
    let consumer = client
        .consumer(ConsumerConfig::new().with_group_id("overridden"))
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    assert_eq!(consumer.config().group_id.as_deref(), Some(group.as_str()));
    assert_eq!(consumer.config().session_timeout, Duration::from_secs(6));
    drop(consumer);
    client.close().await;
}

#[tokio::test]
async fn a_bad_property_fails_build_naming_it() {
    let e = Client::from_properties([
        ("bootstrap.servers", bootstrap()),
        ("linger.msx", "5".into()),
    ])
    .await
    .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Config);
    assert!(e.to_string().contains("'linger.msx'"), "{e}");
    let e = Client::builder()
        .bootstrap_servers([bootstrap()])
        .property("metadata.max.age.ms", "-5")
        .build()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("metadata.max.age.ms"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_recovers_after_broker_restart() {
    // REKAFKA_BOOTSTRAP is not used, but the suite's contract is that it is set.
    let _ = bootstrap();
    let broker = common::OwnBroker::start().await;
    let client = Client::builder()
        .bootstrap_servers([broker.addr()])
        .request_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(300))
        // A Kafka JVM's restart takes ~20 s on a loaded machine: the call's budget covers it.
        .api_timeout(Duration::from_secs(60))
        .build()
        .await
        .unwrap_or_else(|e| panic!("build: {e}"));
    let admin = client.admin();
    let before = unique("client-restart-before");
    let topic = unique("client-restart");
    let created = admin
        .create_topics(&[NewTopic::new(&before, 2)])
        .await
        .unwrap_or_else(|e| panic!("create: {e}"));
    assert!(created[0].is_ok(), "{:?}", created[0]);

    broker.kill().await;
    // While the broker is down, an admin call keeps retrying (it is retriable) instead of
    // failing at once; the broker comes back and the same call succeeds on a new connection,
    // made by the client without being asked.
    let down = Instant::now();
    let call = {
        let admin = admin.clone();
        let topic = topic.clone();
        tokio::spawn(async move { admin.create_topics(&[NewTopic::new(&topic, 3)]).await })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !call.is_finished(),
        "the call gave up while the broker was down"
    );
    broker.restart().await;
    let result = tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .unwrap_or_else(|_| panic!("the call hung after the restart"))
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("create after restart: {e}"));
    let t = result[0].as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.name, topic);
    eprintln!("recovered {:?} after the kill", down.elapsed());
    // Later calls work as usual.
    let described = admin
        .describe_topics(&[&topic, &before])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let d = described[0].as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.partitions.len(), 3);
    // What the broker had before the kill survived it.
    let d = described[1].as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.partitions.len(), 2);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_made_while_the_cluster_is_down_works_once_it_starts() {
    // REKAFKA_BOOTSTRAP is not used, but the suite's contract is that it is set.
    let _ = bootstrap();
    // The broker's address is fixed before anything listens on it: a one-node Kafka of its own
    // (scripts/kafka.sh on chosen ports), or in the mock pass a mock cluster of its own.
    let planned = common::PlannedBroker::new();
    let dead = common::free_ports(1)[0];
    // One comma-separated string, as Kafka's bootstrap.servers; the first address stays dead.
    let servers = format!("127.0.0.1:{dead}, {}", planned.addr());
    let client = Client::builder()
        .bootstrap_servers([servers.as_str()])
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(10))
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .retry_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .build()
        .await
        .unwrap_or_else(|e| panic!("build while the cluster is down: {e}"));
    assert_eq!(
        client.config().bootstrap_servers,
        [format!("127.0.0.1:{dead}"), planned.addr()]
    );
    assert!(!client.cluster().is_bootstrapped(), "nothing listens yet");
    // What needs a broker fails retriably while none is up (it does not hang, and the
    // client stays usable).
    let e = Client::builder()
        .bootstrap_servers([servers.as_str()])
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .map(|_| ())
        .unwrap_err();
    assert!(e.is_retriable(), "{e}");
    assert!(!client.cluster().is_bootstrapped());

    let broker = common::OwnBroker::start_at(&planned).await;
    // The client bootstraps by itself (its background retries), without a call asking it to.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client.cluster().is_bootstrapped() {
        assert!(
            Instant::now() < deadline,
            "the client never bootstrapped after the cluster started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(client.cluster().metadata().brokers.len(), 1);

    // And everything made from it works: admin, producer, consumer.
    let topic = unique("client-late-cluster");
    let created = client
        .admin()
        .create_topics(&[NewTopic::new(&topic, 1)])
        .await
        .unwrap_or_else(|e| panic!("create_topics: {e}"));
    created[0]
        .as_ref()
        .unwrap_or_else(|e| panic!("create: {e}"));
    let producer = client
        .producer(ProducerConfig::default())
        .await
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let mut sent = Vec::new();
    for i in 0..5 {
        let md = producer
            .send_and_wait(Record::new(topic.as_str()).with_value(format!("v{i}")))
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e:?}"));
        sent.push((md.offset, format!("v{i}")));
    }
    producer.close().await;
    let consumer = client
        .consumer(ConsumerConfig::new().with_auto_offset_reset(OffsetReset::Earliest))
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    consumer
        .assign([(
            rekafka::consumer::TopicPartition::new(&topic, 0),
            rekafka::consumer::StartOffset::Beginning,
        )])
        .unwrap_or_else(|e| panic!("assign: {e}"));
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < sent.len() && Instant::now() < deadline {
        for r in consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap_or_else(|e| panic!("poll: {e}"))
            .iter()
        {
            let v = r.value.as_deref().map(<[u8]>::to_vec).unwrap_or_default();
            got.push((r.offset, String::from_utf8_lossy(&v).into_owned()));
        }
    }
    assert_eq!(got, sent, "every record, once, in order");
    let _ = consumer.close().await;
    client.close().await;
    drop(broker);
}

/// `Client::close` closes the producers it made before its connections: records still
/// buffered (a long `linger`) are delivered, not failed with `Closed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_delivers_what_the_client_s_producers_buffered() {
    const N: usize = 50;
    let topic = unique("client-close");
    let client = Client::from_properties([("bootstrap.servers", bootstrap())])
        .await
        .unwrap_or_else(|e| panic!("from_properties: {e}"));
    for r in client
        .admin()
        .create_topics(&[NewTopic::new(&topic, 1)])
        .await
        .unwrap_or_else(|e| panic!("create_topics: {e}"))
    {
        r.unwrap_or_else(|e| panic!("create: {e}"));
    }
    let producer = client
        .producer_with(|c| c.linger = Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let mut pending = Vec::new();
    for i in 0..N {
        let f = producer
            .send(Record::new(topic.as_str()).with_value(format!("v{i}")))
            .await
            .unwrap_or_else(|e| panic!("send {i}: {e}"));
        pending.push(f);
    }
    // Nothing was sent yet (30 s linger); closing the client delivers them first.
    client.close().await;
    let mut offsets = Vec::new();
    for (i, f) in pending.into_iter().enumerate() {
        let md = f.await.unwrap_or_else(|e| panic!("record {i}: {e}"));
        offsets.push(md.offset);
    }
    assert_eq!(
        offsets,
        (0..N as i64).collect::<Vec<_>>(),
        "in order, once each"
    );
    // The producer is closed with the client; a fresh client reads every record.
    let err = producer
        .send(Record::new(topic.as_str()).with_value("late"))
        .await
        .err()
        .unwrap_or_else(|| panic!("a send after close must fail"));
    assert_eq!(err.kind(), &ErrorKind::Closed, "{err}");
    let reader = Client::from_properties([
        ("bootstrap.servers", bootstrap()),
        ("group.id", unique("client-close-g")),
        ("auto.offset.reset", "earliest".into()),
        ("fetch.max.wait.ms", "100".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("reader: {e}"));
    let consumer = reader
        .consumer_with(|_| {})
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    consumer
        .subscribe([topic.as_str()])
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while values.len() < N && Instant::now() < deadline {
        for r in consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap_or_else(|e| panic!("poll: {e}"))
            .iter()
        {
            values
                .push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
        }
    }
    assert_eq!(values, (0..N).map(|i| format!("v{i}")).collect::<Vec<_>>());
    consumer
        .close()
        .await
        .unwrap_or_else(|e| panic!("close: {e}"));
    reader.close().await;
}

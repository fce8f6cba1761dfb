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

/// `Client::close` closes what the client made, in order: a running listener container, a
/// subscribed consumer holding uncommitted positions (auto-commit on), a transactional
/// producer inside a transaction and a producer with buffered records; then its connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_closes_containers_consumers_transactions_and_producers_in_order() {
    use rekafka::admin::TopicPartition;
    use rekafka::consumer::{AutoCommit, IsolationLevel};
    use rekafka::listener::{ListenerConsumerRecord, ListenerRecord};
    use std::sync::{Arc, Mutex};

    const N: usize = 400;
    let listened = unique("close-all-listened");
    let consumed = unique("close-all-consumed");
    let txn_topic = unique("close-all-txn");
    let buffered = unique("close-all-buffered");
    let listen_group = unique("close-all-listen-g");
    let consume_group = unique("close-all-consume-g");
    let txn_id = unique("close-all-txn-id");
    let client = Client::from_properties([
        ("bootstrap.servers", bootstrap()),
        ("auto.offset.reset", "earliest".into()),
        ("fetch.max.wait.ms", "100".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("from_properties: {e}"));
    let admin = client.admin();
    let topics: Vec<NewTopic> = [&listened, &consumed, &txn_topic, &buffered]
        .iter()
        .map(|t| NewTopic::new(t.as_str(), 1))
        .collect();
    for r in admin
        .create_topics(&topics)
        .await
        .unwrap_or_else(|e| panic!("create_topics: {e}"))
    {
        r.unwrap_or_else(|e| panic!("create: {e}"));
    }
    let seed = client
        .producer_with(|_| {})
        .await
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let mut seeded = Vec::new();
    for t in [&listened, &consumed] {
        for i in 0..N {
            seeded.push(
                seed.send(Record::new(t.as_str()).with_value(format!("v{i}")))
                    .await
                    .unwrap_or_else(|e| panic!("send: {e}")),
            );
        }
    }
    for f in seeded {
        f.await.unwrap_or_else(|e| panic!("seed: {e}"));
    }

    // 1. A container mid-stream: its handler notes each offset it completes.
    let handled = Arc::new(Mutex::new(Vec::<i64>::new()));
    let (first_tx, mut first_rx) = tokio::sync::mpsc::unbounded_channel();
    let noted = handled.clone();
    let container = client
        .listener_container([listened.as_str()], |c| {
            c.group_id = Some(listen_group.clone());
            c.max_poll_records = 10;
        })
        .unwrap_or_else(|e| panic!("container: {e}"))
        .record_handler(move |r: ListenerConsumerRecord| {
            let noted = noted.clone();
            let first = first_tx.clone();
            async move {
                tokio::task::yield_now().await;
                noted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(r.offset());
                let _ = first.send(());
                Ok(())
            }
        })
        .start()
        .unwrap_or_else(|e| panic!("start: {e}"));
    first_rx
        .recv()
        .await
        .unwrap_or_else(|| panic!("the container handled nothing"));

    // 2. A subscribed consumer with consumed, uncommitted records (auto-commit far away).
    let consumer = client
        .consumer_with(|c| {
            c.group_id = Some(consume_group.clone());
            c.auto_commit = AutoCommit::Interval(Duration::from_secs(3600));
        })
        .unwrap_or_else(|e| panic!("consumer: {e}"));
    consumer
        .subscribe([consumed.as_str()])
        .unwrap_or_else(|e| panic!("subscribe: {e}"));
    let mut last_consumed = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while last_consumed.is_none() {
        assert!(Instant::now() < deadline, "the consumer got no record");
        let recs = consumer
            .poll(Duration::from_millis(200))
            .await
            .unwrap_or_else(|e| panic!("poll: {e}"));
        last_consumed = recs.iter().map(|r| r.offset).max();
    }
    let last_consumed = last_consumed.unwrap_or_default();

    // 3. A transactional producer inside a transaction, its records written.
    let txn = client
        .transactional_producer_with(txn_id.as_str(), |_| {})
        .unwrap_or_else(|e| panic!("transactional_producer: {e}"));
    txn.init_transactions()
        .await
        .unwrap_or_else(|e| panic!("init_transactions: {e}"));
    txn.begin_transaction()
        .unwrap_or_else(|e| panic!("begin: {e}"));
    let mut in_txn = Vec::new();
    for i in 0..5 {
        in_txn.push(
            txn.send(Record::new(txn_topic.as_str()).with_value(format!("aborted{i}")))
                .await
                .unwrap_or_else(|e| panic!("txn send: {}", e.error)),
        );
    }
    txn.flush().await;
    for f in in_txn {
        f.await
            .unwrap_or_else(|e| panic!("txn record not written: {e}"));
    }

    // 4. A producer with buffered records (30 s linger: nothing sent yet).
    let producer = client
        .producer_with(|c| c.linger = Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("producer: {e}"));
    let mut pending = Vec::new();
    for i in 0..20 {
        pending.push(
            producer
                .send(Record::new(buffered.as_str()).with_value(format!("b{i}")))
                .await
                .unwrap_or_else(|e| panic!("send {i}: {e}")),
        );
    }

    client.close().await;

    // The container stopped, and its group's committed offset covers exactly what the
    // handler completed: offsets 0.. in order, none twice, the commit right after the last.
    assert!(
        !container.is_running(),
        "the container stopped with the client"
    );
    let done = handled.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(!done.is_empty());
    assert_eq!(
        done,
        (0..done.len() as i64).collect::<Vec<_>>(),
        "in order, once each"
    );
    let checker = Client::from_properties([
        ("bootstrap.servers", bootstrap()),
        ("fetch.max.wait.ms", "100".into()),
        ("auto.offset.reset", "earliest".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("checker: {e}"));
    let admin = checker.admin();
    let committed = |group: String, topic: String| {
        let admin = admin.clone();
        async move {
            let tp = [TopicPartition::new(topic.as_str(), 0)];
            let offsets = admin
                .list_group_offsets(&group, Some(&tp))
                .await
                .unwrap_or_else(|e| panic!("offsets of {group}: {e}"));
            offsets[0]
                .1
                .clone()
                .unwrap_or_else(|e| panic!("offset of {group}: {e}"))
                .map(|c| c.offset)
        }
    };
    assert_eq!(
        committed(listen_group.clone(), listened.clone()).await,
        Some(done.len() as i64),
        "the container committed exactly what its handler completed"
    );
    // The consumer committed what it consumed and left its group.
    assert_eq!(
        committed(consume_group.clone(), consumed.clone()).await,
        Some(last_consumed + 1)
    );
    for group in [&consume_group, &listen_group] {
        let described = admin
            .describe_groups(&[group.as_str()])
            .await
            .unwrap_or_else(|e| panic!("describe {group}: {e}"));
        let g = described[0]
            .as_ref()
            .unwrap_or_else(|e| panic!("describe {group}: {e}"));
        assert!(g.members.is_empty(), "{group} still has members: {g:?}");
    }
    // The buffered records were delivered, in order.
    let mut offsets = Vec::new();
    for (i, f) in pending.into_iter().enumerate() {
        offsets.push(
            f.await
                .unwrap_or_else(|e| panic!("buffered record {i}: {e}"))
                .offset,
        );
    }
    assert_eq!(offsets, (0..20).collect::<Vec<i64>>());
    // The open transaction was aborted: the transactional id is usable again at once, and a
    // read_committed reader sees the next transaction's record only.
    let again = checker
        .transactional_producer_with(txn_id.as_str(), |_| {})
        .unwrap_or_else(|e| panic!("transactional_producer: {e}"));
    again
        .init_transactions()
        .await
        .unwrap_or_else(|e| panic!("init_transactions again: {e}"));
    again
        .begin_transaction()
        .unwrap_or_else(|e| panic!("begin: {e}"));
    let marker = again
        .send(Record::new(txn_topic.as_str()).with_value("committed"))
        .await
        .unwrap_or_else(|e| panic!("send: {}", e.error));
    again
        .commit_transaction()
        .await
        .unwrap_or_else(|e| panic!("commit: {e}"));
    marker.await.unwrap_or_else(|e| panic!("marker: {e}"));
    again.close().await;
    let reader = checker
        .consumer_with(|c| {
            c.group_id = None;
            c.isolation_level = IsolationLevel::ReadCommitted;
        })
        .unwrap_or_else(|e| panic!("reader: {e}"));
    reader
        .assign([(
            rekafka::consumer::TopicPartition::new(txn_topic.as_str(), 0),
            rekafka::consumer::StartOffset::Beginning,
        )])
        .unwrap_or_else(|e| panic!("assign: {e}"));
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|v: &String| v == "committed") {
        assert!(Instant::now() < deadline, "read_committed saw {seen:?}");
        for r in reader
            .poll(Duration::from_millis(200))
            .await
            .unwrap_or_else(|e| panic!("poll: {e}"))
            .iter()
        {
            seen.push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
        }
    }
    assert_eq!(seen, ["committed"], "the aborted records stay invisible");
    drop(reader);

    // Everything made from the closed client is closed.
    let e = consumer.poll(Duration::from_millis(10)).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Closed, "{e}");
    let e = producer
        .send(Record::new(buffered.as_str()).with_value("late"))
        .await
        .err()
        .unwrap_or_else(|| panic!("a send after close must fail"));
    assert_eq!(e.kind(), &ErrorKind::Closed, "{e}");
    let e = match txn.begin_transaction() {
        Err(e) => e,
        Ok(()) => {
            txn.send(Record::new(txn_topic.as_str()).with_value("late"))
                .await
                .err()
                .unwrap_or_else(|| panic!("a transactional send after close must fail"))
                .error
        }
    };
    assert_eq!(e.kind(), &ErrorKind::Closed, "{e}");
    let e = client
        .producer_with(|_| {})
        .await
        .err()
        .unwrap_or_else(|| panic!("a producer of a closed client"));
    assert_eq!(e.kind(), &ErrorKind::Closed, "{e}");
    assert_eq!(
        container.stop().await,
        rekafka::listener::StopReason::Normal
    );
    checker.close().await;
}

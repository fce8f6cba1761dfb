//! Kafka's transactions system test scenario (`tests/kafkatest/tests/core/transactions_test.py`)
//! for the exactly-once listener container over KIP-848's consumer protocol, on the three-node
//! cluster: three transactional copiers (each a child process running the container in
//! exactly-once mode, `group.protocol=consumer`, `read_committed`) copy an input topic to an
//! output topic while they are bounced — one cleanly (container stopped, consumer closed, a new
//! process with the same `transactional.id`), one hard (SIGKILL in the middle of its
//! transactions, then a new process with the same `transactional.id`, which fences and aborts
//! what the dead one left open). Then a `read_committed` reader of the output finds, partition
//! by partition, exactly the input values in the input's order: nothing lost, nothing twice,
//! nothing from an aborted transaction.
//!
//! The killed member's partitions move only after the coordinator's session timeout
//! (`group.consumer.session.timeout.ms`, 45 s by default and at least that), which makes most
//! of this test's minute.
//!
//! Named `*_kafka.rs`: it needs the real cluster (SIGKILL of a member, the consumer protocol).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{cluster, create_topic, unique};
use rekafka::cluster::Cluster;
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, GroupProtocol, IsolationLevel, OffsetReset, StartOffset,
    TopicPartition,
};
use rekafka::listener::{
    HandlerError, ListenerConsumerRecord, ListenerContainer, ListenerRecord, StopReason,
};
use rekafka::producer::{Producer, ProducerConfig, Record};
use rekafka::transaction::TransactionalProducer;

/// The copier child's settings: "input output group transactional_id stop_file".
const CHILD_ENV: &str = "REKAFKA_EOS_COPIER";
const PARTITIONS: i32 = 3;
const N: usize = 6_000;

fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_group_protocol(GroupProtocol::Consumer)
        .with_auto_commit(AutoCommit::Disabled)
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(100))
}

/// One copier: the exactly-once container copying input partition p to output partition p.
/// Runs in a child process (spawned by the test below) until its stop file appears, then
/// stops cleanly; or until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a child process of transactional_copy_with_clean_and_hard_bounces"]
async fn eos_copier_child_process() {
    let Ok(args) = std::env::var(CHILD_ENV) else {
        return;
    };
    let args: Vec<&str> = args.split(' ').collect();
    let [input, output, group, txn_id, stop_file] = args[..] else {
        panic!("bad {CHILD_ENV}: {args:?}");
    };
    let cluster = cluster().await;
    let producer = TransactionalProducer::new(
        cluster.clone(),
        ProducerConfig::default().with_transactional_id(txn_id),
    )
    .expect("producer");
    producer.init_transactions().await.expect("init");
    let producer = Arc::new(producer);
    let consumer = Consumer::new(
        cluster.clone(),
        config(group)
            .with_isolation_level(IsolationLevel::ReadCommitted)
            .with_max_poll_records(50),
    )
    .expect("consumer");
    consumer.subscribe([input]).expect("subscribe");
    let out = producer.clone();
    let output = output.to_owned();
    let container = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let (out, topic) = (out.clone(), output.clone());
            async move {
                // Slow enough (about 100 ms per transaction of 50) that the bounces land in
                // the middle of the copy and of transactions.
                tokio::time::sleep(Duration::from_millis(2)).await;
                let _delivery = out
                    .send(
                        Record::new(topic.as_str())
                            .with_partition(r.partition())
                            .with_key(r.key_bytes().cloned().unwrap_or_default())
                            .with_value(r.value_bytes().cloned().unwrap_or_default()),
                    )
                    .await
                    .map_err(|e| Box::new(e.error) as HandlerError)?;
                Ok(())
            }
        })
        .transactional(producer.clone())
        .poll_timeout(Duration::from_millis(500))
        .start()
        .expect("start");
    while !Path::new(stop_file).exists() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reason = container.stop().await;
    assert_eq!(reason, StopReason::Normal, "the copier stopped by itself");
    producer.close().await;
    cluster.close().await;
}

struct Copier {
    child: Child,
    stop_file: PathBuf,
}

fn start_copier(input: &str, output: &str, group: &str, txn_id: &str) -> Copier {
    let stop_file = std::env::temp_dir().join(unique("eos-copier-stop"));
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "eos_copier_child_process", "--ignored"])
        .env(
            CHILD_ENV,
            format!(
                "{input} {output} {group} {txn_id} {}",
                stop_file.to_string_lossy()
            ),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn copier");
    Copier { child, stop_file }
}

impl Copier {
    /// Clean stop: the container stops, the consumer leaves the group.
    fn stop(mut self) {
        std::fs::write(&self.stop_file, b"stop").expect("stop file");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                break s;
            }
            assert!(Instant::now() < deadline, "copier did not stop");
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = std::fs::remove_file(&self.stop_file);
        assert!(status.success(), "copier exited with {status}");
    }

    /// Hard stop: SIGKILL, whatever it was doing.
    fn kill(mut self) {
        assert!(
            self.child.try_wait().expect("wait").is_none(),
            "copier exited early"
        );
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }
}

impl Drop for Copier {
    fn drop(&mut self) {
        // A failed assertion must not leave children behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The group's committed offsets on `input` (-1: none).
async fn committed(cluster: &Cluster, group: &str, input: &str) -> Vec<i64> {
    let c = Consumer::new(cluster.clone(), config(group)).expect("consumer");
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(input, p))
        .collect();
    let m = c.committed(&tps).await.expect("committed");
    c.close().await.ok();
    tps.iter()
        .map(|tp| m.get(tp).cloned().flatten().map_or(-1, |o| o.offset))
        .collect()
}

/// Waits until at least `at_least` input records are committed; returns how many are.
async fn wait_for_progress(cluster: &Cluster, group: &str, input: &str, at_least: i64) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done: i64 = committed(cluster, group, input)
            .await
            .into_iter()
            .map(|o| o.max(0))
            .sum();
        if done >= at_least {
            return done;
        }
        assert!(
            Instant::now() < deadline,
            "no progress past {done} of {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every value of `topic`, per partition in offset order, as `isolation` sees them.
async fn read_all(
    cluster: &Cluster,
    topic: &str,
    isolation: IsolationLevel,
) -> BTreeMap<i32, Vec<String>> {
    let reader = Consumer::new(
        cluster.clone(),
        ConsumerConfig::new()
            .with_auto_commit(AutoCommit::Disabled)
            .with_isolation_level(isolation)
            .with_fetch_max_wait(Duration::from_millis(50)),
    )
    .expect("reader");
    reader
        .assign((0..PARTITIONS).map(|p| (TopicPartition::new(topic, p), StartOffset::Beginning)))
        .expect("assign");
    let mut out: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut idle = Instant::now();
    while idle.elapsed() < Duration::from_secs(2) {
        let recs = reader.poll(Duration::from_millis(200)).await.expect("poll");
        if !recs.is_empty() {
            idle = Instant::now();
        }
        for r in recs.iter() {
            out.entry(r.partition)
                .or_default()
                .push(String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned());
        }
    }
    reader.close().await.ok();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_copy_with_clean_and_hard_bounces() {
    let cluster = cluster().await;
    let input = unique("eos848-in");
    let output = unique("eos848-out");
    let group = unique("eos848-g");
    create_topic(&cluster, &input, PARTITIONS).await;
    create_topic(&cluster, &output, PARTITIONS).await;

    // The seed: N values round-robin over the input partitions (idempotent producer).
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let mut sent = Vec::with_capacity(N);
    for i in 0..N {
        let r = Record::new(input.as_str())
            .with_partition((i % PARTITIONS as usize) as i32)
            .with_key(format!("k-{i}"))
            .with_value(format!("v-{i}"));
        sent.push(producer.send(r).await.expect("enqueue"));
    }
    let mut ends = vec![0i64; PARTITIONS as usize];
    for f in sent {
        let md = f.await.expect("delivered");
        ends[md.partition as usize] = ends[md.partition as usize].max(md.offset + 1);
    }
    producer.close().await;
    let input_values = read_all(&cluster, &input, IsolationLevel::ReadUncommitted).await;
    assert_eq!(
        input_values.values().map(Vec::len).sum::<usize>(),
        N,
        "the seed"
    );

    let ids: Vec<String> = (0..3).map(|i| unique(&format!("eos848-txn-{i}"))).collect();
    let mut copiers: Vec<Option<Copier>> = ids
        .iter()
        .map(|id| Some(start_copier(&input, &output, &group, id)))
        .collect();
    let total = N as i64;

    // Clean bounce of copier 0 once a sixth is copied.
    let first = wait_for_progress(&cluster, &group, &input, total / 6).await;
    assert!(
        first < total,
        "the copy finished before the bounce; slow it down"
    );
    copiers[0].take().expect("copier 0").stop();
    copiers[0] = Some(start_copier(&input, &output, &group, &ids[0]));

    // Hard bounce of copier 1 once a third is copied: SIGKILL (mid-transaction: it handles
    // records all the time), then a new process with the same transactional.id.
    let done = wait_for_progress(&cluster, &group, &input, total / 3).await;
    assert!(
        done < total,
        "the copy finished before the kill; slow it down"
    );
    copiers[1].take().expect("copier 1").kill();
    copiers[1] = Some(start_copier(&input, &output, &group, &ids[1]));

    // The rest of the copy (the killed member's partitions after its session timeout).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let c = committed(&cluster, &group, &input).await;
        if c == ends {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "copy not finished: {c:?} of {ends:?}"
        );
        for c in copiers.iter_mut().flatten() {
            assert!(
                c.child.try_wait().expect("wait").is_none(),
                "a copier exited by itself"
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for c in copiers.iter_mut() {
        c.take().expect("copier").stop();
    }

    // Exactly once, in order, nothing aborted: per partition the committed output is the input.
    let copied = read_all(&cluster, &output, IsolationLevel::ReadCommitted).await;
    for p in 0..PARTITIONS {
        let want = input_values.get(&p).cloned().unwrap_or_default();
        let got = copied.get(&p).cloned().unwrap_or_default();
        assert_eq!(got.len(), want.len(), "partition {p}: record count");
        assert!(got == want, "partition {p}: not the input, in order");
    }
    // For the record: what aborted transactions left in the log (read_uncommitted sees it).
    let raw = read_all(&cluster, &output, IsolationLevel::ReadUncommitted).await;
    eprintln!(
        "bounces at {first} and {done} of {total}; output: {} committed records, {} in \
         the log with aborted ones",
        copied.values().map(Vec::len).sum::<usize>(),
        raw.values().map(Vec::len).sum::<usize>()
    );
    cluster.close().await;
}

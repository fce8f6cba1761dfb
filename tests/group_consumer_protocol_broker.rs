//! The consumer group protocol of KIP-848 (`group.protocol=consumer`), on the three-node
//! Apache Kafka 4.x cluster and (second pass, `REKAFKA_TEST_BROKER=mock`) on rekafka's mock
//! cluster: members joining and leaving while consuming (every record once, no partition owned
//! by two members at once, commits carried across owners), a member that vanishes without
//! leaving, static membership across a restart, a broker-side regex subscription picking up a
//! topic created later, the listener container (also exactly-once) over the new protocol,
//! `max.poll.interval`, fatal `UNRELEASED_INSTANCE_ID` and the admin's ConsumerGroupDescribe.
//!
//! The coordinator's heartbeat interval (`group.consumer.heartbeat.interval.ms`, 5 s by
//! default on Kafka, 0.5 s on the tests' mock) paces every reassignment, so on Kafka these
//! tests take tens of seconds each. Injected heartbeat faults are in
//! `tests/mock/group_consumer_protocol_faults_mock.rs`.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{
    RebalanceEvents, cluster, create_topic, read_committed_values, spawn_poller, unique, wait_for,
};
use rekafka::admin::{Admin, GroupType};
use rekafka::cluster::Cluster;
use rekafka::consumer::{
    AutoCommit, BoxFuture, Consumer, ConsumerConfig, GroupProtocol, OffsetReset, RebalanceListener,
    TopicPartition,
};
use rekafka::listener::{
    AckMode, ListenerConsumerRecord, ListenerContainer, ListenerRecord, StopReason,
};
use rekafka::producer::{Producer, ProducerConfig, Record};

/// Produces `n` records round-robin over `partitions`; returns each partition's log end.
async fn produce(cluster: &Cluster, topic: &str, partitions: i32, n: usize) -> Vec<i64> {
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let mut futures = Vec::with_capacity(n);
    for i in 0..n {
        let r = Record::new(topic)
            .with_partition((i % partitions as usize) as i32)
            .with_key(format!("k-{i}"))
            .with_value(format!("v-{i}"));
        futures.push(producer.send(r).await.expect("enqueue"));
    }
    let mut ends = vec![0i64; partitions as usize];
    for f in futures {
        let md = f.await.expect("delivered");
        let e = &mut ends[md.partition as usize];
        *e = (*e).max(md.offset + 1);
    }
    producer.close().await;
    ends
}

fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_group_protocol(GroupProtocol::Consumer)
        .with_auto_commit(AutoCommit::Disabled)
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(100))
}

/// Who owns which partition, kept from the members' own callbacks; a partition assigned
/// while another member still owns it is a violation.
#[derive(Default)]
struct Ownership {
    owners: Mutex<HashMap<TopicPartition, usize>>,
    violations: Mutex<Vec<String>>,
    events: Mutex<Vec<(usize, &'static str, Vec<TopicPartition>)>>,
}

struct Member {
    id: usize,
    ownership: Arc<Ownership>,
}

impl RebalanceListener for Member {
    fn on_assigned<'a>(&'a self, _: &'a Consumer, p: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        let mut owners = self.ownership.owners.lock().unwrap();
        for tp in p {
            if let Some(other) = owners.insert(tp.clone(), self.id)
                && other != self.id
            {
                self.ownership.violations.lock().unwrap().push(format!(
                    "{tp} assigned to member {} while member {other} owned it",
                    self.id
                ));
            }
        }
        self.ownership
            .events
            .lock()
            .unwrap()
            .push((self.id, "assigned", p.to_vec()));
        Box::pin(async {})
    }

    fn on_revoked<'a>(&'a self, c: &'a Consumer, p: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // Commit what was consumed before the partitions go: the next owner starts there.
            let set: BTreeSet<&TopicPartition> = p.iter().collect();
            let offsets: Vec<_> = c
                .positions()
                .into_iter()
                .filter(|(tp, _)| set.contains(tp))
                .collect();
            c.commit_offsets(&offsets).await.expect("commit on revoke");
            self.release(p, "revoked");
        })
    }

    fn on_lost<'a>(&'a self, _: &'a Consumer, p: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        self.release(p, "lost");
        Box::pin(async {})
    }
}

impl Member {
    fn release(&self, p: &[TopicPartition], what: &'static str) {
        let mut owners = self.ownership.owners.lock().unwrap();
        for tp in p {
            if owners.get(tp) == Some(&self.id) {
                owners.remove(tp);
            }
        }
        self.ownership
            .events
            .lock()
            .unwrap()
            .push((self.id, what, p.to_vec()));
    }
}

type Seen = Arc<Mutex<Vec<(usize, i32, i64)>>>;

/// A member consuming `topic` until told to stop, committing after every poll, recording
/// what it read; closes (leaving the group) at the end.
fn start_member(
    id: usize,
    group: &str,
    topic: &str,
    seen: &Seen,
    ownership: &Arc<Ownership>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    start_killable_member(id, group, topic, seen, ownership, Arc::default())
}

/// [`start_member`] that, once `kill` is set, stops dead: no commit, no callback, no leave
/// (the consumer is dropped, as a SIGKILLed process's would vanish).
fn start_killable_member(
    id: usize,
    group: &str,
    topic: &str,
    seen: &Seen,
    ownership: &Arc<Ownership>,
    kill: Arc<AtomicBool>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, seen, ownership) = (stop.clone(), seen.clone(), ownership.clone());
    let (group, topic) = (group.to_owned(), topic.to_owned());
    let h = tokio::spawn(async move {
        let c = Consumer::new(cluster().await, config(&group).with_max_poll_records(50)).unwrap();
        c.set_rebalance_listener(Arc::new(Member {
            id,
            ownership: ownership.clone(),
        }));
        c.subscribe([topic]).unwrap();
        while !s2.load(Ordering::Acquire) {
            let recs = c.poll(Duration::from_millis(200)).await.expect("poll");
            if kill.load(Ordering::Acquire) {
                // Gone without a word: what it read in this poll is neither recorded nor
                // committed, and it owns nothing any more.
                ownership.owners.lock().unwrap().retain(|_, m| *m != id);
                drop(c);
                return;
            }
            if recs.is_empty() {
                continue;
            }
            {
                let mut s = seen.lock().unwrap();
                for r in recs.iter() {
                    s.push((id, r.partition, r.offset));
                }
            }
            c.commit().await.expect("commit");
            // Slow enough that joins and leaves happen mid-stream.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        c.close().await.expect("close");
    });
    (stop, h)
}

async fn committed(cluster: &Cluster, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let c = Consumer::new(cluster.clone(), config(group)).expect("consumer");
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new(topic, p))
        .collect();
    let m = c.committed(&tps).await.expect("committed");
    c.close().await.ok();
    tps.iter()
        .map(|tp| m.get(tp).cloned().flatten().map_or(-1, |o| o.offset))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_and_leave_every_record_once_no_partition_owned_twice() {
    const N: usize = 20_000;
    const PARTITIONS: i32 = 6;
    let cluster = cluster().await;
    let topic = unique("kip848-churn");
    let group = unique("kip848-churn-g");
    create_topic(&cluster, &topic, PARTITIONS).await;
    let ends = produce(&cluster, &topic, PARTITIONS, N).await;
    let seen: Seen = Arc::default();
    let ownership = Arc::new(Ownership::default());
    let uniq = |seen: &Seen| {
        seen.lock()
            .unwrap()
            .iter()
            .map(|(_, p, o)| (*p, *o))
            .collect::<BTreeSet<_>>()
            .len()
    };
    // One member first, then a second and a third join while it consumes; then the first
    // leaves. Each step waits for some progress, so every change happens mid-stream.
    let mut members = vec![start_member(0, &group, &topic, &seen, &ownership)];
    let deadline = Instant::now() + Duration::from_secs(150);
    for (step, at) in [(1usize, N / 10), (2, N / 4), (3, N / 2)] {
        wait_for("progress", deadline - Instant::now(), || uniq(&seen) >= at).await;
        if step <= 2 {
            members.push(start_member(step, &group, &topic, &seen, &ownership));
            // Wait until the newcomer owns something: the group rebalanced under load.
            let o = ownership.clone();
            wait_for(
                "the new member to be assigned",
                deadline - Instant::now(),
                || o.owners.lock().unwrap().values().any(|m| *m == step),
            )
            .await;
        } else {
            let (stop, h) = members.remove(0);
            stop.store(true, Ordering::Release);
            h.await.unwrap();
        }
    }
    wait_for("every record", deadline - Instant::now(), || {
        uniq(&seen) >= N
    })
    .await;
    for (stop, _) in &members {
        stop.store(true, Ordering::Release);
    }
    for (_, h) in members {
        h.await.unwrap();
    }
    let violations = ownership.violations.lock().unwrap().clone();
    let events = ownership.events.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "partitions owned twice: {violations:?}; callbacks: {events:?}"
    );
    assert!(
        events.iter().all(|(_, k, _)| *k != "lost"),
        "no partition lost in clean joins and leaves: {events:?}"
    );
    let s = seen.lock().unwrap().clone();
    let mut count: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for (_, p, o) in s.iter() {
        *count.entry((*p, *o)).or_default() += 1;
    }
    assert_eq!(count.len(), N, "every record consumed");
    let dups: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
    assert!(
        dups.is_empty(),
        "commits before every revocation: no record read twice, got {} duplicates (first {:?})",
        dups.len(),
        dups.first()
    );
    let mut per_member: BTreeMap<usize, usize> = BTreeMap::new();
    for (id, _, _) in s.iter() {
        *per_member.entry(*id).or_default() += 1;
    }
    eprintln!("records per member: {per_member:?}; callbacks: {events:?}");
    let by_member: BTreeSet<usize> = s.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(by_member.len(), 3, "every member consumed: {events:?}");
    // Per partition, offsets read in order by each successive owner.
    for p in 0..PARTITIONS {
        let offs: Vec<i64> = s.iter().filter(|x| x.1 == p).map(|x| x.2).collect();
        assert!(
            offs.windows(2).all(|w| w[0] < w[1]),
            "partition {p} read in order across owners"
        );
    }
    assert_eq!(
        committed(&cluster, &group, &topic, PARTITIONS).await,
        ends,
        "commits continued across owners up to the log end"
    );
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_restart_keeps_its_partitions_without_reassignment() {
    let cluster = cluster().await;
    let topic = unique("kip848-static");
    let group = unique("kip848-static-g");
    create_topic(&cluster, &topic, 4).await;
    let stat = config(&group).with_group_instance_id("member-a");
    let a = Arc::new(Consumer::new(cluster.clone(), stat.clone()).unwrap());
    a.subscribe([topic.clone()]).unwrap();
    let b = Arc::new(Consumer::new(cluster.clone(), config(&group)).unwrap());
    let eb = Arc::new(RebalanceEvents::default());
    b.set_rebalance_listener(eb.clone());
    b.subscribe([topic.clone()]).unwrap();
    let (stop_a, stop_b) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicBool::new(false)),
    );
    let ha = spawn_poller(a.clone(), stop_a.clone());
    let hb = spawn_poller(b.clone(), stop_b.clone());
    wait_for("2 and 2", Duration::from_secs(60), || {
        a.assignment().len() == 2 && b.assignment().len() == 2
    })
    .await;
    let a_parts = a.assignment();
    let b_parts = b.assignment();
    let b_events = eb.0.lock().unwrap().len();
    let b_epoch = b.group_metadata().unwrap().1;
    // A closes (a static member leaves with epoch -2: the coordinator keeps its assignment for
    // the session timeout) and comes back with the same group.instance.id.
    stop_a.store(true, Ordering::Release);
    ha.await.unwrap();
    a.close().await.unwrap();
    drop(a);
    let a2 = Arc::new(Consumer::new(cluster.clone(), stat).unwrap());
    let ea2 = Arc::new(RebalanceEvents::default());
    a2.set_rebalance_listener(ea2.clone());
    a2.subscribe([topic.clone()]).unwrap();
    let stop_a2 = Arc::new(AtomicBool::new(false));
    let ha2 = spawn_poller(a2.clone(), stop_a2.clone());
    wait_for("A back", Duration::from_secs(30), || {
        a2.assignment().len() == 2
    })
    .await;
    // Two of the coordinator's heartbeat intervals (5 s by default) for anything else to
    // happen.
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop_a2.store(true, Ordering::Release);
    stop_b.store(true, Ordering::Release);
    ha2.await.unwrap();
    hb.await.unwrap();
    assert_eq!(
        a2.assignment(),
        a_parts,
        "the static member got its partitions back"
    );
    assert_eq!(
        ea2.0.lock().unwrap().clone(),
        vec![("assigned", a_parts.clone())],
        "the restarted member was assigned its old partitions at once"
    );
    let seen = eb.0.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        b_events,
        "the other member saw no reassignment: {seen:?}"
    );
    assert_eq!(b.assignment(), b_parts);
    assert_eq!(
        b.group_metadata().unwrap().1,
        b_epoch,
        "the other member's epoch did not move"
    );
    a2.close().await.unwrap();
    b.close().await.unwrap();
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_side_regex_subscription_picks_up_a_topic_created_later() {
    let cluster = cluster().await;
    let prefix = unique("kip848-re");
    let first = format!("{prefix}-a");
    let later = format!("{prefix}-b");
    let other = format!("{prefix}x-c");
    create_topic(&cluster, &first, 2).await;
    create_topic(&cluster, &other, 1).await;
    produce(&cluster, &first, 2, 10).await;
    produce(&cluster, &other, 1, 5).await;
    let group = unique("kip848-re-g");
    let c = Consumer::new(cluster.clone(), config(&group)).unwrap();
    c.subscribe_pattern(&format!("{}-.*", regex_escape(&prefix)))
        .unwrap();
    let mut got: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    let mut created = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let recs = c.poll(Duration::from_millis(200)).await.expect("poll");
        for r in recs.iter() {
            got.entry(r.topic.to_string())
                .or_default()
                .insert(r.offset + 1000 * r.partition as i64);
        }
        if !created && got.get(&first).is_some_and(|s| s.len() == 10) {
            create_topic(&cluster, &later, 3).await;
            produce(&cluster, &later, 3, 9).await;
            created = true;
        }
        if got.get(&later).is_some_and(|s| s.len() == 9) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the topic created later was not picked up: {got:?}"
        );
    }
    assert_eq!(got.len(), 2, "only matching topics: {got:?}");
    assert_eq!(got[&first].len(), 10);
    let mut assigned: Vec<String> = c.assignment().iter().map(|tp| tp.to_string()).collect();
    assigned.sort();
    assert_eq!(
        assigned,
        vec![
            format!("{first}-0"),
            format!("{first}-1"),
            format!("{later}-0"),
            format!("{later}-1"),
            format!("{later}-2"),
        ]
    );
    c.close().await.unwrap();
    cluster.close().await;
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '-' || ch == '_' {
                ch.to_string()
            } else {
                format!("\\{ch}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_container_over_the_consumer_protocol_commits_every_record() {
    const N: usize = 3_000;
    const PARTITIONS: i32 = 3;
    let cluster = cluster().await;
    let topic = unique("kip848-lst");
    let group = unique("kip848-lst-g");
    create_topic(&cluster, &topic, PARTITIONS).await;
    let ends = produce(&cluster, &topic, PARTITIONS, N).await;
    let consumer = Consumer::new(cluster.clone(), config(&group)).expect("consumer");
    consumer.subscribe([topic.clone()]).expect("subscribe");
    let handled: Arc<Mutex<Vec<(i32, i64)>>> = Arc::default();
    let h = handled.clone();
    let handle = ListenerContainer::builder(consumer)
        .record_handler(move |r: ListenerConsumerRecord| {
            let h = h.clone();
            async move {
                h.lock().unwrap().push((r.partition(), r.offset()));
                Ok(())
            }
        })
        .ack_mode(AckMode::Batch)
        .poll_timeout(Duration::from_millis(500))
        .start()
        .expect("start");
    wait_for("every record handled", Duration::from_secs(60), || {
        handled.lock().unwrap().len() >= N
    })
    .await;
    assert_eq!(handle.stop().await, StopReason::Normal);
    let handled = handled.lock().unwrap().clone();
    assert_eq!(
        handled.iter().collect::<BTreeSet<_>>().len(),
        N,
        "every record handled"
    );
    assert_eq!(handled.len(), N, "no duplicates");
    assert_eq!(
        committed(&cluster, &group, &topic, PARTITIONS).await,
        ends,
        "the container committed up to the log end over the consumer protocol"
    );
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_with_an_active_instance_id_fails_with_unreleased_instance_id() {
    let cluster = cluster().await;
    let topic = unique("kip848-dup");
    let group = unique("kip848-dup-g");
    create_topic(&cluster, &topic, 2).await;
    let stat = config(&group).with_group_instance_id("twin");
    let a = Arc::new(Consumer::new(cluster.clone(), stat.clone()).unwrap());
    a.subscribe([topic.clone()]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ha = spawn_poller(a.clone(), stop.clone());
    wait_for("A to own both partitions", Duration::from_secs(30), || {
        a.assignment().len() == 2
    })
    .await;
    let a_epoch = a.group_metadata().unwrap().1;
    // The same group.instance.id while A is still in the group: fatal for the newcomer, as in
    // Java (the instance id must be released, by a leave or the session timing out, first).
    let b = Consumer::new(cluster.clone(), stat).unwrap();
    b.subscribe([topic.clone()]).unwrap();
    let err = b
        .poll(Duration::from_secs(5))
        .await
        .expect_err("the twin must not join");
    assert_eq!(
        err.kafka_code(),
        Some(rekafka::KafkaCode::UnreleasedInstanceId),
        "{err}"
    );
    assert!(b.assignment().is_empty());
    // Fatal: later polls fail the same way, nothing is fetched.
    let again = b
        .poll(Duration::from_millis(200))
        .await
        .expect_err("still fatal");
    assert_eq!(
        again.kafka_code(),
        Some(rekafka::KafkaCode::UnreleasedInstanceId)
    );
    b.close().await.unwrap();
    // A is untouched.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(a.assignment().len(), 2);
    assert_eq!(a.group_metadata().unwrap().1, a_epoch);
    stop.store(true, Ordering::Release);
    ha.await.unwrap();
    a.close().await.unwrap();
    cluster.close().await;
}

/// Exactly-once copy by two container members over the consumer protocol (KIP-447
/// transactional offset commits carry the member epoch); one member stops half-way and a
/// replacement starts. A fresh read_committed consumer finds each input value exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_container_over_the_consumer_protocol_with_a_member_restart() {
    use rekafka::consumer::IsolationLevel;
    use rekafka::listener::HandlerError;
    use rekafka::transaction::TransactionalProducer;
    const N: usize = 10_000;
    let cluster = cluster().await;
    let input = unique("kip848-eos-in");
    let output = unique("kip848-eos-out");
    let group = unique("kip848-eos-g");
    create_topic(&cluster, &input, 3).await;
    create_topic(&cluster, &output, 3).await;
    let ends = produce(&cluster, &input, 3, N).await;
    let start_member = |id: String| {
        let (cluster, input, output, group) = (
            cluster.clone(),
            input.clone(),
            output.clone(),
            group.clone(),
        );
        async move {
            let p = TransactionalProducer::new(
                cluster.clone(),
                ProducerConfig::default().with_transactional_id(id),
            )
            .expect("producer");
            p.init_transactions().await.expect("init");
            let p = Arc::new(p);
            let consumer = Consumer::new(
                cluster,
                config(&group)
                    .with_isolation_level(IsolationLevel::ReadCommitted)
                    .with_max_poll_records(200),
            )
            .expect("consumer");
            consumer.subscribe([input]).expect("subscribe");
            let out = p.clone();
            ListenerContainer::builder(consumer)
                .record_handler(move |r: ListenerConsumerRecord| {
                    let (out, topic) = (out.clone(), output.clone());
                    async move {
                        let _delivery = out
                            .send(
                                Record::new(topic.as_str())
                                    .with_partition(r.partition())
                                    .with_value(r.value_bytes().cloned().unwrap_or_default()),
                            )
                            .await
                            .map_err(|e| Box::new(e.error) as HandlerError)?;
                        Ok(())
                    }
                })
                .transactional(p)
                .poll_timeout(Duration::from_millis(500))
                .start()
                .expect("start")
        }
    };
    let a = start_member(unique("kip848-eos-a")).await;
    let b = start_member(unique("kip848-eos-b")).await;
    let total = |c: Vec<i64>| c.into_iter().map(|x| x.max(0)).sum::<i64>();
    let deadline = Instant::now() + Duration::from_secs(120);
    while total(committed(&cluster, &group, &input, 3).await) < (N / 2) as i64 {
        assert!(Instant::now() < deadline, "no progress");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.stop().await;
    let a2 = start_member(unique("kip848-eos-a2")).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed(&cluster, &group, &input, 3).await != ends {
        assert!(Instant::now() < deadline, "copy not finished");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    a2.stop().await;
    b.stop().await;
    let mut values = read_committed_values(&cluster, &output, 3).await;
    values.sort();
    let mut expected: Vec<String> = (0..N).map(|i| format!("v-{i}")).collect();
    expected.sort();
    assert_eq!(values.len(), N, "every input value exactly once");
    assert_eq!(values, expected);
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_describes_a_consumer_protocol_group_with_epochs_and_assignments() {
    let cluster = cluster().await;
    let topic = unique("kip848-describe");
    let group = unique("kip848-describe-g");
    create_topic(&cluster, &topic, 3).await;
    let c = Arc::new(
        Consumer::new(
            cluster.clone(),
            config(&group)
                .with_group_instance_id("described")
                .with_group_remote_assignor("range"),
        )
        .unwrap(),
    );
    c.subscribe([topic.clone()]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let h = spawn_poller(c.clone(), stop.clone());
    wait_for("the member to own 3", Duration::from_secs(30), || {
        c.assignment().len() == 3
    })
    .await;
    let admin = Admin::new(cluster.clone());
    let described = admin
        .describe_consumer_groups(&[group.as_str()])
        .await
        .expect("describe");
    let d = described
        .into_iter()
        .next()
        .unwrap()
        .expect("a consumer group");
    let (member_id, epoch) = c.group_metadata().unwrap();
    assert_eq!(d.group_id, group);
    assert_eq!(d.assignor, "range", "the asked-for remote assignor");
    assert_eq!(d.members.len(), 1);
    let m = &d.members[0];
    assert_eq!(m.member_id, member_id);
    assert_eq!(m.member_epoch, epoch);
    assert_eq!(m.group_instance_id.as_deref(), Some("described"));
    assert_eq!(m.subscribed_topics, vec![topic.clone()]);
    let mine: Vec<(String, i32)> = c
        .assignment()
        .iter()
        .map(|tp| (tp.topic().to_owned(), tp.partition))
        .collect();
    let theirs: Vec<(String, i32)> = m
        .assignment
        .iter()
        .map(|tp| (tp.topic().to_owned(), tp.partition))
        .collect();
    assert_eq!(theirs, mine, "the coordinator's view of the assignment");
    assert_eq!(m.target_assignment, m.assignment, "reconciled");
    // ListGroups gives its type (v5+) and its KIP-848 state.
    let listed = admin.list_groups().await.expect("list_groups");
    let l = listed
        .iter()
        .find(|l| l.group_id == group)
        .unwrap_or_else(|| panic!("{group} not listed: {listed:?}"));
    assert_eq!(l.group_type, Some(GroupType::Consumer), "{l:?}");
    assert_eq!(l.protocol_type, "consumer", "{l:?}");
    // The classic DescribeGroups does not describe it.
    let classic = admin.describe_groups(&[group.as_str()]).await.unwrap();
    assert_eq!(
        classic[0].as_ref().err().and_then(|e| e.kafka_code()),
        Some(rekafka::KafkaCode::GroupIdNotFound),
        "{:?}",
        classic[0]
    );
    stop.store(true, Ordering::Release);
    h.await.unwrap();
    c.close().await.unwrap();
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_max_poll_interval_leaves_the_group_and_refuses_zombie_commits() {
    let cluster = cluster().await;
    let topic = unique("kip848-maxpoll");
    let group = unique("kip848-maxpoll-g");
    create_topic(&cluster, &topic, 2).await;
    produce(&cluster, &topic, 2, 20).await;
    let c = Consumer::new(
        cluster.clone(),
        config(&group).with_max_poll_interval(Duration::from_secs(3)),
    )
    .unwrap();
    let ev = Arc::new(RebalanceEvents::default());
    c.set_rebalance_listener(ev.clone());
    c.subscribe([topic.clone()]).unwrap();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < 20 {
        assert!(Instant::now() < deadline, "only {got} of 20 records");
        got += c.poll(Duration::from_millis(200)).await.unwrap().len();
    }
    assert!(c.group_metadata().unwrap().1 > 0);
    // Stop polling for longer than max.poll.interval: the member leaves the group (epoch -1).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(c.group_metadata().unwrap().1, -1, "left the group");
    let err = c.commit().await.unwrap_err();
    assert_eq!(
        err.kafka_code(),
        Some(rekafka::KafkaCode::IllegalGeneration)
    );
    // The next poll reports the loss and rejoins with epoch 0.
    let deadline = Instant::now() + Duration::from_secs(30);
    c.poll(Duration::from_millis(200)).await.unwrap();
    while (c.assignment().len() < 2 || c.group_metadata().unwrap().1 <= 0)
        && Instant::now() < deadline
    {
        c.poll(Duration::from_millis(200)).await.unwrap();
    }
    let events = ev.0.lock().unwrap().clone();
    assert!(
        events.iter().any(|(k, p)| *k == "lost" && p.len() == 2),
        "{events:?}"
    );
    assert_eq!(c.assignment().len(), 2);
    assert!(c.group_metadata().unwrap().1 > 0);
    c.commit().await.unwrap();
    c.close().await.unwrap();
    cluster.close().await;
}

/// A member killed without leaving: after the coordinator's session timeout
/// (`group.consumer.session.timeout.ms`, 45 s by default and at least that by default) its
/// partitions go to the survivor, which reads on from the killed member's last commit. Every
/// record consumed, no partition owned by two live members at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_s_partitions_move_after_the_session_timeout() {
    const N: usize = 6_000;
    const MORE: usize = 400;
    const PARTITIONS: i32 = 4;
    let cluster = cluster().await;
    let topic = unique("kip848-kill");
    let group = unique("kip848-kill-g");
    create_topic(&cluster, &topic, PARTITIONS).await;
    produce(&cluster, &topic, PARTITIONS, N).await;
    let seen: Seen = Arc::default();
    let ownership = Arc::new(Ownership::default());
    let kill = Arc::new(AtomicBool::new(false));
    let (stop_a, ha) = start_killable_member(0, &group, &topic, &seen, &ownership, kill.clone());
    let (stop_b, hb) = start_member(1, &group, &topic, &seen, &ownership);
    let o = ownership.clone();
    wait_for("both members assigned", Duration::from_secs(60), || {
        let owners = o.owners.lock().unwrap();
        owners.values().any(|m| *m == 0) && owners.values().any(|m| *m == 1)
    })
    .await;
    wait_for("some progress", Duration::from_secs(60), || {
        seen.lock().unwrap().iter().any(|(id, _, _)| *id == 0)
    })
    .await;
    kill.store(true, Ordering::Release);
    ha.await.unwrap();
    // Records produced after the kill on every partition: those of the killed member's
    // partitions can only be read once they moved to the survivor.
    produce(&cluster, &topic, PARTITIONS, MORE).await;
    let uniq = |seen: &Seen| {
        seen.lock()
            .unwrap()
            .iter()
            .map(|(_, p, o)| (*p, *o))
            .collect::<BTreeSet<_>>()
            .len()
    };
    wait_for("every record", Duration::from_secs(120), || {
        uniq(&seen) >= N + MORE
    })
    .await;
    stop_a.store(true, Ordering::Release);
    stop_b.store(true, Ordering::Release);
    hb.await.unwrap();
    let violations = ownership.violations.lock().unwrap().clone();
    let events = ownership.events.lock().unwrap().clone();
    assert!(violations.is_empty(), "{violations:?}; {events:?}");
    assert_eq!(uniq(&seen), N + MORE, "every record consumed");
    let s = seen.lock().unwrap().clone();
    let mut count: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for (_, p, o) in s.iter() {
        *count.entry((*p, *o)).or_default() += 1;
    }
    // The killed member committed everything it recorded: the survivor starts after it.
    let dups = count.values().filter(|c| **c > 1).count();
    assert_eq!(dups, 0, "no record read twice");
    let killed: BTreeSet<i32> = s
        .iter()
        .filter(|(id, _, _)| *id == 0)
        .map(|(_, p, _)| *p)
        .collect();
    assert!(!killed.is_empty());
    let survivor: BTreeSet<i32> = s
        .iter()
        .filter(|(id, _, _)| *id == 1)
        .map(|(_, p, _)| *p)
        .collect();
    assert_eq!(
        survivor.len(),
        PARTITIONS as usize,
        "the survivor took the killed member's partitions"
    );
    cluster.close().await;
}

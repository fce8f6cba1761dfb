//! Faults injected into the KIP-848 consumer group heartbeat on rekafka's mock cluster (which
//! serves `group.protocol=consumer`): a fenced member loses its partitions and rejoins with
//! epoch 0; retriable heartbeat errors, delayed heartbeats and a lost heartbeat response are
//! ridden out without losing the assignment; members churning under injected fencing never
//! own a partition at the same time (checked from their own callbacks) and every record is
//! consumed and committed; a member joining a full group gets `GROUP_MAX_SIZE_REACHED`; a
//! group id is either a classic or a consumer-protocol group while it has members;
//! TOPIC_AUTHORIZATION_FAILED in a heartbeat is reported by `poll` once, not fatal (as Java).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rekafka::KafkaCode;
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::connection::ConnectionConfig;
use rekafka::consumer::{
    AutoCommit, BoxFuture, Consumer, ConsumerConfig, GroupProtocol, OffsetReset, RebalanceListener,
    TopicPartition,
};
use rekafka::mock::{MockCluster, RequestInfo};
use rekafka::protocol::unstable::ApiKey;

async fn mock(partitions: i32) -> MockCluster {
    MockCluster::builder()
        .brokers(3)
        .topic("t", partitions)
        .consumer_heartbeat_interval(Duration::from_millis(200))
        .consumer_session_timeout(Duration::from_secs(10))
        .start()
        .await
        .expect("mock")
}

async fn cluster(mock: &MockCluster) -> Cluster {
    Cluster::connect(
        ClusterConfig::new(mock.broker_addrs()).with_connection(
            ConnectionConfig::default().with_request_timeout(Duration::from_secs(2)),
        ),
    )
    .await
    .expect("connect")
}

fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_group_protocol(GroupProtocol::Consumer)
        .with_auto_commit(AutoCommit::Disabled)
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(50))
}

/// Appends `n` records to every partition; returns each partition's log end.
fn fill(mock: &MockCluster, partitions: i32, n: usize, tag: &str) -> Vec<i64> {
    (0..partitions)
        .map(|p| {
            let values: Vec<String> = (0..n).map(|i| format!("{tag}-{p}-{i}")).collect();
            let recs: Vec<_> = values.iter().map(|v| (None, Some(v.as_bytes()))).collect();
            mock.append_records("t", p, &recs).expect("append");
            mock.high_watermark("t", p).expect("hwm")
        })
        .collect()
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_heartbeat(r: &RequestInfo) -> bool {
    r.api_key == ApiKey::ConsumerGroupHeartbeat
}

/// Who owns which partition, from the members' own callbacks; an assignment while another
/// member still owns the partition is a violation.
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
            let set: BTreeSet<&TopicPartition> = p.iter().collect();
            let offsets: Vec<_> = c
                .positions()
                .into_iter()
                .filter(|(tp, _)| set.contains(tp))
                .collect();
            // A fenced member's commit fails; the next owner then reads those records again.
            let _ = c.commit_offsets(&offsets).await;
            self.release(p, "revoked");
        })
    }

    fn on_lost<'a>(&'a self, _: &'a Consumer, p: &'a [TopicPartition]) -> BoxFuture<'a, ()> {
        self.release(p, "lost");
        Box::pin(async {})
    }
}

type Seen = Arc<Mutex<Vec<(usize, i32, i64)>>>;

/// A member polling until told to stop, recording what it read and committing after every
/// poll (a failed commit is left to the next owner); closes at the end.
fn start_member(
    id: usize,
    cluster: &Cluster,
    group: &str,
    seen: &Seen,
    ownership: &Arc<Ownership>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, seen, ownership, cluster) = (
        stop.clone(),
        seen.clone(),
        ownership.clone(),
        cluster.clone(),
    );
    let group = group.to_owned();
    let h = tokio::spawn(async move {
        let c = Consumer::new(cluster, config(&group).with_max_poll_records(20)).unwrap();
        c.set_rebalance_listener(Arc::new(Member { id, ownership }));
        c.subscribe(["t"]).unwrap();
        while !s2.load(Ordering::Acquire) {
            let recs = c.poll(Duration::from_millis(100)).await.expect("poll");
            if recs.is_empty() {
                continue;
            }
            {
                let mut s = seen.lock().unwrap();
                for r in recs.iter() {
                    s.push((id, r.partition, r.offset));
                }
            }
            let _ = c.commit().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.close().await.expect("close");
    });
    (stop, h)
}

fn heartbeat_epochs(mock: &MockCluster, member: &str) -> Vec<i32> {
    mock.requests()
        .iter()
        .filter(|r| is_heartbeat(r) && r.member_id.as_deref() == Some(member))
        .filter_map(|r| r.member_epoch)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_member_loses_its_partitions_rejoins_at_epoch_zero_and_gets_them_back() {
    let mock = mock(4).await;
    let cluster = cluster(&mock).await;
    let ends = fill(&mock, 4, 5, "a");
    let c = Consumer::new(cluster.clone(), config("g")).unwrap();
    let ownership = Arc::new(Ownership::default());
    c.set_rebalance_listener(Arc::new(Member {
        id: 0,
        ownership: ownership.clone(),
    }));
    c.subscribe(["t"]).unwrap();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while read < 20 {
        assert!(Instant::now() < deadline, "read {read} of 20");
        read += c.poll(Duration::from_millis(100)).await.unwrap().len();
    }
    c.commit().await.unwrap();
    let (member, epoch) = c.group_metadata().unwrap();
    assert!(epoch > 0);
    assert_eq!(c.assignment().len(), 4);
    mock.push_request_errors(
        ApiKey::ConsumerGroupHeartbeat,
        &[KafkaCode::FencedMemberEpoch],
    );
    // The next poll reports the loss; the member rejoins with epoch 0 and gets all four back.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        c.poll(Duration::from_millis(100)).await.unwrap();
        let events = ownership.events.lock().unwrap().clone();
        let lost = events
            .iter()
            .position(|(_, k, p)| *k == "lost" && p.len() == 4);
        if let Some(i) = lost
            && events[i..]
                .iter()
                .any(|(_, k, p)| *k == "assigned" && p.len() == 4)
            && c.group_metadata().is_some_and(|(_, e)| e > 0)
        {
            break;
        }
        assert!(Instant::now() < deadline, "no loss and rejoin: {events:?}");
    }
    let epochs = heartbeat_epochs(&mock, &member);
    let joins = epochs.iter().filter(|e| **e == 0).count();
    assert_eq!(joins, 2, "joined, then rejoined with epoch 0: {epochs:?}");
    assert!(ownership.violations.lock().unwrap().is_empty());
    // It consumes on from its commits: records appended now are read, nothing before again.
    let more = fill(&mock, 4, 3, "b");
    let mut got: Vec<(i32, i64)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 12 {
        assert!(Instant::now() < deadline, "read {got:?}");
        got.extend(
            c.poll(Duration::from_millis(100))
                .await
                .unwrap()
                .iter()
                .map(|r| (r.partition, r.offset)),
        );
    }
    assert!(
        got.iter().all(|(p, o)| *o >= ends[*p as usize]),
        "read again what was committed: {got:?}"
    );
    c.commit().await.unwrap();
    for p in 0..4 {
        assert_eq!(mock.committed_offset("g", "t", p), Some(more[p as usize]));
    }
    c.close().await.unwrap();
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retriable_heartbeat_errors_delays_and_a_lost_response_keep_the_assignment() {
    let mock = mock(3).await;
    let cluster = cluster(&mock).await;
    let c = Arc::new(Consumer::new(cluster.clone(), config("g")).unwrap());
    let ownership = Arc::new(Ownership::default());
    c.set_rebalance_listener(Arc::new(Member {
        id: 0,
        ownership: ownership.clone(),
    }));
    c.subscribe(["t"]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                c.poll(Duration::from_millis(100)).await.expect("poll");
            }
        })
    };
    wait_for("3 partitions", Duration::from_secs(20), || {
        c.assignment().len() == 3
    })
    .await;
    let (member, epoch) = c.group_metadata().unwrap();
    let before = heartbeat_epochs(&mock, &member).len();
    // Coordinator errors (each one looks the coordinator up again).
    mock.push_request_errors(
        ApiKey::ConsumerGroupHeartbeat,
        &[
            KafkaCode::CoordinatorNotAvailable,
            KafkaCode::NotCoordinator,
            KafkaCode::CoordinatorLoadInProgress,
        ],
    );
    wait_for(
        "heartbeats after the errors",
        Duration::from_secs(20),
        || heartbeat_epochs(&mock, &member).len() >= before + 5,
    )
    .await;
    // A heartbeat held for a second, then one whose response is lost (the client times out
    // after 2 s and sends the next one with the same epoch).
    let held = mock.hold(is_heartbeat);
    held.wait_matched(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    held.release();
    mock.drop_responses(is_heartbeat, 1);
    let n = heartbeat_epochs(&mock, &member).len();
    wait_for(
        "heartbeats after the lost response",
        Duration::from_secs(20),
        || heartbeat_epochs(&mock, &member).len() >= n + 4,
    )
    .await;
    stop.store(true, Ordering::Release);
    poller.await.unwrap();
    let events = ownership.events.lock().unwrap().clone();
    assert_eq!(
        events.len(),
        1,
        "assigned once, never revoked or lost: {events:?}"
    );
    assert_eq!(c.assignment().len(), 3);
    assert_eq!(c.group_metadata().unwrap(), (member.clone(), epoch));
    let epochs = heartbeat_epochs(&mock, &member);
    assert_eq!(
        epochs.iter().filter(|e| **e == 0).count(),
        1,
        "never rejoined: {epochs:?}"
    );
    c.close().await.unwrap();
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_churning_under_injected_fencing_never_share_a_partition() {
    const PARTITIONS: i32 = 6;
    const PER: usize = 400;
    let mock = mock(PARTITIONS).await;
    let cluster = cluster(&mock).await;
    let ends = fill(&mock, PARTITIONS, PER, "r");
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
    let total = PER * PARTITIONS as usize;
    let mut members = vec![start_member(0, &cluster, "g", &seen, &ownership)];
    let deadline = Instant::now() + Duration::from_secs(90);
    for (step, at) in [(1usize, total / 8), (2, total / 4), (3, total / 2)] {
        wait_for("progress", deadline - Instant::now(), || uniq(&seen) >= at).await;
        // Fence whichever member heartbeats next, and make another look the coordinator up.
        mock.push_request_errors(
            ApiKey::ConsumerGroupHeartbeat,
            &[KafkaCode::FencedMemberEpoch, KafkaCode::NotCoordinator],
        );
        if step <= 2 {
            members.push(start_member(step, &cluster, "g", &seen, &ownership));
        } else {
            let (stop, h) = members.remove(0);
            stop.store(true, Ordering::Release);
            h.await.unwrap();
            mock.push_request_errors(
                ApiKey::ConsumerGroupHeartbeat,
                &[KafkaCode::UnknownMemberId],
            );
        }
    }
    wait_for("every record", deadline - Instant::now(), || {
        uniq(&seen) >= total
    })
    .await;
    // Until every partition's commit reached the log end (the last owners commit as they go).
    wait_for("commits at the log end", deadline - Instant::now(), || {
        (0..PARTITIONS).all(|p| mock.committed_offset("g", "t", p) == Some(ends[p as usize]))
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
        events.iter().any(|(_, k, _)| *k == "lost"),
        "the injected fencing took effect: {events:?}"
    );
    let s = seen.lock().unwrap().clone();
    assert_eq!(uniq(&seen), total, "every record consumed");
    let by_member: BTreeSet<usize> = s.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(by_member.len(), 3, "every member consumed: {events:?}");
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joining_a_full_group_gets_group_max_size_reached() {
    let mock = MockCluster::builder()
        .topic("t", 2)
        .consumer_heartbeat_interval(Duration::from_millis(200))
        .consumer_group_max_size(1)
        .start()
        .await
        .unwrap();
    let cluster = cluster(&mock).await;
    let a = Consumer::new(cluster.clone(), config("g")).unwrap();
    a.subscribe(["t"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while a.assignment().len() < 2 {
        assert!(Instant::now() < deadline, "A did not join");
        a.poll(Duration::from_millis(100)).await.unwrap();
    }
    let b = Consumer::new(cluster.clone(), config("g")).unwrap();
    b.subscribe(["t"]).unwrap();
    let err = b
        .poll(Duration::from_secs(2))
        .await
        .expect_err("the group is full");
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::GroupMaxSizeReached),
        "{err}"
    );
    assert!(b.assignment().is_empty());
    b.close().await.unwrap();
    a.poll(Duration::from_millis(300)).await.unwrap();
    assert_eq!(a.assignment().len(), 2);
    a.close().await.unwrap();
    cluster.close().await;
}

/// The mock does not serve mixed groups: a group id is either a classic or a consumer-protocol
/// group while it has members. (Kafka 4.x, with its default `group.consumer.migration.policy`
/// of `bidirectional`, lets a classic member join a consumer group and upgrades a classic
/// group when a consumer-protocol member joins; checked on the three-node cluster.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_and_consumer_protocol_groups_do_not_share_an_id() {
    let mock = mock(2).await;
    let cluster = cluster(&mock).await;
    let classic_config = |group: &str| config(group).with_group_protocol(GroupProtocol::Classic);
    // A consumer-protocol group with a member: a classic member may not join it.
    let a = Consumer::new(cluster.clone(), config("new")).unwrap();
    a.subscribe(["t"]).unwrap();
    join(&a).await;
    let b = Consumer::new(cluster.clone(), classic_config("new")).unwrap();
    b.subscribe(["t"]).unwrap();
    let err = b
        .poll(Duration::from_secs(5))
        .await
        .expect_err("not a classic group");
    assert_eq!(
        err.kafka_code(),
        Some(KafkaCode::InconsistentGroupProtocol),
        "{err}"
    );
    assert!(b.assignment().is_empty());
    b.close().await.unwrap();
    // A classic group with a member: a consumer-protocol member may not join it.
    let c = Consumer::new(cluster.clone(), classic_config("old")).unwrap();
    c.subscribe(["t"]).unwrap();
    join(&c).await;
    let d = Consumer::new(cluster.clone(), config("old")).unwrap();
    d.subscribe(["t"]).unwrap();
    let err = d
        .poll(Duration::from_secs(5))
        .await
        .expect_err("not a consumer group");
    assert_eq!(err.kafka_code(), Some(KafkaCode::GroupIdNotFound), "{err}");
    assert!(d.assignment().is_empty());
    d.close().await.unwrap();
    // Once empty, a group takes members of the other protocol (its offsets stay).
    a.commit().await.unwrap();
    a.close().await.unwrap();
    c.close().await.unwrap();
    let e = Consumer::new(cluster.clone(), classic_config("new")).unwrap();
    e.subscribe(["t"]).unwrap();
    join(&e).await;
    e.close().await.unwrap();
    let f = Consumer::new(cluster.clone(), config("old")).unwrap();
    f.subscribe(["t"]).unwrap();
    join(&f).await;
    f.close().await.unwrap();
    cluster.close().await;
}

async fn join(c: &Consumer) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.assignment().len() < 2 {
        assert!(Instant::now() < deadline, "did not join");
        c.poll(Duration::from_millis(100)).await.unwrap();
    }
}

/// As the Java client: TOPIC_AUTHORIZATION_FAILED in a heartbeat is reported to the
/// application (the next `poll` returns it, once) and is not fatal: the member keeps its
/// epoch and partitions, heartbeats on, and the polls after it return records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_authorization_failed_in_a_heartbeat_is_reported_once_and_the_member_goes_on() {
    let mock = mock(2).await;
    let cluster = cluster(&mock).await;
    let c = Consumer::new(cluster.clone(), config("g-authz")).unwrap();
    c.subscribe(["t"]).unwrap();
    join(&c).await;
    let (member, epoch) = c.group_metadata().unwrap();
    mock.push_request_errors(
        ApiKey::ConsumerGroupHeartbeat,
        &[KafkaCode::TopicAuthorizationFailed],
    );
    let before = heartbeat_epochs(&mock, &member).len();
    // The error reaches the application through poll, exactly once.
    let deadline = Instant::now() + Duration::from_secs(20);
    let reported = loop {
        assert!(
            Instant::now() < deadline,
            "the heartbeat error was never reported"
        );
        match c.poll(Duration::from_millis(100)).await {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert_eq!(
        reported.kafka_code(),
        Some(KafkaCode::TopicAuthorizationFailed),
        "{reported}"
    );
    assert!(!reported.is_fatal(), "{reported}");
    // The member goes on: more heartbeats at the same epoch, and records arrive.
    let ends = fill(&mock, 2, 5, "after");
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    while got < 10 {
        assert!(
            Instant::now() < deadline,
            "records after the error: {got} of 10"
        );
        got += c
            .poll(Duration::from_millis(100))
            .await
            .expect("no second report")
            .len();
    }
    assert_eq!(ends, [5, 5]);
    assert!(heartbeat_epochs(&mock, &member).len() > before);
    assert_eq!(c.group_metadata().unwrap(), (member, epoch));
    assert_eq!(c.assignment().len(), 2);
    c.close().await.unwrap();
    cluster.close().await;
}

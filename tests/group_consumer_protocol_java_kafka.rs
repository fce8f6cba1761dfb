//! The consumer protocol's Java 4.x nuances against the three-node Kafka cluster (issue 18):
//! `client.rack` reaches the coordinator in the heartbeat, heartbeats that carry only the
//! changed fields keep the coordinator's view of every member right across a reassignment and
//! afterwards (no fencing, no rejoin), and the classic protocol's settings are configuration
//! errors with `group.protocol=consumer`, as Java's `ConsumerConfig` makes them.
//!
//! Named `*_kafka.rs`: the mock cluster does not serve ConsumerGroupHeartbeat yet.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{cluster, create_topic, unique};
use rekafka::ErrorKind;
use rekafka::admin::{Admin, ConsumerGroupMember};
use rekafka::consumer::{AutoCommit, Consumer, ConsumerConfig, GroupProtocol, OffsetReset};

fn config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_group_protocol(GroupProtocol::Consumer)
        .with_auto_commit(AutoCommit::Disabled)
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(100))
}

fn spawn_poller(c: Arc<Consumer>, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Acquire) {
            c.poll(Duration::from_millis(100)).await.expect("poll");
        }
    })
}

async fn members(admin: &Admin, group: &str) -> Vec<ConsumerGroupMember> {
    let d = admin
        .describe_consumer_groups(&[group])
        .await
        .expect("describe")
        .into_iter()
        .next()
        .expect("one group")
        .expect("a consumer group");
    let mut m = d.members;
    m.sort_by(|a, b| a.rack_id.cmp(&b.rack_id));
    m
}

fn partitions(c: &Consumer) -> Vec<i32> {
    let mut v: Vec<i32> = c.assignment().iter().map(|t| t.partition).collect();
    v.sort();
    v
}

fn described(m: &ConsumerGroupMember) -> Vec<i32> {
    let mut v: Vec<i32> = m.assignment.iter().map(|t| t.partition).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rack_reaches_the_coordinator_and_changed_only_heartbeats_keep_its_view_right() {
    let cluster = cluster().await;
    let topic = unique("kip848-rack");
    let group = unique("kip848-rack-g");
    let admin = Admin::new(cluster.clone());
    create_topic(&cluster, &topic, 4).await;
    let stop = Arc::new(AtomicBool::new(false));
    let start = |rack: &str| {
        let c = Arc::new(
            Consumer::new(cluster.clone(), config(&group).with_client_rack(rack))
                .expect("consumer"),
        );
        c.subscribe([topic.clone()]).expect("subscribe");
        let h = spawn_poller(c.clone(), stop.clone());
        (c, h)
    };
    let (a, ha) = start("rack-a");
    let deadline = Instant::now() + Duration::from_secs(30);
    while partitions(&a).len() != 4 {
        assert!(Instant::now() < deadline, "the first member never owned 4");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (b, hb) = start("rack-b");

    // Both reconciled, as the members see it and as the coordinator does.
    let deadline = Instant::now() + Duration::from_secs(45);
    let settled = loop {
        let m = members(&admin, &group).await;
        let ok = m.len() == 2
            && partitions(&a).len() == 2
            && partitions(&b).len() == 2
            && described(&m[0]) == partitions(&a)
            && described(&m[1]) == partitions(&b)
            && m.iter().all(|x| x.assignment == x.target_assignment);
        if ok {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "never reconciled: {m:?}, a {:?}, b {:?}",
            partitions(&a),
            partitions(&b)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(settled[0].rack_id.as_deref(), Some("rack-a"));
    assert_eq!(settled[1].rack_id.as_deref(), Some("rack-b"));
    assert_eq!(
        (a.group_metadata().unwrap().0, b.group_metadata().unwrap().0),
        (settled[0].member_id.clone(), settled[1].member_id.clone()),
        "the members the coordinator describes are ours"
    );

    // More than one heartbeat interval (the broker's, 5 s by default) of heartbeats carrying
    // only the identity fields: same members, same epochs, same partitions.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let later = members(&admin, &group).await;
    for (before, after) in settled.iter().zip(&later) {
        assert_eq!(after.member_id, before.member_id, "no rejoin");
        assert_eq!(after.member_epoch, before.member_epoch, "no new epoch");
        assert_eq!(after.assignment, before.assignment);
        assert_eq!(after.target_assignment, after.assignment);
        assert_eq!(after.rack_id, before.rack_id, "the rack is kept, not reset");
        assert_eq!(after.subscribed_topics, vec![topic.clone()]);
    }
    assert_eq!(described(&later[0]), partitions(&a));
    assert_eq!(described(&later[1]), partitions(&b));

    stop.store(true, Ordering::Release);
    ha.await.unwrap();
    hb.await.unwrap();
    a.close().await.unwrap();
    b.close().await.unwrap();
    cluster.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_only_settings_are_configuration_errors_with_the_consumer_protocol() {
    let cluster = cluster().await;
    let group = unique("kip848-cfg-g");
    let mut session = config(&group);
    session
        .apply_property("session.timeout.ms", "10000")
        .unwrap();
    let cases = [
        ("session.timeout.ms", session),
        (
            "heartbeat.interval.ms",
            config(&group).with_heartbeat_interval(Duration::from_secs(1)),
        ),
        ("partition.assignment.strategy", {
            let mut c = config(&group);
            c.apply_property("partition.assignment.strategy", "cooperative-sticky")
                .unwrap();
            c
        }),
    ];
    for (key, c) in cases {
        let e = Consumer::new(cluster.clone(), c).expect_err(key);
        assert!(matches!(e.kind(), ErrorKind::Config), "{key}: {e:?}");
        assert!(e.to_string().contains(key), "{key}: {e}");
    }
    // group.remote.assignor is the consumer protocol's: an error with the classic one.
    let mut classic = ConsumerConfig::new().with_group_id(&group);
    classic
        .apply_property("group.remote.assignor", "uniform")
        .unwrap();
    let e = Consumer::new(cluster.clone(), classic).expect_err("remote assignor");
    assert!(e.to_string().contains("group.remote.assignor"), "{e}");
    cluster.close().await;
}

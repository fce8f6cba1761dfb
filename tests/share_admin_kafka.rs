//! The admin client on share groups (KIP-932) against the real Kafka cluster: group configs
//! round-trip, a member's assignment in `describe_share_groups`, the listing by type, start
//! offsets after consumption, a reset refused while a member is active and applied once the
//! group is empty, deleting start offsets, deleting the group.
//!
//! The member is made of raw requests (`tests/share_support`): rekafka's share consumer is
//! written separately. Named `*_kafka.rs`: the mock cluster does not serve share groups.

mod common;
mod share_support;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{cluster, eventually, unique};
use rekafka::KafkaCode;
use rekafka::admin::{
    Admin, AlterConfigOp, ConfigSource, GroupState, GroupType, NewTopic, OffsetSpec,
    SHARE_AUTO_OFFSET_RESET, SHARE_DELIVERY_COUNT_LIMIT, SHARE_RECORD_LOCK_DURATION_MS,
    TopicPartition,
};
use rekafka::cluster::Cluster;
use rekafka::producer::{Producer, ProducerConfig, Record};
use share_support::RawShareMember;

const PARTITIONS: i32 = 2;
const PER_PARTITION: usize = 7;

/// The start offsets the admin reports for `group`, by partition (partitions without one are
/// left out).
async fn start_offsets(admin: &Admin, group: &str) -> BTreeMap<i32, i64> {
    admin
        .list_share_group_offsets(group, None)
        .await
        .expect("list_share_group_offsets")
        .into_iter()
        .filter_map(|(tp, r)| {
            r.expect("partition's start offset")
                .map(|o| (tp.partition, o.start_offset))
        })
        .collect()
}

/// Produces `per_partition` records to each partition of `topic`.
async fn produce(cluster: &Cluster, topic: &str, per_partition: usize) {
    let producer = Producer::new(cluster.clone(), ProducerConfig::default())
        .await
        .expect("producer");
    let mut sent = Vec::new();
    for i in 0..per_partition * PARTITIONS as usize {
        let r = Record::new(topic)
            .with_partition(i as i32 % PARTITIONS)
            .with_value(format!("v-{i}"));
        sent.push(producer.send(r).await.expect("enqueue"));
    }
    for s in sent {
        s.await.expect("delivered");
    }
    producer.close().await;
}

/// The end offset of each partition.
async fn end_offsets(admin: &Admin, tps: &[TopicPartition]) -> BTreeMap<i32, i64> {
    admin
        .list_offsets(
            &tps.iter()
                .map(|tp| (tp.clone(), OffsetSpec::Latest))
                .collect::<Vec<_>>(),
        )
        .await
        .expect("list_offsets")
        .into_iter()
        .zip(tps)
        .map(|(r, tp)| {
            (
                tp.partition,
                r.expect("end offset").offset.expect("an end offset"),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_group_admin_lifecycle() {
    let cluster = cluster().await;
    let admin = Admin::new(cluster.clone()).with_api_timeout(Duration::from_secs(30));
    let topic = unique("share-admin");
    let group = unique("share-admin-g");
    for r in admin
        .create_topics(&[NewTopic::new(&topic, PARTITIONS)])
        .await
        .expect("create_topics")
    {
        r.expect("topic created");
    }

    // Group configs round-trip (the group does not exist yet).
    admin
        .alter_group_configs(
            &group,
            &[
                AlterConfigOp::set(SHARE_AUTO_OFFSET_RESET, "earliest"),
                AlterConfigOp::set(SHARE_DELIVERY_COUNT_LIMIT, "4"),
                AlterConfigOp::set(SHARE_RECORD_LOCK_DURATION_MS, "20000"),
            ],
        )
        .await
        .expect("alter_group_configs");
    let configs = eventually("group configs visible", Duration::from_secs(15), || async {
        let c = admin
            .describe_group_configs(&[&group])
            .await
            .expect("describe_group_configs")
            .pop()
            .expect("one result")
            .expect("group configs");
        let value = |n: &str| c.iter().find(|e| e.name == n).and_then(|e| e.value.clone());
        (value(SHARE_AUTO_OFFSET_RESET).as_deref() == Some("earliest")).then_some(c)
    })
    .await;
    for (name, value) in [
        (SHARE_AUTO_OFFSET_RESET, "earliest"),
        (SHARE_DELIVERY_COUNT_LIMIT, "4"),
        (SHARE_RECORD_LOCK_DURATION_MS, "20000"),
    ] {
        let e = configs
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("{name} missing in {configs:?}"));
        assert_eq!(e.value.as_deref(), Some(value), "{e:?}");
        assert_eq!(e.source, ConfigSource::DynamicGroup, "{e:?}");
    }

    // Records to share: PER_PARTITION on each partition.
    produce(&cluster, &topic, PER_PARTITION).await;
    let tps: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new(&topic, p))
        .collect();
    let ends = end_offsets(&admin, &tps).await;
    // A member joins and is assigned both partitions.
    let member_id = unique("member");
    let mut member = RawShareMember::new(cluster.clone(), &group, &topic, &member_id);
    member.join_until_assigned(PARTITIONS as usize).await;
    let described = eventually(
        "the member in describe",
        Duration::from_secs(20),
        || async {
            let d = admin
                .describe_share_groups(&[&group])
                .await
                .expect("describe_share_groups")
                .pop()
                .expect("one result")
                .expect("share group described");
            (d.members.len() == 1 && d.members[0].assignment.len() == PARTITIONS as usize)
                .then_some(d)
        },
    )
    .await;
    assert_eq!(described.group_id, group);
    assert_eq!(described.state, GroupState::Stable, "{described:?}");
    let m = &described.members[0];
    assert_eq!(m.member_id, member_id);
    assert_eq!(m.subscribed_topics, vec![topic.clone()]);
    assert_eq!(m.assignment, tps);
    assert!(m.member_epoch > 0, "{m:?}");
    assert!(described.coordinator >= 0);

    // Listed as a share group, and only under that type.
    let shares = admin.list_share_groups().await.expect("list_share_groups");
    let listed = shares
        .iter()
        .find(|g| g.group_id == group)
        .unwrap_or_else(|| panic!("{group} not among the share groups {shares:?}"));
    assert_eq!(listed.group_type, Some(GroupType::Share));
    assert!(
        shares
            .iter()
            .all(|g| g.group_type == Some(GroupType::Share))
    );
    let consumers = admin
        .list_groups_of_type(&[GroupType::Consumer, GroupType::Classic])
        .await
        .expect("list_groups_of_type");
    assert!(consumers.iter().all(|g| g.group_id != group));
    // Not a consumer group: ConsumerGroupDescribe does not know it.
    let as_consumer = admin
        .describe_consumer_groups(&[&group])
        .await
        .expect("describe_consumer_groups")
        .pop()
        .expect("one result");
    assert!(as_consumer.is_err(), "{as_consumer:?}");

    // The member takes every record and accepts it: the start offsets reach the ends.
    let expected: BTreeMap<i32, usize> = (0..PARTITIONS).map(|p| (p, PER_PARTITION)).collect();
    let accepted = member.consume_and_accept(&expected).await;
    for (p, offsets) in &accepted {
        let mut sorted = offsets.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(&sorted, offsets, "partition {p}: an offset delivered twice");
        assert_eq!(sorted, (0..ends[p]).collect::<Vec<_>>(), "partition {p}");
    }
    // The broker persists a share partition's state (what DescribeShareGroupOffsets reads)
    // before it moves the start offset past newly accepted records, so the start offset it
    // reports trails by one write: one more record each, taken and accepted, writes the state
    // again. From then on the start offset is at least the old ends (and at most the new).
    produce(&cluster, &topic, 1).await;
    let ends2 = end_offsets(&admin, &tps).await;
    let one_more: BTreeMap<i32, usize> = (0..PARTITIONS).map(|p| (p, 1)).collect();
    let accepted2 = member.consume_and_accept(&one_more).await;
    for (p, offsets) in &accepted2 {
        assert_eq!(offsets, &vec![ends[p]], "partition {p}");
    }
    let after = eventually(
        "start offsets past the first records",
        Duration::from_secs(20),
        || async {
            let s = start_offsets(&admin, &group).await;
            s.iter()
                .all(|(p, o)| ends[p] <= *o && *o <= ends2[p])
                .then_some(s)
        },
    )
    .await;
    assert_eq!(after.len(), PARTITIONS as usize, "{after:?}");
    // Asking for named partitions gives them in input order, None where there is no state.
    let asked = [
        TopicPartition::new(&topic, 1),
        TopicPartition::new(&topic, 0),
    ];
    let named = admin
        .list_share_group_offsets(&group, Some(&asked))
        .await
        .expect("list_share_group_offsets (named)");
    assert_eq!(
        named
            .iter()
            .map(|(tp, r)| (
                tp.clone(),
                r.as_ref().ok().copied().flatten().map(|o| o.start_offset)
            ))
            .collect::<Vec<_>>(),
        vec![
            (asked[0].clone(), Some(after[&1])),
            (asked[1].clone(), Some(after[&0]))
        ]
    );

    // A reset, deleting start offsets and deleting the group are refused while the member is
    // active.
    member.heartbeat().await;
    let refused = admin
        .alter_share_group_offsets(&group, &[(tps[0].clone(), 0)])
        .await;
    assert_eq!(
        refused.as_ref().err().and_then(|e| e.kafka_code()),
        Some(KafkaCode::NonEmptyGroup),
        "{refused:?}"
    );
    let kept = admin.delete_share_group_offsets(&group, &[&topic]).await;
    assert_eq!(
        kept.as_ref().err().and_then(|e| e.kafka_code()),
        Some(KafkaCode::NonEmptyGroup),
        "{kept:?}"
    );
    let not_deleted = admin
        .delete_share_groups(&[&group])
        .await
        .expect("delete_share_groups")
        .pop()
        .expect("one result");
    assert_eq!(
        not_deleted.as_ref().err().and_then(|e| e.kafka_code()),
        Some(KafkaCode::NonEmptyGroup),
        "{not_deleted:?}"
    );
    assert_eq!(start_offsets(&admin, &group).await, after);

    // The member leaves; the empty group's start offsets move.
    member.leave().await;
    eventually("the group empty", Duration::from_secs(20), || async {
        let d = admin
            .describe_share_groups(&[&group])
            .await
            .expect("describe_share_groups")
            .pop()
            .expect("one result")
            .expect("share group described");
        (d.members.is_empty() && d.state == GroupState::Empty).then_some(())
    })
    .await;
    let reset = admin
        .alter_share_group_offsets(
            &group,
            &[
                (tps[0].clone(), 2),
                (tps[1].clone(), 0),
                (TopicPartition::new(&topic, 99), 0),
            ],
        )
        .await
        .expect("alter_share_group_offsets");
    assert!(reset[0].1.is_ok(), "{reset:?}");
    assert!(reset[1].1.is_ok(), "{reset:?}");
    assert_eq!(reset[2].0, TopicPartition::new(&topic, 99));
    assert_eq!(
        reset[2].1.as_ref().err().and_then(|e| e.kafka_code()),
        Some(KafkaCode::UnknownTopicOrPartition),
        "{reset:?}"
    );
    let moved: BTreeMap<i32, i64> = [(0, 2), (1, 0)].into_iter().collect();
    eventually("start offsets reset", Duration::from_secs(20), || async {
        (start_offsets(&admin, &group).await == moved).then_some(())
    })
    .await;

    // Deleting the topic's start offsets forgets them.
    let deleted = admin
        .delete_share_group_offsets(&group, &[&topic])
        .await
        .expect("delete_share_group_offsets");
    assert_eq!(deleted.len(), 1);
    assert_eq!(deleted[0].0, topic);
    deleted[0].1.as_ref().expect("offsets deleted");
    eventually("start offsets deleted", Duration::from_secs(20), || async {
        start_offsets(&admin, &group).await.is_empty().then_some(())
    })
    .await;

    // Deleting the group removes it.
    admin
        .delete_share_groups(&[&group])
        .await
        .expect("delete_share_groups")
        .pop()
        .expect("one result")
        .expect("group deleted");
    let gone = admin
        .describe_share_groups(&[&group])
        .await
        .expect("describe_share_groups")
        .pop()
        .expect("one result");
    assert_eq!(
        gone.as_ref().err().and_then(|e| e.kafka_code()),
        Some(KafkaCode::GroupIdNotFound),
        "{gone:?}"
    );
    let shares = admin.list_share_groups().await.expect("list_share_groups");
    assert!(shares.iter().all(|g| g.group_id != group), "{shares:?}");
    cluster.close().await;
}

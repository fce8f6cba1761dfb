//! The admin client against a real cluster (Apache Kafka from `scripts/kafka.sh`: three nodes,
//! replication 3) and, in the second pass, the mock cluster. What Kafka answers asynchronously
//! (a new topic or an altered config reaching every broker) is awaited, as Kafka's own tests do.
//!
//! Needs `REKAFKA_BOOTSTRAP`; the tests fail (they do not skip) without it:
//!
//! ```text
//! scripts/with-broker.sh cargo test --test admin_broker
//! ```

mod common;
use common::{bootstrap, broker_count, default_replication, eventually, unique};

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use rekafka::admin::{
    AlterConfigOp, ConfigResource, ConfigSource, GroupState, Internal, NewPartitions, NewTopic,
    OffsetSpec, TopicPartition,
};
use rekafka::cluster::CoordinatorType;
use rekafka::connection::BrokerConnection;
use rekafka::protocol::record::BatchBuilder;
use rekafka::protocol::unstable::StrBytes;
use rekafka::protocol::unstable::messages::join_group_request::JoinGroupRequestProtocol;
use rekafka::protocol::unstable::messages::leave_group_request::MemberIdentity;
use rekafka::protocol::unstable::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use rekafka::protocol::unstable::messages::produce_request::{
    PartitionProduceData, TopicProduceData,
};
use rekafka::protocol::unstable::messages::sync_group_request::SyncGroupRequestAssignment;
use rekafka::protocol::unstable::messages::{
    GroupId, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest, ProduceRequest,
    SyncGroupRequest, TopicName,
};
use rekafka::{Client, ErrorKind, KafkaCode};

async fn client() -> Client {
    let built = Client::builder()
        .bootstrap_servers([bootstrap()])
        .client_id("rekafka-admin-tests")
        .request_timeout(Duration::from_secs(10))
        .api_timeout(Duration::from_secs(15))
        .connect()
        .await;
    match built {
        Ok(c) => c,
        Err(e) => panic!("client: {e}"),
    }
}

fn ok<T>(r: rekafka::Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e}"),
    }
}

fn code<T: std::fmt::Debug>(r: &rekafka::Result<T>) -> Option<KafkaCode> {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.kafka_code(),
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

async fn create(client: &Client, name: &str, partitions: i32) {
    let r = ok(
        client
            .admin()
            .create_topics(&[NewTopic::new(name, partitions)])
            .await,
        "create_topics",
    );
    ok(
        r.into_iter().next().unwrap_or_else(|| panic!("no result")),
        "create",
    );
    wait_for_leaders(client, name, partitions).await;
}

/// Waits until every partition of a new topic has a leader in the client's metadata.
async fn wait_for_leaders(client: &Client, topic: &str, partitions: i32) {
    eventually(
        &format!("leaders of {topic}"),
        Duration::from_secs(30),
        || async {
            let _ = client.cluster().refresh_topics(&[topic]).await;
            let parts = client.cluster().partitions(topic).await.ok()?;
            (parts.len() == partitions as usize && parts.iter().all(|p| p.leader >= 0))
                .then_some(())
        },
    )
    .await
}

/// Produces one batch of `n` records to partition 0 (acks=-1).
async fn produce(client: &Client, topic: &str, n: usize) {
    let mut b = BatchBuilder::new();
    for i in 0..n {
        let v = format!("v{i}");
        ok(
            b.append(1_700_000_000_000, None, Some(v.as_bytes()), &[]),
            "append",
        );
    }
    let batch = ok(b.build(), "build");
    // A leader Kafka has just elected may not know it yet (NOT_LEADER_OR_FOLLOWER): refresh
    // the metadata and send again, as a producer does.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (leader, _) = ok(client.cluster().leader_for(topic, 0).await, "leader");
        let broker = ok(
            client.cluster().connection_for_broker(leader).await,
            "broker",
        );
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(s(topic)))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch.clone())),
                    ]),
            ]);
        let resp = ok(broker.send(req).await, "produce");
        let code = resp.responses[0].partition_responses[0].error_code;
        let retriable = KafkaCode::from_i16(code).is_some_and(|c| c.is_retriable());
        if retriable && std::time::Instant::now() < deadline {
            let _ = client.cluster().refresh_topics(&[topic]).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert_eq!(code, 0, "produce error");
        return;
    }
}

#[tokio::test]
async fn topics_create_list_describe_delete_with_per_topic_results() {
    let client = client().await;
    let admin = client.admin();
    let a = unique("admin-a");
    let b = unique("admin-b");
    let missing = unique("admin-missing");

    let created = ok(
        admin
            .create_topics(&[NewTopic::new(&a, 3)
                .with_replication_factor(default_replication() as i16)
                .with_config("retention.ms", "123456")])
            .await,
        "create",
    );
    let t = ok(
        created
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("empty")),
        "create a",
    );
    assert_eq!(t.name, a);

    // One call, two topics: the existing one fails alone, in its input position.
    let again = ok(
        admin
            .create_topics(&[NewTopic::new(&a, 3), NewTopic::new(&b, 2)])
            .await,
        "create again",
    );
    assert_eq!(again.len(), 2);
    assert_eq!(code(&again[0]), Some(KafkaCode::TopicAlreadyExists));
    assert!(again[1].is_ok(), "{:?}", again[1]);

    // Kafka lists new topics once the metadata reaches the broker that answers.
    let listed = eventually("both topics listed", Duration::from_secs(30), || async {
        let listed = admin.list_topics(Internal::Exclude).await.ok()?;
        let n = listed.iter().filter(|t| t.name == a || t.name == b).count();
        (n == 2).then_some(listed)
    })
    .await;
    let find = |n: &str| listed.iter().find(|t| t.name == n).cloned();
    assert_eq!(find(&a).map(|t| t.partitions), Some(3));
    assert_eq!(find(&b).map(|t| t.partitions), Some(2));
    assert!(listed.iter().all(|t| !t.is_internal));
    assert!(listed.windows(2).all(|w| w[0].name < w[1].name), "sorted");

    let described = eventually(
        "a described with its leaders",
        Duration::from_secs(30),
        || async {
            let d = admin.describe_topics(&[&missing, &a]).await.ok()?;
            let ready = d[1].as_ref().is_ok_and(|t| {
                t.partitions.len() == 3 && t.partitions.iter().all(|p| p.leader >= 0)
            });
            ready.then_some(d)
        },
    )
    .await;
    assert_eq!(
        code(&described[0]),
        Some(KafkaCode::UnknownTopicOrPartition)
    );
    let d = ok(described[1].clone(), "describe a");
    assert_eq!(d.name, a);
    assert_eq!(
        d.partitions.iter().map(|p| p.partition).collect::<Vec<_>>(),
        [0, 1, 2]
    );
    let brokers: Vec<i32> = client
        .cluster()
        .metadata()
        .brokers
        .keys()
        .copied()
        .collect();
    for p in &d.partitions {
        let mut replicas = p.replicas.clone();
        replicas.sort_unstable();
        replicas.dedup();
        assert_eq!(replicas.len(), default_replication(), "{p:?}");
        assert!(replicas.iter().all(|r| brokers.contains(r)), "{p:?}");
        assert!(
            p.replicas.contains(&p.leader),
            "the leader is a replica: {p:?}"
        );
        assert!(p.isr.contains(&p.leader), "the leader is in sync: {p:?}");
        assert!(p.isr.iter().all(|r| p.replicas.contains(r)), "{p:?}");
    }
    // Describing an unknown topic must not have created it.
    let listed = ok(admin.list_topics(Internal::Include).await, "list");
    assert!(!listed.iter().any(|t| t.name == missing));

    let deleted = ok(admin.delete_topics(&[&a, &missing, &b]).await, "delete");
    assert!(deleted[0].is_ok(), "{:?}", deleted[0]);
    assert_eq!(code(&deleted[1]), Some(KafkaCode::UnknownTopicOrPartition));
    assert!(deleted[2].is_ok(), "{:?}", deleted[2]);
    // Gone, once the deletion reaches the broker that answers.
    eventually("both topics gone", Duration::from_secs(30), || async {
        let listed = admin.list_topics(Internal::Exclude).await.ok()?;
        (!listed.iter().any(|t| t.name == a || t.name == b)).then_some(())
    })
    .await;
    client.close().await;
}

#[tokio::test]
async fn describe_and_incrementally_alter_topic_configs() {
    let client = client().await;
    let admin = client.admin();
    let topic = unique("admin-configs");
    let created = ok(
        admin
            .create_topics(&[NewTopic::new(&topic, 1)
                .with_config("retention.ms", "3600000")
                .with_config("cleanup.policy", "delete")])
            .await,
        "create",
    );
    assert!(created[0].is_ok(), "{:?}", created[0]);
    wait_for_leaders(&client, &topic, 1).await;
    let resource = ConfigResource::Topic(topic.clone());
    let value = |entries: &[rekafka::admin::ConfigEntry], name: &str| {
        entries
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.value.clone())
    };
    let described = ok(
        admin
            .describe_configs(std::slice::from_ref(&resource))
            .await,
        "describe",
    );
    let entries = ok(described[0].clone(), "describe topic");
    assert_eq!(value(&entries, "retention.ms").as_deref(), Some("3600000"));
    assert_eq!(value(&entries, "cleanup.policy").as_deref(), Some("delete"));

    let altered = ok(
        admin
            .incremental_alter_configs(&[(
                resource.clone(),
                vec![
                    AlterConfigOp::Set {
                        name: "retention.ms".into(),
                        value: "7200000".into(),
                    },
                    AlterConfigOp::Delete {
                        name: "cleanup.policy".into(),
                    },
                ],
            )])
            .await,
        "alter",
    );
    assert!(altered[0].is_ok(), "{:?}", altered[0]);
    // Kafka applies the change through the controller; the broker that answers DescribeConfigs
    // sees it once the metadata reaches it.
    let entries = eventually("the altered config", Duration::from_secs(30), || async {
        let described = admin
            .describe_configs(std::slice::from_ref(&resource))
            .await
            .ok()?;
        let entries = described.into_iter().next()?.ok()?;
        (value(&entries, "retention.ms").as_deref() == Some("7200000")).then_some(entries)
    })
    .await;
    let retention = entries.iter().find(|c| c.name == "retention.ms");
    assert_eq!(
        retention.map(|c| c.source),
        Some(ConfigSource::DynamicTopic),
        "{retention:?}"
    );
    // Deleted: back to the broker's default, which Kafka describes with a non-topic source.
    let policy = entries.iter().find(|c| c.name == "cleanup.policy");
    if common::is_tansu() {
        // Tansu lists only the configs set (docs/broker-quirks.md 5.5).
        assert!(
            policy.is_none_or(|c| c.source != ConfigSource::DynamicTopic),
            "{policy:?}"
        );
    } else {
        let policy = policy.unwrap_or_else(|| panic!("cleanup.policy is described"));
        assert_ne!(policy.source, ConfigSource::DynamicTopic, "{policy:?}");
        assert_eq!(
            policy.value.as_deref(),
            Some("delete"),
            "the default: {policy:?}"
        );
    }
    ok(admin.delete_topics(&[&topic]).await, "delete");
    client.close().await;
}

#[tokio::test]
async fn describe_cluster_names_the_broker_and_controller() {
    let client = client().await;
    let d = ok(client.admin().describe_cluster().await, "describe_cluster");
    assert!(d.cluster_id.as_deref().is_some_and(|c| !c.is_empty()));
    let mut ids: Vec<i32> = d.brokers.iter().map(|b| b.node_id).collect();
    ids.sort_unstable();
    assert_eq!(ids.len(), broker_count(), "{d:?}");
    // The same brokers as Metadata names, at the addresses it names.
    let meta = client.cluster().metadata();
    assert_eq!(ids, meta.brokers.keys().copied().collect::<Vec<_>>());
    let controller = d
        .controller
        .unwrap_or_else(|| panic!("no controller: {d:?}"));
    assert!(ids.contains(&controller), "{d:?}");
    for b in &d.brokers {
        let m = &meta.brokers[&b.node_id];
        assert_eq!(
            (b.host.as_str(), b.port),
            (m.host.as_str(), m.port),
            "{b:?}"
        );
    }
    // The bootstrap address is one of them.
    let boot = bootstrap();
    assert!(
        d.brokers
            .iter()
            .any(|b| format!("{}:{}", b.host, b.port) == boot),
        "{boot} in {d:?}"
    );
    client.close().await;
}

#[tokio::test]
async fn list_offsets_earliest_and_latest_per_partition() {
    let client = client().await;
    let admin = client.admin();
    let topic = unique("admin-offsets");
    create(&client, &topic, 2).await;
    produce(&client, &topic, 5).await;

    let tp = |p| TopicPartition::new(&topic, p);
    let asked = [
        (tp(0), OffsetSpec::Earliest),
        (tp(0), OffsetSpec::Latest),
        (tp(7), OffsetSpec::Latest),
        (tp(1), OffsetSpec::Latest),
    ];
    let r = ok(admin.list_offsets(&asked).await, "list_offsets");
    assert_eq!(r.len(), 4);
    assert_eq!(ok(r[0].clone(), "earliest").offset, Some(0));
    // Five records in one batch: the high watermark is 5. Tansu answers LATEST with
    // base_offset(last batch) + 1 = 1 (docs/broker-quirks.md 1.1); only there is that tolerated.
    let latest = ok(r[1].clone(), "latest").offset;
    if common::is_tansu() {
        assert!(latest == Some(5) || latest == Some(1), "{latest:?}");
    } else {
        assert_eq!(latest, Some(5));
    }
    assert_eq!(code(&r[2]), Some(KafkaCode::UnknownTopicOrPartition));
    assert_eq!(
        ok(r[3].clone(), "latest of an empty partition").offset,
        Some(0)
    );

    // A last batch of one record makes Tansu's answer exact too: 6 on every broker.
    produce(&client, &topic, 1).await;
    let r = ok(
        admin.list_offsets(&[(tp(0), OffsetSpec::Latest)]).await,
        "latest",
    );
    assert_eq!(ok(r[0].clone(), "latest").offset, Some(6));
    let r = ok(
        admin.list_offsets(&[(tp(0), OffsetSpec::LastStable)]).await,
        "last stable",
    );
    assert_eq!(ok(r[0].clone(), "last stable").offset, Some(6));
    ok(admin.delete_topics(&[&topic]).await, "delete");
    client.close().await;
}

#[tokio::test]
async fn create_partitions_missing_from_broker_is_a_clean_unsupported_error() {
    let client = client().await;
    let admin = client.admin();
    let topic = unique("admin-parts");
    create(&client, &topic, 1).await;
    let r = admin
        .create_partitions(&[NewPartitions::increase_to(&topic, 3)])
        .await;
    match r {
        // Tansu has no CreatePartitions (docs/broker-quirks.md 5.6): a clean, fatal error.
        Err(e) if common::is_tansu() => {
            assert!(
                matches!(e.kind(), ErrorKind::UnsupportedVersion { .. }),
                "{e}"
            );
        }
        Err(e) => panic!("create_partitions: {e}"),
        // Kafka and the mock have it: the topic grows, once the metadata reaches the broker
        // that answers.
        Ok(results) => {
            assert!(results[0].is_ok(), "{:?}", results[0]);
            eventually("three partitions", Duration::from_secs(30), || async {
                let d = admin.describe_topics(&[&topic]).await.ok()?;
                let t = d.into_iter().next()?.ok()?;
                (t.partitions.len() == 3).then_some(())
            })
            .await;
        }
    }
    ok(admin.delete_topics(&[&topic]).await, "delete");
    client.close().await;
}

/// A consumer-protocol subscription (v0) to `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(topics.len() as i32);
    for t in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.freeze()
}

/// A consumer-protocol assignment (v0).
fn assignment(topic: &str, partitions: &[i32]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(1);
    b.put_i16(topic.len() as i16);
    b.put_slice(topic.as_bytes());
    b.put_i32(partitions.len() as i32);
    for p in partitions {
        b.put_i32(*p);
    }
    b.put_i32(-1);
    b.freeze()
}

/// The group coordinator of `group` and a connection to it, looked up again while Kafka answers
/// that the coordinator is not (yet) there: the offsets topic is created on first use and its
/// partitions take a moment to load.
async fn coordinator_for(client: &Client, group: &str) -> (i32, BrokerConnection) {
    let id = ok(
        client
            .cluster()
            .coordinator(CoordinatorType::Group, group)
            .await,
        "coordinator",
    );
    let conn = ok(
        client.cluster().connection_for_broker(id).await,
        "coordinator connection",
    );
    (id, conn)
}

fn coordinator_moving(code: i16) -> bool {
    [
        KafkaCode::NotCoordinator,
        KafkaCode::CoordinatorNotAvailable,
        KafkaCode::CoordinatorLoadInProgress,
    ]
    .iter()
    .any(|c| c.code() == code)
}

/// Joins `group` as its only member with raw JoinGroup/SyncGroup (session timeout 6 s) and
/// assigns `partitions` of `topic` to itself. Returns the coordinator's id and connection, the
/// member id and the generation. A coordinator that is still loading or has moved is looked
/// up again, as a client does.
async fn join_group(
    client: &Client,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> (i32, BrokerConnection, String, i32) {
    let join = |member: String| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_session_timeout_ms(6000)
            .with_rebalance_timeout_ms(6000)
            .with_member_id(s(&member))
            .with_protocol_type(s("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(subscription(&[topic])),
            ])
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (id, coordinator, resp) = loop {
        let (id, coordinator) = coordinator_for(client, group).await;
        let mut resp = ok(coordinator.send(join(String::new())).await, "join");
        if resp.error_code == KafkaCode::MemberIdRequired.code() {
            resp = ok(
                coordinator.send(join(resp.member_id.to_string())).await,
                "rejoin",
            );
        }
        if coordinator_moving(resp.error_code) && std::time::Instant::now() < deadline {
            client
                .cluster()
                .invalidate_coordinator(CoordinatorType::Group, group);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        break (id, coordinator, resp);
    };
    assert_eq!(resp.error_code, 0, "join error");
    let member = resp.member_id.to_string();
    assert_eq!(resp.leader.as_str(), member, "the only member leads");
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id(resp.generation_id)
        .with_member_id(s(&member))
        .with_protocol_type(Some(s("consumer")))
        .with_protocol_name(Some(s("range")))
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(s(&member))
                .with_assignment(assignment(topic, partitions)),
        ]);
    let synced = ok(coordinator.send(sync).await, "sync");
    assert_eq!(synced.error_code, 0, "sync error");
    (id, coordinator, member, resp.generation_id)
}

/// Commits `offsets` for `member` of `generation` (or standalone: "" and -1), looking the
/// coordinator up again while it is loading or has moved.
async fn commit(
    client: &Client,
    group: &str,
    member: &str,
    generation: i32,
    topic: &str,
    offsets: &[(i32, i64)],
) {
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(TopicName(s(topic)))
                .with_partitions(
                    offsets
                        .iter()
                        .map(|(p, o)| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(*p)
                                .with_committed_offset(*o)
                        })
                        .collect(),
                ),
        ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, coordinator) = coordinator_for(client, group).await;
        let resp = ok(coordinator.send(req.clone()).await, "commit");
        let codes: Vec<(i32, i16)> = resp
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| (p.partition_index, p.error_code))
            .collect();
        // A new topic reaches the coordinator broker's metadata a moment after the broker that
        // answered our metadata request: UNKNOWN_TOPIC_OR_PARTITION is retriable here, as in the
        // Java client's commitSync.
        let unknown_topic = KafkaCode::UnknownTopicOrPartition.code();
        if codes
            .iter()
            .any(|(_, c)| coordinator_moving(*c) || *c == unknown_topic)
            && std::time::Instant::now() < deadline
        {
            client
                .cluster()
                .invalidate_coordinator(CoordinatorType::Group, group);
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        for (p, c) in codes {
            assert_eq!(c, 0, "commit error on partition {p}");
        }
        return;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_list_describe_offsets_delete() {
    let client = client().await;
    let admin = client.admin();
    let topic = unique("admin-groups");
    let group = unique("admin-group");
    create(&client, &topic, 3).await;
    let (coordinator_id, coordinator, member, generation) =
        join_group(&client, &group, &topic, &[0, 2]).await;
    commit(
        &client,
        &group,
        &member,
        generation,
        &topic,
        &[(0, 17), (2, 4)],
    )
    .await;

    let listed = ok(admin.list_groups().await, "list_groups");
    let g = listed.iter().find(|g| g.group_id == group);
    assert_eq!(
        g.map(|g| g.protocol_type.as_str()),
        Some("consumer"),
        "{listed:?}"
    );

    let other = unique("admin-no-group");
    let described = ok(admin.describe_groups(&[&group, &other]).await, "describe");
    let d = ok(described[0].clone(), "describe group");
    assert_eq!(d.group_id, group);
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!(d.protocol_type, "consumer");
    assert_eq!(d.coordinator, coordinator_id);
    assert_eq!(d.members.len(), 1);
    let m = &d.members[0];
    assert_eq!(m.member_id, member);
    if common::is_tansu() {
        // Tansu answers DescribeGroups (every version) with an empty protocol name, client id,
        // client host, member metadata and assignment (docs/broker-quirks.md adm.1): all of
        // them, or it is something else. The decoding is tested on canned responses
        // (tests/fake/admin_fake.rs).
        assert_eq!(
            (
                d.protocol.as_str(),
                m.client_id.as_str(),
                m.assignment.is_empty()
            ),
            ("", "", true),
            "{d:?}"
        );
    } else {
        assert_eq!(d.protocol, "range");
        assert_eq!(m.client_id, "rekafka-admin-tests");
        assert_eq!(m.metadata, subscription(&[&topic]));
        assert_eq!(
            ok(m.consumer_assignment(), "assignment"),
            [
                TopicPartition::new(&topic, 0),
                TopicPartition::new(&topic, 2)
            ]
        );
    }
    // An unknown group: Kafka says Dead, Tansu says Empty (docs/broker-quirks.md 4.4); either
    // way it has no members and is reported in its own position.
    // Kafka 4.x (DescribeGroups v6) answers GROUP_ID_NOT_FOUND instead.
    match &described[1] {
        Err(e) => assert_eq!(e.kafka_code(), Some(KafkaCode::GroupIdNotFound), "{e}"),
        Ok(unknown) => {
            assert!(unknown.members.is_empty());
            if common::is_tansu() {
                assert!(matches!(
                    unknown.state,
                    GroupState::Dead | GroupState::Empty
                ));
            } else {
                assert_eq!(unknown.state, GroupState::Dead, "{unknown:?}");
            }
        }
    }

    // Committed offsets: all of the group's, and for chosen partitions in input order.
    let all = ok(admin.list_group_offsets(&group, None).await, "offsets");
    let got: Vec<(i32, Option<i64>)> = all
        .iter()
        .map(|(tp, r)| {
            assert_eq!(tp.topic(), topic);
            (tp.partition, ok(r.clone(), "offset").map(|c| c.offset))
        })
        .collect();
    assert_eq!(got, [(0, Some(17)), (2, Some(4))]);
    let chosen = [
        TopicPartition::new(&topic, 2),
        TopicPartition::new(&topic, 1),
        TopicPartition::new(&topic, 0),
    ];
    let some = ok(
        admin.list_group_offsets(&group, Some(&chosen)).await,
        "offsets",
    );
    let got: Vec<Option<i64>> = some
        .iter()
        .map(|(_, r)| ok(r.clone(), "offset").map(|c| c.offset))
        .collect();
    assert_eq!(got, [Some(4), None, Some(17)]);
    assert_eq!(
        some.iter().map(|(tp, _)| tp.clone()).collect::<Vec<_>>(),
        chosen
    );

    // A group with a member cannot be deleted; once it leaves, it can.
    let leave = LeaveGroupRequest::default()
        .with_group_id(GroupId(s(&group)))
        .with_members(vec![MemberIdentity::default().with_member_id(s(&member))]);
    let left = ok(coordinator.send(leave).await, "leave");
    assert_eq!(left.error_code, 0);
    let described = ok(admin.describe_groups(&[&group]).await, "describe");
    let d = ok(described[0].clone(), "describe after leave");
    assert_eq!(d.state, GroupState::Empty);
    assert!(d.members.is_empty());
    let deleted = ok(admin.delete_groups(&[&group]).await, "delete_groups");
    assert!(deleted[0].is_ok(), "{:?}", deleted[0]);
    let listed = ok(admin.list_groups().await, "list_groups");
    assert!(!listed.iter().any(|g| g.group_id == group), "{listed:?}");
    let after = ok(admin.list_group_offsets(&group, None).await, "offsets");
    assert!(after.is_empty(), "{after:?}");
    ok(admin.delete_topics(&[&topic]).await, "delete");
    client.close().await;
}

#[tokio::test]
async fn standalone_commit_shows_in_committed_offsets() {
    // A group that only stores offsets (generation -1, no members), as `assign()` users do.
    let client = client().await;
    let admin = client.admin();
    let topic = unique("admin-standalone");
    let group = unique("admin-standalone-group");
    create(&client, &topic, 2).await;
    commit(&client, &group, "", -1, &topic, &[(1, 42)]).await;
    let offsets = ok(admin.list_group_offsets(&group, None).await, "offsets");
    assert_eq!(offsets.len(), 1, "{offsets:?}");
    assert_eq!(offsets[0].0, TopicPartition::new(&topic, 1));
    assert_eq!(
        ok(offsets[0].1.clone(), "offset").map(|c| c.offset),
        Some(42)
    );
    ok(admin.delete_groups(&[&group]).await, "delete_groups");
    ok(admin.delete_topics(&[&topic]).await, "delete");
    client.close().await;
}

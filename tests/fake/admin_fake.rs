//! The admin client against two in-process fake brokers (node ids 1 and 2) with canned
//! answers: the calls Tansu lacks (CreatePartitions, DeleteRecords, ListOffsets by timestamp
//! and max timestamp, DescribeGroups with member assignments, share groups: ShareGroupDescribe,
//! DescribeShareGroupOffsets, AlterShareGroupOffsets, ListGroups by type) and the retry paths a single
//! broker cannot show (NOT_CONTROLLER, a leader that moved, NOT_COORDINATOR, a connection
//! dropped mid-request). No real broker needed.
//!
//! The real effects of those calls (partitions that take records, a log start that moves, a
//! timestamp lookup that lands on the right record) and the NOT_CONTROLLER, moved-leader and
//! lost-response retry paths are tested against the mock cluster in `tests/mock/admin_mock.rs`.
//! This file keeps what canned answers show best: exact request routing per node (which
//! broker got which topics, how partitions are split into requests), the decoding of member
//! assignments, and coordinator and controller moves with stale metadata.

use crate::fake_broker;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use fake_broker::{ConnState, FakeBroker, FakeRequest, Reply};
use rekafka::admin::{
    ConfigResource, ConfigSource, GroupState, GroupType, NewPartitions, NewTopic, OffsetSpec,
    TopicPartition, decode_consumer_assignment,
};
use rekafka::protocol::unstable::StrBytes;
use rekafka::protocol::unstable::messages::create_partitions_response::CreatePartitionsTopicResult;
use rekafka::protocol::unstable::messages::create_topics_response::CreatableTopicResult;
use rekafka::protocol::unstable::messages::delete_groups_response::DeletableGroupResult;
use rekafka::protocol::unstable::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use rekafka::protocol::unstable::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use rekafka::protocol::unstable::messages::describe_groups_response::{
    DescribedGroup, DescribedGroupMember,
};
use rekafka::protocol::unstable::messages::find_coordinator_response::Coordinator;
use rekafka::protocol::unstable::messages::list_groups_response::ListedGroup;
use rekafka::protocol::unstable::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use rekafka::protocol::unstable::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use rekafka::protocol::unstable::messages::*;
use rekafka::{Client, ErrorKind, KafkaCode};

// ---------------------------------------------------------------------------------------------
// The fake cluster

/// What the fake brokers know and do; tests flip the switches.
#[derive(Default)]
struct World {
    addrs: Vec<(i32, SocketAddr)>,
    controller: i32,
    leader: i32,
    coordinator: i32,
    /// The next Metadata response names this leader (stale metadata), once.
    stale_leader_once: Option<i32>,
    /// The next DescribeGroups (or ShareGroupDescribe) answers NOT_COORDINATOR, once.
    not_coordinator_once: bool,
    /// The next DescribeShareGroupOffsets or AlterShareGroupOffsets answers
    /// COORDINATOR_LOAD_IN_PROGRESS, once.
    loading_once: bool,
    /// Requests seen: (node, api, body summary).
    calls: Vec<(i32, ApiKey, String)>,
    /// Nodes that drop every connection at its next request (down).
    dead: Vec<i32>,
}

type Shared = Arc<Mutex<World>>;

/// Partition 0 and 1 of topic "t" hold offsets 0..10; offset `o` has timestamp 1000 + 100·o.
const RECORDS: i64 = 10;
fn ts_of(offset: i64) -> i64 {
    1000 + 100 * offset
}

struct Cluster {
    world: Shared,
    _brokers: Vec<FakeBroker>,
}

impl Cluster {
    async fn start() -> Cluster {
        let world: Shared = Arc::new(Mutex::new(World {
            controller: 1,
            leader: 1,
            coordinator: 1,
            ..World::default()
        }));
        let mut brokers = Vec::new();
        for node in [1, 2] {
            let w = world.clone();
            let broker = FakeBroker::builder()
                .node(node)
                .api(ApiKey::Metadata, 9, 12)
                .api(ApiKey::FindCoordinator, 4, 6)
                .api(ApiKey::ListOffsets, 1, 9)
                .api(ApiKey::DeleteRecords, 0, 2)
                .api(ApiKey::CreatePartitions, 0, 3)
                .api(ApiKey::DescribeGroups, 0, 5)
                .api(ApiKey::DeleteGroups, 0, 2)
                .api(ApiKey::ListGroups, 0, 5)
                .api(ApiKey::CreateTopics, 2, 7)
                .api(ApiKey::DescribeConfigs, 1, 4)
                .api(ApiKey::ShareGroupDescribe, 1, 1)
                .api(ApiKey::DescribeShareGroupOffsets, 0, 1)
                .api(ApiKey::AlterShareGroupOffsets, 0, 0)
                .start(move |req: &FakeRequest, _: &mut ConnState| handle(req, &w))
                .await;
            world.lock().unwrap().addrs.push((node, broker.addr));
            brokers.push(broker);
        }
        Cluster {
            world,
            _brokers: brokers,
        }
    }

    fn bootstrap(&self) -> String {
        self.world.lock().unwrap().addrs[0].1.to_string()
    }

    fn calls(&self, api: ApiKey) -> Vec<(i32, String)> {
        self.world
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|(_, a, _)| *a == api)
            .map(|(n, _, s)| (*n, s.clone()))
            .collect()
    }

    fn set(&self, f: impl FnOnce(&mut World)) {
        f(&mut self.world.lock().unwrap());
    }

    async fn client(&self) -> Client {
        Client::builder()
            .bootstrap_servers([self.bootstrap()])
            .request_timeout(Duration::from_secs(2))
            .api_timeout(Duration::from_secs(3))
            .retry_backoff(Duration::from_millis(10), Duration::from_millis(50))
            .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(50))
            .connect()
            .await
            .unwrap()
    }
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

fn handle(fr: &FakeRequest, world: &Shared) -> Reply {
    let (node, api) = (fr.node, fr.api);
    let mut w = world.lock().unwrap();
    if w.dead.contains(&node) {
        // Down: the connection drops at its next request (ApiVersions included).
        return Reply::Close;
    }
    match api {
        ApiKey::Metadata => {
            let req: MetadataRequest = fr.decode();
            w.calls.push((node, api, String::new()));
            let leader = w.stale_leader_once.take().unwrap_or(w.leader);
            let brokers = w
                .addrs
                .iter()
                .map(|(id, a)| {
                    MetadataResponseBroker::default()
                        .with_node_id(BrokerId(*id))
                        .with_host(s(&a.ip().to_string()))
                        .with_port(a.port() as i32)
                })
                .collect();
            let topics = req
                .topics
                .unwrap_or_default()
                .into_iter()
                .filter_map(|t| t.name)
                .map(|name| {
                    let known = ["t", "s", "boom"].contains(&name.0.as_str());
                    MetadataResponseTopic::default()
                        .with_name(Some(name))
                        .with_error_code(if known { 0 } else { 3 })
                        .with_partitions(if known {
                            (0..2)
                                .map(|p| {
                                    MetadataResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_leader_id(BrokerId(leader))
                                        .with_replica_nodes(vec![BrokerId(leader)])
                                        .with_isr_nodes(vec![BrokerId(leader)])
                                })
                                .collect()
                        } else {
                            vec![]
                        })
                })
                .collect();
            let r = MetadataResponse::default()
                .with_brokers(brokers)
                .with_cluster_id(Some(s("fake")))
                .with_controller_id(BrokerId(w.controller))
                .with_topics(topics);
            fr.respond(&r)
        }
        ApiKey::FindCoordinator => {
            let req: FindCoordinatorRequest = fr.decode();
            let id = w.coordinator;
            let addr = w.addrs.iter().find(|(n, _)| *n == id).unwrap().1;
            w.calls.push((node, api, String::new()));
            let r = FindCoordinatorResponse::default().with_coordinators(
                req.coordinator_keys
                    .into_iter()
                    .map(|k| {
                        Coordinator::default()
                            .with_key(k)
                            .with_node_id(BrokerId(id))
                            .with_host(s(&addr.ip().to_string()))
                            .with_port(addr.port() as i32)
                    })
                    .collect(),
            );
            fr.respond(&r)
        }
        ApiKey::CreatePartitions => {
            let req: CreatePartitionsRequest = fr.decode();
            let names: Vec<String> = req.topics.iter().map(|t| t.name.0.to_string()).collect();
            w.calls.push((node, api, names.join(",")));
            let is_controller = node == w.controller;
            let r = CreatePartitionsResponse::default().with_results(
                req.topics
                    .iter()
                    .map(|t| {
                        let code = if !is_controller {
                            41 // NOT_CONTROLLER
                        } else if t.name.0.as_str().starts_with("nope") {
                            3
                        } else if t.count <= 2 {
                            37 // INVALID_PARTITIONS
                        } else {
                            0
                        };
                        CreatePartitionsTopicResult::default()
                            .with_name(t.name.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            );
            fr.respond(&r)
        }
        ApiKey::DeleteRecords => {
            let req: DeleteRecordsRequest = fr.decode();
            w.calls.push((node, api, String::new()));
            if req.topics.iter().any(|t| t.name.0.as_str() == "boom") {
                // Drop the connection, as Tansu does on DeleteRecords.
                return Reply::Close;
            }
            let is_leader = node == w.leader;
            let r = DeleteRecordsResponse::default().with_topics(
                req.topics
                    .iter()
                    .map(|t| {
                        DeleteRecordsTopicResult::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        let (code, low) = if !is_leader {
                                            (6, -1)
                                        } else if p.offset > RECORDS {
                                            (1, -1) // OFFSET_OUT_OF_RANGE
                                        } else if p.offset < 0 {
                                            (0, RECORDS)
                                        } else {
                                            (0, p.offset)
                                        };
                                        DeleteRecordsPartitionResult::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code)
                                            .with_low_watermark(low)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
            fr.respond(&r)
        }
        ApiKey::ListOffsets => {
            let req: ListOffsetsRequest = fr.decode();
            w.calls
                .push((node, api, format!("isolation={}", req.isolation_level)));
            let is_leader = node == w.leader;
            let r = ListOffsetsResponse::default().with_topics(
                req.topics
                    .iter()
                    .map(|t| {
                        ListOffsetsTopicResponse::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        let (code, off, ts) = if !is_leader {
                                            (6, -1, -1)
                                        } else {
                                            match p.timestamp {
                                                -2 => (0, 0, -1),
                                                -1 => (0, RECORDS, -1),
                                                -3 => (0, RECORDS - 1, ts_of(RECORDS - 1)),
                                                t => match (0..RECORDS).find(|o| ts_of(*o) >= t) {
                                                    Some(o) => (0, o, ts_of(o)),
                                                    None => (0, -1, -1),
                                                },
                                            }
                                        };
                                        ListOffsetsPartitionResponse::default()
                                            .with_partition_index(p.partition_index)
                                            .with_error_code(code)
                                            .with_offset(off)
                                            .with_timestamp(ts)
                                            .with_leader_epoch(if off >= 0 { 4 } else { -1 })
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
            fr.respond(&r)
        }
        ApiKey::DescribeGroups => {
            let req: DescribeGroupsRequest = fr.decode();
            w.calls.push((node, api, String::new()));
            let moved = std::mem::take(&mut w.not_coordinator_once);
            let is_coordinator = node == w.coordinator && !moved;
            let r = DescribeGroupsResponse::default().with_groups(
                req.groups
                    .iter()
                    .map(|g| {
                        if !is_coordinator {
                            return DescribedGroup::default()
                                .with_group_id(g.clone())
                                .with_error_code(16); // NOT_COORDINATOR
                        }
                        DescribedGroup::default()
                            .with_group_id(g.clone())
                            .with_group_state(s("Stable"))
                            .with_protocol_type(s("consumer"))
                            .with_protocol_data(s("range"))
                            .with_members(vec![
                                DescribedGroupMember::default()
                                    .with_member_id(s("m-1"))
                                    .with_client_id(s("app"))
                                    .with_client_host(s("/10.0.0.1"))
                                    .with_member_assignment(assignment(&[("t", &[1, 0])])),
                            ])
                    })
                    .collect(),
            );
            fr.respond(&r)
        }
        ApiKey::ShareGroupDescribe => {
            use rekafka::protocol::unstable::messages::share_group_describe_response as sgd;
            let req: ShareGroupDescribeRequest = fr.decode();
            w.calls.push((node, api, String::new()));
            let moved = std::mem::take(&mut w.not_coordinator_once);
            let is_coordinator = node == w.coordinator && !moved;
            let r = ShareGroupDescribeResponse::default().with_groups(
                req.group_ids
                    .iter()
                    .map(|g| {
                        if !is_coordinator {
                            return sgd::DescribedGroup::default()
                                .with_group_id(g.clone())
                                .with_error_code(16); // NOT_COORDINATOR
                        }
                        if g.0.as_str() == "not-share" {
                            return sgd::DescribedGroup::default()
                                .with_group_id(g.clone())
                                .with_error_code(69) // GROUP_ID_NOT_FOUND
                                .with_error_message(Some(s(
                                    "Group not-share is not a share group.",
                                )));
                        }
                        sgd::DescribedGroup::default()
                            .with_group_id(g.clone())
                            .with_group_state(s("Stable"))
                            .with_group_epoch(4)
                            .with_assignment_epoch(4)
                            .with_assignor_name(s("simple"))
                            .with_members(vec![
                                sgd::Member::default()
                                    .with_member_id(s("m-1"))
                                    .with_member_epoch(4)
                                    .with_client_id(s("app"))
                                    .with_client_host(s("/10.0.0.1"))
                                    .with_subscribed_topic_names(vec![TopicName(s("t"))])
                                    .with_assignment(
                                        sgd::Assignment::default().with_topic_partitions(vec![
                                            sgd::TopicPartitions::default()
                                                .with_topic_name(TopicName(s("t")))
                                                .with_partitions(vec![1, 0]),
                                        ]),
                                    ),
                            ])
                    })
                    .collect(),
            );
            fr.respond(&r)
        }
        ApiKey::DescribeShareGroupOffsets => {
            use rekafka::protocol::unstable::messages::describe_share_group_offsets_response as d;
            let req: DescribeShareGroupOffsetsRequest = fr.decode();
            w.calls.push((node, api, String::new()));
            let loading = std::mem::take(&mut w.loading_once);
            let r = DescribeShareGroupOffsetsResponse::default().with_groups(
                req.groups
                    .iter()
                    .map(|g| {
                        if loading || node != w.coordinator {
                            return d::DescribeShareGroupOffsetsResponseGroup::default()
                                .with_group_id(g.group_id.clone())
                                .with_error_code(if loading { 14 } else { 16 });
                        }
                        d::DescribeShareGroupOffsetsResponseGroup::default()
                            .with_group_id(g.group_id.clone())
                            .with_topics(vec![
                                d::DescribeShareGroupOffsetsResponseTopic::default()
                                    .with_topic_name(TopicName(s("t")))
                                    .with_partitions(vec![
                                        d::DescribeShareGroupOffsetsResponsePartition::default()
                                            .with_partition_index(0)
                                            .with_start_offset(4)
                                            .with_leader_epoch(2),
                                        d::DescribeShareGroupOffsetsResponsePartition::default()
                                            .with_partition_index(1)
                                            .with_start_offset(-1)
                                            .with_leader_epoch(-1),
                                    ]),
                            ])
                    })
                    .collect(),
            );
            fr.respond(&r)
        }
        ApiKey::AlterShareGroupOffsets => {
            use rekafka::protocol::unstable::messages::alter_share_group_offsets_response as a;
            let req: AlterShareGroupOffsetsRequest = fr.decode();
            let asked: Vec<String> = req
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(move |p| {
                        format!(
                            "{}-{}@{}",
                            t.topic_name.0, p.partition_index, p.start_offset
                        )
                    })
                })
                .collect();
            w.calls.push((node, api, asked.join(",")));
            let loading = std::mem::take(&mut w.loading_once);
            let code = if loading {
                14
            } else if req.group_id.0.as_str() == "busy" {
                68 // NON_EMPTY_GROUP
            } else {
                0
            };
            let r = AlterShareGroupOffsetsResponse::default()
                .with_error_code(code)
                .with_responses(if code != 0 {
                    vec![]
                } else {
                    req.topics
                        .iter()
                        .map(|t| {
                            a::AlterShareGroupOffsetsResponseTopic::default()
                                .with_topic_name(t.topic_name.clone())
                                .with_partitions(
                                    t.partitions
                                        .iter()
                                        .map(|p| {
                                            a::AlterShareGroupOffsetsResponsePartition::default()
                                                .with_partition_index(p.partition_index)
                                                .with_error_code(if p.partition_index > 1 {
                                                    3
                                                } else {
                                                    0
                                                })
                                        })
                                        .collect(),
                                )
                        })
                        .collect()
                });
            fr.respond(&r)
        }
        ApiKey::DeleteGroups => {
            let req: DeleteGroupsRequest = fr.decode();
            w.calls.push((node, api, String::new()));
            let r = DeleteGroupsResponse::default().with_results(
                req.groups_names
                    .iter()
                    .map(|g| {
                        let code = if g.0.as_str() == "busy" { 68 } else { 0 };
                        DeletableGroupResult::default()
                            .with_group_id(g.clone())
                            .with_error_code(code)
                    })
                    .collect(),
            );
            fr.respond(&r)
        }
        ApiKey::ListGroups => {
            let req: ListGroupsRequest = fr.decode();
            let types: Vec<String> = req.types_filter.iter().map(|t| t.to_string()).collect();
            w.calls.push((node, api, types.join(",")));
            // Node 1 holds a classic group, node 2 a share group (ListGroups v5 group types).
            let kind = if node == 1 { "classic" } else { "share" };
            let groups = if types.is_empty() || types.iter().any(|t| t == kind) {
                vec![
                    ListedGroup::default()
                        .with_group_id(GroupId(s(&format!("group-on-{node}"))))
                        .with_protocol_type(s(if node == 1 { "consumer" } else { "share" }))
                        .with_group_state(s("Empty"))
                        .with_group_type(s(kind)),
                ]
            } else {
                vec![]
            };
            let r = ListGroupsResponse::default().with_groups(groups);
            fr.respond(&r)
        }
        ApiKey::CreateTopics => {
            let req: CreateTopicsRequest = fr.decode();
            let names: Vec<String> = req.topics.iter().map(|t| t.name.0.to_string()).collect();
            w.calls.push((
                node,
                api,
                format!("validate_only={} {}", req.validate_only, names.join(",")),
            ));
            let is_controller = node == w.controller;
            let r = CreateTopicsResponse::default().with_topics(
                req.topics
                    .iter()
                    .map(|t| {
                        let code = if !is_controller {
                            41
                        } else if t.name.0.as_str() == "exists" {
                            36 // TOPIC_ALREADY_EXISTS
                        } else {
                            0
                        };
                        CreatableTopicResult::default()
                            .with_name(t.name.clone())
                            .with_error_code(code)
                            .with_error_message((code == 36).then(|| s("already there")))
                            .with_num_partitions(t.num_partitions)
                            .with_replication_factor(3)
                    })
                    .collect(),
            );
            fr.respond(&r)
        }
        ApiKey::DescribeConfigs => {
            let req: DescribeConfigsRequest = fr.decode();
            let names: Vec<String> = req
                .resources
                .iter()
                .map(|r| format!("{}:{}", r.resource_type, r.resource_name.as_str()))
                .collect();
            w.calls.push((node, api, names.join(",")));
            let r = DescribeConfigsResponse::default().with_results(
                req.resources
                    .iter()
                    .map(|r| {
                        let (name, value) = if r.resource_type == 4 {
                            ("broker.id", node.to_string())
                        } else {
                            ("retention.ms", "1000".to_owned())
                        };
                        DescribeConfigsResult::default()
                            .with_resource_type(r.resource_type)
                            .with_resource_name(r.resource_name.clone())
                            .with_configs(vec![
                                DescribeConfigsResourceResult::default()
                                    .with_name(s(name))
                                    .with_value(Some(s(&value)))
                                    .with_config_source(if r.resource_type == 4 { 4 } else { 1 }),
                            ])
                    })
                    .collect(),
            );
            fr.respond(&r)
        }
        _ => Reply::Builtin,
    }
}

fn assignment(topics: &[(&str, &[i32])]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(3);
    b.put_i32(topics.len() as i32);
    for (t, ps) in topics {
        b.put_i16(t.len() as i16);
        b.put_slice(t.as_bytes());
        b.put_i32(ps.len() as i32);
        for p in *ps {
            b.put_i32(*p);
        }
    }
    b.put_i32(3);
    b.put_slice(b"abc");
    b.freeze()
}

fn tp(t: &str, p: i32) -> TopicPartition {
    TopicPartition::new(t, p)
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn create_partitions_follows_the_controller_and_reports_per_topic() {
    let c = Cluster::start().await;
    let client = c.client().await;
    // The controller moves after the client learned it: broker 1 answers NOT_CONTROLLER, the
    // admin refreshes and resends only the retriable topic to broker 2.
    c.set(|w| w.controller = 2);
    let r = client
        .admin()
        .create_partitions(&[
            NewPartitions::increase_to("t", 4),
            NewPartitions::increase_to("s", 2),
            NewPartitions::increase_to("nope", 4),
        ])
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    assert_eq!(
        r[1].as_ref().err().and_then(|e| e.kafka_code()),
        Some(KafkaCode::InvalidPartitions)
    );
    assert_eq!(
        r[2].as_ref().err().and_then(|e| e.kafka_code()),
        Some(KafkaCode::UnknownTopicOrPartition)
    );
    let calls = c.calls(ApiKey::CreatePartitions);
    // Broker 1 said NOT_CONTROLLER to all three; the retry to broker 2 carries all three
    // again (each failed retriably); broker 2's answers are final.
    assert_eq!(
        calls,
        [(1, "t,s,nope".to_owned()), (2, "t,s,nope".to_owned())]
    );
    client.close().await;
}

#[tokio::test]
async fn delete_records_goes_to_the_leader_and_follows_it_when_it_moves() {
    let c = Cluster::start().await;
    let client = c.client().await;
    let admin = client.admin();
    let r = admin
        .delete_records(&[
            (tp("t", 0), 4),
            (tp("t", 1), -1),
            (tp("t", 0), 99),
            (tp("u", 0), 1),
        ])
        .await
        .unwrap();
    assert_eq!(r[0].as_ref().ok(), Some(&4));
    assert_eq!(r[1].as_ref().ok(), Some(&RECORDS));
    assert_eq!(
        r[2].as_ref().err().and_then(|e| e.kafka_code()),
        Some(KafkaCode::OffsetOutOfRange)
    );
    assert_eq!(
        r[3].as_ref().err().and_then(|e| e.kafka_code()),
        Some(KafkaCode::UnknownTopicOrPartition)
    );
    assert!(c.calls(ApiKey::DeleteRecords).iter().all(|(n, _)| *n == 1));

    // The leader moves to 2, but the next Metadata answer is stale (still 1): broker 1 says
    // NOT_LEADER_OR_FOLLOWER, the admin looks the leader up again and resends to 2.
    c.set(|w| {
        w.leader = 2;
        w.stale_leader_once = Some(1);
        w.calls.clear();
    });
    let r = admin.delete_records(&[(tp("t", 1), 7)]).await.unwrap();
    assert_eq!(r[0].as_ref().ok(), Some(&7));
    let nodes: Vec<i32> = c
        .calls(ApiKey::DeleteRecords)
        .iter()
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(nodes, [1, 2]);
    client.close().await;
}

#[tokio::test]
async fn a_dropped_connection_that_outlasts_the_retries_fails_the_call() {
    // Tansu drops the connection on DeleteRecords; so does this fake for topic "boom". The
    // call retries with back-off, then fails as a whole with the transport error.
    let c = Cluster::start().await;
    let client = c.client().await;
    let started = std::time::Instant::now();
    let e = client
        .admin()
        .delete_records(&[(tp("t", 0), 1), (tp("boom", 0), 1)])
        .await
        .unwrap_err();
    assert!(e.is_retriable(), "{e}");
    assert!(
        matches!(e.kind(), ErrorKind::Disconnected | ErrorKind::Io(_)),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );
    assert!(c.calls(ApiKey::DeleteRecords).len() >= 2, "retried");
    client.close().await;
}

#[tokio::test]
async fn list_offsets_by_timestamp_and_max_timestamp() {
    let c = Cluster::start().await;
    let client = c.client().await;
    let r = client
        .admin()
        .list_offsets(&[
            (tp("t", 0), OffsetSpec::Timestamp(ts_of(3))),
            (tp("t", 0), OffsetSpec::Timestamp(ts_of(3) + 1)),
            (tp("t", 1), OffsetSpec::Timestamp(ts_of(RECORDS) + 1)),
            (tp("t", 1), OffsetSpec::MaxTimestamp),
            (tp("t", 0), OffsetSpec::Earliest),
            (tp("t", 0), OffsetSpec::Latest),
            (tp("t", 1), OffsetSpec::LastStable),
        ])
        .await
        .unwrap();
    let got: Vec<(Option<i64>, Option<i64>)> = r
        .iter()
        .map(|r| {
            let o = r.as_ref().unwrap();
            (o.offset, o.timestamp)
        })
        .collect();
    assert_eq!(
        got,
        [
            (Some(3), Some(ts_of(3))),
            (Some(4), Some(ts_of(4))),
            (None, None),
            (Some(RECORDS - 1), Some(ts_of(RECORDS - 1))),
            (Some(0), None),
            (Some(RECORDS), None),
            (Some(RECORDS), None),
        ]
    );
    assert_eq!(r[0].as_ref().unwrap().leader_epoch, Some(4));
    // Partition 0 was asked four times: four read_uncommitted requests (a response names a
    // partition once; partition 1's two read_uncommitted lookups ride in the first two), and
    // LastStable in a read_committed one.
    let calls = c.calls(ApiKey::ListOffsets);
    assert_eq!(calls.len(), 5, "{calls:?}");
    assert_eq!(
        calls.iter().filter(|(_, s)| s == "isolation=1").count(),
        1,
        "{calls:?}"
    );
    client.close().await;
}

#[tokio::test]
async fn describe_groups_decodes_assignments_and_follows_the_coordinator() {
    let c = Cluster::start().await;
    let client = c.client().await;
    let admin = client.admin();
    // The coordinator moves to 2 and broker 1 answers NOT_COORDINATOR once: the admin forgets
    // the cached coordinator, looks it up again and asks broker 2.
    let r = admin.describe_groups(&["g"]).await.unwrap();
    assert!(r[0].is_ok());
    c.set(|w| {
        w.coordinator = 2;
        w.not_coordinator_once = true;
        w.calls.clear();
    });
    let r = admin.describe_groups(&["g", "h"]).await.unwrap();
    for (i, d) in r.iter().enumerate() {
        let d = d.as_ref().unwrap_or_else(|e| panic!("{i}: {e}"));
        assert_eq!(d.state, GroupState::Stable);
        assert_eq!(d.protocol, "range");
        assert_eq!(d.coordinator, 2);
        let m = &d.members[0];
        assert_eq!(m.client_id, "app");
        assert_eq!(m.consumer_assignment().unwrap(), [tp("t", 1), tp("t", 0)]);
        assert_eq!(decode_consumer_assignment(&m.assignment).unwrap().len(), 2);
    }
    assert_eq!(r[0].as_ref().unwrap().group_id, "g");
    assert_eq!(r[1].as_ref().unwrap().group_id, "h");
    // "g" was cached at broker 1, which says NOT_COORDINATOR; "h" was looked up (broker 2)
    // and answered at once; "g" was looked up again and asked of broker 2.
    let mut nodes: Vec<i32> = c
        .calls(ApiKey::DescribeGroups)
        .iter()
        .map(|(n, _)| *n)
        .collect();
    nodes.sort();
    assert_eq!(nodes, [1, 2, 2], "the first two went out concurrently");
    assert!(
        !c.calls(ApiKey::FindCoordinator).is_empty(),
        "looked up again"
    );
    client.close().await;
}

#[tokio::test]
async fn share_groups_follow_the_coordinator_and_retry_a_loading_one() {
    let c = Cluster::start().await;
    let client = c.client().await;
    let admin = client.admin();
    // Cached at broker 1; the coordinator moves to 2 and broker 1 says NOT_COORDINATOR once.
    assert!(admin.describe_share_groups(&["g"]).await.unwrap()[0].is_ok());
    c.set(|w| {
        w.coordinator = 2;
        w.not_coordinator_once = true;
        w.calls.clear();
    });
    let r = admin
        .describe_share_groups(&["g", "not-share"])
        .await
        .unwrap();
    let d = r[0].as_ref().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.group_id, "g");
    assert_eq!(d.state, GroupState::Stable);
    assert_eq!((d.group_epoch, d.assignor.as_str()), (4, "simple"));
    assert_eq!(d.coordinator, 2);
    let m = &d.members[0];
    assert_eq!((m.member_id.as_str(), m.member_epoch), ("m-1", 4));
    assert_eq!(m.subscribed_topics, ["t"]);
    assert_eq!(m.assignment, [tp("t", 0), tp("t", 1)]);
    let e = r[1].as_ref().unwrap_err();
    assert_eq!(e.kafka_code(), Some(KafkaCode::GroupIdNotFound));
    assert!(e.to_string().contains("not a share group"), "{e}");
    assert!(
        !c.calls(ApiKey::FindCoordinator).is_empty(),
        "looked up again"
    );

    // Start offsets: a loading coordinator is asked again; -1 means no start offset.
    c.set(|w| {
        w.loading_once = true;
        w.calls.clear();
    });
    let offsets = admin
        .list_share_group_offsets("g", Some(&[tp("t", 1), tp("t", 0)]))
        .await
        .unwrap();
    assert_eq!(c.calls(ApiKey::DescribeShareGroupOffsets).len(), 2);
    assert_eq!(offsets[0].0, tp("t", 1));
    assert_eq!(offsets[0].1.as_ref().ok(), Some(&None));
    let o = offsets[1].1.as_ref().unwrap().unwrap();
    assert_eq!((o.start_offset, o.leader_epoch), (4, Some(2)));

    // Reset: loading retried, per-partition errors, NON_EMPTY_GROUP fails the call.
    c.set(|w| {
        w.loading_once = true;
        w.calls.clear();
    });
    let r = admin
        .alter_share_group_offsets("g", &[(tp("t", 1), 7), (tp("t", 5), 0)])
        .await
        .unwrap();
    let calls = c.calls(ApiKey::AlterShareGroupOffsets);
    assert_eq!(calls.len(), 2);
    assert!(
        calls.iter().all(|(n, b)| *n == 2 && b == "t-1@7,t-5@0"),
        "{calls:?}"
    );
    assert!(r[0].1.is_ok());
    assert_eq!(
        r[1].1.as_ref().err().and_then(|e| e.kafka_code()),
        Some(KafkaCode::UnknownTopicOrPartition)
    );
    let busy = admin
        .alter_share_group_offsets("busy", &[(tp("t", 0), 0)])
        .await
        .unwrap_err();
    assert_eq!(busy.kafka_code(), Some(KafkaCode::NonEmptyGroup));
    assert_eq!(busy.context().broker, Some(2));

    // Share groups are listed by type, asked of every broker with the type filter.
    c.set(|w| w.calls.clear());
    let listed = admin.list_share_groups().await.unwrap();
    let ids: Vec<(&str, Option<GroupType>)> = listed
        .iter()
        .map(|g| (g.group_id.as_str(), g.group_type.clone()))
        .collect();
    assert_eq!(ids, [("group-on-2", Some(GroupType::Share))]);
    let mut asked = c.calls(ApiKey::ListGroups);
    asked.sort();
    assert_eq!(asked, [(1, "share".to_owned()), (2, "share".to_owned())]);
    let all = admin.list_groups().await.unwrap();
    assert_eq!(all[0].group_type, Some(GroupType::Classic));
    assert_eq!(all.len(), 2);
    client.close().await;
}

#[tokio::test]
async fn delete_groups_per_group_and_list_groups_asks_every_broker() {
    let c = Cluster::start().await;
    let client = c.client().await;
    let admin = client.admin();
    let r = admin.delete_groups(&["busy", "idle"]).await.unwrap();
    assert_eq!(
        r[0].as_ref().err().and_then(|e| e.kafka_code()),
        Some(KafkaCode::NonEmptyGroup)
    );
    assert!(r[1].is_ok());
    let listed = admin.list_groups().await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|g| g.group_id.as_str()).collect();
    assert_eq!(ids, ["group-on-1", "group-on-2"]);
    assert_eq!(listed[0].state, Some(GroupState::Empty));
    client.close().await;
}

#[tokio::test]
async fn create_topics_validate_only_and_per_topic_errors() {
    let c = Cluster::start().await;
    let client = c.client().await;
    let admin = client.admin();
    let topics = [NewTopic::new("exists", 2), NewTopic::new("fresh", 5)];
    let r = admin.validate_create_topics(&topics).await.unwrap();
    assert_eq!(
        r[0].as_ref().err().and_then(|e| e.kafka_code()),
        Some(KafkaCode::TopicAlreadyExists)
    );
    assert!(
        r[0].as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("already there")),
        "the broker's message is kept"
    );
    let created = r[1].as_ref().unwrap();
    assert_eq!((created.partitions, created.replication_factor), (5, 3));
    let r = admin.create_topics(&topics[1..]).await.unwrap();
    assert!(r[0].is_ok());
    assert_eq!(
        c.calls(ApiKey::CreateTopics)
            .into_iter()
            .map(|(_, s)| s)
            .collect::<Vec<_>>(),
        [
            "validate_only=true exists,fresh",
            "validate_only=false fresh"
        ]
    );
    client.close().await;
}

#[tokio::test]
async fn broker_configs_go_to_that_broker() {
    let c = Cluster::start().await;
    let client = c.client().await;
    let r = client
        .admin()
        .describe_configs(&[
            ConfigResource::Broker(2),
            ConfigResource::Topic("t".into()),
            ConfigResource::Broker(1),
        ])
        .await
        .unwrap();
    let first = |i: usize| r[i].as_ref().unwrap()[0].clone();
    assert_eq!(first(0).value.as_deref(), Some("2"));
    assert_eq!(first(0).source, ConfigSource::StaticBroker);
    assert_eq!(first(1).name, "retention.ms");
    assert_eq!(first(1).source, ConfigSource::DynamicTopic);
    assert_eq!(first(2).value.as_deref(), Some("1"));
    let mut calls = c.calls(ApiKey::DescribeConfigs);
    calls.sort();
    assert!(calls.contains(&(2, "4:2".to_owned())), "{calls:?}");
    assert!(calls.contains(&(1, "4:1".to_owned())), "{calls:?}");
    client.close().await;
}

#[tokio::test]
async fn a_dead_controller_is_replaced_by_the_elected_one() {
    let c = Cluster::start().await;
    let client = c.client().await;
    // Broker 1, the controller the client knows, goes down; the cluster elects broker 2. The
    // first attempt fails at the transport level, the admin marks broker 1 failed, refreshes
    // the metadata from broker 2 and resends there.
    c.set(|w| {
        w.dead = vec![1];
        w.controller = 2;
    });
    let r = client
        .admin()
        .create_partitions(&[NewPartitions::increase_to("t", 4)])
        .await
        .unwrap();
    assert!(r[0].is_ok(), "{:?}", r[0]);
    assert_eq!(
        c.calls(ApiKey::CreatePartitions),
        [(2, "t".to_owned())],
        "answered by the new controller"
    );
    client.close().await;
}

//! Consumer groups: list, describe, delete, committed offsets (read and altered).

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};

use super::{Admin, TopicPartition, code_error, join_all, missing, topic_name};
use crate::KafkaCode;
use crate::error::{Error, Result};
use crate::protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use crate::protocol::messages::{
    ApiKey, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, DeleteGroupsRequest,
    DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse, GroupId,
    ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest, OffsetFetchRequest,
    OffsetFetchResponse,
};
use crate::protocol::requests::offset_fetch::{self, OffsetFetchQuery};
use crate::protocol::{Request, StrBytes};

mod model;
pub use model::*;

impl Admin {
    /// Lists the groups of every broker, sorted by id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        self.list_groups_of_type(&[]).await
    }

    /// Lists the groups of the given types (every group if `types` is empty) of every broker,
    /// sorted by id, as Java's `listGroups` with a type filter. Brokers with ListGroups v5+
    /// filter themselves; with older ones the groups are filtered here (they only know
    /// classic groups, whose listings carry no type).
    ///
    /// ```no_run
    /// # async fn demo(admin: rekafka::admin::Admin) -> rekafka::Result<()> {
    /// use rekafka::admin::GroupType;
    ///
    /// for g in admin.list_groups_of_type(&[GroupType::Share]).await? {
    ///     println!("{} {:?}", g.group_id, g.state);
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_groups_of_type(&self, types: &[GroupType]) -> Result<Vec<GroupListing>> {
        self.single(|| async {
            let none: [&str; 0] = [];
            self.cluster.refresh_topics(&none).await?;
            let brokers: Vec<i32> = self.cluster.metadata().brokers.keys().copied().collect();
            let answers = join_all(brokers.into_iter().map(|id| async move {
                let broker = self.cluster.connection_for_broker(id).await?;
                let resp: ListGroupsResponse = self
                    .send(&broker, |version| {
                        let mut req = ListGroupsRequest::default();
                        if version >= 5 {
                            req.types_filter = types
                                .iter()
                                .map(|t| StrBytes::from_string(t.as_str().to_owned()))
                                .collect();
                        }
                        Ok(req)
                    })
                    .await?;
                match code_error(resp.error_code, None, ApiKey::ListGroups) {
                    Some(e) => Err(e.on_broker(id)),
                    None => Ok(resp.groups),
                }
            }))
            .await;
            let mut all: BTreeMap<String, GroupListing> = BTreeMap::new();
            for groups in answers {
                for g in groups? {
                    let state =
                        (!g.group_state.is_empty()).then(|| GroupState::parse(&g.group_state));
                    let group_type =
                        (!g.group_type.is_empty()).then(|| GroupType::parse(&g.group_type));
                    let kind = group_type.clone().unwrap_or(GroupType::Classic);
                    if !types.is_empty() && !types.contains(&kind) {
                        continue;
                    }
                    all.insert(
                        g.group_id.0.to_string(),
                        GroupListing {
                            group_id: g.group_id.0.to_string(),
                            protocol_type: g.protocol_type.to_string(),
                            state,
                            group_type,
                        },
                    );
                }
            }
            Ok(all.into_values().collect())
        })
        .await
    }

    /// Describes groups (state, protocol, members with their assignment), each asked of its
    /// coordinator. One result per group, in input order.
    pub async fn describe_groups<S: AsRef<str>>(
        &self,
        groups: &[S],
    ) -> Result<Vec<Result<GroupDescription>>> {
        self.per_group(
            groups,
            ApiKey::DescribeGroups,
            |names| {
                DescribeGroupsRequest::default()
                    .with_groups(names.iter().map(|n| group_id(n)).collect())
            },
            |resp: &DescribeGroupsResponse, name, coordinator| {
                let g = resp.groups.iter().find(|g| g.group_id.0.as_str() == name)?;
                Some(
                    match code_error(
                        g.error_code,
                        g.error_message.as_ref(),
                        ApiKey::DescribeGroups,
                    ) {
                        Some(e) => Err(e),
                        None => Ok(GroupDescription {
                            group_id: name.to_owned(),
                            state: GroupState::parse(&g.group_state),
                            protocol_type: g.protocol_type.to_string(),
                            protocol: g.protocol_data.to_string(),
                            coordinator,
                            members: g
                                .members
                                .iter()
                                .map(|m| MemberDescription {
                                    member_id: m.member_id.to_string(),
                                    group_instance_id: m
                                        .group_instance_id
                                        .as_ref()
                                        .map(|s| s.to_string()),
                                    client_id: m.client_id.to_string(),
                                    client_host: m.client_host.to_string(),
                                    metadata: m.member_metadata.clone(),
                                    assignment: m.member_assignment.clone(),
                                })
                                .collect(),
                        }),
                    },
                )
            },
        )
        .await
    }

    /// Describes consumer-protocol groups (KIP-848, ConsumerGroupDescribe): state, epochs,
    /// assignor, members with their epochs, subscriptions and current and target assignments,
    /// each asked of its coordinator. One result per group, in input order; a group of the
    /// classic protocol is an error (`GROUP_ID_NOT_FOUND`: describe it with
    /// [`describe_groups`](Self::describe_groups)).
    pub async fn describe_consumer_groups<S: AsRef<str>>(
        &self,
        groups: &[S],
    ) -> Result<Vec<Result<ConsumerGroupDescription>>> {
        describe_groups_at_coordinators!(
            self,
            groups,
            ConsumerGroupDescribe,
            ConsumerGroupDescribeRequest,
            ConsumerGroupDescribeResponse,
            consumer_group_description
        )
        .await
    }

    /// Deletes groups (they must have no members), each at its coordinator. One result per
    /// group, in input order (`GROUP_ID_NOT_FOUND`, `NON_EMPTY_GROUP`, …). Groups of every
    /// type (classic, consumer, share) are deleted this way.
    pub async fn delete_groups<S: AsRef<str>>(&self, groups: &[S]) -> Result<Vec<Result<()>>> {
        self.per_group(
            groups,
            ApiKey::DeleteGroups,
            |names| {
                DeleteGroupsRequest::default()
                    .with_groups_names(names.iter().map(|n| group_id(n)).collect())
            },
            |resp: &DeleteGroupsResponse, name, _| {
                let g = resp
                    .results
                    .iter()
                    .find(|g| g.group_id.0.as_str() == name)?;
                Some(match code_error(g.error_code, None, ApiKey::DeleteGroups) {
                    Some(e) => Err(e),
                    None => Ok(()),
                })
            },
        )
        .await
    }

    /// The machinery of the calls that batch groups per coordinator (DescribeGroups,
    /// ConsumerGroupDescribe, ShareGroupDescribe, DeleteGroups): looks up each pending group's
    /// coordinator, sends one request per coordinator (`build` gets the group ids), and takes
    /// each group's answer from the response with `parse(response, group, coordinator id)`
    /// (`None`: the response does not mention the group). A group's error is tagged with the
    /// coordinator; a moved or unreachable coordinator is forgotten, and
    /// [`per_item`](Self::per_item) retries the groups that failed retriably. One result per
    /// group, in input order.
    pub(super) async fn per_group<S, T, R, B, P>(
        &self,
        groups: &[S],
        api: ApiKey,
        build: B,
        parse: P,
    ) -> Result<Vec<Result<T>>>
    where
        S: AsRef<str>,
        R: crate::protocol::Request,
        B: Fn(&[&str]) -> R,
        P: Fn(&R::Response, &str, i32) -> Option<Result<T>>,
    {
        let (build, parse) = (&build, &parse);
        self.per_item(groups.len(), |pending| async move {
            let mut out = Vec::with_capacity(pending.len());
            let by = self.by_coordinator(groups, &pending, &mut out).await;
            let answers = join_all(by.into_iter().map(|(coordinator, items)| async move {
                let names: Vec<&str> = items.iter().map(|&i| groups[i].as_ref()).collect();
                let sent = self.send::<R, _>(&coordinator, |_| Ok(build(&names))).await;
                let resp = match sent {
                    Ok(r) => r,
                    Err(e) => {
                        return items
                            .iter()
                            .map(|&i| {
                                self.after_coordinator_error(groups[i].as_ref(), &e);
                                (i, Err(e.clone()))
                            })
                            .collect::<Vec<_>>();
                    }
                };
                let id = coordinator.broker_id();
                items
                    .iter()
                    .map(|&i| {
                        let name = groups[i].as_ref();
                        let r = match parse(&resp, name, id) {
                            None => Err(missing(api, &format!("group {name}"))),
                            Some(Err(e)) => {
                                let e = e.on_broker(id);
                                self.after_coordinator_error(name, &e);
                                Err(e)
                            }
                            Some(Ok(v)) => Ok(v),
                        };
                        (i, r)
                    })
                    .collect()
            }))
            .await;
            out.extend(answers.into_iter().flatten());
            Ok(out)
        })
        .await
    }

    /// A group's committed offsets (OffsetFetch to its coordinator): for `partitions`, or for
    /// every partition the group has committed if `None`. One entry per partition (in input
    /// order when partitions are given, else sorted); the value is `None` for a partition
    /// without a committed offset. A failure of the whole group (unknown coordinator,
    /// authorization, …) fails the call.
    pub async fn list_group_offsets(
        &self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<Vec<(TopicPartition, Result<Option<CommittedOffset>>)>> {
        let asked: Option<Vec<(&str, i32)>> =
            partitions.map(|ps| ps.iter().map(|tp| (tp.topic(), tp.partition)).collect());
        let query = OffsetFetchQuery {
            group,
            partitions: asked.as_deref(),
            member: None,
            require_stable: false,
        };
        let resp = self
            .at_group_coordinator::<OffsetFetchRequest, _, _>(
                group,
                |version| Ok(offset_fetch::request(&query, version)),
                |resp, broker| {
                    offset_fetch::group_error(&resp, group)
                        .map_or(Ok(resp), |e| Err(e.on_broker(broker)))
                },
            )
            .await?;
        Ok(offset_fetch_results(&resp, group, partitions))
    }

    /// Sets a group's committed offsets (OffsetCommit to its coordinator, as a standalone
    /// commit: generation -1, no member id), as Java's `alterConsumerGroupOffsets`. The group
    /// must have no active members (else the coordinator refuses with UNKNOWN_MEMBER_ID). One
    /// result per partition, in input order; a coordinator that moved or is loading is looked
    /// up again and the whole commit retried.
    pub async fn alter_consumer_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        self.set_group_offsets(
            group,
            offsets,
            |topics| {
                OffsetCommitRequest::default()
                    .with_group_id(group_id(group))
                    .with_generation_id_or_member_epoch(-1)
                    .with_topics(wire_topics(
                        topics,
                        |name, ps| {
                            OffsetCommitRequestTopic::default()
                                .with_name(name)
                                .with_partitions(ps)
                        },
                        |p, o| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(o)
                        },
                    ))
            },
            |resp, broker| {
                // A coordinator error is per partition in OffsetCommit: retry it all.
                let moved = resp
                    .topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .find_map(|p| {
                        code_error(p.error_code, None, ApiKey::OffsetCommit).filter(|e| {
                            matches!(
                                e.kafka_code(),
                                Some(
                                    KafkaCode::NotCoordinator
                                        | KafkaCode::CoordinatorNotAvailable
                                        | KafkaCode::CoordinatorLoadInProgress
                                )
                            )
                        })
                    });
                match moved {
                    Some(e) => Err(e.on_broker(broker)),
                    None => Ok(resp),
                }
            },
            |resp| {
                partition_answers(
                    offsets,
                    resp.topics
                        .iter()
                        .map(|t| (t.name.0.as_str(), &t.partitions[..])),
                    ApiKey::OffsetCommit,
                    |p| (p.partition_index, p.error_code, None),
                )
            },
        )
        .await
    }

    /// Groups the pending items by coordinator; items whose coordinator lookup fails get the
    /// error in `out`.
    async fn by_coordinator<S: AsRef<str>, T>(
        &self,
        groups: &[S],
        pending: &[usize],
        out: &mut Vec<(usize, Result<T>)>,
    ) -> Vec<(crate::connection::BrokerConnection, Vec<usize>)> {
        let mut by: Vec<(crate::connection::BrokerConnection, Vec<usize>)> = Vec::new();
        for &i in pending {
            let name = groups[i].as_ref();
            match self.group_coordinator(name).await {
                Ok(b) => match by.iter_mut().find(|(c, _)| c.broker_id() == b.broker_id()) {
                    Some((_, v)) => v.push(i),
                    None => by.push((b, vec![i])),
                },
                Err(e) => {
                    self.after_coordinator_error(name, &e);
                    out.push((i, Err(e)));
                }
            }
        }
        by
    }
}

pub(super) fn group_id(name: &str) -> GroupId {
    GroupId(StrBytes::from_string(name.to_owned()))
}

type PartitionOffsets = Vec<(TopicPartition, Result<Option<CommittedOffset>>)>;

/// The per-partition answers of an OffsetFetch response (either layout).
fn offset_fetch_results(
    resp: &OffsetFetchResponse,
    group: &str,
    partitions: Option<&[TopicPartition]>,
) -> PartitionOffsets {
    let mut found: BTreeMap<TopicPartition, Result<Option<CommittedOffset>>> =
        offset_fetch::partitions(resp, group)
            .into_iter()
            .map(|(topic, p, r)| {
                let r = r.map(|o| {
                    o.map(|o| CommittedOffset {
                        offset: o.offset,
                        leader_epoch: o.leader_epoch,
                        metadata: o.metadata,
                    })
                });
                (TopicPartition::new(topic, p), r)
            })
            .collect();
    match partitions {
        None => found.into_iter().collect(),
        Some(asked) => asked
            .iter()
            .map(|tp| {
                let r = found.remove(tp).unwrap_or(Ok(None));
                (tp.clone(), r)
            })
            .collect(),
    }
}

/// Topics with their partitions (sorted by topic, partitions in input order): the shape of
/// the requests that name partitions by topic (OffsetCommit, the share group offset calls).
pub(super) fn by_topic<T: Copy>(
    items: impl Iterator<Item = (TopicPartition, T)>,
) -> BTreeMap<String, Vec<(i32, T)>> {
    let mut by: BTreeMap<String, Vec<(i32, T)>> = BTreeMap::new();
    for (tp, v) in items {
        by.entry(tp.topic().to_owned())
            .or_default()
            .push((tp.partition, v));
    }
    by
}

/// The wire topics of a request that names partitions by topic: `topic` makes one from its
/// name and partitions, `partition` one partition from its index and offset.
pub(super) fn wire_topics<T, P>(
    topics: &BTreeMap<String, Vec<(i32, i64)>>,
    topic: impl Fn(crate::protocol::messages::TopicName, Vec<P>) -> T,
    partition: impl Fn(i32, i64) -> P,
) -> Vec<T> {
    topics
        .iter()
        .map(|(t, ps)| {
            topic(
                topic_name(t),
                ps.iter().map(|&(p, o)| partition(p, o)).collect(),
            )
        })
        .collect()
}

impl Admin {
    /// The frame of the calls that set a group's offsets partition by partition
    /// ([`alter_consumer_group_offsets`](Self::alter_consumer_group_offsets) with OffsetCommit,
    /// [`alter_share_group_offsets`](Self::alter_share_group_offsets) with
    /// AlterShareGroupOffsets): no request for no offsets; else one request to the group's
    /// coordinator, `build` making it from the offsets by topic and `check` reading its
    /// whole-call error (retried as [`at_group_coordinator`](Self::at_group_coordinator)
    /// retries), and `answers` giving one result per partition (see [`partition_answers`]).
    pub(super) async fn set_group_offsets<R: Request>(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
        build: impl Fn(&BTreeMap<String, Vec<(i32, i64)>>) -> R,
        check: impl Fn(R::Response, i32) -> Result<R::Response>,
        answers: impl FnOnce(&R::Response) -> Vec<(TopicPartition, Result<()>)>,
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        if offsets.is_empty() {
            return Ok(Vec::new());
        }
        let topics = by_topic(offsets.iter().cloned());
        let resp = self
            .at_group_coordinator::<R, _, _>(group, |_| Ok(build(&topics)), check)
            .await?;
        Ok(answers(&resp))
    }
}

/// One result per partition of `asked`, in input order, from a response that answers per
/// topic (`answered`: each topic's name and partition entries) and partition (`status`: an
/// entry's partition index, error code and message), as the calls that set a group's offsets
/// (OffsetCommit, AlterShareGroupOffsets) answer. A partition the response does not mention
/// is an `UnexpectedResponse` error; a partition's error names the partition.
pub(super) fn partition_answers<'r, P: 'r, T>(
    asked: &[(TopicPartition, T)],
    answered: impl Iterator<Item = (&'r str, &'r [P])>,
    api: ApiKey,
    status: fn(&P) -> (i32, i16, Option<&StrBytes>),
) -> Vec<(TopicPartition, Result<()>)> {
    let mut found: BTreeMap<(&str, i32), (i16, Option<&StrBytes>)> = BTreeMap::new();
    for (topic, partitions) in answered {
        for p in partitions {
            let (partition, code, message) = status(p);
            // The first answer for a partition counts, as a search would find it.
            found.entry((topic, partition)).or_insert((code, message));
        }
    }
    asked
        .iter()
        .map(|(tp, _)| {
            let r = match found.get(&(tp.topic(), tp.partition)) {
                None => Err(missing(api, &tp.to_string())),
                Some(&(code, message)) => code_error(code, message, api)
                    .map_or(Ok(()), |e| Err(e.on_partition(tp.topic(), tp.partition))),
            };
            (tp.clone(), r)
        })
        .collect()
}

/// The partitions of an assignment given as topics with partition lists, sorted.
pub(super) fn sorted_partitions<'a>(
    topics: impl Iterator<Item = (&'a str, &'a [i32])>,
) -> Vec<TopicPartition> {
    let mut v: Vec<TopicPartition> = topics
        .flat_map(|(t, ps)| ps.iter().map(move |p| TopicPartition::new(t, *p)))
        .collect();
    v.sort();
    v
}

/// A group description from one group of a describe answer, for the two KIP-848-era
/// describe calls (ConsumerGroupDescribe and ShareGroupDescribe). Their generated response
/// types are distinct but name the common group fields (state, epochs, assignor, members) and
/// member fields (id, epoch, client, host, subscribed topics, assignment) alike, so the mapping
/// of those fields lives here once; a macro because no trait spans the generated types. `$m`
/// names each wire member for the `$field: $value` expressions of the type's own member fields.
macro_rules! described_group {
    (
        $description:ident { members: $member:ident },
        $name:expr, $group:expr, $coordinator:expr,
        |$m:ident| { $($field:ident: $value:expr),* $(,)? }
    ) => {{
        let g = $group;
        $description {
            group_id: $name.to_owned(),
            state: $crate::admin::GroupState::parse(&g.group_state),
            group_epoch: g.group_epoch,
            assignment_epoch: g.assignment_epoch,
            assignor: g.assignor_name.to_string(),
            coordinator: $coordinator,
            members: g
                .members
                .iter()
                .map(|$m| $member {
                    member_id: $m.member_id.to_string(),
                    member_epoch: $m.member_epoch,
                    client_id: $m.client_id.to_string(),
                    client_host: $m.client_host.to_string(),
                    subscribed_topics: $m
                        .subscribed_topic_names
                        .iter()
                        .map(|t| t.0.to_string())
                        .collect(),
                    assignment: described_group!(@partitions $m.assignment),
                    $($field: $value,)*
                })
                .collect(),
        }
    }};
    // An assignment (topics with partition lists) as sorted partitions.
    (@partitions $assignment:expr) => {
        $crate::admin::groups::sorted_partitions(
            $assignment
                .topic_partitions
                .iter()
                .map(|t| (t.topic_name.0.as_str(), &t.partitions[..])),
        )
    };
}
pub(super) use described_group;

/// The describe call of the KIP-848-era group types (ConsumerGroupDescribe, ShareGroupDescribe):
/// the groups by id to each coordinator ([`Admin::per_group`]), each group's answer its error
/// or `$describe(name, group, coordinator)`. A macro for the same reason as
/// [`described_group!`]: the two requests and responses are distinct generated types with the
/// same field names.
macro_rules! describe_groups_at_coordinators {
    ($admin:expr, $groups:expr, $api:ident, $request:ident, $response:ident, $describe:expr) => {
        $admin.per_group(
            $groups,
            ApiKey::$api,
            |names| {
                $request::default().with_group_ids(
                    names
                        .iter()
                        .map(|n| $crate::admin::groups::group_id(n))
                        .collect(),
                )
            },
            |resp: &$response, name, coordinator| {
                let g = resp.groups.iter().find(|g| g.group_id.0.as_str() == name)?;
                Some(
                    $crate::admin::status_of(g.error_code, g.error_message.as_ref(), ApiKey::$api)
                        .map(|()| $describe(name, g, coordinator)),
                )
            },
        )
    };
}
pub(super) use describe_groups_at_coordinators;

fn consumer_group_description(
    name: &str,
    g: &crate::protocol::messages::consumer_group_describe_response::DescribedGroup,
    coordinator: i32,
) -> ConsumerGroupDescription {
    let non_empty = |s: Option<&StrBytes>| s.map(|s| s.to_string()).filter(|s| !s.is_empty());
    described_group!(
        ConsumerGroupDescription { members: ConsumerGroupMember },
        name, g, coordinator,
        |m| {
            group_instance_id: m.instance_id.as_ref().map(|s| s.to_string()),
            subscribed_topic_regex: non_empty(m.subscribed_topic_regex.as_ref()),
            rack_id: non_empty(m.rack_id.as_ref()),
            target_assignment: described_group!(@partitions m.target_assignment),
            classic: match m.member_type {
                0 => Some(true),
                1 => Some(false),
                _ => None,
            },
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use bytes::BufMut;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = Vec::new();
        b.put_i16(1);
        b.put_i32(topics.len() as i32);
        for (t, ps) in topics {
            b.put_i16(t.len() as i16);
            b.put_slice(t.as_bytes());
            b.put_i32(ps.len() as i32);
            for p in *ps {
                b.put_i32(*p);
            }
        }
        b.put_i32(-1); // null user data
        b
    }

    #[test]
    fn consumer_assignment_decodes_and_rejects_garbage() {
        let bytes = assignment(&[("a", &[0, 2]), ("b", &[1])]);
        let got = decode_consumer_assignment(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            got,
            [
                TopicPartition::new("a", 0),
                TopicPartition::new("a", 2),
                TopicPartition::new("b", 1)
            ]
        );
        assert!(decode_consumer_assignment(&[]).is_ok_and(|v| v.is_empty()));
        for cut in 1..bytes.len() - 4 {
            let r = decode_consumer_assignment(&bytes[..cut]);
            assert!(r.is_err(), "truncated at {cut} decoded: {r:?}");
        }
        // A huge claimed count is rejected before any allocation.
        let mut huge = vec![0, 0];
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        let e = decode_consumer_assignment(&huge).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Corrupt);
    }

    #[test]
    fn offset_fetch_results_both_layouts() {
        // g/t/0: 7; g/t/1: nothing committed; g/t/2: an error (not asked below).
        let v8 = offset_fetch::sample_v8_response();
        assert!(offset_fetch::group_error(&v8, "g").is_none());
        let asked = [
            TopicPartition::new("t", 1),
            TopicPartition::new("t", 0),
            TopicPartition::new("u", 0),
        ];
        let r = offset_fetch_results(&v8, "g", Some(&asked));
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].0, asked[0]);
        assert_eq!(r[0].1.as_ref().ok(), Some(&None));
        assert_eq!(
            r[1].1.as_ref().ok().cloned().flatten().map(|c| c.offset),
            Some(7)
        );
        assert_eq!(r[2].1.as_ref().ok(), Some(&None));

        // NOT_COORDINATOR; t/3: 5.
        let old = offset_fetch::sample_v7_response();
        assert_eq!(
            offset_fetch::group_error(&old, "g").and_then(|e| e.kafka_code()),
            Some(crate::KafkaCode::NotCoordinator)
        );
        let r = offset_fetch_results(&old, "g", None);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].0, TopicPartition::new("t", 3));
    }

    #[test]
    fn group_types_parse_as_kafka_names_them() {
        for (s, t) in [
            ("classic", GroupType::Classic),
            ("Consumer", GroupType::Consumer),
            ("SHARE", GroupType::Share),
            ("streams", GroupType::Streams),
        ] {
            assert_eq!(GroupType::parse(s), t);
            assert_eq!(GroupType::parse(t.as_str()), t);
        }
        assert_eq!(
            GroupType::parse("queue"),
            GroupType::Other("queue".to_owned())
        );
        assert_eq!(GroupType::Share.to_string(), "share");
    }

    #[test]
    fn sorted_partitions_flattens_and_sorts() {
        let got = sorted_partitions([("b", &[1, 0][..]), ("a", &[2][..])].into_iter());
        assert_eq!(
            got,
            [
                TopicPartition::new("a", 2),
                TopicPartition::new("b", 0),
                TopicPartition::new("b", 1)
            ]
        );
    }

    #[test]
    fn group_states() {
        assert_eq!(GroupState::parse("Stable"), GroupState::Stable);
        assert_eq!(GroupState::parse("Weird").to_string(), "Weird");
        assert_eq!(
            GroupState::CompletingRebalance.to_string(),
            "CompletingRebalance"
        );
    }
}

//! Share groups (KIP-932, Kafka's queues): describe, start offsets (read, reset, delete),
//! delete, and the group configs that steer them.
//!
//! A share group has no committed offsets: the broker keeps, per partition, a *start offset*
//! (every record before it is done: accepted, rejected or out of delivery attempts) and the
//! state of the in-flight records after it. Resetting the start offset is what
//! `kafka-share-groups.sh --reset-offsets` does; it needs a group without members.

use std::collections::BTreeMap;

use super::groups::{
    GroupState, by_topic, describe_groups_at_coordinators, described_group, group_id,
    partition_answers, wire_topics,
};
use super::{
    Admin, ConfigEntry, ConfigResource, TopicPartition, code_error, missing, status_of, topic_name,
};
use crate::error::{Error, Result};
use crate::protocol::messages::alter_share_group_offsets_request::{
    AlterShareGroupOffsetsRequestPartition, AlterShareGroupOffsetsRequestTopic,
};
use crate::protocol::messages::delete_share_group_offsets_request::DeleteShareGroupOffsetsRequestTopic;
use crate::protocol::messages::describe_share_group_offsets_request::{
    DescribeShareGroupOffsetsRequestGroup, DescribeShareGroupOffsetsRequestTopic,
};
use crate::protocol::messages::{
    AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse, ApiKey,
    DeleteShareGroupOffsetsRequest, DeleteShareGroupOffsetsResponse,
    DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse, ShareGroupDescribeRequest,
    ShareGroupDescribeResponse,
};

/// The group config naming where a share group starts on a partition it has no state for:
/// `latest` (the default), `earliest`, or `by_duration:<ISO-8601 duration>`.
pub const SHARE_AUTO_OFFSET_RESET: &str = "share.auto.offset.reset";
/// The group config limiting how many times a record is delivered before it is archived
/// (Kafka's default 5; the broker bounds it by `group.share.{min,max}.delivery.count.limit`).
pub const SHARE_DELIVERY_COUNT_LIMIT: &str = "share.delivery.count.limit";
/// The group config for how long a consumer holds an acquired record before the broker takes
/// it back (Kafka's default 30 s).
pub const SHARE_RECORD_LOCK_DURATION_MS: &str = "share.record.lock.duration.ms";
/// The group config for the share group's session timeout.
pub const SHARE_SESSION_TIMEOUT_MS: &str = "share.session.timeout.ms";
/// The group config for the share group's heartbeat interval.
pub const SHARE_HEARTBEAT_INTERVAL_MS: &str = "share.heartbeat.interval.ms";
/// The group config choosing what a share consumer reads of transactional records
/// (`read_committed`, the default, or `read_uncommitted`).
pub const SHARE_ISOLATION_LEVEL: &str = "share.isolation.level";

/// A member of a share group as [`Admin::describe_share_groups`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShareGroupMember {
    /// The member id (chosen by the client).
    pub member_id: String,
    /// The member's rack, if it said.
    pub rack_id: Option<String>,
    /// The member's epoch.
    pub member_epoch: i32,
    /// The member's client id.
    pub client_id: String,
    /// The member's host, as the coordinator saw it.
    pub client_host: String,
    /// The topics the member subscribed to.
    pub subscribed_topics: Vec<String>,
    /// The partitions assigned to the member (sorted). Several members of a share group may
    /// be assigned the same partition.
    pub assignment: Vec<TopicPartition>,
}

/// A share group (KIP-932) as [`Admin::describe_share_groups`] describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShareGroupDescription {
    /// The group id.
    pub group_id: String,
    /// The state (`Empty`, `Stable`, `Dead`).
    pub state: GroupState,
    /// The group epoch.
    pub group_epoch: i32,
    /// The epoch of the group's target assignment.
    pub assignment_epoch: i32,
    /// The broker-side assignor in use (`simple`).
    pub assignor: String,
    /// The members.
    pub members: Vec<ShareGroupMember>,
    /// The coordinator's node id.
    pub coordinator: i32,
}

/// A share group's start offset on one partition ([`Admin::list_share_group_offsets`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharePartitionOffset {
    /// The start offset: every record before it is done with (accepted, rejected, or out of
    /// delivery attempts); records from it on may still be delivered.
    pub start_offset: i64,
    /// The leader epoch the share state was written with, if known.
    pub leader_epoch: Option<i32>,
}

/// One partition's answer of [`Admin::list_share_group_offsets`]: `Ok(None)` when the group
/// has no start offset there.
pub type ShareOffsetResult = (TopicPartition, Result<Option<SharePartitionOffset>>);

/// A share group description from ShareGroupDescribe's answer for one group.
fn share_group_description(
    name: &str,
    g: &crate::protocol::messages::share_group_describe_response::DescribedGroup,
    coordinator: i32,
) -> ShareGroupDescription {
    described_group!(
        ShareGroupDescription { members: ShareGroupMember },
        name, g, coordinator,
        |m| { rack_id: m.rack_id.as_ref().map(|s| s.to_string()) }
    )
}

/// The per-partition answers of DescribeShareGroupOffsets for `group`: for `asked` in order
/// (`Ok(None)` for a partition the response leaves out), or every partition the response names
/// (sorted) if `asked` is `None`.
fn share_offsets_results(
    resp: &DescribeShareGroupOffsetsResponse,
    group: &str,
    asked: Option<&[TopicPartition]>,
) -> Vec<ShareOffsetResult> {
    let mut found: BTreeMap<TopicPartition, Result<Option<SharePartitionOffset>>> = BTreeMap::new();
    for g in resp
        .groups
        .iter()
        .filter(|g| g.group_id.0.as_str() == group)
    {
        for t in &g.topics {
            for p in &t.partitions {
                let tp = TopicPartition::new(t.topic_name.0.as_str(), p.partition_index);
                let r = match code_error(
                    p.error_code,
                    p.error_message.as_ref(),
                    ApiKey::DescribeShareGroupOffsets,
                ) {
                    Some(e) => Err(e.on_partition(tp.topic(), tp.partition)),
                    // A negative start offset: no state for this partition.
                    None if p.start_offset < 0 => Ok(None),
                    None => Ok(Some(SharePartitionOffset {
                        start_offset: p.start_offset,
                        leader_epoch: (p.leader_epoch >= 0).then_some(p.leader_epoch),
                    })),
                };
                found.insert(tp, r);
            }
        }
    }
    match asked {
        None => found.into_iter().collect(),
        Some(asked) => asked
            .iter()
            .map(|tp| (tp.clone(), found.remove(tp).unwrap_or(Ok(None))))
            .collect(),
    }
}

impl Admin {
    /// Describes share groups (KIP-932, ShareGroupDescribe): state, epochs, assignor, members
    /// with their subscriptions and assigned partitions, each asked of its coordinator, as
    /// Java's `describeShareGroups`. One result per group, in input order; a group that does
    /// not exist or is not a share group is `GROUP_ID_NOT_FOUND`. Coordinator moves and loads
    /// are retried.
    ///
    /// ```no_run
    /// # async fn demo(admin: rekafka::admin::Admin) -> rekafka::Result<()> {
    /// for d in admin.describe_share_groups(&["orders-workers"]).await? {
    ///     let d = d?;
    ///     for m in &d.members {
    ///         println!("{} {} {:?}", d.group_id, m.member_id, m.assignment);
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn describe_share_groups<S: AsRef<str>>(
        &self,
        groups: &[S],
    ) -> Result<Vec<Result<ShareGroupDescription>>> {
        describe_groups_at_coordinators!(
            self,
            groups,
            ShareGroupDescribe,
            ShareGroupDescribeRequest,
            ShareGroupDescribeResponse,
            share_group_description
        )
        .await
    }

    /// Lists the share groups of every broker (ListGroups with the `share` type filter),
    /// sorted by id, as Java's `listGroups` with `GroupType.SHARE`.
    pub async fn list_share_groups(&self) -> Result<Vec<super::GroupListing>> {
        self.list_groups_of_type(&[super::GroupType::Share]).await
    }

    /// A share group's start offsets (DescribeShareGroupOffsets to its coordinator), as Java's
    /// `listShareGroupOffsets`: for `partitions`, or for every partition the group has state
    /// for if `None`. One entry per partition (in input order when partitions are given, else
    /// sorted); `Ok(None)` where the group has no start offset. A failure of the whole group
    /// (`GROUP_ID_NOT_FOUND`, authorization, …) fails the call; coordinator moves and loads
    /// are retried.
    ///
    /// The protocol version this client speaks (v0) carries no lag; the end offsets
    /// ([`list_offsets`](Self::list_offsets) with `Latest`) bound it from above.
    pub async fn list_share_group_offsets(
        &self,
        group: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<Vec<ShareOffsetResult>> {
        let topics = partitions.map(|ps| by_topic(ps.iter().map(|tp| (tp.clone(), ()))));
        let resp: DescribeShareGroupOffsetsResponse = self
            .at_group_coordinator::<DescribeShareGroupOffsetsRequest, _, _>(
                group,
                |_| {
                    Ok(
                        DescribeShareGroupOffsetsRequest::default().with_groups(vec![
                            DescribeShareGroupOffsetsRequestGroup::default()
                                .with_group_id(group_id(group))
                                .with_topics(topics.as_ref().map(|ts| {
                                    ts.iter()
                                        .map(|(t, ps)| {
                                            DescribeShareGroupOffsetsRequestTopic::default()
                                                .with_topic_name(topic_name(t))
                                                .with_partitions(
                                                    ps.iter().map(|(p, ())| *p).collect(),
                                                )
                                        })
                                        .collect()
                                })),
                        ]),
                    )
                },
                |resp, broker| {
                    let g = resp.groups.iter().find(|g| g.group_id.0.as_str() == group);
                    let e = match g {
                        None => Some(missing(
                            ApiKey::DescribeShareGroupOffsets,
                            &format!("group {group}"),
                        )),
                        Some(g) => code_error(
                            g.error_code,
                            g.error_message.as_ref(),
                            ApiKey::DescribeShareGroupOffsets,
                        ),
                    };
                    match e {
                        Some(e) => Err(e.on_broker(broker)),
                        None => Ok(resp),
                    }
                },
            )
            .await?;
        Ok(share_offsets_results(&resp, group, partitions))
    }

    /// Resets a share group's start offsets (AlterShareGroupOffsets to its coordinator), as
    /// Java's `alterShareGroupOffsets`: records before the new start offset are skipped, records
    /// from it on delivered again. The group must exist and have no members: otherwise the whole
    /// call fails with `NON_EMPTY_GROUP` ([`KafkaCode::NonEmptyGroup`](crate::KafkaCode)) or
    /// `GROUP_ID_NOT_FOUND`. One result per partition, in input order (a partition the topic
    /// lacks is `UNKNOWN_TOPIC_OR_PARTITION`). Coordinator moves and loads are retried.
    ///
    /// ```no_run
    /// # async fn demo(admin: rekafka::admin::Admin) -> rekafka::Result<()> {
    /// use rekafka::admin::TopicPartition;
    /// use rekafka::KafkaCode;
    ///
    /// match admin
    ///     .alter_share_group_offsets("workers", &[(TopicPartition::new("jobs", 0), 0)])
    ///     .await
    /// {
    ///     Err(e) if e.kafka_code() == Some(KafkaCode::NonEmptyGroup) => {
    ///         eprintln!("stop the group's consumers first")
    ///     }
    ///     other => {
    ///         other?;
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn alter_share_group_offsets(
        &self,
        group: &str,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        self.set_group_offsets(
            group,
            offsets,
            |topics| {
                AlterShareGroupOffsetsRequest::default()
                    .with_group_id(group_id(group))
                    .with_topics(wire_topics(
                        topics,
                        |name, ps| {
                            AlterShareGroupOffsetsRequestTopic::default()
                                .with_topic_name(name)
                                .with_partitions(ps)
                        },
                        |p, o| {
                            AlterShareGroupOffsetsRequestPartition::default()
                                .with_partition_index(p)
                                .with_start_offset(o)
                        },
                    ))
            },
            |resp, broker| {
                status_of(
                    resp.error_code,
                    resp.error_message.as_ref(),
                    ApiKey::AlterShareGroupOffsets,
                )
                .map_err(|e| e.on_broker(broker))
                .map(|()| resp)
            },
            |resp: &AlterShareGroupOffsetsResponse| {
                partition_answers(
                    offsets,
                    resp.responses
                        .iter()
                        .map(|t| (t.topic_name.0.as_str(), &t.partitions[..])),
                    ApiKey::AlterShareGroupOffsets,
                    |p| (p.partition_index, p.error_code, p.error_message.as_ref()),
                )
            },
        )
        .await
    }

    /// Deletes a share group's state for whole topics (DeleteShareGroupOffsets to its
    /// coordinator), as Java's `deleteShareGroupOffsets`: the group forgets where it was on
    /// every partition of each topic (a later member starts again as `share.auto.offset.reset`
    /// says). The group must have no members (`NON_EMPTY_GROUP` fails the whole call). One
    /// result per topic, in input order.
    pub async fn delete_share_group_offsets<S: AsRef<str>>(
        &self,
        group: &str,
        topics: &[S],
    ) -> Result<Vec<(String, Result<()>)>> {
        if topics.is_empty() {
            return Ok(Vec::new());
        }
        let resp: DeleteShareGroupOffsetsResponse = self
            .at_group_coordinator::<DeleteShareGroupOffsetsRequest, _, _>(
                group,
                |_| {
                    Ok(DeleteShareGroupOffsetsRequest::default()
                        .with_group_id(group_id(group))
                        .with_topics(
                            topics
                                .iter()
                                .map(|t| {
                                    DeleteShareGroupOffsetsRequestTopic::default()
                                        .with_topic_name(topic_name(t.as_ref()))
                                })
                                .collect(),
                        ))
                },
                |resp, broker| {
                    status_of(
                        resp.error_code,
                        resp.error_message.as_ref(),
                        ApiKey::DeleteShareGroupOffsets,
                    )
                    .map_err(|e| e.on_broker(broker))
                    .map(|()| resp)
                },
            )
            .await?;
        Ok(topics
            .iter()
            .map(|t| {
                let t = t.as_ref();
                let r = match resp.responses.iter().find(|r| r.topic_name.0.as_str() == t) {
                    None => Err(missing(
                        ApiKey::DeleteShareGroupOffsets,
                        &format!("topic {t}"),
                    )),
                    Some(r) => status_of(
                        r.error_code,
                        r.error_message.as_ref(),
                        ApiKey::DeleteShareGroupOffsets,
                    )
                    .map_err(|e| e.on_topic(t.to_owned())),
                };
                (t.to_owned(), r)
            })
            .collect())
    }

    /// Deletes share groups (DeleteGroups at each coordinator), as Java's
    /// `deleteShareGroups`; the same call as [`delete_groups`](Self::delete_groups). A group
    /// with members is `NON_EMPTY_GROUP`. One result per group, in input order.
    pub async fn delete_share_groups<S: AsRef<str>>(
        &self,
        groups: &[S],
    ) -> Result<Vec<Result<()>>> {
        self.delete_groups(groups).await
    }

    /// The configs of groups (DescribeConfigs on `GROUP` resources): for a share group
    /// [`SHARE_AUTO_OFFSET_RESET`], [`SHARE_DELIVERY_COUNT_LIMIT`],
    /// [`SHARE_RECORD_LOCK_DURATION_MS`] and the others, with where each value comes from
    /// ([`ConfigSource::DynamicGroup`](super::ConfigSource::DynamicGroup) when set on the group).
    /// One result per group, in input order.
    pub async fn describe_group_configs<S: AsRef<str>>(
        &self,
        groups: &[S],
    ) -> Result<Vec<Result<Vec<ConfigEntry>>>> {
        let resources: Vec<ConfigResource> = groups
            .iter()
            .map(|g| ConfigResource::Group(g.as_ref().to_owned()))
            .collect();
        self.describe_configs(&resources).await
    }

    /// Changes a group's configs (IncrementalAlterConfigs on its `GROUP` resource), e.g. a
    /// share group's [`SHARE_AUTO_OFFSET_RESET`]. The group need not exist yet: its configs
    /// apply when it is created.
    ///
    /// ```no_run
    /// # async fn demo(admin: rekafka::admin::Admin) -> rekafka::Result<()> {
    /// use rekafka::admin::{AlterConfigOp, SHARE_AUTO_OFFSET_RESET, SHARE_DELIVERY_COUNT_LIMIT};
    ///
    /// admin
    ///     .alter_group_configs(
    ///         "workers",
    ///         &[
    ///             AlterConfigOp::set(SHARE_AUTO_OFFSET_RESET, "earliest"),
    ///             AlterConfigOp::set(SHARE_DELIVERY_COUNT_LIMIT, "3"),
    ///         ],
    ///     )
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn alter_group_configs(
        &self,
        group: &str,
        ops: &[super::AlterConfigOp],
    ) -> Result<()> {
        let changes = [(ConfigResource::Group(group.to_owned()), ops.to_vec())];
        match self.incremental_alter_configs(&changes).await?.pop() {
            Some(r) => r,
            None => Err(Error::with_message(
                crate::ErrorKind::UnexpectedResponse,
                "no answer for the group's configs",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::StrBytes;
    use crate::protocol::messages::TopicName;
    use crate::protocol::messages::describe_share_group_offsets_response::{
        DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
        DescribeShareGroupOffsetsResponseTopic,
    };

    #[test]
    fn share_offsets_keep_order_errors_and_missing_state() {
        let name = |s: &str| TopicName(StrBytes::from_string(s.to_owned()));
        let resp = DescribeShareGroupOffsetsResponse::default().with_groups(vec![
            DescribeShareGroupOffsetsResponseGroup::default()
                .with_group_id(group_id("g"))
                .with_topics(vec![
                    DescribeShareGroupOffsetsResponseTopic::default()
                        .with_topic_name(name("t"))
                        .with_partitions(vec![
                            DescribeShareGroupOffsetsResponsePartition::default()
                                .with_partition_index(0)
                                .with_start_offset(42)
                                .with_leader_epoch(3),
                            DescribeShareGroupOffsetsResponsePartition::default()
                                .with_partition_index(1)
                                .with_start_offset(-1)
                                .with_leader_epoch(-1),
                            DescribeShareGroupOffsetsResponsePartition::default()
                                .with_partition_index(2)
                                .with_error_code(3),
                        ]),
                ]),
        ]);
        let asked = [
            TopicPartition::new("t", 2),
            TopicPartition::new("t", 0),
            TopicPartition::new("u", 0),
            TopicPartition::new("t", 1),
        ];
        let r = share_offsets_results(&resp, "g", Some(&asked));
        let got: Vec<_> = r.iter().map(|(tp, _)| tp.clone()).collect();
        assert_eq!(got, asked);
        assert_eq!(
            r[0].1.as_ref().err().and_then(Error::kafka_code),
            Some(crate::KafkaCode::UnknownTopicOrPartition)
        );
        assert_eq!(
            r[1].1.as_ref().ok().copied().flatten(),
            Some(SharePartitionOffset {
                start_offset: 42,
                leader_epoch: Some(3)
            })
        );
        assert_eq!(r[2].1.as_ref().ok(), Some(&None));
        assert_eq!(r[3].1.as_ref().ok(), Some(&None));
        let all = share_offsets_results(&resp, "g", None);
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].0, TopicPartition::new("t", 0));
        assert!(share_offsets_results(&resp, "other", None).is_empty());
    }
}

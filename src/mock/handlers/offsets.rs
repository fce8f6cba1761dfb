//! Group offsets: OffsetCommit (v2–9) and OffsetFetch (v1–9, several groups from v8).
//!
//! OffsetCommit checks the coordinator, then the member: a consumer-protocol group's member
//! epoch (`consumer_group::check_consumer_commit`), a classic group's generation and member id
//! (`REBALANCE_IN_PROGRESS` while assignments are handed out; a commit without generation and
//! member only to an empty group), then per partition an unknown topic or partition and
//! metadata over 4096 bytes (`OFFSET_METADATA_TOO_LARGE`). OffsetFetch answers the committed
//! offsets (all of the group's without a topic list), with `require_stable` (v7+)
//! `UNSTABLE_OFFSET_COMMIT` for partitions with a pending transactional commit, and from v9 the
//! member-epoch check of a consumer-protocol member.
//!
//! Not modelled: offset retention and expiry (`retention_time_ms` is ignored; offsets live as
//! long as the group), topic ids in offset requests (OffsetCommit v10 / OffsetFetch v10 are not
//! advertised), ACLs, and the `__consumer_offsets` log (offsets are in memory only).

use super::*;

impl Api for OffsetCommitRequest {
    fn describe(&self, info: &mut RequestInfo) {
        info.group_id = Some(self.group_id.0.to_string());
        info.member_id = Some(self.member_id.to_string());
        info.offsets = self
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.partition_index, p.committed_offset))
            })
            .collect();
    }
    fn error_response(&self, _v: i16, c: i16) -> OffsetCommitResponse {
        commit_answers(self, |_, p| commit_answer(p.partition_index, c))
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<OffsetCommitResponse> {
        let group_id = self.group_id.0.to_string();
        let member_id = self.member_id.to_string();
        let generation = self.generation_id_or_member_epoch;
        let mut st = ctx.shared.lock();
        let group_error = if not_coordinator(&st, ctx, &group_id) {
            Some(KafkaCode::NotCoordinator)
        } else {
            let g = st.groups.entry(group_id.clone()).or_insert_with(Group::new);
            if let Some(cg) = &g.consumer {
                consumer_group::check_consumer_commit(cg, &member_id, generation, Some(v)).err()
            } else if generation < 0 && member_id.is_empty() {
                if g.members.is_empty() {
                    None
                } else {
                    Some(KafkaCode::UnknownMemberId)
                }
            } else if g.state == GroupState::CompletingRebalance {
                // Kafka answers this before checking the member: assignments are being handed
                // out, commits wait for them.
                Some(KafkaCode::RebalanceInProgress)
            } else {
                g.check_member(&member_id, generation).err()
            }
        };
        Some(commit_answers(&self, |t, p| {
            let name = t.name.0.as_str();
            let err = group_error.or_else(|| {
                if st.partition(name, p.partition_index).is_none() {
                    Some(KafkaCode::UnknownTopicOrPartition)
                } else if p
                    .committed_metadata
                    .as_ref()
                    .is_some_and(|m| m.len() > 4096)
                {
                    Some(KafkaCode::OffsetMetadataTooLarge)
                } else {
                    None
                }
            });
            if err.is_none()
                && let Some(g) = st.groups.get_mut(&group_id)
            {
                g.offsets.insert(
                    (name.to_owned(), p.partition_index),
                    Committed {
                        offset: p.committed_offset,
                        leader_epoch: if v >= 6 { p.committed_leader_epoch } else { -1 },
                        metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
                    },
                );
            }
            commit_answer(p.partition_index, err.map_or(NONE, code))
        }))
    }
}

/// An OffsetCommit partition answer.
fn commit_answer(partition: i32, c: i16) -> offset_commit_response::OffsetCommitResponsePartition {
    offset_commit_response::OffsetCommitResponsePartition::default()
        .with_partition_index(partition)
        .with_error_code(c)
}

/// The OffsetCommit response with `part` answering each partition of the request.
fn commit_answers(
    req: &OffsetCommitRequest,
    part: impl FnMut(
        &offset_commit_request::OffsetCommitRequestTopic,
        &offset_commit_request::OffsetCommitRequestPartition,
    ) -> offset_commit_response::OffsetCommitResponsePartition,
) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(per_partition(
        &req.topics,
        |t| &t.partitions,
        part,
        |t, parts| {
            offset_commit_response::OffsetCommitResponseTopic::default()
                .with_name(t.name.clone())
                .with_partitions(parts)
        },
    ))
}

/// (partition, offset, leader epoch, metadata, error code).
type OffsetRow = (i32, i64, i32, Option<String>, i16);

/// The committed offsets of a group for the requested partitions (`None`: all).
pub(super) fn fetch_offsets(
    st: &State,
    group_id: &str,
    wanted: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> Vec<(String, Vec<OffsetRow>)> {
    let g = st.groups.get(group_id);
    let wanted = match wanted {
        Some(w) => w,
        None => {
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            if let Some(g) = g {
                for (t, p) in g.offsets.keys() {
                    by_topic.entry(t.clone()).or_default().push(*p);
                }
            }
            by_topic
                .into_iter()
                .map(|(t, mut ps)| {
                    ps.sort_unstable();
                    (t, ps)
                })
                .collect()
        }
    };
    wanted
        .into_iter()
        .map(|(topic, parts)| {
            let rows = parts
                .into_iter()
                .map(|p| {
                    let key = (topic.clone(), p);
                    let pending = require_stable
                        && g.is_some_and(|g| {
                            g.pending_txn
                                .values()
                                .any(|v| v.iter().any(|(k, _)| *k == key))
                        });
                    if pending {
                        return (
                            p,
                            -1,
                            -1,
                            Some(String::new()),
                            code(KafkaCode::UnstableOffsetCommit),
                        );
                    }
                    match g.and_then(|g| g.offsets.get(&key)) {
                        Some(c) => (
                            p,
                            c.offset,
                            c.leader_epoch,
                            Some(c.metadata.clone().unwrap_or_default()),
                            NONE,
                        ),
                        None => (p, -1, -1, Some(String::new()), NONE),
                    }
                })
                .collect();
            (topic, rows)
        })
        .collect()
}

impl Api for OffsetFetchRequest {
    fn describe(&self, info: &mut RequestInfo) {
        if self.groups.is_empty() {
            info.group_id = Some(self.group_id.0.to_string());
        } else {
            info.group_id = self.groups.first().map(|g| g.group_id.0.to_string());
        }
    }
    fn error_response(&self, v: i16, c: i16) -> OffsetFetchResponse {
        use offset_fetch_response::*;
        if v >= 8 {
            OffsetFetchResponse::default().with_groups(
                self.groups
                    .iter()
                    .map(|g| {
                        OffsetFetchResponseGroup::default()
                            .with_group_id(g.group_id.clone())
                            .with_error_code(c)
                    })
                    .collect(),
            )
        } else if v >= 2 {
            OffsetFetchResponse::default().with_error_code(c)
        } else {
            OffsetFetchResponse::default().with_topics(
                self.topics
                    .iter()
                    .flatten()
                    .map(|t| {
                        OffsetFetchResponseTopic::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partition_indexes
                                    .iter()
                                    .map(|&p| {
                                        OffsetFetchResponsePartition::default()
                                            .with_partition_index(p)
                                            .with_committed_offset(-1)
                                            .with_error_code(c)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
        }
    }
    async fn handle(self, ctx: &Ctx, v: i16) -> Option<OffsetFetchResponse> {
        use offset_fetch_response::*;
        let st = ctx.shared.lock();
        if v >= 8 {
            let groups = self
                .groups
                .iter()
                .map(|gr| {
                    let gid = gr.group_id.0.to_string();
                    let r = OffsetFetchResponseGroup::default().with_group_id(gr.group_id.clone());
                    if not_coordinator(&st, ctx, &gid) {
                        return r.with_error_code(code(KafkaCode::NotCoordinator));
                    }
                    // v9+: a consumer-protocol member fetches with its member epoch.
                    // Without a member id (admin, manual assignment) any consumer may read them.
                    if v >= 9
                        && let Some(member) = gr.member_id.as_deref()
                        && let Some(cg) = st.groups.get(&gid).and_then(|g| g.consumer.as_ref())
                        && let Err(c) =
                            consumer_group::check_consumer_commit(cg, member, gr.member_epoch, None)
                    {
                        return r.with_error_code(code(c));
                    }
                    let wanted = gr.topics.as_ref().map(|ts| {
                        ts.iter()
                            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                            .collect()
                    });
                    let topics = fetch_offsets(&st, &gid, wanted, self.require_stable)
                        .into_iter()
                        .map(|(t, rows)| {
                            OffsetFetchResponseTopics::default()
                                .with_name(tn(&t))
                                .with_partitions(
                                    rows.into_iter()
                                        .map(|(p, o, e, m, c)| {
                                            OffsetFetchResponsePartitions::default()
                                                .with_partition_index(p)
                                                .with_committed_offset(o)
                                                .with_committed_leader_epoch(e)
                                                .with_metadata(m.as_deref().map(s))
                                                .with_error_code(c)
                                        })
                                        .collect(),
                                )
                        })
                        .collect();
                    r.with_topics(topics)
                })
                .collect();
            return Some(OffsetFetchResponse::default().with_groups(groups));
        }
        let gid = self.group_id.0.to_string();
        if not_coordinator(&st, ctx, &gid) {
            return Some(self.error_response(v, code(KafkaCode::NotCoordinator)));
        }
        let wanted = self.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                .collect()
        });
        let topics = fetch_offsets(&st, &gid, wanted, v >= 7 && self.require_stable)
            .into_iter()
            .map(|(t, rows)| {
                OffsetFetchResponseTopic::default()
                    .with_name(tn(&t))
                    .with_partitions(
                        rows.into_iter()
                            .map(|(p, o, e, m, c)| {
                                let mut r = OffsetFetchResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(o)
                                    .with_metadata(m.as_deref().map(s))
                                    .with_error_code(c);
                                if v >= 5 {
                                    r = r.with_committed_leader_epoch(e);
                                }
                                r
                            })
                            .collect(),
                    )
            })
            .collect();
        Some(OffsetFetchResponse::default().with_topics(topics))
    }
}

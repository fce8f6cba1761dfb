//! OffsetFetch: a group's committed offsets. The admin client's `list_group_offsets` and a
//! group member's `committed` both build and read it here.

use std::collections::BTreeMap;

use super::code_error;
use crate::error::{Error, Result};
use crate::protocol::ApiKey;
use crate::protocol::StrBytes;
use crate::protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use crate::protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};

/// What an OffsetFetch asks for one group.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OffsetFetchQuery<'a> {
    /// The group.
    pub(crate) group: &'a str,
    /// The partitions as `(topic, partition)`, or `None` for every partition the group has
    /// committed (v2+; older versions get an empty list).
    pub(crate) partitions: Option<&'a [(&'a str, i32)]>,
    /// The member id and epoch of a consumer-protocol member (KIP-848, sent at v9+), so that
    /// a fenced member does not read offsets as if it still owned the partitions.
    pub(crate) member: Option<(&'a str, i32)>,
    /// Ask the broker to wait for pending transactional commits (v7+).
    pub(crate) require_stable: bool,
}

/// A committed offset as OffsetFetch answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchedOffset {
    /// The committed offset (never negative: "no offset" is `None` around this).
    pub(crate) offset: i64,
    /// The leader epoch committed with it, if any (v5+).
    pub(crate) leader_epoch: Option<i32>,
    /// The metadata committed with it, as the broker gave it (possibly empty).
    pub(crate) metadata: Option<String>,
}

/// One partition of an OffsetFetch answer: `Ok(None)` where nothing is committed.
pub(crate) type PartitionAnswer = (String, i32, Result<Option<FetchedOffset>>);

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// The OffsetFetch request for `query` at `version`: v8+ carries a `groups` array (with the
/// member id and epoch at v9+), older versions the group and topics at the top level.
pub(crate) fn request(query: &OffsetFetchQuery<'_>, version: i16) -> OffsetFetchRequest {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for &(t, p) in query.partitions.into_iter().flatten() {
        by_topic.entry(t).or_default().push(p);
    }
    let group_id = GroupId(str_bytes(query.group));
    let mut req = OffsetFetchRequest::default();
    if version >= 8 {
        let topics = query.partitions.map(|_| {
            by_topic
                .iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopics::default()
                        .with_name(TopicName(str_bytes(t)))
                        .with_partition_indexes(ps.clone())
                })
                .collect()
        });
        let mut g = OffsetFetchRequestGroup::default()
            .with_group_id(group_id)
            .with_topics(topics);
        if version >= 9
            && let Some((id, epoch)) = query.member
        {
            g.member_id = Some(str_bytes(id));
            g.member_epoch = epoch;
        }
        req.groups = vec![g];
    } else {
        req.group_id = group_id;
        // v2+: null means every partition the group committed.
        req.topics = if query.partitions.is_none() && version >= 2 {
            None
        } else {
            Some(
                by_topic
                    .iter()
                    .map(|(t, ps)| {
                        OffsetFetchRequestTopic::default()
                            .with_name(TopicName(str_bytes(t)))
                            .with_partition_indexes(ps.clone())
                    })
                    .collect(),
            )
        };
    }
    if version >= 7 {
        req.require_stable = query.require_stable;
    }
    req
}

/// The group-level error of a response to a request for `group`, if any: the group's entry in
/// the v8+ layout (a response of that layout without it is unexpected), else the top-level
/// error code.
pub(crate) fn group_error(resp: &OffsetFetchResponse, group: &str) -> Option<Error> {
    let code = match resp.groups.iter().find(|g| g.group_id.0.as_str() == group) {
        Some(g) => g.error_code,
        None if !resp.groups.is_empty() => {
            return Some(
                Error::with_message(
                    crate::ErrorKind::UnexpectedResponse,
                    format!("the OffsetFetch response does not mention group {group}"),
                )
                .api(ApiKey::OffsetFetch),
            );
        }
        None => resp.error_code,
    };
    code_error(code, ApiKey::OffsetFetch)
}

/// The fields of each partition of a list of OffsetFetch response topics, in order. A macro
/// because the two layouts (v0–v7 top-level topics, v8+ per-group topics) have distinct
/// generated types with the same fields.
macro_rules! partition_fields {
    ($topics:expr) => {
        $topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(move |p| {
                    let meta: Option<&StrBytes> = p.metadata.as_ref();
                    let epoch = p.committed_leader_epoch;
                    (
                        t.name.0.as_str(),
                        p.partition_index,
                        p.error_code,
                        p.committed_offset,
                        epoch,
                        meta,
                    )
                })
            })
            .collect::<Vec<_>>()
    };
}

/// The per-partition answers for `group`, in response order, from either layout. A partition
/// error is tagged with the partition; a negative offset is "nothing committed".
pub(crate) fn partitions(resp: &OffsetFetchResponse, group: &str) -> Vec<PartitionAnswer> {
    let fields = match resp.groups.iter().find(|g| g.group_id.0.as_str() == group) {
        Some(g) => partition_fields!(g.topics),
        None => partition_fields!(resp.topics),
    };
    fields
        .into_iter()
        .map(|(topic, p, code, offset, epoch, meta)| {
            let r = match code_error(code, ApiKey::OffsetFetch) {
                Some(e) => Err(e.on_partition(topic, p)),
                None if offset < 0 => Ok(None),
                None => Ok(Some(FetchedOffset {
                    offset,
                    leader_epoch: (epoch >= 0).then_some(epoch),
                    metadata: meta.map(|m| m.to_string()),
                })),
            };
            (topic.to_owned(), p, r)
        })
        .collect()
}

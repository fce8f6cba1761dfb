//! A share-group member made of raw requests (ShareGroupHeartbeat, ShareFetch,
//! ShareAcknowledge), for the admin and CLI tests of share groups until rekafka's share consumer
//! lands: it joins, waits for its assignment, takes records and accepts them, and leaves.
//! Included by `tests/share_admin_kafka.rs` and `cli/tests/share_groups_kafka.rs`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rekafka::cluster::{Cluster, CoordinatorType};
use rekafka::protocol::unstable::StrBytes;
use rekafka::protocol::unstable::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch as AckBatch,
};
use rekafka::protocol::unstable::messages::share_fetch_request::{FetchPartition, FetchTopic};
use rekafka::protocol::unstable::messages::{
    GroupId, ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest,
    ShareFetchResponse, ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse, TopicName,
};

use rekafka::protocol::unstable::messages::share_group_heartbeat_response::TopicPartitions;

fn gid(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_owned()))
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_owned())
}

/// One share-group member speaking the protocol directly.
pub struct RawShareMember {
    cluster: Cluster,
    group: String,
    topic: String,
    /// The member id (chosen by the client, as KIP-932 asks).
    pub member_id: String,
    epoch: i32,
    /// The assignment, as the last heartbeat that carried one said.
    pub assigned: Vec<TopicPartitions>,
    /// Per leader: the share session epoch of the next request.
    sessions: BTreeMap<i32, i32>,
}

impl RawShareMember {
    /// A member of `group` subscribed to `topic` (not joined yet).
    pub fn new(cluster: Cluster, group: &str, topic: &str, member_id: &str) -> RawShareMember {
        RawShareMember {
            cluster,
            group: group.to_owned(),
            topic: topic.to_owned(),
            member_id: member_id.to_owned(),
            epoch: 0,
            assigned: Vec::new(),
            sessions: BTreeMap::new(),
        }
    }

    async fn send_heartbeat(&mut self, epoch: i32) -> ShareGroupHeartbeatResponse {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let attempt = async {
                let id = self
                    .cluster
                    .coordinator(CoordinatorType::Group, &self.group)
                    .await?;
                let conn = self.cluster.connection_for_broker(id).await?;
                let mut req = ShareGroupHeartbeatRequest::default()
                    .with_group_id(gid(&self.group))
                    .with_member_id(s(&self.member_id))
                    .with_member_epoch(epoch);
                if epoch == 0 {
                    req.subscribed_topic_names = Some(vec![TopicName(s(&self.topic))]);
                }
                conn.send(req).await
            };
            match attempt.await {
                Ok(r) if r.error_code == 0 => return r,
                Ok(r) if [14, 15, 16].contains(&r.error_code) && Instant::now() < deadline => {
                    // COORDINATOR_LOAD_IN_PROGRESS / NOT_AVAILABLE / NOT_COORDINATOR.
                    self.cluster
                        .invalidate_coordinator(CoordinatorType::Group, &self.group);
                }
                Ok(r) => panic!(
                    "share heartbeat of {}: error {} {:?}",
                    self.member_id, r.error_code, r.error_message
                ),
                Err(e) if Instant::now() < deadline => {
                    eprintln!("share heartbeat: {e}; retrying");
                    self.cluster
                        .invalidate_coordinator(CoordinatorType::Group, &self.group);
                }
                Err(e) => panic!("share heartbeat of {}: {e}", self.member_id),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Heartbeats (joining first) until the member is assigned `partitions` partitions.
    pub async fn join_until_assigned(&mut self, partitions: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.send_heartbeat(self.epoch).await;
            self.epoch = r.member_epoch;
            if let Some(a) = r.assignment {
                self.assigned = a.topic_partitions;
            }
            if self.assigned_partitions().len() >= partitions {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} was not assigned {partitions} partitions within 60 s (has {:?})",
                self.member_id,
                self.assigned_partitions()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The assigned partitions, sorted.
    pub fn assigned_partitions(&self) -> Vec<i32> {
        let mut v: Vec<i32> = self
            .assigned
            .iter()
            .flat_map(|t| t.partitions.iter().copied())
            .collect();
        v.sort_unstable();
        v
    }

    /// One heartbeat at the member's epoch (keeps it in the group).
    pub async fn heartbeat(&mut self) {
        let r = self.send_heartbeat(self.epoch).await;
        self.epoch = r.member_epoch;
    }

    /// Takes records from every assigned partition and accepts them, until `expected`
    /// (partition → number of records) were accepted. Returns the accepted offsets per
    /// partition (each once: the test checks).
    pub async fn consume_and_accept(
        &mut self,
        expected: &BTreeMap<i32, usize>,
    ) -> BTreeMap<i32, Vec<i64>> {
        let mut accepted: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        let done = |accepted: &BTreeMap<i32, Vec<i64>>| {
            expected
                .iter()
                .all(|(p, n)| accepted.get(p).map_or(0, Vec::len) >= *n)
        };
        while !done(&accepted) {
            assert!(
                Instant::now() < deadline,
                "not every record taken within 60 s: {:?} of {expected:?}",
                accepted
                    .iter()
                    .map(|(p, v)| (*p, v.len()))
                    .collect::<Vec<_>>()
            );
            let parts = self
                .cluster
                .partitions(&self.topic)
                .await
                .expect("partitions");
            // Per leader: the assigned topics (by id) with the partitions it leads.
            let mut by_leader: BTreeMap<i32, Vec<FetchTopic>> = BTreeMap::new();
            for t in &self.assigned {
                for p in parts.iter().filter(|p| t.partitions.contains(&p.partition)) {
                    let topics = by_leader.entry(p.leader).or_default();
                    let fp = FetchPartition::default().with_partition_index(p.partition);
                    match topics.iter_mut().find(|f| f.topic_id == t.topic_id) {
                        Some(f) => f.partitions.push(fp),
                        None => topics.push(
                            FetchTopic::default()
                                .with_topic_id(t.topic_id)
                                .with_partitions(vec![fp]),
                        ),
                    }
                }
            }
            for (leader, topics) in by_leader {
                let conn = self
                    .cluster
                    .connection_for_broker(leader)
                    .await
                    .expect("leader connection");
                let epoch = *self.sessions.get(&leader).unwrap_or(&0);
                // The session's first fetch names the partitions; later ones add nothing.
                let req = ShareFetchRequest::default()
                    .with_group_id(Some(gid(&self.group)))
                    .with_member_id(Some(s(&self.member_id)))
                    .with_share_session_epoch(epoch)
                    .with_max_wait_ms(500)
                    .with_min_bytes(1)
                    .with_max_bytes(1 << 20)
                    .with_max_records(500)
                    .with_batch_size(500)
                    .with_topics(if epoch == 0 { topics } else { Vec::new() });
                let resp: ShareFetchResponse = conn.send(req).await.expect("share fetch");
                assert_eq!(resp.error_code, 0, "share fetch: {:?}", resp.error_message);
                let mut next = epoch + 1;
                let mut acks: Vec<AcknowledgeTopic> = Vec::new();
                let mut taken: Vec<(i32, i64, i64)> = Vec::new();
                for t in &resp.responses {
                    for p in &t.partitions {
                        assert_eq!(p.error_code, 0, "share fetch partition: {p:?}");
                        let batches: Vec<AckBatch> = p
                            .acquired_records
                            .iter()
                            .map(|a| {
                                taken.push((p.partition_index, a.first_offset, a.last_offset));
                                AckBatch::default()
                                    .with_first_offset(a.first_offset)
                                    .with_last_offset(a.last_offset)
                                    .with_acknowledge_types(vec![1])
                            })
                            .collect();
                        if !batches.is_empty() {
                            let ap = AcknowledgePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_acknowledgement_batches(batches);
                            match acks.iter_mut().find(|a| a.topic_id == t.topic_id) {
                                Some(a) => a.partitions.push(ap),
                                None => acks.push(
                                    AcknowledgeTopic::default()
                                        .with_topic_id(t.topic_id)
                                        .with_partitions(vec![ap]),
                                ),
                            }
                        }
                    }
                }
                if !acks.is_empty() {
                    let req = ShareAcknowledgeRequest::default()
                        .with_group_id(Some(gid(&self.group)))
                        .with_member_id(Some(s(&self.member_id)))
                        .with_share_session_epoch(next)
                        .with_topics(acks);
                    let resp: ShareAcknowledgeResponse =
                        conn.send(req).await.expect("share acknowledge");
                    assert_eq!(resp.error_code, 0, "share acknowledge: {resp:?}");
                    for t in &resp.responses {
                        for p in &t.partitions {
                            assert_eq!(p.error_code, 0, "acknowledge partition: {p:?}");
                        }
                    }
                    next += 1;
                    for (p, first, last) in taken {
                        accepted.entry(p).or_default().extend(first..=last);
                    }
                }
                self.sessions.insert(leader, next);
            }
            self.heartbeat().await;
        }
        accepted
    }

    /// Leaves the group (heartbeat with epoch -1).
    pub async fn leave(&mut self) {
        let _ = self.send_heartbeat(-1).await;
        self.epoch = -1;
    }
}

//! Offsets in a transaction (KIP-447): AddOffsetsToTxn to the transaction coordinator, then
//! TxnOffsetCommit to the group coordinator.

use super::*;

impl Inner {
    pub(super) async fn send_offsets(
        &self,
        offsets: &[(String, i32, i64)],
        group: &ConsumerGroupMetadata,
        deadline: Instant,
    ) -> Result<()> {
        let id = self.current_id()?;
        let tid = self.link.transactional_id.clone();
        let request_timeout = self.config.request_timeout;
        let cluster = &self.cluster;
        let known = lock(&self.cell).offset_groups.contains(&group.group_id);
        if !known {
            lock(&self.cell).offsets_maybe = true;
            let gid = group.group_id.clone();
            self.with_retries(
                CoordinatorType::Transaction,
                &tid,
                ApiKey::AddOffsetsToTxn,
                Some(deadline),
                |coordinator| {
                    let (tid, gid) = (tid.clone(), gid.clone());
                    async move {
                        let req = AddOffsetsToTxnRequest::default()
                            .with_transactional_id(TransactionalId(StrBytes::from_string(
                                tid.to_string(),
                            )))
                            .with_producer_id(ProducerId(id.producer_id))
                            .with_producer_epoch(id.epoch)
                            .with_group_id(GroupId(StrBytes::from_string(gid)));
                        let broker = cluster.connection_for_broker(coordinator).await?;
                        let resp = tokio::time::timeout(request_timeout, broker.send(req))
                            .await
                            .map_err(|_| {
                                Error::with_message(ErrorKind::Timeout, "AddOffsetsToTxn timed out")
                            })??;
                        match KafkaCode::from_i16(resp.error_code) {
                            Some(code) => Err(Error::broker(code)
                                .api(ApiKey::AddOffsetsToTxn)
                                .on_broker(coordinator)),
                            None => Ok(()),
                        }
                    }
                },
            )
            .await?;
            lock(&self.cell)
                .offset_groups
                .insert(group.group_id.clone());
        }
        let mut topics: Vec<TxnOffsetCommitRequestTopic> = Vec::new();
        for (t, p, o) in offsets {
            let part = TxnOffsetCommitRequestPartition::default()
                .with_partition_index(*p)
                .with_committed_offset(*o)
                .with_committed_leader_epoch(-1)
                .with_committed_metadata(Some(StrBytes::from_static_str("")));
            match topics.iter_mut().find(|x| *x.name.0 == **t) {
                Some(x) => x.partitions.push(part),
                None => topics.push(
                    TxnOffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t.clone())))
                        .with_partitions(vec![part]),
                ),
            }
        }
        let gid = group.group_id.clone();
        self.with_retries(
            CoordinatorType::Group,
            &gid,
            ApiKey::TxnOffsetCommit,
            Some(deadline),
            |coordinator| {
                let topics = topics.clone();
                let tid = tid.clone();
                async move {
                    let broker = cluster.connection_for_broker(coordinator).await?;
                    let conn = broker.connection().await?;
                    let version = conn.versions().negotiate::<TxnOffsetCommitRequest>()?;
                    let mut req = TxnOffsetCommitRequest::default()
                        .with_transactional_id(TransactionalId(StrBytes::from_string(
                            tid.to_string(),
                        )))
                        .with_group_id(GroupId(StrBytes::from_string(group.group_id.clone())))
                        .with_producer_id(ProducerId(id.producer_id))
                        .with_producer_epoch(id.epoch)
                        .with_topics(topics);
                    if version >= 3 {
                        req.generation_id = group.generation_id;
                        req.member_id = StrBytes::from_string(group.member_id.clone());
                        req.group_instance_id =
                            group.group_instance_id.clone().map(StrBytes::from_string);
                    }
                    let resp = tokio::time::timeout(request_timeout, conn.send_at(req, version))
                        .await
                        .map_err(|_| {
                            Error::with_message(ErrorKind::Timeout, "TxnOffsetCommit timed out")
                        })??;
                    // The worst partition error decides (a retriable one only if all are).
                    let mut worst: Option<Error> = None;
                    for t in &resp.topics {
                        for p in &t.partitions {
                            if let Some(code) = KafkaCode::from_i16(p.error_code) {
                                let e = Error::broker(code)
                                    .api(ApiKey::TxnOffsetCommit)
                                    .on_broker(coordinator)
                                    .on_partition(t.name.0.to_string(), p.partition_index);
                                let replace = match &worst {
                                    None => true,
                                    Some(w) => matches!(
                                        classify(ApiKey::TxnOffsetCommit, w),
                                        Class::Retry { .. }
                                    ),
                                };
                                if replace {
                                    worst = Some(e);
                                }
                            }
                        }
                    }
                    match worst {
                        Some(e) => Err(e),
                        None => Ok(()),
                    }
                }
            },
        )
        .await
    }
}

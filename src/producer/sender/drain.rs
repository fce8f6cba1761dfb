//! Draining: which batches are ready, which leader takes them, and building the Produce
//! requests (the sender's half that decides what is sent next).

use super::*;

impl Sender {
    /// Whether a new batch of `tp` would have to wait now: the partition has queued batches,
    /// or requests out (on it or on its leader: one when batches to the leader may grow,
    /// `max.in.flight` otherwise), or it is retrying or waiting
    /// for its first acknowledgement (idempotence) with a batch in flight. A response (or a
    /// retry timer) ends every one of these, and the sender then looks again.
    pub(super) fn is_backlogged(
        &self,
        tp: &Tp,
        now: Instant,
        budgets: &HashMap<i32, usize>,
    ) -> bool {
        let Some(part) = self.parts.get(tp) else {
            return false;
        };
        let Some(leader) = part.leader else {
            // Collected at once, so that the missing leader is asked for.
            return false;
        };
        // While batches may grow, a request in flight is a backlog already: Kafka serves one
        // request of a connection at a time (it mutes the channel until the response is
        // sent), so a second request would only wait there; the records wait here instead
        // and leave in one larger batch when the response comes (measured: BENCHMARKS.md,
        // issue 21). Otherwise (growth off, or the broker not shown fast enough yet: Java's
        // batches), `max.in.flight` as in the Java client.
        let max = if budgets.get(&leader).copied().unwrap_or(0) > self.sh.config.batch_size {
            1
        } else {
            self.sh.config.max_in_flight
        };
        !part.queue.is_empty()
            || part.retry_at.is_some_and(|at| at > now)
            || part.in_flight.len() >= max
            || (!part.in_flight.is_empty()
                && (part.retrying
                    || self
                        .idem
                        .as_ref()
                        .is_some_and(|idem| !idem.is_confirmed(tp))))
            || self.broker_in_flight.get(&leader).copied().unwrap_or(0) >= max
    }

    /// The bytes one request to `broker` may carry by its recent delivery rate (see
    /// `growth`); 0 with growth off or without an estimate. The timeout it must fit in is
    /// the shorter of the producer's `request.timeout` and the connection's (which closes
    /// the connection when it passes).
    pub(super) fn request_budget(&self, broker: i32) -> usize {
        let config = &self.sh.config;
        if crate::producer::backlog_limit(config) <= config.batch_size {
            return 0;
        }
        let timeout = config
            .request_timeout
            .min(self.sh.cluster.config().connection.request_timeout);
        self.rates
            .get(&broker)
            .map_or(0, |r| r.request_budget(timeout))
    }

    /// Each leader's [`request_budget`](Self::request_budget), computed once per look.
    pub(super) fn leader_budgets(&self) -> HashMap<i32, usize> {
        let mut budgets = HashMap::new();
        for part in self.parts.values() {
            if let Some(l) = part.leader {
                budgets.entry(l).or_insert_with(|| self.request_budget(l));
            }
        }
        budgets
    }

    /// Where batches may grow now: the partitions with a backlog whose leader's budget allows
    /// more than `batch.size`, and each such leader's cap (its budget shared by those
    /// partitions, `growth::batch_cap`). Both the open batches (`publish_backlog`) and the
    /// queued ones (`merge_queued`) follow it.
    pub(super) fn growth(&self, now: Instant) -> Growth {
        let config = &self.sh.config;
        let batch_size = config.batch_size;
        let limit = crate::producer::backlog_limit(config);
        let budgets = self.leader_budgets();
        let mut growing = HashSet::new();
        let mut per_leader: HashMap<i32, usize> = HashMap::new();
        for (tp, part) in &self.parts {
            let Some(l) = part.leader else {
                continue;
            };
            if budgets.get(&l).copied().unwrap_or(0) > batch_size
                && self.is_backlogged(tp, now, &budgets)
            {
                *per_leader.entry(l).or_insert(0) += 1;
                growing.insert(tp.clone());
            }
        }
        let caps = per_leader
            .into_iter()
            .map(|(l, n)| {
                let budget = budgets.get(&l).copied().unwrap_or(0);
                (l, growth::batch_cap(budget, n, batch_size, limit))
            })
            .collect();
        Growth { growing, caps }
    }

    /// Tells the `send` path how far each partition's open batch may grow: past `batch.size`
    /// only while the partition has a backlog, up to its share of its leader's request
    /// budget (`growth::batch_cap`; see
    /// [`ProducerConfig::backlog_batch_size`](super::ProducerConfig)); 0 otherwise.
    pub(super) fn publish_backlog(&self, now: Instant) {
        let growth = self.growth(now);
        for topic in self.sh.acc.topics() {
            for pq in &topic.partitions {
                let tp: Tp = (topic.name.clone(), pq.partition);
                let cap = match self.parts.get(&tp).and_then(|p| p.leader) {
                    Some(l) if growth.growing.contains(&tp) => {
                        growth.caps.get(&l).copied().unwrap_or(0)
                    }
                    _ => 0,
                };
                set_grow_to(pq, cap);
            }
        }
    }

    /// Merges the batches queued behind `tp`'s head into it, in order, while the merged batch
    /// stays within `cap` (the leader's adaptive cap), so that a burst sealed into
    /// `batch.size` batches before the leader's first response (no estimate yet: Java's
    /// batches) still leaves in large batches once the estimate allows them (issue 21 item 3).
    ///
    /// Only batches created before the leader's current estimate began (`before`) merge:
    /// those were sealed at `batch.size` for want of an estimate. A batch created while the
    /// estimate existed already had its chance to grow (the open batch grows while the
    /// partition has a backlog) and stays as Java's rules made it, so that which records share
    /// a batch, and a batch's fate, is as without this catch-up.
    ///
    /// Only batches never sent merge (no sequence number, no attempt, no error): a batch
    /// that was sent keeps its bytes and sequence numbers, so retries and idempotence see
    /// exactly what the broker may have. The merged batch keeps the head's creation time (the
    /// oldest record's, for `delivery.timeout` as in Java), every record's completion slot and
    /// index, and every merged batch's `buffer.memory` reservation; the few bytes the
    /// re-encoded deltas add are charged too, or the merge stops there.
    pub(super) fn merge_queued(&mut self, tp: &Tp, cap: usize, before: Instant) {
        let sh = self.sh.clone();
        let Some(part) = self.parts.get_mut(tp) else {
            return;
        };
        let Some(mut head) = part.queue.pop_front() else {
            return;
        };
        let mut charged = head._memory.permits as usize
            + head
                .absorbed
                .iter()
                .map(|a| a._memory.permits as usize)
                .sum::<usize>();
        let mut merged = 0usize;
        while let Some(next) = part.queue.front() {
            if !never_sent(&head)
                || !never_sent(next)
                || head.created >= before
                || next.created >= before
            {
                break;
            }
            let (Some(hb), Some(nb)) = (&head.builder, &next.builder) else {
                break;
            };
            let Ok(size) = hb.absorbed_size(nb) else {
                break;
            };
            if size > cap {
                break;
            }
            let charge = charged + next._memory.permits as usize;
            let needed = hb.capacity().max(size);
            let mut extra = 0u32;
            if needed > charge {
                let Some(permits) = u32::try_from(needed - charge)
                    .ok()
                    .filter(|n| sh.memory.try_acquire_many(*n).map(|p| p.forget()).is_ok())
                else {
                    break;
                };
                extra = permits;
            }
            let Some(next) = part.queue.pop_front() else {
                break;
            };
            let absorbed = match (&mut head.builder, &next.builder) {
                (Some(hb), Some(nb)) => hb.absorb(nb),
                _ => Ok(()),
            };
            if absorbed.is_err() {
                sh.memory.add_permits(extra as usize);
                part.queue.push_front(next);
                break;
            }
            head._memory.permits += extra;
            charged = charge + extra as usize;
            let first = head.records;
            head.records += next.records;
            head.uncompressed = head.builder.as_ref().map_or(0, |b| b.estimated_size());
            head.created = head.created.min(next.created);
            head.absorbed.push(Absorbed {
                shared: next.shared,
                first,
                _memory: next._memory,
            });
            head.absorbed
                .extend(next.absorbed.into_iter().map(|a| Absorbed {
                    first: first + a.first,
                    ..a
                }));
            merged += 1;
        }
        if merged > 0 {
            tracing::debug!(
                topic = %tp.0,
                partition = tp.1,
                batches = merged + 1,
                records = head.records,
                bytes = head.uncompressed,
                cap,
                "merged queued batches"
            );
        }
        part.queue.push_front(head);
    }

    /// Whether requests are in flight and every partition's leader already has
    /// `max.in.flight` of them: a newly sealed batch could not be sent before a response.
    pub(super) fn all_brokers_busy(&self) -> bool {
        if self.requests.is_empty() {
            return false;
        }
        let max = self.sh.config.max_in_flight;
        self.parts.values().all(|p| {
            p.leader
                .is_some_and(|l| self.broker_in_flight.get(&l).copied().unwrap_or(0) >= max)
        })
    }

    /// Moves sealed batches, and open batches older than `linger` or at `batch.size` (or all
    /// when flushing), from the accumulator into the sender's queues. An open batch of a
    /// partition with a backlog ([`is_backlogged`](Self::is_backlogged)) stays open and keeps
    /// filling until the partition can send (a response wakes the sender), as the Java
    /// client's accumulator keeps appending to the last batch of a deque it cannot drain; a
    /// batch held for `request.timeout` is taken in any case.
    pub(super) fn collect(&mut self, now: Instant) -> Option<Instant> {
        let linger = self.sh.config.linger;
        let batch_size = self.sh.config.batch_size;
        let hold_max = self.sh.config.request_timeout;
        self.sh.sender_idle.store(true, Ordering::Release);
        let doom = self.sh.txn.as_ref().and_then(|l| l.doom());
        let all = self.sh.send_now.swap(false, Ordering::AcqRel)
            || self.sh.flushing.load(Ordering::Acquire) > 0
            || self.sh.closing.load(Ordering::Acquire)
            || doom.is_some();
        let mut next = None;
        let mut taken: Vec<(Tp, OpenBatch)> = Vec::new();
        let budgets = self.leader_budgets();
        for topic in self.sh.acc.topics() {
            for pq in &topic.partitions {
                let mut inner = lock(&pq.inner);
                let tp: Tp = (topic.name.clone(), pq.partition);
                while let Some(b) = inner.sealed.pop_front() {
                    taken.push((tp.clone(), b));
                }
                if let Some(open) = &inner.open {
                    let due = open.created + linger;
                    let ready = due <= now || open.builder.estimated_size() >= batch_size;
                    let take = all
                        || (ready
                            && (!self.is_backlogged(&tp, now, &budgets)
                                || open.created + hold_max <= now));
                    if take {
                        if let Some(b) = inner.open.take() {
                            taken.push((tp, b));
                        }
                    } else if ready {
                        next = min_instant(next, open.created + hold_max);
                    } else {
                        next = min_instant(next, due);
                    }
                }
            }
        }
        if next.is_some() {
            // The linger timer will look again; appenders need not wake us.
            self.sh.sender_idle.store(false, Ordering::Release);
        }
        let fatal = self.sh.fatal_error().or(doom);
        for (tp, b) in taken {
            let order = self.next_order;
            self.next_order += 1;
            let sb = SBatch {
                shared: b.shared,
                absorbed: Vec::new(),
                records: b.builder.len() as u32,
                uncompressed: b.builder.estimated_size(),
                builder: Some(b.builder),
                bytes: None,
                order,
                created: b.created,
                _memory: Reservation {
                    sh: self.sh.clone(),
                    permits: b.permits,
                },
                base_seq: NO_SEQUENCE,
                producer_id: -1,
                ambiguous: false,
                last_error: None,
                expired: false,
                retries: 0,
            };
            if let Some(e) = &fatal {
                self.fail(&tp, sb, e.clone(), Persistence::NotPersisted);
            } else {
                self.part(&tp).queue.push_back(sb);
            }
        }
        next
    }

    /// Re-reads leaders (and partition counts) after the cluster's metadata changed.
    pub(super) fn refresh_leaders(&mut self) {
        let seen = self.sh.cluster.metadata_requests();
        let dirty = self.meta_dirty.swap(false, Ordering::AcqRel);
        if !dirty && seen == self.meta_seen {
            return;
        }
        self.meta_seen = seen;
        let meta = self.sh.cluster.metadata();
        for ((topic, partition), part) in self.parts.iter_mut() {
            part.leader = meta
                .partition(topic, *partition)
                .map(|p| p.leader)
                .filter(|l| *l >= 0);
        }
        for t in self.sh.acc.topics() {
            if let Some(tm) = meta.topics.get(&*t.name) {
                let count = tm
                    .partitions
                    .iter()
                    .map(|p| p.partition + 1)
                    .max()
                    .unwrap_or(0);
                if count > t.count() as i32 {
                    self.sh.acc.ensure(&t.name, count as u32);
                }
            }
        }
    }

    /// Asks for a metadata refresh of `topic` (one at a time, spaced by `retry.backoff`).
    pub(super) fn request_refresh(&self, topic: &Arc<str>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut topics: Vec<String> = self
            .parts
            .iter()
            .filter(|(_, p)| p.leader.is_none())
            .map(|((t, _), _)| t.to_string())
            .collect();
        topics.push(topic.to_string());
        topics.sort();
        topics.dedup();
        let sh = self.sh.clone();
        let dirty = self.meta_dirty.clone();
        let refreshing = self.refreshing.clone();
        let span = tracing::debug_span!("kafka.metadata", topics = topics.len());
        tokio::spawn(tracing::Instrument::instrument(
            async move {
                if let Err(e) = sh.cluster.refresh_topics(&topics).await {
                    tracing::debug!(error = %e, "producer metadata refresh failed");
                }
                dirty.store(true, Ordering::Release);
                sh.wake.notify_one();
                tokio::time::sleep(sh.config.retry_backoff).await;
                refreshing.store(false, Ordering::Release);
                sh.wake.notify_one();
            },
            span,
        ));
    }

    /// Whether the head batch of `tp` may be sent now.
    pub(super) fn sendable(
        &self,
        tp: &Tp,
        part: &SPart,
        now: Instant,
    ) -> std::result::Result<(), Option<Instant>> {
        let Some(front) = part.queue.front() else {
            return Err(None);
        };
        if let Some(at) = part.retry_at
            && at > now
        {
            return Err(Some(at));
        }
        if part.retrying && !part.in_flight.is_empty() {
            return Err(None);
        }
        if part.in_flight.len() >= self.sh.config.max_in_flight {
            return Err(None);
        }
        if let Some(idem) = &self.idem
            && !part.in_flight.is_empty()
            && !idem.is_confirmed(tp)
        {
            // No batch of this producer id acknowledged here yet: the broker has no state to
            // check sequences against and would write a later batch even if an earlier one in
            // flight fails (a cut connection, a retriable error), which then comes after it.
            // One batch at a time until the first acknowledgement.
            return Err(None);
        }
        if let Some(link) = &self.sh.txn
            && !link.lock().added.contains(tp)
        {
            // Not registered with the transaction yet (`txn_round` does it).
            return Err(None);
        }
        if let Some(idem) = &self.idem {
            if self.sh.fatal.get().is_some() {
                return Err(None);
            }
            if idem.bump_required {
                // Only resolve earlier ambiguous attempts, one at a time, on gap-free
                // partitions; everything else waits for the bump.
                let ok = front.base_seq != NO_SEQUENCE
                    && front.ambiguous
                    && !idem.has_gap(tp)
                    && part.in_flight.is_empty();
                if !ok {
                    return Err(None);
                }
            }
        }
        Ok(())
    }

    /// Groups sendable head batches by leader into requests and sends them.
    pub(super) fn send_ready(&mut self, now: Instant) -> Option<Instant> {
        let mut next = None;
        let max_request = self.sh.config.max_request_size;
        let max_in_flight = self.sh.config.max_in_flight;
        let caps = self.growth(now).caps;
        loop {
            if !caps.is_empty() {
                self.merge_sendable(now, &caps);
            }
            // One round: at most one request per broker, one batch per partition.
            let mut by_broker: HashMap<i32, (usize, Vec<Tp>)> = HashMap::new();
            let mut need_refresh: Option<Arc<str>> = None;
            let start = self.drain_start % self.parts.len().max(1);
            self.drain_start = self.drain_start.wrapping_add(1);
            for (tp, part) in self
                .parts
                .iter()
                .skip(start)
                .chain(self.parts.iter().take(start))
            {
                match self.sendable(tp, part, now) {
                    Ok(()) => {}
                    Err(at) => {
                        if let Some(at) = at {
                            next = min_instant(next, at);
                        }
                        continue;
                    }
                }
                let Some(leader) = part.leader else {
                    need_refresh = Some(tp.0.clone());
                    continue;
                };
                if self.broker_in_flight.get(&leader).copied().unwrap_or(0) >= max_in_flight {
                    continue;
                }
                let size = part
                    .queue
                    .front()
                    .map(|b| b.bytes.as_ref().map_or(b.uncompressed, Bytes::len))
                    .unwrap_or(0)
                    + REQUEST_OVERHEAD;
                let entry = by_broker.entry(leader).or_insert((0, Vec::new()));
                if !entry.1.is_empty() && entry.0 + size > max_request {
                    continue;
                }
                entry.0 += size;
                entry.1.push(tp.clone());
            }
            if let Some(t) = need_refresh {
                self.request_refresh(&t);
            }
            if by_broker.is_empty() {
                return next;
            }
            for (broker, (_, tps)) in by_broker {
                self.send_request(broker, tps);
            }
        }
    }

    /// Merges the queued batches of every partition whose head may be sent now and whose
    /// leader lets batches grow (`caps`, from [`growth`](Self::growth)).
    fn merge_sendable(&mut self, now: Instant, caps: &HashMap<i32, usize>) {
        let due: Vec<(Tp, usize, Instant)> = self
            .parts
            .iter()
            .filter(|(_, p)| p.queue.len() >= 2)
            .filter_map(|(tp, p)| {
                let leader = p.leader?;
                let cap = caps.get(&leader)?;
                let since = self.rates.get(&leader)?.since()?;
                if p.queue.front()?.created >= since {
                    return None;
                }
                self.sendable(tp, p, now).ok()?;
                Some((tp.clone(), *cap, since))
            })
            .collect();
        for (tp, cap, since) in due {
            self.merge_queued(&tp, cap, since);
        }
    }

    /// Numbers and builds the head batch of each partition and sends them in one request.
    pub(super) fn send_request(&mut self, broker: i32, tps: Vec<Tp>) {
        let mut batches = Vec::with_capacity(tps.len());
        for tp in tps {
            let Some(mut b) = self.part(&tp).queue.pop_front() else {
                continue;
            };
            if let Err(e) = self.prepare(&tp, &mut b) {
                self.fail(&tp, b, e, Persistence::NotPersisted);
                continue;
            }
            let order = b.order;
            self.part(&tp).in_flight.push(order);
            batches.push((tp, b));
        }
        if batches.is_empty() {
            return;
        }
        let acks = self.sh.config.acks;
        let timeout = self.sh.config.request_timeout;
        let mut topics: Vec<TopicProduceData> = Vec::new();
        let mut records = 0u64;
        for (tp, b) in &batches {
            records += u64::from(b.records);
            let data = PartitionProduceData::default()
                .with_index(tp.1)
                .with_records(b.bytes.clone());
            match topics.iter_mut().find(|t| *t.name.0 == *tp.0) {
                Some(t) => t.partition_data.push(data),
                None => topics.push(
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_string(tp.0.to_string())))
                        .with_partition_data(vec![data]),
                ),
            }
        }
        let request = ProduceRequest::default()
            .with_transactional_id(self.sh.txn.as_ref().map(|l| {
                crate::protocol::messages::TransactionalId(StrBytes::from_string(
                    l.transactional_id.to_string(),
                ))
            }))
            .with_acks(acks.as_i16())
            .with_timeout_ms(timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topic_data(topics);
        let id = self.next_id;
        self.next_id += 1;
        let cluster = self.sh.cluster.clone();
        let span = tracing::debug_span!(
            "produce",
            broker,
            request = id,
            batches = batches.len(),
            records
        );
        let fut = async move {
            let conn = cluster.connection_for_broker(broker).await?;
            let send = async {
                if acks == Acks::None {
                    conn.send_produce_no_response(request).await.map(|()| None)
                } else {
                    conn.send_produce(request).await.map(Some)
                }
            };
            match tokio::time::timeout(timeout + Duration::from_secs(1), send).await {
                Ok(r) => r,
                Err(_) => Err(Error::with_message(
                    ErrorKind::Timeout,
                    format!("no produce response within request.timeout ({timeout:?})"),
                )),
            }
            .map_err(|e| e.api(ApiKey::Produce).on_broker(broker))
        }
        .instrument(span);
        self.futures.push((id, Box::pin(fut)));
        *self.broker_in_flight.entry(broker).or_insert(0) += 1;
        self.sh.counters.request_started();
        self.requests.insert(
            id,
            InFlightReq {
                broker,
                batches,
                started: Instant::now(),
            },
        );
    }

    /// Numbers (idempotence) and builds a batch before a send.
    pub(super) fn prepare(&mut self, tp: &Tp, b: &mut SBatch) -> Result<()> {
        if let Some(builder) = b.builder.take() {
            let builder = match &mut self.idem {
                Some(idem) => {
                    b.base_seq = idem.assign(tp, b.records as i32);
                    b.producer_id = idem.id.producer_id;
                    builder
                        .with_producer(idem.id.producer_id, idem.id.epoch, b.base_seq)
                        .with_transactional(self.sh.txn.is_some())
                }
                None => builder,
            };
            let bytes = builder.build()?;
            tracing::debug!(
                topic = %tp.0,
                partition = tp.1,
                records = b.records,
                bytes = bytes.len(),
                merged = b.absorbed.len(),
                "batch built"
            );
            self.sh.counters.batch(bytes.len(), b.uncompressed);
            b.bytes = Some(bytes);
        } else if let Some(idem) = &mut self.idem
            && b.base_seq == NO_SEQUENCE
        {
            // Renumbered after an epoch bump.
            b.base_seq = idem.assign(tp, b.records as i32);
            b.producer_id = idem.id.producer_id;
            let mut raw = b.bytes.as_deref().unwrap_or_default().to_vec();
            set_producer(&mut raw, idem.id.producer_id, idem.id.epoch, b.base_seq)?;
            b.bytes = Some(Bytes::from(raw));
        }
        Ok(())
    }
}

/// Publishes a partition's growth cap to the `send` path (stored only when it changed, so
/// that appenders' cache line is left alone in the steady state).
fn set_grow_to(pq: &PartitionQueue, cap: usize) {
    if pq.grow_to.load(Ordering::Relaxed) != cap {
        pq.grow_to.store(cap, Ordering::Release);
    }
}

/// What [`Sender::growth`] found: which partitions may grow, and each leader's cap.
pub(super) struct Growth {
    growing: HashSet<Tp>,
    caps: HashMap<i32, usize>,
}

/// Whether a queued batch was never sent (no attempt, no sequence number, no error): only
/// such batches may be merged.
fn never_sent(b: &SBatch) -> bool {
    b.builder.is_some()
        && b.base_seq == NO_SEQUENCE
        && b.retries == 0
        && !b.ambiguous
        && !b.expired
        && b.last_error.is_none()
}

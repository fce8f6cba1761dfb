//! Decoding a fetch response's records for a partition (CRC, control and aborted batches,
//! read_committed visibility) and draining the buffer into `poll`: where a fetch response is
//! decoded.

use super::*;

pub(crate) enum Entry {
    Batch(RecordBatch),
    Skip(i64),
}

pub(crate) struct Current {
    pub(crate) records: Records,
    pub(crate) next_offset: i64,
    pub(crate) ts_type: crate::protocol::record::TimestampType,
    pub(crate) epoch: Option<i32>,
}

pub(crate) struct Chunk {
    pub(crate) entries: VecDeque<Entry>,
    pub(crate) current: Option<Current>,
    pub(crate) end_offset: i64,
    pub(crate) bytes: usize,
}

impl PartState {
    /// A corrupt batch or record at `pos`: the partition keeps `error` and stops there. The
    /// buffer is dropped and the version bumped (an answer in flight is stale), and the next
    /// fetch, once the application seeks past, starts from `pos`. One home for both places
    /// `drain` meets corruption (a record in a batch, a batch's records).
    fn fail_corrupt(&mut self, error: Error, buffered: &mut usize, pos: i64) {
        self.error = Some(error);
        self.release(buffered);
        self.version = next_version();
        self.fetch_offset = pos;
    }
}

/// Moves up to `max - out.len()` records of `part` to `out`. A corrupt batch sets the
/// partition's error (the partition then stays where it is until the application seeks).
pub(crate) fn drain(
    tp: &TopicPartition,
    part: &mut PartState,
    buffered: &mut usize,
    max: usize,
    out: &mut Vec<ConsumerRecord>,
) {
    let Some(mut pos) = part.position else { return };
    // Room for at most what the buffer spans (its offsets from the position on, capped by what
    // the poll still takes), reserved once: growing by doubling moved every record again.
    if let Some(last) = part.chunks.back() {
        let span = usize::try_from(last.end_offset.saturating_sub(pos)).unwrap_or(0);
        out.reserve(span.min(max.saturating_sub(out.len())));
    }
    while out.len() < max {
        let Some(chunk) = part.chunks.front_mut() else {
            break;
        };
        if let Some(cur) = &mut chunk.current {
            match cur.records.next() {
                Some(Ok(r)) => {
                    if r.offset < pos {
                        continue;
                    }
                    pos = r.offset + 1;
                    part.last_epoch = cur.epoch.or(part.last_epoch);
                    out.push(ConsumerRecord {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset: r.offset,
                        timestamp: r.timestamp,
                        timestamp_type: cur.ts_type,
                        key: r.key,
                        value: r.value,
                        headers: r.headers,
                        leader_epoch: cur.epoch,
                    });
                    continue;
                }
                Some(Err(e)) => {
                    part.fail_corrupt(e.on_partition(tp.topic(), tp.partition), buffered, pos);
                    break;
                }
                None => {
                    pos = pos.max(cur.next_offset);
                    chunk.current = None;
                    continue;
                }
            }
        }
        match chunk.entries.pop_front() {
            Some(Entry::Skip(next)) => pos = pos.max(next),
            Some(Entry::Batch(b)) => {
                if b.next_offset() <= pos {
                    continue;
                }
                match b.records() {
                    Ok(records) => {
                        let epoch = b.partition_leader_epoch();
                        chunk.current = Some(Current {
                            records,
                            next_offset: b.next_offset(),
                            ts_type: b.timestamp_type(),
                            epoch: (epoch >= 0).then_some(epoch),
                        })
                    }
                    Err(e) => {
                        part.fail_corrupt(e.on_partition(tp.topic(), tp.partition), buffered, pos);
                        break;
                    }
                }
            }
            None => {
                pos = pos.max(chunk.end_offset);
                let bytes = chunk.bytes;
                part.chunks.pop_front();
                part.bytes = part.bytes.saturating_sub(bytes);
                *buffered = buffered.saturating_sub(bytes);
            }
        }
    }
    // A partition whose buffer is exhausted continues from where the last chunk ended.
    part.position = Some(pos);
}

/// The decoded batch headers of one partition of a fetch response.
pub(crate) struct Decoded {
    pub(crate) entries: VecDeque<Entry>,
    pub(crate) end_offset: i64,
    pub(crate) bytes: usize,
}

/// Splits a partition's records into batches, dropping control batches and (for
/// read_committed) the batches of aborted transactions, using Kafka's algorithm: aborted
/// transactions are taken in first-offset order; a producer is "aborted" from its first
/// offset until its ABORT marker.
pub(crate) fn decode_partition(
    records: Option<&Bytes>,
    fetch_offset: i64,
    isolation: IsolationLevel,
    aborted: &[(i64, i64)],
) -> Result<Decoded> {
    let mut entries = VecDeque::new();
    let mut end_offset = fetch_offset;
    let bytes = records.map_or(0, |r| r.len());
    let Some(records) = records else {
        return Ok(Decoded {
            entries,
            end_offset,
            bytes,
        });
    };
    let mut aborted: Vec<(i64, i64)> = aborted.to_vec(); // (first_offset, producer_id)
    aborted.sort();
    let mut aborted = aborted.into_iter().peekable();
    let mut aborted_producers: HashSet<i64> = HashSet::new();
    for batch in RecordBatches::new(records.clone()) {
        let batch = batch?;
        let next = batch.next_offset();
        if next <= fetch_offset {
            continue;
        }
        end_offset = end_offset.max(next);
        if isolation == IsolationLevel::ReadCommitted {
            while let Some(&(first, pid)) = aborted.peek() {
                if first <= batch.last_offset() {
                    aborted_producers.insert(pid);
                    aborted.next();
                } else {
                    break;
                }
            }
        }
        if batch.is_control() {
            if isolation == IsolationLevel::ReadCommitted
                && let Ok(Some(c)) = batch.control_record()
                && c.control_type == ControlType::Abort
            {
                aborted_producers.remove(&batch.producer_id());
            }
            entries.push_back(Entry::Skip(next));
            continue;
        }
        if isolation == IsolationLevel::ReadCommitted
            && batch.is_transactional()
            && aborted_producers.contains(&batch.producer_id())
        {
            entries.push_back(Entry::Skip(next));
            continue;
        }
        entries.push_back(Entry::Batch(batch));
    }
    Ok(Decoded {
        entries,
        end_offset,
        bytes,
    })
}

/// Test access to [`decode_partition`] and [`drain`]: the records a consumer at `fetch_offset`
/// would see in `records`, and the position after them. `aborted` is the Fetch response's
/// aborted-transactions list as `(first_offset, producer_id)` pairs.
#[doc(hidden)]
pub fn visible_records(
    records: &Bytes,
    fetch_offset: i64,
    isolation: IsolationLevel,
    aborted: &[(i64, i64)],
) -> Result<(Vec<ConsumerRecord>, i64)> {
    let d = decode_partition(Some(records), fetch_offset, isolation, aborted)?;
    let tp = TopicPartition::new("t", 0);
    let mut part = PartState::new(StartOffset::Offset(fetch_offset));
    let mut buffered = d.bytes;
    part.bytes = d.bytes;
    part.chunks.push_back(Chunk {
        entries: d.entries,
        current: None,
        end_offset: d.end_offset,
        bytes: d.bytes,
    });
    let mut out = Vec::new();
    drain(&tp, &mut part, &mut buffered, usize::MAX, &mut out);
    if let Some(e) = part.error {
        return Err(e);
    }
    Ok((out, part.position.unwrap_or(fetch_offset)))
}

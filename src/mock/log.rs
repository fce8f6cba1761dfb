//! One partition's log: stored batches in the producer's encoding, indexed by base offset, with
//! the idempotent-producer state, the ongoing transactions and the aborted-transactions index.
//!
//! Every operation is O(log n) in the number of stored batches (plus the size of what it
//! returns); nothing walks the whole log.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::{Bytes, BytesMut};

use crate::KafkaCode;
use crate::protocol::record::{
    ControlType, RecordBatch, set_base_offset, set_partition_leader_epoch,
};

/// How many batches per producer and partition the broker remembers for duplicate detection
/// (Kafka's `NUM_BATCHES_TO_RETAIN`).
pub(crate) const PRODUCER_BATCHES_RETAINED: usize = 5;

// RecordBatch v2 header layout (Kafka's DefaultRecordBatch), for the LogAppendTime rewrite.
const OFF_CRC: usize = 17;
const OFF_ATTRIBUTES: usize = 21;
const OFF_MAX_TIMESTAMP: usize = 35;
const ATTR_LOG_APPEND_TIME: u8 = 0x08;

/// Turns a batch into a LogAppendTime batch stamped `now_ms` (attributes, max timestamp, CRC),
/// as a broker does for a topic with `message.timestamp.type=LogAppendTime`.
fn stamp_log_append_time(buf: &mut [u8], now_ms: i64) {
    if buf.len() < OFF_MAX_TIMESTAMP + 8 {
        return;
    }
    buf[OFF_ATTRIBUTES + 1] |= ATTR_LOG_APPEND_TIME;
    buf[OFF_MAX_TIMESTAMP..OFF_MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&buf[OFF_ATTRIBUTES..]);
    buf[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub bytes: Bytes,
    pub last_offset: i64,
}

#[derive(Debug, Clone)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

#[derive(Debug, Clone)]
struct ProducerEntry {
    epoch: i16,
    recent: VecDeque<BatchMeta>,
    /// First offset of the producer's ongoing transaction on this partition.
    txn_first: Option<i64>,
}

/// An aborted transaction as Fetch reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Aborted {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// What a successful append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    pub base_offset: i64,
    /// The batch was an exact retry of one already stored; nothing was written.
    pub duplicate: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Log {
    batches: BTreeMap<i64, Stored>,
    log_start: i64,
    next_offset: i64,
    producers: HashMap<i64, ProducerEntry>,
    /// first offset → producer id, for the last stable offset.
    ongoing: BTreeMap<i64, i64>,
    /// marker offset (the last offset of the aborted transaction) → aborted transaction.
    aborted: BTreeMap<i64, Aborted>,
    /// running maximum timestamp → first base offset where it was reached.
    ts_index: BTreeMap<i64, i64>,
    running_max_ts: i64,
    bytes: usize,
}

fn seq_add(seq: i32, delta: i32) -> i32 {
    // Sequences wrap at i32::MAX back to 0.
    let s = i64::from(seq) + i64::from(delta);
    if s > i64::from(i32::MAX) {
        (s - i64::from(i32::MAX) - 1) as i32
    } else {
        s as i32
    }
}

fn in_sequence(last: i32, next: i32) -> bool {
    next == last.wrapping_add(1) || (next == 0 && last == i32::MAX)
}

impl Log {
    pub fn new() -> Log {
        Log {
            running_max_ts: i64::MIN,
            ..Log::default()
        }
    }

    pub fn log_start(&self) -> i64 {
        self.log_start
    }

    /// The high watermark (every write is fully replicated in the mock).
    pub fn high_watermark(&self) -> i64 {
        self.next_offset
    }

    /// The last stable offset: the first offset of the oldest ongoing transaction, or the high
    /// watermark.
    pub fn last_stable_offset(&self) -> i64 {
        self.ongoing
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_offset)
    }

    /// Appends one validated batch. Idempotent batches go through Kafka's sequence checks.
    ///
    /// `log_append_time`: the topic uses LogAppendTime; the batch is stamped with this time.
    pub fn append(
        &mut self,
        batch: &RecordBatch,
        leader_epoch: i32,
        log_append_time: Option<i64>,
    ) -> std::result::Result<Appended, KafkaCode> {
        let pid = batch.producer_id();
        let epoch = batch.producer_epoch();
        let first_seq = batch.base_sequence();
        let last_seq = seq_add(first_seq, batch.last_offset_delta());
        if pid >= 0 {
            let entry = self.producers.get(&pid);
            if let Some(e) = entry {
                if epoch < e.epoch {
                    return Err(KafkaCode::InvalidProducerEpoch);
                }
                if epoch == e.epoch
                    && let Some(dup) = e
                        .recent
                        .iter()
                        .find(|m| m.first_seq == first_seq && m.last_seq == last_seq)
                {
                    return Ok(Appended {
                        base_offset: dup.base_offset,
                        duplicate: true,
                    });
                }
            }
            if first_seq >= 0 || entry.is_some() {
                match entry {
                    // No state for this producer here yet. Like Kafka (2.5 on), an idempotent
                    // batch is accepted with any sequence (there is nothing to compare it with;
                    // the producer must not rely on a rejection here). A transactional one
                    // must start at 0 (Kafka 4's transactions v2 rule).
                    None => {
                        if first_seq != 0 && batch.is_transactional() {
                            return Err(KafkaCode::OutOfOrderSequenceNumber);
                        }
                    }
                    Some(e) if e.epoch != epoch => {
                        if first_seq != 0 {
                            return Err(KafkaCode::OutOfOrderSequenceNumber);
                        }
                    }
                    Some(e) => match e.recent.back() {
                        None if first_seq > 0 => {
                            return Err(KafkaCode::OutOfOrderSequenceNumber);
                        }
                        Some(last) if first_seq >= 0 && !in_sequence(last.last_seq, first_seq) => {
                            return Err(KafkaCode::OutOfOrderSequenceNumber);
                        }
                        _ => {}
                    },
                }
            }
        }
        let base = self.next_offset;
        let mut buf = BytesMut::from(&batch.as_bytes()[..]);
        if set_base_offset(&mut buf, base).is_err()
            || set_partition_leader_epoch(&mut buf, leader_epoch).is_err()
        {
            return Err(KafkaCode::CorruptMessage);
        }
        let mut max_ts = batch.max_timestamp();
        if let Some(now) = log_append_time {
            stamp_log_append_time(&mut buf, now);
            max_ts = now;
        }
        let last_offset = base + i64::from(batch.last_offset_delta());
        self.store(buf.freeze(), base, last_offset, max_ts);
        if pid >= 0 {
            let e = self.producers.entry(pid).or_insert(ProducerEntry {
                epoch,
                recent: VecDeque::new(),
                txn_first: None,
            });
            if e.epoch != epoch {
                e.epoch = epoch;
                e.recent.clear();
            }
            if first_seq >= 0 {
                e.recent.push_back(BatchMeta {
                    first_seq,
                    last_seq,
                    base_offset: base,
                });
                while e.recent.len() > PRODUCER_BATCHES_RETAINED {
                    e.recent.pop_front();
                }
            }
            if batch.is_transactional() && e.txn_first.is_none() {
                e.txn_first = Some(base);
                self.ongoing.insert(base, pid);
            }
        }
        Ok(Appended {
            base_offset: base,
            duplicate: false,
        })
    }

    fn store(&mut self, bytes: Bytes, base: i64, last_offset: i64, max_ts: i64) {
        self.bytes += bytes.len();
        self.batches.insert(base, Stored { bytes, last_offset });
        self.next_offset = last_offset + 1;
        if max_ts > self.running_max_ts {
            self.running_max_ts = max_ts;
            self.ts_index.insert(max_ts, base);
        }
    }

    /// Writes a commit or abort marker for `producer_id` and closes its transaction here.
    pub fn write_marker(
        &mut self,
        producer_id: i64,
        epoch: i16,
        control: ControlType,
        coordinator_epoch: i32,
        leader_epoch: i32,
        now_ms: i64,
    ) {
        let base = self.next_offset;
        let Ok(bytes) = crate::protocol::record::encode_transaction_marker(
            base,
            producer_id,
            epoch,
            now_ms,
            control,
            coordinator_epoch,
        ) else {
            return;
        };
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = set_partition_leader_epoch(&mut buf, leader_epoch);
        self.store(buf.freeze(), base, base, now_ms);
        let e = self.producers.entry(producer_id).or_insert(ProducerEntry {
            epoch,
            recent: VecDeque::new(),
            txn_first: None,
        });
        if epoch > e.epoch {
            e.epoch = epoch;
            e.recent.clear();
        }
        if let Some(first) = e.txn_first.take() {
            self.ongoing.remove(&first);
            if control == ControlType::Abort {
                self.aborted.insert(
                    base,
                    Aborted {
                        producer_id,
                        first_offset: first,
                    },
                );
            }
        }
    }

    /// The batches from `offset` (the batch holding it first), stopping before `upper`, within
    /// `max_bytes` (at least one batch when `at_least_one`). Returns the batches and the offset
    /// after the last one returned.
    pub fn read(
        &self,
        offset: i64,
        upper: i64,
        max_bytes: usize,
        at_least_one: bool,
        out: &mut Vec<Bytes>,
    ) -> (usize, i64) {
        let start = match self.batches.range(..=offset).next_back() {
            Some((&base, b)) if b.last_offset >= offset => base,
            _ => offset,
        };
        let mut total = 0usize;
        let mut end = offset;
        for (&base, b) in self.batches.range(start..) {
            if base >= upper {
                break;
            }
            let n = b.bytes.len();
            if total + n > max_bytes && !(at_least_one && total == 0) {
                break;
            }
            total += n;
            end = b.last_offset + 1;
            out.push(b.bytes.clone());
        }
        (total, end)
    }

    /// Aborted transactions overlapping `[from, to)`, ordered by first offset.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<Aborted> {
        let mut v: Vec<Aborted> = self
            .aborted
            .range(from..)
            .map(|(_, a)| *a)
            .filter(|a| a.first_offset < to)
            .collect();
        v.sort_by_key(|a| a.first_offset);
        v
    }

    /// Moves the log start offset to `offset` (DeleteRecords), dropping whole batches below it.
    pub fn delete_before(&mut self, offset: i64) {
        if offset <= self.log_start {
            return;
        }
        self.log_start = offset;
        while let Some(entry) = self.batches.first_entry() {
            if entry.get().last_offset < offset {
                let b = entry.remove();
                self.bytes -= b.bytes.len();
            } else {
                break;
            }
        }
        while let Some(entry) = self.aborted.first_entry() {
            if *entry.key() < offset {
                entry.remove();
            } else {
                break;
            }
        }
    }

    /// Truncates the log from `offset` on (as a replica does after an unclean leader election
    /// elected a replica with a shorter log), at a batch boundary: the batch holding `offset`
    /// goes too. Returns the new log end. Transactions and producer batches above it are
    /// forgotten.
    pub fn truncate_to(&mut self, offset: i64) -> i64 {
        let cut = match self.batches.range(..offset).next_back() {
            Some((&base, b)) if b.last_offset >= offset => base,
            _ => offset,
        };
        let cut = cut.max(self.log_start).min(self.next_offset);
        for b in self.batches.split_off(&cut).values() {
            self.bytes -= b.bytes.len();
        }
        self.next_offset = cut;
        self.ongoing.retain(|&first, _| first < cut);
        self.aborted.retain(|&marker, _| marker < cut);
        for e in self.producers.values_mut() {
            e.recent.retain(|m| m.base_offset < cut);
            if e.txn_first.is_some_and(|f| f >= cut) {
                e.txn_first = None;
            }
        }
        self.ts_index.retain(|_, base| *base < cut);
        self.running_max_ts = self
            .ts_index
            .keys()
            .next_back()
            .copied()
            .unwrap_or(i64::MIN);
        cut
    }

    /// The first offset whose timestamp is at least `ts`, with that record's timestamp.
    pub fn offset_for_timestamp(&self, ts: i64) -> Option<(i64, i64)> {
        let (_, &base) = self.ts_index.range(ts..).next()?;
        let (&base, b) = self.batches.range(base.max(self.log_start)..).next()?;
        let found = RecordBatch::decode(b.bytes.clone())
            .ok()
            .and_then(|batch| batch.records().ok())
            .and_then(|recs| {
                recs.filter_map(|r| r.ok())
                    .find(|r| r.timestamp >= ts && r.offset >= self.log_start)
                    .map(|r| (r.offset, r.timestamp))
            });
        Some(found.unwrap_or((base.max(self.log_start), ts)))
    }

    /// The offset and timestamp of the record with the largest timestamp (ListOffsets -3).
    pub fn max_timestamp_offset(&self) -> Option<(i64, i64)> {
        let (&ts, _) = self.ts_index.iter().next_back()?;
        self.offset_for_timestamp(ts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::record::BatchBuilder;

    fn batch(pid: i64, epoch: i16, seq: i32, n: usize, txn: bool) -> RecordBatch {
        let mut b = BatchBuilder::new()
            .with_producer(pid, epoch, seq)
            .with_transactional(txn);
        for i in 0..n {
            b.append(1000 + i as i64, None, Some(b"v"), &[]).unwrap();
        }
        RecordBatch::decode(b.build().unwrap()).unwrap()
    }

    #[test]
    fn idempotence_rules() {
        let mut log = Log::new();
        // No state yet: a transactional batch must start at 0, an idempotent one may not.
        assert_eq!(
            log.append(&batch(9, 0, 3, 2, true), 0, None),
            Err(KafkaCode::OutOfOrderSequenceNumber)
        );
        let unknown = log.append(&batch(8, 0, 3, 2, false), 0, None).unwrap();
        assert_eq!(unknown.base_offset, 0);
        log = Log::new();
        let a = log.append(&batch(7, 0, 0, 2, false), 0, None).unwrap();
        assert_eq!(a.base_offset, 0);
        let b = log.append(&batch(7, 0, 2, 3, false), 0, None).unwrap();
        assert_eq!(b.base_offset, 2);
        // Exact retry of the first batch: its original offset, nothing written.
        let d = log.append(&batch(7, 0, 0, 2, false), 0, None).unwrap();
        assert_eq!((d.base_offset, d.duplicate), (0, true));
        assert_eq!(log.high_watermark(), 5);
        assert_eq!(
            log.append(&batch(7, 0, 9, 1, false), 0, None),
            Err(KafkaCode::OutOfOrderSequenceNumber)
        );
        // New epoch must start at 0; then the old epoch is stale.
        assert_eq!(
            log.append(&batch(7, 1, 5, 1, false), 0, None),
            Err(KafkaCode::OutOfOrderSequenceNumber)
        );
        log.append(&batch(7, 1, 0, 1, false), 0, None).unwrap();
        assert_eq!(
            log.append(&batch(7, 0, 5, 1, false), 0, None),
            Err(KafkaCode::InvalidProducerEpoch)
        );
    }

    #[test]
    fn log_append_time_rewrites_timestamp_type_and_crc() {
        let mut log = Log::new();
        log.append(&batch(-1, -1, -1, 2, false), 0, Some(777_000))
            .unwrap();
        let mut out = Vec::new();
        log.read(0, i64::MAX, usize::MAX, true, &mut out);
        let b = RecordBatch::decode(out.remove(0)).unwrap();
        assert_eq!(
            b.timestamp_type(),
            crate::protocol::record::TimestampType::LogAppendTime
        );
        assert_eq!(b.max_timestamp(), 777_000);
        let ts: Vec<i64> = b.records().unwrap().map(|r| r.unwrap().timestamp).collect();
        assert_eq!(ts, vec![777_000, 777_000]);
    }

    #[test]
    fn transactions_lso_and_aborted_index() {
        let mut log = Log::new();
        log.append(&batch(-1, -1, -1, 2, false), 0, None).unwrap();
        log.append(&batch(9, 0, 0, 3, true), 0, None).unwrap();
        assert_eq!(log.last_stable_offset(), 2);
        log.write_marker(9, 0, ControlType::Abort, 0, 0, 0);
        assert_eq!(log.last_stable_offset(), 6);
        assert_eq!(
            log.aborted_between(0, 6),
            vec![Aborted {
                producer_id: 9,
                first_offset: 2
            }]
        );
        assert!(log.aborted_between(6, 10).is_empty());
        let mut out = Vec::new();
        let (_, end) = log.read(3, i64::MAX, 1 << 20, true, &mut out);
        assert_eq!((out.len(), end), (2, 6));
    }
}

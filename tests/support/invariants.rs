//! The invariant checker shared by every fault test (issue 22, item 1).
//!
//! A test records a [`History`]: what producers sent and what each send ended with (a delivery
//! report or a typed [`ProduceError`](rekafka::producer::ProduceError) with its
//! [`Persistence`]), which records belonged to aborted transactions, what handlers finished,
//! the final log (read back by a fresh consumer) and the committed offsets, and how long the
//! client took to make progress after each fault healed. [`History::check`] turns it into a
//! [`Report`] naming each violated invariant with examples:
//!
//! * **I1** no acknowledged record is missing from the log (and, where the delivery report gave
//!   an offset, the log holds that record at that offset);
//! * **I2** no record appears twice (checked when the history says idempotence or transactions
//!   were on; a record failed as `PossiblyPersisted` may appear once, never twice);
//! * **I3** each producer's records appear in each partition in the order it sent them;
//! * **I4** a `read_committed` log holds no record of an aborted transaction;
//! * **I5** no committed offset is beyond the last record the handler finished: every record
//!   below a partition's committed offset was handled;
//! * **I6** the client made progress within the stated bound after each fault healed;
//! * **I7** every send ended in a delivery report or a typed error (none silent), and no record
//!   reported `NotPersisted` is in the log; the log holds no record nobody sent.
//!
//! Record identity travels in the value: [`RecordId::encode`] writes `producer:seq` (and
//! padding), [`RecordId::decode`] reads it back.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

pub use rekafka::producer::Persistence;

/// Which record: the producer (a number the test picks) and its send sequence number (0, 1, ...
/// in send order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    /// The producer.
    pub producer: u32,
    /// The send sequence number.
    pub seq: u64,
}

impl RecordId {
    /// A record id.
    pub fn new(producer: u32, seq: u64) -> RecordId {
        RecordId { producer, seq }
    }

    /// The value carrying this id, padded with `.` to at least `size` bytes.
    pub fn encode(&self, size: usize) -> Vec<u8> {
        let mut v = format!("{}:{}:", self.producer, self.seq).into_bytes();
        if v.len() < size {
            v.resize(size, b'.');
        }
        v
    }

    /// The id a value carries, if it is one [`encode`](Self::encode) made.
    pub fn decode(value: &[u8]) -> Option<RecordId> {
        let s = std::str::from_utf8(value).ok()?;
        let mut it = s.splitn(3, ':');
        let producer = it.next()?.parse().ok()?;
        let seq = it.next()?.parse().ok()?;
        it.next()?;
        Some(RecordId { producer, seq })
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}#{}", self.producer, self.seq)
    }
}

/// A topic-partition.
pub type Tp = (String, i32);

/// A delivery report: the record is acknowledged.
#[derive(Debug, Clone)]
pub struct Acked {
    /// The record.
    pub id: RecordId,
    /// Where the producer wrote it.
    pub tp: Tp,
    /// The offset the report gave; `None` when the record is expected in `tp` at an unknown
    /// offset (e.g. the output of a copier).
    pub offset: Option<i64>,
}

/// A typed failure reported for a send.
#[derive(Debug, Clone)]
pub struct Failed {
    /// The record.
    pub id: RecordId,
    /// Where it was sent.
    pub tp: Tp,
    /// Whether it may have been written.
    pub persistence: Persistence,
    /// The error, for the report.
    pub error: String,
}

/// One record of the final log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    /// Where it is.
    pub tp: Tp,
    /// Its offset.
    pub offset: i64,
    /// The id its value carries; `None` if the value is not one of ours.
    pub id: Option<RecordId>,
}

/// The progress a client made after a fault healed.
#[derive(Debug, Clone)]
pub struct Progress {
    /// What was measured ("producer after the proxy healed").
    pub what: String,
    /// The stated bound.
    pub bound: Duration,
    /// How long it took; `None` if it never progressed.
    pub took: Option<Duration>,
}

/// Everything a fault test observed.
#[derive(Debug, Default, Clone)]
pub struct History {
    /// Idempotence or transactions were on: no duplicates allowed (I2).
    pub no_duplicates: bool,
    /// Check the per-partition order of each producer's records (I3).
    pub check_order: bool,
    /// The log was read with `read_committed` (I4 applies).
    pub read_committed: bool,
    /// Every record the producers handed to `send`.
    pub sent: Vec<(RecordId, Tp)>,
    /// Delivery reports.
    pub acked: Vec<Acked>,
    /// Typed failures.
    pub failed: Vec<Failed>,
    /// Records that belonged to transactions that were aborted (or whose outcome the
    /// application was told is "aborted").
    pub aborted: Vec<RecordId>,
    /// The final log of the topics checked (read back from the beginning).
    pub log: Vec<LogEntry>,
    /// The log of the topics the handlers consumed, if it is not `log` (for I5).
    pub input_log: Option<Vec<LogEntry>>,
    /// The records (topic, partition, offset) whose handler finished (succeeded or recovered).
    pub handled: Vec<(Tp, i64)>,
    /// The group's committed offsets at the end.
    pub committed: BTreeMap<Tp, i64>,
    /// Progress after each fault healed.
    pub progress: Vec<Progress>,
}

/// How many examples a report keeps per invariant.
const EXAMPLES: usize = 8;

/// The violations found, per invariant.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Per invariant ("I1" ... "I7"): how many violations, and the first few.
    pub violations: BTreeMap<&'static str, (usize, Vec<String>)>,
    /// Counts for the log (records checked etc.), for the report.
    pub stats: BTreeMap<&'static str, usize>,
}

impl Report {
    fn add(&mut self, inv: &'static str, example: impl FnOnce() -> String) {
        let e = self.violations.entry(inv).or_default();
        e.0 += 1;
        if e.1.len() < EXAMPLES {
            e.1.push(example());
        }
    }

    /// No invariant is violated.
    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether `inv` ("I1" ...) is violated.
    pub fn violated(&self, inv: &str) -> bool {
        self.violations.contains_key(inv)
    }

    /// Panics with the report unless it is clean.
    #[track_caller]
    pub fn assert_clean(&self, scenario: &str) {
        assert!(self.is_clean(), "{scenario}: invariants violated\n{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.violations.is_empty() {
            write!(f, "clean")?;
        }
        for (inv, (n, ex)) in &self.violations {
            writeln!(f, "{inv}: {n} violation(s)")?;
            for e in ex {
                writeln!(f, "    {e}")?;
            }
        }
        write!(f, " {:?}", self.stats)
    }
}

impl History {
    /// Checks every invariant the history has data for.
    pub fn check(&self) -> Report {
        let mut r = Report::default();
        r.stats.insert("sent", self.sent.len());
        r.stats.insert("acked", self.acked.len());
        r.stats.insert("failed", self.failed.len());
        r.stats.insert("log", self.log.len());

        // Where each id is in the log.
        let mut positions: HashMap<RecordId, Vec<(&Tp, i64)>> = HashMap::new();
        let mut at: HashMap<(&Tp, i64), Option<RecordId>> = HashMap::new();
        for e in &self.log {
            if let Some(id) = e.id {
                positions.entry(id).or_default().push((&e.tp, e.offset));
            }
            if at.insert((&e.tp, e.offset), e.id).is_some() {
                r.add("I2", || {
                    format!("offset {}-{}@{} read twice", e.tp.0, e.tp.1, e.offset)
                });
            }
        }

        // I1: every acknowledged record is in the log, at its offset.
        for a in &self.acked {
            let found = positions.get(&a.id).map(Vec::as_slice).unwrap_or(&[]);
            if !found.iter().any(|(tp, _)| **tp == a.tp) {
                r.add("I1", || {
                    format!(
                        "{} acknowledged at {}-{}@{:?} is missing",
                        a.id, a.tp.0, a.tp.1, a.offset
                    )
                });
                continue;
            }
            if let Some(off) = a.offset {
                match at.get(&(&a.tp, off)) {
                    Some(Some(id)) if *id == a.id => {}
                    other => r.add("I1", || {
                        format!(
                            "{} acknowledged at {}-{}@{off}, the log has {other:?} there",
                            a.id, a.tp.0, a.tp.1
                        )
                    }),
                }
            }
        }

        // I2: no duplicates.
        if self.no_duplicates {
            for (id, found) in &positions {
                if found.len() > 1 {
                    r.add("I2", || format!("{id} at {found:?}"));
                }
            }
        }

        // I3: per (topic, partition, producer), sequence numbers increase with the offset.
        if self.check_order {
            let mut last: HashMap<(&Tp, u32), (u64, i64)> = HashMap::new();
            let mut log: Vec<&LogEntry> = self.log.iter().collect();
            log.sort_by(|a, b| (&a.tp, a.offset).cmp(&(&b.tp, b.offset)));
            for e in log {
                let Some(id) = e.id else { continue };
                let key = (&e.tp, id.producer);
                if let Some((seq, off)) = last.get(&key) {
                    if id.seq <= *seq {
                        r.add("I3", || {
                            format!(
                                "{}-{}: p{} #{} at {off} before #{} at {}",
                                e.tp.0, e.tp.1, id.producer, seq, id.seq, e.offset
                            )
                        });
                    }
                }
                last.insert(key, (id.seq, e.offset));
            }
            // The delivery reports agree with the send order too.
            let mut acked: Vec<&Acked> = self.acked.iter().filter(|a| a.offset.is_some()).collect();
            acked.sort_by_key(|a| a.id);
            let mut last: HashMap<(&Tp, u32), (u64, i64)> = HashMap::new();
            for a in acked {
                let off = a.offset.unwrap_or_default();
                let key = (&a.tp, a.id.producer);
                if let Some((seq, prev)) = last.get(&key) {
                    if off <= *prev {
                        r.add("I3", || {
                            format!(
                                "reports: {}-{}: p{} #{seq} at {prev}, #{} at {off}",
                                a.tp.0, a.tp.1, a.id.producer, a.id.seq
                            )
                        });
                    }
                }
                last.insert(key, (a.id.seq, off));
            }
        }

        // I4: read_committed shows nothing aborted.
        if self.read_committed {
            for id in &self.aborted {
                if let Some(found) = positions.get(id) {
                    r.add("I4", || format!("aborted {id} read at {found:?}"));
                }
            }
        }

        // I5: every record below a committed offset was handled.
        if !self.committed.is_empty() {
            let handled: HashSet<(&Tp, i64)> =
                self.handled.iter().map(|(tp, o)| (tp, *o)).collect();
            let input = self.input_log.as_ref().unwrap_or(&self.log);
            let mut n = 0;
            for e in input {
                if let Some(c) = self.committed.get(&e.tp) {
                    if e.offset < *c {
                        n += 1;
                        if !handled.contains(&(&e.tp, e.offset)) {
                            r.add("I5", || {
                                format!(
                                    "{}-{}@{} is below the committed offset {c} but was not handled",
                                    e.tp.0, e.tp.1, e.offset
                                )
                            });
                        }
                    }
                }
            }
            r.stats.insert("below committed", n);
        }

        // I6: progress within the bound.
        for p in &self.progress {
            match p.took {
                Some(t) if t <= p.bound => {}
                Some(t) => r.add("I6", || format!("{}: {t:?} > {:?}", p.what, p.bound)),
                None => r.add("I6", || {
                    format!("{}: no progress (bound {:?})", p.what, p.bound)
                }),
            }
        }

        // I7: every send has an outcome; NotPersisted is not in the log; no phantom records.
        let mut outcome: HashSet<RecordId> = self.acked.iter().map(|a| a.id).collect();
        for f in &self.failed {
            outcome.insert(f.id);
            if f.persistence == Persistence::NotPersisted {
                if let Some(found) = positions.get(&f.id) {
                    if found.iter().any(|(tp, _)| **tp == f.tp) {
                        r.add("I7", || {
                            format!(
                                "{} failed as NotPersisted ({}) but is at {found:?}",
                                f.id, f.error
                            )
                        });
                    }
                }
            }
        }
        for (id, _) in &self.sent {
            if !outcome.contains(id) {
                r.add("I7", || format!("{id} was sent and never reported"));
            }
        }
        if !self.sent.is_empty() {
            let sent: HashSet<RecordId> = self.sent.iter().map(|(id, _)| *id).collect();
            for e in &self.log {
                match e.id {
                    Some(id) if sent.contains(&id) => {}
                    _ => r.add("I7", || {
                        format!(
                            "{}-{}@{} holds {:?}, which nobody sent",
                            e.tp.0, e.tp.1, e.offset, e.id
                        )
                    }),
                }
            }
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        ("t".to_owned(), p)
    }

    /// Producer 1 sends `n` records round-robin over 2 partitions; all acknowledged; the log
    /// holds them in order.
    fn clean(n: u64) -> History {
        let mut h = History {
            no_duplicates: true,
            check_order: true,
            ..History::default()
        };
        let mut next = [0i64; 2];
        for s in 0..n {
            let id = RecordId::new(1, s);
            let p = (s % 2) as i32;
            let off = next[p as usize];
            next[p as usize] += 1;
            h.sent.push((id, tp(p)));
            h.acked.push(Acked {
                id,
                tp: tp(p),
                offset: Some(off),
            });
            h.log.push(LogEntry {
                tp: tp(p),
                offset: off,
                id: Some(id),
            });
        }
        h
    }

    #[test]
    fn ids_round_trip() {
        let id = RecordId::new(7, 123_456);
        assert_eq!(RecordId::decode(&id.encode(100)), Some(id));
        assert_eq!(id.encode(100).len(), 100);
        assert_eq!(RecordId::decode(b"garbage"), None);
    }

    #[test]
    fn a_clean_history_is_clean() {
        let r = clean(20).check();
        assert!(r.is_clean(), "{r}");
    }

    #[test]
    fn catches_a_loss() {
        let mut h = clean(20);
        h.log.remove(5);
        let r = h.check();
        assert!(r.violated("I1"), "{r}");
        assert_eq!(r.violations["I1"].0, 1);
        assert!(!r.violated("I2") && !r.violated("I3"), "{r}");
    }

    #[test]
    fn catches_a_duplicate() {
        let mut h = clean(20);
        // The retried batch landed twice: record #4 again at the end of partition 0.
        h.log.push(LogEntry {
            tp: tp(0),
            offset: 10,
            id: Some(RecordId::new(1, 4)),
        });
        let r = h.check();
        assert!(r.violated("I2"), "{r}");
        // A duplicate later in the log is also out of order.
        assert!(r.violated("I3"), "{r}");
        // Without idempotence, duplicates are allowed.
        h.no_duplicates = false;
        assert!(!h.check().violated("I2"));
    }

    #[test]
    fn catches_a_reorder() {
        let mut h = clean(20);
        // Records #2 and #4 (partition 0, offsets 1 and 2) swapped in the log.
        h.log[2].id = Some(RecordId::new(1, 4));
        h.log[4].id = Some(RecordId::new(1, 2));
        let r = h.check();
        assert!(r.violated("I3"), "{r}");
        // The reports still place #2 at offset 1: the log disagrees (I1 names the offset).
        assert!(r.violated("I1"), "{r}");
        assert!(!r.violated("I2"), "{r}");
    }

    #[test]
    fn catches_aborted_reads_commits_past_handling_slow_progress_and_silence() {
        let mut h = clean(10);
        h.read_committed = true;
        h.aborted.push(RecordId::new(1, 3));
        h.committed.insert(tp(0), 3);
        h.handled = vec![(tp(0), 0), (tp(0), 1)];
        h.progress.push(Progress {
            what: "producer".into(),
            bound: Duration::from_secs(1),
            took: Some(Duration::from_secs(2)),
        });
        h.sent.push((RecordId::new(1, 10), tp(0)));
        h.failed.push(Failed {
            id: RecordId::new(1, 1),
            tp: tp(1),
            persistence: Persistence::NotPersisted,
            error: "NOT_ENOUGH_REPLICAS".into(),
        });
        let r = h.check();
        for inv in ["I4", "I5", "I6", "I7"] {
            assert!(r.violated(inv), "{inv}: {r}");
        }
        // I7 twice: #10 silent, #1 "not persisted" but in the log.
        assert_eq!(r.violations["I7"].0, 2, "{r}");
        // A possibly persisted record may be in the log once.
        let mut h = clean(10);
        h.failed.push(Failed {
            id: RecordId::new(1, 1),
            tp: tp(1),
            persistence: Persistence::PossiblyPersisted,
            error: "timeout".into(),
        });
        assert!(h.check().is_clean());
    }
}

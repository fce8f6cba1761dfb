//! The consumer group protocol of KIP-848 (ConsumerGroupHeartbeat), as Kafka's group
//! coordinator runs it: a group epoch bumped by every membership, subscription or metadata
//! change; a target assignment computed by a broker-side assignor (`uniform`, the default, or
//! `range`); and per member an incremental reconciliation towards its target: partitions to
//! give up are revoked first (the member keeps its epoch until its heartbeat no longer lists
//! them), and a partition is handed to a new owner only once no other member still owns it.
//!
//! Assignments are kept by topic name; the handler turns them into topic ids.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use regex::Regex;

use crate::KafkaCode;

/// Topic name → partitions.
pub(crate) type Assignment = BTreeMap<String, BTreeSet<i32>>;

/// The member epoch of a static member that left for now (KIP-848).
pub(crate) const STATIC_LEAVE_EPOCH: i32 = -2;
/// The member epoch of a member leaving the group.
pub(crate) const LEAVE_EPOCH: i32 = -1;

/// The assignors the mock serves, as Kafka's `group.consumer.assignors` (first: default).
pub(crate) const ASSIGNORS: &[&str] = &["uniform", "range"];

#[derive(Debug, Clone)]
pub(crate) struct CgMember {
    pub instance_id: Option<String>,
    pub client_id: String,
    pub rack_id: Option<String>,
    /// The member epoch (`STATIC_LEAVE_EPOCH` while a static member is away).
    pub epoch: i32,
    pub previous_epoch: i32,
    /// The epoch before a static leave, restored when the instance comes back.
    pub epoch_before_leave: i32,
    pub topics: Vec<String>,
    pub regex: Option<String>,
    pub assignor: Option<String>,
    pub rebalance_timeout: Duration,
    pub last_seen: Instant,
    /// What the member was told it owns.
    pub assigned: Assignment,
    /// Partitions it must give up before its epoch moves on.
    pub revoking: Assignment,
    pub revoking_since: Option<Instant>,
}

impl CgMember {
    pub fn new(client_id: String, now: Instant) -> CgMember {
        CgMember {
            instance_id: None,
            client_id,
            rack_id: None,
            epoch: 0,
            previous_epoch: 0,
            epoch_before_leave: 0,
            topics: Vec::new(),
            regex: None,
            assignor: None,
            rebalance_timeout: Duration::from_secs(300),
            last_seen: now,
            assigned: Assignment::new(),
            revoking: Assignment::new(),
            revoking_since: None,
        }
    }
}

/// A consumer-protocol group's membership (its committed offsets live in the enclosing
/// [`Group`](super::group::Group)).
#[derive(Debug, Default)]
pub(crate) struct ConsumerGroup {
    pub epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, CgMember>,
    /// Instance id → member id.
    pub static_members: HashMap<String, String>,
    /// Member id → target assignment.
    pub target: BTreeMap<String, Assignment>,
    /// The subscribed topics and their partition counts at the last target computation.
    pub subscribed: BTreeMap<String, i32>,
    /// The assignor of the last target computation.
    pub assignor: String,
    /// The target must be computed again (membership or subscription changed).
    pub dirty: bool,
}

/// Compiles a KIP-848 subscription regex (matched against whole topic names).
pub(crate) fn compile_regex(re: &str) -> Result<Regex, KafkaCode> {
    Regex::new(&format!("^(?:{re})$")).map_err(|_| KafkaCode::InvalidRegularExpression)
}

fn contains(a: &Assignment, topic: &str, p: i32) -> bool {
    a.get(topic).is_some_and(|s| s.contains(&p))
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        if let Some(qs) = b.get(t) {
            let i: BTreeSet<i32> = ps.intersection(qs).copied().collect();
            if !i.is_empty() {
                out.insert(t.clone(), i);
            }
        }
    }
    out
}

fn minus(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (t, ps) in a {
        let d: BTreeSet<i32> = match b.get(t) {
            Some(qs) => ps.difference(qs).copied().collect(),
            None => ps.clone(),
        };
        if !d.is_empty() {
            out.insert(t.clone(), d);
        }
    }
    out
}

/// Whether `a` is a subset of `b`.
pub(crate) fn subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter()
        .all(|(t, ps)| ps.is_empty() || b.get(t).is_some_and(|qs| ps.is_subset(qs)))
}

impl ConsumerGroup {
    /// KIP-848 group state names, as ConsumerGroupDescribe and ListGroups give them.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.assignment_epoch < self.epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.epoch >= 0 && m.epoch != self.assignment_epoch || !m.revoking.is_empty())
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Removes a member (left, fenced or expired) and releases what it owned.
    pub fn remove_member(&mut self, id: &str) {
        if let Some(m) = self.members.remove(id) {
            if let Some(inst) = m.instance_id
                && self.static_members.get(&inst).is_some_and(|x| x == id)
            {
                self.static_members.remove(&inst);
            }
            self.target.remove(id);
            self.dirty = true;
        }
    }

    /// The topics the members subscribe to (names that exist and regex matches), with their
    /// partition counts, and the assignor most members asked for (Kafka's choice).
    fn subscription(&self, topics: &BTreeMap<String, i32>) -> BTreeMap<String, i32> {
        let mut out = BTreeMap::new();
        for m in self.members.values() {
            for t in self.member_topics(m, topics) {
                if let Some(&n) = topics.get(&t) {
                    out.insert(t, n);
                }
            }
        }
        out
    }

    fn member_topics(&self, m: &CgMember, topics: &BTreeMap<String, i32>) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = m
            .topics
            .iter()
            .filter(|t| topics.contains_key(*t))
            .cloned()
            .collect();
        if let Some(re) = m.regex.as_deref().filter(|r| !r.is_empty())
            && let Ok(re) = compile_regex(re)
        {
            out.extend(topics.keys().filter(|t| re.is_match(t)).cloned());
        }
        out
    }

    fn chosen_assignor(&self) -> String {
        let mut count: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.assignor.as_deref() {
                *count.entry(a).or_default() += 1;
            }
        }
        let best = count.values().copied().max().unwrap_or(0);
        // Most asked for; ties in the order of ASSIGNORS.
        ASSIGNORS
            .iter()
            .find(|a| best > 0 && count.get(**a) == Some(&best))
            .unwrap_or(&ASSIGNORS[0])
            .to_string()
    }

    /// Bumps the group epoch and computes a new target assignment when membership,
    /// subscriptions, the assignor or the subscribed topics' partitions changed. Returns
    /// whether it did.
    pub fn refresh(&mut self, topics: &BTreeMap<String, i32>) -> bool {
        let subscribed = self.subscription(topics);
        let assignor = self.chosen_assignor();
        if !self.dirty && subscribed == self.subscribed && assignor == self.assignor {
            return false;
        }
        self.dirty = false;
        self.epoch += 1;
        let subs: BTreeMap<String, BTreeSet<String>> = self
            .members
            .iter()
            .map(|(id, m)| (id.clone(), self.member_topics(m, topics)))
            .collect();
        self.target = if assignor == "range" {
            range_assign(&subs, &subscribed)
        } else {
            uniform_assign(&subs, &subscribed, &self.target)
        };
        self.subscribed = subscribed;
        self.assignor = assignor;
        self.assignment_epoch = self.epoch;
        true
    }

    /// Partitions owned (assigned or still being revoked) by members other than `me`.
    fn owned_by_others(&self, me: &str) -> Assignment {
        let mut out = Assignment::new();
        for (id, m) in &self.members {
            if id == me {
                continue;
            }
            for a in [&m.assigned, &m.revoking] {
                for (t, ps) in a {
                    out.entry(t.clone()).or_default().extend(ps.iter().copied());
                }
            }
        }
        out
    }

    /// Moves member `id` towards its target, as Kafka's `CurrentAssignmentBuilder`: with
    /// `owned` (what its heartbeat lists) a pending revocation completes once none of the
    /// revoked partitions is listed; then partitions to give up start a revocation (the epoch
    /// stays), or else the epoch moves to the assignment epoch and every target partition no
    /// other member owns is assigned. Returns whether the member's assignment changed.
    pub fn reconcile(&mut self, id: &str, owned: Option<&Assignment>, now: Instant) -> bool {
        let others = self.owned_by_others(id);
        let target = self.target.get(id).cloned().unwrap_or_default();
        let epoch = self.assignment_epoch;
        let Some(m) = self.members.get_mut(id) else {
            return false;
        };
        if m.epoch < 0 {
            return false;
        }
        let before = (m.assigned.clone(), m.epoch);
        if !m.revoking.is_empty() {
            let acked = owned.is_some_and(|o| intersect(o, &m.revoking).is_empty());
            if !acked {
                return false;
            }
            m.revoking.clear();
            m.revoking_since = None;
        }
        let kept = intersect(&m.assigned, &target);
        let revoke = minus(&m.assigned, &target);
        if !revoke.is_empty() {
            m.assigned = kept;
            m.revoking = revoke;
            m.revoking_since = Some(now);
        } else {
            if m.epoch != epoch {
                m.previous_epoch = m.epoch;
                m.epoch = epoch;
            }
            let mut next = kept;
            for (t, ps) in &target {
                for &p in ps {
                    if !contains(&others, t, p) {
                        next.entry(t.clone()).or_default().insert(p);
                    }
                }
            }
            m.assigned = next;
        }
        before != (m.assigned.clone(), m.epoch)
    }

    /// Expires members whose session timed out (static members away for longer than the
    /// session timeout included) and members that did not revoke within their rebalance
    /// timeout. Returns whether any was removed.
    pub fn expire(&mut self, now: Instant, session: Duration) -> bool {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| {
                now.duration_since(m.last_seen) > session
                    || m.revoking_since
                        .is_some_and(|t| now.duration_since(t) > m.rebalance_timeout)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            tracing::debug!(member = %id, "mock: consumer group member expired");
            self.remove_member(id);
        }
        !gone.is_empty()
    }
}

/// Kafka's uniform assignor, sticky: each member keeps what it was given as long as the
/// topic is still subscribed and it stays within its fair share; the rest goes to the
/// least-loaded subscribed member; then partitions move from the most to the least loaded
/// member until no two differ by more than one (where subscriptions allow).
pub(crate) fn uniform_assign(
    subs: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subs
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    if subs.is_empty() {
        return out;
    }
    let all: Vec<(String, i32)> = topics
        .iter()
        .filter(|(t, _)| subs.values().any(|s| s.contains(*t)))
        .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
        .collect();
    let quota = all.len().div_ceil(subs.len());
    let mut count: BTreeMap<String, usize> = subs.keys().map(|m| (m.clone(), 0)).collect();
    let mut owner: BTreeMap<(String, i32), String> = BTreeMap::new();
    for (m, a) in previous {
        let Some(s) = subs.get(m) else { continue };
        for (t, ps) in a {
            if !s.contains(t) {
                continue;
            }
            for &p in ps {
                let n = topics.get(t).copied().unwrap_or(0);
                let c = count.get(m).copied().unwrap_or(0);
                if p < n && c < quota && !owner.contains_key(&(t.clone(), p)) {
                    owner.insert((t.clone(), p), m.clone());
                    count.insert(m.clone(), c + 1);
                }
            }
        }
    }
    for tp in &all {
        if owner.contains_key(tp) {
            continue;
        }
        let best = subs
            .iter()
            .filter(|(_, s)| s.contains(&tp.0))
            .min_by_key(|(m, _)| (count.get(*m).copied().unwrap_or(0), (*m).clone()))
            .map(|(m, _)| m.clone());
        if let Some(m) = best {
            *count.entry(m.clone()).or_default() += 1;
            owner.insert(tp.clone(), m);
        }
    }
    // Balance: move from the most to the least loaded member while that helps.
    for _ in 0..all.len() {
        let mut moved = false;
        let (Some((max_m, max_c)), Some((min_m, min_c))) = (
            count
                .iter()
                .max_by_key(|(m, c)| (**c, std::cmp::Reverse((*m).clone())))
                .map(|(m, c)| (m.clone(), *c)),
            count
                .iter()
                .min_by_key(|(m, c)| (**c, (*m).clone()))
                .map(|(m, c)| (m.clone(), *c)),
        ) else {
            break;
        };
        if max_c <= min_c + 1 {
            break;
        }
        let candidate = owner
            .iter()
            .rev()
            .find(|(tp, m)| **m == max_m && subs.get(&min_m).is_some_and(|s| s.contains(&tp.0)))
            .map(|(tp, _)| tp.clone());
        if let Some(tp) = candidate {
            owner.insert(tp, min_m.clone());
            if let Some(c) = count.get_mut(&max_m) {
                *c -= 1;
            }
            if let Some(c) = count.get_mut(&min_m) {
                *c += 1;
            }
            moved = true;
        }
        if !moved {
            break;
        }
    }
    for ((t, p), m) in owner {
        if let Some(a) = out.get_mut(&m) {
            a.entry(t).or_default().insert(p);
        }
    }
    out
}

/// Kafka's range assignor: per topic, its subscribed members in member id order each get a
/// contiguous range, the first ones one partition more when it does not divide evenly.
pub(crate) fn range_assign(
    subs: &BTreeMap<String, BTreeSet<String>>,
    topics: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = subs
        .keys()
        .map(|m| (m.clone(), Assignment::new()))
        .collect();
    for (t, &n) in topics {
        let members: Vec<&String> = subs
            .iter()
            .filter(|(_, s)| s.contains(t))
            .map(|(m, _)| m)
            .collect();
        if members.is_empty() {
            continue;
        }
        let per = n as usize / members.len();
        let extra = n as usize % members.len();
        let mut next = 0i32;
        for (i, m) in members.iter().enumerate() {
            let k = per + usize::from(i < extra);
            if k == 0 {
                continue;
            }
            let ps: BTreeSet<i32> = (next..next + k as i32).collect();
            next += k as i32;
            if let Some(a) = out.get_mut(*m) {
                a.insert(t.clone(), ps);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subs(members: &[(&str, &[&str])]) -> BTreeMap<String, BTreeSet<String>> {
        members
            .iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|t| t.to_string()).collect()))
            .collect()
    }

    fn count(a: &BTreeMap<String, Assignment>) -> Vec<usize> {
        a.values()
            .map(|x| x.values().map(|s| s.len()).sum())
            .collect()
    }

    #[test]
    fn uniform_balances_and_sticks() {
        let topics = BTreeMap::from([("t".to_string(), 6)]);
        let one = uniform_assign(&subs(&[("a", &["t"])]), &topics, &BTreeMap::new());
        assert_eq!(count(&one), vec![6]);
        let two = uniform_assign(&subs(&[("a", &["t"]), ("b", &["t"])]), &topics, &one);
        assert_eq!(count(&two), vec![3, 3]);
        // a kept half of what it had, b got the rest: every partition exactly once.
        assert!(subset(&two["a"], &one["a"]));
        let mut all: Vec<i32> = two.values().flat_map(|a| a["t"].iter().copied()).collect();
        all.sort();
        assert_eq!(all, (0..6).collect::<Vec<_>>());
        let three = uniform_assign(
            &subs(&[("a", &["t"]), ("b", &["t"]), ("c", &["t"])]),
            &topics,
            &two,
        );
        assert_eq!(count(&three), vec![2, 2, 2]);
        assert!(subset(&three["a"], &two["a"]) && subset(&three["b"], &two["b"]));
    }

    #[test]
    fn uniform_respects_subscriptions() {
        let topics = BTreeMap::from([("x".to_string(), 4), ("y".to_string(), 2)]);
        let a = uniform_assign(
            &subs(&[("a", &["x"]), ("b", &["y"])]),
            &topics,
            &BTreeMap::new(),
        );
        assert_eq!(a["a"].keys().collect::<Vec<_>>(), vec!["x"]);
        assert_eq!(a["b"].keys().collect::<Vec<_>>(), vec!["y"]);
        assert_eq!(count(&a), vec![4, 2]);
    }

    #[test]
    fn range_gives_contiguous_ranges_per_topic() {
        let topics = BTreeMap::from([("t".to_string(), 5)]);
        let a = range_assign(&subs(&[("a", &["t"]), ("b", &["t"])]), &topics);
        assert_eq!(a["a"]["t"], BTreeSet::from([0, 1, 2]));
        assert_eq!(a["b"]["t"], BTreeSet::from([3, 4]));
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_revoked_it() {
        let now = Instant::now();
        let topics = BTreeMap::from([("t".to_string(), 2)]);
        let mut g = ConsumerGroup::default();
        let mut a = CgMember::new("c".into(), now);
        a.topics = vec!["t".into()];
        g.members.insert("a".into(), a.clone());
        assert!(g.refresh(&topics));
        g.reconcile("a", Some(&Assignment::new()), now);
        assert_eq!(g.members["a"].assigned["t"], BTreeSet::from([0, 1]));
        g.members.insert("b".into(), a);
        g.dirty = true;
        assert!(g.refresh(&topics));
        // b joins first: its target partition is still a's, so it gets nothing yet.
        g.reconcile("b", Some(&Assignment::new()), now);
        assert!(g.members["b"].assigned.is_empty());
        assert_eq!(g.members["b"].epoch, g.epoch);
        // a is asked to revoke one; its epoch waits.
        let a_owned = g.members["a"].assigned.clone();
        let a_epoch = g.members["a"].epoch;
        g.reconcile("a", Some(&a_owned), now);
        assert_eq!(g.members["a"].epoch, a_epoch);
        assert_eq!(
            g.members["a"]
                .revoking
                .values()
                .map(|s| s.len())
                .sum::<usize>(),
            1
        );
        // Still listed by a: b still waits.
        g.reconcile("b", Some(&Assignment::new()), now);
        assert!(g.members["b"].assigned.is_empty());
        // a acknowledges: its epoch moves, then b takes the partition.
        let kept = g.members["a"].assigned.clone();
        g.reconcile("a", Some(&kept), now);
        assert_eq!(g.members["a"].epoch, g.epoch);
        g.reconcile("b", Some(&Assignment::new()), now);
        let b = &g.members["b"].assigned;
        assert_eq!(b.values().map(|s| s.len()).sum::<usize>(), 1);
        assert!(intersect(b, &kept).is_empty());
    }
}

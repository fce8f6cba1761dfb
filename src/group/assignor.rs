//! Partition assignors: the leader member's function from subscriptions to assignments.
//!
//! [`RangeAssignor`] and [`RoundRobinAssignor`] give the same assignments as the Java client's
//! `RangeAssignor` and `RoundRobinAssignor` for the same input; [`CooperativeStickyAssignor`]
//! keeps every partition with its current owner where balance allows and never hands a
//! partition to a new owner in the same rebalance in which its old owner still holds it
//! (incremental cooperative rebalancing, KIP-429).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;

use super::protocol::{Assignment, Subscription};

/// How a rebalance protocol moves partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RebalanceProtocol {
    /// Every member gives up every partition before the group rejoins (range, roundrobin).
    Eager,
    /// Members keep their partitions while rejoining; only the partitions that move are revoked,
    /// and they are assigned to their new owner in a second rebalance.
    Cooperative,
}

/// One member's subscription as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemberSubscription {
    /// The member id the coordinator gave the member.
    pub member_id: String,
    /// The member's `group.instance.id`, for a static member.
    pub group_instance_id: Option<String>,
    /// What the member sent.
    pub subscription: Subscription,
}

impl MemberSubscription {
    /// A member with the given id and subscription.
    pub fn new(member_id: impl Into<String>, subscription: Subscription) -> Self {
        MemberSubscription {
            member_id: member_id.into(),
            group_instance_id: None,
            subscription,
        }
    }

    /// Sets [`group_instance_id`](Self::group_instance_id).
    pub fn with_group_instance_id(mut self, id: Option<String>) -> Self {
        self.group_instance_id = id;
        self
    }

    /// Whether the member subscribes to `topic`.
    fn subscribes(&self, topic: &str) -> bool {
        self.subscription.topics.iter().any(|t| t == topic)
    }
}

/// A partition assignment strategy (`partition.assignment.strategy`).
///
/// The leader of the group calls [`assign`](Assignor::assign) with every member's subscription
/// and the partition count of every subscribed topic.
pub trait Assignor: Send + Sync + Debug {
    /// The protocol name sent in JoinGroup (`range`, `roundrobin`, `cooperative-sticky`).
    fn name(&self) -> &str;

    /// Whether the strategy is eager or cooperative. Default: eager.
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    /// The assignment of every member, keyed by member id. Members missing from the result get
    /// nothing.
    fn assign(
        &self,
        partitions_per_topic: &BTreeMap<String, i32>,
        members: &[MemberSubscription],
    ) -> BTreeMap<String, Assignment>;
}

/// Java's member order: static members by instance id first, then by member id.
fn sorted_members(members: &[MemberSubscription]) -> Vec<&MemberSubscription> {
    let mut v: Vec<&MemberSubscription> = members.iter().collect();
    v.sort_by(|a, b| match (&a.group_instance_id, &b.group_instance_id) {
        (Some(x), Some(y)) => x.cmp(y).then_with(|| a.member_id.cmp(&b.member_id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.member_id.cmp(&b.member_id),
    });
    v
}

/// One run of a built-in assignor: the partition counts, the members in Java's order
/// ([`sorted_members`]) and the assignment being built, in which every member starts with an
/// empty one (so that a member given nothing still gets an answer). The three built-ins share
/// this frame and differ only in the method that fills `out`.
struct Run<'a> {
    partitions_per_topic: &'a BTreeMap<String, i32>,
    sorted: Vec<&'a MemberSubscription>,
    out: BTreeMap<String, Assignment>,
}

impl<'a> Run<'a> {
    /// Runs `fill` over `members` (with no members there is nothing to fill).
    fn assign(
        partitions_per_topic: &'a BTreeMap<String, i32>,
        members: &'a [MemberSubscription],
        fill: fn(&mut Run<'a>),
    ) -> BTreeMap<String, Assignment> {
        let mut run = Run {
            partitions_per_topic,
            sorted: sorted_members(members),
            out: members
                .iter()
                .map(|m| (m.member_id.clone(), Assignment::default()))
                .collect(),
        };
        if !run.sorted.is_empty() {
            fill(&mut run);
        }
        run.out
    }
}

/// Implements [`Assignor`] for a built-in assignor from its name, its protocol and the
/// [`Run`] method that fills the assignment: the one place the trait's frame is written.
macro_rules! builtin_assignor {
    ($ty:ty, $name:literal, $protocol:expr, $fill:path) => {
        impl Assignor for $ty {
            fn name(&self) -> &str {
                $name
            }

            fn protocol(&self) -> RebalanceProtocol {
                $protocol
            }

            fn assign(
                &self,
                partitions_per_topic: &BTreeMap<String, i32>,
                members: &[MemberSubscription],
            ) -> BTreeMap<String, Assignment> {
                Run::assign(partitions_per_topic, members, $fill)
            }
        }
    };
}

fn push(out: &mut BTreeMap<String, Assignment>, member: &str, topic: &str, partition: i32) {
    out.entry(member.to_owned())
        .or_default()
        .partitions
        .entry(topic.to_owned())
        .or_default()
        .push(partition);
}

/// Java's `RangeAssignor`: per topic, consecutive ranges of partitions to the subscribed
/// members in order; the first `partitions % members` members get one more.
#[derive(Debug, Clone, Copy, Default)]
pub struct RangeAssignor;

builtin_assignor!(RangeAssignor, "range", RebalanceProtocol::Eager, Run::range);

/// Java's `RoundRobinAssignor`: every partition of every topic (by topic name, then index) in
/// turn to the next member (in order) subscribed to its topic.
#[derive(Debug, Clone, Copy, Default)]
pub struct RoundRobinAssignor;

builtin_assignor!(
    RoundRobinAssignor,
    "roundrobin",
    RebalanceProtocol::Eager,
    Run::round_robin
);

/// Java's `CooperativeStickyAssignor` behaviour: balanced (member counts differ by at most one
/// when subscriptions are equal), sticky (a partition stays with its owner unless balance needs
/// it elsewhere), and cooperative (a partition that moves is first only revoked; its new owner
/// gets it in the follow-up rebalance).
#[derive(Debug, Clone, Copy, Default)]
pub struct CooperativeStickyAssignor;

builtin_assignor!(
    CooperativeStickyAssignor,
    "cooperative-sticky",
    RebalanceProtocol::Cooperative,
    Run::cooperative_sticky
);

impl Run<'_> {
    /// [`RangeAssignor`]'s assignment.
    fn range(&mut self) {
        let (partitions_per_topic, sorted, out) =
            (self.partitions_per_topic, &self.sorted, &mut self.out);
        for (topic, &count) in partitions_per_topic {
            let subs: Vec<&&MemberSubscription> =
                sorted.iter().filter(|m| m.subscribes(topic)).collect();
            if subs.is_empty() || count <= 0 {
                continue;
            }
            let n = subs.len() as i32;
            let per = count / n;
            let extra = count % n;
            for (i, m) in subs.iter().enumerate() {
                let i = i as i32;
                let start = per * i + i.min(extra);
                let len = per + if i + 1 > extra { 0 } else { 1 };
                for p in start..start + len {
                    push(out, &m.member_id, topic, p);
                }
            }
        }
    }

    /// [`RoundRobinAssignor`]'s assignment.
    fn round_robin(&mut self) {
        let (partitions_per_topic, sorted, out) =
            (self.partitions_per_topic, &self.sorted, &mut self.out);
        let mut next = 0usize;
        for (topic, &count) in partitions_per_topic {
            if !sorted.iter().any(|m| m.subscribes(topic)) {
                continue;
            }
            for p in 0..count.max(0) {
                loop {
                    let m = sorted[next % sorted.len()];
                    next += 1;
                    if m.subscribes(topic) {
                        push(out, &m.member_id, topic, p);
                        break;
                    }
                }
            }
        }
    }

    /// [`CooperativeStickyAssignor`]'s assignment.
    fn cooperative_sticky(&mut self) {
        let (partitions_per_topic, sorted, out) =
            (self.partitions_per_topic, &self.sorted, &mut self.out);
        let exists = |t: &str, p: i32| {
            partitions_per_topic
                .get(t)
                .is_some_and(|&n| p >= 0 && p < n)
        };
        // Every partition some member subscribes to.
        let mut all: BTreeSet<(String, i32)> = BTreeSet::new();
        for (t, &n) in partitions_per_topic {
            if sorted.iter().any(|m| m.subscribes(t)) {
                for p in 0..n.max(0) {
                    all.insert((t.clone(), p));
                }
            }
        }
        // Previous ownership. Where claims conflict, the member of the newest generation keeps
        // the partition (of two in the same generation, the first in order). A claim from an
        // older generation with no newer rival still counts: that member may well still hold
        // the partition (say its `poll` was cancelled before it read its last SyncGroup
        // answer, so it never learnt that the partition went away), and handing the partition
        // straight to another member would let both read it until the holder revokes: the
        // cooperative rule below withholds it for one round instead, while the holder commits
        // and revokes.
        let mut by_generation: Vec<usize> = (0..sorted.len()).collect();
        by_generation.sort_by_key(|&i| std::cmp::Reverse(sorted[i].subscription.generation_id));
        let mut prev_owner: HashMap<(String, i32), usize> = HashMap::new();
        for i in by_generation {
            let m = sorted[i];
            for (t, ps) in &m.subscription.owned_partitions {
                if !m.subscribes(t) {
                    continue;
                }
                for &p in ps {
                    if exists(t, p) {
                        prev_owner.entry((t.clone(), p)).or_insert(i);
                    }
                }
            }
        }
        let n = sorted.len();
        let total = all.len();
        let min_q = total / n;
        let mut extra = total % n;
        let mut owned: Vec<Vec<(String, i32)>> = vec![Vec::new(); n];
        for (tp, &i) in &prev_owner {
            owned[i].push(tp.clone());
        }
        for o in &mut owned {
            o.sort();
        }
        // Keep owned partitions up to the quota; members owning the most keep the extra slots.
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(owned[i].len()));
        let mut assigned: Vec<Vec<(String, i32)>> = vec![Vec::new(); n];
        let mut taken: BTreeSet<(String, i32)> = BTreeSet::new();
        for &i in &order {
            let keep = if owned[i].len() > min_q && extra > 0 {
                extra -= 1;
                min_q + 1
            } else {
                owned[i].len().min(min_q)
            };
            for tp in owned[i].iter().take(keep) {
                assigned[i].push(tp.clone());
                taken.insert(tp.clone());
            }
        }
        // The rest to the eligible member with the fewest partitions.
        for tp in all.iter().filter(|tp| !taken.contains(*tp)) {
            let best = (0..n)
                .filter(|&i| sorted[i].subscribes(&tp.0))
                .min_by_key(|&i| (assigned[i].len(), i));
            if let Some(i) = best {
                assigned[i].push(tp.clone());
            }
        }
        // Cooperative: a partition still owned by another member is only revoked this round.
        for (i, parts) in assigned.into_iter().enumerate() {
            let member = &sorted[i].member_id;
            for (t, p) in parts {
                match prev_owner.get(&(t.clone(), p)) {
                    Some(&owner) if owner != i => {}
                    _ => push(out, member, &t, p),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription::new(
            id,
            Subscription::new(topics.iter().map(|s| s.to_string()).collect()),
        )
    }

    fn topics(t: &[(&str, i32)]) -> BTreeMap<String, i32> {
        t.iter().map(|(n, c)| (n.to_string(), *c)).collect()
    }

    fn parts(a: &BTreeMap<String, Assignment>, m: &str) -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = a[m]
            .partitions
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect();
        v.sort();
        v
    }

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    // Java RangeAssignorTest.testTwoConsumersTwoTopicsSixPartitions: t1,t2 with 3 partitions
    // each; C0 gets t1p0,t1p1,t2p0,t2p1; C1 gets t1p2,t2p2.
    #[test]
    fn range_matches_java() {
        let a = RangeAssignor.assign(
            &topics(&[("t1", 3), ("t2", 3)]),
            &[member("c1", &["t1", "t2"]), member("c0", &["t1", "t2"])],
        );
        assert_eq!(
            parts(&a, "c0"),
            vec![tp("t1", 0), tp("t1", 1), tp("t2", 0), tp("t2", 1)]
        );
        assert_eq!(parts(&a, "c1"), vec![tp("t1", 2), tp("t2", 2)]);
        // 6 partitions over 3 members: 2 each, consecutive.
        let a = RangeAssignor.assign(
            &topics(&[("t", 6)]),
            &[
                member("a", &["t"]),
                member("b", &["t"]),
                member("c", &["t"]),
            ],
        );
        assert_eq!(parts(&a, "b"), vec![tp("t", 2), tp("t", 3)]);
        // Only-subscribed members: c0 on t1 alone gets all of t1.
        let a = RangeAssignor.assign(
            &topics(&[("t1", 2), ("t2", 2)]),
            &[member("c0", &["t1"]), member("c1", &["t2"])],
        );
        assert_eq!(parts(&a, "c0"), vec![tp("t1", 0), tp("t1", 1)]);
        assert_eq!(parts(&a, "c1"), vec![tp("t2", 0), tp("t2", 1)]);
    }

    // Java RoundRobinAssignorTest.testTwoConsumersTwoTopicsSixPartitions: C0 gets
    // t1p0,t1p2,t2p1; C1 gets t1p1,t2p0,t2p2.
    #[test]
    fn roundrobin_matches_java() {
        let a = RoundRobinAssignor.assign(
            &topics(&[("t1", 3), ("t2", 3)]),
            &[member("c0", &["t1", "t2"]), member("c1", &["t1", "t2"])],
        );
        assert_eq!(parts(&a, "c0"), vec![tp("t1", 0), tp("t1", 2), tp("t2", 1)]);
        assert_eq!(parts(&a, "c1"), vec![tp("t1", 1), tp("t2", 0), tp("t2", 2)]);
        // testMultipleConsumersMixedTopics: t1(3) c0; t2(2) c0,c1,c2 → round robin over all
        let a = RoundRobinAssignor.assign(
            &topics(&[("t1", 3), ("t2", 2)]),
            &[
                member("c0", &["t1"]),
                member("c1", &["t1", "t2"]),
                member("c2", &["t1"]),
            ],
        );
        assert_eq!(parts(&a, "c0"), vec![tp("t1", 0)]);
        assert_eq!(parts(&a, "c1"), vec![tp("t1", 1), tp("t2", 0), tp("t2", 1)]);
        assert_eq!(parts(&a, "c2"), vec![tp("t1", 2)]);
    }

    fn owning(id: &str, t: &str, ps: &[i32], generation: i32) -> MemberSubscription {
        let mut m = member(id, &[t]);
        m.subscription
            .owned_partitions
            .insert(t.into(), ps.to_vec());
        m.subscription.generation_id = generation;
        m
    }

    #[test]
    fn cooperative_sticky_adding_a_member_revokes_only_moving_partitions() {
        let t = topics(&[("t", 6)]);
        // First generation: one member takes everything.
        let a = CooperativeStickyAssignor.assign(&t, &[member("a", &["t"])]);
        assert_eq!(parts(&a, "a").len(), 6);
        // Two members own 3 each; a third joins.
        let ms = [
            owning("a", "t", &[0, 1, 2], 5),
            owning("b", "t", &[3, 4, 5], 5),
            member("c", &["t"]),
        ];
        let a1 = CooperativeStickyAssignor.assign(&t, &ms);
        let pa = parts(&a1, "a");
        let pb = parts(&a1, "b");
        // Each keeps 2 of its own, gives up 1; nobody gains another's partition this round.
        assert_eq!(pa.len(), 2);
        assert_eq!(pb.len(), 2);
        assert!(pa.iter().all(|(_, p)| [0, 1, 2].contains(p)));
        assert!(pb.iter().all(|(_, p)| [3, 4, 5].contains(p)));
        assert!(parts(&a1, "c").is_empty());
        // Second phase: the revoked ones are free and go to c.
        let ms2 = [
            owning("a", "t", &pa.iter().map(|x| x.1).collect::<Vec<_>>(), 6),
            owning("b", "t", &pb.iter().map(|x| x.1).collect::<Vec<_>>(), 6),
            member("c", &["t"]),
        ];
        let a2 = CooperativeStickyAssignor.assign(&t, &ms2);
        assert_eq!(parts(&a2, "a"), pa);
        assert_eq!(parts(&a2, "b"), pb);
        assert_eq!(parts(&a2, "c").len(), 2);
        let mut all: Vec<_> = [pa, pb, parts(&a2, "c")].concat();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 6);
    }

    #[test]
    fn cooperative_sticky_member_leaving_keeps_the_others() {
        let t = topics(&[("t", 6)]);
        let ms = [owning("a", "t", &[0, 1], 3), owning("b", "t", &[2, 3], 3)];
        let a = CooperativeStickyAssignor.assign(&t, &ms);
        let pa = parts(&a, "a");
        let pb = parts(&a, "b");
        assert!(pa.contains(&tp("t", 0)) && pa.contains(&tp("t", 1)));
        assert!(pb.contains(&tp("t", 2)) && pb.contains(&tp("t", 3)));
        assert_eq!(pa.len() + pb.len(), 6);
        assert_eq!(pa.len(), 3);
    }

    #[test]
    fn cooperative_sticky_balance_for_many_shapes() {
        for members in 1..7usize {
            for count in 0..13 {
                let t = topics(&[("t", count)]);
                let ms: Vec<_> = (0..members)
                    .map(|i| member(&format!("m{i}"), &["t"]))
                    .collect();
                let a = CooperativeStickyAssignor.assign(&t, &ms);
                let sizes: Vec<usize> = ms.iter().map(|m| parts(&a, &m.member_id).len()).collect();
                let total: usize = sizes.iter().sum();
                assert_eq!(total, count as usize);
                let (mn, mx) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(mx - mn <= 1, "{sizes:?}");
            }
        }
    }

    #[test]
    fn an_older_generations_holder_is_revoked_before_its_partitions_move() {
        // a missed the SyncGroup answer of generation 3 (its poll was cancelled) and still
        // holds every partition; b got its (empty) assignment of generation 3.
        let t = topics(&[("t", 4)]);
        let ms = [owning("a", "t", &[0, 1, 2, 3], 2), owning("b", "t", &[], 3)];
        let a = CooperativeStickyAssignor.assign(&t, &ms);
        // a keeps half and revokes the rest; b gets nothing a still holds this round.
        assert_eq!(parts(&a, "a").len(), 2);
        assert!(parts(&a, "b").is_empty());
        // The next round (a revoked, both in generation 4): b gets the other half.
        let kept = parts(&a, "a");
        let kept_ps: Vec<i32> = kept.iter().map(|(_, p)| *p).collect();
        let ms = [owning("a", "t", &kept_ps, 4), owning("b", "t", &[], 4)];
        let next = CooperativeStickyAssignor.assign(&t, &ms);
        assert_eq!(parts(&next, "a"), kept);
        assert_eq!(parts(&next, "b").len(), 2);
    }

    #[test]
    fn conflicting_claims_go_to_the_newest_generation() {
        let t = topics(&[("t", 2)]);
        let ms = [owning("a", "t", &[0, 1], 2), owning("b", "t", &[0, 1], 1)];
        let a = CooperativeStickyAssignor.assign(&t, &ms);
        // a (newer generation) keeps one of its partitions; the other is revoked from a and
        // not handed to b in the same round.
        assert_eq!(parts(&a, "a").len(), 1);
        assert!(parts(&a, "b").is_empty());
    }
}

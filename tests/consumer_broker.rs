//! The consumer against a real cluster (Apache Kafka from `scripts/kafka.sh`, and the mock in
//! the second pass): assign mode, groups, commits, rebalances,
//! static membership, a mixed group with librdkafka, pause/resume/seek, offset reset.
//!
//! Test data is produced with librdkafka (protocol-tests/interop/fill.py).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{RebalanceEvents, bootstrap, cluster, spawn_poller, unique, wait_for};
use rekafka::KafkaCode;
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, ConsumerRecord, OffsetReset, StartOffset, TopicPartition,
};
use rekafka::group::CooperativeStickyAssignor;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn python(script: &str) -> Command {
    let mut c = Command::new("python3");
    c.env("PYTHONPATH", format!("{ROOT}/.tools/py"))
        .arg(format!("{ROOT}/protocol-tests/interop/{script}"));
    c
}

fn fill(topic: &str, partitions: i32, count: usize, extra: &[&str]) {
    let out = python("fill.py")
        .args([
            &bootstrap(),
            topic,
            &partitions.to_string(),
            &count.to_string(),
        ])
        .args(extra)
        .output()
        .expect("run fill.py");
    assert!(
        out.status.success(),
        "fill.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn group_config(group: &str) -> ConsumerConfig {
    ConsumerConfig::new()
        .with_group_id(group)
        .with_session_timeout(Duration::from_secs(6))
        .with_heartbeat_interval(Duration::from_millis(1000))
        .with_auto_offset_reset(OffsetReset::Earliest)
        .with_fetch_max_wait(Duration::from_millis(100))
}

fn assign_config() -> ConsumerConfig {
    ConsumerConfig::new()
        .with_auto_commit(AutoCommit::Disabled)
        .with_fetch_max_wait(Duration::from_millis(100))
}

async fn read(consumer: &Consumer, want: usize, timeout: Duration) -> Vec<ConsumerRecord> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    while out.len() < want && Instant::now() < deadline {
        let recs = consumer
            .poll(Duration::from_millis(200))
            .await
            .expect("poll");
        assert!(recs.errors().is_empty(), "{:?}", recs.errors());
        out.extend(recs);
    }
    out
}

fn num(prefix: char, b: &[u8]) -> usize {
    let s = std::str::from_utf8(b).unwrap();
    let s = s.strip_prefix(prefix).unwrap();
    s.split(':').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assign_mode_reads_everything_with_keys_headers_and_offsets() {
    let topic = unique("c-assign");
    fill(
        &topic,
        3,
        3000,
        &["--headers", "--codec", "lz4", "--txn-every", "500"],
    );
    let cluster = cluster().await;
    let c = Consumer::new(cluster.clone(), assign_config()).unwrap();
    c.assign((0..3).map(|p| (TopicPartition::new(&topic, p), StartOffset::Beginning)))
        .unwrap();
    let recs = read(&c, 3000, Duration::from_secs(30)).await;
    assert_eq!(recs.len(), 3000);
    let mut last: HashMap<i32, (i64, usize)> = HashMap::new();
    for r in &recs {
        let i = num('k', r.key.as_ref().unwrap());
        assert_eq!(
            i % 3,
            r.partition as usize,
            "record {i} on the wrong partition"
        );
        assert_eq!(num('v', r.value.as_ref().unwrap()), i);
        assert_eq!(r.value.as_ref().unwrap().len(), 100);
        let h: Vec<(String, Option<Vec<u8>>)> = r
            .headers
            .iter()
            .map(|h| (h.key().to_owned(), h.value().map(|v| v.to_vec())))
            .collect();
        assert_eq!(
            h,
            vec![
                ("i".to_owned(), Some(i.to_string().into_bytes())),
                ("n".to_owned(), None)
            ]
        );
        if let Some((o, j)) = last.get(&r.partition) {
            assert!(
                r.offset > *o && i > *j,
                "order within partition {}",
                r.partition
            );
        }
        last.insert(r.partition, (r.offset, i));
    }
    // Nothing more arrives (control records never reach the user).
    let extra = read(&c, 1, Duration::from_millis(700)).await;
    assert!(extra.is_empty());
    // Positions moved past the trailing commit markers: 1000 records and one marker per
    // transaction (6 transactions of 500 records, each spanning every partition).
    for p in 0..3 {
        let tp = TopicPartition::new(&topic, p);
        assert_eq!(c.position(&tp).await.unwrap(), 1006);
        let (lo, _hi) = c.fetch_watermarks(&tp).await.unwrap();
        assert_eq!(lo, 0);
        assert_eq!(c.cached_watermarks(&tp).unwrap().0, 1006);
    }
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_seek_touch_only_their_partition() {
    let topic = unique("c-pause");
    fill(&topic, 2, 400, &[]);
    let cluster = cluster().await;
    let c = Consumer::new(cluster.clone(), assign_config().with_max_poll_records(10)).unwrap();
    let p0 = TopicPartition::new(&topic, 0);
    let p1 = TopicPartition::new(&topic, 1);
    c.assign([
        (p0.clone(), StartOffset::Beginning),
        (p1.clone(), StartOffset::Beginning),
    ])
    .unwrap();
    // Read some of p0 so that more of it is buffered, with p1 paused so that it keeps all its
    // records for later (its leader may be another broker, whose fetches arrive first).
    c.pause(std::slice::from_ref(&p1)).unwrap();
    let mut last0 = None;
    while last0.is_none() {
        for r in c.poll(Duration::from_millis(500)).await.unwrap().iter() {
            assert_eq!(r.partition, 0, "a paused partition returned records");
            last0 = Some(r.offset);
        }
    }
    c.pause(std::slice::from_ref(&p0)).unwrap();
    c.resume(std::slice::from_ref(&p1)).unwrap();
    assert_eq!(c.paused(), vec![p0.clone()]);
    let during = read(&c, 1000, Duration::from_secs(2)).await;
    assert!(
        during.iter().all(|r| r.partition == 1),
        "a paused partition returned records"
    );
    assert!(!during.is_empty());
    c.resume(std::slice::from_ref(&p0)).unwrap();
    let mut next0 = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while next0.is_none() && Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(500)).await.unwrap().iter() {
            if r.partition == 0 && next0.is_none() {
                next0 = Some(r.offset);
            }
        }
    }
    let last0 = last0.unwrap();
    let pos_after = c.position(&p0).await.unwrap();
    assert!(next0.is_some());
    assert_eq!(
        next0,
        Some(last0 + 1),
        "p0 continues exactly where it paused"
    );
    assert!(pos_after > last0);
    // Seek p1 back to 5: the next p1 record is offset 5; p0 continues where it was.
    let p0_before = c.position(&p0).await.unwrap();
    c.seek(&p1, 5).unwrap();
    assert_eq!(c.position(&p1).await.unwrap(), 5);
    assert_eq!(c.position(&p0).await.unwrap(), p0_before);
    let mut first1 = None;
    let mut first0 = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while first1.is_none() && Instant::now() < deadline {
        for r in c.poll(Duration::from_millis(500)).await.unwrap().iter() {
            if r.partition == 1 && first1.is_none() {
                first1 = Some(r.offset);
            }
            if r.partition == 0 && first0.is_none() {
                first0 = Some(r.offset);
            }
        }
    }
    assert_eq!(first1, Some(5));
    if let Some(f) = first0 {
        assert_eq!(f, p0_before);
    }
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offset_out_of_range_follows_the_reset_policy() {
    let topic = unique("c-oor");
    fill(&topic, 1, 50, &[]);
    let cluster = cluster().await;
    let tp = TopicPartition::new(&topic, 0);
    // none: a typed error for that partition, reported by poll.
    let c = Consumer::new(
        cluster.clone(),
        assign_config().with_auto_offset_reset(OffsetReset::None),
    )
    .unwrap();
    c.assign([(tp.clone(), StartOffset::Offset(1_000_000))])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut err = None;
    while err.is_none() && Instant::now() < deadline {
        let recs = c.poll(Duration::from_millis(300)).await.unwrap();
        assert!(recs.is_empty());
        err = recs.errors().first().map(|(_, e)| e.clone());
    }
    let err = err.expect("an OFFSET_OUT_OF_RANGE error");
    assert_eq!(err.kafka_code(), Some(KafkaCode::OffsetOutOfRange));
    // A seek unblocks it.
    c.seek(&tp, 0).unwrap();
    assert_eq!(read(&c, 50, Duration::from_secs(10)).await.len(), 50);
    c.close().await.unwrap();
    // earliest: starts over at 0.
    let c = Consumer::new(
        cluster.clone(),
        assign_config().with_auto_offset_reset(OffsetReset::Earliest),
    )
    .unwrap();
    c.assign([(tp.clone(), StartOffset::Offset(1_000_000))])
        .unwrap();
    let recs = read(&c, 50, Duration::from_secs(10)).await;
    assert_eq!(recs.len(), 50);
    assert_eq!(recs[0].offset, 0);
    c.close().await.unwrap();
}

type Seen = Arc<Mutex<Vec<(usize, i32, i64)>>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_of_three_reads_100k_exactly_once_and_survives_a_leave() {
    let topic = unique("c-group3");
    let group = unique("g3");
    fill(&topic, 6, 80_000, &["--headers", "--codec", "zstd"]);
    fill(
        &topic,
        6,
        20_000,
        &["--headers", "--codec", "lz4", "--txn-every", "2000"],
    );
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let stops: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let mut handles = Vec::new();
    let mut consumers = Vec::new();
    for (id, stop) in stops.iter().enumerate() {
        let cluster = cluster().await;
        let c = Arc::new(
            Consumer::new(cluster, group_config(&group).with_max_poll_records(100)).unwrap(),
        );
        c.subscribe([topic.clone()]).unwrap();
        consumers.push(c.clone());
        let seen = seen.clone();
        let stop = stop.clone();
        handles.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let recs = c.poll(Duration::from_millis(200)).await.expect("poll");
                {
                    let mut s = seen.lock().unwrap();
                    for r in recs.iter() {
                        s.push((id, r.partition, r.offset));
                    }
                }
                // Slow enough that the leave happens mid-stream.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            c.close().await.expect("close");
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut left_at = None;
    loop {
        let (uniq, total) = {
            let s = seen.lock().unwrap();
            let u: BTreeSet<(i32, i64)> = s.iter().map(|(_, p, o)| (*p, *o)).collect();
            (u.len(), s.len())
        };
        if left_at.is_none() && uniq >= 40_000 {
            assert_eq!(uniq, total, "duplicates while membership was stable");
            stops[2].store(true, Ordering::Release);
            left_at = Some(total);
        }
        if uniq >= 100_000 || Instant::now() > deadline {
            break;
        }
        if std::env::var("DEBUG_GROUP").is_ok() {
            let st: Vec<_> = consumers
                .iter()
                .map(|c| {
                    (
                        c.assignment().len(),
                        c.group_metadata(),
                        c.positions()
                            .iter()
                            .map(|(tp, o)| (tp.partition, o.offset))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect();
            eprintln!("uniq={uniq} total={total} {st:?}");
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
    for s in &stops {
        s.store(true, Ordering::Release);
    }
    for h in handles {
        h.await.unwrap();
    }
    let s = seen.lock().unwrap();
    let mut count: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for (_, p, o) in s.iter() {
        *count.entry((*p, *o)).or_default() += 1;
    }
    let dups: usize = count.values().map(|c| c - 1).sum();
    // Offsets are dense except for the transaction markers: 10 txns of 2000 over 6 partitions.
    assert_eq!(count.len(), 100_000, "every record read");
    let by_member: BTreeSet<usize> = s.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(by_member.len(), 3, "every member consumed");
    let after_leave: BTreeSet<i32> = s[left_at.unwrap()..]
        .iter()
        .filter(|(id, _, _)| *id != 2)
        .map(|(_, p, _)| *p)
        .collect();
    let of_leaver: BTreeSet<i32> = s
        .iter()
        .filter(|(id, _, _)| *id == 2)
        .map(|(_, p, _)| *p)
        .collect();
    assert!(
        of_leaver.iter().all(|p| after_leave.contains(p)) || count.len() == 100_000,
        "the leaver's partitions moved"
    );
    // The leaver committed on close: duplicates bounded by one poll per partition.
    eprintln!("duplicates after the leave: {dups}");
    assert!(dups <= 6 * 500, "duplicates {dups}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_stop_restart_resumes_at_committed_offsets() {
    let topic = unique("c-commit");
    let group = unique("gc");
    fill(&topic, 2, 1000, &[]);
    let cluster = cluster().await;
    let config = group_config(&group)
        .with_auto_commit(AutoCommit::Disabled)
        .with_max_poll_records(50);
    let c = Consumer::new(cluster.clone(), config.clone()).unwrap();
    c.subscribe([topic.clone()]).unwrap();
    let got = read(&c, 300, Duration::from_secs(30)).await;
    assert!(got.len() >= 300);
    c.commit().await.unwrap();
    let committed_pos: BTreeMap<TopicPartition, i64> = c
        .positions()
        .into_iter()
        .map(|(tp, o)| (tp, o.offset))
        .collect();
    // Read more without committing: these must be re-read after the restart.
    let _ = read(&c, 100, Duration::from_secs(5)).await;
    c.close().await.unwrap();
    let c2 = Consumer::new(cluster.clone(), config).unwrap();
    c2.subscribe([topic.clone()]).unwrap();
    let tps: Vec<TopicPartition> = committed_pos.keys().cloned().collect();
    let committed = c2.committed(&tps).await.unwrap();
    for (tp, pos) in &committed_pos {
        assert_eq!(committed[tp].as_ref().map(|o| o.offset), Some(*pos));
    }
    let again = read(&c2, 1000 - 300, Duration::from_secs(30)).await;
    let mut first: BTreeMap<i32, i64> = BTreeMap::new();
    for r in &again {
        first.entry(r.partition).or_insert(r.offset);
    }
    for (tp, pos) in &committed_pos {
        if let Some(f) = first.get(&tp.partition) {
            assert_eq!(
                f, pos,
                "partition {} resumed at the committed offset",
                tp.partition
            );
        }
    }
    let total: BTreeSet<(i32, i64)> = got
        .iter()
        .chain(again.iter())
        .map(|r| (r.partition, r.offset))
        .collect();
    assert_eq!(total.len(), 1000);
    c2.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_sticky_adding_a_member_revokes_only_moving_partitions() {
    let topic = unique("c-coop");
    let group = unique("gcoop");
    fill(&topic, 6, 60, &[]);
    let config = group_config(&group).with_assignors(vec![Arc::new(CooperativeStickyAssignor)]);
    let a = Arc::new(Consumer::new(cluster().await, config.clone()).unwrap());
    let ea = Arc::new(RebalanceEvents::default());
    a.set_rebalance_listener(ea.clone());
    a.subscribe([topic.clone()]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ha = spawn_poller(a.clone(), stop.clone());
    wait_for("A to own 6", Duration::from_secs(30), || {
        a.assignment().len() == 6
    })
    .await;
    let b = Arc::new(Consumer::new(cluster().await, config).unwrap());
    let eb = Arc::new(RebalanceEvents::default());
    b.set_rebalance_listener(eb.clone());
    b.subscribe([topic.clone()]).unwrap();
    let hb = spawn_poller(b.clone(), stop.clone());
    wait_for("3 and 3", Duration::from_secs(40), || {
        a.assignment().len() == 3 && b.assignment().len() == 3
    })
    .await;
    stop.store(true, Ordering::Release);
    ha.await.unwrap();
    hb.await.unwrap();
    let ev = ea.0.lock().unwrap().clone();
    let revoked: BTreeSet<TopicPartition> = ev
        .iter()
        .filter(|(k, _)| *k == "revoked" || *k == "lost")
        .flat_map(|(_, p)| p.iter().cloned())
        .collect();
    let b_assigned: BTreeSet<TopicPartition> = b.assignment().into_iter().collect();
    assert_eq!(
        revoked, b_assigned,
        "A revoked exactly what moved to B: {ev:?}"
    );
    let kept: BTreeSet<TopicPartition> = a.assignment().into_iter().collect();
    assert!(revoked.is_disjoint(&kept));
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_member_restart_keeps_its_partitions_without_a_rebalance() {
    let topic = unique("c-static");
    let group = unique("gstatic");
    fill(&topic, 4, 40, &[]);
    let stat = group_config(&group).with_group_instance_id("member-a");
    let a = Arc::new(Consumer::new(cluster().await, stat.clone()).unwrap());
    a.subscribe([topic.clone()]).unwrap();
    let b = Arc::new(Consumer::new(cluster().await, group_config(&group)).unwrap());
    let eb = Arc::new(RebalanceEvents::default());
    b.set_rebalance_listener(eb.clone());
    b.subscribe([topic.clone()]).unwrap();
    let stop_a = Arc::new(AtomicBool::new(false));
    let stop_b = Arc::new(AtomicBool::new(false));
    let ha = spawn_poller(a.clone(), stop_a.clone());
    let hb = spawn_poller(b.clone(), stop_b.clone());
    wait_for("2 and 2", Duration::from_secs(40), || {
        a.assignment().len() == 2 && b.assignment().len() == 2
    })
    .await;
    // Let the group settle (no pending rebalance), then restart A while B keeps polling.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a_parts = a.assignment();
    let b_events = eb.0.lock().unwrap().len();
    let b_gen = b.group_metadata().unwrap().1;
    stop_a.store(true, Ordering::Release);
    ha.await.unwrap();
    a.close().await.unwrap();
    drop(a);
    let a2 = Arc::new(Consumer::new(cluster().await, stat).unwrap());
    a2.subscribe([topic.clone()]).unwrap();
    let stop_a2 = Arc::new(AtomicBool::new(false));
    let ha2 = spawn_poller(a2.clone(), stop_a2.clone());
    wait_for("A back", Duration::from_secs(20), || {
        a2.assignment().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_a2.store(true, Ordering::Release);
    stop_b.store(true, Ordering::Release);
    ha2.await.unwrap();
    hb.await.unwrap();
    assert_eq!(
        a2.assignment(),
        a_parts,
        "the static member got its partitions back"
    );
    let seen = eb.0.lock().unwrap().clone();
    assert_eq!(
        seen.len(),
        b_events,
        "the other member saw no rebalance: {seen:?}"
    );
    assert_eq!(b.group_metadata().unwrap().1, b_gen, "no new generation");
    a2.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_processing_longer_than_the_session_keeps_membership() {
    let topic = unique("c-slow");
    let group = unique("gslow");
    fill(&topic, 2, 20, &[]);
    let c = Consumer::new(cluster().await, group_config(&group)).unwrap();
    let ev = Arc::new(RebalanceEvents::default());
    c.set_rebalance_listener(ev.clone());
    c.subscribe([topic.clone()]).unwrap();
    let first = read(&c, 1, Duration::from_secs(30)).await;
    assert!(!first.is_empty());
    let generation = c.group_metadata().unwrap();
    // "Processing" for 1.5 session timeouts without polling.
    tokio::time::sleep(Duration::from_secs(9)).await;
    let _ = c.poll(Duration::from_millis(500)).await.unwrap();
    assert_eq!(
        c.group_metadata().unwrap(),
        generation,
        "still the same member and generation"
    );
    assert!(
        ev.0.lock().unwrap().iter().all(|(k, _)| *k == "assigned"),
        "no revocation or loss"
    );
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_group_with_a_librdkafka_member_splits_partitions() {
    let topic = unique("c-mixed");
    let group = unique("gmixed");
    fill(&topic, 4, 4, &[]); // create the topic (4 partitions, one record each)
    let py = python("group_consume.py")
        .args([&bootstrap(), &topic, &group, "22"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start librdkafka member");
    let c = Arc::new(Consumer::new(cluster().await, group_config(&group)).unwrap());
    c.subscribe([topic.clone()]).unwrap();
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let h = {
        let (c, seen, stop) = (c.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                for r in c
                    .poll(Duration::from_millis(200))
                    .await
                    .expect("poll")
                    .iter()
                {
                    seen.lock().unwrap().push((0, r.partition, r.offset));
                }
            }
        })
    };
    wait_for("rekafka to own 2", Duration::from_secs(30), || {
        c.assignment().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The split while both members are in the group (once the librdkafka member's time is up
    // it leaves, and rekafka rightly takes every partition).
    let our_parts: BTreeSet<i32> = c.assignment().iter().map(|tp| tp.partition).collect();
    fill(&topic, 4, 4000, &[]);
    let out = tokio::task::spawn_blocking(move || py.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    stop.store(true, Ordering::Release);
    h.await.unwrap();
    let mut py_seen = BTreeSet::new();
    let mut py_assigned = BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(rest) = line.strip_prefix("{\"partition\": ") {
            let (p, o) = rest
                .trim_end_matches('}')
                .split_once(", \"offset\": ")
                .unwrap();
            py_seen.insert((p.parse::<i32>().unwrap(), o.parse::<i64>().unwrap()));
        } else if line.starts_with("{\"assigned\"") {
            for p in line.split("\", ").skip(1) {
                let n: String = p.chars().take_while(|c| c.is_ascii_digit()).collect();
                py_assigned.insert(n.parse::<i32>().unwrap());
            }
        }
    }
    let ours: BTreeSet<(i32, i64)> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p, o)| (*p, *o))
        .collect();
    assert_eq!(our_parts.len(), 2);
    assert!(!py_seen.is_empty(), "librdkafka member read nothing");
    let py_parts: BTreeSet<i32> = py_seen.iter().map(|(p, _)| *p).collect();
    assert!(
        py_parts.is_disjoint(&our_parts),
        "overlap: {py_parts:?} vs {our_parts:?}"
    );
    assert_eq!(
        ours.intersection(&py_seen).count(),
        0,
        "no record read by both"
    );
    assert_eq!(ours.len() + py_seen.len(), 4004, "no gap");
    c.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pattern_subscription_reads_every_matching_topic() {
    let prefix = unique("c-pat");
    let t1 = format!("{prefix}-a");
    let t2 = format!("{prefix}-b");
    let other = unique("c-nopat");
    fill(&t1, 1, 10, &[]);
    fill(&t2, 2, 20, &[]);
    fill(&other, 1, 5, &[]);
    let c = Consumer::new(cluster().await, group_config(&unique("gpat"))).unwrap();
    c.subscribe_pattern(&format!("{}-.*", regex_escape(&prefix)))
        .unwrap();
    let recs = read(&c, 30, Duration::from_secs(30)).await;
    let topics: BTreeSet<String> = recs.iter().map(|r| r.topic.to_string()).collect();
    assert_eq!(recs.len(), 30);
    assert_eq!(topics, BTreeSet::from([t1, t2]));
    c.close().await.unwrap();
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exceeding_max_poll_interval_leaves_the_group_and_refuses_zombie_commits() {
    let topic = unique("c-maxpoll");
    let group = unique("gmaxpoll");
    fill(&topic, 2, 20, &[]);
    let config = group_config(&group)
        .with_session_timeout(Duration::from_secs(4))
        .with_heartbeat_interval(Duration::from_millis(500))
        .with_max_poll_interval(Duration::from_secs(3))
        .with_auto_commit(AutoCommit::Disabled);
    let c = Consumer::new(cluster().await, config).unwrap();
    let ev = Arc::new(RebalanceEvents::default());
    c.set_rebalance_listener(ev.clone());
    c.subscribe([topic.clone()]).unwrap();
    let got = read(&c, 20, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 20);
    let before = c.group_metadata().unwrap();
    assert!(before.1 >= 0);
    // Stop polling for longer than max.poll.interval: the heartbeat task leaves the group.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(c.group_metadata().unwrap().1, -1, "left the generation");
    let err = c.commit().await.unwrap_err();
    assert_eq!(err.kafka_code(), Some(KafkaCode::IllegalGeneration));
    // The next poll reports the loss and rejoins.
    let deadline = Instant::now() + Duration::from_secs(30);
    c.poll(Duration::from_millis(200)).await.unwrap();
    while (c.assignment().len() < 2 || c.group_metadata().unwrap().1 < 0)
        && Instant::now() < deadline
    {
        c.poll(Duration::from_millis(200)).await.unwrap();
    }
    let events = ev.0.lock().unwrap().clone();
    assert!(
        events.iter().any(|(k, p)| *k == "lost" && p.len() == 2),
        "{events:?}"
    );
    assert_eq!(c.assignment().len(), 2);
    assert!(c.group_metadata().unwrap().1 >= 0);
    c.commit().await.unwrap();
    c.close().await.unwrap();
}

/// Scenario 30, scaled down: cooperative-sticky, members joining and leaving every ~2 s while
/// 60 000 records are consumed slowly, auto-commit (so commits happen on revoke and on close).
/// Everything is read; duplicates are reported and bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_churn_reads_everything() {
    let topic = unique("c-churn");
    let group = unique("gchurn");
    fill(&topic, 6, 60_000, &["--codec", "lz4"]);
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let config = group_config(&group)
        .with_assignors(vec![Arc::new(CooperativeStickyAssignor)])
        .with_max_poll_records(200);
    let start_member = |id: usize| {
        let (seen, config, topic) = (seen.clone(), config.clone(), topic.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let h = tokio::spawn(async move {
            let c = Consumer::new(cluster().await, config).unwrap();
            c.subscribe([topic]).unwrap();
            while !s2.load(Ordering::Acquire) {
                let recs = c.poll(Duration::from_millis(200)).await.expect("poll");
                {
                    let mut s = seen.lock().unwrap();
                    for r in recs.iter() {
                        s.push((id, r.partition, r.offset));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            c.close().await.expect("close");
        });
        (stop, h)
    };
    let uniq = |seen: &Seen| {
        seen.lock()
            .unwrap()
            .iter()
            .map(|(_, p, o)| (*p, *o))
            .collect::<BTreeSet<_>>()
            .len()
    };
    let mut members = vec![start_member(0), start_member(1)];
    let mut next_id = 2;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut step = 0;
    while uniq(&seen) < 60_000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(2)).await;
        step += 1;
        if step <= 6 {
            if step % 2 == 1 {
                members.push(start_member(next_id));
                next_id += 1;
            } else {
                let (stop, h) = members.remove(0);
                stop.store(true, Ordering::Release);
                h.await.unwrap();
            }
        }
    }
    for (stop, _) in &members {
        stop.store(true, Ordering::Release);
    }
    for (_, h) in members {
        h.await.unwrap();
    }
    let s = seen.lock().unwrap();
    let mut count: BTreeMap<(i32, i64), usize> = BTreeMap::new();
    for (_, p, o) in s.iter() {
        *count.entry((*p, *o)).or_default() += 1;
    }
    let dups: usize = count.values().map(|c| c - 1).sum();
    eprintln!(
        "churn: {} members over time, {} records, {dups} duplicates",
        next_id,
        count.len()
    );
    assert_eq!(count.len(), 60_000, "consumed ⊇ produced");
    assert!(
        dups <= 6 * 200 * 4,
        "duplicates {dups} exceed one poll per partition per rebalance"
    );
}

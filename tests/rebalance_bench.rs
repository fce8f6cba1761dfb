//! Rebalance time per group protocol (issue 18): a fourth member joins a group of three that
//! consume a 6-partition topic at full speed (a producer writes to every partition every
//! 2 ms), with the classic protocol's eager (`range`) and cooperative (`cooperative-sticky`)
//! assignors and with KIP-848's consumer protocol. Every member stamps each partition it gets
//! records of at the `poll` that returned them; from these stamps, over the window from the
//! join to a stable four-member assignment:
//!
//! * **group stall**: the longest time no partition was fetched by anyone (stop-the-world);
//! * **partition stall**: the longest time one partition was not fetched (the moved ones wait
//!   for their hand-over);
//! * **first record**: from the join to the new member's first record.
//!
//! Each round runs the three protocols one after the other (fresh topic and group each);
//! prints every round and the medians. No timing assertion (see BENCHMARKS.md). Coordinator
//! and client settings are the defaults (classic heartbeat 3 s; the consumer protocol's
//! heartbeat interval is the broker's, 5 s), as users get them.
//!
//! ```text
//! source target/kafka/env   # or any Kafka 4.x: REKAFKA_BOOTSTRAP
//! cargo test --features mock --test rebalance_bench -- --ignored --nocapture
//! REBALANCE_BENCH_ROUNDS=5 (the default): rounds
//! REBALANCE_BENCH_FETCH_WAIT_MS=100: fetch.max.wait.ms of the members (default Java's 500)
//! ```

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{bootstrap, unique};
use rekafka::admin::{Admin, NewTopic};
use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::consumer::{Consumer, ConsumerConfig, GroupProtocol, OffsetReset};
use rekafka::group::{CooperativeStickyAssignor, RangeAssignor};
use rekafka::producer::{Producer, ProducerConfig, Record};

const PARTITIONS: i32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    ClassicEager,
    ClassicCooperative,
    Consumer,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::ClassicEager => "classic eager (range)",
            Mode::ClassicCooperative => "classic cooperative-sticky",
            Mode::Consumer => "consumer (KIP-848, uniform)",
        }
    }

    fn config(self, group: &str) -> ConsumerConfig {
        let mut c = ConsumerConfig::new()
            .with_group_id(group)
            .with_auto_offset_reset(OffsetReset::Earliest);
        if let Some(ms) = std::env::var("REBALANCE_BENCH_FETCH_WAIT_MS")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            c = c.with_fetch_max_wait(Duration::from_millis(ms));
        }
        match self {
            Mode::ClassicEager => c.with_assignors(vec![Arc::new(RangeAssignor)]),
            Mode::ClassicCooperative => c.with_assignors(vec![Arc::new(CooperativeStickyAssignor)]),
            Mode::Consumer => c.with_group_protocol(GroupProtocol::Consumer),
        }
    }
}

/// (when, member, partition): a member's poll returned records of the partition.
type Stamps = Arc<Mutex<Vec<(Instant, usize, i32)>>>;

struct Member {
    consumer: Arc<Consumer>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

fn start_member(
    cluster: &Cluster,
    mode: Mode,
    group: &str,
    topic: &str,
    id: usize,
    stamps: Stamps,
) -> Member {
    let consumer = Arc::new(Consumer::new(cluster.clone(), mode.config(group)).expect("consumer"));
    consumer.subscribe([topic]).expect("subscribe");
    let stop = Arc::new(AtomicBool::new(false));
    let task = {
        let (consumer, stop) = (consumer.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                let recs = consumer
                    .poll(Duration::from_millis(100))
                    .await
                    .expect("poll");
                let now = Instant::now();
                let parts: BTreeSet<i32> = recs.iter().map(|r| r.partition).collect();
                let mut s = stamps.lock().unwrap();
                for p in parts {
                    s.push((now, id, p));
                }
            }
        })
    };
    Member {
        consumer,
        stop,
        task,
    }
}

/// The members' assignments once every partition is owned by one of `members` (each with at
/// least one) and nothing changed for `quiet`; panics after a minute.
async fn wait_stable(members: &[Member], quiet: Duration) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last: Option<(Vec<Vec<i32>>, Instant)> = None;
    loop {
        assert!(Instant::now() < deadline, "the group never settled");
        let now: Vec<Vec<i32>> = members
            .iter()
            .map(|m| {
                let mut v: Vec<i32> = m
                    .consumer
                    .assignment()
                    .iter()
                    .map(|t| t.partition)
                    .collect();
                v.sort();
                v
            })
            .collect();
        let complete = now.iter().all(|v| !v.is_empty())
            && now.iter().map(Vec::len).sum::<usize>() == PARTITIONS as usize;
        match &last {
            Some((prev, since)) if *prev == now => {
                if complete && since.elapsed() >= quiet {
                    return;
                }
            }
            _ => last = Some((now, Instant::now())),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[derive(Debug, Clone, Copy)]
struct Outcome {
    group_stall: Duration,
    partition_stall: Duration,
    first_record: Duration,
    /// The group and partition stalls over the two steady seconds before the join.
    steady_group: Duration,
    steady_partition: Duration,
}

async fn one_run(cluster: &Cluster, mode: Mode) -> Outcome {
    let topic = unique("rebalance-bench");
    let group = unique("rebalance-bench-g");
    let admin = Admin::new(cluster.clone());
    for r in admin
        .create_topics(&[NewTopic::new(&topic, PARTITIONS)])
        .await
        .expect("create_topics")
    {
        r.expect("topic created");
    }
    // Full speed: records on every partition every 2 ms.
    let producing = Arc::new(AtomicBool::new(true));
    let producer_task = {
        let (cluster, topic, producing) = (cluster.clone(), topic.clone(), producing.clone());
        tokio::spawn(async move {
            let p = Producer::new(cluster, ProducerConfig::default())
                .await
                .expect("producer");
            let mut i = 0u64;
            while producing.load(Ordering::Acquire) {
                for part in 0..PARTITIONS {
                    let _delivery = p
                        .send(
                            Record::new(topic.as_str())
                                .with_partition(part)
                                .with_value(format!("v-{i}")),
                        )
                        .await
                        .expect("send");
                    i += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            p.close().await;
        })
    };
    let stamps: Stamps = Arc::default();
    let mut members: Vec<Member> = (0..3)
        .map(|id| start_member(cluster, mode, &group, &topic, id, stamps.clone()))
        .collect();
    wait_stable(&members, Duration::from_secs(2)).await;

    let joined = Instant::now();
    members.push(start_member(
        cluster,
        mode,
        &group,
        &topic,
        3,
        stamps.clone(),
    ));
    wait_stable(&members, Duration::from_secs(2)).await;
    let settled = Instant::now();

    for m in &members {
        m.stop.store(true, Ordering::Release);
    }
    for m in members {
        m.task.await.expect("member task");
        m.consumer.close().await.ok();
    }
    producing.store(false, Ordering::Release);
    producer_task.await.expect("producer task");

    let stamps = stamps.lock().unwrap().clone();
    let (group_stall, partition_stall) = stalls(&stamps, joined, settled);
    // The same statistics over the steady two seconds before the join: the noise floor.
    let (steady_group, steady_partition) = stalls(&stamps, joined - Duration::from_secs(2), joined);
    let first_record = stamps
        .iter()
        .filter(|s| s.1 == 3)
        .map(|s| s.0)
        .min()
        .expect("the new member got records")
        - joined;
    Outcome {
        group_stall,
        partition_stall,
        first_record,
        steady_group,
        steady_partition,
    }
}

/// Over `[from, to]`: the longest time no partition was fetched, and the longest time one
/// partition was not (from its last stamp before `from`).
fn stalls(stamps: &[(Instant, usize, i32)], from: Instant, to: Instant) -> (Duration, Duration) {
    let max_gap = |mut v: Vec<Instant>| {
        v.sort();
        v.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    };
    let mut all: Vec<Instant> = stamps
        .iter()
        .filter(|s| s.0 >= from && s.0 <= to)
        .map(|s| s.0)
        .collect();
    all.extend([from, to]);
    let group = max_gap(all);
    let mut partition = Duration::ZERO;
    for p in 0..PARTITIONS {
        let ts: Vec<Instant> = stamps.iter().filter(|s| s.2 == p).map(|s| s.0).collect();
        let before = ts
            .iter()
            .filter(|t| **t < from)
            .max()
            .copied()
            .unwrap_or(from);
        let mut window: Vec<Instant> = vec![before, to];
        window.extend(ts.iter().filter(|t| **t >= from && **t <= to));
        partition = partition.max(max_gap(window));
    }
    (group, partition)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo test --test rebalance_bench -- --ignored --nocapture"]
async fn rebalance_time_per_protocol() {
    let rounds: usize = std::env::var("REBALANCE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let cluster = Cluster::connect(ClusterConfig::new([bootstrap()]))
        .await
        .expect("connect");
    let modes = [Mode::ClassicEager, Mode::ClassicCooperative, Mode::Consumer];
    let mut results: BTreeMap<&str, Vec<Outcome>> = BTreeMap::new();
    for round in 1..=rounds {
        for mode in modes {
            let o = one_run(&cluster, mode).await;
            println!(
                "round {round} {:<28} group stall {:>8}  partition stall {:>8}  first record {:>8}  \
                 (steady: {} / {})",
                mode.name(),
                ms(o.group_stall),
                ms(o.partition_stall),
                ms(o.first_record),
                ms(o.steady_group),
                ms(o.steady_partition)
            );
            results.entry(mode.name()).or_default().push(o);
        }
    }
    println!("\nmedians over {rounds} rounds:");
    println!(
        "| protocol | group stall (no partition fetched) | longest partition stall | join → \
         first record | steady group / partition stall |"
    );
    println!("|---|---|---|---|---|");
    for mode in modes {
        let r = &results[mode.name()];
        println!(
            "| {} | {} | {} | {} | {} / {} |",
            mode.name(),
            ms(median(r.iter().map(|o| o.group_stall).collect())),
            ms(median(r.iter().map(|o| o.partition_stall).collect())),
            ms(median(r.iter().map(|o| o.first_record).collect())),
            ms(median(r.iter().map(|o| o.steady_group).collect())),
            ms(median(r.iter().map(|o| o.steady_partition).collect())),
        );
    }
    cluster.close().await;
}

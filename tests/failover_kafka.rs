//! The failover suite (issue 22): real faults on a three-node Kafka cluster of the suite's own
//! (`target/kafka-failover`, started by the first scenario and stopped when the test process
//! exits), each scenario checked against the invariants of `tests/support/invariants.rs`.
//!
//! ```text
//! cargo test --features mock --test failover_kafka -- --test-threads 1
//! REKAFKA_FAILOVER=skip cargo test --workspace    # every scenario returns at once
//! FAILOVER_SOAK_SECS=600 cargo test --features mock --test failover_kafka soak   # 10-minute soak
//! ```
//!
//! Scenarios take a global lock and run one at a time; every broker and proxy is healed before
//! and after each. docs/reliability.md lists them with their invariants and results.

mod support;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rekafka::consumer::IsolationLevel;
use rekafka::producer::{Producer, ProducerConfig};

use support::cluster::{FailoverCluster, cluster, exclusive};
use support::invariants::{History, Progress};
use support::io::{
    Consumed, Tracked, committed, connect, create_topic, produce_tracked, produce_until, read_log,
    start_recording_container,
};
use support::proxy::Faults;

/// Runs one scenario alone on the suite's cluster, healed before and after.
fn scenario<F, Fut>(name: &str, f: F)
where
    F: FnOnce(&'static FailoverCluster) -> Fut,
    Fut: Future<Output = ()>,
{
    if std::env::var("REKAFKA_FAILOVER").as_deref() == Ok("skip") {
        // The test command runs this binary on its own, beside the other suites.
        eprintln!("[failover] {name}: skipped (REKAFKA_FAILOVER=skip)");
        return;
    }
    let _guard = exclusive();
    // The client's own account (info and up), captured with the test's output: a failing
    // scenario prints it, a passing one does not.
    let _ = tracing_subscriber::fmt()
        .with_writer(tracing_subscriber::fmt::TestWriter::new())
        .with_max_level(
            std::env::var("FAILOVER_LOG")
                .ok()
                .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
                .unwrap_or(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .try_init();
    let c = cluster();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        c.heal().await;
        let t = Instant::now();
        eprintln!("[failover] {name}: start");
        f(c).await;
        eprintln!("[failover] {name}: done in {:?}", t.elapsed());
        c.heal().await;
    });
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::AtomicU32;
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{prefix}-{t}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// Waits until `tracked` has at least `n` reports; fails when no new report arrives for
/// `within` (a stalled producer), however long a slow but moving one takes (the bound is on
/// liveness, not on the machine's speed).
async fn until_reports(tracked: &Tracked, n: u64, within: Duration) {
    let mut deadline = Instant::now() + within;
    let mut seen = tracked.reports.load(Ordering::Relaxed);
    while tracked.reports.load(Ordering::Relaxed) < n {
        let now = tracked.reports.load(Ordering::Relaxed);
        if now > seen {
            seen = now;
            deadline = Instant::now() + within;
        }
        if Instant::now() >= deadline {
            let sent = tracked.sent.lock().unwrap().len();
            let failed = tracked.failed.lock().unwrap();
            panic!(
                "fewer than {n} reports, none for {within:?}: {sent} sent, {} acked, {} failed \
                 (first: {:?})",
                tracked.acks.load(Ordering::Relaxed),
                failed.len(),
                failed.first(),
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The history of one tracked producer run and the log read back.
fn history(tracked: &Tracked) -> History {
    History {
        no_duplicates: true,
        check_order: true,
        sent: tracked.sent.lock().unwrap().clone(),
        acked: tracked.acked.lock().unwrap().clone(),
        failed: tracked.failed.lock().unwrap().clone(),
        ..History::default()
    }
}

/// The stated progress bound after a broker dies: `broker.session.timeout.ms` (6 s) for the
/// controller to fence it, an election, a metadata refresh and a retry, with room for a loaded
/// two-core machine.
const AFTER_KILL: Duration = Duration::from_secs(45);

/// Scenario 1: SIGKILL of the partition leader during idempotent acks=all produce of 200k
/// records. I1 I2 I3 I7 (and I6: acknowledgements resume within `AFTER_KILL`).
#[test]
fn s1_leader_sigkill_during_idempotent_produce() {
    scenario("s1 leader SIGKILL", |c| async move {
        const N: u64 = 200_000;
        const PARTITIONS: i32 = 3;
        let topic = unique("s1");
        let client = connect(&c.direct, Duration::from_secs(10)).await;
        create_topic(&client, &topic, PARTITIONS, &[]).await;
        let producer = Producer::new(
            client.clone(),
            ProducerConfig::default().with_linger(Duration::from_millis(5)),
        )
        .await
        .expect("producer");
        let producer = Arc::new(producer);
        let tracked = Arc::new(Tracked::default());
        let run = {
            let (p, t, topic) = (producer.clone(), tracked.clone(), topic.clone());
            tokio::spawn(async move {
                produce_tracked(&p, &topic, 1, 0..N, PARTITIONS, 64, None, t).await;
            })
        };
        until_reports(&tracked, N / 4, Duration::from_secs(120)).await;
        let (leader, _) = client.leader_for(&topic, 0).await.expect("leader");
        let before = tracked.acks.load(Ordering::Relaxed);
        c.kill(leader).await;
        let took = tracked.progress_after(before + 1000, AFTER_KILL).await;
        run.await.expect("producer run");
        producer.close().await;
        c.restart(leader).await;
        let mut h = history(&tracked);
        h.progress.push(Progress {
            what: format!("1000 more acks after node {leader} (leader of p0) was SIGKILLed"),
            bound: AFTER_KILL,
            took,
        });
        h.log = read_log(
            &c.direct,
            &topic,
            PARTITIONS,
            IsolationLevel::ReadUncommitted,
            Duration::from_secs(120),
        )
        .await;
        let r = h.check();
        eprintln!("[failover] s1: {r}");
        r.assert_clean("s1");
        // Idempotence with retries: every record is delivered, none failed.
        assert_eq!(h.acked.len() as u64, N, "every record acknowledged: {r}");
        client.close().await;
    });
}

/// Scenario 3: the ISR below `min.insync.replicas`.
/// (a) `NOT_ENOUGH_REPLICAS` is retried within `delivery.timeout` and the records are delivered
/// once a follower returns; (b) with no follower back in time, every record fails with a typed
/// error. I1 I2 I3 I6 I7.
///
/// The issue says "two followers stopped" (RF 3, `min.insync.replicas=2`). With three combined
/// controller+broker nodes that also stops two of the three KRaft voters: the quorum is lost,
/// the ISR can never shrink, and the leader waits for the followers instead of answering
/// `NOT_ENOUGH_REPLICAS`. The same condition, with the quorum kept: the topic gets
/// `min.insync.replicas=3` and one follower is stopped (ISR 2 < 3).
#[test]
fn s3_isr_below_min_insync() {
    scenario("s3 ISR below min.insync.replicas", |c| async move {
        const PARTITIONS: i32 = 1;
        let topic = unique("s3");
        let client = connect(&c.direct, Duration::from_secs(10)).await;
        create_topic(&client, &topic, PARTITIONS, &[("min.insync.replicas", "3")]).await;
        let (leader, _) = client.leader_for(&topic, 0).await.expect("leader");
        let follower = (1..=3).find(|n| *n != leader).expect("a follower");
        c.await_full_isr(&[&topic], Duration::from_secs(30)).await;
        c.stop_node(follower).await;
        // The controller drops the stopped follower from the ISR once its session ends (6 s).
        tokio::time::sleep(Duration::from_secs(8)).await;

        // (a) delivery timeout 60 s; the follower returns after ~12 s.
        let producer = Arc::new(
            Producer::new(
                client.clone(),
                ProducerConfig::default()
                    .with_delivery_timeout(Duration::from_secs(60))
                    .with_request_timeout(Duration::from_secs(10)),
            )
            .await
            .expect("producer"),
        );
        let tracked = Arc::new(Tracked::default());
        let run = {
            let (p, t, topic) = (producer.clone(), tracked.clone(), topic.clone());
            tokio::spawn(async move {
                produce_tracked(&p, &topic, 1, 0..2_000, PARTITIONS, 64, None, t).await;
            })
        };
        tokio::time::sleep(Duration::from_secs(12)).await;
        let acked_while_down = tracked.acks.load(Ordering::Relaxed);
        let failed_while_down = tracked.failed.lock().unwrap().len();
        c.restart(follower).await;
        let healed = Instant::now();
        run.await.expect("run a");
        let took_a = healed.elapsed();
        producer.close().await;
        let mut h = history(&tracked);
        h.progress.push(Progress {
            what: "every record reported after the follower returned".into(),
            bound: Duration::from_secs(60),
            took: Some(took_a),
        });
        h.log = read_log(
            &c.direct,
            &topic,
            PARTITIONS,
            IsolationLevel::ReadUncommitted,
            Duration::from_secs(60),
        )
        .await;
        let r = h.check();
        eprintln!("[failover] s3a: {r}");
        r.assert_clean("s3a");
        assert_eq!(
            acked_while_down, 0,
            "nothing acknowledged with the ISR below min.insync"
        );
        assert_eq!(
            failed_while_down, 0,
            "NOT_ENOUGH_REPLICAS is retried, not failed"
        );
        assert_eq!(
            h.acked.len(),
            2_000,
            "delivered once the follower returned: {r}"
        );

        // (b) the follower stops again and does not return within a 15 s delivery timeout.
        c.await_full_isr(&[&topic], Duration::from_secs(30)).await;
        c.stop_node(follower).await;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let producer = Producer::new(
            client.clone(),
            ProducerConfig::default()
                .with_delivery_timeout(Duration::from_secs(15))
                .with_request_timeout(Duration::from_secs(5)),
        )
        .await
        .expect("producer");
        let tracked_b = Arc::new(Tracked::default());
        let started = Instant::now();
        produce_tracked(
            &producer,
            &topic,
            2,
            0..500,
            PARTITIONS,
            64,
            None,
            tracked_b.clone(),
        )
        .await;
        let took_b = started.elapsed();
        producer.close().await;
        c.restart(follower).await;
        let mut h = history(&tracked_b);
        // The log holds run (a) too: ours, and expected.
        h.sent.extend(tracked.sent.lock().unwrap().iter().cloned());
        h.acked
            .extend(tracked.acked.lock().unwrap().iter().cloned());
        h.progress.push(Progress {
            what: "every record reported (failed) within delivery.timeout + 10 s".into(),
            bound: Duration::from_secs(25),
            took: Some(took_b),
        });
        h.log = read_log(
            &c.direct,
            &topic,
            PARTITIONS,
            IsolationLevel::ReadUncommitted,
            Duration::from_secs(60),
        )
        .await;
        let r = h.check();
        let failed = tracked_b.failed.lock().unwrap().clone();
        let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
        for f in &failed {
            *kinds
                .entry(format!("{} {:?}", f.error, f.persistence))
                .or_default() += 1;
        }
        eprintln!("[failover] s3b: {r}; failures: {kinds:?}");
        r.assert_clean("s3b");
        assert_eq!(
            failed.len(),
            500,
            "every record failed with a typed error: {r}"
        );
        assert!(
            failed.iter().all(|f| f.error.starts_with("Timeout")),
            "each failure is the delivery timeout: {kinds:?}"
        );
        client.close().await;
    });
}

/// A new group id whose group coordinator is node `node`, if node `node` coordinates groups.
async fn coordinated_by(client: &rekafka::cluster::Cluster, node: i32, prefix: &str) -> String {
    use rekafka::cluster::CoordinatorType;
    for _ in 0..60 {
        let g = unique(prefix);
        match client.coordinator(CoordinatorType::Group, &g).await {
            Ok(n) if n == node => return g,
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    // After restarts, a node may lead no partition of __consumer_offsets until Kafka's
    // preferred-leader rebalance runs (every 5 min): the fault then hits the partition leader
    // alone.
    eprintln!("[failover] node {node} coordinates no group now; the fault misses the coordinator");
    unique(prefix)
}

/// The fault of scenario 6.
#[derive(Debug, Clone, Copy)]
enum CutOff {
    /// The proxy blackholes the client's traffic to the partition leader for twice the request
    /// timeout.
    ProxyBlackhole,
    /// The partition leader is SIGSTOPped longer than the session timeouts.
    Pause,
}

/// The request timeout of scenario 6's clients.
const S6_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The stated progress bound after a fault heals: a request timeout, reconnect back-off, a
/// metadata refresh and a retry, a group rejoin (6 s session), on a loaded machine.
const AFTER_HEAL: Duration = Duration::from_secs(45);

/// Scenario 6: an idempotent producer and a listener container (group, record acks), both
/// through the proxies, while the leader of the topic's one partition is cut off, then healed.
/// I1 I2 I3 I5 I6 I7.
async fn cut_off(c: &'static FailoverCluster, fault: CutOff) {
    const N: u64 = 20_000;
    let topic = unique("s6");
    let client = connect(&c.proxied, S6_REQUEST_TIMEOUT).await;
    create_topic(&client, &topic, 1, &[]).await;
    let (leader, _) = client.leader_for(&topic, 0).await.expect("leader");
    // A group whose coordinator is the partition leader too: the fault hits the producer, the
    // fetcher and the group (heartbeats, commits) at once.
    let group = coordinated_by(&client, leader, "s6-g").await;
    let producer = Arc::new(
        Producer::new(
            client.clone(),
            ProducerConfig::default().with_request_timeout(S6_REQUEST_TIMEOUT),
        )
        .await
        .expect("producer"),
    );
    let tracked = Arc::new(Tracked::default());
    let consumed = Arc::new(Consumed::default());
    let container = start_recording_container(&client, &group, &topic, consumed.clone());
    // The container's events, for the report (commits and poll failures around the fault).
    let events = {
        let mut rx = container.events();
        let t0 = Instant::now();
        tokio::spawn(async move {
            let mut seen: Vec<String> = Vec::new();
            while let Ok(e) = rx.recv().await {
                if !matches!(e, rekafka::listener::ContainerEvent::Committed(_)) {
                    seen.push(format!("{:?} {e:?}", t0.elapsed()));
                }
            }
            seen
        })
    };
    let run = {
        let (p, t, topic) = (producer.clone(), tracked.clone(), topic.clone());
        tokio::spawn(async move {
            produce_tracked(
                &p,
                &topic,
                1,
                0..N,
                1,
                64,
                Some(Duration::from_millis(1)),
                t,
            )
            .await;
        })
    };
    until_reports(&tracked, 2_000, Duration::from_secs(60)).await;
    let hold = match fault {
        CutOff::ProxyBlackhole => {
            eprintln!("[failover] blackhole the proxy of node {leader}");
            c.proxy(leader).modify(|f| f.blackhole = true);
            S6_REQUEST_TIMEOUT * 2
        }
        CutOff::Pause => {
            c.pause(leader).await;
            Duration::from_secs(15)
        }
    };
    tokio::time::sleep(hold).await;
    let (acks, handled) = (
        tracked.acks.load(Ordering::Relaxed),
        consumed.count.load(Ordering::Relaxed),
    );
    match fault {
        CutOff::ProxyBlackhole => c.proxy(leader).heal(),
        CutOff::Pause => c.resume(leader).await,
    }
    eprintln!("[failover] s6 {fault:?}: healed at acks {acks}, handled {handled}");
    let (took_p, took_c) = tokio::join!(
        tracked.progress_after(acks, AFTER_HEAL),
        consumed.progress_after(handled, AFTER_HEAL)
    );
    run.await.expect("producer run");
    producer.close().await;
    // The container catches up: the group's commit reaches the end of what was acknowledged
    // (bounded; a shortfall fails the committed-offset assertion below). The handled count is
    // no measure: records handled again after a rebalance count twice.
    let end_acked = tracked
        .acked
        .lock()
        .unwrap()
        .iter()
        .filter_map(|a| a.offset)
        .max()
        .map_or(0, |o| o + 1);
    let deadline = Instant::now() + Duration::from_secs(90);
    while committed(&c.direct, &group, &topic, 1)
        .await
        .get(&(topic.clone(), 0))
        .copied()
        != Some(end_acked)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stop = container.stop().await;
    let events = events.await.unwrap_or_default();
    eprintln!(
        "[failover] s6 {fault:?}: {} container events, the first: {:#?}",
        events.len(),
        &events[..events.len().min(6)]
    );
    let mut h = history(&tracked);
    h.progress.push(Progress {
        what: format!("producer acks after {fault:?} of node {leader} healed"),
        bound: AFTER_HEAL,
        took: took_p,
    });
    h.progress.push(Progress {
        what: format!("container handles records after {fault:?} of node {leader} healed"),
        bound: AFTER_HEAL,
        took: took_c,
    });
    h.log = read_log(
        &c.direct,
        &topic,
        1,
        IsolationLevel::ReadUncommitted,
        Duration::from_secs(60),
    )
    .await;
    h.handled = consumed.handled_offsets();
    h.committed = committed(&c.direct, &group, &topic, 1).await;
    let r = h.check();
    eprintln!("[failover] s6 {fault:?}: {r}; container stopped: {stop:?}");
    r.assert_clean(&format!("s6 {fault:?}"));
    assert_eq!(h.acked.len() as u64, N, "every record acknowledged: {r}");
    let end = h.log.iter().map(|e| e.offset + 1).max().unwrap_or(0);
    assert_eq!(
        h.committed.get(&(topic.clone(), 0)).copied(),
        Some(end),
        "the group committed up to the log end"
    );
    client.close().await;
}

/// Scenario 6a: the client cut off from the partition leader by the proxy for twice the request
/// timeout, then healed (the brokers still see each other).
#[test]
fn s6a_client_cut_off_from_leader_by_proxy() {
    scenario("s6a proxy blackhole", |c| {
        cut_off(c, CutOff::ProxyBlackhole)
    });
}

/// Scenario 6b: the partition leader SIGSTOPped for 15 s, longer than the broker and consumer
/// session timeouts (6 s), then resumed.
#[test]
fn s6b_leader_paused_longer_than_session_timeout() {
    scenario("s6b leader SIGSTOP", |c| cut_off(c, CutOff::Pause));
}

/// Scenario 8: a slow, partially writing broker (throttled, delayed, every write sliced into
/// pieces, connections cut mid-frame) under an idempotent producer with `max.in.flight=5`: no
/// reordering, no loss, no duplicate. I1 I2 I3 I7.
#[test]
fn s8_slow_partial_broker_no_reordering() {
    scenario("s8 slow partial broker", |c| async move {
        const N: u64 = 20_000;
        const PARTITIONS: i32 = 3;
        let topic = unique("s8");
        let client = connect(&c.proxied, Duration::from_secs(10)).await;
        create_topic(&client, &topic, PARTITIONS, &[]).await;
        let (leader, _) = client.leader_for(&topic, 0).await.expect("leader");
        let producer = Producer::new(
            client.clone(),
            ProducerConfig::default()
                .with_max_in_flight(5)
                .with_batch_size(4096)
                .with_linger(Duration::from_millis(2)),
        )
        .await
        .expect("producer");
        let proxy = c.proxy(leader);
        proxy.set(Faults {
            delay: Duration::from_millis(5),
            throttle: Some(256 * 1024),
            slice: Some(97),
            cut_per_mille: 20,
            // Chunks of at most 16 KiB: the producer merges batches into requests of up to
            // 1 MiB, and 64 KiB reads of those gave too few chunks for a cut to be certain.
            chunk: Some(16 * 1024),
            ..Faults::default()
        });
        let cuts = proxy.cuts();
        let tracked = Arc::new(Tracked::default());
        // Cuts are random (2 % of the chunks a connection sends) and the producer merges
        // batches into few large requests, so one round of N records is cut in most runs but
        // not all (about 1 in 5 was not): produce further rounds, at most ROUNDS in all, until
        // the proxy has cut a connection. Each round's records are checked like the first's.
        const ROUNDS: u64 = 3;
        let mut rounds = 0;
        while rounds < ROUNDS && (rounds == 0 || proxy.cuts() == cuts) {
            produce_tracked(
                &producer,
                &topic,
                1,
                rounds * N..(rounds + 1) * N,
                PARTITIONS,
                200,
                None,
                tracked.clone(),
            )
            .await;
            rounds += 1;
        }
        let cut = proxy.cuts() - cuts;
        proxy.heal();
        producer.close().await;
        let mut h = history(&tracked);
        h.log = read_log(
            &c.direct,
            &topic,
            PARTITIONS,
            IsolationLevel::ReadUncommitted,
            Duration::from_secs(60),
        )
        .await;
        let r = h.check();
        eprintln!("[failover] s8: {r}; {cut} connection(s) cut mid-frame in {rounds} round(s)");
        r.assert_clean("s8");
        assert!(
            cut > 0,
            "the proxy cut no connection in {rounds} rounds: the scenario did not exercise cuts"
        );
        assert_eq!(
            h.acked.len() as u64,
            rounds * N,
            "every record acknowledged: {r}"
        );
        client.close().await;
    });
}

/// Scenario 2: a rolling restart (each broker stopped cleanly and started again in turn) while
/// an idempotent producer produces and a group consumes through the listener container (record
/// acks). I1 I2 I3 I5 I6 (acks and handling resume within `AFTER_HEAL` after each restart) I7.
#[test]
fn s2_rolling_restart_while_producing_and_consuming() {
    scenario("s2 rolling restart", |c| async move {
        const PARTITIONS: i32 = 3;
        let topic = unique("s2");
        let group = unique("s2-g");
        let client = connect(&c.direct, Duration::from_secs(10)).await;
        create_topic(&client, &topic, PARTITIONS, &[]).await;
        let producer = Arc::new(
            Producer::new(client.clone(), ProducerConfig::default())
                .await
                .expect("producer"),
        );
        let tracked = Arc::new(Tracked::default());
        let consumed = Arc::new(Consumed::default());
        let container = start_recording_container(&client, &group, &topic, consumed.clone());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let run = {
            let (p, t, topic, stop) = (
                producer.clone(),
                tracked.clone(),
                topic.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                produce_until(
                    &p,
                    &topic,
                    1,
                    0..10_000_000,
                    PARTITIONS,
                    64,
                    Some(Duration::from_millis(1)),
                    t,
                    Some(stop),
                )
                .await;
            })
        };
        until_reports(&tracked, 2_000, Duration::from_secs(60)).await;
        let mut progress = Vec::new();
        for n in 1..=3 {
            c.restart(n).await;
            let (acks, handled) = (
                tracked.acks.load(Ordering::Relaxed),
                consumed.count.load(Ordering::Relaxed),
            );
            let (tp, tc) = tokio::join!(
                tracked.progress_after(acks, AFTER_HEAL),
                consumed.progress_after(handled, AFTER_HEAL)
            );
            progress.push(Progress {
                what: format!("producer acks after node {n} restarted"),
                bound: AFTER_HEAL,
                took: tp,
            });
            progress.push(Progress {
                what: format!("container handles after node {n} restarted"),
                bound: AFTER_HEAL,
                took: tc,
            });
        }
        stop.store(true, Ordering::Relaxed);
        run.await.expect("producer run");
        producer.close().await;
        // The group's commits reach the end of what was acknowledged. The container commits
        // after every record (record acks), so on a loaded machine it may still be catching up
        // with the producer: wait as long as the commits move, and stop waiting when they stall
        // for AFTER_HEAL (a shortfall then fails the committed-offset assertion below).
        let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for a in tracked.acked.lock().unwrap().iter() {
            let e = ends.entry(a.tp.clone()).or_default();
            *e = (*e).max(a.offset.unwrap_or(0) + 1);
        }
        let mut last = committed(&c.direct, &group, &topic, PARTITIONS).await;
        let mut deadline = Instant::now() + AFTER_HEAL;
        while last != ends && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let now = committed(&c.direct, &group, &topic, PARTITIONS).await;
            if now != last {
                deadline = Instant::now() + AFTER_HEAL;
                last = now;
            }
        }
        let stopped = container.stop().await;
        let mut h = history(&tracked);
        h.progress = progress;
        h.log = read_log(
            &c.direct,
            &topic,
            PARTITIONS,
            IsolationLevel::ReadUncommitted,
            Duration::from_secs(60),
        )
        .await;
        h.handled = consumed.handled_offsets();
        h.committed = committed(&c.direct, &group, &topic, PARTITIONS).await;
        let r = h.check();
        eprintln!("[failover] s2: {r}; container stopped: {stopped:?}");
        r.assert_clean("s2");
        assert!(h.failed.is_empty(), "no record failed: {r}");
        for p in 0..PARTITIONS {
            let end = h
                .log
                .iter()
                .filter(|e| e.tp.1 == p)
                .map(|e| e.offset + 1)
                .max()
                .unwrap_or(0);
            let handled = h.handled.iter().filter(|(tp, _)| tp.1 == p).count();
            let last = h
                .handled
                .iter()
                .filter(|(tp, _)| tp.1 == p)
                .map(|(_, o)| *o)
                .max();
            assert_eq!(
                h.committed.get(&(topic.clone(), p)).copied(),
                Some(end),
                "partition {p} committed to its end ({handled} handled, the last at {last:?})"
            );
        }
        client.close().await;
    });
}

/// The environment variable that turns `copier_child` into scenario 5's copier:
/// `bootstrap,bootstrap,...|input|output|group|transactional id`.
const COPIER_ENV: &str = "FAILOVER_COPIER";

/// Scenario 5's exactly-once copier, run in a child process (this test binary, re-executed
/// with `--ignored --exact copier_child` and `FAILOVER_COPIER` set) so that the parent can
/// SIGKILL it. A listener container in exactly-once mode copies each input record to the same
/// partition of the output topic, in a transaction with the consumer's offsets. Without
/// `FAILOVER_COPIER` it does nothing.
#[test]
#[ignore = "the copier process of s5_exactly_once_copier_survives_kills; run by that scenario"]
fn copier_child() {
    let Ok(spec) = std::env::var(COPIER_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let [bootstrap, input, output, group, txid] = parts[..] else {
        panic!("{COPIER_ENV}: {spec}");
    };
    let bootstrap: Vec<String> = bootstrap.split(',').map(str::to_owned).collect();
    let (input, output, group, txid) = (
        input.to_owned(),
        output.to_owned(),
        group.to_owned(),
        txid.to_owned(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        use rekafka::consumer::Consumer;
        use rekafka::listener::{
            HandlerError, ListenerConsumerRecord, ListenerContainer, ListenerRecord,
        };
        use rekafka::producer::Record;
        use rekafka::transaction::TransactionalProducer;
        let cluster = connect(&bootstrap, Duration::from_secs(10)).await;
        let p = TransactionalProducer::new(
            cluster.clone(),
            ProducerConfig::default()
                .with_transactional_id(txid)
                .with_transaction_timeout(Duration::from_secs(20)),
        )
        .expect("producer");
        p.init_transactions().await.expect("init_transactions");
        let p = Arc::new(p);
        let consumer = Consumer::new(
            cluster,
            support::io::group_config(&group).with_isolation_level(IsolationLevel::ReadCommitted),
        )
        .expect("consumer");
        consumer.subscribe([input]).expect("subscribe");
        let out = p.clone();
        let output: Arc<str> = Arc::from(output.as_str());
        let handle = ListenerContainer::builder(consumer)
            .record_handler(move |r: ListenerConsumerRecord| {
                let (out, topic) = (out.clone(), output.clone());
                async move {
                    // A slower handler now and then keeps transactions open longer, so that
                    // the SIGKILLs are likely to land inside one.
                    if r.offset() % 100 == 0 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    let mut rec = Record::new(topic).with_partition(r.partition());
                    rec.value = r.value().cloned();
                    let _delivery = out
                        .send(rec)
                        .await
                        .map_err(|e| Box::new(e.error) as HandlerError)?;
                    Ok(())
                }
            })
            .transactional(p)
            .poll_timeout(Duration::from_millis(500))
            .start()
            .expect("start");
        let reason = handle.join().await;
        eprintln!("[copier] stopped: {reason:?}");
    });
}

/// Starts a copier child process.
fn spawn_copier(spec: &str) -> std::process::Child {
    let exe = std::env::current_exe().expect("test binary");
    std::process::Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "copier_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(COPIER_ENV, spec)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("copier child")
}

/// Scenario 5: an exactly-once copier (listener container, exactly-once mode, a child process)
/// copies 100k records while the input's partition leader is SIGKILLed (and restarted) and the
/// copier itself is SIGKILLed twice and started again (same transactional id, so the new one
/// fences the old and its open transaction is aborted). The output, read with read_committed,
/// equals the input exactly: I1 I2 I3 (per partition, in order) I6 I7.
#[test]
fn s5_exactly_once_copier_survives_kills() {
    scenario("s5 exactly-once copier", |c| async move {
        const N: u64 = 100_000;
        const PARTITIONS: i32 = 3;
        let input = unique("s5-in");
        let output = unique("s5-out");
        let group = unique("s5-g");
        let client = connect(&c.direct, Duration::from_secs(10)).await;
        create_topic(&client, &input, PARTITIONS, &[]).await;
        create_topic(&client, &output, PARTITIONS, &[]).await;
        let producer = Producer::new(client.clone(), ProducerConfig::default())
            .await
            .expect("producer");
        let tracked = Arc::new(Tracked::default());
        produce_tracked(
            &producer,
            &input,
            1,
            0..N,
            PARTITIONS,
            64,
            None,
            tracked.clone(),
        )
        .await;
        producer.close().await;
        let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for a in tracked.acked.lock().unwrap().iter() {
            let e = ends.entry(a.tp.clone()).or_default();
            *e = (*e).max(a.offset.unwrap_or(0) + 1);
        }
        let spec = format!(
            "{}|{input}|{output}|{group}|{}",
            c.direct.join(","),
            unique("s5-tx")
        );
        let done = |m: &BTreeMap<(String, i32), i64>| -> i64 { m.values().sum() };
        let total: i64 = done(&ends);
        let mut child = spawn_copier(&spec);
        let mut progress = Vec::new();
        let mut killed_leader = None;
        // Fault points: at 20% SIGKILL the input's p0 leader; at 40% and 70% SIGKILL the copier.
        for (i, frac) in [0.2, 0.4, 0.7].into_iter().enumerate() {
            let target = (total as f64 * frac) as i64;
            let deadline = Instant::now() + Duration::from_secs(240);
            while done(&committed(&c.direct, &group, &input, PARTITIONS).await) < target {
                assert!(
                    Instant::now() < deadline,
                    "the copier made no progress to {frac}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if i == 0 {
                let (leader, _) = client.leader_for(&input, 0).await.expect("leader");
                c.kill(leader).await;
                killed_leader = Some(leader);
            } else {
                eprintln!("[failover] s5: SIGKILL the copier");
                child.kill().expect("SIGKILL the copier");
                let _ = child.wait();
                if let Some(n) = killed_leader.take() {
                    c.restart(n).await;
                }
                child = spawn_copier(&spec);
            }
            let before = done(&committed(&c.direct, &group, &input, PARTITIONS).await);
            let t = Instant::now();
            let mut took = None;
            while t.elapsed() < AFTER_HEAL * 2 {
                if done(&committed(&c.direct, &group, &input, PARTITIONS).await) > before {
                    took = Some(t.elapsed());
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            progress.push(Progress {
                what: format!("copier commits after fault {} (at {frac})", i + 1),
                // A restarted copier waits for the old transaction to be aborted (fenced by
                // InitProducerId) and for the group's session of the dead member to end.
                bound: AFTER_HEAL * 2,
                took,
            });
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        while committed(&c.direct, &group, &input, PARTITIONS).await != ends {
            assert!(Instant::now() < deadline, "copy not finished");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        child.kill().ok();
        let _ = child.wait();
        let mut h = History {
            no_duplicates: true,
            check_order: true,
            read_committed: true,
            sent: tracked
                .sent
                .lock()
                .unwrap()
                .iter()
                .map(|(id, tp)| (*id, (output.clone(), tp.1)))
                .collect(),
            acked: tracked
                .acked
                .lock()
                .unwrap()
                .iter()
                .map(|a| support::invariants::Acked {
                    id: a.id,
                    tp: (output.clone(), a.tp.1),
                    offset: None,
                })
                .collect(),
            progress,
            ..History::default()
        };
        h.log = read_log(
            &c.direct,
            &output,
            PARTITIONS,
            IsolationLevel::ReadCommitted,
            Duration::from_secs(120),
        )
        .await;
        let uncommitted = read_log(
            &c.direct,
            &output,
            PARTITIONS,
            IsolationLevel::ReadUncommitted,
            Duration::from_secs(120),
        )
        .await;
        let r = h.check();
        eprintln!(
            "[failover] s5: {r}; output holds {} records read_uncommitted (aborted copies included)",
            uncommitted.len()
        );
        r.assert_clean("s5");
        assert_eq!(h.log.len() as u64, N, "output == input: {r}");
        client.close().await;
    });
}

/// A small xorshift generator for the soak's fault schedule (seeded by `FAILOVER_SOAK_SEED`,
/// printed, so a failing schedule can be replayed).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Scenario 9: a soak. An idempotent producer feeds `in`; a listener container (group, record
/// acks) copies each good record to `out` (awaiting the delivery) and sends every poison record
/// (one in 100), after 2 retries, to `in-dlt` through the dead-letter publisher; all clients go
/// through the proxies. Meanwhile a random fault from the list hits every ~12 s: SIGKILL a node
/// (restarted 10 s later), SIGSTOP a node for 8 s, blackhole a node's proxy for 8 s, reset every
/// connection of a node's proxy, or make a node slow and cut connections mid-frame for 10 s.
/// At the end: I1 I2 I3 I7 on `in`; I5 on the group; I6 after each fault; every acknowledged
/// input is in `out` (good) or `in-dlt` (poison), at least once (the container is
/// at-least-once), and no poison record is in `out`.
///
/// `FAILOVER_SOAK_SECS` (default 120) is how long faults are injected; 600 is the 10-minute
/// version.
#[test]
fn s9_soak_random_faults() {
    use rekafka::listener::{
        DeadLetterPublisher, DefaultErrorHandler, FixedBackOff, HandlerError,
        ListenerConsumerRecord, ListenerContainer, ListenerRecord,
    };
    use rekafka::producer::Record;
    scenario("s9 soak", |c| async move {
        const PARTITIONS: i32 = 3;
        let secs: u64 = std::env::var("FAILOVER_SOAK_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(120);
        let seed: u64 = std::env::var("FAILOVER_SOAK_SEED")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
                    | 1
            });
        eprintln!("[failover] s9: {secs} s of faults, FAILOVER_SOAK_SEED={seed}");
        let mut rng = Rng(seed);
        let input = unique("s9-in");
        let dlt = format!("{input}-dlt");
        let output = unique("s9-out");
        let group = unique("s9-g");
        let client = connect(&c.proxied, Duration::from_secs(5)).await;
        for t in [&input, &dlt, &output] {
            create_topic(&client, t, PARTITIONS, &[]).await;
        }
        let poison =
            |id: Option<support::invariants::RecordId>| id.is_some_and(|id| id.seq % 100 == 7);

        // The container: good records to `out`, poison ones to the DLT.
        let out = Arc::new(
            Producer::new(client.clone(), ProducerConfig::default())
                .await
                .expect("out producer"),
        );
        let consumed = Arc::new(Consumed::default());
        let consumer =
            rekafka::consumer::Consumer::new(client.clone(), support::io::group_config(&group))
                .expect("consumer");
        consumer.subscribe([input.clone()]).expect("subscribe");
        let publisher = DeadLetterPublisher::<ListenerConsumerRecord>::builder(client.clone())
            .group(group.clone())
            .build()
            .await
            .expect("dead-letter publisher");
        let container = {
            let (out, consumed, output) = (
                out.clone(),
                consumed.clone(),
                Arc::<str>::from(output.as_str()),
            );
            ListenerContainer::builder(consumer)
                .record_handler(move |r: ListenerConsumerRecord| {
                    let (out, consumed, output) = (out.clone(), consumed.clone(), output.clone());
                    async move {
                        let id = r
                            .value()
                            .and_then(|v| support::invariants::RecordId::decode(v));
                        if poison(id) {
                            return Err(
                                Box::new(std::io::Error::other("poison record")) as HandlerError
                            );
                        }
                        let mut rec = Record::new(output).with_partition(r.partition());
                        rec.value = r.value().cloned();
                        let delivery = out
                            .send(rec)
                            .await
                            .map_err(|e| Box::new(e.error) as HandlerError)?;
                        delivery
                            .await
                            .map_err(|e| Box::new(e.error) as HandlerError)?;
                        consumed.handled.lock().unwrap().push((
                            (r.topic().to_owned(), r.partition()),
                            r.offset(),
                            id,
                        ));
                        consumed.count.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                })
                .error_handler(
                    DefaultErrorHandler::new()
                        .back_off(FixedBackOff::new(Duration::from_millis(20), 2))
                        .recoverer(publisher),
                )
                .ack_mode(rekafka::listener::AckMode::Record)
                // Each handler awaits its output's acks=all delivery (at-least-once): one
                // worker per partition keeps up with the input on a loaded machine.
                .concurrency(PARTITIONS as usize)
                .poll_timeout(Duration::from_millis(500))
                .start()
                .expect("container")
        };
        // The container's "finished" records include the recovered ones: the events say which.
        let recovered = {
            let mut rx = container.events();
            let t0 = Instant::now();
            tokio::spawn(async move {
                let mut v = Vec::new();
                let mut other: Vec<String> = Vec::new();
                let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
                let mut lagged = 0u64;
                loop {
                    let e = match rx.recv().await {
                        Ok(e) => e,
                        // A lagging receiver loses the oldest events and goes on: stopping
                        // here would lose every later `Recovered` event, and I5 would count
                        // those records as unhandled.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                            lagged += n;
                            continue;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    };
                    let name = format!("{e:?}");
                    let name = name.split(['(', ' ', '{']).next().unwrap_or("").to_owned();
                    *kinds.entry(name).or_default() += 1;
                    match e {
                        rekafka::listener::ContainerEvent::Recovered { partition, offset } => {
                            v.push(((partition.0.to_string(), partition.1), offset));
                        }
                        rekafka::listener::ContainerEvent::Committed(_)
                        | rekafka::listener::ContainerEvent::FailedDelivery { .. } => {}
                        e => other.push(format!("{:?} {e:?}", t0.elapsed())),
                    }
                }
                let n = other.len();
                eprintln!(
                    "[failover] s9 container events: {kinds:?}; the last others: {:#?}",
                    &other[n.saturating_sub(8)..]
                );
                if lagged > 0 {
                    eprintln!(
                        "[failover] s9: the event receiver lagged and lost {lagged} events: \
                         records recovered then are missing from `handled` (I5 may name them)"
                    );
                }
                v
            })
        };

        let producer = Arc::new(
            Producer::new(client.clone(), ProducerConfig::default())
                .await
                .expect("producer"),
        );
        let tracked = Arc::new(Tracked::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let run = {
            let (p, t, topic, stop) = (
                producer.clone(),
                tracked.clone(),
                input.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                produce_until(
                    &p,
                    &topic,
                    1,
                    0..u64::MAX,
                    PARTITIONS,
                    64,
                    Some(Duration::from_millis(50)),
                    t,
                    Some(stop),
                )
                .await;
            })
        };
        until_reports(&tracked, 1_000, Duration::from_secs(60)).await;

        let mut progress = Vec::new();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(secs) {
            let node = rng.below(3) as i32 + 1;
            let kind = rng.below(5);
            let what = match kind {
                0 => {
                    c.kill(node).await;
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    c.restart(node).await;
                    format!("SIGKILL node {node}, restart after 10 s")
                }
                1 => {
                    c.pause(node).await;
                    tokio::time::sleep(Duration::from_secs(8)).await;
                    c.resume(node).await;
                    format!("SIGSTOP node {node} for 8 s")
                }
                2 => {
                    c.proxy(node).modify(|f| f.blackhole = true);
                    tokio::time::sleep(Duration::from_secs(8)).await;
                    c.proxy(node).heal();
                    format!("blackhole node {node}'s proxy for 8 s")
                }
                3 => {
                    c.proxy(node).reset_all();
                    format!("reset every connection to node {node}")
                }
                _ => {
                    c.proxy(node).set(Faults {
                        delay: Duration::from_millis(10),
                        throttle: Some(128 * 1024),
                        slice: Some(61),
                        cut_per_mille: 10,
                        ..Faults::default()
                    });
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    c.proxy(node).heal();
                    format!("slow, sliced, cut node {node} for 10 s")
                }
            };
            eprintln!("[failover] s9 at {:?}: {what}", t0.elapsed());
            let (acks, handled) = (
                tracked.acks.load(Ordering::Relaxed),
                consumed.count.load(Ordering::Relaxed),
            );
            let (tp, tc) = tokio::join!(
                tracked.progress_after(acks, AFTER_HEAL),
                consumed.progress_after(handled, AFTER_HEAL)
            );
            progress.push(Progress {
                what: format!("producer after: {what}"),
                bound: AFTER_HEAL,
                took: tp,
            });
            progress.push(Progress {
                what: format!("container after: {what}"),
                bound: AFTER_HEAL,
                took: tc,
            });
            tokio::time::sleep(Duration::from_secs(2 + rng.below(4))).await;
        }
        stop.store(true, Ordering::Relaxed);
        run.await.expect("producer run");
        producer.close().await;
        c.heal().await;
        // The container finishes the input (bounded; a shortfall shows in the checks).
        let acked_ids: Vec<support::invariants::Acked> = tracked.acked.lock().unwrap().clone();
        let good = acked_ids.iter().filter(|a| !poison(Some(a.id))).count() as u64;
        let mut ends: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for a in &acked_ids {
            let e = ends.entry(a.tp.clone()).or_default();
            *e = (*e).max(a.offset.unwrap_or(0) + 1);
        }
        let deadline = Instant::now() + Duration::from_secs(240);
        while committed(&c.direct, &group, &input, PARTITIONS).await != ends
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!(
            "[failover] s9: {} handled of {good} good records acknowledged",
            consumed.count.load(Ordering::Relaxed)
        );
        let stopped = container.stop().await;
        out.close().await;
        let recovered = recovered.await.unwrap_or_default();

        // The input: I1 I2 I3 I5 I6 I7.
        let mut h = history(&tracked);
        h.progress = progress;
        h.log = read_log(
            &c.direct,
            &input,
            PARTITIONS,
            IsolationLevel::ReadUncommitted,
            Duration::from_secs(120),
        )
        .await;
        h.handled = consumed.handled_offsets();
        h.handled.extend(recovered.iter().cloned());
        h.committed = committed(&c.direct, &group, &input, PARTITIONS).await;
        let r = h.check();
        eprintln!(
            "[failover] s9 input: {r}; {} recovered to the DLT; container stopped: {stopped:?}",
            recovered.len()
        );

        // The sinks: every acknowledged input in `out` (good) or the DLT (poison), at least once.
        let out_log = read_log(
            &c.direct,
            &output,
            PARTITIONS,
            IsolationLevel::ReadUncommitted,
            Duration::from_secs(120),
        )
        .await;
        let dlt_log = read_log(
            &c.direct,
            &dlt,
            PARTITIONS,
            IsolationLevel::ReadUncommitted,
            Duration::from_secs(120),
        )
        .await;
        let sink = |log: &[support::invariants::LogEntry],
                    name: &str|
         -> Vec<support::invariants::LogEntry> {
            log.iter()
                .map(|e| support::invariants::LogEntry {
                    tp: (name.to_owned(), e.tp.1),
                    offset: e.offset,
                    id: e.id,
                })
                .collect()
        };
        let mut sinks = History {
            sent: tracked
                .sent
                .lock()
                .unwrap()
                .iter()
                .map(|(id, tp)| {
                    (
                        *id,
                        (
                            if poison(Some(*id)) { "dlt" } else { "out" }.to_owned(),
                            tp.1,
                        ),
                    )
                })
                .collect(),
            acked: acked_ids
                .iter()
                .map(|a| support::invariants::Acked {
                    id: a.id,
                    tp: (
                        if poison(Some(a.id)) { "dlt" } else { "out" }.to_owned(),
                        a.tp.1,
                    ),
                    offset: None,
                })
                .collect(),
            failed: tracked.failed.lock().unwrap().clone(),
            ..History::default()
        };
        sinks.log = sink(&out_log, "out");
        sinks.log.extend(sink(&dlt_log, "dlt"));
        let rs = sinks.check();
        eprintln!(
            "[failover] s9 sinks: {rs}; out {} records ({} duplicates, allowed at least once), dlt {}",
            out_log.len(),
            out_log.len() as u64
                - out_log
                    .iter()
                    .filter_map(|e| e.id)
                    .collect::<std::collections::HashSet<_>>()
                    .len() as u64,
            dlt_log.len()
        );
        r.assert_clean("s9 input");
        rs.assert_clean("s9 sinks");
        assert!(
            out_log.iter().all(|e| !poison(e.id)),
            "no poison record in the output"
        );
        client.close().await;
    });
}

/// Scenario 4 (part): the transaction coordinator SIGKILLed mid-transaction. A transactional
/// producer runs 12 transactions of 500 records over 3 partitions; during the 4th, the node
/// coordinating its transactional id is SIGKILLed (restarted after the 7th). A commit either
/// succeeds, or fails with a typed error and the transaction is aborted; nothing is silent.
/// Read with read_committed: I1 (committed transactions complete) I2 I3 I4 (aborted ones
/// invisible) I7.
#[test]
fn s4_transaction_coordinator_sigkill_mid_transaction() {
    use rekafka::cluster::CoordinatorType;
    use rekafka::producer::{Persistence, Record};
    use rekafka::transaction::TransactionalProducer;
    scenario("s4 txn coordinator SIGKILL", |c| async move {
        const PARTITIONS: i32 = 3;
        const TXNS: u64 = 12;
        const PER_TXN: u64 = 500;
        let topic = unique("s4");
        let client = connect(&c.direct, Duration::from_secs(10)).await;
        create_topic(&client, &topic, PARTITIONS, &[]).await;
        // A transactional id coordinated by a node that leads none of the topic's partitions
        // if possible, so the kill hits the coordinator alone.
        let mut txid = unique("s4-tx");
        let mut coordinator = -1;
        for _ in 0..60 {
            let id = unique("s4-tx");
            if let Ok(n) = client.coordinator(CoordinatorType::Transaction, &id).await {
                txid = id;
                coordinator = n;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(coordinator > 0, "no transaction coordinator found");
        let new_producer = |txid: String| {
            let client = client.clone();
            async move {
                let p = TransactionalProducer::new(
                    client,
                    ProducerConfig::default()
                        .with_transactional_id(txid)
                        .with_transaction_timeout(Duration::from_secs(30)),
                )
                .expect("producer");
                let deadline = Instant::now() + Duration::from_secs(90);
                loop {
                    match p.init_transactions().await {
                        Ok(()) => break,
                        Err(e) => {
                            assert!(Instant::now() < deadline, "init_transactions: {e}");
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                    }
                }
                p
            }
        };
        let mut producer = new_producer(txid.clone()).await;
        let mut h = History {
            no_duplicates: true,
            check_order: true,
            read_committed: true,
            ..History::default()
        };
        let mut outcomes = Vec::new();
        for t in 0..TXNS {
            producer.begin_transaction().expect("begin");
            let mut futures = Vec::new();
            for i in 0..PER_TXN {
                let seq = t * PER_TXN + i;
                let id = support::invariants::RecordId::new(1, seq);
                let p = (seq % PARTITIONS as u64) as i32;
                h.sent.push((id, (topic.clone(), p)));
                match producer
                    .send(
                        Record::new(topic.as_str())
                            .with_partition(p)
                            .with_value(id.encode(64)),
                    )
                    .await
                {
                    Ok(f) => futures.push((id, p, Some(f))),
                    Err(e) => {
                        futures.push((id, p, None));
                        eprintln!("[failover] s4 send: {e}");
                    }
                }
                if t == 3 && i == PER_TXN / 2 {
                    c.kill(coordinator).await;
                }
            }
            let commit = producer.commit_transaction().await;
            let outcome = match &commit {
                Ok(()) => "committed".to_owned(),
                Err(e) => {
                    let abort = producer.abort_transaction().await;
                    format!("commit failed ({e}); abort: {abort:?}")
                }
            };
            let committed_ok = commit.is_ok();
            let aborted_ok = !committed_ok && outcome.ends_with("abort: Ok(())");
            for (id, p, f) in futures {
                let res = match f {
                    Some(f) => f
                        .await
                        .map_err(|e| (e.persistence, format!("{:?}: {}", e.kind(), e.error))),
                    None => Err((Persistence::NotPersisted, "send refused".into())),
                };
                match (committed_ok, res) {
                    (true, Ok(md)) => h.acked.push(support::invariants::Acked {
                        id,
                        tp: (topic.clone(), p),
                        offset: Some(md.offset),
                    }),
                    (false, Ok(_)) if aborted_ok => {
                        h.aborted.push(id);
                        h.failed.push(support::invariants::Failed {
                            id,
                            tp: (topic.clone(), p),
                            persistence: Persistence::PossiblyPersisted,
                            error: "aborted".into(),
                        });
                    }
                    (_, Ok(_)) => h.failed.push(support::invariants::Failed {
                        id,
                        tp: (topic.clone(), p),
                        persistence: Persistence::PossiblyPersisted,
                        error: "transaction outcome unknown".into(),
                    }),
                    (_, Err((persistence, error))) => {
                        if aborted_ok {
                            h.aborted.push(id);
                        }
                        h.failed.push(support::invariants::Failed {
                            id,
                            tp: (topic.clone(), p),
                            persistence,
                            error,
                        });
                    }
                }
            }
            eprintln!("[failover] s4 transaction {t}: {outcome}");
            outcomes.push(outcome);
            if producer.fatal_error().is_some() || (!committed_ok && !aborted_ok) {
                producer.close().await;
                producer = new_producer(txid.clone()).await;
            }
            if t == 6 {
                c.restart(coordinator).await;
            }
        }
        producer.close().await;
        h.log = read_log(
            &c.direct,
            &topic,
            PARTITIONS,
            IsolationLevel::ReadCommitted,
            Duration::from_secs(120),
        )
        .await;
        let r = h.check();
        eprintln!("[failover] s4: {r}; outcomes: {outcomes:#?}");
        r.assert_clean("s4");
        assert!(
            outcomes[7..].iter().all(|o| o == "committed"),
            "the transactions after the coordinator is back commit: {outcomes:#?}"
        );
        client.close().await;
    });
}

/// Asks a live node for an unclean leader election of `topic`-0 (ElectLeaders, election type
/// 1). Returns the partition's error code (0: elected; 84 ELECTION_NOT_NEEDED: it has a
/// leader), or `None` if the request failed.
async fn elect_unclean(addr: &str, topic: &str) -> Option<i16> {
    use rekafka::connection::{Connection, ConnectionConfig};
    use rekafka::protocol::unstable::messages::{
        ElectLeadersRequest, TopicName, elect_leaders_request::TopicPartitions,
    };
    let conn = Connection::connect(addr, -1, &ConnectionConfig::default())
        .await
        .ok()?;
    let req = ElectLeadersRequest::default()
        .with_election_type(1)
        .with_timeout_ms(10_000)
        .with_topic_partitions(Some(vec![
            TopicPartitions::default()
                .with_topic(TopicName(topic.to_owned().into()))
                .with_partitions(vec![0]),
        ]));
    let resp = conn.send(req).await.ok()?;
    let code = resp
        .replica_election_results
        .iter()
        .flat_map(|r| r.partition_result.iter())
        .map(|p| p.error_code)
        .next();
    conn.close().await;
    code.or(Some(resp.error_code))
}

/// What one scenario-7 consumer returned: records (offset, id), partition errors, events.
#[derive(Default)]
struct S7Seen {
    records: Vec<(i64, Option<support::invariants::RecordId>)>,
    errors: Vec<rekafka::Error>,
    events: Vec<rekafka::consumer::ConsumerEvent>,
}

/// Polls `consumer` into `seen` until `stop`.
fn s7_poller(
    consumer: Arc<rekafka::consumer::Consumer>,
    seen: Arc<std::sync::Mutex<S7Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let mut events = consumer.events();
    tokio::spawn(async move {
        while !stop.load(Ordering::Acquire) {
            let recs = consumer.poll(Duration::from_millis(200)).await;
            let mut s = seen.lock().unwrap();
            while let Ok(e) = events.try_recv() {
                eprintln!("[failover] s7 event: {e:?}");
                s.events.push(e);
            }
            match recs {
                Ok(recs) => {
                    for (_, e) in recs.errors() {
                        eprintln!("[failover] s7 partition error: {e}");
                        s.errors.push(e.clone());
                    }
                    for r in recs.iter() {
                        s.records.push((
                            r.offset,
                            r.value
                                .as_deref()
                                .and_then(support::invariants::RecordId::decode),
                        ));
                    }
                }
                Err(e) => eprintln!("[failover] s7 poll: {e}"),
            }
        }
    })
}

/// Scenario 7: log truncation after an unclean leader election (KIP-320). A topic with two
/// replicas, `min.insync.replicas=1` and unclean election allowed: 200 records reach both
/// replicas; the follower is SIGSTOPped and leaves the ISR; 100 more records are acknowledged by
/// the leader alone and read by two consumers (through the proxies); the leader is SIGKILLed,
/// the follower resumed and elected uncleanly (ElectLeaders UNCLEAN), so its log ends at 200 and
/// 300 new records take offsets 200..500. The consumer with `auto.offset.reset=earliest`
/// detects the truncation below its position 300 (a `LogTruncated` event with divergent offset
/// 200) and reads every new record from 200 on, none skipped; the one with `none` gets a typed
/// `LogTruncation` error and nothing of the new log until it seeks. The producers: I1 I2 I3 I7
/// for the records before and after (the 100 acknowledged by the lost leader alone are the
/// loss unclean election allows, reported to the consumers); I6 for the consumer.
#[test]
fn s7_log_truncation_after_unclean_election() {
    use rekafka::consumer::{
        Consumer, ConsumerConfig, ConsumerEvent, OffsetReset, StartOffset, TopicPartition,
    };
    use std::sync::atomic::AtomicBool;
    scenario("s7 unclean election truncation", |c| async move {
        const N1: u64 = 200;
        const N2: u64 = 100;
        const N3: u64 = 300;
        let topic = unique("s7");
        let client = connect(&c.direct, Duration::from_secs(10)).await;
        {
            let admin = rekafka::admin::Admin::new(client.clone());
            let t = rekafka::admin::NewTopic::new(&topic, 1)
                .with_replication_factor(2)
                .with_config("min.insync.replicas", "1")
                .with_config("unclean.leader.election.enable", "true");
            for r in admin.create_topics(&[t]).await.expect("create_topics") {
                r.expect("topic created");
            }
        }
        // Both replicas in sync.
        let deadline = Instant::now() + Duration::from_secs(60);
        let (leader, follower) = loop {
            let _ = client.refresh_topics(&[topic.as_str()]).await;
            if let Ok(parts) = client.partitions(&topic).await
                && let Some(p) = parts.first()
                && p.leader >= 0
                && p.isr.len() == 2
            {
                let f = *p
                    .replicas
                    .iter()
                    .find(|r| **r != p.leader)
                    .expect("follower");
                break (p.leader, f);
            }
            assert!(Instant::now() < deadline, "{topic}: replicas not in sync");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        let other = (1..=3)
            .find(|n| *n != leader && *n != follower)
            .expect("third node");
        eprintln!("[failover] s7: leader {leader}, follower {follower}");
        let tp = TopicPartition::new(&topic, 0);

        // Two consumers through the proxies, from the beginning.
        let stop = Arc::new(AtomicBool::new(false));
        let mut consumers = Vec::new();
        for reset in [OffsetReset::Earliest, OffsetReset::None] {
            let cl = connect(&c.proxied, Duration::from_secs(10)).await;
            let consumer = Arc::new(
                Consumer::new(
                    cl.clone(),
                    ConsumerConfig::new()
                        .with_auto_commit(rekafka::consumer::AutoCommit::Disabled)
                        .with_auto_offset_reset(reset)
                        .with_fetch_max_wait(Duration::from_millis(100)),
                )
                .expect("consumer"),
            );
            consumer
                .assign([(tp.clone(), StartOffset::Beginning)])
                .expect("assign");
            let seen = Arc::new(std::sync::Mutex::new(S7Seen::default()));
            let task = s7_poller(consumer.clone(), seen.clone(), stop.clone());
            consumers.push((consumer, seen, task, cl));
        }
        let read = |i: usize| consumers[i].1.lock().unwrap().records.len() as u64;
        async fn wait(what: &str, within: Duration, f: impl Fn() -> bool) -> Duration {
            let t = Instant::now();
            while !f() {
                assert!(t.elapsed() < within, "s7: {what} not within {within:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            t.elapsed()
        }

        // Phase 1: both replicas.
        let produce = |pid: u32, n: u64, tracked: Arc<Tracked>| {
            let (client, topic) = (client.clone(), topic.clone());
            async move {
                let p = Producer::new(
                    client,
                    ProducerConfig::default()
                        .with_delivery_timeout(Duration::from_secs(60))
                        .with_request_timeout(Duration::from_secs(10)),
                )
                .await
                .expect("producer");
                produce_tracked(&p, &topic, pid, 0..n, 1, 64, None, tracked).await;
                p.close().await;
            }
        };
        let t1 = Arc::new(Tracked::default());
        produce(1, N1, t1.clone()).await;
        wait("phase 1 read", AFTER_KILL, || {
            read(0) >= N1 && read(1) >= N1
        })
        .await;

        // Phase 2: the follower paused until it leaves the ISR; the leader alone acknowledges.
        c.pause(follower).await;
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            let _ = client.refresh_topics(&[topic.as_str()]).await;
            if let Ok(parts) = client.partitions(&topic).await
                && parts.first().is_some_and(|p| p.isr == vec![leader])
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "s7: the follower never left the ISR"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let t2 = Arc::new(Tracked::default());
        produce(2, N2, t2.clone()).await;
        assert_eq!(
            t2.acked.lock().unwrap().len() as u64,
            N2,
            "phase 2 acknowledged"
        );
        wait("phase 2 read", AFTER_KILL, || {
            read(0) >= N1 + N2 && read(1) >= N1 + N2
        })
        .await;

        // The leader dies; the stale follower comes back and is elected uncleanly.
        c.kill(leader).await;
        c.resume(follower).await;
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut asked = 0;
        loop {
            let _ = client.refresh_topics(&[topic.as_str()]).await;
            let now_leader = client
                .partitions(&topic)
                .await
                .ok()
                .and_then(|p| p.first().map(|p| p.leader));
            if now_leader == Some(follower) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "s7: no unclean election of node {follower} (leader {now_leader:?}, asked {asked} times)"
            );
            if now_leader == Some(-1) || now_leader == Some(leader) {
                let code = elect_unclean(&c.node_addr[(other - 1) as usize], &topic).await;
                asked += 1;
                eprintln!("[failover] s7: ElectLeaders UNCLEAN -> {code:?}");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        eprintln!("[failover] s7: node {follower} leads after an unclean election");
        let healed = Instant::now();

        // Phase 3: new records on the truncated log take the lost offsets and more.
        let t3 = Arc::new(Tracked::default());
        produce(3, N3, t3.clone()).await;
        let seen_all = |i: usize| {
            consumers[i]
                .1
                .lock()
                .unwrap()
                .records
                .iter()
                .filter(|(_, id)| id.is_some_and(|id| id.producer == 3))
                .count() as u64
                >= N3
        };
        wait("the earliest consumer reads phase 3", AFTER_KILL, || {
            seen_all(0)
        })
        .await;
        let took = healed.elapsed();
        wait("the none consumer fails typed", AFTER_KILL, || {
            !consumers[1].1.lock().unwrap().errors.is_empty()
        })
        .await;
        let none_before_seek = consumers[1].1.lock().unwrap().records.len();
        consumers[1].0.seek(&tp, N1 as i64).expect("seek");
        wait(
            "the none consumer reads phase 3 after its seek",
            AFTER_KILL,
            || seen_all(1),
        )
        .await;
        stop.store(true, Ordering::Release);
        let mut seen = Vec::new();
        for (consumer, s, task, cl) in consumers {
            task.await.expect("poller");
            consumer.close().await.ok();
            cl.close().await;
            seen.push(std::mem::take(&mut *s.lock().unwrap()));
        }

        // The producers' invariants over the records the final log must hold.
        let mut h = history(&t1);
        let h3 = history(&t3);
        h.sent.extend(h3.sent);
        h.acked.extend(h3.acked);
        h.failed.extend(h3.failed);
        h.progress.push(Progress {
            what: "the earliest consumer read the new log after the election".into(),
            bound: AFTER_KILL,
            took: Some(took),
        });
        h.log = read_log(
            &c.direct,
            &topic,
            1,
            IsolationLevel::ReadUncommitted,
            Duration::from_secs(60),
        )
        .await;
        let r = h.check();
        eprintln!("[failover] s7: {r}");
        r.assert_clean("s7");
        let log: Vec<(i64, Option<support::invariants::RecordId>)> =
            h.log.iter().map(|e| (e.offset, e.id)).collect();
        assert_eq!(
            log.len() as u64,
            N1 + N3,
            "the final log: phase 1 and phase 3"
        );
        assert!(
            log[N1 as usize..]
                .iter()
                .all(|(_, id)| id.is_some_and(|id| id.producer == 3)),
            "offsets from 200 on hold the new records"
        );

        // Earliest: read 0..300 of the old log, then the new log from the divergent offset.
        let (early, none) = (&seen[0], &seen[1]);
        let truncations: Vec<_> = early
            .events
            .iter()
            .filter_map(|e| match e {
                ConsumerEvent::LogTruncated {
                    position,
                    divergent_offset,
                    reset,
                    ..
                } => Some((*position, *divergent_offset, *reset)),
                _ => None,
            })
            .collect();
        assert_eq!(
            truncations,
            vec![((N1 + N2) as i64, Some(N1 as i64), OffsetReset::Earliest)],
            "one typed LogTruncated event"
        );
        assert!(early.errors.is_empty(), "{:?}", early.errors);
        let before = (N1 + N2) as usize;
        assert_eq!(
            early.records[..before]
                .iter()
                .map(|r| r.0)
                .collect::<Vec<_>>(),
            (0..before as i64).collect::<Vec<_>>()
        );
        assert_eq!(
            &early.records[before..],
            &log[N1 as usize..],
            "after the truncation: every record of the new log from the divergent offset, once, in order"
        );

        // None: a typed LogTruncation, nothing of the new log before the seek.
        assert!(
            matches!(
                none.errors.first().map(|e| e.kind()),
                Some(rekafka::ErrorKind::LogTruncation {
                    divergent_offset: Some(d)
                }) if *d == N1 as i64
            ),
            "{:?}",
            none.errors
        );
        assert_eq!(
            none_before_seek as u64,
            N1 + N2,
            "nothing read past the truncation"
        );
        assert!(
            none.events
                .iter()
                .all(|e| !matches!(e, ConsumerEvent::LogTruncated { .. })),
            "no reset under none"
        );
        assert_eq!(&none.records[before..], &log[N1 as usize..]);
        client.close().await;
    });
}

/// Scenario 4, the group-coordinator half: two listener containers (record acks: a commit after
/// every record) in one group on a 3-partition topic while an idempotent producer writes. The
/// group coordinator is SIGKILLed (a) mid-rebalance: the second container joins and the kill
/// comes as soon as DescribeGroups shows the group rebalancing; (b) once the first is back, the
/// new coordinator is SIGKILLed mid-commit, with both containers committing. I1 I2 I3 I5 I6 I7;
/// both containers end without an abnormal stop; the group commits up to the log end.
#[test]
fn s4_group_coordinator_sigkill_mid_rebalance_and_mid_commit() {
    use rekafka::admin::{Admin, GroupState};
    use rekafka::cluster::CoordinatorType;
    use rekafka::listener::{ContainerEvent, StopReason};
    use std::sync::atomic::AtomicBool;
    scenario("s4 group coordinator SIGKILL", |c| async move {
        const PARTITIONS: i32 = 3;
        let topic = unique("s4g");
        let client = connect(&c.proxied, Duration::from_secs(10)).await;
        create_topic(&client, &topic, PARTITIONS, &[]).await;
        let group = unique("s4g-g");
        let admin = Admin::new(client.clone());
        let coordinator = |client: rekafka::cluster::Cluster, group: String| async move {
            let _ = client.refresh().await;
            client
                .coordinator(CoordinatorType::Group, &group)
                .await
                .unwrap_or(-1)
        };
        let producer = Arc::new(
            Producer::new(
                client.clone(),
                ProducerConfig::default().with_request_timeout(Duration::from_secs(10)),
            )
            .await
            .expect("producer"),
        );
        let tracked = Arc::new(Tracked::default());
        let stop_producing = Arc::new(AtomicBool::new(false));
        let run = {
            let (p, t, topic, stop) = (
                producer.clone(),
                tracked.clone(),
                topic.clone(),
                stop_producing.clone(),
            );
            tokio::spawn(async move {
                produce_until(
                    &p,
                    &topic,
                    1,
                    0..1_000_000,
                    PARTITIONS,
                    64,
                    Some(Duration::from_millis(1)),
                    t,
                    Some(stop),
                )
                .await;
            })
        };
        let consumed = Arc::new(Consumed::default());
        let count_events = |h: &rekafka::listener::ContainerHandle| {
            let mut rx = h.events();
            tokio::spawn(async move {
                let mut seen: BTreeMap<&'static str, usize> = BTreeMap::new();
                while let Ok(e) = rx.recv().await {
                    let k = match e {
                        ContainerEvent::Committed(_) => "committed",
                        ContainerEvent::CommitFailed(_) => "commit failed",
                        ContainerEvent::PollFailed(_) => "poll failed",
                        ContainerEvent::Stopped(_) => "stopped",
                        _ => "other",
                    };
                    *seen.entry(k).or_default() += 1;
                }
                seen
            })
        };
        let a = start_recording_container(&client, &group, &topic, consumed.clone());
        let a_events = count_events(&a);
        until_reports(&tracked, 1_000, Duration::from_secs(60)).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while consumed.count.load(Ordering::Relaxed) < 500 {
            assert!(
                Instant::now() < deadline,
                "s4g: the first container handles nothing"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // (a) Mid-rebalance: a second member joins; kill the coordinator while the group
        // rebalances.
        let k1 = coordinator(client.clone(), group.clone()).await;
        assert!(k1 > 0, "s4g: no group coordinator");
        let b = start_recording_container(&client, &group, &topic, consumed.clone());
        let b_events = count_events(&b);
        let deadline = Instant::now() + Duration::from_secs(10);
        let state = loop {
            let s = admin
                .describe_groups(&[group.as_str()])
                .await
                .ok()
                .and_then(|mut v| v.pop())
                .and_then(|r| r.ok())
                .map(|d| d.state);
            if matches!(
                s,
                Some(GroupState::PreparingRebalance | GroupState::CompletingRebalance)
            ) || Instant::now() >= deadline
            {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        c.kill(k1).await;
        eprintln!("[failover] s4g: coordinator {k1} SIGKILLed with the group {state:?}");
        assert!(
            matches!(
                state,
                Some(GroupState::PreparingRebalance | GroupState::CompletingRebalance)
            ),
            "the kill came mid-rebalance: {state:?}"
        );
        let (acks, handled) = (
            tracked.acks.load(Ordering::Relaxed),
            consumed.count.load(Ordering::Relaxed),
        );
        let (took_p1, took_c1) = tokio::join!(
            tracked.progress_after(acks, AFTER_KILL),
            consumed.progress_after(handled, AFTER_KILL)
        );
        c.restart(k1).await;
        c.await_full_isr(&[&topic], Duration::from_secs(90)).await;

        // (b) Mid-commit: both members commit after every record; kill the coordinator now.
        let k2 = coordinator(client.clone(), group.clone()).await;
        assert!(k2 > 0, "s4g: no group coordinator after the restart");
        let before = consumed.count.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            consumed.count.load(Ordering::Relaxed) > before,
            "the containers handle (and commit) records when the coordinator dies"
        );
        c.kill(k2).await;
        eprintln!("[failover] s4g: coordinator {k2} SIGKILLed mid-commit");
        let (acks, handled) = (
            tracked.acks.load(Ordering::Relaxed),
            consumed.count.load(Ordering::Relaxed),
        );
        let (took_p2, took_c2) = tokio::join!(
            tracked.progress_after(acks, AFTER_KILL),
            consumed.progress_after(handled, AFTER_KILL)
        );
        stop_producing.store(true, Ordering::Relaxed);
        run.await.expect("producer run");
        producer.close().await;

        // The group catches up: its commits reach the end of what was acknowledged.
        let mut end_acked: BTreeMap<i32, i64> = BTreeMap::new();
        for a in tracked.acked.lock().unwrap().iter() {
            if let Some(o) = a.offset {
                let e = end_acked.entry(a.tp.1).or_default();
                *e = (*e).max(o + 1);
            }
        }
        let want: BTreeMap<(String, i32), i64> = end_acked
            .iter()
            .map(|(p, o)| ((topic.clone(), *p), *o))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(90);
        while committed(&c.direct, &group, &topic, PARTITIONS).await != want
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (stop_a, stop_b) = tokio::join!(a.stop(), b.stop());
        let (a_seen, b_seen) = (
            a_events.await.unwrap_or_default(),
            b_events.await.unwrap_or_default(),
        );
        eprintln!("[failover] s4g: container events a {a_seen:?}, b {b_seen:?}");
        let mut h = history(&tracked);
        for (what, took) in [
            ("producer acks after the mid-rebalance kill", took_p1),
            ("containers handle after the mid-rebalance kill", took_c1),
            ("producer acks after the mid-commit kill", took_p2),
            ("containers handle after the mid-commit kill", took_c2),
        ] {
            h.progress.push(Progress {
                what: what.into(),
                bound: AFTER_KILL,
                took,
            });
        }
        h.log = read_log(
            &c.direct,
            &topic,
            PARTITIONS,
            IsolationLevel::ReadUncommitted,
            Duration::from_secs(60),
        )
        .await;
        h.handled = consumed.handled_offsets();
        h.committed = committed(&c.direct, &group, &topic, PARTITIONS).await;
        let r = h.check();
        eprintln!(
            "[failover] s4g: {r}; stopped a {stop_a:?}, b {stop_b:?}; {} handled",
            consumed.count.load(Ordering::Relaxed)
        );
        r.assert_clean("s4g");
        for s in [&stop_a, &stop_b] {
            assert!(
                matches!(s, StopReason::Normal),
                "a container stopped: {s:?}"
            );
        }
        let mut end: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for e in &h.log {
            let v = end.entry(e.tp.clone()).or_default();
            *v = (*v).max(e.offset + 1);
        }
        assert_eq!(h.committed, end, "the group committed up to the log end");
        client.close().await;
    });
}

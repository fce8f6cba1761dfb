//! The connection layer against a tiny in-process fake broker: pipelining, timeouts, failure,
//! reconnect, shutdown and cancel safety. No real broker needed.
//!
//! The fake broker answers ApiVersions, Produce (optionally, to mimic Tansu's answer to acks=0)
//! and Metadata. A Metadata request's first topic name says how to answer it:
//!
//! * `delay-<ms>-<rest>`: echo the name after `ms` milliseconds (so answers come out of order);
//! * `never-<rest>`: never answer;
//! * `close`: close the socket;
//! * `huge`: send a frame header claiming `i32::MAX` bytes;
//! * `garbage-<rest>`: answer with the right correlation id and an undecodable body;
//! * `unknown-<rest>`: first send a response with an unknown correlation id, then the answer;
//! * anything else: echo the name at once.

use crate::fake_broker;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use fake_broker::{ConnState, FakeBroker, FakeRequest, Reply};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
use kafka_protocol::messages::{
    ApiKey, MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rekafka::ErrorKind;
use rekafka::connection::{BrokerConnection, Connection, ConnectionConfig};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------------
// The fake broker's script

#[derive(Clone, Copy, Default)]
struct Behavior {
    /// Answer ApiVersions above v2 with UNSUPPORTED_VERSION and a v0 body (KIP-511).
    kip511: bool,
    /// Answer Produce requests even with acks=0, as Tansu does.
    answer_acks0: bool,
}

async fn start(behavior: Behavior) -> FakeBroker {
    start_on("127.0.0.1:0".parse().unwrap(), behavior).await
}

async fn start_on(addr: std::net::SocketAddr, behavior: Behavior) -> FakeBroker {
    FakeBroker::builder()
        .addr(addr)
        .api(ApiKey::ApiVersions, 0, if behavior.kip511 { 2 } else { 4 })
        .kip511_fallback(true)
        .api(ApiKey::Metadata, 0, 12)
        .api(ApiKey::Produce, 3, 11)
        .start(move |req: &FakeRequest, _: &mut ConnState| handle(req, behavior))
        .await
}

fn handle(req: &FakeRequest, behavior: Behavior) -> Reply {
    match req.api {
        ApiKey::Produce => {
            let _req: ProduceRequest = req.decode();
            if behavior.answer_acks0 {
                req.respond(&ProduceResponse::default())
            } else {
                Reply::Silent
            }
        }
        ApiKey::Metadata => {
            let q: MetadataRequest = req.decode();
            let name = q
                .topics
                .as_ref()
                .and_then(|t| t.first())
                .and_then(|t| t.name.as_ref())
                .map(|n| n.0.to_string())
                .unwrap_or_default();
            let resp = MetadataResponse::default().with_topics(vec![
                MetadataResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name.clone())))),
            ]);
            let corr = req.correlation_id;
            if name == "close" {
                Reply::Close
            } else if name == "huge" {
                let mut b = BytesMut::new();
                b.put_i32(i32::MAX);
                b.put_i32(corr);
                Reply::Bytes(b)
            } else if name.starts_with("never-") {
                Reply::Silent
            } else if name.starts_with("garbage-") {
                let mut b = BytesMut::new();
                b.put_i32(7);
                b.put_i32(corr);
                b.put_slice(&[0xff, 0xff, 0xff]);
                Reply::Bytes(b)
            } else if name.starts_with("unknown-") {
                let mut b = fake_broker::response_frame(
                    req.api,
                    req.version,
                    corr.wrapping_add(1_000_000),
                    &resp,
                );
                b.extend_from_slice(&req.frame_of(&resp));
                Reply::Bytes(b)
            } else if let Some(rest) = name.strip_prefix("delay-") {
                let ms: u64 = rest.split('-').next().unwrap().parse().unwrap();
                Reply::later(Duration::from_millis(ms), req.respond(&resp))
            } else {
                req.respond(&resp)
            }
        }
        _ => Reply::Builtin,
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn meta(name: &str) -> MetadataRequest {
    MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(name.to_owned())))),
    ]))
}

fn name_of(resp: &MetadataResponse) -> String {
    resp.topics
        .first()
        .and_then(|t| t.name.as_ref())
        .map(|n| n.0.to_string())
        .unwrap_or_default()
}

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn config() -> ConnectionConfig {
    ConnectionConfig::default()
        .with_connect_timeout(Duration::from_secs(2))
        .with_request_timeout(Duration::from_secs(5))
}

async fn connect(broker: &FakeBroker, config: &ConnectionConfig) -> Connection {
    Connection::connect(&broker.addr.to_string(), 7, config)
        .await
        .unwrap()
}

async fn wait_in_flight_zero(conn: &Connection, within: Duration) {
    let deadline = Instant::now() + within;
    while conn.in_flight() != 0 {
        assert!(
            Instant::now() < deadline,
            "{} requests still in the in-flight table",
            conn.in_flight()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test]
async fn handshake_negotiates_versions_with_kip511_fallback() {
    for kip511 in [false, true] {
        let broker = start(Behavior {
            kip511,
            ..Behavior::default()
        })
        .await;
        let conn = connect(&broker, &config()).await;
        let range = conn.versions().range(ApiKey::Metadata).unwrap();
        assert_eq!((range.min, range.max), (0, 12));
        assert_eq!(conn.broker_id(), 7);
        let resp = conn.send(meta("hello")).await.unwrap();
        assert_eq!(name_of(&resp), "hello");
        let resp = conn.send_at(meta("v1"), 1).await.unwrap();
        assert_eq!(name_of(&resp), "v1");
        // The broker does not know Fetch: a typed, fatal error, and the connection stays up.
        let e = conn
            .send(kafka_protocol::messages::FetchRequest::default())
            .await
            .unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::UnsupportedVersion { .. }),
            "{e}"
        );
        assert!(!conn.is_closed());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_answered_out_of_order() {
    let broker = start(Behavior::default()).await;
    let conn = connect(&broker, &config().with_max_in_flight(64)).await;
    let mut rng = Rng::new(42);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..400 {
        let name = format!("delay-{}-p{i}", rng.below(40));
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let resp = conn.send(meta(&name)).await.unwrap();
            assert_eq!(name_of(&resp), name);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // One at a time this would take about 400 * 20 ms = 8 s.
    let elapsed = start.elapsed();
    assert!(
        elapsed < Duration::from_secs(3),
        "not pipelined: {elapsed:?}"
    );
    assert_eq!(conn.in_flight(), 0);
    // Exactly one connection was used.
    assert_eq!(broker.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_bounds_the_pipeline() {
    let broker = start(Behavior::default()).await;
    let conn = connect(
        &broker,
        &config()
            .with_max_in_flight(4)
            .with_request_timeout(Duration::from_millis(300)),
    )
    .await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            conn.send(meta(&format!("never-{i}"))).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(conn.in_flight(), 4, "only max_in_flight requests are sent");
    // The first request to time out closes the connection: it gets Timeout, the others in
    // flight Disconnected (or Timeout, if their own timer fired in the same instant), and the
    // two waiting for a slot Disconnected or Timeout.
    let mut timeouts = 0;
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert!(
            matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Disconnected),
            "{e}"
        );
        assert!(e.is_retriable());
        timeouts += usize::from(e.kind() == &ErrorKind::Timeout);
    }
    assert!(timeouts >= 1);
    assert!(conn.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_closes_the_connection_and_fails_the_others() {
    let broker = start(Behavior::default()).await;
    let timeout = Duration::from_millis(400);
    let bc = BrokerConnection::new(
        7,
        broker.addr.to_string(),
        config()
            .with_request_timeout(timeout)
            .with_reconnect_backoff(Duration::from_millis(20), Duration::from_millis(100)),
    );
    let conn = bc.connection().await.unwrap();
    let start = Instant::now();
    // The request the broker never answers...
    let stuck = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let r = conn.send(meta("never-stuck")).await;
            (r, Instant::now())
        })
    };
    // It is in flight before the others (a fixed sleep is not enough on a loaded machine).
    while conn.in_flight() < 1 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // ...and others behind it that would be answered, but only after the stuck one timed out.
    let mut others = Vec::new();
    for i in 0..5 {
        let conn = conn.clone();
        others.push(tokio::spawn(async move {
            let sent = Instant::now();
            let r = conn.send(meta(&format!("delay-3000-o{i}"))).await;
            (r, sent, Instant::now())
        }));
    }
    let (r, stuck_at) = stuck.await.unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Timeout, "{e}");
    assert!(e.is_retriable());
    assert_eq!(
        e.context().api.map(|a| a.key()),
        Some(ApiKey::Metadata as i16)
    );
    assert_eq!(e.context().broker, Some(7));
    let waited = stuck_at - start;
    // At its request timeout, before the others' answers (3 s) could have come.
    assert!(
        waited >= timeout && waited < Duration::from_millis(2900),
        "timed out after {waited:?}"
    );
    for t in others {
        let (r, sent, at) = t.await.unwrap();
        let e = r.unwrap_err();
        // Failed with the connection, at the same moment, long before their own timeout. (On a
        // starved runtime the stuck caller's timer may be polled after the timer of one sent
        // just behind it: then that one, and any other whose own request timeout had passed
        // too, fails with `Timeout` instead; it is never lost or answered late.)
        if at < sent + timeout {
            assert_eq!(e.kind(), &ErrorKind::Disconnected, "{e}");
        } else {
            assert!(
                matches!(e.kind(), ErrorKind::Disconnected | ErrorKind::Timeout),
                "{e}"
            );
        }
        assert!(e.is_retriable());
        assert_eq!(e.context().broker, Some(7));
        assert!(
            e.to_string().contains("request timeout"),
            "the error says why: {e}"
        );
        let gap = at.saturating_duration_since(stuck_at);
        assert!(
            gap < Duration::from_millis(150),
            "failed {gap:?} after the timed-out request"
        );
    }
    assert!(conn.is_closed());
    assert_eq!(conn.in_flight(), 0);
    // The client closed its socket, so the broker stops working on the backlog.
    broker.wait_client_eofs(1, Duration::from_secs(1)).await;
    // The next request reconnects by itself and succeeds.
    let resp = bc.send(meta("after")).await.unwrap();
    assert_eq!(name_of(&resp), "after");
    assert_eq!(broker.accepted.load(Ordering::SeqCst), 2);
    assert!(!bc.connection().await.unwrap().is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_out_of_time_while_waiting_for_a_slot_keeps_the_connection() {
    let broker = start(Behavior::default()).await;
    let conn = connect(
        &broker,
        &config()
            .with_max_in_flight(1)
            .with_request_timeout(Duration::from_millis(1000)),
    )
    .await;
    // `a` holds the only slot for 600 ms; `b` waits for it from 400 ms, is sent at 600 ms and
    // answered at 1500 ms: after its caller's deadline (1400 ms) but before it has been in
    // flight for the request timeout (1600 ms). Its caller gets Timeout, the connection stays.
    let a = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.send(meta("delay-600-a")).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    let e = conn.send(meta("delay-900-b")).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Timeout, "{e}");
    assert_eq!(name_of(&a.await.unwrap().unwrap()), "delay-600-a");
    assert!(!conn.is_closed(), "{:?}", conn.error());
    // The abandoned request keeps its slot until its late response is read.
    assert_eq!(conn.in_flight(), 1);
    wait_in_flight_zero(&conn, Duration::from_secs(2)).await;
    assert_eq!(name_of(&conn.send(meta("after")).await.unwrap()), "after");
    assert!(!conn.is_closed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_futures_never_grow_the_table_beyond_max_in_flight() {
    let broker = start(Behavior::default()).await;
    let max = 8;
    let conn = connect(&broker, &config().with_max_in_flight(max)).await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak = Arc::new(AtomicUsize::new(0));
    let monitor = {
        let (conn, stop, peak) = (conn.clone(), stop.clone(), peak.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                peak.fetch_max(conn.in_flight(), Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };
    let mut rng = Rng::new(7);
    let mut tasks = Vec::new();
    for i in 0..3000u64 {
        let conn = conn.clone();
        // Slow answers and callers that give up early: every dropped caller's response is
        // still on its way when the next caller comes.
        let name = format!("delay-{}-d{i}", 5 + rng.below(30));
        let budget = Duration::from_micros(rng.below(3_000));
        tasks.push(tokio::spawn(async move {
            let _ = tokio::time::timeout(budget, conn.send(meta(&name))).await;
        }));
        if i % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    monitor.await.unwrap();
    let peak = peak.load(Ordering::SeqCst);
    eprintln!("peak in-flight table size {peak}");
    assert!(peak <= max, "in-flight table reached {peak} > {max}");
    assert!(peak > 0, "the monitor saw nothing in flight");
    // Every abandoned entry is answered and removed; the connection is fine.
    wait_in_flight_zero(&conn, Duration::from_secs(3)).await;
    assert!(!conn.is_closed());
    assert_eq!(name_of(&conn.send(meta("after")).await.unwrap()), "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_requests_never_answered_expire_with_the_connection() {
    let broker = start(Behavior::default()).await;
    let max = 4;
    let timeout = Duration::from_millis(500);
    let conn = connect(
        &broker,
        &config()
            .with_max_in_flight(max)
            .with_request_timeout(timeout),
    )
    .await;
    // Fill every slot with requests the broker never answers, dropping their callers.
    for i in 0..max {
        let _ = tokio::time::timeout(
            Duration::from_millis(20),
            conn.send(meta(&format!("never-{i}"))),
        )
        .await;
    }
    assert_eq!(conn.in_flight(), max, "dropped callers keep their slots");
    // A new request cannot get a slot; once the abandoned ones have been in flight for the
    // request timeout the connection is closed and the waiting request fails, retriable.
    let start = Instant::now();
    let e = conn.send(meta("waiting")).await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Disconnected | ErrorKind::Timeout),
        "{e}"
    );
    assert!(e.is_retriable());
    assert!(start.elapsed() <= timeout + Duration::from_millis(300));
    assert!(conn.is_closed());
    assert_eq!(conn.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_failure_fails_every_in_flight_request_at_once() {
    // EOF, an oversized frame, an undecodable response.
    for trigger in ["close", "huge", "garbage-x"] {
        let broker = start(Behavior::default()).await;
        let conn = connect(&broker, &config().with_max_frame_size(1024 * 1024)).await;
        let mut tasks = Vec::new();
        for i in 0..50 {
            let conn = conn.clone();
            tasks.push(tokio::spawn(async move {
                conn.send(meta(&format!("never-{i}"))).await
            }));
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while conn.in_flight() < 50 {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let start = Instant::now();
        let trigger_result = conn.send(meta(trigger)).await;
        for t in tasks {
            let e = t.await.unwrap().unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::Disconnected, "{trigger}: {e}");
            assert!(e.is_retriable());
            assert_eq!(e.context().broker, Some(7));
            assert_eq!(
                e.context().api.map(|a| a.key()),
                Some(ApiKey::Metadata as i16)
            );
        }
        let elapsed = start.elapsed();
        assert!(
            elapsed < Duration::from_secs(1),
            "{trigger}: failing took {elapsed:?}"
        );
        let e = trigger_result.unwrap_err();
        if trigger == "garbage-x" {
            // The caller whose response did not decode learns why.
            assert_eq!(e.kind(), &ErrorKind::Corrupt, "{e}");
        } else {
            assert_eq!(e.kind(), &ErrorKind::Disconnected, "{e}");
        }
        assert!(conn.is_closed());
        // New requests fail at once: not after a connect (2 s) or request (5 s) timeout. The
        // margin is for a loaded machine.
        let start = Instant::now();
        let e = conn.send(meta("later")).await.unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Disconnected);
        assert!(start.elapsed() < Duration::from_secs(1));
        if trigger == "huge" {
            let cause = conn.error().unwrap().to_string();
            assert!(cause.contains("exceeds the maximum"), "{cause}");
        }
    }
}

#[tokio::test]
async fn unknown_correlation_id_is_discarded() {
    let broker = start(Behavior::default()).await;
    let conn = connect(&broker, &config()).await;
    for i in 0..5 {
        let name = format!("unknown-{i}");
        let resp = conn.send(meta(&name)).await.unwrap();
        assert_eq!(name_of(&resp), name);
    }
    assert!(!conn.is_closed());
    assert_eq!(conn.in_flight(), 0);
}

#[tokio::test]
async fn requests_without_response_acks0() {
    // Tansu answers acks=0 produce requests, Kafka does not; both must leave the stream clean.
    for answer_acks0 in [true, false] {
        let broker = start(Behavior {
            answer_acks0,
            ..Behavior::default()
        })
        .await;
        let conn = connect(&broker, &config()).await;
        for round in 0..3 {
            for _ in 0..10 {
                conn.send_no_response(ProduceRequest::default().with_acks(0))
                    .await
                    .unwrap();
            }
            let name = format!("after-acks0-{round}");
            let resp = conn.send(meta(&name)).await.unwrap();
            assert_eq!(name_of(&resp), name, "answer_acks0={answer_acks0}");
        }
        // Answered or not, nothing is left in the table once a later response came back.
        wait_in_flight_zero(&conn, Duration::from_secs(1)).await;
        assert!(!conn.is_closed());
    }
}

#[tokio::test]
async fn close_fails_pending_and_ends_tasks() {
    let broker = start(Behavior::default()).await;
    let conn = connect(&broker, &config()).await;
    let mut tasks = Vec::new();
    for i in 0..5 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            conn.send(meta(&format!("never-{i}"))).await
        }));
    }
    while conn.in_flight() < 5 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::timeout(Duration::from_secs(1), conn.close())
        .await
        .expect("close() returns promptly");
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Closed, "{e}");
    }
    // Both tasks ended: the socket is closed, so the broker sees EOF.
    broker.wait_client_eofs(1, Duration::from_secs(1)).await;
    let e = conn.send(meta("x")).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Closed);
    assert!(!e.is_retriable());
    conn.close().await; // idempotent
}

#[tokio::test]
async fn dropping_the_last_handle_ends_tasks() {
    let broker = start(Behavior::default()).await;
    let conn = connect(&broker, &config()).await;
    let clone = conn.clone();
    assert_eq!(name_of(&conn.send(meta("a")).await.unwrap()), "a");
    // A request in flight whose caller goes away with its handle.
    let pending = tokio::spawn(async move { clone.send(meta("never-1")).await });
    while conn.in_flight() < 1 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(conn);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        broker.client_eofs.load(Ordering::SeqCst),
        0,
        "a handle is alive"
    );
    pending.abort();
    let _ = pending.await;
    // The reader and writer tasks end by themselves and drop the socket.
    broker.wait_client_eofs(1, Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_safety_dropped_futures_never_corrupt_the_stream() {
    let broker = start(Behavior::default()).await;
    let conn = connect(&broker, &config().with_max_in_flight(16)).await;
    let completed = Arc::new(AtomicUsize::new(0));
    let cancelled = Arc::new(AtomicUsize::new(0));
    let mut rng = Rng::new(0x5eed);
    // Rounds of 3000 requests, each with callers that give up after a random budget. A loaded
    // machine answers fewer within the budgets, so a round that leaves too few completions (or
    // cancellations) to mean anything is followed by one with budgets twice as long.
    let (mut done, mut dropped) = (0, 0);
    for round in 0..6u32 {
        let max_budget = 150_000u64 << round;
        let mut tasks = Vec::new();
        for i in 0..3000u64 {
            let conn = conn.clone();
            let name = match rng.below(3) {
                0 => format!("c{round}-{i}"),
                n => format!("delay-{}-c{round}-{i}", n - 1),
            };
            let budget = Duration::from_micros(rng.below(max_budget));
            let use_select = rng.below(2) == 0;
            let (completed, cancelled) = (completed.clone(), cancelled.clone());
            tasks.push(tokio::spawn(async move {
                let result = if use_select {
                    tokio::select! {
                        r = conn.send(meta(&name)) => Some(r),
                        _ = tokio::time::sleep(budget) => None,
                    }
                } else {
                    tokio::time::timeout(budget, conn.send(meta(&name)))
                        .await
                        .ok()
                };
                match result {
                    Some(r) => {
                        let resp = r.unwrap();
                        assert_eq!(name_of(&resp), name, "a response went to the wrong caller");
                        completed.fetch_add(1, Ordering::SeqCst);
                    }
                    None => {
                        cancelled.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
            if i % 100 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for t in tasks {
            t.await.unwrap();
        }
        (done, dropped) = (
            completed.load(Ordering::SeqCst),
            cancelled.load(Ordering::SeqCst),
        );
        if dropped > 100 && done > 100 {
            break;
        }
    }
    eprintln!("completed {done}, cancelled {dropped}");
    assert!(
        dropped > 100 && done > 100,
        "too few cancellations or completions to mean anything: {done} done, {dropped} dropped"
    );
    // Every later request still gets its own response.
    let mut tasks = Vec::new();
    for i in 0..300 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("after-{i}");
            let resp = conn.send(meta(&name)).await.unwrap();
            assert_eq!(name_of(&resp), name);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(!conn.is_closed());
    wait_in_flight_zero(&conn, Duration::from_secs(2)).await;
    assert_eq!(broker.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn reconnects_with_exponential_backoff() {
    let base = Duration::from_millis(40);
    let max = Duration::from_millis(320);
    let cfg = config()
        .with_reconnect_backoff(base, max)
        .with_connect_timeout(Duration::from_secs(1));
    let broker = start(Behavior::default()).await;
    let addr = broker.addr;
    let bc = BrokerConnection::new(3, addr.to_string(), cfg);
    assert_eq!(name_of(&bc.send(meta("one")).await.unwrap()), "one");

    // The broker goes away: a request in flight fails, retriable.
    let pending = {
        let bc = bc.clone();
        tokio::spawn(async move { bc.send(meta("never-1")).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    broker.stop();
    drop(broker);
    let e = tokio::time::timeout(Duration::from_secs(1), pending)
        .await
        .expect("in-flight request failed promptly")
        .unwrap()
        .unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Disconnected);
    assert_eq!(e.context().broker, Some(3));
    assert!(e.is_retriable());

    // Each request makes one attempt after the back-off, which doubles per failure.
    let mut waits = Vec::new();
    for _ in 0..5 {
        let start = Instant::now();
        let e = bc.send(meta("down")).await.unwrap_err();
        waits.push(start.elapsed());
        assert!(e.is_retriable(), "{e}");
        assert_eq!(e.context().broker, Some(3));
    }
    assert_eq!(bc.failures().await, 5);
    eprintln!("waits: {waits:?}");
    // The first attempt after the drop comes after the base back-off since the last (successful)
    // attempt, long ago; then 2x, 4x, 8x (= max), max.
    let nominal = [Duration::ZERO, base * 2, base * 4, max, max];
    for (i, (got, want)) in waits.iter().zip(nominal).enumerate() {
        let lo = want.mul_f64(0.8).saturating_sub(Duration::from_millis(5));
        let hi = want.mul_f64(1.2) + Duration::from_millis(100);
        assert!(
            *got >= lo && *got <= hi,
            "attempt {i}: waited {got:?}, expected {want:?} ±20%"
        );
    }

    // The broker comes back on the same address; the next request reconnects by itself.
    let broker = start_on(addr, Behavior::default()).await;
    let start = Instant::now();
    let resp = bc.send(meta("back")).await.unwrap();
    assert_eq!(name_of(&resp), "back");
    assert!(start.elapsed() <= max.mul_f64(1.2) + Duration::from_millis(200));
    assert_eq!(bc.failures().await, 0);
    assert_eq!(broker.accepted.load(Ordering::SeqCst), 1);

    bc.close().await;
    let e = bc.send(meta("closed")).await.unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::Closed);
    broker.wait_client_eofs(1, Duration::from_secs(1)).await;
}

//! End-to-end latency driver for `benches/peers/run.sh` (the rekafka side of its `latency`
//! workload; the peers have the same program in `benches/peers/`).
//!
//! ```text
//! cargo build --release --example peers_latency
//! target/release/examples/peers_latency -b HOST:PORT,... -t TOPIC -r RATE -d SECONDS -s BYTES
//! ```
//!
//! In one process, a consumer reads every partition of TOPIC (a fresh, empty topic) from the
//! start while a producer at its defaults (acks=all) sends RATE records per second for SECONDS
//! seconds, each record due at `start + i / RATE` (a late sender catches up at once, so the
//! rate holds on average). A value is BYTES long (at least 8) and starts with the send time,
//! nanoseconds since the Unix epoch, big-endian; the consumer takes `now - send time` per record.
//! The records sent in the first second are warm-up and left out. Prints one line:
//!
//! ```text
//! records=N measured=M secs=S rate=R p50_ms=.. p99_ms=.. p999_ms=.. max_ms=..
//! ```
//!
//! (and the producer's batch and request-latency metrics on stderr), and fails when a record
//! fails, or when no record arrives for 10 s before all have.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rekafka::Client;
use rekafka::consumer::{AutoCommit, StartOffset, TopicPartition};
use rekafka::producer::{Acks, Record};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

struct Args {
    bootstrap: String,
    topic: String,
    rate: u64,
    secs: u64,
    size: usize,
    /// Client properties (`-X key=value`, repeatable), e.g. producer settings.
    props: Vec<(String, String)>,
}

fn parse() -> Result<Args, BoxError> {
    let mut a = Args {
        bootstrap: std::env::var("REKAFKA_BOOTSTRAP").unwrap_or_default(),
        topic: String::new(),
        rate: 10_000,
        secs: 30,
        size: 100,
        props: Vec::new(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv
            .get(i + 1)
            .ok_or_else(|| format!("{} needs a value", argv[i]))?;
        match argv[i].as_str() {
            "-b" => a.bootstrap = v.clone(),
            "-t" => a.topic = v.clone(),
            "-r" => a.rate = v.parse()?,
            "-d" => a.secs = v.parse()?,
            "-s" => a.size = v.parse()?,
            "-X" => {
                let (k, val) = v.split_once('=').ok_or("-X takes key=value")?;
                a.props.push((k.to_owned(), val.to_owned()));
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
        i += 2;
    }
    if a.bootstrap.is_empty() || a.topic.is_empty() || a.rate == 0 || a.secs < 2 || a.size < 8 {
        return Err(
            "usage: peers_latency -b BROKERS -t TOPIC -r RATE -d SECONDS(>=2) -s BYTES(>=8) [-X key=value]...".into(),
        );
    }
    Ok(a)
}

/// The value at `p` (0..=1) of sorted `xs`, nearest rank.
fn percentile(xs: &[u64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * xs.len() as f64).ceil() as usize).clamp(1, xs.len());
    xs[rank - 1] as f64 / 1e6
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let a = parse()?;
    let mut builder = Client::builder().bootstrap_servers(a.bootstrap.split(','));
    for (k, v) in &a.props {
        builder = builder.property(k, v);
    }
    let client = builder.connect().await?;
    // The client's consumer settings (`-X`), without auto-commit.
    let consumer = Arc::new(
        client.consumer(
            client
                .consumer_config()?
                .with_auto_commit(AutoCommit::Disabled),
        )?,
    );
    // The harness creates TOPIC just before: the broker asked may not know it yet
    // (UnknownTopicOrPartition until the controller's metadata reaches it), so ask again for
    // up to 10 s before giving up with the last error.
    let deadline = Instant::now() + Duration::from_secs(10);
    let parts = loop {
        let described = match client.admin().describe_topics(&[&a.topic]).await {
            Ok(d) => match d.into_iter().next() {
                Some(d) => d.map(|d| d.partitions).map_err(BoxError::from),
                None => Err(format!("topic {} not described", a.topic).into()),
            },
            Err(e) => Err(e.into()),
        };
        match described {
            Ok(parts) => break parts,
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    consumer.assign(parts.iter().map(|p| {
        (
            TopicPartition::new(&a.topic, p.partition),
            StartOffset::Beginning,
        )
    }))?;
    let total = a.rate * a.secs;
    // Records sent before this (ns since the epoch) are warm-up; set when producing starts.
    let warm_until = Arc::new(AtomicU64::new(u64::MAX));
    let reader = {
        let consumer = consumer.clone();
        let warm_until = warm_until.clone();
        tokio::spawn(async move {
            let mut lat = Vec::with_capacity(total as usize);
            let (mut n, mut idle) = (0u64, Instant::now());
            while n < total {
                let recs = consumer.poll(Duration::from_millis(100)).await?;
                if let Some((tp, e)) = recs.errors().first() {
                    return Err(format!("{tp}: {e}").into());
                }
                if recs.is_empty() {
                    if idle.elapsed() > Duration::from_secs(10) {
                        return Err(format!("only {n} of {total} records arrived").into());
                    }
                    continue;
                }
                idle = Instant::now();
                let now = now_ns();
                for r in recs.iter() {
                    n += 1;
                    let sent = r
                        .value
                        .as_ref()
                        .and_then(|v| v.get(..8))
                        .and_then(|b| <[u8; 8]>::try_from(b).ok())
                        .map(u64::from_be_bytes)
                        .ok_or("a record without a send time")?;
                    if sent >= warm_until.load(Ordering::Relaxed) {
                        lat.push(now.saturating_sub(sent));
                    }
                }
            }
            Ok::<_, BoxError>(lat)
        })
    };
    // The client's producer settings (`-X`), with acks=all.
    let producer = client.producer_with(|c| c.acks = Acks::All).await?;
    let topic: Arc<str> = a.topic.clone().into();
    let pad = vec![b'x'; a.size - 8];
    warm_until.store(now_ns() + 1_000_000_000, Ordering::Relaxed);
    let start = Instant::now();
    // Outcomes are counted by the producer's metrics; the delivery futures are dropped (that
    // does not cancel the records).
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / a.rate);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        let mut value = Vec::with_capacity(a.size);
        value.extend_from_slice(&now_ns().to_be_bytes());
        value.extend_from_slice(&pad);
        drop(
            producer
                .send(Record::new(topic.clone()).with_value(value))
                .await?,
        );
    }
    producer.flush().await;
    let m = producer.metrics();
    eprintln!(
        "metrics: batch-size-avg={:.0} request-latency-avg={:?} request-latency-max={:?} record-retry-total={}",
        m.batch_size_avg, m.request_latency_avg, m.request_latency_max, m.record_retry_total
    );
    let failed = m.record_error_total;
    if failed > 0 {
        return Err(format!("{failed} records failed").into());
    }
    let secs = start.elapsed().as_secs_f64();
    let mut lat = reader.await??;
    producer.close().await;
    consumer.close().await?;
    lat.sort_unstable();
    println!(
        "records={total} measured={} secs={secs:.3} rate={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2}",
        lat.len(),
        total as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        lat.last().map_or(f64::NAN, |x| *x as f64 / 1e6),
    );
    Ok(())
}

//! `rekafka perf produce`: producer throughput (`perf consume` is in `consume`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Args, Subcommand};
use rekafka::producer::{Producer, ProducerConfig, Record};

use crate::common::{CliError, CliResult, Global, Progress, stop_flag};
use crate::consume::PerfConsumeArgs;
use crate::produce::ProducerFlags;

/// `rekafka perf ...`
#[derive(Debug, Subcommand)]
pub enum Perf {
    /// Producer throughput
    Produce(PerfProduceArgs),
    /// Consumer throughput
    Consume(PerfConsumeArgs),
}

/// `rekafka perf produce`.
#[derive(Debug, Args)]
#[command(after_help = "\
Sends COUNT records of BYTES bytes (no key, or with --keys K record i has the key i % K
as decimal text, so the default partitioner hashes K distinct keys) as fast as the producer takes them (or at
--throughput), shows progress on stderr when it is a terminal, and prints a final line:
    records=N secs=S rec_per_s=R mb_per_s=M p50_ms=.. p95_ms=.. p99_ms=.. max_ms=..
The latencies are from send to acknowledgement, of every record (of an evenly spaced sample
of 20,000 when COUNT is larger). Exits 1 if any record failed.

The global -b, -F and -X apply: client properties (security.protocol, ssl.*, sasl.*, ...)
configure the connection, producer properties (linger.ms, enable.idempotence, ...) the
producer; the flags here override them.")]
pub struct PerfProduceArgs {
    /// Topic
    #[arg(short, long)]
    topic: String,
    /// Records to send
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1_000_000)]
    count: u64,
    /// Value size in bytes
    #[arg(short = 's', long, value_name = "BYTES", default_value_t = 100)]
    size: usize,
    /// At most N records a second, like Kafka's perf tool (-1: as fast as possible)
    #[arg(long, value_name = "N", default_value_t = -1, allow_hyphen_values = true)]
    throughput: i64,
    /// Distinct keys: record i gets the key `i % K` as decimal text (0: no key)
    #[arg(long, value_name = "K", default_value_t = 0)]
    keys: u64,
    #[command(flatten)]
    producer: ProducerFlags,
    /// Runtime threads: 0 = tokio's default (one per core), 1 = all on the calling thread
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
}

/// The runtime: `threads` = 0 is tokio's multi-thread default, 1 a current-thread runtime
/// (everything on the calling thread), more a multi-thread runtime with that many workers.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        0 => tokio::runtime::Runtime::new(),
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

/// The most latencies `perf produce` keeps. Each sampled record has a task awaiting its
/// delivery; Kafka's perf tool samples up to 500,000, but half a million tasks would weigh on
/// the CPU and peak RSS this command reports. 20,000 evenly spaced samples still put 20 records
/// beyond the 99.9th percentile.
const MAX_SAMPLES: u64 = 20_000;

/// `p50_ms=.. p95_ms=.. p99_ms=.. max_ms=..` of `latencies` (nearest rank), or `-` for each
/// when there are none.
fn percentiles(latencies: &mut [Duration]) -> String {
    latencies.sort_unstable();
    let at = |p: f64| -> String {
        if latencies.is_empty() {
            return "-".to_owned();
        }
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        let d = latencies[rank.clamp(1, latencies.len()) - 1];
        format!("{:.1}", d.as_secs_f64() * 1000.0)
    };
    format!(
        "p50_ms={} p95_ms={} p99_ms={} max_ms={}",
        at(50.0),
        at(95.0),
        at(99.0),
        at(100.0)
    )
}

/// The key of record `i` of `perf produce --keys K`: `keys[i % K]` (`keys[k]` is `k` as
/// decimal text), or none without keys.
fn key_of(keys: &[Bytes], i: u64) -> Option<&Bytes> {
    let k = u64::try_from(keys.len()).ok().filter(|&k| k > 0)?;
    keys.get(usize::try_from(i % k).ok()?)
}

/// Runs `perf ...`.
pub fn run(global: &Global, command: Perf) -> CliResult {
    match command {
        Perf::Consume(a) => crate::consume::perf_consume(global, a),
        Perf::Produce(a) => {
            let rt = runtime(a.threads)
                .map_err(|e| CliError::Failed(format!("cannot start the runtime: {e}")))?;
            rt.block_on(perf_produce(global, a))
        }
    }
}

async fn perf_produce(global: &Global, a: PerfProduceArgs) -> CliResult {
    let mut config = ProducerConfig::default();
    let client = crate::produce::connect(global, &mut config, &a.producer).await?;
    let producer = match Producer::new(client.cluster().clone(), config).await {
        Ok(p) => p,
        Err(e) => {
            client.close().await;
            return Err(CliError::Failed(format!(
                "creating the producer: {}",
                CliError::from(e)
            )));
        }
    };
    let (count, size) = (a.count, a.size);
    let value = Bytes::from(vec![b'x'; size]);
    let topic: std::sync::Arc<str> = a.topic.as_str().into();
    // The keys are built once: a record then only clones a `Bytes` handle.
    let keys: Vec<Bytes> = (0..a.keys).map(|k| Bytes::from(k.to_string())).collect();
    // Outcomes are counted by the producer's metrics (record-error-total). The latency of
    // every `sample`th record is taken by a task awaiting its delivery; the other delivery
    // futures are dropped (that does not cancel the records).
    let sample = count.div_ceil(MAX_SAMPLES).max(1);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(
        usize::try_from(count.min(MAX_SAMPLES)).unwrap_or(0),
    )));
    let mut waiters = tokio::task::JoinSet::new();
    let mut failed = 0u64;
    let mut first_error: Option<String> = None;
    let progress = Progress::new("records", Some(count));
    let stop = stop_flag();
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < count {
        if a.throughput > 0 {
            // Ahead of the rate: wait until this record is due.
            let due = Duration::from_secs_f64(sent as f64 / a.throughput as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let mut record = Record::new(topic.clone()).with_value(value.clone());
        if let Some(key) = key_of(&keys, sent) {
            record = record.with_key(key.clone());
        }
        // The clock is read only for the sampled records: at full speed a clock read per
        // record is a measurable share of this loop's CPU, and it is not the producer's.
        let sent_at = sent.is_multiple_of(sample).then(Instant::now);
        match producer.send(record).await {
            Ok(f) if sent_at.is_some() => {
                let latencies = latencies.clone();
                waiters.spawn(async move {
                    if f.await.is_ok()
                        && let Some(sent_at) = sent_at
                    {
                        let took = sent_at.elapsed();
                        if let Ok(mut l) = latencies.lock() {
                            l.push(took);
                        }
                    }
                });
            }
            Ok(f) => drop(f),
            Err(e) => {
                failed += 1;
                if first_error.is_none() {
                    first_error = Some(e.to_string());
                }
            }
        }
        sent += 1;
        // Every 4096 records at full speed; every record under a rate limit, where a record
        // may take long enough that progress and Ctrl-C would otherwise wait many seconds.
        if sent.is_multiple_of(4096) || a.throughput > 0 {
            progress.update(sent);
            if stop.load(std::sync::atomic::Ordering::SeqCst) {
                break;
            }
        }
    }
    producer.flush().await;
    let secs = start.elapsed().as_secs_f64();
    progress.finish();
    while waiters.join_next().await.is_some() {}
    let mut latencies = latencies
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default();
    producer.close().await;
    client.close().await;
    let m = producer.metrics();
    eprintln!(
        "metrics: batch-size-avg={:.0} request-latency-avg={:?} request-latency-max={:?} record-retry-total={} record-error-total={}",
        m.batch_size_avg,
        m.request_latency_avg,
        m.request_latency_max,
        m.record_retry_total,
        m.record_error_total
    );
    failed += m.record_error_total;
    crate::outln!(
        "records={sent} secs={secs:.3} rec_per_s={:.0} mb_per_s={:.2} {}",
        sent as f64 / secs,
        (sent as f64 * size as f64) / secs / 1e6,
        percentiles(&mut latencies)
    );
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{failed} records failed{}",
            first_error
                .map(|e| format!("; first: {e}"))
                .unwrap_or_default()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cycle_through_k_decimal_keys() {
        let keys: Vec<Bytes> = (0..3u64).map(|k| Bytes::from(k.to_string())).collect();
        let got: Vec<&[u8]> = (0..7)
            .filter_map(|i| key_of(&keys, i))
            .map(|k| &k[..])
            .collect();
        assert_eq!(got, [b"0", b"1", b"2", b"0", b"1", b"2", b"0"]);
        assert_eq!(key_of(&[], 5), None);
    }

    #[test]
    fn keys_flag_parses() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct P {
            #[command(flatten)]
            a: PerfProduceArgs,
        }
        let p = P::try_parse_from(["p", "-t", "t", "--keys", "1000"]).unwrap();
        assert_eq!(p.a.keys, 1000);
        assert_eq!(P::try_parse_from(["p", "-t", "t"]).unwrap().a.keys, 0);
    }

    #[test]
    fn latency_percentiles_by_nearest_rank() {
        let mut l: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(
            percentiles(&mut l),
            "p50_ms=50.0 p95_ms=95.0 p99_ms=99.0 max_ms=100.0"
        );
        let mut one = vec![Duration::from_micros(1500)];
        assert_eq!(
            percentiles(&mut one),
            "p50_ms=1.5 p95_ms=1.5 p99_ms=1.5 max_ms=1.5"
        );
        assert_eq!(percentiles(&mut []), "p50_ms=- p95_ms=- p99_ms=- max_ms=-");
    }
}

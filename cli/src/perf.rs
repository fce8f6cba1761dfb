//! `rekafka perf produce`: producer throughput (`perf consume` is in `consume`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rekafka::producer::{Producer, Record};

use crate::common::{CliError, Global};
use crate::produce::Common;

pub const HELP: &str = "\
Usage: rekafka [-b HOST:PORT] [-F FILE] [-X KEY=VALUE]... perf produce -t TOPIC -n COUNT
           -s VALUE_BYTES [OPTIONS]
       rekafka [-b ..] [-F ..] [-X ..]... perf consume -t TOPIC -n COUNT (see perf consume --help)

Sends COUNT records of VALUE_BYTES bytes (no key) as fast as the producer takes them, prints
progress every second and a final line:
    records=N secs=S rec_per_s=R mb_per_s=M
Exits 1 if any record failed.

The global -b, -F and -X apply: client properties (security.protocol, ssl.*, sasl.*, ...)
configure the connection, producer properties (linger.ms, enable.idempotence, ...) the
producer; the flags below override them.

Options:
  -t, --topic TOPIC          Topic (required)
  -n, --count N              Records to send (default 1000000)
  -s, --size BYTES           Value size (default 100)
      --acks all|1|0         Acknowledgements (default all)
  -z, --compression CODEC    none, gzip, snappy, lz4, zstd (default none)
      --linger-ms MS         linger.ms (default 5)
      --batch-size BYTES     batch.size (default 16384)
      --threads N            Runtime threads: 0 = tokio's default (one per core), 1 = all on
                             the calling thread (default 0)
";

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

/// `rekafka perf produce|consume ...`
pub fn run(global: &Global, args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("consume") => {
            return match crate::consume::perf_consume(global, &args[1..]) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    e.exit_code()
                }
            };
        }
        Some("produce") => {}
        Some("-h" | "--help") | None => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("error: unknown perf command {other:?} (try `rekafka perf produce`)");
            return ExitCode::from(2);
        }
    }
    let args = &args[1..];
    // Global properties first (-F, then -X), then this command's flags.
    let mut common = Common::new();
    let builder = match global.builder_with(|k, v| common.config.apply_property(k, v)) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    let (mut count, mut size) = (1_000_000u64, 100usize);
    let mut threads = 0usize;
    let mut i = 0;
    while i < args.len() {
        match common.parse(args, &mut i) {
            Ok(true) => {}
            Ok(false) => {
                let arg = args[i].as_str();
                let v = args.get(i + 1);
                match (arg, v) {
                    ("-h" | "--help", _) => {
                        print!("{HELP}");
                        return ExitCode::SUCCESS;
                    }
                    ("-n" | "--count", Some(v)) if v.parse::<u64>().is_ok() => {
                        count = v.parse().unwrap_or(0);
                        i += 1;
                    }
                    ("-s" | "--size", Some(v)) if v.parse::<usize>().is_ok() => {
                        size = v.parse().unwrap_or(0);
                        i += 1;
                    }
                    ("--threads", Some(v)) if v.parse::<usize>().is_ok() => {
                        threads = v.parse().unwrap_or(0);
                        i += 1;
                    }
                    _ => {
                        eprintln!(
                            "error: unexpected or bad argument {arg:?} (see `rekafka perf produce --help`)"
                        );
                        return ExitCode::from(2);
                    }
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
        i += 1;
    }
    let rt = match runtime(threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let Some(topic) = common.topic.clone() else {
            eprintln!("error: -t TOPIC is required");
            return ExitCode::from(2);
        };
        let client = match builder.build().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {}", CliError::from(e));
                return ExitCode::FAILURE;
            }
        };
        let producer = match Producer::new(client.cluster().clone(), common.config.clone()).await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: creating the producer: {}", CliError::from(e));
                return ExitCode::FAILURE;
            }
        };
        let value = Bytes::from(vec![b'x'; size]);
        let topic: std::sync::Arc<str> = topic.into();
        // Outcomes are counted by the producer's metrics (record-error-total), so the loop
        // keeps no per-record future: the delivery futures are dropped (that does not cancel
        // the records).
        let mut failed = 0u64;
        let mut first_error: Option<String> = None;
        let start = Instant::now();
        let mut last_report = start;
        let mut note = |r: Result<(), rekafka::producer::ProduceError>| {
            if let Err(e) = r {
                failed += 1;
                if first_error.is_none() {
                    first_error = Some(e.to_string());
                }
            }
        };
        for n in 0..count {
            let record = Record::new(topic.clone()).with_value(value.clone());
            match producer.send(record).await {
                Ok(f) => drop(f),
                Err(e) => note(Err(e)),
            }
            if n % 4096 == 0 && last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                let secs = start.elapsed().as_secs_f64();
                let m = producer.metrics();
                eprintln!(
                    "progress: sent={} acked={} failed={} rec_per_s={:.0}",
                    n + 1,
                    m.record_send_total,
                    m.record_error_total,
                    (n + 1) as f64 / secs
                );
            }
        }
        producer.flush().await;
        let secs = start.elapsed().as_secs_f64();
        producer.close().await;
        client.close().await;
        let m = producer.metrics();
        eprintln!(
            "metrics: batch-size-avg={:.0} request-latency-avg={:?} request-latency-max={:?} record-retry-total={} record-error-total={}",
            m.batch_size_avg, m.request_latency_avg, m.request_latency_max, m.record_retry_total, m.record_error_total
        );
        failed += m.record_error_total;
        if failed > 0 {
            eprintln!(
                "error: {failed} records failed{}",
                first_error.map(|e| format!("; first: {e}")).unwrap_or_default()
            );
        }
        println!(
            "records={count} secs={secs:.3} rec_per_s={:.0} mb_per_s={:.2}",
            count as f64 / secs,
            (count as f64 * size as f64) / secs / 1e6
        );
        if failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS }
    })
}

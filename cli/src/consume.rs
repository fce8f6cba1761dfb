//! `rekafka consume` and `rekafka perf consume`.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{CliError, CliResult, Global};
use rekafka::Client;
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, ConsumerRecord, IsolationLevel, OffsetReset, StartOffset,
    TopicPartition,
};

pub const CONSUME_HELP: &str = "\
Usage: rekafka [-b HOST:PORT] [-F FILE] [-X KEY=VALUE]... consume -t TOPIC [OPTIONS]

Options:
  -t, --topic TOPIC          Topic to read
  -g, --group GROUP          Consume as a member of GROUP (subscribe; commits offsets);
                             -X group.id=GROUP does the same
  -p, --partition N          Read only partition N (without a group)
  -o, --offset WHERE         beginning | end | OFFSET (default: end; with a group: where to
                             start when the group has no committed offset, overriding
                             -X auto.offset.reset)
  -e, --exit                 Exit when every assigned partition reaches its end
  -c, --count N              Exit after N records
      --isolation LEVEL      read_uncommitted (default) | read_committed (overrides
                             -X isolation.level)
      --format FORMAT        json (default): one object per line with topic, partition,
                             offset, timestamp, key, value (UTF-8 strings; key_b64/value_b64
                             instead when not UTF-8; null when absent) and headers as
                             [[name, value-or-null], ...] in wire order (a non-UTF-8 header
                             value is {\"b64\": \"...\"}) | value: the value bytes, one per line

The global -b, -F and -X apply: client properties (security.protocol, ssl.*, sasl.*,
request.timeout.ms, ...) configure the connection, consumer properties (group.id,
isolation.level, auto.offset.reset, session.timeout.ms, fetch.max.bytes, ...) the consumer.
";

pub const PERF_HELP: &str = "\
Usage: rekafka [-b HOST:PORT] [-F FILE] [-X KEY=VALUE]... perf consume -t TOPIC -n COUNT

Reads COUNT records from the beginning of every partition of TOPIC (manual assignment) and
prints progress to stderr, then one line: records=N secs=S rec_per_s=R mb_per_s=M
The global -b, -F and -X apply (client and consumer properties).
";

struct Args {
    topic: Option<String>,
    group: Option<String>,
    partition: Option<i32>,
    offset: Option<String>,
    exit_at_end: bool,
    count: Option<u64>,
    isolation: Option<IsolationLevel>,
    json: bool,
}

fn parse(args: &[String]) -> CliResult<Args> {
    let mut a = Args {
        topic: None,
        group: None,
        partition: None,
        offset: None,
        exit_at_end: false,
        count: None,
        isolation: None,
        json: true,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| CliError::usage(format!("{name} needs a value")))
        };
        match arg.as_str() {
            "-t" | "--topic" => a.topic = Some(val(arg)?),
            "-g" | "--group" => a.group = Some(val(arg)?),
            "-p" | "--partition" => {
                let v = val(arg)?;
                a.partition = Some(
                    v.parse()
                        .map_err(|_| CliError::usage(format!("bad partition {v:?}")))?,
                )
            }
            "-o" | "--offset" => a.offset = Some(val(arg)?),
            "-e" | "--exit" => a.exit_at_end = true,
            "-c" | "--count" | "-n" => {
                let v = val(arg)?;
                a.count = Some(
                    v.parse()
                        .map_err(|_| CliError::usage(format!("bad {arg} {v:?}")))?,
                )
            }
            "--isolation" => {
                a.isolation = Some(match val(arg)?.as_str() {
                    "read_committed" => IsolationLevel::ReadCommitted,
                    "read_uncommitted" => IsolationLevel::ReadUncommitted,
                    o => return Err(CliError::usage(format!("unknown isolation level {o:?}"))),
                })
            }
            "--format" => {
                a.json = match val(arg)?.as_str() {
                    "json" => true,
                    "value" => false,
                    o => return Err(CliError::usage(format!("unknown format {o:?}"))),
                }
            }
            o => {
                return Err(CliError::usage(format!(
                    "unknown argument {o:?} to consume"
                )));
            }
        }
    }
    Ok(a)
}

fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the runtime: {e}")))
}

/// The client from the global settings (`-F`, `-b`, `-X`, TLS/SASL included) and `config`
/// with the consumer properties among them applied.
async fn connect(global: &Global, config: &mut ConsumerConfig) -> CliResult<Client> {
    let builder = global.builder_with(|k, v| config.apply_property(k, v))?;
    Ok(builder.build().await?)
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

/// `rekafka consume ...`
pub fn consume(global: &Global, args: &[String]) -> CliResult {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{CONSUME_HELP}");
        return Ok(());
    }
    let a = parse(args)?;
    runtime()?.block_on(consume_async(global, a))
}

fn start_of(offset: Option<&str>) -> CliResult<StartOffset> {
    Ok(match offset.unwrap_or("end") {
        "beginning" | "earliest" => StartOffset::Beginning,
        "end" | "latest" => StartOffset::End,
        "stored" | "committed" => StartOffset::Committed,
        n => StartOffset::Offset(
            n.parse()
                .map_err(|_| CliError::usage(format!("bad offset {n:?}")))?,
        ),
    })
}

async fn consume_async(global: &Global, a: Args) -> CliResult {
    let topic = a
        .topic
        .clone()
        .ok_or_else(|| CliError::usage("consume: -t TOPIC is required"))?;
    // Properties first (-F, then -X), then this command's flags, which are more specific.
    let mut config = ConsumerConfig::new();
    let client = connect(global, &mut config).await?;
    let cluster = client.cluster().clone();
    if let Some(level) = a.isolation {
        config.isolation_level = level;
    }
    if a.group.is_some() {
        config.group_id = a.group.clone();
    }
    let start = start_of(a.offset.as_deref())?;
    let grouped = config.group_id.is_some();
    if grouped {
        if a.offset.is_some() {
            config.auto_offset_reset = match start {
                StartOffset::Beginning => OffsetReset::Earliest,
                StartOffset::End => OffsetReset::Latest,
                StartOffset::Committed => config.auto_offset_reset,
                _ => return Err(CliError::usage("with a group, -o must be beginning or end")),
            };
        }
    } else {
        config.auto_commit = AutoCommit::Disabled;
    }
    let consumer = Consumer::new(cluster.clone(), config)?;
    if grouped {
        consumer.subscribe([topic.clone()])?;
    } else {
        let parts = cluster
            .partitions(&topic)
            .await
            .map_err(|e| failed(format!("topic {topic}: {}", CliError::from(e))))?;
        let tps: Vec<(TopicPartition, StartOffset)> = parts
            .iter()
            .filter(|p| a.partition.is_none_or(|n| n == p.partition))
            .map(|p| (TopicPartition::new(&topic, p.partition), start))
            .collect();
        if tps.is_empty() {
            return Err(failed(format!("topic {topic} has no such partition")));
        }
        consumer.assign(tps)?;
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut n: u64 = 0;
    let mut line = String::new();
    'outer: loop {
        let recs = consumer.poll(Duration::from_millis(500)).await?;
        for (tp, e) in recs.errors() {
            eprintln!("error: {tp}: {e}");
        }
        for r in recs.iter() {
            if a.json {
                line.clear();
                json_line(r, &mut line);
                line.push('\n');
                out.write_all(line.as_bytes()).map_err(failed)?;
            } else {
                if let Some(v) = &r.value {
                    out.write_all(v).map_err(failed)?;
                }
                out.write_all(b"\n").map_err(failed)?;
            }
            n += 1;
            if a.count.is_some_and(|c| n >= c) {
                break 'outer;
            }
        }
        if recs.is_empty() {
            out.flush().map_err(failed)?;
        }
        if a.exit_at_end && at_end(&consumer).await {
            break;
        }
    }
    out.flush().map_err(failed)?;
    drop(out);
    consumer.close().await?;
    client.close().await;
    Ok(())
}

/// Whether every assigned partition's position reached the high watermark of its last fetch.
async fn at_end(consumer: &Consumer) -> bool {
    let assigned = consumer.assignment();
    if assigned.is_empty() {
        return false;
    }
    let positions = consumer.positions();
    assigned.iter().all(|tp| {
        let pos = positions
            .iter()
            .find(|(t, _)| t == tp)
            .map(|(_, o)| o.offset);
        match (pos, consumer.cached_watermarks(tp)) {
            (Some(p), Some((hw, lso, _))) => {
                let end = if consumer.config().isolation_level == IsolationLevel::ReadCommitted {
                    lso.unwrap_or(hw)
                } else {
                    hw
                };
                p >= end
            }
            _ => false,
        }
    })
}

/// One JSON object: topic, partition, offset, timestamp, key, value (UTF-8 strings, or
/// key_b64/value_b64 when not UTF-8; null when absent), headers as [[name, value-or-null]].
pub fn json_line(r: &ConsumerRecord, s: &mut String) {
    s.push_str("{\"topic\":");
    json_str(&r.topic, s);
    s.push_str(&format!(
        ",\"partition\":{},\"offset\":{},\"timestamp\":{}",
        r.partition, r.offset, r.timestamp
    ));
    bytes_field("key", r.key.as_deref(), s);
    bytes_field("value", r.value.as_deref(), s);
    s.push_str(",\"headers\":[");
    for (i, h) in r.headers.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('[');
        json_str(h.key(), s);
        s.push(',');
        match h.value() {
            None => s.push_str("null"),
            Some(v) => match std::str::from_utf8(v) {
                Ok(t) => json_str(t, s),
                Err(_) => {
                    s.push_str("{\"b64\":");
                    json_str(&base64(v), s);
                    s.push('}');
                }
            },
        }
        s.push(']');
    }
    s.push_str("]}");
}

fn bytes_field(name: &str, v: Option<&[u8]>, s: &mut String) {
    match v {
        None => s.push_str(&format!(",\"{name}\":null")),
        Some(b) => match std::str::from_utf8(b) {
            Ok(t) => {
                s.push_str(&format!(",\"{name}\":"));
                json_str(t, s);
            }
            Err(_) => {
                s.push_str(&format!(",\"{name}_b64\":"));
                json_str(&base64(b), s);
            }
        },
    }
}

fn json_str(t: &str, s: &mut String) {
    s.push('"');
    for c in t.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
            c => s.push(c),
        }
    }
    s.push('"');
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

/// `rekafka perf consume ...`
pub fn perf_consume(global: &Global, args: &[String]) -> CliResult {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{PERF_HELP}");
        return Ok(());
    }
    let a = parse(args)?;
    runtime()?.block_on(perf_async(global, a))
}

async fn perf_async(global: &Global, a: Args) -> CliResult {
    let topic = a
        .topic
        .clone()
        .ok_or_else(|| CliError::usage("perf consume: -t TOPIC is required"))?;
    let count = a
        .count
        .ok_or_else(|| CliError::usage("perf consume: -n COUNT is required"))?;
    let mut config = ConsumerConfig::new()
        .with_auto_commit(AutoCommit::Disabled)
        .with_max_poll_records(10_000);
    let client = connect(global, &mut config).await?;
    let cluster = client.cluster().clone();
    if let Some(level) = a.isolation {
        config.isolation_level = level;
    }
    // Manual assignment: a group id among the properties is ignored.
    config.group_id = None;
    config.group_instance_id = None;
    let consumer = Arc::new(Consumer::new(cluster.clone(), config)?);
    let parts = cluster
        .partitions(&topic)
        .await
        .map_err(|e| failed(format!("topic {topic}: {}", CliError::from(e))))?;
    consumer.assign(parts.iter().map(|p| {
        (
            TopicPartition::new(&topic, p.partition),
            StartOffset::Beginning,
        )
    }))?;
    let start = Instant::now();
    let mut last_report = start;
    let mut n: u64 = 0;
    let mut bytes: u64 = 0;
    let mut idle_since = Instant::now();
    while n < count {
        let recs = consumer.poll(Duration::from_millis(500)).await?;
        if let Some((tp, e)) = recs.errors().first() {
            return Err(failed(format!("{tp}: {e}")));
        }
        if recs.is_empty() {
            if idle_since.elapsed() > Duration::from_secs(10) {
                return Err(failed(format!(
                    "only {n} of {count} records arrived (idle for 10 s)"
                )));
            }
            continue;
        }
        idle_since = Instant::now();
        for r in recs.iter() {
            n += 1;
            bytes += (r.key.as_ref().map_or(0, |k| k.len())
                + r.value.as_ref().map_or(0, |v| v.len())) as u64;
        }
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let s = start.elapsed().as_secs_f64();
            eprintln!("{n} records, {:.0} rec/s", n as f64 / s);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "records={n} secs={secs:.3} rec_per_s={:.0} mb_per_s={:.2}",
        n as f64 / secs,
        bytes as f64 / secs / 1_000_000.0
    );
    consumer.close().await?;
    client.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rekafka::consumer::visible_records;
    use rekafka::protocol::record::BatchBuilder;

    #[test]
    fn json_lines_match_the_documented_format() {
        let mut b = BatchBuilder::new().with_base_offset(7);
        b.append(
            1000,
            None,
            Some(&[0xff]),
            &[("h1", Some(b"a")), ("h2", None), ("h1", Some(&[0xfe]))],
        )
        .unwrap();
        b.append(1001, Some(b"k\"1"), None, &[]).unwrap();
        let (recs, _) =
            visible_records(&b.build().unwrap(), 7, IsolationLevel::ReadUncommitted, &[]).unwrap();
        let mut s = String::new();
        json_line(&recs[0], &mut s);
        assert_eq!(
            s,
            r#"{"topic":"t","partition":0,"offset":7,"timestamp":1000,"key":null,"value_b64":"/w==","headers":[["h1","a"],["h2",null],["h1",{"b64":"/g=="}]]}"#
        );
        s.clear();
        json_line(&recs[1], &mut s);
        assert_eq!(
            s,
            r#"{"topic":"t","partition":0,"offset":8,"timestamp":1001,"key":"k\"1","value":null,"headers":[]}"#
        );
        assert_eq!(base64(b"hello"), "aGVsbG8=");
    }
}

//! `rekafka consume` and `rekafka perf consume`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Args;
use rekafka::Client;
use rekafka::admin::OffsetSpec;
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, IsolationLevel, OffsetReset, StartOffset, TopicPartition,
};

use crate::common::{CliError, CliResult, Global, stdout_error, stop_flag};
use rekafka::share::{AcknowledgeType, AcknowledgementMode, ShareConsumer, ShareConsumerConfig};

use crate::format::{Envelope, Format, JsonLine, ShareJsonLine, to_json};

/// `rekafka consume`: print records.
#[derive(Debug, Args)]
#[command(after_help = "\
Output formats:
  (default)   one JSON object per line: topic, partition, offset, timestamp, key, value (UTF-8
              strings; key_b64/value_b64 instead when not UTF-8; null when absent) and headers
              as [[name, value-or-null], ...] in wire order ({\"b64\": ...} for non-UTF-8)
  -J          kcat's JSON envelope: topic, partition, offset, tstype, ts, headers (flat
              [name, value, ...], only when there are any), key, payload
  -f FORMAT   kcat's format string: %s value, %S value length (-1 for null), %R value
              length as a big-endian 32-bit integer, %k key, %K key length, %t topic,
              %p partition, %o offset, %T timestamp (ms), %h headers (n=v,...), %% a %;
              escapes \\n \\r \\t \\\\ \\0 \\xHH. Example: -f 'Topic %t [%p] at offset %o: key %k: %s\\n'
  -K SEP      key SEP value, one record per line (kcat's -K)
  --format value   the value bytes, one per line

The global -b, -F and -X apply: client properties (security.protocol, ssl.*, sasl.*, ...)
configure the connection, consumer properties (group.id, isolation.level, auto.offset.reset,
session.timeout.ms, fetch.max.bytes, ...) the consumer; the flags here override them.

Ctrl-C, SIGTERM or a closed stdout (`| head`) stop the command cleanly: in a group it commits
what it printed and leaves the group (exit 0).")]
pub struct ConsumeArgs {
    /// Topic to read
    #[arg(short, long)]
    topic: String,
    /// Consume as a member of GROUP (subscribe; commits offsets); -X group.id=GROUP does the
    /// same
    #[arg(short, long)]
    group: Option<String>,
    /// Consume as a member of share group G (KIP-932): records are shared with the group's
    /// other members; each printed record is accepted, one fetched and not printed (after -c,
    /// a closed stdout) is released. Where the group starts is its config
    /// share.auto.offset.reset (`rekafka groups config`). Prints JSON lines with a
    /// delivery_count, or --format value
    #[arg(long, value_name = "G", conflicts_with_all = ["group", "partition", "offset", "exit", "isolation", "fmt", "envelope", "key_delimiter"])]
    share_group: Option<String>,
    /// Read only partition N (without a group)
    #[arg(short, long, value_name = "N")]
    partition: Option<i32>,
    /// Where to start: beginning | end | stored | OFFSET | -N (N before the end of each
    /// partition) | s@TIMESTAMP (the first record at or after this time, ms since the
    /// epoch). Default: end. With a group only beginning, end or stored: where to start when
    /// the group has no committed offset (overrides -X auto.offset.reset)
    #[arg(short, long, value_name = "WHERE", allow_hyphen_values = true, value_parser = Start::parse)]
    offset: Option<Start>,
    /// Exit when every assigned partition reaches its end
    #[arg(short, long)]
    exit: bool,
    /// Exit after N records
    #[arg(short, long, short_alias = 'n', value_name = "N")]
    count: Option<u64>,
    /// read_uncommitted (default) | read_committed; overrides -X isolation.level
    #[arg(long, value_name = "LEVEL", value_parser = parse_isolation)]
    isolation: Option<IsolationLevel>,
    /// json (default) | value: the value bytes, one per line
    #[arg(long, value_name = "FORMAT", value_parser = ["json", "value"], conflicts_with_all = ["fmt", "envelope", "key_delimiter"])]
    format: Option<String>,
    /// kcat format string (see below)
    #[arg(short = 'f', long = "fmt", value_name = "FORMAT", conflicts_with_all = ["envelope", "key_delimiter"])]
    fmt: Option<String>,
    /// kcat's JSON envelope (see below)
    #[arg(short = 'J', long = "json-envelope")]
    envelope: bool,
    /// Print key SEP value per record (kcat's -K)
    #[arg(
        short = 'K',
        long = "key-delimiter",
        value_name = "SEP",
        conflicts_with = "envelope"
    )]
    key_delimiter: Option<String>,
    /// Print null keys and values as NULL (kcat's -Z; else they print as nothing)
    #[arg(short = 'Z', long = "null-as-text")]
    null_as_text: bool,
}

/// `rekafka perf consume`: consumer throughput.
#[derive(Debug, Args)]
#[command(after_help = "\
Reads COUNT records from the beginning of every partition of TOPIC (manual assignment),
prints progress to stderr, then one line: records=N secs=S rec_per_s=R mb_per_s=M
The global -b, -F and -X apply (client and consumer properties).")]
pub struct PerfConsumeArgs {
    /// Topic to read
    #[arg(short, long)]
    topic: String,
    /// Records to read
    #[arg(short = 'n', long, value_name = "COUNT")]
    count: u64,
    /// read_uncommitted (default) | read_committed; overrides -X isolation.level
    #[arg(long, value_name = "LEVEL", value_parser = parse_isolation)]
    isolation: Option<IsolationLevel>,
}

fn parse_isolation(s: &str) -> Result<IsolationLevel, String> {
    match s {
        "read_committed" => Ok(IsolationLevel::ReadCommitted),
        "read_uncommitted" => Ok(IsolationLevel::ReadUncommitted),
        o => Err(format!(
            "unknown isolation level '{o}' (read_committed, read_uncommitted)"
        )),
    }
}

/// Where `consume -o` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The beginning of each partition.
    Beginning,
    /// The end of each partition.
    End,
    /// The group's committed offset.
    Stored,
    /// This offset.
    Offset(i64),
    /// N records before the end of each partition.
    FromEnd(i64),
    /// The first record at or after this timestamp (ms).
    Timestamp(i64),
}

impl Start {
    /// `beginning | end | stored | N | -N | s@TIMESTAMP` (kcat's spellings; `earliest`,
    /// `latest` and `committed` too).
    pub fn parse(s: &str) -> Result<Start, String> {
        let bad =
            || format!("expects beginning, end, stored, OFFSET, -N or s@TIMESTAMP, got '{s}'");
        Ok(match s {
            "beginning" | "earliest" => Start::Beginning,
            "end" | "latest" => Start::End,
            "stored" | "committed" => Start::Stored,
            _ => {
                if let Some(ts) = s.strip_prefix("s@") {
                    Start::Timestamp(ts.parse().map_err(|_| bad())?)
                } else if let Some(n) = s.strip_prefix('-') {
                    Start::FromEnd(n.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(bad)?)
                } else {
                    Start::Offset(s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(bad)?)
                }
            }
        })
    }
}

/// How a record is printed.
enum Output {
    Json,
    Value,
    Envelope,
    Format(Format),
}

impl Output {
    fn of(a: &ConsumeArgs) -> CliResult<Output> {
        if a.envelope {
            return Ok(Output::Envelope);
        }
        if let Some(f) = &a.fmt {
            return Format::parse(f, a.null_as_text)
                .map(Output::Format)
                .map_err(|e| CliError::usage(format!("-f: {e}")));
        }
        if let Some(sep) = &a.key_delimiter {
            return Ok(Output::Format(Format::key_value(sep, a.null_as_text)));
        }
        Ok(match a.format.as_deref() {
            Some("value") => Output::Value,
            _ => Output::Json,
        })
    }

    fn write(&self, r: &rekafka::consumer::ConsumerRecord, out: &mut Vec<u8>) {
        match self {
            Output::Json => {
                out.extend_from_slice(to_json(&JsonLine(r)).as_bytes());
                out.push(b'\n');
            }
            Output::Envelope => {
                out.extend_from_slice(to_json(&Envelope(r)).as_bytes());
                out.push(b'\n');
            }
            Output::Value => {
                if let Some(v) = &r.value {
                    out.extend_from_slice(v);
                }
                out.push(b'\n');
            }
            Output::Format(f) => f.write(r, out),
        }
    }
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
    Ok(builder.connect().await?)
}

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

/// Runs `consume`.
pub fn run(global: &Global, a: ConsumeArgs) -> CliResult {
    let output = Output::of(&a)?;
    runtime()?.block_on(consume_async(global, a, output))
}

/// Where each partition of `topic` (those `only` allows) starts for `start`, looked up with
/// ListOffsets where `start` is relative to the end or a timestamp.
async fn start_offsets(
    client: &Client,
    topic: &str,
    only: Option<i32>,
    start: Start,
) -> CliResult<Vec<(TopicPartition, StartOffset)>> {
    let parts = client
        .cluster()
        .partitions(topic)
        .await
        .map_err(|e| failed(format!("topic {topic}: {}", CliError::from(e))))?;
    let tps: Vec<TopicPartition> = parts
        .iter()
        .filter(|p| only.is_none_or(|n| n == p.partition))
        .map(|p| TopicPartition::new(topic, p.partition))
        .collect();
    if tps.is_empty() {
        return Err(failed(format!("topic {topic} has no such partition")));
    }
    let lookup = |spec: OffsetSpec| {
        let asked: Vec<(rekafka::admin::TopicPartition, OffsetSpec)> = tps
            .iter()
            .map(|tp| {
                (
                    rekafka::admin::TopicPartition::new(topic, tp.partition),
                    spec,
                )
            })
            .collect();
        async move {
            let listed = client.admin().list_offsets(&asked).await?;
            asked
                .into_iter()
                .zip(listed)
                .map(|((tp, _), l)| {
                    let l = l.map_err(|e| failed(format!("{tp}: listing offsets: {e}")))?;
                    Ok((TopicPartition::new(topic, tp.partition), l.offset))
                })
                .collect::<CliResult<Vec<(TopicPartition, Option<i64>)>>>()
        }
    };
    Ok(match start {
        Start::Beginning => tps
            .into_iter()
            .map(|tp| (tp, StartOffset::Beginning))
            .collect(),
        Start::End => tps.into_iter().map(|tp| (tp, StartOffset::End)).collect(),
        Start::Stored => tps
            .into_iter()
            .map(|tp| (tp, StartOffset::Committed))
            .collect(),
        Start::Offset(o) => tps
            .into_iter()
            .map(|tp| (tp, StartOffset::Offset(o)))
            .collect(),
        Start::FromEnd(n) => {
            let ends = lookup(OffsetSpec::Latest).await?;
            let starts: HashMap<TopicPartition, Option<i64>> =
                lookup(OffsetSpec::Earliest).await?.into_iter().collect();
            ends.into_iter()
                .map(|(tp, end)| {
                    let first = starts.get(&tp).copied().flatten().unwrap_or(0);
                    let at = match end {
                        Some(end) => StartOffset::Offset(end.saturating_sub(n).max(first)),
                        None => StartOffset::End,
                    };
                    (tp, at)
                })
                .collect()
        }
        Start::Timestamp(ts) => lookup(OffsetSpec::Timestamp(ts))
            .await?
            .into_iter()
            // No record at or after the time: start at the end.
            .map(|(tp, o)| (tp, o.map_or(StartOffset::End, StartOffset::Offset)))
            .collect(),
    })
}

async fn consume_async(global: &Global, a: ConsumeArgs, output: Output) -> CliResult {
    if let Some(group) = a.share_group.clone() {
        return consume_share(global, &a, &group, &output).await;
    }
    let topic = a.topic.clone();
    // Properties first (-F, then -X), then this command's flags, which are more specific.
    let mut config = ConsumerConfig::new();
    let client = connect(global, &mut config).await?;
    if let Some(level) = a.isolation {
        config.isolation_level = level;
    }
    if a.group.is_some() {
        config.group_id = a.group.clone();
    }
    let start = a.offset.unwrap_or(Start::End);
    let grouped = config.group_id.is_some();
    if grouped {
        if a.partition.is_some() {
            return Err(CliError::usage(
                "-p reads without a group; drop -g/group.id",
            ));
        }
        if a.offset.is_some() {
            config.auto_offset_reset = match start {
                Start::Beginning => OffsetReset::Earliest,
                Start::End => OffsetReset::Latest,
                Start::Stored => config.auto_offset_reset,
                _ => {
                    return Err(CliError::usage(
                        "with a group, -o must be beginning, end or stored",
                    ));
                }
            };
        }
    } else {
        config.auto_commit = AutoCommit::Disabled;
    }
    let consumer = Consumer::new(client.cluster().clone(), config)?;
    if grouped {
        consumer.subscribe([topic.clone()])?;
    } else {
        consumer.assign(start_offsets(&client, &topic, a.partition, start).await?)?;
    }
    let stop = stop_flag();
    let result = consume_loop(&consumer, &a, &output, &stop).await;
    // Commits what was printed (with a group and auto-commit) and leaves the group.
    let closed = consumer.close().await;
    client.close().await;
    result?;
    closed?;
    Ok(())
}

/// Polls and prints until `-c`, `-e`, a signal or a closed stdout. On a stop in the middle of
/// a batch, each partition is moved back to its first record not printed, so a group commits
/// only what was printed (a batch a closed stdout refused counts as not printed).
async fn consume_loop(
    consumer: &Consumer,
    a: &ConsumeArgs,
    output: &Output,
    stop: &std::sync::atomic::AtomicBool,
) -> CliResult {
    let stdout = std::io::stdout();
    let mut n: u64 = 0;
    let mut buf = Vec::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let recs = consumer.poll(Duration::from_millis(500)).await?;
        for (tp, e) in recs.errors() {
            eprintln!("error: {tp}: {e}");
        }
        buf.clear();
        // The first record of each partition that is not printed, when the batch is cut short.
        let mut unprinted: Vec<(TopicPartition, i64)> = Vec::new();
        let mut first_of_batch: Vec<(TopicPartition, i64)> = Vec::new();
        let mut count_reached = false;
        for (tp, records) in recs.by_partition() {
            if let Some(r) = records.first() {
                first_of_batch.push((tp.clone(), r.offset));
            }
            for r in records {
                if count_reached {
                    unprinted.push((tp.clone(), r.offset));
                    break;
                }
                output.write(r, &mut buf);
                n += 1;
                count_reached = a.count.is_some_and(|c| n >= c);
            }
        }
        let written = {
            let mut out = stdout.lock();
            out.write_all(&buf).and_then(|_| out.flush())
        };
        if let Err(e) = written {
            let e = stdout_error(e);
            if matches!(e, CliError::PipeClosed) {
                // The reader is gone: nothing of this batch counts as printed.
                rewind(consumer, &first_of_batch);
            }
            return Err(e);
        }
        if count_reached {
            rewind(consumer, &unprinted);
            return Ok(());
        }
        if a.exit && at_end(consumer) {
            return Ok(());
        }
    }
}

/// `consume --share-group`: a share consumer; each printed record is accepted, each record
/// not printed (after `-c`, a closed stdout) released; the acknowledgements ride on the next
/// poll, and the last ones go in a commit before the close.
async fn consume_share(
    global: &Global,
    a: &ConsumeArgs,
    group: &str,
    output: &Output,
) -> CliResult {
    let mut config = ShareConsumerConfig::new(group);
    let builder = global.builder_with(|k, v| config.apply_property(k, v))?;
    let client = builder.connect().await?;
    config.group_id = group.to_owned();
    config.acknowledgement_mode = AcknowledgementMode::Implicit;
    let mut consumer = client.share_consumer(config)?;
    consumer.subscribe([a.topic.clone()]);
    let stop = stop_flag();
    let result = share_loop(&mut consumer, a, output, &stop).await;
    // Accepts the printed records of the last poll (those not printed were released).
    let committed = match consumer.commit_sync().await {
        Ok(results) => {
            for (tp, r) in results {
                if let Err(e) = r {
                    eprintln!("error: {tp}: acknowledgements failed: {e}");
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    };
    let closed = consumer.close().await;
    client.close().await;
    result?;
    committed?;
    closed?;
    Ok(())
}

async fn share_loop(
    consumer: &mut ShareConsumer,
    a: &ConsumeArgs,
    output: &Output,
    stop: &std::sync::atomic::AtomicBool,
) -> CliResult {
    let stdout = std::io::stdout();
    let mut n: u64 = 0;
    let mut buf = Vec::new();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let recs = consumer.poll(Duration::from_millis(500)).await?;
        buf.clear();
        let mut printed = 0;
        for r in &recs {
            if a.count.is_some_and(|c| n >= c) {
                break;
            }
            match output {
                Output::Value => {
                    if let Some(v) = &r.value {
                        buf.extend_from_slice(v);
                    }
                    buf.push(b'\n');
                }
                _ => {
                    buf.extend_from_slice(to_json(&ShareJsonLine(r)).as_bytes());
                    buf.push(b'\n');
                }
            }
            n += 1;
            printed += 1;
        }
        let written = {
            let mut out = stdout.lock();
            out.write_all(&buf).and_then(|_| out.flush())
        };
        if let Err(e) = written {
            release(consumer, &recs);
            return Err(stdout_error(e));
        }
        // Acknowledged explicitly, so that -X share.acknowledgement.mode=explicit works too.
        for r in &recs[..printed] {
            if let Err(e) = consumer.acknowledge(r, AcknowledgeType::Accept) {
                eprintln!(
                    "error: {}-{}@{}: cannot accept: {e}",
                    r.topic, r.partition, r.offset
                );
            }
        }
        release(consumer, &recs[printed..]);
        if a.count.is_some_and(|c| n >= c) {
            return Ok(());
        }
    }
}

/// Releases records not printed (they go to another member or a later poll).
fn release(consumer: &mut ShareConsumer, records: &[rekafka::share::ShareRecord]) {
    for r in records {
        if let Err(e) = consumer.acknowledge(r, AcknowledgeType::Release) {
            eprintln!(
                "error: {}-{}@{}: cannot release: {e}",
                r.topic, r.partition, r.offset
            );
        }
    }
}

/// Moves each partition back to `offset` (the first record not printed).
fn rewind(consumer: &Consumer, to: &[(TopicPartition, i64)]) {
    for (tp, offset) in to {
        if let Err(e) = consumer.seek(tp, *offset) {
            eprintln!("error: {tp}: cannot move back to offset {offset}: {e}");
        }
    }
}

/// Whether every assigned partition's position reached the end of its last fetch (the high
/// watermark; the last stable offset for read_committed).
fn at_end(consumer: &Consumer) -> bool {
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

/// Runs `perf consume`.
pub fn perf_consume(global: &Global, a: PerfConsumeArgs) -> CliResult {
    runtime()?.block_on(perf_async(global, a))
}

async fn perf_async(global: &Global, a: PerfConsumeArgs) -> CliResult {
    let topic = a.topic.clone();
    let count = a.count;
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
    let progress = crate::common::Progress::new("records", Some(count));
    let stop = stop_flag();
    let start = Instant::now();
    let mut n: u64 = 0;
    let mut bytes: u64 = 0;
    let mut idle_since = Instant::now();
    while n < count && !stop.load(Ordering::SeqCst) {
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
        progress.update(n);
    }
    progress.finish();
    let secs = start.elapsed().as_secs_f64();
    crate::outln!(
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

    #[test]
    fn start_offsets_parse_as_kcat_spells_them() {
        assert_eq!(Start::parse("beginning"), Ok(Start::Beginning));
        assert_eq!(Start::parse("end"), Ok(Start::End));
        assert_eq!(Start::parse("stored"), Ok(Start::Stored));
        assert_eq!(Start::parse("42"), Ok(Start::Offset(42)));
        assert_eq!(Start::parse("-10"), Ok(Start::FromEnd(10)));
        assert_eq!(
            Start::parse("s@1700000000000"),
            Ok(Start::Timestamp(1_700_000_000_000))
        );
        for bad in ["", "x", "s@", "s@soon", "--1", "1.5"] {
            assert!(Start::parse(bad).is_err(), "{bad}");
        }
    }
}

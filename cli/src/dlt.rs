//! `rekafka dlt {inspect | replay}`: reading dead letters with their provenance decoded, and
//! republishing them to where they came from.
//!
//! `replay` reads the dead-letter topic with a consumer in a group (manually assigned, so no
//! rebalance waits) and, per batch of at most `--batch` records: sends every matching dead
//! letter through an idempotent producer, waits for all acknowledgements, then commits the
//! batch's offsets. An interrupted replay resumes at the last commit, so each dead letter is
//! republished once — except in one window: if the process dies after a batch was acknowledged
//! and before its commit went through, that batch is republished again on restart (at most
//! `--batch` records; Ctrl-C waits for the batch to be committed, so only a hard kill or a
//! crash opens the window).
//!
//! Both read committed dead letters only (`isolation.level=read_committed`: a transactional
//! publisher's aborted dead letters never happened) unless `-X isolation.level=...` says
//! otherwise; every consumer `-X` property applies (the command's own flags win).
//!
//! A replay filtered with `--where` never commits past a dead letter it skipped: per partition
//! it commits up to the first one, and lists the dead letters it replayed beyond it in the
//! commit metadata (`rekafka dlt replay done=4-6,9`). Every replay in the group (filtered or
//! not) starts at the committed offset and skips the listed ones; the list shrinks as commits
//! pass it. So the skipped dead letters stay replayable, in the same group, and none is
//! republished twice. Kafka bounds commit metadata (`offset.metadata.max.bytes`, 4 KiB by
//! default): a filtered replay stops, asking for an unfiltered one, before its list outgrows
//! [`MAX_DONE_LIST`] offsets.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rekafka::Client;
use rekafka::cluster::Cluster;
use rekafka::consumer::{
    AutoCommit, Consumer, ConsumerConfig, ConsumerRecord, IsolationLevel, OffsetAndMetadata,
    OffsetReset, StartOffset, TopicPartition,
};
use rekafka::listener::DeadLetterInfo;
use rekafka::listener::dead_letter::names;
use rekafka::producer::{Producer, ProducerConfig, Record};
use rekafka::protocol::record::Header;

use clap::{Args, Subcommand};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use crate::common::{CliError, CliResult, Global, run_async, stdout_error, stop_flag};
use crate::format::{JsonLine, to_json};

/// `rekafka dlt ...`
#[derive(Debug, Subcommand)]
pub enum Dlt {
    /// Print dead letters as JSON lines with their provenance and error decoded (Spring's
    /// kafka_dlt-* headers)
    #[command(after_help = "\
Reads committed dead letters only (isolation.level=read_committed: a transactional publisher's
aborted dead letters never happened) unless -X isolation.level=read_uncommitted. The global
-b, -F and -X apply: client and consumer properties; any other key is an error.")]
    Inspect(InspectArgs),
    /// Republish dead letters to their original topic (or --to), resuming where an
    /// interrupted replay stopped
    #[command(after_help = "\
Progress is committed in GROUP (default rekafka-dlt-replay-<topic>), per batch, after every
record of the batch was acknowledged; Ctrl-C or SIGTERM finish the batch in hand first. A
--where replay never commits past a dead letter it skips (the ones it replayed beyond are
listed in the commit metadata and skipped by later replays), so skipped ones stay replayable
and none is republished twice.

Reads committed dead letters only (read_committed) unless -X isolation.level=read_uncommitted.
The global -b, -F and -X apply: client, consumer (the reading side) and producer (the
republishing side: acks, compression.type, linger.ms, ...) properties; any other key is an
error. Prints one JSON line per republished dead letter: {\"from\": {...}, \"to\": {...}}.")]
    Replay(ReplayFlags),
}

/// `rekafka dlt inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The dead-letter topic
    #[arg(short, long, value_name = "DLT_TOPIC")]
    topic: String,
    /// Exit when every partition reaches its end
    #[arg(short, long)]
    exit: bool,
    /// Exit after N dead letters
    #[arg(short, long, value_name = "N")]
    count: Option<u64>,
}

/// `rekafka dlt replay`.
#[derive(Debug, Args)]
pub struct ReplayFlags {
    /// The dead-letter topic
    #[arg(short, long, value_name = "DLT_TOPIC")]
    topic: String,
    /// Republish to TOPIC (the partitioner chooses) instead of each dead letter's original
    /// topic and partition
    #[arg(long, value_name = "TOPIC")]
    to: Option<String>,
    /// Replay only dead letters matching: original-partition=N or error-type=NAME (the full
    /// type name or its last segment); repeatable, all must match
    #[arg(long = "where", value_name = "COND", value_parser = Filter::parse)]
    filters: Vec<Filter>,
    /// The group that keeps the progress [default: -X group.id, else
    /// rekafka-dlt-replay-<topic>]
    #[arg(short, long)]
    group: Option<String>,
    /// Replay at most N dead letters
    #[arg(long, value_name = "N")]
    max: Option<u64>,
    /// Dead letters per batch (sent, acknowledged, then committed)
    #[arg(long, value_name = "N", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Drop the original-* and group provenance headers from the republished records
    #[arg(long)]
    strip_provenance: bool,
}

/// Runs `dlt ...`.
pub fn run(global: &Global, command: Dlt) -> CliResult {
    match command {
        Dlt::Inspect(a) => inspect(global, a),
        Dlt::Replay(a) => replay(global, a),
    }
}

fn failed(msg: impl Into<String>) -> CliError {
    CliError::Failed(msg.into())
}

/// The client from the global settings and the consumer config for a `dlt` command: the
/// command's defaults (read_committed, no auto-commit, a short fetch wait), then the consumer
/// properties among `-F`/`-X` (so `-X isolation.level=read_uncommitted` reads everything);
/// with `producer`, the producer properties go to it. Any other key is a usage error.
async fn connect(
    global: &Global,
    mut producer: Option<&mut ProducerConfig>,
) -> CliResult<(Client, ConsumerConfig)> {
    let mut config = ConsumerConfig::new()
        .with_isolation_level(IsolationLevel::ReadCommitted)
        .with_auto_commit(AutoCommit::Disabled)
        .with_fetch_max_wait(Duration::from_millis(100));
    let client = global
        .builder_with(|k, v| {
            let consumer_took = config.apply_property(k, v)?;
            let producer_took = match producer.as_deref_mut() {
                Some(p) => p.apply_property(k, v)?,
                None => false,
            };
            Ok(consumer_took || producer_took)
        })?
        .connect()
        .await?;
    // The command commits (replay) or never does (inspect) by itself.
    config.auto_commit = AutoCommit::Disabled;
    Ok((client, config))
}

/// The partitions of `topic`.
async fn partitions_of(cluster: &Cluster, topic: &str) -> CliResult<Vec<TopicPartition>> {
    let parts = cluster
        .partitions(topic)
        .await
        .map_err(|e| failed(format!("topic {topic}: {e}")))?;
    Ok(parts
        .iter()
        .map(|p| TopicPartition::new(topic, p.partition))
        .collect())
}

/// Whether every assigned partition's position reached the high watermark of its last fetch.
fn at_end(consumer: &Consumer) -> bool {
    let assigned = consumer.assignment();
    if assigned.is_empty() {
        return true;
    }
    let positions = consumer.positions();
    assigned.iter().all(|tp| {
        let pos = positions
            .iter()
            .find(|(t, _)| t == tp)
            .map(|(_, o)| o.offset);
        match (pos, consumer.cached_watermarks(tp)) {
            (Some(p), Some((hw, _, _))) => p >= hw,
            _ => false,
        }
    })
}

// ---------------------------------------------------------------------------------------------
// inspect

fn inspect(global: &Global, a: InspectArgs) -> CliResult {
    let (topic, count, exit_at_end) = (a.topic, a.count, a.exit);
    run_async(async move {
        let (client, config) = connect(global, None).await?;
        let cluster = client.cluster().clone();
        let consumer = Consumer::new(cluster.clone(), config)?;
        let tps = partitions_of(&cluster, &topic).await?;
        consumer.assign(tps.into_iter().map(|tp| (tp, StartOffset::Beginning)))?;
        let stop = stop_flag();
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut n = 0u64;
        let write_err = stdout_error;
        'outer: loop {
            if count.is_some_and(|c| n >= c) || stop.load(Ordering::SeqCst) {
                break;
            }
            let recs = consumer.poll(Duration::from_millis(500)).await?;
            for (tp, e) in recs.errors() {
                eprintln!("error: {tp}: {e}");
            }
            for r in recs.iter() {
                let mut line = to_json(&InspectLine(r));
                line.push('\n');
                out.write_all(line.as_bytes()).map_err(write_err)?;
                n += 1;
                if count.is_some_and(|c| n >= c) {
                    break 'outer;
                }
            }
            if recs.is_empty() {
                out.flush().map_err(write_err)?;
            }
            if exit_at_end && at_end(&consumer) {
                break;
            }
        }
        out.flush().map_err(write_err)?;
        drop(out);
        consumer.close().await?;
        client.close().await;
        Ok(())
    })
}

/// `rekafka consume`'s JSON object for the record, plus `"dead_letter"`: the decoded
/// provenance and error (null where a header is absent).
pub struct InspectLine<'a>(pub &'a ConsumerRecord);

/// The `"dead_letter"` object of [`InspectLine`].
#[derive(Serialize)]
struct DeadLetterJson<'a> {
    original_topic: Option<&'a str>,
    original_partition: Option<i32>,
    original_offset: Option<i64>,
    original_timestamp: Option<i64>,
    original_timestamp_type: Option<&'a str>,
    group: Option<&'a str>,
    error_type: Option<&'a str>,
    error_cause_type: Option<&'a str>,
    error_message: Option<&'a str>,
    error_stacktrace: Option<&'a str>,
    key_failure: bool,
}

impl Serialize for InspectLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let headers: Vec<Header> = self.0.headers.iter().collect();
        let info = DeadLetterInfo::from_headers(&headers);
        let mut m = s.serialize_map(None)?;
        JsonLine(self.0).entries(&mut m)?;
        m.serialize_entry(
            "dead_letter",
            &DeadLetterJson {
                original_topic: info.original_topic.as_deref(),
                original_partition: info.original_partition,
                original_offset: info.original_offset,
                original_timestamp: info.original_timestamp,
                original_timestamp_type: info.original_timestamp_type.as_deref(),
                group: info.original_consumer_group.as_deref(),
                error_type: info.exception_fqcn.as_deref(),
                error_cause_type: info.exception_cause_fqcn.as_deref(),
                error_message: info.exception_message.as_deref(),
                error_stacktrace: info.exception_stacktrace.as_deref(),
                key_failure: info.key_failure,
            },
        )?;
        m.end()
    }
}

// ---------------------------------------------------------------------------------------------
// replay

/// A `--where` condition.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Filter {
    OriginalPartition(i32),
    ErrorType(String),
}

impl Filter {
    fn parse(s: &str) -> Result<Filter, String> {
        let bad = || format!("expects original-partition=N or error-type=NAME, got '{s}'");
        let (k, v) = s.split_once('=').ok_or_else(bad)?;
        match k.trim() {
            "original-partition" => v
                .trim()
                .parse::<i32>()
                .map(Filter::OriginalPartition)
                .map_err(|_| bad()),
            "error-type" if !v.trim().is_empty() => Ok(Filter::ErrorType(v.trim().to_owned())),
            _ => Err(bad()),
        }
    }

    /// Whether a dead letter with `info` matches. An error type matches the full type name or
    /// its last segment (`BarException` matches `org.foo.BarException` and `foo::BarError`).
    fn matches(&self, info: &DeadLetterInfo) -> bool {
        match self {
            Filter::OriginalPartition(p) => info.original_partition == Some(*p),
            Filter::ErrorType(name) => info.exception_fqcn.as_deref().is_some_and(|t| {
                t == name || t.rsplit(['.', ':']).next().is_some_and(|last| last == name)
            }),
        }
    }
}

/// The headers a replayed record keeps: all but the exception headers (and, with
/// `strip_provenance`, the original-* and group headers).
fn replay_headers(headers: &[Header], strip_provenance: bool) -> Vec<Header> {
    const PROVENANCE: [&str; 11] = [
        names::ORIGINAL_TOPIC,
        names::ORIGINAL_PARTITION,
        names::ORIGINAL_OFFSET,
        names::ORIGINAL_TIMESTAMP,
        names::ORIGINAL_TIMESTAMP_TYPE,
        names::ORIGINAL_CONSUMER_GROUP,
        names::retry_topic::ORIGINAL_TOPIC,
        names::retry_topic::ORIGINAL_PARTITION,
        names::retry_topic::ORIGINAL_OFFSET,
        names::retry_topic::ORIGINAL_TIMESTAMP,
        names::retry_topic::ORIGINAL_TIMESTAMP_TYPE,
    ];
    headers
        .iter()
        .filter(|h| {
            !names::EXCEPTION_HEADERS.contains(&h.key())
                && !names::retry_topic::EXCEPTION_HEADERS.contains(&h.key())
        })
        .filter(|h| !(strip_provenance && PROVENANCE.contains(&h.key())))
        .cloned()
        .collect()
}

/// The prefix of the commit metadata a replay writes.
const METADATA_PREFIX: &str = "rekafka dlt replay";

/// The most replayed-ahead offsets a filtered replay lets a partition's commit metadata list:
/// Kafka refuses metadata over `offset.metadata.max.bytes`, 4096 bytes by default, and 180
/// offsets of 19 digits fit.
pub const MAX_DONE_LIST: usize = 180;

/// A partition's replay progress: the commit stops at the first dead letter skipped by the
/// filter; the ones replayed after it are remembered (and written into the commit metadata).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Progress {
    /// The next offset to read.
    next: i64,
    /// The first dead letter this run skipped (did not match), if any.
    first_skipped: Option<i64>,
    /// Dead letters at or past the commit already replayed.
    done: BTreeSet<i64>,
}

impl Progress {
    /// The offset to commit: the first skipped dead letter, else the next to read.
    fn commit_offset(&self) -> i64 {
        self.first_skipped.unwrap_or(self.next)
    }

    /// The commit metadata: the prefix, then `done=` and the replayed offsets past the commit
    /// as ranges (`4-6,9`).
    fn metadata(&self) -> String {
        let from = self.commit_offset();
        let mut ranges: Vec<(i64, i64)> = Vec::new();
        for &o in self.done.range(from..) {
            match ranges.last_mut() {
                Some((_, end)) if *end + 1 == o => *end = o,
                _ => ranges.push((o, o)),
            }
        }
        if ranges.is_empty() {
            return METADATA_PREFIX.to_owned();
        }
        let list: Vec<String> = ranges
            .iter()
            .map(|&(a, b)| {
                if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                }
            })
            .collect();
        format!("{METADATA_PREFIX} done={}", list.join(","))
    }

    /// The replayed-ahead offsets in a commit's metadata (empty for any other metadata).
    fn parse_done(metadata: &str) -> BTreeSet<i64> {
        let mut done = BTreeSet::new();
        let Some(list) = metadata
            .strip_prefix(METADATA_PREFIX)
            .and_then(|rest| rest.trim().strip_prefix("done="))
        else {
            return done;
        };
        for item in list.split(',') {
            let (a, b) = item.split_once('-').unwrap_or((item, item));
            if let (Ok(a), Ok(b)) = (a.trim().parse::<i64>(), b.trim().parse::<i64>())
                && a <= b
                && b - a < 1_000_000
            {
                done.extend(a..=b);
            }
        }
        done
    }
}

struct ReplayArgs {
    topic: String,
    to: Option<String>,
    filters: Vec<Filter>,
    /// `-g`; else `-X group.id`; else `rekafka-dlt-replay-<topic>`. Set once connected.
    group: String,
    max: Option<u64>,
    batch: usize,
    strip_provenance: bool,
}

fn replay(global: &Global, a: ReplayFlags) -> CliResult {
    let args = ReplayArgs {
        topic: a.topic,
        to: a.to,
        filters: a.filters,
        group: a.group.unwrap_or_default(),
        max: a.max,
        batch: usize::try_from(a.batch).unwrap_or(usize::MAX),
        strip_provenance: a.strip_provenance,
    };
    run_async(async move {
        let mut args = args;
        let mut producer_config = ProducerConfig::default();
        let (client, mut config) = connect(global, Some(&mut producer_config)).await?;
        // -g, else -X group.id, else the default.
        if args.group.is_empty() {
            args.group = config
                .group_id
                .clone()
                .unwrap_or_else(|| format!("rekafka-dlt-replay-{}", args.topic));
        }
        config.group_id = Some(args.group.clone());
        config.auto_offset_reset = OffsetReset::Earliest;
        config.max_poll_records = args.batch;
        let result = replay_async(client.cluster().clone(), config, producer_config, &args).await;
        client.close().await;
        result
    })
}

async fn replay_async(
    cluster: Cluster,
    config: ConsumerConfig,
    producer_config: ProducerConfig,
    a: &ReplayArgs,
) -> CliResult {
    let consumer = Consumer::new(cluster.clone(), config)?;
    let tps = partitions_of(&cluster, &a.topic).await?;
    // What earlier filtered replays replayed past their commits.
    let committed = consumer
        .committed(&tps)
        .await
        .map_err(|e| failed(format!("reading the progress of group {}: {e}", a.group)))?;
    let progress: HashMap<TopicPartition, Progress> = committed
        .into_iter()
        .filter_map(|(tp, o)| {
            let o = o?;
            let done = Progress::parse_done(o.metadata.as_deref().unwrap_or(""));
            Some((
                tp,
                Progress {
                    next: o.offset,
                    first_skipped: None,
                    done,
                },
            ))
        })
        .collect();
    consumer.assign(tps.into_iter().map(|tp| (tp, StartOffset::Committed)))?;
    let producer = Producer::new(cluster.clone(), producer_config).await?;

    // Ctrl-C or SIGTERM: finish (send, acknowledge, commit) the batch in hand, then stop.
    let stop = stop_flag();
    let result = replay_loop(&consumer, &producer, a, &stop, progress).await;
    producer.close().await;
    let closed = consumer.close().await;
    let (replayed, skipped) = result?;
    closed?;
    eprintln!(
        "replayed {replayed} dead letter(s) from {} ({skipped} not matching, left for a later \
         replay); progress committed in group {}",
        a.topic, a.group
    );
    Ok(())
}

/// Replays until the end of the topic, `--max` or Ctrl-C; returns (replayed, skipped).
async fn replay_loop(
    consumer: &Consumer,
    producer: &Producer,
    a: &ReplayArgs,
    stop: &AtomicBool,
    mut progress: HashMap<TopicPartition, Progress>,
) -> CliResult<(u64, u64)> {
    let stdout = std::io::stdout();
    let progress_bar = crate::common::Progress::new("dead letters replayed", a.max);
    let mut replayed = 0u64;
    let mut skipped = 0u64;
    let mut idle_polls = 0u32;
    loop {
        if stop.load(Ordering::SeqCst) || a.max.is_some_and(|m| replayed >= m) {
            break;
        }
        let recs = consumer.poll(Duration::from_millis(500)).await?;
        if let Some((tp, e)) = recs.errors().first() {
            return Err(failed(format!("reading {tp}: {e}")));
        }
        if recs.is_empty() {
            if at_end(consumer) {
                break;
            }
            idle_polls += 1;
            // Nothing for 30 s and no watermark yet: an empty or unreachable topic.
            if idle_polls >= 60 {
                break;
            }
            continue;
        }
        idle_polls = 0;
        // Send the batch (up to --max), remembering where each partition got to.
        let mut deliveries = Vec::new();
        let mut touched: Vec<TopicPartition> = Vec::new();
        let mut full = None;
        for r in recs.iter() {
            if a.max.is_some_and(|m| replayed >= m) {
                break;
            }
            let headers: Vec<Header> = r.headers.iter().collect();
            let info = DeadLetterInfo::from_headers(&headers);
            let tp = r.topic_partition();
            let matches = a.filters.iter().all(|f| f.matches(&info));
            let p = progress.entry(tp.clone()).or_default();
            let already = p.done.contains(&r.offset);
            if matches && !already && p.first_skipped.is_some() && p.done.len() >= MAX_DONE_LIST {
                // The commit metadata cannot list more: stop before this dead letter (the
                // commit stays at the first skipped one).
                full = Some(tp);
                break;
            }
            if !touched.contains(&tp) {
                touched.push(tp);
            }
            p.next = r.offset + 1;
            if already {
                // Replayed by an earlier (filtered) replay of this group.
                continue;
            }
            if matches {
                if p.first_skipped.is_some() {
                    p.done.insert(r.offset);
                }
                let (topic, partition) = match (&a.to, &info.original_topic) {
                    (Some(to), _) => (to.clone(), None),
                    (None, Some(orig)) => (orig.clone(), info.original_partition),
                    (None, None) => {
                        return Err(failed(format!(
                            "the dead letter at {}-{}@{} has no {} header; pass --to TOPIC",
                            r.topic,
                            r.partition,
                            r.offset,
                            names::ORIGINAL_TOPIC
                        )));
                    }
                };
                let mut record = Record::new(topic.as_str());
                record.partition = partition.filter(|p| *p >= 0);
                record.key = r.key.clone();
                record.value = r.value.clone();
                record.headers = replay_headers(&headers, a.strip_provenance);
                let d = producer.send(record).await.map_err(|e| {
                    failed(format!(
                        "replaying {}-{}@{} to {topic}: {}",
                        r.topic, r.partition, r.offset, e.error
                    ))
                })?;
                deliveries.push((r.partition, r.offset, d));
                replayed += 1;
            } else {
                // Never committed past: it stays for a later replay.
                p.first_skipped.get_or_insert(r.offset);
                skipped += 1;
            }
        }
        // Wait for every acknowledgement, then commit the batch.
        let mut lines = String::new();
        for (partition, offset, d) in deliveries {
            let meta = d.await.map_err(|e| {
                failed(format!(
                    "replaying {}-{partition}@{offset}: {} (nothing of this batch was \
                     committed; rerun to resume)",
                    a.topic, e.error
                ))
            })?;
            let line = serde_json::json!({
                "from": {"topic": a.topic, "partition": partition, "offset": offset},
                "to": {"topic": &*meta.topic, "partition": meta.partition, "offset": meta.offset},
            });
            lines.push_str(&line.to_string());
            lines.push('\n');
        }
        let offsets: Vec<(TopicPartition, OffsetAndMetadata)> = touched
            .into_iter()
            .filter_map(|tp| {
                let p = progress.get_mut(&tp)?;
                let at = p.commit_offset();
                let om = OffsetAndMetadata::new(at).with_metadata(p.metadata());
                // What the commit passed no longer needs remembering.
                p.done = p.done.split_off(&at);
                Some((tp, om))
            })
            .collect();
        if !offsets.is_empty() {
            consumer.commit_offsets(&offsets).await.map_err(|e| {
                failed(format!(
                    "committing replay progress in group {}: {e} (the last batch was \
                     republished; a rerun republishes it again)",
                    a.group
                ))
            })?;
        }
        progress_bar.update(replayed);
        let mut out = stdout.lock();
        out.write_all(lines.as_bytes())
            .and_then(|_| out.flush())
            .map_err(stdout_error)?;
        if let Some(tp) = full {
            return Err(failed(format!(
                "{tp}: this filtered replay replayed {MAX_DONE_LIST} dead letters past one it \
                 skipped, as many as the group's commit metadata can list; run a replay \
                 without --where (or with other conditions) to move past the skipped ones, \
                 then rerun this one (its progress so far is committed)"
            )));
        }
    }
    Ok((replayed, skipped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn filters() {
        assert_eq!(
            Filter::parse("original-partition=3").ok(),
            Some(Filter::OriginalPartition(3))
        );
        assert!(Filter::parse("original-partition=x").is_err());
        assert!(Filter::parse("color=red").is_err());
        assert!(Filter::parse("error-type=").is_err());
        let f = Filter::parse("error-type=BarException").unwrap();
        let mut info = DeadLetterInfo::default();
        info.exception_fqcn = Some("org.foo.BarException".into());
        assert!(f.matches(&info));
        info.exception_fqcn = Some("my_app::BarException".into());
        assert!(f.matches(&info));
        info.exception_fqcn = Some("FooBarException".into());
        assert!(!f.matches(&info));
        info.original_partition = Some(3);
        assert!(Filter::OriginalPartition(3).matches(&info));
        assert!(!Filter::OriginalPartition(2).matches(&info));
    }

    #[test]
    fn progress_commits_at_the_first_skipped_and_lists_the_replayed_ones() {
        let mut p = Progress {
            next: 15,
            first_skipped: Some(3),
            done: [4, 5, 6, 9, 10, 11, 13, 14].into_iter().collect(),
        };
        assert_eq!(p.commit_offset(), 3);
        assert_eq!(p.metadata(), "rekafka dlt replay done=4-6,9-11,13-14");
        assert_eq!(Progress::parse_done(&p.metadata()), p.done);
        p.first_skipped = None;
        p.done.clear();
        assert_eq!(p.commit_offset(), 15);
        assert_eq!(p.metadata(), "rekafka dlt replay");
        assert!(Progress::parse_done("rekafka dlt replay").is_empty());
        assert!(Progress::parse_done("someone else's metadata done=1-3").is_empty());
        assert_eq!(
            Progress::parse_done("rekafka dlt replay done=7,x,9-8,2-3"),
            [2, 3, 7].into_iter().collect()
        );
    }

    #[test]
    fn replayed_headers_drop_exception_headers_only() {
        let hs = vec![
            Header::new("trace", Some(Bytes::from_static(b"t"))),
            Header::new(names::EXCEPTION_FQCN, Some(Bytes::from_static(b"E"))),
            Header::new(names::KEY_EXCEPTION_MESSAGE, Some(Bytes::from_static(b"m"))),
            Header::new(names::ORIGINAL_TOPIC, Some(Bytes::from_static(b"t"))),
        ];
        let kept: Vec<String> = replay_headers(&hs, false)
            .iter()
            .map(|h| h.key().to_owned())
            .collect();
        assert_eq!(kept, ["trace", names::ORIGINAL_TOPIC]);
        let kept: Vec<String> = replay_headers(&hs, true)
            .iter()
            .map(|h| h.key().to_owned())
            .collect();
        assert_eq!(kept, ["trace"]);
    }
}

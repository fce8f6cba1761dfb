//! `rekafka produce`, and the producer flags `perf produce` shares.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rekafka::Client;
use rekafka::producer::{
    Acks, DeliveryFuture, Idempotence, ProduceError, Producer, ProducerConfig, Record,
    RecordMetadata,
};
use rekafka::protocol::record::Compression;
use rekafka::transaction::TransactionalProducer;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::common::{CliError, CliResult, Global, key_value, shutdown_signal};

/// The producer flags of `produce` and `perf produce`; they override the `-F`/`-X`
/// properties.
#[derive(Debug, Args)]
pub struct ProducerFlags {
    /// Acknowledgements: all, 1 or 0 (acks other than all turn idempotence off) [default: all]
    #[arg(long, value_name = "ACKS", value_parser = parse_acks)]
    acks: Option<Acks>,
    /// Compression: none, gzip, snappy, lz4, zstd [default: none]
    #[arg(short = 'z', long, value_name = "CODEC", value_parser = parse_compression)]
    compression: Option<Compression>,
    /// linger.ms
    #[arg(long, value_name = "MS")]
    linger_ms: Option<u64>,
    /// batch.size in bytes
    #[arg(long, value_name = "BYTES")]
    batch_size: Option<usize>,
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    s.parse::<Acks>().map_err(|e| e.to_string())
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse::<Compression>().map_err(|e| e.to_string())
}

impl ProducerFlags {
    /// Applies the flags given over `config`.
    pub fn apply(&self, config: &mut ProducerConfig) {
        if let Some(acks) = self.acks {
            config.acks = acks;
            if acks != Acks::All {
                // As the Java console producer: idempotence needs acks=all.
                config.idempotence = Idempotence::Disabled;
            }
        }
        if let Some(c) = self.compression {
            config.compression = c;
        }
        if let Some(ms) = self.linger_ms {
            config.linger = Duration::from_millis(ms);
        }
        if let Some(b) = self.batch_size {
            config.batch_size = b;
        }
    }
}

/// The client from the global settings with the producer properties among `-F`/`-X` applied
/// to `config` (an unknown or invalid one is a usage error), then `flags` over them.
pub async fn connect(
    global: &Global,
    config: &mut ProducerConfig,
    flags: &ProducerFlags,
) -> CliResult<Client> {
    let builder = global.builder_with(|k, v| config.apply_property(k, v))?;
    flags.apply(config);
    Ok(builder.connect().await?)
}

/// `rekafka produce`: send records read from stdin or files.
#[derive(Debug, Args)]
#[command(after_help = "\
Reads records one per line from the FILEs in order (`-` is stdin), or from stdin when none is
given, and sends them; at the end it waits for every acknowledgement. Exits 1 if any record
was not delivered. Ctrl-C or SIGTERM ends the input early: what was read is still delivered
(a transaction is aborted instead).

The global -b, -F and -X apply: client properties (security.protocol, ssl.*, sasl.*, ...)
configure the connection, producer properties (linger.ms, enable.idempotence, ...) the
producer; the flags here override them.")]
pub struct ProduceArgs {
    /// Topic to produce to
    #[arg(short, long)]
    topic: String,
    /// Split each line at the first SEP into key and value (kcat's -K)
    #[arg(
        short = 'K',
        long = "key-separator",
        visible_alias = "key-delimiter",
        value_name = "SEP"
    )]
    key_separator: Option<String>,
    /// The key of every record (unless -K splits one off the line)
    #[arg(short = 'k', long, value_name = "KEY")]
    key: Option<String>,
    /// Add a header to every record; repeatable
    #[arg(short = 'H', long = "header", value_name = "NAME=VALUE", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Send every record to partition N (else the partitioner chooses)
    #[arg(short, long, value_name = "N")]
    partition: Option<i32>,
    #[command(flatten)]
    producer: ProducerFlags,
    /// Write all the records in one transaction with this transactional.id (fences older
    /// producers with the same id), committed at the end of the input; exits 1 unless the
    /// commit succeeded
    #[arg(long, value_name = "ID")]
    transactional_id: Option<String>,
    /// With --transactional-id: abort the transaction instead of committing it (exit 0 if
    /// the abort succeeded); useful to test read_committed consumers
    #[arg(long, requires = "transactional_id")]
    abort: bool,
    /// Files to read records from, one per line (`-` is stdin) [default: stdin]
    #[arg(value_name = "FILE")]
    files: Vec<String>,
}

/// The producer `produce` writes with.
enum Sink {
    Plain(Producer),
    Txn(TransactionalProducer),
}

impl Sink {
    async fn send(&self, record: Record) -> Result<DeliveryFuture, ProduceError> {
        match self {
            Sink::Plain(p) => p.send(record).await,
            Sink::Txn(p) => p.send(record).await,
        }
    }
}

/// The inputs in order: each file, `-` for stdin; stdin alone when none is given.
async fn open_inputs(files: &[String]) -> CliResult<Vec<Box<dyn AsyncBufRead + Unpin + Send>>> {
    if files.is_empty() {
        return Ok(vec![Box::new(BufReader::new(tokio::io::stdin()))]);
    }
    let mut inputs: Vec<Box<dyn AsyncBufRead + Unpin + Send>> = Vec::new();
    for f in files {
        if f == "-" {
            inputs.push(Box::new(BufReader::new(tokio::io::stdin())));
        } else {
            let file = tokio::fs::File::open(f)
                .await
                .map_err(|e| CliError::usage(format!("cannot read {f}: {e}")))?;
            inputs.push(Box::new(BufReader::new(file)));
        }
    }
    Ok(inputs)
}

/// Runs `produce`.
pub fn run(global: &Global, a: ProduceArgs) -> CliResult {
    let rt = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::Failed(format!("cannot start the runtime: {e}")))?;
    rt.block_on(produce(global, a))
}

async fn produce(global: &Global, a: ProduceArgs) -> CliResult {
    let mut config = ProducerConfig::default();
    let client = connect(global, &mut config, &a.producer).await?;
    let inputs = match open_inputs(&a.files).await {
        Ok(i) => i,
        Err(e) => {
            client.close().await;
            return Err(e);
        }
    };
    let sink = match &a.transactional_id {
        None => Producer::new(client.cluster().clone(), config)
            .await
            .map(Sink::Plain)
            .map_err(|e| failed(format!("creating the producer: {}", CliError::from(e)))),
        Some(id) => make_transactional(&client, config, id).await.map(Sink::Txn),
    };
    let sink = match sink {
        Ok(s) => s,
        Err(e) => {
            client.close().await;
            return Err(e);
        }
    };
    let result = send_all(&a, sink, inputs).await;
    client.close().await;
    result
}

fn failed(msg: impl Into<String>) -> CliError {
    CliError::Failed(msg.into())
}

/// A transactional producer with `transactional.id` = `id`, transactions initialized and one
/// begun.
async fn make_transactional(
    client: &Client,
    config: ProducerConfig,
    id: &str,
) -> CliResult<TransactionalProducer> {
    let producer =
        TransactionalProducer::new(client.cluster().clone(), config.with_transactional_id(id))
            .map_err(|e| failed(format!("creating the transactional producer: {e}")))?;
    producer
        .init_transactions()
        .await
        .map_err(|e| failed(format!("init_transactions: {e}")))?;
    producer
        .begin_transaction()
        .map_err(|e| failed(format!("begin_transaction: {e}")))?;
    Ok(producer)
}

/// Sends every line of `inputs`, then finishes: flushes and reports (or commits/aborts the
/// transaction).
async fn send_all(
    a: &ProduceArgs,
    sink: Sink,
    inputs: Vec<Box<dyn AsyncBufRead + Unpin + Send>>,
) -> CliResult {
    let topic: Arc<str> = a.topic.as_str().into();
    let mut pending: VecDeque<DeliveryFuture> = VecDeque::new();
    let (mut ok, mut failed_n) = (0u64, 0u64);
    let mut report = |r: Result<RecordMetadata, ProduceError>| match r {
        Ok(_) => ok += 1,
        Err(e) => {
            failed_n += 1;
            eprintln!("error: record not delivered: {e}");
        }
    };
    let mut interrupted = false;
    let mut signal = std::pin::pin!(shutdown_signal());
    'inputs: for input in inputs {
        let mut lines = input.lines();
        loop {
            // `next_line` is cancel safe: a signal between lines loses nothing.
            let line = tokio::select! {
                _ = &mut signal => {
                    interrupted = true;
                    break 'inputs;
                }
                l = lines.next_line() => l,
            };
            let line = match line {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(e) => {
                    report(Err(ProduceError::not_persisted(
                        rekafka::Error::from(e).message("reading the input"),
                    )));
                    break 'inputs;
                }
            };
            let record = make_record(a, &topic, line);
            match sink.send(record).await {
                Ok(f) => pending.push_back(f),
                Err(e) => report(Err(e)),
            }
            while pending.front().is_some_and(|f| f.try_result().is_some()) {
                if let Some(f) = pending.pop_front() {
                    report(f.await);
                }
            }
        }
    }
    let p = match sink {
        Sink::Plain(p) => p,
        Sink::Txn(p) => {
            let abort = a.abort || interrupted;
            if interrupted {
                eprintln!("interrupted: aborting the transaction");
            }
            let r = finish_transaction(p, pending, failed_n, abort).await;
            return if interrupted && r.is_ok() {
                Err(failed("interrupted; the transaction was aborted"))
            } else {
                r
            };
        }
    };
    p.flush().await;
    for f in pending {
        report(f.await);
    }
    p.close().await;
    eprintln!("{ok} records delivered, {failed_n} failed");
    if failed_n > 0 {
        Err(failed(format!("{failed_n} records were not delivered")))
    } else {
        Ok(())
    }
}

/// The record for one input line.
fn make_record(a: &ProduceArgs, topic: &Arc<str>, line: String) -> Record {
    let mut record = Record::new(topic.clone());
    match a.key_separator.as_deref().and_then(|s| line.split_once(s)) {
        Some((k, v)) => record = record.with_key(k.to_owned()).with_value(v.to_owned()),
        None => {
            if let Some(k) = &a.key {
                record = record.with_key(k.clone());
            }
            record = record.with_value(line);
        }
    }
    for (k, v) in &a.headers {
        record = record.with_header(k.clone(), Some(v.clone()));
    }
    if let Some(p) = a.partition {
        record = record.with_partition(p);
    }
    record
}

/// Commits (or, with `abort`, aborts) the transaction holding every record sent.
async fn finish_transaction(
    producer: TransactionalProducer,
    pending: VecDeque<DeliveryFuture>,
    failed_at_send: u64,
    abort: bool,
) -> CliResult {
    let id = producer.transactional_id().to_owned();
    let sent = pending.len() as u64;
    let result = if abort {
        match producer.abort_transaction().await {
            Ok(()) => {
                for f in pending {
                    // Delivered-then-aborted or failed as aborted: either way not visible.
                    let _ = f.await;
                }
                eprintln!("{sent} records aborted in transaction {id}");
                Ok(())
            }
            Err(e) => Err(failed(format!("abort_transaction: {e}"))),
        }
    } else if failed_at_send > 0 {
        if let Err(e) = producer.abort_transaction().await {
            eprintln!("error: abort_transaction: {e}");
        }
        Err(failed(format!(
            "{failed_at_send} records were refused; the transaction was aborted"
        )))
    } else {
        match producer.commit_transaction().await {
            Ok(()) => {
                let mut failed_n = 0u64;
                for f in pending {
                    if let Err(e) = f.await {
                        failed_n += 1;
                        eprintln!("error: record not delivered: {e}");
                    }
                }
                if failed_n > 0 {
                    // Cannot happen: a commit succeeds only when every record was delivered.
                    Err(failed(format!(
                        "{failed_n} records failed in a committed transaction"
                    )))
                } else {
                    eprintln!("{sent} records committed in transaction {id}");
                    Ok(())
                }
            }
            Err(e) => {
                if e.is_abortable()
                    && let Err(e) = producer.abort_transaction().await
                {
                    eprintln!("error: abort_transaction: {e}");
                }
                Err(failed(format!("commit_transaction: {e}")))
            }
        }
    };
    producer.close().await;
    result
}

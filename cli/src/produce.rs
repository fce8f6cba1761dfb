//! `rekafka produce` and the shared producer options of `rekafka perf produce`.

use std::process::ExitCode;
use std::time::Duration;

use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::producer::{Acks, DeliveryFuture, Idempotence, Producer, ProducerConfig, Record};
use rekafka::protocol::record::Compression;
use rekafka::transaction::TransactionalProducer;
use tokio::io::{AsyncBufReadExt, BufReader};

pub const HELP: &str = "\
Usage: rekafka produce -t TOPIC [OPTIONS] < lines

Reads records from stdin, one per line, and sends them. Exits 1 if any record failed.

Options:
  -b, --bootstrap HOST:PORT  Broker(s), comma separated (default: $REKAFKA_BOOTSTRAP)
  -t, --topic TOPIC          Topic to produce to (required)
  -K, --key-separator SEP    Split each line at the first SEP into key and value
  -H, --header NAME=VALUE    Add a header to every record (repeatable)
  -p, --partition N          Send every record to partition N
      --acks all|1|0         Acknowledgements (default all)
  -z, --compression CODEC    none, gzip, snappy, lz4, zstd (default none)
  -X KEY=VALUE               Any producer property by its Java name (linger.ms, batch.size, ...)
      --transactional-id ID  Write all of stdin's records in one transaction with this
                             transactional.id (fences older producers with the same id);
                             committed at end of input. Exits 1 unless the commit succeeded.
      --abort                With --transactional-id: abort the transaction instead of
                             committing it (exit 0 if the abort succeeded); useful to test
                             read_committed consumers.
";

/// Options shared by `produce` and `perf produce`.
pub struct Common {
    pub bootstrap: Option<String>,
    pub topic: Option<String>,
    pub config: ProducerConfig,
}

impl Common {
    pub fn new() -> Common {
        Common {
            bootstrap: None,
            topic: None,
            config: ProducerConfig::default(),
        }
    }

    /// Consumes a common option at `args[*i]`; `Ok(false)` if it is not one.
    pub fn parse(&mut self, args: &[String], i: &mut usize) -> Result<bool, String> {
        let arg = args[*i].as_str();
        let mut value = || -> Result<String, String> {
            *i += 1;
            args.get(*i)
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        match arg {
            "-b" | "--bootstrap" => self.bootstrap = Some(value()?),
            "-t" | "--topic" => self.topic = Some(value()?),
            "--acks" => {
                let v = value()?;
                self.config.acks = v.parse::<Acks>().map_err(|e| e.to_string())?;
                if self.config.acks != Acks::All {
                    // As the Java console producer: idempotence needs acks=all.
                    self.config.idempotence = Idempotence::Disabled;
                }
            }
            "-z" | "--compression" => {
                let v = value()?;
                self.config.compression = v.parse::<Compression>().map_err(|e| e.to_string())?;
            }
            "--linger-ms" => {
                let v = value()?;
                self.config.linger = Duration::from_millis(
                    v.parse()
                        .map_err(|_| format!("--linger-ms: bad number {v:?}"))?,
                );
            }
            "--batch-size" => {
                let v = value()?;
                self.config.batch_size = v
                    .parse()
                    .map_err(|_| format!("--batch-size: bad number {v:?}"))?;
            }
            "-X" => {
                let v = value()?;
                let (k, val) = v
                    .split_once('=')
                    .ok_or_else(|| format!("-X {v}: expected KEY=VALUE"))?;
                match self.config.apply_property(k, val) {
                    Ok(true) => {}
                    Ok(false) => return Err(format!("-X {k}: unknown producer property")),
                    Err(e) => return Err(e.to_string()),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub async fn producer(&self) -> Result<(Producer, String), String> {
        let topic = self.topic.clone().ok_or("-t TOPIC is required")?;
        let bootstrap = self
            .bootstrap
            .clone()
            .or_else(|| std::env::var("REKAFKA_BOOTSTRAP").ok())
            .ok_or("no broker: pass -b HOST:PORT or set REKAFKA_BOOTSTRAP")?;
        let cluster = Cluster::connect(ClusterConfig::new(bootstrap.split(',')))
            .await
            .map_err(|e| format!("connecting to {bootstrap}: {e}"))?;
        let producer = Producer::new(cluster, self.config.clone())
            .await
            .map_err(|e| format!("creating the producer: {e}"))?;
        Ok((producer, topic))
    }

    /// A transactional producer with `transactional.id` = `id`, transactions initialized.
    pub async fn transactional(&self, id: &str) -> Result<(TransactionalProducer, String), String> {
        let topic = self.topic.clone().ok_or("-t TOPIC is required")?;
        let bootstrap = self
            .bootstrap
            .clone()
            .or_else(|| std::env::var("REKAFKA_BOOTSTRAP").ok())
            .ok_or("no broker: pass -b HOST:PORT or set REKAFKA_BOOTSTRAP")?;
        let cluster = Cluster::connect(ClusterConfig::new(bootstrap.split(',')))
            .await
            .map_err(|e| format!("connecting to {bootstrap}: {e}"))?;
        let config = self.config.clone().with_transactional_id(id);
        let producer = TransactionalProducer::new(cluster, config)
            .map_err(|e| format!("creating the transactional producer: {e}"))?;
        producer
            .init_transactions()
            .await
            .map_err(|e| format!("init_transactions: {e}"))?;
        Ok((producer, topic))
    }
}

/// The producer `produce` writes with.
enum Sink {
    Plain(Producer),
    Txn(TransactionalProducer),
}

impl Sink {
    async fn send(
        &self,
        record: Record,
    ) -> Result<DeliveryFuture, rekafka::producer::ProduceError> {
        match self {
            Sink::Plain(p) => p.send(record).await,
            Sink::Txn(p) => p.send(record).await,
        }
    }
}

pub fn run(args: &[String]) -> ExitCode {
    let mut common = Common::new();
    let mut sep: Option<String> = None;
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut partition: Option<i32> = None;
    let mut transactional_id: Option<String> = None;
    let mut abort = false;
    let mut i = 0;
    while i < args.len() {
        match common.parse(args, &mut i) {
            Ok(true) => {}
            Ok(false) => {
                let arg = args[i].as_str();
                let next = args.get(i + 1).cloned();
                match (arg, next) {
                    ("-h" | "--help", _) => {
                        print!("{HELP}");
                        return ExitCode::SUCCESS;
                    }
                    ("-K" | "--key-separator", Some(v)) => {
                        sep = Some(v);
                        i += 1;
                    }
                    ("-H" | "--header", Some(v)) => {
                        let Some((k, v)) = v.split_once('=') else {
                            eprintln!("error: -H {v}: expected NAME=VALUE");
                            return ExitCode::from(2);
                        };
                        headers.push((k.to_owned(), v.to_owned()));
                        i += 1;
                    }
                    ("--transactional-id", Some(v)) => {
                        transactional_id = Some(v);
                        i += 1;
                    }
                    ("--abort", _) => abort = true,
                    ("-p" | "--partition", Some(v)) => {
                        match v.parse() {
                            Ok(p) => partition = Some(p),
                            Err(_) => {
                                eprintln!("error: --partition: bad number {v:?}");
                                return ExitCode::from(2);
                            }
                        }
                        i += 1;
                    }
                    _ => {
                        eprintln!(
                            "error: unexpected argument {arg:?} (see `rekafka produce --help`)"
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
    if abort && transactional_id.is_none() {
        eprintln!("error: --abort needs --transactional-id");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let made = match &transactional_id {
            None => common.producer().await.map(|(p, t)| (Sink::Plain(p), t)),
            Some(id) => common
                .transactional(id)
                .await
                .map(|(p, t)| (Sink::Txn(p), t)),
        };
        let (producer, topic) = match made {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Sink::Txn(p) = &producer
            && let Err(e) = p.begin_transaction()
        {
            eprintln!("error: begin_transaction: {e}");
            return ExitCode::FAILURE;
        }
        let topic: std::sync::Arc<str> = topic.into();
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut pending: std::collections::VecDeque<DeliveryFuture> = Default::default();
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut report =
            |r: Result<rekafka::producer::RecordMetadata, rekafka::producer::ProduceError>| match r
            {
                Ok(_) => ok += 1,
                Err(e) => {
                    failed += 1;
                    eprintln!("error: record not delivered: {e}");
                }
            };
        loop {
            let line = match lines.next_line().await {
                Ok(Some(l)) => l,
                Ok(None) => break,
                Err(e) => {
                    report(Err(rekafka::producer::ProduceError::not_persisted(
                        rekafka::Error::from(e).message("reading stdin"),
                    )));
                    break;
                }
            };
            let mut record = Record::new(topic.clone());
            match sep.as_deref().and_then(|s| line.split_once(s)) {
                Some((k, v)) => record = record.with_key(k.to_owned()).with_value(v.to_owned()),
                None => record = record.with_value(line),
            }
            for (k, v) in &headers {
                record = record.with_header(k.clone(), Some(v.clone()));
            }
            if let Some(p) = partition {
                record = record.with_partition(p);
            }
            match producer.send(record).await {
                Ok(f) => pending.push_back(f),
                Err(e) => report(Err(e)),
            }
            while pending.front().is_some_and(|f| f.try_result().is_some()) {
                if let Some(f) = pending.pop_front() {
                    report(f.await);
                }
            }
        }
        let p = match producer {
            Sink::Plain(p) => p,
            Sink::Txn(p) => return finish_transaction(p, pending, failed, abort).await,
        };
        p.flush().await;
        for f in pending {
            report(f.await);
        }
        p.close().await;
        eprintln!("{ok} records delivered, {failed} failed");
        if failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Commits (or, with `abort`, aborts) the transaction holding every record sent.
async fn finish_transaction(
    producer: TransactionalProducer,
    pending: std::collections::VecDeque<DeliveryFuture>,
    failed_at_send: u64,
    abort: bool,
) -> ExitCode {
    let id = producer.transactional_id().to_owned();
    let sent = pending.len() as u64;
    let code = if abort {
        match producer.abort_transaction().await {
            Ok(()) => {
                for f in pending {
                    // Delivered-then-aborted or failed as aborted: either way not visible.
                    let _ = f.await;
                }
                eprintln!("{sent} records aborted in transaction {id}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: abort_transaction: {e}");
                ExitCode::FAILURE
            }
        }
    } else if failed_at_send > 0 {
        eprintln!("error: {failed_at_send} records were refused; aborting the transaction");
        if let Err(e) = producer.abort_transaction().await {
            eprintln!("error: abort_transaction: {e}");
        }
        ExitCode::FAILURE
    } else {
        match producer.commit_transaction().await {
            Ok(()) => {
                let mut failed = 0u64;
                for f in pending {
                    if let Err(e) = f.await {
                        failed += 1;
                        eprintln!("error: record not delivered: {e}");
                    }
                }
                if failed > 0 {
                    // Cannot happen: a commit succeeds only when every record was delivered.
                    eprintln!("error: {failed} records failed in a committed transaction");
                    ExitCode::FAILURE
                } else {
                    eprintln!("{sent} records committed in transaction {id}");
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("error: commit_transaction: {e}");
                if e.is_abortable()
                    && let Err(e) = producer.abort_transaction().await
                {
                    eprintln!("error: abort_transaction: {e}");
                }
                ExitCode::FAILURE
            }
        }
    };
    producer.close().await;
    code
}

//! `rekafka produce` and the shared producer options of `rekafka perf produce`.

use std::process::ExitCode;
use std::time::Duration;

use rekafka::cluster::{Cluster, ClusterConfig};
use rekafka::producer::{Acks, DeliveryFuture, Idempotence, Producer, ProducerConfig, Record};
use rekafka::protocol::record::Compression;
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
}

pub fn run(args: &[String]) -> ExitCode {
    let mut common = Common::new();
    let mut sep: Option<String> = None;
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut partition: Option<i32> = None;
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
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let (producer, topic) = match common.producer().await {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
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
        producer.flush().await;
        for f in pending {
            report(f.await);
        }
        producer.close().await;
        eprintln!("{ok} records delivered, {failed} failed");
        if failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    })
}

//! `rekafka mock`: the embedded mock cluster in the foreground, a zero-install local Kafka.

use std::io::Write;
use std::process::ExitCode;

use rekafka::mock::MockCluster;

pub const HELP: &str = "\
rekafka mock — run an in-process Kafka-compatible mock cluster in the foreground

Usage: rekafka mock [--brokers N] [--port FIRST_PORT] [--topic NAME:PARTITIONS]...

Prints the bootstrap address (comma-separated host:port list) as the first line of stdout,
then serves until Ctrl-C.

Options:
  --brokers N               Number of brokers (default 1)
  --port FIRST_PORT         Port of the first broker; the others follow (default: free ports)
  --topic NAME:PARTITIONS   Create a topic at start (repeatable)
  --partitions N            Partitions of auto-created topics (default 1)
  --no-auto-create          Do not create unknown topics on Metadata requests
  -h, --help                Print this help
";

struct Args {
    brokers: usize,
    port: u16,
    topics: Vec<(String, i32)>,
    partitions: i32,
    auto_create: bool,
}

fn parse(args: &[String]) -> Result<Option<Args>, String> {
    let mut a = Args {
        brokers: 1,
        port: 0,
        topics: Vec::new(),
        partitions: 1,
        auto_create: true,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--brokers" => {
                a.brokers = value("--brokers")?
                    .parse()
                    .map_err(|e| format!("--brokers: {e}"))?;
            }
            "--port" => {
                a.port = value("--port")?
                    .parse()
                    .map_err(|e| format!("--port: {e}"))?;
            }
            "--partitions" => {
                a.partitions = value("--partitions")?
                    .parse()
                    .map_err(|e| format!("--partitions: {e}"))?;
            }
            "--no-auto-create" => a.auto_create = false,
            "--topic" => {
                let v = value("--topic")?;
                let (name, parts) = match v.rsplit_once(':') {
                    Some((n, p)) => (
                        n.to_string(),
                        p.parse()
                            .map_err(|e| format!("--topic {v}: partitions: {e}"))?,
                    ),
                    None => (v.clone(), 1),
                };
                a.topics.push((name, parts));
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(Some(a))
}

pub fn run(args: &[String]) -> ExitCode {
    let a = match parse(args) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e} (see `rekafka mock --help`)");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let mut b = MockCluster::builder()
            .brokers(a.brokers)
            .first_port(a.port)
            .default_partitions(a.partitions)
            .auto_create_topics(a.auto_create);
        for (name, parts) in a.topics {
            b = b.topic(name, parts);
        }
        let mock = match b.start().await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{}", mock.bootstrap());
        let _ = out.flush();
        eprintln!(
            "mock cluster with {} broker(s) listening; Ctrl-C stops it",
            mock.broker_ids().len()
        );
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("error: waiting for Ctrl-C: {e}");
        }
        mock.shutdown().await;
        eprintln!("mock cluster stopped");
        ExitCode::SUCCESS
    })
}

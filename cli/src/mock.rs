//! `rekafka mock`: the embedded mock cluster in the foreground, a zero-install local Kafka.

use clap::Args;
use rekafka::mock::MockCluster;
use std::io::Write;

use crate::common::{CliError, CliResult, shutdown_signal};

/// `rekafka mock`: prints the bootstrap address (comma-separated host:port list) as the first
/// line of stdout, then serves until Ctrl-C or SIGTERM.
#[derive(Debug, Args)]
pub struct MockArgs {
    /// Number of brokers
    #[arg(long, value_name = "N", default_value_t = 1)]
    brokers: usize,
    /// Port of the first broker; the others follow [default: free ports]
    #[arg(long = "port", value_name = "FIRST_PORT", default_value_t = 0)]
    port: u16,
    /// Create a topic at start; repeatable
    #[arg(long = "topic", value_name = "NAME[:PARTITIONS]", value_parser = parse_topic)]
    topics: Vec<(String, i32)>,
    /// Partitions of auto-created topics
    #[arg(long, value_name = "N", default_value_t = 1)]
    partitions: i32,
    /// Do not create unknown topics on Metadata requests
    #[arg(long)]
    no_auto_create: bool,
}

/// `NAME:PARTITIONS` or `NAME` (one partition).
fn parse_topic(v: &str) -> Result<(String, i32), String> {
    match v.rsplit_once(':') {
        Some((n, p)) => Ok((
            n.to_string(),
            p.parse().map_err(|e| format!("partitions of {v}: {e}"))?,
        )),
        None => Ok((v.to_owned(), 1)),
    }
}

/// Runs `mock`.
pub fn run(a: MockArgs) -> CliResult {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the runtime: {e}")))?;
    rt.block_on(async move {
        let mut b = MockCluster::builder()
            .brokers(a.brokers)
            .first_port(a.port)
            .default_partitions(a.partitions)
            .auto_create_topics(!a.no_auto_create);
        for (name, parts) in a.topics {
            b = b.topic(name, parts);
        }
        let mock = b.start().await?;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{}", mock.bootstrap());
        let _ = out.flush();
        eprintln!(
            "mock cluster with {} broker(s) listening; Ctrl-C stops it",
            mock.broker_ids().len()
        );
        shutdown_signal().await;
        mock.shutdown().await;
        eprintln!("mock cluster stopped");
        Ok(())
    })
}

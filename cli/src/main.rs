//! The `rekafka` command-line tool.
//!
//! For now it only describes itself; the topic, group, produce, consume, mock-cluster and
//! dead-letter commands arrive with the layers they use.

use std::process::ExitCode;

mod perf;
mod produce;

const HELP: &str = "\
rekafka — a pure-Rust Apache Kafka client with error handling built in

Usage: rekafka [OPTIONS]

Options:
  -h, --help       Print this help
  -V, --version    Print the version

Commands:
  produce          Send stdin lines as records (see `rekafka produce --help`)
  perf produce     Producer throughput (see `rekafka perf --help`)
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("-h") | Some("--help") | Some("help") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some("-V") | Some("--version") => {
            println!("rekafka {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("produce") => produce::run(&args[1..]),
        Some("perf") => perf::run(&args[1..]),
        Some(other) => {
            eprintln!("error: unknown argument '{other}' (see `rekafka --help`)");
            ExitCode::from(2)
        }
    }
}

//! The `rekafka` command-line tool.
//!
//! For now it only describes itself; the topic, group, produce, consume, mock-cluster and
//! dead-letter commands arrive with the layers they use.

use std::process::ExitCode;

mod consume;

const HELP: &str = "\
rekafka — a pure-Rust Apache Kafka client with error handling built in

Usage: rekafka [OPTIONS]

Options:
  -h, --help       Print this help
  -V, --version    Print the version

Commands:
  consume          Read records (`rekafka consume --help`)
  perf consume     Consumer throughput benchmark (`rekafka perf consume --help`)

More commands (topics, groups, produce, mock, dlt) arrive with the layers they use.
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
        Some("consume") => consume::consume(&args[1..]),
        Some("perf") if args.get(1).map(String::as_str) == Some("consume") => {
            consume::perf_consume(&args[2..])
        }
        Some(other) => {
            eprintln!("error: unknown argument '{other}' (see `rekafka --help`)");
            ExitCode::from(2)
        }
    }
}

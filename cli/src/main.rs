//! The `rekafka` command-line tool.
//!
//! `rekafka mock` runs the embedded mock cluster (`cli/src/mock.rs`); the topic, group, produce,
//! consume and dead-letter commands arrive with the layers they use.

use std::process::ExitCode;

mod mock;

const HELP: &str = "\
rekafka — a pure-Rust Apache Kafka client with error handling built in

Usage: rekafka [OPTIONS]
       rekafka mock [--brokers N] [--port FIRST_PORT] [--topic NAME:PARTITIONS]...

Options:
  -h, --help       Print this help
  -V, --version    Print the version

Commands:
  mock             Run an in-process Kafka-compatible mock cluster (see `rekafka mock --help`)

More commands (topics, groups, produce, consume, dlt) arrive with the layers they use.
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
        Some("mock") => mock::run(&args[1..]),
        Some(other) => {
            eprintln!("error: unknown argument '{other}' (see `rekafka --help`)");
            ExitCode::from(2)
        }
    }
}

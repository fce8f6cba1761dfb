//! The `rekafka` command-line tool.
//!
//! `main` takes the global flags out (`common::Global`), then dispatches on the first word to
//! `<module>::run(&global, rest)`. A command module has `pub const HELP: &str` (its lines of
//! the help text) and `pub fn run(&Global, &[String]) -> CliResult`; shared helpers (flag and
//! argument parsing, the runtime, client construction, tables) are in `common`.
//!
//! Errors are one line on stderr and a non-zero exit: 2 for a wrong command line, 1 for a
//! failed operation. Nothing panics on bad input; a panic would still be reported as one line.

mod common;
mod consume;
mod dlt;
mod groups;
mod mock;
mod perf;
mod produce;
mod topics;

use std::process::ExitCode;

use common::{CliError, Global};

fn help() -> String {
    format!(
        "\
rekafka — a pure-Rust Apache Kafka client with error handling built in

Usage: rekafka [-b HOST:PORT[,HOST:PORT...]] [-F FILE] [-X key=value]... COMMAND [ARGS]

Global options (anywhere on the line):
  -b, --bootstrap SERVERS   bootstrap servers (default: ${env})
  -X key=value              a client property, Java or librdkafka style
                            (request.timeout.ms=5000, client.id=me, ...); repeatable
  -F, --command-config FILE a Java .properties file of client properties
                            (applied first; -b and -X override it)
  -h, --help                print this help
  -V, --version             print the version

Commands:
  {topics}
  {groups}
  produce -t TOPIC [--key-separator SEP] [-H name=value]... [--partition N]
          [--acks all|1|0] [--compression CODEC] [--transactional-id ID [--abort]]
                            send stdin lines as records (see produce --help)
  perf produce -t TOPIC -n COUNT -s VALUE_BYTES [--acks ..] [--compression ..] [--linger-ms ..]
                            producer throughput (see perf --help); -F/-X apply
  consume -t TOPIC [-g GROUP] [-o beginning|end|OFFSET] [-e] [-c COUNT]
          [--isolation read_committed|read_uncommitted] [--format json|value]
                            print records (JSON lines by default; see consume --help);
                            -F/-X apply: client properties (TLS, SASL, ...) and consumer
                            properties (group.id, isolation.level, auto.offset.reset, ...)
  perf consume -t TOPIC -n COUNT
                            consumer throughput; -F/-X apply
  {dlt}
  mock [--brokers N] [--port FIRST_PORT] [--topic NAME:PARTITIONS]...
                            run an in-process Kafka-compatible mock cluster in the
                            foreground; prints its bootstrap address first (see mock --help)

Errors go to stderr as one line; the exit code is 2 for a wrong command line and 1 for a
failed operation.
",
        env = common::BOOTSTRAP_ENV,
        topics = topics::HELP,
        groups = groups::HELP,
        dlt = dlt::HELP,
    )
}

fn run(args: Vec<String>) -> Result<(), CliError> {
    if matches!(
        args.first().map(String::as_str),
        Some("-V") | Some("--version")
    ) {
        println!("rekafka {}", env!("CARGO_PKG_VERSION"));
        return Ok(());
    }
    if args.is_empty() || args[0] == "help" || args.iter().any(|a| a == "-h" || a == "--help") {
        print!("{}", help());
        return Ok(());
    }
    let (global, rest) = Global::extract(args)?;
    let Some((command, rest)) = rest.split_first() else {
        return Err(CliError::usage("missing COMMAND"));
    };
    match command.as_str() {
        "topics" => topics::run(&global, rest),
        "groups" => groups::run(&global, rest),
        "dlt" => dlt::run(&global, rest),
        other if other.starts_with('-') => {
            Err(CliError::usage(format!("unknown option '{other}'")))
        }
        other => Err(CliError::usage(format!("unknown command '{other}'"))),
    }
}

/// `rest` with `-b BOOTSTRAP` in front when the global flags named one.
fn with_bootstrap(global: &Global, rest: &[String]) -> Vec<String> {
    let mut args = Vec::with_capacity(rest.len() + 2);
    if let Some(b) = &global.bootstrap {
        args.push("-b".to_owned());
        args.push(b.clone());
    }
    args.extend(rest.iter().cloned());
    args
}

fn main() -> ExitCode {
    // Library code does not panic on bad input; should anything still panic, say so in one
    // line instead of a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        eprintln!("error: internal error: {}", msg.replace('\n', " "));
    }));
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `mock` runs a server in the foreground and has its own flags (no -b/-X).
    if args.first().map(String::as_str) == Some("mock") {
        return mock::run(&args[1..]);
    }
    // Commands that parse their own flags get the global bootstrap handed on.
    if let Ok((global, rest)) = Global::extract(args.clone()) {
        match rest.first().map(String::as_str) {
            Some("produce") => return produce::run(&with_bootstrap(&global, &rest[1..])),
            Some("consume") => {
                return match consume::consume(&global, &rest[1..]) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("error: {e}");
                        e.exit_code()
                    }
                };
            }
            Some("perf") => return perf::run(&global, &rest[1..]),
            _ => {}
        }
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

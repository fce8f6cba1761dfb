//! The `rekafka` command-line tool.
//!
//! The command line is parsed by `clap` (derive) into [`Cli`]: the global flags (`-b`, `-X`,
//! `-F`: [`common::Global`]) may appear anywhere and reach every command; [`Command`] is
//! dispatched in one place, [`dispatch`], to `<module>::run(&global, args)`. Shared helpers
//! (the client builder, the runtime, signals, stdout, tables) are in `common`.
//!
//! Errors are one line on stderr and a non-zero exit: 2 for a wrong command line (a bad flag
//! or property), 1 for a failed operation; a stdout closed by its reader (`| head`) ends the
//! command cleanly with 0. Nothing panics on bad input; a panic would still be reported as
//! one line.

mod common;
mod consume;
mod dlt;
mod format;
mod groups;
mod mock;
mod perf;
mod produce;
mod share_groups;
mod topics;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use common::{CliError, CliResult, Global};

/// The summary of every command and the exit codes, after the top-level help.
const AFTER_HELP: &str = "\
Commands in full (each has its own --help, e.g. `rekafka consume --help`):
  topics create NAME --partitions N [--replication-factor R] [--config k=v]...
  topics list [--internal]
  topics describe NAME...
  topics alter NAME [--config k=v]... [--delete-config k]...
  topics delete NAME...
  groups list [--type classic|consumer|share|streams]...
  groups describe GROUP...
  groups offsets GROUP
  groups reset-offsets GROUP -t TOPIC[:P,..] --to-earliest|--to-latest|--to-offset N|
                       --to-datetime TIME|--shift-by N [--execute]
  groups delete GROUP...
  groups delete-offsets SHARE_GROUP -t TOPIC...
  groups config GROUP [--config k=v]... [--delete-config k]...
  produce -t TOPIC [-K SEP] [-k KEY] [-H name=value]... [-p N] [FILE]...
  consume -t TOPIC [-g GROUP] [-o beginning|end|N|-N|s@TIMESTAMP] [-e] [-c N]
          [-f FORMAT | -J | --format json|value] [-K SEP]
  perf produce -t TOPIC -n COUNT -s BYTES [--keys K]
  perf consume -t TOPIC -n COUNT
  dlt inspect -t DLT_TOPIC [-e] [-c N]
  dlt replay -t DLT_TOPIC [--to TOPIC] [--where COND]... [-g GROUP] [--max N]
  mock [--brokers N] [--topic NAME:PARTITIONS]...

The global options -b, -X and -F reach every command (mock takes none); an unknown or
invalid property is an error everywhere.

Exit status:
  0  success, also when stdout was closed by its reader (`rekafka consume ... | head`) or
     the command was stopped by Ctrl-C or SIGTERM (after leaving the group and committing)
  1  an operation failed (the broker refused, a record was not delivered, ...)
  2  a wrong command line: an unknown flag, a bad value, an unknown or invalid property";

/// rekafka — a pure-Rust Apache Kafka client with error handling built in
#[derive(Debug, Parser)]
#[command(
    name = "rekafka",
    version,
    after_help = AFTER_HELP,
    arg_required_else_help = true,
    disable_help_subcommand = true,
    max_term_width = 100
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe, alter and delete topics
    #[command(subcommand)]
    Topics(topics::Topics),
    /// List, describe, delete consumer and share groups, show and reset their offsets, configs
    #[command(subcommand)]
    Groups(groups::Groups),
    /// Send records read from stdin or files, one per line
    Produce(produce::ProduceArgs),
    /// Print records (JSON lines by default, kcat's -f/-J formats)
    Consume(consume::ConsumeArgs),
    /// Producer and consumer throughput
    #[command(subcommand)]
    Perf(perf::Perf),
    /// Inspect and replay dead letters
    #[command(subcommand)]
    Dlt(dlt::Dlt),
    /// Run an in-process Kafka-compatible mock cluster in the foreground
    Mock(mock::MockArgs),
}

/// Runs the command.
fn dispatch(global: Global, command: Command) -> CliResult {
    match command {
        Command::Topics(c) => topics::run(&global, c),
        Command::Groups(c) => groups::run(&global, c),
        Command::Produce(a) => produce::run(&global, a),
        Command::Consume(a) => consume::run(&global, a),
        Command::Perf(c) => perf::run(&global, c),
        Command::Dlt(c) => dlt::run(&global, c),
        Command::Mock(a) => {
            if global.bootstrap.is_some()
                || !global.properties.is_empty()
                || global.config_file.is_some()
            {
                return Err(CliError::usage(
                    "mock serves a cluster of its own: it takes no -b, -X or -F",
                ));
            }
            mock::run(a)
        }
    }
}

/// The command path the words of `args` name (`rekafka topics create`), for "see --help".
fn command_path(args: &[String]) -> String {
    let mut cmd = Cli::command();
    let mut path = vec!["rekafka".to_owned()];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if matches!(
            a.as_str(),
            "-b" | "--bootstrap" | "-X" | "--property" | "-F" | "--command-config"
        ) {
            it.next();
            continue;
        }
        if a.starts_with('-') {
            continue;
        }
        match cmd.find_subcommand(a) {
            Some(sub) => {
                path.push(sub.get_name().to_owned());
                let sub = sub.clone();
                cmd = sub;
            }
            None => break,
        }
    }
    path.join(" ")
}

/// A clap error as one line (`error: ...`), naming the help of the command in `args`.
fn one_line(e: &clap::Error, args: &[String]) -> String {
    let text = e.render().to_string();
    let mut parts = Vec::new();
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("Usage: ") {
            break;
        }
        if l.is_empty() || l.starts_with("tip:") || l.starts_with("For more information") {
            continue;
        }
        parts.push(l.strip_prefix("error: ").unwrap_or(l).to_owned());
    }
    format!(
        "error: {} (see `{} --help`)",
        parts.join(" "),
        command_path(args)
    )
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
    // `args_os`: a non-UTF-8 argument is clap's error to report, not a panic.
    let raw: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let args: Vec<String> = raw
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let parsed = Cli::command()
        .try_get_matches_from(std::iter::once(std::ffi::OsString::from("rekafka")).chain(raw))
        .and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    ExitCode::SUCCESS
                }
                _ => {
                    eprintln!("{}", one_line(&e, &args));
                    ExitCode::from(2)
                }
            };
        }
    };
    match dispatch(cli.global, cli.command) {
        Ok(()) | Err(CliError::PipeClosed) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_anywhere() {
        let cli = Cli::try_parse_from([
            "rekafka",
            "-b",
            "h:1",
            "topics",
            "list",
            "-X",
            "client.id=x",
            "-Xrequest.timeout.ms=5",
        ])
        .unwrap();
        assert_eq!(cli.global.bootstrap.as_deref(), Some("h:1"));
        assert_eq!(
            cli.global.properties,
            [
                ("client.id".to_owned(), "x".to_owned()),
                ("request.timeout.ms".to_owned(), "5".to_owned())
            ]
        );
        assert!(Cli::try_parse_from(["rekafka", "-X", "novalue", "topics", "list"]).is_err());
        assert!(Cli::try_parse_from(["rekafka", "topics", "list", "-b"]).is_err());
        let cli = Cli::try_parse_from(["rekafka", "--bootstrap=a:2", "groups", "list"]).unwrap();
        assert_eq!(cli.global.bootstrap.as_deref(), Some("a:2"));
        // The global flags after a subcommand's own flags, on every command.
        for cmd in [
            &["produce", "-t", "t"][..],
            &["consume", "-t", "t"],
            &["perf", "produce", "-t", "t"],
            &["dlt", "inspect", "-t", "t"],
            &["dlt", "replay", "-t", "t"],
        ] {
            let mut args = vec!["rekafka"];
            args.extend_from_slice(cmd);
            args.extend_from_slice(&["-X", "client.id=y", "-F", "f.properties"]);
            let cli = Cli::try_parse_from(&args).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
            assert_eq!(cli.global.properties.len(), 1, "{cmd:?}");
            assert_eq!(cli.global.config_file.as_deref(), Some("f.properties"));
        }
    }

    #[test]
    fn errors_are_one_line_naming_the_help() {
        let args = ["topics", "create", "x", "--partitions", "many"].map(String::from);
        let e = Cli::try_parse_from(std::iter::once("rekafka".to_owned()).chain(args.clone()))
            .unwrap_err();
        let line = one_line(&e, &args);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--partitions"), "{line}");
        assert!(
            line.ends_with("(see `rekafka topics create --help`)"),
            "{line}"
        );
    }
}

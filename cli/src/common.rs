//! What every command shares: the global flags (`-b`, `-X`), the error type and exit codes,
//! argument parsing helpers, the tokio runtime, building a `Client`, and table output.

use std::fmt;
use std::future::Future;
use std::process::ExitCode;

use rekafka::Client;

/// The environment variable that gives the default bootstrap servers.
pub const BOOTSTRAP_ENV: &str = "REKAFKA_BOOTSTRAP";

/// Why a command failed. Printed as one line on stderr by `main`.
#[derive(Debug)]
pub enum CliError {
    /// The command line is wrong (exit code 2).
    Usage(String),
    /// The operation failed (exit code 1).
    Failed(String),
    /// stdout was closed by its reader (`| head`): the command stopped cleanly (exit code 0,
    /// nothing printed).
    PipeClosed,
}

impl CliError {
    /// A usage error.
    pub fn usage(msg: impl Into<String>) -> CliError {
        CliError::Usage(msg.into())
    }

    /// The exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            CliError::Failed(_) => ExitCode::from(1),
            CliError::PipeClosed => ExitCode::SUCCESS,
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "{m} (see `rekafka --help`)"),
            CliError::Failed(m) => f.write_str(m),
            CliError::PipeClosed => f.write_str("stdout was closed"),
        }
    }
}

impl From<rekafka::Error> for CliError {
    fn from(e: rekafka::Error) -> CliError {
        // One line: the error and its sources, if any.
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        CliError::Failed(msg.replace('\n', " "))
    }
}

/// The result of a command.
pub type CliResult<T = ()> = Result<T, CliError>;

/// The global flags: where the cluster is and the client properties. They may appear
/// anywhere on the command line and reach every command.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Global {
    /// Bootstrap servers [default: $REKAFKA_BOOTSTRAP]
    #[arg(
        short = 'b',
        long = "bootstrap",
        global = true,
        value_name = "HOST:PORT[,...]",
        help_heading = "Global options"
    )]
    pub bootstrap: Option<String>,
    /// A client, producer or consumer property, Java or librdkafka style
    /// (request.timeout.ms=5000, security.protocol=SASL_SSL, ...); repeatable. A value
    /// `@FILE` is read from FILE, `env:NAME` from the environment variable NAME.
    #[arg(
        short = 'X',
        long = "property",
        global = true,
        value_name = "KEY=VALUE",
        value_parser = parse_property,
        help_heading = "Global options"
    )]
    pub properties: Vec<(String, String)>,
    /// A Java .properties file of client properties (applied first; -b and -X override it)
    #[arg(
        short = 'F',
        long = "command-config",
        global = true,
        value_name = "FILE",
        help_heading = "Global options"
    )]
    pub config_file: Option<String>,
}

/// Parses `-X key=value`; a value `@FILE` is the contents of FILE (one trailing newline
/// dropped) and `env:NAME` the environment variable NAME, so secrets need not be on argv.
fn parse_property(s: &str) -> Result<(String, String), String> {
    let (k, v) = match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => (k.trim().to_owned(), v.to_owned()),
        _ => return Err(format!("expects key=value, got '{s}'")),
    };
    Ok((k, resolve_secret(&v)?))
}

/// The value of a property: `@FILE` read from FILE, `env:NAME` from the environment, else
/// itself.
pub fn resolve_secret(v: &str) -> Result<String, String> {
    if let Some(path) = v.strip_prefix('@') {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
        let text = text.strip_suffix('\n').unwrap_or(&text);
        Ok(text.strip_suffix('\r').unwrap_or(text).to_owned())
    } else if let Some(name) = v.strip_prefix("env:") {
        std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))
    } else {
        Ok(v.to_owned())
    }
}

impl Global {
    /// The properties of the `-F` file, if one was given.
    fn file_properties(&self) -> CliResult<Vec<(String, String)>> {
        let Some(path) = &self.config_file else {
            return Ok(Vec::new());
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| CliError::usage(format!("cannot read -F {path}: {e}")))?;
        rekafka::client::properties::parse_properties(&text)
            .map_err(|e| CliError::usage(format!("-F {path}: {}", message_of(&e))))
    }

    /// A client builder with, in this order, the `-F` file's properties, the bootstrap
    /// servers (`-b`; else `REKAFKA_BOOTSTRAP` unless the file or a `-X` names them) and
    /// every `-X` property. A bad property is a usage error naming it.
    pub fn builder(&self) -> CliResult<rekafka::ClientBuilder> {
        self.builder_with(|_, _| Ok(false))
    }

    /// As [`builder`](Self::builder), but each property (file, then `-X`) is first offered to
    /// `command_config` — a command's own config, e.g. `ConsumerConfig::apply_property`:
    /// `Ok(true)` means it took the key. A key is also given to the client when the client
    /// knows it (`retry.backoff.ms` belongs to both); a key neither knows is a usage error.
    pub fn builder_with(
        &self,
        mut command_config: impl FnMut(&str, &str) -> rekafka::Result<bool>,
    ) -> CliResult<rekafka::ClientBuilder> {
        let mut builder = Client::builder().client_id("rekafka-cli");
        let file = self.file_properties()?;
        let names_bootstrap = |props: &[(String, String)]| {
            props
                .iter()
                .any(|(k, _)| k == "bootstrap.servers" || k == "metadata.broker.list")
        };
        let client_knows =
            |k: &str| rekafka::ClientBuilder::property_names().any(|n| n == k.trim());
        let mut apply = |builder: &mut rekafka::ClientBuilder, k: &str, v: &str| {
            let taken = command_config(k.trim(), v)?;
            if !taken || client_knows(k) {
                builder.set_property(k, v)?;
            }
            Ok::<(), rekafka::Error>(())
        };
        for (k, v) in &file {
            apply(&mut builder, k, v).map_err(|e| {
                CliError::usage(format!(
                    "-F {}: {}",
                    self.config_file.as_deref().unwrap_or_default(),
                    message_of(&e)
                ))
            })?;
        }
        let env = std::env::var(BOOTSTRAP_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty());
        match (&self.bootstrap, env) {
            (Some(b), _) => builder = builder.property("bootstrap.servers", b),
            (None, _) if names_bootstrap(&file) || names_bootstrap(&self.properties) => {}
            (None, Some(env)) => builder = builder.property("bootstrap.servers", env),
            (None, None) => {
                return Err(CliError::usage(format!(
                    "no bootstrap servers: pass -b HOST:PORT or set {BOOTSTRAP_ENV}"
                )));
            }
        }
        for (k, v) in &self.properties {
            apply(&mut builder, k, v)
                .map_err(|e| CliError::usage(format!("-X {k}: {}", message_of(&e))))?;
        }
        Ok(builder)
    }

    /// Connects a client: fails at once when no bootstrap address answers (a command line
    /// tool should not wait for brokers that are not there).
    pub async fn client(&self) -> CliResult<Client> {
        Ok(self.builder()?.connect().await?)
    }
}

/// The message of a config error, without the kind prefix.
fn message_of(e: &rekafka::Error) -> String {
    e.message_text()
        .map(str::to_owned)
        .unwrap_or_else(|| e.to_string())
}

/// `key=value` → (key, value), as a clap value parser.
pub fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expects key=value, got '{s}'")),
    }
}

/// Runs a command's future on a fresh tokio runtime.
pub fn run_async<F: Future<Output = CliResult>>(f: F) -> CliResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(format!("cannot start the runtime: {e}")))?;
    rt.block_on(f)
}

/// Prints rows as left-aligned columns under `headers`.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) -> CliResult {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let mut text = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let pad = widths[i].saturating_sub(c.chars().count()) + 2;
                s.push_str(c);
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        text.push_str(s.trim_end());
        text.push('\n');
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
    write_out(&text)
}

/// Writes `text` to stdout. A closed stdout (`| head`) is [`CliError::PipeClosed`].
pub fn write_out(text: &str) -> CliResult {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(stdout_error)
}

/// The error for a failed write to stdout: [`CliError::PipeClosed`] when the reader went away.
pub fn stdout_error(e: std::io::Error) -> CliError {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        CliError::PipeClosed
    } else {
        CliError::Failed(format!("writing to stdout: {e}"))
    }
}

/// Prints a line to stdout (`println!` that returns [`CliError::PipeClosed`] instead of
/// panicking on a closed pipe).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::common::write_out(&format!("{}\n", format_args!($($arg)*)))?
    };
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM. If the handlers cannot be installed it never
/// resolves (the default disposition, ending the process, stays).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A flag set once Ctrl-C or SIGTERM arrives, for loops that finish their unit of work first
/// (the handler is a task on the current runtime).
pub fn stop_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        s.store(true, std::sync::atomic::Ordering::SeqCst);
    });
    stop
}

/// Prints per-item failures (one line each on stderr) and fails if there were any.
pub fn report_failures(failures: Vec<String>) -> CliResult {
    match failures.len() {
        0 => Ok(()),
        1 => Err(CliError::Failed(
            failures.into_iter().next().unwrap_or_default(),
        )),
        n => {
            for f in &failures[..n - 1] {
                eprintln!("error: {f}");
            }
            Err(CliError::Failed(failures[n - 1].clone()))
        }
    }
}

/// Progress on stderr (count, rate and, with a total, the ETA), once a second, only when
/// stderr is a terminal.
pub struct Progress {
    what: &'static str,
    total: Option<u64>,
    start: std::time::Instant,
    last: std::cell::Cell<std::time::Instant>,
    shown: std::cell::Cell<bool>,
    enabled: bool,
}

impl Progress {
    /// Progress of `what` (e.g. "records") towards `total`, if known.
    pub fn new(what: &'static str, total: Option<u64>) -> Progress {
        use std::io::IsTerminal;
        let now = std::time::Instant::now();
        Progress {
            what,
            total,
            start: now,
            last: std::cell::Cell::new(now),
            shown: std::cell::Cell::new(false),
            enabled: std::io::stderr().is_terminal(),
        }
    }

    /// Reports `done` if a second passed since the last report.
    pub fn update(&self, done: u64) {
        if !self.enabled || self.last.get().elapsed() < std::time::Duration::from_secs(1) {
            return;
        }
        self.last.set(std::time::Instant::now());
        self.shown.set(true);
        eprint!(
            "\r\x1b[K{}",
            self.line(done, self.start.elapsed().as_secs_f64())
        );
    }

    /// Ends the progress line, if one was shown.
    pub fn finish(&self) {
        if self.shown.get() {
            eprintln!();
        }
    }

    /// The progress line for `done` after `secs`.
    fn line(&self, done: u64, secs: f64) -> String {
        let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
        match self.total {
            Some(total) if total > 0 => {
                let eta = if rate > 0.0 {
                    format!("{:.0}s", total.saturating_sub(done) as f64 / rate)
                } else {
                    "?".to_owned()
                };
                format!(
                    "{done}/{total} {} ({:.0}%), {rate:.0}/s, ETA {eta}",
                    self.what,
                    done as f64 * 100.0 / total as f64
                )
            }
            _ => format!("{done} {}, {rate:.0}/s", self.what),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines() {
        let p = Progress::new("records", Some(1000));
        assert_eq!(p.line(250, 2.0), "250/1000 records (25%), 125/s, ETA 6s");
        let p = Progress::new("dead letters", None);
        assert_eq!(p.line(10, 5.0), "10 dead letters, 2/s");
    }

    #[test]
    fn property_values_from_files_and_the_environment() {
        assert_eq!(
            parse_property("client.id=x=y").ok(),
            Some(("client.id".to_owned(), "x=y".to_owned()))
        );
        assert!(parse_property("novalue").is_err());
        assert!(parse_property("=v").is_err());
        let dir = std::env::temp_dir().join(format!("rekafka-cli-secret-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("password");
        std::fs::write(&file, "s3cret\n").unwrap();
        let arg = format!("sasl.password=@{}", file.display());
        assert_eq!(
            parse_property(&arg).ok(),
            Some(("sasl.password".to_owned(), "s3cret".to_owned()))
        );
        assert!(parse_property("sasl.password=@/nonexistent/file").is_err());
        assert!(parse_property("sasl.password=env:REKAFKA_CLI_TEST_SURELY_UNSET").is_err());
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(
            parse_property("sasl.password=env:PATH").ok(),
            Some(("sasl.password".to_owned(), path))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_property_is_a_usage_error_naming_it() {
        let g = Global {
            bootstrap: Some("h:1".into()),
            properties: vec![("bootstrap.server".into(), "x".into())],
            config_file: None,
        };
        let e = g.builder().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("did you mean 'bootstrap.servers'?"), "{e}");
    }

    #[test]
    fn properties_file_then_flags() {
        let dir = std::env::temp_dir().join(format!("rekafka-cli-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let file = dir.join("client.properties");
        std::fs::write(
            &file,
            "# test\nbootstrap.servers=f:1\nrequest.timeout.ms=1234\n",
        )
        .unwrap();
        let g = Global {
            config_file: Some(file.display().to_string()),
            properties: vec![("client.id".into(), "from-x".into())],
            ..Global::default()
        };
        assert!(g.builder().is_ok());
        std::fs::write(&file, "bootstrap.servers=f:1\nlinger.mss=5\n").unwrap();
        let e = g.builder().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("linger.mss") && e.contains("-F "), "{e}");
        let missing = Global {
            config_file: Some("/nonexistent/x.properties".into()),
            ..Global::default()
        };
        assert!(matches!(missing.builder(), Err(CliError::Usage(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

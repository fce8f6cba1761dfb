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
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(m) => write!(f, "{m} (see `rekafka --help`)"),
            CliError::Failed(m) => f.write_str(m),
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

/// The global flags: where the cluster is and the client properties.
#[derive(Debug, Clone, Default)]
pub struct Global {
    /// `-b HOST:PORT[,HOST:PORT...]`, else `REKAFKA_BOOTSTRAP`.
    pub bootstrap: Option<String>,
    /// `-X key=value`, in order.
    pub properties: Vec<(String, String)>,
    /// `-F FILE` / `--command-config FILE`: a Java `.properties` file, applied before `-b`
    /// and `-X`.
    pub config_file: Option<String>,
}

impl Global {
    /// Takes the global flags out of `args` (wherever they are) and returns them with the
    /// remaining arguments. `-b X`, `-bX`, `--bootstrap X`, `--bootstrap=X`, `-X k=v`, `-Xk=v`.
    pub fn extract(args: Vec<String>) -> CliResult<(Global, Vec<String>)> {
        let mut global = Global::default();
        let mut rest = Vec::new();
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            let mut value_of = |flag: &str, inline: Option<&str>| -> CliResult<String> {
                match inline {
                    Some(v) if !v.is_empty() => Ok(v.to_owned()),
                    _ => it
                        .next()
                        .ok_or_else(|| CliError::usage(format!("{flag} needs a value"))),
                }
            };
            if a == "-b" || a == "--bootstrap" {
                global.bootstrap = Some(value_of(&a, None)?);
            } else if let Some(v) = a.strip_prefix("--bootstrap=") {
                global.bootstrap = Some(value_of("--bootstrap", Some(v))?);
            } else if let Some(v) = a.strip_prefix("-b").filter(|v| !v.is_empty()) {
                global.bootstrap = Some(v.to_owned());
            } else if a == "-F" || a == "--command-config" {
                global.config_file = Some(value_of(&a, None)?);
            } else if a == "-X" || a == "--property" {
                let kv = value_of(&a, None)?;
                global.properties.push(parse_key_value("-X", &kv)?);
            } else if let Some(v) = a.strip_prefix("-X").filter(|v| !v.is_empty()) {
                global.properties.push(parse_key_value("-X", v)?);
            } else {
                rest.push(a);
            }
        }
        Ok((global, rest))
    }

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

    /// Connects a client.
    pub async fn client(&self) -> CliResult<Client> {
        Ok(self.builder()?.build().await?)
    }
}

/// The message of a config error, without the kind prefix.
fn message_of(e: &rekafka::Error) -> String {
    e.message_text()
        .map(str::to_owned)
        .unwrap_or_else(|| e.to_string())
}

/// `key=value` → (key, value); `what` names the flag in the error.
pub fn parse_key_value(what: &str, s: &str) -> CliResult<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(CliError::usage(format!(
            "{what} expects key=value, got '{s}'"
        ))),
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

/// The arguments of a command: positional words and `--flag value` options, checked against
/// what the command accepts.
#[derive(Debug, Default)]
pub struct Args {
    /// Positional arguments, in order.
    pub positional: Vec<String>,
    /// Options with their values, in order (repeatable options appear several times).
    pub options: Vec<(String, Option<String>)>,
}

impl Args {
    /// Parses `args`. `with_value` lists the options that take a value (`--partitions`),
    /// `switches` those that do not (`--internal`); anything else starting with `-` is an
    /// error. `--name=value` is accepted too.
    pub fn parse(args: &[String], with_value: &[&str], switches: &[&str]) -> CliResult<Args> {
        let mut out = Args::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--" {
                out.positional.extend(it.by_ref().cloned());
                break;
            }
            if !a.starts_with('-') || a == "-" {
                out.positional.push(a.clone());
                continue;
            }
            let (name, inline) = match a.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (a.as_str(), None),
            };
            if with_value.contains(&name) {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| CliError::usage(format!("{name} needs a value")))?,
                };
                out.options.push((name.to_owned(), Some(v)));
            } else if switches.contains(&name) && inline.is_none() {
                out.options.push((name.to_owned(), None));
            } else {
                return Err(CliError::usage(format!("unknown option '{a}'")));
            }
        }
        Ok(out)
    }

    /// The last value of option `name`.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }

    /// Every value of a repeatable option, in order.
    pub fn values(&self, name: &str) -> Vec<&str> {
        self.options
            .iter()
            .filter(|(n, _)| n == name)
            .filter_map(|(_, v)| v.as_deref())
            .collect()
    }

    /// Whether switch `name` was given.
    pub fn has(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }

    /// The value of option `name` parsed as `T`, if given.
    pub fn parsed<T: std::str::FromStr>(&self, name: &str, expected: &str) -> CliResult<Option<T>> {
        match self.value(name) {
            None => Ok(None),
            Some(v) => v
                .parse::<T>()
                .map(Some)
                .map_err(|_| CliError::usage(format!("{name} expects {expected}, got '{v}'"))),
        }
    }

    /// Exactly `n` positional arguments, named in the error as `what`.
    pub fn exactly(&self, n: usize, what: &str) -> CliResult<&[String]> {
        if self.positional.len() == n {
            Ok(&self.positional)
        } else if self.positional.len() < n {
            Err(CliError::usage(format!("missing {what}")))
        } else {
            Err(CliError::usage(format!(
                "unexpected argument '{}'",
                self.positional[n]
            )))
        }
    }
}

/// Prints rows as left-aligned columns under `headers`.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", s.trim_end());
    };
    line(headers.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn global_flags_anywhere() {
        let (g, rest) = Global::extract(v(&[
            "-b",
            "h:1",
            "topics",
            "list",
            "-X",
            "client.id=x",
            "-Xrequest.timeout.ms=5",
        ]))
        .unwrap();
        assert_eq!(g.bootstrap.as_deref(), Some("h:1"));
        assert_eq!(
            g.properties,
            [
                ("client.id".to_owned(), "x".to_owned()),
                ("request.timeout.ms".to_owned(), "5".to_owned())
            ]
        );
        assert_eq!(rest, ["topics", "list"]);
        assert!(Global::extract(v(&["-X", "novalue"])).is_err());
        assert!(Global::extract(v(&["topics", "-b"])).is_err());
        let (g, _) = Global::extract(v(&["--bootstrap=a:2"])).unwrap();
        assert_eq!(g.bootstrap.as_deref(), Some("a:2"));
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

    #[test]
    fn command_args() {
        let a = Args::parse(
            &v(&[
                "t",
                "--partitions",
                "3",
                "--config",
                "a=1",
                "--config=b=2",
                "--force",
            ]),
            &["--partitions", "--config"],
            &["--force"],
        )
        .unwrap();
        assert_eq!(a.positional, ["t"]);
        assert_eq!(a.value("--partitions"), Some("3"));
        assert_eq!(a.values("--config"), ["a=1", "b=2"]);
        assert!(a.has("--force"));
        assert_eq!(
            a.parsed::<i32>("--partitions", "a number").ok(),
            Some(Some(3))
        );
        assert!(Args::parse(&v(&["--nope"]), &[], &[]).is_err());
        assert!(Args::parse(&v(&["--partitions"]), &["--partitions"], &[]).is_err());
        let a = Args::parse(&v(&["--partitions", "x"]), &["--partitions"], &[]).unwrap();
        assert!(a.parsed::<i32>("--partitions", "a number").is_err());
        assert!(a.exactly(1, "NAME").is_err());
    }
}

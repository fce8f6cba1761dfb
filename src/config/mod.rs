//! The settings table: every Java-style property rekafka accepts, declared once.
//!
//! Each [`Setting`] names its key, the type of its value ([`Kind`]), its default, a doc line
//! and the librdkafka spellings that mean the same. The tables (one per config type: [`CLIENT`],
//! [`CONNECTION`], [`SECURITY`], [`PRODUCER`], [`CONSUMER`], [`SHARE`]) drive:
//! - **parsing and validation**: each config type's `apply_property` looks its key up here
//!   ([`find`]) and reads the value through the setting ([`Setting::millis`],
//!   [`Setting::number`], [`Setting::boolean`], [`Setting::choice`], …), so every key's value
//!   is checked one way, with one error message naming the key and the expected form;
//! - **the accepted keys** and the "did you mean …?" suggestions ([`names`]);
//! - **librdkafka compatibility**: aliases that mean exactly a Java key are in each setting;
//!   librdkafka-only keys with a Java equivalent that needs a conversion, or none, are in
//!   [`LIBRDKAFKA`] and handled by [`translate`] (with a debug log);
//! - **redaction**: [`display_value`] hides the values of sensitive settings;
//! - **the docs**: `docs/configuration.md` is [`markdown`]'s output, checked by a test.
//!
//! ```
//! use std::time::Duration;
//! use rekafka::config;
//!
//! let linger = config::find(config::PRODUCER, "linger.ms").unwrap();
//! assert_eq!(linger.default, "5");
//! assert_eq!(linger.millis("20").unwrap(), Duration::from_millis(20));
//! let e = linger.millis("soon").unwrap_err();
//! assert!(e.to_string().contains("'linger.ms'"));
//! // A librdkafka spelling finds the Java setting.
//! assert_eq!(config::find(config::CLIENT, "metadata.broker.list").unwrap().key, "bootstrap.servers");
//! ```

mod settings;

use std::borrow::Cow;
use std::time::Duration;

use crate::error::{Error, Result};

pub use settings::{CLIENT, CONNECTION, CONSUMER, PRODUCER, SECURITY, SHARE};

/// The type of a setting's value, as written in a property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// `true` or `false` (any case).
    Bool,
    /// A whole number of milliseconds, 0 or more.
    Millis,
    /// A whole number in `min..=max`.
    Int {
        /// The smallest value accepted.
        min: i64,
        /// The largest value accepted.
        max: i64,
    },
    /// A comma-separated list; items are trimmed and empty items dropped.
    List,
    /// Free text (empty usually means "unset").
    Text,
    /// Secret text: never shown by [`display_value`] or in `Debug`.
    Password,
    /// One of the listed spellings (any case); the first is the canonical one of its group as
    /// the setting's docs say.
    Choice(&'static [&'static str]),
}

impl Kind {
    /// A non-negative `i32`, the range of most Kafka byte and count settings.
    pub const COUNT: Kind = Kind::Int {
        min: 0,
        max: i32::MAX as i64,
    };
    /// A strictly positive `i32`.
    pub const POSITIVE: Kind = Kind::Int {
        min: 1,
        max: i32::MAX as i64,
    };

    /// The form a value must have, for error messages and the docs.
    pub fn expected(&self) -> Cow<'static, str> {
        match self {
            Kind::Bool => "true or false".into(),
            Kind::Millis => "a whole number of milliseconds (0 or more)".into(),
            Kind::Int { min, max } => format!("a whole number from {min} to {max}").into(),
            Kind::List => "a comma-separated list".into(),
            Kind::Text | Kind::Password => "text".into(),
            Kind::Choice(options) => format!("one of {}", options.join(", ")).into(),
        }
    }
}

/// One setting: its key, type, default and doc line, declared once in the tables of this
/// module.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Setting {
    /// The Java property key (`linger.ms`), or a `rekafka.`-prefixed key where Java has none.
    pub key: &'static str,
    /// The librdkafka (or older Java) spellings that mean exactly this setting.
    pub aliases: &'static [&'static str],
    /// The type of its value.
    pub kind: Kind,
    /// The default, written as a property value; empty when the default is "unset".
    pub default: &'static str,
    /// What it does, in one line.
    pub doc: &'static str,
}

impl Setting {
    const fn new(key: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> Self {
        Setting {
            key,
            aliases: &[],
            kind,
            default,
            doc,
        }
    }

    const fn alias(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    /// Whether `key` names this setting (its key or one of its aliases).
    pub fn is(&self, key: &str) -> bool {
        self.key == key || self.aliases.contains(&key)
    }

    /// Whether its value is secret.
    pub fn is_sensitive(&self) -> bool {
        self.kind == Kind::Password
    }

    /// The error for a value of the wrong form: names the key, the value and the form.
    pub fn bad_value(&self, value: &str) -> Error {
        let shown = if self.is_sensitive() {
            "(hidden)"
        } else {
            value
        };
        Error::config(format!(
            "invalid value '{shown}' for property '{}': expected {}",
            self.key,
            self.kind.expected()
        ))
    }

    fn wrong_kind(&self, wanted: &str) -> Error {
        Error::config(format!(
            "property '{}' is declared as {:?}, read as {wanted} (a rekafka bug)",
            self.key, self.kind
        ))
    }

    /// A [`Kind::Bool`] value.
    pub fn boolean(&self, value: &str) -> Result<bool> {
        if self.kind != Kind::Bool {
            return Err(self.wrong_kind("a boolean"));
        }
        match value.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(self.bad_value(value)),
        }
    }

    /// A [`Kind::Millis`] value.
    pub fn millis(&self, value: &str) -> Result<Duration> {
        if self.kind != Kind::Millis {
            return Err(self.wrong_kind("milliseconds"));
        }
        value
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| self.bad_value(value))
    }

    /// A [`Kind::Int`] value, in the setting's range and in `T`'s.
    pub fn number<T: TryFrom<i64>>(&self, value: &str) -> Result<T> {
        let Kind::Int { min, max } = self.kind else {
            return Err(self.wrong_kind("a number"));
        };
        value
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (min..=max).contains(n))
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| self.bad_value(value))
    }

    /// A [`Kind::List`] value: items trimmed, empty items dropped.
    pub fn list(&self, value: &str) -> Result<Vec<String>> {
        if self.kind != Kind::List {
            return Err(self.wrong_kind("a list"));
        }
        Ok(split_list(value))
    }

    /// A [`Kind::Text`] or [`Kind::Password`] value, trimmed; `None` when empty.
    pub fn text(&self, value: &str) -> Result<Option<String>> {
        if !matches!(self.kind, Kind::Text | Kind::Password) {
            return Err(self.wrong_kind("text"));
        }
        let v = value.trim();
        Ok((!v.is_empty()).then(|| v.to_owned()))
    }

    /// A [`Kind::Choice`] value: the table's spelling of the option given (compared without
    /// case), for the config type to map to its enum.
    pub fn choice(&self, value: &str) -> Result<&'static str> {
        let Kind::Choice(options) = self.kind else {
            return Err(self.wrong_kind("a choice"));
        };
        let v = value.trim();
        options
            .iter()
            .find(|o| o.eq_ignore_ascii_case(v))
            .copied()
            .ok_or_else(|| self.bad_value(value))
    }
}

/// The setting of `table` that `key` names (by its key or an alias).
pub fn find(table: &'static [Setting], key: &str) -> Option<&'static Setting> {
    table.iter().find(|s| s.is(key))
}

/// Every key of `table`, aliases included.
pub fn names(table: &'static [Setting]) -> impl Iterator<Item = &'static str> + Clone {
    table
        .iter()
        .flat_map(|s| std::iter::once(s.key).chain(s.aliases.iter().copied()))
}

/// Every table, for lookups across config types.
pub const ALL: &[&[Setting]] = &[CLIENT, CONNECTION, SECURITY, PRODUCER, CONSUMER, SHARE];

/// How a value is shown in logs and `Debug`: the value itself, or `"(hidden)"` for a
/// sensitive setting (a password, a private key, a JAAS line with a password).
///
/// ```
/// assert_eq!(rekafka::config::display_value("sasl.password", "hunter2"), "(hidden)");
/// assert_eq!(rekafka::config::display_value("linger.ms", "5"), "5");
/// ```
pub fn display_value<'a>(key: &str, value: &'a str) -> &'a str {
    let sensitive = ALL
        .iter()
        .filter_map(|t| t.iter().find(|s| s.is(key)))
        .any(Setting::is_sensitive);
    if sensitive { "(hidden)" } else { value }
}

/// What a librdkafka-only key becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Translation {
    /// The Java key, with the value (a whole number) multiplied by the factor (KiB → bytes).
    Scaled(&'static str, u64),
    /// No Java equivalent and no effect in rekafka, for the reason given; accepted so that a
    /// librdkafka configuration loads.
    Ignored(&'static str),
}

/// librdkafka-only keys that are not a plain alias of a Java key, and what each becomes.
/// (Keys that mean exactly a Java key, such as `queue.buffering.max.ms` for `linger.ms`, are
/// aliases of that [`Setting`].)
pub const LIBRDKAFKA: &[(&str, Translation)] = &[
    (
        "queue.buffering.max.kbytes",
        Translation::Scaled("buffer.memory", 1024),
    ),
    (
        "queue.buffering.max.messages",
        Translation::Ignored(
            "the producer's buffer is bounded in bytes by buffer.memory, not in records",
        ),
    ),
    (
        "batch.num.messages",
        Translation::Ignored("batches are bounded in bytes by batch.size, not in records"),
    ),
    (
        "enable.partition.eof",
        Translation::Ignored(
            "rekafka has no partition-EOF event; compare Consumer::position with the end offset",
        ),
    ),
    (
        "statistics.interval.ms",
        Translation::Ignored("metrics go through the `metrics` facade (docs/metrics.md)"),
    ),
    (
        "socket.keepalive.enable",
        Translation::Ignored("a dead connection is found by the request timeout"),
    ),
    (
        "api.version.request",
        Translation::Ignored("rekafka always asks brokers for their API versions"),
    ),
    (
        "log.connection.close",
        Translation::Ignored("closed connections are logged through `tracing`"),
    ),
];

/// The Java key and value for a librdkafka-only key of [`LIBRDKAFKA`]: `Some(Ok((key,
/// value)))` to apply, `Some(Err(reason))` for a key with no effect, `None` for any other key.
/// A translation is logged at debug level, a key with no effect at info.
///
/// ```
/// use rekafka::config::translate;
///
/// let (key, value) = translate("queue.buffering.max.kbytes", "1024").unwrap().unwrap();
/// assert_eq!((key, value.as_ref()), ("buffer.memory", "1048576"));
/// assert!(translate("statistics.interval.ms", "1000").unwrap().is_err());
/// assert!(translate("linger.ms", "5").is_none());
/// ```
pub fn translate<'v>(
    key: &str,
    value: &'v str,
) -> Option<std::result::Result<(&'static str, Cow<'v, str>), &'static str>> {
    let (_, t) = LIBRDKAFKA.iter().find(|(k, _)| *k == key)?;
    Some(match *t {
        Translation::Scaled(to, factor) => {
            tracing::debug!(
                from = key,
                to,
                factor,
                "librdkafka property mapped to its Java key"
            );
            // A value that does not parse is handed on as is: the Java setting's error names it.
            let v = match value.trim().parse::<u64>() {
                Ok(n) => Cow::Owned(n.saturating_mul(factor).to_string()),
                Err(_) => Cow::Borrowed(value),
            };
            Ok((to, v))
        }
        Translation::Ignored(reason) => {
            tracing::info!(key, reason, "librdkafka property has no effect in rekafka");
            Err(reason)
        }
    })
}

/// The error for a key of a table that its config type does not handle: a rekafka bug,
/// reported instead of ignored.
pub fn unhandled(key: &str) -> Error {
    Error::config(format!(
        "property '{key}' is declared but not applied (a rekafka bug)"
    ))
}

/// Splits a comma-separated list: items trimmed, empty items dropped.
pub(crate) fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The configuration reference (`docs/configuration.md`), made from the tables.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the settings table (`src/config/settings.rs`) by `rekafka::config::markdown()`;\n\
         `cargo test --lib config::` fails when this file is out of date, and\n\
         `REKAFKA_BLESS=1 cargo test --lib config::` rewrites it.\n\n\
         Every key is a Java client property unless it starts with `rekafka.`. Give them to\n\
         `Client::builder().property(..)`, `Client::from_properties`, the CLI's `-X key=value` or a\n\
         `-F` properties file. librdkafka spellings are accepted: the aliases below mean the same\n\
         setting, and the librdkafka-only keys at the end map to a Java key or are accepted without\n\
         effect. An unknown key is an error that suggests the closest known keys.\n",
    );
    let sections: [(&str, &[Setting]); 6] = [
        ("Client: connections", CONNECTION),
        ("Client: metadata and retries", CLIENT),
        ("Client: security", SECURITY),
        ("Producer", PRODUCER),
        ("Consumer", CONSUMER),
        ("Share consumer", SHARE),
    ];
    for (title, table) in sections {
        out.push_str(&format!(
            "\n## {title}\n\n| key | type | default | what it does |\n|---|---|---|---|\n"
        ));
        for s in table {
            let key = if s.aliases.is_empty() {
                format!("`{}`", s.key)
            } else {
                let a: Vec<String> = s.aliases.iter().map(|a| format!("`{a}`")).collect();
                format!("`{}` (also {})", s.key, a.join(", "))
            };
            let default = if s.default.is_empty() {
                "(unset)".to_owned()
            } else {
                format!("`{}`", s.default)
            };
            out.push_str(&format!(
                "| {key} | {} | {default} | {} |\n",
                s.kind.expected().replace('|', "\\|"),
                s.doc.replace('|', "\\|")
            ));
        }
    }
    out.push_str("\n## librdkafka-only keys\n\n| key | becomes |\n|---|---|\n");
    for (key, t) in LIBRDKAFKA {
        let becomes = match t {
            Translation::Scaled(to, f) => format!("`{to}` (× {f})"),
            Translation::Ignored(why) => format!("no effect: {why}"),
        };
        out.push_str(&format!("| `{key}` | {becomes} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn values_are_read_by_kind_and_errors_name_the_key() {
        let s = find(PRODUCER, "batch.size").unwrap_or_else(|| panic!("batch.size"));
        assert_eq!(s.number::<usize>("65536").ok(), Some(65536));
        for bad in ["-1", "x", "", "99999999999"] {
            let e = s.number::<usize>(bad).unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::Config);
            assert!(e.to_string().contains("'batch.size'"), "{e}");
        }
        assert!(
            s.millis("5").is_err(),
            "a count is not read as milliseconds"
        );
        let b = find(PRODUCER, "enable.idempotence").unwrap_or_else(|| panic!("idempotence"));
        assert_eq!(b.boolean("TRUE").ok(), Some(true));
        assert!(b.boolean("1").is_err());
        let c = find(CONSUMER, "isolation.level").unwrap_or_else(|| panic!("isolation"));
        assert_eq!(c.choice("READ_COMMITTED").ok(), Some("read_committed"));
        assert!(
            c.choice("dirty")
                .unwrap_err()
                .to_string()
                .contains("one of")
        );
    }

    #[test]
    fn secrets_are_hidden() {
        let p = find(SECURITY, "sasl.password").unwrap_or_else(|| panic!("password"));
        assert!(p.is_sensitive());
        assert_eq!(
            display_value("sasl.jaas.config", "x password=\"y\""),
            "(hidden)"
        );
        assert_eq!(display_value("ssl.key.pem", "-----BEGIN"), "(hidden)");
        assert_eq!(display_value("client.id", "app"), "app");
        let e = find(SECURITY, "sasl.mechanism")
            .unwrap_or_else(|| panic!("mechanism"))
            .bad_value("x");
        assert!(e.to_string().contains("'x'"));
    }

    #[test]
    fn each_key_is_declared_once_per_table() {
        for table in ALL {
            let mut seen = std::collections::HashSet::new();
            for k in names(table) {
                assert!(seen.insert(k), "{k} twice in one table");
            }
        }
        // A librdkafka-only key is not also an alias, and maps to a key some table has.
        for (k, t) in LIBRDKAFKA {
            assert!(
                ALL.iter().all(|t| find(t, k).is_none()),
                "{k} is both an alias and librdkafka-only"
            );
            if let Translation::Scaled(to, _) = t {
                assert!(ALL.iter().any(|t| find(t, to).is_some()), "{k} -> {to}");
            }
        }
    }

    #[test]
    fn librdkafka_keys_translate() {
        let (k, v) = translate("queue.buffering.max.kbytes", "4")
            .and_then(|r| r.ok())
            .unwrap_or_else(|| panic!("queue.buffering.max.kbytes"));
        assert_eq!((k, v.as_ref()), ("buffer.memory", "4096"));
        let d = find(PRODUCER, "message.timeout.ms").unwrap_or_else(|| panic!("alias"));
        assert_eq!(d.key, "delivery.timeout.ms");
        assert!(matches!(
            translate("enable.partition.eof", "true"),
            Some(Err(_))
        ));
        assert!(translate("bootstrap.servers", "x").is_none());
    }

    /// `docs/configuration.md` is the table's; `REKAFKA_BLESS=1` rewrites it.
    #[test]
    fn the_configuration_reference_is_up_to_date() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let want = markdown();
        if std::env::var_os("REKAFKA_BLESS").is_some() {
            std::fs::write(path, &want).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        let have = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            have == want,
            "docs/configuration.md is out of date: run REKAFKA_BLESS=1 cargo test --lib config::"
        );
    }
}

//! Java-style properties (`bootstrap.servers`, `request.timeout.ms`, …): value parsers that
//! name the key in their errors, and the "unknown property; did you mean …?" error.
//!
//! Every config type that takes properties has `apply_property(&mut self, key, value) ->
//! Result<bool>` (`Ok(false)`: not one of its keys; `Err`: one of its keys with a bad value)
//! and a `PROPERTY_NAMES` list. [`ClientBuilder`](super::ClientBuilder) asks each of them in
//! turn; these helpers keep their parsing and error messages alike.
//!
//! ```
//! use std::time::Duration;
//! use rekafka::client::properties;
//!
//! assert_eq!(
//!     properties::parse_duration_ms("linger.ms", "5").unwrap(),
//!     Duration::from_millis(5)
//! );
//! let e = properties::parse_bool("enable.idempotence", "yes please").unwrap_err();
//! assert!(e.to_string().contains("enable.idempotence"));
//! let e = properties::unknown_property("bootstrap.server", ["bootstrap.servers", "client.id"]);
//! assert!(e.to_string().contains("did you mean 'bootstrap.servers'?"));
//! ```

use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};

/// The error for a known key with a value that does not parse: names the key, the value and the
/// expected form.
pub fn bad_value(key: &str, value: &str, expected: &str) -> Error {
    Error::config(format!(
        "invalid value '{value}' for property '{key}': expected {expected}"
    ))
}

/// A duration given in milliseconds (`request.timeout.ms=30000`). Negative numbers and
/// non-numbers are errors naming `key`.
pub fn parse_duration_ms(key: &str, value: &str) -> Result<Duration> {
    value
        .trim()
        .parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| bad_value(key, value, "a whole number of milliseconds (0 or more)"))
}

/// A boolean: `true` or `false` (any case).
pub fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(bad_value(key, value, "true or false")),
    }
}

/// An integer of type `T` (`batch.size=16384`).
pub fn parse_number<T: FromStr>(key: &str, value: &str) -> Result<T> {
    value
        .trim()
        .parse::<T>()
        .map_err(|_| bad_value(key, value, "a whole number in range"))
}

/// A comma-separated list (`bootstrap.servers=a:9092,b:9092`): items trimmed, empty items
/// dropped.
pub fn parse_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Parses the text of a Java `.properties` file (`client.properties`): `key=value` or
/// `key: value` per line, `#` and `!` comments, blank lines skipped, a trailing `\` continues
/// the value on the next line. Keys and values are trimmed. A line without `=` or `:` is an
/// [`ErrorKind::Config`](crate::ErrorKind::Config) error naming the line.
///
/// ```
/// let props = rekafka::client::properties::parse_properties(
///     "# cluster\nbootstrap.servers=a:9092,b:9092\nclient.id: billing\n",
/// )
/// .unwrap();
/// assert_eq!(props[1], ("client.id".to_owned(), "billing".to_owned()));
/// ```
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = match pending.take() {
            Some((first, mut acc)) => {
                acc.push_str(raw.trim_start());
                (first, acc)
            }
            None => {
                let t = raw.trim_start();
                if t.is_empty() || t.starts_with('#') || t.starts_with('!') {
                    continue;
                }
                (n, t.to_owned())
            }
        };
        if let Some(stripped) = line.1.strip_suffix('\\') {
            pending = Some((line.0, stripped.to_owned()));
            continue;
        }
        let (first, text) = line;
        let split = text.find(['=', ':']).ok_or_else(|| {
            Error::config(format!(
                "properties line {}: expected key=value, got '{text}'",
                first + 1
            ))
        })?;
        let key = text[..split].trim();
        if key.is_empty() {
            return Err(Error::config(format!(
                "properties line {}: empty key",
                first + 1
            )));
        }
        out.push((key.to_owned(), text[split + 1..].trim().to_owned()));
    }
    if let Some((first, text)) = pending {
        let split = text.find(['=', ':']).ok_or_else(|| {
            Error::config(format!(
                "properties line {}: expected key=value, got '{text}'",
                first + 1
            ))
        })?;
        out.push((
            text[..split].trim().to_owned(),
            text[split + 1..].trim().to_owned(),
        ));
    }
    Ok(out)
}

/// The error for a key no config knows, listing the known keys closest to it (by edit
/// distance) if any are close.
pub fn unknown_property<'a, I>(key: &str, known: I) -> Error
where
    I: IntoIterator<Item = &'a str>,
{
    let close = suggestions(key, known);
    let message = match close.as_slice() {
        [] => format!("unknown property '{key}'"),
        [one] => format!("unknown property '{key}'; did you mean '{one}'?"),
        many => {
            let list: Vec<String> = many.iter().map(|s| format!("'{s}'")).collect();
            format!(
                "unknown property '{key}'; did you mean one of {}?",
                list.join(", ")
            )
        }
    };
    Error::config(message)
}

/// The known keys closest to `key`: within an edit distance of a third of its length (at least
/// 2), best first, at most 3. A known key that contains `key` (or the other way round) counts
/// as close too.
pub fn suggestions<'a, I>(key: &str, known: I) -> Vec<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let key_l = key.to_ascii_lowercase();
    let limit = (key.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &'a str)> = known
        .into_iter()
        .filter_map(|k| {
            let d = edit_distance(&key_l, &k.to_ascii_lowercase());
            let contains = key_l.len() >= 4 && (k.contains(key_l.as_str()) || key_l.contains(k));
            (d <= limit || contains).then_some((d, k))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(3).map(|(_, k)| k).collect()
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("abc", "abc"), 0);
    }

    #[test]
    fn suggestions_rank_closest_first() {
        let known = [
            "bootstrap.servers",
            "client.id",
            "request.timeout.ms",
            "retry.backoff.ms",
        ];
        assert_eq!(
            suggestions("bootstrap.server", known),
            ["bootstrap.servers"]
        );
        assert_eq!(suggestions("client-id", known), ["client.id"]);
        assert_eq!(
            suggestions("request.timeout", known),
            ["request.timeout.ms"]
        );
        assert!(suggestions("zzz", known).is_empty());
        let e = unknown_property("zzz", known);
        assert_eq!(e.kind(), &ErrorKind::Config);
        assert_eq!(e.message_text(), Some("unknown property 'zzz'"));
    }

    #[test]
    fn properties_files() {
        let text = "# comment\n! also\n\n  bootstrap.servers = a:1,\\\n    b:2\nclient.id: x\nempty=\nurl=http://h:1/p\n";
        let p = parse_properties(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            p,
            [
                ("bootstrap.servers".to_owned(), "a:1,b:2".to_owned()),
                ("client.id".to_owned(), "x".to_owned()),
                ("empty".to_owned(), String::new()),
                ("url".to_owned(), "http://h:1/p".to_owned()),
            ]
        );
        let e = parse_properties("a=1\njunk\n").unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Config);
        assert!(e.to_string().contains("line 2"), "{e}");
        assert!(parse_properties("=v").is_err());
    }

    #[test]
    fn parsers_name_the_key() {
        assert_eq!(
            parse_duration_ms("a.ms", " 250 ").ok(),
            Some(Duration::from_millis(250))
        );
        for bad in ["-1", "1.5", "ten", ""] {
            let e = parse_duration_ms("a.ms", bad).unwrap_err();
            assert_eq!(e.kind(), &ErrorKind::Config);
            assert!(e.to_string().contains("'a.ms'"), "{e}");
            assert!(e.to_string().contains("milliseconds"), "{e}");
        }
        assert_eq!(parse_bool("b", "TRUE").ok(), Some(true));
        assert!(parse_bool("b", "1").is_err());
        assert_eq!(parse_number::<i32>("n", "42").ok(), Some(42));
        assert!(parse_number::<u8>("n", "300").is_err());
        assert_eq!(parse_list(" a:1 , ,b:2,"), ["a:1", "b:2"]);
    }
}

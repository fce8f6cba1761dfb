//! Java-style properties files and the "unknown property; did you mean …?" error.
//!
//! Every config type that takes properties has `apply_property(&mut self, key, value) ->
//! Result<bool>` (`Ok(false)`: not one of its keys; `Err`: one of its keys with a bad value)
//! and a `SETTINGS` table; values are read through the table ([`config`](crate::config)), so
//! every key's value is checked one way. [`ClientBuilder`](super::ClientBuilder) asks each
//! config type in turn.
//!
//! ```
//! use rekafka::client::properties;
//!
//! let e = properties::unknown_property("bootstrap.server", ["bootstrap.servers", "client.id"]);
//! assert!(e.to_string().contains("did you mean 'bootstrap.servers'?"));
//! ```

use crate::error::{Error, Result};

/// Parses the text of a Java `.properties` file (`client.properties`) with the
/// [`java-properties`](https://docs.rs/java-properties) crate, so Java's rules hold: `key=value`,
/// `key: value` or `key value`; `#` and `!` comments; a trailing `\` continues the value on
/// the next line; `\t`, `\n`, `\uXXXX` and `\=`-style escapes; a line with a key alone has an
/// empty value. Pairs come in file order (a later key wins when they are applied). The text is
/// read as UTF-8, as the CLI reads its `-F` file. A bad escape is an
/// [`ErrorKind::Config`](crate::ErrorKind::Config) error naming the line.
///
/// ```
/// let props = rekafka::client::properties::parse_properties(
///     "# cluster\nbootstrap.servers=a:9092,\\\n    b:9092\nclient.id: billing\n",
/// )
/// .unwrap();
/// assert_eq!(props[0], ("bootstrap.servers".to_owned(), "a:9092,b:9092".to_owned()));
/// assert_eq!(props[1], ("client.id".to_owned(), "billing".to_owned()));
/// ```
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    java_properties::PropertiesIter::new_with_encoding(text.as_bytes(), encoding_rs::UTF_8)
        .read_into(|k, v| out.push((k, v)))
        .map_err(|e| {
            let line = e
                .line_number()
                .map(|n| format!("line {n}: "))
                .unwrap_or_default();
            Error::config(format!("properties {line}{e}"))
        })?;
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
        // Java's rules: a key alone, a space as separator, escapes.
        let p = parse_properties("a=1\njunk\nk v w\ntab=x\\ty\nu=\\u00e9\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p[1], ("junk".to_owned(), String::new()));
        assert_eq!(p[2], ("k".to_owned(), "v w".to_owned()));
        assert_eq!(p[3], ("tab".to_owned(), "x\ty".to_owned()));
        assert_eq!(p[4], ("u".to_owned(), "\u{e9}".to_owned()));
        let e = parse_properties("a=1\nbad=\\uZZZZ\n").unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Config);
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}

//! How `consume` (and `dlt inspect`) print a record: the JSON line (the default), kcat's `-J`
//! envelope, kcat's `-f` format strings, and the bare value.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use rekafka::consumer::ConsumerRecord;
use rekafka::protocol::record::TimestampType;
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};

/// One token of a kcat format string.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// Bytes printed as they are.
    Literal(Vec<u8>),
    /// `%s`: the value.
    Value,
    /// `%S`: the value's length, -1 for null.
    ValueLen,
    /// `%R`: the value's length (-1 for null) as a big-endian 32-bit integer.
    ValueLenBinary,
    /// `%k`: the key.
    Key,
    /// `%K`: the key's length, -1 for null.
    KeyLen,
    /// `%t`: the topic.
    Topic,
    /// `%p`: the partition.
    Partition,
    /// `%o`: the offset.
    Offset,
    /// `%T`: the timestamp (milliseconds since the epoch).
    Timestamp,
    /// `%h`: the headers as `name=value` separated by commas.
    Headers,
}

/// A parsed kcat-style format string (`-f 'Topic %t [%p] at offset %o: key %k: %s\n'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    tokens: Vec<Token>,
    /// `-Z`: print null keys and values as `NULL` (else as nothing).
    null_as_text: bool,
}

impl Format {
    /// Parses `spec`: `%s %S %R %k %K %t %p %o %T %h %%` and the escapes `\n \r \t \\ \0`
    /// and `\xHH`. Anything else after `%` or `\` is an error.
    pub fn parse(spec: &str, null_as_text: bool) -> Result<Format, String> {
        let mut tokens = Vec::new();
        let mut lit = Vec::new();
        let mut chars = spec.chars().peekable();
        let flush = |lit: &mut Vec<u8>, tokens: &mut Vec<Token>| {
            if !lit.is_empty() {
                tokens.push(Token::Literal(std::mem::take(lit)));
            }
        };
        while let Some(c) = chars.next() {
            match c {
                '%' => {
                    let t = match chars.next() {
                        Some('s') => Token::Value,
                        Some('S') => Token::ValueLen,
                        Some('R') => Token::ValueLenBinary,
                        Some('k') => Token::Key,
                        Some('K') => Token::KeyLen,
                        Some('t') => Token::Topic,
                        Some('p') => Token::Partition,
                        Some('o') => Token::Offset,
                        Some('T') => Token::Timestamp,
                        Some('h') => Token::Headers,
                        Some('%') => {
                            lit.push(b'%');
                            continue;
                        }
                        Some(o) => return Err(format!("unsupported format token %{o}")),
                        None => return Err("the format ends with a lone %".to_owned()),
                    };
                    flush(&mut lit, &mut tokens);
                    tokens.push(t);
                }
                '\\' => match chars.next() {
                    Some('n') => lit.push(b'\n'),
                    Some('r') => lit.push(b'\r'),
                    Some('t') => lit.push(b'\t'),
                    Some('0') => lit.push(0),
                    Some('\\') => lit.push(b'\\'),
                    Some('x') => {
                        let hex: String = (0..2).filter_map(|_| chars.next()).collect();
                        let b = u8::from_str_radix(&hex, 16)
                            .map_err(|_| format!("bad escape \\x{hex} (expects two hex digits)"))?;
                        lit.push(b);
                    }
                    Some(o) => return Err(format!("unsupported escape \\{o}")),
                    None => return Err("the format ends with a lone \\".to_owned()),
                },
                c => {
                    let mut buf = [0u8; 4];
                    lit.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
        }
        flush(&mut lit, &mut tokens);
        Ok(Format {
            tokens,
            null_as_text,
        })
    }

    /// kcat's `-K SEP`: key, SEP, value, newline.
    pub fn key_value(sep: &str, null_as_text: bool) -> Format {
        Format {
            tokens: vec![
                Token::Key,
                Token::Literal(sep.as_bytes().to_vec()),
                Token::Value,
                Token::Literal(b"\n".to_vec()),
            ],
            null_as_text,
        }
    }

    /// Appends `r` as this format says to `out`.
    pub fn write(&self, r: &ConsumerRecord, out: &mut Vec<u8>) {
        let bytes = |out: &mut Vec<u8>, b: Option<&[u8]>| match b {
            Some(b) => out.extend_from_slice(b),
            None if self.null_as_text => out.extend_from_slice(b"NULL"),
            None => {}
        };
        let len = |b: Option<&[u8]>| b.map_or(-1, |b| b.len() as i64);
        for t in &self.tokens {
            match t {
                Token::Literal(l) => out.extend_from_slice(l),
                Token::Value => bytes(out, r.value.as_deref()),
                Token::Key => bytes(out, r.key.as_deref()),
                Token::ValueLen => {
                    out.extend_from_slice(len(r.value.as_deref()).to_string().as_bytes())
                }
                Token::KeyLen => {
                    out.extend_from_slice(len(r.key.as_deref()).to_string().as_bytes())
                }
                Token::ValueLenBinary => {
                    let n = i32::try_from(len(r.value.as_deref())).unwrap_or(i32::MAX);
                    out.extend_from_slice(&n.to_be_bytes());
                }
                Token::Topic => out.extend_from_slice(r.topic.as_bytes()),
                Token::Partition => out.extend_from_slice(r.partition.to_string().as_bytes()),
                Token::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
                Token::Timestamp => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
                Token::Headers => {
                    for (i, h) in r.headers.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        out.extend_from_slice(h.key().as_bytes());
                        out.push(b'=');
                        bytes(out, h.value());
                    }
                }
            }
        }
    }
}

/// The JSON line of a record: `topic`, `partition`, `offset`, `timestamp`, `key`, `value`
/// (UTF-8 strings; `key_b64`/`value_b64` instead when not UTF-8; null when absent) and
/// `headers` as `[[name, value-or-null], ...]` in wire order (a non-UTF-8 header value is
/// `{"b64": "..."}`).
pub struct JsonLine<'a>(pub &'a ConsumerRecord);

impl JsonLine<'_> {
    /// The record's entries, for a map that adds more after them.
    pub fn entries<M: SerializeMap>(&self, m: &mut M) -> Result<(), M::Error> {
        let r = self.0;
        m.serialize_entry("topic", &*r.topic)?;
        m.serialize_entry("partition", &r.partition)?;
        m.serialize_entry("offset", &r.offset)?;
        m.serialize_entry("timestamp", &r.timestamp)?;
        bytes_entry(m, "key", r.key.as_deref())?;
        bytes_entry(m, "value", r.value.as_deref())?;
        m.serialize_entry("headers", &HeaderPairs(r))
    }
}

impl Serialize for JsonLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        self.entries(&mut m)?;
        m.end()
    }
}

/// `name` with the bytes as a UTF-8 string, or `name_b64` with them in base64.
fn bytes_entry<M: SerializeMap>(m: &mut M, name: &str, b: Option<&[u8]>) -> Result<(), M::Error> {
    match b.map(std::str::from_utf8) {
        None => m.serialize_entry(name, &()),
        Some(Ok(t)) => m.serialize_entry(name, t),
        Some(Err(_)) => {
            m.serialize_entry(&format!("{name}_b64"), &B64.encode(b.unwrap_or_default()))
        }
    }
}

/// A header value: a string, `{"b64": ...}` or null.
struct HeaderValue<'a>(Option<&'a [u8]>);

impl Serialize for HeaderValue<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.map(std::str::from_utf8) {
            None => s.serialize_none(),
            Some(Ok(t)) => s.serialize_str(t),
            Some(Err(_)) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("b64", &B64.encode(self.0.unwrap_or_default()))?;
                m.end()
            }
        }
    }
}

/// The headers as `[[name, value], ...]`.
struct HeaderPairs<'a>(&'a ConsumerRecord);

impl Serialize for HeaderPairs<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(None)?;
        for h in self.0.headers.iter() {
            seq.serialize_element(&(h.key(), HeaderValue(h.value())))?;
        }
        seq.end()
    }
}

/// The JSON line of a share group's record (`consume --share-group`): [`JsonLine`]'s fields
/// plus `delivery_count`.
pub struct ShareJsonLine<'a>(pub &'a rekafka::share::ShareRecord);

impl Serialize for ShareJsonLine<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("topic", &*r.topic)?;
        m.serialize_entry("partition", &r.partition)?;
        m.serialize_entry("offset", &r.offset)?;
        m.serialize_entry("timestamp", &r.timestamp)?;
        bytes_entry(&mut m, "key", r.key.as_deref())?;
        bytes_entry(&mut m, "value", r.value.as_deref())?;
        let owned: Vec<_> = r.headers.iter().collect();
        let headers: Vec<(&str, HeaderValue<'_>)> = owned
            .iter()
            .map(|h| (h.key(), HeaderValue(h.value())))
            .collect();
        m.serialize_entry("headers", &headers)?;
        m.serialize_entry("delivery_count", &r.delivery_count)?;
        m.end()
    }
}

/// kcat's `-J` envelope: `topic`, `partition`, `offset`, `tstype`, `ts`, `headers` (a flat
/// `[name, value, ...]` list, only when there are headers), `key`, `payload`. Bytes that are
/// not UTF-8 are given as `key_b64`/`payload_b64` instead.
pub struct Envelope<'a>(pub &'a ConsumerRecord);

impl Serialize for Envelope<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("topic", &*r.topic)?;
        m.serialize_entry("partition", &r.partition)?;
        m.serialize_entry("offset", &r.offset)?;
        let tstype = match r.timestamp_type {
            TimestampType::CreateTime => "create",
            TimestampType::LogAppendTime => "logappend",
            _ => "unknown",
        };
        m.serialize_entry("tstype", tstype)?;
        m.serialize_entry("ts", &r.timestamp)?;
        if !r.headers.is_empty() {
            let flat: Vec<serde_json::Value> = r
                .headers
                .iter()
                .flat_map(|h| {
                    let v = serde_json::to_value(HeaderValue(h.value()))
                        .unwrap_or(serde_json::Value::Null);
                    [serde_json::Value::from(h.key()), v]
                })
                .collect();
            m.serialize_entry("headers", &flat)?;
        }
        bytes_entry(&mut m, "key", r.key.as_deref())?;
        bytes_entry(&mut m, "payload", r.value.as_deref())?;
        m.end()
    }
}

/// `value` as one JSON line (no newline); serialization of these types cannot fail, but if it
/// did the error is written as a JSON string rather than lost.
pub fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rekafka::consumer::{IsolationLevel, visible_records};
    use rekafka::protocol::record::BatchBuilder;

    fn record(key: Option<&'static [u8]>, value: Option<&'static [u8]>) -> ConsumerRecord {
        let mut b = BatchBuilder::new().with_base_offset(7);
        b.append(
            1000,
            key,
            value,
            &[("h1", Some(b"a")), ("h2", None), ("h1", Some(&[0xfe]))],
        )
        .unwrap();
        let (mut recs, _) =
            visible_records(&b.build().unwrap(), 7, IsolationLevel::ReadUncommitted, &[]).unwrap();
        let mut r = recs.remove(0);
        r.partition = 2;
        r
    }

    #[test]
    fn json_lines_keep_the_documented_field_order() {
        let r = record(None, Some(&[0xff]));
        assert_eq!(
            to_json(&JsonLine(&r)),
            r#"{"topic":"t","partition":2,"offset":7,"timestamp":1000,"key":null,"value_b64":"/w==","headers":[["h1","a"],["h2",null],["h1",{"b64":"/g=="}]]}"#
        );
        let r = record(Some(b"k\"1"), None);
        assert!(
            to_json(&JsonLine(&r)).contains(r#""key":"k\"1","value":null"#),
            "{}",
            to_json(&JsonLine(&r))
        );
    }

    #[test]
    fn kcat_envelope() {
        let r = record(Some(b"k"), Some(b"v"));
        assert_eq!(
            to_json(&Envelope(&r)),
            r#"{"topic":"t","partition":2,"offset":7,"tstype":"create","ts":1000,"headers":["h1","a","h2",null,"h1",{"b64":"/g=="}],"key":"k","payload":"v"}"#
        );
    }

    #[test]
    fn kcat_format_strings() {
        let r = record(Some(b"k"), Some(b"hello"));
        let f = Format::parse(
            "Topic %t [%p] at offset %o (%T): key %k (%K): %s (%S) %h 100%%\\n",
            false,
        )
        .unwrap();
        let mut out = Vec::new();
        f.write(&r, &mut out);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "Topic t [2] at offset 7 (1000): key k (1): hello (5) h1=a,h2=,h1=\u{fffd} 100%\n"
        );
        let r = record(None, None);
        let mut out = Vec::new();
        Format::parse("%k|%s|%K|%S\\t%R\\x41", true)
            .unwrap()
            .write(&r, &mut out);
        assert_eq!(out, b"NULL|NULL|-1|-1\t\xff\xff\xff\xffA");
        assert!(Format::parse("%q", false).is_err());
        assert!(Format::parse("50%", false).is_err());
        assert!(Format::parse("\\xZZ", false).is_err());
    }
}

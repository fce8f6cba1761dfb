//! The Spring conformance comparator: reads the observation logs the two runners write (the
//! Spring runner in `protocol-tests/spring/runner`, rekafka's in `src/bin/spring-runner.rs`),
//! applies the normalisations of the intended differences listed in
//! `protocol-tests/spring/allowed-differences.json` (each documented in
//! `docs/spring-differences.md`), and reports every remaining difference.
//!
//! A log is a list of JSON objects, one per line (see `protocol-tests/spring/README.md`). The
//! comparator turns each log into a [`View`]: per partition, the ordered events the container
//! produced for it (handler invocations with their delivery attempt, retry-listener callbacks,
//! recoverer calls, listener-level error handler calls); the batch-level events in their own
//! stream; the committed offsets; the dead letters and the output, per partition, in order.
//! Cross-partition interleaving is not compared (it depends on fetch timing in both clients).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// Spring's `ListenerExecutionFailedException`, which wraps every listener failure.
pub const LEFE: &str = "org.springframework.kafka.listener.ListenerExecutionFailedException";

/// One intended difference of the allow-list.
#[derive(Debug, Clone)]
pub struct Allowed {
    /// Its id (referenced from `docs/spring-differences.md`).
    pub id: String,
    /// The normalisation it allows (one of [`RULES`]).
    pub rule: String,
    /// The scenarios it applies to (`*` for all).
    pub scenarios: Vec<String>,
}

/// The normalisation rules the comparator implements.
pub const RULES: &[&str] = &[
    // documented only: not observable in the compared log
    "none",
    "recovered-callback-deferred",
    "commit-metadata-retry-state",
    "recoverer-failure-cap",
    "dlt-exception-class-analogue",
    "dlt-exception-message-no-wrapper",
    "dlt-stacktrace-text",
    "dlt-deserialization-message",
    "listener-seek-drops-rest-of-poll",
    "batch-deserialization-out-of-band",
    "dlt-batch-listener-failed-unwrapped",
    "transaction-per-poll",
    "republish-copies-without-provenance",
    "recovery-failure-no-destination",
];

impl Allowed {
    fn applies(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == "*" || s == scenario)
    }
}

/// Reads the allow-list.
pub fn load_allowed(path: &Path) -> Result<Vec<Allowed>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for d in v["differences"]
        .as_array()
        .ok_or("no \"differences\" array")?
    {
        let a = Allowed {
            id: d["id"]
                .as_str()
                .ok_or("a difference without id")?
                .to_owned(),
            rule: d["rule"]
                .as_str()
                .ok_or("a difference without rule")?
                .to_owned(),
            scenarios: d["scenarios"]
                .as_array()
                .map(|s| {
                    s.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        };
        if !RULES.contains(&a.rule.as_str()) {
            return Err(format!("{}: unknown rule {}", a.id, a.rule));
        }
        out.push(a);
    }
    Ok(out)
}

/// Reads a JSON-lines log.
pub fn read_log(path: &Path) -> Result<Vec<Value>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}: {l}", path.display())))
        .collect()
}

/// Which side a log comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Spring for Apache Kafka.
    Spring,
    /// rekafka.
    Rekafka,
}

/// A log as compared: named sections, each an ordered list of lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct View {
    /// Section name → lines.
    pub sections: BTreeMap<String, Vec<String>>,
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn event_line(e: &Value) -> Option<String> {
    let o = s(&e["o"]);
    Some(match e["type"].as_str()? {
        "invoke" => format!(
            "invoke o={o} attempt={} value={}",
            s(&e["attempt"]),
            s(&e["value"])
        ),
        "failed" => format!(
            "failed o={o} attempt={} error={} message={}",
            s(&e["attempt"]),
            s(&e["error"]),
            s(&e["message"])
        ),
        "recoverer" => format!("recoverer o={o} error={}", s(&e["error"])),
        "share_invoke" => format!(
            "o={o} attempt={} invoke value={}",
            s(&e["attempt"]),
            s(&e["value"])
        ),
        "share_ack" => format!("o={o} attempt={} ack={}", s(&e["attempt"]), s(&e["ack"])),
        "recovered" => format!("recovered o={o}"),
        "recovery_failed" => format!("recovery_failed o={o} failure={}", s(&e["failure"])),
        "listener_error_handler" => {
            format!("listener_error_handler o={o} error={}", s(&e["error"]))
        }
        "other" => format!("other error={}", s(&e["error"])),
        "halt" => format!("halt o={o} error={}", s(&e["error"])),
        "batch" => format!("batch size={}", s(&e["size"])),
        "failed_batch" => format!(
            "failed_batch records={} attempt={} error={}",
            s(&e["records"]),
            s(&e["attempt"]),
            s(&e["error"])
        ),
        "recovered_batch" => format!("recovered_batch records={}", s(&e["records"])),
        "recovery_failed_batch" => format!(
            "recovery_failed_batch records={} failure={}",
            s(&e["records"]),
            s(&e["failure"])
        ),
        _ => return None,
    })
}

fn last_segment(class: &str) -> &str {
    class.rsplit(['.', '$', ':']).next().unwrap_or(class)
}

/// The header value as the log has it: text, or `hex:..`.
fn header_value(h: &Value) -> String {
    match (&h["value"], &h["value_hex"]) {
        (Value::String(t), _) => t.clone(),
        (_, Value::String(x)) => format!("hex:{x}"),
        _ => "null".into(),
    }
}

/// Java's `new BigInteger(bytes).longValue()` of 1 to 8 hex-encoded bytes.
fn big_integer(hex: &str) -> Option<i64> {
    if hex.is_empty() || hex.len() > 16 || !hex.len().is_multiple_of(2) {
        return None;
    }
    let v = u64::from_str_radix(hex, 16).ok()?;
    let bits = hex.len() as u32 * 4;
    // sign-extend from the top bit of the first byte
    Some(if bits < 64 && ((v >> (bits - 1)) & 1) == 1 {
        (v | (u64::MAX << bits)) as i64
    } else {
        v as i64
    })
}

/// The retry-topic headers (Spring's `DeadLetterPublishingRecovererFactory`), decoded so that
/// the comparison reads them: `retry_topic-attempts` and `kafka_original-partition` (4-byte
/// `int`), `kafka_original-offset` and `-timestamp` (8-byte `long`),
/// `retry_topic-original-timestamp` (`BigInteger` bytes). A value of another length stays hex,
/// so a wrong encoding still differs. `retry_topic-backoff-timestamp` (the due time: the wall
/// clock of the forward, in every run another) is compared as `<due time>` when it decodes.
fn decode_retry_header(name: &str, value: &str) -> Option<String> {
    let hex = value.strip_prefix("hex:")?;
    let fixed = |len: usize| (hex.len() == 2 * len).then(|| big_integer(hex)).flatten();
    match name {
        "retry_topic-attempts" | "kafka_original-partition" => fixed(4).map(|v| format!("int {v}")),
        "kafka_original-offset" | "kafka_original-timestamp" => {
            fixed(8).map(|v| format!("long {v}"))
        }
        "retry_topic-original-timestamp" => big_integer(hex).map(|v| format!("BigInteger {v}")),
        "retry_topic-backoff-timestamp" => big_integer(hex).map(|_| "<due time>".to_owned()),
        _ => None,
    }
}

/// Normalises one dead letter's headers under the active rules.
fn dead_letter_headers(side: Side, headers: &[Value], rules: &BTreeSet<&str>) -> Vec<String> {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|h| {
            let (name, value) = (s(&h["name"]), header_value(h));
            let value = decode_retry_header(&name, &value).unwrap_or(value);
            (name, value)
        })
        .collect();
    let get = |hs: &[(String, String)], n: &str| {
        hs.iter()
            .rev()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    if side == Side::Spring && rules.contains("dlt-batch-listener-failed-unwrapped") {
        // Spring's dead letter names the BatchListenerFailedException; rekafka's names its
        // cause: take the cause from Spring's stack trace ("Caused by: class: message").
        let blfe = "org.springframework.kafka.listener.BatchListenerFailedException";
        if get(&hs, "kafka_dlt-exception-cause-fqcn").as_deref() == Some(blfe) {
            let trace = get(&hs, "kafka_dlt-exception-stacktrace").unwrap_or_default();
            let causes: Vec<&str> = trace
                .lines()
                .filter_map(|l| l.strip_prefix("Caused by: "))
                .collect();
            let after = causes
                .iter()
                .position(|c| c.starts_with(blfe))
                .and_then(|i| causes.get(i + 1));
            if let Some((class, message)) = after.and_then(|c| c.split_once(": ")) {
                for (k, v) in hs.iter_mut() {
                    if k == "kafka_dlt-exception-cause-fqcn" {
                        *v = class.to_owned();
                    } else if k == "kafka_dlt-exception-message" {
                        *v = format!("Listener failed; {message}");
                    }
                }
            }
        }
    }
    let is_deser = get(&hs, "kafka_dlt-exception-fqcn")
        .or_else(|| get(&hs, "kafka_dlt-key-exception-fqcn"))
        .is_some_and(|c| c.contains("Deserialization"));
    if side == Side::Spring && rules.contains("republish-copies-without-provenance") {
        // Spring's stand-in for republishing (a dead-letter publisher routed back to the
        // source) stamped provenance on every copy: keep each original-* header's last one.
        let mut seen = BTreeSet::new();
        let mut kept: Vec<(String, String)> = Vec::new();
        for (k, v) in hs.into_iter().rev() {
            if k.starts_with("kafka_dlt-original-") && !seen.insert(k.clone()) {
                continue;
            }
            kept.push((k, v));
        }
        kept.reverse();
        hs = kept;
    }
    if rules.contains("republish-copies-without-provenance")
        && hs.iter().any(|(k, _)| k == "rekafka_republish-count")
    {
        // A republished copy's timestamp is the time it was republished (run to run).
        for (k, v) in hs.iter_mut() {
            if k == "kafka_dlt-original-timestamp" {
                *v = "<time of republishing>".into();
            }
        }
    }
    if rules.contains("dlt-exception-class-analogue") {
        // Spring names its wrapper (LEFE) and its unwrapped exception; rekafka has no wrapper
        // and names the handler's error: compare the handler's error by its last path segment.
        // The dead-letter publisher's `kafka_dlt-exception-*` headers, or the retry-topic
        // forwarder's `kafka_exception-*` (Spring's `DeadLetterPublishingRecovererFactory`).
        let is_cause =
            |k: &str| k == "kafka_dlt-exception-cause-fqcn" || k == "kafka_exception-cause-fqcn";
        let spring_handler_class = get(&hs, "kafka_dlt-exception-cause-fqcn")
            .or_else(|| get(&hs, "kafka_exception-cause-fqcn"));
        for (k, v) in hs.iter_mut() {
            if k.ends_with("exception-fqcn") && !is_cause(k) {
                if let (Side::Spring, true, Some(c)) = (side, v == LEFE, &spring_handler_class) {
                    *v = c.clone();
                }
                let mut last = last_segment(v).to_owned();
                if last == "DeserializationException" {
                    last = "DeserializationFailed".into();
                }
                // Java's bare unchecked exception and Rust's bare error, a boxed string.
                if side == Side::Spring && v == "java.lang.RuntimeException" {
                    last = "String".into();
                }
                *v = format!("class:{last}");
            } else if is_cause(k) {
                *v = "<cause class: see spring-differences.md#dlt-exception-class-analogue>".into();
            }
        }
    }
    if rules.contains("dlt-exception-message-no-wrapper") && !is_deser {
        for (k, v) in hs.iter_mut() {
            if k.ends_with("exception-message") {
                let stripped = match side {
                    Side::Spring => v.strip_prefix("Listener failed; ").unwrap_or(v),
                    Side::Rekafka => v.as_str(),
                };
                *v = stripped.split("; ").next().unwrap_or_default().to_owned();
            }
        }
    }
    if rules.contains("dlt-deserialization-message") && is_deser {
        for (k, v) in hs.iter_mut() {
            if k.ends_with("exception-message") {
                let ok = match side {
                    Side::Spring => v == "failed to deserialize",
                    // the deserializer's own words, and nothing claiming a protocol problem
                    Side::Rekafka => {
                        v.contains("not valid UTF-8") && !v.contains("corrupt protocol data")
                    }
                };
                if ok {
                    *v = "<deserialization failure message>".into();
                }
            }
        }
    }
    if rules.contains("dlt-stacktrace-text") {
        for (k, v) in hs.iter_mut() {
            if k.ends_with("exception-stacktrace") && !v.is_empty() {
                *v = "<stack trace>".into();
            }
        }
    }
    hs.into_iter()
        .map(|(k, v)| format!("  {k} = {v}"))
        .collect()
}

fn record_line(side: Side, e: &Value, rules: &BTreeSet<&str>, dead_letter: bool) -> String {
    let field = |f: &str| match (&e[f], &e[format!("{f}_hex")]) {
        (Value::String(t), _) => t.clone(),
        (_, Value::String(x)) => format!("hex:{x}"),
        _ => "null".into(),
    };
    let mut line = format!("key={} value={}", field("key"), field("value"));
    let headers = e["headers"].as_array().cloned().unwrap_or_default();
    let hs = if dead_letter {
        dead_letter_headers(side, &headers, rules)
    } else {
        headers
            .iter()
            .map(|h| format!("  {} = {}", s(&h["name"]), header_value(h)))
            .collect()
    };
    for h in hs {
        line.push('\n');
        line.push_str(&h);
    }
    line
}

/// Builds the compared view of a log.
pub fn view(side: Side, log: &[Value], rules: &BTreeSet<&str>) -> View {
    let mut v = View::default();
    // The container's events are not compared where the allowed difference says only the
    // outcome (commits, dead letters, output) can be.
    let outcome_only = rules.contains("listener-seek-drops-rest-of-poll")
        || rules.contains("batch-deserialization-out-of-band");
    let mut push = |section: String, line: String| {
        v.sections.entry(section).or_default().push(line);
    };
    for e in log {
        let ty = e["type"].as_str().unwrap_or_default();
        let tp = format!("{}-{}", s(&e["topic"]), s(&e["p"]));
        match ty {
            "committed" => {
                let mut md = s(&e["metadata"]);
                if rules.contains("commit-metadata-retry-state")
                    && side == Side::Rekafka
                    && md.starts_with("rekafka.retry/")
                {
                    // Spring commits no metadata.
                    md = String::new();
                }
                push(
                    format!("committed {tp}"),
                    format!("offset={} metadata={md}", s(&e["offset"])),
                );
            }
            "topic" => push(
                "topics".into(),
                format!("{} partitions={}", s(&e["topic"]), s(&e["partitions"])),
            ),
            "dead_letter" => push(
                format!("dead letters {tp}"),
                record_line(side, e, rules, true),
            ),
            "output" => push(format!("output {tp}"), record_line(side, e, rules, false)),
            "timeout" | "runner_error" | "stop_condition" => push(
                "end".into(),
                format!("{ty} {}", s(&e["error"]).replace("null", "")),
            ),
            _ if outcome_only => {}
            "share_invoke" | "share_ack" => {
                if let Some(l) = event_line(e) {
                    push(format!("share {tp}"), l);
                }
            }
            "batch" | "failed_batch" | "recovered_batch" | "recovery_failed_batch" => {
                if let Some(l) = event_line(e) {
                    push("events batch".into(), l);
                }
            }
            "recovery_failed"
                if side == Side::Spring
                    && rules.contains("recovery-failure-no-destination")
                    && e["failure"] == "Other:IllegalArgumentException" =>
            {
                // Spring's publisher throws IllegalArgumentException when the resolver gives no
                // destination; rekafka's fails with DeadLetterError::NoDestination.
                let mut e = e.clone();
                e["failure"] = "Other:NoDestination".into();
                if let Some(l) = event_line(&e) {
                    push(format!("events {tp}"), l);
                }
            }
            _ => {
                if let Some(l) = event_line(e) {
                    if ty == "recovered" && rules.contains("recovered-callback-deferred") {
                        push(format!("recovered callbacks {tp}"), l);
                    } else {
                        push(format!("events {tp}"), l);
                    }
                }
            }
        }
    }
    // A dead-letter partition's records from different source partitions come in processing
    // order, which interleaves partitions differently run to run: order by source partition
    // (stable, so each source partition's own order is kept).
    for (name, lines) in v.sections.iter_mut() {
        if name.starts_with("dead letters ") {
            let header = |l: &String, name: &str| {
                l.lines()
                    .rev()
                    .find_map(|h| h.trim().strip_prefix(name)?.strip_prefix(" = "))
                    .map(str::to_owned)
            };
            // A retry-topic DLT's partition gets dead letters from several containers (the
            // main topic's, each retry topic's), whose interleaving is timing: order those by
            // their first failure's partition and offset too.
            let offset = |l: &String| {
                header(l, "kafka_original-offset")
                    .and_then(|o| o.strip_prefix("long ")?.parse::<i64>().ok())
            };
            lines.sort_by_key(|l| {
                (
                    header(l, "kafka_dlt-original-partition"),
                    header(l, "kafka_original-partition"),
                    offset(l),
                )
            });
        }
    }
    // A share group's deliveries interleave with fetch timing (a released record comes back in
    // a later fetch, after records that followed it): compare each record's deliveries and
    // acknowledgements, by offset, delivery count, then the invocation before its ack.
    for (name, lines) in v.sections.iter_mut() {
        if name.starts_with("share ") {
            let key = |l: &String| {
                let num = |p: &str| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix(p))
                        .and_then(|n| n.parse::<i64>().ok())
                        .unwrap_or(-1)
                };
                (num("o="), num("attempt="), l.contains(" ack="))
            };
            lines.sort_by_key(key);
        }
    }
    if rules.contains("transaction-per-poll") {
        // rekafka redoes the whole poll's transaction, so records that never fail are handled
        // again: compare only the deliveries of records that fail (the output topic, read
        // read_committed, shows that every record's output is there exactly once).
        for (name, lines) in v.sections.iter_mut() {
            if !name.starts_with("events ") || name == "events batch" {
                continue;
            }
            let offset = |l: &str| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("o="))
                    .map(str::to_owned)
            };
            let failing: BTreeSet<String> = lines
                .iter()
                .filter(|l| l.starts_with("failed ") || l.starts_with("recoverer "))
                .filter_map(|l| offset(l))
                .collect();
            lines.retain(|l| {
                !l.starts_with("invoke ") || offset(l).is_some_and(|o| failing.contains(&o))
            });
        }
    }
    v
}

/// One difference between the two views.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// The section (`events in-0`, `dead letters in-dlt-0`, …).
    pub section: String,
    /// What differs, readable.
    pub detail: String,
}

fn excerpt(lines: &[String], at: usize) -> String {
    let from = at.saturating_sub(2);
    let to = (at + 3).min(lines.len());
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate().take(to).skip(from) {
        let mark = if i == at { ">" } else { " " };
        for (j, part) in l.lines().enumerate() {
            let _ = writeln!(
                out,
                "      {mark}{} {part}",
                if j == 0 {
                    format!("{i:>3}")
                } else {
                    "   ".into()
                }
            );
        }
    }
    if at >= lines.len() {
        let _ = writeln!(out, "      >{at:>3} (end: {} lines)", lines.len());
    }
    out
}

/// Compares two views (after normalisation); `prefix_ok` sections may be a prefix of Spring's
/// (the recoverer-failure cap).
pub fn compare(spring: &View, rekafka: &View, prefix_ok: bool) -> Vec<Difference> {
    let mut out = Vec::new();
    let names: BTreeSet<&String> = spring
        .sections
        .keys()
        .chain(rekafka.sections.keys())
        .collect();
    let empty = Vec::new();
    for name in names {
        let a = spring.sections.get(name).unwrap_or(&empty);
        let b = rekafka.sections.get(name).unwrap_or(&empty);
        let b_is_prefix = b.len() <= a.len() && a[..b.len()] == b[..];
        if a == b || (prefix_ok && name.starts_with("events") && b_is_prefix && !b.is_empty()) {
            continue;
        }
        let at = a
            .iter()
            .zip(b)
            .position(|(x, y)| x != y)
            .unwrap_or(a.len().min(b.len()));
        out.push(Difference {
            section: name.clone(),
            detail: format!(
                "first difference at line {at} (Spring has {} lines, rekafka {})\n    Spring:\n{}    rekafka:\n{}",
                a.len(),
                b.len(),
                excerpt(a, at),
                excerpt(b, at)
            ),
        });
    }
    out
}

/// Compares one scenario's two logs under the allow-list; returns the differences left and
/// the ids of the allowed differences that changed something.
pub fn compare_scenario(
    scenario: &str,
    spring_log: &[Value],
    rekafka_log: &[Value],
    allowed: &[Allowed],
) -> (Vec<Difference>, Vec<String>) {
    let active: Vec<&Allowed> = allowed.iter().filter(|a| a.applies(scenario)).collect();
    let none = BTreeSet::new();
    let raw = compare(
        &view(Side::Spring, spring_log, &none),
        &view(Side::Rekafka, rekafka_log, &none),
        false,
    );
    let mut rules: BTreeSet<&str> = active.iter().map(|a| a.rule.as_str()).collect();
    let diffs = compare(
        &view(Side::Spring, spring_log, &rules),
        &view(Side::Rekafka, rekafka_log, &rules),
        rules.contains("recoverer-failure-cap"),
    );
    // Which allowances mattered: drop each in turn and see whether more differences appear.
    let mut used = Vec::new();
    if raw.len() != diffs.len() || raw != diffs {
        for a in &active {
            rules.remove(a.rule.as_str());
            let without = compare(
                &view(Side::Spring, spring_log, &rules),
                &view(Side::Rekafka, rekafka_log, &rules),
                rules.contains("recoverer-failure-cap"),
            );
            if without != diffs {
                used.push(a.id.clone());
            }
            rules.insert(a.rule.as_str());
        }
    }
    (diffs, used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn allowed(rule: &str) -> Vec<Allowed> {
        vec![Allowed {
            id: format!("test-{rule}"),
            rule: rule.into(),
            scenarios: vec!["*".into()],
        }]
    }

    fn inv(p: i32, o: i64, a: u32) -> Value {
        json!({"type":"invoke","topic":"in","p":p,"o":o,"attempt":a,"value":format!("v{o}")})
    }

    fn share(ty: &str, o: i64, a: u32, extra: (&str, &str)) -> Value {
        let mut e = json!({"type":ty,"topic":"in","p":0,"o":o,"attempt":a});
        e[extra.0] = json!(extra.1);
        e
    }

    #[test]
    fn share_deliveries_are_compared_per_record_not_in_fetch_order() {
        let inv = |o, a| share("share_invoke", o, a, ("value", "v"));
        let ack = |o, a, t| share("share_ack", o, a, ("ack", t));
        // Spring logs a poll's acknowledgements after the poll's invocations; rekafka each
        // after its own record: the same deliveries and outcomes.
        let spring = vec![
            inv(0, 1),
            inv(1, 1),
            ack(0, 1, "accept"),
            ack(1, 1, "release"),
            inv(1, 2),
            ack(1, 2, "accept"),
        ];
        let rekafka = vec![
            inv(0, 1),
            ack(0, 1, "accept"),
            inv(1, 1),
            ack(1, 1, "release"),
            inv(1, 2),
            ack(1, 2, "accept"),
        ];
        assert!(compare_scenario("x", &spring, &rekafka, &[]).0.is_empty());
        // A different acknowledgement is a difference.
        let mut rejected = rekafka.clone();
        rejected[3] = ack(1, 1, "reject");
        let (d, _) = compare_scenario("x", &spring, &rejected, &[]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].section, "share in-0");
        // So is a delivery more.
        let mut more = rekafka.clone();
        more.push(inv(1, 3));
        assert_eq!(compare_scenario("x", &spring, &more, &[]).0.len(), 1);
    }

    #[test]
    fn identical_logs_have_no_differences() {
        let log = vec![inv(0, 0, 1), inv(1, 0, 1)];
        let (d, used) = compare_scenario("x", &log, &log, &[]);
        assert!(d.is_empty());
        assert!(used.is_empty());
    }

    #[test]
    fn per_partition_order_is_compared_but_not_interleaving() {
        let a = vec![inv(0, 0, 1), inv(1, 0, 1), inv(0, 1, 1)];
        let b = vec![inv(1, 0, 1), inv(0, 0, 1), inv(0, 1, 1)];
        assert!(compare_scenario("x", &a, &b, &[]).0.is_empty());
        let c = vec![inv(0, 1, 1), inv(0, 0, 1), inv(1, 0, 1)];
        let (d, _) = compare_scenario("x", &a, &c, &[]);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].section, "events in-0");
    }

    #[test]
    fn a_different_attempt_count_is_a_difference() {
        let a = vec![inv(0, 0, 1), inv(0, 0, 2)];
        let b = vec![inv(0, 0, 1), inv(0, 0, 2), inv(0, 0, 3)];
        assert_eq!(compare_scenario("x", &a, &b, &[]).0.len(), 1);
        // the cap rule accepts a prefix only
        let rule = allowed("recoverer-failure-cap");
        assert!(compare_scenario("x", &b, &a, &rule).0.is_empty());
        assert_eq!(compare_scenario("x", &a, &b, &rule).0.len(), 1);
    }

    #[test]
    fn deferred_recovered_callbacks_only_under_their_rule() {
        let rec = json!({"type":"recovered","topic":"in","p":0,"o":0});
        let a = vec![inv(0, 0, 1), rec.clone(), inv(0, 1, 1)];
        let b = vec![inv(0, 0, 1), inv(0, 1, 1), rec.clone()];
        assert_eq!(compare_scenario("x", &a, &b, &[]).0.len(), 1);
        let (d, used) = compare_scenario("x", &a, &b, &allowed("recovered-callback-deferred"));
        assert!(d.is_empty());
        assert_eq!(used, ["test-recovered-callback-deferred"]);
        // a missing callback is still a difference
        let c = vec![inv(0, 0, 1), inv(0, 1, 1)];
        assert_eq!(
            compare_scenario("x", &a, &c, &allowed("recovered-callback-deferred"))
                .0
                .len(),
            1
        );
    }

    fn dl(headers: Value) -> Value {
        json!({"type":"dead_letter","topic":"in-dlt","p":0,"key":"k","value":"v","headers":headers})
    }

    #[test]
    fn exception_class_analogue_compares_the_handler_error() {
        let spring = vec![dl(json!([
            {"name":"kafka_dlt-exception-fqcn","value":LEFE},
            {"name":"kafka_dlt-exception-cause-fqcn","value":"rekafka.spring.Errors$Transient"},
            {"name":"kafka_dlt-exception-message","value":"Listener failed; boom"}
        ]))];
        let ours = vec![dl(json!([
            {"name":"kafka_dlt-exception-fqcn","value":"rekafka_protocol_tests::Transient"},
            {"name":"kafka_dlt-exception-cause-fqcn","value":"Transient"},
            {"name":"kafka_dlt-exception-message","value":"boom"}
        ]))];
        let rules = [
            allowed("dlt-exception-class-analogue"),
            allowed("dlt-exception-message-no-wrapper"),
        ]
        .concat();
        assert!(compare_scenario("x", &spring, &ours, &rules).0.is_empty());
        assert_eq!(compare_scenario("x", &spring, &ours, &[]).0.len(), 1);
        let wrong = vec![dl(json!([
            {"name":"kafka_dlt-exception-fqcn","value":"Fatal"},
            {"name":"kafka_dlt-exception-cause-fqcn","value":"Fatal"},
            {"name":"kafka_dlt-exception-message","value":"boom"}
        ]))];
        assert_eq!(compare_scenario("x", &spring, &wrong, &rules).0.len(), 1);
    }

    #[test]
    fn dead_letters_of_different_source_partitions_may_interleave() {
        let d = |v: &str, p: &str| {
            json!({"type":"dead_letter","topic":"in-dlt","p":0,"key":"k","value":v,"headers":[
                {"name":"kafka_dlt-original-partition","value_hex":p}]})
        };
        let a = vec![d("a", "00000001"), d("b", "00000000"), d("c", "00000000")];
        let b = vec![d("b", "00000000"), d("c", "00000000"), d("a", "00000001")];
        assert!(compare_scenario("x", &a, &b, &[]).0.is_empty());
        // one source partition's own order still counts
        let c = vec![d("c", "00000000"), d("b", "00000000"), d("a", "00000001")];
        assert_eq!(compare_scenario("x", &a, &c, &[]).0.len(), 1);
    }

    #[test]
    fn transaction_per_poll_ignores_only_redeliveries_of_records_that_never_fail() {
        let failed = json!({"type":"failed","topic":"in","p":0,"o":1,"attempt":1,"error":"Transient","message":"m"});
        let spring = vec![inv(0, 0, 1), inv(0, 1, 1), failed.clone(), inv(0, 1, 2)];
        let ours = vec![
            inv(0, 0, 1),
            inv(0, 1, 1),
            failed.clone(),
            inv(0, 0, 2),
            inv(0, 1, 2),
        ];
        let rule = allowed("transaction-per-poll");
        assert_eq!(compare_scenario("x", &spring, &ours, &[]).0.len(), 1);
        assert!(compare_scenario("x", &spring, &ours, &rule).0.is_empty());
        // a missing redelivery of the failing record is still a difference
        let short = vec![inv(0, 0, 1), inv(0, 1, 1), failed, inv(0, 0, 2)];
        assert_eq!(compare_scenario("x", &spring, &short, &rule).0.len(), 1);
    }

    #[test]
    fn deserialization_message_rule_rejects_the_protocol_wording() {
        let spring = vec![dl(json!([
            {"name":"kafka_dlt-exception-fqcn","value":"org.springframework.kafka.support.serializer.DeserializationException"},
            {"name":"kafka_dlt-exception-message","value":"failed to deserialize"}
        ]))];
        let bad = vec![dl(json!([
            {"name":"kafka_dlt-exception-fqcn","value":"DeserializationFailed"},
            {"name":"kafka_dlt-exception-message","value":"deserialization of the record's value failed: corrupt protocol data: value is not valid UTF-8"}
        ]))];
        let good = vec![dl(json!([
            {"name":"kafka_dlt-exception-fqcn","value":"DeserializationFailed"},
            {"name":"kafka_dlt-exception-message","value":"deserialization of the record's value failed: value is not valid UTF-8"}
        ]))];
        let rules = [
            allowed("dlt-exception-class-analogue"),
            allowed("dlt-deserialization-message"),
        ]
        .concat();
        assert_eq!(compare_scenario("x", &spring, &bad, &rules).0.len(), 1);
        assert!(compare_scenario("x", &spring, &good, &rules).0.is_empty());
    }

    #[test]
    fn runtime_exception_is_the_bare_string_error_only() {
        let spring = |class: &str| {
            vec![dl(json!([
                {"name":"kafka_dlt-exception-fqcn","value":LEFE},
                {"name":"kafka_dlt-exception-cause-fqcn","value":class}
            ]))]
        };
        let ours = |class: &str| {
            vec![dl(json!([
                {"name":"kafka_dlt-exception-fqcn","value":class},
                {"name":"kafka_dlt-exception-cause-fqcn","value":class}
            ]))]
        };
        let rules = allowed("dlt-exception-class-analogue");
        let rt = "java.lang.RuntimeException";
        assert!(
            compare_scenario("x", &spring(rt), &ours("alloc::string::String"), &rules)
                .0
                .is_empty()
        );
        assert_eq!(
            compare_scenario("x", &spring(rt), &ours("Transient"), &rules)
                .0
                .len(),
            1
        );
        // a subclass is not the bare exception
        let sub = "java.lang.IllegalStateException";
        assert_eq!(
            compare_scenario("x", &spring(sub), &ours("alloc::string::String"), &rules)
                .0
                .len(),
            1
        );
    }

    fn retry_dl(headers: Value) -> Value {
        json!({"type":"dead_letter","topic":"in-dlt","p":1,"key":"k","value":"v","headers":headers})
    }

    #[test]
    fn retry_topic_headers_are_decoded_and_only_the_due_time_is_not_compared() {
        let hop = |attempts: &str, due: &str| {
            vec![
                json!({"name":"retry_topic-original-timestamp","value_hex":"018bcfe5680b"}),
                json!({"name":"retry_topic-attempts","value_hex":attempts}),
                json!({"name":"retry_topic-backoff-timestamp","value_hex":due}),
            ]
        };
        let spring = vec![retry_dl(Value::Array(
            [
                hop("00000002", "01a24c5a1e39"),
                hop("00000003", "01a24c5a222e"),
            ]
            .concat(),
        ))];
        let ours = vec![retry_dl(Value::Array(
            [
                hop("00000002", "01a24c5ba3c9"),
                hop("00000003", "01a24c5babb4"),
            ]
            .concat(),
        ))];
        assert!(compare_scenario("x", &spring, &ours, &[]).0.is_empty());
        let lines =
            view(Side::Spring, &spring, &BTreeSet::new()).sections["dead letters in-dlt-1"].clone();
        assert!(
            lines[0].contains("retry_topic-attempts = int 3"),
            "{lines:?}"
        );
        assert!(lines[0].contains("retry_topic-original-timestamp = BigInteger 1700000000011"));
        // One forward's headers only (retry headers not retained) is a difference.
        let last_only = vec![retry_dl(Value::Array(hop("00000003", "01a24c5babb4")))];
        assert_eq!(compare_scenario("x", &spring, &last_only, &[]).0.len(), 1);
        // So is another attempt, or another encoding of it (1 byte instead of 4).
        let other = vec![retry_dl(Value::Array(
            [hop("00000002", "01a24c5a1e39"), hop("04", "01a24c5a222e")].concat(),
        ))];
        assert_eq!(compare_scenario("x", &spring, &other, &[]).0.len(), 1);
        assert_eq!(big_integer("ff"), Some(-1));
        assert_eq!(big_integer("0080"), Some(128));
    }

    #[test]
    fn retry_topic_exception_headers_under_the_class_analogue() {
        let spring = vec![retry_dl(json!([
            {"name":"kafka_exception-fqcn","value":LEFE},
            {"name":"kafka_exception-cause-fqcn","value":"rekafka.spring.Errors$Fatal"},
            {"name":"kafka_exception-message","value":"Listener failed; v6 is invalid"}
        ]))];
        let ours = |class: &str| {
            vec![retry_dl(json!([
                {"name":"kafka_exception-fqcn","value":class},
                {"name":"kafka_exception-cause-fqcn","value":class},
                {"name":"kafka_exception-message","value":"v6 is invalid"}
            ]))]
        };
        let rules = [
            allowed("dlt-exception-class-analogue"),
            allowed("dlt-exception-message-no-wrapper"),
        ]
        .concat();
        assert!(
            compare_scenario("x", &spring, &ours("spring_runner::Fatal"), &rules)
                .0
                .is_empty()
        );
        assert_eq!(
            compare_scenario("x", &spring, &ours("Transient"), &rules)
                .0
                .len(),
            1
        );
    }

    #[test]
    fn retry_topic_dead_letters_are_ordered_by_first_failure() {
        let d = |v: &str, p: &str, o: &str| {
            retry_dl(json!([
                {"name":"kafka_original-partition","value_hex":p},
                {"name":"kafka_original-offset","value_hex":o}
            ]))
            .as_object()
            .map(|m| {
                let mut m = m.clone();
                m.insert("value".into(), json!(v));
                Value::Object(m)
            })
            .unwrap()
        };
        let a = vec![
            d("a", "00000001", "0000000000000003"),
            d("b", "00000001", "000000000000000a"),
        ];
        let b = vec![a[1].clone(), a[0].clone()];
        assert!(compare_scenario("x", &a, &b, &[]).0.is_empty());
        let c = vec![d("a", "00000001", "000000000000000a"), a[1].clone()];
        assert_eq!(compare_scenario("x", &a, &c, &[]).0.len(), 1);
    }

    #[test]
    fn no_destination_failure_maps_only_illegal_argument() {
        let failed =
            |f: &str| json!({"type":"recovery_failed","topic":"in","p":0,"o":1,"failure":f});
        let rules = allowed("recovery-failure-no-destination");
        let ours = vec![failed("Other:NoDestination")];
        let spring = vec![failed("Other:IllegalArgumentException")];
        assert!(compare_scenario("x", &spring, &ours, &rules).0.is_empty());
        assert_eq!(compare_scenario("x", &spring, &ours, &[]).0.len(), 1);
        let other = vec![failed("Other:IllegalStateException")];
        assert_eq!(compare_scenario("x", &other, &ours, &rules).0.len(), 1);
    }
}

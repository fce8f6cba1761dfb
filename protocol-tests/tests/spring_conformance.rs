//! Spring conformance: every scenario of `protocol-tests/spring/scenarios/` runs through Spring
//! for Apache Kafka's own listener container (the Maven project in
//! `protocol-tests/spring/runner`, built by `protocol-tests/spring/build.sh`) and through
//! rekafka's (`spring-runner`), against the broker in `REKAFKA_BOOTSTRAP`; the two observation
//! logs are compared, and every difference that `protocol-tests/spring/allowed-differences.json`
//! (= `docs/spring-differences.md`) does not allow fails the test.
//!
//! It fails (never skips) without a broker, Java or the built jar.
//!
//! * `SPRING_CONFORMANCE_ONLY=a,b` runs only those scenarios.
//! * `SPRING_CONFORMANCE_LOGS=DIR` compares the logs already in `DIR/spring` and `DIR/rekafka`
//!   without running anything (the test prints where each run leaves its logs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use rekafka_protocol_tests::spring::{Difference, compare_scenario, load_allowed, read_log};

fn spring_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("spring")
}

fn scenario_names(only: Option<&str>) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(spring_dir().join("scenarios"))
        .expect("protocol-tests/spring/scenarios")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "json").then(|| p.file_stem()?.to_str().map(str::to_owned))?
        })
        .filter(|n| only.is_none_or(|o| o.split(',').any(|x| x == n)))
        .collect();
    names.sort();
    names
}

/// Runs both runners (concurrently) into `out/spring` and `out/rekafka`.
fn run_both(out: &Path, only: Option<&str>) {
    let bootstrap = match std::env::var("REKAFKA_BOOTSTRAP") {
        Ok(b) if !b.is_empty() => b,
        _ => panic!(
            "REKAFKA_BOOTSTRAP is not set: the Spring conformance test needs a Kafka broker \
             (scripts/test.sh starts one). It then needs Java 17+ and the Spring runner built \
             by protocol-tests/spring/build.sh."
        ),
    };
    let java = Command::new("java")
        .arg("-version")
        .stderr(Stdio::null())
        .status();
    assert!(
        java.is_ok_and(|s| s.success()),
        "java is not on PATH: the Spring conformance test runs Spring for Apache Kafka; install \
         Java 17+ and run protocol-tests/spring/build.sh"
    );
    let runner = spring_dir().join("runner/target");
    let jar = runner.join("spring-runner-0.1.0.jar");
    assert!(
        jar.is_file() && runner.join("lib").is_dir(),
        "{} is missing: run protocol-tests/spring/build.sh (it builds the Spring runner with \
         Maven) before this test",
        jar.display()
    );
    let scenarios = spring_dir().join("scenarios");
    let classpath = format!("{}:{}/lib/*", jar.display(), runner.display());
    let mut spring = Command::new("java");
    spring
        .args(["-Xss1m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
        .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=error")
        .args(["-cp", &classpath, "rekafka.spring.Runner"])
        .args(["--bootstrap", &bootstrap])
        .arg("--scenarios")
        .arg(&scenarios)
        .arg("--out")
        .arg(out.join("spring"));
    let mut ours = Command::new(env!("CARGO_BIN_EXE_spring-runner"));
    ours.args(["--bootstrap", &bootstrap])
        .arg("--scenarios")
        .arg(&scenarios)
        .arg("--out")
        .arg(out.join("rekafka"));
    if let Some(o) = only {
        spring.args(["--only", o]);
        ours.args(["--only", o]);
    }
    let started = Instant::now();
    let mut spring = spring.spawn().expect("starting java");
    let mut ours = ours.spawn().expect("starting spring-runner");
    let s = spring.wait().expect("java");
    let o = ours.wait().expect("spring-runner");
    eprintln!(
        "both runners finished in {:.1} s (Spring: {s}, rekafka: {o})",
        started.elapsed().as_secs_f64()
    );
    // A runner that failed a scenario still wrote a log for it (a runner_error line), which
    // the comparison reports; a runner that died writes nothing, which it reports too.
}

type Failures = BTreeMap<String, Vec<Difference>>;

/// Compares the logs of `names` in `out/spring` and `out/rekafka`: the differences the
/// allow-list does not cover, per scenario, and which allowed differences each scenario used.
fn compare_all(
    out: &Path,
    names: &[String],
    allowed: &[rekafka_protocol_tests::spring::Allowed],
) -> (Failures, BTreeMap<String, Vec<String>>) {
    let mut failures: BTreeMap<String, Vec<Difference>> = BTreeMap::new();
    let mut used_by: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for name in names {
        let read = |side: &str| read_log(&out.join(side).join(format!("{name}.jsonl")));
        let (spring, ours) = match (read("spring"), read("rekafka")) {
            (Ok(s), Ok(o)) => (s, o),
            (s, o) => {
                failures.entry(name.clone()).or_default().push(Difference {
                    section: "logs".into(),
                    detail: format!(
                        "a log is missing: Spring {:?}, rekafka {:?}",
                        s.err(),
                        o.err()
                    ),
                });
                continue;
            }
        };
        let (diffs, used) = compare_scenario(name, &spring, &ours, allowed);
        for u in used {
            used_by.entry(u).or_default().push(name.clone());
        }
        if !diffs.is_empty() {
            failures.insert(name.clone(), diffs);
        }
    }
    (failures, used_by)
}

fn report_of(failures: &Failures) -> String {
    let mut report = String::new();
    for (name, diffs) in failures {
        report.push_str(&format!("\n=== {name}: {} difference(s)\n", diffs.len()));
        for d in diffs {
            report.push_str(&format!("  [{}] {}\n", d.section, d.detail));
        }
    }
    report
}

#[test]
fn spring_conformance() {
    let only = std::env::var("SPRING_CONFORMANCE_ONLY").ok();
    let only = only.as_deref().filter(|o| !o.is_empty());
    let names = scenario_names(only);
    assert!(!names.is_empty(), "no scenarios selected");
    let out = match std::env::var("SPRING_CONFORMANCE_LOGS") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            let out = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../target/spring-conformance")
                .join(format!("{t}-{}", std::process::id()));
            std::fs::create_dir_all(&out).expect("log dir");
            run_both(&out, only);
            out
        }
    };
    eprintln!("logs: {}", out.display());
    let allowed = load_allowed(&spring_dir().join("allowed-differences.json")).expect("allow-list");
    let doc = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/spring-differences.md"),
    )
    .expect("docs/spring-differences.md");
    for a in &allowed {
        assert!(
            doc.contains(&format!("`{}`", a.id)),
            "allowed difference {} is not documented in docs/spring-differences.md",
            a.id
        );
    }

    let (mut failures, used_by) = compare_all(&out, &names, &allowed);
    // A scenario runs against a live three-node cluster with time-based ends (quiet periods,
    // timeouts), so a slow moment on a loaded machine can cut one runner's run short. The
    // scenarios that differ run once more, both runners again, on fresh topics and groups; a
    // difference that is real shows again and fails the test. The first run's report stays.
    let rerun_allowed = std::env::var("SPRING_CONFORMANCE_LOGS").map_or(true, |d| d.is_empty());
    if !failures.is_empty() && rerun_allowed {
        eprintln!(
            "\nfirst run: {} scenario(s) differ; running them again:{}",
            failures.len(),
            report_of(&failures)
        );
        let again: Vec<String> = failures.keys().cloned().collect();
        let rerun = out.join("rerun");
        std::fs::create_dir_all(&rerun).expect("log dir");
        run_both(&rerun, Some(&again.join(",")));
        eprintln!("logs of the second run: {}", rerun.display());
        failures = compare_all(&rerun, &again, &allowed).0;
    }
    eprintln!("\nallowed differences seen:");
    for (id, scenarios) in &used_by {
        eprintln!("  {id}: {}", scenarios.join(", "));
    }
    let report = report_of(&failures);
    eprintln!(
        "\n{} scenarios compared, {} agree, {} differ{}",
        names.len(),
        names.len() - failures.len(),
        failures.len(),
        report
    );
    assert!(
        failures.is_empty(),
        "{} of {} scenarios differ from Spring for Apache Kafka beyond the allowed differences \
         (docs/spring-differences.md): {}",
        failures.len(),
        names.len(),
        failures.keys().cloned().collect::<Vec<_>>().join(", ")
    );
}

//! Helpers shared by the broker-backed integration tests.

/// The first address of `REKAFKA_BOOTSTRAP`. Broker tests fail (they do not skip) without it.
pub fn bootstrap() -> String {
    match std::env::var("REKAFKA_BOOTSTRAP") {
        Ok(s) if !s.is_empty() => s.split(',').next().unwrap_or_default().to_string(),
        _ => panic!(
            "REKAFKA_BOOTSTRAP is not set: these tests need a broker. Run them through \
             `scripts/test.sh` or `scripts/with-broker.sh cargo test --test NAME`."
        ),
    }
}

/// A unique name for a topic or group in this test run.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{t}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

//! The producer's circuit breaker (optional): fail fast while the cluster keeps rejecting
//! records, probe, and close again on success.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::{Error, Result};

/// Settings of the circuit breaker.
///
/// Outcomes are counted per record but recorded once per batch (a batch's records succeed or
/// fail together), so the breaker costs nothing per record while it is closed.
///
/// ```
/// use std::time::Duration;
/// use rekafka::producer::CircuitBreakerConfig;
/// let cb = CircuitBreakerConfig::default()
///     .with_failure_threshold(100)
///     .with_failure_ratio(Some(0.5), 10)
///     .with_open_for(Duration::from_secs(5));
/// assert!(cb.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CircuitBreakerConfig {
    /// Consecutive failed records after which the breaker opens. Default: 5.
    pub failure_threshold: u64,
    /// Failed share of the records in the last [`window`](Self::window) batches above which
    /// the breaker opens (once the window is full). Default: `None` (only consecutive
    /// failures count).
    pub failure_ratio: Option<f64>,
    /// How many recent batch outcomes the ratio looks at. Default: 20.
    pub window: usize,
    /// How long the breaker stays open (sends fail fast) before it lets probes through.
    /// Default: 30 s.
    pub open_for: Duration,
    /// How many records may be sent as probes while half-open; later sends fail fast until a
    /// probe's outcome is known. Default: 1.
    pub half_open_probes: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_threshold: 5,
            failure_ratio: None,
            window: 20,
            open_for: Duration::from_secs(30),
            half_open_probes: 1,
        }
    }
}

impl CircuitBreakerConfig {
    /// Sets [`failure_threshold`](Self::failure_threshold).
    pub fn with_failure_threshold(mut self, n: u64) -> Self {
        self.failure_threshold = n;
        self
    }
    /// Sets [`failure_ratio`](Self::failure_ratio) and [`window`](Self::window).
    pub fn with_failure_ratio(mut self, ratio: Option<f64>, window: usize) -> Self {
        self.failure_ratio = ratio;
        self.window = window;
        self
    }
    /// Sets [`open_for`](Self::open_for).
    pub fn with_open_for(mut self, open_for: Duration) -> Self {
        self.open_for = open_for;
        self
    }
    /// Sets [`half_open_probes`](Self::half_open_probes).
    pub fn with_half_open_probes(mut self, n: u32) -> Self {
        self.half_open_probes = n;
        self
    }
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.failure_threshold == 0 {
            return Err(Error::config(
                "circuit_breaker.failure_threshold must be at least 1",
            ));
        }
        if let Some(r) = self.failure_ratio
            && !(r > 0.0 && r <= 1.0)
        {
            return Err(Error::config(
                "circuit_breaker.failure_ratio must be in (0, 1]",
            ));
        }
        if self.window == 0 {
            return Err(Error::config("circuit_breaker.window must be at least 1"));
        }
        if self.half_open_probes == 0 {
            return Err(Error::config(
                "circuit_breaker.half_open_probes must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The state of the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Sends go through (also the state when no breaker is configured).
    Closed,
    /// Sends fail fast with [`ErrorKind::CircuitOpen`](crate::ErrorKind::CircuitOpen).
    Open,
    /// A few probe sends go through; the next outcome closes or reopens the breaker.
    HalfOpen,
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

fn decode(s: u8) -> CircuitState {
    match s {
        OPEN => CircuitState::Open,
        HALF_OPEN => CircuitState::HalfOpen,
        _ => CircuitState::Closed,
    }
}

#[derive(Debug)]
struct Inner {
    consecutive_failures: u64,
    /// (failed, total) records per recent batch.
    window: VecDeque<(u64, u64)>,
    opened_at: Option<Instant>,
    probes_left: u32,
}

/// The breaker. The state is an atomic read on the send path; the lock is taken once per batch
/// outcome and, while open or half-open, per send.
#[derive(Debug)]
pub(crate) struct CircuitBreaker {
    config: CircuitBreakerConfig,
    state: AtomicU8,
    inner: Mutex<Inner>,
    tx: watch::Sender<CircuitState>,
}

impl CircuitBreaker {
    pub(crate) fn new(config: CircuitBreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            inner: Mutex::new(Inner {
                consecutive_failures: 0,
                window: VecDeque::with_capacity(config.window),
                opened_at: None,
                probes_left: 0,
            }),
            config,
            state: AtomicU8::new(CLOSED),
            tx: watch::channel(CircuitState::Closed).0,
        }
    }

    pub(crate) fn state(&self) -> CircuitState {
        decode(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<CircuitState> {
        self.tx.subscribe()
    }

    fn set(&self, inner: &mut Inner, s: u8) {
        if s == OPEN {
            inner.opened_at = Some(Instant::now());
        }
        if s == HALF_OPEN {
            inner.probes_left = self.config.half_open_probes;
        }
        if s == CLOSED {
            inner.consecutive_failures = 0;
            inner.window.clear();
        }
        if self.state.swap(s, Ordering::AcqRel) != s {
            tracing::info!(state = ?decode(s), "producer circuit breaker");
            self.tx.send_replace(decode(s));
        }
    }

    /// Whether a send may go through now.
    pub(crate) fn allow(&self) -> std::result::Result<(), Duration> {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return Ok(());
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match self.state.load(Ordering::Acquire) {
            CLOSED => Ok(()),
            OPEN => {
                let since = inner.opened_at.map(|t| t.elapsed()).unwrap_or_default();
                if since >= self.config.open_for {
                    self.set(&mut inner, HALF_OPEN);
                    inner.probes_left = inner.probes_left.saturating_sub(1);
                    Ok(())
                } else {
                    Err(self.config.open_for - since)
                }
            }
            _ => {
                if inner.probes_left > 0 {
                    inner.probes_left -= 1;
                    Ok(())
                } else {
                    Err(Duration::ZERO)
                }
            }
        }
    }

    /// Records the outcome of one batch of `records` records.
    pub(crate) fn record(&self, failed: bool, records: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let state = self.state.load(Ordering::Acquire);
        if failed {
            inner.consecutive_failures += records;
        } else {
            inner.consecutive_failures = 0;
        }
        if inner.window.len() == self.config.window {
            inner.window.pop_front();
        }
        inner
            .window
            .push_back((if failed { records } else { 0 }, records));
        match state {
            HALF_OPEN => {
                if failed {
                    self.set(&mut inner, OPEN);
                } else {
                    self.set(&mut inner, CLOSED);
                }
            }
            CLOSED => {
                let mut open = inner.consecutive_failures >= self.config.failure_threshold;
                if let Some(ratio) = self.config.failure_ratio
                    && inner.window.len() == self.config.window
                {
                    let (f, t) = inner
                        .window
                        .iter()
                        .fold((0, 0), |(a, b), (f, t)| (a + f, b + t));
                    if t > 0 && f as f64 / t as f64 >= ratio {
                        open = true;
                    }
                }
                if open {
                    self.set(&mut inner, OPEN);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_fails_fast_half_opens_and_closes() {
        let cb = CircuitBreaker::new(
            CircuitBreakerConfig::default()
                .with_failure_threshold(3)
                .with_open_for(Duration::from_millis(50)),
        );
        let mut rx = cb.subscribe();
        assert_eq!(cb.state(), CircuitState::Closed);
        cb.record(true, 2);
        cb.record(false, 1); // resets the consecutive count
        cb.record(true, 2);
        assert_eq!(cb.state(), CircuitState::Closed);
        cb.record(true, 1);
        assert_eq!(cb.state(), CircuitState::Open);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), CircuitState::Open);
        assert!(cb.allow().is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            cb.allow().is_ok(),
            "the first send after the cool-down is a probe"
        );
        assert_eq!(cb.state(), CircuitState::HalfOpen);
        assert!(cb.allow().is_err(), "one probe only");
        cb.record(true, 1);
        assert_eq!(cb.state(), CircuitState::Open, "failed probe reopens");
        std::thread::sleep(Duration::from_millis(60));
        assert!(cb.allow().is_ok());
        cb.record(false, 1);
        assert_eq!(cb.state(), CircuitState::Closed);
        assert!(cb.allow().is_ok());
    }

    #[test]
    fn ratio_over_window() {
        let cb = CircuitBreaker::new(
            CircuitBreakerConfig::default()
                .with_failure_threshold(1_000)
                .with_failure_ratio(Some(0.5), 4),
        );
        cb.record(true, 10);
        cb.record(false, 10);
        cb.record(true, 10);
        assert_eq!(cb.state(), CircuitState::Closed, "window not full yet");
        cb.record(false, 9);
        assert_eq!(cb.state(), CircuitState::Open, "20 of 39 failed");
    }
}

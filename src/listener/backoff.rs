//! Back-off policies with Spring for Apache Kafka's names and semantics.
//!
//! A [`BackOff`] is a policy; [`BackOff::start`] gives a fresh [`BackOffExecution`] for one
//! failing record, and each call to [`BackOffExecution::next_back_off`] answers how long to wait
//! before the next delivery, or `None` when the retries are exhausted (Spring's `STOP`) and the
//! record must be recovered.
//!
//! | policy | Spring equivalent | default |
//! |---|---|---|
//! | [`FixedBackOff`] | `FixedBackOff(interval, maxAttempts)` | 0 ms, 9 retries (10 deliveries) |
//! | [`ExponentialBackOff`] | `ExponentialBackOff` | 2 s initial, ×1.5, max 30 s, no elapsed limit |
//! | [`ExponentialBackOff::with_max_retries`] | `ExponentialBackOffWithMaxRetries(n)` | |
//!
//! ```
//! use std::time::Duration;
//! use rekafka::listener::{BackOff, ExponentialBackOff, FixedBackOff};
//!
//! // The default: 9 retries without delay, i.e. 10 deliveries in all.
//! let mut run = FixedBackOff::default().start();
//! for _ in 0..9 {
//!     assert_eq!(run.next_back_off(), Some(Duration::ZERO));
//! }
//! assert_eq!(run.next_back_off(), None);
//!
//! // Spring's ExponentialBackOffWithMaxRetries(6) with 1 s, x2, max 10 s: 1, 2, 4, 8, 10, 10 s.
//! let policy = ExponentialBackOff::with_max_retries(6)
//!     .initial_interval(Duration::from_secs(1))
//!     .multiplier(2.0)
//!     .max_interval(Duration::from_secs(10));
//! let mut run = policy.start();
//! let waits: Vec<u64> = std::iter::from_fn(|| run.next_back_off()).map(|d| d.as_secs()).collect();
//! assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
//! ```

use std::fmt;
use std::time::Duration;

/// A back-off policy: how often and how long to wait before redelivering a failed record.
pub trait BackOff: Send + Sync + fmt::Debug {
    /// A fresh execution for one failing record (or batch).
    fn start(&self) -> Box<dyn BackOffExecution>;
}

/// The state of one back-off run.
pub trait BackOffExecution: Send + fmt::Debug {
    /// The wait before the next delivery, or `None` when the retries are exhausted.
    fn next_back_off(&mut self) -> Option<Duration>;
}

/// A fixed interval between deliveries, a bounded number of times.
///
/// `max_retries` counts *retries*: `FixedBackOff::new(d, 3)` gives 4 deliveries in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedBackOff {
    interval: Duration,
    max_retries: Retries,
}

/// How many retries a back-off allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Retries {
    /// At most this many retries after the first delivery.
    AtMost(u32),
    /// Retry forever (Spring's `UNLIMITED_ATTEMPTS`).
    Unlimited,
}

impl FixedBackOff {
    /// `interval` between deliveries, at most `max_retries` retries.
    pub fn new(interval: Duration, max_retries: u32) -> FixedBackOff {
        FixedBackOff {
            interval,
            max_retries: Retries::AtMost(max_retries),
        }
    }

    /// `interval` between deliveries, retrying forever.
    pub fn unlimited(interval: Duration) -> FixedBackOff {
        FixedBackOff {
            interval,
            max_retries: Retries::Unlimited,
        }
    }

    /// No retries at all: the first failure is recovered at once (Spring's `FixedBackOff(0, 0)`).
    pub fn no_retries() -> FixedBackOff {
        FixedBackOff::new(Duration::ZERO, 0)
    }

    /// The interval between deliveries.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The retry limit.
    pub fn max_retries(&self) -> Retries {
        self.max_retries
    }
}

impl Default for FixedBackOff {
    /// Spring's `DefaultErrorHandler` default: 0 ms, 9 retries (10 deliveries).
    fn default() -> Self {
        FixedBackOff::new(Duration::ZERO, 9)
    }
}

impl BackOff for FixedBackOff {
    fn start(&self) -> Box<dyn BackOffExecution> {
        Box::new(FixedExecution {
            policy: *self,
            done: 0,
        })
    }
}

#[derive(Debug)]
struct FixedExecution {
    policy: FixedBackOff,
    done: u32,
}

impl BackOffExecution for FixedExecution {
    fn next_back_off(&mut self) -> Option<Duration> {
        if let Retries::AtMost(max) = self.policy.max_retries {
            if self.done >= max {
                return None;
            }
        }
        self.done = self.done.saturating_add(1);
        Some(self.policy.interval)
    }
}

/// Exponentially growing intervals: `initial`, `initial × multiplier`, … capped at
/// `max_interval`, stopping when the sum of the intervals handed out reaches `max_elapsed` or
/// after `max_retries`.
///
/// Defaults (Spring's): initial 2 s, multiplier 1.5, max interval 30 s, no elapsed-time limit,
/// unlimited retries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExponentialBackOff {
    initial: Duration,
    multiplier: f64,
    max_interval: Duration,
    max_elapsed: Option<Duration>,
    max_retries: Retries,
}

impl Default for ExponentialBackOff {
    fn default() -> Self {
        ExponentialBackOff {
            initial: Duration::from_secs(2),
            multiplier: 1.5,
            max_interval: Duration::from_secs(30),
            max_elapsed: None,
            max_retries: Retries::Unlimited,
        }
    }
}

impl ExponentialBackOff {
    /// The default policy (see the type's docs).
    pub fn new() -> ExponentialBackOff {
        ExponentialBackOff::default()
    }

    /// Spring's `ExponentialBackOffWithMaxRetries(n)`: at most `n` retries, whatever the
    /// intervals add up to.
    pub fn with_max_retries(n: u32) -> ExponentialBackOff {
        ExponentialBackOff {
            max_retries: Retries::AtMost(n),
            ..ExponentialBackOff::default()
        }
    }

    /// The first interval. Default: 2 s.
    pub fn initial_interval(mut self, initial: Duration) -> Self {
        self.initial = initial;
        self
    }

    /// The factor applied to each following interval; values below 1.0 are treated as 1.0.
    /// Default: 1.5.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = if multiplier.is_finite() && multiplier >= 1.0 {
            multiplier
        } else {
            1.0
        };
        self
    }

    /// The longest single interval. Default: 30 s.
    pub fn max_interval(mut self, max: Duration) -> Self {
        self.max_interval = max;
        self
    }

    /// Stop once the intervals handed out add up to at least this. Default: no limit.
    pub fn max_elapsed(mut self, max: Duration) -> Self {
        self.max_elapsed = Some(max);
        self
    }

    /// Stop after this many retries. Default: unlimited.
    pub fn max_retries(mut self, retries: Retries) -> Self {
        self.max_retries = retries;
        self
    }
}

impl BackOff for ExponentialBackOff {
    fn start(&self) -> Box<dyn BackOffExecution> {
        Box::new(ExponentialExecution {
            policy: *self,
            current: None,
            elapsed: Duration::ZERO,
            done: 0,
        })
    }
}

#[derive(Debug)]
struct ExponentialExecution {
    policy: ExponentialBackOff,
    current: Option<Duration>,
    elapsed: Duration,
    done: u32,
}

impl BackOffExecution for ExponentialExecution {
    fn next_back_off(&mut self) -> Option<Duration> {
        let p = &self.policy;
        if let Retries::AtMost(max) = p.max_retries {
            if self.done >= max {
                return None;
            }
        }
        if let Some(limit) = p.max_elapsed {
            if self.elapsed >= limit {
                return None;
            }
        }
        let next = match self.current {
            None => p.initial,
            Some(d) => {
                let secs = d.as_secs_f64() * p.multiplier;
                Duration::try_from_secs_f64(secs).unwrap_or(p.max_interval)
            }
        }
        .min(p.max_interval);
        self.current = Some(next);
        self.elapsed = self.elapsed.saturating_add(next);
        self.done = self.done.saturating_add(1);
        Some(next)
    }
}

/// A back-off chosen by a function; used for per-(record, error) policies.
#[derive(Clone)]
pub struct BackOffFn {
    f: std::sync::Arc<dyn Fn() -> Box<dyn BackOffExecution> + Send + Sync>,
}

impl BackOffFn {
    /// A policy whose executions come from `f`.
    pub fn new(f: impl Fn() -> Box<dyn BackOffExecution> + Send + Sync + 'static) -> Self {
        BackOffFn {
            f: std::sync::Arc::new(f),
        }
    }
}

impl fmt::Debug for BackOffFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackOffFn")
    }
}

impl BackOff for BackOffFn {
    fn start(&self) -> Box<dyn BackOffExecution> {
        (self.f)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(b: &dyn BackOff, cap: usize) -> Vec<Duration> {
        let mut e = b.start();
        std::iter::from_fn(|| e.next_back_off()).take(cap).collect()
    }

    #[test]
    fn fixed_counts_retries() {
        let ms = Duration::from_millis(10);
        assert_eq!(run(&FixedBackOff::new(ms, 3), 100), vec![ms; 3]);
        assert!(run(&FixedBackOff::no_retries(), 100).is_empty());
        assert_eq!(run(&FixedBackOff::unlimited(ms), 50).len(), 50);
        assert_eq!(run(&FixedBackOff::default(), 100), vec![Duration::ZERO; 9]);
    }

    #[test]
    fn exponential_defaults_match_spring() {
        let got = run(&ExponentialBackOff::new(), 6);
        let secs: Vec<f64> = got.iter().map(|d| d.as_secs_f64()).collect();
        assert_eq!(secs, [2.0, 3.0, 4.5, 6.75, 10.125, 15.1875]);
        // Capped at 30 s and never stopping.
        let long = run(&ExponentialBackOff::new(), 40);
        assert_eq!(long.len(), 40);
        assert_eq!(long[39], Duration::from_secs(30));
    }

    #[test]
    fn exponential_max_elapsed_stops_when_sum_reaches_limit() {
        let b = ExponentialBackOff::new()
            .initial_interval(Duration::from_secs(1))
            .multiplier(2.0)
            .max_elapsed(Duration::from_secs(7));
        // 1 + 2 + 4 = 7 >= 7: three intervals.
        let secs: Vec<u64> = run(&b, 100).iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [1, 2, 4]);
    }

    #[test]
    fn executions_are_independent() {
        let b = FixedBackOff::new(Duration::from_millis(1), 1);
        let mut a = b.start();
        let mut c = b.start();
        assert!(a.next_back_off().is_some());
        assert!(a.next_back_off().is_none());
        assert!(c.next_back_off().is_some());
    }

    #[test]
    fn bad_multiplier_is_clamped() {
        let b = ExponentialBackOff::with_max_retries(3)
            .initial_interval(Duration::from_millis(5))
            .multiplier(f64::NAN);
        assert_eq!(run(&b, 10), vec![Duration::from_millis(5); 3]);
    }
}

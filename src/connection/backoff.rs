//! Exponential back-off with jitter for reconnect attempts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How much a back-off is spread around its nominal value: ±20%, as Kafka's
/// `CommonClientConfigs.RECONNECT_BACKOFF_JITTER`.
pub const JITTER: f64 = 0.2;

/// Exponential back-off with ±20% jitter, following Kafka's `reconnect.backoff.ms` /
/// `reconnect.backoff.max.ms` semantics.
///
/// With no failure recorded the delay is `base`; every consecutive failure doubles it, up to
/// `max`; a success ([`reset`](RetryDelay::reset)) starts over at `base`. Each delay is then
/// multiplied by a random factor in `[0.8, 1.2]` so that many clients do not retry in lockstep
/// (so a delay may exceed `max` by up to 20%, as in Kafka).
///
/// ```
/// use std::time::Duration;
/// use rekafka::connection::RetryDelay;
///
/// let mut b = RetryDelay::new(Duration::from_millis(50), Duration::from_secs(1));
/// assert!(b.delay() <= Duration::from_millis(60));
/// for _ in 0..10 {
///     b.failed();
/// }
/// assert!(b.delay() >= Duration::from_millis(800));
/// b.reset();
/// assert!(b.delay() <= Duration::from_millis(60));
/// ```
#[derive(Debug, Clone)]
pub struct RetryDelay {
    base: Duration,
    max: Duration,
    failures: u32,
    rng: u64,
}

impl RetryDelay {
    /// A back-off starting at `base` and doubling up to `max` (if `max < base`, `base` is used
    /// as the maximum).
    pub fn new(base: Duration, max: Duration) -> RetryDelay {
        RetryDelay {
            base,
            max: max.max(base),
            failures: 0,
            rng: seed(),
        }
    }

    /// Records a failed attempt: the next delay doubles (up to the maximum).
    pub fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// Records a success: the next delay is the base delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// The number of consecutive failures recorded since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The delay before the next attempt, without jitter: `base * 2^failures`, at most `max`.
    pub fn nominal(&self) -> Duration {
        let factor = 1u32 << self.failures.min(30);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The delay before the next attempt, with jitter: [`nominal`](RetryDelay::nominal) times a
    /// random factor in `[0.8, 1.2]`.
    pub fn delay(&mut self) -> Duration {
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
        let factor = 1.0 - JITTER + 2.0 * JITTER * unit;
        self.nominal().mul_f64(factor)
    }

    /// xorshift64*: good enough for jitter, no dependency.
    fn next_u64(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A non-zero seed from the clock and a process-wide counter, so back-offs created at the same
/// instant still differ.
fn seed() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let n = COUNTER.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
    let s = (nanos ^ n).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    if s == 0 { 0x2545_F491_4F6C_DD1D } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let ms = Duration::from_millis;
        let mut b = RetryDelay::new(ms(50), ms(1000));
        let nominal: Vec<_> = (0..7)
            .map(|_| {
                let n = b.nominal();
                b.failed();
                n
            })
            .collect();
        assert_eq!(
            nominal,
            [
                ms(50),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1000),
                ms(1000)
            ]
        );
        for _ in 0..100 {
            b.failed();
        }
        assert_eq!(b.nominal(), ms(1000));
        b.reset();
        assert_eq!(b.nominal(), ms(50));
        assert_eq!(b.failures(), 0);
    }

    #[test]
    fn jitter_is_within_twenty_percent_and_varies() {
        let mut b = RetryDelay::new(Duration::from_millis(100), Duration::from_secs(1));
        let delays: Vec<_> = (0..1000).map(|_| b.delay()).collect();
        for d in &delays {
            assert!(
                *d >= Duration::from_millis(80) && *d <= Duration::from_millis(120),
                "{d:?}"
            );
        }
        let min = delays.iter().min().copied().unwrap_or_default();
        let max = delays.iter().max().copied().unwrap_or_default();
        assert!(max - min > Duration::from_millis(30), "{min:?}..{max:?}");
    }

    #[test]
    fn max_below_base_uses_base() {
        let mut b = RetryDelay::new(Duration::from_millis(100), Duration::from_millis(10));
        b.failed();
        assert_eq!(b.nominal(), Duration::from_millis(100));
    }
}

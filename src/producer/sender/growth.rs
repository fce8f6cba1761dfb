//! How far a batch may grow past `batch.size` under a backlog, per broker: the adaptive cap
//! (issue 21 item 3).
//!
//! A batch that grows while its partition waits for the leader is sent whole and, if it fails,
//! retried whole (a sent batch is never re-split: its sequence numbers are fixed). On a broker
//! too slow to take it within the request timeout it would time out on every attempt until
//! `delivery.timeout` failed its records, where Java's `batch.size` batches get through (the
//! failover suite's scenario 8). So growth is allowed only as far as the broker has recently
//! shown it can take, like a congestion window:
//!
//! * every response of a broker gives a delivery-rate sample: the request's bytes over the time
//!   the connection spent on it (from its send, or from the previous response if that came
//!   later: Kafka serves a connection's requests one at a time, so a pipelined request's own
//!   time starts when its predecessor's ends). The estimate is an EWMA of the samples
//!   ([`DeliveryRate`]);
//! * the bytes one request to that broker may carry are the estimate times a quarter of the
//!   request timeout ([`DeliveryRate::request_budget`]), shared by the partitions of that
//!   broker that have a backlog; each one's batch may grow to its share, clamped to
//!   `[batch.size, backlog_batch_size]` ([`batch_cap`]);
//! * without an estimate (no response yet, or the last request to the broker timed out or lost
//!   its connection, which forgets the estimate) the cap is `batch.size`: Java's batches,
//!   until responses show the broker keeps up.
//!
//! A healthy broker answers a 16 KiB request in milliseconds, so the first responses already
//! allow the full `backlog_batch_size`; a broker that takes a second per 20 KB keeps batches
//! near `batch.size`. Only batches still open in the accumulator follow the cap: one that grew
//! before the cap fell is sent as it is.

use std::time::Duration;

use tokio::time::Instant;

/// The fraction of the request timeout a request should take at the estimated rate: 1/4
/// leaves room for a rate that halves between two requests, and for the broker's own wait
/// (replication for `acks=all`).
const TIMEOUT_SHARE: u32 = 4;

/// The weight of a new sample in the estimate (1/4, as TCP's RTT estimator weighs
/// variation): one slow response lowers it noticeably, one fast one does not double it.
const NEW_SAMPLE_WEIGHT: f64 = 0.25;

/// The shortest service time a sample counts with (the timer's resolution): a response that
/// seems to take no time would otherwise give an unbounded rate.
const MIN_SAMPLE: Duration = Duration::from_millis(1);

/// One broker's estimated delivery rate.
#[derive(Debug, Default, Clone)]
pub(super) struct DeliveryRate {
    /// Bytes per second; `None` until the first response, and after a failed request.
    rate: Option<f64>,
    /// When the broker's last response arrived: a request sent before it waited behind it.
    last_response: Option<Instant>,
    /// When the current estimate began (its first sample): batches created before it were
    /// sealed at `batch.size` for want of an estimate, and may be merged (`merge_queued`).
    since: Option<Instant>,
}

impl DeliveryRate {
    /// A response to a request of `bytes` bytes sent at `sent` arrived at `now`.
    pub(super) fn answered(&mut self, bytes: usize, sent: Instant, now: Instant) {
        let from = self.last_response.map_or(sent, |last| last.max(sent));
        let took = now.saturating_duration_since(from).max(MIN_SAMPLE);
        let sample = bytes as f64 / took.as_secs_f64();
        self.rate = Some(match self.rate {
            Some(rate) => rate + (sample - rate) * NEW_SAMPLE_WEIGHT,
            None => {
                self.since = Some(now);
                sample
            }
        });
        self.last_response = Some(now);
    }

    /// A request to the broker timed out or lost its connection: forget the estimate, so
    /// that batches go back to `batch.size` until responses come back again.
    pub(super) fn failed(&mut self) {
        *self = Self::default();
    }

    /// When the current estimate began (`None` without one).
    pub(super) fn since(&self) -> Option<Instant> {
        self.since
    }

    /// The bytes one request may carry: the estimated rate times a quarter of
    /// `request_timeout`; 0 without an estimate.
    pub(super) fn request_budget(&self, request_timeout: Duration) -> usize {
        let Some(rate) = self.rate else {
            return 0;
        };
        let bytes = rate * request_timeout.as_secs_f64() / f64::from(TIMEOUT_SHARE);
        // `as` saturates (and maps NaN to 0): a huge estimate is just "no limit here".
        bytes as usize
    }
}

/// The size a batch of one of `backlogged` partitions (with a backlog, led by one broker) may
/// grow to: its share of the broker's `budget`, at least `batch_size` (Java's batches are
/// never refused) and at most `limit` (`backlog_batch_size`, within `max.request.size`).
pub(super) fn batch_cap(
    budget: usize,
    backlogged: usize,
    batch_size: usize,
    limit: usize,
) -> usize {
    let share = budget / backlogged.max(1);
    share.min(limit).max(batch_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;
    const TIMEOUT: Duration = Duration::from_secs(30);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn no_estimate_means_java_batches() {
        let r = DeliveryRate::default();
        assert_eq!(r.request_budget(TIMEOUT), 0);
        assert_eq!(
            batch_cap(r.request_budget(TIMEOUT), 1, 16 * KIB, MIB),
            16 * KIB
        );
    }

    #[test]
    fn a_fast_broker_allows_the_full_growth_after_one_response() {
        let t0 = Instant::now();
        let mut r = DeliveryRate::default();
        // 32 KiB answered in 10 ms: 3.2 MB/s, so 30 s / 4 carries ~24 MB.
        r.answered(32 * KIB, t0, t0 + ms(10));
        let budget = r.request_budget(TIMEOUT);
        assert_eq!(budget, (32 * KIB) * 100 * 30 / 4);
        assert_eq!(batch_cap(budget, 6, 16 * KIB, MIB), MIB);
    }

    #[test]
    fn a_slow_broker_keeps_batches_near_batch_size() {
        let t0 = Instant::now();
        let mut r = DeliveryRate::default();
        // 8 KiB in 400 ms: 20 KiB/s; with a 10 s timeout a request may carry 50 KiB.
        r.answered(8 * KIB, t0, t0 + ms(400));
        let budget = r.request_budget(Duration::from_secs(10));
        assert_eq!(budget, 50 * KIB);
        // Two partitions with a backlog share it.
        assert_eq!(batch_cap(budget, 2, 4 * KIB, MIB), 25 * KIB);
        // A share below batch.size is raised to it: Java's batches always go.
        assert_eq!(batch_cap(budget, 20, 4 * KIB, MIB), 4 * KIB);
    }

    #[test]
    fn the_cap_never_exceeds_the_limit_nor_falls_below_batch_size() {
        for budget in [0, 1, 4 * KIB, 100 * KIB, 10 * MIB, usize::MAX] {
            for n in [0, 1, 3, 1000] {
                let cap = batch_cap(budget, n, 16 * KIB, MIB);
                assert!((16 * KIB..=MIB).contains(&cap), "{budget} {n}: {cap}");
            }
        }
        // A limit at or below batch.size (growth off) gives batch.size.
        assert_eq!(batch_cap(usize::MAX, 1, 16 * KIB, 0), 16 * KIB);
    }

    #[test]
    fn a_pipelined_request_counts_from_the_previous_response() {
        let t0 = Instant::now();
        let mut r = DeliveryRate::default();
        r.answered(10_000, t0, t0 + ms(100));
        // Sent at t0 too, but the broker only started on it when the first was answered:
        // 10 000 bytes in 100 ms, not in 200 ms.
        r.answered(10_000, t0, t0 + ms(200));
        assert_eq!(r.request_budget(Duration::from_secs(4)), 100_000);
    }

    #[test]
    fn the_estimate_moves_a_quarter_of_the_way_to_each_sample() {
        let t0 = Instant::now();
        let mut r = DeliveryRate::default();
        r.answered(100_000, t0, t0 + ms(1000)); // 100 kB/s
        let t1 = t0 + ms(2000);
        r.answered(20_000, t1, t1 + ms(1000)); // 20 kB/s
        // 100 - (100 - 20) / 4 = 80 kB/s; 4 s / 4 = 1 s of it.
        assert_eq!(r.request_budget(Duration::from_secs(4)), 80_000);
    }

    #[test]
    fn a_failed_request_forgets_the_estimate() {
        let t0 = Instant::now();
        let mut r = DeliveryRate::default();
        r.answered(MIB, t0, t0 + ms(5));
        assert!(r.request_budget(TIMEOUT) > MIB);
        assert_eq!(r.since(), Some(t0 + ms(5)));
        r.failed();
        assert_eq!(r.since(), None);
        assert_eq!(r.request_budget(TIMEOUT), 0);
        assert_eq!(
            batch_cap(r.request_budget(TIMEOUT), 1, 16 * KIB, MIB),
            16 * KIB
        );
        // The next response starts a fresh estimate (no earlier response to count from).
        let t1 = t0 + ms(1000);
        r.answered(10_000, t1, t1 + ms(1000));
        assert_eq!(r.request_budget(Duration::from_secs(4)), 10_000);
        // A later sample moves the estimate, not its start.
        r.answered(10_000, t1 + ms(1000), t1 + ms(2000));
        assert_eq!(r.since(), Some(t1 + ms(1000)));
    }

    #[test]
    fn an_instant_response_counts_as_one_millisecond() {
        let t0 = Instant::now();
        let mut r = DeliveryRate::default();
        r.answered(1000, t0, t0);
        assert_eq!(r.request_budget(Duration::from_secs(4)), 1_000_000);
    }
}

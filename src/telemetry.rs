//! Metrics for every layer, through the [`metrics`] facade, and the names they are published
//! under.
//!
//! Install any `metrics` recorder (a Prometheus exporter, `metrics_util`'s debugging recorder,
//! …) and the clients publish into it; without one every update is a no-op. Every metric
//! carries a [`CLIENT_ID`] label (the `client.id` of the client's connections,
//! [`ConnectionConfig::client_id`](crate::connection::ConnectionConfig::client_id)), and
//! per-partition metrics a [`TOPIC`] and a [`PARTITION`] label, so two clients in one process
//! never overwrite each other's values. The table of names is in `docs/metrics.md`.
//!
//! Handles (the recorder's counters, gauges and histograms) are registered once per client and
//! once per partition, then updated once per fetch, per poll, per batch or per event: nothing is
//! allocated per record. A handle is bound to the recorder that was current when the client (or
//! the partition's first update) registered it.
//!
//! ```no_run
//! # async fn demo() -> rekafka::Result<()> {
//! // Install a recorder first (e.g. `metrics_exporter_prometheus`), then build the clients:
//! use rekafka::telemetry;
//! assert_eq!(telemetry::CONSUMER_RECORDS_CONSUMED, "kafka.consumer.records-consumed-total");
//! # Ok(())
//! # }
//! ```
//!
//! Tracing: spans `kafka.poll` (per consumer poll), `kafka.handler` (per listener call),
//! `kafka.recovery` (per recovery of a failed record), `kafka.request` (per broker request) and
//! `kafka.rebalance`, at DEBUG level; the background tasks (fetcher, listener container,
//! producer sender, dead-letter publishing) run inside a span naming their client, so events of
//! a spawned task keep its context.

use std::sync::Mutex;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label};
use tokio::time::Instant;

/// The label naming the client: its `client.id`.
pub const CLIENT_ID: &str = "client_id";
/// The label naming a topic.
pub const TOPIC: &str = "topic";
/// The label naming a partition (its index, in decimal).
pub const PARTITION: &str = "partition";

/// Counter, per partition: records returned by `Consumer::poll` (Java: `records-consumed-total`).
pub const CONSUMER_RECORDS_CONSUMED: &str = "kafka.consumer.records-consumed-total";
/// Counter, per partition: record-batch bytes fetched (Java: `bytes-consumed-total`).
pub const CONSUMER_BYTES_CONSUMED: &str = "kafka.consumer.bytes-consumed-total";
/// Gauge, per partition: the high watermark of the last fetch response minus the consumer's
/// position (Java: `records-lag`).
pub const CONSUMER_RECORDS_LAG: &str = "kafka.consumer.records-lag";
/// Counter, per client: Fetch requests answered (Java: `fetch-total`).
pub const CONSUMER_FETCH_TOTAL: &str = "kafka.consumer.fetch-total";
/// Gauge, per client: Fetch requests per second over Java's sample windows (Java: `fetch-rate`).
pub const CONSUMER_FETCH_RATE: &str = "kafka.consumer.fetch-rate";
/// Histogram, per client: seconds from sending a Fetch to its answer (Java: `fetch-latency`).
pub const CONSUMER_FETCH_LATENCY: &str = "kafka.consumer.fetch-latency";
/// Counter, per client: completed group rebalances (Java: `rebalance-total`).
pub const CONSUMER_REBALANCE_TOTAL: &str = "kafka.consumer.rebalance-total";
/// Counter, per client: rebalances that failed (Java: `failed-rebalance-total`).
pub const CONSUMER_FAILED_REBALANCE_TOTAL: &str = "kafka.consumer.failed-rebalance-total";
/// Histogram, per client: seconds a rebalance took, revocation and assignment callbacks
/// included (Java: `rebalance-latency`).
pub const CONSUMER_REBALANCE_LATENCY: &str = "kafka.consumer.rebalance-latency";

/// Counter, per partition: records the listener handled successfully.
pub const LISTENER_RECORDS_HANDLED: &str = "kafka.listener.records-handled-total";
/// Counter, per partition: failed deliveries (every failed handler call of a record, every
/// attempt counted; a failed batch counts its records).
pub const LISTENER_FAILED_DELIVERIES: &str = "kafka.listener.failed-deliveries-total";
/// Counter, per partition: records the recoverer handled (a dead letter acknowledged, a log
/// line written, …).
pub const LISTENER_RECOVERED: &str = "kafka.listener.recovered-total";
/// Counter, per partition: halts (recovery failures reached the cap, or the error handler
/// halted the partition).
pub const LISTENER_HALTS: &str = "kafka.listener.partition-halts-total";
/// Gauge, per container: partitions halted now.
pub const LISTENER_HALTED_PARTITIONS: &str = "kafka.listener.halted-partitions";
/// Gauge, per container: records waiting for redelivery (partitions backing off).
pub const LISTENER_RETRIES_IN_FLIGHT: &str = "kafka.listener.retries-in-flight";
/// Gauge, per container: recoveries started and not yet complete (dead letters awaiting their
/// acknowledgement).
pub const LISTENER_RECOVERIES_IN_FLIGHT: &str = "kafka.listener.recoveries-in-flight";
/// Histogram, per container: seconds an offset commit took.
pub const LISTENER_COMMIT_LATENCY: &str = "kafka.listener.commit-latency";
/// Counter, per container: offset commits that failed.
pub const LISTENER_COMMIT_FAILURES: &str = "kafka.listener.commit-failures-total";
/// Counter, per source partition: dead letters acknowledged by the dead-letter topic. Labelled
/// with the publisher's own `client.id`.
pub const DEAD_LETTERS_PUBLISHED: &str = "kafka.listener.dead-letters-published-total";

/// Counter, per producer: records acknowledged (Java: `record-send-total`).
pub const PRODUCER_RECORD_SEND_TOTAL: &str = "kafka.producer.record-send-total";
/// Gauge, per producer: records sent per second over Java's sample windows (`record-send-rate`).
pub const PRODUCER_RECORD_SEND_RATE: &str = "kafka.producer.record-send-rate";
/// Counter, per producer: records that failed (Java: `record-error-total`).
pub const PRODUCER_RECORD_ERROR_TOTAL: &str = "kafka.producer.record-error-total";
/// Gauge, per producer: failed records per second over the sample windows (`record-error-rate`).
pub const PRODUCER_RECORD_ERROR_RATE: &str = "kafka.producer.record-error-rate";
/// Counter, per producer: records in retried batches, per retry (Java: `record-retry-total`).
pub const PRODUCER_RECORD_RETRY_TOTAL: &str = "kafka.producer.record-retry-total";
/// Gauge, per producer: retried records per second over the sample windows (`record-retry-rate`).
pub const PRODUCER_RECORD_RETRY_RATE: &str = "kafka.producer.record-retry-rate";
/// Histogram, per producer: bytes per batch sent (after compression).
pub const PRODUCER_BATCH_SIZE: &str = "kafka.producer.batch-size";
/// Histogram, per producer: seconds from sending a Produce request to its answer.
pub const PRODUCER_REQUEST_LATENCY: &str = "kafka.producer.request-latency";
/// Gauge, per producer: Produce requests waiting for their answer.
pub const PRODUCER_REQUESTS_IN_FLIGHT: &str = "kafka.producer.requests-in-flight";
/// Gauge, per producer: free bytes of `buffer.memory` (set at start and by `Producer::metrics`).
pub const PRODUCER_BUFFER_AVAILABLE_BYTES: &str = "kafka.producer.buffer-available-bytes";

/// Counter, per partition: records a share consumer's `poll` returned (acquired for it).
pub const SHARE_RECORDS_ACQUIRED: &str = "kafka.share.records-acquired-total";
/// Counter, per partition: records a share consumer acknowledged as accepted (explicitly,
/// implicitly, or by its container), counted when recorded.
pub const SHARE_RECORDS_ACCEPTED: &str = "kafka.share.records-accepted-total";
/// Counter, per partition: records a share consumer released (explicitly, or at `close`).
pub const SHARE_RECORDS_RELEASED: &str = "kafka.share.records-released-total";
/// Counter, per partition: records a share consumer rejected.
pub const SHARE_RECORDS_REJECTED: &str = "kafka.share.records-rejected-total";
/// Counter, per partition: acknowledged records whose acknowledgement failed (refused by the
/// broker, or lost with its request).
pub const SHARE_ACKNOWLEDGEMENT_ERRORS: &str = "kafka.share.acknowledgement-errors-total";
/// Histogram (seconds), per client: each request carrying share acknowledgements (a
/// ShareAcknowledge, or a ShareFetch with acknowledgements), from sending it to its answer.
pub const SHARE_ACKNOWLEDGEMENT_LATENCY: &str = "kafka.share.acknowledgement-latency";

/// Java's `metrics.sample.window.ms` default: a rate's sample window.
pub const SAMPLE_WINDOW: Duration = Duration::from_secs(30);
/// Java's `metrics.num.samples` default: a rate keeps this many windows.
pub const SAMPLES: u32 = 2;

fn client_labels(client_id: &str) -> Vec<Label> {
    vec![Label::new(CLIENT_ID, client_id.to_owned())]
}

fn partition_labels(client_id: &str, topic: &str, partition: i32) -> Vec<Label> {
    vec![
        Label::new(CLIENT_ID, client_id.to_owned()),
        Label::new(TOPIC, topic.to_owned()),
        Label::new(PARTITION, partition.to_string()),
    ]
}

/// A rate over Java's sample windows (`SampledStat` + `Rate`): [`SAMPLES`] windows of
/// [`SAMPLE_WINDOW`]; the rate is the sum over the windows still current divided by the time
/// since the oldest began, counted as at least `SAMPLES - 1` full windows (so a rate does not
/// spike when the first records arrive).
#[derive(Debug)]
pub(crate) struct WindowedRate {
    inner: Mutex<Samples>,
}

#[derive(Debug)]
struct Samples {
    /// (start of the window, sum recorded in it); `None` until first used.
    windows: [Option<(Instant, f64)>; SAMPLES as usize],
    current: usize,
}

impl Samples {
    fn purge(&mut self, now: Instant) {
        let max_age = SAMPLE_WINDOW * SAMPLES;
        for w in self.windows.iter_mut().flatten() {
            if now.saturating_duration_since(w.0) >= max_age {
                *w = (now, 0.0);
            }
        }
    }
}

impl WindowedRate {
    pub(crate) fn new(now: Instant) -> WindowedRate {
        let mut windows = [None; SAMPLES as usize];
        windows[0] = Some((now, 0.0));
        WindowedRate {
            inner: Mutex::new(Samples {
                windows,
                current: 0,
            }),
        }
    }

    /// Adds `value` at `now`.
    pub(crate) fn record(&self, value: f64, now: Instant) {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.purge(now);
        let cur = s.current;
        let complete = match s.windows[cur] {
            Some((start, _)) => now.saturating_duration_since(start) >= SAMPLE_WINDOW,
            None => true,
        };
        if complete {
            let next = (cur + 1) % s.windows.len();
            s.current = next;
            s.windows[next] = Some((now, 0.0));
        }
        let cur = s.current;
        if let Some(w) = &mut s.windows[cur] {
            w.1 += value;
        }
    }

    /// The rate per second at `now`.
    pub(crate) fn rate(&self, now: Instant) -> f64 {
        let mut s = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        s.purge(now);
        let mut total = 0.0;
        let mut oldest = now;
        for (start, value) in s.windows.iter().flatten() {
            total += value;
            oldest = oldest.min(*start);
        }
        let mut elapsed = now.saturating_duration_since(oldest);
        let full = (elapsed.as_nanos() / SAMPLE_WINDOW.as_nanos()) as u32;
        let min_full = SAMPLES - 1;
        if full < min_full {
            elapsed += SAMPLE_WINDOW * (min_full - full);
        }
        let secs = elapsed.as_secs_f64();
        if secs <= 0.0 { 0.0 } else { total / secs }
    }
}

/// A rate and the gauge it is published to.
#[derive(Debug)]
pub(crate) struct RateGauge {
    rate: WindowedRate,
    gauge: Gauge,
}

impl RateGauge {
    fn new(name: &'static str, client_id: &str, now: Instant) -> RateGauge {
        RateGauge {
            rate: WindowedRate::new(now),
            gauge: metrics::gauge!(name, client_labels(client_id)),
        }
    }

    /// Records `value` now and publishes the rate.
    pub(crate) fn record(&self, value: f64) {
        let now = Instant::now();
        self.rate.record(value, now);
        self.gauge.set(self.rate.rate(now));
    }

    /// The rate now (also published).
    pub(crate) fn rate(&self) -> f64 {
        let r = self.rate.rate(Instant::now());
        self.gauge.set(r);
        r
    }
}

/// A consumer's handles (`src/consumer/`).
#[derive(Debug)]
pub(crate) struct ConsumerTelemetry {
    client_id: String,
    fetches: Counter,
    fetch_rate: RateGauge,
    fetch_latency: Histogram,
    rebalances: Counter,
    failed_rebalances: Counter,
    rebalance_latency: Histogram,
}

/// One assigned partition's consumer handles.
#[derive(Debug)]
pub(crate) struct ConsumerPartitionTelemetry {
    records: Counter,
    bytes: Counter,
    lag: Gauge,
}

impl ConsumerTelemetry {
    pub(crate) fn new(client_id: &str) -> ConsumerTelemetry {
        let l = || client_labels(client_id);
        ConsumerTelemetry {
            client_id: client_id.to_owned(),
            fetches: metrics::counter!(CONSUMER_FETCH_TOTAL, l()),
            fetch_rate: RateGauge::new(CONSUMER_FETCH_RATE, client_id, Instant::now()),
            fetch_latency: metrics::histogram!(CONSUMER_FETCH_LATENCY, l()),
            rebalances: metrics::counter!(CONSUMER_REBALANCE_TOTAL, l()),
            failed_rebalances: metrics::counter!(CONSUMER_FAILED_REBALANCE_TOTAL, l()),
            rebalance_latency: metrics::histogram!(CONSUMER_REBALANCE_LATENCY, l()),
        }
    }

    /// The client id the metrics are labelled with.
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The handles of one partition (registered once per assignment of it).
    pub(crate) fn partition(&self, topic: &str, partition: i32) -> ConsumerPartitionTelemetry {
        let l = || partition_labels(&self.client_id, topic, partition);
        ConsumerPartitionTelemetry {
            records: metrics::counter!(CONSUMER_RECORDS_CONSUMED, l()),
            bytes: metrics::counter!(CONSUMER_BYTES_CONSUMED, l()),
            lag: metrics::gauge!(CONSUMER_RECORDS_LAG, l()),
        }
    }

    /// A Fetch answered (or failed) after `latency`.
    pub(crate) fn fetched(&self, latency: Duration) {
        self.fetches.increment(1);
        self.fetch_rate.record(1.0);
        self.fetch_latency.record(latency.as_secs_f64());
    }

    /// A rebalance completed after `took`.
    pub(crate) fn rebalanced(&self, took: Duration) {
        self.rebalances.increment(1);
        self.rebalance_latency.record(took.as_secs_f64());
    }

    /// A rebalance failed.
    pub(crate) fn rebalance_failed(&self) {
        self.failed_rebalances.increment(1);
    }
}

impl ConsumerPartitionTelemetry {
    /// `n` records handed to the application.
    pub(crate) fn consumed(&self, n: usize) {
        self.records.increment(n as u64);
    }

    /// `bytes` of record batches fetched.
    pub(crate) fn fetched_bytes(&self, bytes: usize) {
        self.bytes.increment(bytes as u64);
    }

    /// The lag: `high_watermark - position`, when both are known.
    pub(crate) fn lag(&self, high_watermark: Option<i64>, position: Option<i64>) {
        if let (Some(hw), Some(pos)) = (high_watermark, position) {
            self.lag.set((hw - pos).max(0) as f64);
        }
    }
}

/// A listener container's handles (`src/listener/container/`). Per-partition handles are
/// registered the first time a partition is seen and kept while the container runs.
#[derive(Debug)]
pub(crate) struct ListenerTelemetry {
    client_id: String,
    parts: crate::hash::FastMap<(std::sync::Arc<str>, i32), ListenerPartitionTelemetry>,
    halted: Gauge,
    retries: Gauge,
    recoveries: Gauge,
    commit_latency: Histogram,
    commit_failures: Counter,
}

/// One partition's listener handles.
#[derive(Debug)]
pub(crate) struct ListenerPartitionTelemetry {
    /// Records handled successfully.
    pub(crate) handled: Counter,
    /// Failed deliveries.
    pub(crate) failed: Counter,
    /// Records recovered.
    pub(crate) recovered: Counter,
    /// Halts.
    pub(crate) halts: Counter,
}

impl ListenerTelemetry {
    pub(crate) fn new(client_id: &str) -> ListenerTelemetry {
        let l = || client_labels(client_id);
        ListenerTelemetry {
            client_id: client_id.to_owned(),
            parts: Default::default(),
            halted: metrics::gauge!(LISTENER_HALTED_PARTITIONS, l()),
            retries: metrics::gauge!(LISTENER_RETRIES_IN_FLIGHT, l()),
            recoveries: metrics::gauge!(LISTENER_RECOVERIES_IN_FLIGHT, l()),
            commit_latency: metrics::histogram!(LISTENER_COMMIT_LATENCY, l()),
            commit_failures: metrics::counter!(LISTENER_COMMIT_FAILURES, l()),
        }
    }

    /// The handles of `tp` (registered the first time it is seen).
    pub(crate) fn part(&mut self, tp: &(std::sync::Arc<str>, i32)) -> &ListenerPartitionTelemetry {
        if !self.parts.contains_key(tp) {
            let l = || partition_labels(&self.client_id, &tp.0, tp.1);
            let handles = ListenerPartitionTelemetry {
                handled: metrics::counter!(LISTENER_RECORDS_HANDLED, l()),
                failed: metrics::counter!(LISTENER_FAILED_DELIVERIES, l()),
                recovered: metrics::counter!(LISTENER_RECOVERED, l()),
                halts: metrics::counter!(LISTENER_HALTS, l()),
            };
            self.parts.insert(tp.clone(), handles);
        }
        &self.parts[tp]
    }

    /// The container's gauges: partitions backing off, recoveries in flight, halted partitions.
    pub(crate) fn in_flight(&self, retries: usize, recoveries: usize, halted: usize) {
        self.retries.set(retries as f64);
        self.recoveries.set(recoveries as f64);
        self.halted.set(halted as f64);
    }

    /// An offset commit that took `took`, and whether it succeeded.
    pub(crate) fn committed(&self, took: Duration, ok: bool) {
        self.commit_latency.record(took.as_secs_f64());
        if !ok {
            self.commit_failures.increment(1);
        }
    }
}

/// A share consumer's handles (`src/share/`). Per-partition handles live with the
/// partition's state.
#[derive(Debug)]
pub(crate) struct ShareTelemetry {
    client_id: String,
    ack_latency: Histogram,
}

/// One share partition's handles.
#[derive(Debug)]
pub(crate) struct SharePartitionTelemetry {
    acquired: Counter,
    accepted: Counter,
    released: Counter,
    rejected: Counter,
    ack_errors: Counter,
}

impl ShareTelemetry {
    pub(crate) fn new(client_id: &str) -> ShareTelemetry {
        ShareTelemetry {
            client_id: client_id.to_owned(),
            ack_latency: metrics::histogram!(
                SHARE_ACKNOWLEDGEMENT_LATENCY,
                client_labels(client_id)
            ),
        }
    }

    /// The handles of one partition (registered once, when the partition is first assigned).
    pub(crate) fn partition(&self, topic: &str, partition: i32) -> SharePartitionTelemetry {
        let l = || partition_labels(&self.client_id, topic, partition);
        SharePartitionTelemetry {
            acquired: metrics::counter!(SHARE_RECORDS_ACQUIRED, l()),
            accepted: metrics::counter!(SHARE_RECORDS_ACCEPTED, l()),
            released: metrics::counter!(SHARE_RECORDS_RELEASED, l()),
            rejected: metrics::counter!(SHARE_RECORDS_REJECTED, l()),
            ack_errors: metrics::counter!(SHARE_ACKNOWLEDGEMENT_ERRORS, l()),
        }
    }

    /// A request carrying acknowledgements was answered (or failed) after `took`.
    pub(crate) fn acknowledgements_sent(&self, took: Duration) {
        self.ack_latency.record(took.as_secs_f64());
    }
}

impl SharePartitionTelemetry {
    /// `n` records returned by a poll.
    pub(crate) fn acquired(&self, n: usize) {
        self.acquired.increment(n as u64);
    }

    /// One acknowledgement recorded, by its wire type (1 accept, 2 release, 3 reject).
    pub(crate) fn acknowledged(&self, wire: i8) {
        match wire {
            1 => self.accepted.increment(1),
            2 => self.released.increment(1),
            3 => self.rejected.increment(1),
            _ => {}
        }
    }

    /// `n` acknowledgements failed.
    pub(crate) fn acknowledgements_failed(&self, n: usize) {
        self.ack_errors.increment(n as u64);
    }
}

/// A dead letter for `(topic, partition)` was acknowledged; `client_id`: the publisher's.
pub(crate) fn dead_letter_published(client_id: &str, topic: &str, partition: i32) {
    metrics::counter!(
        DEAD_LETTERS_PUBLISHED,
        partition_labels(client_id, topic, partition)
    )
    .increment(1);
}

/// A producer's handles (`src/producer/metrics.rs`).
#[derive(Debug)]
pub(crate) struct ProducerTelemetry {
    pub(crate) send_total: Counter,
    pub(crate) send_rate: RateGauge,
    pub(crate) error_total: Counter,
    pub(crate) error_rate: RateGauge,
    pub(crate) retry_total: Counter,
    pub(crate) retry_rate: RateGauge,
    pub(crate) batch_size: Histogram,
    pub(crate) request_latency: Histogram,
    pub(crate) in_flight: Gauge,
    pub(crate) buffer_available: Gauge,
}

impl ProducerTelemetry {
    pub(crate) fn new(client_id: &str, now: Instant) -> ProducerTelemetry {
        let l = || client_labels(client_id);
        ProducerTelemetry {
            send_total: metrics::counter!(PRODUCER_RECORD_SEND_TOTAL, l()),
            send_rate: RateGauge::new(PRODUCER_RECORD_SEND_RATE, client_id, now),
            error_total: metrics::counter!(PRODUCER_RECORD_ERROR_TOTAL, l()),
            error_rate: RateGauge::new(PRODUCER_RECORD_ERROR_RATE, client_id, now),
            retry_total: metrics::counter!(PRODUCER_RECORD_RETRY_TOTAL, l()),
            retry_rate: RateGauge::new(PRODUCER_RECORD_RETRY_RATE, client_id, now),
            batch_size: metrics::histogram!(PRODUCER_BATCH_SIZE, l()),
            request_latency: metrics::histogram!(PRODUCER_REQUEST_LATENCY, l()),
            in_flight: metrics::gauge!(PRODUCER_REQUESTS_IN_FLIGHT, l()),
            buffer_available: metrics::gauge!(PRODUCER_BUFFER_AVAILABLE_BYTES, l()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_counts_at_least_one_full_window_then_slides() {
        let t0 = Instant::now();
        let r = WindowedRate::new(t0);
        assert_eq!(r.rate(t0), 0.0);
        // 60 events in the first second: Java divides by one full window, not by 1 s.
        r.record(60.0, t0 + Duration::from_secs(1));
        let at = t0 + Duration::from_secs(1);
        assert!((r.rate(at) - 60.0 / 31.0).abs() < 1e-9, "{}", r.rate(at));
        // A second window begins after 30 s; both count.
        r.record(30.0, t0 + Duration::from_secs(40));
        let at = t0 + Duration::from_secs(45);
        assert!((r.rate(at) - 90.0 / 45.0).abs() < 1e-9, "{}", r.rate(at));
        // The third window replaces the first.
        r.record(10.0, t0 + Duration::from_secs(70));
        let at = t0 + Duration::from_secs(75);
        // Windows: [40 s: 30], [70 s: 10]; the oldest began at 40 s.
        assert!((r.rate(at) - 40.0 / 35.0).abs() < 1e-9, "{}", r.rate(at));
        // Two windows later with nothing recorded: every window is obsolete.
        let at = t0 + Duration::from_secs(200);
        assert_eq!(r.rate(at), 0.0);
    }
}

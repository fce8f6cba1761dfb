//! Producer metrics with the Java client's names, kept in atomics updated once per batch.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use crate::telemetry::ProducerTelemetry;

/// A snapshot of the producer's metrics ([`Producer::metrics`](super::Producer::metrics)).
///
/// Names follow the Java producer's `producer-metrics` group. The `*_rate` fields are Java's:
/// per second over its sample windows (2 windows of 30 s, [`crate::telemetry::SAMPLE_WINDOW`]);
/// the `*_rate_lifetime` fields are averages per second since the producer started. The same
/// values are published through the [`metrics`] facade as `kafka.producer.<name>` (counters,
/// gauges and histograms, labelled with the producer's `client_id`; see
/// [`crate::telemetry`]), so any `metrics` exporter (Prometheus, …) picks them up.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ProducerMetrics {
    /// `record-send-total`: records acknowledged (or written, with acks=0).
    pub record_send_total: u64,
    /// `record-send-rate`: per second over the sample windows (Java's).
    pub record_send_rate: f64,
    /// `record-send-total` per second since the producer started.
    pub record_send_rate_lifetime: f64,
    /// `record-error-total`: records that failed.
    pub record_error_total: u64,
    /// `record-error-rate`: per second over the sample windows (Java's).
    pub record_error_rate: f64,
    /// `record-error-total` per second since the producer started.
    pub record_error_rate_lifetime: f64,
    /// `record-retry-total`: records in batches that were retried (counted per retry).
    pub record_retry_total: u64,
    /// `record-retry-rate`: per second over the sample windows (Java's).
    pub record_retry_rate: f64,
    /// `record-retry-total` per second since the producer started.
    pub record_retry_rate_lifetime: f64,
    /// `batch-size-avg`: average bytes per batch sent (after compression).
    pub batch_size_avg: f64,
    /// `compression-rate-avg`: average compressed/uncompressed size ratio of the batches.
    pub compression_rate_avg: f64,
    /// `request-latency-avg`: average produce request latency.
    pub request_latency_avg: Duration,
    /// `request-latency-max`.
    pub request_latency_max: Duration,
    /// `buffer-available-bytes`: free bytes of `buffer.memory`.
    pub buffer_available_bytes: u64,
    /// `requests-in-flight`: produce requests waiting for their response.
    pub requests_in_flight: u64,
}

#[derive(Debug)]
pub(crate) struct Counters {
    started: Instant,
    pub(crate) record_send: AtomicU64,
    pub(crate) record_error: AtomicU64,
    pub(crate) record_retry: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) batch_bytes: AtomicU64,
    pub(crate) uncompressed_bytes: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) latency_us_sum: AtomicU64,
    pub(crate) latency_us_max: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    /// The `metrics` facade's handles and the windowed rates.
    telemetry: ProducerTelemetry,
}

impl Counters {
    /// Counters of a producer whose connections use `client_id`.
    pub(crate) fn new(client_id: &str) -> Counters {
        let started = Instant::now();
        Counters {
            telemetry: ProducerTelemetry::new(client_id, started),
            started,
            record_send: AtomicU64::new(0),
            record_error: AtomicU64::new(0),
            record_retry: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batch_bytes: AtomicU64::new(0),
            uncompressed_bytes: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            latency_us_sum: AtomicU64::new(0),
            latency_us_max: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
        }
    }

    pub(crate) fn sent(&self, records: u64) {
        self.record_send.fetch_add(records, Relaxed);
        self.telemetry.send_total.increment(records);
        self.telemetry.send_rate.record(records as f64);
    }

    pub(crate) fn failed(&self, records: u64) {
        self.record_error.fetch_add(records, Relaxed);
        self.telemetry.error_total.increment(records);
        self.telemetry.error_rate.record(records as f64);
    }

    pub(crate) fn retried(&self, records: u64) {
        self.record_retry.fetch_add(records, Relaxed);
        self.telemetry.retry_total.increment(records);
        self.telemetry.retry_rate.record(records as f64);
    }

    pub(crate) fn batch(&self, bytes: usize, uncompressed: usize) {
        self.batches.fetch_add(1, Relaxed);
        self.batch_bytes.fetch_add(bytes as u64, Relaxed);
        self.uncompressed_bytes
            .fetch_add(uncompressed as u64, Relaxed);
        self.telemetry.batch_size.record(bytes as f64);
    }

    pub(crate) fn request_started(&self) {
        let n = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.telemetry.in_flight.set(n as f64);
    }

    pub(crate) fn request_done(&self, latency: Duration) {
        let n = self.in_flight.fetch_sub(1, Relaxed).saturating_sub(1);
        self.telemetry.in_flight.set(n as f64);
        let us = latency.as_micros() as u64;
        self.requests.fetch_add(1, Relaxed);
        self.latency_us_sum.fetch_add(us, Relaxed);
        self.latency_us_max.fetch_max(us, Relaxed);
        self.telemetry.request_latency.record(latency.as_secs_f64());
    }

    /// Publishes the free bytes of `buffer.memory` (at start, and with each snapshot).
    pub(crate) fn buffer_available(&self, bytes: u64) {
        self.telemetry.buffer_available.set(bytes as f64);
    }

    pub(crate) fn snapshot(&self, buffer_available: u64) -> ProducerMetrics {
        self.buffer_available(buffer_available);
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let send = self.record_send.load(Relaxed);
        let error = self.record_error.load(Relaxed);
        let retry = self.record_retry.load(Relaxed);
        let batches = self.batches.load(Relaxed);
        let bytes = self.batch_bytes.load(Relaxed);
        let raw = self.uncompressed_bytes.load(Relaxed);
        let requests = self.requests.load(Relaxed);
        ProducerMetrics {
            record_send_total: send,
            record_send_rate: self.telemetry.send_rate.rate(),
            record_send_rate_lifetime: send as f64 / secs,
            record_error_total: error,
            record_error_rate: self.telemetry.error_rate.rate(),
            record_error_rate_lifetime: error as f64 / secs,
            record_retry_total: retry,
            record_retry_rate: self.telemetry.retry_rate.rate(),
            record_retry_rate_lifetime: retry as f64 / secs,
            batch_size_avg: if batches == 0 {
                0.0
            } else {
                bytes as f64 / batches as f64
            },
            compression_rate_avg: if raw == 0 {
                1.0
            } else {
                bytes as f64 / raw as f64
            },
            request_latency_avg: Duration::from_micros(
                self.latency_us_sum
                    .load(Relaxed)
                    .checked_div(requests)
                    .unwrap_or(0),
            ),
            request_latency_max: Duration::from_micros(self.latency_us_max.load(Relaxed)),
            buffer_available_bytes: buffer_available,
            requests_in_flight: self.in_flight.load(Relaxed),
        }
    }
}

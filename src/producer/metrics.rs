//! Producer metrics with the Java client's names, kept in atomics updated once per batch.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

/// A snapshot of the producer's metrics ([`Producer::metrics`](super::Producer::metrics)).
///
/// Names follow the Java producer's `producer-metrics` group; rates are per second since the
/// producer started. The same values are published through the [`metrics`] facade as
/// `kafka.producer.<name>` (counters and gauges), so any `metrics` exporter (Prometheus, …)
/// picks them up.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct ProducerMetrics {
    /// `record-send-total`: records acknowledged (or written, with acks=0).
    pub record_send_total: u64,
    /// `record-send-rate`.
    pub record_send_rate: f64,
    /// `record-error-total`: records that failed.
    pub record_error_total: u64,
    /// `record-error-rate`.
    pub record_error_rate: f64,
    /// `record-retry-total`: records in batches that were retried (counted per retry).
    pub record_retry_total: u64,
    /// `record-retry-rate`.
    pub record_retry_rate: f64,
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
}

impl Counters {
    pub(crate) fn new() -> Counters {
        Counters {
            started: Instant::now(),
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
        metrics::counter!("kafka.producer.record-send-total").increment(records);
    }

    pub(crate) fn failed(&self, records: u64) {
        self.record_error.fetch_add(records, Relaxed);
        metrics::counter!("kafka.producer.record-error-total").increment(records);
    }

    pub(crate) fn retried(&self, records: u64) {
        self.record_retry.fetch_add(records, Relaxed);
        metrics::counter!("kafka.producer.record-retry-total").increment(records);
    }

    pub(crate) fn batch(&self, bytes: usize, uncompressed: usize) {
        self.batches.fetch_add(1, Relaxed);
        self.batch_bytes.fetch_add(bytes as u64, Relaxed);
        self.uncompressed_bytes
            .fetch_add(uncompressed as u64, Relaxed);
        metrics::histogram!("kafka.producer.batch-size").record(bytes as f64);
    }

    pub(crate) fn request_started(&self) {
        let n = self.in_flight.fetch_add(1, Relaxed) + 1;
        metrics::gauge!("kafka.producer.requests-in-flight").set(n as f64);
    }

    pub(crate) fn request_done(&self, latency: Duration) {
        let n = self.in_flight.fetch_sub(1, Relaxed).saturating_sub(1);
        metrics::gauge!("kafka.producer.requests-in-flight").set(n as f64);
        let us = latency.as_micros() as u64;
        self.requests.fetch_add(1, Relaxed);
        self.latency_us_sum.fetch_add(us, Relaxed);
        self.latency_us_max.fetch_max(us, Relaxed);
        metrics::histogram!("kafka.producer.request-latency").record(latency.as_secs_f64());
    }

    pub(crate) fn snapshot(&self, buffer_available: u64) -> ProducerMetrics {
        metrics::gauge!("kafka.producer.buffer-available-bytes").set(buffer_available as f64);
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
            record_send_rate: send as f64 / secs,
            record_error_total: error,
            record_error_rate: error as f64 / secs,
            record_retry_total: retry,
            record_retry_rate: retry as f64 / secs,
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

//! The suites on rekafka's embedded mock cluster (feature `mock`), one test binary: each former
//! `tests/<name>.rs` is a module here, so the build links one executable instead of eleven.
//! Each module keeps its own docs; run one with its module path as the filter:
//!
//! ```text
//! cargo test --features mock --test mock consumer_mock::
//! ```
//!
//! `mock_hostile.rs` stays a binary of its own: it installs a process-wide panic hook that
//! counts every panic in the process, which the other suites' deliberate panics would trip.
//! `metrics_mock.rs` too: it checks the tracing spans of its runs through a scoped subscriber,
//! and tracing's per-callsite interest cache is process-wide: a span site first reached by
//! another suite's thread while the scoped subscriber was being registered stayed disabled for
//! it (a fresh-clone run lost every `kafka.poll` span that way).

mod admin_mock;
mod consumer_mock;
mod consumer_stream_mock;
mod group_consumer_protocol_faults_mock;
mod group_consumer_protocol_mock;
mod listener_mock;
mod mock_client;
mod mock_cluster;
mod mock_librdkafka;
mod producer_mock;
mod txn_mock;

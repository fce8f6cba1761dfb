//! # rekafka
//!
//! A pure-Rust Apache Kafka client with error handling built in.
//!
//! The crate is built in layers, each using only the public API of the layers below it:
//!
//! * [`protocol`]: the wire protocol without I/O: framing, typed requests and responses over the
//!   `kafka-protocol` crate's message types, version negotiation, and our own record-batch codec
//!   ([`protocol::record`]).
//! * [`connection`]: one pipelined connection per broker (a reader and a writer task, an
//!   in-flight table, timeouts, reconnect back-off), cancel safe.
//! * [`cluster`]: bootstrap, the metadata cache and its refresher, leader and coordinator
//!   lookup, and the one decision of how to recover from an error ([`cluster::recovery_for`]).
//! * [`client`]: the entry point, [`Client`] and its builder (typed settings and Java-style
//!   properties).
//! * [`admin`]: the admin client (topics, configs, partitions, offsets, records, groups).
//! * `mock` (cargo feature `mock`): an embedded Kafka cluster with fault injection, for tests.
//! * `protocol::unstable` (cargo feature `unstable-protocol`): the `kafka-protocol` crate's
//!   types and the raw request methods (`Connection::send`, …). **Not covered by semver**: it
//!   follows kafka-protocol's releases. Everything else is the stable API, which never exposes
//!   a `kafka-protocol` type.
//! * [`producer`]: batching, partitioning, compression, retries, idempotence, a circuit
//!   breaker and metrics.
//! * [`transaction`]: the transactional producer (`init/begin/commit/abort`, offsets in a
//!   transaction, KIP-447 fencing, KIP-1050 error classes).
//! * [`consumer`]: the consumer: manual assignment or group subscription, a background fetcher
//!   that reads ahead into a bounded buffer, seek/pause/resume, commits, rebalance callbacks.
//! * [`group`]: consumer-group membership (classic protocol), assignors, offset commits.
//! * [`error`]: the one [`Error`] type with Kafka's error taxonomy (KIP-1050).
//! * [`telemetry`]: the metric names (the `metrics` facade) and tracing spans of every layer.
//!
//! See `ARCHITECTURE.md` in the repository for the module map, the tasks that run and how data
//! flows.
//!
//! # Security: TLS and SASL
//!
//! Connections speak Kafka's four `security.protocol`s: PLAINTEXT, SSL (TLS with rustls, server
//! verification against `ssl.ca.location` or the built-in Mozilla roots, SNI, client
//! certificates for mTLS), SASL_PLAINTEXT and SASL_SSL (SASL PLAIN, SCRAM-SHA-256,
//! SCRAM-SHA-512, and OAUTHBEARER with a token callback; sessions with a lifetime are
//! re-authenticated before they expire, KIP-368). The settings live in
//! [`connection::SecurityConfig`] and take the Java/librdkafka property names:
//!
//! ```
//! use rekafka::connection::ConnectionConfig;
//!
//! let mut config = ConnectionConfig::default();
//! for (key, value) in [
//!     ("security.protocol", "SASL_SSL"),
//!     ("sasl.mechanism", "SCRAM-SHA-512"),
//!     ("sasl.username", "alice"),
//!     ("sasl.password", "alice-secret"),
//!     ("ssl.ca.location", "/etc/kafka/ca.pem"),
//! ] {
//!     config.security.apply_property(key, value)?;
//! }
//! config.validate()?;
//! # Ok::<(), rekafka::Error>(())
//! ```
//!
//! or typed, e.g. OAUTHBEARER with a token provider:
//!
//! ```
//! use std::time::Duration;
//! use rekafka::connection::ConnectionConfig;
//! use rekafka::connection::security::{
//!     OAuthBearerToken, SaslConfig, SecurityConfig, SecurityProtocol,
//! };
//!
//! let config = ConnectionConfig::default().with_security(
//!     SecurityConfig::default()
//!         .with_protocol(SecurityProtocol::SaslSsl)
//!         .with_sasl(SaslConfig::oauthbearer(|| async {
//!             // Ask the identity provider; called again before the token expires.
//!             Ok(OAuthBearerToken::new("eyJhbGciOi...", Duration::from_secs(3600)))
//!         })),
//! );
//! assert!(config.validate().is_ok());
//! ```
//!
//! A failed authentication (bad credentials, a certificate either side rejects) is
//! [`ErrorKind::Authentication`]: [`Error::is_fatal`], never retried behind the caller's back.
//! Passwords and tokens never appear in `Debug` output. TLS is the cargo feature `tls`, on by
//! default.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod client;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub(crate) mod hash;
pub mod listener;
#[cfg(feature = "mock")]
pub mod mock;
pub mod producer;
pub mod protocol;
pub mod share;
pub(crate) mod task;
pub mod telemetry;
/// The transactional producer; an alias of [`producer::transactional`].
pub use producer::transactional as transaction;

pub use client::{Client, ClientBuilder, ClientConfig};
pub use error::{Error, ErrorKind, KafkaCode, Result};

/// The README's Rust snippets, compiled as doc tests (`cargo test --doc`), so the first thing a
/// user reads keeps compiling.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The migration guides' Rust snippets (`docs/migrating-from-*.md`), compiled as doc tests so
/// every name they cite stays true.
#[cfg(doctest)]
#[doc = include_str!("../docs/migrating-from-rust-rdkafka.md")]
pub struct MigratingFromRdkafkaDoctests;

/// See [`MigratingFromRdkafkaDoctests`].
#[cfg(doctest)]
#[doc = include_str!("../docs/migrating-from-spring-kafka.md")]
pub struct MigratingFromSpringKafkaDoctests;

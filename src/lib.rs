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
//! * [`consumer`]: the consumer: manual assignment or group subscription, a background fetcher
//!   that reads ahead into a bounded buffer, seek/pause/resume, commits, rebalance callbacks.
//! * [`group`]: consumer-group membership (classic protocol), assignors, offset commits.
//! * [`error`]: the one [`Error`] type with Kafka's error taxonomy (KIP-1050).
//!
//! See `ARCHITECTURE.md` in the repository for the module map, the tasks that run and how data
//! flows.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cluster;
pub mod connection;
pub mod consumer;
pub mod error;
pub mod group;
pub mod protocol;

pub use error::{Error, ErrorKind, KafkaCode, Result};

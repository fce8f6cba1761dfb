//! The Kafka wire protocol, without I/O.

pub mod record;

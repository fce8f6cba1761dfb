//! Support code for the failover suite (`tests/failover_kafka.rs`): the invariant checker, the
//! fault proxy, the suite's own three-node cluster, and tracked produce / log read-back.
#![allow(dead_code)]

pub mod cluster;
pub mod invariants;
pub mod io;
pub mod proxy;

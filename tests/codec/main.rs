//! The record and fetch decoding suites that need no broker, one test binary: each former
//! `tests/<name>.rs` is a module here. Run one with its module path as the filter:
//!
//! ```text
//! cargo test --test codec record_props::
//! ```
//!
//! `hostile_frames.rs` and `hostile_reader.rs` stay binaries of their own: each installs a
//! `#[global_allocator]` that records the largest allocation in the process, which other
//! suites running beside them would disturb.

mod consumer_decode;
mod record_corpus;
mod record_props;

//! The listener container's suites on the embedded mock cluster and on in-memory consumers,
//! one test binary: each former `tests/<name>.rs` is a module here. Run one with its module
//! path as the filter:
//!
//! ```text
//! cargo test --features mock --test listener listener_errors::
//! ```
//!
//! The dead-letter suite's support (`tests/listener_dlt_support/`) is declared once here.
//! `listener_mock.rs` is in the `mock` binary (`tests/mock/`); `listener_broker.rs` stays a
//! binary of its own (scripts/test.sh runs every `*_broker.rs` twice).

#[path = "../listener_dlt_support/mod.rs"]
mod listener_dlt_support;

mod listener_defects;
mod listener_dlt;
mod listener_errors;
mod listener_handlers;
mod listener_handlers_extra;
mod listener_mem;
mod listener_txn;
mod listener_typed;

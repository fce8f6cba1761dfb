//! The suites against in-process fake brokers, one test binary: each former
//! `tests/<name>.rs` is a module here. Run one with its module path as the filter:
//!
//! ```text
//! cargo test --features mock --test fake producer_fake::
//! ```
//!
//! The fake broker (`tests/support/fake_broker.rs`) and the fake SASL server
//! (`tests/security_support/fake_sasl.rs`) are declared once here and used by the suites as
//! `crate::fake_broker` and `crate::fake_sasl`.

#[path = "../support/fake_broker.rs"]
mod fake_broker;
#[path = "../security_support/fake_sasl.rs"]
mod fake_sasl;
#[path = "../security_support/mod.rs"]
mod security_support;

mod admin_fake;
mod connection_fake;
mod consumer_fake;
mod producer_fake;
mod security_sasl_fake;

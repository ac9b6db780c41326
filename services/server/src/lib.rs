//! The `coffer` binary as a library: configuration, the service targets it can run, their
//! wiring ([`startup::Application`]), and the command-line client. `main.rs` only parses
//! arguments and calls in here, so tests start exactly the production wiring.

pub mod authn;
pub mod cli;
pub mod client;
pub mod config;
pub mod diag;
pub mod startup;
pub mod storage_keys;
pub mod tls;

/// Every service schema this binary knows, in migration order.
pub const SCHEMAS: &[coffer_db::Schema] = &[
    coffer_enrollment::SCHEMA,
    coffer_credentials::SCHEMA,
    coffer_scheduling::SCHEMA,
    coffer_audit::SCHEMA,
    diag::SCHEMA,
];

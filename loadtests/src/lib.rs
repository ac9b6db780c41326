//! Load tests of Coffer's building blocks. Each binary in `src/bin/` is one benchmark, run by
//! `cargo xtask bench <name>` in release mode against the private stack (real Postgres and
//! NATS, a fresh database per run through `coffer-testkit`).
//!
//! This library holds what the benchmarks share: a small event-sourced service of their own
//! ([`meter`], with its migrations in `loadtests/migrations/`) and the arithmetic of reporting
//! ([`report`]).

pub mod load;
pub mod meter;
pub mod report;

use coffer_db::{Schema, ServiceName};

/// The benchmarks' own service: schema `coffer_bench`, roles `coffer_bench` and
/// `coffer_bench_relay`.
pub const SERVICE: ServiceName = ServiceName("bench");

static BENCH_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The benchmark service's schema: the event store's tables plus `meter_totals` (the
/// [`meter::Totals`] projection) and `plain_rows` (the plain-INSERT baseline).
pub const SCHEMAS: &[Schema] = &[Schema {
    service: SERVICE,
    migrators: &[&coffer_eventstore::MIGRATOR, &BENCH_MIGRATOR],
}];

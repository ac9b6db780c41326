//! Load tests of Coffer's building blocks. Each binary in `src/bin/` is one benchmark, run by
//! `cargo xtask bench <name>` in release mode against the private stack (real Postgres and
//! NATS, a fresh database per run through `coffer-testkit`).
//!
//! This library holds what the benchmarks share: a small event-sourced service of their own
//! ([`meter`], with its migrations in `loadtests/migrations/`), load generators ([`load`]),
//! the facts printed about where a run happened ([`facts`]), the arithmetic and layout of
//! reporting ([`report`]) and a real `coffer` server booted in-process with the clients' side of
//! authenticating to it ([`server`]).

pub mod facts;
pub mod load;
pub mod meter;
pub mod report;
pub mod server;

use anyhow::Context as _;
use coffer_db::{Schema, ServiceName};
use coffer_telemetry::{TelemetryConfig, TelemetryGuard};
use coffer_testkit::TestDb;

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

/// Installs a benchmark's telemetry: warnings reach stderr, and real trace contexts (as a
/// service has) end up in every event and outbox row. Hold the guard for the life of `main`.
pub fn init_telemetry() -> anyhow::Result<TelemetryGuard> {
    coffer_telemetry::init(&TelemetryConfig {
        filter: "warn".to_owned(),
        service_name: "coffer-bench".to_owned(),
        ..TelemetryConfig::default()
    })
    .context("initialise telemetry")
}

/// Drops a benchmark's database, forcing off any connection still open; a failure only leaves
/// it behind, with a warning.
pub async fn drop_database(t: &TestDb) {
    let url = coffer_testkit::superuser_url();
    match sqlx::PgPool::connect(&url).await {
        Ok(pool) => {
            let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", t.name))
                .execute(&pool)
                .await;
            if let Err(e) = dropped {
                tracing::warn!(database = %t.name, error = %e, "could not drop the benchmark database");
            }
            pool.close().await;
        }
        Err(e) => {
            tracing::warn!(database = %t.name, error = %e, "could not drop the benchmark database");
        }
    }
}

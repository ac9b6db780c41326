//! PostgreSQL access for Coffer services: per-service schemas and login roles, migrations run
//! by a separate owner role, and the one helper that sets the tenant.
//!
//! Layout (DESIGN §4): every service `X` owns schema `coffer_X`, connects as login role
//! `coffer_X` (not owner, not superuser, no BYPASSRLS), and its outbox relay connects as
//! `coffer_X_relay`, which may read and delete outbox rows of every tenant and nothing else.
//! The owner role (`coffer_owner` by default) owns the schemas and runs migrations.
//!
//! **Only this crate sets the tenant.** Tenant tables carry `org_id` and a forced row-level
//! security policy comparing it with `current_setting('coffer.org_id', true)`; [`Database::begin_tenant`]
//! opens a transaction and sets that setting with `set_config(…, true)`, so it ends with the
//! transaction and a pooled connection never carries a tenant into its next use.

mod migrate;

pub use migrate::{Schema, migrate, missing_migrations};

use std::time::Duration;

use coffer_types::OrgId;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::mpsc;

/// Errors from connecting, migrating or opening tenant transactions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL in the configuration does not parse.
    #[error("database.url is not a valid postgres URL: {0}")]
    InvalidUrl(String),
    /// The database could not be reached or refused the login.
    #[error("cannot connect to postgres at {target} as {role}: {cause}")]
    Connect {
        /// host:port/database, without credentials.
        target: String,
        /// The login role used.
        role: String,
        /// The driver's error (in the message, so one line says it all).
        cause: sqlx::Error,
    },
    /// A migration failed to apply.
    #[error("migrating schema {schema}: {cause}")]
    Migrate {
        /// The schema being migrated.
        schema: String,
        /// The migrator's error.
        cause: sqlx::migrate::MigrateError,
    },
    /// Any other database error.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

/// Where the database is and how to log in. Parsed from `[database]` in the server config.
#[derive(Clone, serde::Deserialize)]
pub struct DbConfig {
    /// `postgres://OWNER@HOST:PORT/DATABASE`. The user in the URL is the owner role that runs
    /// migrations and admin commands; services log in to the same host and database with
    /// their own roles.
    pub url: String,
    /// Password for the service and relay roles, if the server requires one.
    #[serde(default)]
    pub service_password: Option<SecretString>,
    /// Connections per service pool.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// How long to wait for a connection before failing a request.
    #[serde(default = "default_acquire_timeout", with = "humantime_serde")]
    pub acquire_timeout: Duration,
}

fn default_max_connections() -> u32 {
    10
}

fn default_acquire_timeout() -> Duration {
    Duration::from_secs(5)
}

impl std::fmt::Debug for DbConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbConfig")
            .field("url", &redact_url(&self.url))
            .field(
                "service_password",
                &self.service_password.as_ref().map(|_| "[redacted]"),
            )
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl DbConfig {
    /// A config for `url` with default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            service_password: None,
            max_connections: default_max_connections(),
            acquire_timeout: default_acquire_timeout(),
        }
    }

    /// Connect options for the owner role named in the URL.
    pub fn owner_options(&self) -> Result<PgConnectOptions, Error> {
        self.url
            .parse::<PgConnectOptions>()
            .map_err(|e| Error::InvalidUrl(e.to_string()))
            .map(|o| o.application_name("coffer-owner"))
    }

    /// Connect options for `role`, with `search_path` set to `schema`.
    pub fn role_options(&self, role: &str, schema: &str) -> Result<PgConnectOptions, Error> {
        let mut opts = self.owner_options()?.username(role).application_name(role);
        if let Some(password) = &self.service_password {
            opts = opts.password(password.expose_secret());
        }
        Ok(opts.options([("search_path", schema)]))
    }

    /// `host:port/database` for error messages: never the password.
    pub fn target(&self) -> String {
        redact_url(&self.url)
    }
}

/// Renders a postgres URL as `host:port/database`, dropping user and password.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => format!(
            "{}:{}{}",
            u.host_str().unwrap_or("?"),
            u.port().unwrap_or(5432),
            u.path()
        ),
        Err(_) => "<unparseable url>".to_owned(),
    }
}

/// The name of the schema, login role and relay role of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceName(pub &'static str);

impl ServiceName {
    /// `coffer_<service>`: both the schema and the service's login role.
    pub fn schema(&self) -> String {
        format!("coffer_{}", self.0)
    }

    /// `coffer_<service>`: the login role the service runs as.
    pub fn role(&self) -> String {
        self.schema()
    }

    /// `coffer_<service>_relay`: the outbox relay's login role.
    pub fn relay_role(&self) -> String {
        format!("coffer_{}_relay", self.0)
    }

    /// The `LISTEN` channel the relay waits on for new outbox rows.
    pub fn outbox_channel(&self) -> String {
        format!("coffer_{}_outbox", self.0)
    }
}

/// A service's connection pool, logged in as the service role with its schema on the
/// search path.
#[derive(Debug, Clone)]
pub struct Database {
    pool: PgPool,
    service: ServiceName,
    /// Requests a relay wake-up (`NOTIFY`); capacity 1, so requests made while one is still
    /// queued coalesce into it. See [`TenantTx::commit`].
    wake: mpsc::Sender<()>,
}

impl Database {
    /// Connects a pool as `coffer_<service>` and checks that it can log in.
    pub async fn connect(config: &DbConfig, service: ServiceName) -> Result<Self, Error> {
        let role = service.role();
        let opts = config.role_options(&role, &service.schema())?;
        let connect_error = |cause| Error::Connect {
            target: config.target(),
            role: role.clone(),
            cause,
        };
        // One direct connection first: a pool would report an unreachable server only as
        // "timed out", hiding the reason (refused, unknown role, bad password).
        PgConnection::connect_with(&opts)
            .await
            .map_err(connect_error)?
            .close()
            .await
            .map_err(connect_error)?;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(opts)
            .await
            .map_err(connect_error)?;
        Ok(Self::from_pool(pool, service))
    }

    /// Wraps an existing pool (tests that need unusual pool settings).
    ///
    /// Must be called inside a tokio runtime: it starts the task that sends relay wake-ups,
    /// which ends when the last clone of this `Database` is dropped.
    pub fn from_pool(pool: PgPool, service: ServiceName) -> Self {
        let (wake, mut requests) = mpsc::channel::<()>(1);
        let notifier = pool.clone();
        tokio::spawn(async move {
            while requests.recv().await.is_some() {
                let woke = sqlx::query("SELECT pg_notify($1, '')")
                    .bind(service.outbox_channel())
                    .execute(&notifier)
                    .await;
                if let Err(e) = woke {
                    tracing::debug!(error = %e, "outbox wake-up not sent; the relay's poll will pick the rows up");
                }
            }
        });
        Self {
            pool,
            service,
            wake,
        }
    }

    /// The service this pool belongs to.
    pub fn service(&self) -> ServiceName {
        self.service
    }

    /// The underlying pool, for queries that touch no tenant table.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Opens a transaction scoped to `org`: every tenant table it touches shows and accepts
    /// only rows of that org. This is the only way service code sets a tenant.
    ///
    /// Also records `org_id` on the current tracing span, so every request that touches
    /// tenant data carries its org in logs and traces.
    pub async fn begin_tenant(&self, org: OrgId) -> Result<TenantTx, Error> {
        // One round trip for both. The org is inlined because BEGIN cannot take
        // parameters; it is an `OrgId`, whose Display is always a canonical UUID.
        let tx = self
            .pool
            .begin_with(format!(
                "BEGIN; SELECT set_config('coffer.org_id', '{org}', true)"
            ))
            .await?;
        coffer_telemetry::record_org_id(org);
        Ok(TenantTx {
            tx,
            org,
            outbox_written: false,
            wake: self.wake.clone(),
        })
    }
}

/// A transaction with the tenant set. Dereferences to the sqlx transaction; commit it with
/// [`TenantTx::commit`]. Dropping it rolls back.
#[derive(Debug)]
pub struct TenantTx {
    tx: Transaction<'static, Postgres>,
    org: OrgId,
    /// Set by the event store when this transaction wrote outbox rows.
    outbox_written: bool,
    /// The [`Database`]'s wake-up requests.
    wake: mpsc::Sender<()>,
}

impl TenantTx {
    /// The org this transaction is scoped to.
    pub fn org(&self) -> OrgId {
        self.org
    }

    /// Records that this transaction wrote outbox rows, so [`TenantTx::commit`] wakes the
    /// relay.
    pub fn note_outbox_write(&mut self) {
        self.outbox_written = true;
    }

    /// Commits the transaction; if it wrote outbox rows, then asks for the service's relay
    /// to be woken.
    ///
    /// The `NOTIFY` is sent after the commit by a background task, not inside the
    /// transaction: Postgres serialises the commits of notifying transactions on a
    /// cluster-wide lock, which would serialise every append. Requests coalesce: one queued
    /// while another is queued is dropped, because the queued one is sent after this commit
    /// too. A lost wake-up costs latency only: the relay also polls.
    pub async fn commit(self) -> Result<(), Error> {
        self.tx.commit().await?;
        if self.outbox_written {
            let _ = self.wake.try_send(());
        }
        Ok(())
    }

    /// Rolls the transaction back.
    pub async fn rollback(self) -> Result<(), Error> {
        self.tx.rollback().await.map_err(Error::from)
    }

    /// The connection, for sqlx queries: `query.execute(tx.conn())`.
    pub fn conn(&mut self) -> &mut sqlx::PgConnection {
        &mut self.tx
    }
}

impl std::ops::Deref for TenantTx {
    type Target = Transaction<'static, Postgres>;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl std::ops::DerefMut for TenantTx {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// Checks that the database answers, for boot checks and readiness.
pub async fn ping(pool: &PgPool) -> Result<(), Error> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_follow_the_layout() {
        let s = ServiceName("enrollment");
        assert_eq!(s.schema(), "coffer_enrollment");
        assert_eq!(s.role(), "coffer_enrollment");
        assert_eq!(s.relay_role(), "coffer_enrollment_relay");
    }

    #[test]
    fn redacted_urls_carry_no_credentials() {
        let r = redact_url("postgres://owner:hunter2@db.internal:6432/coffer");
        assert_eq!(r, "db.internal:6432/coffer");
    }

    #[test]
    fn debug_hides_the_password() {
        let mut c = DbConfig::new("postgres://owner:hunter2@h/coffer");
        c.service_password = Some(SecretString::from("s3cret"));
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && !d.contains("s3cret"), "{d}");
    }
}

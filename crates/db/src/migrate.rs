//! Schema set-up and migrations, run as the owner role.

use std::borrow::Cow;

use sqlx::migrate::{Migration, Migrator};
use sqlx::{Connection, PgConnection};

use crate::{DbConfig, Error, ServiceName};

/// One service's schema and the migrations that build it, applied in version order.
///
/// Shared table sets (the event store's events, outbox and processed_events) come as their
/// own migrator so every service gets them without copying SQL; service migrations are
/// numbered from 0100 so the two never collide.
#[derive(Debug, Clone, Copy)]
pub struct Schema {
    /// The owning service.
    pub service: ServiceName,
    /// Migration sets, merged by version.
    pub migrators: &'static [&'static Migrator],
}

impl Schema {
    fn migrations(&self) -> Vec<Migration> {
        let mut all: Vec<Migration> = self
            .migrators
            .iter()
            .flat_map(|m| m.iter().cloned())
            .collect();
        all.sort_by_key(|m| m.version);
        all
    }

    fn migrator(&self) -> Migrator {
        // The fields are public (sqlx's macro needs them) but hidden; pinned to sqlx 0.8.
        Migrator {
            migrations: Cow::Owned(self.migrations()),
            ..Migrator::DEFAULT
        }
    }
}

/// SQL helpers every migration may call. `coffer_tenant_table` turns on forced row-level
/// security with the tenant policy; `coffer_grant` grants to the schema's own service role
/// (or, with suffix `_relay`, its relay role), so migrations never spell role names.
const HELPERS: &str = r#"
CREATE OR REPLACE FUNCTION coffer_tenant_table(tbl regclass) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
  EXECUTE format(
    'CREATE POLICY tenant_isolation ON %s'
    ' USING (org_id = nullif(current_setting(''coffer.org_id'', true), '''')::uuid)'
    ' WITH CHECK (org_id = nullif(current_setting(''coffer.org_id'', true), '''')::uuid)',
    tbl);
END
$fn$;

CREATE OR REPLACE FUNCTION coffer_grant(privileges text, tbl regclass, role_suffix text DEFAULT '')
RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
  EXECUTE format('GRANT %s ON %s TO %I', privileges, tbl, current_schema() || role_suffix);
END
$fn$;

CREATE OR REPLACE FUNCTION coffer_role(role_suffix text DEFAULT '') RETURNS name
LANGUAGE sql STABLE AS $fn$ SELECT (current_schema() || role_suffix)::name $fn$;
"#;

/// Creates roles and schemas and applies every pending migration, as the owner role named in
/// `config.url`. Idempotent; safe to run from several processes at once.
pub async fn migrate(config: &DbConfig, schemas: &[Schema]) -> Result<(), Error> {
    let owner = config.owner_options()?;
    let mut conn = PgConnection::connect_with(&owner)
        .await
        .map_err(|cause| Error::Connect {
            target: config.target(),
            role: owner.get_username().to_owned(),
            cause,
        })?;
    for schema in schemas {
        let name = schema.service.schema();
        ensure_role(&mut conn, &schema.service.role()).await?;
        ensure_role(&mut conn, &schema.service.relay_role()).await?;
        sqlx::raw_sql(&format!(
            "CREATE SCHEMA IF NOT EXISTS {name};
             REVOKE ALL ON SCHEMA {name} FROM PUBLIC;
             GRANT USAGE ON SCHEMA {name} TO {role}, {relay};
             SET search_path = {name};
             {HELPERS}
             REVOKE ALL ON FUNCTION coffer_tenant_table(regclass) FROM PUBLIC;
             REVOKE ALL ON FUNCTION coffer_grant(text, regclass, text) FROM PUBLIC;",
            role = schema.service.role(),
            relay = schema.service.relay_role(),
        ))
        .execute(&mut conn)
        .await?;
        schema
            .migrator()
            .run_direct(&mut conn)
            .await
            .map_err(|cause| Error::Migrate {
                schema: name.clone(),
                cause,
            })?;
        // The service checks at boot that it is not running against an older schema.
        sqlx::raw_sql(&format!(
            "GRANT SELECT ON {name}._sqlx_migrations TO {role}; RESET search_path;",
            role = schema.service.role()
        ))
        .execute(&mut conn)
        .await?;
    }
    conn.close().await?;
    Ok(())
}

/// Creates a login role that is not superuser, cannot create roles or databases and does not
/// bypass row-level security. Roles are cluster-wide, so two migrations racing on a fresh
/// cluster may both try: the loser's error is expected and ignored.
async fn ensure_role(conn: &mut PgConnection, role: &str) -> Result<(), Error> {
    sqlx::raw_sql(&format!(
        "DO $do$ BEGIN
           CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $do$;"
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// Migrations compiled into this binary that the database has not applied, as
/// `(schema, "NNNN_description")`. Used by boot checks: a service refuses to start on an
/// older schema. Runs with any pool that can read the schemas' `_sqlx_migrations`.
pub async fn missing_migrations(
    pool: &sqlx::PgPool,
    schemas: &[Schema],
) -> Result<Vec<(String, String)>, Error> {
    let mut missing = Vec::new();
    for schema in schemas {
        let name = schema.service.schema();
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{name}._sqlx_migrations"))
            .fetch_one(pool)
            .await?;
        let applied: Vec<i64> = if exists {
            sqlx::query_scalar(&format!(
                "SELECT version FROM {name}._sqlx_migrations WHERE success"
            ))
            .fetch_all(pool)
            .await?
        } else {
            Vec::new()
        };
        for m in schema.migrations() {
            if !applied.contains(&m.version) {
                missing.push((name.clone(), format!("{:04}_{}", m.version, m.description)));
            }
        }
    }
    Ok(missing)
}

//! P5: row-level security on every tenant table, non-privileged service roles, and no
//! tenant leaking across pooled connections.

use std::collections::BTreeSet;

use coffer_server::diag::{Diagnostics, SERVICE};
use coffer_testkit::TestDb;
use coffer_types::{Actor, OrgId};
use sqlx::postgres::PgPoolOptions;

#[tokio::test]
async fn p5_every_table_with_org_id_has_row_level_security_enabled_and_forced() {
    let db = TestDb::migrated(coffer_server::SCHEMAS).await;
    let su = db.superuser().await;
    let tables: Vec<(String, String, bool, bool)> = sqlx::query_as(
        "SELECT n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname LIKE 'coffer\\_%'
           AND EXISTS (SELECT 1 FROM pg_attribute a
                       WHERE a.attrelid = c.oid AND a.attname = 'org_id' AND NOT a.attisdropped)
         ORDER BY 1, 2",
    )
    .fetch_all(&su)
    .await
    .unwrap();
    let names: BTreeSet<String> = tables.iter().map(|t| format!("{}.{}", t.0, t.1)).collect();
    for expected in [
        "coffer_diag.events",
        "coffer_diag.outbox",
        "coffer_diag.processed_events",
        "coffer_diag.probes",
        "coffer_scheduling.databases",
        "coffer_scheduling.destinations",
        "coffer_scheduling.events",
    ] {
        assert!(names.contains(expected), "{expected} not walked: {names:?}");
    }
    for (schema, table, enabled, forced) in &tables {
        assert!(
            *enabled && *forced,
            "{schema}.{table}: RLS enabled={enabled} forced={forced}"
        );
    }

    // Every service table is a tenant table: nothing but the migration ledger lacks org_id.
    let untenanted: Vec<String> = sqlx::query_scalar(
        "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind IN ('r', 'p') AND n.nspname LIKE 'coffer\\_%' AND c.relname <> '_sqlx_migrations'
           AND NOT EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'org_id')",
    )
    .fetch_all(&su)
    .await
    .unwrap();
    assert!(
        untenanted.is_empty(),
        "tables without org_id: {untenanted:?}"
    );
}

#[tokio::test]
async fn p5_service_roles_are_not_owner_superuser_or_bypassrls() {
    let db = TestDb::migrated(coffer_server::SCHEMAS).await;
    let su = db.superuser().await;
    for role in [SERVICE.role(), SERVICE.relay_role()] {
        let (superuser, bypass, createrole, createdb): (bool, bool, bool, bool) =
            sqlx::query_as("SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = $1")
                .bind(&role)
                .fetch_one(&su)
                .await
                .unwrap();
        assert!(
            !superuser && !bypass && !createrole && !createdb,
            "{role} is privileged"
        );
        let owned: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE pg_get_userbyid(c.relowner) = $1 OR (n.nspname LIKE 'coffer\\_%' AND pg_get_userbyid(n.nspowner) = $1)",
        )
        .bind(&role)
        .fetch_one(&su)
        .await
        .unwrap();
        assert_eq!(owned, 0, "{role} owns objects");
    }
}

#[tokio::test]
async fn p5_an_unset_tenant_sees_zero_rows() {
    let db = TestDb::migrated(coffer_server::SCHEMAS).await;
    let service = db.service(SERVICE).await;
    let diag = Diagnostics::new(service.clone());
    for _ in 0..3 {
        diag.send_probe(OrgId::new(), None, "x".into(), &Actor::service("t"))
            .await
            .unwrap();
    }
    for table in ["events", "outbox", "probes"] {
        // A plain pooled query: no begin_tenant, so no coffer.org_id.
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(service.pool())
            .await
            .unwrap();
        assert_eq!(n, 0, "{table} visible without a tenant");
    }
    // Also after a tenant transaction on the same connection has ended.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            db.config
                .role_options(&SERVICE.role(), &SERVICE.schema())
                .unwrap(),
        )
        .await
        .unwrap();
    let one = coffer_db::Database::from_pool(pool.clone(), SERVICE);
    let org = OrgId::new();
    diag.send_probe(org, None, "y".into(), &Actor::service("t"))
        .await
        .unwrap();
    let mut tx = one.begin_tenant(org).await.unwrap();
    let inside: i64 = sqlx::query_scalar("SELECT count(*) FROM probes")
        .fetch_one(tx.conn())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let after: i64 = sqlx::query_scalar("SELECT count(*) FROM probes")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((inside, after), (1, 0));
}

#[tokio::test]
async fn p5_ten_thousand_pooled_transactions_alternating_tenants_never_see_the_other() {
    let db = TestDb::migrated(coffer_server::SCHEMAS).await;
    let service = db.service(SERVICE).await;
    let diag = Diagnostics::new(service.clone());
    let (a, b) = (OrgId::new(), OrgId::new());
    for org in [a, b] {
        for _ in 0..5 {
            diag.send_probe(org, None, org.to_string(), &Actor::service("t"))
                .await
                .unwrap();
        }
    }
    let mut workers = Vec::new();
    for w in 0..8 {
        let service = service.clone();
        workers.push(tokio::spawn(async move {
            for i in 0..1250 {
                let org = if (i + w) % 2 == 0 { a } else { b };
                let mut tx = service.begin_tenant(org).await.unwrap();
                let seen: Vec<(uuid::Uuid, String)> =
                    sqlx::query_as("SELECT org_id, note FROM probes")
                        .fetch_all(tx.conn())
                        .await
                        .unwrap();
                assert_eq!(seen.len(), 5, "tenant {org} saw {} rows", seen.len());
                assert!(
                    seen.iter()
                        .all(|(o, note)| *o == org.0 && *note == org.to_string()),
                    "tenant {org} saw another tenant's row"
                );
                tx.commit().await.unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
}

#[tokio::test]
async fn p5_a_tenant_cannot_write_rows_of_another() {
    let db = TestDb::migrated(coffer_server::SCHEMAS).await;
    let service = db.service(SERVICE).await;
    let mut tx = service.begin_tenant(OrgId::new()).await.unwrap();
    let err = sqlx::query(
        "INSERT INTO probes (org_id, probe_id, note, probes_sent, last_sent_event_id, last_sent_at)
         VALUES ($1, gen_random_uuid(), 'x', 1, gen_random_uuid(), now())",
    )
    .bind(OrgId::new().as_uuid())
    .execute(tx.conn())
    .await
    .unwrap_err();
    assert!(err.to_string().contains("row-level security"), "{err}");
}

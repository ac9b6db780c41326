//! The scheduling service's database registry: register, change, get, list and remove through
//! gRPC, field validation naming the field, name uniqueness, the serving agent (enrolled, of the
//! org, not revoked), roles, and rebuilt projections.

use std::time::Duration;

use coffer_proto::enrollment::v1::{RevokeAgentRequest, agent_service_client::AgentServiceClient};
use coffer_proto::scheduling::v1 as pb;
use coffer_proto::scheduling::v1::database_service_client::DatabaseServiceClient;
use coffer_types::OrgId;
use tonic::Code;

use crate::helpers::{Authed, TestApp, TestOrg, spawn_app};

async fn registry(app: &TestApp, key: &str) -> DatabaseServiceClient<Authed> {
    DatabaseServiceClient::new(app.authed(key).await)
}

fn vault_ref(org: OrgId) -> String {
    format!("vault:coffer/{org}/{}", uuid::Uuid::now_v7())
}

/// An agent really enrolled in `org`, once scheduling has seen its enrollment (scheduling learns
/// of agents through enrollment's events).
pub(crate) async fn enrolled_agent(app: &TestApp, org: &TestOrg) -> String {
    let dir = tempfile::tempdir().unwrap();
    let (csr, _key) = crate::agents::csr_and_key(dir.path(), "EC");
    let agent = crate::agents::enroll(app, &crate::agents::new_token(app, org).await, &csr)
        .await
        .unwrap()
        .agent_id;
    seen_by_scheduling(app, &agent, "enrolled_at").await;
    agent
}

/// Waits until scheduling's view of `agent` has `column` set.
pub(crate) async fn seen_by_scheduling(app: &TestApp, agent: &str, column: &str) {
    let su = app.db.superuser().await;
    let id: uuid::Uuid = agent.parse().unwrap();
    let query = format!(
        "SELECT EXISTS (SELECT 1 FROM coffer_scheduling.agents \
         WHERE agent_id = $1 AND {column} IS NOT NULL)"
    );
    coffer_testkit::eventually(
        "scheduling sees the agent",
        Duration::from_secs(10),
        || async {
            let seen: bool = sqlx::query_scalar(&query)
                .bind(id)
                .fetch_one(&su)
                .await
                .unwrap();
            seen.then_some(())
        },
    )
    .await;
}

pub(crate) fn fields(org: OrgId, agent: &str, name: &str) -> pb::DatabaseFields {
    pb::DatabaseFields {
        name: name.into(),
        engine: "postgresql".into(),
        host: "db1.internal.example".into(),
        port: 0,
        database: "orders".into(),
        user: "backup".into(),
        password_vault_ref: vault_ref(org),
        agent_id: agent.into(),
    }
}

async fn register(
    client: &mut DatabaseServiceClient<Authed>,
    org: OrgId,
    agent: &str,
    name: &str,
) -> pb::Database {
    client
        .register_database(pb::RegisterDatabaseRequest {
            org_id: org.to_string(),
            fields: Some(fields(org, agent, name)),
        })
        .await
        .unwrap()
        .into_inner()
}

/// The scheduling events of `org`.
async fn events(app: &TestApp, org: &TestOrg) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT event_type FROM coffer_scheduling.events WHERE org_id = $1 ORDER BY 1",
    )
    .bind(org.org.as_uuid())
    .fetch_all(&app.db.superuser().await)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_database_is_registered_changed_listed_and_removed_and_every_step_is_an_event() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let agent = enrolled_agent(&app, &acme).await;
    let mut client = registry(&app, &acme.owner_key).await;
    let org = acme.org.to_string();

    let registered = register(&mut client, acme.org, &agent, "orders").await;
    assert_eq!(registered.org_id, org);
    assert_eq!(registered.name, "orders");
    assert_eq!(registered.engine, "postgresql");
    assert_eq!(registered.port, 5432, "0 means the engine's default");
    assert_eq!(registered.version, 1);
    assert!(
        registered
            .password_vault_ref
            .starts_with(&format!("vault:coffer/{org}/"))
    );
    let id = registered.database_id.clone();

    let got = client
        .get_database(pb::GetDatabaseRequest {
            org_id: org.clone(),
            database_id: id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got, registered);

    let new_fields = pb::DatabaseFields {
        name: "orders-primary".into(),
        engine: "mariadb".into(),
        host: "10.0.0.7".into(),
        port: 0,
        database: "shop".into(),
        user: "dump".into(),
        ..fields(acme.org, &agent, "x")
    };
    let changed = client
        .change_database(pb::ChangeDatabaseRequest {
            org_id: org.clone(),
            database_id: id.clone(),
            fields: Some(new_fields.clone()),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.version, 2);
    assert_eq!(changed.name, "orders-primary");
    assert_eq!(changed.engine, "mariadb");
    assert_eq!(changed.host, "10.0.0.7");
    assert_eq!(changed.port, 3306);
    assert_eq!(changed.database, "shop");
    assert_eq!(changed.user, "dump");
    assert_eq!(changed.password_vault_ref, new_fields.password_vault_ref);
    assert_eq!(changed.agent_id, new_fields.agent_id);
    assert_eq!(changed.created_at, registered.created_at);

    let other = register(&mut client, acme.org, &agent, "analytics").await;
    let listed = client
        .list_databases(pb::ListDatabasesRequest {
            org_id: org.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .databases;
    assert_eq!(
        listed.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        ["analytics", "orders-primary"]
    );

    client
        .remove_database(pb::RemoveDatabaseRequest {
            org_id: org.clone(),
            database_id: id.clone(),
            reason: "decommissioned".into(),
        })
        .await
        .unwrap();
    let listed = client
        .list_databases(pb::ListDatabasesRequest {
            org_id: org.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .databases;
    assert_eq!(listed, vec![other]);
    let gone = client
        .get_database(pb::GetDatabaseRequest {
            org_id: org.clone(),
            database_id: id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Code::NotFound, "{gone:?}");
    for status in [
        client
            .change_database(pb::ChangeDatabaseRequest {
                org_id: org.clone(),
                database_id: id.clone(),
                fields: Some(fields(acme.org, &agent, "again")),
            })
            .await
            .unwrap_err(),
        client
            .remove_database(pb::RemoveDatabaseRequest {
                org_id: org.clone(),
                database_id: id.clone(),
                reason: String::new(),
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
    }
    // A removed database's name is free again.
    register(&mut client, acme.org, &agent, "orders-primary").await;

    assert_eq!(
        events(&app, &acme).await,
        [
            "DatabaseChanged",
            "DatabaseRegistered",
            "DatabaseRegistered",
            "DatabaseRegistered",
            "DatabaseRemoved",
        ]
    );
}

#[tokio::test]
async fn bad_fields_and_taken_names_are_refused_naming_the_field_and_store_nothing() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let agent = enrolled_agent(&app, &acme).await;
    let other = app.new_org("Other").await;
    let other_agent = enrolled_agent(&app, &other).await;
    let mut client = registry(&app, &acme.owner_key).await;
    let org = acme.org.to_string();
    let existing = register(&mut client, acme.org, &agent, "orders").await;
    let second = register(&mut client, acme.org, &agent, "analytics").await;
    let before = events(&app, &acme).await;

    let good = || fields(acme.org, &agent, "new");
    let cases: Vec<(pb::DatabaseFields, &str)> = vec![
        (
            pb::DatabaseFields {
                name: " ".into(),
                ..good()
            },
            "name ",
        ),
        (
            pb::DatabaseFields {
                name: "n".repeat(129),
                ..good()
            },
            "name ",
        ),
        (
            pb::DatabaseFields {
                engine: "oracle".into(),
                ..good()
            },
            "engine ",
        ),
        (
            pb::DatabaseFields {
                host: String::new(),
                ..good()
            },
            "host ",
        ),
        (
            pb::DatabaseFields {
                host: "postgres://db".into(),
                ..good()
            },
            "host ",
        ),
        (
            pb::DatabaseFields {
                host: "db host".into(),
                ..good()
            },
            "host ",
        ),
        (
            pb::DatabaseFields {
                port: 70_000,
                ..good()
            },
            "port ",
        ),
        (
            pb::DatabaseFields {
                database: String::new(),
                ..good()
            },
            "database ",
        ),
        (
            pb::DatabaseFields {
                user: "u".repeat(64),
                ..good()
            },
            "user ",
        ),
        (
            pb::DatabaseFields {
                password_vault_ref: "hunter2".into(),
                ..good()
            },
            "password_vault_ref ",
        ),
        (
            pb::DatabaseFields {
                password_vault_ref: vault_ref(other.org),
                ..good()
            },
            "password_vault_ref ",
        ),
        (
            pb::DatabaseFields {
                agent_id: "agent-7".into(),
                ..good()
            },
            "agent_id ",
        ),
    ];
    for (bad, field) in cases {
        let registered = client
            .register_database(pb::RegisterDatabaseRequest {
                org_id: org.clone(),
                fields: Some(bad.clone()),
            })
            .await
            .unwrap_err();
        let changed = client
            .change_database(pb::ChangeDatabaseRequest {
                org_id: org.clone(),
                database_id: existing.database_id.clone(),
                fields: Some(bad.clone()),
            })
            .await
            .unwrap_err();
        for status in [registered, changed] {
            assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
            assert!(status.message().starts_with(field), "{bad:?}: {status:?}");
        }
    }
    let missing = client
        .register_database(pb::RegisterDatabaseRequest {
            org_id: org.clone(),
            fields: None,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(missing.message().starts_with("fields "), "{missing:?}");

    // Names are unique among the org's live databases, on registration and on change.
    let taken = client
        .register_database(pb::RegisterDatabaseRequest {
            org_id: org.clone(),
            fields: Some(fields(acme.org, &agent, " orders ")),
        })
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    assert!(taken.message().starts_with("name "), "{taken:?}");
    let renamed = client
        .change_database(pb::ChangeDatabaseRequest {
            org_id: org.clone(),
            database_id: second.database_id.clone(),
            fields: Some(fields(acme.org, &agent, "orders")),
        })
        .await
        .unwrap_err();
    assert_eq!(renamed.code(), Code::AlreadyExists, "{renamed:?}");
    assert!(renamed.message().starts_with("name "), "{renamed:?}");
    // Another org may use the same name.
    register(
        &mut registry(&app, &other.owner_key).await,
        other.org,
        &other_agent,
        "orders",
    )
    .await;

    assert_eq!(
        events(&app, &acme).await,
        before,
        "nothing stored on refusal"
    );
}

#[tokio::test]
async fn two_registrations_of_one_name_at_once_give_one_database_and_one_already_exists() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let agent = enrolled_agent(&app, &acme).await;
    let client = registry(&app, &acme.owner_key).await;

    for round in 0..5 {
        let name = format!("race-{round}");
        let attempt = |mut client: DatabaseServiceClient<Authed>| {
            let request = pb::RegisterDatabaseRequest {
                org_id: acme.org.to_string(),
                fields: Some(fields(acme.org, &agent, &name)),
            };
            async move { client.register_database(request).await }
        };
        let (a, b) = tokio::join!(attempt(client.clone()), attempt(client.clone()));
        let lost = match (a, b) {
            (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
            other => panic!("round {round}: expected one success and one refusal: {other:?}"),
        };
        assert_eq!(lost.code(), Code::AlreadyExists, "round {round}: {lost:?}");
        assert!(lost.message().starts_with("name "), "{lost:?}");
    }
}

#[tokio::test]
async fn viewers_and_operators_read_the_registry_and_only_admins_change_it() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let agent = enrolled_agent(&app, &acme).await;
    let existing = register(
        &mut registry(&app, &acme.owner_key).await,
        acme.org,
        &agent,
        "orders",
    )
    .await;
    let org = acme.org.to_string();

    for role in ["viewer", "operator"] {
        let mut client = registry(&app, &app.new_api_key(&acme, role).await).await;
        let got = client
            .get_database(pb::GetDatabaseRequest {
                org_id: org.clone(),
                database_id: existing.database_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, existing, "{role}");
        let listed = client
            .list_databases(pb::ListDatabasesRequest {
                org_id: org.clone(),
            })
            .await
            .unwrap()
            .into_inner()
            .databases;
        assert_eq!(listed, vec![existing.clone()], "{role}");
        let refused = [
            client
                .register_database(pb::RegisterDatabaseRequest {
                    org_id: org.clone(),
                    fields: Some(fields(acme.org, &agent, role)),
                })
                .await
                .unwrap_err(),
            client
                .change_database(pb::ChangeDatabaseRequest {
                    org_id: org.clone(),
                    database_id: existing.database_id.clone(),
                    fields: Some(fields(acme.org, &agent, role)),
                })
                .await
                .unwrap_err(),
            client
                .remove_database(pb::RemoveDatabaseRequest {
                    org_id: org.clone(),
                    database_id: existing.database_id.clone(),
                    reason: String::new(),
                })
                .await
                .unwrap_err(),
        ];
        for status in refused {
            assert_eq!(status.code(), Code::PermissionDenied, "{role}: {status:?}");
        }
    }
    let mut admin = registry(&app, &app.new_api_key(&acme, "admin").await).await;
    register(&mut admin, acme.org, &agent, "by-admin").await;
    assert_eq!(
        events(&app, &acme).await,
        ["DatabaseRegistered", "DatabaseRegistered"]
    );
}

#[tokio::test]
async fn rebuilding_the_scheduling_projections_yields_identical_tables() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let agent = enrolled_agent(&app, &acme).await;
    let other = app.new_org("Other").await;
    let other_agent = enrolled_agent(&app, &other).await;
    let mut client = registry(&app, &acme.owner_key).await;
    let a = register(&mut client, acme.org, &agent, "a").await;
    let b = register(&mut client, acme.org, &agent, "b").await;
    register(&mut client, acme.org, &agent, "c").await;
    register(
        &mut registry(&app, &other.owner_key).await,
        other.org,
        &other_agent,
        "a",
    )
    .await;
    client
        .change_database(pb::ChangeDatabaseRequest {
            org_id: acme.org.to_string(),
            database_id: a.database_id.clone(),
            fields: Some(pb::DatabaseFields {
                port: 6543,
                ..fields(acme.org, &agent, "a2")
            }),
        })
        .await
        .unwrap();
    client
        .remove_database(pb::RemoveDatabaseRequest {
            org_id: acme.org.to_string(),
            database_id: b.database_id.clone(),
            reason: "gone".into(),
        })
        .await
        .unwrap();

    // Schedules (with jitter, changed, paused, deleted) and jobs (run now, cancelled).
    let mut schedules =
        coffer_proto::scheduling::v1::schedule_service_client::ScheduleServiceClient::new(
            app.authed(&acme.owner_key).await,
        );
    let mut jobs = coffer_proto::scheduling::v1::job_service_client::JobServiceClient::new(
        app.authed(&acme.owner_key).await,
    );
    let (destination, _) = app.local_destination(&acme).await;
    let schedule_fields = |name: &str| pb::ScheduleFields {
        name: name.into(),
        database_id: a.database_id.clone(),
        destination_id: destination.clone(),
        cron: "15 3 * * *".into(),
        timezone: "Asia/Tokyo".into(),
        jitter_seconds: 900,
        retention: Some(pb::Retention {
            keep_last: 2,
            daily: 7,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut created = Vec::new();
    for name in ["nightly", "weekly", "gone"] {
        created.push(
            schedules
                .create_schedule(pb::CreateScheduleRequest {
                    org_id: acme.org.to_string(),
                    fields: Some(schedule_fields(name)),
                })
                .await
                .unwrap()
                .into_inner()
                .schedule_id,
        );
    }
    schedules
        .change_schedule(pb::ChangeScheduleRequest {
            org_id: acme.org.to_string(),
            schedule_id: created[0].clone(),
            fields: Some(pb::ScheduleFields {
                cron: "0 0 2 * * *".into(),
                ..schedule_fields("nightly")
            }),
        })
        .await
        .unwrap();
    schedules
        .pause_schedule(pb::PauseScheduleRequest {
            org_id: acme.org.to_string(),
            schedule_id: created[1].clone(),
        })
        .await
        .unwrap();
    schedules
        .delete_schedule(pb::DeleteScheduleRequest {
            org_id: acme.org.to_string(),
            schedule_id: created[2].clone(),
            reason: "unused".into(),
        })
        .await
        .unwrap();
    for _ in 0..2 {
        let job = jobs
            .run_now(pb::RunNowRequest {
                org_id: acme.org.to_string(),
                schedule_id: created[0].clone(),
            })
            .await
            .unwrap()
            .into_inner();
        jobs.cancel_job(pb::CancelJobRequest {
            org_id: acme.org.to_string(),
            job_id: job.job_id,
            reason: "test".into(),
        })
        .await
        .unwrap();
    }

    let su = app.db.superuser().await;
    let dump = || async {
        let mut rows = Vec::new();
        for table in ["databases", "schedules", "jobs"] {
            rows.extend(
                sqlx::query_scalar::<_, serde_json::Value>(&format!(
                    "SELECT to_jsonb(t) FROM coffer_scheduling.{table} t ORDER BY 1::text"
                ))
                .fetch_all(&su)
                .await
                .unwrap(),
            );
        }
        rows
    };
    let before = dump().await;
    assert_eq!(before.len(), 3 + 2 + 2);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM coffer_scheduling.events")
        .fetch_one(&su)
        .await
        .unwrap();
    let replayed = coffer_eventstore::rebuild(
        &mut app.db.owner().await,
        coffer_scheduling::SERVICE,
        &coffer_scheduling::app::projections(),
    )
    .await
    .unwrap();
    assert_eq!(replayed as i64, events);
    assert_eq!(dump().await, before);
}

#[tokio::test]
async fn the_agent_that_serves_a_database_must_be_an_enrolled_unrevoked_agent_of_the_org() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let agent = enrolled_agent(&app, &acme).await;
    let other = app.new_org("Other").await;
    let other_agent = enrolled_agent(&app, &other).await;
    let mut client = registry(&app, &acme.owner_key).await;
    let org = acme.org.to_string();
    let existing = register(&mut client, acme.org, &agent, "orders").await;
    let before = events(&app, &acme).await;

    let refused = |client: &mut DatabaseServiceClient<Authed>, agent: String| {
        let mut client = client.clone();
        let org = org.clone();
        let database_id = existing.database_id.clone();
        async move {
            let registered = client
                .register_database(pb::RegisterDatabaseRequest {
                    org_id: org.clone(),
                    fields: Some(fields(acme.org, &agent, "new")),
                })
                .await
                .unwrap_err();
            let changed = client
                .change_database(pb::ChangeDatabaseRequest {
                    org_id: org,
                    database_id,
                    fields: Some(fields(acme.org, &agent, "orders")),
                })
                .await
                .unwrap_err();
            [registered, changed]
        }
    };
    // An unknown agent and another org's agent look the same.
    for unknown in [uuid::Uuid::now_v7().to_string(), other_agent] {
        for status in refused(&mut client, unknown).await {
            assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
            assert_eq!(
                status.message(),
                "agent_id names no enrolled agent of this org"
            );
        }
    }

    AgentServiceClient::new(app.authed(&acme.owner_key).await)
        .revoke_agent(RevokeAgentRequest {
            org_id: org.clone(),
            agent_id: agent.clone(),
            reason: "host decommissioned".into(),
        })
        .await
        .unwrap();
    seen_by_scheduling(&app, &agent, "revoked_at").await;
    for status in refused(&mut client, agent.clone()).await {
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert_eq!(status.message(), "agent_id names a revoked agent");
    }

    assert_eq!(
        events(&app, &acme).await,
        before,
        "nothing stored on refusal"
    );
    let listed = client
        .list_databases(pb::ListDatabasesRequest { org_id: org })
        .await
        .unwrap()
        .into_inner()
        .databases;
    assert_eq!(listed, vec![existing]);
}

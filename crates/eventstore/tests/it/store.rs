use coffer_eventstore::{Error, EventStore, ExecuteError, NewEvent, rebuild};
use coffer_types::{Actor, AggregateId, OrgId};

use crate::helpers::*;

fn actor() -> Actor {
    Actor::service("test")
}

#[tokio::test]
async fn append_then_load_folds_the_stream() {
    let (_t, db, store) = setup().await;
    let (org, id) = (OrgId::new(), AggregateId::new());
    for n in [5, 7, -2] {
        store
            .execute::<Counter>(org, id, &actor(), CounterCommand::Add(n))
            .await
            .unwrap();
    }
    let mut tx = db.begin_tenant(org).await.unwrap();
    let (state, version) = store.load::<Counter>(&mut tx, id).await.unwrap();
    assert_eq!((state.total, version), (10, 3));
    let events = store.read_stream(&mut tx, id).await.unwrap();
    assert_eq!(
        events.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        events
            .iter()
            .all(|e| e.service == "estest" && e.aggregate_type == "Counter")
    );
}

#[tokio::test]
async fn a_rule_refusal_writes_nothing() {
    let (_t, db, store) = setup().await;
    let (org, id) = (OrgId::new(), AggregateId::new());
    let err = store
        .execute::<Counter>(org, id, &actor(), CounterCommand::Add(-1))
        .await
        .unwrap_err();
    assert!(matches!(err, ExecuteError::Rejected(WouldGoNegative)));
    let mut tx = db.begin_tenant(org).await.unwrap();
    assert!(store.read_stream(&mut tx, id).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_stale_expected_version_is_a_typed_conflict() {
    let (_t, db, store) = setup().await;
    let (org, id) = (OrgId::new(), AggregateId::new());
    let e = NewEvent::from_domain(&CounterEvent::Added(1));

    let mut tx = db.begin_tenant(org).await.unwrap();
    store
        .append(
            &mut tx,
            "Counter",
            id,
            0,
            &actor(),
            std::slice::from_ref(&e),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Same expected version again: the unique (aggregate_id, version) index refuses it.
    let mut tx = db.begin_tenant(org).await.unwrap();
    let err = store
        .append(
            &mut tx,
            "Counter",
            id,
            0,
            &actor(),
            std::slice::from_ref(&e),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected_version: 0,
                ..
            }
        ),
        "{err}"
    );
    drop(tx);

    // An expected version ahead of the stream would leave a gap: also a conflict.
    let mut tx = db.begin_tenant(org).await.unwrap();
    let err = store
        .append(&mut tx, "Counter", id, 5, &actor(), &[e])
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                expected_version: 5,
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn concurrent_writers_on_one_aggregate_all_land_through_retries() {
    let (_t, db, store) = setup().await;
    let (org, id) = (OrgId::new(), AggregateId::new());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store: EventStore = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..5 {
                match store
                    .execute::<Counter>(org, id, &Actor::service("t"), CounterCommand::Add(1))
                    .await
                {
                    Ok(_) => ok += 1,
                    Err(ExecuteError::Store(Error::Conflict { .. })) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            ok
        }));
    }
    let mut landed = 0;
    for t in tasks {
        landed += t.await.unwrap();
    }
    let mut tx = db.begin_tenant(org).await.unwrap();
    let (state, version) = store.load::<Counter>(&mut tx, id).await.unwrap();
    assert_eq!(state.total, landed);
    assert_eq!(version, landed as u64, "versions are gapless");
    assert!(
        landed >= 5,
        "retries let most commands through, got {landed}"
    );
}

#[tokio::test]
async fn projections_commit_with_the_append_and_roll_back_with_it() {
    let (_t, db, store) = setup().await;
    let (org, id) = (OrgId::new(), AggregateId::new());
    store
        .execute::<Counter>(org, id, &actor(), CounterCommand::Add(3))
        .await
        .unwrap();

    // Read-your-writes: the projection is there as soon as execute returns.
    let mut tx = db.begin_tenant(org).await.unwrap();
    let total: i64 = sqlx::query_scalar("SELECT total FROM counters WHERE counter_id = $1")
        .bind(id.as_uuid())
        .fetch_one(tx.conn())
        .await
        .unwrap();
    assert_eq!(total, 3);

    // An append that is rolled back leaves neither event, outbox row nor projection change.
    store
        .append(
            &mut tx,
            "Counter",
            id,
            1,
            &actor(),
            &[NewEvent::from_domain(&CounterEvent::Added(4))],
        )
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut tx = db.begin_tenant(org).await.unwrap();
    let (total, outbox): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT total FROM counters WHERE counter_id = $1), (SELECT count(*) FROM outbox)",
    )
    .bind(id.as_uuid())
    .fetch_one(tx.conn())
    .await
    .unwrap();
    assert_eq!((total, outbox), (3, 1));
}

async fn dump_counters(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT to_jsonb(c)::text FROM coffer_estest.counters c ORDER BY counter_id")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn rebuild_replays_the_stream_into_identical_tables() {
    let (t, _db, store) = setup().await;
    for _ in 0..3 {
        let org = OrgId::new();
        for _ in 0..4 {
            let id = AggregateId::new();
            for n in 1..=3 {
                store
                    .execute::<Counter>(org, id, &actor(), CounterCommand::Add(n))
                    .await
                    .unwrap();
            }
        }
    }
    let su = t.superuser().await;
    let before = dump_counters(&su).await;
    assert_eq!(before.len(), 12);

    // Damage the read model, then rebuild it from the stream.
    sqlx::query("UPDATE coffer_estest.counters SET total = -1")
        .execute(&su)
        .await
        .unwrap();
    let mut owner = t.owner().await;
    let replayed = rebuild(
        &mut owner,
        SERVICE,
        &[std::sync::Arc::new(CountersProjection)],
    )
    .await
    .unwrap();
    assert_eq!(replayed, 36);
    assert_eq!(dump_counters(&su).await, before);
}

#[tokio::test]
async fn rebuild_refuses_a_role_confined_by_row_level_security() {
    let (t, _db, _store) = setup().await;
    let opts = t
        .config
        .role_options(&SERVICE.role(), &SERVICE.schema())
        .unwrap();
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&opts)
        .await
        .unwrap();
    let err = rebuild(
        &mut conn,
        SERVICE,
        &[std::sync::Arc::new(CountersProjection)],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::RebuildNeedsOwner));
}

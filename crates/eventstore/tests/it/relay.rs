use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use coffer_eventstore::{NewEvent, RecordedEvent, Relay, RelayConfig};
use coffer_testkit::{bus, eventually, wait_for_messages};
use coffer_types::{Actor, AggregateId, OrgId};
use tokio::sync::oneshot;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(20);

fn spawn_relay(
    t: &coffer_testkit::TestDb,
    js: &async_nats::jetstream::Context,
    bus: &coffer_eventstore::BusConfig,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let relay = Relay::new(
        t.config.clone(),
        SERVICE,
        js.clone(),
        bus.clone(),
        RelayConfig::default(),
    );
    let handle = tokio::spawn(relay.run(async move {
        let _ = stopped.await;
    }));
    (stop, handle)
}

async fn outbox_len(t: &coffer_testkit::TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM coffer_estest.outbox")
        .fetch_one(&t.superuser().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn relay_publishes_each_event_with_its_id_in_aggregate_order_and_deletes_it() {
    let (t, _db, store) = setup().await;
    let (_c, js, bus) = bus().await;
    let org = OrgId::new();
    let ids: Vec<AggregateId> = (0..5).map(|_| AggregateId::new()).collect();
    for round in 1..=10 {
        for id in &ids {
            store
                .execute::<Counter>(org, *id, &Actor::service("t"), CounterCommand::Add(round))
                .await
                .unwrap();
        }
    }
    let (_stop, _h) = spawn_relay(&t, &js, &bus);
    let msgs = wait_for_messages(&js, &bus.stream, 50, WAIT).await;
    assert_eq!(msgs.len(), 50);

    let mut versions: BTreeMap<AggregateId, Vec<u64>> = BTreeMap::new();
    for m in &msgs {
        let event = RecordedEvent::decode_envelope(&m.payload).unwrap();
        assert_eq!(
            m.headers.get("Nats-Msg-Id").unwrap().as_str(),
            event.event_id.to_string(),
            "Nats-Msg-Id is the event id"
        );
        assert_eq!(
            m.subject.as_str(),
            bus.subject(org, "estest", "CounterAdded")
        );
        versions
            .entry(event.aggregate_id)
            .or_default()
            .push(event.version);
    }
    for v in versions.values() {
        assert_eq!(
            v,
            &(1..=10).collect::<Vec<u64>>(),
            "per-aggregate order is preserved"
        );
    }
    eventually("outbox drained", WAIT, || async {
        (outbox_len(&t).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_second_relay_stands_by_and_takes_over_when_the_first_dies() {
    let (t, _db, store) = setup().await;
    let (_c, js, bus) = bus().await;
    let org = OrgId::new();
    let (stop_a, relay_a) = spawn_relay(&t, &js, &bus);
    let id = AggregateId::new();
    store
        .execute::<Counter>(org, id, &Actor::service("t"), CounterCommand::Add(1))
        .await
        .unwrap();
    wait_for_messages(&js, &bus.stream, 1, WAIT).await;
    let (_stop_b, _relay_b) = spawn_relay(&t, &js, &bus);

    // Exactly one relay holds the service's lock.
    let su = t.superuser().await;
    let holders = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
             WHERE l.locktype = 'advisory' AND l.granted AND a.usename = 'coffer_estest_relay'
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(&su)
        .await
        .unwrap()
    };
    tokio::time::sleep(Duration::from_millis(600)).await; // let B try the lock a few times
    assert_eq!(holders().await, 1);

    // The active relay dies without shutting down: its connection closes, its lock goes.
    relay_a.abort();
    drop(stop_a);
    for n in 2..=20 {
        store
            .execute::<Counter>(org, id, &Actor::service("t"), CounterCommand::Add(n))
            .await
            .unwrap();
    }
    let msgs = wait_for_messages(&js, &bus.stream, 20, WAIT).await;
    let unique: HashSet<String> = msgs
        .iter()
        .map(|m| m.headers.get("Nats-Msg-Id").unwrap().as_str().to_owned())
        .collect();
    assert_eq!(unique.len(), 20, "every event published once");
    eventually("one holder again", WAIT, || async {
        (holders().await == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn transactions_that_commit_out_of_sequence_order_are_never_skipped() {
    let (t, db, store) = setup().await;
    let (_c, js, bus) = bus().await;
    let (_stop, _h) = spawn_relay(&t, &js, &bus);
    let org = OrgId::new();

    // Eight writers take outbox ids 1..8 in order but commit in reverse, with the relay
    // publishing in between: a relay that tracked "highest id seen" would skip all but one.
    let mut open = Vec::new();
    for _ in 0..8 {
        let mut tx = db.begin_tenant(org).await.unwrap();
        store
            .append(
                &mut tx,
                "Counter",
                AggregateId::new(),
                0,
                &Actor::service("t"),
                &[NewEvent::from_domain(&CounterEvent::Added(1))],
            )
            .await
            .unwrap();
        open.push(tx);
    }
    let mut expected = 0;
    while let Some(tx) = open.pop() {
        tx.commit().await.unwrap();
        expected += 1;
        wait_for_messages(&js, &bus.stream, expected, WAIT).await;
    }
    assert_eq!(wait_for_messages(&js, &bus.stream, 8, WAIT).await.len(), 8);
    eventually("outbox drained", WAIT, || async {
        (outbox_len(&t).await == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn eight_concurrent_writers_lose_nothing() {
    let (t, _db, store) = setup().await;
    let (_c, js, bus) = bus().await;
    let (_stop, _h) = spawn_relay(&t, &js, &bus);
    let org = OrgId::new();
    let mut writers = Vec::new();
    for _ in 0..8 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for _ in 0..50 {
                store
                    .execute::<Counter>(
                        org,
                        AggregateId::new(),
                        &Actor::service("t"),
                        CounterCommand::Add(1),
                    )
                    .await
                    .unwrap();
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let msgs = wait_for_messages(&js, &bus.stream, 400, WAIT).await;
    let unique: HashSet<_> = msgs
        .iter()
        .map(|m| m.headers.get("Nats-Msg-Id").unwrap().as_str().to_owned())
        .collect();
    assert_eq!(unique.len(), 400);
}

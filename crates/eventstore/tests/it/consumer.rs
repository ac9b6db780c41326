use std::sync::Arc;
use std::time::Duration;

use coffer_eventstore::{
    BusConfig, Consumer, ConsumerConfig, DeadLetter, Delivery, HandlerError, RecordedEvent, Relay,
    RelayConfig,
};
use coffer_testkit::{TestDb, bus, eventually, wait_for_messages};
use coffer_types::{Actor, AggregateId, EventId, OrgId};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(20);

struct Running {
    _stops: Vec<oneshot::Sender<()>>,
}

fn start(
    t: &TestDb,
    db: &coffer_db::Database,
    js: &async_nats::jetstream::Context,
    bus: &BusConfig,
    fail: Option<fn(&Delivery) -> Option<HandlerError>>,
) -> Running {
    let (stop_relay, relay_stopped) = oneshot::channel::<()>();
    let relay = Relay::new(
        t.config.clone(),
        SERVICE,
        js.clone(),
        bus.clone(),
        RelayConfig::default(),
    );
    tokio::spawn(relay.run(async move {
        let _ = relay_stopped.await;
    }));
    let mut config = ConsumerConfig::new("seen", vec![bus.service_filter("estest")]);
    config.max_deliver = 3;
    config.retry_delay = Duration::from_millis(50);
    let consumer = Consumer::new(
        db.clone(),
        js.clone(),
        bus.clone(),
        config,
        Arc::new(SeenHandler { fail }),
    );
    let (stop_consumer, consumer_stopped) = oneshot::channel::<()>();
    tokio::spawn(consumer.run(async move {
        let _ = consumer_stopped.await;
    }));
    Running {
        _stops: vec![stop_relay, stop_consumer],
    }
}

async fn seen(db: &coffer_db::Database, org: OrgId) -> Vec<(uuid::Uuid, Option<String>)> {
    let mut tx = db.begin_tenant(org).await.unwrap();
    sqlx::query_as("SELECT event_id, trace FROM seen ORDER BY stream_seq")
        .fetch_all(tx.conn())
        .await
        .unwrap()
}

async fn wait_seen(
    db: &coffer_db::Database,
    org: OrgId,
    n: usize,
) -> Vec<(uuid::Uuid, Option<String>)> {
    eventually(&format!("{n} events seen"), WAIT, || async {
        let s = seen(db, org).await;
        (s.len() >= n).then_some(s)
    })
    .await
}

async fn dead_letters(
    js: &async_nats::jetstream::Context,
    bus: &BusConfig,
    n: usize,
) -> Vec<DeadLetter> {
    wait_for_messages(js, &bus.dlq_stream, n, WAIT)
        .await
        .into_iter()
        .map(|m| {
            let msg = async_nats::Message {
                subject: m.subject.clone(),
                reply: None,
                payload: m.payload.clone(),
                headers: Some(m.headers.clone()),
                status: None,
                description: None,
                length: 0,
            };
            DeadLetter::from_message(&msg).expect("dead letter headers")
        })
        .collect()
}

fn stray_event(org: OrgId, event_type: &str) -> RecordedEvent {
    RecordedEvent {
        event_id: EventId::new(),
        org_id: org,
        service: "estest".into(),
        aggregate_type: "Counter".into(),
        aggregate_id: AggregateId::new(),
        version: 1,
        event_type: event_type.into(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        actor: Actor::service("t"),
        trace_context: Default::default(),
        payload: vec![0; 8],
    }
}

#[tokio::test]
async fn each_event_takes_effect_once_even_when_delivered_twice() {
    let (t, db, store) = setup().await;
    let (_c, js, bus) = bus().await;
    let _run = start(&t, &db, &js, &bus, None);
    let org = OrgId::new();
    for n in 1..=10 {
        store
            .execute::<Counter>(
                org,
                AggregateId::new(),
                &Actor::service("t"),
                CounterCommand::Add(n),
            )
            .await
            .unwrap();
    }
    wait_seen(&db, org, 10).await;

    // Republish every message under a new Nats-Msg-Id, past JetStream's deduplication:
    // the consumer receives each event a second time and must not apply it again.
    let msgs = coffer_testkit::stream_messages(&js, &bus.stream).await;
    for m in &msgs {
        js.publish(m.subject.clone(), m.payload.clone())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let stream = js.get_stream(&bus.stream).await.unwrap();
    eventually("duplicates acked", WAIT, || async {
        let info = stream.consumer_info("seen").await.ok()?;
        (info.delivered.stream_sequence == 20 && info.num_ack_pending == 0 && info.num_pending == 0)
            .then_some(())
    })
    .await;
    assert_eq!(seen(&db, org).await.len(), 10, "no effect applied twice");
}

#[tokio::test]
async fn the_consumer_continues_the_producers_trace() {
    let (t, db, store) = setup().await;
    let (_c, js, bus) = bus().await;
    let _run = start(&t, &db, &js, &bus, None);
    let org = OrgId::new();
    let span = tracing::info_span!("producer.request");
    let producer_trace = {
        let _g = span.enter();
        coffer_telemetry::current_context_headers()
            .remove("traceparent")
            .expect("test telemetry gives spans a trace context")
    };
    store
        .execute::<Counter>(
            org,
            AggregateId::new(),
            &Actor::service("t"),
            CounterCommand::Add(1),
        )
        .instrument(span)
        .await
        .unwrap();
    let s = wait_seen(&db, org, 1).await;
    let consumer_trace = s[0].1.clone().expect("consumer span had a trace context");
    assert_eq!(trace_id(&consumer_trace), trace_id(&producer_trace));
    assert_ne!(
        consumer_trace, producer_trace,
        "the consumer runs in its own child span"
    );
}

#[tokio::test]
async fn a_transient_failure_is_redelivered_and_then_succeeds() {
    let (t, db, store) = setup().await;
    let (_c, js, bus) = bus().await;
    let _run = start(
        &t,
        &db,
        &js,
        &bus,
        Some(|d| (d.delivered == 1).then(|| HandlerError::Transient("database busy".into()))),
    );
    let org = OrgId::new();
    store
        .execute::<Counter>(
            org,
            AggregateId::new(),
            &Actor::service("t"),
            CounterCommand::Add(1),
        )
        .await
        .unwrap();
    wait_seen(&db, org, 1).await;
    let dlq = js
        .get_stream(&bus.dlq_stream)
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    assert_eq!(dlq.state.messages, 0);
}

#[tokio::test]
async fn a_handler_that_keeps_failing_dead_letters_after_bounded_redelivery_and_the_stream_moves_on()
 {
    let (t, db, _store) = setup().await;
    let (_c, js, bus) = bus().await;
    let _run = start(
        &t,
        &db,
        &js,
        &bus,
        Some(|d| {
            matches!(
                d.event.decode::<CounterEvent>(),
                Ok(CounterEvent::Added(-7))
            )
            .then(|| HandlerError::Transient("downstream refused".into()))
        }),
    );
    let org = OrgId::new();
    // Written straight to the stream, so the first event fails and the second does not.
    let poison = stray_event(org, "CounterAdded");
    let mut poison_bytes = poison.clone();
    poison_bytes.payload = (-7i64).to_be_bytes().to_vec();
    js.publish(
        bus.subject(org, "estest", "CounterAdded"),
        poison_bytes.encode_envelope().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let good = stray_event(org, "CounterAdded");
    js.publish(
        bus.subject(org, "estest", "CounterAdded"),
        good.encode_envelope().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    let s = wait_seen(&db, org, 1).await;
    assert_eq!(
        s[0].0, good.event_id.0,
        "the stream moved on past the failing event"
    );
    let dl = dead_letters(&js, &bus, 1).await;
    assert_eq!(dl[0].consumer, "seen");
    assert!(
        dl[0].reason.contains("downstream refused"),
        "{}",
        dl[0].reason
    );
    let back = RecordedEvent::decode_envelope(&dl[0].payload).unwrap();
    assert_eq!(
        back.event_id, poison.event_id,
        "the dead letter carries the event unchanged"
    );
}

#[tokio::test]
async fn undecodable_payloads_and_unknown_event_types_go_to_the_dead_letter_subject_with_the_reason()
 {
    let (t, db, _store) = setup().await;
    let (_c, js, bus) = bus().await;
    let _run = start(
        &t,
        &db,
        &js,
        &bus,
        Some(|d| {
            (d.event.event_type != "CounterAdded").then(|| {
                HandlerError::Permanent(format!("unknown event type `{}`", d.event.event_type))
            })
        }),
    );
    let org = OrgId::new();
    let subject = bus.subject(org, "estest", "CounterAdded");
    js.publish(subject.clone(), "\u{1}not protobuf at all\u{ff}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish(
        bus.subject(org, "estest", "Mystery"),
        stray_event(org, "Mystery").encode_envelope().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let good = stray_event(org, "CounterAdded");
    js.publish(subject, good.encode_envelope().into())
        .await
        .unwrap()
        .await
        .unwrap();

    let s = wait_seen(&db, org, 1).await;
    assert_eq!(s[0].0, good.event_id.0);
    let dl = dead_letters(&js, &bus, 2).await;
    assert!(dl[0].reason.contains("envelope"), "{}", dl[0].reason);
    assert!(
        dl[1].reason.contains("unknown event type `Mystery`"),
        "{}",
        dl[1].reason
    );
}

//! A real tonic server behind `GrpcTraceLayer` continues the trace of a client that uses
//! `inject_grpc`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coffer_telemetry::{GrpcTraceLayer, LogCapture, TelemetryConfig, inject_grpc};
use opentelemetry::trace::{SpanKind, TraceContextExt as _};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument as _;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt as _};

/// What each `tracing` span looked like to the subscriber: its name and every field it got.
#[derive(Clone, Default)]
struct Recorded {
    spans: Arc<Mutex<Spans>>,
}

#[derive(Default)]
struct Spans {
    /// Every span created, in order.
    all: Vec<(&'static str, BTreeMap<String, String>)>,
    /// Live span id → index in `all` (ids are reused once a span closes).
    live: BTreeMap<u64, usize>,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Recorded {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut spans = self.spans.lock().unwrap();
        spans.all.push((attrs.metadata().name(), fields));
        let index = spans.all.len() - 1;
        spans.live.insert(id.into_u64(), index);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.spans.lock().unwrap();
        if let Some(&index) = spans.live.get(&id.into_u64()) {
            values.record(&mut Fields(&mut spans.all[index].1));
        }
    }
}

impl Recorded {
    fn named(&self, name: &str) -> Vec<BTreeMap<String, String>> {
        let spans = self.spans.lock().unwrap();
        spans
            .all
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

/// Polls the exporter until a span named `name` has finished, or fails after a deadline.
async fn finished_span(exporter: &InMemorySpanExporter, name: &str) -> SpanData {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let spans = exporter.get_finished_spans().unwrap();
        if let Some(span) = spans.into_iter().find(|s| s.name == name) {
            return span;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no finished span named {name}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn attribute(span: &SpanData, key: &'static str) -> Option<Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key == Key::from_static_str(key))
        .map(|kv| kv.value.clone())
}

// Current-thread runtime: the server, its connection tasks and the client all run on this
// thread, so the thread-local test subscriber sees every span.
#[tokio::test]
async fn server_span_continues_the_callers_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let recorded = Recorded::default();
    let subscriber =
        coffer_telemetry::subscriber(&TelemetryConfig::default(), LogCapture::new(), &provider)
            .unwrap()
            .with(recorded.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .layer(GrpcTraceLayer::new())
            .add_service(health)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );

    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HealthClient::with_interceptor(channel, inject_grpc);

    let caller = tracing::info_span!("caller");
    let caller_sc = caller.context().span().span_context().clone();
    assert!(caller_sc.is_valid());
    client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .instrument(caller.clone())
        .await
        .unwrap();
    let not_found = client
        .check(HealthCheckRequest {
            service: "coffer.nope.v1.Nope".to_owned(),
        })
        .instrument(caller.clone())
        .await
        .unwrap_err();
    assert_eq!(not_found.code(), tonic::Code::NotFound);

    let server_span = finished_span(&exporter, "grpc.health.v1.Health/Check").await;
    assert_eq!(server_span.span_context.trace_id(), caller_sc.trace_id());
    assert_eq!(server_span.parent_span_id, caller_sc.span_id());
    assert_eq!(server_span.span_kind, SpanKind::Server);
    assert_eq!(
        attribute(&server_span, "rpc.method"),
        Some(Value::from("Check"))
    );
    assert_eq!(
        attribute(&server_span, "rpc.service"),
        Some(Value::from("grpc.health.v1.Health"))
    );

    let requests = recorded.named("grpc.request");
    assert_eq!(requests.len(), 2, "one span per request: {requests:?}");
    for fields in &requests {
        assert_eq!(fields["rpc.method"], "Check");
        assert_eq!(fields["rpc.system"], "grpc");
    }
    assert!(
        requests
            .iter()
            .any(|f| f.get("rpc.grpc.status_code").map(String::as_str) == Some("5")),
        "NOT_FOUND is recorded on its span: {requests:?}"
    );

    // Both calls belong to the caller's trace.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let server_spans: Vec<_> = exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.name == "grpc.health.v1.Health/Check")
            .collect();
        if server_spans.len() == 2 {
            assert!(
                server_spans
                    .iter()
                    .all(|s| s.span_context.trace_id() == caller_sc.trace_id())
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{server_spans:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn request_without_traceparent_starts_a_new_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber =
        coffer_telemetry::subscriber(&TelemetryConfig::default(), LogCapture::new(), &provider)
            .unwrap();
    let _guard = tracing::subscriber::set_default(subscriber);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .layer(GrpcTraceLayer::new())
            .add_service(health)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // No interceptor: nothing is propagated.
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();

    let server_span = finished_span(&exporter, "grpc.health.v1.Health/Check").await;
    assert!(server_span.span_context.is_valid());
    assert_eq!(
        server_span.parent_span_id,
        opentelemetry::trace::SpanId::INVALID
    );

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

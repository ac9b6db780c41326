//! Trace context survives the trip through a persisted header map and through NATS headers, and
//! the tenant recorded deep inside a request reaches the request span.

use std::collections::BTreeMap;

use coffer_telemetry::{
    LogCapture, TelemetryConfig, context_from_headers, current_context_headers, extract_nats,
    inject_nats, record_org_id, set_parent_from_headers,
};
use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use opentelemetry::{Key, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use tracing::field::Empty;
use tracing::subscriber::DefaultGuard;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A thread-local subscriber built like production, exporting finished spans to memory.
struct Harness {
    exporter: InMemorySpanExporter,
    _provider: SdkTracerProvider,
    _guard: DefaultGuard,
}

fn harness(filter: &str) -> Harness {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let cfg = TelemetryConfig {
        filter: filter.to_owned(),
        ..TelemetryConfig::default()
    };
    let subscriber = coffer_telemetry::subscriber(&cfg, LogCapture::new(), &provider).unwrap();
    Harness {
        exporter,
        _provider: provider,
        _guard: tracing::subscriber::set_default(subscriber),
    }
}

fn span_context(span: &tracing::Span) -> SpanContext {
    span.context().span().span_context().clone()
}

#[test]
fn map_round_trip_keeps_the_trace_and_parents_the_consumer() {
    let h = harness("info");

    let producer = tracing::info_span!("append");
    let producer_sc = span_context(&producer);
    assert!(producer_sc.is_valid(), "spans must get real trace ids");
    let headers = producer.in_scope(current_context_headers);

    assert!(headers["traceparent"].contains(&producer_sc.trace_id().to_string()));
    let extracted = context_from_headers(&headers);
    assert_eq!(
        extracted.span().span_context().trace_id(),
        producer_sc.trace_id()
    );
    assert_eq!(
        extracted.span().span_context().span_id(),
        producer_sc.span_id()
    );
    drop(producer);

    // The consumer runs later, outside the producer's span (as in another process).
    let unrelated = tracing::info_span!("unrelated");
    assert_ne!(span_context(&unrelated).trace_id(), producer_sc.trace_id());

    let consumer = tracing::info_span!("consume");
    set_parent_from_headers(&consumer, &headers);
    let consumer_sc = span_context(&consumer);
    assert_eq!(consumer_sc.trace_id(), producer_sc.trace_id());
    assert_ne!(consumer_sc.span_id(), producer_sc.span_id());

    let child = consumer.in_scope(|| tracing::info_span!("project"));
    assert_eq!(span_context(&child).trace_id(), producer_sc.trace_id());
    drop(child);
    drop(consumer);

    let finished = h.exporter.get_finished_spans().unwrap();
    let consume = finished.iter().find(|s| s.name == "consume").unwrap();
    assert_eq!(consume.parent_span_id, producer_sc.span_id());
}

#[test]
fn empty_headers_keep_the_local_parent() {
    let _h = harness("info");
    let outer = tracing::info_span!("outer");
    let inner = outer.in_scope(|| tracing::info_span!("inner"));
    set_parent_from_headers(&inner, &BTreeMap::new());
    assert_eq!(
        span_context(&inner).trace_id(),
        span_context(&outer).trace_id()
    );
}

#[test]
fn propagation_does_not_depend_on_the_log_filter() {
    // Logging only errors must not switch tracing off.
    let _h = harness("error");
    let span = tracing::info_span!("request");
    assert!(span_context(&span).is_valid());
    let headers = span.in_scope(current_context_headers);
    assert!(headers.contains_key("traceparent"));
}

#[test]
fn debug_spans_propagate_their_enclosing_trace() {
    // DEBUG spans are below the OpenTelemetry layer's floor; inside one, the enclosing INFO
    // span's trace is what gets sent.
    let _h = harness("debug");
    let request = tracing::info_span!("request");
    let request_sc = span_context(&request);
    let headers = request.in_scope(|| {
        let detail = tracing::debug_span!("detail");
        detail.in_scope(current_context_headers)
    });
    let cx = context_from_headers(&headers);
    assert_eq!(cx.span().span_context().trace_id(), request_sc.trace_id());
}

#[test]
fn nats_headers_round_trip_keeps_the_trace() {
    let _h = harness("info");
    let producer = tracing::info_span!("publish");
    let producer_sc = span_context(&producer);

    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "0195f1e2-aaaa-7000-8000-000000000001");
    producer.in_scope(|| inject_nats(&mut headers));
    assert!(
        headers
            .get("traceparent")
            .unwrap()
            .as_str()
            .contains(&producer_sc.trace_id().to_string())
    );
    assert_eq!(
        headers.get("Nats-Msg-Id").unwrap().as_str(),
        "0195f1e2-aaaa-7000-8000-000000000001",
        "injection must not disturb other headers"
    );
    drop(producer);

    let consumer = tracing::info_span!("consume");
    consumer.set_parent(extract_nats(&headers)).unwrap();
    assert_eq!(span_context(&consumer).trace_id(), producer_sc.trace_id());
}

#[test]
fn org_id_recorded_in_a_nested_span_reaches_the_request_span() {
    let h = harness("info");
    let request = tracing::info_span!("grpc.request", org_id = Empty);
    request.in_scope(|| {
        let tx = tracing::info_span!("db.tx");
        tx.in_scope(|| record_org_id("0195f1e2-0000-7000-8000-00000000000a"));
    });
    drop(request);

    let finished = h.exporter.get_finished_spans().unwrap();
    let request = finished.iter().find(|s| s.name == "grpc.request").unwrap();
    let org = request
        .attributes
        .iter()
        .find(|kv| kv.key == Key::from_static_str("org_id"))
        .map(|kv| kv.value.clone());
    assert_eq!(
        org,
        Some(Value::from("0195f1e2-0000-7000-8000-00000000000a"))
    );
}

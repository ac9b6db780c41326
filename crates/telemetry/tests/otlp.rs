//! Spans reach a real OTLP/gRPC receiver through the exporter `tracer_provider` builds.

use std::time::Duration;

use coffer_telemetry::{LogCapture, TelemetryConfig, record_org_id};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A minimal OTLP trace receiver: forwards every export request to the test.
struct Receiver(mpsc::UnboundedSender<ExportTraceServiceRequest>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let _ = self.0.send(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn string_value(value: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> Option<&str> {
    match value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

// Multi-thread: `force_flush` blocks a thread while the exporter's gRPC client and the receiver
// run on the runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_grpc_receiver() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = tokio::spawn(
        Server::builder()
            .add_service(TraceServiceServer::new(Receiver(tx)))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    let provider =
        coffer_telemetry::tracer_provider("coffer-otlp-test", Some(&format!("http://{addr}")))
            .unwrap();
    let subscriber =
        coffer_telemetry::subscriber(&TelemetryConfig::default(), LogCapture::new(), &provider)
            .unwrap();
    let trace_id = tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("otlp.smoke", org_id = Empty);
        let _entered = span.enter();
        record_org_id("0195f1e2-0000-7000-8000-00000000000c");
        span.context().span().span_context().trace_id()
    });

    let flusher = provider.clone();
    tokio::task::spawn_blocking(move || flusher.force_flush())
        .await
        .unwrap()
        .unwrap();

    let request = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("an export request within 20 s")
        .unwrap();
    let resource_spans = &request.resource_spans[0];
    let service_name = resource_spans
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| string_value(&kv.value));
    assert_eq!(service_name, Some("coffer-otlp-test"));

    let span = resource_spans
        .scope_spans
        .iter()
        .flat_map(|scope| &scope.spans)
        .find(|span| span.name == "otlp.smoke")
        .expect("the span was exported");
    assert_eq!(span.trace_id, trace_id.to_bytes().to_vec());
    let org_id = span
        .attributes
        .iter()
        .find(|kv| kv.key == "org_id")
        .and_then(|kv| string_value(&kv.value));
    assert_eq!(org_id, Some("0195f1e2-0000-7000-8000-00000000000c"));

    tokio::task::spawn_blocking(move || provider.shutdown())
        .await
        .unwrap()
        .unwrap();
    server.abort();
}

#[test]
fn otlp_endpoint_needs_a_runtime() {
    let error = coffer_telemetry::tracer_provider("coffer", Some("http://127.0.0.1:4317"))
        .err()
        .unwrap();
    assert!(
        matches!(error, coffer_telemetry::Error::NoRuntime),
        "{error}"
    );
}

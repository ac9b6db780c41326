//! `init` honours `OTEL_EXPORTER_OTLP_ENDPOINT`: a child process (this binary again) calls `init`
//! with the variable pointing at a real OTLP/gRPC receiver run here, and its span arrives.
//!
//! The environment cannot be changed inside a test process without `unsafe`, and `init` installs
//! process-global state, so this target runs without libtest (`harness = false`) and re-executes
//! itself as the child.

use std::time::Duration;

use coffer_telemetry::{LogFormat, TelemetryConfig};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

const TEST_NAME: &str = "init_exports_to_the_endpoint_in_the_environment";
const CHILD: &str = "COFFER_TELEMETRY_OTLP_ENV_CHILD";
const SPAN_NAME: &str = "otlp.env_smoke";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        // nextest lists twice, once with --ignored; this test is never ignored.
        if !args.iter().any(|a| a == "--ignored") {
            println!("{TEST_NAME}: test");
        }
        return;
    }
    if std::env::var_os(CHILD).is_some() {
        child();
        return;
    }
    let filtered_out = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .any(|filter| !TEST_NAME.contains(filter.as_str()));
    if filtered_out {
        println!("0 passed, 0 failed");
        return;
    }
    parent();
    println!("test {TEST_NAME} ... ok");
    println!("1 passed, 0 failed");
}

/// Runs in the child: production `init` from the environment, one span, then the guard's flush.
fn child() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let cfg = TelemetryConfig {
            format: LogFormat::Json,
            service_name: "coffer-otlp-env-test".to_owned(),
            ..TelemetryConfig::default()
        };
        let guard = coffer_telemetry::init(&cfg).unwrap();
        assert!(matches!(
            coffer_telemetry::init(&cfg),
            Err(coffer_telemetry::Error::AlreadyInitialized)
        ));
        let span = tracing::info_span!(SPAN_NAME);
        let trace_id = span.context().span().span_context().trace_id();
        span.in_scope(|| tracing::info!("inside the exported span"));
        drop(span);
        println!("trace_id={trace_id}");
        // Dropping the guard flushes the batch to the endpoint.
        drop(guard);
    });
}

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

fn parent() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let server = tokio::spawn(
            Server::builder()
                .add_service(TraceServiceServer::new(Receiver(tx)))
                .serve_with_incoming(TcpIncoming::from(listener)),
        );

        let output = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::process::Command::new(std::env::current_exe().unwrap())
                .env(CHILD, "1")
                .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))
                .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
                .env_remove("RUST_LOG")
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("the child finishes within 60 s")
        .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "child failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            output.status
        );
        assert!(
            stderr.contains("inside the exported span"),
            "logs go to stderr: {stderr}"
        );
        let trace_id = stdout
            .lines()
            .find_map(|line| line.strip_prefix("trace_id="))
            .expect("the child prints its trace id")
            .to_owned();

        // The child flushed before exiting, so everything it exported has arrived.
        let mut exported = Vec::new();
        while let Ok(request) = rx.try_recv() {
            exported.extend(
                request
                    .resource_spans
                    .into_iter()
                    .flat_map(|rs| rs.scope_spans)
                    .flat_map(|ss| ss.spans),
            );
        }
        let span = exported
            .iter()
            .find(|span| span.name == SPAN_NAME)
            .unwrap_or_else(|| panic!("{SPAN_NAME} was not exported; child stderr:\n{stderr}"));
        assert_eq!(hex(&span.trace_id), trace_id);
        server.abort();
    });
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

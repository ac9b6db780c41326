//! Logs, traces and trace propagation for every Coffer binary.
//!
//! This crate owns three things:
//!
//! - **Installing telemetry** ([`init`]): one global `tracing` subscriber with an
//!   [`EnvFilter`](tracing_subscriber::EnvFilter) over a JSON or human-readable log layer on
//!   stderr, plus a `tracing-opentelemetry` layer backed by an OpenTelemetry SDK tracer provider.
//!   The provider always exists, so every span has a real W3C trace id that propagates across
//!   processes; when `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is
//!   set, it also batches spans to that OTLP/gRPC endpoint.
//! - **Propagation** of W3C `traceparent`/`tracestate`: into and out of plain maps (the event
//!   store persists [`current_context_headers`] on each outbox row), NATS message headers
//!   ([`inject_nats`], [`extract_nats`]) and gRPC metadata ([`GrpcTraceLayer`] on servers,
//!   [`inject_grpc`] on clients).
//! - **Tenant context on spans**: request spans declare an empty [`ORG_ID_FIELD`] and
//!   [`record_org_id`] fills it in, so every log line and exported span that touches tenant data
//!   carries the org.
//!
//! Propagation always uses the W3C TraceContext format directly, so the helpers work the same
//! with or without [`init`] (in tests that install a scoped subscriber, for example). [`init`]
//! also sets OpenTelemetry's global text-map propagator to TraceContext for libraries that use it.
//!
//! Spans at `INFO` and above always reach the OpenTelemetry layer, whatever the log filter says:
//! the filter decides what is *logged*, never whether a trace propagates.

mod capture;
mod config;
mod grpc;
mod propagation;
mod subscriber;

pub use capture::{LogCapture, LogCaptureWriter};
pub use config::{LogFormat, TelemetryConfig};
pub use grpc::{GrpcTraceLayer, GrpcTraceService, inject_grpc};
pub use propagation::{
    NatsHeaderExtractor, NatsHeaderInjector, ORG_ID_FIELD, context_from_headers, current_context,
    current_context_headers, extract_nats, inject_nats, record_org_id, set_parent_from_headers,
};
pub use subscriber::{
    OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, TelemetryGuard, init,
    init_for_tests, subscriber, tracer_provider,
};

/// Why telemetry could not be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A global `tracing` subscriber is already installed in this process ([`init`] ran before,
    /// or something else installed one).
    #[error("telemetry is already initialised in this process")]
    AlreadyInitialized,
    /// The log filter (from the config or `RUST_LOG`) is not a valid `EnvFilter` directive list.
    #[error("parse log filter {filter:?}")]
    Filter {
        /// The filter text that failed to parse.
        filter: String,
        /// What was wrong with it.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// An OTLP endpoint was configured but there is no Tokio runtime to run the gRPC client on.
    #[error("the OTLP exporter needs a tokio runtime: call init from inside one")]
    NoRuntime,
    /// The OTLP span exporter could not be built (for example, an invalid endpoint URL).
    #[error("build OTLP span exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// Installing the global subscriber (or the `log` bridge) failed.
    #[error("install global tracing subscriber")]
    Install(#[source] tracing_subscriber::util::TryInitError),
}

//! Trace propagation over gRPC: a server layer that continues the caller's trace, and a client
//! interceptor that sends it.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing::Span;
use tracing::field::Empty;

use crate::propagation::{current_context, set_parent};

/// A tower layer for tonic servers that runs every request in a `grpc.request` span continuing
/// the caller's trace.
///
/// For each request it reads the W3C `traceparent`/`tracestate` HTTP/2 headers, creates
///
/// ```text
/// info_span!("grpc.request", otel.name = "<service>/<method>", otel.kind = "server",
///            rpc.system = "grpc", rpc.service, rpc.method, rpc.grpc.status_code = Empty,
///            otel.status_code = Empty, org_id = Empty)
/// ```
///
/// parented on that context, and runs the handler inside it. `org_id` is declared empty so
/// handlers (through the tenant helper) can fill it in with [`record_org_id`](crate::record_org_id).
/// When the response carries `grpc-status` in its headers (tonic does this for every error
/// returned by a handler), the span records it and marks server-side failures as errors.
///
/// ```no_run
/// # async fn serve() -> Result<(), tonic::transport::Error> {
/// let (_reporter, health) = tonic_health::server::health_reporter();
/// tonic::transport::Server::builder()
///     .layer(coffer_telemetry::GrpcTraceLayer::new())
///     .add_service(health)
///     .serve(([127, 0, 0, 1], 50051).into())
///     .await
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct GrpcTraceLayer;

impl GrpcTraceLayer {
    /// The layer.
    pub fn new() -> Self {
        Self
    }
}

impl<S> Layer<S> for GrpcTraceLayer {
    type Service = GrpcTraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcTraceService { inner }
    }
}

/// The service [`GrpcTraceLayer`] wraps around a tonic server's routes.
#[derive(Debug, Clone)]
pub struct GrpcTraceService<S> {
    /// The wrapped routes.
    inner: S,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcTraceService<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResBody: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let span = request_span(&request);
        let response = span.in_scope(|| self.inner.call(request));
        let outcome_span = span.clone();
        Box::pin(
            async move {
                let result = response.await;
                record_outcome(&outcome_span, &result);
                result
            }
            .instrument(span),
        )
    }
}

/// The `grpc.request` span for `request`, parented on the caller's propagated context.
fn request_span<B>(request: &http::Request<B>) -> Span {
    let (service, method) = split_path(request.uri().path());
    let name = format!("{service}/{method}");
    let span = tracing::info_span!(
        "grpc.request",
        otel.name = name.as_str(),
        otel.kind = "server",
        otel.status_code = Empty,
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = Empty,
        org_id = Empty,
    );
    set_parent(
        &span,
        TraceContextPropagator::new().extract(&HttpHeaderExtractor(request.headers())),
    );
    span
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
fn split_path(path: &str) -> (&str, &str) {
    let path = path.strip_prefix('/').unwrap_or(path);
    path.split_once('/').unwrap_or((path, ""))
}

/// Records the gRPC status (when it is in the response headers) and whether the call failed.
fn record_outcome<B, E>(span: &Span, result: &Result<http::Response<B>, E>) {
    let response = match result {
        Ok(response) => response,
        Err(_) => {
            span.record("otel.status_code", "ERROR");
            return;
        }
    };
    let Some(code) = response
        .headers()
        .get("grpc-status")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<i32>().ok())
    else {
        // The status travels in the trailers; a normal unary success.
        return;
    };
    span.record("rpc.grpc.status_code", code);
    if is_server_error(code) {
        span.record("otel.status_code", "ERROR");
    }
}

/// The codes OpenTelemetry's gRPC conventions count as server-span errors: UNKNOWN,
/// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
fn is_server_error(code: i32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// A tonic client interceptor that puts the current span's trace context (`traceparent`,
/// `tracestate`) into the outgoing request metadata.
///
/// ```no_run
/// # async fn call() -> Result<(), Box<dyn std::error::Error>> {
/// use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
/// use tracing::Instrument as _;
///
/// let channel = tonic::transport::Endpoint::from_static("http://127.0.0.1:50051")
///     .connect()
///     .await?;
/// let mut client = HealthClient::with_interceptor(channel, coffer_telemetry::inject_grpc);
/// client
///     .check(HealthCheckRequest::default())
///     .instrument(tracing::info_span!("probe"))
///     .await?;
/// # Ok(())
/// # }
/// ```
///
/// Make the call inside the span that should be the server span's parent (instrument the
/// calling future with it, or enter it around the call).
///
/// # Errors
///
/// Never; the `Result` is what tonic's `Interceptor` signature requires.
pub fn inject_grpc(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    TraceContextPropagator::new().inject_context(
        &current_context(),
        &mut MetadataInjector(request.metadata_mut()),
    );
    Ok(request)
}

/// Reads W3C headers from HTTP/2 request headers.
struct HttpHeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Writes W3C headers into outgoing gRPC metadata.
struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(&value),
        ) {
            self.0.insert(key, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/grpc.health.v1.Health/Check"),
            ("grpc.health.v1.Health", "Check")
        );
        assert_eq!(split_path("/odd"), ("odd", ""));
        assert_eq!(split_path(""), ("", ""));
    }

    #[test]
    fn only_server_faults_are_errors() {
        assert!(!is_server_error(0)); // OK
        assert!(!is_server_error(5)); // NOT_FOUND: the caller's problem
        assert!(!is_server_error(7)); // PERMISSION_DENIED
        assert!(is_server_error(13)); // INTERNAL
        assert!(is_server_error(14)); // UNAVAILABLE
    }
}

//! Building and installing the global subscriber and the OpenTelemetry tracer provider.

use std::io::IsTerminal;
use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio::runtime::{Handle, RuntimeFlavor};
use tracing::Subscriber;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

use crate::{Error, LogFormat, TelemetryConfig};

/// Environment variable that turns on OTLP export: the collector's gRPC endpoint, for example
/// `http://otel-collector:4317`. The exporter also honours the other standard `OTEL_EXPORTER_OTLP_*`
/// variables (headers, timeout, compression).
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// Traces-specific endpoint; takes precedence over [`OTEL_EXPORTER_OTLP_ENDPOINT`] when set.
pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";

/// Instrumentation scope name for the tracer behind the `tracing` bridge.
const TRACER_NAME: &str = env!("CARGO_PKG_NAME");

/// Keeps the tracer provider alive; on drop, exports what is still buffered and shuts it down.
///
/// Hold it for the life of `main`. Shutting down blocks until the last batch is exported (or the
/// exporter's timeout passes); on a multi-thread Tokio runtime the drop moves off the worker
/// thread first so the gRPC client can still make progress. On a current-thread runtime, drop it
/// after the runtime has stopped driving the exporter (or use a multi-thread runtime).
#[derive(Debug)]
#[must_use = "dropping the guard shuts tracing export down"]
pub struct TelemetryGuard {
    /// The provider the global `tracing-opentelemetry` layer exports through.
    provider: SdkTracerProvider,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let shutdown = || self.provider.shutdown();
        let result = match Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(shutdown)
            }
            _ => shutdown(),
        };
        if let Err(error) = result {
            tracing::warn!(%error, "shut down tracer provider");
        }
    }
}

/// Installs the process-wide telemetry: the global `tracing` subscriber, the `log` bridge, the W3C
/// TraceContext text-map propagator and the global OpenTelemetry tracer provider.
///
/// - Logs go to stderr as JSON or compact text ([`TelemetryConfig::format`]), filtered by
///   [`TelemetryConfig::effective_filter`] (`RUST_LOG` wins over the config).
/// - Spans at `INFO` and above always get OpenTelemetry contexts with real trace ids, whether or
///   not anything exports them, so propagation works regardless of the log filter.
/// - If [`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`] or [`OTEL_EXPORTER_OTLP_ENDPOINT`] is set and not
///   empty, spans are batched to that endpoint over OTLP/gRPC, with resource
///   `service.name` = [`TelemetryConfig::service_name`]. This needs a Tokio runtime: call `init`
///   from inside one (from `#[tokio::main]`, say).
///
/// # Errors
///
/// [`Error::AlreadyInitialized`] if a global subscriber is already installed (calling `init`
/// twice is an error, not a panic); [`Error::Filter`] for an invalid filter;
/// [`Error::NoRuntime`] or [`Error::Exporter`] if OTLP export is configured but cannot start.
pub fn init(cfg: &TelemetryConfig) -> Result<TelemetryGuard, Error> {
    if tracing::dispatcher::has_been_set() {
        return Err(Error::AlreadyInitialized);
    }
    let filter = cfg.effective_filter();
    let provider = tracer_provider(&cfg.service_name, otlp_endpoint_from_env().as_deref())?;
    let ansi = cfg.format == LogFormat::Pretty && std::io::stderr().is_terminal();
    let installed = build(cfg, &filter, std::io::stderr, ansi, &provider)
        .and_then(|subscriber| subscriber.try_init().map_err(Error::Install));
    if let Err(error) = installed {
        // Nothing was exported through it yet; shut it down so its batch thread ends.
        let _ = provider.shutdown();
        return Err(error);
    }
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(TelemetryGuard { provider })
}

/// Installs test telemetry once per process and does nothing on later calls, so every test in a
/// test binary can call it first.
///
/// Logs go through libtest's captured output (shown for failing tests) in the compact format,
/// filtered by `RUST_LOG` or `info`. Spans get real trace ids, but nothing is exported, whatever
/// the environment says. If another global subscriber is already installed, that one is kept.
///
/// # Panics
///
/// If `RUST_LOG` is set to an invalid filter.
pub fn init_for_tests() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let cfg = TelemetryConfig {
            format: LogFormat::Pretty,
            service_name: "coffer-test".to_owned(),
            ..TelemetryConfig::default()
        };
        let provider = tracer_provider(&cfg.service_name, None)
            .expect("a tracer provider without an exporter cannot fail to build");
        let subscriber = build(
            &cfg,
            &cfg.effective_filter(),
            fmt::TestWriter::new(),
            false,
            &provider,
        )
        .expect("RUST_LOG must be a valid tracing filter");
        // Already set (by a test that called `init`, or another harness): keep that one.
        let _ = subscriber.try_init();
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    });
}

/// Builds (without installing) the subscriber [`init`] would install, writing log lines to
/// `writer` instead of stderr and creating spans through `provider`.
///
/// Use it in tests with `tracing::subscriber::set_default` or `with_default`, together with a
/// [`LogCapture`](crate::LogCapture) to read the lines, or with a provider whose exporter the
/// test controls. Unlike [`init`], this does not read `RUST_LOG`: [`TelemetryConfig::filter`] is
/// used as given, and colours are off.
///
/// # Errors
///
/// [`Error::Filter`] if the filter does not parse.
pub fn subscriber<W>(
    cfg: &TelemetryConfig,
    writer: W,
    provider: &SdkTracerProvider,
) -> Result<impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static, Error>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    build(cfg, &cfg.filter, writer, false, provider)
}

/// Builds an SDK tracer provider with resource `service.name` = `service_name`.
///
/// With `otlp_endpoint` (for example `http://127.0.0.1:4317`), spans are batched to it over
/// OTLP/gRPC (tonic); the remaining standard `OTEL_EXPORTER_OTLP_*` variables (headers, timeout,
/// compression) still apply. Without one, spans get ids and propagate but are not exported.
/// [`init`] calls this with the endpoint from the environment.
///
/// # Errors
///
/// With an endpoint: [`Error::NoRuntime`] outside a Tokio runtime (the gRPC client runs on it),
/// [`Error::Exporter`] if the exporter cannot be built.
pub fn tracer_provider(
    service_name: &str,
    otlp_endpoint: Option<&str>,
) -> Result<SdkTracerProvider, Error> {
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some(endpoint) = otlp_endpoint else {
        return Ok(builder.build());
    };
    // The tonic channel spawns its connection task on the current runtime; without one it
    // would panic inside the exporter builder.
    Handle::try_current().map_err(|_| Error::NoRuntime)?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .build()
        .map_err(Error::Exporter)?;
    Ok(builder.with_batch_exporter(exporter).build())
}

/// The OTLP traces endpoint from the environment, by the OpenTelemetry spec's precedence.
fn otlp_endpoint_from_env() -> Option<String> {
    [
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
        OTEL_EXPORTER_OTLP_ENDPOINT,
    ]
    .into_iter()
    .filter_map(|name| std::env::var(name).ok())
    .find(|value| !value.trim().is_empty())
}

/// The subscriber behind [`init`], [`init_for_tests`] and [`subscriber`].
fn build<W>(
    cfg: &TelemetryConfig,
    filter: &str,
    writer: W,
    ansi: bool,
    provider: &SdkTracerProvider,
) -> Result<impl Subscriber + for<'a> LookupSpan<'a> + Send + Sync + 'static, Error>
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let env_filter = EnvFilter::try_new(filter).map_err(|source| Error::Filter {
        filter: filter.to_owned(),
        source,
    })?;
    let log_layer: Box<dyn Layer<Registry> + Send + Sync> = match cfg.format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(writer)
            .with_filter(env_filter)
            .boxed(),
        LogFormat::Pretty => fmt::layer()
            .compact()
            .with_ansi(ansi)
            .with_writer(writer)
            .with_filter(env_filter)
            .boxed(),
    };
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(TRACER_NAME))
        .with_filter(otel_filter());
    Ok(Registry::default().with(log_layer).with(otel_layer))
}

/// What the OpenTelemetry layer sees, independent of the log filter: `INFO` and above, except
/// the exporter's own stack (which would otherwise trace its own exports).
fn otel_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
}

//! W3C TraceContext propagation through maps and NATS headers, and the tenant field on spans.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::str::FromStr as _;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing::field::{Field, Value};
use tracing::span::{Id, Record};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Registry;
use tracing_subscriber::registry::LookupSpan as _;

/// The span field that carries the tenant.
///
/// `tracing` can only record fields that a span declared when it was created, so every span that
/// should carry the org declares it empty up front and [`record_org_id`] fills it in later:
///
/// ```
/// let span = tracing::info_span!("consume", org_id = tracing::field::Empty);
/// let _entered = span.enter();
/// coffer_telemetry::record_org_id("0195f1e2-0000-7000-8000-000000000001");
/// ```
///
/// [`GrpcTraceLayer`](crate::GrpcTraceLayer)'s request spans declare it.
pub const ORG_ID_FIELD: &str = "org_id";

/// The OpenTelemetry context of the current `tracing` span.
///
/// If the current span is not seen by the OpenTelemetry layer (a `DEBUG` span, say), this is the
/// context of the nearest enclosing span that is; with no OpenTelemetry layer installed it is
/// empty.
pub fn current_context() -> Context {
    let cx = Span::current().context();
    if cx.span().span_context().is_valid() {
        cx
    } else {
        Context::current()
    }
}

/// The current span's trace context as W3C headers (`traceparent`, and `tracestate` when not
/// empty). Empty when there is no valid current trace.
///
/// The event store persists this on each outbox row so consumers continue the producer's trace.
pub fn current_context_headers() -> BTreeMap<String, String> {
    let mut headers = BTreeMap::new();
    TraceContextPropagator::new()
        .inject_context(&current_context(), &mut MapInjector(&mut headers));
    headers
}

/// The remote context described by W3C headers, as produced by [`current_context_headers`].
/// Missing or malformed headers give a context without a valid span.
pub fn context_from_headers(headers: &BTreeMap<String, String>) -> Context {
    TraceContextPropagator::new().extract(&MapExtractor(headers))
}

/// Makes the trace context in `headers` the OpenTelemetry parent of `span`.
///
/// Call it right after creating the span, before entering it or reading its context: a span's
/// parent cannot change once its OpenTelemetry span has started. If the headers hold no valid
/// context, `span` keeps its ordinary `tracing` parent.
pub fn set_parent_from_headers(span: &Span, headers: &BTreeMap<String, String>) {
    set_parent(span, context_from_headers(headers));
}

/// Sets `parent` as `span`'s OpenTelemetry parent if it carries a valid remote span.
pub(crate) fn set_parent(span: &Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        // Fails only if the span is disabled, already started, or no OpenTelemetry layer is
        // installed; in each case there is nothing to attach the parent to.
        let _ = span.set_parent(parent);
    }
}

/// Writes the current span's trace context into NATS message headers (`traceparent`,
/// `tracestate`), for publishing.
pub fn inject_nats(headers: &mut async_nats::HeaderMap) {
    TraceContextPropagator::new()
        .inject_context(&current_context(), &mut NatsHeaderInjector(headers));
}

/// Reads the producer's trace context from NATS message headers. Use it with
/// `tracing_opentelemetry::OpenTelemetrySpanExt::set_parent` on the consumer's span.
pub fn extract_nats(headers: &async_nats::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&NatsHeaderExtractor(headers))
}

/// Records `org_id` on the current span and on every enclosing span that declares
/// [`ORG_ID_FIELD`], so the request or consumer span carries the tenant even when the call
/// happens inside a nested span.
///
/// The tenant helper in `coffer-db` calls this whenever it sets the tenant. If no span in scope
/// declares the field, the org is still attached to the current span's OpenTelemetry span as an
/// attribute (it then shows in exported traces but not in log lines).
pub fn record_org_id(org_id: impl Display) {
    let current = Span::current();
    let value = tracing::field::display(&org_id);
    let mut recorded = false;
    current.with_subscriber(|(id, dispatch)| {
        let Some(registry) = dispatch.downcast_ref::<Registry>() else {
            return;
        };
        let Some(span) = registry.span(id) else {
            return;
        };
        // Collect first so no registry reference is held while layers handle the record.
        let targets: Vec<(Id, &'static tracing::Metadata<'static>, Field)> = span
            .scope()
            .filter_map(|s| {
                let field = s.metadata().fields().field(ORG_ID_FIELD)?;
                Some((s.id(), s.metadata(), field))
            })
            .collect();
        drop(span);
        for (id, metadata, field) in targets {
            let values = [(&field, Some(&value as &dyn Value))];
            let value_set = metadata.fields().value_set(&values);
            dispatch.record(&id, &Record::new(&value_set));
            recorded = true;
        }
    });
    if !recorded {
        if current.has_field(ORG_ID_FIELD) {
            current.record(ORG_ID_FIELD, value);
        } else {
            current.set_attribute(ORG_ID_FIELD, org_id.to_string());
        }
    }
}

/// Writes into a `BTreeMap<String, String>`.
struct MapInjector<'a>(&'a mut BTreeMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// Reads from a `BTreeMap<String, String>`; keys match case-insensitively, as in HTTP.
struct MapExtractor<'a>(&'a BTreeMap<String, String>);

impl Extractor for MapExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .or_else(|| {
                self.0
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            })
            .map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// An OpenTelemetry [`Injector`] over NATS message headers, for use with any propagator.
#[derive(Debug)]
pub struct NatsHeaderInjector<'a>(pub &'a mut async_nats::HeaderMap);

impl Injector for NatsHeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // Propagators only produce valid header names and values; skip anything else rather
        // than panic inside async-nats' own validation.
        let (Ok(name), Ok(value)) = (
            async_nats::HeaderName::from_str(key),
            async_nats::HeaderValue::from_str(&value),
        ) else {
            return;
        };
        self.0.insert(name, value);
    }
}

/// An OpenTelemetry [`Extractor`] over NATS message headers; names match case-insensitively.
#[derive(Debug)]
pub struct NatsHeaderExtractor<'a>(pub &'a async_nats::HeaderMap);

impl Extractor for NatsHeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if let Ok(name) = async_nats::HeaderName::from_str(key)
            && let Some(value) = self.0.get(name)
        {
            return Some(value.as_str());
        }
        self.0
            .iter()
            .find(|(name, _)| AsRef::<str>::as_ref(*name).eq_ignore_ascii_case(key))
            .and_then(|(_, values)| values.first())
            .map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_ref()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn map_extraction_reads_w3c_headers() {
        let headers = BTreeMap::from([("traceparent".to_owned(), TRACEPARENT.to_owned())]);
        let cx = context_from_headers(&headers);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid());
        assert!(sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
    }

    #[test]
    fn map_extraction_ignores_header_case() {
        let headers = BTreeMap::from([("Traceparent".to_owned(), TRACEPARENT.to_owned())]);
        assert!(
            context_from_headers(&headers)
                .span()
                .span_context()
                .is_valid()
        );
    }

    #[test]
    fn malformed_headers_give_no_parent() {
        let headers = BTreeMap::from([("traceparent".to_owned(), "00-zz-yy-01".to_owned())]);
        assert!(
            !context_from_headers(&headers)
                .span()
                .span_context()
                .is_valid()
        );
        assert!(
            !context_from_headers(&BTreeMap::new())
                .span()
                .span_context()
                .is_valid()
        );
    }

    #[test]
    fn no_current_trace_gives_no_headers() {
        // No subscriber in this thread: there is no trace to propagate.
        assert!(current_context_headers().is_empty());
    }

    #[test]
    fn nats_extraction_reads_w3c_headers() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("traceparent", TRACEPARENT);
        let cx = extract_nats(&headers);
        assert_eq!(
            cx.span().span_context().trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn nats_injector_skips_invalid_names() {
        let mut headers = async_nats::HeaderMap::new();
        NatsHeaderInjector(&mut headers).set("bad:name", "v".to_owned());
        NatsHeaderInjector(&mut headers).set("good", "bad\r\nvalue".to_owned());
        assert!(headers.is_empty());
    }
}

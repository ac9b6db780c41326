//! `init_for_tests` can be called from every test of a binary, and what it installs gives spans
//! real, propagating trace contexts.

use coffer_telemetry::{context_from_headers, current_context_headers, init_for_tests};
use opentelemetry::trace::TraceContextExt as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

#[test]
fn first_caller_installs_it() {
    init_for_tests();
    init_for_tests();
    let span = tracing::info_span!("test.first");
    let sc = span.context().span().span_context().clone();
    assert!(sc.is_valid());
    let headers = span.in_scope(current_context_headers);
    assert_eq!(
        context_from_headers(&headers)
            .span()
            .span_context()
            .trace_id(),
        sc.trace_id()
    );
}

#[test]
fn later_callers_share_it() {
    init_for_tests();
    let span = tracing::info_span!("test.second");
    assert!(span.context().span().span_context().is_valid());
}

#[test]
fn init_after_init_for_tests_is_an_error_not_a_panic() {
    init_for_tests();
    let result = coffer_telemetry::init(&coffer_telemetry::TelemetryConfig::default());
    assert!(matches!(
        result,
        Err(coffer_telemetry::Error::AlreadyInitialized)
    ));
}

//! What log lines look like: JSON lines carry the tenant recorded on enclosing spans.

use coffer_telemetry::{LogCapture, LogFormat, TelemetryConfig, record_org_id};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::field::Empty;

fn config(format: LogFormat) -> TelemetryConfig {
    TelemetryConfig {
        format,
        ..TelemetryConfig::default()
    }
}

#[test]
fn json_lines_carry_the_org_id_of_the_request_span() {
    let capture = LogCapture::new();
    let provider = SdkTracerProvider::builder().build();
    let subscriber =
        coffer_telemetry::subscriber(&config(LogFormat::Json), capture.clone(), &provider).unwrap();

    tracing::subscriber::with_default(subscriber, || {
        let request = tracing::info_span!("grpc.request", rpc.method = "Check", org_id = Empty);
        let _request = request.enter();
        record_org_id("0195f1e2-0000-7000-8000-00000000000b");
        let work = tracing::info_span!("work");
        let _work = work.enter();
        tracing::info!(rows = 3, "projection updated");
    });

    let lines = capture.lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("\"org_id\""), "{}", lines[0]);
    let line: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(line["fields"]["message"], "projection updated");
    assert_eq!(line["fields"]["rows"], 3);
    assert_eq!(line["span"]["name"], "work");
    let request = &line["spans"][0];
    assert_eq!(request["name"], "grpc.request");
    assert_eq!(request["org_id"], "0195f1e2-0000-7000-8000-00000000000b");
    assert_eq!(request["rpc.method"], "Check");
}

#[test]
fn filter_decides_what_is_logged() {
    let capture = LogCapture::new();
    let provider = SdkTracerProvider::builder().build();
    let cfg = TelemetryConfig {
        filter: "warn".to_owned(),
        ..config(LogFormat::Json)
    };
    let subscriber = coffer_telemetry::subscriber(&cfg, capture.clone(), &provider).unwrap();
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!("hidden");
        tracing::warn!("shown");
    });
    let contents = capture.contents();
    assert!(contents.contains("shown"));
    assert!(!contents.contains("hidden"));
}

#[test]
fn pretty_lines_are_plain_text_with_span_fields() {
    let capture = LogCapture::new();
    let provider = SdkTracerProvider::builder().build();
    let subscriber =
        coffer_telemetry::subscriber(&config(LogFormat::Pretty), capture.clone(), &provider)
            .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("consume", org_id = Empty);
        let _span = span.enter();
        record_org_id("org-7");
        tracing::info!("handled");
    });
    let contents = capture.contents();
    assert!(contents.contains("handled"), "{contents}");
    assert!(contents.contains("org_id=org-7"), "{contents}");
    assert!(!contents.contains('\u{1b}'), "no colour codes in a capture");
    assert!(serde_json::from_str::<serde_json::Value>(contents.trim()).is_err());
}

#[test]
fn invalid_filter_is_an_error() {
    let provider = SdkTracerProvider::builder().build();
    let cfg = TelemetryConfig {
        filter: "info,[".to_owned(),
        ..TelemetryConfig::default()
    };
    let error = coffer_telemetry::subscriber(&cfg, LogCapture::new(), &provider)
        .err()
        .unwrap();
    assert!(
        matches!(error, coffer_telemetry::Error::Filter { .. }),
        "{error}"
    );
}

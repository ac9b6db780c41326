//! The diagnostics API drives the whole event pipeline.

use std::time::Duration;

use coffer_proto::diagnostics::v1::{
    GetProbeRequest, GetProbeResponse, SendProbeRequest,
    diagnostics_service_client::DiagnosticsServiceClient,
};
use coffer_testkit::eventually;
use coffer_types::OrgId;
use tonic::{Code, Request};

use crate::helpers::{Authed, TestApp, TestOrg, spawn_app};

const WAIT: Duration = Duration::from_secs(20);

/// A client acting as the owner of a fresh org.
async fn client(app: &TestApp) -> (DiagnosticsServiceClient<Authed>, TestOrg) {
    let org = app.new_org("Probers").await;
    let c = DiagnosticsServiceClient::new(app.authed(&org.owner_key).await);
    (c, org)
}

async fn wait_observed(
    c: &mut DiagnosticsServiceClient<Authed>,
    org: OrgId,
    probe_id: &str,
) -> GetProbeResponse {
    eventually("probe observed", WAIT, || {
        let mut c = c.clone();
        let probe_id = probe_id.to_owned();
        async move {
            let v = c
                .get_probe(GetProbeRequest {
                    org_id: org.to_string(),
                    probe_id,
                })
                .await
                .ok()?
                .into_inner();
            v.observed_at.is_some().then_some(v)
        }
    })
    .await
}

async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM coffer_diag.events")
        .fetch_one(&app.db.superuser().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_probe_travels_append_outbox_jetstream_consumer_projection_in_the_callers_trace() {
    let app = spawn_app().await;
    let (mut c, org) = client(&app).await;
    let org = org.org;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request = Request::new(SendProbeRequest {
        org_id: org.to_string(),
        note: "round trip".into(),
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .unwrap(),
    );
    let sent = c.send_probe(request).await.unwrap().into_inner();
    assert_eq!(sent.version, 1);

    let view = wait_observed(&mut c, org, &sent.probe_id).await;
    assert!(view.published, "the relay published it");
    assert_eq!(view.note, "round trip");
    assert_eq!(view.probes_sent, 1);
    assert!(view.stream_sequence >= 1);
    assert_eq!(
        view.consumer_trace_id, trace_id,
        "the trace context went gRPC metadata -> event -> NATS headers -> consumer"
    );
    // The message on the stream is the event, under its subject, with its id.
    let subject = app.bus.subject(org, "diag", "ProbeSent");
    let first = eventually("ProbeSent on the stream", WAIT, || async {
        coffer_testkit::stream_messages(&app.js, &app.bus.stream)
            .await
            .into_iter()
            .find(|m| m.subject.as_str() == subject)
    })
    .await;
    assert_eq!(
        first.headers.get("Nats-Msg-Id").unwrap().as_str(),
        sent.event_id
    );
    assert!(
        first
            .headers
            .get("traceparent")
            .unwrap()
            .as_str()
            .contains(trace_id)
    );
}

#[tokio::test]
async fn bad_input_is_invalid_argument_naming_the_field_and_changes_nothing() {
    let app = spawn_app().await;
    let (mut c, org) = client(&app).await;
    let org = org.org;
    let cases = [
        (
            SendProbeRequest {
                org_id: "not-a-uuid".into(),
                note: "x".into(),
            },
            "org_id must be a UUID",
        ),
        (
            SendProbeRequest {
                org_id: org.to_string(),
                note: "x".repeat(201),
            },
            "note must be at most 200 characters, got 201",
        ),
        (
            SendProbeRequest {
                org_id: org.to_string(),
                note: "line\nbreak".into(),
            },
            "note must not contain control characters",
        ),
    ];
    for (req, message) in cases {
        let status = c.send_probe(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), message);
    }
    let status = c
        .get_probe(GetProbeRequest {
            org_id: org.to_string(),
            probe_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (Code::InvalidArgument, "probe_id must be a UUID")
    );
    assert_eq!(event_count(&app).await, 0, "nothing was written");
}

#[tokio::test]
async fn p5_cross_tenant_read_is_not_found() {
    let app = spawn_app().await;
    let (mut c, mine) = client(&app).await;
    let mine = mine.org;
    let (theirs_client, theirs) = client(&app).await;
    let theirs = theirs.org;
    let sent = c
        .send_probe(SendProbeRequest {
            org_id: mine.to_string(),
            note: "private".into(),
        })
        .await
        .unwrap()
        .into_inner();
    wait_observed(&mut c, mine, &sent.probe_id).await;
    let ask = |org: OrgId, probe_id: String| {
        let mut theirs_client = theirs_client.clone();
        async move {
            theirs_client
                .get_probe(GetProbeRequest {
                    org_id: org.to_string(),
                    probe_id,
                })
                .await
                .unwrap_err()
        }
    };
    // Org B's owner naming org A: the org does not exist as far as B can tell.
    let status = ask(mine, sent.probe_id.clone()).await;
    assert_eq!(status.code(), Code::NotFound);
    let nowhere = ask(OrgId::new(), sent.probe_id.clone()).await;
    assert_eq!(
        (nowhere.code(), nowhere.message()),
        (status.code(), status.message())
    );
    // Org B's owner naming A's probe in B: row-level security hides it like a missing one.
    let hidden = ask(theirs, sent.probe_id.clone()).await;
    let missing = ask(theirs, coffer_types::AggregateId::new().to_string()).await;
    assert_eq!(hidden.code(), Code::NotFound);
    assert_eq!(
        (missing.code(), missing.message()),
        (hidden.code(), hidden.message())
    );
}

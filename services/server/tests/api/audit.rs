//! The audit log (P4): every event reaches its org's log once, under a hash chain and an
//! RFC 9162 tree; signed checkpoints; queries, proofs and the export bundle, each checked by
//! the independent verifier in `independent.rs`.

use std::time::Duration;

use coffer_audit::bundle;
use coffer_proto::audit::v1 as pb;
use coffer_proto::audit::v1::audit_service_client::AuditServiceClient;
use coffer_types::OrgId;
use prost::Message;

use crate::helpers::{Authed, TestApp, spawn_app};
use crate::independent::{self, H};

pub(crate) async fn audit(app: &TestApp, key: &str) -> AuditServiceClient<Authed> {
    AuditServiceClient::new(app.authed(key).await)
}

/// Waits until `org`'s log has a checkpoint of at least `size` entries; returns the latest.
pub(crate) async fn checkpoint_of_at_least(
    client: &AuditServiceClient<Authed>,
    org: OrgId,
    size: u64,
) -> pb::Checkpoint {
    coffer_testkit::eventually(
        "a checkpoint covers the entries",
        Duration::from_secs(20),
        || {
            let mut client = client.clone();
            async move {
                client
                    .get_checkpoint(pb::GetCheckpointRequest {
                        org_id: org.to_string(),
                        size: 0,
                    })
                    .await
                    .ok()
                    .map(|r| r.into_inner())
                    .filter(|c| c.size >= size)
            }
        },
    )
    .await
}

/// The whole export of `org`'s log as a bundle file's bytes.
pub(crate) async fn export(
    client: &mut AuditServiceClient<Authed>,
    request: pb::ExportBundleRequest,
) -> Vec<u8> {
    let mut stream = client
        .export_bundle(request)
        .await
        .expect("export")
        .into_inner();
    let mut file = bundle::Writer::new(Vec::new()).unwrap();
    while let Some(record) = stream.message().await.expect("export record") {
        file.write(&record).unwrap();
    }
    file.finish().unwrap()
}

/// Every record of a bundle file, parsed by hand.
pub(crate) fn records(file: &[u8]) -> Vec<pb::bundle_record::Record> {
    let mut rest = file
        .strip_prefix(b"coffer-audit-bundle-v1\n".as_slice())
        .expect("bundle format line");
    let mut out = Vec::new();
    while !rest.is_empty() {
        let record = pb::BundleRecord::decode_length_delimited(&mut rest).unwrap();
        out.push(record.record.unwrap());
    }
    out
}

/// Checks a whole-log bundle with the independent verifier; returns its leaves' events.
pub(crate) fn verify_independently(file: &[u8], org: OrgId) -> Vec<pb::AuditEntry> {
    let records = records(file);
    let pb::bundle_record::Record::Header(header) = &records[0] else {
        panic!("first record is not a header")
    };
    let signed = independent::open_checkpoint(&header.checkpoint, &header.verifier_key).unwrap();
    assert_eq!(signed.origin, format!("coffer/audit/{org}"));
    assert_eq!(header.from_seq, 1);
    let mut leaf_hashes = Vec::new();
    let mut entries = Vec::new();
    let mut stored_chain = Vec::new();
    for r in &records[1..records.len() - 1] {
        let pb::bundle_record::Record::Entry(e) = r else {
            panic!("not an entry")
        };
        let entry = pb::AuditEntry::decode(e.leaf.as_slice()).unwrap();
        assert_eq!(
            (entry.org_id.as_str(), entry.seq),
            (org.to_string().as_str(), e.seq)
        );
        leaf_hashes.push(independent::leaf(&e.leaf));
        stored_chain.push(<H>::try_from(e.chain_hash.as_slice()).unwrap());
        entries.push(entry);
    }
    assert_eq!(leaf_hashes.len() as u64, signed.size);
    assert_eq!(
        independent::chain(&org.to_string(), &leaf_hashes),
        stored_chain
    );
    assert_eq!(independent::mth(&leaf_hashes), signed.root);
    entries
}

#[tokio::test]
async fn p4_every_event_of_an_org_lands_once_in_its_own_log_under_a_signed_chain_and_tree() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let other = app.new_org("Other").await;
    let mut vault = crate::credentials::vault(&app, &acme).await;
    for name in ["a", "b", "c"] {
        crate::credentials::create(&mut vault, acme.org, name, b"value").await;
    }
    // OrgCreated, the owner's MemberAdded and ApiKeyCreated, OrgKeyGenerated, then three
    // CredentialCreated + CredentialValueSet: 10 events.
    let expected: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM coffer_enrollment.events WHERE org_id = $1)
              + (SELECT count(*) FROM coffer_credentials.events WHERE org_id = $1)",
    )
    .bind(acme.org.as_uuid())
    .fetch_one(&app.db.superuser().await)
    .await
    .unwrap();
    let mut client = audit(&app, &acme.owner_key).await;
    let checkpoint = checkpoint_of_at_least(&client, acme.org, expected as u64).await;
    assert_eq!(
        checkpoint.size, expected as u64,
        "no event twice, none missing"
    );

    let file = export(
        &mut client,
        pb::ExportBundleRequest {
            org_id: acme.org.to_string(),
            ..Default::default()
        },
    )
    .await;
    let entries = verify_independently(&file, acme.org);
    let mut ids: Vec<String> = entries
        .iter()
        .map(|e| e.event.as_ref().unwrap().event_id.clone())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len() as i64, expected);
    assert!(
        entries
            .iter()
            .all(|e| e.event.as_ref().unwrap().org_id == acme.org.to_string())
    );
    let report = bundle::verify(file.as_slice(), &Default::default()).unwrap();
    assert_eq!(
        (report.size, report.entries),
        (expected as u64, expected as u64)
    );

    // The other org's log holds only its own events.
    let mut theirs = audit(&app, &other.owner_key).await;
    let c = checkpoint_of_at_least(&theirs, other.org, 1).await;
    let file = export(
        &mut theirs,
        pb::ExportBundleRequest {
            org_id: other.org.to_string(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(verify_independently(&file, other.org).len() as u64, c.size);
}

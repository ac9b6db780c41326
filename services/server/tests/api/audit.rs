//! The audit log (P4): every event reaches its org's log once, under a hash chain and an
//! RFC 9162 tree; signed checkpoints; queries, proofs and the export bundle, each checked by
//! the independent verifier in `independent.rs`.

use std::time::Duration;

use coffer_audit::bundle;
use coffer_proto::audit::v1 as pb;
use coffer_proto::audit::v1::audit_service_client::AuditServiceClient;
use coffer_types::OrgId;
use prost::Message;
use tonic::Code;

use crate::helpers::{Authed, Provider, TestApp, spawn, spawn_app};
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
    // OrgCreated, the owner's ApiKeyCreated, the org's CaCreated, OrgKeyGenerated (committed
    // asynchronously by the credentials consumer), then three CredentialCreated +
    // CredentialValueSet.
    let su = app.db.superuser().await;
    coffer_testkit::eventually("the org key exists", Duration::from_secs(20), || {
        let su = su.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM coffer_credentials.events
                  WHERE org_id = $1 AND event_type = 'OrgKeyGenerated'",
            )
            .bind(acme.org.as_uuid())
            .fetch_one(&su)
            .await
            .unwrap();
            (n == 1).then_some(())
        }
    })
    .await;
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

async fn all_entries(client: &mut AuditServiceClient<Authed>, org: OrgId) -> Vec<pb::Entry> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .query_entries(pb::QueryEntriesRequest {
                org_id: org.to_string(),
                page: Some(coffer_proto::common::v1::PageRequest {
                    page_size: 3,
                    page_token: token.clone(),
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        out.extend(page.entries);
        token = page.page.unwrap().next_page_token;
        if token.is_empty() {
            return out;
        }
    }
}

/// Waits until `org`'s log holds everything creating the org produced (its age key comes
/// asynchronously) and `credential_events` events of its credentials; returns the log.
async fn settled_log(
    client: &AuditServiceClient<Authed>,
    org: OrgId,
    credential_events: usize,
) -> Vec<pb::Entry> {
    coffer_testkit::eventually(
        "the org's events are in its log",
        Duration::from_secs(20),
        || {
            let mut client = client.clone();
            async move {
                let all = all_entries(&mut client, org).await;
                let kind = |t: &str| {
                    all.iter()
                        .filter(|e| e.event.as_ref().unwrap().event_type.starts_with(t))
                        .count()
                };
                let org_created = [
                    "OrgCreated",
                    "CaCreated",
                    "ApiKeyCreated",
                    "OrgKeyGenerated",
                ]
                .iter()
                .all(|t| kind(t) >= 1);
                (org_created && kind("Credential") == credential_events).then_some(all)
            }
        },
    )
    .await
}

fn hashes(list: &[Vec<u8>]) -> Vec<H> {
    list.iter()
        .map(|h| <H>::try_from(h.as_slice()).unwrap())
        .collect()
}

#[tokio::test]
async fn p4_checkpoints_come_every_n_entries_signed_by_the_orgs_own_key_stored_only_wrapped_by_local_kms()
 {
    Box::pin(checkpoints_every_n_entries(Provider::Local)).await
}

#[tokio::test]
async fn p4_checkpoints_come_every_n_entries_signed_by_the_orgs_own_key_stored_only_wrapped_by_aws_kms()
 {
    Box::pin(checkpoints_every_n_entries(Provider::Aws)).await
}

async fn checkpoints_every_n_entries(provider: Provider) {
    let app = spawn(provider, |c| {
        c.audit.checkpoint_every_entries = 4;
        c.audit.checkpoint_interval = Duration::from_secs(3600);
        c.audit.checkpoint_poll = Duration::from_millis(50);
    })
    .await;
    let acme = app.new_org("Acme").await;
    let mut vault = crate::credentials::vault(&app, &acme).await;
    for i in 0..6 {
        crate::credentials::create(&mut vault, acme.org, &format!("c{i}"), b"v").await;
    }
    let mut client = audit(&app, &acme.owner_key).await;
    let log = settled_log(&client, acme.org, 12).await.len() as u64;
    let latest = checkpoint_of_at_least(&client, acme.org, log - 3).await;

    // Every checkpoint ever issued is listed and retrievable by size; each covers at least 4
    // new entries (the time trigger is an hour away), and each verifies on its own.
    let listed = client
        .list_checkpoints(pb::ListCheckpointsRequest {
            org_id: acme.org.to_string(),
            page: None,
        })
        .await
        .unwrap()
        .into_inner()
        .checkpoints;
    assert!(listed.len() >= 2, "{listed:?}");
    assert_eq!(listed[0].size, latest.size.max(listed[0].size));
    let mut previous: Option<(u64, H)> = None;
    for c in listed.iter().rev() {
        let signed = independent::open_checkpoint(&c.signed_note, &c.verifier_key).unwrap();
        assert_eq!(signed.origin, format!("coffer/audit/{}", acme.org));
        assert_eq!(
            (signed.size, signed.root.to_vec()),
            (c.size, c.root_hash.clone())
        );
        let again = client
            .get_checkpoint(pb::GetCheckpointRequest {
                org_id: acme.org.to_string(),
                size: c.size,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again.signed_note, c.signed_note);
        if let Some((size, root)) = previous {
            assert!(c.size >= size + 4, "checkpoints at {size} and {}", c.size);
            let proof = client
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    org_id: acme.org.to_string(),
                    from_size: size,
                    to_size: c.size,
                })
                .await
                .unwrap()
                .into_inner();
            assert!(independent::consistency_holds(
                size,
                c.size,
                &root,
                &signed.root,
                &hashes(&proof.proof)
            ));
        } else {
            assert!(c.size >= 4);
        }
        previous = Some((c.size, signed.root));
    }
    assert!(
        log - listed[0].size < 4,
        "at most 3 entries wait for the next checkpoint"
    );

    // The signing key: stored only wrapped through KMS, under the org's context, and it is the
    // key the checkpoints verify with.
    let row: (String, Vec<u8>, String, Vec<u8>) = sqlx::query_as(
        "SELECT key_name, public_key, kms_key_id, wrapped_private_key
           FROM coffer_audit.audit_signing_keys WHERE org_id = $1",
    )
    .bind(acme.org.as_uuid())
    .fetch_one(&app.db.superuser().await)
    .await
    .unwrap();
    assert_eq!(row.0, format!("coffer/audit/{}", acme.org));
    let ctx = coffer_kms::EncryptionContext::new(
        acme.org,
        coffer_kms::Purpose::SigningKey,
        format!("audit-checkpoint/{}", acme.org),
    )
    .unwrap();
    let wrapped = coffer_kms::WrappedKey {
        key_id: coffer_kms::KeyId::new(row.2),
        ciphertext: row.3.clone(),
    };
    let seed = app.kms().decrypt_bytes(&wrapped, &ctx).await.unwrap();
    let seed: [u8; 32] = secrecy::ExposeSecret::expose_secret(&seed)
        .try_into()
        .unwrap();
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    assert_eq!(public.to_bytes().to_vec(), row.1);
    assert!(
        !row.3.windows(32).any(|w| w == seed),
        "the seed is not stored in the clear"
    );
    let other = app.new_org("Other").await;
    let wrong = coffer_kms::EncryptionContext::new(
        other.org,
        coffer_kms::Purpose::SigningKey,
        format!("audit-checkpoint/{}", acme.org),
    )
    .unwrap();
    assert!(app.kms().decrypt_bytes(&wrapped, &wrong).await.is_err());
}

#[tokio::test]
async fn p4_entries_come_with_inclusion_proofs_and_any_two_sizes_with_a_consistency_proof() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let mut vault = crate::credentials::vault(&app, &acme).await;
    for i in 0..4 {
        crate::credentials::create(&mut vault, acme.org, &format!("c{i}"), b"v").await;
    }
    let mut client = audit(&app, &acme.owner_key).await;
    let entries = all_entries(&mut client, acme.org).await;
    let checkpoint = checkpoint_of_at_least(&client, acme.org, entries.len() as u64).await;
    let signed =
        independent::open_checkpoint(&checkpoint.signed_note, &checkpoint.verifier_key).unwrap();
    let n = signed.size;
    let mut leaf_hashes = Vec::new();
    for seq in 1..=n {
        let got = client
            .get_entry(pb::GetEntryRequest {
                org_id: acme.org.to_string(),
                seq,
                tree_size: n,
            })
            .await
            .unwrap()
            .into_inner();
        let leaf_hash = independent::leaf(&got.leaf);
        let entry = got.entry.unwrap();
        assert_eq!(entry.leaf_hash, leaf_hash.to_vec());
        assert_eq!(
            pb::AuditEntry::decode(got.leaf.as_slice()).unwrap().event,
            entry.event
        );
        assert!(
            independent::inclusion_holds(
                seq - 1,
                n,
                &leaf_hash,
                &hashes(&got.inclusion_proof),
                &signed.root
            ),
            "inclusion of {seq} in {n}"
        );
        // A proof for the wrong position or a changed leaf does not hold.
        assert!(
            !independent::inclusion_holds(
                seq % n,
                n,
                &leaf_hash,
                &hashes(&got.inclusion_proof),
                &signed.root
            ) || n == 1
        );
        leaf_hashes.push(leaf_hash);
    }
    assert_eq!(independent::mth(&leaf_hashes), signed.root);
    for m in 1..=n {
        let proof = client
            .get_consistency_proof(pb::GetConsistencyProofRequest {
                org_id: acme.org.to_string(),
                from_size: m,
                to_size: n,
            })
            .await
            .unwrap()
            .into_inner();
        let old_root = independent::mth(&leaf_hashes[..m as usize]);
        assert_eq!(proof.from_root, old_root.to_vec());
        assert!(
            independent::consistency_holds(m, n, &old_root, &signed.root, &hashes(&proof.proof)),
            "consistency {m} -> {n}"
        );
    }
}

#[tokio::test]
async fn p4_queries_filter_by_time_actor_action_and_aggregate_in_pages_for_auditors_and_above_only()
{
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let mut vault = crate::credentials::vault(&app, &acme).await;
    let before = chrono::Utc::now();
    let made = crate::credentials::create(&mut vault, acme.org, "db", b"v").await;
    crate::credentials::create(&mut vault, acme.org, "bucket", b"v").await;
    let client = audit(&app, &acme.owner_key).await;
    let log = settled_log(&client, acme.org, 4).await;
    assert_eq!(
        log.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=log.len() as u64).collect::<Vec<_>>()
    );

    let query = |q: pb::QueryEntriesRequest| {
        let mut client = client.clone();
        async move {
            client
                .query_entries(pb::QueryEntriesRequest {
                    org_id: acme.org.to_string(),
                    ..q
                })
                .await
                .unwrap()
                .into_inner()
                .entries
        }
    };
    let types = |entries: Vec<pb::Entry>| {
        entries
            .into_iter()
            .map(|e| e.event.unwrap().event_type)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        types(
            query(pb::QueryEntriesRequest {
                action: "CredentialCreated".into(),
                ..Default::default()
            })
            .await
        ),
        ["CredentialCreated", "CredentialCreated"]
    );
    assert_eq!(
        types(
            query(pb::QueryEntriesRequest {
                aggregate_id: made.credential_id.clone(),
                ..Default::default()
            })
            .await
        ),
        ["CredentialCreated", "CredentialValueSet"]
    );
    let owner_actions = query(pb::QueryEntriesRequest {
        actor_kind: "api_key".into(),
        ..Default::default()
    })
    .await;
    assert!(owner_actions.len() >= 4);
    let actor = owner_actions[0]
        .event
        .as_ref()
        .unwrap()
        .actor
        .clone()
        .unwrap();
    let by_id = query(pb::QueryEntriesRequest {
        actor_kind: actor.kind.clone(),
        actor_id: actor.id.clone(),
        ..Default::default()
    })
    .await;
    assert!(
        by_id
            .iter()
            .all(|e| e.event.as_ref().unwrap().actor.as_ref() == Some(&actor))
    );
    let since = query(pb::QueryEntriesRequest {
        from: Some(coffer_proto::time::to_timestamp(before)),
        ..Default::default()
    })
    .await;
    assert_eq!(
        types(since.clone())
            .iter()
            .filter(|t| t.starts_with("Credential"))
            .count(),
        4
    );
    assert!(since.len() < log.len(), "org creation is before `from`");
    let until = query(pb::QueryEntriesRequest {
        to: Some(coffer_proto::time::to_timestamp(before)),
        ..Default::default()
    })
    .await;
    assert_eq!(since.len() + until.len(), log.len());

    // Auditors and above read; operators and viewers do not.
    for role in ["admin", "auditor"] {
        let key = app.new_api_key(&acme, role).await;
        let n = all_entries(&mut audit(&app, &key).await, acme.org)
            .await
            .len();
        assert!(n >= log.len(), "{role}");
    }
    for role in ["operator", "viewer"] {
        let key = app.new_api_key(&acme, role).await;
        let status = audit(&app, &key)
            .await
            .query_entries(pb::QueryEntriesRequest {
                org_id: acme.org.to_string(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{role}: {status:?}");
    }
}

#[tokio::test]
async fn bad_audit_requests_are_refused_by_field_with_the_right_code_and_change_nothing() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let mut client = audit(&app, &acme.owner_key).await;
    let quiet = settled_log(&client, acme.org, 0).await.len() as u64;
    let c = checkpoint_of_at_least(&client, acme.org, quiet).await;
    let su = app.db.superuser().await;
    let stored = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT (SELECT count(*) FROM coffer_audit.audit_entries)
                  + (SELECT count(*) FROM coffer_audit.audit_nodes)
                  + (SELECT count(*) FROM coffer_audit.audit_checkpoints)",
        )
        .fetch_one(&su)
        .await
        .unwrap()
    };
    let rows_before = stored().await;
    let org = acme.org.to_string();
    let now = chrono::Utc::now();
    let ts = coffer_proto::time::to_timestamp;
    let query = |q: pb::QueryEntriesRequest| {
        let mut client = client.clone();
        let org = org.clone();
        async move {
            client
                .query_entries(pb::QueryEntriesRequest { org_id: org, ..q })
                .await
                .unwrap_err()
        }
    };
    let page = |size: u32, token: &str| {
        Some(coffer_proto::common::v1::PageRequest {
            page_size: size,
            page_token: token.into(),
        })
    };
    for (request, code, says) in [
        (
            pb::QueryEntriesRequest {
                from: Some(ts(now)),
                to: Some(ts(now - chrono::Duration::hours(1))),
                ..Default::default()
            },
            Code::InvalidArgument,
            "to must be after from",
        ),
        (
            pb::QueryEntriesRequest {
                page: page(1_000_000, ""),
                ..Default::default()
            },
            Code::InvalidArgument,
            "page.page_size must be at most 1000",
        ),
        (
            pb::QueryEntriesRequest {
                page: page(10, "garbage"),
                ..Default::default()
            },
            Code::InvalidArgument,
            "page.page_token",
        ),
        (
            pb::QueryEntriesRequest {
                actor_id: "x".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "actor_kind is required",
        ),
        (
            pb::QueryEntriesRequest {
                actor_kind: "robot".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "actor_kind must be",
        ),
        (
            pb::QueryEntriesRequest {
                aggregate_id: "nope".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "aggregate_id must be a UUID",
        ),
        (
            pb::QueryEntriesRequest {
                from: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                ..Default::default()
            },
            Code::InvalidArgument,
            "from nanos",
        ),
    ] {
        let status = query(request).await;
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }

    let entry = |seq: u64, tree_size: u64| {
        let mut client = client.clone();
        let org = org.clone();
        async move {
            client
                .get_entry(pb::GetEntryRequest {
                    org_id: org,
                    seq,
                    tree_size,
                })
                .await
                .unwrap_err()
        }
    };
    let s = entry(0, 0).await;
    assert_eq!(
        (s.code(), s.message()),
        (Code::InvalidArgument, "seq must be at least 1")
    );
    assert_eq!(entry(c.size + 1_000, 0).await.code(), Code::NotFound);
    let s = entry(1, c.size + 1_000).await;
    assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    assert!(s.message().contains("beyond the log"), "{s:?}");

    let consistency = |from_size: u64, to_size: u64| {
        let mut client = client.clone();
        let org = org.clone();
        async move {
            client
                .get_consistency_proof(pb::GetConsistencyProofRequest {
                    org_id: org,
                    from_size,
                    to_size,
                })
                .await
                .unwrap_err()
        }
    };
    assert_eq!(
        consistency(1, c.size + 1_000).await.code(),
        Code::OutOfRange
    );
    let s = consistency(2, 1).await;
    assert_eq!(
        (s.code(), s.message()),
        (Code::InvalidArgument, "to_size must not be below from_size")
    );
    assert_eq!(consistency(0, 1).await.code(), Code::InvalidArgument);
    let s = client
        .get_checkpoint(pb::GetCheckpointRequest {
            org_id: org.clone(),
            size: c.size + 1_000,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::OutOfRange);
    for request in [
        pb::ExportBundleRequest {
            org_id: org.clone(),
            tree_size: c.size + 1_000,
            ..Default::default()
        },
        pb::ExportBundleRequest {
            org_id: org.clone(),
            from_seq: c.size + 1_000,
            ..Default::default()
        },
        pb::ExportBundleRequest {
            org_id: org.clone(),
            consistency_from: c.size + 1_000,
            ..Default::default()
        },
    ] {
        let s = client.export_bundle(request).await.unwrap_err();
        assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    }
    let s = client
        .query_entries(pb::QueryEntriesRequest {
            org_id: "not-an-org".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (s.code(), s.message()),
        (Code::InvalidArgument, "org_id must be a UUID")
    );

    // Nothing was written.
    assert_eq!(stored().await, rows_before);
    assert_eq!(
        all_entries(&mut client, acme.org).await.len() as u64,
        c.size
    );
}

/// A synthetic event of `org`, as another service would publish it.
fn event(org: OrgId, note: &str) -> coffer_eventstore::RecordedEvent {
    coffer_eventstore::RecordedEvent {
        event_id: coffer_types::EventId::new(),
        org_id: org,
        service: "diag".into(),
        aggregate_type: "Probe".into(),
        aggregate_id: coffer_types::AggregateId::new(),
        version: 1,
        event_type: "ProbeSent".into(),
        schema_version: 1,
        occurred_at: chrono::Utc::now(),
        actor: coffer_types::Actor::service("audit-test"),
        trace_context: Default::default(),
        payload: note.as_bytes().to_vec(),
    }
}

async fn append(db: &coffer_db::Database, e: &coffer_eventstore::RecordedEvent) -> u64 {
    let mut tx = db.begin_tenant(e.org_id).await.unwrap();
    let appended = coffer_audit::log::append(&mut tx, e).await.unwrap();
    tx.commit().await.unwrap();
    appended.seq
}

#[tokio::test]
async fn p4_one_appender_per_org_at_a_time_across_replicas_while_other_orgs_append_in_parallel() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let other = app.new_org("Other").await;
    // Two connection pools stand for two `coffer` replicas; the running app's own consumer
    // appends the orgs' real events at the same time.
    let replicas = [
        app.db.service(coffer_audit::SERVICE).await,
        app.db.service(coffer_audit::SERVICE).await,
    ];
    let mut tasks = tokio::task::JoinSet::new();
    let mut ours = Vec::new();
    for (r, db) in replicas.iter().enumerate() {
        for w in 0..4 {
            for org in [acme.org, other.org] {
                let events: Vec<_> = (0..10)
                    .map(|i| event(org, &format!("r{r} w{w} #{i}")))
                    .collect();
                ours.extend(events.iter().map(|e| (org, e.event_id.to_string())));
                let db = db.clone();
                tasks.spawn(async move {
                    for e in &events {
                        append(&db, e).await;
                    }
                });
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    for org in [&acme, &other] {
        let client = audit(&app, &org.owner_key).await;
        let size = settled_log(&client, org.org, 0).await.len() as u64;
        checkpoint_of_at_least(&client, org.org, size).await;
        let file = export(
            &mut client.clone(),
            pb::ExportBundleRequest {
                org_id: org.org.to_string(),
                ..Default::default()
            },
        )
        .await;
        // Gap-free, one chain, one tree: no two appenders ever interleaved within the org.
        let entries = verify_independently(&file, org.org);
        let ids: Vec<String> = entries
            .iter()
            .map(|e| e.event.as_ref().unwrap().event_id.clone())
            .collect();
        for (_, id) in ours.iter().filter(|(o, _)| *o == org.org) {
            assert_eq!(
                ids.iter().filter(|x| *x == id).count(),
                1,
                "{id} appended once"
            );
        }
    }

    // While one transaction holds Acme's log, a second Acme appender waits for it, and Other's
    // appends go through.
    let mut holder = replicas[0].begin_tenant(acme.org).await.unwrap();
    let first = event(acme.org, "held");
    let held = coffer_audit::log::append(&mut holder, &first)
        .await
        .unwrap();
    let second = event(acme.org, "waits");
    let waiting = {
        let db = replicas[1].clone();
        let second = second.clone();
        tokio::spawn(async move { append(&db, &second).await })
    };
    let su = app.db.superuser().await;
    coffer_testkit::eventually(
        "the second appender waits on the lock",
        Duration::from_secs(10),
        || {
            let su = su.clone();
            async move {
                let waiting: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                )
                .fetch_one(&su)
                .await
                .unwrap();
                (waiting == 1).then_some(())
            }
        },
    )
    .await;
    let meanwhile = tokio::time::timeout(
        Duration::from_secs(10),
        append(&replicas[1], &event(other.org, "free")),
    )
    .await
    .expect("another org's append does not wait");
    assert!(meanwhile > 1);
    assert!(!waiting.is_finished());
    holder.commit().await.unwrap();
    assert_eq!(waiting.await.unwrap(), held.seq + 1);
}

#[tokio::test]
async fn p4_a_redelivered_event_is_appended_once() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let mut client = audit(&app, &acme.owner_key).await;
    let first =
        coffer_testkit::eventually("the org's first entry", Duration::from_secs(20), || {
            let mut client = client.clone();
            async move {
                client
                    .get_entry(pb::GetEntryRequest {
                        org_id: acme.org.to_string(),
                        seq: 1,
                        tree_size: 0,
                    })
                    .await
                    .ok()
            }
        })
        .await
        .into_inner();
    let envelope = pb::AuditEntry::decode(first.leaf.as_slice())
        .unwrap()
        .event
        .unwrap();
    // The same event again, under another message id so JetStream's own deduplication does
    // not drop it: only the audit consumer's idempotence stands between it and a second entry.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "redelivered-by-the-test");
    headers.insert(
        coffer_eventstore::bus_headers::ORG_ID,
        envelope.org_id.as_str(),
    );
    headers.insert(
        coffer_eventstore::bus_headers::EVENT_TYPE,
        envelope.event_type.as_str(),
    );
    app.js
        .publish_with_headers(
            app.bus
                .subject(acme.org, &envelope.service, &envelope.event_type),
            headers,
            envelope.encode_to_vec().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // One org's events are appended in stream order, so once a later event is in, the
    // redelivered one has been handled.
    let later = crate::credentials::create(
        &mut crate::credentials::vault(&app, &acme).await,
        acme.org,
        "later",
        b"v",
    )
    .await;
    coffer_testkit::eventually("the later event is in", Duration::from_secs(20), || {
        let mut client = client.clone();
        let aggregate = later.credential_id.clone();
        async move {
            let found = client
                .query_entries(pb::QueryEntriesRequest {
                    org_id: acme.org.to_string(),
                    aggregate_id: aggregate,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .entries;
            (found.len() == 2).then_some(())
        }
    })
    .await;
    let all = all_entries(&mut client, acme.org).await;
    let copies = all
        .iter()
        .filter(|e| e.event.as_ref().unwrap().event_id == envelope.event_id)
        .count();
    assert_eq!(copies, 1);
}

#[tokio::test]
async fn p3_p4_a_credential_release_is_an_entry_whose_inclusion_proof_verifies_against_a_later_checkpoint()
 {
    use coffer_auth::ticket::JobTicket;
    use coffer_auth::token::Signer;
    use coffer_proto::credentials::v1 as cred;

    let app = crate::helpers::spawn_tls_app().await;
    let acme = app.new_org("Acme").await;
    let db = crate::credentials::create(
        &mut crate::credentials::vault(&app, &acme).await,
        acme.org,
        "prod/db",
        b"db password",
    )
    .await;
    let (agent_id, agent) = crate::credentials::enrolled_agent(&app, &acme).await;
    let scheduling = Signer::from_seed(&[7; 32]).unwrap();
    app.publish_ticket_key(&scheduling).await;
    let job = uuid::Uuid::now_v7();
    let ticket = scheduling
        .issue_ticket(&JobTicket::new(
            job,
            1,
            agent_id.parse().unwrap(),
            acme.org,
            vec![db.vault_ref.clone()],
            std::time::SystemTime::now(),
            Duration::from_secs(300),
        ))
        .unwrap();
    coffer_testkit::eventually("the release goes through", Duration::from_secs(10), || {
        let mut agent = agent.clone();
        let request = cred::ReleaseCredentialsRequest {
            ticket: ticket.clone(),
        };
        async move { agent.release_credentials(request).await.ok() }
    })
    .await;

    let mut client = audit(&app, &acme.owner_key).await;
    let released =
        coffer_testkit::eventually("the release is in the log", Duration::from_secs(20), || {
            let mut client = client.clone();
            async move {
                client
                    .query_entries(pb::QueryEntriesRequest {
                        org_id: acme.org.to_string(),
                        action: "CredentialsReleased".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .entries
                    .pop()
            }
        })
        .await;
    let event = released.event.clone().unwrap();
    assert_eq!(event.actor.as_ref().unwrap().id, agent_id);
    let payload =
        coffer_proto::events::v1::CredentialsReleased::decode(event.payload.as_slice()).unwrap();
    assert_eq!(
        (payload.job_id.as_str(), payload.vault_refs.clone()),
        (job.to_string().as_str(), vec![db.vault_ref.clone()])
    );

    // A later checkpoint (more entries after the release) proves it.
    crate::credentials::create(
        &mut crate::credentials::vault(&app, &acme).await,
        acme.org,
        "after",
        b"v",
    )
    .await;
    let later = checkpoint_of_at_least(&client, acme.org, released.seq + 2).await;
    let signed = independent::open_checkpoint(&later.signed_note, &later.verifier_key).unwrap();
    let got = client
        .get_entry(pb::GetEntryRequest {
            org_id: acme.org.to_string(),
            seq: released.seq,
            tree_size: later.size,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.entry.unwrap().event.unwrap(), event);
    assert!(independent::inclusion_holds(
        released.seq - 1,
        signed.size,
        &independent::leaf(&got.leaf),
        &hashes(&got.inclusion_proof),
        &signed.root
    ));
}

//! Orgs, members, API keys and access tokens through the public API.

use std::time::{Duration, Instant};

use coffer_proto::diagnostics::v1::{
    SendProbeRequest, diagnostics_service_client::DiagnosticsServiceClient,
};
use coffer_proto::enrollment::v1::{
    AddMemberRequest, ChangeMemberRoleRequest, CreateApiKeyRequest, CreateOrgRequest,
    ExchangeRequest, GetJwksRequest, GetOrgRequest, ListApiKeysRequest, ListMembersRequest,
    ReactivateMemberRequest, RemoveMemberRequest, RevokeApiKeyRequest, SuspendMemberRequest,
    api_key_service_client::ApiKeyServiceClient, member_service_client::MemberServiceClient,
    org_service_client::OrgServiceClient, token_service_client::TokenServiceClient,
};
use coffer_testkit::eventually;
use tonic::Code;

use crate::helpers::{Authed, TestApp, spawn_app};

async fn keys(app: &TestApp, api_key: &str) -> ApiKeyServiceClient<Authed> {
    ApiKeyServiceClient::new(app.authed(api_key).await)
}

async fn members(app: &TestApp, api_key: &str) -> MemberServiceClient<Authed> {
    MemberServiceClient::new(app.authed(api_key).await)
}

async fn event_count(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM coffer_enrollment.events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.db.superuser().await)
        .await
        .unwrap()
}

#[tokio::test]
async fn admin_init_bootstraps_a_platform_owner_who_creates_orgs_with_their_own_owner_key() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let org = OrgServiceClient::new(app.authed(&acme.owner_key).await)
        .get_org(GetOrgRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(org.name, "Acme");
    let listed = members(&app, &acme.owner_key)
        .await
        .list_members(ListMembersRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].email.as_str(), listed[0].role.as_str()),
        ("owner@acme.test", "owner")
    );

    // An org's own owner is not a platform admin: creating orgs is refused.
    let status = OrgServiceClient::new(app.authed(&acme.owner_key).await)
        .create_org(CreateOrgRequest {
            name: "Rogue".into(),
            owner_email: "x@rogue.test".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn exchange_returns_a_five_minute_eddsa_jwt_whose_kid_is_in_the_published_jwks() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let mut tokens = TokenServiceClient::new(app.channel().await);
    let before = chrono::Utc::now().timestamp();
    let token = tokens
        .exchange(ExchangeRequest {
            api_key: acme.owner_key.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(token.org_id, acme.org.to_string());
    assert_eq!(token.role, "owner");
    let lifetime = token.expires_at.unwrap().seconds - before;
    assert!((295..=301).contains(&lifetime), "lifetime {lifetime}s");

    let header = token.access_token.split('.').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(&base64_url_decode(header)).unwrap();
    assert_eq!(header["alg"], "EdDSA");
    let jwks: serde_json::Value = serde_json::from_str(
        &tokens
            .get_jwks(GetJwksRequest {})
            .await
            .unwrap()
            .into_inner()
            .json,
    )
    .unwrap();
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(published.contains(&header["kid"].as_str().unwrap()));
    assert!(
        jwks["keys"][0].get("d").is_none(),
        "no private material is published"
    );

    // Bad keys: malformed, unknown. Both are UNAUTHENTICATED and say nothing more.
    for bad in ["not-a-key", "coffer_0123456789abcdefghijklmnopqrstuvwxyzAB"] {
        let status = tokens
            .exchange(ExchangeRequest {
                api_key: bad.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unauthenticated, "invalid credentials")
        );
    }
}

fn base64_url_decode(s: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes() {
        let v = alphabet.iter().position(|&a| a == c).unwrap() as u32;
        bits = (bits << 6) | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    out
}

#[tokio::test]
async fn requests_without_or_with_bad_tokens_are_unauthenticated() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let request = || ListMembersRequest {
        org_id: acme.org.to_string(),
    };
    let status = MemberServiceClient::new(app.channel().await)
        .list_members(request())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let token = app.token(&acme.owner_key).await;
    let mut tampered = token.clone().into_bytes();
    let last = tampered.len() - 3;
    tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
    for bad in [String::from_utf8(tampered).unwrap(), "abc.def.ghi".into()] {
        let status = MemberServiceClient::new(app.with_token(&bad).await)
            .list_members(request())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        assert!(!status.message().contains(&bad), "the token is not echoed");
    }
}

#[tokio::test]
async fn api_keys_show_their_secret_once_and_list_only_metadata_with_last_use() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let mut k = keys(&app, &acme.owner_key).await;
    let created = k
        .create_api_key(CreateApiKeyRequest {
            org_id: acme.org.to_string(),
            name: "ci".into(),
            role: "operator".into(),
            scopes: vec!["job.run".into()],
            expires_at: Some(coffer_proto::time::to_timestamp(
                chrono::Utc::now() + chrono::Duration::days(30),
            )),
        })
        .await
        .unwrap()
        .into_inner();
    let secret = created.secret.clone();
    assert!(secret.starts_with("coffer_") && secret.len() >= 7 + 32);
    let meta = created.key.unwrap();
    assert_eq!(meta.display_prefix, &secret[..12]);
    assert!(meta.last_used_at.is_none());

    app.token(&secret).await;
    let listed = k
        .list_api_keys(ListApiKeysRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    let ci = listed.iter().find(|x| x.key_id == meta.key_id).unwrap();
    assert!(ci.last_used_at.is_some(), "exchange records the last use");
    assert_eq!(ci.scopes, vec!["job.run"]);
    assert!(ci.expires_at.is_some());

    // Nothing stored or listed holds the secret.
    let su = app.db.superuser().await;
    let hits: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM coffer_enrollment.api_keys k WHERE to_jsonb(k)::text LIKE '%' || $1 || '%')
              + (SELECT count(*) FROM coffer_enrollment.events e WHERE position(convert_to($1, 'UTF8') in e.payload) > 0)",
    )
    .bind(&secret[12..])
    .fetch_one(&su)
    .await
    .unwrap();
    assert_eq!(hits, 0);
    let stored: Vec<u8> = sqlx::query_scalar(
        "SELECT secret_sha256 FROM coffer_enrollment.api_keys WHERE key_id = $1::uuid",
    )
    .bind(&meta.key_id)
    .fetch_one(&su)
    .await
    .unwrap();
    use sha2::Digest;
    assert_eq!(stored, sha2::Sha256::digest(secret.as_bytes()).to_vec());
}

#[tokio::test]
async fn a_revoked_keys_already_issued_token_is_refused_within_a_second() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let operator_key = app.new_api_key(&acme, "operator").await;
    let token = app.token(&operator_key).await;
    let mut probes = DiagnosticsServiceClient::new(app.with_token(&token).await);
    let probe = || SendProbeRequest {
        org_id: acme.org.to_string(),
        note: "still here".into(),
    };
    probes.send_probe(probe()).await.unwrap();

    let key_id = keys(&app, &acme.owner_key)
        .await
        .list_api_keys(ListApiKeysRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys
        .into_iter()
        .find(|k| k.role == "operator")
        .unwrap()
        .key_id;
    let revoked_at = Instant::now();
    let revoked = keys(&app, &acme.owner_key)
        .await
        .revoke_api_key(RevokeApiKeyRequest {
            org_id: acme.org.to_string(),
            key_id,
            reason: "leaked in a CI log".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(revoked.revoked);
    let status = eventually(
        "the revoked key's token refused",
        Duration::from_secs(1),
        || {
            let mut probes = probes.clone();
            async move { probes.send_probe(probe()).await.err() }
        },
    )
    .await;
    assert!(revoked_at.elapsed() < Duration::from_secs(1));
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(
        status.message(),
        "access token refused: api key has been revoked"
    );

    // And the key no longer exchanges.
    let status = TokenServiceClient::new(app.channel().await)
        .exchange(ExchangeRequest {
            api_key: operator_key,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(event_count(&app, "ApiKeyRevoked").await, 1);
}

#[tokio::test]
async fn roles_decide_what_a_key_may_do() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let viewer = app.new_api_key(&acme, "viewer").await;
    let admin = app.new_api_key(&acme, "admin").await;
    let org_id = acme.org.to_string();

    // A viewer reads but does not manage.
    members(&app, &viewer)
        .await
        .list_members(ListMembersRequest {
            org_id: org_id.clone(),
        })
        .await
        .unwrap();
    let status = keys(&app, &viewer)
        .await
        .create_api_key(CreateApiKeyRequest {
            org_id: org_id.clone(),
            name: "x".into(),
            role: "viewer".into(),
            scopes: vec![],
            expires_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::PermissionDenied,
            "permission api_key.manage is required"
        )
    );

    // An admin manages members but cannot grant ownership or mint an owner key.
    let mut m = members(&app, &admin).await;
    let bob = m
        .add_member(AddMemberRequest {
            org_id: org_id.clone(),
            email: "bob@acme.test".into(),
            role: "viewer".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = m
        .change_member_role(ChangeMemberRoleRequest {
            org_id: org_id.clone(),
            user_id: bob.user_id.clone(),
            role: "owner".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = keys(&app, &admin)
        .await
        .create_api_key(CreateApiKeyRequest {
            org_id: org_id.clone(),
            name: "escalate".into(),
            role: "owner".into(),
            scopes: vec![],
            expires_at: None,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert_eq!(event_count(&app, "MemberRoleChanged").await, 0);
    assert_eq!(
        event_count(&app, "ApiKeyCreated").await,
        4,
        "init, Acme, viewer, admin; nothing more"
    );
}

#[tokio::test]
async fn members_are_added_changed_suspended_reactivated_and_removed_keeping_an_owner() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let org_id = acme.org.to_string();
    let mut m = members(&app, &acme.owner_key).await;
    let bob = m
        .add_member(AddMemberRequest {
            org_id: org_id.clone(),
            email: "Bob@Acme.test".into(),
            role: "operator".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (bob.email.as_str(), bob.role.as_str()),
        ("bob@acme.test", "operator")
    );
    let again = m
        .add_member(AddMemberRequest {
            org_id: org_id.clone(),
            email: "bob@acme.test".into(),
            role: "viewer".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);

    let changed = m
        .change_member_role(ChangeMemberRoleRequest {
            org_id: org_id.clone(),
            user_id: bob.user_id.clone(),
            role: "admin".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.role, "admin");
    let suspended = m
        .suspend_member(SuspendMemberRequest {
            org_id: org_id.clone(),
            user_id: bob.user_id.clone(),
            reason: "on leave".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(suspended.suspended);
    let back = m
        .reactivate_member(ReactivateMemberRequest {
            org_id: org_id.clone(),
            user_id: bob.user_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!back.suspended);

    // The only owner cannot be demoted, suspended or removed.
    let status = m
        .change_member_role(ChangeMemberRoleRequest {
            org_id: org_id.clone(),
            user_id: acme.owner_user_id.clone(),
            role: "viewer".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::FailedPrecondition,
            "an org must keep at least one active owner"
        )
    );
    m.remove_member(RemoveMemberRequest {
        org_id: org_id.clone(),
        user_id: bob.user_id.clone(),
    })
    .await
    .unwrap();
    let left = m
        .list_members(ListMembersRequest { org_id })
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(left.len(), 1);
    for (event, n) in [
        ("MemberAdded", 1),
        ("MemberRoleChanged", 1),
        ("MemberSuspended", 1),
        ("MemberReactivated", 1),
        ("MemberRemoved", 1),
    ] {
        assert_eq!(event_count(&app, event).await, n, "{event}");
    }
}

#[tokio::test]
async fn bad_member_and_key_input_names_the_field_and_changes_nothing() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let org_id = acme.org.to_string();
    let before = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM coffer_enrollment.events")
        .fetch_one(&app.db.superuser().await)
        .await
        .unwrap();
    let mut m = members(&app, &acme.owner_key).await;
    let add = |org_id: &str, email: &str, role: &str| AddMemberRequest {
        org_id: org_id.into(),
        email: email.into(),
        role: role.into(),
    };
    for (req, code, message) in [
        (
            add("nope", "a@b.test", "viewer"),
            Code::InvalidArgument,
            "org_id must be a UUID",
        ),
        (
            add(&org_id, "a@b.test", "god"),
            Code::InvalidArgument,
            "role must be one of owner, admin, operator, auditor, viewer",
        ),
        (
            add(&org_id, "not an email", "viewer"),
            Code::InvalidArgument,
            "email must be an address like name@example.com of at most 254 bytes",
        ),
        (
            add(&org_id, &format!("{}@b.test", "a".repeat(5000)), "viewer"),
            Code::InvalidArgument,
            "email must be at most 4096 bytes",
        ),
    ] {
        let status = m.add_member(req).await.unwrap_err();
        assert_eq!((status.code(), status.message()), (code, message));
    }
    let mut k = keys(&app, &acme.owner_key).await;
    let create = |name: &str, scopes: Vec<String>, expires_in: i64| CreateApiKeyRequest {
        org_id: org_id.clone(),
        name: name.into(),
        role: "viewer".into(),
        scopes,
        expires_at: Some(coffer_proto::time::to_timestamp(
            chrono::Utc::now() + chrono::Duration::seconds(expires_in),
        )),
    };
    for (req, message) in [
        (create("", vec![], 60), "name must not be empty"),
        (
            create("k", vec!["BAD SCOPE".into()], 60),
            "scopes must each be a permission (like audit.read), <resource>.* or *",
        ),
        (create("k", vec![], -60), "expires_at must be in the future"),
    ] {
        let status = k.create_api_key(req).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::InvalidArgument, message)
        );
    }
    let status = k
        .revoke_api_key(RevokeApiKeyRequest {
            org_id: org_id.clone(),
            key_id: coffer_types::ApiKeyId::new().to_string(),
            reason: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let after = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM coffer_enrollment.events")
        .fetch_one(&app.db.superuser().await)
        .await
        .unwrap();
    assert_eq!(before, after, "nothing was recorded");
}

#[tokio::test]
async fn an_api_keys_scopes_narrow_what_its_role_allows() {
    let app = spawn_app().await;
    let acme = app.new_org("Acme").await;
    let scoped = keys(&app, &acme.owner_key)
        .await
        .create_api_key(CreateApiKeyRequest {
            org_id: acme.org.to_string(),
            name: "read members only".into(),
            role: "admin".into(),
            scopes: vec!["member.read".into()],
            expires_at: None,
        })
        .await
        .unwrap()
        .into_inner()
        .secret;
    members(&app, &scoped)
        .await
        .list_members(ListMembersRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap();
    let status = keys(&app, &scoped)
        .await
        .list_api_keys(ListApiKeysRequest {
            org_id: acme.org.to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::PermissionDenied,
            "permission api_key.read is required"
        )
    );
}

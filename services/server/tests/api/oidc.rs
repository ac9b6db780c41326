//! OIDC sign-in through `TokenService.ExchangeOidc`, against a real HTTP issuer on loopback
//! serving a discovery document and a JWKS (`coffer_testkit::idp`), and suspension of
//! signed-in users reaching already-issued tokens within a second.

use std::time::{Duration, Instant};

use coffer_proto::enrollment::v1::{
    ExchangeOidcRequest, ListMembersRequest, ReactivateMemberRequest, SuspendMemberRequest,
    member_service_client::MemberServiceClient, token_service_client::TokenServiceClient,
};
use coffer_testkit::idp::{Idp, Key};
use coffer_types::OrgId;
use serde_json::json;
use tonic::Code;

use crate::helpers::{TestApp, spawn_app_with};

/// An app whose platform org signs users in through `idp` (`admins` → admin, `sre` →
/// operator, `viewers` → viewer).
async fn app_with(idp: &Idp) -> TestApp {
    let provider = idp.config(OrgId::PLATFORM);
    Box::pin(spawn_app_with(|config| config.auth.oidc = vec![provider])).await
}

async fn exchange(
    app: &TestApp,
    id_token: String,
) -> Result<coffer_proto::enrollment::v1::AccessToken, tonic::Status> {
    TokenServiceClient::new(app.channel().await)
        .exchange_oidc(ExchangeOidcRequest { id_token })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test]
async fn a_signed_in_user_becomes_a_member_with_the_role_their_groups_map_to() {
    let key = Key::rsa("rsa-1");
    let idp = Idp::start(&[&key]).await;
    let app = app_with(&idp).await;
    let token = exchange(&app, key.sign(&idp.claims())).await.unwrap();
    assert_eq!(
        (token.org_id.as_str(), token.role.as_str()),
        (OrgId::PLATFORM.to_string().as_str(), "admin")
    );

    let members = MemberServiceClient::new(app.with_token(&token.access_token).await)
        .list_members(ListMembersRequest {
            org_id: OrgId::PLATFORM.to_string(),
        })
        .await
        .unwrap()
        .into_inner()
        .members;
    let ada = members
        .iter()
        .find(|m| m.email == "ada@example.com")
        .unwrap();
    assert_eq!(ada.role, "admin");

    // Groups are the source of truth: fewer groups next time, a lesser role.
    let mut claims = idp.claims();
    claims["groups"] = json!(["sre"]);
    let token = exchange(&app, key.sign(&claims)).await.unwrap();
    assert_eq!(token.role, "operator");
}

#[tokio::test]
async fn the_providers_key_rotation_is_followed_and_bad_id_tokens_are_refused() {
    let (old, new) = (Key::rsa("rsa-1"), Key::ec("ec-2"));
    let idp = Idp::start(&[&old]).await;
    let app = app_with(&idp).await;
    exchange(&app, old.sign(&idp.claims())).await.unwrap();
    // The provider rotates to a new key: its tokens verify after one JWKS refetch.
    idp.publish(&[&new]);
    exchange(&app, new.sign(&idp.claims())).await.unwrap();

    let mut expired = idp.claims();
    expired["exp"] = json!(1_000_000);
    let mut other_client = idp.claims();
    other_client["aud"] = json!("someone-else");
    other_client["azp"] = json!("someone-else");
    let mut no_role = idp.claims();
    no_role["groups"] = json!(["unmapped"]);
    let mut unverified = idp.claims();
    unverified["email_verified"] = json!(false);
    let mut foreign = idp.claims();
    foreign["iss"] = json!("https://accounts.example.org");
    for (token, message) in [
        (new.sign(&expired), "id token refused: id token has expired"),
        (
            new.sign(&other_client),
            "id token refused: id token has the wrong audience",
        ),
        (
            new.sign(&no_role),
            "id token refused: no group maps to a Coffer role",
        ),
        (
            new.sign(&unverified),
            "id token refused: the provider gave no verified email address",
        ),
        (
            new.sign(&foreign),
            "id token refused: its issuer is not a configured identity provider",
        ),
        (
            "garbage".to_owned(),
            "id token refused: it is not a JWT with an issuer",
        ),
    ] {
        let status = exchange(&app, token).await.unwrap_err();
        assert_eq!(
            (status.code(), status.message()),
            (Code::Unauthenticated, message)
        );
    }
}

#[tokio::test]
async fn a_suspended_users_already_issued_token_is_refused_within_a_second() {
    let key = Key::ec("ec-1");
    let idp = Idp::start(&[&key]).await;
    let app = app_with(&idp).await;
    let ada = exchange(&app, key.sign(&idp.claims())).await.unwrap();
    let mut as_ada = MemberServiceClient::new(app.with_token(&ada.access_token).await);
    let list = || ListMembersRequest {
        org_id: OrgId::PLATFORM.to_string(),
    };
    let members = as_ada
        .list_members(list())
        .await
        .unwrap()
        .into_inner()
        .members;
    let ada_id = members
        .iter()
        .find(|m| m.email == "ada@example.com")
        .unwrap()
        .user_id
        .clone();

    let mut owner = MemberServiceClient::new(app.authed(&app.platform_key).await);
    let suspended_at = Instant::now();
    owner
        .suspend_member(SuspendMemberRequest {
            org_id: OrgId::PLATFORM.to_string(),
            user_id: ada_id.clone(),
            reason: "left the company".into(),
        })
        .await
        .unwrap();
    let status = coffer_testkit::eventually(
        "the suspended user's token refused",
        Duration::from_secs(1),
        || {
            let mut as_ada = as_ada.clone();
            async move { as_ada.list_members(list()).await.err() }
        },
    )
    .await;
    assert!(suspended_at.elapsed() < Duration::from_secs(1));
    assert_eq!(
        (status.code(), status.message()),
        (
            Code::Unauthenticated,
            "access token refused: user is suspended"
        )
    );
    // Signing in again is refused too, until reactivated.
    let status = exchange(&app, key.sign(&idp.claims())).await.unwrap_err();
    assert_eq!(
        status.message(),
        "id token refused: the member is suspended"
    );
    owner
        .reactivate_member(ReactivateMemberRequest {
            org_id: OrgId::PLATFORM.to_string(),
            user_id: ada_id,
        })
        .await
        .unwrap();
    let again = exchange(&app, key.sign(&idp.claims())).await.unwrap();
    coffer_testkit::eventually(
        "the reactivated user's new token accepted",
        Duration::from_secs(5),
        || {
            let token = again.access_token.clone();
            let app = &app;
            async move {
                MemberServiceClient::new(app.with_token(&token).await)
                    .list_members(list())
                    .await
                    .ok()
            }
        },
    )
    .await;
}

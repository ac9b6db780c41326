//! `oidc::Verifier` against a real HTTP issuer on loopback (see `idp.rs`).

use std::time::{Duration, SystemTime};

use coffer_auth::Role;
use coffer_auth::oidc::{Error, Verifier};
use coffer_types::OrgId;
use serde_json::{Value, json};

use coffer_testkit::idp::{Idp, Key, b64};

async fn setup() -> (Idp, Key, Key, Verifier, OrgId) {
    let (rsa, ec) = (Key::rsa("rsa-1"), Key::ec("ec-1"));
    let idp = Idp::start(&[&rsa, &ec]).await;
    let org = OrgId::new();
    let verifier = Verifier::discover(idp.config(org)).await.unwrap();
    (idp, rsa, ec, verifier, org)
}

fn now() -> SystemTime {
    SystemTime::now()
}

#[tokio::test]
async fn a_valid_rs256_id_token_yields_the_identity_with_the_highest_mapped_role() {
    let (idp, rsa, _, verifier, org) = setup().await;
    let identity = verifier
        .verify(&rsa.sign(&idp.claims()), now())
        .await
        .unwrap();
    assert_eq!(identity.subject, "f3a1c2d4-ada");
    assert_eq!(identity.email.as_deref(), Some("ada@example.com"));
    assert_eq!(identity.name.as_deref(), Some("Ada Lovelace"));
    assert_eq!(identity.role, Role::Admin);
    assert_eq!(identity.org, org);
    assert_eq!(identity.groups, ["viewers", "admins", "unmapped"]);
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn a_valid_es256_id_token_with_an_audience_array_verifies() {
    let (idp, _, ec, verifier, _) = setup().await;
    let mut claims = idp.claims();
    claims["aud"] = json!(["other-client", "coffer-dashboard"]);
    claims["groups"] = json!("sre");
    claims.as_object_mut().unwrap().remove("name");
    let identity = verifier.verify(&ec.sign(&claims), now()).await.unwrap();
    assert_eq!(identity.role, Role::Operator);
    assert_eq!(identity.name, None);
}

#[tokio::test]
async fn a_valid_eddsa_id_token_verifies_and_its_key_refuses_other_algorithms() {
    let ed = Key::ed("ed-1");
    let idp = Idp::start(&[&ed]).await;
    let verifier = Verifier::discover(idp.config(OrgId::new())).await.unwrap();
    let identity = verifier
        .verify(&ed.sign(&idp.claims()), now())
        .await
        .unwrap();
    assert_eq!(identity.role, Role::Admin);
    let forged = ed.sign_with_header(&json!({"alg": "ES256", "kid": "ed-1"}), &idp.claims());
    let err = verifier.verify(&forged, now()).await.unwrap_err();
    assert!(matches!(err, Error::Algorithm), "{err:?}");
}

#[tokio::test]
async fn an_unverified_email_is_not_passed_on() {
    let (idp, rsa, _, verifier, _) = setup().await;
    for verified in [json!(false), json!("false")] {
        let mut claims = idp.claims();
        claims["email_verified"] = verified;
        let identity = verifier.verify(&rsa.sign(&claims), now()).await.unwrap();
        assert_eq!(identity.email, None);
    }
    let mut claims = idp.claims();
    claims.as_object_mut().unwrap().remove("email_verified");
    let identity = verifier.verify(&rsa.sign(&claims), now()).await.unwrap();
    assert_eq!(identity.email.as_deref(), Some("ada@example.com"));
}

#[tokio::test]
async fn a_user_whose_groups_map_to_no_role_is_refused() {
    let (idp, rsa, _, verifier, _) = setup().await;
    for groups in [json!(["unmapped", "Admins"]), json!([]), Value::Null] {
        let mut claims = idp.claims();
        claims["groups"] = groups;
        let err = verifier
            .verify(&rsa.sign(&claims), now())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NoRole), "{err:?}");
        assert_eq!(err.to_string(), "no group maps to a Coffer role");
    }
}

#[tokio::test]
async fn expired_future_wrong_audience_and_wrong_issuer_tokens_are_refused() {
    let (idp, rsa, _, verifier, _) = setup().await;
    let t = idp.claims()["iat"].as_i64().unwrap();
    type Expect = fn(&Error) -> bool;
    let cases: Vec<(&str, Value, Expect)> = vec![
        ("expired", json!({"iat": t - 600, "exp": t - 31}), |e| {
            matches!(e, Error::Expired)
        }),
        (
            "issued in the future",
            json!({"iat": t + 120, "exp": t + 600}),
            |e| matches!(e, Error::NotYetValid),
        ),
        ("not before", json!({"nbf": t + 120}), |e| {
            matches!(e, Error::NotYetValid)
        }),
        (
            "wrong audience",
            json!({"aud": "someone-else", "azp": "someone-else"}),
            |e| matches!(e, Error::Audience),
        ),
        (
            "audience array without us",
            json!({"aud": ["a", "b"]}),
            |e| matches!(e, Error::Audience),
        ),
        (
            "authorized party not us",
            json!({"azp": "someone-else"}),
            |e| matches!(e, Error::Audience),
        ),
        (
            "wrong issuer",
            json!({"iss": "https://evil.example/realms/acme"}),
            |e| matches!(e, Error::Issuer),
        ),
        (
            "issuer with trailing slash",
            json!({"iss": format!("{}/", idp.issuer)}),
            |e| matches!(e, Error::Issuer),
        ),
        ("no exp", json!({"exp": null}), |e| {
            matches!(e, Error::Malformed)
        }),
        ("string exp", json!({"exp": "tomorrow"}), |e| {
            matches!(e, Error::Malformed)
        }),
        ("empty sub", json!({"sub": ""}), |e| {
            matches!(e, Error::Malformed)
        }),
    ];
    for (what, changes, expected) in cases {
        let mut claims = idp.claims();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                claims.as_object_mut().unwrap().remove(k);
            } else {
                claims[k] = v.clone();
            }
        }
        let err = verifier
            .verify(&rsa.sign(&claims), now())
            .await
            .unwrap_err();
        assert!(expected(&err), "{what}: {err:?}");
    }
    // Leeway: 20 s past exp still verifies.
    let mut claims = idp.claims();
    claims["exp"] = json!(t - 20);
    assert!(verifier.verify(&rsa.sign(&claims), now()).await.is_ok());
    // And the same token is refused once the clock has moved on.
    let later = now() + Duration::from_secs(3600);
    let err = verifier
        .verify(&rsa.sign(&idp.claims()), later)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Expired), "{err:?}");
}

#[tokio::test]
async fn alg_none_and_hs256_keyed_with_the_public_key_are_refused() {
    let (idp, rsa, _, verifier, _) = setup().await;
    let claims = idp.claims();
    let body = b64(claims.to_string());

    for header in [
        json!({"alg": "none"}),
        json!({"alg": "none", "kid": "rsa-1"}),
    ] {
        let token = format!("{}.{body}.", b64(header.to_string()));
        let err = verifier.verify(&token, now()).await.unwrap_err();
        assert!(
            matches!(err, Error::Malformed | Error::Algorithm),
            "{err:?}"
        );
        let token = format!("{}.{body}.AAAA", b64(header.to_string()));
        let err = verifier.verify(&token, now()).await.unwrap_err();
        assert!(matches!(err, Error::Algorithm), "{err:?}");
    }

    // HMAC with each public form an attacker can get: DER, the JWK's n, the JWK text.
    let jwk_text = rsa.jwk().to_string();
    let n = rsa.jwk()["n"].as_str().unwrap().to_owned();
    for secret in [rsa.public_der(), n.into_bytes(), jwk_text.into_bytes()] {
        for alg in ["HS256", "HS384", "HS512"] {
            let header = b64(json!({"alg": alg, "kid": "rsa-1", "typ": "JWT"}).to_string());
            let input = format!("{header}.{body}");
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
            let mac = ring::hmac::sign(&key, input.as_bytes());
            let token = format!("{input}.{}", b64(mac.as_ref()));
            let err = verifier.verify(&token, now()).await.unwrap_err();
            assert!(matches!(err, Error::Algorithm), "{alg}: {err:?}");
        }
    }
    // Nothing above made the verifier fetch keys again.
    assert_eq!(idp.jwks_hits(), 1);
}

#[tokio::test]
async fn a_token_whose_alg_does_not_match_its_key_is_refused() {
    let (idp, rsa, ec, verifier, _) = setup().await;
    let claims = idp.claims();
    // Signed by the EC key but naming the RSA key's kid, and the reverse.
    let forged = ec.sign_with_header(&json!({"alg": "ES256", "kid": "rsa-1"}), &claims);
    let err = verifier.verify(&forged, now()).await.unwrap_err();
    assert!(matches!(err, Error::Algorithm), "{err:?}");
    let forged = rsa.sign_with_header(&json!({"alg": "RS256", "kid": "ec-1"}), &claims);
    let err = verifier.verify(&forged, now()).await.unwrap_err();
    assert!(matches!(err, Error::Algorithm), "{err:?}");
    // A key-pointing header is refused rather than followed.
    let forged = ec.sign_with_header(
        &json!({"alg": "ES256", "kid": "ec-1", "jku": "http://127.0.0.1:1/evil"}),
        &claims,
    );
    let err = verifier.verify(&forged, now()).await.unwrap_err();
    assert!(matches!(err, Error::Algorithm), "{err:?}");
}

#[tokio::test]
async fn a_tampered_payload_or_signature_is_refused() {
    let (idp, rsa, ec, verifier, _) = setup().await;
    for key in [&rsa, &ec] {
        let token = key.sign(&idp.claims());
        let (head, sig) = token.rsplit_once('.').unwrap();
        let (header, _) = head.split_once('.').unwrap();
        let mut owner = idp.claims();
        owner["groups"] = json!(["admins"]);
        owner["sub"] = json!("someone-else");
        let swapped = format!("{header}.{}.{sig}", b64(owner.to_string()));
        let err = verifier.verify(&swapped, now()).await.unwrap_err();
        assert!(matches!(err, Error::Signature), "{err:?}");

        let mut bytes =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, sig).unwrap();
        bytes[5] ^= 1;
        let flipped = format!("{head}.{}", b64(&bytes));
        let err = verifier.verify(&flipped, now()).await.unwrap_err();
        assert!(matches!(err, Error::Signature), "{err:?}");
        assert!(!err.to_string().contains(sig));
    }
}

#[tokio::test]
async fn discovery_naming_another_issuer_is_refused() {
    let rsa = Key::rsa("rsa-1");
    let idp = Idp::start(&[&rsa]).await;
    idp.advertise_issuer("https://evil.example/realms/acme");
    let err = Verifier::discover(idp.config(OrgId::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IssuerMismatch { .. }), "{err:?}");
    assert_eq!(idp.jwks_hits(), 0);
}

#[tokio::test]
async fn a_jwks_without_a_usable_key_fails_discovery_and_unusable_keys_are_skipped() {
    let rsa = Key::rsa("rsa-1");
    let idp = Idp::start(&[]).await;
    idp.publish_raw(json!({"keys": [
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {"kty": "RSA", "kid": "enc", "use": "enc", "n": rsa.jwk()["n"], "e": "AQAB"},
    ]}));
    let err = Verifier::discover(idp.config(OrgId::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoUsableKeys { .. }), "{err:?}");

    let mut keys = vec![
        json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
        json!("not even an object"),
    ];
    keys.push(rsa.jwk());
    idp.publish_raw(json!({ "keys": keys }));
    let verifier = Verifier::discover(idp.config(OrgId::new())).await.unwrap();
    assert!(
        verifier
            .verify(&rsa.sign(&idp.claims()), now())
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn key_rotation_at_the_idp_is_picked_up_by_refetching_the_jwks() {
    let old = Key::rsa("2025-rsa");
    let idp = Idp::start(&[&old]).await;
    let verifier = Verifier::discover(idp.config(OrgId::new())).await.unwrap();
    assert!(
        verifier
            .verify(&old.sign(&idp.claims()), now())
            .await
            .is_ok()
    );
    assert_eq!(idp.jwks_hits(), 1);

    // The IdP rotates: a new key with a new kid replaces the old one.
    let new = Key::ec("2026-ec");
    idp.publish(&[&new]);
    let identity = verifier
        .verify(&new.sign(&idp.claims()), now())
        .await
        .unwrap();
    assert_eq!(identity.role, Role::Admin);
    assert_eq!(idp.jwks_hits(), 2, "one refetch for the unknown kid");

    // The old key is gone from the refetched set, so its tokens are refused now, and asking
    // again within the interval does not fetch again.
    let err = verifier
        .verify(&old.sign(&idp.claims()), now())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::UnknownKey), "{err:?}");
    assert_eq!(idp.jwks_hits(), 2);
    // Clones share the refreshed cache.
    assert!(
        verifier
            .clone()
            .verify(&new.sign(&idp.claims()), now())
            .await
            .is_ok()
    );
    assert_eq!(idp.jwks_hits(), 2);
}

#[tokio::test]
async fn unknown_kids_cannot_make_the_verifier_hammer_the_idp() {
    let (idp, _, _, verifier, _) = setup().await;
    assert_eq!(idp.jwks_hits(), 1);
    let rogue = Key::ec("rogue");
    let claims = idp.claims();
    let tokens: Vec<String> = (0..20)
        .map(|i| rogue.sign_with_header(&json!({"alg": "ES256", "kid": format!("k{i}")}), &claims))
        .collect();
    let results = futures::future::join_all(tokens.iter().map(|t| verifier.verify(t, now()))).await;
    for result in results {
        assert!(matches!(result, Err(Error::UnknownKey)), "{result:?}");
    }
    for token in &tokens {
        let err = verifier.verify(token, now()).await.unwrap_err();
        assert!(matches!(err, Error::UnknownKey), "{err:?}");
    }
    assert_eq!(idp.jwks_hits(), 2, "at most one refetch per interval");
}

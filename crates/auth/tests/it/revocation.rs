//! Revocations through a real JetStream KV bucket, and the `Authenticator` that consults them.
//! Each test uses its own bucket; "another service" is a second NATS connection.

use std::time::{Duration, SystemTime};

use coffer_auth::bearer::{Authenticator, Error};
use coffer_auth::revocation::{CertSerial, Revocations};
use coffer_auth::token::{AccessClaims, DEFAULT_LIFETIME, Jwks, Signer, Subject, Verifier};
use coffer_auth::{Principal, Role};
use coffer_testkit::{NatsServer, eventually, nats_url, unique};
use coffer_types::{ApiKeyId, OrgId, UserId};

/// DESIGN.md §5: a revocation bites within a second everywhere.
const PROPAGATION: Duration = Duration::from_secs(1);

const ISS: &str = "https://coffer.test";
const AUD: &str = "coffer";

async fn jetstream(url: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(url).await.expect("connect to nats");
    async_nats::jetstream::new(client)
}

/// Opens `bucket` on a fresh connection to `url` and waits for the initial load.
async fn open_synced(url: &str, bucket: &str) -> Revocations {
    let revocations = Revocations::open(&jetstream(url).await, bucket)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), revocations.wait_synced())
        .await
        .expect("revocations sync within 10 s");
    revocations
}

struct Service {
    signer: Signer,
    auth: Authenticator,
}

impl Service {
    fn new(revocations: Revocations) -> Self {
        let signer = Signer::from_seed(&rand::random::<[u8; 32]>()).unwrap();
        let verifier = Verifier::new(&Jwks::new([signer.jwk()]), ISS, AUD);
        Service {
            auth: Authenticator::new(verifier, revocations),
            signer,
        }
    }

    fn token(&self, subject: Subject, org: OrgId) -> String {
        let claims = AccessClaims::new(
            ISS,
            AUD,
            subject,
            org,
            Role::Admin,
            SystemTime::now(),
            DEFAULT_LIFETIME,
        );
        self.signer.issue(&claims).unwrap()
    }

    fn authenticate(&self, token: &str) -> Result<Principal, Error> {
        self.auth.authenticate(token, SystemTime::now())
    }
}

#[tokio::test]
async fn a_revoked_api_keys_token_is_refused_within_a_second() {
    let bucket = unique("REVOKE_");
    let service = Service::new(open_synced(&nats_url(), &bucket).await);
    let admin = open_synced(&nats_url(), &bucket).await;
    let (org, key, other_key) = (OrgId::new(), ApiKeyId::new(), ApiKeyId::new());
    let token = service.token(Subject::ApiKey(key), org);
    let other = service.token(Subject::ApiKey(other_key), org);
    assert_eq!(
        service.authenticate(&token),
        Ok(Principal::ApiKey {
            key_id: key,
            org,
            role: Role::Admin,
            scopes: vec![],
        })
    );

    admin.revoke_api_key(key).await.unwrap();
    eventually(
        "the revoked key's token to be refused",
        PROPAGATION,
        || async { (service.authenticate(&token) == Err(Error::ApiKeyRevoked)).then_some(()) },
    )
    .await;
    assert!(
        service.authenticate(&other).is_ok(),
        "other keys still work"
    );
    assert_eq!(Error::ApiKeyRevoked.to_string(), "api key has been revoked");
}

#[tokio::test]
async fn a_suspended_user_is_refused_within_a_second_until_reactivated() {
    let bucket = unique("REVOKE_");
    let service = Service::new(open_synced(&nats_url(), &bucket).await);
    let admin = open_synced(&nats_url(), &bucket).await;
    let (org, other_org, user) = (OrgId::new(), OrgId::new(), UserId::new());
    let token = service.token(Subject::User(user), org);
    let in_other_org = service.token(Subject::User(user), other_org);
    assert!(service.authenticate(&token).is_ok());

    admin.suspend_user(org, user).await.unwrap();
    eventually("the suspended user to be refused", PROPAGATION, || async {
        (service.authenticate(&token) == Err(Error::UserSuspended)).then_some(())
    })
    .await;
    assert!(
        service.authenticate(&in_other_org).is_ok(),
        "a suspension applies to one org"
    );
    // The publisher sees its own write at once.
    assert!(admin.is_user_suspended(org, user));

    admin.reactivate_user(org, user).await.unwrap();
    assert!(!admin.is_user_suspended(org, user));
    eventually(
        "the reactivated user to be accepted",
        PROPAGATION,
        || async { service.authenticate(&token).is_ok().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_revoked_agent_certificate_serial_is_seen_within_a_second() {
    let bucket = unique("REVOKE_");
    let service = open_synced(&nats_url(), &bucket).await;
    let admin = open_synced(&nats_url(), &bucket).await;
    let (org, other_org) = (OrgId::new(), OrgId::new());
    let serial = CertSerial::from_bytes(&[0x00, 0x9f, 0x31, 0x07]).unwrap();
    assert!(!service.is_cert_revoked(org, &serial));

    admin.revoke_cert(org, &serial).await.unwrap();
    let same: CertSerial = "9F3107".parse().unwrap();
    eventually("the serial to be revoked", PROPAGATION, || async {
        service.is_cert_revoked(org, &same).then_some(())
    })
    .await;
    assert!(!service.is_cert_revoked(other_org, &serial));
    assert!(!service.is_cert_revoked(org, &"9f3108".parse().unwrap()));
}

#[tokio::test]
async fn revocations_made_before_a_service_starts_are_loaded_before_it_reports_synced() {
    let bucket = unique("REVOKE_");
    let admin = open_synced(&nats_url(), &bucket).await;
    let (org, key, user, back) = (OrgId::new(), ApiKeyId::new(), UserId::new(), UserId::new());
    admin.revoke_api_key(key).await.unwrap();
    admin.suspend_user(org, user).await.unwrap();
    admin.suspend_user(org, back).await.unwrap();
    admin.reactivate_user(org, back).await.unwrap();

    // No polling: once synced, the earlier writes are all there.
    let late = open_synced(&nats_url(), &bucket).await;
    assert!(late.is_synced());
    assert!(late.is_api_key_revoked(key));
    assert!(late.is_user_suspended(org, user));
    assert!(!late.is_user_suspended(org, back));
    assert!(!late.is_api_key_revoked(ApiKeyId::new()));

    let service = Service::new(late);
    assert_eq!(
        service.authenticate(&service.token(Subject::ApiKey(key), org)),
        Err(Error::ApiKeyRevoked)
    );
}

#[tokio::test]
async fn an_empty_bucket_syncs_and_an_invalid_name_is_refused() {
    let js = jetstream(&nats_url()).await;
    let fresh = open_synced(&nats_url(), &unique("REVOKE_")).await;
    assert!(fresh.is_synced());
    for bad in ["", "has.dot", "has space", "a>"] {
        let err = Revocations::open(&js, bad).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "revocation bucket name must match [A-Za-z0-9_-]+"
        );
    }
}

#[tokio::test]
async fn expired_or_foreign_tokens_are_refused_before_revocations_are_consulted() {
    let bucket = unique("REVOKE_");
    let service = Service::new(open_synced(&nats_url(), &bucket).await);
    let other = Service::new(open_synced(&nats_url(), &bucket).await);
    let token = other.token(Subject::ApiKey(ApiKeyId::new()), OrgId::new());
    assert_eq!(
        service.authenticate(&token),
        Err(Error::Token(coffer_auth::token::Error::UnknownKey))
    );
    let own = service.token(Subject::ApiKey(ApiKeyId::new()), OrgId::new());
    let later = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(
        service.auth.authenticate(&own, later),
        Err(Error::Token(coffer_auth::token::Error::Expired))
    );
}

#[tokio::test]
async fn the_watch_resumes_after_a_nats_restart() {
    coffer_testkit::telemetry();
    let mut nats = NatsServer::start();
    let bucket = unique("REVOKE_");
    let service = Service::new(open_synced(&nats.url(), &bucket).await);
    let (org, key, user) = (OrgId::new(), ApiKeyId::new(), UserId::new());
    let key_token = service.token(Subject::ApiKey(key), org);
    let user_token = service.token(Subject::User(user), org);
    {
        let admin = open_synced(&nats.url(), &bucket).await;
        admin.suspend_user(org, user).await.unwrap();
    }
    eventually("the suspension before the restart", PROPAGATION, || async {
        (service.authenticate(&user_token) == Err(Error::UserSuspended)).then_some(())
    })
    .await;

    nats.restart();

    // The client reconnects on its own and the watch is resumed (or reopened and reloaded):
    // changes made after the restart reach the service.
    let admin = open_synced(&nats.url(), &bucket).await;
    admin.revoke_api_key(key).await.unwrap();
    admin.reactivate_user(org, user).await.unwrap();
    eventually(
        "changes after the restart to reach the service",
        Duration::from_secs(30),
        || async {
            let key_refused = service.authenticate(&key_token) == Err(Error::ApiKeyRevoked);
            let user_back = service.authenticate(&user_token).is_ok();
            (key_refused && user_back).then_some(())
        },
    )
    .await;

    // And the watch is live again: the next change arrives within the usual second.
    let next = ApiKeyId::new();
    let next_token = service.token(Subject::ApiKey(next), org);
    admin.revoke_api_key(next).await.unwrap();
    eventually("a revocation after recovery", PROPAGATION, || async {
        (service.authenticate(&next_token) == Err(Error::ApiKeyRevoked)).then_some(())
    })
    .await;
}

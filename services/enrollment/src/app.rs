//! The enrollment application: commands and queries over the aggregates and read models.
//!
//! Callers have already been authenticated and authorised for the RPC's permission by the
//! gRPC layer (`coffer_auth`'s table); this layer applies the rules that depend on the data,
//! such as who may touch an owner.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use coffer_auth::{Permission, Principal, Role, allows, can_change_member};
use coffer_db::{Database, TenantTx};
use coffer_eventstore::{EventStore, ExecuteError, Projection};
use coffer_types::{Actor, AggregateId, ApiKeyId, OrgId, UserId};

use crate::domain::FieldError;
use crate::domain::api_key::{ApiKey, ApiKeyCommand, ApiKeyError};
use crate::domain::org::{Org, OrgCommand, OrgError};
use crate::pki::{Pki, PkiSettings};
use crate::secret::ApiKeySecret;
use crate::store::{self, ApiKeyView, MemberView, OrgView};
use crate::tokens::{IssuedToken, Tokens};
use coffer_auth::published::Publisher;
use coffer_kms::Kms;

/// Why an enrollment request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field broke a rule (InvalidArgument).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such thing in the caller's org (NotFound). Another org's things are reported the
    /// same way.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// It exists already (AlreadyExists).
    #[error("{0}")]
    AlreadyExists(String),
    /// The state forbids it (FailedPrecondition).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The caller's role does not allow this particular change (PermissionDenied).
    #[error("{0}")]
    Forbidden(String),
    /// Presented credentials are not valid (Unauthenticated). Says nothing about why, so a
    /// caller cannot probe which keys exist.
    #[error("invalid credentials")]
    Unauthenticated,
    /// An enrollment token was refused (Unauthenticated): unknown, used, expired or revoked.
    #[error("{0}")]
    TokenRefused(String),
    /// Input that is not a field of the request message but its content, e.g. a CSR
    /// (InvalidArgument); the message names what is wrong.
    #[error("{0}")]
    BadInput(String),
    /// A dependency (KMS) is unavailable (Unavailable).
    #[error("{0}")]
    Unavailable(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] coffer_eventstore::Error),
}

impl From<coffer_db::Error> for Error {
    fn from(e: coffer_db::Error) -> Self {
        Error::Store(e.into())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(coffer_db::Error::from(e).into())
    }
}

impl From<ExecuteError<OrgError>> for Error {
    fn from(e: ExecuteError<OrgError>) -> Self {
        match e {
            ExecuteError::Rejected(r) => r.into(),
            ExecuteError::Store(s) => Error::Store(s),
        }
    }
}

impl From<OrgError> for Error {
    fn from(e: OrgError) -> Self {
        match e {
            OrgError::Invalid(f) => Error::Invalid(f),
            OrgError::NotFound => Error::NotFound("org"),
            OrgError::NotAMember => Error::NotFound("member"),
            OrgError::AlreadyExists | OrgError::AlreadyMember => {
                Error::AlreadyExists(e.to_string())
            }
            OrgError::LastOwner => Error::FailedPrecondition(e.to_string()),
        }
    }
}

impl From<ExecuteError<ApiKeyError>> for Error {
    fn from(e: ExecuteError<ApiKeyError>) -> Self {
        match e {
            ExecuteError::Rejected(ApiKeyError::Invalid(f)) => Error::Invalid(f),
            ExecuteError::Rejected(ApiKeyError::NotFound) => Error::NotFound("api key"),
            ExecuteError::Rejected(e @ ApiKeyError::AlreadyExists) => {
                Error::AlreadyExists(e.to_string())
            }
            ExecuteError::Store(s) => Error::Store(s),
        }
    }
}

/// A new API key: its metadata and the secret, which exists only in this value.
#[derive(Debug)]
pub struct CreatedApiKey {
    /// Metadata, as later listed.
    pub key: ApiKeyView,
    /// The secret, to show once.
    pub secret: ApiKeySecret,
}

/// A new org with its first owner and their API key.
#[derive(Debug)]
pub struct CreatedOrg {
    /// The org.
    pub org: OrgView,
    /// The first owner.
    pub owner: MemberView,
    /// An owner API key, to show once.
    pub owner_api_key: CreatedApiKey,
}

/// What to create an API key with.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// Display name.
    pub name: String,
    /// The role it acts with.
    pub role: Role,
    /// Scopes.
    pub scopes: Vec<String>,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The enrollment service's application layer.
#[derive(Debug, Clone)]
pub struct Enrollment {
    pub(crate) store: EventStore,
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) pki: Arc<Pki>,
    pub(crate) publisher: Publisher,
    pub(crate) oidc: Vec<coffer_auth::oidc::Verifier>,
}

/// The projections this service maintains (also used by `coffer admin rebuild-projections`).
pub fn projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(store::Orgs),
        Arc::new(store::ApiKeys),
        Arc::new(store::SigningKeys),
        Arc::new(store::CertificateAuthorities),
        Arc::new(store::EnrollmentTokens),
        Arc::new(store::Agents),
    ]
}

impl Enrollment {
    /// The application over the service's database, issuing access tokens with `tokens` and
    /// certificates with `pki`.
    /// `publisher` makes the key set and CA certificates known to every service.
    pub fn new(db: Database, tokens: Arc<Tokens>, pki: Arc<Pki>, publisher: Publisher) -> Self {
        Self {
            store: EventStore::new(db, projections()),
            tokens,
            pki,
            publisher,
            oidc: Vec::new(),
        }
    }

    /// The same application, also signing in users of these identity providers.
    pub fn with_identity_providers(mut self, providers: Vec<coffer_auth::oidc::Verifier>) -> Self {
        self.oidc = providers;
        self
    }

    /// Publishes the access-token key set and every CA certificate (at boot; new orgs'
    /// intermediates are published as they are created).
    pub async fn publish(&self) -> Result<(), Error> {
        let unavailable = |e: coffer_auth::published::Error| Error::Unavailable(e.to_string());
        self.publisher
            .jwks(self.tokens.jwks())
            .await
            .map_err(unavailable)?;
        let mut conn = self
            .store
            .db()
            .pool()
            .acquire()
            .await
            .map_err(coffer_db::Error::from)?;
        for (org, der) in store::all_ca_certificates(&mut conn).await? {
            if org == OrgId::PLATFORM {
                self.publisher.root(&der).await.map_err(unavailable)?;
            } else {
                self.publisher
                    .org_ca(org, &der)
                    .await
                    .map_err(unavailable)?;
            }
        }
        Ok(())
    }

    /// The CA hierarchy.
    pub fn pki(&self) -> &Arc<Pki> {
        &self.pki
    }

    /// The event store (for tests and admin tools).
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The token issuer.
    pub fn tokens(&self) -> &Arc<Tokens> {
        &self.tokens
    }

    pub(crate) async fn begin(&self, org: OrgId) -> Result<TenantTx, Error> {
        Ok(self.store.db().begin_tenant(org).await?)
    }

    /// Creates an org with `owner_email` as its first owner, and an owner API key for it.
    pub async fn create_org(
        &self,
        name: &str,
        owner_email: &str,
        actor: &Actor,
    ) -> Result<CreatedOrg, Error> {
        let created = create_org(
            &self.store,
            Some(&self.pki),
            OrgId::new(),
            name,
            owner_email,
            actor,
        )
        .await?;
        // Agents of the new org must be verifiable everywhere. If this fails the org still
        // exists and the next boot of enrollment publishes it; say so.
        let org = created.org.org_id;
        let mut tx = self.begin(org).await?;
        let ca = self.pki.ca(&mut tx).await?;
        if let Err(e) = self.publisher.org_ca(org, ca.certificate_der()).await {
            tracing::warn!(error = %e, %org, "publish the org CA; it is republished at the next boot");
        }
        Ok(created)
    }

    /// Reads an org.
    pub async fn get_org(&self, org: OrgId) -> Result<OrgView, Error> {
        let mut tx = self.begin(org).await?;
        store::get_org(&mut tx).await?.ok_or(Error::NotFound("org"))
    }

    /// Lists an org's members.
    pub async fn list_members(&self, org: OrgId) -> Result<Vec<MemberView>, Error> {
        let mut tx = self.begin(org).await?;
        self.require_org(&mut tx).await?;
        Ok(store::list_members(&mut tx).await?)
    }

    pub(crate) async fn require_org(&self, tx: &mut TenantTx) -> Result<OrgView, Error> {
        store::get_org(tx).await?.ok_or(Error::NotFound("org"))
    }

    /// Adds a member.
    pub async fn add_member(
        &self,
        caller: &Principal,
        org: OrgId,
        email: &str,
        role: Role,
    ) -> Result<MemberView, Error> {
        check_member_change(caller, None, Some(role))?;
        let user = UserId::new();
        self.change_org(
            caller,
            org,
            OrgCommand::AddMember {
                user,
                email: email.to_owned(),
                role,
            },
        )
        .await?;
        self.member(org, user).await
    }

    /// Changes a member's role.
    pub async fn change_member_role(
        &self,
        caller: &Principal,
        org: OrgId,
        user: UserId,
        role: Role,
    ) -> Result<MemberView, Error> {
        let current = self.member(org, user).await?;
        check_member_change(caller, Some(current.role), Some(role))?;
        self.change_org(caller, org, OrgCommand::ChangeRole { user, role })
            .await?;
        self.member(org, user).await
    }

    /// Removes a member.
    pub async fn remove_member(
        &self,
        caller: &Principal,
        org: OrgId,
        user: UserId,
    ) -> Result<(), Error> {
        let current = self.member(org, user).await?;
        check_member_change(caller, Some(current.role), None)?;
        self.change_org(caller, org, OrgCommand::RemoveMember { user })
            .await?;
        // Their already-issued tokens must stop working too.
        self.tokens.suspend_user(org, user).await;
        Ok(())
    }

    /// Suspends a member. Their role stays; everything they try is refused until reactivated.
    pub async fn suspend_member(
        &self,
        caller: &Principal,
        org: OrgId,
        user: UserId,
        reason: &str,
    ) -> Result<MemberView, Error> {
        let current = self.member(org, user).await?;
        check_member_change(caller, Some(current.role), Some(current.role))?;
        self.change_org(
            caller,
            org,
            OrgCommand::SuspendMember {
                user,
                reason: reason.to_owned(),
            },
        )
        .await?;
        self.tokens.suspend_user(org, user).await;
        self.member(org, user).await
    }

    /// Lifts a suspension.
    pub async fn reactivate_member(
        &self,
        caller: &Principal,
        org: OrgId,
        user: UserId,
    ) -> Result<MemberView, Error> {
        let current = self.member(org, user).await?;
        check_member_change(caller, Some(current.role), Some(current.role))?;
        self.change_org(caller, org, OrgCommand::ReactivateMember { user })
            .await?;
        self.tokens.reactivate_user(org, user).await;
        self.member(org, user).await
    }

    async fn member(&self, org: OrgId, user: UserId) -> Result<MemberView, Error> {
        let mut tx = self.begin(org).await?;
        store::get_member(&mut tx, user)
            .await?
            .ok_or(Error::NotFound("member"))
    }

    async fn change_org(
        &self,
        caller: &Principal,
        org: OrgId,
        command: OrgCommand,
    ) -> Result<(), Error> {
        self.store
            .execute::<Org>(org, org_aggregate(org), &caller.actor(), command)
            .await?;
        Ok(())
    }

    /// Creates an API key in `org`. The caller may not mint a key more powerful than
    /// themselves.
    pub async fn create_api_key(
        &self,
        caller: &Principal,
        org: OrgId,
        new: NewApiKey,
    ) -> Result<CreatedApiKey, Error> {
        if let Some(own) = caller.role()
            && let Some(p) = Permission::ALL
                .iter()
                .find(|&&p| allows(new.role, p) && !allows(own, p))
        {
            return Err(Error::Forbidden(format!(
                "role {} holds {p}, which your role {own} does not",
                new.role
            )));
        }
        let mut tx = self.begin(org).await?;
        self.require_org(&mut tx).await?;
        let key = create_api_key_in(&self.store, &mut tx, new, &caller.actor()).await?;
        tx.commit().await?;
        Ok(key)
    }

    /// Lists an org's API keys (metadata only).
    pub async fn list_api_keys(&self, org: OrgId) -> Result<Vec<ApiKeyView>, Error> {
        let mut tx = self.begin(org).await?;
        self.require_org(&mut tx).await?;
        Ok(store::list_api_keys(&mut tx).await?)
    }

    /// Revokes an API key; its already-issued tokens stop working within a second.
    pub async fn revoke_api_key(
        &self,
        caller: &Principal,
        org: OrgId,
        key: ApiKeyId,
        reason: &str,
    ) -> Result<ApiKeyView, Error> {
        self.store
            .execute::<ApiKey>(
                org,
                key_aggregate(key),
                &caller.actor(),
                ApiKeyCommand::RevokeApiKey {
                    reason: reason.to_owned(),
                },
            )
            .await?;
        self.tokens.revoke_api_key(key).await;
        let mut tx = self.begin(org).await?;
        store::get_api_key(&mut tx, key)
            .await?
            .ok_or(Error::NotFound("api key"))
    }

    /// Exchanges an API key for an access token.
    pub async fn exchange(&self, presented: &str) -> Result<IssuedToken, Error> {
        let secret = ApiKeySecret::parse(presented).map_err(|_| Error::Unauthenticated)?;
        let mut conn = self
            .store
            .db()
            .pool()
            .acquire()
            .await
            .map_err(coffer_db::Error::from)?;
        let Some((org, key_id)) = store::find_api_key(&mut conn, &secret.sha256()).await? else {
            return Err(Error::Unauthenticated);
        };
        drop(conn);
        let now = Utc::now();
        let mut tx = self.begin(org).await?;
        let key = store::get_api_key(&mut tx, key_id)
            .await?
            .ok_or(Error::Unauthenticated)?;
        let expired = key.expires_at.is_some_and(|at| at <= now);
        if key.revoked_at.is_some() || expired {
            return Err(Error::Unauthenticated);
        }
        store::touch_api_key(&mut tx, key_id, now).await?;
        tx.commit().await?;
        self.tokens.issue_for_api_key(&key, now)
    }
}

async fn create_api_key_in(
    store: &EventStore,
    tx: &mut TenantTx,
    new: NewApiKey,
    actor: &Actor,
) -> Result<CreatedApiKey, Error> {
    let secret = ApiKeySecret::generate();
    let key_id = ApiKeyId::new();
    store
        .execute_in::<ApiKey>(
            tx,
            key_aggregate(key_id),
            actor,
            ApiKeyCommand::CreateApiKey {
                name: new.name,
                role: new.role,
                scopes: new.scopes,
                display_prefix: secret.display_prefix(),
                secret_sha256: secret.sha256(),
                expires_at: new.expires_at,
                now: Utc::now(),
            },
        )
        .await?;
    let key = store::get_api_key(tx, key_id)
        .await?
        .ok_or(Error::NotFound("api key"))?;
    Ok(CreatedApiKey { key, secret })
}

/// Creates org `org` with its first owner and an owner API key, in one transaction.
async fn create_org(
    store: &EventStore,
    pki: Option<&Pki>,
    org: OrgId,
    name: &str,
    owner_email: &str,
    actor: &Actor,
) -> Result<CreatedOrg, Error> {
    let owner = UserId::new();
    let mut tx = store.db().begin_tenant(org).await?;
    store
        .execute_in::<Org>(
            &mut tx,
            org_aggregate(org),
            actor,
            OrgCommand::CreateOrg {
                name: name.to_owned(),
                owner,
                owner_email: owner_email.to_owned(),
            },
        )
        .await?;
    let new_key = NewApiKey {
        name: "owner bootstrap".to_owned(),
        role: Role::Owner,
        scopes: Vec::new(),
        expires_at: None,
    };
    let key = create_api_key_in(store, &mut tx, new_key, actor).await?;
    // The org's intermediate CA is born with the org, in the same transaction.
    if let Some(pki) = pki {
        pki.create_org_ca(store, &mut tx, actor).await?;
    }
    let view = store::get_org(&mut tx)
        .await?
        .ok_or(Error::NotFound("org"))?;
    let owner = store::get_member(&mut tx, owner)
        .await?
        .ok_or(Error::NotFound("member"))?;
    tx.commit().await?;
    Ok(CreatedOrg {
        org: view,
        owner,
        owner_api_key: key,
    })
}

/// `coffer admin init`: the access-token signing key and the platform root CA (each unless
/// it exists already) and the platform org, whose owners and admins create the other orgs,
/// with its first owner and their API key. Refuses to run twice.
pub async fn init_platform(
    db: Database,
    kms: Arc<dyn Kms>,
    pki: PkiSettings,
    owner_email: &str,
) -> Result<CreatedOrg, Error> {
    let store = EventStore::new(db, projections());
    let actor = Actor::service("coffer-admin-init");
    let mut tx = store.db().begin_tenant(OrgId::PLATFORM).await?;
    let initialised = store::get_org(&mut tx).await?.is_some();
    let has_key = !store::signing_keys(&mut tx).await?.is_empty();
    drop(tx);
    if initialised {
        return Err(Error::AlreadyExists(
            "coffer is already initialised (the platform org exists)".to_owned(),
        ));
    }
    if !has_key {
        Tokens::create_signing_key(&store, kms.as_ref(), &actor).await?;
    }
    Pki::new(pki, kms).create_root(&store, &actor).await?;
    create_org(
        &store,
        None,
        OrgId::PLATFORM,
        "Platform",
        owner_email,
        &actor,
    )
    .await
}

impl Enrollment {
    /// Exchanges an ID token of a configured identity provider for an access token of the
    /// user. The provider's groups decide the role (and the member's recorded role follows
    /// them); a first sign-in adds the user as a member; a suspended member is refused.
    pub async fn exchange_oidc(&self, id_token: &str) -> Result<IssuedToken, Error> {
        let refused = |why: &str| Error::TokenRefused(format!("id token refused: {why}"));
        let claimed = coffer_auth::oidc::claimed_issuer(id_token)
            .ok_or_else(|| refused("it is not a JWT with an issuer"))?;
        let provider = self
            .oidc
            .iter()
            .find(|p| p.issuer() == claimed)
            .ok_or_else(|| refused("its issuer is not a configured identity provider"))?;
        let identity = provider
            .verify(id_token, std::time::SystemTime::now())
            .await
            .map_err(|e| refused(&e.to_string()))?;
        let email = identity
            .email
            .ok_or_else(|| refused("the provider gave no verified email address"))?;
        let org = identity.org;
        let actor = Actor::service("oidc-sign-in");
        let mut tx = self.begin(org).await?;
        self.require_org(&mut tx).await?;
        let existing = store::list_members(&mut tx)
            .await?
            .into_iter()
            .find(|m| m.email == email.to_ascii_lowercase());
        drop(tx);
        let user = match existing {
            Some(m) if m.suspended => return Err(refused("the member is suspended")),
            Some(m) => {
                if m.role != identity.role {
                    let change = OrgCommand::ChangeRole {
                        user: m.user_id,
                        role: identity.role,
                    };
                    if let Err(e) = self
                        .store
                        .execute::<Org>(org, org_aggregate(org), &actor, change)
                        .await
                    {
                        // E.g. the last owner losing the owner group: the org keeps its owner,
                        // and the token carries the provider's role.
                        tracing::warn!(error = %e, user = %m.user_id, "sync role from the identity provider");
                    }
                }
                m.user_id
            }
            None => {
                let user = UserId::new();
                let add = OrgCommand::AddMember {
                    user,
                    email,
                    role: identity.role,
                };
                self.store
                    .execute::<Org>(org, org_aggregate(org), &actor, add)
                    .await?;
                user
            }
        };
        self.tokens
            .issue_for_user(org, user, identity.role, Utc::now())
    }
}

/// The Org aggregate's id is the org's id.
fn org_aggregate(org: OrgId) -> AggregateId {
    AggregateId::from(*org.as_uuid())
}

fn key_aggregate(key: ApiKeyId) -> AggregateId {
    AggregateId::from(*key.as_uuid())
}

fn check_member_change(
    caller: &Principal,
    current: Option<Role>,
    new: Option<Role>,
) -> Result<(), Error> {
    match caller.role() {
        // Services are trusted; agents never reach member RPCs (the permission table).
        None => Ok(()),
        Some(role) if can_change_member(role, current, new) => Ok(()),
        Some(role) => Err(Error::Forbidden(format!(
            "role {role} may not grant, revoke or change the owner role"
        ))),
    }
}

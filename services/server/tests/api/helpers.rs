//! `spawn_app`: the exact production wiring on port 0, on a fresh database, bus, KMS key and
//! revocation buckets, with the platform initialised as `coffer admin init` does.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use coffer_db::DbConfig;
use coffer_eventstore::{BusConfig, RelayConfig};
use coffer_kms::{AwsConfig, KeyId, Kms, KmsConfig, LocalConfig, LocalKms};
use coffer_proto::enrollment::v1::{
    CreateApiKeyRequest, CreateOrgRequest, ExchangeRequest,
    api_key_service_client::ApiKeyServiceClient, org_service_client::OrgServiceClient,
    token_service_client::TokenServiceClient,
};
use coffer_server::config::{
    AuthConfig, Config, GrpcConfig, NatsConfig, SchedulingConfig, TlsConfig,
};
use coffer_server::startup::{Application, Target};
use coffer_testkit::TestDb;
use coffer_types::OrgId;
use tokio::sync::oneshot;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub struct TestApp {
    pub addr: SocketAddr,
    /// The KV bucket enrollment publishes keys in (and tests publish job-ticket keys in).
    pub keys_bucket: String,
    pub db: TestDb,
    pub bus: BusConfig,
    pub js: async_nats::jetstream::Context,
    /// The platform owner's API key, as `coffer admin init` printed it.
    pub platform_key: String,
    /// The server's certificate (PEM) when it speaks TLS.
    pub tls_ca: Option<String>,
    /// The configuration it booted with.
    pub config: Config,
    /// The KMS client the app wraps keys with, and its settings.
    kms: Arc<dyn Kms>,
    kms_config: KmsConfig,
    _kms_dir: tempfile::TempDir,
    /// The one directory local destinations may lie under (`scheduling.local_roots`).
    local_root: tempfile::TempDir,
    _tls_dir: Option<tempfile::TempDir>,
    _stop: oneshot::Sender<()>,
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// A channel that sends a bearer token.
pub type Authed = InterceptedService<Channel, Bearer>;

/// A plaintext channel to a server at `url` (a `coffer serve` the test started), sending an
/// access token of `api_key`.
pub async fn authed_at(url: &str, api_key: &str) -> Authed {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let token = TokenServiceClient::new(channel.clone())
        .exchange(ExchangeRequest {
            api_key: api_key.to_owned(),
        })
        .await
        .expect("exchange")
        .into_inner()
        .access_token;
    InterceptedService::new(channel, Bearer(format!("Bearer {token}").parse().unwrap()))
}

/// A plaintext channel to a server at `url` sending `token` as is (for a server without the
/// enrollment target, which cannot exchange API keys itself).
pub async fn with_token_at(url: &str, token: &str) -> Authed {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    InterceptedService::new(channel, Bearer(format!("Bearer {token}").parse().unwrap()))
}

/// An org created through the API, with its owner's API key.
pub struct TestOrg {
    pub org: OrgId,
    pub owner_key: String,
    pub owner_user_id: String,
}

impl TestApp {
    pub fn url(&self) -> String {
        match self.tls_ca {
            Some(_) => format!("https://localhost:{}", self.addr.port()),
            None => format!("http://{}", self.addr),
        }
    }

    fn endpoint(&self) -> tonic::transport::Endpoint {
        let endpoint = tonic::transport::Endpoint::from_shared(self.url()).unwrap();
        match &self.tls_ca {
            Some(ca) => endpoint
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                        .domain_name("localhost"),
                )
                .unwrap(),
            None => endpoint,
        }
    }

    pub async fn channel(&self) -> Channel {
        self.endpoint().connect().await.unwrap()
    }

    /// A TLS channel presenting an agent's client certificate (`chain_pem`: leaf, then
    /// intermediate) with its private key.
    pub async fn agent_channel(&self, chain_pem: &str, key_pem: &str) -> Channel {
        let ca = self.tls_ca.as_ref().expect("a TLS app");
        tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                    .identity(tonic::transport::Identity::from_pem(chain_pem, key_pem))
                    .domain_name("localhost"),
            )
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// The directory local destinations may lie under (its real path).
    pub fn local_root(&self) -> std::path::PathBuf {
        std::fs::canonicalize(self.local_root.path()).unwrap()
    }

    /// Registers a local destination of `org` in a fresh directory under the app's local root;
    /// returns its id and the directory.
    pub async fn local_destination(&self, org: &TestOrg) -> (String, std::path::PathBuf) {
        use coffer_proto::scheduling::v1 as sched;
        let dir = self.local_root().join(coffer_testkit::unique("dest"));
        std::fs::create_dir(&dir).unwrap();
        let id = sched::destination_service_client::DestinationServiceClient::new(
            self.authed(&org.owner_key).await,
        )
        .register_destination(sched::RegisterDestinationRequest {
            org_id: org.org.to_string(),
            fields: Some(sched::DestinationFields {
                name: coffer_testkit::unique("local-"),
                kind: Some(sched::destination_fields::Kind::Local(
                    sched::LocalDestination {
                        path: dir.to_string_lossy().into_owned(),
                    },
                )),
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .destination_id;
        (id, dir)
    }

    /// The KMS the app wraps keys with (for tests that inspect or mint with its CAs).
    pub fn kms(&self) -> Arc<dyn Kms> {
        self.kms.clone()
    }

    /// A KMS client of the same provider whose current master key is a new one (the app's
    /// keys still unwrap through it), as after an operator configured a new master key.
    pub async fn next_master_key(&self) -> Arc<dyn Kms> {
        let next = match &self.kms_config {
            KmsConfig::Local(local) => {
                let key_id = KeyId::new(format!("{}-next", local.key_id.as_str()));
                LocalKms::create_key(&local.key_dir, &key_id).unwrap();
                KmsConfig::Local(LocalConfig {
                    key_dir: local.key_dir.clone(),
                    key_id,
                })
            }
            KmsConfig::Aws(aws) => KmsConfig::Aws(AwsConfig {
                key_id: KeyId::new(create_aws_master_key().await),
                ..aws.clone()
            }),
        };
        coffer_kms::from_config(&next).await.unwrap()
    }

    /// Exchanges `api_key` for an access token.
    pub async fn token(&self, api_key: &str) -> String {
        TokenServiceClient::new(self.channel().await)
            .exchange(ExchangeRequest {
                api_key: api_key.to_owned(),
            })
            .await
            .expect("exchange")
            .into_inner()
            .access_token
    }

    /// A channel authenticated with an access token of `api_key`.
    pub async fn authed(&self, api_key: &str) -> Authed {
        let token = self.token(api_key).await;
        self.with_token(&token).await
    }

    /// A channel sending `token` as is.
    pub async fn with_token(&self, token: &str) -> Authed {
        let bearer = format!("Bearer {token}").parse().unwrap();
        InterceptedService::new(self.channel().await, Bearer(bearer))
    }

    /// Creates an org through the API as the platform owner.
    pub async fn new_org(&self, name: &str) -> TestOrg {
        let mut orgs = OrgServiceClient::new(self.authed(&self.platform_key).await);
        let created = orgs
            .create_org(CreateOrgRequest {
                name: name.to_owned(),
                owner_email: format!("owner@{}.test", name.to_lowercase().replace(' ', "-")),
            })
            .await
            .expect("create org")
            .into_inner();
        TestOrg {
            org: created.org.unwrap().org_id.parse().unwrap(),
            owner_key: created.owner_api_key.unwrap().secret,
            owner_user_id: created.owner.unwrap().user_id,
        }
    }

    /// Boots another `coffer serve --target <target>` on the same database, bus and keys (a
    /// second replica), with `configure` adjusting its config; it stops when the returned
    /// sender drops.
    pub async fn replica(
        &self,
        target: Target,
        configure: impl FnOnce(&mut Config),
    ) -> (SocketAddr, oneshot::Sender<()>) {
        let mut config = self.config.clone();
        configure(&mut config);
        let app = Box::pin(Application::build(config, &[target]))
            .await
            .expect("the replica boots");
        let addr = app.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        (addr, stop)
    }

    /// Publishes `signer` as the job-ticket key, the way scheduling publishes its own.
    pub async fn publish_ticket_key(&self, signer: &coffer_auth::token::Signer) {
        let bucket = coffer_auth::published::bucket(&self.js, &self.keys_bucket)
            .await
            .unwrap();
        coffer_auth::published::Publisher::new(bucket)
            .ticket_keys(&coffer_auth::token::Jwks::new([signer.jwk()]))
            .await
            .unwrap();
    }

    /// A new API key of `org` with `role`, created by its owner; returns the secret.
    pub async fn new_api_key(&self, org: &TestOrg, role: &str) -> String {
        ApiKeyServiceClient::new(self.authed(&org.owner_key).await)
            .create_api_key(CreateApiKeyRequest {
                org_id: org.org.to_string(),
                name: format!("{role} key"),
                role: role.to_owned(),
                scopes: vec![],
                expires_at: None,
            })
            .await
            .expect("create api key")
            .into_inner()
            .secret
    }
}

pub fn config(db: &DbConfig, bus: &BusConfig, kms_dir: &std::path::Path) -> Config {
    Config {
        database: db.clone(),
        nats: NatsConfig {
            url: coffer_testkit::nats_url(),
            connect_timeout: Duration::from_secs(5),
            bus: bus.clone(),
        },
        grpc: GrpcConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: None,
        },
        kms: Some(KmsConfig::Local(LocalConfig {
            key_dir: kms_dir.to_path_buf(),
            key_id: KeyId::new("test-master"),
        })),
        telemetry: Default::default(),
        relay: RelayConfig::default(),
        auth: AuthConfig {
            revocation_bucket: coffer_testkit::unique("REVOKED"),
            keys_bucket: coffer_testkit::unique("KEYS"),
            ..AuthConfig::default()
        },
        pki: Default::default(),
        credentials: Default::default(),
        // Checkpoints come quickly, so tests wait for them briefly.
        audit: coffer_audit::Settings {
            checkpoint_interval: Duration::from_millis(300),
            checkpoint_poll: Duration::from_millis(100),
            ..Default::default()
        },
        // A quick scheduler, short leases and retries, so tests see them within seconds.
        scheduler: coffer_scheduling::Settings {
            tick: Duration::from_millis(200),
            grace: Duration::from_secs(1),
            lease: Duration::from_secs(3),
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(2),
            poll_max_wait: Duration::from_secs(10),
            ..Default::default()
        },
        // Destinations may reach the stack's loopback servers (moto); `spawn` adds the app's
        // own temporary local root.
        scheduling: SchedulingConfig {
            ssrf_allow: vec!["loopback".into()],
            local_roots: vec![],
        },
    }
}

/// Which KMS provider a test app wraps keys with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Key files in a temporary directory.
    Local,
    /// aws-sdk-kms against the stack's KMS API emulator (moto), under a fresh master key.
    Aws,
}

impl Provider {
    /// A fresh master key of this provider; `kms_dir` holds the local provider's files.
    pub async fn master_key(self, kms_dir: &std::path::Path) -> KmsConfig {
        match self {
            Provider::Local => {
                let key_id = KeyId::new("test-master");
                LocalKms::create_key(kms_dir, &key_id).unwrap();
                KmsConfig::Local(LocalConfig {
                    key_dir: kms_dir.to_path_buf(),
                    key_id,
                })
            }
            Provider::Aws => {
                let key_id = create_aws_master_key().await;
                KmsConfig::Aws(AwsConfig {
                    endpoint: Some(coffer_testkit::kms_endpoint()),
                    ..AwsConfig::new(key_id)
                })
            }
        }
    }
}

/// Creates a symmetric master key in the KMS API emulator with a plain SDK client (test setup;
/// the code under test goes through `coffer_kms`). Returns its key id.
pub async fn create_aws_master_key() -> String {
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(coffer_testkit::kms_endpoint())
        .load()
        .await;
    aws_sdk_kms::Client::new(&sdk)
        .create_key()
        .description("coffer server test master key")
        .send()
        .await
        .expect("create a master key in the KMS API emulator")
        .key_metadata()
        .expect("CreateKey returns metadata")
        .key_id()
        .to_owned()
}

pub async fn spawn_app() -> TestApp {
    Box::pin(spawn_app_with(|_| {})).await
}

/// `spawn_app` wrapping keys with `provider`.
pub async fn spawn_app_on(provider: Provider) -> TestApp {
    Box::pin(spawn(provider, |_| {})).await
}

/// `spawn_app`, with `configure` adjusting the server's config before it boots.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    Box::pin(spawn(Provider::Local, configure)).await
}

/// `spawn_app` wrapping keys with `provider`, with `configure` adjusting the server's config
/// (its KMS settings included) before it boots.
pub async fn spawn(provider: Provider, configure: impl FnOnce(&mut Config)) -> TestApp {
    coffer_testkit::telemetry();
    let db = TestDb::migrated(coffer_server::SCHEMAS).await;
    let (_client, js, bus) = coffer_testkit::bus().await;
    let kms_dir = tempfile::tempdir().unwrap();
    let mut config = config(&db.config, &bus, kms_dir.path());
    config.kms = Some(provider.master_key(kms_dir.path()).await);
    let local_root = tempfile::tempdir().unwrap();
    config.scheduling.local_roots = vec![std::fs::canonicalize(local_root.path()).unwrap()];
    configure(&mut config);
    let kms_config = config.kms.clone().expect("a KMS");
    let kms = coffer_kms::from_config(&kms_config)
        .await
        .expect("the test KMS");
    let created = Box::pin(coffer_enrollment::app::init_platform(
        db.service(coffer_enrollment::SERVICE).await,
        kms.clone(),
        config.pki.settings().unwrap(),
        "root@platform.test",
    ))
    .await
    .expect("admin init");
    let platform_key = created.owner_api_key.secret.expose().to_owned();
    let cert_file = config.grpc.tls.as_ref().map(|tls| tls.cert_file.clone());
    let keys_bucket = config.auth.keys_bucket.clone();
    let booted_with = config.clone();
    let app = Box::pin(Application::build(config, &[Target::All]))
        .await
        .expect("boot");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        keys_bucket,
        db,
        bus,
        js,
        platform_key,
        tls_ca: cert_file.map(|f| std::fs::read_to_string(f).unwrap()),
        config: booted_with,
        kms,
        kms_config,
        _kms_dir: kms_dir,
        local_root,
        _tls_dir: None,
        _stop: stop,
    }
}

/// `spawn_app` serving TLS with a generated development certificate.
pub async fn spawn_tls_app() -> TestApp {
    Box::pin(spawn_tls_app_on(Provider::Local)).await
}

/// `spawn_tls_app` wrapping keys with `provider`.
pub async fn spawn_tls_app_on(provider: Provider) -> TestApp {
    Box::pin(spawn_tls_app_with(provider, |_| {})).await
}

/// `spawn_tls_app` wrapping keys with `provider`, with `configure` adjusting the config.
pub async fn spawn_tls_app_with(
    provider: Provider,
    configure: impl FnOnce(&mut Config),
) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let tls = TlsConfig {
        cert_file: dir.path().join("server.pem"),
        key_file: dir.path().join("server.key"),
        generate_dev_certificate: true,
    };
    let mut app = Box::pin(spawn(provider, |config| {
        config.grpc.tls = Some(tls);
        configure(config);
    }))
    .await;
    app._tls_dir = Some(dir);
    app
}

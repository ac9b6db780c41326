//! A real `coffer` server in-process, for the benchmarks that measure it: the production wiring
//! with every target, TLS with a development certificate, a fresh database, bus, revocation and
//! key buckets, and a KMS, initialised as `coffer admin init` does; plus the clients' side of
//! authenticating to it (API key exchange and bearer tokens).

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use coffer_enrollment::pki::PkiSettings;
use coffer_eventstore::{BusConfig, RelayConfig};
use coffer_kms::{AwsConfig, KeyId, Kms, KmsConfig, LocalConfig, LocalKms};
use coffer_proto::enrollment::v1::{
    CreateOrgRequest, ExchangeRequest, org_service_client::OrgServiceClient,
    token_service_client::TokenServiceClient,
};
use coffer_server::config::{AuthConfig, Config, GrpcConfig, NatsConfig, PkiConfig, TlsConfig};
use coffer_server::startup::{Application, Target};
use coffer_telemetry::TelemetryConfig;
use coffer_testkit::TestDb;
use coffer_types::OrgId;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// The KMS a [`BenchServer`] wraps keys with.
#[derive(Debug)]
pub enum ServerKms {
    /// `KmsConfig::Local`: a master key file made for the run in a temporary directory.
    Local,
    /// `KmsConfig::Aws` against the stack's KMS API emulator, under the master key `key_id`.
    Aws {
        /// The emulator's id of the master key.
        key_id: String,
    },
    /// A KMS no configuration can name, such as a benchmark's reference: the server boots
    /// through `Application::build_with_kms`.
    Given(Arc<dyn Kms>),
}

/// A server running in-process on its own database, bus and KMS key. [`BenchServer::stop`]
/// removes what it created.
pub struct BenchServer {
    /// Where it listens (TLS).
    pub addr: SocketAddr,
    /// Its database.
    pub db: TestDb,
    /// The JetStream context its bus and buckets live in.
    pub js: async_nats::jetstream::Context,
    /// Its event streams.
    pub bus: BusConfig,
    /// How it issues and checks access tokens, and its revocation and published-keys buckets.
    pub auth: AuthConfig,
    /// Its PKI settings: trust domain, agent certificate lifetime and the rest.
    pub pki: PkiSettings,
    /// Most connections its database pool opens.
    pub db_pool: u32,
    /// A client of the same KMS the server wraps keys with (for a given KMS, the very one).
    pub kms: Arc<dyn Kms>,
    /// The server's development certificate (PEM), which clients trust.
    ca_pem: String,
    /// The platform owner's API key from the initialisation. Never printed.
    platform_key: String,
    _kms_dir: tempfile::TempDir,
    _tls_dir: tempfile::TempDir,
    stop: oneshot::Sender<()>,
    serving: JoinHandle<anyhow::Result<()>>,
}

/// Leaves out the platform owner's API key.
impl fmt::Debug for BenchServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BenchServer")
            .field("addr", &self.addr)
            .field("db", &self.db.name)
            .field("db_pool", &self.db_pool)
            .finish_non_exhaustive()
    }
}

impl BenchServer {
    /// Boots the server as `coffer serve` would after `coffer admin init`, with `kms`.
    pub async fn start(kms: ServerKms) -> anyhow::Result<Self> {
        Box::pin(Self::start_with(kms, |_| {})).await
    }

    /// [`BenchServer::start`], with `configure` adjusting the server's config before it boots.
    pub async fn start_with(
        kms: ServerKms,
        configure: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        let db = TestDb::migrated(coffer_server::SCHEMAS).await;
        let (_client, js, bus) = coffer_testkit::bus().await;
        let kms_dir = tempfile::tempdir().context("create the KMS key directory")?;
        let tls_dir = tempfile::tempdir().context("create the TLS directory")?;
        // The platform is initialised with its own client of the same KMS, as `coffer admin
        // init` is, and benchmarks unwrap keys with that client; a given KMS is shared instead.
        let (kms_config, kms) = match kms {
            ServerKms::Local => {
                let key_id = KeyId::new("bench-master");
                LocalKms::create_key(kms_dir.path(), &key_id)
                    .context("create the local master key")?;
                configured(KmsConfig::Local(LocalConfig {
                    key_dir: kms_dir.path().to_path_buf(),
                    key_id,
                }))
                .await?
            }
            ServerKms::Aws { key_id } => {
                configured(KmsConfig::Aws(AwsConfig {
                    endpoint: Some(coffer_testkit::kms_endpoint()),
                    ..AwsConfig::new(key_id)
                }))
                .await?
            }
            ServerKms::Given(kms) => (None, kms),
        };
        let given = kms_config.is_none();
        let cert_file = tls_dir.path().join("server.pem");
        let mut config = Config {
            database: db.config.clone(),
            nats: NatsConfig {
                url: coffer_testkit::nats_url(),
                connect_timeout: Duration::from_secs(5),
                bus: bus.clone(),
            },
            grpc: GrpcConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                tls: Some(TlsConfig {
                    cert_file: cert_file.clone(),
                    key_file: tls_dir.path().join("server.key"),
                    generate_dev_certificate: true,
                }),
            },
            kms: kms_config,
            telemetry: TelemetryConfig::default(),
            relay: RelayConfig::default(),
            auth: AuthConfig {
                revocation_bucket: coffer_testkit::unique("BENCH_REVOKED"),
                keys_bucket: coffer_testkit::unique("BENCH_KEYS"),
                ..AuthConfig::default()
            },
            pki: PkiConfig::default(),
            credentials: Default::default(),
            audit: Default::default(),
            scheduler: Default::default(),
            scheduling: Default::default(),
        };
        configure(&mut config);
        config.validate().context("validate the server config")?;
        let pki = config.pki.settings().context("pki settings")?;
        let created = Box::pin(coffer_enrollment::app::init_platform(
            db.service(coffer_enrollment::SERVICE).await,
            kms.clone(),
            pki.clone(),
            "root@platform.bench",
        ))
        .await
        .context("initialise the platform")?;
        let platform_key = created.owner_api_key.secret.expose().to_owned();
        let auth = config.auth.clone();
        let db_pool = config.database.max_connections;
        // A configured KMS boots exactly as `coffer serve` does; only a given one needs the hook.
        let app = if given {
            Box::pin(Application::build_with_kms(
                config,
                &[Target::All],
                kms.clone(),
            ))
            .await
        } else {
            Box::pin(Application::build(config, &[Target::All])).await
        }
        .context("boot the server")?;
        let addr = app.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        let ca_pem = std::fs::read_to_string(&cert_file)
            .context("read the server's development certificate")?;
        Ok(Self {
            addr,
            db,
            js,
            bus,
            auth,
            pki,
            db_pool,
            kms,
            ca_pem,
            platform_key,
            _kms_dir: kms_dir,
            _tls_dir: tls_dir,
            stop,
            serving,
        })
    }

    /// Creates the benchmark's org as the platform owner, over `channel`. Returns its id and its
    /// owner's API key (never print it).
    pub async fn create_org(&self, channel: &Channel) -> anyhow::Result<(OrgId, String)> {
        let platform_token = exchange(channel, &self.platform_key).await?;
        let created = OrgServiceClient::new(authed(channel.clone(), &platform_token)?)
            .create_org(CreateOrgRequest {
                name: "Bench".to_owned(),
                owner_email: "owner@bench.test".to_owned(),
            })
            .await
            .context("create the benchmark org")?
            .into_inner();
        let org = created
            .org
            .context("CreateOrg returns the org")?
            .org_id
            .parse()
            .context("parse the org id")?;
        let owner_key = created
            .owner_api_key
            .context("CreateOrg returns an owner API key")?
            .secret;
        Ok((org, owner_key))
    }

    /// The server's development certificate (PEM): what a client, such as a `coffer-agent`
    /// given `--server-ca`, trusts the server with.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// An endpoint speaking TLS to the server, presenting `identity` if given.
    pub fn endpoint(&self, identity: Option<Identity>) -> anyhow::Result<Endpoint> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .domain_name("localhost");
        if let Some(identity) = identity {
            tls = tls.identity(identity);
        }
        Endpoint::from_shared(format!("https://{}", self.addr))
            .context("server url")?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .tls_config(tls)
            .context("client TLS config")
    }

    /// A new connection (its own HTTP/2 connection and TLS session), presenting `identity` if
    /// given.
    pub async fn connect(&self, identity: Option<Identity>) -> anyhow::Result<Channel> {
        self.endpoint(identity)?
            .connect()
            .await
            .context("connect to the server")
    }

    /// Stops the server and removes everything the run created; failures only warn.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(10), self.serving).await {
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "the server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "the server task failed"),
            Err(_) => tracing::warn!("the server did not stop within 10 s"),
            Ok(Ok(Ok(()))) => {}
        }
        crate::drop_database(&self.db).await;
        for stream in [&self.bus.stream, &self.bus.dlq_stream] {
            if let Err(e) = self.js.delete_stream(stream).await {
                tracing::warn!(%stream, error = %e, "could not delete a benchmark stream");
            }
        }
        for bucket in [&self.auth.revocation_bucket, &self.auth.keys_bucket] {
            if let Err(e) = self.js.delete_key_value(bucket).await {
                tracing::warn!(%bucket, error = %e, "could not delete a benchmark bucket");
            }
        }
    }
}

/// `config` and a client of the KMS it names.
async fn configured(config: KmsConfig) -> anyhow::Result<(Option<KmsConfig>, Arc<dyn Kms>)> {
    let kms = coffer_kms::from_config(&config)
        .await
        .context("open the KMS")?;
    Ok((Some(config), kms))
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

/// Leaves out the token.
impl fmt::Debug for Bearer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bearer(..)")
    }
}

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

/// A connection that sends an access token with every request.
pub type Authed = InterceptedService<Channel, Bearer>;

/// `channel`, sending `access_token` with every request.
pub fn authed(channel: Channel, access_token: &str) -> anyhow::Result<Authed> {
    let bearer = format!("Bearer {access_token}")
        .parse()
        .context("an access token is ASCII")?;
    Ok(InterceptedService::new(channel, Bearer(bearer)))
}

/// Exchanges `api_key` for an access token (`TokenService.Exchange`).
pub async fn exchange(channel: &Channel, api_key: &str) -> anyhow::Result<String> {
    Ok(TokenServiceClient::new(channel.clone())
        .exchange(ExchangeRequest {
            api_key: api_key.to_owned(),
        })
        .await
        .context("exchange an API key")?
        .into_inner()
        .access_token)
}

/// A P-256 agent key (PEM) and its CSR (DER), made in-process.
pub fn agent_key() -> anyhow::Result<(String, Vec<u8>)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generate an agent key")?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .context("make a CSR")?
        .der()
        .to_vec();
    Ok((key.serialize_pem(), csr))
}

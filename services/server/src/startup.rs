//! Builds and runs `coffer serve`: boot checks, then the gRPC server, outbox relays and
//! consumers of the selected targets, until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use coffer_audit::grpc::AuditGrpc;
use coffer_db::Database;
use coffer_eventstore::{Consumer, Relay};
use coffer_kms::Kms;
use coffer_proto::audit::v1::audit_service_server::AuditServiceServer;
use coffer_proto::credentials::v1::{
    credential_service_server::CredentialServiceServer,
    master_key_service_server::MasterKeyServiceServer, org_key_service_server::OrgKeyServiceServer,
    release_service_server::ReleaseServiceServer,
};
use coffer_proto::diagnostics::v1::diagnostics_service_server::DiagnosticsServiceServer;
use coffer_proto::scheduling::v1::{
    agent_job_service_server::AgentJobServiceServer,
    database_service_server::DatabaseServiceServer,
    destination_service_server::DestinationServiceServer, job_service_server::JobServiceServer,
    schedule_service_server::ScheduleServiceServer,
};
use coffer_scheduling::grpc::SchedulingGrpc;
use tokio::sync::watch;
use tokio::task::JoinSet;

use coffer_auth::revocation::Revocations;
use coffer_credentials::Credentials;
use coffer_credentials::grpc::CredentialsGrpc;
use coffer_enrollment::grpc::EnrollmentGrpc;
use coffer_enrollment::pki::Pki;
use coffer_enrollment::tokens::{TokenSettings, Tokens};
use coffer_enrollment::{Enrollment, consumers};
use coffer_proto::enrollment::v1::{
    agent_service_server::AgentServiceServer, api_key_service_server::ApiKeyServiceServer,
    enrollment_token_service_server::EnrollmentTokenServiceServer,
    member_service_server::MemberServiceServer, org_service_server::OrgServiceServer,
    token_service_server::TokenServiceServer,
};

use crate::authn::AuthLayer;
use crate::config::Config;
use crate::diag::{self, Diagnostics, grpc::DiagnosticsGrpc};
use crate::tls;
use coffer_auth::agent::AgentTrust;
use coffer_auth::published::{self, Publisher};

/// A service `coffer serve --target` can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// Every service in one process.
    All,
    /// Enrollment: orgs, members, API keys, access tokens.
    Enrollment,
    /// Credentials: the credential vault, org age keys, credential release.
    Credentials,
    /// Audit: every org's tamper-evident log, checkpoints, proofs and export.
    Audit,
    /// Scheduling: databases, storage destinations, schedules, the scheduler, jobs and job
    /// tickets.
    Scheduling,
    /// Diagnostics: the event pipeline probe.
    Diag,
}

impl Target {
    fn includes(self, other: Target) -> bool {
        self == Target::All || self == other
    }
}

/// A boot check failed. Each message is one line naming what failed and where.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// Postgres unreachable or refusing the login.
    #[error(transparent)]
    Postgres(#[from] coffer_db::Error),
    /// The database schema is older than this binary.
    #[error("postgres at {target} is missing migrations: {missing}; run `coffer migrate`")]
    MissingMigrations {
        /// host:port/db.
        target: String,
        /// `schema NNNN_name` items.
        missing: String,
    },
    /// NATS unreachable.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Nats {
        /// The configured URL.
        url: String,
        /// The client's error.
        reason: String,
    },
    /// JetStream streams could not be created.
    #[error("cannot set up JetStream streams on {url}: {reason}")]
    Streams {
        /// The configured URL.
        url: String,
        /// The error.
        reason: String,
    },
    /// The KMS master key could not be opened.
    #[error("cannot open the KMS master key: {0}")]
    Kms(coffer_kms::Error),
    /// The listener could not bind.
    #[error("cannot listen on {addr}: {cause}")]
    Listen {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        cause: std::io::Error,
    },
    /// gRPC reflection could not be built from the descriptor sets.
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(String),
    /// A target needs something the configuration does not give it.
    #[error("{0}")]
    Missing(String),
    /// Access-token keys or the revocation set are not available.
    #[error("{0}")]
    Auth(String),
    /// The TLS certificate or key could not be loaded.
    #[error("tls: {0}")]
    Tls(String),
    /// The enrollment service could not start.
    #[error("cannot start enrollment: {0}")]
    Enrollment(coffer_enrollment::Error),
}

/// A built, not yet running server: every boot check has passed.
pub struct Application {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    router: tonic::transport::server::Router<
        tower::layer::util::Stack<
            AuthLayer,
            tower::layer::util::Stack<
                coffer_telemetry::GrpcTraceLayer,
                tower::layer::util::Identity,
            >,
        >,
    >,
    background: Vec<Background>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.addr)
            .finish()
    }
}

type Background = Box<
    dyn FnOnce(watch::Receiver<bool>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send,
>;

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Application {
    /// Runs the boot checks and wires the targets. Fails with one clear [`BootError`].
    pub async fn build(config: Config, targets: &[Target]) -> Result<Self, BootError> {
        Box::pin(Self::boot(config, targets, None)).await
    }

    /// [`Application::build`], wrapping keys with `kms` instead of the provider `config.kms`
    /// names (which is then not opened). For harnesses that need a KMS no configuration can
    /// name: `cargo xtask bench credentials` measures release against a pass-through KMS that
    /// lives only in the benchmark. `coffer serve` always goes through `build`.
    pub async fn build_with_kms(
        config: Config,
        targets: &[Target],
        kms: Arc<dyn Kms>,
    ) -> Result<Self, BootError> {
        Box::pin(Self::boot(config, targets, Some(kms))).await
    }

    async fn boot(
        config: Config,
        targets: &[Target],
        given_kms: Option<Arc<dyn Kms>>,
    ) -> Result<Self, BootError> {
        let wants = |t: Target| targets.iter().any(|x| x.includes(t));

        let nats = async_nats::ConnectOptions::new()
            .connection_timeout(config.nats.connect_timeout)
            .name("coffer")
            .connect(&config.nats.url)
            .await
            .map_err(|e| BootError::Nats {
                url: config.nats.url.clone(),
                reason: e.to_string(),
            })?;
        let js = async_nats::jetstream::new(nats);
        config
            .nats
            .bus
            .ensure_streams(&js)
            .await
            .map_err(|e| BootError::Streams {
                url: config.nats.url.clone(),
                reason: e.to_string(),
            })?;

        // Opened where `build` always opened it, so the boot checks keep their order.
        let kms = match (given_kms, &config.kms) {
            (Some(kms), _) => Some(kms),
            (None, Some(kms)) => Some(coffer_kms::from_config(kms).await.map_err(BootError::Kms)?),
            (None, None) => None,
        };
        let revocations = Revocations::open(&js, &config.auth.revocation_bucket)
            .await
            .map_err(|e| BootError::Auth(e.to_string()))?;
        tokio::time::timeout(config.auth.keys_wait, revocations.wait_synced())
            .await
            .map_err(|_| {
                BootError::Auth(format!(
                    "the revocation bucket {} did not load within {:?}",
                    config.auth.revocation_bucket, config.auth.keys_wait
                ))
            })?;
        let keys_bucket = published::bucket(&js, &config.auth.keys_bucket)
            .await
            .map_err(|e| BootError::Auth(e.to_string()))?;
        let publisher = Publisher::new(keys_bucket.clone());
        let pki_settings = config
            .pki
            .settings()
            .map_err(|e| BootError::Missing(e.to_string()))?;
        let trust = Arc::new(AgentTrust::new(pki_settings.trust_domain.clone()));

        let mut background: Vec<Background> = Vec::new();
        let (health, health_service) = tonic_health::server::health_reporter();
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(coffer_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        // Both reflection versions: grpcurl and many SDKs still speak v1alpha.
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| BootError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| BootError::Reflection(e.to_string()))?;

        // Every target's database and schema are checked before anything waits on anything.
        let connect = async |wanted: bool, schema: coffer_db::Schema| {
            if !wanted {
                return Ok::<_, BootError>(None);
            }
            let db = Database::connect(&config.database, schema.service).await?;
            check_migrations(&db, &config, &[schema]).await?;
            Ok(Some(db))
        };
        let enrollment_db = connect(wants(Target::Enrollment), coffer_enrollment::SCHEMA).await?;
        let diag_db = connect(wants(Target::Diag), diag::SCHEMA).await?;
        let credentials_db =
            connect(wants(Target::Credentials), coffer_credentials::SCHEMA).await?;
        let audit_db = connect(wants(Target::Audit), coffer_audit::SCHEMA).await?;
        let scheduling_db = connect(wants(Target::Scheduling), coffer_scheduling::SCHEMA).await?;

        // Enrollment first: it publishes the key set the auth layer then follows.
        let mut enrollment = None;
        if wants(Target::Enrollment) {
            let kms = kms.clone().ok_or_else(|| {
                BootError::Missing("the enrollment target needs [kms] configured".to_owned())
            })?;
            let db = enrollment_db.clone().expect("connected above when wanted");
            let settings = TokenSettings {
                issuer: config.auth.issuer.clone(),
                audience: config.auth.audience.clone(),
                lifetime: config.auth.token_lifetime,
            };
            let tokens = Tokens::load(&db, kms.as_ref(), settings, revocations.clone())
                .await
                .map_err(BootError::Enrollment)?;
            let pki = Arc::new(Pki::new(pki_settings, kms.clone()));
            let mut providers = Vec::new();
            for provider in &config.auth.oidc {
                let issuer = provider.issuer.clone();
                let verifier = coffer_auth::oidc::Verifier::discover(provider.clone())
                    .await
                    .map_err(|e| BootError::Auth(format!("identity provider {issuer}: {e}")))?;
                providers.push(verifier);
            }
            let app = Enrollment::new(db.clone(), Arc::new(tokens), pki, publisher.clone())
                .with_identity_providers(providers);
            app.publish().await.map_err(BootError::Enrollment)?;
            background.extend(pipeline(
                &config,
                &js,
                db,
                coffer_enrollment::SERVICE,
                consumers::revocations_config(&config.nats.bus),
                consumers::revocations_handler(revocations.clone()),
            ));
            enrollment = Some(EnrollmentGrpc::new(app));
        }
        let authenticator = published::follow(
            keys_bucket,
            &config.auth.issuer,
            &config.auth.audience,
            revocations,
            trust.clone(),
            config.auth.keys_wait,
        )
        .await
        .map_err(|e| BootError::Auth(e.to_string()))?;
        let tls = match &config.grpc.tls {
            None => None,
            Some(tls) => {
                if tls.generate_dev_certificate {
                    tls::ensure_dev_certificate(&tls.cert_file, &tls.key_file)
                        .map_err(|e| BootError::Tls(e.to_string()))?;
                }
                Some(
                    tls::acceptor(&tls.cert_file, &tls.key_file, trust)
                        .map_err(|e| BootError::Tls(e.to_string()))?,
                )
            }
        };

        let mut router = tonic::transport::Server::builder()
            .layer(coffer_telemetry::GrpcTraceLayer)
            .layer(AuthLayer::new(authenticator.clone()))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        if let Some(grpc) = enrollment {
            health
                .set_serving::<OrgServiceServer<EnrollmentGrpc>>()
                .await;
            health
                .set_serving::<MemberServiceServer<EnrollmentGrpc>>()
                .await;
            health
                .set_serving::<ApiKeyServiceServer<EnrollmentGrpc>>()
                .await;
            health
                .set_serving::<TokenServiceServer<EnrollmentGrpc>>()
                .await;
            health
                .set_serving::<EnrollmentTokenServiceServer<EnrollmentGrpc>>()
                .await;
            health
                .set_serving::<AgentServiceServer<EnrollmentGrpc>>()
                .await;
            router = router
                .add_service(EnrollmentTokenServiceServer::new(grpc.clone()))
                .add_service(AgentServiceServer::new(grpc.clone()))
                .add_service(OrgServiceServer::new(grpc.clone()))
                .add_service(MemberServiceServer::new(grpc.clone()))
                .add_service(ApiKeyServiceServer::new(grpc.clone()))
                .add_service(TokenServiceServer::new(grpc));
        }

        // Scheduling releases destinations' access keys through it when both run here.
        let mut credentials_app = None;
        if let Some(db) = credentials_db {
            let kms = kms.clone().ok_or_else(|| {
                BootError::Missing("the credentials target needs [kms] configured".to_owned())
            })?;
            let app = Credentials::new(db.clone(), kms).with_ticket_keys(authenticator.clone());
            credentials_app = Some(app.clone());
            background.extend(pipeline(
                &config,
                &js,
                db,
                coffer_credentials::SERVICE,
                coffer_credentials::consumers::org_keys_config(&config.nats.bus),
                coffer_credentials::consumers::org_keys_handler(app.clone()),
            ));
            health
                .set_serving::<CredentialServiceServer<CredentialsGrpc>>()
                .await;
            health
                .set_serving::<OrgKeyServiceServer<CredentialsGrpc>>()
                .await;
            health
                .set_serving::<ReleaseServiceServer<CredentialsGrpc>>()
                .await;
            health
                .set_serving::<MasterKeyServiceServer<CredentialsGrpc>>()
                .await;
            // Resumes a rotation a previous process left running, and runs the ones started
            // through the API.
            let rotation = coffer_credentials::rotation::worker(
                app.clone(),
                config.credentials.rotation,
                std::time::Duration::from_secs(5),
            );
            background.push(Box::new(move |rx| {
                Box::pin(async move {
                    tokio::select! {
                        () = rotation => {}
                        () = stopped(rx) => {}
                    }
                })
            }));
            let grpc = CredentialsGrpc::new(app);
            router = router
                .add_service(CredentialServiceServer::new(grpc.clone()))
                .add_service(OrgKeyServiceServer::new(grpc.clone()))
                .add_service(MasterKeyServiceServer::new(grpc.clone()))
                .add_service(ReleaseServiceServer::new(grpc));
        }

        if let Some(db) = audit_db {
            let kms = kms.clone().ok_or_else(|| {
                BootError::Missing("the audit target needs [kms] configured".to_owned())
            })?;
            let checkpointer =
                coffer_audit::Checkpointer::new(db.clone(), kms, config.audit.clone());
            // The audit service publishes no events of its own (its log is its record), so it
            // runs the consumer without an outbox relay.
            let consumer = Consumer::new(
                db.clone(),
                js.clone(),
                config.nats.bus.clone(),
                coffer_audit::consumers::audit_log_config(&config.nats.bus),
                coffer_audit::consumers::audit_log_handler(),
            );
            background.push(Box::new(move |rx| {
                Box::pin(async move {
                    if let Err(e) = consumer.run(stopped(rx)).await {
                        tracing::error!(error = %e, consumer = coffer_audit::consumers::AUDIT_LOG, "consumer stopped");
                    }
                })
            }));
            let signing = checkpointer.clone();
            background.push(Box::new(move |rx| {
                Box::pin(async move {
                    tokio::select! {
                        () = signing.run() => {}
                        () = stopped(rx) => {}
                    }
                })
            }));
            health.set_serving::<AuditServiceServer<AuditGrpc>>().await;
            router = router.add_service(AuditServiceServer::new(AuditGrpc::new(
                coffer_audit::Audit::new(db, checkpointer),
            )));
        }

        if let Some(db) = scheduling_db {
            let kms = kms.clone().ok_or_else(|| {
                BootError::Missing("the scheduling target needs [kms] configured".to_owned())
            })?;
            let tickets = coffer_scheduling::tickets::Tickets::load(
                &db,
                kms.as_ref(),
                config.scheduler.ticket_lifetime,
            )
            .await
            .map_err(|e| BootError::Auth(e.to_string()))?;
            tickets
                .publish(&publisher)
                .await
                .map_err(|e| BootError::Auth(e.to_string()))?;
            let wakeups = coffer_scheduling::wakeups::Wakeups::start(js.client(), &config.nats.bus)
                .await
                .map_err(|reason| BootError::Nats {
                    url: config.nats.url.clone(),
                    reason,
                })?;
            let policy = config
                .scheduling
                .policy()
                .map_err(|e| BootError::Missing(e.to_string()))?;
            let keys = credentials_app.map(|credentials| {
                Arc::new(crate::storage_keys::InProcessKeys::new(credentials))
                    as Arc<dyn coffer_scheduling::app::StorageKeys>
            });
            let storage = coffer_scheduling::app::StorageAccess::new(
                coffer_storage::Guard::new(policy),
                keys,
            );
            let app = coffer_scheduling::Scheduling::new(db.clone())
                .with_storage(storage)
                .with_jobs(coffer_scheduling::JobRuntime {
                    settings: config.scheduler.clone(),
                    wakeups,
                    tickets,
                });
            background.extend(pipeline(
                &config,
                &js,
                db,
                coffer_scheduling::SERVICE,
                coffer_scheduling::consumers::agents_config(&config.nats.bus),
                coffer_scheduling::consumers::agents_handler(),
            ));
            let scheduler = app.clone();
            background.push(Box::new(move |rx| {
                Box::pin(async move {
                    tokio::select! {
                        () = scheduler.run_scheduler() => {}
                        () = stopped(rx) => {}
                    }
                })
            }));
            health
                .set_serving::<DatabaseServiceServer<SchedulingGrpc>>()
                .await;
            health
                .set_serving::<DestinationServiceServer<SchedulingGrpc>>()
                .await;
            health
                .set_serving::<ScheduleServiceServer<SchedulingGrpc>>()
                .await;
            health
                .set_serving::<JobServiceServer<SchedulingGrpc>>()
                .await;
            health
                .set_serving::<AgentJobServiceServer<SchedulingGrpc>>()
                .await;
            let grpc = SchedulingGrpc::new(app);
            router = router
                .add_service(DatabaseServiceServer::new(grpc.clone()))
                .add_service(DestinationServiceServer::new(grpc.clone()))
                .add_service(ScheduleServiceServer::new(grpc.clone()))
                .add_service(JobServiceServer::new(grpc.clone()))
                .add_service(AgentJobServiceServer::new(grpc));
        }

        if let Some(db) = diag_db {
            let app = Diagnostics::new(db.clone());
            background.extend(pipeline(
                &config,
                &js,
                db,
                diag::SERVICE,
                Diagnostics::consumer_config(&config.nats.bus),
                app.handler(),
            ));
            health
                .set_serving::<DiagnosticsServiceServer<DiagnosticsGrpc>>()
                .await;
            router = router.add_service(DiagnosticsServiceServer::new(DiagnosticsGrpc::new(app)));
        }

        let listener = tokio::net::TcpListener::bind(config.grpc.listen)
            .await
            .map_err(|cause| BootError::Listen {
                addr: config.grpc.listen,
                cause,
            })?;
        let addr = listener.local_addr().map_err(|cause| BootError::Listen {
            addr: config.grpc.listen,
            cause,
        })?;
        Ok(Self {
            listener,
            addr,
            router,
            background,
            tls,
        })
    }

    /// The address the gRPC server listens on (the real port when configured with 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves, then stops the background tasks and drains.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        for task in self.background {
            tasks.spawn(task(stop_rx.clone()));
        }
        tracing::info!(addr = %self.addr, "coffer serving");
        let stop = Arc::new(stop_tx);
        let stop_on_signal = stop.clone();
        let shutdown = async move {
            shutdown.await;
            let _ = stop_on_signal.send(true);
        };
        let served = match self.tls {
            Some(acceptor) => {
                self.router
                    .serve_with_incoming_shutdown(tls::incoming(self.listener, acceptor), shutdown)
                    .await
            }
            None => {
                // Small gRPC responses must not wait for the client's delayed ACK.
                let incoming = tonic::transport::server::TcpIncoming::from(self.listener)
                    .with_nodelay(Some(true));
                self.router
                    .serve_with_incoming_shutdown(incoming, shutdown)
                    .await
            }
        };
        let _ = stop.send(true);
        while tasks.join_next().await.is_some() {}
        tracing::info!("coffer stopped");
        served.map_err(Into::into)
    }
}

/// A service's outbox relay and one consumer, as background tasks.
fn pipeline(
    config: &Config,
    js: &async_nats::jetstream::Context,
    db: Database,
    service: coffer_db::ServiceName,
    consumer: coffer_eventstore::ConsumerConfig,
    handler: Arc<dyn coffer_eventstore::Handler>,
) -> [Background; 2] {
    let relay = Relay::new(
        config.database.clone(),
        service,
        js.clone(),
        config.nats.bus.clone(),
        config.relay.clone(),
    );
    let name = consumer.name.clone();
    let consumer = Consumer::new(db, js.clone(), config.nats.bus.clone(), consumer, handler);
    [
        Box::new(move |rx| Box::pin(relay.run(stopped(rx)))),
        Box::new(move |rx| {
            Box::pin(async move {
                if let Err(e) = consumer.run(stopped(rx)).await {
                    tracing::error!(error = %e, consumer = %name, "consumer stopped");
                }
            })
        }),
    ]
}

async fn check_migrations(
    db: &Database,
    config: &Config,
    schemas: &[coffer_db::Schema],
) -> Result<(), BootError> {
    let missing = coffer_db::missing_migrations(db.pool(), schemas).await?;
    if missing.is_empty() {
        return Ok(());
    }
    Err(BootError::MissingMigrations {
        target: config.database.target(),
        missing: missing
            .iter()
            .map(|(schema, m)| format!("{schema} {m}"))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

//! The `coffer` binary's configuration: one typed struct, layered defaults → TOML file →
//! `COFFER_*` environment → command-line flags, then [`Config::validate`].

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use coffer_db::DbConfig;
use coffer_eventstore::{BusConfig, RelayConfig};
use coffer_kms::KmsConfig;
use coffer_telemetry::TelemetryConfig;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything `coffer serve`, `coffer migrate` and `coffer admin` need.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// PostgreSQL: the URL's user is the owner role (migrations, admin); services log in
    /// with their own roles.
    pub database: DbConfig,
    /// NATS JetStream.
    pub nats: NatsConfig,
    /// The gRPC listener.
    #[serde(default)]
    pub grpc: GrpcConfig,
    /// The KMS master key. Optional until a service needs it; when set, `serve` opens it at
    /// boot so a bad key file or unreachable KMS fails the start, not the first request.
    #[serde(default)]
    pub kms: Option<KmsConfig>,
    /// Logs and traces.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// The outbox relay.
    #[serde(default)]
    pub relay: RelayConfig,
    /// Access tokens and their revocation.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Agent certificates.
    #[serde(default)]
    pub pki: PkiConfig,
    /// The credentials service.
    #[serde(default)]
    pub credentials: CredentialsConfig,
    /// `[audit]`: the audit service (checkpoint origin and cadence).
    #[serde(default)]
    pub audit: coffer_audit::Settings,
    /// `[scheduler]`: the scheduler's tick and grace, job leases, retries, polls and tickets.
    #[serde(default)]
    pub scheduler: coffer_scheduling::Settings,
    /// `[scheduling]`: what storage destinations may reach.
    #[serde(default)]
    pub scheduling: SchedulingConfig,
}

/// `[scheduling]`: the scheduling service's storage destinations.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulingConfig {
    /// Address classes S3 endpoints may reach besides public addresses: any of `loopback`,
    /// `private`, `link_local`, `metadata`. Default none. Unspecified, multicast, broadcast,
    /// reserved and documentation addresses are never allowed.
    #[serde(default)]
    pub ssrf_allow: Vec<String>,
    /// Absolute, normalised directories local destinations must lie under. Empty (the default)
    /// refuses local destinations.
    #[serde(default)]
    pub local_roots: Vec<std::path::PathBuf>,
}

impl SchedulingConfig {
    /// The SSRF guard's policy, or the rule a value breaks.
    pub fn policy(&self) -> Result<coffer_storage::Policy, Error> {
        let mut allow = Vec::new();
        for class in &self.ssrf_allow {
            allow.push(coffer_storage::AddressClass::parse(class).ok_or_else(|| {
                Error::Invalid {
                    field: "scheduling.ssrf_allow",
                    rule: format!(
                        "must hold only loopback, private, link_local or metadata, not {class:?}"
                    ),
                }
            })?);
        }
        coffer_storage::Policy::new(allow, self.local_roots.clone()).map_err(|rule| {
            Error::Invalid {
                field: "scheduling.local_roots",
                rule: format!("entry {rule}"),
            }
        })
    }
}

/// `[credentials]`: the credentials service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// `[credentials.rotation]`: how the master-key rotation worker paces itself
    /// (`batch_size`, default 100; `batch_pause`, default none).
    #[serde(default)]
    pub rotation: coffer_credentials::rotation::RotationSettings,
}

/// `[pki]`: the agent CA hierarchy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PkiConfig {
    /// SPIFFE trust domain: agents are `spiffe://<trust_domain>/org/<org>/agent/<agent>`.
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Lifetime of agent certificates.
    #[serde(default = "default_agent_ttl", with = "humantime_serde")]
    pub agent_ttl: Duration,
    /// How long a CRL is valid (`nextUpdate`).
    #[serde(default = "default_crl_validity", with = "humantime_serde")]
    pub crl_validity: Duration,
}

fn default_trust_domain() -> String {
    "coffer.local".to_owned()
}

fn default_agent_ttl() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

fn default_crl_validity() -> Duration {
    Duration::from_secs(24 * 60 * 60)
}

impl Default for PkiConfig {
    fn default() -> Self {
        Self {
            trust_domain: default_trust_domain(),
            agent_ttl: default_agent_ttl(),
            crl_validity: default_crl_validity(),
        }
    }
}

impl PkiConfig {
    /// The enrollment service's settings, or the rule a value breaks.
    pub fn settings(&self) -> Result<coffer_enrollment::pki::PkiSettings, Error> {
        let trust_domain =
            coffer_pki::TrustDomain::new(self.trust_domain.clone()).map_err(|e| {
                Error::Invalid {
                    field: "pki.trust_domain",
                    rule: e.to_string(),
                }
            })?;
        if self.agent_ttl < coffer_pki::MIN_AGENT_TTL || self.agent_ttl > coffer_pki::MAX_AGENT_TTL
        {
            return Err(Error::Invalid {
                field: "pki.agent_ttl",
                rule: "must be between 5m and 30days".into(),
            });
        }
        if self.crl_validity < Duration::from_secs(60) {
            return Err(Error::Invalid {
                field: "pki.crl_validity",
                rule: "must be at least 1m".into(),
            });
        }
        let mut settings = coffer_enrollment::pki::PkiSettings::new(trust_domain);
        settings.agent_ttl = self.agent_ttl;
        settings.crl_validity = self.crl_validity;
        Ok(settings)
    }
}

/// `[auth]`: how access tokens are issued and checked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The `iss` of access tokens: this deployment's name or URL.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// The `aud` of access tokens.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// How long an access token lives.
    #[serde(default = "default_token_lifetime", with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// JetStream KV bucket of revoked keys, suspended users and revoked certificates.
    #[serde(default = "default_revocation_bucket")]
    pub revocation_bucket: String,
    /// JetStream KV bucket where enrollment publishes the access-token key set.
    #[serde(default = "default_keys_bucket")]
    pub keys_bucket: String,
    /// How long a service without the enrollment target waits at boot for the key set.
    #[serde(default = "default_keys_wait", with = "humantime_serde")]
    pub keys_wait: Duration,
    /// OpenID Connect providers users sign in with (`[[auth.oidc]]`), each for one org, with
    /// its group → role mapping.
    #[serde(default)]
    pub oidc: Vec<coffer_auth::oidc::Config>,
}

fn default_issuer() -> String {
    "coffer".to_owned()
}

fn default_audience() -> String {
    "coffer".to_owned()
}

fn default_token_lifetime() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_revocation_bucket() -> String {
    "COFFER_REVOCATIONS".to_owned()
}

fn default_keys_bucket() -> String {
    "COFFER_KEYS".to_owned()
}

fn default_keys_wait() -> Duration {
    Duration::from_secs(30)
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: default_issuer(),
            audience: default_audience(),
            token_lifetime: default_token_lifetime(),
            revocation_bucket: default_revocation_bucket(),
            keys_bucket: default_keys_bucket(),
            keys_wait: default_keys_wait(),
            oidc: Vec::new(),
        }
    }
}

/// `[nats]`. (No `deny_unknown_fields` here: serde cannot combine it with `flatten`.)
#[derive(Debug, Clone, Deserialize)]
pub struct NatsConfig {
    /// `nats://host:port`.
    pub url: String,
    /// How long to wait for the first connection at boot.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Stream and subject names.
    #[serde(flatten)]
    pub bus: BusConfig,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[grpc]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcConfig {
    /// Address to listen on; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// TLS; plaintext when absent (development only: agents authenticate with client
    /// certificates, so they need TLS).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7443)),
            tls: None,
        }
    }
}

/// `[grpc.tls]`: the server certificate.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: std::path::PathBuf,
    /// PEM private key (PKCS#8, SEC1 or PKCS#1).
    pub key_file: std::path::PathBuf,
    /// Generate a self-signed certificate for localhost into the two files when they do not
    /// exist (development only).
    #[serde(default)]
    pub generate_dev_certificate: bool,
}

/// A config value failed a rule.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing or malformed value while merging the layers.
    #[error("configuration: {0}")]
    Load(Box<figment::Error>),
    /// A value broke a rule.
    #[error("configuration: {field} {rule}")]
    Invalid {
        /// The dotted field name.
        field: &'static str,
        /// What is wrong.
        rule: String,
    },
}

/// Values given as command-line flags; they override every other layer.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    /// `--listen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

impl Config {
    /// Loads defaults, then `file` (if given), then `COFFER_SECTION__KEY` variables, then
    /// `flags`, and validates the result.
    pub fn load(file: Option<&Path>, flags: &Overrides) -> Result<Self, Error> {
        let mut figment = Figment::new().merge(Serialized::defaults(Defaults::default()));
        if let Some(path) = file {
            figment = figment.merge(Toml::file_exact(path));
        }
        // Only `COFFER_SECTION__KEY` names configure the server: other COFFER_* variables
        // (COFFER_CONFIG, the test stack's) are not config keys.
        figment = figment.merge(
            Env::prefixed("COFFER_")
                .filter(|k| k.as_str().contains("__"))
                .split("__")
                .lowercase(true),
        );
        if let Some(listen) = flags.listen {
            figment = figment.merge(Serialized::default("grpc.listen", listen));
        }
        let config: Config = figment.extract().map_err(|e| Error::Load(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the rules serde cannot express.
    pub fn validate(&self) -> Result<(), Error> {
        let url = url_scheme(&self.database.url);
        if !matches!(url.as_deref(), Some("postgres" | "postgresql")) {
            return Err(Error::Invalid {
                field: "database.url",
                rule: "must be a postgres:// URL".into(),
            });
        }
        if self.database.max_connections == 0 {
            return Err(Error::Invalid {
                field: "database.max_connections",
                rule: "must be at least 1".into(),
            });
        }
        if !matches!(url_scheme(&self.nats.url).as_deref(), Some("nats" | "tls")) {
            return Err(Error::Invalid {
                field: "nats.url",
                rule: "must be a nats:// or tls:// URL".into(),
            });
        }
        self.nats.bus.validate().map_err(|rule| Error::Invalid {
            field: "nats",
            rule,
        })?;
        self.audit.validate().map_err(|rule| Error::Invalid {
            field: "audit",
            rule,
        })?;
        self.scheduler.validate().map_err(|rule| Error::Invalid {
            field: "scheduler",
            rule,
        })?;
        if self.relay.batch_size < 1 || self.relay.batch_size > 10_000 {
            return Err(Error::Invalid {
                field: "relay.batch_size",
                rule: "must be between 1 and 10000".into(),
            });
        }
        if self.auth.token_lifetime < Duration::from_secs(30)
            || self.auth.token_lifetime > Duration::from_secs(3600)
        {
            return Err(Error::Invalid {
                field: "auth.token_lifetime",
                rule: "must be between 30s and 1h".into(),
            });
        }
        for (field, bucket) in [
            ("auth.revocation_bucket", &self.auth.revocation_bucket),
            ("auth.keys_bucket", &self.auth.keys_bucket),
        ] {
            let ok = !bucket.is_empty()
                && bucket
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(Error::Invalid {
                    field,
                    rule: "must be letters, digits, '_' or '-'".into(),
                });
            }
        }
        if self.auth.issuer.is_empty() || self.auth.audience.is_empty() {
            return Err(Error::Invalid {
                field: "auth.issuer",
                rule: "and auth.audience must not be empty".into(),
            });
        }
        self.pki.settings()?;
        self.scheduling.policy()?;
        for provider in &self.auth.oidc {
            provider.validate().map_err(|e| Error::Invalid {
                field: "auth.oidc",
                rule: e.to_string(),
            })?;
        }
        if let Some(kms) = &self.kms {
            kms.validate().map_err(|e| Error::Invalid {
                field: "kms",
                rule: e.to_string(),
            })?;
        }
        Ok(())
    }
}

fn url_scheme(url: &str) -> Option<String> {
    url.split_once("://").map(|(s, _)| s.to_ascii_lowercase())
}

/// The defaults layer: a local development setup.
#[derive(Serialize)]
struct Defaults {
    database: DefaultDb,
    nats: DefaultNats,
    grpc: GrpcConfig,
}

#[derive(Serialize)]
struct DefaultDb {
    url: &'static str,
}

#[derive(Serialize)]
struct DefaultNats {
    url: &'static str,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            database: DefaultDb {
                url: "postgres://coffer_owner@127.0.0.1:5432/coffer",
            },
            nats: DefaultNats {
                url: "nats://127.0.0.1:4222",
            },
            grpc: GrpcConfig::default(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return figment::Error by design
mod tests {
    use super::*;

    #[test]
    fn layers_apply_in_order_file_then_env_then_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "coffer.toml",
                r#"
                [database]
                url = "postgres://owner@db.file:5432/coffer"
                max_connections = 7
                [nats]
                url = "nats://nats.file:4222"
                [grpc]
                listen = "127.0.0.1:9000"
                "#,
            )?;
            jail.set_env("COFFER_NATS__URL", "nats://nats.env:4222");
            jail.set_env("COFFER_GRPC__LISTEN", "127.0.0.1:9001");
            jail.set_env("COFFER_STACK_DIR", "/not/a/config/key");
            let flags = Overrides {
                listen: Some("127.0.0.1:9002".parse().unwrap()),
            };
            let c = Config::load(Some(Path::new("coffer.toml")), &flags).unwrap();
            assert_eq!(c.database.url, "postgres://owner@db.file:5432/coffer");
            assert_eq!(c.database.max_connections, 7);
            assert_eq!(c.nats.url, "nats://nats.env:4222");
            assert_eq!(c.grpc.listen.port(), 9002);
            assert_eq!(c.nats.bus.stream, "COFFER_EVENTS");
            Ok(())
        });
    }

    #[test]
    fn a_bad_value_names_the_field_and_the_rule() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("COFFER_DATABASE__URL", "mysql://x/y");
            let err = Config::load(None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert_eq!(err, "configuration: database.url must be a postgres:// URL");

            jail.set_env("COFFER_DATABASE__URL", "postgres://o@h/db");
            jail.set_env("COFFER_NATS__DUPLICATE_WINDOW", "30s");
            let err = Config::load(None, &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("duplicate_window must be at least 2m"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn the_scheduling_section_names_address_classes_and_absolute_local_roots() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[scheduling]\nssrf_allow = [\"loopback\", \"private\"]\nlocal_roots = [\"/srv/backups\"]\n",
            )?;
            let c = Config::load(Some(Path::new("c.toml")), &Overrides::default()).unwrap();
            let policy = c.scheduling.policy().unwrap();
            assert_eq!(policy.allow.len(), 2);
            assert_eq!(
                policy.local_roots,
                [std::path::PathBuf::from("/srv/backups")]
            );
            assert!(
                Config::load(None, &Overrides::default())
                    .unwrap()
                    .scheduling
                    .policy()
                    .unwrap()
                    .allow
                    .is_empty()
            );

            jail.create_file("bad.toml", "[scheduling]\nssrf_allow = [\"everything\"]\n")?;
            let err = Config::load(Some(Path::new("bad.toml")), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with("configuration: scheduling.ssrf_allow must hold only"),
                "{err}"
            );
            jail.create_file("rel.toml", "[scheduling]\nlocal_roots = [\"backups\"]\n")?;
            let err = Config::load(Some(Path::new("rel.toml")), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert_eq!(
                err,
                "configuration: scheduling.local_roots entry backups must be an absolute path"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[grpc]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n")?;
            let err = Config::load(Some(Path::new("c.toml")), &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains("lisen"), "{err}");
            Ok(())
        });
    }
}

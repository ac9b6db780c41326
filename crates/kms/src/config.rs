//! Provider selection and settings.

use std::path::PathBuf;
use std::time::Duration;

use crate::{Error, KeyId};

/// Which KMS provider to use, and its settings.
///
/// In TOML:
///
/// ```toml
/// [kms]
/// provider = "local"
/// key_dir = "/var/lib/coffer/kms"
/// key_id = "master-2025"
/// ```
///
/// ```toml
/// [kms]
/// provider = "aws"
/// key_id = "alias/coffer-master"
/// region = "eu-west-1"
/// max_attempts = 5
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum KmsConfig {
    /// Key files on local disk; the development default.
    Local(LocalConfig),
    /// AWS KMS (or an API-compatible emulator through `endpoint`).
    Aws(AwsConfig),
}

impl KmsConfig {
    /// Checks the settings without touching the disk or the network.
    pub fn validate(&self) -> Result<(), Error> {
        match self {
            KmsConfig::Local(local) => crate::local::validate_key_id(&local.key_id),
            KmsConfig::Aws(aws) => aws.validate(),
        }
    }
}

/// Settings of the local provider ([`LocalKms`](crate::LocalKms)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    /// Directory holding `<key_id>.key` files (32 bytes, mode 0600, directory 0700).
    pub key_dir: PathBuf,
    /// The current master key: new values are wrapped under it. Older keys in `key_dir` still
    /// decrypt what they wrapped.
    pub key_id: KeyId,
}

/// Settings of the AWS provider ([`AwsKms`](crate::AwsKms)).
///
/// Credentials come from the AWS default chain (environment `AWS_ACCESS_KEY_ID` /
/// `AWS_SECRET_ACCESS_KEY`, profile, web identity, IMDS), never from this struct.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// The current master key: key id, ARN or `alias/<name>`. Resolved to the key ARN at boot.
    pub key_id: KeyId,
    /// AWS region; when absent, the default chain (`AWS_REGION`, profile) decides.
    #[serde(default)]
    pub region: Option<String>,
    /// Endpoint override, e.g. `http://127.0.0.1:5599` for a KMS API emulator in tests.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Attempts per call, the first included (SDK standard retry mode: exponential backoff
    /// with jitter; it also retries throttling). Default 5.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// How long to wait for a TCP/TLS connection. Default 3 s.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long one attempt may take before it is abandoned (and retried). Default 10 s.
    #[serde(default = "default_attempt_timeout", with = "humantime_serde")]
    pub attempt_timeout: Duration,
}

impl AwsConfig {
    /// Settings for `key_id` with every other field at its default.
    pub fn new(key_id: impl Into<KeyId>) -> Self {
        Self {
            key_id: key_id.into(),
            region: None,
            endpoint: None,
            max_attempts: default_max_attempts(),
            connect_timeout: default_connect_timeout(),
            attempt_timeout: default_attempt_timeout(),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self.key_id.as_str().is_empty() {
            return Err(Error::Config("kms.key_id is empty".to_owned()));
        }
        if self.max_attempts == 0 {
            return Err(Error::Config(
                "kms.max_attempts is 0; it must be at least 1 (1 = no retries)".to_owned(),
            ));
        }
        if self.connect_timeout.is_zero() || self.attempt_timeout.is_zero() {
            return Err(Error::Config(
                "kms.connect_timeout and kms.attempt_timeout must be greater than zero".to_owned(),
            ));
        }
        if let Some(endpoint) = &self.endpoint
            && !(endpoint.starts_with("https://") || endpoint.starts_with("http://"))
        {
            return Err(Error::Config(format!(
                "kms.endpoint {endpoint:?} is not an http(s) URL"
            )));
        }
        Ok(())
    }
}

fn default_max_attempts() -> u32 {
    5
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(3)
}

fn default_attempt_timeout() -> Duration {
    Duration::from_secs(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_config_parses_from_toml() {
        let config: KmsConfig = toml::from_str(
            r#"
            provider = "local"
            key_dir = "/var/lib/coffer/kms"
            key_id = "master-1"
            "#,
        )
        .unwrap();
        assert_eq!(
            config,
            KmsConfig::Local(LocalConfig {
                key_dir: "/var/lib/coffer/kms".into(),
                key_id: KeyId::new("master-1"),
            })
        );
        config.validate().unwrap();
    }

    #[test]
    fn aws_config_parses_with_defaults() {
        let config: KmsConfig = toml::from_str(
            r#"
            provider = "aws"
            key_id = "alias/coffer"
            region = "eu-west-1"
            "#,
        )
        .unwrap();
        let KmsConfig::Aws(aws) = &config else {
            panic!("expected aws, got {config:?}");
        };
        assert_eq!(aws.max_attempts, 5);
        assert_eq!(aws.endpoint, None);
        assert_eq!(aws.connect_timeout, Duration::from_secs(3));
        config.validate().unwrap();
    }

    #[test]
    fn aws_config_reads_humantime_durations() {
        let config: KmsConfig = toml::from_str(
            r#"
            provider = "aws"
            key_id = "k"
            endpoint = "http://127.0.0.1:5599"
            max_attempts = 2
            connect_timeout = "250ms"
            attempt_timeout = "2s"
            "#,
        )
        .unwrap();
        let KmsConfig::Aws(aws) = config else {
            panic!("expected aws");
        };
        assert_eq!(aws.connect_timeout, Duration::from_millis(250));
        assert_eq!(aws.attempt_timeout, Duration::from_secs(2));
    }

    #[test]
    fn unknown_fields_and_providers_are_rejected() {
        let typo = toml::from_str::<KmsConfig>(
            r#"
            provider = "local"
            key_dir = "/k"
            keyid = "master-1"
            "#,
        );
        assert!(typo.is_err(), "{typo:?}");
        let provider = toml::from_str::<KmsConfig>(r#"provider = "vault""#);
        assert!(provider.is_err(), "{provider:?}");
    }

    #[test]
    fn validate_rejects_bad_settings() {
        let mut aws = AwsConfig::new("k");
        aws.max_attempts = 0;
        assert!(matches!(
            KmsConfig::Aws(aws).validate(),
            Err(Error::Config(_))
        ));
        let mut aws = AwsConfig::new("k");
        aws.endpoint = Some("127.0.0.1:5599".to_owned());
        assert!(matches!(
            KmsConfig::Aws(aws).validate(),
            Err(Error::Config(_))
        ));
        let local = KmsConfig::Local(LocalConfig {
            key_dir: "/k".into(),
            key_id: KeyId::new("../etc/passwd"),
        });
        assert!(matches!(local.validate(), Err(Error::Config(_))));
    }
}

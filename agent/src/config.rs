//! The agent's configuration: one typed struct, layered defaults → TOML file →
//! `COFFER_AGENT_*` environment (`__` between section and key) → command-line flags, then
//! [`Config::validate`].
//!
//! The server's address is not configured here: it is recorded in the identity directory at
//! enrollment, with the certificates it issued.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything `coffer-agent run` needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The private key, certificates and identity record (created 0700 at enrollment).
    pub identity_dir: PathBuf,
    /// Where the liveness (`live`, touched while the agent runs) and readiness (`ready`,
    /// present while it can take jobs) files are written.
    pub status_dir: PathBuf,
    /// Permit an `http://` server (development only: nothing is encrypted in transit, and an
    /// agent cannot authenticate without TLS).
    pub allow_insecure: bool,
    /// The unprivileged account to switch to when started as root (the agent refuses to run
    /// as root).
    pub user: Option<String>,
    /// `[jobs]`: how jobs are taken.
    pub jobs: JobsConfig,
    /// `[backup]`: the dump programs and compression.
    pub backup: BackupConfig,
    /// `[restore]`: the restore programs and the caps on what a backup may expand to.
    pub restore: RestoreConfig,
    /// `[storage]`: what the agent may write to.
    pub storage: StorageConfig,
    /// How often the org's CRL is fetched (the agent halts once it finds itself on it).
    #[serde(with = "humantime_serde")]
    pub crl_interval: Duration,
}

/// `[jobs]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsConfig {
    /// Jobs run at once.
    pub concurrency: usize,
    /// How long one `PollJobs` waits for a job (the server caps it).
    #[serde(with = "humantime_serde")]
    pub poll_wait: Duration,
    /// How often a running job reports progress and extends its lease.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
}

/// `[backup]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// zstd level, 1..=19.
    pub zstd_level: i32,
    /// zstd worker threads; 0: one per core, at most 4.
    pub zstd_threads: u32,
    /// The `pg_dump` program.
    pub pg_dump: PathBuf,
    /// The `mariadb-dump` program.
    pub mariadb_dump: PathBuf,
}

/// `[restore]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreConfig {
    /// The `pg_restore` program.
    pub pg_restore: PathBuf,
    /// The `mariadb` client.
    pub mariadb: PathBuf,
    /// The largest zstd window a backup may ask for, as a power of two (a larger one is
    /// refused rather than allocated).
    pub max_window_log: u32,
    /// The most bytes a backup may decompress to (a zstd bomb is refused, not obeyed).
    pub max_output_bytes: u64,
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Directories local (file-system) destinations may lie under; empty refuses them.
    pub local_roots: Vec<PathBuf>,
    /// Address classes S3 endpoints may resolve to besides public addresses: any of
    /// `loopback`, `private`, `link_local`, `metadata`. Default loopback and private (a
    /// bucket on the customer's own network); link-local and cloud metadata addresses only
    /// when listed.
    pub ssrf_allow: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            identity_dir: PathBuf::from("/var/lib/coffer-agent"),
            status_dir: PathBuf::from("/run/coffer-agent"),
            allow_insecure: false,
            user: None,
            jobs: JobsConfig {
                concurrency: 2,
                poll_wait: Duration::from_secs(25),
                heartbeat: Duration::from_secs(3),
            },
            backup: BackupConfig {
                zstd_level: 3,
                zstd_threads: 0,
                pg_dump: PathBuf::from("pg_dump"),
                mariadb_dump: PathBuf::from("mariadb-dump"),
            },
            restore: RestoreConfig {
                pg_restore: PathBuf::from("pg_restore"),
                mariadb: PathBuf::from("mariadb"),
                max_window_log: crate::pipeline::DEFAULT_MAX_WINDOW_LOG,
                max_output_bytes: 1 << 40,
            },
            storage: StorageConfig {
                local_roots: Vec::new(),
                ssrf_allow: vec!["loopback".into(), "private".into()],
            },
            crl_interval: Duration::from_secs(60),
        }
    }
}

/// A setting that breaks its rule.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The layers do not parse into a configuration.
    #[error("configuration: {0}")]
    Parse(Box<figment::Error>),
    /// A value breaks its rule; the message names the setting.
    #[error("configuration: {field} {rule}")]
    Invalid {
        /// The setting, e.g. `backup.zstd_level`.
        field: &'static str,
        /// What is wrong.
        rule: String,
    },
}

impl Config {
    /// Defaults, then `file` if given, then `COFFER_AGENT_*` variables, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: impl Serialize) -> Result<Self, Error> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: Config = figment
            // These three are read by the binary itself, not settings.
            .merge(
                Env::prefixed("COFFER_AGENT_")
                    .ignore(&["log", "token", "config"])
                    .split("__"),
            )
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| Error::Parse(Box::new(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every rule the types cannot carry.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |field, rule: &str| {
            Err(Error::Invalid {
                field,
                rule: rule.to_owned(),
            })
        };
        if !(1..=19).contains(&self.backup.zstd_level) {
            return invalid("backup.zstd_level", "must be 1..=19");
        }
        if self.backup.zstd_threads > 64 {
            return invalid("backup.zstd_threads", "must be 0..=64");
        }
        if !(10..=31).contains(&self.restore.max_window_log) {
            return invalid("restore.max_window_log", "must be 10..=31");
        }
        if self.restore.max_output_bytes == 0 {
            return invalid("restore.max_output_bytes", "must be greater than 0");
        }
        if !(1..=64).contains(&self.jobs.concurrency) {
            return invalid("jobs.concurrency", "must be 1..=64");
        }
        if self.jobs.heartbeat < Duration::from_millis(100) {
            return invalid("jobs.heartbeat", "must be at least 100ms");
        }
        if self.crl_interval < Duration::from_secs(1) {
            return invalid("crl_interval", "must be at least 1s");
        }
        for root in &self.storage.local_roots {
            if !root.is_absolute() {
                return invalid("storage.local_roots", "must hold absolute paths");
            }
        }
        Ok(())
    }

    /// zstd workers: the configured number, or one per core up to 4 (more buys little at
    /// level 3 and each costs memory).
    pub fn zstd_workers(&self) -> u32 {
        match self.backup.zstd_threads {
            0 => std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(1))
                .min(4),
            n => n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_the_setting() {
        Config::default().validate().unwrap();
        let mut config = Config::default();
        config.backup.zstd_level = 0;
        let err = config.validate().unwrap_err().to_string();
        assert_eq!(err, "configuration: backup.zstd_level must be 1..=19");
        let mut config = Config::default();
        config.storage.local_roots = vec![PathBuf::from("relative")];
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("storage.local_roots")
        );
    }
}

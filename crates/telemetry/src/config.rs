//! The telemetry section of every binary's configuration.

use serde::Deserialize;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line, with the current span and the full span list (so fields such as
    /// `org_id` recorded on an enclosing request span appear on every line). For production.
    Json,
    /// Compact human-readable lines, coloured when stderr is a terminal. For development.
    #[default]
    Pretty,
}

/// Telemetry settings: the `[telemetry]` section of a binary's config.
///
/// Every field has a default, so an empty section (or none) is valid:
///
/// ```toml
/// [telemetry]
/// format = "json"          # or "pretty" (the default)
/// filter = "info,coffer=debug"
/// service_name = "coffer-scheduling"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// Log line format.
    pub format: LogFormat,
    /// `EnvFilter` directives for what is logged (default `"info"`). `RUST_LOG`, when set and
    /// non-empty, overrides this; see [`TelemetryConfig::effective_filter`].
    pub filter: String,
    /// The OpenTelemetry resource's `service.name` (default `"coffer"`).
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::default(),
            filter: "info,opentelemetry=warn,opentelemetry_sdk=warn".to_owned(),
            service_name: "coffer".to_owned(),
        }
    }
}

impl TelemetryConfig {
    /// The filter [`init`](crate::init) uses: `RUST_LOG` if it is set and non-empty, otherwise
    /// [`filter`](Self::filter).
    pub fn effective_filter(&self) -> String {
        match std::env::var("RUST_LOG") {
            Ok(env) if !env.trim().is_empty() => env,
            _ => self.filter.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_section_takes_defaults() {
        let cfg: TelemetryConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, TelemetryConfig::default());
        assert_eq!(cfg.filter, "info,opentelemetry=warn,opentelemetry_sdk=warn");
        assert_eq!(cfg.format, LogFormat::Pretty);
    }

    #[test]
    fn formats_are_lowercase() {
        let cfg: TelemetryConfig =
            toml::from_str("format = \"json\"\nservice_name = \"coffer-audit\"").unwrap();
        assert_eq!(cfg.format, LogFormat::Json);
        assert_eq!(cfg.service_name, "coffer-audit");
        assert!(toml::from_str::<TelemetryConfig>("format = \"Json\"").is_err());
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(toml::from_str::<TelemetryConfig>("fromat = \"json\"").is_err());
    }
}

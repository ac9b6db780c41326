//! The Destination aggregate: where an org's backups are written. An S3-compatible bucket
//! (endpoint, region, bucket, prefix, path-style flag, the vault reference of its access key)
//! or a local directory. Commands carry the fields as the API received them; the aggregate
//! checks every one and records the checked, typed form. What needs I/O — the SSRF guard, the
//! deployment's local roots, the probe — is the application's, before the command is run.

use std::path::{Component, PathBuf};

use coffer_eventstore::Aggregate;
use coffer_types::{OrgId, VaultRef, clean_name};

use super::{FieldError, MAX_REASON_CHARS};

/// Longest destination name.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest endpoint URL.
pub const MAX_ENDPOINT_CHARS: usize = 2048;
/// Longest key prefix, in bytes (S3 keys are at most 1024; objects need room after it).
pub const MAX_PREFIX_BYTES: usize = 512;
/// Longest local path, in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// The kind-specific fields as a request gives them, before any check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KindFields {
    /// An S3-compatible bucket.
    S3 {
        /// `http(s)://host[:port]`.
        endpoint: String,
        /// The signing region.
        region: String,
        /// The bucket.
        bucket: String,
        /// Key prefix; a missing trailing `/` is added.
        prefix: String,
        /// Path-style addressing.
        path_style: bool,
        /// `vault:coffer/<org>/<credential>`, a `storage` credential of the same org.
        access_key_vault_ref: String,
    },
    /// A local directory.
    Local {
        /// Absolute, normalised.
        path: String,
    },
}

/// A destination's fields as a request gives them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationFields {
    /// Its name, unique among the org's live destinations.
    pub name: String,
    /// S3 or local.
    pub kind: KindFields,
}

/// A checked S3 destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Spec {
    /// `http(s)://host[:port]` (the URL's origin: no path, query or credentials).
    pub endpoint: url::Url,
    /// The signing region.
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// Empty, or ending with `/`.
    pub prefix: String,
    /// Path-style addressing.
    pub path_style: bool,
    /// The access key's credential, of the destination's org.
    pub access_key_vault_ref: VaultRef,
}

/// A checked destination kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An S3-compatible bucket.
    S3(S3Spec),
    /// A local directory.
    Local {
        /// Absolute, normalised.
        path: PathBuf,
    },
}

impl Kind {
    /// `s3` or `local`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::S3(_) => "s3",
            Kind::Local { .. } => "local",
        }
    }
}

/// A destination's checked fields, as events record them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationSpec {
    /// Its name.
    pub name: String,
    /// Where.
    pub kind: Kind,
}

impl DestinationSpec {
    /// Checks every field for a destination of `org`; the error names the first field that
    /// breaks a rule, in the order the API lists them.
    pub fn check(org: OrgId, fields: &DestinationFields) -> Result<Self, FieldError> {
        let name = clean_name("name", &fields.name, MAX_NAME_CHARS)?;
        let kind = match &fields.kind {
            KindFields::S3 {
                endpoint,
                region,
                bucket,
                prefix,
                path_style,
                access_key_vault_ref,
            } => Kind::S3(S3Spec {
                endpoint: check_endpoint(endpoint)?,
                region: check_region(region)?,
                bucket: check_bucket(bucket)?,
                prefix: check_prefix(prefix)?,
                path_style: *path_style,
                access_key_vault_ref: check_vault_ref(org, access_key_vault_ref)?,
            }),
            KindFields::Local { path } => Kind::Local {
                path: check_path(path)?,
            },
        };
        Ok(DestinationSpec { name, kind })
    }
}

/// Checks an endpoint: an `http://` or `https://` URL with a host and nothing after it but an
/// optional port (no credentials, path, query or fragment). Returns the URL's origin.
pub fn check_endpoint(raw: &str) -> Result<url::Url, FieldError> {
    let bad = |rule: &str| FieldError::new("endpoint", rule.to_owned());
    let text = raw.trim();
    if text.is_empty() {
        return Err(bad("must not be empty"));
    }
    if text.chars().count() > MAX_ENDPOINT_CHARS {
        return Err(bad(&format!(
            "must be at most {MAX_ENDPOINT_CHARS} characters"
        )));
    }
    let url =
        url::Url::parse(text).map_err(|_| bad("must be a URL like https://s3.example.com"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("must be an http:// or https:// URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not carry credentials (use access_key_vault_ref)"));
    }
    if url.host().is_none() {
        return Err(bad("must name a host"));
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a path, query or fragment"));
    }
    url::Url::parse(&url.origin().ascii_serialization())
        .map_err(|_| bad("must be a URL like https://s3.example.com"))
}

/// Checks a region: 1..=64 lowercase letters, digits and `-` (`us-east-1`, `auto`).
pub fn check_region(raw: &str) -> Result<String, FieldError> {
    let region = raw.trim();
    if region.is_empty() {
        return Err(FieldError::new("region", "must not be empty"));
    }
    let ok = region.len() <= 64
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !region.starts_with('-')
        && !region.ends_with('-');
    if !ok {
        return Err(FieldError::new(
            "region",
            "must be at most 64 lowercase letters, digits and - (e.g. us-east-1)",
        ));
    }
    Ok(region.to_owned())
}

/// Checks a bucket name by S3's rules: 3..=63 lowercase letters, digits, `.` and `-`, starting
/// and ending with a letter or digit, no `..`, not an IP address.
pub fn check_bucket(raw: &str) -> Result<String, FieldError> {
    let bucket = raw.trim();
    if bucket.is_empty() {
        return Err(FieldError::new("bucket", "must not be empty"));
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && edge(bucket.chars().next())
        && edge(bucket.chars().last())
        && !bucket.contains("..")
        && bucket.parse::<std::net::Ipv4Addr>().is_err();
    if !ok {
        return Err(FieldError::new(
            "bucket",
            "must be 3 to 63 lowercase letters, digits, . and -, starting and ending with a letter or digit",
        ));
    }
    Ok(bucket.to_owned())
}

/// Checks a key prefix: at most 512 bytes, no leading `/`, no empty, `.` or `..` segments, no
/// control characters or `\`. Returns it with a trailing `/` (empty stays empty).
pub fn check_prefix(raw: &str) -> Result<String, FieldError> {
    let bad = |rule: &str| FieldError::new("prefix", rule.to_owned());
    let prefix = raw.trim();
    if prefix.is_empty() {
        return Ok(String::new());
    }
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err(bad(&format!("must be at most {MAX_PREFIX_BYTES} bytes")));
    }
    if prefix.starts_with('/') {
        return Err(bad("must not start with /"));
    }
    if prefix.chars().any(|c| c.is_control() || c == '\\') {
        return Err(bad("must not contain control characters or \\"));
    }
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    if trimmed
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(bad("must not contain empty, . or .. segments"));
    }
    Ok(format!("{trimmed}/"))
}

/// Checks a local path: absolute, normalised (no `.`, `..`, empty components or trailing `/`).
/// Whether it lies under one of the deployment's roots is checked by the application.
pub fn check_path(raw: &str) -> Result<PathBuf, FieldError> {
    let bad = |rule: &str| FieldError::new("path", rule.to_owned());
    let text = raw.trim();
    if text.is_empty() {
        return Err(bad("must not be empty"));
    }
    if text.len() > MAX_PATH_BYTES {
        return Err(bad(&format!("must be at most {MAX_PATH_BYTES} bytes")));
    }
    if text.chars().any(char::is_control) {
        return Err(bad("must not contain control characters"));
    }
    if !text.starts_with('/') {
        return Err(bad("must be an absolute path"));
    }
    if text.split('/').any(|seg| seg == "..") {
        return Err(bad("must not contain .."));
    }
    let normal = text.len() == 1
        || (!text.ends_with('/') && !text.contains("//") && !text.split('/').any(|s| s == "."));
    if !normal {
        return Err(bad(
            "must be normalised (no . components, // or trailing /)",
        ));
    }
    let path = PathBuf::from(text);
    debug_assert!(
        path.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
    );
    Ok(path)
}

/// Checks an access-key reference: a well-formed vault reference of `org`.
fn check_vault_ref(org: OrgId, raw: &str) -> Result<VaultRef, FieldError> {
    let parsed: VaultRef = raw
        .trim()
        .parse()
        .map_err(|e: FieldError| FieldError::new("access_key_vault_ref", e.rule))?;
    if parsed.org != org {
        return Err(FieldError::new(
            "access_key_vault_ref",
            "must name a credential of the destination's own org",
        ));
    }
    Ok(parsed)
}

/// State of one destination.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Its current fields, once registered.
    pub spec: Option<DestinationSpec>,
    /// Whether it was removed.
    pub removed: bool,
    /// 1 on registration, plus one per change.
    pub version: u32,
}

/// Commands.
#[derive(Debug, Clone)]
pub enum DestinationCommand {
    /// Register it (version 1), once the application's probe passed.
    RegisterDestination {
        /// The org it belongs to: its vault reference must name a credential of this org.
        org: OrgId,
        /// Its fields (name uniqueness is checked by the caller against the read model).
        fields: DestinationFields,
    },
    /// Replace every field (the next version), once the application's probe passed.
    ChangeDestination {
        /// The org it belongs to.
        org: OrgId,
        /// Its new fields.
        fields: DestinationFields,
    },
    /// Remove it.
    RemoveDestination {
        /// Why, for the audit log (may be empty).
        reason: String,
    },
}

/// Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestinationEvent {
    /// It was registered (version 1).
    DestinationRegistered(DestinationSpec),
    /// Its fields were replaced; `version` is the new version.
    DestinationChanged {
        /// The new version.
        version: u32,
        /// The new fields.
        spec: DestinationSpec,
    },
    /// It was removed.
    DestinationRemoved {
        /// Why.
        reason: String,
    },
}

/// Why a destination command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// A field broke a rule (InvalidArgument).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such destination, or it was removed (NotFound).
    #[error("destination not found")]
    NotFound,
    /// The id is taken (AlreadyExists).
    #[error("destination already exists")]
    AlreadyExists,
}

impl Aggregate for Destination {
    const TYPE: &'static str = "Destination";
    type Command = DestinationCommand;
    type Event = DestinationEvent;
    type Error = DestinationError;

    fn decide(
        &self,
        command: DestinationCommand,
    ) -> Result<Vec<DestinationEvent>, DestinationError> {
        match command {
            DestinationCommand::RegisterDestination { org, fields } => {
                if self.spec.is_some() {
                    return Err(DestinationError::AlreadyExists);
                }
                let spec = DestinationSpec::check(org, &fields)?;
                Ok(vec![DestinationEvent::DestinationRegistered(spec)])
            }
            DestinationCommand::ChangeDestination { org, fields } => {
                self.live()?;
                let spec = DestinationSpec::check(org, &fields)?;
                Ok(vec![DestinationEvent::DestinationChanged {
                    version: self.version + 1,
                    spec,
                }])
            }
            DestinationCommand::RemoveDestination { reason } => {
                self.live()?;
                let reason = if reason.trim().is_empty() {
                    String::new()
                } else {
                    clean_name("reason", &reason, MAX_REASON_CHARS)?
                };
                Ok(vec![DestinationEvent::DestinationRemoved { reason }])
            }
        }
    }

    fn evolve(mut self, event: &DestinationEvent) -> Self {
        match event {
            DestinationEvent::DestinationRegistered(spec) => {
                self.spec = Some(spec.clone());
                self.version = 1;
            }
            DestinationEvent::DestinationChanged { version, spec } => {
                self.spec = Some(spec.clone());
                self.version = *version;
            }
            DestinationEvent::DestinationRemoved { .. } => self.removed = true,
        }
        self
    }
}

impl Destination {
    fn live(&self) -> Result<(), DestinationError> {
        if self.spec.is_some() && !self.removed {
            Ok(())
        } else {
            Err(DestinationError::NotFound)
        }
    }
}

#[cfg(test)]
mod tests {
    use coffer_eventstore::replay;

    use super::*;

    fn org() -> OrgId {
        OrgId::from(uuid::Uuid::from_u128(1))
    }

    fn s3() -> KindFields {
        KindFields::S3 {
            endpoint: " https://S3.Example.com:9000/ ".into(),
            region: "us-east-1".into(),
            bucket: "acme-backups".into(),
            prefix: "prod/orders".into(),
            path_style: true,
            access_key_vault_ref: format!("vault:coffer/{}/{}", org(), uuid::Uuid::from_u128(2)),
        }
    }

    fn fields() -> DestinationFields {
        DestinationFields {
            name: " offsite ".into(),
            kind: s3(),
        }
    }

    fn registered() -> Destination {
        replay::<Destination>(&[DestinationEvent::DestinationRegistered(
            DestinationSpec::check(org(), &fields()).unwrap(),
        )])
    }

    #[test]
    fn given_nothing_when_registered_then_registered_with_checked_fields() {
        let events = Destination::default()
            .decide(DestinationCommand::RegisterDestination {
                org: org(),
                fields: fields(),
            })
            .unwrap();
        let [DestinationEvent::DestinationRegistered(spec)] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(spec.name, "offsite");
        let Kind::S3(s3) = &spec.kind else {
            panic!("{spec:?}")
        };
        assert_eq!(s3.endpoint.as_str(), "https://s3.example.com:9000/");
        assert_eq!(s3.prefix, "prod/orders/", "a trailing / is added");
        assert!(s3.path_style);
        assert_eq!(registered().version, 1);
        assert_eq!(
            registered().decide(DestinationCommand::RegisterDestination {
                org: org(),
                fields: fields(),
            }),
            Err(DestinationError::AlreadyExists)
        );
    }

    #[test]
    fn given_a_destination_when_changed_to_local_then_replaced_and_the_version_bumps() {
        let local = DestinationFields {
            name: "nas".into(),
            kind: KindFields::Local {
                path: "/mnt/nas/backups".into(),
            },
        };
        let events = registered()
            .decide(DestinationCommand::ChangeDestination {
                org: org(),
                fields: local.clone(),
            })
            .unwrap();
        let expected = DestinationSpec::check(org(), &local).unwrap();
        assert_eq!(
            events,
            vec![DestinationEvent::DestinationChanged {
                version: 2,
                spec: expected.clone()
            }]
        );
        let state = registered().evolve(&events[0]);
        assert_eq!((state.version, state.spec), (2, Some(expected)));
    }

    #[test]
    fn given_a_removed_or_unknown_destination_then_changes_are_refused() {
        let removed = registered().evolve(&DestinationEvent::DestinationRemoved {
            reason: String::new(),
        });
        for state in [removed.clone(), Destination::default()] {
            assert_eq!(
                state.decide(DestinationCommand::ChangeDestination {
                    org: org(),
                    fields: fields()
                }),
                Err(DestinationError::NotFound)
            );
            assert_eq!(
                state.decide(DestinationCommand::RemoveDestination { reason: "x".into() }),
                Err(DestinationError::NotFound)
            );
        }
        assert_eq!(
            removed.decide(DestinationCommand::RegisterDestination {
                org: org(),
                fields: fields()
            }),
            Err(DestinationError::AlreadyExists)
        );
        assert_eq!(
            registered()
                .decide(DestinationCommand::RemoveDestination {
                    reason: " moved ".into()
                })
                .unwrap(),
            vec![DestinationEvent::DestinationRemoved {
                reason: "moved".into()
            }]
        );
    }

    #[test]
    fn each_bad_field_is_refused_naming_the_field() {
        let with = |f: &dyn Fn(&mut KindFields)| {
            let mut kind = s3();
            f(&mut kind);
            DestinationFields {
                name: "x".into(),
                kind,
            }
        };
        fn set(kind: &mut KindFields, field: &str, value: &str) {
            let KindFields::S3 {
                endpoint,
                region,
                bucket,
                prefix,
                access_key_vault_ref,
                ..
            } = kind
            else {
                unreachable!()
            };
            let slot = match field {
                "endpoint" => endpoint,
                "region" => region,
                "bucket" => bucket,
                "prefix" => prefix,
                _ => access_key_vault_ref,
            };
            *slot = value.to_owned();
        }
        let other_org = format!(
            "vault:coffer/{}/{}",
            uuid::Uuid::from_u128(9),
            uuid::Uuid::from_u128(2)
        );
        let cases: Vec<(&str, &str, &str)> = vec![
            ("endpoint", "", "endpoint must not be empty"),
            ("endpoint", "not a url", "endpoint must be a URL"),
            (
                "endpoint",
                "ftp://s3.example.com",
                "endpoint must be an http:// or https://",
            ),
            (
                "endpoint",
                "https://key:secret@s3.example.com",
                "endpoint must not carry credentials",
            ),
            (
                "endpoint",
                "https://s3.example.com/bucket",
                "endpoint must not have a path",
            ),
            (
                "endpoint",
                "https://s3.example.com/?x=1",
                "endpoint must not have a path",
            ),
            ("region", "", "region must not be empty"),
            ("region", "US East", "region must be at most 64"),
            ("bucket", "", "bucket must not be empty"),
            ("bucket", "ab", "bucket must be 3 to 63"),
            ("bucket", "Acme", "bucket must be 3 to 63"),
            ("bucket", "a..b", "bucket must be 3 to 63"),
            ("bucket", "10.0.0.1", "bucket must be 3 to 63"),
            ("bucket", "-acme", "bucket must be 3 to 63"),
            ("prefix", "/abs", "prefix must not start with /"),
            ("prefix", "a//b", "prefix must not contain empty"),
            ("prefix", "a/../b", "prefix must not contain empty"),
            ("prefix", "a\\b", "prefix must not contain control"),
            (
                "access_key_vault_ref",
                "AKIA123",
                "access_key_vault_ref must be vault:coffer/",
            ),
            (
                "access_key_vault_ref",
                &other_org,
                "access_key_vault_ref must name a credential of the destination's own org",
            ),
        ];
        for (field, value, rule) in cases {
            let bad = with(&|k| set(k, field, value));
            let Err(DestinationError::Invalid(e)) =
                Destination::default().decide(DestinationCommand::RegisterDestination {
                    org: org(),
                    fields: bad.clone(),
                })
            else {
                panic!("{bad:?} accepted")
            };
            assert!(e.to_string().starts_with(rule), "{bad:?}: {e}");
            assert_eq!(e.field, field);
        }
        for (path, rule) in [
            ("", "path must not be empty"),
            ("backups", "path must be an absolute path"),
            ("/srv/../etc", "path must not contain .."),
            ("/srv/./x", "path must be normalised"),
            ("/srv//x", "path must be normalised"),
            ("/srv/x/", "path must be normalised"),
        ] {
            let e = DestinationSpec::check(
                org(),
                &DestinationFields {
                    name: "n".into(),
                    kind: KindFields::Local { path: path.into() },
                },
            )
            .unwrap_err();
            assert!(e.to_string().starts_with(rule), "{path}: {e}");
        }
        let e = DestinationSpec::check(
            org(),
            &DestinationFields {
                name: " ".into(),
                kind: s3(),
            },
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "name must not be empty");
    }

    #[test]
    fn good_values_are_normalised() {
        assert_eq!(check_prefix("").unwrap(), "");
        assert_eq!(check_prefix("a/b/").unwrap(), "a/b/");
        assert_eq!(
            check_endpoint("http://127.0.0.1:9000").unwrap().as_str(),
            "http://127.0.0.1:9000/"
        );
        assert_eq!(
            check_endpoint("https://[::1]:443").unwrap().as_str(),
            "https://[::1]/"
        );
        assert_eq!(check_region("auto").unwrap(), "auto");
        assert_eq!(check_bucket("my.bucket-1").unwrap(), "my.bucket-1");
        assert_eq!(check_path("/").unwrap(), PathBuf::from("/"));
    }
}

//! The Database aggregate: a backup target of an org. Where to connect (engine, host, port,
//! database), as whom (user, and the vault reference of the password), and which agent
//! reaches it. Commands carry the fields as the API received them; the aggregate checks every
//! one and records the checked, typed form.

use coffer_eventstore::Aggregate;
use coffer_types::{AgentId, OrgId, VaultRef, clean_name};

use super::{FieldError, MAX_REASON_CHARS};

/// Longest database (registry entry) name.
pub const MAX_NAME_CHARS: usize = 128;
/// Longest host name (a DNS name's limit).
pub const MAX_HOST_CHARS: usize = 253;
/// Longest database or user name (PostgreSQL's identifier limit; MySQL's are shorter or equal).
pub const MAX_IDENTIFIER_CHARS: usize = 63;

/// The database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Engine {
    /// PostgreSQL.
    Postgresql,
    /// MariaDB.
    Mariadb,
    /// MySQL.
    Mysql,
}

impl Engine {
    /// Every engine.
    pub const ALL: [Engine; 3] = [Engine::Postgresql, Engine::Mariadb, Engine::Mysql];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgresql => "postgresql",
            Engine::Mariadb => "mariadb",
            Engine::Mysql => "mysql",
        }
    }

    /// Parses a wire name; the error names the field and the allowed values.
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        Engine::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or_else(|| FieldError::new("engine", "must be one of postgresql, mariadb, mysql"))
    }

    /// The port the engine listens on by default.
    pub fn default_port(self) -> u16 {
        match self {
            Engine::Postgresql => 5432,
            Engine::Mariadb | Engine::Mysql => 3306,
        }
    }
}

/// A database's fields as a request gives them, before any check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatabaseFields {
    /// Its name in the registry, unique among the org's live databases.
    pub name: String,
    /// `postgresql`, `mariadb` or `mysql`.
    pub engine: String,
    /// DNS name or IP literal.
    pub host: String,
    /// 1..=65535; 0 means the engine's default.
    pub port: u32,
    /// The database to back up.
    pub database: String,
    /// The user to connect as.
    pub user: String,
    /// `vault:coffer/<org_id>/<credential_id>`, a credential of the same org.
    pub password_vault_ref: String,
    /// The agent that serves it.
    pub agent_id: String,
}

/// A database's checked fields, as events record them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseSpec {
    /// Its name.
    pub name: String,
    /// Its engine.
    pub engine: Engine,
    /// Host name or IP literal.
    pub host: String,
    /// The port (the engine's default filled in).
    pub port: u16,
    /// The database.
    pub database: String,
    /// The user.
    pub user: String,
    /// The password's credential.
    pub password_vault_ref: VaultRef,
    /// The agent that serves it.
    pub agent_id: AgentId,
}

impl DatabaseSpec {
    /// Checks every field for a database of `org`; the error names the first field that
    /// breaks a rule, in the order the API lists them.
    pub fn check(org: OrgId, fields: &DatabaseFields) -> Result<Self, FieldError> {
        let name = clean_name("name", &fields.name, MAX_NAME_CHARS)?;
        let engine = Engine::parse(fields.engine.trim())?;
        let host = check_host(&fields.host)?;
        let port = match fields.port {
            0 => engine.default_port(),
            p => u16::try_from(p)
                .map_err(|_| FieldError::new("port", "must be 1..=65535, or 0 for the default"))?,
        };
        let database = check_identifier("database", &fields.database)?;
        let user = check_identifier("user", &fields.user)?;
        let password_vault_ref = check_vault_ref(org, &fields.password_vault_ref)?;
        let agent_id = fields
            .agent_id
            .trim()
            .parse::<uuid::Uuid>()
            .map(AgentId::from)
            .map_err(|_| FieldError::new("agent_id", "must be a UUID"))?;
        Ok(DatabaseSpec {
            name,
            engine,
            host,
            port,
            database,
            user,
            password_vault_ref,
            agent_id,
        })
    }
}

/// Checks a host: 1..=253 characters, a DNS name (letters, digits, `-`, `.`) or an IPv4/IPv6
/// literal (IPv6 with or without brackets); no scheme, spaces or `/`.
pub fn check_host(raw: &str) -> Result<String, FieldError> {
    let host = raw.trim();
    if host.is_empty() {
        return Err(FieldError::new("host", "must not be empty"));
    }
    if host.chars().count() > MAX_HOST_CHARS {
        return Err(FieldError::new(
            "host",
            format!("must be at most {MAX_HOST_CHARS} characters"),
        ));
    }
    let unbracketed = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if unbracketed.parse::<std::net::IpAddr>().is_ok() {
        return Ok(unbracketed.to_owned());
    }
    let dns = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    let labels_ok = host
        .trim_end_matches('.')
        .split('.')
        .all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'));
    if !dns || !labels_ok {
        return Err(FieldError::new(
            "host",
            "must be a DNS name (letters, digits, - and .) or an IP address, without scheme, port or path",
        ));
    }
    Ok(host.to_ascii_lowercase())
}

/// Checks a database or user name: trimmed, 1..=63 characters, no control characters.
fn check_identifier(field: &'static str, raw: &str) -> Result<String, FieldError> {
    clean_name(field, raw, MAX_IDENTIFIER_CHARS)
}

/// Checks a password reference: a well-formed vault reference of `org`.
fn check_vault_ref(org: OrgId, raw: &str) -> Result<VaultRef, FieldError> {
    let parsed: VaultRef = raw
        .trim()
        .parse()
        .map_err(|e: FieldError| FieldError::new("password_vault_ref", e.rule))?;
    if parsed.org != org {
        return Err(FieldError::new(
            "password_vault_ref",
            "must name a credential of the database's own org",
        ));
    }
    Ok(parsed)
}

/// State of one database.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Database {
    /// Its current fields, once registered.
    pub spec: Option<DatabaseSpec>,
    /// Whether it was removed.
    pub removed: bool,
    /// 1 on registration, plus one per change.
    pub version: u32,
}

/// Commands.
#[derive(Debug, Clone)]
pub enum DatabaseCommand {
    /// Register it (version 1).
    RegisterDatabase {
        /// The org it belongs to: its vault reference must name a credential of this org.
        org: OrgId,
        /// Its fields (name uniqueness is checked by the caller against the read model).
        fields: DatabaseFields,
    },
    /// Replace every field (the next version).
    ChangeDatabase {
        /// The org it belongs to.
        org: OrgId,
        /// Its new fields.
        fields: DatabaseFields,
    },
    /// Remove it from the registry.
    RemoveDatabase {
        /// Why, for the audit log (may be empty).
        reason: String,
    },
}

/// Events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseEvent {
    /// It was registered (version 1).
    DatabaseRegistered(DatabaseSpec),
    /// Its fields were replaced; `version` is the new version.
    DatabaseChanged {
        /// The new version.
        version: u32,
        /// The new fields.
        spec: DatabaseSpec,
    },
    /// It was removed.
    DatabaseRemoved {
        /// Why.
        reason: String,
    },
}

/// Why a database command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DatabaseError {
    /// A field broke a rule (InvalidArgument).
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// No such database, or it was removed (NotFound).
    #[error("database not found")]
    NotFound,
    /// The id is taken (AlreadyExists).
    #[error("database already exists")]
    AlreadyExists,
}

impl Aggregate for Database {
    const TYPE: &'static str = "Database";
    type Command = DatabaseCommand;
    type Event = DatabaseEvent;
    type Error = DatabaseError;

    fn decide(&self, command: DatabaseCommand) -> Result<Vec<DatabaseEvent>, DatabaseError> {
        match command {
            DatabaseCommand::RegisterDatabase { org, fields } => {
                if self.spec.is_some() {
                    return Err(DatabaseError::AlreadyExists);
                }
                let spec = DatabaseSpec::check(org, &fields)?;
                Ok(vec![DatabaseEvent::DatabaseRegistered(spec)])
            }
            DatabaseCommand::ChangeDatabase { org, fields } => {
                self.live()?;
                let spec = DatabaseSpec::check(org, &fields)?;
                Ok(vec![DatabaseEvent::DatabaseChanged {
                    version: self.version + 1,
                    spec,
                }])
            }
            DatabaseCommand::RemoveDatabase { reason } => {
                self.live()?;
                let reason = if reason.trim().is_empty() {
                    String::new()
                } else {
                    clean_name("reason", &reason, MAX_REASON_CHARS)?
                };
                Ok(vec![DatabaseEvent::DatabaseRemoved { reason }])
            }
        }
    }

    fn evolve(mut self, event: &DatabaseEvent) -> Self {
        match event {
            DatabaseEvent::DatabaseRegistered(spec) => {
                self.spec = Some(spec.clone());
                self.version = 1;
            }
            DatabaseEvent::DatabaseChanged { version, spec } => {
                self.spec = Some(spec.clone());
                self.version = *version;
            }
            DatabaseEvent::DatabaseRemoved { .. } => self.removed = true,
        }
        self
    }
}

impl Database {
    fn live(&self) -> Result<(), DatabaseError> {
        if self.spec.is_some() && !self.removed {
            Ok(())
        } else {
            Err(DatabaseError::NotFound)
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

    fn fields() -> DatabaseFields {
        DatabaseFields {
            name: " orders ".into(),
            engine: "postgresql".into(),
            host: "DB1.internal.example".into(),
            port: 0,
            database: "orders".into(),
            user: "backup".into(),
            password_vault_ref: format!("vault:coffer/{}/{}", org(), uuid::Uuid::from_u128(2)),
            agent_id: uuid::Uuid::from_u128(3).to_string(),
        }
    }

    fn spec() -> DatabaseSpec {
        DatabaseSpec::check(org(), &fields()).unwrap()
    }

    fn registered() -> Database {
        replay::<Database>(&[DatabaseEvent::DatabaseRegistered(spec())])
    }

    #[test]
    fn given_nothing_when_registered_then_registered_with_checked_fields() {
        let events = Database::default()
            .decide(DatabaseCommand::RegisterDatabase {
                org: org(),
                fields: fields(),
            })
            .unwrap();
        let DatabaseEvent::DatabaseRegistered(spec) = &events[0] else {
            panic!("{events:?}")
        };
        assert_eq!(events.len(), 1);
        assert_eq!(spec.name, "orders");
        assert_eq!(spec.engine, Engine::Postgresql);
        assert_eq!(spec.host, "db1.internal.example");
        assert_eq!(spec.port, 5432, "0 means the engine's default");
        assert_eq!(
            spec.agent_id.to_string(),
            uuid::Uuid::from_u128(3).to_string()
        );
        assert_eq!(registered().version, 1);
        assert_eq!(
            registered().decide(DatabaseCommand::RegisterDatabase {
                org: org(),
                fields: fields(),
            }),
            Err(DatabaseError::AlreadyExists)
        );
    }

    #[test]
    fn given_a_database_when_changed_then_every_field_is_replaced_and_the_version_bumps() {
        let changed = DatabaseFields {
            engine: "mysql".into(),
            host: "10.0.0.7".into(),
            ..fields()
        };
        let events = registered()
            .decide(DatabaseCommand::ChangeDatabase {
                org: org(),
                fields: changed.clone(),
            })
            .unwrap();
        let expected = DatabaseSpec::check(org(), &changed).unwrap();
        assert_eq!(expected.port, 3306);
        assert_eq!(
            events,
            vec![DatabaseEvent::DatabaseChanged {
                version: 2,
                spec: expected.clone()
            }]
        );
        let state =
            replay::<Database>(&[DatabaseEvent::DatabaseRegistered(spec()), events[0].clone()]);
        assert_eq!(state.version, 2);
        assert_eq!(state.spec, Some(expected));
    }

    #[test]
    fn given_a_database_when_removed_then_removed() {
        assert_eq!(
            registered()
                .decide(DatabaseCommand::RemoveDatabase {
                    reason: " decommissioned ".into()
                })
                .unwrap(),
            vec![DatabaseEvent::DatabaseRemoved {
                reason: "decommissioned".into()
            }]
        );
    }

    #[test]
    fn given_a_removed_or_unknown_database_then_every_command_is_refused() {
        let removed = registered().evolve(&DatabaseEvent::DatabaseRemoved {
            reason: String::new(),
        });
        assert_eq!(
            removed.decide(DatabaseCommand::ChangeDatabase {
                org: org(),
                fields: fields()
            }),
            Err(DatabaseError::NotFound)
        );
        assert_eq!(
            removed.decide(DatabaseCommand::RemoveDatabase {
                reason: "again".into()
            }),
            Err(DatabaseError::NotFound)
        );
        assert_eq!(
            removed.decide(DatabaseCommand::RegisterDatabase {
                org: org(),
                fields: fields()
            }),
            Err(DatabaseError::AlreadyExists),
            "a removed database's id is never reused"
        );
        for command in [
            DatabaseCommand::ChangeDatabase {
                org: org(),
                fields: fields(),
            },
            DatabaseCommand::RemoveDatabase {
                reason: String::new(),
            },
        ] {
            assert_eq!(
                Database::default().decide(command),
                Err(DatabaseError::NotFound)
            );
        }
    }

    #[test]
    fn each_bad_field_is_refused_naming_the_field() {
        let other_org = format!(
            "vault:coffer/{}/{}",
            uuid::Uuid::from_u128(9),
            uuid::Uuid::from_u128(2)
        );
        let cases: Vec<(DatabaseFields, &str)> = vec![
            (
                DatabaseFields {
                    name: " ".into(),
                    ..fields()
                },
                "name must not be empty",
            ),
            (
                DatabaseFields {
                    name: "a".repeat(129),
                    ..fields()
                },
                "name must be at most",
            ),
            (
                DatabaseFields {
                    engine: "oracle".into(),
                    ..fields()
                },
                "engine must be one of postgresql, mariadb, mysql",
            ),
            (
                DatabaseFields {
                    host: String::new(),
                    ..fields()
                },
                "host must not be empty",
            ),
            (
                DatabaseFields {
                    host: "postgres://db".into(),
                    ..fields()
                },
                "host must be a DNS name",
            ),
            (
                DatabaseFields {
                    host: "db host".into(),
                    ..fields()
                },
                "host must be a DNS name",
            ),
            (
                DatabaseFields {
                    host: "db/x".into(),
                    ..fields()
                },
                "host must be a DNS name",
            ),
            (
                DatabaseFields {
                    host: "db:5432".into(),
                    ..fields()
                },
                "host must be a DNS name",
            ),
            (
                DatabaseFields {
                    host: "a".repeat(254),
                    ..fields()
                },
                "host must be at most 253",
            ),
            (
                DatabaseFields {
                    port: 65_536,
                    ..fields()
                },
                "port must be 1..=65535",
            ),
            (
                DatabaseFields {
                    database: String::new(),
                    ..fields()
                },
                "database must not be empty",
            ),
            (
                DatabaseFields {
                    database: "d".repeat(64),
                    ..fields()
                },
                "database must be at most 63",
            ),
            (
                DatabaseFields {
                    user: "a\u{7}".into(),
                    ..fields()
                },
                "user must not contain control",
            ),
            (
                DatabaseFields {
                    password_vault_ref: "secret".into(),
                    ..fields()
                },
                "password_vault_ref must be vault:coffer/",
            ),
            (
                DatabaseFields {
                    password_vault_ref: other_org,
                    ..fields()
                },
                "password_vault_ref must name a credential of the database's own org",
            ),
            (
                DatabaseFields {
                    agent_id: "agent-7".into(),
                    ..fields()
                },
                "agent_id must be a UUID",
            ),
        ];
        for (bad, rule) in cases {
            for command in [
                DatabaseCommand::RegisterDatabase {
                    org: org(),
                    fields: bad.clone(),
                },
                DatabaseCommand::ChangeDatabase {
                    org: org(),
                    fields: bad.clone(),
                },
            ] {
                let state = if matches!(command, DatabaseCommand::RegisterDatabase { .. }) {
                    Database::default()
                } else {
                    registered()
                };
                let Err(DatabaseError::Invalid(e)) = state.decide(command) else {
                    panic!("{bad:?} accepted")
                };
                assert!(e.to_string().starts_with(rule), "{bad:?}: {e}");
            }
        }
    }

    #[test]
    fn hosts_may_be_dns_names_or_ip_literals() {
        for (good, stored) in [
            ("db", "db"),
            ("DB-1.example.com", "db-1.example.com"),
            ("192.168.1.10", "192.168.1.10"),
            ("::1", "::1"),
            ("[2001:db8::5]", "2001:db8::5"),
        ] {
            assert_eq!(check_host(good).unwrap(), stored);
        }
        for bad in ["-db", "a..b", "db_1", "https://db", "db.example.com/x"] {
            assert!(check_host(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn engines_parse_from_their_wire_names_only() {
        for e in Engine::ALL {
            assert_eq!(Engine::parse(e.as_str()).unwrap(), e);
        }
        assert_eq!(Engine::default_port(Engine::Mariadb), 3306);
        assert!(Engine::parse("PostgreSQL").is_err());
    }
}

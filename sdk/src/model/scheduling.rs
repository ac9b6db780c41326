//! Scheduling's resources: databases, destinations, schedules and jobs, and their validated
//! conversions from `coffer.scheduling.v1`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use coffer_proto::scheduling::v1 as pb;
use coffer_types::{AgentId, DatabaseId, DestinationId, JobId, OrgId, ScheduleId};
use serde::Serialize;

use super::{id, optional_time, required, time};
use crate::Error;

/// Error returned when a string is not one of a closed set of names (an engine, a job state…).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be one of {}", .allowed.join(", "))]
pub struct ParseNameError {
    /// What was being parsed, e.g. `engine`.
    pub what: &'static str,
    /// The names it may be.
    pub allowed: &'static [&'static str],
}

/// Defines a closed set of wire names: the enum, `ALL`, `as_str`, `Display` and `FromStr`.
macro_rules! wire_names {
    (
        $(#[$meta:meta])*
        $name:ident ($what:literal) {
            $($(#[$vmeta:meta])* $variant:ident => $wire:literal,)+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// Every value, in the API's order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The wire name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire,)+
                }
            }

            fn parse_field(s: &str, field: &str) -> Result<Self, Error> {
                s.parse().map_err(|_| {
                    Error::protocol(format!("{field} is not a known {}", $what))
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = ParseNameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or(ParseNameError {
                        what: $what,
                        allowed: &[$($wire,)+],
                    })
            }
        }
    };
}

wire_names! {
    /// A database engine.
    Engine ("engine") {
        /// PostgreSQL (`pg_dump`, `pg_restore`); default port 5432.
        Postgresql => "postgresql",
        /// MariaDB; default port 3306.
        Mariadb => "mariadb",
        /// MySQL; default port 3306.
        Mysql => "mysql",
    }
}

wire_names! {
    /// What a schedule does about runs that fell due while no scheduler was running.
    MissedRuns ("missed-run policy") {
        /// One run for all of them, as soon as a scheduler runs again (the default).
        RunOnce => "run_once",
        /// None: the schedule waits for its next due time.
        Skip => "skip",
    }
}

wire_names! {
    /// Backup or restore.
    JobKind ("job kind") {
        /// Dump, compress, encrypt, upload.
        Backup => "backup",
        /// Download, decrypt, decompress, restore into a database.
        Restore => "restore",
    }
}

wire_names! {
    /// Why a job exists.
    JobTrigger ("job trigger") {
        /// Its schedule fell due.
        Schedule => "schedule",
        /// Someone asked for it ([`crate::Jobs::run_now`], [`crate::Jobs::restore`]).
        Manual => "manual",
    }
}

wire_names! {
    /// Where a job is in its life: `pending → claimed → running →` one of the four outcomes.
    JobState ("job state") {
        /// Waiting for its agent (from [`Job::not_before`]).
        Pending => "pending",
        /// Handed to its agent, which holds the lease.
        Claimed => "claimed",
        /// Its agent reported that it is working.
        Running => "running",
        /// Done; a backup has its [`Artifact`].
        Succeeded => "succeeded",
        /// Failed with every attempt spent; [`Job::reason`] says why.
        Failed => "failed",
        /// Cancelled.
        Cancelled => "cancelled",
        /// Its lease expired with every attempt spent.
        TimedOut => "timed_out",
    }
}

impl JobState {
    /// Whether the job is over (succeeded, failed, cancelled or timed out).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled | JobState::TimedOut
        )
    }
}

/// A database's settings, as [`crate::Databases::register`] and [`crate::Databases::change`]
/// send them. A change replaces every field: start from [`Database::fields`] to change one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseFields {
    /// Its name in the registry (1 to 128 characters), unique among the org's databases.
    pub name: String,
    /// Its engine.
    pub engine: Engine,
    /// DNS name or IP address, without scheme or port.
    pub host: String,
    /// The port; `None`: the engine's default.
    pub port: Option<u16>,
    /// The database to back up (1 to 63 characters).
    pub database: String,
    /// The user to connect as (1 to 63 characters).
    pub user: String,
    /// `vault:coffer/<org_id>/<credential_id>`: the credential holding the password, of the
    /// same org ([`crate::Credential::vault_ref`]).
    pub password_vault_ref: String,
    /// The enrolled agent that reaches it.
    pub agent_id: AgentId,
}

impl DatabaseFields {
    pub(crate) fn to_pb(&self) -> pb::DatabaseFields {
        pb::DatabaseFields {
            name: self.name.clone(),
            engine: self.engine.as_str().to_owned(),
            host: self.host.clone(),
            port: self.port.map_or(0, u32::from),
            database: self.database.clone(),
            user: self.user.clone(),
            password_vault_ref: self.password_vault_ref.clone(),
            agent_id: self.agent_id.to_string(),
        }
    }
}

/// A database registered as a backup target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Database {
    /// Its org.
    pub org_id: OrgId,
    /// Its id.
    pub database_id: DatabaseId,
    /// Its name in the registry.
    pub name: String,
    /// Its engine.
    pub engine: Engine,
    /// Host name or IP address.
    pub host: String,
    /// The port (the engine's default filled in).
    pub port: u16,
    /// The database backed up.
    pub database: String,
    /// The user it is reached as.
    pub user: String,
    /// The password's credential.
    pub password_vault_ref: String,
    /// The agent that serves it.
    pub agent_id: AgentId,
    /// 1 on registration, plus one per change.
    pub version: u32,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl Database {
    /// Its current settings, to change some and send them back.
    pub fn fields(&self) -> DatabaseFields {
        DatabaseFields {
            name: self.name.clone(),
            engine: self.engine,
            host: self.host.clone(),
            port: Some(self.port),
            database: self.database.clone(),
            user: self.user.clone(),
            password_vault_ref: self.password_vault_ref.clone(),
            agent_id: self.agent_id,
        }
    }
}

/// Where a destination keeps its objects.
///
/// In JSON, `kind` (`s3` or `local`) beside the kind's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DestinationKind {
    /// An S3-compatible bucket.
    S3 {
        /// `http(s)://host[:port]`, without path, query or credentials. An endpoint resolving to
        /// an address the deployment does not allow (loopback, private, link-local, metadata)
        /// is refused, naming `endpoint`.
        endpoint: String,
        /// The signing region, e.g. `us-east-1`.
        region: String,
        /// The bucket.
        bucket: String,
        /// Key prefix: empty, or ending with `/` (the server adds a missing one).
        prefix: String,
        /// Address the bucket in the path (`endpoint/bucket/key`) rather than the host name.
        path_style: bool,
        /// `vault:coffer/<org_id>/<credential_id>`: a `storage` credential of the same org
        /// whose value is JSON `{"access_key_id": "…", "secret_access_key": "…"}`.
        access_key_vault_ref: String,
    },
    /// A directory on the control plane's file system (development, NAS mounts): absolute,
    /// normalised, under one of the deployment's `scheduling.local_roots`. A path on the
    /// server, not on the caller's machine, hence a `String`.
    Local {
        /// The directory.
        path: String,
    },
}

impl DestinationKind {
    /// `s3` or `local`, as in JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            DestinationKind::S3 { .. } => "s3",
            DestinationKind::Local { .. } => "local",
        }
    }
}

/// A destination's settings, as [`crate::Destinations::register`] and
/// [`crate::Destinations::change`] send them. A change replaces every field: start from
/// [`Destination::fields`] to change one.
///
/// ```
/// use coffer_sdk::{DestinationFields, DestinationKind};
/// let nas = DestinationFields {
///     name: "nas".into(),
///     kind: DestinationKind::Local { path: "/mnt/nas/backups/acme".into() },
/// };
/// # let _ = nas;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DestinationFields {
    /// Its name (1 to 128 characters), unique among the org's destinations.
    pub name: String,
    /// Where its objects go (in JSON, flattened beside the name).
    #[serde(flatten)]
    pub kind: DestinationKind,
}

impl DestinationFields {
    pub(crate) fn to_pb(&self) -> pb::DestinationFields {
        let kind = match &self.kind {
            DestinationKind::S3 {
                endpoint,
                region,
                bucket,
                prefix,
                path_style,
                access_key_vault_ref,
            } => pb::destination_fields::Kind::S3(pb::S3Destination {
                endpoint: endpoint.clone(),
                region: region.clone(),
                bucket: bucket.clone(),
                prefix: prefix.clone(),
                path_style: *path_style,
                access_key_vault_ref: access_key_vault_ref.clone(),
            }),
            DestinationKind::Local { path } => {
                pb::destination_fields::Kind::Local(pb::LocalDestination { path: path.clone() })
            }
        };
        pb::DestinationFields {
            name: self.name.clone(),
            kind: Some(kind),
        }
    }
}

/// A storage destination: where an org's backups are written. It passed a probe (list, write,
/// read back, delete) when it was registered and at each change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Destination {
    /// Its org.
    pub org_id: OrgId,
    /// Its id.
    pub destination_id: DestinationId,
    /// Its settings as the server saved them (an S3 prefix with its trailing `/`, the endpoint
    /// as a normalised URL); in JSON, flattened into the destination.
    #[serde(flatten)]
    pub fields: DestinationFields,
    /// 1 on registration, plus one per change.
    pub version: u32,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// A GFS retention policy: which successful backups of a schedule are kept. All zeros keeps
/// everything; the newest backup is always kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Retention {
    /// The newest N backups.
    pub keep_last: u32,
    /// The newest backup of each of the last N days that have one, in the schedule's zone.
    pub daily: u32,
    /// … of each of the last N weeks.
    pub weekly: u32,
    /// … of each of the last N months.
    pub monthly: u32,
    /// … of each of the last N years.
    pub yearly: u32,
}

impl Retention {
    /// Whether it keeps every backup (every count is zero).
    pub fn keeps_everything(&self) -> bool {
        *self == Retention::default()
    }
}

impl std::fmt::Display for Retention {
    /// `last 7, daily 14, weekly 8` (the non-zero counts), or `everything`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.keeps_everything() {
            return f.write_str("everything");
        }
        let parts = [
            ("last", self.keep_last),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ];
        let mut first = true;
        for (name, n) in parts.into_iter().filter(|(_, n)| *n > 0) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            write!(f, "{name} {n}")?;
        }
        Ok(())
    }
}

/// A schedule's settings, as [`crate::Schedules::create`] and [`crate::Schedules::change`]
/// send them. A change replaces every field: start from [`Schedule::fields`] to change one.
///
/// ```
/// use coffer_sdk::{DatabaseId, DestinationId, MissedRuns, Retention, ScheduleFields};
/// # let (database, destination) = (DatabaseId::new(), DestinationId::new());
/// let nightly = ScheduleFields::new("nightly", database, destination, "30 2 * * *")
///     .timezone("Europe/Berlin")
///     .jitter(std::time::Duration::from_secs(600))
///     .missed_runs(MissedRuns::Skip)
///     .retention(Retention { keep_last: 3, daily: 14, weekly: 8, ..Retention::default() });
/// # let _ = nightly;
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScheduleFields {
    /// Its name (1 to 128 characters).
    pub name: String,
    /// The database it backs up.
    pub database_id: DatabaseId,
    /// Where its backups go.
    pub destination_id: DestinationId,
    /// 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first).
    pub cron: String,
    /// The IANA time zone the cron expression is read in.
    pub timezone: String,
    /// Each run starts up to this long after its due time (whole seconds, at most a day).
    #[serde(rename = "jitter_seconds", serialize_with = "seconds")]
    pub jitter: Duration,
    /// What happens to runs that fell due while no scheduler ran.
    pub missed_runs: MissedRuns,
    /// Which backups are kept.
    pub retention: Retention,
    /// Attempts per run (1 to 10); 0 asks for the server's default (3).
    pub max_attempts: u32,
}

fn seconds<S: serde::Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_u64(d.as_secs())
}

impl ScheduleFields {
    /// A schedule of `database` to `destination` at `cron`, read in UTC, without jitter,
    /// running missed runs once, keeping every backup, with the server's default attempts.
    pub fn new(
        name: impl Into<String>,
        database: DatabaseId,
        destination: DestinationId,
        cron: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            database_id: database,
            destination_id: destination,
            cron: cron.into(),
            timezone: "UTC".to_owned(),
            jitter: Duration::ZERO,
            missed_runs: MissedRuns::RunOnce,
            retention: Retention::default(),
            max_attempts: 0,
        }
    }

    /// Reads the cron expression in this IANA zone, e.g. `Europe/Berlin`.
    pub fn timezone(mut self, zone: impl Into<String>) -> Self {
        self.timezone = zone.into();
        self
    }

    /// Starts each run up to `jitter` after its due time (whole seconds, at most a day).
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// What to do about runs that fell due while no scheduler ran.
    pub fn missed_runs(mut self, policy: MissedRuns) -> Self {
        self.missed_runs = policy;
        self
    }

    /// Which backups to keep.
    pub fn retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
    }

    /// Attempts per run (1 to 10).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    pub(crate) fn to_pb(&self) -> pb::ScheduleFields {
        let r = self.retention;
        pb::ScheduleFields {
            name: self.name.clone(),
            database_id: self.database_id.to_string(),
            destination_id: self.destination_id.to_string(),
            cron: self.cron.clone(),
            timezone: self.timezone.clone(),
            // Beyond `u32` seconds is far beyond the one-day limit: the server refuses it,
            // naming the field.
            jitter_seconds: u32::try_from(self.jitter.as_secs()).unwrap_or(u32::MAX),
            missed_runs: self.missed_runs.as_str().to_owned(),
            retention: Some(pb::Retention {
                keep_last: r.keep_last,
                daily: r.daily,
                weekly: r.weekly,
                monthly: r.monthly,
                yearly: r.yearly,
            }),
            max_attempts: self.max_attempts,
        }
    }
}

/// A backup schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Schedule {
    /// Its org.
    pub org_id: OrgId,
    /// Its id.
    pub schedule_id: ScheduleId,
    /// Its settings (in JSON, flattened into the schedule).
    #[serde(flatten)]
    pub fields: ScheduleFields,
    /// Whether it is paused: nothing fires until it is resumed.
    pub paused: bool,
    /// The due time it waits for; `None` while paused (or if its cron matches no later date).
    pub next_due_at: Option<DateTime<Utc>>,
    /// When that run fires (the due time plus jitter); `None` with `next_due_at`.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The due time of its latest run; `None` before the first.
    pub last_due_at: Option<DateTime<Utc>>,
    /// 1 on creation, plus one per change, pause and resume.
    pub version: u32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// What a finished backup left in its destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Artifact {
    /// The object's key in the destination.
    pub object_key: String,
    /// Its size in bytes (ciphertext).
    pub size_bytes: u64,
    /// SHA-256 of the ciphertext, lowercase hex.
    pub sha256: String,
    /// The age recipient it is encrypted to (the org's).
    pub recipient: String,
    /// SHA-256 of its age header, lowercase hex.
    pub age_header_sha256: String,
    /// Bytes the dump program wrote (what the object decompresses to); 0 when not recorded.
    pub dump_bytes: u64,
}

/// How far a held job has got, as its agent last reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes read from the source so far.
    pub bytes_read: u64,
    /// Bytes written to the target so far.
    pub bytes_written: u64,
    /// The current rate.
    pub bytes_per_second: u64,
}

/// One backup or restore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Job {
    /// Its org.
    pub org_id: OrgId,
    /// Its id.
    pub job_id: JobId,
    /// Backup or restore.
    pub kind: JobKind,
    /// Why it exists.
    pub trigger: JobTrigger,
    /// The schedule it runs for; `None` for a restore.
    pub schedule_id: Option<ScheduleId>,
    /// The database it dumps or restores into.
    pub database_id: DatabaseId,
    /// The destination it writes to or reads from.
    pub destination_id: DestinationId,
    /// The agent that runs it.
    pub agent_id: AgentId,
    /// For a restore: the backup job it restores.
    pub restore_of: Option<JobId>,
    /// When it fell due.
    pub due_at: DateTime<Utc>,
    /// Where it is in its life.
    pub state: JobState,
    /// The current attempt, from 1.
    pub attempt: u32,
    /// Attempts it may take.
    pub max_attempts: u32,
    /// It is not handed out before this (retries back off).
    pub not_before: DateTime<Utc>,
    /// Whether cancellation was requested while an agent held it.
    pub cancel_requested: bool,
    /// Why it failed or was cancelled; `None` if no reason was given.
    pub reason: Option<String>,
    /// What a succeeded backup left in the destination.
    pub artifact: Option<Artifact>,
    /// The last reported progress, while held ([`crate::Jobs::get`] only).
    pub progress: Option<Progress>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When it ended; `None` while not over.
    pub finished_at: Option<DateTime<Utc>>,
    /// Retention deleted this backup's object from its destination.
    pub backup_deleted: bool,
}

/// Which jobs [`crate::Jobs::list`] returns: every filter is optional, jobs come newest
/// first, a page at a time.
///
/// ```
/// use coffer_sdk::{JobQuery, JobState, ScheduleId};
/// # let nightly = ScheduleId::new();
/// let failed = JobQuery::new().schedule(nightly).state(JobState::Failed).page_size(50);
/// # let _ = failed;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobQuery {
    schedule: Option<ScheduleId>,
    state: Option<JobState>,
    page_size: Option<u32>,
    page_token: Option<String>,
}

impl JobQuery {
    /// Every job, first page, the server's default page size (100).
    pub fn new() -> Self {
        Self::default()
    }

    /// Jobs of this schedule.
    pub fn schedule(mut self, schedule: ScheduleId) -> Self {
        self.schedule = Some(schedule);
        self
    }

    /// Jobs in this state.
    pub fn state(mut self, state: JobState) -> Self {
        self.state = Some(state);
        self
    }

    /// At most `size` jobs per page (1 to 1000).
    pub fn page_size(mut self, size: u32) -> Self {
        self.page_size = Some(size);
        self
    }

    /// The page that `token` (a [`crate::Page::next_page_token`]) starts.
    pub fn page_token(mut self, token: impl Into<String>) -> Self {
        self.page_token = Some(token.into());
        self
    }

    pub(crate) fn to_request(&self, org: OrgId) -> pb::ListJobsRequest {
        pb::ListJobsRequest {
            org_id: org.to_string(),
            schedule_id: self.schedule.map(|s| s.to_string()).unwrap_or_default(),
            state: self
                .state
                .map(|s| s.as_str().to_owned())
                .unwrap_or_default(),
            page_size: self.page_size.unwrap_or(0),
            page_token: self.page_token.clone().unwrap_or_default(),
        }
    }
}

/// `None` for an empty string, else the id it must be.
fn optional_id<T: std::str::FromStr>(s: &str, field: &str) -> Result<Option<T>, Error> {
    if s.is_empty() {
        Ok(None)
    } else {
        id(s, field).map(Some)
    }
}

fn not_empty(s: String, field: &str) -> Result<String, Error> {
    if s.is_empty() {
        Err(Error::protocol(format!("{field} is missing")))
    } else {
        Ok(s)
    }
}

fn sha256_hex(s: String, field: &str) -> Result<String, Error> {
    if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(s)
    } else {
        Err(Error::protocol(format!(
            "{field} is not a lowercase hex SHA-256"
        )))
    }
}

impl TryFrom<pb::Database> for Database {
    type Error = Error;
    fn try_from(d: pb::Database) -> Result<Self, Error> {
        let port = u16::try_from(d.port)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Error::protocol("Database.port is not 1..=65535"))?;
        Ok(Self {
            org_id: id(&d.org_id, "Database.org_id")?,
            database_id: id(&d.database_id, "Database.database_id")?,
            name: not_empty(d.name, "Database.name")?,
            engine: Engine::parse_field(&d.engine, "Database.engine")?,
            host: not_empty(d.host, "Database.host")?,
            port,
            database: not_empty(d.database, "Database.database")?,
            user: not_empty(d.user, "Database.user")?,
            password_vault_ref: not_empty(d.password_vault_ref, "Database.password_vault_ref")?,
            agent_id: id(&d.agent_id, "Database.agent_id")?,
            version: d.version,
            created_at: time(d.created_at, "Database.created_at")?,
            updated_at: time(d.updated_at, "Database.updated_at")?,
        })
    }
}

impl TryFrom<pb::Destination> for Destination {
    type Error = Error;
    fn try_from(d: pb::Destination) -> Result<Self, Error> {
        let kind = match required(d.kind, "Destination.kind")? {
            pb::destination::Kind::S3(s3) => DestinationKind::S3 {
                endpoint: not_empty(s3.endpoint, "S3Destination.endpoint")?,
                region: not_empty(s3.region, "S3Destination.region")?,
                bucket: not_empty(s3.bucket, "S3Destination.bucket")?,
                prefix: s3.prefix,
                path_style: s3.path_style,
                access_key_vault_ref: not_empty(
                    s3.access_key_vault_ref,
                    "S3Destination.access_key_vault_ref",
                )?,
            },
            pb::destination::Kind::Local(local) => DestinationKind::Local {
                path: not_empty(local.path, "LocalDestination.path")?,
            },
        };
        Ok(Self {
            org_id: id(&d.org_id, "Destination.org_id")?,
            destination_id: id(&d.destination_id, "Destination.destination_id")?,
            fields: DestinationFields {
                name: not_empty(d.name, "Destination.name")?,
                kind,
            },
            version: d.version,
            created_at: time(d.created_at, "Destination.created_at")?,
            updated_at: time(d.updated_at, "Destination.updated_at")?,
        })
    }
}

impl TryFrom<pb::ScheduleFields> for ScheduleFields {
    type Error = Error;
    fn try_from(f: pb::ScheduleFields) -> Result<Self, Error> {
        let r = required(f.retention, "ScheduleFields.retention")?;
        Ok(Self {
            name: not_empty(f.name, "ScheduleFields.name")?,
            database_id: id(&f.database_id, "ScheduleFields.database_id")?,
            destination_id: id(&f.destination_id, "ScheduleFields.destination_id")?,
            cron: not_empty(f.cron, "ScheduleFields.cron")?,
            timezone: not_empty(f.timezone, "ScheduleFields.timezone")?,
            jitter: Duration::from_secs(u64::from(f.jitter_seconds)),
            missed_runs: MissedRuns::parse_field(&f.missed_runs, "ScheduleFields.missed_runs")?,
            retention: Retention {
                keep_last: r.keep_last,
                daily: r.daily,
                weekly: r.weekly,
                monthly: r.monthly,
                yearly: r.yearly,
            },
            max_attempts: f.max_attempts,
        })
    }
}

impl TryFrom<pb::Schedule> for Schedule {
    type Error = Error;
    fn try_from(s: pb::Schedule) -> Result<Self, Error> {
        let next_due_at = optional_time(s.next_due_at, "Schedule.next_due_at")?;
        let next_fire_at = optional_time(s.next_fire_at, "Schedule.next_fire_at")?;
        if next_due_at.is_some() != next_fire_at.is_some() {
            return Err(Error::protocol(
                "Schedule.next_due_at and Schedule.next_fire_at come together",
            ));
        }
        Ok(Self {
            org_id: id(&s.org_id, "Schedule.org_id")?,
            schedule_id: id(&s.schedule_id, "Schedule.schedule_id")?,
            fields: required(s.fields, "Schedule.fields")?.try_into()?,
            paused: s.paused,
            next_due_at,
            next_fire_at,
            last_due_at: optional_time(s.last_due_at, "Schedule.last_due_at")?,
            version: s.version,
            created_at: time(s.created_at, "Schedule.created_at")?,
            updated_at: time(s.updated_at, "Schedule.updated_at")?,
        })
    }
}

impl TryFrom<pb::Artifact> for Artifact {
    type Error = Error;
    fn try_from(a: pb::Artifact) -> Result<Self, Error> {
        Ok(Self {
            object_key: not_empty(a.object_key, "Artifact.object_key")?,
            size_bytes: a.size_bytes,
            sha256: sha256_hex(a.sha256, "Artifact.sha256")?,
            recipient: not_empty(a.recipient, "Artifact.recipient")?,
            age_header_sha256: sha256_hex(a.age_header_sha256, "Artifact.age_header_sha256")?,
            dump_bytes: a.dump_bytes,
        })
    }
}

impl From<pb::Progress> for Progress {
    fn from(p: pb::Progress) -> Self {
        Self {
            bytes_read: p.bytes_read,
            bytes_written: p.bytes_written,
            bytes_per_second: p.bytes_per_second,
        }
    }
}

impl TryFrom<pb::Job> for Job {
    type Error = Error;
    fn try_from(j: pb::Job) -> Result<Self, Error> {
        let kind = JobKind::parse_field(&j.kind, "Job.kind")?;
        let state = JobState::parse_field(&j.state, "Job.state")?;
        let restore_of = optional_id(&j.restore_of, "Job.restore_of")?;
        if (kind == JobKind::Restore) != restore_of.is_some() {
            return Err(Error::protocol(
                "Job.restore_of is required for a restore and only for a restore",
            ));
        }
        let artifact = j.artifact.map(Artifact::try_from).transpose()?;
        if kind == JobKind::Backup && state == JobState::Succeeded && artifact.is_none() {
            return Err(Error::protocol(
                "Job.artifact is missing from a succeeded backup",
            ));
        }
        Ok(Self {
            org_id: id(&j.org_id, "Job.org_id")?,
            job_id: id(&j.job_id, "Job.job_id")?,
            kind,
            trigger: JobTrigger::parse_field(&j.trigger, "Job.trigger")?,
            schedule_id: optional_id(&j.schedule_id, "Job.schedule_id")?,
            database_id: id(&j.database_id, "Job.database_id")?,
            destination_id: id(&j.destination_id, "Job.destination_id")?,
            agent_id: id(&j.agent_id, "Job.agent_id")?,
            restore_of,
            due_at: time(j.due_at, "Job.due_at")?,
            state,
            attempt: j.attempt,
            max_attempts: j.max_attempts,
            not_before: time(j.not_before, "Job.not_before")?,
            cancel_requested: j.cancel_requested,
            reason: (!j.reason.is_empty()).then_some(j.reason),
            artifact,
            progress: j.progress.map(Progress::from),
            created_at: time(j.created_at, "Job.created_at")?,
            updated_at: time(j.updated_at, "Job.updated_at")?,
            finished_at: optional_time(j.finished_at, "Job.finished_at")?,
            backup_deleted: j.backup_deleted,
        })
    }
}

#[cfg(test)]
mod tests {
    use coffer_proto::time::to_timestamp;

    use super::*;

    fn job() -> pb::Job {
        let now = Some(to_timestamp(Utc::now()));
        pb::Job {
            org_id: OrgId::new().to_string(),
            job_id: JobId::new().to_string(),
            kind: "backup".into(),
            trigger: "manual".into(),
            schedule_id: ScheduleId::new().to_string(),
            database_id: DatabaseId::new().to_string(),
            destination_id: DestinationId::new().to_string(),
            agent_id: AgentId::new().to_string(),
            restore_of: String::new(),
            due_at: now,
            state: "pending".into(),
            attempt: 0,
            max_attempts: 3,
            not_before: now,
            cancel_requested: false,
            reason: String::new(),
            artifact: None,
            progress: None,
            created_at: now,
            updated_at: now,
            finished_at: None,
            backup_deleted: false,
        }
    }

    fn schedule() -> pb::Schedule {
        let now = Some(to_timestamp(Utc::now()));
        pb::Schedule {
            org_id: OrgId::new().to_string(),
            schedule_id: ScheduleId::new().to_string(),
            fields: Some(
                ScheduleFields::new(
                    "nightly",
                    DatabaseId::new(),
                    DestinationId::new(),
                    "0 3 * * *",
                )
                .timezone("Europe/Berlin")
                .jitter(Duration::from_secs(90))
                .max_attempts(3)
                .to_pb(),
            ),
            paused: false,
            next_due_at: now,
            next_fire_at: now,
            last_due_at: None,
            version: 1,
            created_at: now,
            updated_at: now,
        }
    }

    #[test]
    fn wire_names_round_trip_and_unknown_ones_are_refused() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(*state));
        }
        assert_eq!(JobState::TimedOut.to_string(), "timed_out");
        assert_eq!(
            "paused".parse::<JobState>().unwrap_err().to_string(),
            "job state must be one of pending, claimed, running, succeeded, failed, cancelled, \
             timed_out"
        );
        assert_eq!("run_once".parse(), Ok(MissedRuns::RunOnce));
        assert!("postgres".parse::<Engine>().is_err());
    }

    #[test]
    fn a_well_formed_job_and_schedule_convert() {
        let j = Job::try_from(job()).unwrap();
        assert_eq!(
            (j.kind, j.state, j.reason),
            (JobKind::Backup, JobState::Pending, None)
        );
        let s = Schedule::try_from(schedule()).unwrap();
        assert_eq!(s.fields.jitter, Duration::from_secs(90));
        assert_eq!(s.fields.timezone, "Europe/Berlin");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["jitter_seconds"], 90);
        assert_eq!(json["missed_runs"], "run_once");
        assert_eq!(json["retention"]["keep_last"], 0);
    }

    #[test]
    fn malformed_scheduling_answers_are_protocol_errors_naming_the_field() {
        let jobs: [(pb::Job, &str); 5] = [
            (
                pb::Job {
                    state: "paused".into(),
                    ..job()
                },
                "Job.state is not a known job state",
            ),
            (
                pb::Job {
                    kind: "restore".into(),
                    ..job()
                },
                "Job.restore_of is required for a restore and only for a restore",
            ),
            (
                pb::Job {
                    state: "succeeded".into(),
                    ..job()
                },
                "Job.artifact is missing from a succeeded backup",
            ),
            (
                pb::Job {
                    artifact: Some(pb::Artifact {
                        object_key: "k".into(),
                        size_bytes: 1,
                        sha256: "ABC".into(),
                        recipient: "age1x".into(),
                        age_header_sha256: "0".repeat(64),
                        dump_bytes: 4096,
                    }),
                    ..job()
                },
                "Artifact.sha256 is not a lowercase hex SHA-256",
            ),
            (
                pb::Job {
                    due_at: None,
                    ..job()
                },
                "Job.due_at is missing",
            ),
        ];
        for (bad, message) in jobs {
            assert_eq!(
                Job::try_from(bad).unwrap_err(),
                Error::Protocol {
                    message: message.into()
                }
            );
        }
        let due_without_fire = pb::Schedule {
            next_fire_at: None,
            ..schedule()
        };
        assert_eq!(
            Schedule::try_from(due_without_fire).unwrap_err(),
            Error::Protocol {
                message: "Schedule.next_due_at and Schedule.next_fire_at come together".into()
            }
        );
        let paused = pb::Schedule {
            paused: true,
            next_due_at: None,
            next_fire_at: None,
            ..schedule()
        };
        assert!(Schedule::try_from(paused).unwrap().paused);
        let database = pb::Database {
            org_id: OrgId::new().to_string(),
            database_id: DatabaseId::new().to_string(),
            name: "orders".into(),
            engine: "postgresql".into(),
            host: "db1".into(),
            port: 70000,
            database: "orders".into(),
            user: "backup".into(),
            password_vault_ref: "vault:coffer/x/y".into(),
            agent_id: AgentId::new().to_string(),
            version: 1,
            created_at: Some(to_timestamp(Utc::now())),
            updated_at: Some(to_timestamp(Utc::now())),
        };
        assert_eq!(
            Database::try_from(database).unwrap_err(),
            Error::Protocol {
                message: "Database.port is not 1..=65535".into()
            }
        );
    }

    fn destination(kind: pb::destination::Kind) -> pb::Destination {
        let now = Some(to_timestamp(Utc::now()));
        pb::Destination {
            org_id: OrgId::new().to_string(),
            destination_id: DestinationId::new().to_string(),
            name: "offsite".into(),
            kind: Some(kind),
            version: 2,
            created_at: now,
            updated_at: now,
        }
    }

    fn bucket() -> pb::S3Destination {
        pb::S3Destination {
            endpoint: "https://s3.example/".into(),
            region: "eu-central-1".into(),
            bucket: "acme-backups".into(),
            prefix: String::new(),
            path_style: true,
            access_key_vault_ref: "vault:coffer/x/y".into(),
        }
    }

    fn s3() -> pb::destination::Kind {
        pb::destination::Kind::S3(bucket())
    }

    #[test]
    fn destinations_convert_and_show_their_kind_beside_their_fields_in_json() {
        let d = Destination::try_from(destination(s3())).unwrap();
        assert_eq!(d.fields.name, "offsite");
        assert_eq!(d.fields.kind.as_str(), "s3");
        assert_eq!(
            d.fields.to_pb().kind,
            Some(pb::destination_fields::Kind::S3(bucket())),
            "sent back as received"
        );
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["kind"], "s3");
        assert_eq!(json["name"], "offsite");
        assert_eq!(json["prefix"], "", "an empty prefix is a prefix");
        assert_eq!(json["path_style"], true);
        assert_eq!(json["version"], 2);

        let local = Destination::try_from(destination(pb::destination::Kind::Local(
            pb::LocalDestination {
                path: "/srv/backups".into(),
            },
        )))
        .unwrap();
        let json = serde_json::to_value(&local).unwrap();
        assert_eq!(
            (&json["kind"], &json["path"]),
            (&"local".into(), &"/srv/backups".into())
        );
        assert!(json.get("bucket").is_none(), "{json}");
    }

    #[test]
    fn malformed_destinations_are_protocol_errors_naming_the_field() {
        let cases: [(pb::Destination, &str); 5] = [
            (
                pb::Destination {
                    kind: None,
                    ..destination(s3())
                },
                "Destination.kind is missing",
            ),
            (
                pb::Destination {
                    destination_id: "d1".into(),
                    ..destination(s3())
                },
                "Destination.destination_id is not a UUID",
            ),
            (
                pb::Destination {
                    updated_at: None,
                    ..destination(s3())
                },
                "Destination.updated_at is missing",
            ),
            (
                destination(pb::destination::Kind::S3(pb::S3Destination {
                    bucket: String::new(),
                    ..bucket()
                })),
                "S3Destination.bucket is missing",
            ),
            (
                destination(pb::destination::Kind::Local(pb::LocalDestination {
                    path: String::new(),
                })),
                "LocalDestination.path is missing",
            ),
        ];
        for (bad, message) in cases {
            assert_eq!(
                Destination::try_from(bad).unwrap_err(),
                Error::Protocol {
                    message: message.into()
                }
            );
        }
    }
}

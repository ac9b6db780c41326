//! Command-line parsing: the server commands and the client commands. The client commands
//! themselves live in [`crate::client`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use coffer_sdk::{
    ActorKind, AgentId, AggregateId, ApiKeyId, CredentialId, DatabaseId, DestinationId, Engine,
    EnrollmentTokenId, JobId, JobState, MissedRuns, OrgId, Purpose, Role, ScheduleId, SecretString,
    UserId,
};

use crate::startup::Target;

/// Coffer: managed, end-to-end encrypted database backups. One binary: the server (`serve`,
/// `migrate`, `admin`) and its client.
#[derive(Debug, Parser)]
#[command(name = "coffer", version)]
pub struct Cli {
    /// TOML configuration file (layered: defaults, this file, COFFER_* variables, flags).
    #[arg(long, global = true, env = "COFFER_CONFIG")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run services.
    Serve {
        /// Which services to run in this process.
        #[arg(long, value_enum, default_value = "all")]
        target: Vec<Target>,
        /// Override grpc.listen.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Create roles and schemas and apply pending migrations, as the owner role.
    Migrate,
    /// Operator commands.
    Admin {
        /// Which one.
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Organisations (client).
    Org {
        /// Server and credentials.
        #[command(flatten)]
        connect: ConnectArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
        /// Which one.
        #[command(subcommand)]
        command: OrgCommand,
    },
    /// Members of an org and their roles (client).
    User {
        /// Server and credentials.
        #[command(flatten)]
        connect: ConnectArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
        /// Which one.
        #[command(subcommand)]
        command: UserCommand,
    },
    /// API keys (client).
    Apikey {
        /// Server and credentials.
        #[command(flatten)]
        connect: ConnectArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
        /// Which one.
        #[command(subcommand)]
        command: ApiKeyCommand,
    },
    /// Access tokens (client).
    Token {
        /// Server and credentials.
        #[command(flatten)]
        connect: ConnectArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
        /// Which one.
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Agents: enrollment tokens, enrolled agents, revocation and the CRL (client).
    Agent {
        /// Server and credentials.
        #[command(flatten)]
        connect: ConnectArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
        /// Which one.
        #[command(subcommand)]
        command: AgentCommand,
    },
    /// The credential vault: values go in and never come back out (client).
    Credential {
        /// Server and credentials.
        #[command(flatten)]
        connect: ConnectArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
        /// Which one.
        #[command(subcommand)]
        command: CredentialCommand,
    },
    /// The org's age key pair: its public recipient and the recovery key (client).
    OrgKey {
        /// Server and credentials.
        #[command(flatten)]
        connect: ConnectArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
        /// Which one.
        #[command(subcommand)]
        command: OrgKeyCommand,
    },
    /// The platform's KMS master key: rotation and coverage (client; platform owners and
    /// admins).
    MasterKey {
        /// Server and credentials.
        #[command(flatten)]
        connect: ConnectArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
        /// Which one.
        #[command(subcommand)]
        command: MasterKeyCommand,
    },
    /// The org's tamper-evident audit log: query it, check entries and checkpoints against
    /// their proofs here, export it, and verify an export with no server (client; owners,
    /// admins and auditors).
    Audit {
        /// Server and credentials (`audit verify` needs neither; its `--org` is the org the
        /// bundle must belong to).
        #[command(flatten)]
        connect: ConnectArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
        /// Which one.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The database registry: the org's backup targets and the agents that reach them
    /// (client).
    Database {
        /// Server and credentials.
        #[command(flatten)]
        connect: ConnectArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
        /// Which one.
        #[command(subcommand)]
        command: DatabaseCommand,
    },
    /// Storage destinations: the S3 buckets and local directories backups are written to,
    /// each probed before it is saved (client).
    Destination {
        /// Server and credentials.
        #[command(flatten)]
        connect: ConnectArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
        /// Which one.
        #[command(subcommand)]
        command: DestinationCommand,
    },
    /// Backup schedules: cron timing in a time zone, pause and resume, retention (client).
    Schedule {
        /// Server and credentials.
        #[command(flatten)]
        connect: ConnectArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
        /// Which one.
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Backup and restore jobs: run a schedule now, restore, cancel, follow (client).
    Job {
        /// Server and credentials.
        #[command(flatten)]
        connect: ConnectArgs,
        /// Output format.
        #[command(flatten)]
        output: OutputArgs,
        /// Which one.
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Diagnostics against a running server (client).
    Diag {
        /// Server and credentials.
        #[command(flatten)]
        connect: ConnectArgs,
        /// Which one.
        #[command(subcommand)]
        command: DiagCommand,
    },
}

/// Where the server is and whose API key to call it with; shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The server's gRPC URL.
    #[arg(
        long,
        global = true,
        env = "COFFER_SERVER",
        default_value = "http://127.0.0.1:7443"
    )]
    pub server: String,
    /// An API key (`coffer_…`), exchanged for short-lived access tokens.
    #[arg(
        long,
        global = true,
        env = "COFFER_API_KEY",
        hide_env_values = true,
        value_parser = secret
    )]
    pub api_key: Option<SecretString>,
    /// The org to act on; the API key's org by default.
    #[arg(long, global = true)]
    pub org: Option<OrgId>,
}

fn secret(s: &str) -> Result<SecretString, Infallible> {
    Ok(SecretString::from(s))
}

/// How client commands print their result.
#[derive(Debug, Clone, Copy, Args)]
pub struct OutputArgs {
    /// Print one JSON document instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `coffer org …`.
#[derive(Debug, Subcommand)]
pub enum OrgCommand {
    /// Create an org and its first owner; prints the owner's API key once. Needs a platform
    /// admin's key.
    Create {
        /// The org's name (1 to 100 characters).
        name: String,
        /// The first owner's email address.
        #[arg(long)]
        owner_email: String,
    },
    /// Show the org (`--org`, or the API key's).
    Get,
}

/// `coffer user …`.
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add a member to the org.
    Add {
        /// Their email address.
        email: String,
        /// owner, admin, operator, auditor or viewer.
        #[arg(long)]
        role: Role,
    },
    /// List the org's members.
    List,
    /// Change a member's role.
    SetRole {
        /// The member's user id.
        user_id: UserId,
        /// owner, admin, operator, auditor or viewer.
        role: Role,
    },
    /// Suspend a member: refused everywhere, already-issued tokens included, until reactivated.
    Suspend {
        /// The member's user id.
        user_id: UserId,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
    /// Lift a member's suspension.
    Reactivate {
        /// The member's user id.
        user_id: UserId,
    },
    /// Remove a member from the org.
    Remove {
        /// The member's user id.
        user_id: UserId,
    },
}

/// `coffer apikey …`.
#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key; prints its secret once.
    Create {
        /// A name to recognise it by (1 to 64 characters).
        name: String,
        /// The role its tokens carry: owner, admin, operator, auditor or viewer.
        #[arg(long)]
        role: Role,
        /// Restrict it to a scope (repeatable).
        #[arg(long = "scope", value_name = "SCOPE")]
        scopes: Vec<String>,
        /// Make it stop working after this long (e.g. `30d`, `12h`).
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List the org's API keys (metadata only).
    List,
    /// Revoke an API key; its tokens stop working within a second.
    Revoke {
        /// The key's id.
        key_id: ApiKeyId,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
}

/// `coffer token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Exchange the API key for an access token and show its org, role and expiry.
    Exchange {
        /// Also print the token itself (a secret: anyone holding it acts as the key until it
        /// expires).
        #[arg(long)]
        show: bool,
    },
    /// Print the public keys access tokens are signed with (JWKS).
    Jwks,
}

/// `coffer agent …`.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Single-use tokens agents enroll with.
    Token {
        /// Which one.
        #[command(subcommand)]
        command: EnrollmentTokenCommand,
    },
    /// List the org's agents.
    List,
    /// Show one agent.
    Get {
        /// The agent's id.
        agent_id: AgentId,
    },
    /// Revoke an agent: its certificates go on the org's CRL and are refused within a second.
    Revoke {
        /// The agent's id.
        agent_id: AgentId,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
    /// Print the org's CRL (PEM), for `openssl verify -crl_check`; with `--json`, also its
    /// number and validity.
    Crl,
}

/// `coffer agent token …`.
#[derive(Debug, Subcommand)]
pub enum EnrollmentTokenCommand {
    /// Create an enrollment token; prints its secret once. Give it to one agent:
    /// `coffer-agent enroll --token …`.
    Create {
        /// A name to recognise it by, such as the host the agent will run on (1 to 64
        /// characters).
        name: String,
        /// How long it stays usable if unused (default 1h, at most 24h).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// List the org's enrollment tokens (metadata only).
    List,
    /// Revoke an unused enrollment token.
    Revoke {
        /// The token's id.
        token_id: EnrollmentTokenId,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
}

/// `coffer credential …`.
#[derive(Debug, Subcommand)]
pub enum CredentialCommand {
    /// Store a new credential (version 1). Its value is never printed and cannot be read back.
    Create {
        /// Its name: 1 to 128 characters of a-z 0-9 . _ - /, such as `prod/orders-db`.
        name: String,
        /// What it is for: database, storage, ssh or generic.
        #[arg(long)]
        purpose: Purpose,
        /// Where the value comes from.
        #[command(flatten)]
        value: ValueArgs,
    },
    /// Replace a credential's value: a new version under a new data key.
    Replace {
        /// The credential's id.
        credential_id: CredentialId,
        /// Where the value comes from.
        #[command(flatten)]
        value: ValueArgs,
    },
    /// Delete a credential and destroy every stored version of its value.
    Delete {
        /// The credential's id.
        credential_id: CredentialId,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
    /// List the org's credentials (metadata only).
    List,
    /// Show one credential's metadata.
    Get {
        /// The credential's id.
        credential_id: CredentialId,
    },
}

/// Where a credential value is read from. Never from an argument: arguments end up in shell
/// history and in every user's `ps`.
#[derive(Debug, Clone, Args)]
pub struct ValueArgs {
    /// Read the value from this file, byte for byte. Without it the value is read from
    /// stdin, which must not be a terminal, and one trailing newline ("\n") is removed, as
    /// `echo` and most editors add one. 1 byte to 64 KiB.
    #[arg(long, value_name = "PATH")]
    pub value_file: Option<PathBuf>,
}

/// `coffer org-key …`.
#[derive(Debug, Subcommand)]
pub enum OrgKeyCommand {
    /// Show the org's public age recipient (`age1…`), which every backup is encrypted to.
    Recipient,
    /// Export the org's private age key (`AGE-SECRET-KEY-1…`) for `age -d -i`, a secret that
    /// decrypts every backup. Owners only; every export is recorded in the audit log.
    ExportRecoveryKey {
        /// Why, for the audit log (1 to 500 characters).
        #[arg(long)]
        reason: String,
    },
}

/// `coffer master-key …`.
#[derive(Debug, Subcommand)]
pub enum MasterKeyCommand {
    /// Start moving every wrapped key (credential data keys, org age keys) onto the master key
    /// the server is configured with; set kms.key_id to the new key and restart the server
    /// first. Running it again with the same target resumes the running rotation.
    Rotate {
        /// The new master key: the one the server is configured with (see `coverage`).
        #[arg(long = "to", value_name = "KEY_ID")]
        to: String,
        /// Why, for the audit log (1 to 500 characters).
        #[arg(long)]
        reason: String,
        /// Follow the rotation until it completes, printing its progress; interrupting only
        /// stops following it.
        #[arg(long)]
        wait: bool,
    },
    /// Show the latest rotation and its progress.
    Status,
    /// Show how many wrapped keys sit under each master key, and how many are not under the
    /// current one.
    Coverage,
}

/// `coffer audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List the org's audit entries, oldest first, a page at a time.
    Query(AuditQueryArgs),
    /// Show one entry, and verify here that it is in the log: the checkpoint's signature, the
    /// leaf hash recomputed from the leaf bytes, and the inclusion proof up to the signed root.
    Entry {
        /// The entry's position in the log, from 1.
        seq: u64,
        /// Prove inclusion in the checkpoint of this size (default: the latest).
        #[arg(long, value_name = "N")]
        tree_size: Option<u64>,
    },
    /// Print a signed checkpoint (the latest, or the one of `--size`) after checking its
    /// signature; keep it to witness the log later (`audit verify --witness`).
    Checkpoint {
        /// The checkpoint of this size (default: the latest).
        #[arg(long, value_name = "N")]
        size: Option<u64>,
        /// Save the signed note to this file instead of printing it.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List the checkpoints issued, newest first.
    Checkpoints {
        /// At most this many (1 to 1000; default 100).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Continue from a previous page.
        #[arg(long, value_name = "TOKEN")]
        page_token: Option<String>,
    },
    /// Fetch the consistency proof between two sizes and verify it here, each root against
    /// the signed checkpoint of that size when one was issued.
    Consistency {
        /// The older size.
        #[arg(long, value_name = "N")]
        from: u64,
        /// The newer size.
        #[arg(long, value_name = "M")]
        to: u64,
    },
    /// Export the log as a bundle file, which `coffer audit verify` checks with no server.
    Export {
        /// The bundle file to write (replaced once the export is complete).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Start at this entry (default: 1, the whole log).
        #[arg(long, value_name = "N")]
        from_seq: Option<u64>,
        /// End at the checkpoint of this size (default: the latest).
        #[arg(long, value_name = "N")]
        tree_size: Option<u64>,
        /// Also carry a consistency proof from this older size, for a witness checkpoint older
        /// than `--from-seq`.
        #[arg(long, value_name = "N")]
        consistency_from: Option<u64>,
    },
    /// Verify an exported bundle here, with no server, configuration or API key: the
    /// checkpoint signature, every entry, the hash chain, the Merkle root, and consistency
    /// with a checkpoint kept earlier (`--witness`). Exits 1 if anything fails.
    Verify(AuditVerifyArgs),
}

/// `coffer audit query`: every filter is optional.
#[derive(Debug, Clone, Args)]
pub struct AuditQueryArgs {
    /// Events that occurred at or after this time (RFC 3339, e.g. 2025-01-31T00:00:00Z).
    #[arg(long, value_name = "TIME", value_parser = rfc3339)]
    pub from: Option<DateTime<Utc>>,
    /// Events that occurred before this time (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = rfc3339)]
    pub to: Option<DateTime<Utc>>,
    /// Events caused by this kind of principal: user, api_key, agent or service.
    #[arg(long, value_name = "KIND", value_parser = actor_kind)]
    pub actor_kind: Option<ActorKind>,
    /// Events caused by the principal with this id (needs --actor-kind).
    #[arg(long, value_name = "ID")]
    pub actor_id: Option<String>,
    /// Events of this type, e.g. CredentialCreated.
    #[arg(long, value_name = "EVENT_TYPE")]
    pub action: Option<String>,
    /// Events of aggregates of this type, e.g. Credential.
    #[arg(long, value_name = "TYPE")]
    pub aggregate_type: Option<String>,
    /// Events of this aggregate.
    #[arg(long, value_name = "ID")]
    pub aggregate_id: Option<AggregateId>,
    /// At most this many entries (1 to 1000; default 100).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Continue from a previous page.
    #[arg(long, value_name = "TOKEN")]
    pub page_token: Option<String>,
}

/// `coffer audit verify`.
#[derive(Debug, Clone, Args)]
pub struct AuditVerifyArgs {
    /// The bundle file (`coffer audit export --out`).
    pub bundle: PathBuf,
    /// A checkpoint kept earlier (`coffer audit checkpoint --out`): the log must be
    /// consistent with it, which rules out truncation, rollback and forks since then.
    #[arg(long, value_name = "FILE")]
    pub witness: Option<PathBuf>,
    /// The note verifier key the log must be signed by (`<name>+<hash>+<key>`, as
    /// `coffer audit checkpoint --json` shows it).
    #[arg(long, value_name = "VKEY")]
    pub key: Option<String>,
}

/// `coffer database …`.
#[derive(Debug, Subcommand)]
pub enum DatabaseCommand {
    /// Register a database as a backup target.
    Register {
        /// Its name in the registry (1 to 128 characters), unique in the org.
        name: String,
        /// postgresql, mariadb or mysql.
        #[arg(long, default_value = "postgresql")]
        engine: Engine,
        /// DNS name or IP address, as the agent reaches it.
        #[arg(long)]
        host: String,
        /// The port (default: the engine's, 5432 or 3306).
        #[arg(long)]
        port: Option<u16>,
        /// The database to back up.
        #[arg(long)]
        database: String,
        /// The user to connect as.
        #[arg(long)]
        user: String,
        /// The password's credential: `vault:coffer/<org>/<credential>` (`coffer credential
        /// create … --purpose database` prints it).
        #[arg(long, value_name = "VAULT_REF")]
        password_ref: String,
        /// The enrolled agent that reaches it.
        #[arg(long, value_name = "AGENT_ID")]
        agent: AgentId,
    },
    /// Change some of a database's settings; the others stay as they are.
    Change {
        /// The database's id.
        database_id: DatabaseId,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// postgresql, mariadb or mysql.
        #[arg(long)]
        engine: Option<Engine>,
        /// DNS name or IP address.
        #[arg(long)]
        host: Option<String>,
        /// The port.
        #[arg(long)]
        port: Option<u16>,
        /// The database to back up.
        #[arg(long)]
        database: Option<String>,
        /// The user to connect as.
        #[arg(long)]
        user: Option<String>,
        /// The password's credential (`vault:coffer/<org>/<credential>`).
        #[arg(long, value_name = "VAULT_REF")]
        password_ref: Option<String>,
        /// The enrolled agent that reaches it.
        #[arg(long, value_name = "AGENT_ID")]
        agent: Option<AgentId>,
    },
    /// Show one database.
    Get {
        /// The database's id.
        database_id: DatabaseId,
    },
    /// List the org's databases.
    List,
    /// Remove a database from the registry; its name is free again.
    Remove {
        /// The database's id.
        database_id: DatabaseId,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// `coffer destination …`. Registering and changing probe the destination first (list, write,
/// read back, delete); a failing probe saves nothing.
#[derive(Debug, Subcommand)]
pub enum DestinationCommand {
    /// Register an S3-compatible bucket.
    RegisterS3 {
        /// Its name (1 to 128 characters), unique among the org's destinations.
        #[arg(long)]
        name: String,
        /// `http(s)://host[:port]`; addresses the deployment does not allow (loopback,
        /// private, link-local, metadata) are refused.
        #[arg(long, value_name = "URL")]
        endpoint: String,
        /// The signing region, e.g. us-east-1.
        #[arg(long)]
        region: String,
        /// The bucket.
        #[arg(long)]
        bucket: String,
        /// Key prefix (a trailing / is added; default: none).
        #[arg(long, default_value = "")]
        prefix: String,
        /// Address the bucket in the path (endpoint/bucket/key) rather than the host name.
        #[arg(long)]
        path_style: bool,
        /// The access key's credential: `vault:coffer/<org>/<credential>`, a `storage`
        /// credential holding {"access_key_id": "…", "secret_access_key": "…"}.
        #[arg(long, value_name = "VAULT_REF")]
        access_key_ref: String,
    },
    /// Register a directory on the server's file system (under one of its local roots).
    RegisterLocal {
        /// Its name (1 to 128 characters), unique among the org's destinations.
        #[arg(long)]
        name: String,
        /// An absolute, normalised directory on the server.
        #[arg(long)]
        path: String,
    },
    /// Change some of a destination's settings; the others stay as they are.
    ///
    /// S3 flags on a local destination make it an S3 one (all of --endpoint, --region,
    /// --bucket and --access-key-ref are then needed); --path on an S3 destination makes it a
    /// local one. The new settings are probed before they are saved.
    Change {
        /// The destination's id.
        destination_id: DestinationId,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// S3 settings.
        #[command(flatten)]
        s3: S3Settings,
        /// A directory on the server (local destinations).
        #[arg(long)]
        path: Option<String>,
    },
    /// Show one destination.
    Get {
        /// The destination's id.
        destination_id: DestinationId,
    },
    /// List the org's destinations.
    List,
    /// Remove a destination; its name is free again and what it holds stays there.
    Remove {
        /// The destination's id.
        destination_id: DestinationId,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Probe a saved destination again (list, write, read back, delete); changes nothing.
    Probe {
        /// The destination's id.
        destination_id: DestinationId,
    },
}

/// The S3 settings `coffer destination change` may set; each conflicts with `--path`.
#[derive(Debug, Clone, Args)]
pub struct S3Settings {
    /// `http(s)://host[:port]`.
    #[arg(long, value_name = "URL", conflicts_with = "path")]
    pub endpoint: Option<String>,
    /// The signing region.
    #[arg(long, conflicts_with = "path")]
    pub region: Option<String>,
    /// The bucket.
    #[arg(long, conflicts_with = "path")]
    pub bucket: Option<String>,
    /// Key prefix ("" for none).
    #[arg(long, conflicts_with = "path")]
    pub prefix: Option<String>,
    /// Path-style addressing: `--path-style` or `--path-style true` turns it on,
    /// `--path-style false` off.
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true",
        conflicts_with = "path"
    )]
    pub path_style: Option<bool>,
    /// The access key's credential (`vault:coffer/<org>/<credential>`).
    #[arg(long, value_name = "VAULT_REF", conflicts_with = "path")]
    pub access_key_ref: Option<String>,
}

/// `coffer schedule …`.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Create a schedule: back up a database to a destination when a cron expression says so.
    Create {
        /// Its name (1 to 128 characters).
        name: String,
        /// The database to back up.
        #[arg(long, value_name = "DATABASE_ID")]
        database: DatabaseId,
        /// Where the backups go.
        #[arg(long, value_name = "DESTINATION_ID")]
        destination: DestinationId,
        /// 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), e.g.
        /// "30 2 * * *".
        #[arg(long)]
        cron: String,
        /// The rest.
        #[command(flatten)]
        settings: ScheduleSettings,
    },
    /// Change some of a schedule's settings; the others stay as they are.
    Change {
        /// The schedule's id.
        schedule_id: ScheduleId,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// The database to back up.
        #[arg(long, value_name = "DATABASE_ID")]
        database: Option<DatabaseId>,
        /// Where the backups go.
        #[arg(long, value_name = "DESTINATION_ID")]
        destination: Option<DestinationId>,
        /// A new cron expression.
        #[arg(long)]
        cron: Option<String>,
        /// The rest.
        #[command(flatten)]
        settings: ScheduleSettings,
    },
    /// Show one schedule.
    Get {
        /// The schedule's id.
        schedule_id: ScheduleId,
    },
    /// List the org's schedules.
    List,
    /// Pause a schedule: nothing fires until it is resumed.
    Pause {
        /// The schedule's id.
        schedule_id: ScheduleId,
    },
    /// Resume a schedule from its first due time after now.
    Resume {
        /// The schedule's id.
        schedule_id: ScheduleId,
    },
    /// Delete a schedule; its jobs and backups stay.
    Delete {
        /// The schedule's id.
        schedule_id: ScheduleId,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
}

/// A schedule's optional settings; on `create` an absent one takes its default, on `change`
/// it keeps its current value.
#[derive(Debug, Clone, Args)]
pub struct ScheduleSettings {
    /// The IANA time zone the cron expression is read in (default UTC).
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    /// Start each run up to this long after its due time: seconds, or e.g. `10m` (at most a
    /// day; default 0).
    #[arg(long, value_name = "DURATION", value_parser = jitter)]
    pub jitter: Option<Duration>,
    /// Runs that fell due while no scheduler ran: run_once (default) or skip.
    #[arg(long, value_name = "POLICY")]
    pub missed_runs: Option<MissedRuns>,
    /// Keep the newest N backups.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the last N years.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Attempts per run, 1 to 10 (default 3).
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
}

/// `coffer job …`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Back up a schedule's database now, outside its cron.
    RunNow {
        /// The schedule's id.
        schedule_id: ScheduleId,
    },
    /// Restore a succeeded backup.
    Restore {
        /// The backup job's id.
        backup_job_id: JobId,
        /// Restore into this database (default: the backup's own).
        #[arg(long, value_name = "DATABASE_ID")]
        database: Option<DatabaseId>,
    },
    /// Cancel a job: a pending one at once, a running one at its agent's next heartbeat.
    Cancel {
        /// The job's id.
        job_id: JobId,
        /// Why, for the audit log.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Show one job, with its progress while it runs.
    Get {
        /// The job's id.
        job_id: JobId,
    },
    /// List the org's jobs, newest first, a page at a time.
    List {
        /// Jobs of this schedule.
        #[arg(long, value_name = "SCHEDULE_ID")]
        schedule: Option<ScheduleId>,
        /// Jobs in this state: pending, claimed, running, succeeded, failed, cancelled or
        /// timed_out.
        #[arg(long)]
        state: Option<JobState>,
        /// At most this many (1 to 1000; default 100).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Continue from a previous page.
        #[arg(long, value_name = "TOKEN")]
        page_token: Option<String>,
    },
}

/// A jitter: whole seconds (`90`) or a humantime duration (`10m`).
fn jitter(s: &str) -> Result<Duration, String> {
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("must be seconds or a duration such as 10m ({e})"))
}

fn rfc3339(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time such as 2025-01-31T12:00:00Z ({e})"))
}

fn actor_kind(s: &str) -> Result<ActorKind, String> {
    s.parse()
        .map_err(|_| "must be one of user, api_key, agent, service".to_owned())
}

/// `coffer admin …`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Replay a service's event stream into fresh projection tables.
    RebuildProjections {
        /// The service whose projections to rebuild.
        #[arg(long, value_enum)]
        service: Target,
    },
    /// Set up a new deployment once: the access-token signing key and the platform org
    /// with its first owner, whose API key is printed once.
    Init {
        /// The first platform owner.
        #[arg(long)]
        owner_email: String,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Create a new key file for the local KMS provider (mode 0600; never overwrites).
    CreateLocalKmsKey {
        /// Directory holding key files.
        #[arg(long)]
        key_dir: PathBuf,
        /// Id of the new key.
        #[arg(long)]
        key_id: String,
    },
}

/// `coffer diag …`.
#[derive(Debug, Subcommand)]
pub enum DiagCommand {
    /// Send a probe event and follow it: append → outbox → JetStream → consumer → projection.
    /// Needs a key with `diagnostics.probe`.
    RoundTrip {
        /// Text carried by the probe.
        #[arg(long, default_value = "hello from coffer diag")]
        note: String,
        /// Give up after this long.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: Duration,
    },
}

//! The client commands (`coffer org|user|apikey|token|agent|credential|org-key|master-key|audit|
//! database|destination|schedule|job|diag …`), on top of `coffer-sdk`.
//!
//! Output: with `--json`, one JSON document on stdout (an object, or an array for lists);
//! otherwise an aligned table. A secret the server returns once (a new API key or enrollment
//! token) is printed once, labelled as such, and so is an exported recovery key; an access
//! token only on `coffer token exchange --show`. Credential values are read from a file or
//! stdin, never from arguments, and never printed.

pub mod audit;
pub mod scheduling;

use std::fmt;
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, SecondsFormat, Utc};
use coffer_sdk::{
    Agent, ApiKey, Client, CreatedApiKey, Credential, EnrollmentToken, ExposeSecret, KeyCoverage,
    MasterKeyRotation, Member, NewApiKey, Org, OrgId, RotationState, SecretBox, SecretSlice,
};
use serde::Serialize;
use serde_json::json;

use crate::cli::{
    AgentCommand, ApiKeyCommand, Command, ConnectArgs, CredentialCommand, DiagCommand,
    EnrollmentTokenCommand, MasterKeyCommand, OrgCommand, OrgKeyCommand, OutputArgs, TokenCommand,
    UserCommand, ValueArgs,
};

/// The largest credential value the server accepts (64 KiB).
const MAX_VALUE_BYTES: usize = 64 * 1024;

/// Runs a client command; `command` must be one of `org`, `user`, `apikey`, `token`, `agent`,
/// `credential`, `org-key`, `master-key`, `audit`, `database`, `destination`, `schedule`, `job`,
/// `diag`.
pub async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Org {
            connect,
            output,
            command,
        } => org(&connect, output, command).await,
        Command::User {
            connect,
            output,
            command,
        } => user(&connect, output, command).await,
        Command::Apikey {
            connect,
            output,
            command,
        } => api_key(&connect, output, command).await,
        Command::Token {
            connect,
            output,
            command,
        } => token(&connect, output, command).await,
        Command::Agent {
            connect,
            output,
            command,
        } => agent(&connect, output, command).await,
        Command::Credential {
            connect,
            output,
            command,
        } => credential(&connect, output, command).await,
        Command::OrgKey {
            connect,
            output,
            command,
        } => org_key(&connect, output, command).await,
        Command::MasterKey {
            connect,
            output,
            command,
        } => master_key(&connect, output, command).await,
        Command::Audit {
            connect,
            output,
            command,
        } => Box::pin(audit::run(&connect, output, command)).await,
        Command::Database {
            connect,
            output,
            command,
        } => scheduling::database(&connect, output, command).await,
        Command::Destination {
            connect,
            output,
            command,
        } => scheduling::destination(&connect, output, command).await,
        Command::Schedule {
            connect,
            output,
            command,
        } => scheduling::schedule(&connect, output, command).await,
        Command::Job {
            connect,
            output,
            command,
        } => scheduling::job(&connect, output, command).await,
        Command::Diag {
            connect,
            command: DiagCommand::RoundTrip { note, timeout },
        } => diag_round_trip(&connect, &note, timeout).await,
        Command::Serve { .. } | Command::Migrate | Command::Admin { .. } => {
            anyhow::bail!("not a client command")
        }
    }
}

/// Connects and exchanges the API key.
async fn connect(args: &ConnectArgs) -> anyhow::Result<Client> {
    let api_key = args
        .api_key
        .clone()
        .context("an API key is needed: pass --api-key or set COFFER_API_KEY")?;
    Box::pin(Client::connect(&args.server, api_key))
        .await
        .with_context(|| format!("connect to {}", args.server))
}

/// `--org`, or the API key's org.
fn target_org(client: &Client, args: &ConnectArgs) -> OrgId {
    args.org.unwrap_or_else(|| client.org())
}

async fn org(args: &ConnectArgs, output: OutputArgs, command: OrgCommand) -> anyhow::Result<()> {
    let client = connect(args).await?;
    match command {
        OrgCommand::Create { name, owner_email } => {
            let created = client
                .orgs()
                .create(&name, &owner_email)
                .await
                .context("create org")?;
            if output.json {
                return print_json(&json!({
                    "org": created.org,
                    "owner": created.owner,
                    "owner_api_key": created_key_json(&created.owner_api_key),
                }));
            }
            println!("created org {} ({})", created.org.name, created.org.org_id);
            println!("owner {} ({})", created.owner.email, created.owner.user_id);
            print_secret("owner API key", &created.owner_api_key);
            Ok(())
        }
        OrgCommand::Get => {
            let org = client
                .orgs()
                .get(target_org(&client, args))
                .await
                .context("get org")?;
            print(output, &org, || orgs_table(std::slice::from_ref(&org)))
        }
    }
}

async fn user(args: &ConnectArgs, output: OutputArgs, command: UserCommand) -> anyhow::Result<()> {
    let client = connect(args).await?;
    let org = target_org(&client, args);
    let members = client.members();
    let member = match command {
        UserCommand::Add { email, role } => {
            members.add(org, &email, role).await.context("add member")?
        }
        UserCommand::List => {
            let list = members.list(org).await.context("list members")?;
            return print(output, &list, || members_table(&list));
        }
        UserCommand::SetRole { user_id, role } => members
            .change_role(org, user_id, role)
            .await
            .context("change role")?,
        UserCommand::Suspend { user_id, reason } => members
            .suspend(org, user_id, &reason)
            .await
            .context("suspend member")?,
        UserCommand::Reactivate { user_id } => members
            .reactivate(org, user_id)
            .await
            .context("reactivate member")?,
        UserCommand::Remove { user_id } => {
            members
                .remove(org, user_id)
                .await
                .context("remove member")?;
            if output.json {
                return print_json(&json!({
                    "org_id": org,
                    "user_id": user_id,
                    "removed": true,
                }));
            }
            println!("removed user {user_id} from org {org}");
            return Ok(());
        }
    };
    print(output, &member, || {
        members_table(std::slice::from_ref(&member))
    })
}

async fn api_key(
    args: &ConnectArgs,
    output: OutputArgs,
    command: ApiKeyCommand,
) -> anyhow::Result<()> {
    let client = connect(args).await?;
    let org = target_org(&client, args);
    match command {
        ApiKeyCommand::Create {
            name,
            role,
            scopes,
            expires_in,
        } => {
            let mut new = NewApiKey::new(name, role);
            for scope in scopes {
                new = new.scope(scope);
            }
            if let Some(lifetime) = expires_in {
                let lifetime = chrono::Duration::from_std(lifetime)
                    .ok()
                    .and_then(|d| Utc::now().checked_add_signed(d))
                    .context("--expires-in is too long")?;
                new = new.expires_at(lifetime);
            }
            let created = client
                .api_keys()
                .create(org, new)
                .await
                .context("create API key")?;
            if output.json {
                return print_json(&created_key_json(&created));
            }
            println!("{}", keys_table(std::slice::from_ref(&created.key)));
            print_secret("API key", &created);
            Ok(())
        }
        ApiKeyCommand::List => {
            let keys = client.api_keys().list(org).await.context("list API keys")?;
            print(output, &keys, || keys_table(&keys))
        }
        ApiKeyCommand::Revoke { key_id, reason } => {
            let key = client
                .api_keys()
                .revoke(org, key_id, &reason)
                .await
                .context("revoke API key")?;
            print(output, &key, || keys_table(std::slice::from_ref(&key)))
        }
    }
}

async fn token(
    args: &ConnectArgs,
    output: OutputArgs,
    command: TokenCommand,
) -> anyhow::Result<()> {
    let client = connect(args).await?;
    match command {
        TokenCommand::Exchange { show } => {
            let token = client
                .tokens()
                .exchange()
                .await
                .context("exchange the API key")?;
            if output.json {
                let mut doc = json!({
                    "org_id": token.org_id,
                    "role": token.role,
                    "expires_at": token.expires_at,
                });
                if show {
                    doc["access_token"] = token.token.expose_secret().into();
                }
                return print_json(&doc);
            }
            let hidden = "(hidden; pass --show to print it)";
            let mut table = Table::new(["", ""]);
            table.row([
                "token".into(),
                if show {
                    token.token.expose_secret().to_owned()
                } else {
                    hidden.to_owned()
                },
            ]);
            table.row(["org".into(), token.org_id.to_string()]);
            table.row(["role".into(), token.role.to_string()]);
            table.row(["expires".into(), time(token.expires_at)]);
            print!("{}", table.without_header());
            Ok(())
        }
        TokenCommand::Jwks => {
            let jwks = client.tokens().jwks().await.context("get the JWKS")?;
            if output.json {
                println!("{}", jwks.json);
                return Ok(());
            }
            let mut table = Table::new(["KID", "KTY", "ALG", "CRV"]);
            for key in &jwks.keys {
                table.row([
                    key.kid.clone(),
                    key.kty.clone(),
                    key.alg.clone().unwrap_or_else(|| "-".into()),
                    key.crv.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            print!("{table}");
            Ok(())
        }
    }
}

async fn agent(
    args: &ConnectArgs,
    output: OutputArgs,
    command: AgentCommand,
) -> anyhow::Result<()> {
    let client = connect(args).await?;
    let org = target_org(&client, args);
    let agents = client.agents();
    let agent = match command {
        AgentCommand::Token { command } => {
            return enrollment_token(&client, org, output, command).await;
        }
        AgentCommand::List => {
            let list = agents.list(org).await.context("list agents")?;
            return print(output, &list, || agents_table(&list));
        }
        AgentCommand::Get { agent_id } => agents.get(org, agent_id).await.context("get agent")?,
        AgentCommand::Revoke { agent_id, reason } => agents
            .revoke(org, agent_id, &reason)
            .await
            .context("revoke agent")?,
        AgentCommand::Crl => {
            let crl = agents.crl(org).await.context("get the CRL")?;
            if output.json {
                return print_json(&crl);
            }
            print!("{}", crl.pem);
            return Ok(());
        }
    };
    print(output, &agent, || {
        agents_table(std::slice::from_ref(&agent))
    })
}

async fn enrollment_token(
    client: &Client,
    org: OrgId,
    output: OutputArgs,
    command: EnrollmentTokenCommand,
) -> anyhow::Result<()> {
    let tokens = client.enrollment_tokens();
    let token = match command {
        EnrollmentTokenCommand::Create { name, ttl } => {
            let created = tokens
                .create(org, &name, ttl)
                .await
                .context("create enrollment token")?;
            if output.json {
                return print_json(&json!({
                    "token": created.token,
                    "secret": created.secret.expose_secret(),
                }));
            }
            println!(
                "{}",
                enrollment_tokens_table(std::slice::from_ref(&created.token))
            );
            println!(
                "enrollment token {} secret (shown once, works once, store it now):",
                created.token.token_id
            );
            println!("{}", created.secret.expose_secret());
            return Ok(());
        }
        EnrollmentTokenCommand::List => {
            let list = tokens.list(org).await.context("list enrollment tokens")?;
            return print(output, &list, || enrollment_tokens_table(&list));
        }
        EnrollmentTokenCommand::Revoke { token_id, reason } => tokens
            .revoke(org, token_id, &reason)
            .await
            .context("revoke enrollment token")?,
    };
    print(output, &token, || {
        enrollment_tokens_table(std::slice::from_ref(&token))
    })
}

async fn credential(
    args: &ConnectArgs,
    output: OutputArgs,
    command: CredentialCommand,
) -> anyhow::Result<()> {
    let client = connect(args).await?;
    let org = target_org(&client, args);
    let credentials = client.credentials();
    let credential = match command {
        CredentialCommand::Create {
            name,
            purpose,
            value,
        } => credentials
            .create(org, &name, purpose, &read_value(&value)?)
            .await
            .context("create credential")?,
        CredentialCommand::Replace {
            credential_id,
            value,
        } => credentials
            .replace_value(org, credential_id, &read_value(&value)?)
            .await
            .context("replace credential value")?,
        CredentialCommand::Delete {
            credential_id,
            reason,
        } => {
            credentials
                .delete(org, credential_id, &reason)
                .await
                .context("delete credential")?;
            if output.json {
                return print_json(&json!({
                    "org_id": org,
                    "credential_id": credential_id,
                    "deleted": true,
                }));
            }
            println!("deleted credential {credential_id} from org {org}");
            return Ok(());
        }
        CredentialCommand::List => {
            let list = credentials.list(org).await.context("list credentials")?;
            return print(output, &list, || credentials_table(&list));
        }
        CredentialCommand::Get { credential_id } => credentials
            .get(org, credential_id)
            .await
            .context("get credential")?,
    };
    print(output, &credential, || {
        credentials_table(std::slice::from_ref(&credential))
    })
}

/// Reads a credential value: from `--value-file` byte for byte, or from stdin without one
/// trailing newline. Refuses an empty value and one over 64 KiB without sending it.
///
/// The value lands in one buffer, allocated once at its largest and zeroed on drop (a buffer
/// that grew would leave unzeroed copies behind), read straight from the file descriptor so
/// no `std::io::Stdin` buffer keeps a copy either. It blocks: the CLI runs one command, and
/// nothing else needs this thread meanwhile.
fn read_value(args: &ValueArgs) -> anyhow::Result<SecretSlice<u8>> {
    let (source, from_stdin) = match &args.value_file {
        Some(path) => (
            File::open(path).with_context(|| format!("open {}", path.display()))?,
            false,
        ),
        None => {
            let stdin = std::io::stdin();
            anyhow::ensure!(
                !stdin.is_terminal(),
                "pass the value with --value-file or pipe it on stdin; a terminal would echo it"
            );
            let fd = stdin
                .as_fd()
                .try_clone_to_owned()
                .context("read the value from stdin")?;
            (File::from(fd), true)
        }
    };
    // The largest value, a newline, and one byte more to notice a value that is too long.
    let limit = MAX_VALUE_BYTES + 2;
    let mut read = Ok(0);
    let buffer = SecretBox::<Vec<u8>>::init_with_mut(|buffer| {
        buffer.reserve_exact(limit);
        read = source
            .take(u64::try_from(limit).expect("64 KiB fits in u64"))
            .read_to_end(buffer);
        if from_stdin && buffer.last() == Some(&b'\n') {
            buffer.pop();
        }
    });
    read.with_context(|| match &args.value_file {
        Some(path) => format!("read {}", path.display()),
        None => "read the value from stdin".to_owned(),
    })?;
    let value = buffer.expose_secret();
    anyhow::ensure!(!value.is_empty(), "the value is empty");
    anyhow::ensure!(
        value.len() <= MAX_VALUE_BYTES,
        "the value is longer than {} KiB",
        MAX_VALUE_BYTES / 1024
    );
    Ok(SecretSlice::from(Box::<[u8]>::from(value.as_slice())))
}

async fn org_key(
    args: &ConnectArgs,
    output: OutputArgs,
    command: OrgKeyCommand,
) -> anyhow::Result<()> {
    let client = connect(args).await?;
    let org = target_org(&client, args);
    match command {
        OrgKeyCommand::Recipient => {
            let recipient = client
                .org_keys()
                .recipient(org)
                .await
                .context("get the org's recipient")?;
            print(output, &recipient, || {
                let mut table = Table::new(["ORG ID", "RECIPIENT", "CREATED"]);
                table.row([
                    recipient.org_id.to_string(),
                    recipient.recipient.clone(),
                    time(recipient.created_at),
                ]);
                table
            })
        }
        OrgKeyCommand::ExportRecoveryKey { reason } => {
            let key = client
                .org_keys()
                .export_recovery_key(org, &reason)
                .await
                .context("export the recovery key")?;
            if output.json {
                return print_json(&json!({
                    "org_id": key.org_id,
                    "recipient": key.recipient,
                    "identity": key.identity.expose_secret(),
                }));
            }
            println!("org {} recipient {}", key.org_id, key.recipient);
            println!(
                "recovery key secret (decrypts every backup of the org with age -d -i; \
                 store it offline now):"
            );
            println!("{}", key.identity.expose_secret());
            Ok(())
        }
    }
}

/// `coffer master-key …`. These act on the platform, whatever `--org` says: the server checks
/// the key is a platform owner's or admin's.
async fn master_key(
    args: &ConnectArgs,
    output: OutputArgs,
    command: MasterKeyCommand,
) -> anyhow::Result<()> {
    let client = connect(args).await?;
    let master_keys = client.master_keys();
    match command {
        MasterKeyCommand::Rotate { to, reason, wait } => {
            let mut rotation = master_keys
                .rotate(&to, &reason)
                .await
                .context("start the master-key rotation")?;
            if wait {
                rotation = follow_rotation(&client, rotation, output).await?;
            }
            print(output, &rotation, || rotation_table(&rotation))
        }
        MasterKeyCommand::Status => {
            let rotation = master_keys
                .rotation()
                .await
                .context("get the master-key rotation")?;
            print(output, &rotation, || rotation_table(&rotation))
        }
        MasterKeyCommand::Coverage => {
            let coverage = master_keys
                .coverage()
                .await
                .context("get the key coverage")?;
            let not_under = coverage.not_under(&coverage.current_key_id);
            if output.json {
                return print_json(&json!({
                    "current_key_id": coverage.current_key_id,
                    "entries": coverage.entries,
                    "not_under_current": not_under,
                }));
            }
            print!("{}", coverage_table(&coverage));
            println!(
                "{not_under} wrapped keys are not under the current master key ({})",
                coverage.current_key_id
            );
            Ok(())
        }
    }
}

/// `master-key rotate --wait`: polls every second until `rotation` completes, printing
/// `rewrapped N, remaining M` whenever that changes, on stdout, or on stderr with `--json` so
/// stdout stays one JSON document. No deadline: a large rotation takes as long as KMS needs,
/// and interrupting only stops following it.
async fn follow_rotation(
    client: &Client,
    mut rotation: MasterKeyRotation,
    output: OutputArgs,
) -> anyhow::Result<MasterKeyRotation> {
    let number = rotation.number;
    let mut shown = None;
    loop {
        anyhow::ensure!(
            rotation.state != RotationState::None,
            "the server reports no master-key rotation"
        );
        let progress = (rotation.rewrapped, rotation.remaining);
        if shown != Some(progress) {
            let line = format!("rewrapped {}, remaining {}", progress.0, progress.1);
            if output.json {
                eprintln!("{line}");
            } else {
                println!("{line}");
            }
            shown = Some(progress);
        }
        // A later rotation starts only once this one has completed.
        if rotation.state == RotationState::Completed || rotation.number != number {
            return Ok(rotation);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        rotation = client
            .master_keys()
            .rotation()
            .await
            .context("get the master-key rotation")?;
    }
}

/// `coffer diag round-trip`: prints each stage as the probe reaches it.
async fn diag_round_trip(args: &ConnectArgs, note: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = connect(args).await?;
    let org = target_org(&client, args);
    let diagnostics = client.diagnostics();
    let started = Instant::now();
    let sent = diagnostics
        .send_probe(org, note)
        .await
        .context("send probe")?;
    println!(
        "appended   ProbeSent {} to probe {} (org {org}, version {}) in {:?}",
        sent.event_id,
        sent.probe_id,
        sent.version,
        started.elapsed()
    );
    let mut published = false;
    loop {
        let probe = diagnostics
            .get_probe(org, sent.probe_id)
            .await
            .context("get probe")?;
        if probe.published && !published {
            published = true;
            println!(
                "published  to JetStream by the outbox relay after {:?}",
                started.elapsed()
            );
        }
        if probe.observed_at.is_some() {
            if !published {
                println!("published  to JetStream by the outbox relay");
            }
            println!(
                "consumed   from JetStream (stream sequence {}) by the diagnostics consumer, trace {}",
                probe.stream_sequence.unwrap_or_default(),
                probe.consumer_trace_id.unwrap_or_default()
            );
            println!(
                "projected  ProbeObserved into the probes table after {:?} in all",
                started.elapsed()
            );
            return Ok(());
        }
        anyhow::ensure!(
            started.elapsed() < timeout,
            "the probe was not observed within {timeout:?} (published: {})",
            probe.published
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `value` as JSON, or the table `table` builds.
fn print<T: Serialize>(
    output: OutputArgs,
    value: &T,
    table: impl FnOnce() -> Table,
) -> anyhow::Result<()> {
    if output.json {
        print_json(value)
    } else {
        print!("{}", table());
        Ok(())
    }
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("encode JSON output")?;
    println!("{text}");
    Ok(())
}

/// A new key and its secret as JSON: the one place a secret is serialised.
fn created_key_json(created: &CreatedApiKey) -> serde_json::Value {
    json!({
        "key": created.key,
        "secret": created.secret.expose_secret(),
    })
}

fn print_secret(what: &str, created: &CreatedApiKey) {
    println!(
        "{what} {} secret (shown once, store it now):",
        created.key.key_id
    );
    println!("{}", created.secret.expose_secret());
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn optional_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".to_owned(), time)
}

fn orgs_table(orgs: &[Org]) -> Table {
    let mut table = Table::new(["ORG ID", "NAME", "CREATED"]);
    for o in orgs {
        table.row([o.org_id.to_string(), o.name.clone(), time(o.created_at)]);
    }
    table
}

fn members_table(members: &[Member]) -> Table {
    let mut table = Table::new(["USER ID", "EMAIL", "ROLE", "STATUS", "JOINED"]);
    for m in members {
        table.row([
            m.user_id.to_string(),
            m.email.clone(),
            m.role.to_string(),
            if m.suspended { "suspended" } else { "active" }.to_owned(),
            time(m.joined_at),
        ]);
    }
    table
}

fn keys_table(keys: &[ApiKey]) -> Table {
    let now = Utc::now();
    let mut table = Table::new([
        "KEY ID",
        "NAME",
        "ROLE",
        "PREFIX",
        "SCOPES",
        "EXPIRES",
        "LAST USED",
        "STATUS",
    ]);
    for k in keys {
        let status = if k.revoked {
            "revoked"
        } else if k.expires_at.is_some_and(|at| at <= now) {
            "expired"
        } else {
            "active"
        };
        table.row([
            k.key_id.to_string(),
            k.name.clone(),
            k.role.to_string(),
            k.display_prefix.clone(),
            if k.scopes.is_empty() {
                "-".to_owned()
            } else {
                k.scopes.join(",")
            },
            optional_time(k.expires_at),
            optional_time(k.last_used_at),
            status.to_owned(),
        ]);
    }
    table
}

fn agents_table(agents: &[Agent]) -> Table {
    let now = Utc::now();
    let mut table = Table::new([
        "AGENT ID",
        "SERIAL",
        "NOT AFTER",
        "ENROLLED",
        "STATUS",
        "SPIFFE ID",
    ]);
    for a in agents {
        let status = if a.revoked {
            "revoked"
        } else if a.not_after <= now {
            "expired"
        } else {
            "active"
        };
        table.row([
            a.agent_id.to_string(),
            a.serial.clone(),
            time(a.not_after),
            time(a.enrolled_at),
            status.to_owned(),
            a.spiffe_id.clone(),
        ]);
    }
    table
}

fn enrollment_tokens_table(tokens: &[EnrollmentToken]) -> Table {
    let now = Utc::now();
    let mut table = Table::new(["TOKEN ID", "NAME", "PREFIX", "EXPIRES", "STATUS", "AGENT"]);
    for t in tokens {
        table.row([
            t.token_id.to_string(),
            t.name.clone(),
            t.display_prefix.clone(),
            time(t.expires_at),
            t.status(now).to_owned(),
            t.used_by_agent_id
                .map_or_else(|| "-".to_owned(), |a| a.to_string()),
        ]);
    }
    table
}

fn credentials_table(credentials: &[Credential]) -> Table {
    let mut table = Table::new([
        "CREDENTIAL ID",
        "NAME",
        "PURPOSE",
        "VERSION",
        "BYTES",
        "UPDATED",
        "KMS KEY",
        "VAULT REF",
    ]);
    for c in credentials {
        table.row([
            c.credential_id.to_string(),
            c.name.clone(),
            c.purpose.to_string(),
            c.version.to_string(),
            c.value_bytes.to_string(),
            time(c.updated_at),
            c.kms_key_id.clone(),
            c.vault_ref.clone(),
        ]);
    }
    table
}

fn rotation_table(r: &MasterKeyRotation) -> Table {
    let mut table = Table::new([
        "ROTATION",
        "STATE",
        "TO KEY",
        "PENDING AT START",
        "REWRAPPED",
        "REMAINING",
        "CURRENT KEY",
        "REASON",
    ]);
    let started = r.state != RotationState::None;
    let or_dash = |text: String| if started { text } else { "-".to_owned() };
    table.row([
        or_dash(r.number.to_string()),
        r.state.to_string(),
        or_dash(r.to_key_id.clone()),
        r.pending_at_start.to_string(),
        r.rewrapped.to_string(),
        r.remaining.to_string(),
        r.current_key_id.clone(),
        or_dash(r.reason.clone()),
    ]);
    table
}

fn coverage_table(coverage: &KeyCoverage) -> Table {
    let mut table = Table::new(["PURPOSE", "KMS KEY ID", "WRAPPED KEYS"]);
    for e in &coverage.entries {
        table.row([
            e.purpose.to_string(),
            e.kms_key_id.clone(),
            e.wrapped_keys.to_string(),
        ]);
    }
    table
}

/// Columns padded to their widest cell, separated by two spaces.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
    show_header: bool,
}

impl Table {
    fn new<const N: usize>(header: [&str; N]) -> Self {
        Self {
            header: header.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
            show_header: true,
        }
    }

    fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(cells.into());
    }

    fn without_header(mut self) -> Self {
        self.show_header = false;
        self
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<&Vec<String>> = self
            .show_header
            .then_some(&self.header)
            .into_iter()
            .chain(&self.rows)
            .collect();
        let mut widths = vec![0; self.header.len()];
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line.iter()) {
                *width = (*width).max(cell.chars().count());
            }
        }
        for line in lines {
            let mut text = String::new();
            for (i, (cell, width)) in line.iter().zip(&widths).enumerate() {
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
            writeln!(f, "{}", text.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_trim_trailing_space() {
        let mut table = Table::new(["ID", "EMAIL", "ROLE"]);
        table.row(["1".into(), "bob@acme.test".into(), "admin".into()]);
        table.row(["22".into(), "al@x.test".into(), "-".into()]);
        assert_eq!(
            table.to_string(),
            "ID  EMAIL          ROLE\n\
             1   bob@acme.test  admin\n\
             22  al@x.test      -\n"
        );
    }
}

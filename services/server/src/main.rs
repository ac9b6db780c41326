//! `coffer`: parse arguments, load config, init telemetry, run one command.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use coffer_server::cli::{AdminCommand, AuditCommand, Cli, Command};
use coffer_server::config::{Config, Overrides};
use coffer_server::startup::{Application, Target};
use coffer_server::{SCHEMAS, diag};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Verifying a bundle reads only local files: no configuration, server, API key or runtime.
    if let Command::Audit {
        connect,
        output,
        command: AuditCommand::Verify(args),
    } = &cli.command
    {
        return coffer_server::client::audit::verify_offline(args, connect.org, *output);
    }
    let runtime =
        tokio::runtime::Runtime::new().expect("a tokio runtime starts on any supported OS");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line naming what failed and where; the chain is joined with ": ".
            eprintln!("coffer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        command @ (Command::Org { .. }
        | Command::User { .. }
        | Command::Apikey { .. }
        | Command::Token { .. }
        | Command::Agent { .. }
        | Command::Credential { .. }
        | Command::OrgKey { .. }
        | Command::MasterKey { .. }
        | Command::Audit { .. }
        | Command::Database { .. }
        | Command::Destination { .. }
        | Command::Schedule { .. }
        | Command::Job { .. }
        | Command::Diag { .. }) => {
            let _telemetry = client_telemetry();
            Box::pin(coffer_server::client::run(command)).await
        }
        Command::Admin {
            command: AdminCommand::CreateLocalKmsKey { key_dir, key_id },
        } => {
            let path = coffer_kms::LocalKms::create_key(&key_dir, &coffer_kms::KeyId::new(key_id))
                .context("create local KMS key")?;
            println!("created {}", path.display());
            Ok(())
        }
        command => {
            let flags = match &command {
                Command::Serve { listen, .. } => Overrides { listen: *listen },
                _ => Overrides::default(),
            };
            let config = Config::load(cli.config.as_deref(), &flags)?;
            let _telemetry =
                coffer_telemetry::init(&config.telemetry).context("start telemetry")?;
            Box::pin(server_command(command, config)).await
        }
    }
}

async fn server_command(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Serve { target, .. } => {
            let app = Box::pin(Application::build(config, &target)).await?;
            app.run_until_stopped(shutdown_signal()).await
        }
        Command::Migrate => {
            coffer_db::migrate(&config.database, SCHEMAS).await?;
            println!(
                "migrated {} on {}",
                SCHEMAS
                    .iter()
                    .map(|s| s.service.schema())
                    .collect::<Vec<_>>()
                    .join(", "),
                config.database.target()
            );
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::Init { owner_email, json },
        } => {
            let kms_config = config
                .kms
                .as_ref()
                .context("`coffer admin init` needs [kms] configured")?;
            let kms = coffer_kms::from_config(kms_config)
                .await
                .context("open the KMS master key")?;
            let db =
                coffer_db::Database::connect(&config.database, coffer_enrollment::SERVICE).await?;
            let pki = config.pki.settings()?;
            let created = coffer_enrollment::app::init_platform(db, kms, pki, &owner_email).await?;
            let secret = created.owner_api_key.secret.expose();
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "org_id": created.org.org_id.to_string(),
                        "owner_user_id": created.owner.user_id.to_string(),
                        "owner_email": created.owner.email,
                        "api_key_id": created.owner_api_key.key.key_id.to_string(),
                        "api_key": secret,
                    })
                );
            } else {
                println!("initialised platform org {}", created.org.org_id);
                println!("owner {} ({})", created.owner.email, created.owner.user_id);
                println!(
                    "owner API key {} (shown once, store it now):",
                    created.owner_api_key.key.key_id
                );
                println!("{secret}");
            }
            Ok(())
        }
        Command::Admin {
            command: AdminCommand::RebuildProjections { service },
        } => {
            let (name, projections) = match service {
                Target::Enrollment => (
                    coffer_enrollment::SERVICE,
                    coffer_enrollment::app::projections(),
                ),
                Target::Diag => (diag::SERVICE, diag::projections()),
                Target::Credentials => (
                    coffer_credentials::SERVICE,
                    coffer_credentials::app::projections(),
                ),
                Target::Scheduling => (
                    coffer_scheduling::SERVICE,
                    coffer_scheduling::app::projections(),
                ),
                Target::Audit => anyhow::bail!(
                    "the audit service has no projections: its log is the record itself"
                ),
                Target::All => anyhow::bail!("--service must name one service"),
            };
            let opts = config.database.owner_options()?;
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect_with(&opts)
                .await
                .with_context(|| {
                    format!(
                        "connect to postgres at {} as the owner",
                        config.database.target()
                    )
                })?;
            let n = coffer_eventstore::rebuild(&mut conn, name, &projections).await?;
            println!("rebuilt projections of {} from {n} events", name.schema());
            Ok(())
        }
        Command::Org { .. }
        | Command::User { .. }
        | Command::Apikey { .. }
        | Command::Token { .. }
        | Command::Agent { .. }
        | Command::Credential { .. }
        | Command::OrgKey { .. }
        | Command::MasterKey { .. }
        | Command::Audit { .. }
        | Command::Database { .. }
        | Command::Destination { .. }
        | Command::Schedule { .. }
        | Command::Job { .. }
        | Command::Diag { .. }
        | Command::Admin { .. } => {
            unreachable!("handled before loading server config")
        }
    }
}

fn client_telemetry() -> Option<coffer_telemetry::TelemetryGuard> {
    let config = coffer_telemetry::TelemetryConfig {
        filter: "warn".into(),
        service_name: "coffer-cli".into(),
        ..Default::default()
    };
    coffer_telemetry::init(&config).ok()
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler succeeds on unix");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutdown requested");
}

//! `coffer database|destination|schedule|job …`: the database registry, storage destinations,
//! backup schedules and jobs.
//!
//! `change` commands take only the settings to change: they read the current ones and send
//! them back with the changes (the API replaces every field), so a change made by someone else
//! between the two calls is overwritten.

use anyhow::Context;
use coffer_sdk::{
    Client, Database, Destination, DestinationFields, DestinationKind, Job, JobQuery, OrgId,
    Schedule, ScheduleFields,
};
use serde_json::json;

use super::{Table, connect, optional_time, print, print_json, target_org, time};
use crate::cli::{
    ConnectArgs, DatabaseCommand, DestinationCommand, JobCommand, OutputArgs, S3Settings,
    ScheduleCommand, ScheduleSettings,
};

/// `coffer database …`.
pub(super) async fn database(
    args: &ConnectArgs,
    output: OutputArgs,
    command: DatabaseCommand,
) -> anyhow::Result<()> {
    let client = connect(args).await?;
    let org = target_org(&client, args);
    let databases = client.databases();
    let database = match command {
        DatabaseCommand::Register {
            name,
            engine,
            host,
            port,
            database,
            user,
            password_ref,
            agent,
        } => {
            let fields = coffer_sdk::DatabaseFields {
                name,
                engine,
                host,
                port,
                database,
                user,
                password_vault_ref: password_ref,
                agent_id: agent,
            };
            databases
                .register(org, &fields)
                .await
                .context("register database")?
        }
        DatabaseCommand::Change {
            database_id,
            name,
            engine,
            host,
            port,
            database,
            user,
            password_ref,
            agent,
        } => {
            let mut fields = databases
                .get(org, database_id)
                .await
                .context("get database")?
                .fields();
            if let Some(name) = name {
                fields.name = name;
            }
            if let Some(engine) = engine {
                // A new engine without a new port takes the new engine's default port.
                if engine != fields.engine && port.is_none() {
                    fields.port = None;
                }
                fields.engine = engine;
            }
            if let Some(host) = host {
                fields.host = host;
            }
            if let Some(port) = port {
                fields.port = Some(port);
            }
            if let Some(database) = database {
                fields.database = database;
            }
            if let Some(user) = user {
                fields.user = user;
            }
            if let Some(reference) = password_ref {
                fields.password_vault_ref = reference;
            }
            if let Some(agent) = agent {
                fields.agent_id = agent;
            }
            databases
                .change(org, database_id, &fields)
                .await
                .context("change database")?
        }
        DatabaseCommand::Get { database_id } => databases
            .get(org, database_id)
            .await
            .context("get database")?,
        DatabaseCommand::List => {
            let list = databases.list(org).await.context("list databases")?;
            return print(output, &list, || databases_table(&list));
        }
        DatabaseCommand::Remove {
            database_id,
            reason,
        } => {
            databases
                .remove(org, database_id, reason.as_deref().unwrap_or_default())
                .await
                .context("remove database")?;
            if output.json {
                return print_json(&json!({
                    "org_id": org,
                    "database_id": database_id,
                    "removed": true,
                }));
            }
            println!("removed database {database_id} from org {org}");
            return Ok(());
        }
    };
    print(output, &database, || {
        databases_table(std::slice::from_ref(&database))
    })
}

/// `coffer destination …`.
pub(super) async fn destination(
    args: &ConnectArgs,
    output: OutputArgs,
    command: DestinationCommand,
) -> anyhow::Result<()> {
    let client = connect(args).await?;
    let org = target_org(&client, args);
    let destinations = client.destinations();
    let destination = match command {
        DestinationCommand::RegisterS3 {
            name,
            endpoint,
            region,
            bucket,
            prefix,
            path_style,
            access_key_ref,
        } => {
            let fields = DestinationFields {
                name,
                kind: DestinationKind::S3 {
                    endpoint,
                    region,
                    bucket,
                    prefix,
                    path_style,
                    access_key_vault_ref: access_key_ref,
                },
            };
            destinations
                .register(org, &fields)
                .await
                .context("register destination")?
        }
        DestinationCommand::RegisterLocal { name, path } => {
            let fields = DestinationFields {
                name,
                kind: DestinationKind::Local { path },
            };
            destinations
                .register(org, &fields)
                .await
                .context("register destination")?
        }
        DestinationCommand::Change {
            destination_id,
            name,
            s3,
            path,
        } => {
            let mut fields = destinations
                .get(org, destination_id)
                .await
                .context("get destination")?
                .fields;
            if let Some(name) = name {
                fields.name = name;
            }
            fields.kind = change_kind(fields.kind, s3, path)?;
            destinations
                .change(org, destination_id, &fields)
                .await
                .context("change destination")?
        }
        DestinationCommand::Get { destination_id } => destinations
            .get(org, destination_id)
            .await
            .context("get destination")?,
        DestinationCommand::List => {
            let list = destinations.list(org).await.context("list destinations")?;
            return print(output, &list, || destinations_table(&list));
        }
        DestinationCommand::Remove {
            destination_id,
            reason,
        } => {
            destinations
                .remove(org, destination_id, reason.as_deref().unwrap_or_default())
                .await
                .context("remove destination")?;
            if output.json {
                return print_json(&json!({
                    "org_id": org,
                    "destination_id": destination_id,
                    "removed": true,
                }));
            }
            println!("removed destination {destination_id} from org {org}");
            return Ok(());
        }
        DestinationCommand::Probe { destination_id } => {
            // A failed probe is an error (`probe failed at <step>: <cause>`), so what is
            // printed here is always a pass.
            let probed = destinations
                .probe(org, destination_id)
                .await
                .context("probe destination")?;
            if output.json {
                return print_json(&json!({
                    "passed": true,
                    "destination": probed,
                }));
            }
            println!("probe passed: list, write, read back, delete");
            print!("{}", destinations_table(std::slice::from_ref(&probed)));
            return Ok(());
        }
    };
    print(output, &destination, || {
        destinations_table(std::slice::from_ref(&destination))
    })
}

/// `kind` with the flags given: `--path` makes (or keeps) it local; S3 flags change an S3
/// destination, or make a local one S3 when every setting without a default is given.
fn change_kind(
    kind: DestinationKind,
    s3: S3Settings,
    path: Option<String>,
) -> anyhow::Result<DestinationKind> {
    // clap refuses `--path` together with an S3 flag.
    if let Some(path) = path {
        return Ok(DestinationKind::Local { path });
    }
    match kind {
        DestinationKind::S3 {
            endpoint,
            region,
            bucket,
            prefix,
            path_style,
            access_key_vault_ref,
        } => Ok(DestinationKind::S3 {
            endpoint: s3.endpoint.unwrap_or(endpoint),
            region: s3.region.unwrap_or(region),
            bucket: s3.bucket.unwrap_or(bucket),
            prefix: s3.prefix.unwrap_or(prefix),
            path_style: s3.path_style.unwrap_or(path_style),
            access_key_vault_ref: s3.access_key_ref.unwrap_or(access_key_vault_ref),
        }),
        DestinationKind::Local { path } => match s3 {
            S3Settings {
                endpoint: None,
                region: None,
                bucket: None,
                prefix: None,
                path_style: None,
                access_key_ref: None,
            } => Ok(DestinationKind::Local { path }),
            S3Settings {
                endpoint: Some(endpoint),
                region: Some(region),
                bucket: Some(bucket),
                prefix,
                path_style,
                access_key_ref: Some(access_key_vault_ref),
            } => Ok(DestinationKind::S3 {
                endpoint,
                region,
                bucket,
                prefix: prefix.unwrap_or_default(),
                path_style: path_style.unwrap_or_default(),
                access_key_vault_ref,
            }),
            _ => anyhow::bail!(
                "a local destination becomes an S3 one only with all of --endpoint, --region, \
                 --bucket and --access-key-ref"
            ),
        },
    }
}

/// `coffer schedule …`.
pub(super) async fn schedule(
    args: &ConnectArgs,
    output: OutputArgs,
    command: ScheduleCommand,
) -> anyhow::Result<()> {
    let client = connect(args).await?;
    let org = target_org(&client, args);
    let schedules = client.schedules();
    let schedule = match command {
        ScheduleCommand::Create {
            name,
            database,
            destination,
            cron,
            settings,
        } => {
            let fields = apply(
                ScheduleFields::new(name, database, destination, cron),
                settings,
            );
            schedules
                .create(org, &fields)
                .await
                .context("create schedule")?
        }
        ScheduleCommand::Change {
            schedule_id,
            name,
            database,
            destination,
            cron,
            settings,
        } => {
            let mut fields = schedules
                .get(org, schedule_id)
                .await
                .context("get schedule")?
                .fields;
            if let Some(name) = name {
                fields.name = name;
            }
            if let Some(database) = database {
                fields.database_id = database;
            }
            if let Some(destination) = destination {
                fields.destination_id = destination;
            }
            if let Some(cron) = cron {
                fields.cron = cron;
            }
            let fields = apply(fields, settings);
            schedules
                .change(org, schedule_id, &fields)
                .await
                .context("change schedule")?
        }
        ScheduleCommand::Get { schedule_id } => schedules
            .get(org, schedule_id)
            .await
            .context("get schedule")?,
        ScheduleCommand::List => {
            let list = schedules.list(org).await.context("list schedules")?;
            return print(output, &list, || schedules_table(&list));
        }
        ScheduleCommand::Pause { schedule_id } => schedules
            .pause(org, schedule_id)
            .await
            .context("pause schedule")?,
        ScheduleCommand::Resume { schedule_id } => schedules
            .resume(org, schedule_id)
            .await
            .context("resume schedule")?,
        ScheduleCommand::Delete {
            schedule_id,
            reason,
        } => {
            schedules
                .delete(org, schedule_id, reason.as_deref().unwrap_or_default())
                .await
                .context("delete schedule")?;
            if output.json {
                return print_json(&json!({
                    "org_id": org,
                    "schedule_id": schedule_id,
                    "deleted": true,
                }));
            }
            println!("deleted schedule {schedule_id} from org {org}");
            return Ok(());
        }
    };
    print(output, &schedule, || {
        schedules_table(std::slice::from_ref(&schedule))
    })
}

/// The settings given on the command line over `fields`.
fn apply(mut fields: ScheduleFields, s: ScheduleSettings) -> ScheduleFields {
    if let Some(zone) = s.timezone {
        fields.timezone = zone;
    }
    if let Some(jitter) = s.jitter {
        fields.jitter = jitter;
    }
    if let Some(policy) = s.missed_runs {
        fields.missed_runs = policy;
    }
    let r = &mut fields.retention;
    for (value, slot) in [
        (s.keep_last, &mut r.keep_last),
        (s.keep_daily, &mut r.daily),
        (s.keep_weekly, &mut r.weekly),
        (s.keep_monthly, &mut r.monthly),
        (s.keep_yearly, &mut r.yearly),
    ] {
        if let Some(n) = value {
            *slot = n;
        }
    }
    if let Some(n) = s.max_attempts {
        fields.max_attempts = n;
    }
    fields
}

/// `coffer job …`.
pub(super) async fn job(
    args: &ConnectArgs,
    output: OutputArgs,
    command: JobCommand,
) -> anyhow::Result<()> {
    let client = connect(args).await?;
    let org = target_org(&client, args);
    let jobs = client.jobs();
    let job = match command {
        JobCommand::RunNow { schedule_id } => jobs
            .run_now(org, schedule_id)
            .await
            .context("run schedule now")?,
        JobCommand::Restore {
            backup_job_id,
            database,
        } => jobs
            .restore(org, backup_job_id, database)
            .await
            .context("start restore")?,
        JobCommand::Cancel { job_id, reason } => jobs
            .cancel(org, job_id, reason.as_deref().unwrap_or_default())
            .await
            .context("cancel job")?,
        JobCommand::Get { job_id } => {
            let job = jobs.get(org, job_id).await.context("get job")?;
            return print(output, &job, || job_detail(&job));
        }
        JobCommand::List {
            schedule,
            state,
            limit,
            page_token,
        } => return list_jobs(&client, org, output, schedule, state, limit, page_token).await,
    };
    print(output, &job, || jobs_table(std::slice::from_ref(&job)))
}

async fn list_jobs(
    client: &Client,
    org: OrgId,
    output: OutputArgs,
    schedule: Option<coffer_sdk::ScheduleId>,
    state: Option<coffer_sdk::JobState>,
    limit: Option<u32>,
    page_token: Option<String>,
) -> anyhow::Result<()> {
    let mut query = JobQuery::new();
    if let Some(schedule) = schedule {
        query = query.schedule(schedule);
    }
    if let Some(state) = state {
        query = query.state(state);
    }
    if let Some(n) = limit {
        query = query.page_size(n);
    }
    if let Some(token) = page_token {
        query = query.page_token(token);
    }
    let page = client.jobs().list(org, &query).await.context("list jobs")?;
    if output.json {
        return print_json(&json!({
            "jobs": page.items,
            "next_page_token": page.next_page_token,
        }));
    }
    print!("{}", jobs_table(&page.items));
    if let Some(token) = page.next_page_token {
        println!("next page: --page-token {token}");
    }
    Ok(())
}

fn databases_table(databases: &[Database]) -> Table {
    let mut table = Table::new([
        "DATABASE ID",
        "NAME",
        "ENGINE",
        "ADDRESS",
        "DATABASE",
        "USER",
        "AGENT",
        "VERSION",
        "PASSWORD REF",
    ]);
    for d in databases {
        let host = if d.host.contains(':') {
            format!("[{}]", d.host)
        } else {
            d.host.clone()
        };
        table.row([
            d.database_id.to_string(),
            d.name.clone(),
            d.engine.to_string(),
            format!("{host}:{}", d.port),
            d.database.clone(),
            d.user.clone(),
            d.agent_id.to_string(),
            d.version.to_string(),
            d.password_vault_ref.clone(),
        ]);
    }
    table
}

fn destinations_table(destinations: &[Destination]) -> Table {
    let mut table = Table::new([
        "DESTINATION ID",
        "NAME",
        "KIND",
        "LOCATION",
        "ENDPOINT",
        "REGION",
        "VERSION",
        "ACCESS KEY REF",
    ]);
    for d in destinations {
        let dash = || "-".to_owned();
        let (location, endpoint, region, key) = match &d.fields.kind {
            DestinationKind::S3 {
                endpoint,
                region,
                bucket,
                prefix,
                path_style,
                access_key_vault_ref,
            } => (
                format!("s3://{bucket}/{prefix}"),
                if *path_style {
                    format!("{endpoint} (path-style)")
                } else {
                    endpoint.clone()
                },
                region.clone(),
                access_key_vault_ref.clone(),
            ),
            DestinationKind::Local { path } => (path.clone(), dash(), dash(), dash()),
        };
        table.row([
            d.destination_id.to_string(),
            d.fields.name.clone(),
            d.fields.kind.as_str().to_owned(),
            location,
            endpoint,
            region,
            d.version.to_string(),
            key,
        ]);
    }
    table
}

fn schedules_table(schedules: &[Schedule]) -> Table {
    let mut table = Table::new([
        "SCHEDULE ID",
        "NAME",
        "CRON",
        "TIMEZONE",
        "STATUS",
        "NEXT RUN",
        "LAST DUE",
        "DATABASE",
        "DESTINATION",
        "KEEP",
    ]);
    for s in schedules {
        let f = &s.fields;
        table.row([
            s.schedule_id.to_string(),
            f.name.clone(),
            f.cron.clone(),
            f.timezone.clone(),
            if s.paused { "paused" } else { "active" }.to_owned(),
            optional_time(s.next_fire_at),
            optional_time(s.last_due_at),
            f.database_id.to_string(),
            f.destination_id.to_string(),
            f.retention.to_string(),
        ]);
    }
    table
}

fn jobs_table(jobs: &[Job]) -> Table {
    let mut table = Table::new([
        "JOB ID", "KIND", "STATE", "TRIGGER", "DUE", "ATTEMPT", "SCHEDULE", "FINISHED", "REASON",
    ]);
    for j in jobs {
        table.row([
            j.job_id.to_string(),
            j.kind.to_string(),
            state(j),
            j.trigger.to_string(),
            time(j.due_at),
            format!("{}/{}", j.attempt, j.max_attempts),
            j.schedule_id
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            optional_time(j.finished_at),
            j.reason.clone().unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    table
}

/// The state, and whether a cancellation is on its way to the agent.
fn state(j: &Job) -> String {
    if j.cancel_requested && !j.state.is_terminal() {
        format!("{} (cancelling)", j.state)
    } else {
        j.state.to_string()
    }
}

/// One job, field by field, with its progress and artifact when it has them.
fn job_detail(j: &Job) -> Table {
    let dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    let mut table = Table::new(["", ""]);
    table.row(["job".into(), j.job_id.to_string()]);
    table.row(["kind".into(), j.kind.to_string()]);
    table.row(["state".into(), state(j)]);
    table.row(["trigger".into(), j.trigger.to_string()]);
    table.row([
        "schedule".into(),
        dash(j.schedule_id.map(|s| s.to_string())),
    ]);
    table.row(["database".into(), j.database_id.to_string()]);
    table.row(["destination".into(), j.destination_id.to_string()]);
    table.row(["agent".into(), j.agent_id.to_string()]);
    if let Some(backup) = j.restore_of {
        table.row(["restores".into(), backup.to_string()]);
    }
    table.row(["due".into(), time(j.due_at)]);
    table.row(["not before".into(), time(j.not_before)]);
    table.row([
        "attempt".into(),
        format!("{} of {}", j.attempt, j.max_attempts),
    ]);
    table.row(["reason".into(), dash(j.reason.clone())]);
    if let Some(p) = &j.progress {
        table.row([
            "progress".into(),
            format!(
                "{} bytes read, {} written, {} bytes/s",
                p.bytes_read, p.bytes_written, p.bytes_per_second
            ),
        ]);
    }
    if let Some(a) = &j.artifact {
        table.row(["object".into(), a.object_key.clone()]);
        table.row(["size".into(), format!("{} bytes", a.size_bytes)]);
        table.row(["sha256".into(), a.sha256.clone()]);
        table.row(["recipient".into(), a.recipient.clone()]);
    }
    table.row(["created".into(), time(j.created_at)]);
    table.row(["finished".into(), optional_time(j.finished_at)]);
    table.without_header()
}

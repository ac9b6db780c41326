//! One claimed job, start to finish: heartbeats that report progress and carry cancellation,
//! the credentials its ticket releases, the pipeline, and the one report that ends it.
//!
//! Whatever happens, a backup leaves either a complete object at the key its claim named or
//! nothing (the upload is aborted), and the job ends with exactly one report: completion with
//! the artifact, failure with a reason, or confirmation of a cancellation. A claim that is lost
//! (lease expired, fencing token stale) stops the work without a report: the job is someone
//! else's now.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use coffer_proto::credentials::v1 as credentials;
use coffer_proto::credentials::v1::org_key_service_client::OrgKeyServiceClient;
use coffer_proto::credentials::v1::release_service_client::ReleaseServiceClient;
use coffer_proto::scheduling::v1 as pb;
use coffer_proto::scheduling::v1::agent_job_service_client::AgentJobServiceClient;
use coffer_storage::{AddressClass, Guard, Location, Policy, S3Key, Store};
use secrecy::{ExposeSecret as _, SecretString};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::pipeline::{self, Progress};
use crate::run::{Agent, Session};

/// How a job ended, before it is reported.
enum Outcome {
    /// A backup's artifact, or `None` for a restore.
    Succeeded(Option<pb::Artifact>),
    /// Why it failed.
    Failed(String),
    /// Stopped on the server's request.
    Cancelled,
    /// The claim is no longer ours: report nothing.
    Lost,
}

/// What a job needs, checked once from the claim.
struct Work {
    id: String,
    org: String,
    kind: String,
    token: u64,
    database: pb::JobDatabase,
    destination: pb::Destination,
    ticket: SecretString,
    object_key: String,
    restore_artifact: Option<pb::Artifact>,
}

impl Work {
    fn from_claim(claimed: pb::ClaimedJob) -> Result<Self, (String, u64, String)> {
        let job = claimed.job.unwrap_or_default();
        let fail = |reason: &str| (job.job_id.clone(), claimed.fencing_token, reason.to_owned());
        let database = claimed
            .database
            .ok_or_else(|| fail("the claim names no database"))?;
        let destination = claimed
            .destination
            .ok_or_else(|| fail("the claim names no destination"))?;
        if job.kind == "backup" && claimed.object_key.is_empty() {
            return Err(fail("the claim names no object key"));
        }
        if job.kind == "restore" && claimed.restore_artifact.is_none() {
            return Err(fail("the claim names no backup to restore"));
        }
        Ok(Self {
            id: job.job_id,
            org: job.org_id,
            kind: job.kind,
            token: claimed.fencing_token,
            database,
            destination,
            ticket: SecretString::from(claimed.ticket),
            object_key: claimed.object_key,
            restore_artifact: claimed.restore_artifact,
        })
    }
}

/// Runs one claimed job and reports how it ended; holds `slot` until then.
pub async fn execute(
    agent: Arc<Agent>,
    session: Arc<Session>,
    claimed: pb::ClaimedJob,
    slot: OwnedSemaphorePermit,
) {
    let job = claimed.job.clone().unwrap_or_default();
    let span = tracing::info_span!(
        "job",
        org_id = %job.org_id,
        job_id = %job.job_id,
        kind = %job.kind,
        attempt = job.attempt,
    );
    async move {
        let mut client = AgentJobServiceClient::new(session.channel.clone());
        let work = match Work::from_claim(claimed) {
            Ok(work) => work,
            Err((id, token, reason)) => {
                report(&agent, &mut client, &id, token, Outcome::Failed(reason)).await;
                return;
            }
        };
        tracing::info!("job started");
        let progress = Arc::new(Progress::new());
        let cancel = CancellationToken::new();
        let lost = CancellationToken::new();
        let beats = tokio::spawn(heartbeats(
            agent.clone(),
            client.clone(),
            work.id.clone(),
            work.token,
            progress.clone(),
            cancel.clone(),
            lost.clone(),
        ));
        let outcome = match work.kind.as_str() {
            "backup" => backup(&agent, &session, &work, progress, cancel.clone()).await,
            "restore" => restore(&agent, &session, &work, progress, cancel.clone()).await,
            other => Err(format!("this agent does not run {other} jobs")),
        };
        beats.abort();
        let outcome = match outcome {
            _ if lost.is_cancelled() => Outcome::Lost,
            Ok(artifact) => Outcome::Succeeded(artifact),
            Err(_) if cancel.is_cancelled() => Outcome::Cancelled,
            Err(reason) => Outcome::Failed(one_line(&reason)),
        };
        report(&agent, &mut client, &work.id, work.token, outcome).await;
        drop(slot);
    }
    .instrument(span)
    .await;
}

/// Reports progress every heartbeat interval, extending the lease; cancels the work when the
/// server asks, and marks the claim lost when the server no longer knows it as ours.
async fn heartbeats(
    agent: Arc<Agent>,
    mut client: AgentJobServiceClient<tonic::transport::Channel>,
    id: String,
    token: u64,
    progress: Arc<Progress>,
    cancel: CancellationToken,
    lost: CancellationToken,
) {
    let every = agent.config.jobs.heartbeat;
    let mut last = (Instant::now(), progress.bytes_written());
    loop {
        let (then, written_then) = last;
        let written = progress.bytes_written();
        let elapsed = then.elapsed().as_secs_f64().max(0.001);
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let rate = (written.saturating_sub(written_then) as f64 / elapsed) as u64;
        last = (Instant::now(), written);
        let request = pb::HeartbeatRequest {
            job_id: id.clone(),
            fencing_token: token,
            progress: Some(pb::Progress {
                bytes_read: progress.bytes_read(),
                bytes_written: written,
                bytes_per_second: rate,
            }),
        };
        match client.heartbeat(request).await {
            Ok(reply) if reply.get_ref().cancel_requested => {
                tracing::info!("cancellation requested: stopping");
                cancel.cancel();
            }
            Ok(_) => {}
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::FailedPrecondition | tonic::Code::NotFound
                ) =>
            {
                tracing::warn!(message = status.message(), "the claim is lost: stopping");
                lost.cancel();
                cancel.cancel();
                return;
            }
            Err(status) => {
                agent.saw(&status);
                tracing::warn!(code = ?status.code(), message = status.message(), "heartbeat failed");
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Longest failure reason reported (the server allows 500 characters).
const MAX_REASON_CHARS: usize = 480;

/// `reason` as the server takes it: one line (a program's stderr lines joined with ` | `), no
/// control characters, at most [`MAX_REASON_CHARS`] characters.
fn one_line(reason: &str) -> String {
    let joined = reason
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    let clean: String = joined.chars().filter(|c| !c.is_control()).collect();
    match clean.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &clean[..cut]),
        None => clean,
    }
}

/// The one report that ends a job; retried a few times while the server is unreachable.
async fn report(
    agent: &Agent,
    client: &mut AgentJobServiceClient<tonic::transport::Channel>,
    id: &str,
    token: u64,
    outcome: Outcome,
) {
    for attempt in 1..=5u32 {
        let result = match &outcome {
            Outcome::Lost => return,
            Outcome::Succeeded(artifact) => client
                .complete_job(pb::CompleteJobRequest {
                    job_id: id.to_owned(),
                    fencing_token: token,
                    artifact: artifact.clone(),
                })
                .await
                .map(drop),
            Outcome::Failed(reason) => client
                .fail_job(pb::FailJobRequest {
                    job_id: id.to_owned(),
                    fencing_token: token,
                    reason: reason.clone(),
                })
                .await
                .map(drop),
            Outcome::Cancelled => client
                .confirm_cancelled(pb::ConfirmCancelledRequest {
                    job_id: id.to_owned(),
                    fencing_token: token,
                })
                .await
                .map(drop),
        };
        match result {
            Ok(()) => {
                match &outcome {
                    Outcome::Succeeded(_) => tracing::info!("job succeeded"),
                    Outcome::Failed(reason) => tracing::warn!(%reason, "job failed"),
                    Outcome::Cancelled => tracing::info!("job cancelled"),
                    Outcome::Lost => {}
                }
                return;
            }
            Err(status) if status.code() == tonic::Code::Unavailable && attempt < 5 => {
                tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
            }
            Err(status) => {
                agent.saw(&status);
                tracing::error!(code = ?status.code(), message = status.message(), "reporting the job's end failed");
                return;
            }
        }
    }
}

/// The credentials the job's ticket names, by vault reference.
struct Released(Vec<credentials::ReleasedCredential>);

impl Released {
    fn value(&self, vault_ref: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|c| c.vault_ref == vault_ref)
            .map(|c| c.value.as_slice())
    }
}

impl Drop for Released {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for credential in &mut self.0 {
            credential.value.zeroize();
        }
    }
}

async fn release(agent: &Agent, session: &Session, work: &Work) -> Result<Released, String> {
    ReleaseServiceClient::new(session.channel.clone())
        .release_credentials(credentials::ReleaseCredentialsRequest {
            ticket: work.ticket.expose_secret().to_owned(),
        })
        .await
        .map(|reply| Released(reply.into_inner().credentials))
        .map_err(|status| {
            agent.saw(&status);
            format!(
                "the credentials service refused the job's credentials: {}",
                status.message()
            )
        })
}

/// Opens the job's destination, with the released access key for a bucket.
async fn open_store(agent: &Agent, work: &Work, released: &Released) -> Result<Store, String> {
    let allow = agent
        .config
        .storage
        .ssrf_allow
        .iter()
        .filter_map(|c| AddressClass::parse(c));
    let policy = Policy::new(allow, agent.config.storage.local_roots.clone())
        .map_err(|e| format!("storage.local_roots: {e}"))?;
    let guard = Guard::new(policy);
    let (location, key) = match &work.destination.kind {
        Some(pb::destination::Kind::S3(s3)) => {
            let endpoint = s3
                .endpoint
                .parse()
                .map_err(|_| "the destination's endpoint does not parse".to_owned())?;
            let value = released
                .value(&s3.access_key_vault_ref)
                .ok_or("the ticket released no access key for the destination")?;
            let key =
                S3Key::from_json(value).map_err(|e| format!("the destination's access key {e}"))?;
            (
                Location::S3 {
                    endpoint,
                    region: s3.region.clone(),
                    bucket: s3.bucket.clone(),
                    prefix: s3.prefix.clone(),
                    path_style: s3.path_style,
                },
                Some(key),
            )
        }
        Some(pb::destination::Kind::Local(local)) => (
            Location::Local {
                root: local.path.clone().into(),
            },
            None,
        ),
        None => return Err("the claim's destination has no kind".into()),
    };
    Store::open(&location, key, &guard)
        .await
        .map_err(|e| format!("opening the destination: {e}"))
}

/// The database password the ticket released.
fn password(work: &Work, released: &Released) -> Result<SecretString, String> {
    let value = released
        .value(&work.database.password_vault_ref)
        .ok_or("the ticket released no password for the database")?;
    let text = std::str::from_utf8(value)
        .map_err(|_| "the database password is not UTF-8 text".to_owned())?;
    Ok(SecretString::from(text.to_owned()))
}

/// Dumps, compresses, encrypts and uploads; the artifact on success, and on any failure an
/// aborted upload that leaves nothing behind.
async fn backup(
    agent: &Agent,
    session: &Session,
    work: &Work,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<Option<pb::Artifact>, String> {
    let recipient = OrgKeyServiceClient::new(session.channel.clone())
        .get_org_recipient(credentials::GetOrgRecipientRequest {
            org_id: work.org.clone(),
        })
        .await
        .map_err(|status| {
            agent.saw(&status);
            format!("reading the org's age recipient: {}", status.message())
        })?
        .into_inner()
        .recipient;
    let released = release(agent, session, work).await?;
    let password = password(work, &released)?;
    let store = open_store(agent, work, &released).await?;
    drop(released);
    let spec = crate::engine::backup_spec(&agent.config, &work.database, password, &recipient)?;

    let mut upload = store
        .upload(&work.object_key)
        .await
        .map_err(|e| format!("starting the upload: {e}"))?;
    let (sink, mut chunks) = mpsc::channel::<Bytes>(4);
    let dump = pipeline::backup(spec, sink, progress, cancel.clone());
    let send = async {
        while let Some(chunk) = chunks.recv().await {
            upload.write(chunk).await?;
        }
        Ok::<_, coffer_storage::Error>(())
    };
    let (dumped, sent) = tokio::join!(dump, send);
    let outcome = match (dumped, sent) {
        (_, Err(e)) => Err(format!("uploading to the destination: {e}")),
        (Err(e), Ok(())) => Err(e.to_string()),
        (Ok(outcome), Ok(())) => Ok(outcome),
    };
    let outcome = match outcome {
        Ok(outcome) if !cancel.is_cancelled() => outcome,
        Ok(_) | Err(_) => {
            if let Err(e) = upload.abort().await {
                tracing::warn!(error = %e, "aborting the upload");
            }
            return Err(outcome.err().unwrap_or_else(|| "cancelled".into()));
        }
    };
    let size = upload
        .finish()
        .await
        .map_err(|e| format!("completing the upload: {e}"))?;
    if size != outcome.size_bytes {
        return Err(format!(
            "the destination holds {size} bytes, the pipeline wrote {}",
            outcome.size_bytes
        ));
    }
    Ok(Some(pb::Artifact {
        object_key: work.object_key.clone(),
        size_bytes: size,
        sha256: outcome.sha256,
        recipient: outcome.recipient,
        age_header_sha256: outcome.age_header_sha256,
        dump_bytes: outcome.bytes_read,
    }))
}

/// Downloads, has the file key unwrapped for this job, decrypts, decompresses and restores.
async fn restore(
    agent: &Agent,
    session: &Session,
    work: &Work,
    progress: Arc<Progress>,
    cancel: CancellationToken,
) -> Result<Option<pb::Artifact>, String> {
    let artifact = work
        .restore_artifact
        .as_ref()
        .ok_or("the claim names no backup to restore")?;
    let released = release(agent, session, work).await?;
    let password = password(work, &released)?;
    let store = open_store(agent, work, &released).await?;
    drop(released);
    let mut download = store
        .download(&artifact.object_key)
        .await
        .map_err(|e| format!("reading the backup {}: {e}", artifact.object_key))?;
    let header = pipeline::read_age_header(&mut download)
        .await
        .map_err(|e| e.to_string())?;
    let unwrapped = ReleaseServiceClient::new(session.channel.clone())
        .unwrap_file_key(credentials::UnwrapFileKeyRequest {
            ticket: work.ticket.expose_secret().to_owned(),
            header: header.clone(),
        })
        .await
        .map_err(|status| {
            agent.saw(&status);
            format!(
                "the credentials service refused the backup's file key: {}",
                status.message()
            )
        })?
        .into_inner();
    // The response wipes its copy of the key when dropped (`coffer_proto`'s zeroize_on_drop).
    let file_key = pipeline::FileKey::from_slice(&unwrapped.file_key).map_err(|e| e.to_string())?;
    drop(unwrapped);
    let mut spec = crate::engine::restore_spec(&agent.config, &work.database, password)?;
    // The backup decompresses to what its dump program wrote, and not a byte more.
    if artifact.dump_bytes > 0 {
        spec.max_output_bytes = spec.max_output_bytes.min(artifact.dump_bytes);
    }
    pipeline::restore(
        header,
        download,
        file_key,
        &artifact.sha256,
        spec,
        progress,
        cancel,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons_are_one_clean_line_of_bounded_length() {
        assert_eq!(
            one_line("pg_dump failed (exit status: 1):\npg_dump: error: connection\n\tfailed\n"),
            "pg_dump failed (exit status: 1): | pg_dump: error: connection | failed"
        );
        let long = one_line(&"é".repeat(5000));
        assert_eq!(long.chars().count(), MAX_REASON_CHARS + 1);
    }
}

//! `coffer-agent run`: connect over mutual TLS, take jobs, renew the certificate at 80 % of its
//! lifetime, and watch the org's CRL, halting for good once the agent finds itself on it.
//!
//! Everything here is outbound: long polls for jobs, heartbeats, credential releases, uploads.
//! The agent opens no listening socket.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::Utc;
use coffer_proto::enrollment::v1 as enrollment;
use coffer_proto::enrollment::v1::agent_service_client::AgentServiceClient;
use coffer_proto::scheduling::v1 as pb;
use coffer_proto::scheduling::v1::agent_job_service_client::AgentJobServiceClient;
use tokio::sync::{Notify, Semaphore, watch};
use tonic::transport::Channel;

use crate::config::Config;
use crate::identity::{self, Identity};
use crate::status::Status;
use crate::{connect, crl, job};

/// Why `run` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// Asked to stop.
    Shutdown,
    /// The agent's certificate is on its org's CRL: it halted and must be enrolled again.
    Revoked {
        /// The revoked certificate's serial.
        serial: String,
    },
}

/// Why `run` could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The identity is missing or unreadable.
    #[error(transparent)]
    Identity(#[from] identity::Error),
    /// The connection cannot be set up.
    #[error(transparent)]
    Connect(#[from] connect::Error),
    /// The status directory cannot be written.
    #[error("status directory {path}: {cause}")]
    Status {
        /// The directory.
        path: std::path::PathBuf,
        /// The system's error.
        cause: std::io::Error,
    },
}

/// The current certificate and the channel that presents it; replaced whole on renewal.
#[derive(Debug)]
pub struct Session {
    /// The identity the channel presents.
    pub identity: Arc<Identity>,
    /// Mutual TLS to the server.
    pub channel: Channel,
}

/// What every task of a running agent shares.
#[derive(Debug)]
pub struct Agent {
    /// The configuration.
    pub config: Config,
    /// Guarded so renewal can swap identity and channel together; readers clone the `Arc`.
    session: RwLock<Arc<Session>>,
    /// Wakes the CRL watcher at once (a call was refused as revoked).
    check_crl: Notify,
    /// Set once the agent is revoked; every loop stops on it.
    halt: watch::Sender<Option<String>>,
}

impl Agent {
    /// The current session.
    pub fn session(&self) -> Arc<Session> {
        self.session
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Notes a refused call: a revoked certificate sends the CRL watcher to confirm it.
    pub fn saw(&self, status: &tonic::Status) {
        if status.code() == tonic::Code::Unauthenticated && status.message().contains("revoked") {
            self.check_crl.notify_one();
        }
    }
}

/// Runs the agent until `shutdown` completes or the agent finds itself revoked.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<Stopped, Error> {
    let identity = Arc::new(Identity::load(&config.identity_dir)?);
    let status = Status::open(&config.status_dir).map_err(|cause| Error::Status {
        path: config.status_dir.clone(),
        cause,
    })?;
    let channel = connect::agent_channel(&identity, config.allow_insecure)?;
    tracing::info!(
        org_id = %identity.record.org_id,
        agent_id = %identity.record.agent_id,
        server = %identity.record.server,
        serial = %identity.record.serial,
        "agent starting"
    );
    let (halt, mut halted) = watch::channel(None);
    let agent = Arc::new(Agent {
        config,
        session: RwLock::new(Arc::new(Session { identity, channel })),
        check_crl: Notify::new(),
        halt,
    });

    let tasks = [
        tokio::spawn(watch_crl(agent.clone())),
        tokio::spawn(renew(agent.clone())),
        tokio::spawn(heartbeat_status(agent.clone(), status.clone())),
        tokio::spawn(take_jobs(agent.clone(), status.clone())),
    ];
    tokio::pin!(shutdown);
    let stopped = tokio::select! {
        () = &mut shutdown => Stopped::Shutdown,
        serial = halted.wait_for(Option::is_some) => Stopped::Revoked {
            serial: serial.ok().and_then(|s| s.clone()).unwrap_or_default(),
        },
    };
    for task in &tasks {
        task.abort();
    }
    let result = match &stopped {
        Stopped::Shutdown => status.stopped(),
        Stopped::Revoked { serial } => status.halted(&format!(
            "the agent's certificate {serial} is on its org's CRL: it was revoked; \
             enroll again with a new token"
        )),
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "writing the status files");
    }
    Ok(stopped)
}

/// Fetches and verifies the org's CRL every `crl_interval` (and at once when a call was
/// refused as revoked); halts the agent when its serial is listed.
async fn watch_crl(agent: Arc<Agent>) {
    loop {
        let session = agent.session();
        let record = &session.identity.record;
        let mut client = AgentServiceClient::new(session.channel.clone());
        let request = enrollment::GetCrlRequest {
            org_id: record.org_id.clone(),
        };
        match client.get_crl(request).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                match crl::check(
                    &reply.der,
                    &session.identity.intermediate_pem,
                    &record.serial,
                ) {
                    Ok(verdict) if verdict.revoked => {
                        tracing::error!(
                            serial = %record.serial,
                            crl_number = reply.number,
                            "this agent's certificate is on its org's CRL: halting"
                        );
                        agent.halt.send_replace(Some(record.serial.clone()));
                        return;
                    }
                    Ok(verdict) => {
                        if verdict.next_update.is_some_and(|next| next < Utc::now()) {
                            tracing::warn!(crl_number = reply.number, "the org's CRL is stale");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "the org's CRL is refused"),
                }
            }
            Err(status) => {
                tracing::warn!(code = ?status.code(), message = status.message(), "fetching the org's CRL")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(agent.config.crl_interval) => {}
            () = agent.check_crl.notified() => {}
        }
    }
}

/// Renews the certificate at 80 % of its lifetime with a new key; retries every 30 s (or
/// sooner, near expiry) until the server answers.
async fn renew(agent: Arc<Agent>) {
    loop {
        let session = agent.session();
        let due = session.identity.record.renew_at();
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep(wait).await;
        match renew_once(&agent, &session).await {
            Ok(()) => {}
            Err(message) => {
                tracing::warn!(error = %message, "renewing the certificate failed; retrying");
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        }
    }
}

async fn renew_once(agent: &Agent, session: &Session) -> Result<(), String> {
    let key = identity::new_key_and_csr().map_err(|e| e.to_string())?;
    let mut client = AgentServiceClient::new(session.channel.clone());
    let answer = client
        .renew(enrollment::RenewRequest {
            csr: key.csr_pem.clone().into_bytes(),
        })
        .await
        .map_err(|status| {
            agent.saw(&status);
            format!("{:?}: {}", status.code(), status.message())
        })?
        .into_inner();
    let identity = Identity::store(
        session.identity.dir(),
        &session.identity.record.server,
        &key,
        &answer,
        None,
    )
    .map_err(|e| e.to_string())?;
    let channel = connect::agent_channel(&identity, agent.config.allow_insecure)
        .map_err(|e| e.to_string())?;
    tracing::info!(
        serial = %identity.record.serial,
        not_after = %identity.record.not_after,
        "certificate renewed"
    );
    *agent
        .session
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(Session {
        identity: Arc::new(identity),
        channel,
    });
    Ok(())
}

/// Touches the liveness file every few seconds.
async fn heartbeat_status(agent: Arc<Agent>, status: Status) {
    let every = agent.config.jobs.heartbeat.min(Duration::from_secs(5));
    loop {
        if let Err(e) = status.alive() {
            tracing::warn!(error = %e, "writing the liveness file");
        }
        tokio::time::sleep(every).await;
    }
}

/// Long-polls for jobs while a slot is free, and runs each claimed job in its own task.
async fn take_jobs(agent: Arc<Agent>, status: Status) {
    let slots = Arc::new(Semaphore::new(agent.config.jobs.concurrency));
    let mut failures = 0u32;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let session = agent.session();
        let mut client = AgentJobServiceClient::new(session.channel.clone());
        let wait = u32::try_from(agent.config.jobs.poll_wait.as_secs()).unwrap_or(u32::MAX);
        match client
            .poll_jobs(pb::PollJobsRequest { wait_seconds: wait })
            .await
        {
            Ok(reply) => {
                failures = 0;
                if let Err(e) = status.set_ready(true) {
                    tracing::warn!(error = %e, "writing the readiness file");
                }
                if let Some(claimed) = reply.into_inner().claimed {
                    tokio::spawn(job::execute(agent.clone(), session, claimed, slot));
                }
            }
            Err(refused) => {
                agent.saw(&refused);
                failures = failures.saturating_add(1);
                if let Err(e) = status.set_ready(false) {
                    tracing::warn!(error = %e, "writing the readiness file");
                }
                tracing::warn!(
                    code = ?refused.code(),
                    message = refused.message(),
                    "polling for jobs failed"
                );
                // 1 s, 2 s, 4 s … at most 30 s between attempts while the server is away.
                let backoff =
                    Duration::from_secs(1 << failures.min(5)).min(Duration::from_secs(30));
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

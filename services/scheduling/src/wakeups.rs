//! Wake-ups: how a job that becomes claimable reaches an agent that is long-polling, on any
//! replica, within a second.
//!
//! Whoever makes a job claimable (the scheduler firing a run, `RunNow`, a restore, a retry whose
//! backoff ran out, a requeue) publishes an empty core-NATS message on
//! `<root>.wake.<org>.<agent>` after its transaction commits. Every replica subscribes once to
//! `<root>.wake.>` and wakes the polls of that agent waiting on it. A lost wake-up costs at
//! most one poll's wait, since a poll always looks in the database first and again when its
//! wait ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use coffer_eventstore::BusConfig;
use coffer_types::{AgentId, OrgId};
use futures::StreamExt;
use tokio::sync::Notify;

/// The wake-up subjects' root for a bus: beside the event subjects, outside the event stream.
fn root(bus: &BusConfig) -> String {
    let base = bus
        .subject_prefix
        .strip_suffix(".events")
        .unwrap_or(&bus.subject_prefix);
    format!("{base}.wake")
}

/// Wake-ups of this process's waiting polls.
#[derive(Clone)]
pub struct Wakeups {
    client: async_nats::Client,
    root: String,
    /// One `Notify` per agent with a waiting poll; entries are dropped when no poll holds them.
    waiting: Arc<Mutex<HashMap<AgentId, Arc<Notify>>>>,
}

impl std::fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wakeups")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

impl Wakeups {
    /// Subscribes to every wake-up and dispatches them until the client closes.
    pub async fn start(client: async_nats::Client, bus: &BusConfig) -> Result<Self, String> {
        let root = root(bus);
        let mut subscription = client
            .subscribe(format!("{root}.>"))
            .await
            .map_err(|e| format!("subscribe to {root}.>: {e}"))?;
        let wakeups = Wakeups {
            client,
            root,
            waiting: Arc::new(Mutex::new(HashMap::new())),
        };
        let waiting = wakeups.waiting.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                // <root>.<org>.<agent>: the last token names the agent.
                let agent = message
                    .subject
                    .rsplit('.')
                    .next()
                    .and_then(|a| a.parse::<uuid::Uuid>().ok())
                    .map(AgentId::from);
                if let Some(agent) = agent {
                    let notify = waiting.lock().expect("never poisoned").get(&agent).cloned();
                    if let Some(notify) = notify {
                        notify.notify_waiters();
                    }
                }
            }
        });
        Ok(wakeups)
    }

    /// Tells every replica that `agent` of `org` has a claimable job. Best effort: a lost
    /// message delays the job by at most one poll's wait.
    pub async fn wake(&self, org: OrgId, agent: AgentId) {
        let subject = format!("{}.{org}.{agent}", self.root);
        if let Err(e) = self.client.publish(subject, bytes::Bytes::new()).await {
            tracing::warn!(error = %e, %org, %agent, "cannot publish a job wake-up");
        }
    }

    /// The `Notify` a poll of `agent` waits on; drop the returned guard when done.
    pub fn listen(&self, agent: AgentId) -> Listener {
        let notify = self
            .waiting
            .lock()
            .expect("never poisoned")
            .entry(agent)
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone();
        Listener {
            wakeups: self.clone(),
            agent,
            notify,
        }
    }
}

/// A waiting poll's hold on its agent's `Notify`.
#[derive(Debug)]
pub struct Listener {
    wakeups: Wakeups,
    agent: AgentId,
    notify: Arc<Notify>,
}

impl Listener {
    /// The `Notify` to wait on.
    pub fn notify(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut waiting = self.wakeups.waiting.lock().expect("never poisoned");
        // Ours and the map's: nobody else waits, so the entry goes.
        if Arc::strong_count(&self.notify) <= 2 {
            waiting.remove(&self.agent);
        }
    }
}

//! JetStream layout: the event stream, the dead-letter stream, and subject names.

use std::time::Duration;

use async_nats::jetstream;
use coffer_types::OrgId;

use crate::Error;

/// Header names Coffer puts on event messages, besides `Nats-Msg-Id` and W3C trace context.
pub mod headers {
    /// The event type, so consumers can route without decoding.
    pub const EVENT_TYPE: &str = "Coffer-Event-Type";
    /// The tenant.
    pub const ORG_ID: &str = "Coffer-Org-Id";
    /// The aggregate, so consumers can keep one aggregate's events in order without decoding.
    pub const AGGREGATE_ID: &str = "Coffer-Aggregate-Id";
    /// On a dead letter: why it was dead-lettered.
    pub const DLQ_REASON: &str = "Coffer-Dlq-Reason";
    /// On a dead letter: the consumer that gave up.
    pub const DLQ_CONSUMER: &str = "Coffer-Dlq-Consumer";
    /// On a dead letter: the subject it was first published on.
    pub const DLQ_SUBJECT: &str = "Coffer-Dlq-Subject";
    /// On a dead letter: its sequence in the event stream.
    pub const DLQ_SEQUENCE: &str = "Coffer-Dlq-Stream-Sequence";
    /// On a dead letter: how many times it was delivered.
    pub const DLQ_DELIVERED: &str = "Coffer-Dlq-Delivered";
}

/// Where events travel. Tests give each run its own names so runs never see each other.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default)]
pub struct BusConfig {
    /// The event stream (`COFFER_EVENTS`).
    pub stream: String,
    /// Subjects are `<subject_prefix>.<org_id>.<service>.<event_type>`.
    pub subject_prefix: String,
    /// The stream that keeps dead letters.
    pub dlq_stream: String,
    /// Dead letters go to `<dlq_prefix>.<consumer>`.
    pub dlq_prefix: String,
    /// Stream replicas: 1 in development, 3 in production.
    pub replicas: usize,
    /// JetStream's deduplication window for `Nats-Msg-Id` (at least two minutes).
    #[serde(with = "humantime_serde")]
    pub duplicate_window: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            stream: "COFFER_EVENTS".into(),
            subject_prefix: "coffer.events".into(),
            dlq_stream: "COFFER_DEAD_LETTERS".into(),
            dlq_prefix: "coffer.dlq".into(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
        }
    }
}

impl BusConfig {
    /// A config whose stream and subject names all start with `prefix`, for isolated tests.
    pub fn with_prefix(prefix: &str) -> Self {
        let upper = prefix.to_uppercase().replace(['.', '-'], "_");
        Self {
            stream: format!("{upper}_COFFER_EVENTS"),
            subject_prefix: format!("{prefix}.coffer.events"),
            dlq_stream: format!("{upper}_COFFER_DEAD_LETTERS"),
            dlq_prefix: format!("{prefix}.coffer.dlq"),
            ..Self::default()
        }
    }

    /// The subject an event of `service` is published on.
    pub fn subject(&self, org: OrgId, service: &str, event_type: &str) -> String {
        format!("{}.{org}.{service}.{event_type}", self.subject_prefix)
    }

    /// A filter matching every event of `service` (all orgs, all types).
    pub fn service_filter(&self, service: &str) -> String {
        format!("{}.*.{service}.*", self.subject_prefix)
    }

    /// A filter matching every event of every service and org.
    pub fn all_filter(&self) -> String {
        format!("{}.>", self.subject_prefix)
    }

    /// A filter matching one event type of `service` in every org.
    pub fn event_filter(&self, service: &str, event_type: &str) -> String {
        format!("{}.*.{service}.{event_type}", self.subject_prefix)
    }

    /// The dead-letter subject of a consumer.
    pub fn dlq_subject(&self, consumer: &str) -> String {
        format!("{}.{consumer}", self.dlq_prefix)
    }

    /// Refuses settings that would lose events.
    pub fn validate(&self) -> Result<(), String> {
        if self.duplicate_window < Duration::from_secs(120) {
            return Err("nats.duplicate_window must be at least 2m (DESIGN §3)".into());
        }
        if self.replicas == 0 || self.replicas > 5 {
            return Err("nats.replicas must be between 1 and 5".into());
        }
        for (field, v) in [
            ("nats.stream", &self.stream),
            ("nats.dlq_stream", &self.dlq_stream),
        ] {
            if v.is_empty() || v.contains(['.', '*', '>', ' ']) {
                return Err(format!(
                    "{field} must be a non-empty name without '.', '*', '>' or spaces"
                ));
            }
        }
        Ok(())
    }

    /// Creates the event and dead-letter streams if missing (file storage, dedup window).
    pub async fn ensure_streams(&self, js: &jetstream::Context) -> Result<(), Error> {
        for (name, subject) in [
            (&self.stream, format!("{}.>", self.subject_prefix)),
            (&self.dlq_stream, format!("{}.>", self.dlq_prefix)),
        ] {
            js.get_or_create_stream(jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![subject],
                storage: jetstream::stream::StorageType::File,
                num_replicas: self.replicas,
                duplicate_window: self.duplicate_window,
                ..Default::default()
            })
            .await
            .map_err(Error::nats)?;
        }
        Ok(())
    }
}

/// A message a consumer gave up on, as read back from the dead-letter stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// The consumer that gave up.
    pub consumer: String,
    /// Why.
    pub reason: String,
    /// The subject the message was originally published on.
    pub original_subject: String,
    /// The original payload, unchanged.
    pub payload: bytes::Bytes,
}

impl DeadLetter {
    /// Reads a dead letter from a message on the dead-letter stream.
    pub fn from_message(msg: &async_nats::Message) -> Option<Self> {
        let h = msg.headers.as_ref()?;
        let get = |k: &str| h.get(k).map(|v| v.as_str().to_owned());
        Some(Self {
            consumer: get(headers::DLQ_CONSUMER)?,
            reason: get(headers::DLQ_REASON)?,
            original_subject: get(headers::DLQ_SUBJECT)?,
            payload: msg.payload.clone(),
        })
    }
}

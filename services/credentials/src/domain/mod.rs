//! Pure aggregates of the credentials service. This module imports no sqlx, tonic or
//! async-nats; its tests are given/when/then without I/O.

pub mod credential;
pub mod org_key;
pub mod release;
pub mod rotation;
pub mod service_release;

pub use coffer_types::FieldError;
pub(crate) use coffer_types::clean_name;

/// Longest reason (deletion, recovery-key export) kept for the audit log.
pub const MAX_REASON_CHARS: usize = 500;

/// Checks a free-text reason: trimmed, 1..=[`MAX_REASON_CHARS`] characters, no control
/// characters.
pub(crate) fn clean_reason(raw: &str) -> Result<String, FieldError> {
    clean_name("reason", raw, MAX_REASON_CHARS)
}

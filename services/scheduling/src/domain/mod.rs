//! Pure aggregates of the scheduling service. This module imports no sqlx, tonic or
//! async-nats; its tests are given/when/then without I/O.

pub mod database;
pub mod destination;
pub mod job;
pub mod retention;
pub mod schedule;
pub mod timing;

pub use coffer_types::FieldError;

/// Longest reason kept for the audit log.
pub const MAX_REASON_CHARS: usize = 500;

//! Pure aggregates of the enrollment service. This module imports no sqlx, tonic or
//! async-nats; its tests are given/when/then without I/O.

pub mod agent;
pub mod api_key;
pub mod ca;
pub mod enrollment_token;
pub mod org;
pub mod signing_key;

pub use coffer_types::FieldError;
pub(crate) use coffer_types::clean_name;

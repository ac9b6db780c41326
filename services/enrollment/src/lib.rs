//! The enrollment service: who is who. Organisations and their members, API keys for
//! integrators, and (as it lands) enrollment tokens and agents with X.509 identities.
//!
//! - [`domain`]: the pure aggregates (`Org`, `ApiKey`): every rule, no I/O.
//! - [`secret`]: API key secrets — generated once, shown once, stored only as a hash.
//! - `codec`: protobuf encoding of the domain events (`coffer.events.v1`).

mod codec;
pub mod domain;
pub mod secret;

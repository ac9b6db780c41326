//! Event store integration tests against the private stack's real Postgres and NATS.

mod consumer;
mod helpers;
mod relay;
mod store;

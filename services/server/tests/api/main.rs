//! `coffer` integration tests: the production wiring on port 0, real Postgres and NATS.

mod binary;
mod diag;
mod enrollment;
mod grpc;
mod helpers;
mod tenancy;

//! `coffer` integration tests: the production wiring on port 0, real Postgres and NATS.

mod agent;
mod agent_jobs;
mod agent_mariadb;
mod agents;
mod audit;
mod audit_tamper;
mod binary;
mod canary;
mod cli;
mod credentials;
mod cross_tenant;
mod destinations;
mod diag;
mod enrollment;
mod grpc;
mod helpers;
mod independent;
mod jobs;
mod oidc;
mod retention;
mod scheduling;
mod sdk;
mod tenancy;

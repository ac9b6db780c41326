//! Integration tests of coffer-auth's I/O parts: OIDC against a real HTTP issuer on loopback,
//! and revocations through a real NATS JetStream KV bucket (the private stack that
//! `cargo xtask test` starts; see `coffer_testkit`).

mod oidc;
mod revocation;

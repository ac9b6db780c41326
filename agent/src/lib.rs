//! `coffer-agent`: runs next to a customer's databases and backs them up into the customer's
//! own bucket, outbound only, unprivileged, with no key that decrypts a backup and no delete
//! call compiled in (P1, P6). This library holds what the binary is built from.
//!
//! - [`config`]: the typed configuration (defaults → TOML → `COFFER_AGENT_*` → flags).
//! - [`identity`], [`enroll`]: the key made here, the CSR, the certificate chain in the identity
//!   directory (0700, key 0600).
//! - [`connect`]: TLS for enrollment, mutual TLS after it; `http://` only when allowed.
//! - [`run`]: the running agent: long polls, renewal at 80 %, the CRL watch that halts it.
//! - [`job`], [`engine`]: one claimed job: heartbeats, released credentials, the pipeline, the
//!   report; per-engine dump and restore commands.
//! - [`pipeline`]: the streaming backup (`pg_dump | zstd | age`) and restore
//!   (`age -d | zstd -d | pg_restore`) pipelines, in bounded memory and never touching disk.
//! - [`crl`], [`status`], [`privileges`]: CRL verification, liveness and readiness files,
//!   dropping root.

pub mod config;
pub mod connect;
pub mod crl;
pub mod engine;
pub mod enroll;
pub mod identity;
pub mod job;
pub mod pipeline;
pub mod privileges;
pub mod run;
pub mod status;

//! coffer-pki against real tools: rcgen- and openssl-made CSRs, stock `openssl verify`,
//! rustls-webpki, and the local KMS provider. No mocks, no network.

mod csr;
mod helpers;
mod issuance;
mod kms;
mod openssl;
mod webpki_refusal;

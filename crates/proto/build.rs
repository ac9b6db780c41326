//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and emits a descriptor set
//! for gRPC server reflection.

use std::path::PathBuf;

/// Messages with a secret field; see `redacted_debug!` in `src/lib.rs`.
const SECRET_BEARING: [&str; 8] = [
    ".coffer.credentials.v1.CreateCredentialRequest",
    ".coffer.credentials.v1.ReplaceCredentialValueRequest",
    ".coffer.credentials.v1.RecoveryKey",
    ".coffer.credentials.v1.ReleaseCredentialsRequest",
    ".coffer.credentials.v1.ReleasedCredential",
    ".coffer.credentials.v1.UnwrapFileKeyRequest",
    ".coffer.credentials.v1.UnwrapFileKeyResponse",
    ".coffer.scheduling.v1.ClaimedJob",
];

fn main() -> anyhow::Result<()> {
    // Read when the script runs, not baked in when it is compiled: a build cache shared by
    // two checkouts can hold a script compiled in the other one.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .ok_or_else(|| anyhow::anyhow!("cargo sets CARGO_MANIFEST_DIR for build scripts"))?;
    let root = PathBuf::from(manifest_dir).join("../../proto");
    let files = [
        "coffer/common/v1/common.proto",
        "coffer/events/v1/envelope.proto",
        "coffer/events/v1/diagnostics.proto",
        "coffer/events/v1/enrollment.proto",
        "coffer/events/v1/credentials.proto",
        "coffer/events/v1/scheduling.proto",
        "coffer/events/v1/destinations.proto",
        "coffer/diagnostics/v1/diagnostics.proto",
        "coffer/enrollment/v1/enrollment.proto",
        "coffer/credentials/v1/credentials.proto",
        "coffer/audit/v1/audit.proto",
        "coffer/scheduling/v1/scheduling.proto",
        "coffer/scheduling/v1/destinations.proto",
    ];
    println!("cargo:rerun-if-changed={}", root.display());
    for file in &files {
        println!("cargo:rerun-if-changed={}", root.join(file).display());
    }

    let fds = protox::compile(files, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out.join("coffer_descriptor.bin");
    std::fs::write(&descriptor_path, prost::Message::encode_to_vec(&fds))?;

    tonic_prost_build::configure()
        // Messages that carry a secret get a redacting `Debug` in `src/lib.rs` instead of the
        // derived one, so no log line or error can print the secret by formatting a request.
        .skip_debug(SECRET_BEARING)
        // Map fields encode in key order, so an encoded message is a function of its content:
        // an audit leaf is the encoding of an `AuditEntry`, which embeds the event envelope.
        .btree_map(".")
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

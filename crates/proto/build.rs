//! Compiles `proto/` with protox (pure Rust, no system `protoc`) and emits a descriptor set
//! for gRPC server reflection.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "coffer/common/v1/common.proto",
        "coffer/events/v1/envelope.proto",
        "coffer/events/v1/diagnostics.proto",
        "coffer/events/v1/enrollment.proto",
        "coffer/diagnostics/v1/diagnostics.proto",
        "coffer/enrollment/v1/enrollment.proto",
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
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}

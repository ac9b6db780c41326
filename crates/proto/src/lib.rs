//! Generated protobuf and gRPC types for every Coffer API and event payload.
//!
//! The `.proto` sources live in `proto/` at the workspace root and are compiled here by
//! protox (no system `protoc`). Protobuf types stop at each service's gRPC adapter: domain code
//! converts them into its own types with `TryFrom`.

#![allow(missing_docs, clippy::all, missing_debug_implementations)]

/// Encoded `FileDescriptorSet` of every Coffer proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/coffer_descriptor.bin"));

pub mod common {
    pub mod v1 {
        tonic::include_proto!("coffer.common.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("coffer.events.v1");
    }
}

pub mod diagnostics {
    pub mod v1 {
        tonic::include_proto!("coffer.diagnostics.v1");
    }
}

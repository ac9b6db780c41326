use crate::Permission;

/// Every Coffer RPC and the permission it requires. A test checks this against the compiled
/// protos in both directions, so a new RPC cannot be forgotten and a removed one cannot linger.
const RPC_PERMISSIONS: &[(&str, Permission)] = &[
    (
        "/coffer.diagnostics.v1.DiagnosticsService/SendProbe",
        Permission::DiagnosticsProbe,
    ),
    (
        "/coffer.diagnostics.v1.DiagnosticsService/GetProbe",
        Permission::DiagnosticsProbe,
    ),
];

/// Service prefixes anyone may call without credentials: health checks and server reflection.
const PUBLIC_PREFIXES: &[&str] = &[
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1.ServerReflection/",
    "/grpc.reflection.v1alpha.ServerReflection/",
];

/// The permission a gRPC method requires, given its full path
/// (`"/coffer.diagnostics.v1.DiagnosticsService/SendProbe"`).
///
/// `None` means the method is unknown to the permission table: unless [`is_public_rpc`]
/// says otherwise, callers must refuse it (fail closed).
pub fn rpc_permission(full_method: &str) -> Option<Permission> {
    RPC_PERMISSIONS
        .iter()
        .find(|(method, _)| *method == full_method)
        .map(|&(_, permission)| permission)
}

/// Whether a gRPC method needs no credentials: gRPC health and server reflection (v1 and
/// v1alpha).
pub fn is_public_rpc(full_method: &str) -> bool {
    PUBLIC_PREFIXES
        .iter()
        .any(|prefix| full_method.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// Every method of every `coffer.*` service in the compiled protos, as full paths.
    fn coffer_methods() -> Vec<String> {
        let set =
            prost_types::FileDescriptorSet::decode(coffer_proto::FILE_DESCRIPTOR_SET).unwrap();
        let mut methods = Vec::new();
        for file in &set.file {
            let package = file.package();
            if !package.starts_with("coffer.") {
                continue;
            }
            for service in &file.service {
                for method in &service.method {
                    methods.push(format!("/{package}.{}/{}", service.name(), method.name()));
                }
            }
        }
        methods
    }

    #[test]
    fn every_coffer_rpc_requires_a_permission() {
        let methods = coffer_methods();
        assert!(
            methods.contains(&"/coffer.diagnostics.v1.DiagnosticsService/SendProbe".to_owned()),
            "descriptor set decoded without the diagnostics service: {methods:?}"
        );
        for method in &methods {
            assert!(
                rpc_permission(method).is_some(),
                "{method} has no entry in RPC_PERMISSIONS"
            );
            assert!(!is_public_rpc(method), "{method} must not be public");
        }
    }

    #[test]
    fn the_rpc_table_names_only_rpcs_that_exist() {
        let methods = coffer_methods();
        for (method, _) in RPC_PERMISSIONS {
            assert!(
                methods.iter().any(|m| m == method),
                "{method} is not in the protos"
            );
        }
    }

    #[test]
    fn diagnostics_probes_require_diagnostics_probe() {
        for method in [
            "/coffer.diagnostics.v1.DiagnosticsService/SendProbe",
            "/coffer.diagnostics.v1.DiagnosticsService/GetProbe",
        ] {
            assert_eq!(rpc_permission(method), Some(Permission::DiagnosticsProbe));
        }
    }

    #[test]
    fn unknown_rpcs_have_no_permission_and_are_not_public() {
        for method in [
            "/coffer.diagnostics.v1.DiagnosticsService/DeleteEverything",
            "/coffer.diagnostics.v1.DiagnosticsService/sendprobe",
            "coffer.diagnostics.v1.DiagnosticsService/SendProbe",
            "/grpc.health.v1.HealthX/Check",
            "",
        ] {
            assert_eq!(rpc_permission(method), None, "{method}");
            assert!(!is_public_rpc(method), "{method}");
        }
    }

    #[test]
    fn health_and_reflection_are_public() {
        for method in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(is_public_rpc(method), "{method}");
            assert_eq!(rpc_permission(method), None, "{method}");
        }
    }
}

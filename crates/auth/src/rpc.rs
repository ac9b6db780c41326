use crate::Permission;

/// Every Coffer RPC and the permission it requires. A test checks this against the compiled
/// protos in both directions, so a new RPC cannot be forgotten and a removed one cannot linger.
const RPC_PERMISSIONS: &[(&str, Permission)] = &[
    (
        "/coffer.audit.v1.AuditService/QueryEntries",
        Permission::AuditRead,
    ),
    (
        "/coffer.audit.v1.AuditService/GetEntry",
        Permission::AuditRead,
    ),
    (
        "/coffer.audit.v1.AuditService/GetCheckpoint",
        Permission::AuditRead,
    ),
    (
        "/coffer.audit.v1.AuditService/ListCheckpoints",
        Permission::AuditRead,
    ),
    (
        "/coffer.audit.v1.AuditService/GetConsistencyProof",
        Permission::AuditRead,
    ),
    (
        "/coffer.audit.v1.AuditService/ExportBundle",
        Permission::AuditExport,
    ),
    (
        "/coffer.scheduling.v1.ScheduleService/CreateSchedule",
        Permission::ScheduleManage,
    ),
    (
        "/coffer.scheduling.v1.ScheduleService/ChangeSchedule",
        Permission::ScheduleManage,
    ),
    (
        "/coffer.scheduling.v1.ScheduleService/GetSchedule",
        Permission::ScheduleRead,
    ),
    (
        "/coffer.scheduling.v1.ScheduleService/ListSchedules",
        Permission::ScheduleRead,
    ),
    (
        "/coffer.scheduling.v1.ScheduleService/PauseSchedule",
        Permission::ScheduleManage,
    ),
    (
        "/coffer.scheduling.v1.ScheduleService/ResumeSchedule",
        Permission::ScheduleManage,
    ),
    (
        "/coffer.scheduling.v1.ScheduleService/DeleteSchedule",
        Permission::ScheduleManage,
    ),
    (
        "/coffer.scheduling.v1.JobService/RunNow",
        Permission::JobRun,
    ),
    (
        "/coffer.scheduling.v1.JobService/StartRestore",
        Permission::RestoreRun,
    ),
    (
        "/coffer.scheduling.v1.JobService/CancelJob",
        Permission::JobRun,
    ),
    (
        "/coffer.scheduling.v1.JobService/GetJob",
        Permission::JobRead,
    ),
    (
        "/coffer.scheduling.v1.JobService/ListJobs",
        Permission::JobRead,
    ),
    (
        "/coffer.scheduling.v1.AgentJobService/PollJobs",
        Permission::JobExecute,
    ),
    (
        "/coffer.scheduling.v1.AgentJobService/Heartbeat",
        Permission::JobExecute,
    ),
    (
        "/coffer.scheduling.v1.AgentJobService/CompleteJob",
        Permission::JobExecute,
    ),
    (
        "/coffer.scheduling.v1.AgentJobService/FailJob",
        Permission::JobExecute,
    ),
    (
        "/coffer.scheduling.v1.AgentJobService/ConfirmCancelled",
        Permission::JobExecute,
    ),
    (
        "/coffer.scheduling.v1.DatabaseService/RegisterDatabase",
        Permission::DatabaseManage,
    ),
    (
        "/coffer.scheduling.v1.DatabaseService/ChangeDatabase",
        Permission::DatabaseManage,
    ),
    (
        "/coffer.scheduling.v1.DatabaseService/GetDatabase",
        Permission::DatabaseRead,
    ),
    (
        "/coffer.scheduling.v1.DatabaseService/ListDatabases",
        Permission::DatabaseRead,
    ),
    (
        "/coffer.scheduling.v1.DatabaseService/RemoveDatabase",
        Permission::DatabaseManage,
    ),
    (
        "/coffer.scheduling.v1.DestinationService/RegisterDestination",
        Permission::DestinationManage,
    ),
    (
        "/coffer.scheduling.v1.DestinationService/ChangeDestination",
        Permission::DestinationManage,
    ),
    (
        "/coffer.scheduling.v1.DestinationService/GetDestination",
        Permission::DestinationRead,
    ),
    (
        "/coffer.scheduling.v1.DestinationService/ListDestinations",
        Permission::DestinationRead,
    ),
    (
        "/coffer.scheduling.v1.DestinationService/RemoveDestination",
        Permission::DestinationManage,
    ),
    // A probe releases the destination's access key and writes an object: a manager's act.
    (
        "/coffer.scheduling.v1.DestinationService/ProbeDestination",
        Permission::DestinationManage,
    ),
    (
        "/coffer.credentials.v1.CredentialService/CreateCredential",
        Permission::CredentialManage,
    ),
    (
        "/coffer.credentials.v1.CredentialService/ReplaceCredentialValue",
        Permission::CredentialManage,
    ),
    (
        "/coffer.credentials.v1.CredentialService/DeleteCredential",
        Permission::CredentialManage,
    ),
    (
        "/coffer.credentials.v1.CredentialService/GetCredential",
        Permission::CredentialRead,
    ),
    (
        "/coffer.credentials.v1.CredentialService/ListCredentials",
        Permission::CredentialRead,
    ),
    (
        "/coffer.credentials.v1.ReleaseService/ReleaseCredentials",
        Permission::CredentialRelease,
    ),
    (
        "/coffer.credentials.v1.ReleaseService/UnwrapFileKey",
        Permission::FileKeyUnwrap,
    ),
    (
        "/coffer.credentials.v1.MasterKeyService/RotateMasterKey",
        Permission::MasterKeyManage,
    ),
    (
        "/coffer.credentials.v1.MasterKeyService/GetMasterKeyRotation",
        Permission::MasterKeyManage,
    ),
    (
        "/coffer.credentials.v1.MasterKeyService/GetKeyCoverage",
        Permission::MasterKeyManage,
    ),
    (
        "/coffer.credentials.v1.OrgKeyService/GetOrgRecipient",
        Permission::OrgKeyRead,
    ),
    (
        "/coffer.credentials.v1.OrgKeyService/ExportRecoveryKey",
        Permission::RecoveryKeyExport,
    ),
    (
        "/coffer.diagnostics.v1.DiagnosticsService/SendProbe",
        Permission::DiagnosticsProbe,
    ),
    (
        "/coffer.diagnostics.v1.DiagnosticsService/GetProbe",
        Permission::DiagnosticsProbe,
    ),
    (
        "/coffer.enrollment.v1.OrgService/CreateOrg",
        Permission::OrgCreate,
    ),
    (
        "/coffer.enrollment.v1.OrgService/GetOrg",
        Permission::OrgRead,
    ),
    (
        "/coffer.enrollment.v1.MemberService/AddMember",
        Permission::MemberManage,
    ),
    (
        "/coffer.enrollment.v1.MemberService/ListMembers",
        Permission::MemberRead,
    ),
    (
        "/coffer.enrollment.v1.MemberService/ChangeMemberRole",
        Permission::MemberManage,
    ),
    (
        "/coffer.enrollment.v1.MemberService/RemoveMember",
        Permission::MemberManage,
    ),
    (
        "/coffer.enrollment.v1.MemberService/SuspendMember",
        Permission::MemberManage,
    ),
    (
        "/coffer.enrollment.v1.MemberService/ReactivateMember",
        Permission::MemberManage,
    ),
    (
        "/coffer.enrollment.v1.ApiKeyService/CreateApiKey",
        Permission::ApiKeyManage,
    ),
    (
        "/coffer.enrollment.v1.ApiKeyService/ListApiKeys",
        Permission::ApiKeyRead,
    ),
    (
        "/coffer.enrollment.v1.ApiKeyService/RevokeApiKey",
        Permission::ApiKeyManage,
    ),
    (
        "/coffer.enrollment.v1.EnrollmentTokenService/CreateEnrollmentToken",
        Permission::EnrollmentTokenManage,
    ),
    (
        "/coffer.enrollment.v1.EnrollmentTokenService/ListEnrollmentTokens",
        Permission::EnrollmentTokenRead,
    ),
    (
        "/coffer.enrollment.v1.EnrollmentTokenService/RevokeEnrollmentToken",
        Permission::EnrollmentTokenManage,
    ),
    (
        "/coffer.enrollment.v1.AgentService/GetAgent",
        Permission::AgentRead,
    ),
    (
        "/coffer.enrollment.v1.AgentService/ListAgents",
        Permission::AgentRead,
    ),
    (
        "/coffer.enrollment.v1.AgentService/RevokeAgent",
        Permission::AgentManage,
    ),
    (
        "/coffer.enrollment.v1.AgentService/GetCrl",
        Permission::CrlRead,
    ),
    (
        "/coffer.enrollment.v1.AgentService/Renew",
        Permission::AgentRenew,
    ),
];

/// Coffer methods that take no bearer credentials because the request itself carries them
/// (an API key or an ID token to exchange, an enrollment token) or because they publish public material
/// (the JWKS). Each one
/// checks what it is given itself.
const PUBLIC_METHODS: &[&str] = &[
    "/coffer.enrollment.v1.TokenService/Exchange",
    "/coffer.enrollment.v1.TokenService/ExchangeOidc",
    "/coffer.enrollment.v1.TokenService/GetJwks",
    "/coffer.enrollment.v1.AgentService/Enroll",
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

/// Whether a gRPC method needs no bearer credentials: gRPC health, server reflection (v1 and
/// v1alpha), and the few Coffer methods whose request carries its own proof (token exchange)
/// or that serve public keys.
pub fn is_public_rpc(full_method: &str) -> bool {
    PUBLIC_METHODS.contains(&full_method)
        || PUBLIC_PREFIXES
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
    fn every_coffer_rpc_requires_a_permission_or_is_explicitly_public() {
        let methods = coffer_methods();
        assert!(
            methods.contains(&"/coffer.diagnostics.v1.DiagnosticsService/SendProbe".to_owned()),
            "descriptor set decoded without the diagnostics service: {methods:?}"
        );
        for method in &methods {
            let public = PUBLIC_METHODS.contains(&method.as_str());
            assert!(
                rpc_permission(method).is_some() != public,
                "{method} must be in exactly one of RPC_PERMISSIONS and PUBLIC_METHODS"
            );
            assert_eq!(is_public_rpc(method), public, "{method}");
        }
    }

    #[test]
    fn the_public_list_names_only_rpcs_that_exist() {
        let methods = coffer_methods();
        for method in PUBLIC_METHODS {
            assert!(
                methods.iter().any(|m| m == method),
                "{method} is not in the protos"
            );
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

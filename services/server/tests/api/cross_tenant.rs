//! P5 over the whole API: every RPC, called by org B's owner with org A's ids, answers
//! NOT_FOUND and changes nothing. The RPCs are enumerated from the compiled service
//! descriptors, so a new RPC fails this test until it is probed here.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use coffer_proto::audit::v1 as audit;
use coffer_proto::credentials::v1 as cred;
use coffer_proto::diagnostics::v1 as diag;
use coffer_proto::enrollment::v1 as pb;
use coffer_proto::scheduling::v1 as sched;
use prost::Message;
use tonic::{Code, Status};

use crate::helpers::spawn_app;

type Call = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// Methods that name no org in their request, and why they cannot leak one.
const NOT_ORG_ADDRESSED: &[(&str, &str)] = &[
    (
        "/coffer.enrollment.v1.TokenService/Exchange",
        "the API key in the request decides the org",
    ),
    (
        "/coffer.enrollment.v1.TokenService/ExchangeOidc",
        "the identity provider's configuration decides the org",
    ),
    (
        "/coffer.enrollment.v1.TokenService/GetJwks",
        "public keys, the same for every org",
    ),
    (
        "/coffer.enrollment.v1.AgentService/Enroll",
        "the enrollment token in the request decides the org",
    ),
    (
        "/coffer.enrollment.v1.AgentService/Renew",
        "the agent's own certificate decides the org",
    ),
    (
        "/coffer.credentials.v1.ReleaseService/ReleaseCredentials",
        "the agent's own certificate decides the org, and the ticket must name it",
    ),
    (
        "/coffer.credentials.v1.ReleaseService/UnwrapFileKey",
        "the agent's own certificate decides the org, and only that org's key unwraps",
    ),
    (
        "/coffer.scheduling.v1.AgentJobService/PollJobs",
        "the agent's own certificate decides the org; it claims only its own jobs",
    ),
    (
        "/coffer.scheduling.v1.AgentJobService/Heartbeat",
        "the agent's own certificate decides the org; another org's job is NOT_FOUND (jobs.rs)",
    ),
    (
        "/coffer.scheduling.v1.AgentJobService/CompleteJob",
        "the agent's own certificate decides the org; another org's job is NOT_FOUND (jobs.rs)",
    ),
    (
        "/coffer.scheduling.v1.AgentJobService/FailJob",
        "the agent's own certificate decides the org; another org's job is NOT_FOUND (jobs.rs)",
    ),
    (
        "/coffer.scheduling.v1.AgentJobService/ConfirmCancelled",
        "the agent's own certificate decides the org; another org's job is NOT_FOUND (jobs.rs)",
    ),
];

fn coffer_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(coffer_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut methods = Vec::new();
    for file in &set.file {
        if !file.package().starts_with("coffer.") {
            continue;
        }
        for service in &file.service {
            for method in &service.method {
                methods.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    methods
}

/// Events in org A caused by requests (the diagnostics consumer's own `ProbeObserved` and
/// the credentials consumer's `OrgKeyGenerated` arrive on their own time and are not).
async fn event_count(su: &sqlx::PgPool, org: coffer_types::OrgId) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM coffer_enrollment.events WHERE org_id = $1)
              + (SELECT count(*) FROM coffer_diag.events
                 WHERE org_id = $1 AND event_type <> 'ProbeObserved')
              + (SELECT count(*) FROM coffer_credentials.events
                 WHERE org_id = $1 AND event_type <> 'OrgKeyGenerated')
              + (SELECT count(*) FROM coffer_scheduling.events WHERE org_id = $1)",
    )
    .bind(org.as_uuid())
    .fetch_one(su)
    .await
    .unwrap()
}

#[tokio::test]
async fn p5_every_rpc_called_with_another_orgs_credentials_on_this_orgs_ids_is_not_found() {
    let app = spawn_app().await;
    let a = app.new_org("Acme").await;
    let b = app.new_org("Other").await;
    let a_id = a.org.to_string();

    // Org A owns one of everything.
    let a_channel = app.authed(&a.owner_key).await;
    let bob = pb::member_service_client::MemberServiceClient::new(a_channel.clone())
        .add_member(pb::AddMemberRequest {
            org_id: a_id.clone(),
            email: "bob@acme.test".into(),
            role: "viewer".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .user_id;
    let key = pb::api_key_service_client::ApiKeyServiceClient::new(a_channel.clone())
        .create_api_key(pb::CreateApiKeyRequest {
            org_id: a_id.clone(),
            name: "ci".into(),
            role: "viewer".into(),
            scopes: vec![],
            expires_at: None,
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .key_id;
    let token =
        pb::enrollment_token_service_client::EnrollmentTokenServiceClient::new(a_channel.clone())
            .create_enrollment_token(pb::CreateEnrollmentTokenRequest {
                org_id: a_id.clone(),
                name: "host".into(),
                ttl_seconds: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .token
            .unwrap()
            .token_id;
    let credential =
        cred::credential_service_client::CredentialServiceClient::new(a_channel.clone())
            .create_credential(cred::CreateCredentialRequest {
                org_id: a_id.clone(),
                name: "prod/db".into(),
                purpose: "database".into(),
                value: b"a's password".to_vec(),
            })
            .await
            .unwrap()
            .into_inner()
            .credential_id;
    let database_fields = sched::DatabaseFields {
        name: "orders".into(),
        engine: "postgresql".into(),
        host: "db.acme.test".into(),
        port: 0,
        database: "orders".into(),
        user: "backup".into(),
        password_vault_ref: format!("vault:coffer/{a_id}/{credential}"),
        agent_id: crate::scheduling::enrolled_agent(&app, &a).await,
    };
    let database = sched::database_service_client::DatabaseServiceClient::new(a_channel.clone())
        .register_database(sched::RegisterDatabaseRequest {
            org_id: a_id.clone(),
            fields: Some(database_fields.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .database_id;
    let destination_dir = app.local_root().join(coffer_testkit::unique("x"));
    std::fs::create_dir(&destination_dir).unwrap();
    let destination_fields = sched::DestinationFields {
        name: "nas".into(),
        kind: Some(sched::destination_fields::Kind::Local(
            sched::LocalDestination {
                path: destination_dir.to_string_lossy().into_owned(),
            },
        )),
    };
    let destination =
        sched::destination_service_client::DestinationServiceClient::new(a_channel.clone())
            .register_destination(sched::RegisterDestinationRequest {
                org_id: a_id.clone(),
                fields: Some(destination_fields.clone()),
            })
            .await
            .unwrap()
            .into_inner()
            .destination_id;
    let schedule_fields = sched::ScheduleFields {
        name: "nightly".into(),
        database_id: database.clone(),
        destination_id: destination.clone(),
        cron: "0 3 * * *".into(),
        ..Default::default()
    };
    let schedule = sched::schedule_service_client::ScheduleServiceClient::new(a_channel.clone())
        .create_schedule(sched::CreateScheduleRequest {
            org_id: a_id.clone(),
            fields: Some(schedule_fields.clone()),
        })
        .await
        .unwrap()
        .into_inner()
        .schedule_id;
    let job = sched::job_service_client::JobServiceClient::new(a_channel.clone())
        .run_now(sched::RunNowRequest {
            org_id: a_id.clone(),
            schedule_id: schedule.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    let probe = diag::diagnostics_service_client::DiagnosticsServiceClient::new(a_channel)
        .send_probe(diag::SendProbeRequest {
            org_id: a_id.clone(),
            note: "a's".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .probe_id;
    // An agent id of A is not needed to exist for the probe: B cannot see A's org at all.
    let agent = coffer_types::AgentId::new().to_string();

    let su = app.db.superuser().await;
    let before = event_count(&su, a.org).await;

    // Org B's owner, naming org A and A's resources.
    let ch = app.authed(&b.owner_key).await;
    let orgs = pb::org_service_client::OrgServiceClient::new(ch.clone());
    let members = pb::member_service_client::MemberServiceClient::new(ch.clone());
    let keys = pb::api_key_service_client::ApiKeyServiceClient::new(ch.clone());
    let tokens = pb::enrollment_token_service_client::EnrollmentTokenServiceClient::new(ch.clone());
    let agents = pb::agent_service_client::AgentServiceClient::new(ch.clone());
    let credentials = cred::credential_service_client::CredentialServiceClient::new(ch.clone());
    let org_keys = cred::org_key_service_client::OrgKeyServiceClient::new(ch.clone());
    let master_keys = cred::master_key_service_client::MasterKeyServiceClient::new(ch.clone());
    let audit_log = audit::audit_service_client::AuditServiceClient::new(ch.clone());
    let databases = sched::database_service_client::DatabaseServiceClient::new(ch.clone());
    let destinations = sched::destination_service_client::DestinationServiceClient::new(ch.clone());
    let schedules = sched::schedule_service_client::ScheduleServiceClient::new(ch.clone());
    let jobs = sched::job_service_client::JobServiceClient::new(ch.clone());
    let probes = diag::diagnostics_service_client::DiagnosticsServiceClient::new(ch);
    let mut calls: BTreeMap<&str, Call> = BTreeMap::new();
    macro_rules! probe {
        ($method:literal, $client:ident, $rpc:ident, $request:expr) => {{
            let mut client = $client.clone();
            let request = $request;
            calls.insert(
                $method,
                Box::pin(async move { client.$rpc(request).await.map(|_| ()) }),
            );
        }};
    }
    probe!(
        "/coffer.enrollment.v1.OrgService/CreateOrg",
        orgs,
        create_org,
        pb::CreateOrgRequest {
            name: "Sneaky".into(),
            owner_email: "x@sneaky.test".into(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.OrgService/GetOrg",
        orgs,
        get_org,
        pb::GetOrgRequest {
            org_id: a_id.clone(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.MemberService/AddMember",
        members,
        add_member,
        pb::AddMemberRequest {
            org_id: a_id.clone(),
            email: "eve@acme.test".into(),
            role: "owner".into(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.MemberService/ListMembers",
        members,
        list_members,
        pb::ListMembersRequest {
            org_id: a_id.clone(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.MemberService/ChangeMemberRole",
        members,
        change_member_role,
        pb::ChangeMemberRoleRequest {
            org_id: a_id.clone(),
            user_id: bob.clone(),
            role: "owner".into(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.MemberService/RemoveMember",
        members,
        remove_member,
        pb::RemoveMemberRequest {
            org_id: a_id.clone(),
            user_id: bob.clone(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.MemberService/SuspendMember",
        members,
        suspend_member,
        pb::SuspendMemberRequest {
            org_id: a_id.clone(),
            user_id: bob.clone(),
            reason: "x".into(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.MemberService/ReactivateMember",
        members,
        reactivate_member,
        pb::ReactivateMemberRequest {
            org_id: a_id.clone(),
            user_id: bob.clone(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.ApiKeyService/CreateApiKey",
        keys,
        create_api_key,
        pb::CreateApiKeyRequest {
            org_id: a_id.clone(),
            name: "x".into(),
            role: "owner".into(),
            scopes: vec![],
            expires_at: None,
        }
    );
    probe!(
        "/coffer.enrollment.v1.ApiKeyService/ListApiKeys",
        keys,
        list_api_keys,
        pb::ListApiKeysRequest {
            org_id: a_id.clone(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.ApiKeyService/RevokeApiKey",
        keys,
        revoke_api_key,
        pb::RevokeApiKeyRequest {
            org_id: a_id.clone(),
            key_id: key.clone(),
            reason: "x".into(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.EnrollmentTokenService/CreateEnrollmentToken",
        tokens,
        create_enrollment_token,
        pb::CreateEnrollmentTokenRequest {
            org_id: a_id.clone(),
            name: "x".into(),
            ttl_seconds: 0,
        }
    );
    probe!(
        "/coffer.enrollment.v1.EnrollmentTokenService/ListEnrollmentTokens",
        tokens,
        list_enrollment_tokens,
        pb::ListEnrollmentTokensRequest {
            org_id: a_id.clone(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.EnrollmentTokenService/RevokeEnrollmentToken",
        tokens,
        revoke_enrollment_token,
        pb::RevokeEnrollmentTokenRequest {
            org_id: a_id.clone(),
            token_id: token.clone(),
            reason: "x".into(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.AgentService/GetAgent",
        agents,
        get_agent,
        pb::GetAgentRequest {
            org_id: a_id.clone(),
            agent_id: agent.clone(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.AgentService/ListAgents",
        agents,
        list_agents,
        pb::ListAgentsRequest {
            org_id: a_id.clone(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.AgentService/RevokeAgent",
        agents,
        revoke_agent,
        pb::RevokeAgentRequest {
            org_id: a_id.clone(),
            agent_id: agent.clone(),
            reason: "x".into(),
        }
    );
    probe!(
        "/coffer.enrollment.v1.AgentService/GetCrl",
        agents,
        get_crl,
        pb::GetCrlRequest {
            org_id: a_id.clone(),
        }
    );
    probe!(
        "/coffer.diagnostics.v1.DiagnosticsService/SendProbe",
        probes,
        send_probe,
        diag::SendProbeRequest {
            org_id: a_id.clone(),
            note: "x".into(),
        }
    );
    probe!(
        "/coffer.diagnostics.v1.DiagnosticsService/GetProbe",
        probes,
        get_probe,
        diag::GetProbeRequest {
            org_id: a_id.clone(),
            probe_id: probe.clone(),
        }
    );

    probe!(
        "/coffer.credentials.v1.CredentialService/CreateCredential",
        credentials,
        create_credential,
        cred::CreateCredentialRequest {
            org_id: a_id.clone(),
            name: "b-was-here".into(),
            purpose: "generic".into(),
            value: b"x".to_vec(),
        }
    );
    probe!(
        "/coffer.credentials.v1.CredentialService/ReplaceCredentialValue",
        credentials,
        replace_credential_value,
        cred::ReplaceCredentialValueRequest {
            org_id: a_id.clone(),
            credential_id: credential.clone(),
            value: b"x".to_vec(),
        }
    );
    probe!(
        "/coffer.credentials.v1.CredentialService/DeleteCredential",
        credentials,
        delete_credential,
        cred::DeleteCredentialRequest {
            org_id: a_id.clone(),
            credential_id: credential.clone(),
            reason: "x".into(),
        }
    );
    probe!(
        "/coffer.credentials.v1.CredentialService/GetCredential",
        credentials,
        get_credential,
        cred::GetCredentialRequest {
            org_id: a_id.clone(),
            credential_id: credential.clone(),
        }
    );
    probe!(
        "/coffer.credentials.v1.CredentialService/ListCredentials",
        credentials,
        list_credentials,
        cred::ListCredentialsRequest {
            org_id: a_id.clone(),
        }
    );
    probe!(
        "/coffer.credentials.v1.OrgKeyService/GetOrgRecipient",
        org_keys,
        get_org_recipient,
        cred::GetOrgRecipientRequest {
            org_id: a_id.clone(),
        }
    );
    probe!(
        "/coffer.credentials.v1.OrgKeyService/ExportRecoveryKey",
        org_keys,
        export_recovery_key,
        cred::ExportRecoveryKeyRequest {
            org_id: a_id.clone(),
            reason: "x".into(),
        }
    );
    // The platform's own RPCs: addressed to the platform org, which a customer's owner is not
    // a member of.
    probe!(
        "/coffer.credentials.v1.MasterKeyService/RotateMasterKey",
        master_keys,
        rotate_master_key,
        cred::RotateMasterKeyRequest {
            new_key_id: "test-master".into(),
            reason: "x".into(),
        }
    );
    probe!(
        "/coffer.credentials.v1.MasterKeyService/GetMasterKeyRotation",
        master_keys,
        get_master_key_rotation,
        cred::GetMasterKeyRotationRequest {}
    );
    probe!(
        "/coffer.credentials.v1.MasterKeyService/GetKeyCoverage",
        master_keys,
        get_key_coverage,
        cred::GetKeyCoverageRequest {}
    );
    probe!(
        "/coffer.scheduling.v1.DatabaseService/RegisterDatabase",
        databases,
        register_database,
        sched::RegisterDatabaseRequest {
            org_id: a_id.clone(),
            fields: Some(sched::DatabaseFields {
                name: "b-was-here".into(),
                ..database_fields.clone()
            }),
        }
    );
    probe!(
        "/coffer.scheduling.v1.DatabaseService/ChangeDatabase",
        databases,
        change_database,
        sched::ChangeDatabaseRequest {
            org_id: a_id.clone(),
            database_id: database.clone(),
            fields: Some(database_fields.clone()),
        }
    );
    probe!(
        "/coffer.scheduling.v1.DatabaseService/GetDatabase",
        databases,
        get_database,
        sched::GetDatabaseRequest {
            org_id: a_id.clone(),
            database_id: database.clone(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.DatabaseService/ListDatabases",
        databases,
        list_databases,
        sched::ListDatabasesRequest {
            org_id: a_id.clone(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.DatabaseService/RemoveDatabase",
        databases,
        remove_database,
        sched::RemoveDatabaseRequest {
            org_id: a_id.clone(),
            database_id: database.clone(),
            reason: "x".into(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.DestinationService/RegisterDestination",
        destinations,
        register_destination,
        sched::RegisterDestinationRequest {
            org_id: a_id.clone(),
            fields: Some(sched::DestinationFields {
                name: "b-was-here".into(),
                ..destination_fields.clone()
            }),
        }
    );
    probe!(
        "/coffer.scheduling.v1.DestinationService/ChangeDestination",
        destinations,
        change_destination,
        sched::ChangeDestinationRequest {
            org_id: a_id.clone(),
            destination_id: destination.clone(),
            fields: Some(destination_fields.clone()),
        }
    );
    probe!(
        "/coffer.scheduling.v1.DestinationService/GetDestination",
        destinations,
        get_destination,
        sched::GetDestinationRequest {
            org_id: a_id.clone(),
            destination_id: destination.clone(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.DestinationService/ListDestinations",
        destinations,
        list_destinations,
        sched::ListDestinationsRequest {
            org_id: a_id.clone(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.DestinationService/RemoveDestination",
        destinations,
        remove_destination,
        sched::RemoveDestinationRequest {
            org_id: a_id.clone(),
            destination_id: destination.clone(),
            reason: "x".into(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.DestinationService/ProbeDestination",
        destinations,
        probe_destination,
        sched::ProbeDestinationRequest {
            org_id: a_id.clone(),
            destination_id: destination.clone(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.ScheduleService/CreateSchedule",
        schedules,
        create_schedule,
        sched::CreateScheduleRequest {
            org_id: a_id.clone(),
            fields: Some(sched::ScheduleFields {
                name: "b-was-here".into(),
                ..schedule_fields.clone()
            }),
        }
    );
    probe!(
        "/coffer.scheduling.v1.ScheduleService/ChangeSchedule",
        schedules,
        change_schedule,
        sched::ChangeScheduleRequest {
            org_id: a_id.clone(),
            schedule_id: schedule.clone(),
            fields: Some(schedule_fields.clone()),
        }
    );
    probe!(
        "/coffer.scheduling.v1.ScheduleService/GetSchedule",
        schedules,
        get_schedule,
        sched::GetScheduleRequest {
            org_id: a_id.clone(),
            schedule_id: schedule.clone(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.ScheduleService/ListSchedules",
        schedules,
        list_schedules,
        sched::ListSchedulesRequest {
            org_id: a_id.clone(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.ScheduleService/PauseSchedule",
        schedules,
        pause_schedule,
        sched::PauseScheduleRequest {
            org_id: a_id.clone(),
            schedule_id: schedule.clone(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.ScheduleService/ResumeSchedule",
        schedules,
        resume_schedule,
        sched::ResumeScheduleRequest {
            org_id: a_id.clone(),
            schedule_id: schedule.clone(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.ScheduleService/DeleteSchedule",
        schedules,
        delete_schedule,
        sched::DeleteScheduleRequest {
            org_id: a_id.clone(),
            schedule_id: schedule.clone(),
            reason: "x".into(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.JobService/RunNow",
        jobs,
        run_now,
        sched::RunNowRequest {
            org_id: a_id.clone(),
            schedule_id: schedule.clone(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.JobService/StartRestore",
        jobs,
        start_restore,
        sched::StartRestoreRequest {
            org_id: a_id.clone(),
            backup_job_id: job.clone(),
            database_id: String::new(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.JobService/CancelJob",
        jobs,
        cancel_job,
        sched::CancelJobRequest {
            org_id: a_id.clone(),
            job_id: job.clone(),
            reason: "x".into(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.JobService/GetJob",
        jobs,
        get_job,
        sched::GetJobRequest {
            org_id: a_id.clone(),
            job_id: job.clone(),
        }
    );
    probe!(
        "/coffer.scheduling.v1.JobService/ListJobs",
        jobs,
        list_jobs,
        sched::ListJobsRequest {
            org_id: a_id.clone(),
            ..Default::default()
        }
    );
    probe!(
        "/coffer.audit.v1.AuditService/QueryEntries",
        audit_log,
        query_entries,
        audit::QueryEntriesRequest {
            org_id: a_id.clone(),
            ..Default::default()
        }
    );
    probe!(
        "/coffer.audit.v1.AuditService/GetEntry",
        audit_log,
        get_entry,
        audit::GetEntryRequest {
            org_id: a_id.clone(),
            seq: 1,
            tree_size: 0,
        }
    );
    probe!(
        "/coffer.audit.v1.AuditService/GetCheckpoint",
        audit_log,
        get_checkpoint,
        audit::GetCheckpointRequest {
            org_id: a_id.clone(),
            size: 0,
        }
    );
    probe!(
        "/coffer.audit.v1.AuditService/ListCheckpoints",
        audit_log,
        list_checkpoints,
        audit::ListCheckpointsRequest {
            org_id: a_id.clone(),
            page: None,
        }
    );
    probe!(
        "/coffer.audit.v1.AuditService/GetConsistencyProof",
        audit_log,
        get_consistency_proof,
        audit::GetConsistencyProofRequest {
            org_id: a_id.clone(),
            from_size: 1,
            to_size: 1,
        }
    );
    probe!(
        "/coffer.audit.v1.AuditService/ExportBundle",
        audit_log,
        export_bundle,
        audit::ExportBundleRequest {
            org_id: a_id.clone(),
            ..Default::default()
        }
    );
    // Every RPC in the descriptors is either probed or explained.
    let methods = coffer_methods();
    for method in &methods {
        let explained = NOT_ORG_ADDRESSED.iter().any(|(m, _)| m == method);
        assert!(
            calls.contains_key(method.as_str()) != explained,
            "{method}: probe it here or explain in NOT_ORG_ADDRESSED why it names no org"
        );
    }
    assert_eq!(calls.len() + NOT_ORG_ADDRESSED.len(), methods.len());

    for (method, call) in calls {
        let status = call.await.expect_err(method);
        assert_eq!(status.code(), Code::NotFound, "{method}: {status:?}");
    }
    assert_eq!(
        event_count(&su, a.org).await,
        before,
        "nothing changed in org A"
    );
}

//! Health and reflection: what a stock gRPC client sees.

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_reports_serving_for_the_server_and_each_service() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    for service in ["", "coffer.diagnostics.v1.DiagnosticsService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "service {service:?}");
    }
}

#[tokio::test]
async fn reflection_lists_every_service_and_describes_them() {
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(app.channel().await);
    let requests = tokio_stream::iter([
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        },
        ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "coffer.diagnostics.v1.DiagnosticsService".into(),
            )),
        },
    ]);
    let mut responses = client
        .server_reflection_info(requests)
        .await
        .unwrap()
        .into_inner();

    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "coffer.diagnostics.v1.DiagnosticsService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let Some(MessageResponse::FileDescriptorResponse(files)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors");
    };
    assert!(!files.file_descriptor_proto.is_empty());
}

/// Lists services through grpcio's own reflection client (v1alpha, as grpcurl and most SDKs
/// speak it) and resolves the diagnostics service's methods.
const STOCK_CLIENT: &str = r#"
import sys, grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from google.protobuf.descriptor_pool import DescriptorPool
db = ProtoReflectionDescriptorDatabase(grpc.insecure_channel(sys.argv[1]))
for name in db.get_services():
    print("service", name)
pool = DescriptorPool(db)
for m in pool.FindServiceByName("coffer.diagnostics.v1.DiagnosticsService").methods:
    print("method", m.full_name)
"#;

#[tokio::test]
async fn a_stock_grpc_client_lists_and_describes_the_services() {
    let app = spawn_app().await;
    let python = coffer_testkit::stack_dir().join("venv/bin/python");
    let out = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(STOCK_CLIENT)
        .arg(app.addr.to_string())
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "service coffer.diagnostics.v1.DiagnosticsService",
        "service grpc.health.v1.Health",
        "method coffer.diagnostics.v1.DiagnosticsService.SendProbe",
        "method coffer.diagnostics.v1.DiagnosticsService.GetProbe",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "{line:?} missing from:\n{stdout}"
        );
    }
}

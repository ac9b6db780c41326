//! `spawn_app`: the exact production wiring on port 0, on a fresh database and bus.

use std::net::SocketAddr;
use std::time::Duration;

use coffer_db::DbConfig;
use coffer_eventstore::{BusConfig, RelayConfig};
use coffer_server::config::{Config, GrpcConfig, NatsConfig};
use coffer_server::startup::{Application, Target};
use coffer_testkit::TestDb;
use tokio::sync::oneshot;

pub struct TestApp {
    pub addr: SocketAddr,
    pub db: TestDb,
    pub bus: BusConfig,
    pub js: async_nats::jetstream::Context,
    _stop: oneshot::Sender<()>,
}

impl TestApp {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        tonic::transport::Endpoint::from_shared(self.url())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }
}

pub fn config(db: &DbConfig, bus: &BusConfig) -> Config {
    Config {
        database: db.clone(),
        nats: NatsConfig {
            url: coffer_testkit::nats_url(),
            connect_timeout: Duration::from_secs(5),
            bus: bus.clone(),
        },
        grpc: GrpcConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
        },
        kms: None,
        telemetry: Default::default(),
        relay: RelayConfig::default(),
    }
}

pub async fn spawn_app() -> TestApp {
    coffer_testkit::telemetry();
    let db = TestDb::migrated(coffer_server::SCHEMAS).await;
    let (_client, js, bus) = coffer_testkit::bus().await;
    let app = Application::build(config(&db.config, &bus), &[Target::All])
        .await
        .expect("boot");
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        db,
        bus,
        js,
        _stop: stop,
    }
}

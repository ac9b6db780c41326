//! What a benchmark prints about where it ran, so figures from different runs can be told
//! apart: the host's load and the Postgres settings that decide what a commit costs.

use anyhow::Context as _;

/// How busy the benchmark's host is: figures taken next to a compiler are not comparable.
#[derive(Debug, Clone)]
pub struct HostLoad {
    /// Logical CPUs.
    pub cpus: usize,
    /// The 1-minute load average, or "unknown" off Linux.
    pub load_average: String,
}

impl HostLoad {
    /// The host as it is now.
    pub fn now() -> Self {
        Self {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            load_average: std::fs::read_to_string("/proc/loadavg")
                .ok()
                .and_then(|l| l.split_whitespace().next().map(str::to_owned))
                .unwrap_or_else(|| "unknown".to_owned()),
        }
    }

    /// The same facts as a JSON object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"cpus": self.cpus, "load_average": self.load_average})
    }
}

/// The stack's Postgres: its version and whether commits wait for the disk.
#[derive(Debug, Clone)]
pub struct PostgresFacts {
    /// `server_version`.
    pub version: String,
    /// `fsync`.
    pub fsync: String,
    /// `synchronous_commit`.
    pub synchronous_commit: String,
}

impl PostgresFacts {
    /// Reads the settings from the stack's Postgres (through `coffer-testkit`'s environment).
    pub async fn read() -> anyhow::Result<Self> {
        let pool = sqlx::PgPool::connect(&coffer_testkit::superuser_url())
            .await
            .context("connect to the stack's postgres")?;
        let show = |setting: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query_scalar::<_, String>(&format!("SHOW {setting}"))
                    .fetch_one(&pool)
                    .await
                    .with_context(|| format!("read {setting}"))
            }
        };
        let facts = Self {
            version: show("server_version").await?,
            fsync: show("fsync").await?,
            synchronous_commit: show("synchronous_commit").await?,
        };
        pool.close().await;
        Ok(facts)
    }

    /// Commits return before the disk has them, so figures measure CPU and round trips.
    pub fn commits_skip_the_disk(&self) -> bool {
        self.fsync == "off" || self.synchronous_commit == "off"
    }

    /// `postgres 17.2 (fsync=on, synchronous_commit=on)`.
    pub fn line(&self) -> String {
        format!(
            "postgres {} (fsync={}, synchronous_commit={})",
            self.version, self.fsync, self.synchronous_commit
        )
    }

    /// The same facts as a JSON object.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "version": self.version,
            "fsync": self.fsync,
            "synchronous_commit": self.synchronous_commit,
        })
    }
}

/// Prints what every benchmark says about where it runs, after its own first line: the host's
/// CPUs and load at the start and, where commits skip the disk, a note saying so.
/// `ratios_shared_by` is for benchmarks that report ratios to references measured in the same
/// run: what shares the host (`"client and server"`).
pub fn print_host(host: &HostLoad, postgres: &PostgresFacts, ratios_shared_by: Option<&str>) {
    match ratios_shared_by {
        Some(sharers) => println!(
            "host: {} cpus, load average {} at start (other work on the host skews every figure, \
             the ratios much less); {sharers} share it",
            host.cpus, host.load_average
        ),
        None => println!(
            "host: {} cpus, load average {} at start (other work on the host skews every figure)",
            host.cpus, host.load_average
        ),
    }
    if postgres.commits_skip_the_disk() {
        println!(
            "note: commits do not wait for the disk here; figures measure CPU and round trips"
        );
    }
}

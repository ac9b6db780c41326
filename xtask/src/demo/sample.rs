//! The sample database and the stack's PostgreSQL seen as a customer's: a role for the agent,
//! databases, `pgbench -i`, sizes, per-table fingerprints, and the vendor-independent restore
//! with stock tools (`age -d -i … | zstd -d | pg_restore`).

use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::proc;

/// The stack's PostgreSQL, reached over TCP as its superuser.
#[derive(Debug)]
pub struct Cluster {
    pub host: String,
    pub port: u16,
    bin: PathBuf,
}

/// One table's row count and content checksum: MD5 over the sorted MD5s of its rows' text
/// forms, so row order and physical layout do not matter, every value does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePrint {
    pub table: String,
    pub rows: u64,
    pub checksum: String,
}

/// Every table of the `public` schema, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint(pub Vec<TablePrint>);

impl Fingerprint {
    pub fn rows(&self) -> u64 {
        self.0.iter().map(|t| t.rows).sum()
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for t in &self.0 {
            let checksum = if t.rows == 0 { "(empty)" } else { &t.checksum };
            writeln!(
                f,
                "    {:<20} {:>11} rows  md5 {checksum}",
                t.table,
                thousands(t.rows)
            )?;
        }
        Ok(())
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl Cluster {
    /// From the stack's superuser URL (`postgres://postgres@127.0.0.1:<port>/postgres`).
    pub fn new(superuser_url: &str, bin: &Path) -> Result<Cluster> {
        let address = superuser_url
            .split_once('@')
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(address, _)| address)
            .with_context(|| format!("read host and port from {superuser_url}"))?;
        let (host, port) = address
            .rsplit_once(':')
            .with_context(|| format!("read the port from {superuser_url}"))?;
        Ok(Cluster {
            host: host.to_owned(),
            port: port
                .parse()
                .with_context(|| format!("read the port from {superuser_url}"))?,
            bin: bin.to_path_buf(),
        })
    }

    fn url(&self, db: &str) -> String {
        format!("postgres://postgres@{}:{}/{db}", self.host, self.port)
    }

    /// Runs `sql` (from stdin, so nothing in it shows in the process list) as the superuser
    /// in `db`; returns what it printed, unaligned and tuples only.
    pub fn sql(&self, db: &str, sql: &str) -> Result<String> {
        let mut child = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-f",
                "-",
                "-d",
            ])
            .arg(self.url(db))
            .env("PGCONNECT_TIMEOUT", "10")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("start psql")?;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(sql.as_bytes())
            .context("send SQL to psql")?;
        let out = child.wait_with_output().context("run psql")?;
        if !out.status.success() {
            bail!(
                "psql in database {db} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        String::from_utf8(out.stdout).context("psql printed something that is not UTF-8")
    }

    /// A login role; the password travels on psql's stdin only.
    pub fn create_role(&self, role: &str, password: &str) -> Result<()> {
        self.sql(
            "postgres",
            &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}';"),
        )
        .map(drop)
    }

    pub fn create_database(&self, name: &str, owner: &str) -> Result<()> {
        self.sql(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {owner};"),
        )
        .map(drop)
    }

    /// `pgbench -i -s <scale>` as `role`, which then owns the tables it dumps.
    pub fn pgbench_init(
        &self,
        db: &str,
        role: &str,
        password: &str,
        scale: u32,
        log: &Path,
    ) -> Result<()> {
        proc::run_logged(
            Command::new(self.bin.join("pgbench"))
                .args(["-i", "-q", "-s", &scale.to_string()])
                .args(["-h", &self.host, "-p", &self.port.to_string(), "-U", role])
                .arg(db)
                .env("PGPASSWORD", password),
            log,
        )
    }

    /// `pg_database_size`, in bytes.
    pub fn size(&self, db: &str) -> Result<u64> {
        let out = self.sql("postgres", &format!("SELECT pg_database_size('{db}');"))?;
        out.trim()
            .parse()
            .with_context(|| format!("read the size of {db} from {out:?}"))
    }

    pub fn fingerprint(&self, db: &str) -> Result<Fingerprint> {
        let tables = self.sql(
            db,
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1;",
        )?;
        let mut prints = Vec::new();
        for table in tables.lines().filter(|t| !t.is_empty()) {
            let out = self.sql(
                db,
                &format!(
                    "SELECT count(*), coalesce(md5(string_agg(h, '' ORDER BY h)), '') \
                     FROM (SELECT md5(t::text) AS h FROM public.{table} t) r;"
                ),
            )?;
            let (rows, checksum) = out
                .trim()
                .split_once('|')
                .with_context(|| format!("read the fingerprint of {db}.{table} from {out:?}"))?;
            prints.push(TablePrint {
                table: table.to_owned(),
                rows: rows
                    .parse()
                    .with_context(|| format!("read the row count of {db}.{table}"))?,
                checksum: checksum.to_owned(),
            });
        }
        if prints.is_empty() {
            bail!("database {db} has no table in its public schema");
        }
        Ok(Fingerprint(prints))
    }

    /// `age -d -i <key> <object> | zstd -d | pg_restore --dbname <db>`, stock tools only, with
    /// no plaintext on disk. Returns the size of the dump that went through, which xtask counts
    /// between zstd and pg_restore. Each tool's messages go to `<logs>/stock-<tool>.log`.
    pub fn stock_restore(
        &self,
        recovery_key: &Path,
        object: &Path,
        db: &str,
        logs: &Path,
    ) -> Result<u64> {
        let log = |tool: &str| -> Result<(PathBuf, File)> {
            let path = logs.join(format!("stock-{tool}.log"));
            let file = File::create(&path).with_context(|| format!("create {}", path.display()))?;
            Ok((path, file))
        };
        let mut pipeline = Pipeline::default();
        let (age_log, age_err) = log("age")?;
        let mut age = Command::new("age");
        age.args(["-d", "-i"])
            .arg(recovery_key)
            .arg(object)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(age_err);
        let age_out = pipeline.spawn("age", age, age_log)?.stdout.take();

        let (zstd_log, zstd_err) = log("zstd")?;
        let mut zstd = Command::new("zstd");
        zstd.args(["-d", "-q", "-c"])
            .stdin(age_out.context("age's stdout is piped")?)
            .stdout(Stdio::piped())
            .stderr(zstd_err);
        let mut dump = pipeline
            .spawn("zstd", zstd, zstd_log)?
            .stdout
            .take()
            .context("zstd's stdout is piped")?;

        let (restore_log, restore_err) = log("pg_restore")?;
        let mut restore = Command::new(self.bin.join("pg_restore"));
        restore
            .args(["--no-owner", "--exit-on-error", "--host", &self.host])
            .args(["--port", &self.port.to_string(), "--username", "postgres"])
            .args(["--dbname", db])
            .stdin(Stdio::piped())
            .stdout(
                restore_err
                    .try_clone()
                    .context("duplicate a log file handle")?,
            )
            .stderr(restore_err);
        let mut into_restore = pipeline
            .spawn("pg_restore", restore, restore_log)?
            .stdin
            .take()
            .context("pg_restore's stdin is piped")?;

        // Copied here rather than piped directly, to count the dump's bytes on the way.
        let copier = std::thread::spawn(move || -> std::io::Result<u64> {
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            loop {
                let n = dump.read(&mut buf)?;
                if n == 0 {
                    return Ok(total);
                }
                into_restore.write_all(&buf[..n])?;
                total += n as u64;
            }
            // Dropping `into_restore` closes pg_restore's stdin.
        });
        pipeline.wait_all()?;
        let copied = copier
            .join()
            .map_err(|_| anyhow::anyhow!("the thread copying zstd's output panicked"))?
            .context("copy the dump from zstd to pg_restore")?;
        Ok(copied)
    }
}

/// The processes of one pipeline; any still running when it drops are killed.
#[derive(Debug, Default)]
struct Pipeline {
    stages: Vec<(&'static str, Child, PathBuf)>,
}

impl Pipeline {
    fn spawn(&mut self, name: &'static str, mut cmd: Command, log: PathBuf) -> Result<&mut Child> {
        let child = cmd
            .spawn()
            .with_context(|| format!("start `{}`", proc::describe(&cmd)))?;
        self.stages.push((name, child, log));
        Ok(&mut self.stages.last_mut().expect("just pushed").1)
    }

    /// Waits for every stage, first to last; fails naming the first that did not succeed.
    fn wait_all(&mut self) -> Result<()> {
        let mut failed = None;
        for (name, child, log) in &mut self.stages {
            let status = proc::wait(child)?;
            if !status.success() && failed.is_none() {
                failed = Some(format!(
                    "{name} failed ({status}); last lines of {}:\n{}",
                    log.display(),
                    proc::tail(log, 10)
                ));
            }
        }
        match failed {
            Some(why) => bail!("the stock-tools restore failed: {why}"),
            None => Ok(()),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.stages {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits_in_threes() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_000_110), "1,000,110");
    }

    #[test]
    fn the_cluster_address_comes_from_the_superuser_url() {
        let pg = Cluster::new(
            "postgres://postgres@127.0.0.1:5433/postgres",
            Path::new("/bin"),
        )
        .unwrap();
        assert_eq!((pg.host.as_str(), pg.port), ("127.0.0.1", 5433));
        assert!(Cluster::new("postgres://nowhere", Path::new("/bin")).is_err());
    }
}

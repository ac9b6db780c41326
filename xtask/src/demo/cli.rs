//! The `coffer` CLI, as a user would run it against the demo's server: over TLS, trusting the
//! server's development certificate through `SSL_CERT_FILE`, the API key in `COFFER_API_KEY`
//! (never on the command line), every answer asked for as JSON.
//!
//! Answers that hold no secret are kept in `.coffer/demo/cli/<name>.json` (the latest of each
//! name); answers that hold one go to a new 0600 file the caller names.

use std::fs::{self, File};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::proc;

#[derive(Debug)]
pub struct Coffer {
    pub binary: PathBuf,
    pub server: String,
    /// The server's certificate, which clients trust.
    ca: PathBuf,
    answers: PathBuf,
    cwd: PathBuf,
}

/// Where an answer goes.
#[derive(Debug, Clone, Copy)]
pub enum Out<'a> {
    /// `<answers>/<name>.json`, replaced on every call of that name.
    Answer(&'a str),
    /// A new file, mode 0600: the answer holds a secret.
    Secret(&'a Path),
}

impl Coffer {
    pub fn new(
        binary: PathBuf,
        server: String,
        ca: PathBuf,
        answers: PathBuf,
        cwd: PathBuf,
    ) -> Self {
        Coffer {
            binary,
            server,
            ca,
            answers,
            cwd,
        }
    }

    /// `coffer <args> --json` as the holder of `api_key`.
    pub fn call(&self, api_key: &str, args: &[&str], out: Out<'_>) -> Result<Value> {
        self.invoke(Some(api_key), args, out)
    }

    /// `coffer <args> --json` with no server and no key (`audit verify`).
    pub fn offline(&self, args: &[&str], out: Out<'_>) -> Result<Value> {
        self.invoke(None, args, out)
    }

    fn invoke(&self, api_key: Option<&str>, args: &[&str], out: Out<'_>) -> Result<Value> {
        let (path, stdout) = match out {
            Out::Answer(name) => {
                let path = self.answers.join(format!("{name}.json"));
                let file =
                    File::create(&path).with_context(|| format!("create {}", path.display()))?;
                (path, file)
            }
            Out::Secret(path) => {
                let file = File::options()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .with_context(|| format!("create {}", path.display()))?;
                (path.to_path_buf(), file)
            }
        };
        let errors = path.with_extension("err");
        let stderr =
            File::create(&errors).with_context(|| format!("create {}", errors.display()))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(args)
            .arg("--json")
            .current_dir(&self.cwd)
            .env_remove("COFFER_API_KEY")
            .env_remove("COFFER_CONFIG")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        if let Some(key) = api_key {
            cmd.env("COFFER_SERVER", &self.server)
                .env("SSL_CERT_FILE", &self.ca)
                .env("COFFER_API_KEY", key);
        }
        let shown = format!("coffer {}", args.join(" "));
        let status = proc::run(&mut cmd)?;
        if !status.success() {
            bail!(
                "`{shown}` failed ({status}): {}",
                proc::tail(&errors, 10).trim()
            );
        }
        if fs::metadata(&errors).is_ok_and(|m| m.len() == 0) {
            let _ = fs::remove_file(&errors);
        }
        let text = fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        serde_json::from_slice(&text)
            .with_context(|| format!("parse what `{shown}` printed ({})", path.display()))
    }
}

/// `value[key]` as a string, or an error naming the key and what printed it.
pub fn text<'a>(value: &'a Value, pointer: &str, what: &str) -> Result<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .with_context(|| format!("{what} printed no {pointer}"))
}

/// `value[pointer]` as a number, or an error naming it.
pub fn number(value: &Value, pointer: &str, what: &str) -> Result<u64> {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .with_context(|| format!("{what} printed no number at {pointer}"))
}

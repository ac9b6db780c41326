//! Running a database tool: spawned with secrets in its environment only, killed if the
//! pipeline is dropped, and its stderr kept as a short, redacted tail for the error message.

use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStderr, Command};
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use super::{Error, program_name};

/// How much of a program's stderr an error message carries: its last lines, where pg_dump
/// and pg_restore print the reason they stopped.
const STDERR_TAIL: usize = 4 * 1024;

/// What replaces a secret the program echoed on stderr.
const REDACTED: &[u8] = b"[redacted]";

/// A running database tool.
#[derive(Debug)]
pub(super) struct Program {
    pub(super) child: Child,
    pub(super) name: String,
    /// Drains stderr as the program writes it (so a chatty program never blocks on a full
    /// pipe) and yields the redacted tail once the program closes it.
    stderr: JoinHandle<String>,
}

impl Program {
    /// Starts `program` with `env` added to the agent's environment. The secret values are
    /// handed to the program only; they are never logged, and are remembered only to redact
    /// them from its stderr.
    pub(super) fn spawn(
        program: &Path,
        args: &[OsString],
        env: &[(OsString, SecretString)],
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<Self, Error> {
        let name = program_name(program);
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            // An early return or a dropped future must not leave a pg_dump running.
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value.expose_secret());
        }
        let mut child = command.spawn().map_err(|source| Error::Spawn {
            program: name.clone(),
            source,
        })?;
        tracing::debug!(program = %name, pid = child.id(), "started");
        let secrets = env
            .iter()
            .map(|(_, value)| Zeroizing::new(value.expose_secret().as_bytes().to_vec()))
            .filter(|value| !value.is_empty())
            .collect();
        let stderr = child.stderr.take().expect("stderr is piped just above");
        Ok(Self {
            child,
            name,
            stderr: tokio::spawn(stderr_tail(stderr, secrets)),
        })
    }

    /// Waits for the program to exit; its status and the tail of its stderr.
    pub(super) async fn wait(mut self) -> Result<(ExitStatus, String), Error> {
        let status = self
            .child
            .wait()
            .await
            .map_err(|e| Error::Task(format!("wait for {}: {e}", self.name)))?;
        let stderr = self.stderr.await.unwrap_or_default();
        tracing::debug!(program = %self.name, %status, "exited");
        Ok((status, stderr))
    }

    /// Waits for the program; an error naming it unless it exited successfully.
    pub(super) async fn check(self) -> Result<(), Error> {
        let name = self.name.clone();
        let (status, stderr) = self.wait().await?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::ProgramFailed {
                program: name,
                status,
                stderr,
            })
        }
    }

    /// Kills the program (SIGKILL) and reaps it.
    pub(super) async fn kill(mut self) {
        if let Err(error) = self.child.kill().await {
            tracing::warn!(program = %self.name, %error, "kill");
        }
        self.stderr.abort();
    }
}

/// Reads `stderr` to its end, keeping only enough to return its last [`STDERR_TAIL`] bytes with
/// every occurrence of a secret replaced.
async fn stderr_tail(mut stderr: ChildStderr, secrets: Vec<Zeroizing<Vec<u8>>>) -> String {
    let longest = secrets.iter().map(|s| s.len()).max().unwrap_or(0);
    // A secret overlapping the last STDERR_TAIL bytes lies wholly within the last
    // STDERR_TAIL + longest bytes, so keeping that much lets it be redacted whole.
    let keep = STDERR_TAIL + longest;
    let mut tail = Zeroizing::new(Vec::with_capacity(2 * keep));
    let mut dropped = false;
    let mut buf = [0u8; 4096];
    loop {
        match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                tail.extend_from_slice(&buf[..n]);
                if tail.len() > 2 * keep {
                    let cut = tail.len() - keep;
                    tail.drain(..cut);
                    dropped = true;
                }
            }
        }
    }
    tail_text(tail, dropped, &secrets)
}

/// The redacted, trimmed text of a stderr tail. `dropped` says whether its start was cut off.
fn tail_text(
    mut tail: Zeroizing<Vec<u8>>,
    mut dropped: bool,
    secrets: &[Zeroizing<Vec<u8>>],
) -> String {
    let longest = secrets.iter().map(|s| s.len()).max().unwrap_or(0);
    if dropped {
        // The first bytes may be the end of a secret whose start was cut off: not whole, so
        // not recognisable. They go too.
        let cut = longest.min(tail.len());
        tail.drain(..cut);
    }
    let mut text = Zeroizing::new(redact(&tail, secrets));
    if text.len() > STDERR_TAIL {
        let cut = text.len() - STDERR_TAIL;
        text.drain(..cut);
        dropped = true;
    }
    let mut start = 0;
    if dropped {
        // Start at a whole line.
        if let Some(newline) = text.iter().position(|&b| b == b'\n') {
            start = newline + 1;
        }
    }
    String::from_utf8_lossy(&text[start..]).trim().to_owned()
}

/// `text` with every occurrence of each secret replaced by [`REDACTED`].
fn redact(text: &[u8], secrets: &[Zeroizing<Vec<u8>>]) -> Vec<u8> {
    let mut text = text.to_vec();
    for secret in secrets {
        let mut out = Vec::with_capacity(text.len());
        let mut i = 0;
        while i < text.len() {
            if text[i..].starts_with(secret) {
                out.extend_from_slice(REDACTED);
                i += secret.len();
            } else {
                out.push(text[i]);
                i += 1;
            }
        }
        zeroize::Zeroize::zeroize(&mut text);
        text = out;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(values: &[&str]) -> Vec<Zeroizing<Vec<u8>>> {
        values
            .iter()
            .map(|v| Zeroizing::new(v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn echoed_secrets_are_redacted() {
        let text = tail_text(
            Zeroizing::new(b"pg_dump: error: password \"hunter2\" for hunter2x\n".to_vec()),
            false,
            &secrets(&["hunter2"]),
        );
        assert_eq!(
            text,
            "pg_dump: error: password \"[redacted]\" for [redacted]x"
        );
    }

    #[test]
    fn a_secret_cut_by_the_tail_leaves_no_fragment() {
        // What stderr_tail keeps once it dropped the start: the cut fell inside the secret.
        let mut kept = b"ret-canary was the password\n".to_vec();
        for i in 0..100 {
            kept.extend_from_slice(format!("pg_dump: reading table {i}\n").as_bytes());
        }
        kept.extend_from_slice(b"pg_dump: error: connection failed\n");
        let text = tail_text(Zeroizing::new(kept), true, &secrets(&["secret-canary"]));
        assert!(
            text.ends_with("pg_dump: error: connection failed"),
            "{text}"
        );
        assert!(!text.contains("canary"), "{text}");
    }

    #[test]
    fn long_stderr_keeps_its_last_lines() {
        let mut long = Vec::new();
        for i in 0..1000 {
            long.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let text = tail_text(Zeroizing::new(long), false, &[]);
        assert!(text.len() <= STDERR_TAIL);
        assert!(text.ends_with("line 999"));
        assert!(text.starts_with("line "));
    }
}

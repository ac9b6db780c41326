//! Running commands, stopping processes, and waiting for ports, all interruptible.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::interrupt::{self, Interrupted};

const POLL: Duration = Duration::from_millis(100);

/// Prints one progress line.
pub fn step(msg: impl std::fmt::Display) {
    eprintln!("xtask: {msg}");
}

/// `cargo`, as the one that runs us (cargo sets `CARGO` for `cargo run`).
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The command line, for messages.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|s| s.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` in the foreground and returns its status, whatever it is.
pub fn run(cmd: &mut Command) -> Result<ExitStatus> {
    let desc = describe(cmd);
    let mut child = cmd.spawn().with_context(|| format!("start `{desc}`"))?;
    wait(&mut child)
}

/// Runs `cmd` in the foreground and fails unless it succeeds.
pub fn run_ok(cmd: &mut Command) -> Result<()> {
    let status = run(cmd)?;
    if !status.success() {
        bail!("`{}` failed ({status})", describe(cmd));
    }
    Ok(())
}

/// Runs `cmd` with stdout and stderr going to `log`; on failure the error quotes its tail.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    logged(cmd, log, true)
}

/// [`run_logged`] that ignores interrupts, for the bounded commands that stop the stack
/// (they run *because* of an interrupt).
pub fn run_logged_to_end(cmd: &mut Command, log: &Path) -> Result<()> {
    logged(cmd, log, false)
}

fn logged(cmd: &mut Command, log: &Path, interruptible: bool) -> Result<()> {
    let file = File::create(log).with_context(|| format!("create {}", log.display()))?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone().context("duplicate a log file handle")?)
        .stderr(file);
    let status = if interruptible {
        run(cmd)?
    } else {
        cmd.spawn()
            .and_then(|mut child| child.wait())
            .with_context(|| format!("run `{}`", describe(cmd)))?
    };
    if !status.success() {
        bail!(
            "`{}` failed ({status}); last lines of {}:\n{}",
            describe(cmd),
            log.display(),
            tail(log, 15)
        );
    }
    Ok(())
}

/// Waits for a foreground child. On interrupt the child is stopped too: a Ctrl-C at the
/// terminal already reached it (same process group), a `kill -INT` of xtask alone did not.
pub fn wait(child: &mut Child) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().context("wait for a child process")? {
            return Ok(status);
        }
        if interrupt::requested() {
            stop_child(child, Signal::SIGINT, Duration::from_secs(10));
            return Err(Interrupted.into());
        }
        sleep(POLL);
    }
}

/// The exit code to pass on for a child's status (128 + signal when it was killed).
pub fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|sig| 128 + sig))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Sends `signal` to our child, waits up to `grace` for it to exit, then SIGKILLs it.
/// Returns whether it exited within the grace period.
pub fn stop_child(child: &mut Child, signal: Signal, grace: Duration) -> bool {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in i32"));
    if matches!(child.try_wait(), Ok(Some(_))) {
        return true;
    }
    let _ = kill(pid, signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return true;
        }
        sleep(POLL);
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Like [`stop_child`] for a process that is not our child (left over by a crashed run).
pub fn stop_pid(pid: i32, signal: Signal, grace: Duration) -> bool {
    let pid = Pid::from_raw(pid);
    let gone = || kill(pid, None) == Err(Errno::ESRCH);
    if kill(pid, signal).is_err() {
        return gone();
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if gone() {
            return true;
        }
        sleep(POLL);
    }
    let _ = kill(pid, Signal::SIGKILL);
    false
}

/// Whether a process with this pid exists.
pub fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// A free loopback port: bind port 0, read the port, drop the listener.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("bind a free loopback port")?;
    Ok(listener.local_addr().context("read the bound port")?.port())
}

/// Polls `ready` until it says yes, it fails, the deadline passes or the user interrupts.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        interrupt::check()?;
        if ready()? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what} was not ready after {}s", timeout.as_secs());
        }
        sleep(POLL);
    }
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn tcp_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&loopback(port), Duration::from_millis(500)).is_ok()
}

/// Whether an HTTP server answers `GET /` on 127.0.0.1:`port` (any status will do).
pub fn http_answers(port: u16) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut stream = TcpStream::connect_timeout(&loopback(port), Duration::from_millis(500))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        stream.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
        let mut head = [0u8; 5];
        stream.read_exact(&mut head)?;
        Ok(&head == b"HTTP/")
    };
    attempt().unwrap_or(false)
}

/// The last `lines` lines of a (log) file, or a note that it cannot be read.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(cannot read {}: {err})", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_port_can_be_bound_again() {
        let port = free_port().unwrap();
        assert_ne!(port, 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }

    #[test]
    fn http_answers_sees_a_status_line_and_tcp_alone_is_not_enough() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            // First connection: say nothing and hang up. Second: answer like a web server.
            drop(listener.accept().unwrap());
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf).unwrap();
            conn.write_all(b"HTTP/1.1 404 Not Found\r\n\r\n").unwrap();
        });
        assert!(!http_answers(port));
        assert!(http_answers(port));
        server.join().unwrap();
    }
}

//! The agent runs unprivileged: started as root, it switches to the configured account before
//! it reads its identity or starts a thread; without one it refuses to run.

use nix::unistd::{Uid, User, geteuid, setgid, setgroups, setuid};

/// Why the agent will not run as it was started.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Started as root with no account to switch to.
    #[error(
        "coffer-agent does not run as root: set `user` (COFFER_AGENT_USER) to the unprivileged \
         account to switch to, or start it as that account"
    )]
    Root,
    /// The account does not exist.
    #[error("user {0} does not exist")]
    NoSuchUser(String),
    /// The account is root itself.
    #[error("user {0} is root; name an unprivileged account")]
    Privileged(String),
    /// The switch failed.
    #[error("switching to user {user}: {cause}")]
    Switch {
        /// The account.
        user: String,
        /// The system's error.
        cause: nix::Error,
    },
}

/// Drops root for `user` (its uid, primary group and no supplementary groups); nothing to do
/// when not root. Call before any thread starts.
pub fn drop_root(user: Option<&str>) -> Result<(), Error> {
    if !geteuid().is_root() {
        return Ok(());
    }
    let name = user.ok_or(Error::Root)?;
    let switch = |cause| Error::Switch {
        user: name.to_owned(),
        cause,
    };
    let account = User::from_name(name)
        .map_err(switch)?
        .ok_or_else(|| Error::NoSuchUser(name.to_owned()))?;
    if account.uid == Uid::from_raw(0) {
        return Err(Error::Privileged(name.to_owned()));
    }
    // Groups first: after setuid the process may no longer change them.
    setgroups(&[account.gid]).map_err(switch)?;
    setgid(account.gid).map_err(switch)?;
    setuid(account.uid).map_err(switch)?;
    if setuid(Uid::from_raw(0)).is_ok() {
        return Err(Error::Privileged(name.to_owned()));
    }
    Ok(())
}

//! [`RetryPolicy`] and the rule for which failures are worth another attempt.
//!
//! Two kinds of RPC:
//!
//! - **Reads** (and `Exchange`, which only issues another token) are retried after any
//!   `UNAVAILABLE` answer and any transport failure, even one that cut a request off halfway.
//! - **Writes** are retried only when the request certainly changed nothing: the server answered
//!   `UNAVAILABLE` itself (Coffer does that only when storage or KMS failed and nothing was
//!   committed), or the connection could not be opened, so nothing was sent. A connection that
//!   breaks after the request left is ambiguous — the server may have committed it — so the
//!   write is not repeated and [`crate::Error::Transport`] tells the caller to check.
//!
//! Nothing else is retried: not `ABORTED`, not timeouts, not any other code.

use std::error::Error as _;
use std::time::Duration;

use rand::Rng;
use tonic::{Code, Status};

use crate::error::has_source;

/// How often and how long to retry a call that failed with `UNAVAILABLE` or a connection
/// error: exponential backoff with jitter, bounded by a number of attempts and a deadline.
///
/// The n-th retry waits a random time between half and all of
/// `min(initial_backoff * 2^(n-1), max_backoff)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    deadline: Option<Duration>,
}

impl Default for RetryPolicy {
    /// Five attempts, backing off from 100 ms up to 2 s, within 20 s.
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            deadline: Some(Duration::from_secs(20)),
        }
    }
}

impl RetryPolicy {
    /// No retries: every call is sent once.
    pub fn never() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// How many times a call is sent at most, the first included (at least 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// The wait before the first retry (before jitter).
    pub fn initial_backoff(mut self, backoff: Duration) -> Self {
        self.initial_backoff = backoff;
        self
    }

    /// The longest wait between two attempts (before jitter).
    pub fn max_backoff(mut self, backoff: Duration) -> Self {
        self.max_backoff = backoff;
        self
    }

    /// No retry starts once this long has passed since the first attempt; `None`: only
    /// [`RetryPolicy::max_attempts`] bounds the retries.
    pub fn deadline(mut self, deadline: Option<Duration>) -> Self {
        self.deadline = deadline;
        self
    }

    /// How long to wait before attempt `attempts + 1` of a call of kind `kind` that failed
    /// with `status` after `elapsed`, or `None` to give up.
    pub(crate) fn retry_after(
        &self,
        kind: Kind,
        status: &Status,
        attempts: u32,
        elapsed: Duration,
    ) -> Option<Duration> {
        if attempts >= self.max_attempts || !kind.retries(Failure::of(status)) {
            return None;
        }
        let delay = self.backoff(attempts);
        match self.deadline {
            Some(deadline) if elapsed + delay > deadline => None,
            _ => Some(delay),
        }
    }

    /// The jittered wait after the `retry`-th failed attempt (1-based).
    fn backoff(&self, retry: u32) -> Duration {
        let factor = 2u32.saturating_pow(retry.saturating_sub(1));
        let ceiling = self
            .initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff);
        let floor = ceiling / 2;
        if ceiling.is_zero() {
            return ceiling;
        }
        rand::thread_rng().gen_range(floor..=ceiling)
    }
}

/// Whether repeating an RPC is harmless when its first attempt may have been applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Reading, or exchanging a key for a token: repeating it changes nothing.
    Read,
    /// Changing state: repeat only what certainly was not applied.
    Write,
}

impl Kind {
    fn retries(self, failure: Failure) -> bool {
        match failure {
            Failure::ServerUnavailable | Failure::NotSent => true,
            Failure::Interrupted => self == Kind::Read,
            Failure::Final => false,
        }
    }
}

/// What a failed attempt tells us about whether it was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The server answered `UNAVAILABLE`: it applied nothing.
    ServerUnavailable,
    /// The connection could not be opened: the request was never sent.
    NotSent,
    /// The connection failed while the request was in flight: it may have been applied.
    Interrupted,
    /// Anything else: an answer to act on, not to repeat.
    Final,
}

impl Failure {
    fn of(status: &Status) -> Self {
        if status.source().is_none() {
            // An answer from the server (or a proxy) carrying a gRPC status.
            return if status.code() == Code::Unavailable {
                Failure::ServerUnavailable
            } else {
                Failure::Final
            };
        }
        if has_source::<tonic::ConnectError>(status) {
            Failure::NotSent
        } else if has_source::<tonic::TimeoutExpired>(status) {
            Failure::Final
        } else {
            Failure::Interrupted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect_error() -> Status {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))))
    }

    fn broken_pipe() -> Status {
        Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "connection closed",
        )))
    }

    #[test]
    fn writes_are_retried_only_when_nothing_can_have_been_applied() {
        let policy = RetryPolicy::default();
        let retried = |kind, status: Status| {
            policy
                .retry_after(kind, &status, 1, Duration::ZERO)
                .is_some()
        };
        for kind in [Kind::Read, Kind::Write] {
            assert!(retried(kind, Status::unavailable("storage is unavailable")));
            assert!(retried(kind, connect_error()));
            for code in [
                Code::Unknown,
                Code::InvalidArgument,
                Code::NotFound,
                Code::Aborted,
                Code::Unauthenticated,
                Code::Internal,
                Code::DeadlineExceeded,
            ] {
                assert!(!retried(kind, Status::new(code, "x")), "{code:?}");
            }
            let timeout = Status::from_error(Box::new(tonic::TimeoutExpired(())));
            assert!(!retried(kind, timeout));
        }
        assert!(retried(Kind::Read, broken_pipe()));
        assert!(!retried(Kind::Write, broken_pipe()));
    }

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap_with_jitter() {
        let policy = RetryPolicy::default()
            .initial_backoff(Duration::from_millis(100))
            .max_backoff(Duration::from_millis(1000));
        for (retry, ceiling) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let ceiling = Duration::from_millis(ceiling);
            for _ in 0..50 {
                let d = policy.backoff(retry);
                assert!(ceiling / 2 <= d && d <= ceiling, "retry {retry}: {d:?}");
            }
        }
    }

    #[test]
    fn attempts_and_the_deadline_bound_the_retries() {
        let unavailable = Status::unavailable("down");
        let policy = RetryPolicy::default()
            .max_attempts(3)
            .initial_backoff(Duration::from_millis(100))
            .deadline(Some(Duration::from_secs(1)));
        assert!(
            policy
                .retry_after(Kind::Read, &unavailable, 2, Duration::ZERO)
                .is_some()
        );
        assert!(
            policy
                .retry_after(Kind::Read, &unavailable, 3, Duration::ZERO)
                .is_none()
        );
        assert!(
            policy
                .retry_after(Kind::Read, &unavailable, 1, Duration::from_millis(950))
                .is_none(),
            "the wait would end past the deadline"
        );
        assert!(
            RetryPolicy::never()
                .retry_after(Kind::Read, &unavailable, 1, Duration::ZERO)
                .is_none()
        );
    }
}

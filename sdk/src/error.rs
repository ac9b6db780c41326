//! [`Error`]: what a call to Coffer can fail with.

use std::error::Error as _;

use tonic::{Code, Status};

/// Why a call failed.
///
/// Variants carrying a server `message` keep the gRPC status message as the server sent it;
/// the gRPC code is the variant ([`Error::code`] gives it back). Coffer's messages never echo
/// credentials, and the SDK adds none: no variant contains the API key or an access token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `INVALID_ARGUMENT`: the request broke a rule; the message names the field.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// The server's message.
        message: String,
    },
    /// `NOT_FOUND`: no such resource, or it belongs to an org the caller is not in (Coffer
    /// answers cross-tenant access this way).
    #[error("not found: {message}")]
    NotFound {
        /// The server's message.
        message: String,
    },
    /// `ALREADY_EXISTS`.
    #[error("already exists: {message}")]
    AlreadyExists {
        /// The server's message.
        message: String,
    },
    /// `PERMISSION_DENIED`: authenticated, but the key's role does not allow this.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The server's message.
        message: String,
    },
    /// `UNAUTHENTICATED`: the API key was refused, or an access token was refused even after
    /// one refresh (a revoked key, for instance).
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// The server's message.
        message: String,
    },
    /// `FAILED_PRECONDITION`: the request is valid but not in the resource's current state
    /// (demoting an org's last owner, for instance).
    #[error("failed precondition: {message}")]
    FailedPrecondition {
        /// The server's message.
        message: String,
    },
    /// `ABORTED`: the resource changed concurrently and nothing was applied; the call may be
    /// repeated. Not retried automatically.
    #[error("aborted: {message}")]
    Aborted {
        /// The server's message.
        message: String,
    },
    /// `UNAVAILABLE` answered by the server (storage or KMS down, auth not ready) on every
    /// attempt the retry policy allowed.
    #[error("unavailable after {attempts} attempt(s): {message}")]
    Unavailable {
        /// The server's message from the last attempt.
        message: String,
        /// How many times the call was sent.
        attempts: u32,
    },
    /// The call did not complete in time: the client's request timeout or a server-side
    /// `DEADLINE_EXCEEDED`. It may or may not have been applied.
    #[error("timed out: {message}")]
    Timeout {
        /// What timed out.
        message: String,
    },
    /// The connection failed (refused, reset, TLS or HTTP/2 error) on every attempt the
    /// retry policy allowed.
    #[error("transport error after {attempts} attempt(s): {message}")]
    Transport {
        /// The cause, innermost last.
        message: String,
        /// How many times the call was tried.
        attempts: u32,
    },
    /// Any other status the server answered with (`INTERNAL`, `UNIMPLEMENTED`,
    /// `RESOURCE_EXHAUSTED`, …).
    #[error("{}: {message}", code_name(*.code))]
    Server {
        /// The gRPC code.
        code: Code,
        /// The server's message.
        message: String,
    },
    /// The server's answer could not be understood: a missing field, an id that is not a UUID,
    /// an unknown role. Usually a version mismatch between SDK and server.
    #[error("protocol: {message}")]
    Protocol {
        /// What was wrong, naming the message and field.
        message: String,
    },
    /// The endpoint is not a usable `http://` or `https://` URL.
    #[error("invalid endpoint: {message}")]
    InvalidEndpoint {
        /// What is wrong with it.
        message: String,
    },
    /// Writing what the server sent to a local sink failed (an export bundle's file, for
    /// instance).
    #[error("{message}")]
    Io {
        /// What was being written, and the I/O error.
        message: String,
    },
}

impl Error {
    /// The gRPC code this error stands for; `None` for errors the SDK detected itself
    /// ([`Error::Protocol`], [`Error::InvalidEndpoint`], [`Error::Io`]). Transport failures report
    /// `UNAVAILABLE`, timeouts `DEADLINE_EXCEEDED`.
    pub fn code(&self) -> Option<Code> {
        Some(match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::NotFound { .. } => Code::NotFound,
            Error::AlreadyExists { .. } => Code::AlreadyExists,
            Error::PermissionDenied { .. } => Code::PermissionDenied,
            Error::Unauthenticated { .. } => Code::Unauthenticated,
            Error::FailedPrecondition { .. } => Code::FailedPrecondition,
            Error::Aborted { .. } => Code::Aborted,
            Error::Unavailable { .. } | Error::Transport { .. } => Code::Unavailable,
            Error::Timeout { .. } => Code::DeadlineExceeded,
            Error::Server { code, .. } => *code,
            Error::Protocol { .. } | Error::InvalidEndpoint { .. } | Error::Io { .. } => {
                return None;
            }
        })
    }

    /// The error for a failed call, `attempts` being how many times it was sent.
    pub(crate) fn from_status(status: &Status, attempts: u32) -> Self {
        let message = status.message().to_owned();
        if status.source().is_some() {
            // Raised on this side of the wire: the transport, or the request timeout.
            if has_source::<tonic::TimeoutExpired>(status) {
                return Error::Timeout {
                    message: chain(status),
                };
            }
            return Error::Transport {
                message: chain(status),
                attempts,
            };
        }
        match status.code() {
            Code::InvalidArgument => Error::InvalidArgument { message },
            Code::NotFound => Error::NotFound { message },
            Code::AlreadyExists => Error::AlreadyExists { message },
            Code::PermissionDenied => Error::PermissionDenied { message },
            Code::Unauthenticated => Error::Unauthenticated { message },
            Code::FailedPrecondition => Error::FailedPrecondition { message },
            Code::Aborted => Error::Aborted { message },
            Code::Unavailable => Error::Unavailable { message, attempts },
            Code::DeadlineExceeded => Error::Timeout { message },
            code => Error::Server { code, message },
        }
    }

    /// A malformed answer: `what` names the message and field, e.g. `Member.user_id`.
    pub(crate) fn protocol(what: impl Into<String>) -> Self {
        Error::Protocol {
            message: what.into(),
        }
    }
}

/// Whether a `T` is anywhere in the status's source chain.
pub(crate) fn has_source<T: std::error::Error + 'static>(status: &Status) -> bool {
    let mut source = status.source();
    while let Some(err) = source {
        if err.is::<T>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The status message and its causes, joined with ": ", skipping repeats (tonic copies the
/// innermost message into the status).
fn chain(status: &Status) -> String {
    let mut parts: Vec<String> = Vec::new();
    if !status.message().is_empty() {
        parts.push(status.message().to_owned());
    }
    let mut source = status.source();
    while let Some(err) = source {
        let text = err.to_string();
        // tonic's transport error only ever says "transport error"; its cause says what.
        let generic = err.is::<tonic::transport::Error>();
        if !generic && !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = err.source();
    }
    parts.join(": ")
}

/// A gRPC code in lowercase words, as the other variants print theirs.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal error",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_statuses_keep_their_code_and_message() {
        let cases = [
            (Status::not_found("org not found"), Code::NotFound),
            (
                Status::invalid_argument("name must not be empty"),
                Code::InvalidArgument,
            ),
            (Status::already_exists("member exists"), Code::AlreadyExists),
            (Status::permission_denied("x"), Code::PermissionDenied),
            (
                Status::unauthenticated("invalid credentials"),
                Code::Unauthenticated,
            ),
            (Status::failed_precondition("x"), Code::FailedPrecondition),
            (Status::aborted("x"), Code::Aborted),
            (
                Status::unavailable("storage is unavailable"),
                Code::Unavailable,
            ),
            (Status::internal("boom"), Code::Internal),
            (Status::unimplemented(""), Code::Unimplemented),
        ];
        for (status, code) in cases {
            let err = Error::from_status(&status, 1);
            assert_eq!(err.code(), Some(code), "{err:?}");
            assert!(err.to_string().ends_with(status.message()), "{err}");
        }
        assert_eq!(
            Error::from_status(&Status::not_found("org not found"), 1).to_string(),
            "not found: org not found"
        );
        assert_eq!(
            Error::from_status(&Status::internal("boom"), 1).to_string(),
            "internal error: boom"
        );
    }

    #[test]
    fn failures_on_this_side_of_the_wire_are_transport_errors_with_their_cause() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        let err = Error::from_status(&status, 3);
        assert_eq!(
            err,
            Error::Transport {
                message: "refused".into(),
                attempts: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "transport error after 3 attempt(s): refused"
        );
    }
}

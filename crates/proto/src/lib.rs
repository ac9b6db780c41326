//! Generated protobuf and gRPC types for every Coffer API and event payload.
//!
//! The `.proto` sources live in `proto/` at the workspace root and are compiled here by
//! protox (no system `protoc`). Protobuf types stop at each service's gRPC adapter: domain code
//! converts them into its own types with `TryFrom`.

#![allow(missing_docs, clippy::all, missing_debug_implementations)]

/// Encoded `FileDescriptorSet` of every Coffer proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/coffer_descriptor.bin"));

/// A `Debug` for a message whose derived one `build.rs` skipped: the listed fields as they are,
/// the secret field as `[REDACTED]`.
macro_rules! redacted_debug {
    ($message:ident { $($field:ident),* } secret $secret:ident) => {
        impl ::std::fmt::Debug for $message {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                // Only the listed fields are shown; naming the secret here makes a rename of it
                // fail to compile rather than silently drop the redaction.
                let _ = &self.$secret;
                f.debug_struct(stringify!($message))
                    $(.field(stringify!($field), &self.$field))*
                    .field(stringify!($secret), &"[REDACTED]")
                    .finish()
            }
        }
    };
}

pub mod common {
    pub mod v1 {
        tonic::include_proto!("coffer.common.v1");
    }
}

pub mod events {
    pub mod v1 {
        tonic::include_proto!("coffer.events.v1");
    }
}

/// Zeroes a message's secret field when the message is dropped, so a value that passed through
/// a request or response does not linger in freed memory. (The encoded frames tonic, hyper and
/// rustls buffer on the way are theirs and are not covered.)
macro_rules! zeroize_on_drop {
    ($message:ident . $secret:ident) => {
        impl Drop for $message {
            fn drop(&mut self) {
                ::zeroize::Zeroize::zeroize(&mut self.$secret);
            }
        }
    };
}

pub mod diagnostics {
    pub mod v1 {
        tonic::include_proto!("coffer.diagnostics.v1");
    }
}

pub mod enrollment {
    pub mod v1 {
        tonic::include_proto!("coffer.enrollment.v1");
    }
}

pub mod audit {
    pub mod v1 {
        tonic::include_proto!("coffer.audit.v1");
    }
}

pub mod scheduling {
    pub mod v1 {
        tonic::include_proto!("coffer.scheduling.v1");

        redacted_debug!(
            ClaimedJob { job, fencing_token, lease_expires_at, database, restore_artifact, destination }
            secret ticket
        );
    }
}

pub mod credentials {
    pub mod v1 {
        tonic::include_proto!("coffer.credentials.v1");

        redacted_debug!(CreateCredentialRequest { org_id, name, purpose } secret value);
        redacted_debug!(ReplaceCredentialValueRequest { org_id, credential_id } secret value);
        redacted_debug!(RecoveryKey { org_id, recipient } secret identity);
        redacted_debug!(ReleaseCredentialsRequest {} secret ticket);
        redacted_debug!(ReleasedCredential { vault_ref, version, purpose } secret value);
        redacted_debug!(UnwrapFileKeyRequest {} secret ticket);
        redacted_debug!(UnwrapFileKeyResponse { job_id, attempt, header_sha256 } secret file_key);

        zeroize_on_drop!(CreateCredentialRequest.value);
        zeroize_on_drop!(ReplaceCredentialValueRequest.value);
        zeroize_on_drop!(RecoveryKey.identity);
        zeroize_on_drop!(ReleasedCredential.value);
        zeroize_on_drop!(UnwrapFileKeyResponse.file_key);
    }
}

/// Request-field checks every gRPC adapter starts with, so a bad field is refused the same way
/// (INVALID_ARGUMENT, `<field> <rule>`) by every service.
pub mod request {
    use tonic::Status;

    /// Longest free-text field accepted before any other check, so oversized input is refused
    /// cheaply and by name.
    pub const MAX_FIELD_BYTES: usize = 4096;

    /// Parses an id field; `"<field> must be a UUID"` otherwise. The input is not echoed.
    pub fn id<T: std::str::FromStr>(s: &str, field: &str) -> Result<T, Status> {
        s.parse()
            .map_err(|_| Status::invalid_argument(format!("{field} must be a UUID")))
    }

    /// A free-text field of at most [`MAX_FIELD_BYTES`].
    pub fn text<'a>(s: &'a str, field: &str) -> Result<&'a str, Status> {
        if s.len() > MAX_FIELD_BYTES {
            return Err(Status::invalid_argument(format!(
                "{field} must be at most {MAX_FIELD_BYTES} bytes"
            )));
        }
        Ok(s)
    }
}

/// Conversions between `chrono` UTC times and `google.protobuf.Timestamp`, shared by every
/// adapter and event codec so the range rules are the same everywhere.
pub mod time {
    use chrono::{DateTime, Utc};

    /// A `Timestamp` that is not a valid UTC instant.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum TimestampError {
        /// `nanos` outside `0..1_000_000_000`.
        #[error("nanos must be in 0..1e9")]
        Nanos,
        /// `seconds` beyond what a UTC time can hold.
        #[error("is out of range")]
        Range,
    }

    /// A UTC time as a protobuf `Timestamp`.
    pub fn to_timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
        prost_types::Timestamp {
            seconds: t.timestamp(),
            nanos: t.timestamp_subsec_nanos() as i32,
        }
    }

    /// A protobuf `Timestamp` as a UTC time, refusing out-of-range values.
    pub fn from_timestamp(ts: &prost_types::Timestamp) -> Result<DateTime<Utc>, TimestampError> {
        let nanos = u32::try_from(ts.nanos)
            .ok()
            .filter(|n| *n < 1_000_000_000)
            .ok_or(TimestampError::Nanos)?;
        DateTime::from_timestamp(ts.seconds, nanos).ok_or(TimestampError::Range)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn times_round_trip_and_bad_values_are_refused() {
            let t = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
            assert_eq!(from_timestamp(&to_timestamp(t)), Ok(t));
            let bad = |seconds, nanos| from_timestamp(&prost_types::Timestamp { seconds, nanos });
            assert_eq!(bad(0, -1), Err(TimestampError::Nanos));
            assert_eq!(bad(0, 1_000_000_000), Err(TimestampError::Nanos));
            assert_eq!(bad(i64::MAX, 0), Err(TimestampError::Range));
        }
    }
}

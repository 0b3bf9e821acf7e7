//! The vault's error type: one enum named by meaning, mapped to a gRPC status
//! in exactly one place (`api::status`). Messages never carry secrets, record
//! values or plaintext subject ids.

/// Why a vault operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Malformed input; names the field and the rule it breaks.
    #[error("{field}: {rule}")]
    InvalidArgument { field: &'static str, rule: String },
    /// No API key, or one that is unknown, malformed, revoked or expired.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The caller's roles do not allow the action.
    #[error("{0}")]
    PermissionDenied(String),
    /// Absent, or not visible to the caller (another tenant's data).
    #[error("{0}")]
    NotFound(String),
    /// A create named something that exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The system is not in a state that allows the call: suspended tenant,
    /// erased subject, version mismatch.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A size or count limit.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Storage cannot commit or answer right now.
    #[error("{0}")]
    Unavailable(String),
    /// Stored ciphertext or a wrapped key failed authentication: tampered,
    /// corrupted, or moved to another identity.
    #[error("{0}")]
    Corrupt(String),
    /// A broken invariant; the message names it.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Short for `Result<T, Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The gRPC status code this error is answered with (the numbers of
    /// `google.rpc.Code`). The one mapping: `api` and the audit log use it.
    pub fn grpc_code(&self) -> i32 {
        match self {
            Error::InvalidArgument { .. } => 3,
            Error::NotFound(_) => 5,
            Error::AlreadyExists(_) => 6,
            Error::PermissionDenied(_) => 7,
            Error::ResourceExhausted(_) => 8,
            Error::FailedPrecondition(_) => 9,
            Error::Internal(_) => 13,
            Error::Unavailable(_) => 14,
            Error::Corrupt(_) => 15,
            Error::Unauthenticated(_) => 16,
        }
    }

    /// An `InvalidArgument` naming `field` and the `rule` it breaks.
    pub fn invalid(field: &'static str, rule: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field,
            rule: rule.into(),
        }
    }
}

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

impl From<rusqlite::Error> for Error {
    /// Storage failures by meaning. SQLite's own words (table, column and
    /// constraint names) stay in the server log: clients learn what
    /// happened, never the schema.
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        use rusqlite::ffi;
        match &e {
            // A stored value of the wrong type or shape: damaged storage.
            rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..) => {
                tracing::error!(error = %e, "storage holds a value of the wrong type");
                return Error::Corrupt(
                    "storage: a stored value has the wrong type: the stored rows are damaged"
                        .into(),
                );
            }
            rusqlite::Error::SqliteFailure(f, _) if f.code == C::ConstraintViolation => {
                tracing::warn!(error = %e, "storage constraint refused a write");
                return match f.extended_code {
                    ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                        Error::AlreadyExists("it already exists".into())
                    }
                    _ => Error::Internal(
                        "storage refused an inconsistent write; see the server log".into(),
                    ),
                };
            }
            _ => {}
        }
        match e.sqlite_error_code() {
            Some(
                C::DatabaseBusy
                | C::DatabaseLocked
                | C::DiskFull
                | C::SystemIoFailure
                | C::ReadOnly
                | C::CannotOpen
                | C::OutOfMemory,
            ) => {
                tracing::warn!(error = %e, "storage unavailable");
                Error::Unavailable("storage unavailable; retry with backoff".into())
            }
            Some(C::DatabaseCorrupt | C::NotADatabase) => {
                tracing::error!(error = %e, "storage is damaged");
                Error::Corrupt("storage: the database file is damaged".into())
            }
            _ => {
                tracing::error!(error = %e, "storage failed");
                Error::Internal("storage failed; see the server log".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_errors_keep_the_schema_to_the_log() {
        let conn = rusqlite::Connection::open_in_memory().expect("in-memory database");
        conn.execute_batch("CREATE TABLE secret_table (k TEXT PRIMARY KEY, b BLOB NOT NULL); INSERT INTO secret_table VALUES ('a', x'00')")
            .expect("schema");
        let dup = conn
            .execute("INSERT INTO secret_table VALUES ('a', x'01')", [])
            .map_err(Error::from)
            .expect_err("a duplicate key");
        assert!(matches!(dup, Error::AlreadyExists(_)), "{dup:?}");
        let null = conn
            .execute("INSERT INTO secret_table VALUES ('b', NULL)", [])
            .map_err(Error::from)
            .expect_err("a NOT NULL violation");
        let text = conn
            .query_row("SELECT k FROM secret_table", [], |r| r.get::<_, Vec<u8>>(0))
            .map_err(Error::from)
            .expect_err("TEXT read as BLOB");
        assert!(matches!(text, Error::Corrupt(_)), "{text:?}");
        for e in [dup, null, text] {
            assert!(!e.to_string().contains("secret_table"), "{e}");
        }
    }
}

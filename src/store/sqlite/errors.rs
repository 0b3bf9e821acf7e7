//! SQLite's errors by meaning.

use crate::error::Error;

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

//! Leases: which server runs the background jobs.

use crate::error::Result;

/// A lease on a named piece of work, held by one server until it expires.
pub trait LeaseRows {
    /// Takes or renews lease `name` for `holder` until `until_ms`, when it
    /// is free, already `holder`'s, or expired (its end before `now_ms`).
    /// Whether `holder` holds it now.
    fn lease_claim(&self, name: &str, holder: &str, now_ms: i64, until_ms: i64) -> Result<bool>;

    /// Gives lease `name` up, if `holder` has it (a clean shutdown: another
    /// server need not wait for it to expire).
    fn lease_release(&self, name: &str, holder: &str) -> Result<()>;

    /// The holders of the leases whose names start with `prefix` and that
    /// have not expired at `now_ms`.
    fn leases_live(&self, prefix: &str, now_ms: i64) -> Result<Vec<String>>;

    /// Makes the rest of this transaction exclusive across servers for the
    /// work named `name`: waits until no other server's transaction holds
    /// it, and holds it until this one ends (a PostgreSQL advisory
    /// transaction lock). For units whose effect outside the database (a
    /// shared file) a retried transaction cannot undo. Nothing on SQLite,
    /// whose one writer runs every unit alone.
    fn exclusive(&self, name: &str) -> Result<()>;
}

//! The SQLite backend: the concept traits of [`super::seam`] implemented
//! on a `rusqlite::Connection`, the schema, and the database file's
//! connections (`files`).

mod audit;
mod erasure;
mod errors;
mod files;
mod gauges;
mod holds;
mod keys;
mod principals;
mod records;
mod reencrypt;
mod replay;
mod retention;
pub(super) mod schema;
mod subjects;
mod tenants;

pub(crate) use files::Files;
#[cfg(test)]
pub(crate) use files::write_conn;
use rusqlite::Connection;

use super::seam::{Savepoints, Tx};
use crate::error::Result;

impl Savepoints for Connection {
    fn savepoint(&self, f: &mut dyn FnMut(&dyn Tx) -> bool) -> Result<()> {
        self.execute_batch("SAVEPOINT nested")?;
        let end = if f(self) {
            "RELEASE nested"
        } else {
            "ROLLBACK TO nested; RELEASE nested"
        };
        Ok(self.execute_batch(end)?)
    }
}

/// Test faults: storage refusing writes as a failing disk would.
#[cfg(test)]
pub(crate) mod faults {
    use std::path::Path;

    /// Makes every write of `meta` row `name` in the database at `db` fail
    /// until the returned guard is dropped.
    pub(crate) fn refuse_meta_writes(db: &Path, name: &str) -> impl Drop {
        let conn = rusqlite::Connection::open(db).expect("open the database");
        conn.execute_batch(&format!(
            "CREATE TRIGGER refuse_meta BEFORE UPDATE ON meta WHEN NEW.name = '{name}'
             BEGIN SELECT RAISE(ABORT, 'the disk refuses'); END;"
        ))
        .expect("create the trigger");
        Refusing(conn)
    }

    struct Refusing(rusqlite::Connection);

    impl Drop for Refusing {
        fn drop(&mut self) {
            let _ = self.0.execute_batch("DROP TRIGGER refuse_meta");
        }
    }
}

//! The SQLite backend: the database file's connections (`files`), the
//! schema, and SQLite's errors by meaning. The concept traits are
//! implemented once for both backends in `store::sql`.

mod errors;
mod files;
pub(super) mod schema;

pub(crate) use files::Files;
#[cfg(test)]
pub(crate) use files::write_conn;
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

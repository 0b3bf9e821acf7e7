//! What a test server stored, read or tampered with in SQL on whichever
//! backend it runs on: the SQLite file, or its PostgreSQL database. A test
//! that looks at rows (a count, a wrapped key, a ciphertext) or edits them
//! behind the server's back writes its SQL once, with `$1`-style
//! placeholders and SQL both backends speak; the same test then runs in
//! both passes of `scripts/test`. What only a file has (bytes in the WAL,
//! a grep of the raw file) stays behind [`Stored::file`].

use std::path::{Path, PathBuf};

use postgres::types::{ToSql, Type};

/// Where a vault's rows are.
#[derive(Clone, Debug)]
pub enum Stored {
    Sqlite(PathBuf),
    Postgres(String),
}

/// One value of a result row, whatever the backend called its type.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl Cell {
    pub fn int(&self) -> i64 {
        match self {
            Cell::Int(n) => *n,
            other => panic!("expected an integer, got {other:?}"),
        }
    }

    pub fn text(&self) -> String {
        match self {
            Cell::Text(t) => t.clone(),
            other => panic!("expected text, got {other:?}"),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Cell::Bytes(b) => b.clone(),
            other => panic!("expected bytes, got {other:?}"),
        }
    }

    pub fn is_null(&self) -> bool {
        *self == Cell::Null
    }
}

impl Stored {
    /// The SQLite database file, if that is where the rows are.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Stored::Sqlite(path) => Some(path),
            Stored::Postgres(_) => None,
        }
    }

    /// Every value of every table, as bytes: what a grep for plaintext
    /// searches. On SQLite the file and its WAL (free pages and old frames
    /// included); on PostgreSQL every column of every row of every table
    /// (dead tuples and WAL are the database server's, out of reach here).
    pub fn everything(&self) -> Vec<u8> {
        match self {
            Stored::Sqlite(path) => {
                let mut all = std::fs::read(path).unwrap();
                if let Ok(wal) = std::fs::read(path.with_extension("db-wal")) {
                    all.extend(wal);
                }
                all
            }
            Stored::Postgres(_) => {
                let tables = self.column(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
                    &[],
                );
                assert!(!tables.is_empty(), "no tables");
                let mut all = Vec::new();
                for table in tables {
                    for row in self.rows(&format!("SELECT * FROM {}", table.text()), &[]) {
                        for cell in row {
                            match cell {
                                Cell::Text(t) => all.extend(t.into_bytes()),
                                Cell::Bytes(b) => all.extend(b),
                                Cell::Int(n) => all.extend(n.to_string().into_bytes()),
                                Cell::Null => {}
                            }
                            all.push(0);
                        }
                    }
                }
                all
            }
        }
    }

    /// `bytes` as a literal of this backend's SQL (binding stays text-only:
    /// one parameter type both drivers take the same way).
    pub fn blob(&self, bytes: &[u8]) -> String {
        match self {
            Stored::Sqlite(_) => format!("X'{}'", hex::encode(bytes)),
            Stored::Postgres(_) => format!("'\\x{}'::bytea", hex::encode(bytes)),
        }
    }

    /// Every row `sql` returns, `params` bound as text to `$1`, `$2`, ...
    pub fn rows(&self, sql: &str, params: &[&str]) -> Vec<Vec<Cell>> {
        match self {
            Stored::Sqlite(path) => {
                let c = rusqlite::Connection::open(path).unwrap();
                let mut stmt = c.prepare(&sqlite_placeholders(sql)).unwrap();
                let width = stmt.column_count();
                stmt.query_map(rusqlite::params_from_iter(params), |r| {
                    (0..width).map(|i| Ok(sqlite_cell(r.get_ref(i)?))).collect()
                })
                .unwrap()
                .map(Result::unwrap)
                .collect()
            }
            Stored::Postgres(url) => super::postgres::off_runtime(|| {
                let params: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                super::postgres::connect(url)
                    .query(sql, &params)
                    .unwrap()
                    .iter()
                    .map(|row| (0..row.len()).map(|i| pg_cell(row, i)).collect())
                    .collect()
            }),
        }
    }

    /// The first column of every row.
    pub fn column(&self, sql: &str, params: &[&str]) -> Vec<Cell> {
        self.rows(sql, params)
            .into_iter()
            .map(|r| r.into_iter().next().unwrap())
            .collect()
    }

    /// The one value `sql` returns; panics unless it is exactly one row.
    pub fn one(&self, sql: &str, params: &[&str]) -> Cell {
        let mut values = self.column(sql, params);
        assert_eq!(values.len(), 1, "{sql}: expected one row");
        values.pop().unwrap()
    }

    /// A `count(*)` or other integer `sql` returns.
    pub fn count(&self, sql: &str, params: &[&str]) -> i64 {
        self.one(sql, params).int()
    }

    /// Runs a statement behind the server's back: how many rows it changed.
    pub fn execute(&self, sql: &str, params: &[&str]) -> u64 {
        match self {
            Stored::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute(
                    &sqlite_placeholders(sql),
                    rusqlite::params_from_iter(params),
                )
                .unwrap() as u64,
            Stored::Postgres(url) => super::postgres::off_runtime(|| {
                let params: Vec<&(dyn ToSql + Sync)> =
                    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                super::postgres::connect(url).execute(sql, &params).unwrap()
            }),
        }
    }
}

impl Stored {
    /// Runs several `;`-separated statements with no parameters.
    pub fn batch(&self, sql: &str) {
        match self {
            Stored::Sqlite(path) => rusqlite::Connection::open(path)
                .unwrap()
                .execute_batch(sql)
                .unwrap(),
            Stored::Postgres(url) => {
                super::postgres::off_runtime(|| super::postgres::connect(url).batch_execute(sql))
                    .unwrap()
            }
        }
    }
}

/// `$1` → `?1`: SQLite reads `$1` as a parameter named "$1".
fn sqlite_placeholders(sql: &str) -> String {
    sql.replace('$', "?")
}

fn sqlite_cell(v: rusqlite::types::ValueRef<'_>) -> Cell {
    use rusqlite::types::ValueRef;
    match v {
        ValueRef::Null => Cell::Null,
        ValueRef::Integer(n) => Cell::Int(n),
        ValueRef::Real(f) => panic!("a REAL ({f}) in a Strongbox table"),
        ValueRef::Text(t) => Cell::Text(String::from_utf8(t.to_vec()).unwrap()),
        ValueRef::Blob(b) => Cell::Bytes(b.to_vec()),
    }
}

fn pg_cell(row: &postgres::Row, i: usize) -> Cell {
    let ty = row.columns()[i].type_().clone();
    let cell = match ty {
        Type::INT8 => row.get::<_, Option<i64>>(i).map(Cell::Int),
        Type::INT4 => row.get::<_, Option<i32>>(i).map(|n| Cell::Int(n.into())),
        Type::INT2 => row.get::<_, Option<i16>>(i).map(|n| Cell::Int(n.into())),
        Type::BOOL => row.get::<_, Option<bool>>(i).map(|b| Cell::Int(b.into())),
        Type::TEXT | Type::VARCHAR | Type::NAME => row.get::<_, Option<String>>(i).map(Cell::Text),
        Type::BYTEA => row.get::<_, Option<Vec<u8>>>(i).map(Cell::Bytes),
        other => panic!("column {i}: no Cell for PostgreSQL type {other}"),
    };
    cell.unwrap_or(Cell::Null)
}

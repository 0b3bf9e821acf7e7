//! The concept traits of [`super::seam`], implemented once for both
//! backends on [`Db`], a connection to either. The SQL is written in
//! SQLite's dialect, restricted to what PostgreSQL also runs once four
//! spellings are translated when a statement is prepared on PostgreSQL
//! ([`to_postgres`]): `?N` placeholders, the empty blob `X''`, `rowid` (an
//! explicit `rid` column there) and `instr(`. Every integer column is a
//! 64-bit integer on both; a parameter of any integer width binds to it.
//! PostgreSQL types a parameter where it first meets it, so an optional
//! filter is written `(col = ?2 OR ?2 IS NULL)`, never `(?2 IS NULL OR …)`
//! (which PostgreSQL refuses: "could not determine data type").
//!
//! Statements are prepared once per connection and cached (rusqlite's
//! cache; `postgres::Pg`'s).

mod audit;
mod erasure;
mod gauges;
mod holds;
mod keys;
mod leases;
mod principals;
mod records;
mod reencrypt;
mod replay;
mod retention;
mod subjects;
mod tenants;

use std::cell::RefCell;

use rusqlite::types::{ToSqlOutput, ValueRef};

use super::postgres::Pg;
use super::seam::{ChainPoint, Savepoints, Tx};
use crate::error::{Error, Result};

/// A connection to either backend. (A handful live as long as the server:
/// the size difference between the variants costs nothing.)
#[allow(clippy::large_enum_variant)]
pub(crate) enum Conn {
    Sqlite(rusqlite::Connection),
    Postgres(Pg),
}

/// A connection, and what its current transaction has written that the
/// next statement of the same transaction may rely on without reading it
/// again.
pub(crate) struct Db {
    conn: Conn,
    /// The audit lane head this transaction's last append wrote: (lane,
    /// seq, MAC). Nothing outside the transaction can change it before the
    /// transaction ends, so the next append in it extends that head
    /// without reading and checking the stored one again (three statements
    /// and two MACs). Forgotten at every BEGIN, COMMIT and ROLLBACK (to a
    /// savepoint too, which may undo the append), and whenever a head or
    /// base row is written other than by an append.
    chain_head: RefCell<Option<(i64, ChainPoint)>>,
}

impl Db {
    pub(crate) fn new(conn: Conn) -> Self {
        Db {
            conn,
            chain_head: RefCell::new(None),
        }
    }

    pub(crate) fn conn(&self) -> &Conn {
        &self.conn
    }

    /// After any statement that may end the transaction or undo part of
    /// it.
    fn forget_unless_nesting(&self, sql: &str) {
        let s = sql.trim_start();
        if !(s.starts_with("SAVEPOINT") || s.starts_with("RELEASE")) {
            self.chain_head.replace(None);
        }
    }
}

/// SQLite's spelling of a statement, as PostgreSQL takes it.
pub(crate) fn to_postgres(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '?' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
            out.push('$');
        } else {
            out.push(c);
        }
    }
    let out = out.replace("X''", "''::bytea").replace("instr(", "strpos(");
    replace_word(&out, "rowid", "rid")
}

fn replace_word(s: &str, word: &str, with: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        out.push_str(&rest[..at]);
        out.push_str(if ident(before) || ident(after) {
            word
        } else {
            with
        });
        rest = &rest[at + word.len()..];
    }
    out.push_str(rest);
    out
}

impl Db {
    /// Runs statements with no parameters and no result.
    pub(crate) fn execute_batch(&self, sql: &str) -> Result<()> {
        self.forget_unless_nesting(sql);
        match &self.conn {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Postgres(pg) => pg.execute_batch(sql),
        }
    }

    /// Runs `f` in one transaction begun by `begin`, committed if `f`
    /// succeeds and rolled back otherwise, a panic in `f` included, so a
    /// pooled connection is never handed on inside a transaction.
    pub(crate) fn in_transaction<T>(
        &self,
        begin: &str,
        f: impl FnOnce(&dyn Tx) -> Result<T>,
    ) -> Result<T> {
        struct RollBack<'a>(&'a Db);
        impl Drop for RollBack<'_> {
            fn drop(&mut self) {
                let _ = self.0.control("ROLLBACK");
            }
        }
        self.control(begin)?;
        let open = RollBack(self);
        let out = f(self)?;
        std::mem::forget(open);
        self.control("COMMIT").inspect_err(|_| {
            let _ = self.control("ROLLBACK");
        })?;
        Ok(out)
    }

    /// One transaction-control statement (BEGIN, COMMIT, SAVEPOINT, ...):
    /// on SQLite prepared once and cached (every call runs several, and
    /// parsing them each time showed in profiles); on PostgreSQL sent as a
    /// simple query.
    pub(crate) fn control(&self, sql: &str) -> Result<()> {
        self.forget_unless_nesting(sql);
        match &self.conn {
            Conn::Sqlite(c) => {
                c.prepare_cached(sql)?.execute([])?;
                Ok(())
            }
            Conn::Postgres(pg) => pg.execute_batch(sql),
        }
    }

    /// A statement, prepared on first use on this connection.
    pub(crate) fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>> {
        Ok(match &self.conn {
            Conn::Sqlite(c) => Stmt::Sqlite(c.prepare_cached(sql)?),
            Conn::Postgres(pg) => Stmt::Postgres(pg, pg.statement(sql)?),
        })
    }

    /// As [`Db::prepare_cached`].
    pub(crate) fn prepare(&self, sql: &str) -> Result<Stmt<'_>> {
        self.prepare_cached(sql)
    }

    /// Runs one statement; returns the rows it changed.
    pub(crate) fn execute(&self, sql: &str, params: impl Params) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// The first row of a query, mapped by `f`.
    pub(crate) fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> QueryResult<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

impl Savepoints for Db {
    fn savepoint(&self, f: &mut dyn FnMut(&dyn Tx) -> bool) -> Result<()> {
        self.control("SAVEPOINT nested")?;
        if !f(self) {
            self.control("ROLLBACK TO nested")?;
        }
        self.control("RELEASE nested")
    }
}

/// A prepared statement.
pub(crate) enum Stmt<'a> {
    Sqlite(rusqlite::CachedStatement<'a>),
    Postgres(&'a Pg, postgres::Statement),
}

impl Stmt<'_> {
    pub(crate) fn execute(&mut self, params: impl Params) -> Result<usize> {
        let values = params.values();
        match self {
            Stmt::Sqlite(s) => Ok(s.execute(rusqlite::params_from_iter(values.iter()))?),
            Stmt::Postgres(pg, s) => Ok(pg.execute(s, &values)? as usize),
        }
    }

    pub(crate) fn query_row<T>(
        &mut self,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> QueryResult<T> {
        let mut rows = self.query(params)?;
        match rows.next()? {
            Some(r) => Ok(f(&r)?),
            None => Err(NoRow::None),
        }
    }

    /// The rows of a query, mapped by `f` as they are read: a caller that
    /// stops early (a page's byte budget) reads no further rows.
    pub(crate) fn query_map<'s, T: 's>(
        &'s mut self,
        params: impl Params,
        mut f: impl FnMut(&Row<'_>) -> Result<T> + 's,
    ) -> Result<Box<dyn Iterator<Item = Result<T>> + 's>> {
        let values = params.values();
        Ok(match self {
            Stmt::Sqlite(s) => Box::new(
                s.query_map(rusqlite::params_from_iter(values.iter()), move |r| {
                    Ok(f(&Row::Sqlite(r)))
                })?
                .map(|r| r.map_err(Error::from).and_then(|v| v)),
            ),
            Stmt::Postgres(pg, s) => Box::new(
                pg.query(s, &values)?
                    .into_iter()
                    .map(move |r| f(&Row::Postgres(&r))),
            ),
        })
    }

    pub(crate) fn query(&mut self, params: impl Params) -> Result<Rows<'_>> {
        let values = params.values();
        Ok(match self {
            Stmt::Sqlite(s) => Rows::Sqlite(s.query(rusqlite::params_from_iter(values.iter()))?),
            Stmt::Postgres(pg, s) => Rows::Postgres(pg.query(s, &values)?.into_iter(), None),
        })
    }

    pub(crate) fn exists(&mut self, params: impl Params) -> Result<bool> {
        Ok(self.query(params)?.next()?.is_some())
    }
}

/// A query's rows, walked one by one.
pub(crate) enum Rows<'a> {
    Sqlite(rusqlite::Rows<'a>),
    Postgres(std::vec::IntoIter<postgres::Row>, Option<postgres::Row>),
}

impl Rows<'_> {
    pub(crate) fn next(&mut self) -> Result<Option<Row<'_>>> {
        match self {
            Rows::Sqlite(rows) => Ok(rows.next()?.map(Row::Sqlite)),
            Rows::Postgres(rows, current) => {
                *current = rows.next();
                Ok(current.as_ref().map(Row::Postgres))
            }
        }
    }
}

/// One row.
pub(crate) enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Postgres(&'a postgres::Row),
}

impl Row<'_> {
    /// Column `i`, converted to `T`.
    pub(crate) fn get<I: ColIndex, T: Col>(&self, i: I) -> Result<T> {
        match self {
            Row::Sqlite(r) => T::sqlite(r, i.idx()),
            Row::Postgres(r) => T::postgres(r, i.idx()),
        }
    }
}

/// A column index (an integer literal, as rusqlite's `get`).
pub(crate) trait ColIndex {
    fn idx(self) -> usize;
}

impl ColIndex for usize {
    fn idx(self) -> usize {
        self
    }
}

impl ColIndex for i32 {
    fn idx(self) -> usize {
        self as usize
    }
}

/// A query that may find no row.
pub(crate) type QueryResult<T> = std::result::Result<T, NoRow>;

/// Why a single-row query has no answer.
pub(crate) enum NoRow {
    None,
    Failed(Error),
}

impl From<Error> for NoRow {
    fn from(e: Error) -> Self {
        NoRow::Failed(e)
    }
}

impl From<NoRow> for Error {
    fn from(e: NoRow) -> Self {
        match e {
            NoRow::None => Error::Internal("storage: a row the query expects is missing".into()),
            NoRow::Failed(e) => e,
        }
    }
}

/// `.optional()`: no row is `None`.
pub(crate) trait OptionalExtension<T> {
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for QueryResult<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(NoRow::None) => Ok(None),
            Err(NoRow::Failed(e)) => Err(e),
        }
    }
}

/// A column converted to a seam type, from either backend.
pub(crate) trait Col: Sized {
    fn sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self>;
    fn postgres(row: &postgres::Row, i: usize) -> Result<Self>;
}

fn wrong_type(e: postgres::Error) -> Error {
    tracing::error!(error = %e, "storage holds a value of the wrong type");
    Error::Corrupt("storage: a stored value has the wrong type: the stored rows are damaged".into())
}

fn out_of_range() -> Error {
    Error::Corrupt("storage: a stored number is out of range: the stored rows are damaged".into())
}

macro_rules! col_same {
    ($($t:ty),*) => {$(
        impl Col for $t {
            fn sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self> {
                Ok(row.get(i)?)
            }
            fn postgres(row: &postgres::Row, i: usize) -> Result<Self> {
                row.try_get(i).map_err(wrong_type)
            }
        }
    )*};
}
col_same!(
    i64,
    String,
    Vec<u8>,
    bool,
    Option<i64>,
    Option<String>,
    Option<Vec<u8>>,
    Option<bool>
);

macro_rules! col_int {
    ($($t:ty),*) => {$(
        impl Col for $t {
            fn sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self> {
                <$t>::try_from(row.get::<_, i64>(i)?).map_err(|_| out_of_range())
            }
            fn postgres(row: &postgres::Row, i: usize) -> Result<Self> {
                let v: i64 = row.try_get(i).map_err(wrong_type)?;
                <$t>::try_from(v).map_err(|_| out_of_range())
            }
        }
        impl Col for Option<$t> {
            fn sqlite(row: &rusqlite::Row<'_>, i: usize) -> Result<Self> {
                row.get::<_, Option<i64>>(i)?
                    .map(<$t>::try_from)
                    .transpose()
                    .map_err(|_| out_of_range())
            }
            fn postgres(row: &postgres::Row, i: usize) -> Result<Self> {
                let v: Option<i64> = row.try_get(i).map_err(wrong_type)?;
                v.map(<$t>::try_from).transpose().map_err(|_| out_of_range())
            }
        }
    )*};
}
col_int!(u32, u64, i32, usize);

/// A parameter value, borrowed from the caller: integers of any width
/// bind to whichever integer type the backend inferred.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
    Bool(bool),
}

impl rusqlite::ToSql for Val<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Val::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Val::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(v)),
            Val::Text(v) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Val::Bytes(v) => ToSqlOutput::Borrowed(ValueRef::Blob(v)),
            Val::Bool(v) => ToSqlOutput::Borrowed(ValueRef::Integer(v.into())),
        })
    }
}

/// A Rust value as a parameter.
pub(crate) trait IntoVal {
    fn val(&self) -> Val<'_>;
}

macro_rules! into_val_int {
    ($($t:ty),*) => {$(
        impl IntoVal for $t {
            fn val(&self) -> Val<'_> {
                Val::Int(*self as i64)
            }
        }
    )*};
}
into_val_int!(i64, i32, u32, u64, usize);

impl IntoVal for bool {
    fn val(&self) -> Val<'_> {
        Val::Bool(*self)
    }
}

impl IntoVal for str {
    fn val(&self) -> Val<'_> {
        Val::Text(self)
    }
}

impl IntoVal for String {
    fn val(&self) -> Val<'_> {
        Val::Text(self)
    }
}

impl IntoVal for [u8] {
    fn val(&self) -> Val<'_> {
        Val::Bytes(self)
    }
}

impl IntoVal for Vec<u8> {
    fn val(&self) -> Val<'_> {
        Val::Bytes(self)
    }
}

impl<const N: usize> IntoVal for [u8; N] {
    fn val(&self) -> Val<'_> {
        Val::Bytes(self)
    }
}

impl<T: IntoVal + ?Sized> IntoVal for &T {
    fn val(&self) -> Val<'_> {
        (**self).val()
    }
}

impl<T: IntoVal> IntoVal for Option<T> {
    fn val(&self) -> Val<'_> {
        self.as_ref().map_or(Val::Null, IntoVal::val)
    }
}

/// A statement's parameters.
pub(crate) trait Params {
    fn values(&self) -> Vec<Val<'_>>;
}

impl Params for Vec<Val<'_>> {
    fn values(&self) -> Vec<Val<'_>> {
        self.clone()
    }
}

impl Params for () {
    fn values(&self) -> Vec<Val<'_>> {
        Vec::new()
    }
}

impl<T: IntoVal, const N: usize> Params for [T; N] {
    fn values(&self) -> Vec<Val<'_>> {
        self.iter().map(IntoVal::val).collect()
    }
}

/// Parameters of mixed types.
macro_rules! params {
    ($($v:expr),* $(,)?) => {
        vec![$($crate::store::sql::IntoVal::val(&$v)),*]
    };
}
pub(crate) use params;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_spellings_become_postgres_ones() {
        assert_eq!(
            to_postgres(
                "SELECT rowid, owner FROM records WHERE a = ?1 AND b = ?12 AND owner = X'' AND instr(r, ?2) > 0"
            ),
            "SELECT rid, owner FROM records WHERE a = $1 AND b = $12 AND owner = ''::bytea AND strpos(r, $2) > 0"
        );
        // Only the whole word.
        assert_eq!(
            to_postgres("SELECT growid, rowid_x FROM t"),
            "SELECT growid, rowid_x FROM t"
        );
    }
}

//! One PostgreSQL connection as the concept implementations use it:
//! statements prepared once per connection and cached, parameters and
//! columns converted between the seam's Rust types and PostgreSQL's (every
//! integer column is `BIGINT`; a `u32` or `usize` is bound as one), and
//! a reconnect when the server went away.

use std::cell::RefCell;
use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls, Statement};

use crate::error::{Error, Result};

/// A connection, reconnected on use after the server went away.
pub(crate) struct Pg {
    url: String,
    client: RefCell<Option<Client>>,
    statements: RefCell<HashMap<String, Statement>>,
}

fn unavailable(e: postgres::Error) -> Error {
    tracing::warn!(error = %e, "PostgreSQL unavailable");
    Error::Unavailable("storage unavailable; retry with backoff".into())
}

impl Pg {
    /// Connects to `url` (a `postgres://` URL or key=value string).
    pub(crate) fn connect(url: &str) -> Result<Pg> {
        let pg = Pg {
            url: url.to_owned(),
            client: RefCell::new(None),
            statements: RefCell::new(HashMap::new()),
        };
        pg.ensure_open()?;
        Ok(pg)
    }

    /// Reconnects if the connection is closed (the server restarted).
    pub(crate) fn ensure_open(&self) -> Result<()> {
        let mut client = self.client.borrow_mut();
        if client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        self.statements.borrow_mut().clear();
        let mut c = Client::connect(&self.url, NoTls).map_err(unavailable)?;
        c.batch_execute(
            "SET synchronous_commit = on; SET default_transaction_isolation = 'read committed'",
        )
        .map_err(Error::from)?;
        *client = Some(c);
        Ok(())
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Client) -> std::result::Result<T, postgres::Error>,
    ) -> Result<T> {
        let mut client = self.client.borrow_mut();
        let c = client
            .as_mut()
            .ok_or_else(|| Error::Unavailable("storage: not connected".into()))?;
        f(c).map_err(|e| {
            // No SQLSTATE, or the server ending the session: the
            // connection itself is gone (a restart, a dropped network). It
            // is dropped here, and the next use connects afresh.
            let gone = e.code().is_none_or(|c| c.code().starts_with("57P"));
            if gone {
                *client = None;
                self.statements.borrow_mut().clear();
            }
            Error::from(e)
        })
    }

    /// Runs statements with no parameters and no result.
    pub(crate) fn execute_batch(&self, sql: &str) -> Result<()> {
        self.with(|c| c.batch_execute(sql))
    }

    fn statement(&self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let s = self.with(|c| c.prepare(sql))?;
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    /// A statement, prepared on first use on this connection.
    pub(crate) fn prepare_cached(&self, sql: &str) -> Result<Stmt<'_>> {
        Ok(Stmt {
            pg: self,
            statement: self.statement(sql)?,
        })
    }

    /// As [`Pg::prepare_cached`].
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
        f: impl FnOnce(&PgRow) -> Result<T>,
    ) -> QueryResult<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

impl Drop for Pg {
    /// The client's own drop blocks on its runtime, which it may not do on
    /// an async executor's thread (a store dropped at shutdown): there it
    /// is dropped on a thread of its own.
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let _ = std::thread::Builder::new()
                .name("strongbox-pg-close".into())
                .spawn(move || drop(client));
        }
    }
}

/// A prepared statement on a connection.
pub(crate) struct Stmt<'a> {
    pg: &'a Pg,
    statement: Statement,
}

impl Stmt<'_> {
    fn rows(&self, params: impl Params) -> Result<Vec<postgres::Row>> {
        let values = params.values();
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as _).collect();
        self.pg.with(|c| c.query(&self.statement, &refs))
    }

    pub(crate) fn execute(&self, params: impl Params) -> Result<usize> {
        let values = params.values();
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as _).collect();
        Ok(self.pg.with(|c| c.execute(&self.statement, &refs))? as usize)
    }

    pub(crate) fn query_row<T>(
        &self,
        params: impl Params,
        f: impl FnOnce(&PgRow) -> Result<T>,
    ) -> QueryResult<T> {
        let rows = self.rows(params)?;
        match rows.into_iter().next() {
            Some(r) => Ok(f(&PgRow(r))?),
            None => Err(NoRow::None),
        }
    }

    pub(crate) fn query_map<T, F: FnMut(&PgRow) -> Result<T>>(
        &self,
        params: impl Params,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let rows = self.rows(params)?;
        Ok(rows
            .into_iter()
            .map(|r| f(&PgRow(r)))
            .collect::<Vec<_>>()
            .into_iter())
    }

    pub(crate) fn query(&self, params: impl Params) -> Result<PgRows> {
        Ok(PgRows {
            rows: self.rows(params)?.into_iter(),
            current: None,
        })
    }

    pub(crate) fn exists(&self, params: impl Params) -> Result<bool> {
        Ok(!self.rows(params)?.is_empty())
    }
}

/// A query's rows, walked one by one.
pub(crate) struct PgRows {
    rows: std::vec::IntoIter<postgres::Row>,
    current: Option<PgRow>,
}

impl PgRows {
    pub(crate) fn next(&mut self) -> Result<Option<&PgRow>> {
        self.current = self.rows.next().map(PgRow);
        Ok(self.current.as_ref())
    }
}

/// One row.
pub(crate) struct PgRow(postgres::Row);

impl PgRow {
    /// Column `i`, converted to `T`.
    pub(crate) fn get<I: ColIndex, T: FromCol>(&self, i: I) -> Result<T> {
        T::from_col(&self.0, i.idx())
    }
}

/// A column index (as rusqlite's `get`, an integer literal).
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

/// `.optional()`, as rusqlite's: no row is `None`.
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

/// A column converted to a seam type.
pub(crate) trait FromCol: Sized {
    fn from_col(row: &postgres::Row, i: usize) -> Result<Self>;
}

fn wrong_type(e: postgres::Error) -> Error {
    tracing::error!(error = %e, "storage holds a value of the wrong type");
    Error::Corrupt("storage: a stored value has the wrong type: the stored rows are damaged".into())
}

macro_rules! from_col_direct {
    ($($t:ty),*) => {$(
        impl FromCol for $t {
            fn from_col(row: &postgres::Row, i: usize) -> Result<Self> {
                row.try_get(i).map_err(wrong_type)
            }
        }
    )*};
}
from_col_direct!(
    i64,
    String,
    Vec<u8>,
    bool,
    Option<String>,
    Option<Vec<u8>>,
    Option<bool>
);

macro_rules! from_col_int {
    ($($t:ty),*) => {$(
        impl FromCol for $t {
            fn from_col(row: &postgres::Row, i: usize) -> Result<Self> {
                let v: i64 = row.try_get(i).map_err(wrong_type)?;
                <$t>::try_from(v).map_err(|_| Error::Corrupt("storage: a stored number is out of range".into()))
            }
        }
        impl FromCol for Option<$t> {
            fn from_col(row: &postgres::Row, i: usize) -> Result<Self> {
                let v: Option<i64> = row.try_get(i).map_err(wrong_type)?;
                v.map(<$t>::try_from)
                    .transpose()
                    .map_err(|_| Error::Corrupt("storage: a stored number is out of range".into()))
            }
        }
    )*};
}
from_col_int!(u32, u64, i32, usize);

impl FromCol for Option<i64> {
    fn from_col(row: &postgres::Row, i: usize) -> Result<Self> {
        row.try_get(i).map_err(wrong_type)
    }
}

/// A parameter value: integers of any width bind to whichever integer
/// type PostgreSQL inferred for the placeholder.
#[derive(Debug, Clone)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
    Bool(bool),
}

impl ToSql for Val {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(v) if *ty == Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
            Val::Int(v) if *ty == Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
            Val::Int(v) => v.to_sql(ty, out),
            Val::Text(v) => v.to_sql(ty, out),
            Val::Bytes(v) => v.to_sql(ty, out),
            Val::Bool(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A Rust value as a parameter.
pub(crate) trait IntoVal {
    fn val(&self) -> Val;
}

macro_rules! into_val_int {
    ($($t:ty),*) => {$(
        impl IntoVal for $t {
            fn val(&self) -> Val {
                Val::Int(*self as i64)
            }
        }
    )*};
}
into_val_int!(i64, i32, u32, u64, usize);

impl IntoVal for bool {
    fn val(&self) -> Val {
        Val::Bool(*self)
    }
}

impl IntoVal for str {
    fn val(&self) -> Val {
        Val::Text(self.to_owned())
    }
}

impl IntoVal for String {
    fn val(&self) -> Val {
        Val::Text(self.clone())
    }
}

impl IntoVal for [u8] {
    fn val(&self) -> Val {
        Val::Bytes(self.to_vec())
    }
}

impl IntoVal for Vec<u8> {
    fn val(&self) -> Val {
        Val::Bytes(self.clone())
    }
}

impl<const N: usize> IntoVal for [u8; N] {
    fn val(&self) -> Val {
        Val::Bytes(self.to_vec())
    }
}

impl<T: IntoVal + ?Sized> IntoVal for &T {
    fn val(&self) -> Val {
        (**self).val()
    }
}

impl<T: IntoVal> IntoVal for Option<T> {
    fn val(&self) -> Val {
        self.as_ref().map_or(Val::Null, IntoVal::val)
    }
}

/// A statement's parameters.
pub(crate) trait Params {
    fn values(self) -> Vec<Val>;
}

impl Params for Vec<Val> {
    fn values(self) -> Vec<Val> {
        self
    }
}

impl Params for () {
    fn values(self) -> Vec<Val> {
        Vec::new()
    }
}

impl<T: IntoVal, const N: usize> Params for [T; N] {
    fn values(self) -> Vec<Val> {
        self.iter().map(IntoVal::val).collect()
    }
}

/// Parameters of mixed types, as rusqlite's `params!`.
macro_rules! params {
    ($($v:expr),* $(,)?) => {
        vec![$($crate::store::postgres::conn::IntoVal::val(&$v)),*]
    };
}
pub(crate) use params;

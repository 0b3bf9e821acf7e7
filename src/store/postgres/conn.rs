//! One PostgreSQL connection: statements translated from the concept
//! code's SQLite spelling (`sql::to_postgres`), prepared once and cached;
//! parameters bound to whatever type PostgreSQL inferred; a reconnect when
//! the server went away.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, Statement};

use super::tls::Target;
use crate::error::{Error, Result};
use crate::store::sql::{Val, to_postgres};

/// A connection, reconnected on use after the server went away.
pub(crate) struct Pg {
    target: Target,
    client: RefCell<Option<Client>>,
    statements: RefCell<HashMap<String, Statement>>,
    /// A statement failed because another server's transaction conflicted
    /// with this one (`40001`, `40P01`): the transaction must be run again.
    conflicted: Cell<bool>,
}

fn unavailable(e: postgres::Error) -> Error {
    tracing::warn!(error = %e, "PostgreSQL unavailable");
    Error::Unavailable("storage unavailable; retry with backoff".into())
}

impl Pg {
    /// Connects to `target`.
    pub(crate) fn connect(target: &Target) -> Result<Pg> {
        let pg = Pg {
            target: target.clone(),
            client: RefCell::new(None),
            statements: RefCell::new(HashMap::new()),
            conflicted: Cell::new(false),
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
        let mut c = self.target.connect().map_err(unavailable)?;
        c.batch_execute(
            "SET synchronous_commit = on; SET default_transaction_isolation = 'read committed'",
        )
        .map_err(Error::from)?;
        *client = Some(c);
        Ok(())
    }

    /// The client itself, for work the statement wrappers do not cover
    /// (snapshots); a connection that went away is dropped on its next
    /// wrapped use.
    pub(super) fn client(&self) -> Result<std::cell::RefMut<'_, Client>> {
        std::cell::RefMut::filter_map(self.client.borrow_mut(), Option::as_mut)
            .map_err(|_| Error::Unavailable("storage: not connected".into()))
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
            if e.code()
                .is_some_and(|c| matches!(c.code(), "40001" | "40P01"))
            {
                self.conflicted.set(true);
            }
            if gone {
                *client = None;
                self.statements.borrow_mut().clear();
            }
            Error::from(e)
        })
    }

    /// Whether a statement since the last call failed on a conflict with
    /// another transaction (serialization failure or deadlock); clears it.
    pub(crate) fn take_conflict(&self) -> bool {
        self.conflicted.replace(false)
    }

    /// Runs statements with no parameters and no result.
    pub(crate) fn execute_batch(&self, sql: &str) -> Result<()> {
        self.with(|c| c.batch_execute(sql))
    }

    /// `sql` (in the SQLite spelling the concept code uses), prepared on
    /// first use on this connection.
    pub(crate) fn statement(&self, sql: &str) -> Result<Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let translated = to_postgres(sql);
        let s = self.with(|c| c.prepare(&translated))?;
        self.statements
            .borrow_mut()
            .insert(sql.to_owned(), s.clone());
        Ok(s)
    }

    /// Runs a prepared statement; returns the rows it changed.
    pub(crate) fn execute(&self, statement: &Statement, params: &[Val<'_>]) -> Result<u64> {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        self.with(|c| c.execute(statement, &refs))
    }

    /// Runs a prepared query; returns its rows.
    pub(crate) fn query(
        &self,
        statement: &Statement,
        params: &[Val<'_>],
    ) -> Result<Vec<postgres::Row>> {
        let refs: Vec<&(dyn ToSql + Sync)> = params.iter().map(|v| v as _).collect();
        self.with(|c| c.query(statement, &refs))
    }

    /// Runs one statement with parameters (migrations, locks).
    pub(crate) fn run(&self, sql: &str, params: &[Val<'_>]) -> Result<u64> {
        let statement = self.statement(sql)?;
        self.execute(&statement, params)
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

impl ToSql for Val<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match *self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(v) if *ty == Type::INT4 => i32::try_from(v)?.to_sql(ty, out),
            Val::Int(v) if *ty == Type::INT2 => i16::try_from(v)?.to_sql(ty, out),
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

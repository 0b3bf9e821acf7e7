//! Logical snapshots of a PostgreSQL vault, as a SQLite database: a backup
//! file holds one whatever the backend (`vault::backup`), so a backup of
//! either restores onto either. `dump` copies every table in one
//! REPEATABLE READ, read-only transaction (one consistent moment, while
//! writes go on); `load` copies a snapshot into an empty database in one
//! transaction, with the restore marker row, so a half-loaded database is
//! never served.

use std::path::Path;

use postgres::IsolationLevel;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use rusqlite::types::{Value, ValueRef};

use super::Pg;
use crate::error::{Error, Result};
use crate::store::sql::Val;

/// Tables whose PostgreSQL rows carry `rid` (SQLite's rowid, the order
/// rows were written in): copied in that order.
const RID_TABLES: &[&str] = &["data_keys", "receipts", "records"];
/// Not copied: each database's own schema version, and which servers run
/// now (runtime state, not the vault's).
const SKIPPED: &[&str] = &["schema_version", "job_leases"];
/// Rows fetched per round trip.
const PAGE: i32 = 1000;
/// The meta row a restore sets in the same transaction as the load and
/// empties when it has finished (ledger applied, audited): while it holds
/// a value, no server serves the database.
pub(crate) const RESTORING: &str = "restoring";

/// The vault's tables and their columns, as the SQLite schema has them,
/// each after the tables its foreign keys refer to (PostgreSQL checks
/// them row by row as a load inserts).
fn tables(db: &rusqlite::Connection) -> Result<Vec<(String, Vec<String>)>> {
    let names: Vec<String> = db
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut pending = Vec::new();
    for t in names.into_iter().filter(|t| !SKIPPED.contains(&t.as_str())) {
        let cols = db
            .prepare(&format!("PRAGMA table_info({t})"))?
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let refers: Vec<String> = db
            .prepare(&format!("PRAGMA foreign_key_list({t})"))?
            .query_map([], |r| r.get::<_, String>(2))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        pending.push((t, cols, refers));
    }
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    while !pending.is_empty() {
        let ready = pending.iter().position(|(t, _, refers)| {
            refers
                .iter()
                .all(|r| r == t || out.iter().any(|(done, _)| done == r))
        });
        let Some(i) = ready else {
            return Err(Error::Internal(
                "snapshot: the tables' foreign keys form a cycle".into(),
            ));
        };
        let (t, cols, _) = pending.remove(i);
        out.push((t, cols));
    }
    Ok(out)
}

fn order(table: &str, rowid: &str) -> String {
    if RID_TABLES.contains(&table) {
        format!(" ORDER BY {rowid}")
    } else {
        String::new()
    }
}

/// Column `i` of a PostgreSQL row as SQLite stores it.
fn value(row: &postgres::Row, i: usize) -> Result<Value> {
    let ty = row.columns()[i].type_().clone();
    let v = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Integer),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map(|v| Value::Integer(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map(|v| Value::Integer(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map(|v| Value::Integer(v.into())),
        Type::TEXT | Type::VARCHAR => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
        _ => {
            return Err(Error::Internal(format!(
                "snapshot: column type {ty} is not copied"
            )));
        }
    };
    Ok(v.unwrap_or(Value::Null))
}

/// Copies the database `pg` reaches into a new SQLite database at `dest`.
pub(super) fn dump(pg: &Pg, dest: &Path) -> Result<()> {
    let mut out = rusqlite::Connection::open(dest)?;
    crate::store::sqlite::schema::migrate(&mut out)?;
    out.pragma_update(None, "foreign_keys", true)?;
    let tables = tables(&out)?;
    let into = out.transaction()?;
    let mut client = pg.client()?;
    let mut snap = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()?;
    for (table, cols) in &tables {
        let list = cols.join(", ");
        let select = snap.prepare(&format!(
            "SELECT {list} FROM {table}{}",
            order(table, "rid")
        ))?;
        let marks = vec!["?"; cols.len()].join(", ");
        let mut insert = into.prepare(&format!("INSERT INTO {table} ({list}) VALUES ({marks})"))?;
        let portal = snap.bind(&select, &[])?;
        loop {
            let rows = snap.query_portal(&portal, PAGE)?;
            for row in &rows {
                let values = (0..cols.len())
                    .map(|i| value(row, i))
                    .collect::<Result<Vec<_>>>()?;
                insert
                    .execute(rusqlite::params_from_iter(values))
                    .map_err(|e| {
                        tracing::error!(%table, error = %e, "snapshot: a row could not be copied");
                        e
                    })?;
            }
            if rows.len() < PAGE as usize {
                break;
            }
        }
    }
    snap.commit()?;
    into.commit()?;
    Ok(())
}

/// Whether the database holds a vault: principals, or a load a restore
/// has not finished with (`Some(true)`: that).
pub(super) fn restoring(pg: &Pg) -> Result<Option<bool>> {
    let mut client = pg.client()?;
    let marker = client.query_opt("SELECT value FROM meta WHERE name = $1", &[&RESTORING])?;
    if marker.is_some_and(|r| !r.get::<_, Vec<u8>>(0).is_empty()) {
        return Ok(Some(true));
    }
    let principals: i64 = client
        .query_one("SELECT count(*) FROM principals", &[])?
        .get(0);
    Ok((principals > 0).then_some(false))
}

/// Replaces everything in the database `pg` reaches by the snapshot at
/// `src`, in one transaction that also sets the restore marker.
pub(super) fn load(pg: &Pg, src: &Path) -> Result<()> {
    let db = rusqlite::Connection::open(src)?;
    let tables = tables(&db)?;
    let mut client = pg.client()?;
    let mut t = client.transaction()?;
    let names: Vec<&str> = tables.iter().map(|(n, _)| n.as_str()).collect();
    t.batch_execute(&format!("TRUNCATE {} RESTART IDENTITY", names.join(", ")))?;
    for (table, cols) in &tables {
        let list = cols.join(", ");
        // COPY streams the rows (binary format, typed as PostgreSQL's
        // columns are): no round trip per row, as an INSERT each took.
        let types: Vec<Type> = t
            .prepare(&format!("SELECT {list} FROM {table} LIMIT 0"))?
            .columns()
            .iter()
            .map(|c| c.type_().clone())
            .collect();
        let sink = t.copy_in(&format!("COPY {table} ({list}) FROM STDIN (FORMAT binary)"))?;
        let mut copy = BinaryCopyInWriter::new(sink, &types);
        let mut select = db.prepare(&format!(
            "SELECT {list} FROM {table}{}",
            order(table, "rowid")
        ))?;
        let mut rows = select.query([])?;
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(cols.len());
            for i in 0..cols.len() {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Val::Null,
                    ValueRef::Integer(v) => Val::Int(v),
                    ValueRef::Text(v) => Val::Text(std::str::from_utf8(v).map_err(|_| {
                        Error::Corrupt(format!("snapshot: {table}: text is not UTF-8"))
                    })?),
                    ValueRef::Blob(v) => Val::Bytes(v),
                    ValueRef::Real(_) => {
                        return Err(Error::Corrupt(format!("snapshot: {table}: a real number")));
                    }
                });
            }
            let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as _).collect();
            copy.write(&refs)?;
        }
        copy.finish()?;
    }
    // The sequences go on after what was loaded.
    t.batch_execute(
        "SELECT setval('audit_seq', (SELECT coalesce(max(seq), 0) + 1 FROM audit_log), false);
         SELECT setval('audit_lane_ids', (SELECT coalesce(max(lane), 0) + 1 FROM audit_lanes), false);",
    )?;
    t.execute(
        "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = $2",
        &[&RESTORING, &b"1".as_slice()],
    )?;
    t.commit()?;
    Ok(())
}

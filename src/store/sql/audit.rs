//! The audit trail's rows (the chain's rules are `crate::audit`'s)
//! and the scans that compare it with the records.

use super::{Conn, Db, OptionalExtension, Row, params};

use crate::audit::{Entry, Filter};
use crate::error::{Error, Result};
use crate::store::seam::*;

/// Entries read per query by a walk of the chain.
const AUDIT_PAGE: usize = 10_000;

/// The `audit_lanes` column of pointer `which`.
fn pointer_column(which: &str) -> Result<&'static str> {
    match which {
        "audit_head" => Ok("head"),
        "audit_base" => Ok("base"),
        _ => Err(Error::Internal(format!("no audit pointer {which}"))),
    }
}

const ENTRY_COLS: &str = "seq, time, request_id, principal, tenant, action, resource, outcome, code, purpose, peer, mac, lane";

fn entry_row(r: &Row<'_>) -> Result<Entry> {
    Ok(Entry {
        seq: r.get::<_, i64>(0)? as u64,
        time: r.get(1)?,
        request_id: r.get(2)?,
        principal: r.get(3)?,
        tenant: r.get(4)?,
        action: r.get(5)?,
        resource: r.get(6)?,
        outcome: r.get(7)?,
        code: r.get(8)?,
        purpose: r.get(9)?,
        peer: r.get(10)?,
        mac: r.get(11)?,
        lane: r.get(12)?,
    })
}

impl AuditRows for Db {
    fn audited_record_writes(
        &self,
        tenant: Option<&str>,
        each: &mut dyn FnMut(&str, &str, &str),
    ) -> Result<()> {
        // In pages by sequence number, as the chain walk.
        let mut stmt = self.prepare_cached(
            "SELECT seq, tenant, action, resource FROM audit_log
             WHERE outcome = 'ok' AND action IN ('record.put', 'record.delete', 'subject.shred')
               AND (tenant = ?1 OR ?1 IS NULL) AND seq > ?2
             ORDER BY seq LIMIT ?3",
        )?;
        let mut after = 0i64;
        loop {
            let mut rows = stmt.query(params![tenant, after, AUDIT_PAGE as i64])?;
            let mut read = 0;
            while let Some(r) = rows.next()? {
                after = r.get(0)?;
                read += 1;
                each(
                    &r.get::<_, String>(1)?,
                    &r.get::<_, String>(2)?,
                    &r.get::<_, String>(3)?,
                );
            }
            if read < AUDIT_PAGE {
                return Ok(());
            }
        }
    }

    fn live_key_records(
        &self,
        tenant: Option<&str>,
        each: &mut dyn FnMut(StoredRecord),
    ) -> Result<()> {
        // In pages in key order: PostgreSQL's client holds a whole result
        // in memory, and a vault can hold millions of records.
        let mut stmt = self.prepare_cached(
            "SELECT r.tenant_id, r.owner, r.category, r.key, r.version, r.deleted_at IS NOT NULL, r.expired_at IS NOT NULL
             FROM records r JOIN data_keys d ON d.id = r.dek_id
             WHERE d.wrapped IS NOT NULL AND (r.tenant_id = ?1 OR ?1 IS NULL)
               AND (?6 = 0 OR (r.tenant_id, r.owner, r.category, r.key) > (?2, ?3, ?4, ?5))
             ORDER BY r.tenant_id, r.owner, r.category, r.key LIMIT ?7",
        )?;
        let mut after: Option<StoredRecord> = None;
        loop {
            let (t, o, c, k, started) = match &after {
                Some(r) => (
                    r.tenant.as_str(),
                    r.owner.as_slice(),
                    r.category.as_str(),
                    r.key.as_str(),
                    1,
                ),
                None => ("", &[][..], "", "", 0),
            };
            let mut rows = stmt.query(params![tenant, t, o, c, k, started, AUDIT_PAGE as i64])?;
            let mut page = Vec::new();
            while let Some(r) = rows.next()? {
                page.push(StoredRecord {
                    tenant: r.get(0)?,
                    owner: r.get(1)?,
                    category: r.get(2)?,
                    key: r.get(3)?,
                    version: r.get::<_, i64>(4)? as u64,
                    deleted: r.get(5)?,
                    expired: r.get(6)?,
                });
            }
            drop(rows);
            let full = page.len() == AUDIT_PAGE;
            let last = page.last().cloned();
            for r in page {
                each(r);
            }
            if !full {
                return Ok(());
            }
            after = last;
        }
    }

    fn audit_last_seq(&self) -> Result<u64> {
        let seq: Option<i64> = self
            .prepare_cached("SELECT max(seq) FROM audit_log")?
            .query_row((), |r| r.get(0))?;
        Ok(seq.unwrap_or(0) as u64)
    }

    fn audit_touching(
        &self,
        tenant: &str,
        blind_hex: &str,
        (after, until): (u64, u64),
        limit: usize,
    ) -> Result<Vec<AccessRow>> {
        let mut stmt = self.prepare_cached(
            "SELECT seq, time, principal, action, outcome, purpose FROM audit_log
             WHERE tenant = ?1 AND seq > ?2 AND seq <= ?5 AND instr(resource, ?3) > 0
             ORDER BY seq LIMIT ?4",
        )?;
        let rows = stmt.query_map(
            params![tenant, after as i64, blind_hex, limit as i64, until as i64],
            |r| {
                Ok(AccessRow {
                    seq: r.get::<_, i64>(0)? as u64,
                    time: r.get(1)?,
                    principal: r.get(2)?,
                    action: r.get(3)?,
                    outcome: r.get(4)?,
                    purpose: r.get(5)?,
                })
            },
        )?;
        rows.collect::<Result<_>>()
    }

    fn audit_last_entry(&self, lane: i64) -> Result<Option<ChainPoint>> {
        self.prepare_cached(
            "SELECT seq, mac FROM audit_log WHERE lane = ?1 ORDER BY seq DESC LIMIT 1",
        )?
        .query_row([lane], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .optional()
    }

    fn audit_next_seq(&self, after: u64) -> Result<u64> {
        match self.conn() {
            Conn::Sqlite(_) => Ok(after + 1),
            Conn::Postgres(_) => {
                let next: i64 = self
                    .prepare_cached("SELECT nextval('audit_seq')")?
                    .query_row((), |r| r.get(0))?;
                Ok(next as u64)
            }
        }
    }

    fn audit_open_lane(&self, now: i64) -> Result<i64> {
        match self.conn() {
            Conn::Sqlite(_) => Ok(0),
            Conn::Postgres(_) => {
                let lane: i64 = self
                    .prepare_cached("SELECT nextval('audit_lane_ids')")?
                    .query_row((), |r| r.get(0))?;
                self.prepare_cached("INSERT INTO audit_lanes (lane, opened_at) VALUES (?1, ?2)")?
                    .execute(params![lane, now])?;
                Ok(lane)
            }
        }
    }

    fn audit_pointer(&self, lane: i64, which: &str) -> Result<Option<Vec<u8>>> {
        if lane == 0 {
            return self.meta_get(which);
        }
        let raw: Option<Option<Vec<u8>>> = self
            .prepare_cached(&format!(
                "SELECT {} FROM audit_lanes WHERE lane = ?1",
                pointer_column(which)?
            ))?
            .query_row([lane], |r| r.get(0))
            .optional()?;
        Ok(raw.flatten())
    }

    fn audit_head_written(&self, lane: i64) -> Option<ChainPoint> {
        match &*self.chain_head.borrow() {
            Some((l, head)) if *l == lane => Some(head.clone()),
            _ => None,
        }
    }

    fn audit_head_remember(&self, lane: i64, head: ChainPoint) {
        self.chain_head.replace(Some((lane, head)));
    }

    fn audit_pointer_put(&self, lane: i64, which: &str, raw: &[u8]) -> Result<()> {
        self.chain_head.replace(None);
        if lane == 0 {
            return self.meta_put(which, raw);
        }
        let n = self
            .prepare_cached(&format!(
                "UPDATE audit_lanes SET {} = ?2 WHERE lane = ?1",
                pointer_column(which)?
            ))?
            .execute(params![lane, raw])?;
        if n != 1 {
            return Err(Error::Corrupt(format!(
                "audit: lane {lane}'s row is missing"
            )));
        }
        Ok(())
    }

    fn audit_lanes(&self) -> Result<Vec<i64>> {
        let lanes = self
            .prepare_cached("SELECT lane FROM audit_lanes ORDER BY lane")?
            .query_map((), |r| r.get(0))?
            .collect::<Result<_>>()?;
        Ok(lanes)
    }

    fn audit_insert(&self, e: &Entry) -> Result<()> {
        self.prepare_cached(
            "INSERT INTO audit_log (seq, time, request_id, principal, tenant, action, resource, outcome, code, purpose, peer, mac, lane)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            e.seq as i64,
            e.time,
            e.request_id,
            e.principal,
            e.tenant,
            e.action,
            e.resource,
            e.outcome,
            e.code,
            e.purpose,
            e.peer,
            e.mac,
            e.lane
        ])?;
        Ok(())
    }

    fn audit_checkpoint_insert(
        &self,
        lane: i64,
        seq: u64,
        head: &[u8],
        time: i64,
        mac: &[u8],
    ) -> Result<()> {
        self.prepare_cached(
            "INSERT INTO audit_checkpoints (seq, head, time, mac, lane) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![seq as i64, head, time, mac, lane])?;
        Ok(())
    }

    fn audit_checkpoints(&self) -> Result<Checkpoints> {
        let rows = self
            .prepare("SELECT seq, lane, head, mac FROM audit_checkpoints")?
            .query_map((), |r| {
                Ok((
                    r.get::<_, i64>(0)? as u64,
                    (r.get(1)?, r.get(2)?, r.get(3)?),
                ))
            })?
            .collect::<Result<_>>()?;
        Ok(rows)
    }

    fn audit_entries_from(&self, from: u64, each: &mut dyn FnMut(Entry) -> bool) -> Result<()> {
        // In pages by sequence number: PostgreSQL's client holds a whole
        // result in memory, and a chain can have millions of entries.
        let mut stmt = self.prepare_cached(&format!(
            "SELECT {ENTRY_COLS} FROM audit_log WHERE seq >= ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let mut next = from;
        loop {
            let mut rows = stmt.query(params![next as i64, AUDIT_PAGE as i64])?;
            let mut read = 0;
            while let Some(row) = rows.next()? {
                let e = entry_row(&row)?;
                read += 1;
                next = e.seq + 1;
                if !each(e) {
                    return Ok(());
                }
            }
            if read < AUDIT_PAGE {
                return Ok(());
            }
        }
    }

    fn audit_tenant_summary(&self, tenant: &str) -> Result<(u64, Option<ChainPoint>)> {
        let (entries, last): (i64, Option<i64>) = self.query_row(
            "SELECT count(*), max(seq) FROM audit_log WHERE tenant = ?1",
            [tenant],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let last = match last {
            Some(seq) => Some((
                seq as u64,
                self.query_row("SELECT mac FROM audit_log WHERE seq = ?1", [seq], |r| {
                    r.get(0)
                })?,
            )),
            None => None,
        };
        Ok((entries as u64, last))
    }

    fn audit_list(&self, f: &Filter, after: u64, limit: usize) -> Result<Vec<Entry>> {
        let mut stmt = self.prepare_cached(&format!(
            "SELECT {ENTRY_COLS} FROM audit_log WHERE seq > ?1
               AND (tenant = ?2 OR ?2 IS NULL) AND (time >= ?3 OR ?3 IS NULL) AND (time < ?4 OR ?4 IS NULL)
               AND (principal = ?5 OR ?5 IS NULL) AND (action = ?6 OR ?6 IS NULL) AND (outcome = ?7 OR ?7 IS NULL)
             ORDER BY seq LIMIT ?8"
        ))?;
        let rows = stmt.query_map(
            params![
                after as i64,
                f.tenant,
                f.since,
                f.until,
                f.principal,
                f.action,
                f.outcome,
                limit as i64
            ],
            entry_row,
        )?;
        rows.collect::<Result<_>>()
    }

    fn audit_prune_cut(&self, lane: i64, before: i64) -> Result<Option<PruneCut>> {
        self.query_row(
            "SELECT c.seq, c.head, c.mac, l.mac FROM audit_checkpoints c
                   JOIN audit_log l ON l.seq = c.seq AND l.lane = c.lane
                 WHERE c.lane = ?2
                   AND NOT EXISTS (SELECT 1 FROM audit_log o WHERE o.lane = ?2 AND o.seq <= c.seq AND o.time >= ?1)
                 ORDER BY c.seq DESC LIMIT 1",
            params![before, lane],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()
    }

    fn audit_lane_newest_time(&self, lane: i64) -> Result<Option<i64>> {
        Ok(self
            .prepare_cached("SELECT max(time) FROM audit_log WHERE lane = ?1")?
            .query_row([lane], |r| r.get(0))?)
    }

    fn audit_delete_through(&self, lane: i64, seq: u64) -> Result<u64> {
        self.chain_head.replace(None);
        Ok(self.execute(
            "DELETE FROM audit_log WHERE lane = ?2 AND seq <= ?1",
            params![seq as i64, lane],
        )? as u64)
    }

    fn audit_highest_seq(&self) -> Result<u64> {
        let highest: i64 = self.query_row(
            "SELECT coalesce(max(seq), 0) FROM (SELECT seq FROM audit_log UNION ALL SELECT seq FROM audit_checkpoints) AS s",
            (),
            |r| r.get(0),
        )?;
        Ok(highest as u64)
    }

    fn audit_quarantine_lane(&self, lane: i64, base: u64, kept: u64, now: i64) -> Result<u64> {
        self.chain_head.replace(None);
        let (base, kept) = (clamp(base), clamp(kept));
        let moved = self.execute(
            &format!(
                "INSERT INTO audit_quarantine (quarantined_at, {ENTRY_COLS})
                 SELECT ?4, {ENTRY_COLS} FROM audit_log WHERE lane = ?1 AND (seq <= ?2 OR seq > ?3)"
            ),
            params![lane, base, kept, now],
        )?;
        self.execute(
            "DELETE FROM audit_log WHERE lane = ?1 AND (seq <= ?2 OR seq > ?3)",
            params![lane, base, kept],
        )?;
        self.execute(
            "DELETE FROM audit_checkpoints WHERE lane = ?1 AND seq > ?2",
            params![lane, kept],
        )?;
        Ok(moved as u64)
    }

    fn audit_losses(&self) -> Result<Vec<LossRow>> {
        let rows = self
            .prepare_cached(
                "SELECT lane, accepted_seq, lost_through, mac FROM audit_losses ORDER BY lane, accepted_seq",
            )?
            .query_map((), |r| {
                Ok(LossRow {
                    lane: r.get(0)?,
                    accepted_seq: r.get::<_, i64>(1)? as u64,
                    lost_through: r.get::<_, i64>(2)? as u64,
                    mac: r.get(3)?,
                })
            })?
            .collect::<Result<_>>()?;
        Ok(rows)
    }

    fn audit_loss_put(&self, loss: &LossRow) -> Result<()> {
        self.execute(
            "INSERT INTO audit_losses (lane, accepted_seq, lost_through, mac) VALUES (?1, ?2, ?3, ?4)",
            params![
                loss.lane,
                clamp(loss.accepted_seq),
                clamp(loss.lost_through),
                loss.mac
            ],
        )?;
        Ok(())
    }
}

/// A sequence number as the database's signed integer (the largest stands
/// for "every entry").
fn clamp(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

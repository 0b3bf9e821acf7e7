//! Retention policies, the sweep's queries, and its history.

use super::{Db, OptionalExtension, params};

use crate::error::Result;
use crate::store::seam::*;

fn after_of(s: String) -> Result<After> {
    After::parse(&s).ok_or_else(|| {
        crate::error::Error::Corrupt(format!(
            "storage: unknown retention basis '{s}': the stored rows are damaged"
        ))
    })
}

impl RetentionRows for Db {
    fn retention_set(&self, tenant: &str, p: &PolicyRow, now: i64) -> Result<()> {
        self.prepare_cached(
            "INSERT INTO retention_policies (tenant_id, category, keep_ms, after, set_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (tenant_id, category) DO UPDATE SET keep_ms = ?3, after = ?4, set_at = ?5",
        )?
        .execute(params![tenant, p.category, p.keep_ms, p.after.as_str(), now])?;
        Ok(())
    }

    fn retention_policies(&self, tenant: &str) -> Result<Vec<PolicyRow>> {
        let mut stmt = self.prepare_cached(
            "SELECT category, keep_ms, after FROM retention_policies WHERE tenant_id = ?1 ORDER BY category",
        )?;
        let rows = stmt.query_map([tenant], |r| {
            Ok(PolicyRow {
                category: r.get(0)?,
                keep_ms: r.get(1)?,
                after: after_of(r.get(2)?)?,
            })
        })?;
        rows.collect::<Result<_>>()
    }

    fn retention_default_set(&self, d: &DefaultRow, now: i64) -> Result<()> {
        self.prepare_cached(
            "INSERT INTO retention_defaults (category, keep_ms, max_ms, set_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (category) DO UPDATE SET keep_ms = ?2, max_ms = ?3, set_at = ?4",
        )?
        .execute(params![d.category, d.keep_ms, d.max_ms, now])?;
        Ok(())
    }

    fn retention_defaults(&self) -> Result<Vec<DefaultRow>> {
        let mut stmt = self.prepare_cached(
            "SELECT category, keep_ms, max_ms FROM retention_defaults ORDER BY category",
        )?;
        let rows = stmt.query_map((), |r| {
            Ok(DefaultRow {
                category: r.get(0)?,
                keep_ms: r.get(1)?,
                max_ms: r.get(2)?,
            })
        })?;
        rows.collect::<Result<_>>()
    }

    fn retention_default(&self, category: &str) -> Result<Option<DefaultRow>> {
        self.prepare_cached(
            "SELECT category, keep_ms, max_ms FROM retention_defaults WHERE category = ?1",
        )?
        .query_row([category], |r| {
            Ok(DefaultRow {
                category: r.get(0)?,
                keep_ms: r.get(1)?,
                max_ms: r.get(2)?,
            })
        })
        .optional()
    }

    fn retention_due(
        &self,
        tenant: &str,
        category: &str,
        after: After,
        cutoff: i64,
        limit: usize,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        let sql = match after {
            After::Write => {
                "SELECT rowid, owner FROM records
                 WHERE tenant_id = ?1 AND category = ?2 AND deleted_at IS NULL AND updated_at <= ?3
                   AND owner NOT IN (SELECT owner FROM legal_holds WHERE tenant_id = ?1 AND owner IS NOT NULL)
                 LIMIT ?4"
            }
            After::LastActivity => {
                "SELECT r.rowid, r.owner FROM subjects s
                   JOIN records r ON r.tenant_id = s.tenant_id AND r.owner = s.blind_id
                 WHERE s.tenant_id = ?1 AND s.dek_id IS NOT NULL AND s.last_activity_at <= ?3
                   AND r.category = ?2 AND r.deleted_at IS NULL
                   AND s.blind_id NOT IN (SELECT owner FROM legal_holds WHERE tenant_id = ?1 AND owner IS NOT NULL)
                 UNION ALL
                 SELECT rowid, owner FROM records
                 WHERE tenant_id = ?1 AND category = ?2 AND owner = X'' AND deleted_at IS NULL AND updated_at <= ?3
                 LIMIT ?4"
            }
        };
        let mut stmt = self.prepare_cached(sql)?;
        let rows = stmt.query_map(params![tenant, category, cutoff, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        rows.collect::<Result<_>>()
    }

    fn retention_due_by_day(
        &self,
        tenant: &str,
        category: &str,
        after: After,
        keep_ms: i64,
        cutoff: i64,
    ) -> Result<Vec<(i64, u64)>> {
        let sql = match after {
            After::Write => {
                "SELECT (updated_at + ?4) / 86400000 AS day, count(*) FROM records
                 WHERE tenant_id = ?1 AND category = ?2 AND deleted_at IS NULL AND updated_at <= ?3
                   AND owner NOT IN (SELECT owner FROM legal_holds WHERE tenant_id = ?1 AND owner IS NOT NULL)
                 GROUP BY day ORDER BY day"
            }
            After::LastActivity => {
                "SELECT day, CAST(sum(n) AS BIGINT) FROM (
                   SELECT (s.last_activity_at + ?4) / 86400000 AS day, count(*) AS n FROM subjects s
                     JOIN records r ON r.tenant_id = s.tenant_id AND r.owner = s.blind_id
                   WHERE s.tenant_id = ?1 AND s.dek_id IS NOT NULL AND s.last_activity_at <= ?3
                     AND r.category = ?2 AND r.deleted_at IS NULL
                     AND s.blind_id NOT IN (SELECT owner FROM legal_holds WHERE tenant_id = ?1 AND owner IS NOT NULL)
                   GROUP BY day
                   UNION ALL
                   SELECT (updated_at + ?4) / 86400000 AS day, count(*) AS n FROM records
                   WHERE tenant_id = ?1 AND category = ?2 AND owner = X'' AND deleted_at IS NULL AND updated_at <= ?3
                   GROUP BY day) AS per_day
                 GROUP BY day ORDER BY day"
            }
        };
        let mut stmt = self.prepare_cached(sql)?;
        let rows = stmt.query_map(params![tenant, category, cutoff, keep_ms], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        rows.collect::<Result<_>>()
    }

    fn record_expire(&self, rid: i64, now: i64) -> Result<()> {
        self.prepare_cached(
            "UPDATE records SET ciphertext = X'', size = 0, deleted_at = ?2, expired_at = ?2, updated_at = ?2
             WHERE rowid = ?1",
        )?
        .execute(params![rid, now])?;
        Ok(())
    }

    fn owner_has_live_records(&self, tenant: &str, owner: &[u8]) -> Result<bool> {
        self
            .prepare_cached(
                "SELECT 1 FROM records WHERE tenant_id = ?1 AND owner = ?2 AND deleted_at IS NULL LIMIT 1",
            )?
            .exists(params![tenant, owner])
    }

    fn retention_history_add(
        &self,
        tenant: &str,
        category: &str,
        day: i64,
        expired: u64,
    ) -> Result<()> {
        self.prepare_cached(
            "INSERT INTO retention_history (tenant_id, category, day, expired) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant_id, category, day) DO UPDATE SET expired = retention_history.expired + excluded.expired",
        )?
        .execute(params![tenant, category, day, expired as i64])?;
        Ok(())
    }

    fn retention_history(&self, tenant: &str, limit: usize) -> Result<Vec<(String, i64, u64)>> {
        let mut stmt = self.prepare_cached(
            "SELECT category, day, expired FROM retention_history WHERE tenant_id = ?1
             ORDER BY day DESC, category LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![tenant, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
        })?;
        rows.collect::<Result<_>>()
    }

    fn subject_touch(&self, tenant: &str, blind: &[u8], now: i64) -> Result<bool> {
        Ok(self
            .prepare_cached(
                "UPDATE subjects SET last_activity_at = CASE WHEN coalesce(last_activity_at, 0) > ?3 THEN last_activity_at ELSE ?3 END
                 WHERE tenant_id = ?1 AND blind_id = ?2 AND dek_id IS NOT NULL",
            )?
            .execute(params![tenant, blind, now])?
            > 0)
    }

    fn active_tenant_ids(&self) -> Result<Vec<String>> {
        let mut stmt =
            self.prepare_cached("SELECT id FROM tenants WHERE state = 'active' ORDER BY id")?;
        let rows = stmt.query_map((), |r| r.get(0))?;
        rows.collect::<Result<_>>()
    }

    fn owner_has_due(
        &self,
        tenant: &str,
        owner: &[u8],
        category: &str,
        after: After,
        cutoff: i64,
    ) -> Result<bool> {
        let sql = match after {
            After::Write => {
                "SELECT 1 FROM records WHERE tenant_id = ?1 AND owner = ?2 AND category = ?3
                   AND deleted_at IS NULL AND updated_at <= ?4 LIMIT 1"
            }
            After::LastActivity => {
                "SELECT 1 FROM subjects s JOIN records r ON r.tenant_id = s.tenant_id AND r.owner = s.blind_id
                 WHERE s.tenant_id = ?1 AND s.blind_id = ?2 AND s.last_activity_at <= ?4
                   AND r.category = ?3 AND r.deleted_at IS NULL LIMIT 1"
            }
        };
        self.prepare_cached(sql)?
            .exists(params![tenant, owner, category, cutoff])
    }
}

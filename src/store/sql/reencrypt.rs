//! Re-encryption jobs: records moving from one data key to another.

use super::{Db, params};

use super::records::{RECORD_COLS, record_row};
use crate::error::Result;
use crate::store::seam::*;

impl ReencryptRows for Db {
    fn reencrypt_insert(&self, j: &ReencryptJob, now: i64) -> Result<()> {
        self.execute(
            "INSERT INTO reencrypt_jobs (old_dek, new_dek, tenant_id, owner, started_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![j.old_dek, j.new_dek, j.tenant_id, j.owner, now],
        )?;
        Ok(())
    }

    fn reencrypt_jobs(&self) -> Result<Vec<ReencryptJob>> {
        let mut stmt = self.prepare_cached(
            "SELECT old_dek, new_dek, tenant_id, owner FROM reencrypt_jobs ORDER BY started_at",
        )?;
        let rows = stmt.query_map((), |r| {
            Ok(ReencryptJob {
                old_dek: r.get(0)?,
                new_dek: r.get(1)?,
                tenant_id: r.get(2)?,
                owner: r.get(3)?,
            })
        })?;
        rows.collect::<Result<_>>()
    }

    fn reencrypt_delete(&self, old_dek: &str) -> Result<()> {
        self.execute("DELETE FROM reencrypt_jobs WHERE old_dek = ?1", [old_dek])?;
        Ok(())
    }

    fn reencrypt_jobs_of(&self, tenant: &str) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .prepare_cached("SELECT old_dek, new_dek FROM reencrypt_jobs WHERE tenant_id = ?1")?;
        let rows = stmt.query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_>>()
    }

    fn records_under(&self, dek: &str, limit: usize) -> Result<Vec<(i64, RecordRow)>> {
        let mut stmt = self.prepare_cached(&format!(
            "SELECT {RECORD_COLS}, rowid FROM records WHERE dek_id = ?1 AND deleted_at IS NULL AND corrupt_at IS NULL LIMIT ?2"
        ))?;
        let rows = stmt.query_map(params![dek, limit as i64], |r| {
            Ok((r.get(10)?, record_row(r)?))
        })?;
        rows.collect::<Result<_>>()
    }

    fn record_mark_corrupt(&self, rid: i64, now: i64) -> Result<()> {
        self.prepare_cached("UPDATE records SET corrupt_at = ?2 WHERE rowid = ?1")?
            .execute(params![rid, now])?;
        Ok(())
    }

    fn corrupt_records(&self, tenant: &str) -> Result<u64> {
        let n: i64 = self
            .prepare_cached(
                "SELECT count(*) FROM records WHERE tenant_id = ?1 AND corrupt_at IS NOT NULL",
            )?
            .query_row([tenant], |r| r.get(0))?;
        Ok(n as u64)
    }

    fn record_reseal(&self, rid: i64, dek: &str, ciphertext: &[u8]) -> Result<()> {
        self.prepare_cached("UPDATE records SET dek_id = ?2, ciphertext = ?3 WHERE rowid = ?1")?
            .execute(params![rid, dek, ciphertext])?;
        Ok(())
    }

    fn tombstones_follow(&self, dek: &str, new: &str) -> Result<()> {
        self.prepare_cached(
            "UPDATE records SET dek_id = ?2 WHERE dek_id = ?1 AND deleted_at IS NOT NULL",
        )?
        .execute(params![dek, new])?;
        Ok(())
    }
}

//! Data subjects: their blind ids, data keys and deletion receipts.

use super::{Db, OptionalExtension, params};

use crate::error::Result;
use crate::store::seam::*;

impl SubjectRows for Db {
    fn subject_get(&self, tenant: &str, blind: &[u8]) -> Result<Option<SubjectRow>> {
        self
            .prepare_cached(
                "SELECT dek_id, sealed_subject, created_at, last_activity_at FROM subjects WHERE tenant_id = ?1 AND blind_id = ?2",
            )?
            .query_row(params![tenant, blind], |r| {
                Ok(SubjectRow {
                    dek_id: r.get(0)?,
                    sealed_subject: r.get(1)?,
                    created_at: r.get(2)?,
                    last_activity_at: r.get(3)?,
                })
            })
            .optional()
    }

    fn subject_activate(
        &self,
        tenant: &str,
        blind: &[u8],
        dek_id: &str,
        sealed: &[u8],
        now: i64,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO subjects (tenant_id, blind_id, dek_id, sealed_subject, created_at, last_activity_at) VALUES (?1, ?2, ?3, ?4, ?5, ?5)
             ON CONFLICT (tenant_id, blind_id) DO UPDATE SET dek_id = ?3, sealed_subject = ?4, created_at = ?5, erased_at = NULL, last_activity_at = ?5",
            params![tenant, blind, dek_id, sealed, now],
        )?;
        Ok(())
    }

    fn subject_erase(&self, tenant: &str, blind: &[u8], now: i64) -> Result<()> {
        self.execute(
            "UPDATE subjects SET dek_id = NULL, sealed_subject = NULL, erased_at = ?3 WHERE tenant_id = ?1 AND blind_id = ?2",
            params![tenant, blind, now],
        )?;
        Ok(())
    }

    fn receipt_insert(
        &self,
        id: &str,
        tenant: &str,
        subject: &[u8],
        (body, mac): (&[u8], &[u8]),
        now: i64,
    ) -> Result<()> {
        self.execute(
            "INSERT INTO receipts (id, tenant_id, subject, body, mac, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![id, tenant, subject, body, mac, now],
        )?;
        Ok(())
    }

    fn receipt_latest(&self, tenant: &str, subject: &[u8]) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        self.prepare_cached(
            "SELECT body, mac FROM receipts WHERE tenant_id = ?1 AND subject = ?2
                 ORDER BY created_at DESC, rowid DESC LIMIT 1",
        )?
        .query_row(params![tenant, subject], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
    }

    fn live_deks_of_owner(&self, tenant: &str, owner: &[u8]) -> Result<Vec<String>> {
        let mut stmt = self.prepare_cached(
            "SELECT id FROM data_keys WHERE tenant_id = ?1 AND owner = ?2 AND wrapped IS NOT NULL",
        )?;
        let rows = stmt.query_map(params![tenant, owner], |r| r.get(0))?;
        rows.collect::<Result<_>>()
    }

    fn owners_of_tenant(&self, tenant: &str) -> Result<Vec<(Vec<u8>, String)>> {
        let mut stmt = self.prepare_cached(
            "SELECT blind_id, dek_id FROM subjects WHERE tenant_id = ?1 AND dek_id IS NOT NULL
             UNION ALL SELECT X'', dek_id FROM tenants WHERE id = ?1 AND dek_id IS NOT NULL",
        )?;
        let rows = stmt.query_map([tenant], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_>>()
    }

    fn set_subject_dek(
        &self,
        tenant: &str,
        blind: &[u8],
        dek: &str,
        sealed_subject: &[u8],
    ) -> Result<()> {
        self.execute(
            "UPDATE subjects SET dek_id = ?3, sealed_subject = ?4 WHERE tenant_id = ?1 AND blind_id = ?2",
            params![tenant, blind, dek, sealed_subject],
        )?;
        Ok(())
    }
}

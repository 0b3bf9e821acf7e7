//! Legal holds.

use super::{Db, Row, params};

use crate::error::Result;
use crate::store::seam::*;

fn hold_row(r: &Row<'_>) -> Result<HoldRow> {
    Ok(HoldRow {
        id: r.get(0)?,
        tenant_id: r.get(1)?,
        owner: r.get(2)?,
        reason: r.get(3)?,
        created_at: r.get(4)?,
        created_by: r.get(5)?,
    })
}

impl HoldRows for Db {
    fn hold_insert(&self, h: &HoldRow) -> Result<()> {
        self.prepare_cached(
            "INSERT INTO legal_holds (id, tenant_id, owner, reason, created_at, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            h.id,
            h.tenant_id,
            h.owner,
            h.reason,
            h.created_at,
            h.created_by
        ])?;
        Ok(())
    }

    fn holds_of_tenant(&self, tenant: &str) -> Result<Vec<HoldRow>> {
        let mut stmt = self.prepare_cached(
            "SELECT id, tenant_id, owner, reason, created_at, created_by
             FROM legal_holds WHERE tenant_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([tenant], hold_row)?;
        rows.collect::<Result<_>>()
    }

    fn hold_delete(&self, tenant: &str, id: &str) -> Result<bool> {
        Ok(self
            .prepare_cached("DELETE FROM legal_holds WHERE tenant_id = ?1 AND id = ?2")?
            .execute([tenant, id])?
            > 0)
    }

    fn holds_delete_tenant(&self, tenant: &str) -> Result<()> {
        self.prepare_cached("DELETE FROM legal_holds WHERE tenant_id = ?1")?
            .execute([tenant])?;
        Ok(())
    }

    fn tenant_set_holds_digest(&self, id: &str, digest: Option<&[u8]>) -> Result<()> {
        self.execute(
            "UPDATE tenants SET holds_digest = ?2 WHERE id = ?1",
            params![id, digest],
        )?;
        Ok(())
    }
}

//! Principals and their API keys (secrets only as hashes).

use super::{Db, OptionalExtension, Row, params};

use crate::error::{Error, Result};
use crate::store::seam::*;

const PRINCIPAL_COLS: &str = "id, tenant_id, name, roles, created_at, cert_cn, mac";

/// A principal from columns `PRINCIPAL_COLS` starting at `at`.
fn principal_row(r: &Row<'_>, at: usize) -> Result<PrincipalRow> {
    Ok(PrincipalRow {
        id: r.get(at)?,
        tenant_id: r.get(at + 1)?,
        name: r.get(at + 2)?,
        roles: r.get(at + 3)?,
        created_at: r.get(at + 4)?,
        cert_cn: r.get(at + 5)?,
        mac: r.get(at + 6)?,
    })
}

const API_KEY_COLS: &str = "k.key_id, k.principal_id, k.secret_hash, k.created_at, k.expires_at, k.revoked_at, k.last_used_at, k.mac";

/// An API key from columns `API_KEY_COLS` (the first eight).
fn api_key_row(r: &Row<'_>) -> Result<ApiKeyRow> {
    Ok(ApiKeyRow {
        key_id: r.get(0)?,
        principal_id: r.get(1)?,
        secret_hash: r.get(2)?,
        created_at: r.get(3)?,
        expires_at: r.get(4)?,
        revoked_at: r.get(5)?,
        last_used_at: r.get(6)?,
        mac: r.get(7)?,
    })
}

impl PrincipalRows for Db {
    fn principal_insert(&self, p: &PrincipalRow) -> Result<()> {
        self.execute(
            "INSERT INTO principals (id, tenant_id, name, roles, created_at, cert_cn, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![p.id, p.tenant_id, p.name, p.roles, p.created_at, p.cert_cn, p.mac],
        )
        .map_err(|e| match e {
            Error::AlreadyExists(_) => {
                Error::AlreadyExists(format!("name: a principal named '{}' already exists", p.name))
            }
            e => e,
        })?;
        Ok(())
    }

    fn principals_all(&self) -> Result<Vec<PrincipalRow>> {
        let mut stmt = self.prepare_cached(&format!("SELECT {PRINCIPAL_COLS} FROM principals"))?;
        let rows = stmt.query_map((), |r| principal_row(r, 0))?;
        rows.collect::<Result<_>>()
    }

    fn principal_set_mac(&self, id: &str, mac: &[u8]) -> Result<()> {
        self.prepare_cached("UPDATE principals SET mac = ?2 WHERE id = ?1")?
            .execute(params![id, mac])?;
        Ok(())
    }

    fn api_keys_all(&self) -> Result<Vec<ApiKeyRow>> {
        let mut stmt = self.prepare_cached(&format!("SELECT {API_KEY_COLS} FROM api_keys k"))?;
        let rows = stmt.query_map((), api_key_row)?;
        rows.collect::<Result<_>>()
    }

    fn api_key_set_mac(&self, key_id: &str, mac: &[u8]) -> Result<()> {
        self.prepare_cached("UPDATE api_keys SET mac = ?2 WHERE key_id = ?1")?
            .execute(params![key_id, mac])?;
        Ok(())
    }

    fn principal_count(&self) -> Result<u64> {
        let n: i64 = self.query_row("SELECT count(*) FROM principals", (), |r| r.get(0))?;
        Ok(n as u64)
    }

    fn principals_of_tenant(&self, tenant: &str) -> Result<Vec<PrincipalRow>> {
        let mut stmt = self.prepare_cached(&format!(
            "SELECT {PRINCIPAL_COLS} FROM principals WHERE tenant_id = ?1 ORDER BY name"
        ))?;
        let rows = stmt.query_map([tenant], |r| principal_row(r, 0))?;
        rows.collect::<Result<_>>()
    }

    fn api_keys_of_tenant(&self, tenant: &str) -> Result<Vec<ApiKeyRow>> {
        let mut stmt = self.prepare_cached(&format!(
            "SELECT {API_KEY_COLS} FROM api_keys k JOIN principals p ON p.id = k.principal_id
             WHERE p.tenant_id = ?1 ORDER BY k.created_at"
        ))?;
        let rows = stmt.query_map([tenant], api_key_row)?;
        rows.collect::<Result<_>>()
    }

    fn principal_get(&self, id: &str) -> Result<Option<PrincipalRow>> {
        self.prepare_cached(&format!(
            "SELECT {PRINCIPAL_COLS} FROM principals WHERE id = ?1"
        ))?
        .query_row([id], |r| principal_row(r, 0))
        .optional()
    }

    fn api_key_revoke(&self, key_id: &str, now: i64) -> Result<()> {
        self.execute(
            "UPDATE api_keys SET revoked_at = ?2 WHERE key_id = ?1 AND revoked_at IS NULL",
            params![key_id, now],
        )?;
        Ok(())
    }

    fn api_key_touch(&self, key_id: &str, now: i64) -> Result<()> {
        self.prepare_cached("UPDATE api_keys SET last_used_at = ?2 WHERE key_id = ?1")?
            .execute(params![key_id, now])?;
        Ok(())
    }

    fn api_key_insert(&self, k: &ApiKeyRow) -> Result<()> {
        self.execute(
            "INSERT INTO api_keys (key_id, principal_id, secret_hash, created_at, expires_at, revoked_at, mac) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![k.key_id, k.principal_id, k.secret_hash, k.created_at, k.expires_at, k.revoked_at, k.mac],
        )?;
        Ok(())
    }

    fn api_key_lookup(&self, key_id: &str) -> Result<Option<(ApiKeyRow, PrincipalRow)>> {
        self
            .prepare_cached(&format!(
                "SELECT {API_KEY_COLS}, p.id, p.tenant_id, p.name, p.roles, p.created_at, p.cert_cn, p.mac
                 FROM api_keys k JOIN principals p ON p.id = k.principal_id WHERE k.key_id = ?1"
            ))?
            .query_row([key_id], |r| Ok((api_key_row(r)?, principal_row(r, 8)?)))
            .optional()
    }
}

//! Restore's use case on the vault: replay the shred ledger onto a
//! database restored from a backup, so nothing erased after the backup was
//! taken comes back, then record the restore in the audit trail.
//!
//! Replaying is idempotent (a key already destroyed is left alone), so a
//! restore cut short by a crash is finished by running it again. Each
//! ledger entry destroys in the restored database what it destroyed in the
//! live one:
//!
//! - `dek`: the data key. If it is a subject's current key, the whole
//!   subject is erased as a shred did (all its keys, its sealed id). A key
//!   that a re-encryption was moving records off, to a key the ledger does
//!   not list, is left to the re-encryption job, which moves the records
//!   and then destroys it, as the live vault did.
//! - `kek`: the KEK version, after rewrapping any data key still under it
//!   to the tenant's current version. If the backup predates the rotation
//!   that made the successor, the version is kept (it is the tenant's
//!   current key in the backup) and the restored vault's rotation retires
//!   it later; no personal data depends on this.
//! - `tenant`: every key of the tenant, as the tenant shred did.
//!
//! Then the retention sweep runs to completion (records whose window
//! passed after the backup expire again before anything is served), the
//! ciphertext of destroyed keys is purged and the WAL truncated.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::store::prelude::*;

use super::Vault;
use crate::audit::Call;
use crate::error::Result;
use crate::integrity;
use crate::keyring::Keyring;
use crate::ledger::Destroyed;
use crate::now_ms;
use crate::store::TenantState;

/// Ledger entries applied per transaction.
const APPLY_BATCH: usize = 256;

/// What replaying the ledger destroyed in the restored database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Ledger entries read.
    pub entries: usize,
    /// Data keys destroyed (subjects erased count their every key).
    pub data_keys: usize,
    /// Subjects erased.
    pub subjects: usize,
    /// Tenants shredded.
    pub tenants: usize,
    /// KEK versions retired.
    pub keks: usize,
    /// Records expired by the retention sweep.
    pub expired: u64,
    /// Ciphertext rows purged.
    pub purged: usize,
}

impl Vault {
    /// Applies the shred ledger at `ledger` (opened, checked, and kept as
    /// this vault's ledger from now on) to the database.
    pub async fn apply_ledger(&self, ledger: &std::path::Path) -> Result<Applied> {
        let entries = self.open_ledger(ledger).await?;
        let listed: Arc<HashSet<String>> = Arc::new(
            entries
                .iter()
                .filter_map(|d| match d {
                    Destroyed::Dek { id, .. } => Some(id.clone()),
                    _ => None,
                })
                .collect(),
        );
        let mut applied = Applied {
            entries: entries.len(),
            ..Applied::default()
        };
        for batch in entries.chunks(APPLY_BATCH) {
            let (keys, batch, listed) = (self.keys.clone(), batch.to_vec(), listed.clone());
            let done = self
                .store
                .write(move |conn| {
                    let mut done = Applied::default();
                    for e in &batch {
                        apply_entry(conn, &keys, e, &listed, &mut done)?;
                    }
                    Ok(done)
                })
                .await?;
            applied.data_keys += done.data_keys;
            applied.subjects += done.subjects;
            applied.tenants += done.tenants;
            applied.keks += done.keks;
        }
        loop {
            let n = self
                .retention_sweep(super::SWEEP_BATCH, Duration::ZERO)
                .await?;
            applied.expired += n;
            if n == 0 {
                break;
            }
        }
        applied.purged = self.purge_destroyed().await?;
        self.store.checkpoint().await?;
        Ok(applied)
    }

    /// Records the restore in the audit trail, then anchors the new head
    /// as a reset: the entries the live vault wrote after the backup are
    /// not in this trail.
    /// Anchors the chain of a database just unpacked from a backup, before
    /// anything is appended to it: points the anchor holds beyond it were
    /// written by a run of the same restore that was cut off, and belong
    /// to a database the rerun replaced.
    pub async fn anchor_unpacked_backup(&self) -> Result<()> {
        self.anchor_reset().await
    }

    pub async fn record_restore(&self, call: &Arc<Call>) -> Result<()> {
        self.mutate(call, |_| Ok(())).await?;
        self.anchor_reset().await
    }
}

fn apply_entry(
    conn: &dyn Tx,
    keys: &Keyring,
    destroyed: &Destroyed,
    listed: &HashSet<String>,
    done: &mut Applied,
) -> Result<()> {
    let now = now_ms();
    match destroyed {
        Destroyed::Dek { tenant, id } => {
            let Some(row) = conn.dek_get(id)? else {
                return Ok(()); // made after the backup
            };
            if row.wrapped.is_none() || row.tenant_id != *tenant {
                return Ok(());
            }
            if let Some(to) = conn.reencrypt_target(id)?
                && !listed.contains(&to)
            {
                return Ok(()); // the re-encryption job finishes it
            }
            if conn.subject_of_dek(tenant, id)?.is_some() {
                for d in conn.live_deks_of_owner(tenant, &row.owner)? {
                    conn.dek_destroy(&d, now)?;
                    conn.reencrypt_delete(&d)?;
                    done.data_keys += 1;
                }
                conn.subject_erase(tenant, &row.owner, now)?;
                done.subjects += 1;
            } else {
                conn.dek_destroy(id, now)?;
                conn.reencrypt_delete(id)?;
                done.data_keys += 1;
            }
        }
        Destroyed::Kek { tenant, version } => {
            if !conn.kek_live(tenant, *version)? {
                return Ok(());
            }
            let Some(t) = integrity::tenant(conn, keys, tenant)? else {
                return Ok(());
            };
            if t.state == TenantState::Shredded || t.kek_version <= *version {
                return Ok(());
            }
            let id = crate::ids::TenantId::parse(tenant)
                .map_err(|_| crate::error::Error::Internal("stored tenant id is invalid".into()))?;
            for d in conn.deks_under_kek(tenant, *version)? {
                let wrapped = keys.rewrap_dek(conn, &id, &d, t.kek_version)?;
                conn.dek_rewrapped(&d.id, t.kek_version, &wrapped)?;
            }
            conn.kek_retire(tenant, *version, now)?;
            done.keks += 1;
        }
        Destroyed::Tenant { tenant } => {
            match integrity::tenant(conn, keys, tenant)? {
                Some(t) if t.state != TenantState::Shredded => {}
                _ => return Ok(()),
            }
            conn.tenant_destroy(tenant, now)?;
            conn.holds_delete_tenant(tenant)?;
            integrity::seal_tenant(conn, keys, tenant)?;
            done.tenants += 1;
        }
        // Nothing in the database: the key was in the erasure keys file,
        // and a backup that needs it is refused before this.
        Destroyed::Epoch { .. } => {}
    }
    Ok(())
}

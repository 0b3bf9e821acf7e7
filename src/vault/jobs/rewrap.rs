//! Rewrap after a tenant key rotation: data keys rewrapped under the newest
//! key-encryption key in paced batches, old versions retired once unused,
//! and rotations that a policy makes due.

use std::collections::HashMap;
use std::sync::Arc;

use super::super::*;
use crate::audit::Call;
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::integrity;
use crate::now_ms;
use crate::store::{self};

impl Vault {
    /// Writes down when each KEK version was last used, and adds the data
    /// keys wrapped under each to its count (both kept in memory between
    /// housekeeping runs); returns how many versions it updated.
    pub async fn flush_kek_use(&self) -> Result<usize> {
        // Held until the notes written are taken out of memory.
        let _flushing = self.key_notes_flush.lock().await;
        let uses = Arc::new(self.keys.unwritten_kek_use());
        let wraps = Arc::new(self.keys.unwritten_kek_wraps());
        if uses.is_empty() && wraps.is_empty() {
            return Ok(0);
        }
        let (used, wrapped) = (uses.clone(), wraps.clone());
        let n = self
            .store
            .write(move |conn| {
                for (tenant, version, at) in used.iter() {
                    conn.kek_note_use(tenant, *version, *at)?;
                }
                for (tenant, version, n) in wrapped.iter() {
                    conn.kek_count_wraps(tenant, *version, *n)?;
                }
                Ok(used.len().max(wrapped.len()))
            })
            .await?;
        self.keys.kek_use_written(&uses);
        self.keys.kek_wraps_written(&wraps);
        Ok(n)
    }

    /// Rotates every tenant KEK its policy says is due; returns how many.
    pub async fn rotate_due_keys(&self) -> Result<usize> {
        let now = now_ms();
        let limits = self.limits.clone();
        let due: Vec<store::RotationState> = self
            .store
            .read(move |c| {
                Ok(c.rotation_states()?
                    .into_iter()
                    .filter(|st| RotationPolicy::effective(st, &limits).due(st, now))
                    .collect())
            })
            .await?;
        let mut rotated = 0;
        for st in due {
            let tenant = TenantId::parse(&st.tenant)
                .map_err(|_| Error::Internal("stored tenant id is invalid".into()))?;
            let call = Arc::new(Call::system("key.rotate.auto"));
            call.set_tenant(tenant.as_str());
            call.set_resource(format!("tenant-kek:{tenant}"));
            let (keys, limits, version) = (self.keys.clone(), self.limits.clone(), st.version);
            // Checked again inside the job: another pass may have rotated it.
            let done = self
                .mutate(&call, move |conn| {
                    // The policy read here is the MAC-checked row's.
                    integrity::tenant(conn, &keys, tenant.as_str())?;
                    match conn.rotation_state(tenant.as_str())? {
                        Some(now_st)
                            if now_st.version == version
                                && RotationPolicy::effective(&now_st, &limits)
                                    .due(&now_st, now_ms()) =>
                        {
                            rotate_kek(&keys, conn, &tenant).map(|_| true)
                        }
                        _ => Ok(false),
                    }
                })
                .await?;
            if done {
                tracing::info!(tenant = %st.tenant, from = version, "key-encryption key rotated by policy");
                rotated += 1;
            }
        }
        Ok(rotated)
    }

    /// One pass of the rewrap job: rewraps data keys left under old KEK
    /// versions in batches paced by how busy the writer is (`jobs::pace`:
    /// as fast as storage goes on an idle server, short batches with
    /// pauses beside live traffic), then retires (destroys) every old
    /// version no live data key uses. Progress is the rows themselves, so
    /// a pass cut short by a crash simply continues on the next start.
    pub async fn rewrap_pass(&self) -> Result<(usize, usize)> {
        let mut after = 0;
        let mut rewrapped = 0;
        let mut pace = super::pace::Pace::new(&self.store);
        loop {
            let keys = self.keys.clone();
            let (from, batch) = (after, pace.batch());
            let (done, last, took) = self
                .store
                .write(move |conn| {
                    // The job's own time in the writer, queueing left out.
                    let started = std::time::Instant::now();
                    let work = conn.deks_to_rewrap(from, batch)?;
                    let last = work.last().map(|(_, _, rowid)| *rowid);
                    let mut done = 0;
                    let mut counts: HashMap<(String, u32), u64> = HashMap::new();
                    for (row, to, _) in work {
                        let tenant = TenantId::parse(&row.tenant_id)
                            .map_err(|_| Error::Internal("stored tenant id is invalid".into()))?;
                        match keys.rewrap_dek(conn, &tenant, &row, to) {
                            Ok(wrapped) => {
                                conn.dek_rewrapped(&row.id, to, &wrapped)?;
                                *counts.entry((row.tenant_id.clone(), to)).or_default() += 1;
                                done += 1;
                            }
                            // Left under its old version, which then is not
                            // retired: `key status` keeps showing it.
                            Err(e) => {
                                tracing::error!(dek = %row.id, error = %e, "cannot rewrap data key")
                            }
                        }
                    }
                    for ((tenant, version), n) in counts {
                        conn.kek_count_wraps(&tenant, version, n)?;
                    }
                    Ok((done, last, started.elapsed()))
                })
                .await?;
            let pause = pace.after(self.store.write_activity(), done, took);
            rewrapped += done;
            match last {
                Some(id) => after = id,
                None => break,
            }
            if !self.keep_working().await? {
                // Progress is the rows: the next pass (here, or on the
                // server that holds the lease) goes on from here.
                return Ok((rewrapped, 0));
            }
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
        }
        let retired = self.retire_unused_keks().await?;
        Ok((rewrapped, retired))
    }

    /// Destroys every old KEK version no live data key uses.
    pub(in crate::vault) async fn retire_unused_keks(&self) -> Result<usize> {
        let due = self.store.read(|tx| tx.keks_to_retire()).await?;
        for (tenant, version) in &due {
            let call = Arc::new(Call::system("key.retire"));
            call.set_tenant(tenant);
            call.set_resource(format!("kek:{tenant}/v{version}"));
            let (t, v) = (tenant.clone(), *version);
            self.mutate(&call, move |conn| conn.kek_retire(&t, v, now_ms()))
                .await?;
            self.keys.forget_kek(tenant, *version);
            self.ledger_record(vec![crate::ledger::Destroyed::Kek {
                tenant: tenant.clone(),
                version: *version,
            }])
            .await?;
            tracing::info!(tenant = %tenant, version, "retired key-encryption key: material destroyed");
        }
        if !due.is_empty() {
            self.store.checkpoint().await?;
        }
        Ok(due.len())
    }
}

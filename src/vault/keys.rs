//! Key rotation: tenant key-encryption keys (rotation, policy, status), re-
//! encryption of a subject's records under a new data key, and root key
//! rotation.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::audit::Call;
use crate::authz::{self, Action, Permit};
use crate::crypto::{self, label};
use crate::error::{Error, Result};
use crate::ids::{SubjectId, TenantId};
use crate::integrity;
use crate::keyring::{Keyring, aad};
use crate::now_ms;
use crate::store::{self};

/// A tenant's key-encryption keys.
#[derive(Clone, Debug)]
pub struct TenantKeyStatus {
    pub current_version: u32,
    pub versions: Vec<store::KekRow>,
    /// Data keys still wrapped under versions older than the current one.
    pub data_keys_to_rewrap: u64,
    /// The rotation policy in force, and when the current KEK is next due.
    pub policy: RotationPolicy,
    pub next_rotation_due: i64,
    /// Data-key re-encryption jobs still running.
    pub reencrypt_jobs: u64,
    /// Records re-encryption skipped because they fail authentication.
    pub reencrypt_corrupt_records: u64,
    /// Data keys under older KEK versions are refused to calls (0: none).
    pub min_decryption_version: u32,
}

/// When a tenant's KEK is rotated automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    pub max_age_ms: i64,
    pub max_encryptions: u64,
    /// Whether these are the server's defaults (the tenant set none).
    pub default: bool,
}

impl RotationPolicy {
    pub(super) fn effective(state: &store::RotationState, limits: &Limits) -> Self {
        RotationPolicy {
            max_age_ms: state
                .max_age_ms
                .unwrap_or(limits.rotation_max_age.as_millis() as i64),
            max_encryptions: state.max_wraps.unwrap_or(limits.rotation_max_encryptions),
            default: state.max_age_ms.is_none() && state.max_wraps.is_none(),
        }
    }

    /// Whether the current KEK in `state` is due at `now`.
    pub(super) fn due(&self, state: &store::RotationState, now: i64) -> bool {
        state.created_at.saturating_add(self.max_age_ms) <= now
            || state.wraps >= self.max_encryptions
    }
}

/// Makes KEK version current+1 of `tenant` current, in the caller's job.
pub(super) fn rotate_kek(keys: &Keyring, conn: &dyn Tx, tenant: &TenantId) -> Result<u32> {
    let row = active_tenant(conn, keys, tenant)?;
    let version = row.kek_version + 1;
    let (wrapped, epoch) = keys.new_kek(conn, tenant, version)?;
    // The tenant row first: a rotation racing this one on another server
    // then waits on that row and loses with a serialization failure (run
    // again), not with the new version's key already existing.
    conn.tenant_set_kek_version(tenant.as_str(), version)?;
    conn.kek_insert(tenant.as_str(), version, (&wrapped, epoch), now_ms())?;
    integrity::seal_tenant(conn, keys, tenant.as_str())?;
    Ok(version)
}

impl Vault {
    /// Rotates the tenant's KEK: a new version, used at once for new data
    /// keys; the rewrap job moves the existing ones over in the background.
    pub async fn rotate_tenant_key(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
    ) -> Result<TenantKeyStatus> {
        let tenant = permit.tenant_for(Action::KeyRotate)?.clone();
        let (keys, t) = (self.keys.clone(), tenant.clone());
        self.mutate(call, move |conn| rotate_kek(&keys, conn, &t).map(drop))
            .await?;
        self.purge_wanted.notify_one();
        self.key_status_of(tenant).await
    }

    /// Every KEK version of the permit's tenant and how much uses it.
    pub async fn key_status(&self, permit: &Permit) -> Result<TenantKeyStatus> {
        let tenant = permit.tenant_for(Action::KeyStatus)?.clone();
        self.key_status_of(tenant).await
    }

    /// Every KEK version of `tenant` and how much uses it (after a use case
    /// that checked its own permit).
    pub(super) async fn key_status_of(&self, tenant: TenantId) -> Result<TenantKeyStatus> {
        let limits = self.limits.clone();
        let keys = self.keys.clone();
        // The rows and the notes still in memory are read with no flush in
        // between: one moving a note from memory to the rows between the
        // two reads would make it missing from both, or counted in both.
        let _no_flush = self.key_notes_flush.lock().await;
        self.store
            .read(move |conn| {
                let row = integrity::tenant(conn, &keys, tenant.as_str())?
                    .ok_or_else(|| authz::tenant_not_found(&tenant))?;
                let versions = conn.keks_of_tenant(tenant.as_str())?;
                let (policy, next_rotation_due) = match conn.rotation_state(tenant.as_str())? {
                    Some(st) => {
                        let p = RotationPolicy::effective(&st, &limits);
                        (p, st.created_at.saturating_add(p.max_age_ms))
                    }
                    // A shredded tenant has no KEK and no policy in force.
                    None => (
                        RotationPolicy {
                            max_age_ms: 0,
                            max_encryptions: 0,
                            default: true,
                        },
                        0,
                    ),
                };
                let mut versions = versions;
                let pending = keys.pending_kek_use(tenant.as_str());
                let wraps = keys.pending_kek_wraps(tenant.as_str());
                for v in &mut versions {
                    if let Some(at) = pending.get(&v.version) {
                        v.last_used_at = Some(v.last_used_at.unwrap_or(0).max(*at));
                    }
                    v.wraps += wraps.get(&v.version).copied().unwrap_or(0);
                }
                let to_rewrap = versions
                    .iter()
                    .filter(|v| v.version < row.kek_version)
                    .map(|v| v.data_keys)
                    .sum();
                Ok(TenantKeyStatus {
                    current_version: row.kek_version,
                    versions,
                    data_keys_to_rewrap: to_rewrap,
                    policy,
                    next_rotation_due,
                    reencrypt_jobs: conn.reencrypt_jobs_of(tenant.as_str())?.len() as u64,
                    reencrypt_corrupt_records: conn.corrupt_records(tenant.as_str())?,
                    min_decryption_version: row.min_decrypt_version,
                })
            })
            .await
    }

    /// Starts re-encrypting one subject's records (or every subject's and
    /// the tenant-level records) under fresh data keys, for a suspected
    /// data-key compromise. New writes use the fresh keys at once; the job
    /// moves existing records, then destroys the old keys. Returns how
    /// many jobs it started (owners already being re-encrypted are left to
    /// their running job).
    pub async fn start_reencrypt(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        subject: Option<SubjectId>,
    ) -> Result<usize> {
        let tenant = permit.tenant_for(Action::KeyReencrypt)?.clone();
        let keys = self.keys.clone();
        let c = call.clone();
        let started = self
            .mutate(call, move |conn| {
                let t = tenant.as_str();
                let trow = active_tenant(conn, &keys, &tenant)?;
                let owners = match &subject {
                    Some(s) => {
                        let blind = keys.blind_id(conn, &tenant, s)?;
                        c.set_resource(format!("subject:{}", hex::encode(blind)));
                        let row = conn.subject_get(t, &blind)?.ok_or_else(subject_not_found)?;
                        vec![(blind.to_vec(), row.dek_id.ok_or_else(subject_not_found)?)]
                    }
                    None => conn.owners_of_tenant(t)?,
                };
                let running = conn.reencrypt_jobs_of(t)?;
                let now = now_ms();
                let mut started = 0;
                for (owner, old) in owners {
                    if running.iter().any(|(_, new)| *new == old) {
                        continue;
                    }
                    let (row, dek) = keys.new_dek(conn, &tenant, &owner, trow.kek_version)?;
                    conn.dek_insert(&row, now)?;
                    if owner.is_empty() {
                        conn.set_tenant_dek(t, &row.id)?;
                        integrity::seal_tenant(conn, &keys, t)?;
                    } else {
                        // The sealed subject id moves to the new key too.
                        let subject_row =
                            conn.subject_get(t, &owner)?.ok_or_else(subject_not_found)?;
                        let sealed = subject_row.sealed_subject.ok_or_else(subject_not_found)?;
                        let old_row = named_dek(conn, &old)?;
                        let old_key = keys
                            .dek_for_job(conn, &tenant, &old_row)?
                            .ok_or_else(subject_not_found)?;
                        let plain = crypto::open(
                            &old_key,
                            label::SUBJECT_ID,
                            &aad::subject_id(t, &owner, &old),
                            &sealed,
                        )
                        .map_err(|_| {
                            Error::Corrupt("the sealed subject id failed authentication".into())
                        })?;
                        let resealed = crypto::seal(
                            &dek,
                            label::SUBJECT_ID,
                            &aad::subject_id(t, &owner, &row.id),
                            &plain,
                        );
                        conn.set_subject_dek(t, &owner, &row.id, &resealed)?;
                    }
                    keys.remember_dek(&tenant, &row.id, &dek);
                    conn.reencrypt_insert(
                        &store::ReencryptJob {
                            old_dek: old,
                            new_dek: row.id,
                            tenant_id: t.to_owned(),
                            owner,
                        },
                        now,
                    )?;
                    started += 1;
                }
                Ok(started)
            })
            .await?;
        self.purge_wanted.notify_one();
        Ok(started)
    }

    /// Sets the tenant's rotation policy (`None`: the server's default)
    /// and, if given, its minimum decryption version (0: none).
    pub async fn set_rotation_policy(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        max_age: Option<Duration>,
        max_encryptions: Option<u64>,
        min_decryption_version: Option<u32>,
    ) -> Result<TenantKeyStatus> {
        let tenant = permit.tenant_for(Action::KeyPolicy)?.clone();
        if max_age.is_some_and(|d| d.is_zero()) {
            return Err(Error::invalid(
                "max_age_seconds",
                "must be at least 1 second",
            ));
        }
        if max_encryptions.is_some_and(|n| n == 0 || n > 1 << 32) {
            return Err(Error::invalid("max_encryptions", "must be 1 to 2^32"));
        }
        let age_ms = max_age.map(|d| d.as_millis() as i64);
        let t = tenant.clone();
        let keys = self.keys.clone();
        self.mutate(call, move |conn| {
            let row = active_tenant(conn, &keys, &t)?;
            if let Some(min) = min_decryption_version {
                if min > row.kek_version {
                    return Err(Error::invalid(
                        "min_decryption_version",
                        format!(
                            "must be at most the current version {} (0 removes the minimum)",
                            row.kek_version
                        ),
                    ));
                }
                conn.set_min_decrypt_version(t.as_str(), min)?;
            }
            conn.set_rotation_policy(t.as_str(), age_ms, max_encryptions)?;
            integrity::seal_tenant(conn, &keys, t.as_str())
        })
        .await?;
        if let Some(min) = min_decryption_version {
            self.keys.set_min_decrypt_version(&tenant, min);
        }
        self.key_status_of(tenant).await
    }

    /// Rotates the root key: stages a successor, rewraps every key held
    /// under the root in one transaction (switching wraps to the successor
    /// in that same job), then promotes the successor. A crash before the
    /// commit leaves the old root in use; after it, start-up promotes the
    /// staged successor (`server::open_root`). Returns the keys rewrapped.
    pub async fn rotate_root(&self, permit: &Permit, call: &Arc<Call>) -> Result<usize> {
        permit.require(Action::KeyRotateRoot)?;
        let _one_at_a_time = self.root_rotation.lock().await;
        let root = self.keys.root();
        let next = crate::blocking(move || root.stage_successor()).await?;
        self.replace_root(call, next, "root-rotation").await
    }

    /// Moves every key held under the root key to `next`, a successor
    /// another provider staged (the move from a key file into an HSM), the
    /// same way a rotation does. Run with no server on the vault
    /// (`server::move_root_to_hsm`).
    pub async fn move_root(
        &self,
        call: &Arc<Call>,
        next: Arc<dyn crate::rootkey::RootKeyProvider>,
    ) -> Result<usize> {
        let _one_at_a_time = self.root_rotation.lock().await;
        self.replace_root(call, next, "move-root").await
    }

    /// Rewraps under the staged `next` in one transaction with the call's
    /// audit entry, then promotes `next`; `crash_points` names this
    /// operation's points for the kill tests.
    pub(super) async fn replace_root(
        &self,
        call: &Arc<Call>,
        next: Arc<dyn crate::rootkey::RootKeyProvider>,
        crash_points: &str,
    ) -> Result<usize> {
        crate::crash_point(&format!("{crash_points}:staged"));
        let current = self.keys.root();
        let generation = self.keys.root_generation();
        let from = current.describe();
        let (keys, old, new) = (self.keys.clone(), current.clone(), next.clone());
        let result = self
            .mutate(call, move |conn| {
                // Another server moves to the new root at its next wrap or
                // unwrap under it, or its next housekeeping pass: each
                // reads the root generation raised here in its own
                // transaction (`Keyring::follow_root`).
                let (n, generation) = keys.rewrap_root_keys(conn, &*old, &*new)?;
                keys.install_root(old.clone(), new.clone(), generation);
                Ok((n, generation))
            })
            .await;
        let (n, generation) = match result {
            Ok(done) => done,
            Err(e) => {
                self.keys.restore_root(current, generation);
                let staged = next.clone();
                crate::blocking(move || staged.discard_successor()).await?;
                return Err(e);
            }
        };
        crate::crash_point(&format!("{crash_points}:committed"));
        let staged = next.clone();
        crate::blocking(move || staged.promote_successor()).await?;
        crate::crash_point(&format!("{crash_points}:promoted"));
        self.store.checkpoint().await?;
        // The old root is retired (an HSM destroys it) once every live
        // server has acknowledged the new generation, and readers whose
        // snapshot predates the commit are done with it.
        let (keys, store, jobs) = (self.keys.clone(), self.store.clone(), self.jobs.clone());
        tokio::spawn(async move {
            let mut waited = 0u64;
            loop {
                let j = jobs.clone();
                match store.read(move |c| j.behind_root(c, generation)).await {
                    Ok(behind) if behind.is_empty() => break,
                    Ok(behind) if waited.is_multiple_of(60) => tracing::warn!(
                        generation,
                        servers = %behind.join(", "),
                        "the replaced root key is kept until every live server has moved to the new one"
                    ),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "checking which servers moved to the new root key")
                    }
                }
                waited += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            let retired = tokio::task::spawn_blocking(move || keys.forget_previous_root()).await;
            if let Ok(Err(e)) = retired {
                tracing::warn!(error = %e, "the replaced root key was not destroyed now; it is at the next start");
            }
        });
        tracing::info!(keys = n, generation, %from, root = %next.describe(), "root key replaced");
        Ok(n)
    }
}

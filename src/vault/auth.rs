//! Authentication: API keys verified against their stored hashes, and the
//! cache of verified keys (with tombstones of revocations and tenant shreds,
//! so a racing verification cannot re-cache a dead key).

use std::collections::HashMap;
use std::path::Path;
use std::sync::MutexGuard;
use std::time::Duration;

use super::*;
use crate::api_key;
use crate::authz::{Principal, Role};
use crate::crypto::{self};
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::integrity;
use crate::now_ms;
use crate::tombstones::Tombstones;

/// Verified API keys by key id, and tombstones of keys revoked and tenants
/// shredded recently (so a verification that raced a revocation or a
/// tenant shred cannot re-cache the key).
pub(super) struct AuthCache {
    keys: HashMap<String, CachedKey>,
    /// Key ids storage did not know, lately: a flood of one bad key costs a
    /// storage read per `UNKNOWN_KEY_TTL`, not per call. Bounded; when full
    /// of fresh entries, lookups just go to storage (fails open).
    unknown: HashMap<String, std::time::Instant>,
    revoked: Tombstones<String>,
    shredded_tenants: Tombstones<String>,
}

impl Default for AuthCache {
    fn default() -> Self {
        AuthCache {
            keys: HashMap::new(),
            unknown: HashMap::new(),
            revoked: Tombstones::new(MAX_CACHED_API_KEYS),
            shredded_tenants: Tombstones::new(MAX_CACHED_API_KEYS),
        }
    }
}

impl AuthCache {
    /// Caches a verified key unless it was revoked or its tenant shredded
    /// since; at the bound, one arbitrary entry makes room.
    pub(super) fn admit(&mut self, key_id: &str, entry: CachedKey) {
        if !self.revoked.admits(&key_id.to_owned()) {
            return;
        }
        if let Some(t) = &entry.principal.tenant
            && !self.shredded_tenants.admits(&t.as_str().to_owned())
        {
            return;
        }
        if self.keys.len() >= MAX_CACHED_API_KEYS
            && let Some(evict) = self.keys.keys().next().cloned()
        {
            self.keys.remove(&evict);
        }
        self.keys.insert(key_id.to_owned(), entry);
    }

    /// Ends every cached key of a shredded tenant, for good.
    pub(super) fn forget_tenant(&mut self, tenant: &TenantId) {
        self.keys
            .retain(|_, k| k.principal.tenant.as_ref() != Some(tenant));
        self.shredded_tenants.insert(tenant.as_str().to_owned());
    }

    /// Ends a revoked key, for good.
    /// A key was made: a key id storage did not know may exist now.
    pub(super) fn key_made(&mut self) {
        self.unknown.clear();
    }

    pub(super) fn revoke(&mut self, key_id: &str) {
        self.keys.remove(key_id);
        self.revoked.insert(key_id.to_owned());
    }
}

/// A verified API key, kept so that each call need not read it again. Holds
/// the secret's hash, never the secret. Dropped when its tenant is shredded
/// (and, with the key lifecycle, when the key is revoked).
pub(super) struct CachedKey {
    secret_hash: [u8; 32],
    expires_at: Option<i64>,
    principal: Principal,
    /// When `last_used_at` was last written for this key.
    last_touched: i64,
}

/// `last_used_at` is written at most this often per key.
pub(super) const TOUCH_EVERY_MS: i64 = 60_000;

/// API keys cached at most (and live revocation and tenant-shred
/// tombstones kept at most); past it one entry makes room.
pub(super) const MAX_CACHED_API_KEYS: usize = 10_000;

/// An RFC 3339 rendering of a Unix-millisecond time.
/// How long a key id storage did not know is answered from memory, and how
/// many such ids are kept. Making any API key clears them all (a key from
/// `strongbox enrol` may be tried before its principal exists).
pub(super) const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(10);

pub(super) const MAX_UNKNOWN_KEYS: usize = 10_000;

impl Vault {
    pub(super) fn auth_cache(&self) -> MutexGuard<'_, AuthCache> {
        // Entries are inserted and removed whole; a poisoned lock holds no
        // half-made entry.
        self.auth_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// On a vault with no principals, creates the bootstrap operator and
    /// writes its API key to `key_file` (mode 0600). The key is written to
    /// a temporary file before the commit and renamed after it, so a crash
    /// leaves either no operator or a usable key file. Whether it made
    /// one (of several servers on one new database, one does).
    pub async fn bootstrap_operator(&self, key_file: &Path) -> Result<bool> {
        let tmp = key_file.with_extension("key.tmp");
        let has_principals = self.store.read(|tx| tx.principal_count()).await? > 0;
        if has_principals {
            if tmp.exists() && !key_file.exists() {
                std::fs::rename(&tmp, key_file).map_err(|e| io_error(key_file, e))?;
            }
            return Ok(false);
        }
        let _ = std::fs::remove_file(&tmp);
        let (key_id, api_key, hash) = api_key::issue();
        write_secret_file(&tmp, api_key.expose()).map_err(|e| io_error(&tmp, e))?;
        let keys = self.keys.clone();
        let created = self
            .store
            .write(move |conn| {
                // Checked again where it is acted on: several servers
                // starting at once on one empty PostgreSQL database all
                // saw no principals above, and one of them makes it.
                if conn.principal_count()? > 0 {
                    return Ok(false);
                }
                let now = now_ms();
                let who = NewPrincipalRow {
                    tenant: None,
                    name: "bootstrap-operator",
                    roles: &[Role::Operator],
                    cert_cn: None,
                };
                let id = insert_principal(conn, &keys, who, now)?;
                insert_api_key(conn, &keys, &id, &key_id, &hash, now, None)?;
                Ok(true)
            })
            .await;
        if !matches!(created, Ok(true)) {
            let _ = std::fs::remove_file(&tmp);
            return created;
        }
        std::fs::rename(&tmp, key_file).map_err(|e| io_error(key_file, e))?;
        self.auth_cache().key_made();
        Ok(true)
    }

    /// Checks an API key (`sbk_<id>_<secret>`) and returns its principal.
    /// Every failure gives the same answer, so the response tells an
    /// attacker nothing about which part was wrong.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal> {
        const INVALID: &str = "invalid API key";
        let (key_id, secret) = api_key::parse(bearer).ok_or(Error::Unauthenticated(INVALID))?;
        let presented = crypto::sha256(secret.as_bytes());
        let now = now_ms();
        let live = |expires_at: Option<i64>| expires_at.is_none_or(|t| t > now);
        // On storage shared with other servers, a key revoked or a
        // principal changed elsewhere must be refused at once: every call
        // reads its key row. (A cache validated by a generation read in
        // the same round trip would spare the read.)
        let shared = self.store.is_postgres();
        let cached = if shared {
            None
        } else {
            let mut cache = self.auth_cache();
            match cache.keys.get_mut(key_id) {
                Some(hit)
                    if crypto::ct_eq(&presented, &hit.secret_hash) && live(hit.expires_at) =>
                {
                    let touch = now - hit.last_touched >= TOUCH_EVERY_MS;
                    if touch {
                        hit.last_touched = now;
                    }
                    Some(Ok((hit.principal.clone(), touch)))
                }
                Some(_) => Some(Err(Error::Unauthenticated(INVALID))),
                None => None,
            }
        };
        if let Some(hit) = cached {
            let (principal, touch) = hit?;
            if touch {
                self.touch(key_id);
            }
            return Ok(principal);
        }
        if !shared
            && self
                .auth_cache()
                .unknown
                .get(key_id)
                .is_some_and(|at| at.elapsed() < UNKNOWN_KEY_TTL)
        {
            return Err(Error::Unauthenticated(INVALID));
        }
        let (id, keys) = (key_id.to_owned(), self.keys.clone());
        let found = self
            .store
            .read(move |c| integrity::api_key(c, &keys, &id))
            .await?;
        let Some((key, p)) = found else {
            if shared {
                return Err(Error::Unauthenticated(INVALID));
            }
            let mut cache = self.auth_cache();
            if cache.unknown.len() >= MAX_UNKNOWN_KEYS {
                cache.unknown.retain(|_, at| at.elapsed() < UNKNOWN_KEY_TTL);
            }
            if cache.unknown.len() < MAX_UNKNOWN_KEYS {
                cache
                    .unknown
                    .insert(key_id.to_owned(), std::time::Instant::now());
            }
            return Err(Error::Unauthenticated(INVALID));
        };
        if !crypto::ct_eq(&presented, &key.secret_hash)
            || key.revoked_at.is_some()
            || !live(key.expires_at)
        {
            return Err(Error::Unauthenticated(INVALID));
        }
        let roles = p
            .roles
            .split(',')
            .map(Role::parse)
            .collect::<Result<Vec<_>>>()
            .map_err(|_| Error::Internal(format!("principal {} has an unknown role", p.id)))?;
        let tenant = match p.tenant_id {
            Some(t) => Some(
                TenantId::parse(&t)
                    .map_err(|_| Error::Internal("stored tenant id is invalid".into()))?,
            ),
            None => None,
        };
        let principal = Principal {
            id: p.id,
            name: p.name,
            tenant,
            roles,
            cert_cn: p.cert_cn,
        };
        if !shared {
            self.auth_cache().admit(
                &key.key_id,
                CachedKey {
                    secret_hash: presented,
                    expires_at: key.expires_at,
                    principal: principal.clone(),
                    last_touched: now,
                },
            );
        }
        if key.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY_MS) {
            self.touch(&key.key_id);
        }
        Ok(principal)
    }

    /// Records that a key was used, in the background: bookkeeping, not a
    /// call, so it has no audit entry and its failure fails nothing.
    pub(super) fn touch(&self, key_id: &str) {
        let (store, id) = (self.store.clone(), key_id.to_owned());
        tokio::spawn(async move {
            if let Err(e) = store.write(move |c| c.api_key_touch(&id, now_ms())).await {
                tracing::debug!(error = %e, "recording an API key's last use failed");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(tenant: &str) -> CachedKey {
        CachedKey {
            secret_hash: [0; 32],
            expires_at: None,
            principal: Principal {
                id: "prn-1".into(),
                name: "p".into(),
                tenant: Some(TenantId::parse(tenant).unwrap()),
                roles: vec![Role::Reader],
                cert_cn: None,
            },
            last_touched: 0,
        }
    }

    // A verification that read the key before a revocation or tenant shred
    // committed, and caches it after: refused.
    #[test]
    fn fail_a_key_cached_after_its_revocation_or_tenant_shred() {
        let mut c = AuthCache::default();
        c.revoke("k1");
        c.admit("k1", cached("t"));
        assert!(!c.keys.contains_key("k1"));
        c.forget_tenant(&TenantId::parse("t").unwrap());
        c.admit("k2", cached("t"));
        assert!(!c.keys.contains_key("k2"));
        c.admit("k3", cached("u"));
        assert!(c.keys.contains_key("k3"));
    }

    #[test]
    fn the_key_cache_is_bounded_without_starting_over() {
        let mut c = AuthCache::default();
        for i in 0..MAX_CACHED_API_KEYS + 50 {
            c.admit(&format!("k{i}"), cached("t"));
        }
        assert_eq!(c.keys.len(), MAX_CACHED_API_KEYS);
    }
}

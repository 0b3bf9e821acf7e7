//! The key hierarchy below the root key: tenant KEKs and index keys
//! (wrapped by the current erasure epoch key, `epochs`), data keys
//! (wrapped by a tenant KEK), the vault-wide keys under the root (`roots`);
//! the AAD that binds each wrapped key and ciphertext to its identity; and
//! the caches of unwrapped keys.
//!
//! Cache invariant: once `forget_dek` or `forget_tenant` has run for a key,
//! the cache never holds it again. A read that fetched the wrapped key
//! before the shred committed cannot re-insert it afterwards, because the
//! forget leaves a tombstone that insertion checks under the same lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::crypto::{self, SecretKey, label};
use crate::erasure::EpochKeys;
use crate::error::{Error, Result};
use crate::ids::{SubjectId, TenantId};
use crate::rootkey::RootKeyProvider;
use crate::store::DekRow;
use crate::store::prelude::*;
use crate::tombstones::Tombstones;

pub mod aad;
mod epochs;
mod roots;

use roots::Roots;
pub use roots::{has_root_check, recorded_root_provider, root_generation, root_matches};

/// Unwrapped data keys kept in memory at most; past it, an arbitrary entry
/// is dropped (and zeroized) to make room.
const MAX_CACHED_DEKS: usize = 100_000;

/// Live tombstones of shredded tenants and retired KEK versions kept at
/// most (see `tombstones`).
const MAX_TOMBSTONES: usize = 10_000;

/// A subject's blind id: HMAC-SHA256 of the subject id under the tenant's
/// index key. Stable across KEK rotation.
pub type BlindId = [u8; 32];

struct Cache {
    keks: HashMap<(String, u32), Arc<SecretKey>>,
    index: HashMap<String, Arc<SecretKey>>,
    /// dek id -> (tenant, key)
    deks: HashMap<String, (String, Arc<SecretKey>)>,
    destroyed_deks: Tombstones<String>,
    destroyed_tenants: Tombstones<String>,
    retired_keks: Tombstones<(String, u32)>,
    audit: Option<Arc<SecretKey>>,
    state: Option<Arc<SecretKey>>,
    /// tenant -> minimum decryption version (0: none)
    min_versions: HashMap<String, u32>,
    /// (tenant, KEK version) -> when a call last used data under it, not
    /// yet written to the database (housekeeping flushes it).
    kek_use: HashMap<(String, u32), i64>,
    /// (tenant, KEK version) -> data keys wrapped under it not yet counted
    /// in the database (housekeeping adds them): a counter row every new
    /// subject of a tenant would update is a row every server's writes
    /// would fight over.
    kek_wraps: HashMap<(String, u32), u64>,
}

impl Default for Cache {
    fn default() -> Self {
        Cache {
            keks: HashMap::new(),
            index: HashMap::new(),
            deks: HashMap::new(),
            destroyed_deks: Tombstones::new(MAX_CACHED_DEKS),
            destroyed_tenants: Tombstones::new(MAX_TOMBSTONES),
            retired_keks: Tombstones::new(MAX_TOMBSTONES),
            audit: None,
            state: None,
            min_versions: HashMap::new(),
            kek_use: HashMap::new(),
            kek_wraps: HashMap::new(),
        }
    }
}

/// Keys of a new tenant, wrapped and ready to store.
pub struct NewTenantKeys {
    pub wrapped_index_key: Vec<u8>,
    pub wrapped_kek: Vec<u8>,
    /// The erasure epoch both are wrapped under (`None`: the root key).
    pub epoch: Option<u64>,
    pub kek_version: u32,
    pub dek: DekRow,
}

/// Unwraps, wraps and caches the keys below the root key.
pub struct Keyring {
    roots: std::sync::RwLock<Roots>,
    cache: Mutex<Cache>,
    /// The erasure epoch keys, once loaded (`None`: tenant keys are
    /// wrapped by the root key directly, as before epochs; library use).
    epochs: std::sync::RwLock<Option<EpochKeys>>,
    /// Storage is shared with other servers: state another server may
    /// change (the minimum decryption version) is read from the caller's
    /// transaction every time, never from memory.
    shared: std::sync::atomic::AtomicBool,
}

fn corrupt(what: String) -> Error {
    Error::Corrupt(format!(
        "{what} failed authentication: the stored bytes are corrupt or were moved, or the root key is not this vault's"
    ))
}

/// A fresh random key id with a readable prefix (`dek-…`, `prn-…`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(crypto::random_bytes::<16>()))
}

impl Keyring {
    pub fn new(root: Arc<dyn RootKeyProvider>) -> Self {
        Keyring {
            roots: std::sync::RwLock::new(Roots::new(root)),
            cache: Mutex::new(Cache::default()),
            epochs: std::sync::RwLock::new(None),
            shared: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Marks storage as shared with other servers (PostgreSQL).
    pub fn set_shared(&self, shared: bool) {
        self.shared
            .store(shared, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_shared(&self) -> bool {
        self.shared.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // maps stay consistent (every update is a single insert or remove).
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Generates a tenant's index key, KEK v1 and tenant-level data key.
    pub fn new_tenant_keys(&self, conn: &dyn Tx, tenant: &TenantId) -> Result<NewTenantKeys> {
        let t = tenant.as_str();
        let index_key = SecretKey::generate();
        let kek = SecretKey::generate();
        let (wrapped_index_key, epoch) =
            self.wrap_tenant_key(conn, label::WRAP_INDEX_KEY, &aad::index_key(t), &index_key)?;
        let (wrapped_kek, kek_epoch) =
            self.wrap_tenant_key(conn, label::WRAP_KEK, &aad::kek(t, 1), &kek)?;
        if kek_epoch != epoch {
            return Err(Error::Unavailable(
                "an erasure epoch began while a tenant was made; retry".into(),
            ));
        }
        let (dek, _) = self.new_dek_under(tenant, &[], 1, &kek);
        Ok(NewTenantKeys {
            wrapped_index_key,
            wrapped_kek,
            epoch,
            kek_version: 1,
            dek,
        })
    }

    fn new_dek_under(
        &self,
        tenant: &TenantId,
        owner: &[u8],
        kek_version: u32,
        kek: &SecretKey,
    ) -> (DekRow, SecretKey) {
        let id = new_id("dek");
        let dek = SecretKey::generate();
        let wrapped = crypto::wrap_key(
            kek,
            label::WRAP_DEK,
            &aad::dek(tenant.as_str(), owner, &id, kek_version),
            &dek,
        );
        let row = DekRow {
            id,
            tenant_id: tenant.as_str().to_owned(),
            owner: owner.to_vec(),
            kek_version,
            wrapped: Some(wrapped),
        };
        (row, dek)
    }

    /// A new data key for `owner`, wrapped under the tenant's current KEK.
    pub fn new_dek(
        &self,
        conn: &dyn Tx,
        tenant: &TenantId,
        owner: &[u8],
        kek_version: u32,
    ) -> Result<(DekRow, Arc<SecretKey>)> {
        let kek = self.kek(conn, tenant, kek_version)?;
        let (row, dek) = self.new_dek_under(tenant, owner, kek_version, &kek);
        // The use and the wrap, noted under one lock.
        let key = (tenant.as_str().to_owned(), kek_version);
        let mut cache = self.cache();
        cache.kek_use.insert(key.clone(), crate::now_ms());
        *cache.kek_wraps.entry(key).or_default() += 1;
        drop(cache);
        Ok((row, Arc::new(dek)))
    }

    // ----- erasure epochs ------------------------------------------------

    /// The tenant's blind-index key.
    pub fn index_key(&self, conn: &dyn Tx, tenant: &TenantId) -> Result<Arc<SecretKey>> {
        let t = tenant.as_str();
        if let Some(k) = self.cache().index.get(t) {
            return Ok(k.clone());
        }
        let wrapped = crate::integrity::tenant(conn, self, t)?
            .and_then(|row| row.wrapped_index_key)
            .ok_or_else(|| Error::NotFound(format!("tenant '{t}' not found")))?;
        let key = Arc::new(self.unwrap_tenant_key(
            conn,
            label::WRAP_INDEX_KEY,
            &aad::index_key(t),
            &wrapped,
            conn.index_epoch(t)?,
            || format!("the index key of tenant '{t}'"),
        )?);
        let mut cache = self.cache();
        if cache.destroyed_tenants.admits(&t.to_owned()) {
            cache.index.insert(t.to_owned(), key.clone());
        }
        Ok(key)
    }

    /// The subject's blind id in this tenant.
    pub fn blind_id(
        &self,
        conn: &dyn Tx,
        tenant: &TenantId,
        subject: &SubjectId,
    ) -> Result<BlindId> {
        let key = self.index_key(conn, tenant)?;
        Ok(crypto::hmac_sha256(&key, &[subject.expose().as_bytes()]))
    }

    /// Tenant KEK `version`, unwrapped by the root key.
    pub fn kek(&self, conn: &dyn Tx, tenant: &TenantId, version: u32) -> Result<Arc<SecretKey>> {
        let t = tenant.as_str();
        if let Some(k) = self.cache().keks.get(&(t.to_owned(), version)) {
            return Ok(k.clone());
        }
        let (wrapped, epoch) = conn.kek_get(t, version)?.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "key-encryption key v{version} of tenant '{t}' is destroyed"
            ))
        })?;
        let key = Arc::new(self.unwrap_tenant_key(
            conn,
            label::WRAP_KEK,
            &aad::kek(t, version),
            &wrapped,
            epoch,
            || format!("key-encryption key v{version} of tenant '{t}'"),
        )?);
        self.cache_kek(t, version, &key);
        Ok(key)
    }

    /// The unwrapped data key of `row` for a call, or `None` if it was
    /// destroyed. Refused if it is wrapped under a KEK version below the
    /// tenant's minimum decryption version, whether or not it is cached.
    /// Records the version's use.
    pub fn dek(
        &self,
        conn: &dyn Tx,
        tenant: &TenantId,
        row: &DekRow,
    ) -> Result<Option<Arc<SecretKey>>> {
        let min = self.min_decrypt_version(conn, tenant)?;
        if row.wrapped.is_some() && row.kek_version < min {
            return Err(Error::FailedPrecondition(format!(
                "data key {} is wrapped under key-encryption key v{} of tenant '{}', below the tenant's minimum decryption version v{min}; the rewrap job moves it to the current version (`strongbox key status` shows how many are left)",
                row.id,
                row.kek_version,
                tenant.as_str()
            )));
        }
        let key = self.dek_for_job(conn, tenant, row)?;
        if key.is_some() {
            self.note_kek_use(tenant.as_str(), row.kek_version);
        }
        Ok(key)
    }

    /// The tenant's minimum decryption version (0: none), cached.
    pub fn min_decrypt_version(&self, conn: &dyn Tx, tenant: &TenantId) -> Result<u32> {
        let t = tenant.as_str();
        let shared = self.is_shared();
        if !shared && let Some(v) = self.cache().min_versions.get(t) {
            return Ok(*v);
        }
        let v = crate::integrity::tenant(conn, self, t)?.map_or(0, |row| row.min_decrypt_version);
        if shared {
            return Ok(v);
        }
        // A setter racing this read wins: its value is inserted after its
        // commit, and this one only fills a gap.
        Ok(*self.cache().min_versions.entry(t.to_owned()).or_insert(v))
    }

    /// Makes a committed minimum decryption version take effect.
    pub fn set_min_decrypt_version(&self, tenant: &TenantId, version: u32) {
        self.cache()
            .min_versions
            .insert(tenant.as_str().to_owned(), version);
    }

    fn note_kek_use(&self, tenant: &str, version: u32) {
        self.cache()
            .kek_use
            .insert((tenant.to_owned(), version), crate::now_ms());
    }

    /// KEK uses not yet written to the database, for `tenant`: version -> time.
    pub fn pending_kek_use(&self, tenant: &str) -> HashMap<u32, i64> {
        self.cache()
            .kek_use
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, v), at)| (*v, *at))
            .collect()
    }

    /// Every KEK use not yet written, for housekeeping to write; they stay
    /// pending (and in `pending_kek_use`) until [`Keyring::kek_use_written`]
    /// says the write committed, so a status read meanwhile still sees them.
    pub fn unwritten_kek_use(&self) -> Vec<(String, u32, i64)> {
        self.cache()
            .kek_use
            .iter()
            .map(|((t, v), at)| (t.clone(), *v, *at))
            .collect()
    }

    /// Wraps under `tenant`'s KEK versions not yet counted in the
    /// database: version -> count. A wrap in a unit of work that then
    /// failed, or ran again, is counted too (the KEK did the work).
    pub fn pending_kek_wraps(&self, tenant: &str) -> HashMap<u32, u64> {
        self.cache()
            .kek_wraps
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, v), n)| (*v, *n))
            .collect()
    }

    /// Every wrap count not yet written, for housekeeping to add.
    pub fn unwritten_kek_wraps(&self) -> Vec<(String, u32, u64)> {
        self.cache()
            .kek_wraps
            .iter()
            .map(|((t, v), n)| (t.clone(), *v, *n))
            .collect()
    }

    /// Takes the counts `written` added off the pending ones (wraps made
    /// meanwhile stay pending).
    pub fn kek_wraps_written(&self, written: &[(String, u32, u64)]) {
        let mut cache = self.cache();
        for (t, v, n) in written {
            let key = (t.clone(), *v);
            if let Some(left) = cache.kek_wraps.get_mut(&key) {
                *left = left.saturating_sub(*n);
                if *left == 0 {
                    cache.kek_wraps.remove(&key);
                }
            }
        }
    }

    /// Forgets the uses `written` recorded, unless a later use replaced
    /// one meanwhile.
    pub fn kek_use_written(&self, written: &[(String, u32, i64)]) {
        let mut cache = self.cache();
        for (t, v, at) in written {
            let key = (t.clone(), *v);
            if cache.kek_use.get(&key) == Some(at) {
                cache.kek_use.remove(&key);
            }
        }
    }

    /// The unwrapped data key of `row`, or `None` if it was destroyed, for
    /// the jobs that move data keys forward (rewrap, re-encryption): they
    /// may still open keys below the minimum decryption version.
    pub fn dek_for_job(
        &self,
        conn: &dyn Tx,
        tenant: &TenantId,
        row: &DekRow,
    ) -> Result<Option<Arc<SecretKey>>> {
        // The row read in the caller's transaction is the truth; the cache
        // only saves the unwrap. A row that says destroyed wins over a
        // cached key, whatever the cache holds.
        let Some(wrapped) = &row.wrapped else {
            return Ok(None);
        };
        if row.tenant_id != tenant.as_str() {
            return Err(corrupt(format!("data key {}", row.id)));
        }
        if let Some((_, k)) = self.cache().deks.get(&row.id) {
            crate::metrics::get().key_cache(true);
            return Ok(Some(k.clone()));
        }
        crate::metrics::get().key_cache(false);
        let kek = self.kek(conn, tenant, row.kek_version)?;
        let key = Arc::new(
            crypto::unwrap_key(
                &kek,
                label::WRAP_DEK,
                &aad::dek(tenant.as_str(), &row.owner, &row.id, row.kek_version),
                wrapped,
            )
            .map_err(|_| corrupt(format!("data key {}", row.id)))?,
        );
        self.remember_dek(tenant, &row.id, &key);
        Ok(Some(key))
    }

    /// Caches a KEK version unless it (or its tenant) has been forgotten:
    /// a reader that unwrapped it before its retirement committed cannot
    /// put it back.
    fn cache_kek(&self, tenant: &str, version: u32, key: &Arc<SecretKey>) {
        let id = (tenant.to_owned(), version);
        let mut cache = self.cache();
        if cache.destroyed_tenants.admits(&id.0) && cache.retired_keks.admits(&id) {
            cache.keks.insert(id, key.clone());
        }
    }

    /// Caches a data key unless it (or its tenant) has been forgotten.
    pub fn remember_dek(&self, tenant: &TenantId, id: &str, key: &Arc<SecretKey>) {
        let mut cache = self.cache();
        if !cache.destroyed_deks.admits(&id.to_owned())
            || !cache.destroyed_tenants.admits(&tenant.as_str().to_owned())
        {
            return;
        }
        if cache.deks.len() >= MAX_CACHED_DEKS
            && let Some(evict) = cache.deks.keys().next().cloned()
        {
            cache.deks.remove(&evict);
        }
        cache
            .deks
            .insert(id.to_owned(), (tenant.as_str().to_owned(), key.clone()));
    }

    /// A new KEK for `tenant` at `version`, wrapped under the current
    /// erasure epoch (or the root key, without epochs), and that epoch.
    pub fn new_kek(
        &self,
        conn: &dyn Tx,
        tenant: &TenantId,
        version: u32,
    ) -> Result<(Vec<u8>, Option<u64>)> {
        self.wrap_tenant_key(
            conn,
            label::WRAP_KEK,
            &aad::kek(tenant.as_str(), version),
            &SecretKey::generate(),
        )
    }

    /// Rewraps data key `row` (wrapped under its KEK version) under KEK
    /// `to`; the data key itself, and so every record, stays as it is.
    pub fn rewrap_dek(
        &self,
        conn: &dyn Tx,
        tenant: &TenantId,
        row: &DekRow,
        to: u32,
    ) -> Result<Vec<u8>> {
        let t = tenant.as_str();
        let wrapped = row
            .wrapped
            .as_ref()
            .ok_or_else(|| Error::Internal(format!("data key {} is destroyed", row.id)))?;
        let old = self.kek(conn, tenant, row.kek_version)?;
        let new = self.kek(conn, tenant, to)?;
        let dek = crypto::unwrap_key(
            &old,
            label::WRAP_DEK,
            &aad::dek(t, &row.owner, &row.id, row.kek_version),
            wrapped,
        )
        .map_err(|_| corrupt(format!("data key {}", row.id)))?;
        Ok(crypto::wrap_key(
            &new,
            label::WRAP_DEK,
            &aad::dek(t, &row.owner, &row.id, to),
            &dek,
        ))
    }

    /// Drops a retired KEK version from the cache, for good.
    pub fn forget_kek(&self, tenant: &str, version: u32) {
        let id = (tenant.to_owned(), version);
        let mut cache = self.cache();
        cache.keks.remove(&id);
        cache.retired_keks.insert(id);
    }

    /// Drops a destroyed data key from the cache, for good.
    pub fn forget_dek(&self, id: &str) {
        let mut cache = self.cache();
        cache.deks.remove(id);
        cache.destroyed_deks.insert(id.to_owned());
    }

    /// Drops every cached key of a destroyed tenant, for good.
    pub fn forget_tenant(&self, tenant: &TenantId) {
        let t = tenant.as_str();
        let mut cache = self.cache();
        cache.deks.retain(|_, (owner, _)| owner != t);
        cache.keks.retain(|(owner, _), _| owner != t);
        cache.index.remove(t);
        cache.min_versions.remove(t);
        cache.kek_use.retain(|(owner, _), _| owner != t);
        cache.destroyed_tenants.insert(t.to_owned());
    }

    /// How many unwrapped keys of `tenant` the caches hold (for tests and
    /// status): KEKs, index key and data keys.
    pub fn cached_keys(&self, tenant: &TenantId) -> usize {
        let t = tenant.as_str();
        let cache = self.cache();
        cache.deks.values().filter(|(owner, _)| owner == t).count()
            + cache.keks.keys().filter(|(owner, _)| owner == t).count()
            + usize::from(cache.index.contains_key(t))
    }

    /// Whether the cache holds data key `id`.
    pub fn caches_dek(&self, id: &str) -> bool {
        self.cache().deks.contains_key(id)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn keyring() -> (tempfile::TempDir, Keyring) {
        let dir = tempfile::tempdir().unwrap();
        let root =
            crate::rootkey::KeyFileProvider::open_or_create(&dir.path().join("root.key")).unwrap();
        (dir, Keyring::new(Arc::new(root)))
    }

    // The races of a shred against a reader, driven step by step: the
    // reader unwrapped the key before the shred committed and caches it
    // after the forget ran.

    #[test]
    fn fail_a_kek_cached_after_its_retirement() {
        let (_dir, k) = keyring();
        let key = Arc::new(SecretKey::generate());
        k.forget_kek("t", 1);
        k.cache_kek("t", 1, &key);
        assert!(!k.cache().keks.contains_key(&("t".to_owned(), 1)));
        k.cache_kek("t", 2, &key);
        assert!(k.cache().keks.contains_key(&("t".to_owned(), 2)));
    }

    #[test]
    fn fail_keys_cached_after_their_tenant_was_shredded() {
        let (_dir, k) = keyring();
        let t = TenantId::parse("t").unwrap();
        let key = Arc::new(SecretKey::generate());
        k.forget_tenant(&t);
        k.cache_kek("t", 1, &key);
        k.remember_dek(&t, "dek-1", &key);
        assert_eq!(k.cached_keys(&t), 0);
    }

    #[test]
    fn fail_a_data_key_cached_after_its_shred() {
        let (_dir, k) = keyring();
        let t = TenantId::parse("t").unwrap();
        let key = Arc::new(SecretKey::generate());
        k.forget_dek("dek-1");
        k.remember_dek(&t, "dek-1", &key);
        assert!(!k.caches_dek("dek-1"));
    }
}

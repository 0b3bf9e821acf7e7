//! The key hierarchy below the root key: tenant KEKs and index keys (wrapped
//! by the root key), data keys (wrapped by a tenant KEK), the receipt key;
//! the AAD that binds each wrapped key and ciphertext to its identity; and
//! the caches of unwrapped keys.
//!
//! Cache invariant: once `forget_dek` or `forget_tenant` has run for a key,
//! the cache never holds it again. A read that fetched the wrapped key
//! before the shred committed cannot re-insert it afterwards, because the
//! forget leaves a tombstone that insertion checks under the same lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::store::prelude::*;

use crate::crypto::{self, SecretKey, label};
use crate::erasure::{self, EpochKeys};
use crate::error::{Error, Result};
use crate::ids::{SubjectId, TenantId};
use crate::rootkey::{RootKeyProvider, UnwrapError};
use crate::store::DekRow;
use crate::tombstones::Tombstones;

/// Unwrapped data keys kept in memory at most; past it, an arbitrary entry
/// is dropped (and zeroized) to make room.
const MAX_CACHED_DEKS: usize = 100_000;
/// Live tombstones of shredded tenants and retired KEK versions kept at
/// most (see `tombstones`).
const MAX_TOMBSTONES: usize = 10_000;

/// The `meta` row holding the receipt key wrapped by the root key.
const RECEIPT_KEY_META: &str = "receipt_key";
/// The `meta` row holding the audit key wrapped by the root key.
const AUDIT_KEY_META: &str = "audit_key";
/// The `meta` row holding the key that MACs security state (principals,
/// API keys, tenant state), wrapped by the root key.
const STATE_KEY_META: &str = "state_key";
/// The `meta` row holding the key that wraps the erasure epoch keys (in
/// their own file), wrapped by the root key.
const ERASURE_KEY_META: &str = "erasure_wrap_key";
/// The `meta` row holding a sealed check value that proves the root key.
const ROOT_CHECK_META: &str = "root_check";
/// Which provider holds the root key (its description, no key material),
/// so a server started with the wrong one can say where the key is.
const ROOT_PROVIDER_META: &str = "root_provider";

/// AAD layouts: every wrapped key and ciphertext is bound to who and what
/// it belongs to, so bytes copied to another row fail to open.
pub mod aad {
    use crate::crypto::encode_fields;

    pub fn kek(tenant: &str, version: u32) -> Vec<u8> {
        encode_fields(&[b"kek", tenant.as_bytes(), &version.to_be_bytes()])
    }

    pub fn index_key(tenant: &str) -> Vec<u8> {
        encode_fields(&[b"index-key", tenant.as_bytes()])
    }

    pub fn dek(tenant: &str, owner: &[u8], dek_id: &str, kek_version: u32) -> Vec<u8> {
        encode_fields(&[
            b"dek",
            tenant.as_bytes(),
            owner,
            dek_id.as_bytes(),
            &kek_version.to_be_bytes(),
        ])
    }

    /// A record's identity: tenant, owner (subject blind id or empty),
    /// category, key, version, content type and data key id.
    pub fn record(
        tenant: &str,
        owner: &[u8],
        category: &str,
        key: &str,
        version: u64,
        content_type: &str,
        dek_id: &str,
    ) -> Vec<u8> {
        encode_fields(&[
            b"record",
            tenant.as_bytes(),
            owner,
            category.as_bytes(),
            key.as_bytes(),
            &version.to_be_bytes(),
            content_type.as_bytes(),
            dek_id.as_bytes(),
        ])
    }

    pub fn subject_id(tenant: &str, blind: &[u8], dek_id: &str) -> Vec<u8> {
        encode_fields(&[b"subject-id", tenant.as_bytes(), blind, dek_id.as_bytes()])
    }

    pub fn audit_key() -> Vec<u8> {
        encode_fields(&[b"audit-key"])
    }

    pub fn receipt_key() -> Vec<u8> {
        encode_fields(&[b"receipt-key"])
    }

    pub fn state_key() -> Vec<u8> {
        encode_fields(&[b"state-key"])
    }

    pub fn erasure_wrap_key() -> Vec<u8> {
        encode_fields(&[b"erasure-wrap-key"])
    }

    pub fn root_check() -> Vec<u8> {
        encode_fields(&[b"root-check"])
    }
}

/// A `meta` row name, the key's wrapping label, and its AAD.
type VaultKey = (&'static str, &'static str, fn() -> Vec<u8>);

/// The vault-wide keys held directly under the root key in `meta`, with
/// their wrapping label and AAD: the one list that key creation
/// (`ensure_vault_keys`) and root rotation (`rewrap_root_keys`) both walk,
/// so a key added here is made and rotated alike.
const VAULT_KEYS: [VaultKey; 4] = [
    (RECEIPT_KEY_META, label::WRAP_RECEIPT_KEY, aad::receipt_key),
    (AUDIT_KEY_META, label::WRAP_AUDIT_KEY, aad::audit_key),
    (STATE_KEY_META, label::WRAP_STATE_KEY, aad::state_key),
    (
        ERASURE_KEY_META,
        label::WRAP_ERASURE_KEY,
        aad::erasure_wrap_key,
    ),
];

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

/// The root key in use, and during and after a root rotation the one
/// before it (a reader whose snapshot predates the rotation still holds
/// keys wrapped under it).
struct Roots {
    current: Arc<dyn RootKeyProvider>,
    previous: Option<Arc<dyn RootKeyProvider>>,
}

/// Unwraps, wraps and caches the keys below the root key.
pub struct Keyring {
    roots: std::sync::RwLock<Roots>,
    cache: Mutex<Cache>,
    /// The erasure epoch keys, once loaded (`None`: tenant keys are
    /// wrapped by the root key directly, as before epochs; library use).
    epochs: std::sync::RwLock<Option<EpochKeys>>,
}

fn corrupt(what: String) -> Error {
    Error::Corrupt(format!(
        "{what} failed authentication: the stored bytes are corrupt or were moved, or the root key is not this vault's"
    ))
}

/// Whether `root` opens the database's root check value (a database with
/// none yet matches any root key).
pub fn root_matches(conn: &dyn Tx, root: &dyn RootKeyProvider) -> Result<bool> {
    let Some(sealed) = conn.meta_get(ROOT_CHECK_META)? else {
        return Ok(true);
    };
    match root.unwrap(label::ROOT_CHECK, &aad::root_check(), &sealed) {
        Ok(_) => Ok(true),
        Err(UnwrapError::NotAuthentic) => Ok(false),
        Err(e) => Err(e.into_error(|| format!("the root check value with {}", root.describe()))),
    }
}

/// The provider the database records as holding its root key, if any.
pub fn recorded_root_provider(conn: &dyn Tx) -> Result<Option<String>> {
    Ok(conn
        .meta_get(ROOT_PROVIDER_META)?
        .map(|d| String::from_utf8_lossy(&d).into_owned()))
}

/// Whether the database already records a root key (a vault in use).
pub fn has_root_check(conn: &dyn Tx) -> Result<bool> {
    Ok(conn.meta_get(ROOT_CHECK_META)?.is_some())
}

/// A fresh random key id with a readable prefix (`dek-…`, `prn-…`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(crypto::random_bytes::<16>()))
}

impl Keyring {
    pub fn new(root: Arc<dyn RootKeyProvider>) -> Self {
        Keyring {
            roots: std::sync::RwLock::new(Roots {
                current: root,
                previous: None,
            }),
            cache: Mutex::new(Cache::default()),
            epochs: std::sync::RwLock::new(None),
        }
    }

    /// The root-key provider new wraps use.
    pub fn root(&self) -> Arc<dyn RootKeyProvider> {
        self.roots
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .current
            .clone()
    }

    /// Unwraps `what` under the current root key, or the previous one.
    fn root_unwrap(
        &self,
        label: &str,
        aad: &[u8],
        wrapped: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<SecretKey> {
        let roots = self.roots.read().unwrap_or_else(|p| p.into_inner());
        let first = match roots.current.unwrap(label, aad, wrapped) {
            Ok(k) => return Ok(k),
            Err(e) => e,
        };
        let err = match roots
            .previous
            .as_ref()
            .map(|p| p.unwrap(label, aad, wrapped))
        {
            Some(Ok(k)) => return Ok(k),
            // A provider that could not answer is the news, not the other's "no".
            Some(Err(second @ UnwrapError::Unavailable(_))) => second,
            _ => first,
        };
        Err(err.into_error(what))
    }

    /// Makes `next` the root key new wraps use, keeping the current one
    /// for unwraps; returns the one it replaced.
    pub fn swap_root(&self, next: Arc<dyn RootKeyProvider>) -> Arc<dyn RootKeyProvider> {
        let mut roots = self.roots.write().unwrap_or_else(|p| p.into_inner());
        let old = std::mem::replace(&mut roots.current, next);
        roots.previous = Some(old.clone());
        old
    }

    /// Forgets the previous root key once no reader can still need it.
    /// An HSM destroys the old key object here.
    pub fn forget_previous_root(&self) -> Result<()> {
        let previous = self
            .roots
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .previous
            .take();
        match previous {
            Some(old) => old.retire(),
            None => Ok(()),
        }
    }

    /// Undoes [`Keyring::swap_root`] (the rotation did not commit).
    pub fn restore_root(&self, old: Arc<dyn RootKeyProvider>) {
        let mut roots = self.roots.write().unwrap_or_else(|p| p.into_inner());
        roots.current = old;
        roots.previous = None;
    }

    /// Rewraps every key held directly under the root key — the root check
    /// value, the receipt and audit keys, every tenant's index key and live
    /// KEK versions — from `old` to `new`, in the caller's transaction.
    /// Returns how many it rewrapped.
    pub fn rewrap_root_keys(
        &self,
        conn: &dyn Tx,
        old: &dyn RootKeyProvider,
        new: &dyn RootKeyProvider,
    ) -> Result<usize> {
        let move_key = |label: &str, aad: &[u8], wrapped: &[u8], what: &str| -> Result<Vec<u8>> {
            let key = old
                .unwrap(label, aad, wrapped)
                .map_err(|e| e.into_error(|| what.to_owned()))?;
            new.wrap(label, aad, &key)
        };
        conn.meta_put(ROOT_PROVIDER_META, new.describe().as_bytes())?;
        let mut n = 0;
        let check = (
            ROOT_CHECK_META,
            label::ROOT_CHECK,
            aad::root_check as fn() -> _,
        );
        for (meta, label, aad) in std::iter::once(check).chain(VAULT_KEYS) {
            if let Some(w) = conn.meta_get(meta)? {
                conn.meta_put(meta, &move_key(label, &aad(), &w, meta)?)?;
                n += 1;
            }
        }
        for (tenant, wrapped) in conn.index_keys()? {
            let w = move_key(
                label::WRAP_INDEX_KEY,
                &aad::index_key(&tenant),
                &wrapped,
                "an index key",
            )?;
            conn.set_index_key(&tenant, &w)?;
            n += 1;
        }
        for (tenant, version, wrapped) in conn.live_keks()? {
            let w = move_key(
                label::WRAP_KEK,
                &aad::kek(&tenant, version),
                &wrapped,
                "a tenant KEK",
            )?;
            conn.set_kek(&tenant, version, &w)?;
            n += 1;
        }
        Ok(n)
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // maps stay consistent (every update is a single insert or remove).
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Describes the root-key provider (no key material).
    pub fn root_description(&self) -> String {
        self.root().describe()
    }

    /// Checks that the root key is the one this database was made with,
    /// recording a check value on first use.
    pub fn check_root(&self, conn: &dyn Tx) -> Result<()> {
        match conn.meta_get(ROOT_CHECK_META)? {
            Some(sealed) => self
                .root()
                .unwrap(label::ROOT_CHECK, &aad::root_check(), &sealed)
                .map(drop)
                .map_err(|e| {
                    if let UnwrapError::Unavailable(_) = e {
                        return e.into_error(|| "the root check value".into());
                    }
                    let recorded = recorded_root_provider(conn)
                        .ok()
                        .flatten()
                        .map(|d| format!(" (the vault records its root key as held by {d})"))
                        .unwrap_or_default();
                    Error::FailedPrecondition(format!(
                        "the root key from {} is not the one this vault's data is wrapped under{recorded}",
                        self.root().describe()
                    ))
                }),
            None => {
                let check = self.root().wrap(
                    label::ROOT_CHECK,
                    &aad::root_check(),
                    &SecretKey::generate(),
                )?;
                conn.meta_put(ROOT_CHECK_META, &check)?;
                conn.meta_put(ROOT_PROVIDER_META, self.root().describe().as_bytes())
            }
        }
    }

    /// Makes the vault-wide keys held under the root key (receipt key,
    /// audit key) if the vault has none yet.
    pub fn ensure_vault_keys(&self, conn: &dyn Tx) -> Result<()> {
        for (meta, label, aad) in VAULT_KEYS {
            if conn.meta_get(meta)?.is_none() {
                let wrapped = self.root().wrap(label, &aad(), &SecretKey::generate())?;
                conn.meta_put(meta, &wrapped)?;
            }
        }
        Ok(())
    }

    /// The key of the audit MAC chain; unwrapped once, then cached.
    pub fn audit_key(&self, conn: &dyn Tx) -> Result<Arc<SecretKey>> {
        if let Some(k) = &self.cache().audit {
            return Ok(k.clone());
        }
        let wrapped = conn
            .meta_get(AUDIT_KEY_META)?
            .ok_or_else(|| Error::Internal("the audit key is missing".into()))?;
        let key = Arc::new(self.root_unwrap(
            label::WRAP_AUDIT_KEY,
            &aad::audit_key(),
            &wrapped,
            || "the audit key".into(),
        )?);
        self.cache().audit = Some(key.clone());
        Ok(key)
    }

    /// The key that MACs security state rows; unwrapped once, then cached.
    pub fn state_key(&self, conn: &dyn Tx) -> Result<Arc<SecretKey>> {
        if let Some(k) = &self.cache().state {
            return Ok(k.clone());
        }
        let wrapped = conn
            .meta_get(STATE_KEY_META)?
            .ok_or_else(|| Error::Internal("the state key is missing".into()))?;
        let key = Arc::new(self.root_unwrap(
            label::WRAP_STATE_KEY,
            &aad::state_key(),
            &wrapped,
            || "the state key".into(),
        )?);
        self.cache().state = Some(key.clone());
        Ok(key)
    }

    /// The key that MACs deletion receipts.
    pub fn receipt_key(&self, conn: &dyn Tx) -> Result<SecretKey> {
        let wrapped = conn
            .meta_get(RECEIPT_KEY_META)?
            .ok_or_else(|| Error::Internal("the receipt key is missing".into()))?;
        self.root_unwrap(
            label::WRAP_RECEIPT_KEY,
            &aad::receipt_key(),
            &wrapped,
            || "the receipt key".into(),
        )
    }

    /// Generates a tenant's index key, KEK v1 and tenant-level data key.
    pub fn new_tenant_keys(&self, tenant: &TenantId) -> Result<NewTenantKeys> {
        let t = tenant.as_str();
        let index_key = SecretKey::generate();
        let kek = SecretKey::generate();
        let (wrapped_index_key, epoch) =
            self.wrap_tenant_key(label::WRAP_INDEX_KEY, &aad::index_key(t), &index_key)?;
        let (wrapped_kek, kek_epoch) =
            self.wrap_tenant_key(label::WRAP_KEK, &aad::kek(t, 1), &kek)?;
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
        self.note_kek_use(tenant.as_str(), kek_version);
        Ok((row, Arc::new(dek)))
    }

    // ----- erasure epochs ------------------------------------------------

    /// The key that wraps the erasure epoch keys in their file.
    pub fn erasure_wrap_key(&self, conn: &dyn Tx) -> Result<SecretKey> {
        let wrapped = conn
            .meta_get(ERASURE_KEY_META)?
            .ok_or_else(|| Error::Internal("the erasure wrapping key is missing".into()))?;
        self.root_unwrap(
            label::WRAP_ERASURE_KEY,
            &aad::erasure_wrap_key(),
            &wrapped,
            || "the erasure wrapping key".into(),
        )
    }

    /// Uses `keys` for tenant keys from now on.
    pub fn set_epochs(&self, keys: EpochKeys) {
        *self.epochs.write().unwrap_or_else(|p| p.into_inner()) = Some(keys);
    }

    /// Runs `f` on the epoch keys (which must be loaded).
    pub fn with_epochs<T>(&self, f: impl FnOnce(&mut EpochKeys) -> Result<T>) -> Result<T> {
        let mut epochs = self.epochs.write().unwrap_or_else(|p| p.into_inner());
        let keys = epochs
            .as_mut()
            .ok_or_else(|| Error::Internal("erasure epochs are not loaded".into()))?;
        f(keys)
    }

    /// The epochs held, oldest first, with when each was made (none
    /// without epochs).
    pub fn epochs(&self) -> Vec<(u64, i64)> {
        self.epochs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(EpochKeys::epochs)
            .unwrap_or_default()
    }

    /// Wraps a tenant key (a KEK or index key whose identity is `base`)
    /// under the current erasure epoch, or the root key without epochs.
    fn wrap_tenant_key(
        &self,
        label: &str,
        base: &[u8],
        key: &SecretKey,
    ) -> Result<(Vec<u8>, Option<u64>)> {
        let current = self
            .epochs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|e| e.current().map(|(n, _)| (n, e.key(n))));
        match current {
            Some((n, Some(epoch_key))) => Ok((
                crypto::wrap_key(&epoch_key, label, &erasure::wrapped_aad(base, n), key),
                Some(n),
            )),
            _ => Ok((self.root().wrap(label, base, key)?, None)),
        }
    }

    /// Unwraps a tenant key wrapped under erasure epoch `epoch`, or the
    /// root key when `None`.
    fn unwrap_tenant_key(
        &self,
        label: &str,
        base: &[u8],
        wrapped: &[u8],
        epoch: Option<u64>,
        what: impl FnOnce() -> String,
    ) -> Result<SecretKey> {
        let Some(n) = epoch else {
            return self.root_unwrap(label, base, wrapped, what);
        };
        let key = self
            .epochs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|e| e.key(n));
        let what = what();
        let key = key.ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "{what} is wrapped under erasure epoch {n}, whose key is not in the erasure keys file (destroyed after erasure_window, or the file is not this vault's)"
            ))
        })?;
        crypto::unwrap_key(&key, label, &erasure::wrapped_aad(base, n), wrapped)
            .map_err(|_| corrupt(what))
    }

    /// Rewraps up to `limit` live tenant keys not yet under epoch `target`
    /// under it, in the caller's transaction; returns how many.
    pub fn rewrap_into_epoch(&self, conn: &dyn Tx, target: u64, limit: usize) -> Result<usize> {
        let target_key = self
            .epochs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .and_then(|e| e.key(target))
            .ok_or_else(|| Error::Internal(format!("erasure epoch {target} has no key")))?;
        let rows = conn.tenant_keys_outside_epoch(target, limit)?;
        for row in &rows {
            let (label, base, what) = match row.kek_version {
                Some(v) => (
                    label::WRAP_KEK,
                    aad::kek(&row.tenant, v),
                    format!("key-encryption key v{v} of tenant '{}'", row.tenant),
                ),
                None => (
                    label::WRAP_INDEX_KEY,
                    aad::index_key(&row.tenant),
                    format!("the index key of tenant '{}'", row.tenant),
                ),
            };
            let key = self.unwrap_tenant_key(label, &base, &row.wrapped, row.epoch, || what)?;
            let wrapped = crypto::wrap_key(
                &target_key,
                label,
                &erasure::wrapped_aad(&base, target),
                &key,
            );
            conn.set_tenant_key_wrap(&row.tenant, row.kek_version, &wrapped, Some(target))?;
        }
        Ok(rows.len())
    }

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
        if let Some(v) = self.cache().min_versions.get(t) {
            return Ok(*v);
        }
        let v = crate::integrity::tenant(conn, self, t)?.map_or(0, |row| row.min_decrypt_version);
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

    /// Takes every KEK use not yet written, for housekeeping to write.
    pub fn take_kek_use(&self) -> Vec<(String, u32, i64)> {
        self.cache()
            .kek_use
            .drain()
            .map(|((t, v), at)| (t, v, at))
            .collect()
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
    pub fn new_kek(&self, tenant: &TenantId, version: u32) -> Result<(Vec<u8>, Option<u64>)> {
        self.wrap_tenant_key(
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

//! The root key and the vault-wide keys held directly under it in `meta`
//! (receipt, audit, state and erasure-wrapping keys): the check that the
//! configured root key is the vault's, and root rotation.

use std::sync::Arc;

use super::*;
use crate::crypto::{SecretKey, label};
use crate::error::{Error, Result};
use crate::rootkey::{RootKeyProvider, UnwrapError};

/// The `meta` row holding the receipt key wrapped by the root key.
pub(super) const RECEIPT_KEY_META: &str = "receipt_key";

/// The `meta` row holding the audit key wrapped by the root key.
pub(super) const AUDIT_KEY_META: &str = "audit_key";

/// The `meta` row holding the key that MACs security state (principals,
/// API keys, tenant state), wrapped by the root key.
pub(super) const STATE_KEY_META: &str = "state_key";

/// The `meta` row holding the key that wraps the erasure epoch keys (in
/// their own file), wrapped by the root key.
pub(super) const ERASURE_KEY_META: &str = "erasure_wrap_key";

/// The `meta` row holding a sealed check value that proves the root key.
pub(super) const ROOT_CHECK_META: &str = "root_check";

/// Which provider holds the root key (its description, no key material),
/// so a server started with the wrong one can say where the key is.
pub(super) const ROOT_PROVIDER_META: &str = "root_provider";

/// A `meta` row name, the key's wrapping label, and its AAD.
pub(super) type VaultKey = (&'static str, &'static str, fn() -> Vec<u8>);

/// The vault-wide keys held directly under the root key in `meta`, with
/// their wrapping label and AAD: the one list that key creation
/// (`ensure_vault_keys`) and root rotation (`rewrap_root_keys`) both walk,
/// so a key added here is made and rotated alike.
pub(super) const VAULT_KEYS: [VaultKey; 4] = [
    (RECEIPT_KEY_META, label::WRAP_RECEIPT_KEY, aad::receipt_key),
    (AUDIT_KEY_META, label::WRAP_AUDIT_KEY, aad::audit_key),
    (STATE_KEY_META, label::WRAP_STATE_KEY, aad::state_key),
    (
        ERASURE_KEY_META,
        label::WRAP_ERASURE_KEY,
        aad::erasure_wrap_key,
    ),
];

/// The `meta` row holding the vault's root generation: how many times its
/// root key has been replaced (8 bytes, big-endian; absent: 0). A root
/// rotation raises it in the transaction that rewraps; every wrap under
/// the root reads it in its own transaction first, so a server that has
/// not yet moved to the new root never wraps under the old one.
pub(super) const ROOT_GENERATION_META: &str = "root_generation";

/// The root key in use, and during and after a root rotation the one
/// before it (a reader whose snapshot predates the rotation still holds
/// keys wrapped under it).
pub(super) struct Roots {
    pub(super) current: Arc<dyn RootKeyProvider>,
    pub(super) previous: Option<Arc<dyn RootKeyProvider>>,
    /// The vault's root generation `current` belongs to.
    pub(super) generation: u64,
    /// Whether `previous` was replaced by a rotation on this server, which
    /// retires it (an HSM destroys it), or by following another server's
    /// rotation, after which it is only dropped from memory: and when.
    pub(super) followed_at: Option<std::time::Instant>,
}

impl Roots {
    pub(super) fn new(current: Arc<dyn RootKeyProvider>) -> Roots {
        Roots {
            current,
            previous: None,
            generation: 0,
            followed_at: None,
        }
    }
}

/// The vault's root generation, in the caller's transaction.
pub fn root_generation(conn: &dyn Tx) -> Result<u64> {
    match conn.meta_get(ROOT_GENERATION_META)? {
        None => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| Error::Corrupt("the root generation row is not 8 bytes".into())),
    }
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

impl Keyring {
    /// The root-key provider new wraps use.
    pub fn root(&self) -> Arc<dyn RootKeyProvider> {
        self.roots().current.clone()
    }

    /// The vault's root generation this server's root key belongs to.
    pub fn root_generation(&self) -> u64 {
        self.roots().generation
    }

    fn roots(&self) -> std::sync::RwLockReadGuard<'_, Roots> {
        self.roots.read().unwrap_or_else(|p| p.into_inner())
    }

    fn roots_mut(&self) -> std::sync::RwLockWriteGuard<'_, Roots> {
        self.roots.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves this server to the root key the vault is wrapped under now,
    /// when another server sharing the database rotated it: if the root
    /// generation in the caller's transaction is newer than this server's,
    /// opens the provider's source afresh (the key file, the token) and
    /// takes the key that opens the root check value, keeping the one it
    /// replaces for unwraps a while. Whether it moved. UNAVAILABLE when the
    /// source does not hold the new key (a key file not yet copied here).
    pub fn follow_root(&self, conn: &dyn Tx) -> Result<bool> {
        let stored = root_generation(conn)?;
        let (ours, current) = {
            let roots = self.roots();
            (roots.generation, roots.current.clone())
        };
        if stored <= ours {
            return Ok(false);
        }
        let mut found = None;
        if root_matches(conn, &*current)? {
            found = Some(current.clone());
        } else {
            for candidate in current.candidates()? {
                if root_matches(conn, &*candidate)? {
                    found = Some(candidate);
                    break;
                }
            }
        }
        let next = found.ok_or_else(|| {
            Error::Unavailable(format!(
                "the vault's root key was rotated by another server (root generation {stored}; this server has {ours}), and {} does not hold the new root key: give this server the same root key as the others (docs/runbooks/root-key-rotation.md)",
                current.describe()
            ))
        })?;
        let mut roots = self.roots_mut();
        if roots.generation >= stored {
            return Ok(false);
        }
        if !Arc::ptr_eq(&roots.current, &next) {
            let old = std::mem::replace(&mut roots.current, next);
            roots.previous = Some(old);
            roots.followed_at = Some(std::time::Instant::now());
        }
        roots.generation = stored;
        tracing::info!(
            generation = stored,
            root = %roots.current.describe(),
            "moved to the root key another server rotated to"
        );
        Ok(true)
    }

    /// Wraps `key` under the current root key, after moving to the
    /// vault's current root generation (in the caller's transaction).
    pub(super) fn root_wrap(
        &self,
        conn: &dyn Tx,
        label: &str,
        aad: &[u8],
        key: &SecretKey,
    ) -> Result<Vec<u8>> {
        self.follow_root(conn)?;
        self.root().wrap(label, aad, key)
    }

    /// Unwraps `what` under the current root key, or the previous one;
    /// when neither opens it, moves to the vault's current root generation
    /// (another server's rotation) and tries once more.
    pub(super) fn root_unwrap(
        &self,
        conn: &dyn Tx,
        label: &str,
        aad: &[u8],
        wrapped: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<SecretKey> {
        match self.unwrap_under_roots(label, aad, wrapped) {
            Ok(k) => Ok(k),
            Err(UnwrapError::NotAuthentic) if self.follow_root(conn)? => self
                .unwrap_under_roots(label, aad, wrapped)
                .map_err(|e| e.into_error(what)),
            Err(e) => Err(e.into_error(what)),
        }
    }

    fn unwrap_under_roots(
        &self,
        label: &str,
        aad: &[u8],
        wrapped: &[u8],
    ) -> Result<SecretKey, UnwrapError> {
        let roots = self.roots();
        let first = match roots.current.unwrap(label, aad, wrapped) {
            Ok(k) => return Ok(k),
            Err(e) => e,
        };
        match roots
            .previous
            .as_ref()
            .map(|p| p.unwrap(label, aad, wrapped))
        {
            Some(Ok(k)) => Ok(k),
            // A provider that could not answer is the news, not the other's "no".
            Some(Err(second @ UnwrapError::Unavailable(_))) => Err(second),
            _ => Err(first),
        }
    }

    /// Makes `next` the root key of generation `generation` (a rotation on
    /// this server, in the unit that rewraps), keeping `old` for unwraps
    /// until [`Keyring::forget_previous_root`] retires it. Safe to repeat
    /// when the unit runs again.
    pub fn install_root(
        &self,
        old: Arc<dyn RootKeyProvider>,
        next: Arc<dyn RootKeyProvider>,
        generation: u64,
    ) {
        let mut roots = self.roots_mut();
        roots.current = next;
        roots.previous = Some(old);
        roots.generation = generation;
        roots.followed_at = None;
    }

    /// Forgets the previous root key once no reader can still need it,
    /// retiring it (an HSM destroys the key object) if a rotation on this
    /// server replaced it.
    pub fn forget_previous_root(&self) -> Result<()> {
        let (previous, rotated_here) = {
            let mut roots = self.roots_mut();
            let rotated_here = roots.followed_at.is_none();
            (roots.previous.take(), rotated_here)
        };
        match previous {
            Some(old) if rotated_here => old.retire(),
            _ => Ok(()),
        }
    }

    /// Drops from memory a root key this server replaced by following
    /// another server's rotation, once `after` has passed since (the
    /// rotating server retires it).
    pub fn forget_followed_root(&self, after: std::time::Duration) {
        let mut roots = self.roots_mut();
        if roots.followed_at.is_some_and(|t| t.elapsed() >= after) {
            roots.previous = None;
            roots.followed_at = None;
        }
    }

    /// Undoes [`Keyring::install_root`] (the rotation did not commit).
    pub fn restore_root(&self, old: Arc<dyn RootKeyProvider>, generation: u64) {
        let mut roots = self.roots_mut();
        roots.current = old;
        roots.previous = None;
        roots.generation = generation;
        roots.followed_at = None;
    }

    /// Rewraps every key held directly under the root key — the root check
    /// value, the receipt and audit keys, every tenant's index key and live
    /// KEK versions — from `old` to `new`, in the caller's transaction,
    /// and raises the root generation. Returns how many keys it rewrapped,
    /// and the new generation.
    pub fn rewrap_root_keys(
        &self,
        conn: &dyn Tx,
        old: &dyn RootKeyProvider,
        new: &dyn RootKeyProvider,
    ) -> Result<(usize, u64)> {
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
        let generation = root_generation(conn)? + 1;
        conn.meta_put(ROOT_GENERATION_META, &generation.to_be_bytes())?;
        Ok((n, generation))
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
                .map(|_| ())
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
                })
                .and_then(|()| {
                    self.roots_mut().generation = root_generation(conn)?;
                    Ok(())
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
                let wrapped = self.root_wrap(conn, label, &aad(), &SecretKey::generate())?;
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
            conn,
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
            conn,
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
            conn,
            label::WRAP_RECEIPT_KEY,
            &aad::receipt_key(),
            &wrapped,
            || "the receipt key".into(),
        )
    }

    /// The key that wraps the erasure epoch keys in their file.
    pub fn erasure_wrap_key(&self, conn: &dyn Tx) -> Result<SecretKey> {
        let wrapped = conn
            .meta_get(ERASURE_KEY_META)?
            .ok_or_else(|| Error::Internal("the erasure wrapping key is missing".into()))?;
        self.root_unwrap(
            conn,
            label::WRAP_ERASURE_KEY,
            &aad::erasure_wrap_key(),
            &wrapped,
            || "the erasure wrapping key".into(),
        )
    }
}

//! Erasure epochs: tenant key-encryption keys and index keys wrapped under
//! the current epoch key (or, without epochs, the root key), and rewrapped
//! into a newer epoch.

use super::*;
use crate::crypto::{self, SecretKey, label};
use crate::erasure::{self, EpochKeys};
use crate::error::{Error, Result};

impl Keyring {
    /// Uses `keys` for tenant keys from now on.
    pub fn set_epochs(&self, keys: EpochKeys) {
        *self.epochs.write().unwrap_or_else(|p| p.into_inner()) = Some(keys);
    }

    /// Reads the epoch keys file again, as another server sharing it may
    /// have changed it (nothing to do before epochs are loaded).
    pub fn reload_epochs(&self, conn: &dyn Tx) -> Result<()> {
        let path = match self
            .epochs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            Some(e) => e.path().to_owned(),
            None => return Ok(()),
        };
        let wrap = self.erasure_wrap_key(conn)?;
        self.set_epochs(EpochKeys::load(&path, &wrap)?);
        Ok(())
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
    pub(super) fn wrap_tenant_key(
        &self,
        conn: &dyn Tx,
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
            _ => Ok((self.root_wrap(conn, label, base, key)?, None)),
        }
    }

    /// Unwraps a tenant key wrapped under erasure epoch `epoch`, or the
    /// root key when `None`.
    pub(super) fn unwrap_tenant_key(
        &self,
        conn: &dyn Tx,
        label: &str,
        base: &[u8],
        wrapped: &[u8],
        epoch: Option<u64>,
        what: impl FnOnce() -> String,
    ) -> Result<SecretKey> {
        let Some(n) = epoch else {
            return self.root_unwrap(conn, label, base, wrapped, what);
        };
        let held = |keys: &Self| {
            keys.epochs
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .and_then(|e| e.key(n))
        };
        // An epoch this server has not seen was made by another server
        // sharing the file: read the file again.
        let key = match held(self) {
            Some(k) => Some(k),
            None => {
                self.reload_epochs(conn)?;
                held(self)
            }
        };
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
            let key =
                self.unwrap_tenant_key(conn, label, &base, &row.wrapped, row.epoch, || what)?;
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
}

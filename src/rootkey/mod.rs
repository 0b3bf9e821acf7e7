//! Root-key providers: the top of the key hierarchy. A provider wraps and
//! unwraps the keys held directly under the root key (tenant KEKs, tenant
//! index keys, the receipt key) and never hands out the root key itself, so
//! the HSM provider ([`pkcs11`]) does every wrap inside the device.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use zeroize::Zeroizing;

use crate::crypto::{self, CryptoError, KEY_LEN, SecretKey};
use crate::error::{Error, Result};

pub mod pkcs11;

/// Why an unwrap under the root key failed.
#[derive(Debug)]
pub enum UnwrapError {
    /// The wrapped bytes do not authenticate under this root key: another
    /// root key, or moved or damaged bytes.
    NotAuthentic,
    /// The provider could not answer (an HSM down, a session lost): says
    /// nothing about the bytes.
    Unavailable(String),
}

impl From<CryptoError> for UnwrapError {
    fn from(_: CryptoError) -> Self {
        UnwrapError::NotAuthentic
    }
}

impl UnwrapError {
    /// The vault's error for a failed unwrap of `what`.
    pub fn into_error(self, what: impl FnOnce() -> String) -> Error {
        match self {
            UnwrapError::NotAuthentic => Error::Corrupt(format!(
                "{} failed authentication: the stored bytes are corrupt or were moved, or the root key is not this vault's",
                what()
            )),
            UnwrapError::Unavailable(why) => Error::Unavailable(format!(
                "the root key provider cannot unwrap {}: {why}",
                what()
            )),
        }
    }
}

/// Holds the root key and wraps keys under it.
pub trait RootKeyProvider: Send + Sync {
    /// What the provider is, for logs and status (never key material).
    fn describe(&self) -> String;
    /// Wraps `key` under the root key, bound to `label` and `aad`.
    fn wrap(&self, label: &str, aad: &[u8], key: &SecretKey) -> Result<Vec<u8>>;
    /// Unwraps a key wrapped by [`RootKeyProvider::wrap`] with the same label and AAD.
    fn unwrap(&self, label: &str, aad: &[u8], wrapped: &[u8]) -> Result<SecretKey, UnwrapError>;
    /// Makes a successor root key, durable before anything is wrapped under
    /// it, but not yet the one opened at start (root rotation, step 1).
    fn stage_successor(&self) -> Result<Arc<dyn RootKeyProvider>>;
    /// Makes the staged successor the one opened at start (step 3, after
    /// the rewrap committed).
    fn promote_successor(&self) -> Result<()>;
    /// Drops a staged successor that was never promoted.
    fn discard_successor(&self) -> Result<()>;
    /// Destroys this root key once a rotation replaced it and no reader
    /// can still need it. A key file's old key is already gone (the
    /// promotion renamed over it); an HSM key object is destroyed here.
    fn retire(&self) -> Result<()> {
        Ok(())
    }
    /// The root keys this provider's source holds now, read afresh: the
    /// one in use and a staged successor, if any. A server that finds the
    /// vault's root rotated by another server picks the one that opens
    /// the vault (`Keyring::follow_root`). None where the source cannot
    /// change under a running server (an environment variable).
    fn candidates(&self) -> Result<Vec<Arc<dyn RootKeyProvider>>> {
        Ok(Vec::new())
    }
}

/// The default provider: a 256-bit key in a file (hex, mode 0600).
///
/// For a single machine: keep the file off the data volume in production,
/// or use an HSM provider.
pub struct KeyFileProvider {
    key: SecretKey,
    path: PathBuf,
}

impl KeyFileProvider {
    /// Where a root rotation stages the successor key: `<path>.new`.
    pub fn successor_path(path: &Path) -> PathBuf {
        let mut p = path.as_os_str().to_owned();
        p.push(".new");
        PathBuf::from(p)
    }

    /// Opens the key file, creating it with a fresh key if it does not exist.
    /// Refuses a file readable by group or others.
    pub fn open_or_create(path: &Path) -> Result<Self> {
        if !path.exists() {
            Self::create(path)?;
        }
        Self::open(path)
    }

    fn create(path: &Path) -> Result<()> {
        let key = SecretKey::generate();
        let hex = Zeroizing::new(hex::encode(key.expose_secret()));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::Unavailable(format!("root key file {}: {e}", path.display())))?;
        f.write_all(hex.as_bytes())
            .and_then(|_| f.write_all(b"\n"))
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::Unavailable(format!("root key file {}: {e}", path.display())))?;
        Ok(())
    }

    /// The successor a root rotation staged beside `path`, if any: read
    /// from `<path>.new` but named for `path`, where it lives once promoted.
    pub fn open_staged(path: &Path) -> Result<Option<Self>> {
        let next = Self::successor_path(path);
        if !next.exists() {
            return Ok(None);
        }
        let mut successor = Self::open(&next)?;
        successor.path = path.to_owned();
        Ok(Some(successor))
    }

    /// Opens an existing key file.
    pub fn open(path: &Path) -> Result<Self> {
        let fail = |what: String| {
            Error::FailedPrecondition(format!("root key file {}: {what}", path.display()))
        };
        let meta = fs::metadata(path).map_err(|e| fail(e.to_string()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(fail(format!(
                "mode {:o} lets others read it; run `chmod 600 {}`",
                meta.permissions().mode() & 0o777,
                path.display()
            )));
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| fail(e.to_string()))?);
        let bytes = Zeroizing::new(
            hex::decode(text.trim())
                .map_err(|_| fail(format!("must hold {} hex characters", KEY_LEN * 2)))?,
        );
        let key = SecretKey::from_slice(&bytes)
            .map_err(|_| fail(format!("must hold {} hex characters", KEY_LEN * 2)))?;
        Ok(Self {
            key,
            path: path.to_owned(),
        })
    }
}

impl RootKeyProvider for KeyFileProvider {
    fn describe(&self) -> String {
        format!("key-file:{}", self.path.display())
    }

    fn wrap(&self, label: &str, aad: &[u8], key: &SecretKey) -> Result<Vec<u8>> {
        Ok(crypto::wrap_key(&self.key, label, aad, key))
    }

    fn unwrap(&self, label: &str, aad: &[u8], wrapped: &[u8]) -> Result<SecretKey, UnwrapError> {
        Ok(crypto::unwrap_key(&self.key, label, aad, wrapped)?)
    }

    fn stage_successor(&self) -> Result<Arc<dyn RootKeyProvider>> {
        let next = Self::successor_path(&self.path);
        let _ = fs::remove_file(&next);
        Self::create(&next)?;
        sync_dir(&self.path)?;
        let successor = Self::open_staged(&self.path)?.ok_or_else(|| {
            Error::Unavailable(format!("root key successor {} vanished", next.display()))
        })?;
        Ok(Arc::new(successor))
    }

    fn promote_successor(&self) -> Result<()> {
        let next = Self::successor_path(&self.path);
        fs::rename(&next, &self.path).map_err(|e| {
            Error::Unavailable(format!(
                "root key file {}: cannot promote {}: {e}",
                self.path.display(),
                next.display()
            ))
        })?;
        sync_dir(&self.path)
    }

    fn discard_successor(&self) -> Result<()> {
        match fs::remove_file(Self::successor_path(&self.path)) {
            Ok(()) => sync_dir(&self.path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::Unavailable(format!("root key successor: {e}"))),
        }
    }

    /// The file as it is now, and `<path>.new` if a rotation staged one
    /// (a server sharing the file with the rotating one may look between
    /// the commit and the rename).
    fn candidates(&self) -> Result<Vec<Arc<dyn RootKeyProvider>>> {
        let mut found: Vec<Arc<dyn RootKeyProvider>> = vec![Arc::new(Self::open(&self.path)?)];
        if let Some(staged) = Self::open_staged(&self.path)? {
            found.push(Arc::new(staged));
        }
        Ok(found)
    }
}

/// The root key from an environment variable (64 hex characters): for
/// platforms that inject secrets into the environment. Nothing is written
/// to disk. Rotation is refused: the variable cannot be rewritten from
/// here (move to a key file or an HSM to rotate online).
pub struct EnvProvider {
    key: SecretKey,
    var: String,
}

impl EnvProvider {
    pub fn from_env(var: &str) -> Result<Self> {
        let fail = |what: &str| Error::FailedPrecondition(format!("root key from ${var}: {what}"));
        let text = Zeroizing::new(std::env::var(var).map_err(|_| fail("the variable is not set"))?);
        let bytes = Zeroizing::new(
            hex::decode(text.trim())
                .map_err(|_| fail(&format!("must hold {} hex characters", KEY_LEN * 2)))?,
        );
        let key = SecretKey::from_slice(&bytes)
            .map_err(|_| fail(&format!("must hold {} hex characters", KEY_LEN * 2)))?;
        Ok(EnvProvider {
            key,
            var: var.to_owned(),
        })
    }
}

impl RootKeyProvider for EnvProvider {
    fn describe(&self) -> String {
        format!("env:{}", self.var)
    }

    fn wrap(&self, label: &str, aad: &[u8], key: &SecretKey) -> Result<Vec<u8>> {
        Ok(crypto::wrap_key(&self.key, label, aad, key))
    }

    fn unwrap(&self, label: &str, aad: &[u8], wrapped: &[u8]) -> Result<SecretKey, UnwrapError> {
        Ok(crypto::unwrap_key(&self.key, label, aad, wrapped)?)
    }

    fn stage_successor(&self) -> Result<Arc<dyn RootKeyProvider>> {
        Err(Error::FailedPrecondition(format!(
            "the root key comes from ${}, which the server cannot rewrite; to rotate, serve with a key file (see docs/runbooks/root-key-rotation.md)",
            self.var
        )))
    }

    fn promote_successor(&self) -> Result<()> {
        Ok(())
    }

    fn discard_successor(&self) -> Result<()> {
        Ok(())
    }
}

/// Makes a rename or create in `file`'s directory durable.
fn sync_dir(file: &Path) -> Result<()> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::Unavailable(format!("{}: {e}", dir.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_0600_and_reopens_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let a = KeyFileProvider::open_or_create(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let k = SecretKey::generate();
        let wrapped = a.wrap("l", b"aad", &k).unwrap();
        let b = KeyFileProvider::open_or_create(&path).unwrap();
        let back = b.unwrap("l", b"aad", &wrapped).unwrap();
        assert_eq!(back.expose_secret(), k.expose_secret());
        assert!(!a.describe().contains(&hex::encode(a.key.expose_secret())));
    }

    #[test]
    fn fail_world_readable_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        KeyFileProvider::open_or_create(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = KeyFileProvider::open(&path).err().unwrap();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn fail_malformed_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        fs::write(&path, "not hex").unwrap();
        assert!(KeyFileProvider::open(&path).is_err());
    }
}

//! Erasure epoch keys: the layer between the root key and the tenant keys
//! that bounds how long any copy of the database stays openable.
//!
//! Tenant KEKs and index keys are wrapped under the current epoch key. At
//! every epoch a new key is made and every live tenant key rewrapped under
//! it; the key of an epoch that ended `erasure_window` ago is destroyed. A
//! backup, a WAL archive or a disk image holds tenant keys wrapped under
//! the epoch of its day; once that epoch's key is gone, nobody can open
//! them, root key or not. So a subject shredded today is unreadable in this
//! vault at once, and in every copy of the database after at most
//! `erasure_window`.
//!
//! The keys live outside the database, in their own file (`erasure_keys`,
//! default `<data-dir>/erasure.keys`; keep it with the root key, never in
//! the backups): one line per epoch, `v1 <epoch> <created ms> <wrapped
//! hex>`, each key wrapped under the erasure wrapping key (a vault key held
//! under the root key in the database) and bound to its epoch and time.
//! The file is replaced whole (written beside it, synced, renamed over it),
//! and the replaced file's bytes are overwritten, so a destroyed epoch key
//! is not left in the directory.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::crypto::{self, SecretKey, encode_fields};
use crate::error::{Error, Result};

const VERSION: &str = "v1";
/// The seal label of an epoch key under the erasure wrapping key.
const LABEL: &str = "strongbox/v1/wrap/erasure-epoch-key";

fn aad(epoch: u64, created_at: i64) -> Vec<u8> {
    encode_fields(&[
        b"erasure-epoch",
        &epoch.to_be_bytes(),
        &created_at.to_be_bytes(),
    ])
}

/// The AAD of a tenant key wrapped under epoch `epoch`: its own identity
/// (`base`) and the epoch.
pub fn wrapped_aad(base: &[u8], epoch: u64) -> Vec<u8> {
    encode_fields(&[b"in-epoch", base, &epoch.to_be_bytes()])
}

/// One epoch's key.
#[derive(Clone)]
pub struct Epoch {
    /// When it was made (Unix ms); the epoch before it ended then.
    pub created_at: i64,
    wrapped: Vec<u8>,
    key: Arc<SecretKey>,
}

/// The epoch keys of one vault, as in its file.
pub struct EpochKeys {
    path: PathBuf,
    epochs: BTreeMap<u64, Epoch>,
}

fn bad(path: &Path, line: usize, what: &str) -> Error {
    Error::Corrupt(format!(
        "erasure keys {}: line {line} {what}: the file was damaged or edited, or belongs to another vault",
        path.display()
    ))
}

impl EpochKeys {
    /// Reads the file at `path` (none yet: no epochs), unwrapping every
    /// key under `wrap_key`.
    pub fn load(path: &Path, wrap_key: &SecretKey) -> Result<EpochKeys> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(Error::Unavailable(format!(
                    "erasure keys {}: {e}",
                    path.display()
                )));
            }
        };
        let mut epochs = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let f: Vec<&str> = line.split(' ').collect();
            let [VERSION, epoch, created, wrapped] = f[..] else {
                return Err(bad(path, n, "is malformed"));
            };
            let (Ok(epoch), Ok(created_at), Ok(wrapped)) = (
                epoch.parse::<u64>(),
                created.parse::<i64>(),
                hex::decode(wrapped),
            ) else {
                return Err(bad(path, n, "is malformed"));
            };
            let key = crypto::unwrap_key(wrap_key, LABEL, &aad(epoch, created_at), &wrapped)
                .map_err(|_| bad(path, n, "does not authenticate"))?;
            epochs.insert(
                epoch,
                Epoch {
                    created_at,
                    wrapped,
                    key: Arc::new(key),
                },
            );
        }
        Ok(EpochKeys {
            path: path.to_owned(),
            epochs,
        })
    }

    /// The newest epoch: the one new wraps use.
    pub fn current(&self) -> Option<(u64, &Epoch)> {
        self.epochs.iter().next_back().map(|(n, e)| (*n, e))
    }

    pub fn key(&self, epoch: u64) -> Option<Arc<SecretKey>> {
        self.epochs.get(&epoch).map(|e| e.key.clone())
    }

    /// Every epoch held, oldest first, with when it was made.
    pub fn epochs(&self) -> Vec<(u64, i64)> {
        self.epochs
            .iter()
            .map(|(n, e)| (*n, e.created_at))
            .collect()
    }

    /// The file the keys are kept in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the next epoch's key and writes the file; returns its number.
    pub fn add(&mut self, wrap_key: &SecretKey, now: i64) -> Result<u64> {
        let epoch = self.current().map_or(1, |(n, _)| n + 1);
        let key = SecretKey::generate();
        let wrapped = crypto::wrap_key(wrap_key, LABEL, &aad(epoch, now), &key);
        let mut next = self.epochs.clone();
        next.insert(
            epoch,
            Epoch {
                created_at: now,
                wrapped,
                key: Arc::new(key),
            },
        );
        self.replace(next)?;
        Ok(epoch)
    }

    /// Destroys the keys of `epochs`: the file is rewritten without them.
    pub fn destroy(&mut self, epochs: &[u64]) -> Result<()> {
        let mut next = self.epochs.clone();
        for n in epochs {
            next.remove(n);
        }
        self.replace(next)
    }

    /// Writes `next` as the file (beside it, synced, renamed over it, the
    /// directory synced), overwrites the replaced file's bytes, and only
    /// then makes it the keys in memory.
    fn replace(&mut self, next: BTreeMap<u64, Epoch>) -> Result<()> {
        let io = |e: std::io::Error| {
            Error::Unavailable(format!("erasure keys {}: {e}", self.path.display()))
        };
        let mut text = String::new();
        for (n, e) in &next {
            text.push_str(&format!(
                "{VERSION} {n} {} {}\n",
                e.created_at,
                hex::encode(&e.wrapped)
            ));
        }
        let tmp = self.path.with_extension("keys.new");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io)?;
        // The old file's inode, kept open across the rename to overwrite it.
        let old = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .ok();
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(dir) = self.path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        if let Some(mut old) = old {
            // Best effort: a copy-on-write file system or an SSD may keep
            // the old blocks; the wrapping key in the database is what an
            // attacker would still need.
            if let Ok(meta) = old.metadata() {
                let _ = old
                    .write_all(&vec![0u8; meta.len() as usize])
                    .and_then(|()| old.sync_all());
            }
        }
        self.epochs = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_destroys_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("erasure.keys");
        let wrap = SecretKey::generate();
        let mut keys = EpochKeys::load(&path, &wrap).unwrap();
        assert!(keys.current().is_none());
        assert_eq!(keys.add(&wrap, 10).unwrap(), 1);
        assert_eq!(keys.add(&wrap, 20).unwrap(), 2);
        assert_eq!(keys.add(&wrap, 30).unwrap(), 3);
        let k1 = keys.key(1).unwrap();
        keys.destroy(&[1]).unwrap();
        let again = EpochKeys::load(&path, &wrap).unwrap();
        assert_eq!(again.epochs(), vec![(2, 20), (3, 30)]);
        assert!(again.key(1).is_none());
        assert_eq!(again.current().unwrap().0, 3);
        // The destroyed key's wrapped bytes are nowhere in the directory.
        let gone = hex::encode(crypto::wrap_key(&wrap, LABEL, &aad(1, 10), &k1));
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            assert!(!String::from_utf8_lossy(&bytes).contains(&gone[..40]));
        }
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&path).unwrap().permissions()
            ) & 0o777,
            0o600
        );
    }

    #[test]
    fn fail_an_edited_line_or_another_vault() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("erasure.keys");
        let wrap = SecretKey::generate();
        let mut keys = EpochKeys::load(&path, &wrap).unwrap();
        keys.add(&wrap, 10).unwrap();
        assert!(EpochKeys::load(&path, &SecretKey::generate()).is_err());
        let text = std::fs::read_to_string(&path).unwrap();
        // Moving a key to another epoch or time fails its AAD.
        std::fs::write(&path, text.replacen("v1 1 10 ", "v1 7 10 ", 1)).unwrap();
        assert!(EpochKeys::load(&path, &wrap).is_err());
        std::fs::write(&path, text.replacen("v1 1 10 ", "v1 1 11 ", 1)).unwrap();
        assert!(EpochKeys::load(&path, &wrap).is_err());
        std::fs::write(&path, "v1 1 x\n").unwrap();
        assert!(EpochKeys::load(&path, &wrap).is_err());
    }
}

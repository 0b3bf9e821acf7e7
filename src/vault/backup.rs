//! Online backup: a consistent snapshot of the database, streamed while
//! writes go on, authenticated so a restore can refuse a tampered file.
//!
//! The file: `SBXBAK01`, the snapshot time (8 bytes, big-endian Unix ms),
//! the SQLite database as `VACUUM INTO` wrote it, and a 32-byte
//! HMAC-SHA256 over everything before it, under the backup key
//! (HMAC of a fixed label under the audit key, itself held under the root
//! key). It holds what the database holds, wrapped keys and ciphertext,
//! never the root key. `strongbox restore` (`server::restore`) writes the
//! database out, checks the MAC with the key it holds under the root key,
//! and replays the shred ledger.

use std::io::Read;
use std::path::Path;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

use super::Vault;
use crate::authz::{Action, Permit};
use crate::crypto::SecretKey;
use crate::error::{Error, Result};

/// The file's first bytes.
pub const MAGIC: &[u8; 8] = b"SBXBAK01";
/// Bytes per streamed chunk.
const CHUNK: usize = 1 << 20;

/// The key a backup's MAC is made with, derived from the audit key.
pub fn backup_key(audit_key: &SecretKey) -> Result<SecretKey> {
    let k = crate::crypto::hmac_sha256(audit_key, &[b"strongbox/v1/backup-key"]);
    SecretKey::from_slice(&k).map_err(|_| Error::Internal("backup key".into()))
}

fn mac_with(key: &SecretKey) -> Result<Hmac<Sha256>> {
    <Hmac<Sha256> as Mac>::new_from_slice(key.expose_secret())
        .map_err(|_| Error::Internal("backup MAC key".into()))
}

/// Bytes of a backup file before the database: magic and time.
const HEADER: u64 = MAGIC.len() as u64 + 8;
/// Bytes of the MAC at its end.
const TAG: u64 = 32;

fn damaged(what: &str) -> Error {
    Error::Corrupt(format!(
        "backup: {what}: the file was damaged or tampered with, or it is not a backup of this vault"
    ))
}

fn read_err(path: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!("backup {}: {e}", path.display()))
}

/// Copies the database out of backup file `from` into `dest` (a new file,
/// 0600, synced) and returns the snapshot time. Nothing is trusted yet:
/// [`verify_file`] checks the MAC, with the key the database holds.
pub fn unpack(from: &Path, dest: &Path) -> Result<i64> {
    use std::io::{Seek, SeekFrom, Write};
    use std::os::unix::fs::OpenOptionsExt;
    let mut src = std::fs::File::open(from).map_err(|e| read_err(from, e))?;
    let len = src.metadata().map_err(|e| read_err(from, e))?.len();
    let mut header = [0u8; HEADER as usize];
    if len < HEADER + TAG || src.read_exact(&mut header).is_err() || &header[..8] != MAGIC {
        return Err(damaged("not a Strongbox backup"));
    }
    let time = i64::from_be_bytes(
        header[8..]
            .try_into()
            .map_err(|_| damaged("short header"))?,
    );
    src.seek(SeekFrom::Start(HEADER))
        .map_err(|e| read_err(from, e))?;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dest)
        .map_err(|e| Error::Unavailable(format!("{}: {e}", dest.display())))?;
    let copied = std::io::copy(&mut src.take(len - HEADER - TAG), &mut out)
        .and_then(|n| out.sync_all().map(|()| n))
        .map_err(|e| Error::Unavailable(format!("{}: {e}", dest.display())))?;
    out.flush()
        .map_err(|e| Error::Unavailable(format!("{}: {e}", dest.display())))?;
    if copied != len - HEADER - TAG {
        return Err(damaged("shorter than it says"));
    }
    Ok(time)
}

/// Checks backup file `path`'s MAC under `key`, reading it in chunks.
pub fn verify_file(path: &Path, key: &SecretKey) -> Result<()> {
    let mut file = std::fs::File::open(path).map_err(|e| read_err(path, e))?;
    let len = file.metadata().map_err(|e| read_err(path, e))?.len();
    if len < HEADER + TAG {
        return Err(damaged("not a Strongbox backup"));
    }
    let mut mac = mac_with(key)?;
    let mut body = (&mut file).take(len - TAG);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = body.read(&mut buf).map_err(|e| read_err(path, e))?;
        if n == 0 {
            break;
        }
        mac.update(&buf[..n]);
    }
    let mut tag = [0u8; TAG as usize];
    file.read_exact(&mut tag).map_err(|e| read_err(path, e))?;
    mac.verify_slice(&tag)
        .map_err(|_| damaged("its MAC does not match"))
}

impl Vault {
    /// Snapshots the database and streams the backup file's bytes. The
    /// snapshot is taken before this returns, so every write acknowledged
    /// before the call is in it.
    pub async fn backup(&self, permit: &Permit) -> Result<mpsc::Receiver<Result<Vec<u8>>>> {
        permit.require(Action::Backup)?;
        let keys = self.keys.clone();
        let key = backup_key(&*self.store.read(move |c| keys.audit_key(c)).await?)?;
        let scratch = self.store.scratch_file()?;
        let time = crate::now_ms();
        if let Err(e) = self.store.snapshot_to(scratch.clone()).await {
            let _ = std::fs::remove_file(&scratch);
            return Err(e);
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let sent = stream_file(&scratch, time, &key, &tx);
            let _ = std::fs::remove_file(&scratch);
            if let Err(e) = sent {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(rx)
    }
}

/// Header, the snapshot in chunks, then the MAC over all of it.
fn stream_file(
    path: &std::path::Path,
    time: i64,
    key: &SecretKey,
    tx: &mpsc::Sender<Result<Vec<u8>>>,
) -> Result<()> {
    let io = |e: std::io::Error| Error::Unavailable(format!("backup snapshot: {e}"));
    let mut mac = mac_with(key)?;
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&time.to_be_bytes());
    mac.update(&header);
    if tx.blocking_send(Ok(header)).is_err() {
        return Ok(());
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    loop {
        let mut buf = vec![0u8; CHUNK];
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        mac.update(&buf);
        if tx.blocking_send(Ok(buf)).is_err() {
            return Ok(());
        }
    }
    let tag = mac.finalize().into_bytes().to_vec();
    let _ = tx.blocking_send(Ok(tag));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_a_flipped_byte_or_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::generate();
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&5i64.to_be_bytes());
        file.extend_from_slice(b"database bytes");
        let mut mac = mac_with(&key).unwrap();
        mac.update(&file);
        file.extend_from_slice(&mac.finalize().into_bytes());
        let path = dir.path().join("b");
        std::fs::write(&path, &file).unwrap();
        verify_file(&path, &key).unwrap();
        let db = dir.path().join("db");
        assert_eq!(unpack(&path, &db).unwrap(), 5);
        assert_eq!(std::fs::read(&db).unwrap(), b"database bytes");
        assert!(verify_file(&path, &SecretKey::generate()).is_err());
        for at in [3, 9, 20, file.len() - 1] {
            let mut flipped = file.clone();
            flipped[at] ^= 1;
            std::fs::write(&path, &flipped).unwrap();
            assert!(verify_file(&path, &key).is_err(), "byte {at}");
        }
        std::fs::write(&path, &file[..file.len() - 1]).unwrap();
        assert!(verify_file(&path, &key).is_err());
        std::fs::write(&path, b"SBXBAK01").unwrap();
        assert!(unpack(&path, &dir.path().join("db2")).is_err());
    }
}

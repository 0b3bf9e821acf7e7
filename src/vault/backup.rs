//! Online backup: a consistent snapshot of the database, streamed while
//! writes go on, authenticated so a restore can refuse a tampered file.
//!
//! The file: `SBXBAK01`, the snapshot time (8 bytes, big-endian Unix ms),
//! the SQLite database as `VACUUM INTO` wrote it, and a 32-byte
//! HMAC-SHA256 over everything before it, under the backup key
//! (HMAC of a fixed label under the audit key, itself held under the root
//! key). It holds what the database holds, wrapped keys and ciphertext,
//! never the root key. `strongbox restore` (next) verifies the MAC with
//! the root key, writes the database and replays the shred ledger.

use std::io::Read;

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

/// Whether `file` (a whole backup) carries a valid MAC under `key`; the
/// database bytes if so.
pub fn verified<'f>(file: &'f [u8], key: &SecretKey) -> Result<(i64, &'f [u8])> {
    let bad = |what: &str| {
        Error::Corrupt(format!(
            "backup: {what}: the file was damaged or tampered with"
        ))
    };
    if file.len() < MAGIC.len() + 8 + 32 || &file[..MAGIC.len()] != MAGIC {
        return Err(bad("not a Strongbox backup"));
    }
    let (body, tag) = file.split_at(file.len() - 32);
    let mut mac = mac_with(key)?;
    mac.update(body);
    mac.verify_slice(tag)
        .map_err(|_| bad("its MAC does not match"))?;
    let time = i64::from_be_bytes(
        body[MAGIC.len()..MAGIC.len() + 8]
            .try_into()
            .map_err(|_| bad("short header"))?,
    );
    Ok((time, &body[MAGIC.len() + 8..]))
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
        let key = SecretKey::generate();
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&5i64.to_be_bytes());
        file.extend_from_slice(b"database bytes");
        let mut mac = mac_with(&key).unwrap();
        mac.update(&file);
        file.extend_from_slice(&mac.finalize().into_bytes());
        let (time, db) = verified(&file, &key).unwrap();
        assert_eq!((time, db), (5, &b"database bytes"[..]));
        let mut flipped = file.clone();
        flipped[20] ^= 1;
        assert!(verified(&flipped, &key).is_err());
        assert!(verified(&file, &SecretKey::generate()).is_err());
        assert!(verified(b"SBXBAK01", &key).is_err());
    }
}

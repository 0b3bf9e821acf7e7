//! The shred ledger: every destruction of a key, appended to a file
//! outside the database, MAC-chained, and synced before the call that
//! destroyed the key returns.
//!
//! A backup restored later (`strongbox restore`, a later change) replays
//! it, so a subject or tenant erased after the backup was taken stays
//! erased. Put the file on another volume than the database
//! (`serve --shred-ledger PATH`, config `shred_ledger`; default
//! `<data-dir>/shred.ledger`).
//!
//! A line: `v1 <kind> <time> <tenant> <id> <mac>`, where kind is `dek`
//! (a data key: subject shred, retention, re-encryption; id the key id),
//! `kek` (a tenant key-encryption key version retired; id the version),
//! `tenant` (a whole tenant shredded; id `-`) or `epoch` (an erasure
//! epoch's key destroyed; tenant `-`, id the epoch). The MAC (HMAC-SHA256 under
//! the audit key) covers the previous line's MAC and every field, so a
//! line edited, dropped from the middle or reordered fails the whole file;
//! a last line torn by a crash is dropped.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::crypto::{self, SecretKey};
use crate::error::{Error, Result};

const VERSION: &str = "v1";
const LABEL: &[u8] = b"strongbox/v1/shred-ledger";

/// One destruction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Destroyed {
    /// A data key of `tenant`.
    Dek { tenant: String, id: String },
    /// A tenant KEK version.
    Kek { tenant: String, version: u32 },
    /// Every key of a tenant.
    Tenant { tenant: String },
    /// An erasure epoch's key: every copy of the database made while it
    /// was current is unreadable from now on.
    Epoch { epoch: u64 },
}

impl Destroyed {
    fn fields(&self) -> (&'static str, &str, String) {
        match self {
            Destroyed::Dek { tenant, id } => ("dek", tenant, id.clone()),
            Destroyed::Kek { tenant, version } => ("kek", tenant, version.to_string()),
            Destroyed::Tenant { tenant } => ("tenant", tenant, "-".to_owned()),
            Destroyed::Epoch { epoch } => ("epoch", "-", epoch.to_string()),
        }
    }

    fn parse(kind: &str, tenant: &str, id: &str) -> Option<Destroyed> {
        let tenant = tenant.to_owned();
        match kind {
            "dek" => Some(Destroyed::Dek {
                tenant,
                id: id.to_owned(),
            }),
            "kek" => Some(Destroyed::Kek {
                tenant,
                version: id.parse().ok()?,
            }),
            "tenant" if id == "-" => Some(Destroyed::Tenant { tenant }),
            "epoch" if tenant == "-" => Some(Destroyed::Epoch {
                epoch: id.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// A ledger entry as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub time: i64,
    pub destroyed: Destroyed,
}

fn line_mac(
    key: &SecretKey,
    link: &[u8],
    kind: &str,
    time: i64,
    tenant: &str,
    id: &str,
) -> [u8; 32] {
    crypto::hmac_sha256(
        key,
        &[&crypto::encode_fields(&[
            LABEL,
            link,
            kind.as_bytes(),
            &time.to_be_bytes(),
            tenant.as_bytes(),
            id.as_bytes(),
        ])],
    )
}

fn broken(path: &Path, line: usize, what: &str) -> Error {
    Error::Corrupt(format!(
        "shred ledger {}: line {line} {what}: the ledger was tampered with",
        path.display()
    ))
}

/// The ledger file of one vault.
pub struct Ledger {
    path: PathBuf,
    /// The last line's MAC, which the next line's covers.
    link: Mutex<[u8; 32]>,
}

impl Ledger {
    /// Opens the ledger (creating it, 0600) and checks every line; returns
    /// it with its entries in order.
    pub fn open(path: &Path, key: &SecretKey) -> Result<(Ledger, Vec<Entry>)> {
        let text = crate::appendfile::open_lines(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => broken(path, 0, "is not text"),
            _ => Error::Unavailable(format!("shred ledger {}: {e}", path.display())),
        })?;
        let mut link = [0u8; 32];
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let f: Vec<&str> = line.split(' ').collect();
            let [version, kind, time, tenant, id, mac] = f[..] else {
                return Err(broken(path, n, "is malformed"));
            };
            let (Ok(time), Ok(mac), Some(destroyed)) = (
                time.parse::<i64>(),
                hex::decode(mac),
                Destroyed::parse(kind, tenant, id),
            ) else {
                return Err(broken(path, n, "is malformed"));
            };
            if version != VERSION {
                return Err(broken(path, n, "is malformed"));
            }
            let expected = line_mac(key, &link, kind, time, tenant, id);
            if !crypto::ct_eq(&expected, &mac) {
                return Err(broken(path, n, "has a MAC that does not match"));
            }
            link = expected;
            entries.push(Entry { time, destroyed });
        }
        Ok((
            Ledger {
                path: path.to_owned(),
                link: Mutex::new(link),
            },
            entries,
        ))
    }

    /// Appends the destructions and syncs them to disk.
    pub fn record(&self, key: &SecretKey, destroyed: &[Destroyed]) -> Result<()> {
        if destroyed.is_empty() {
            return Ok(());
        }
        let mut link = self.link.lock().unwrap_or_else(|p| p.into_inner());
        let time = crate::now_ms();
        let mut next = *link;
        let mut text = String::new();
        for d in destroyed {
            let (kind, tenant, id) = d.fields();
            next = line_mac(key, &next, kind, time, tenant, &id);
            text.push_str(&format!(
                "{VERSION} {kind} {time} {tenant} {id} {}\n",
                hex::encode(next)
            ));
        }
        crate::appendfile::append_synced(&self.path, &text).map_err(|e| {
            Error::Unavailable(format!(
                "shred ledger {}: the keys are destroyed, but the ledger could not record it ({e}); a restore of an older backup would not know",
                self.path.display()
            ))
        })?;
        *link = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dek(id: &str) -> Destroyed {
        Destroyed::Dek {
            tenant: "t".into(),
            id: id.into(),
        }
    }

    #[test]
    fn records_reopen_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shred.ledger");
        let key = SecretKey::generate();
        let (l, none) = Ledger::open(&path, &key).unwrap();
        assert!(none.is_empty());
        l.record(&key, &[dek("dek-1"), dek("dek-2")]).unwrap();
        l.record(
            &key,
            &[
                Destroyed::Kek {
                    tenant: "t".into(),
                    version: 3,
                },
                Destroyed::Tenant { tenant: "u".into() },
                Destroyed::Epoch { epoch: 7 },
            ],
        )
        .unwrap();
        let (l, entries) = Ledger::open(&path, &key).unwrap();
        let got: Vec<_> = entries.into_iter().map(|e| e.destroyed).collect();
        assert_eq!(got.len(), 5);
        assert_eq!(got[0], dek("dek-1"));
        assert_eq!(got[3], Destroyed::Tenant { tenant: "u".into() });
        assert_eq!(got[4], Destroyed::Epoch { epoch: 7 });
        // The chain continues after a reopen.
        l.record(&key, &[dek("dek-3")]).unwrap();
        assert_eq!(Ledger::open(&path, &key).unwrap().1.len(), 6);
    }

    #[test]
    fn fail_edited_dropped_reordered_or_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shred.ledger");
        let key = SecretKey::generate();
        let (l, _) = Ledger::open(&path, &key).unwrap();
        l.record(&key, &[dek("dek-1"), dek("dek-2"), dek("dek-3")])
            .unwrap();
        let good = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = good.lines().collect();
        for bad in [
            good.replace("dek-2", "dek-9"),
            format!("{}\n{}\n", lines[0], lines[2]),
            format!("{}\n{}\n{}\n", lines[1], lines[0], lines[2]),
        ] {
            std::fs::write(&path, bad).unwrap();
            let e = Ledger::open(&path, &key).err().unwrap();
            assert!(e.to_string().contains("tampered"), "{e}");
        }
        std::fs::write(&path, &good).unwrap();
        assert!(Ledger::open(&path, &SecretKey::generate()).is_err());
        // A torn last line is dropped, not an error.
        std::fs::write(&path, format!("{good}v1 dek 12")).unwrap();
        assert_eq!(Ledger::open(&path, &key).unwrap().1.len(), 3);
    }
}

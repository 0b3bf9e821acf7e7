//! An attacker with copies of the database (a backup, a disk image, a
//! dump of the PostgreSQL tables), the root key file and the erasure keys
//! file. What they can
//! decrypt is what erasure failed to make unreadable.

use std::collections::HashMap;
use std::path::Path;

use strongbox::crypto::{self, SecretKey, label};
use strongbox::erasure::{EpochKeys, wrapped_aad};
use strongbox::keyring::aad;
use strongbox::rootkey::{KeyFileProvider, RootKeyProvider};

use super::stored::Stored;

/// A stored record as an attacker copies it out of the database.
#[derive(Clone, Debug)]
pub struct StolenRecord {
    pub owner: Vec<u8>,
    pub category: String,
    pub key: String,
    pub version: u64,
    pub content_type: String,
    pub dek_id: String,
    pub ciphertext: Vec<u8>,
}

pub fn steal_records(db: &Stored, tenant: &str) -> Vec<StolenRecord> {
    db.rows(
        "SELECT owner, category, key, version, content_type, dek_id, ciphertext FROM records
         WHERE tenant_id = $1 AND deleted_at IS NULL",
        &[tenant],
    )
    .into_iter()
    .map(|r| StolenRecord {
        owner: r[0].bytes(),
        category: r[1].text(),
        key: r[2].text(),
        version: r[3].int() as u64,
        content_type: r[4].text(),
        dek_id: r[5].text(),
        ciphertext: r[6].bytes(),
    })
    .collect()
}

/// The erasure epoch keys an attacker opens from `erasure_keys` with the
/// wrapping key in `db`, opened with `root` (none if anything fails).
pub fn stolen_epoch_keys(
    db: &Stored,
    root: &dyn RootKeyProvider,
    erasure_keys: &Path,
) -> Option<EpochKeys> {
    let wrapped = db
        .column(
            "SELECT value FROM meta WHERE name = 'erasure_wrap_key'",
            &[],
        )
        .pop()?
        .bytes();
    let wrap = root
        .unwrap(label::WRAP_ERASURE_KEY, &aad::erasure_wrap_key(), &wrapped)
        .ok()?;
    EpochKeys::load(erasure_keys, &wrap).ok()
}

/// Every data key of `tenant` an attacker unwraps from database `db`
/// holding the root key file and the erasure keys file: each KEK by the
/// root key (before epochs) or by any epoch key in the file.
pub fn recover_data_keys(
    db: &Stored,
    root_key: &Path,
    erasure_keys: &Path,
    tenant: &str,
) -> HashMap<String, SecretKey> {
    let root = KeyFileProvider::open(root_key).unwrap();
    let epochs = stolen_epoch_keys(db, &root, erasure_keys);
    let mut keks = HashMap::new();
    for row in db.rows(
        "SELECT version, wrapped FROM tenant_keks WHERE tenant_id = $1",
        &[tenant],
    ) {
        let (v, wrapped) = (row[0].int() as u32, row[1].bytes());
        let base = aad::kek(tenant, v);
        let by_root = root.unwrap(label::WRAP_KEK, &base, &wrapped).ok();
        let by_epoch = || {
            let epochs = epochs.as_ref()?;
            epochs.epochs().iter().find_map(|(n, _)| {
                let k = epochs.key(*n)?;
                crypto::unwrap_key(&k, label::WRAP_KEK, &wrapped_aad(&base, *n), &wrapped).ok()
            })
        };
        if let Some(kek) = by_root.or_else(by_epoch) {
            keks.insert(v, kek);
        }
    }
    let mut deks = HashMap::new();
    let rows = db.rows(
        "SELECT id, owner, kek_version, wrapped FROM data_keys WHERE tenant_id = $1 AND wrapped IS NOT NULL",
        &[tenant],
    );
    for row in rows {
        let (id, owner, v, wrapped) = (
            row[0].text(),
            row[1].bytes(),
            row[2].int() as u32,
            row[3].bytes(),
        );
        if let Some(kek) = keks.get(&v) {
            let k = crypto::unwrap_key(
                kek,
                label::WRAP_DEK,
                &aad::dek(tenant, &owner, &id, v),
                &wrapped,
            )
            .unwrap();
            deks.insert(id, k);
        }
    }
    deks
}

/// Tries every recovered key on a stolen record, with its true AAD.
pub fn try_decrypt(
    tenant: &str,
    r: &StolenRecord,
    keys: &HashMap<String, SecretKey>,
) -> Option<Vec<u8>> {
    let aad = aad::record(
        tenant,
        &r.owner,
        &r.category,
        &r.key,
        r.version,
        &r.content_type,
        &r.dek_id,
    );
    keys.values()
        .find_map(|k| crypto::open(k, label::RECORD, &aad, &r.ciphertext).ok())
        .map(|v| v.to_vec())
}

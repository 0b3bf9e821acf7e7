//! Records: put (compare-and-set), get, delete and list, each sealed under
//! its subject's data key.

use std::sync::Arc;

use super::*;
use crate::audit::Call;
use crate::authz::{Action, Permit};
use crate::crypto::{self, label};
use crate::error::{Error, Result};
use crate::ids::{Category, ContentType, RecordKey, SubjectId, TenantId};
use crate::keyring::{Keyring, aad};
use crate::now_ms;
use crate::store::{self, RecordAddr, RecordCursor};

/// What a put stores.
pub struct PutRecord {
    pub subject: Option<SubjectId>,
    pub category: Category,
    pub key: RecordKey,
    pub value: crate::crypto::Plaintext,
    pub content_type: ContentType,
    pub expected_version: Option<u64>,
    pub reinstate_erased_subject: bool,
}

/// Which record a get or delete names.
pub struct RecordRef {
    pub subject: Option<SubjectId>,
    pub category: Category,
    pub key: RecordKey,
}

impl RecordRef {
    /// Where the record is stored, under `owner` (its [`resolve`]d owner column).
    fn addr<'a>(&'a self, tenant: &'a TenantId, owner: &'a [u8]) -> RecordAddr<'a> {
        RecordAddr {
            tenant: tenant.as_str(),
            owner,
            category: self.category.as_str(),
            key: self.key.as_str(),
        }
    }
}

/// For a get or delete of `r`: checks the tenant is active, names the
/// record as the call's resource, and returns its owner column.
fn resolve(
    keys: &Keyring,
    conn: &dyn Tx,
    tenant: &TenantId,
    r: &RecordRef,
    call: &Call,
) -> Result<Vec<u8>> {
    active_tenant(conn, keys, tenant)?;
    let owner = owner_of(keys, conn, tenant, r.subject.as_ref())?;
    call.set_resource(record_resource(&owner, r.category.as_str(), r.key.as_str()));
    Ok(owner)
}

pub struct RecordValue {
    pub category: String,
    pub key: String,
    pub value: crate::crypto::Plaintext,
    pub content_type: String,
    pub version: u64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A record's metadata, as listed.
#[derive(Clone, Debug)]
pub struct RecordInfo {
    pub subject_blind_id: Vec<u8>,
    pub category: String,
    pub key: String,
    pub version: u64,
    pub content_type: String,
    pub size: u64,
    pub updated_at: i64,
}

/// How the audit log names a record: owner (blind id, or `tenant`),
/// category, key.
pub(super) fn record_resource(owner: &[u8], category: &str, key: &str) -> String {
    let owner = if owner.is_empty() {
        "tenant".to_owned()
    } else {
        hex::encode(owner)
    };
    format!("record:{owner}/{category}/{key}")
}

/// Whether data key `id` exists and is not destroyed.
pub(super) fn dek_alive(conn: &dyn Tx, id: &str) -> Result<bool> {
    Ok(conn.dek_get(id)?.and_then(|d| d.wrapped).is_some())
}

/// The data-key row that a stored row (subject, record, tenant, job) names.
/// Its absence is one broken state with one meaning everywhere: the stored
/// rows are damaged (DATA_LOSS).
pub(super) fn named_dek(conn: &dyn Tx, id: &str) -> Result<store::DekRow> {
    conn.dek_get(id)?.ok_or_else(|| {
        Error::Corrupt(format!(
            "data key {id}, named by a stored row, does not exist: the stored rows are damaged"
        ))
    })
}

pub(super) fn record_not_found(category: &str, key: &str) -> Error {
    Error::NotFound(format!(
        "record not found: category '{category}', key '{key}'"
    ))
}

pub(super) fn check_expected_version(expected: Option<u64>, live: Option<u64>) -> Result<()> {
    match (expected, live) {
        (None, _) | (Some(0), None) => Ok(()),
        (Some(e), Some(v)) if e == v => Ok(()),
        (Some(0), Some(v)) => Err(Error::FailedPrecondition(format!(
            "expected_version: expected no record, found version {v}"
        ))),
        (Some(e), None) => Err(Error::FailedPrecondition(format!(
            "expected_version: expected version {e}, but the record does not exist"
        ))),
        (Some(e), Some(v)) => Err(Error::FailedPrecondition(format!(
            "expected_version: expected version {e}, found version {v}"
        ))),
    }
}

/// The owner column for a record: the subject's blind id, or empty.
pub(super) fn owner_of(
    keys: &Keyring,
    conn: &dyn Tx,
    tenant: &TenantId,
    subject: Option<&SubjectId>,
) -> Result<Vec<u8>> {
    match subject {
        Some(s) => Ok(keys.blind_id(conn, tenant, s)?.to_vec()),
        None => Ok(Vec::new()),
    }
}

/// Opens a record row's ciphertext. `None` if its data key is destroyed.
pub(super) fn open_record(
    keys: &Keyring,
    conn: &dyn Tx,
    tenant: &TenantId,
    row: store::RecordRow,
) -> Result<Option<RecordValue>> {
    let dek_row = named_dek(conn, &row.dek_id)?;
    let Some(dek) = keys.dek(conn, tenant, &dek_row)? else {
        return Ok(None);
    };
    if dek_row.owner != row.owner {
        return Err(Error::Corrupt(format!(
            "record '{}/{}' names another subject's data key",
            row.category, row.key
        )));
    }
    let aad = aad::record(
        tenant.as_str(),
        &row.owner,
        &row.category,
        &row.key,
        row.version,
        &row.content_type,
        &row.dek_id,
    );
    let value = crypto::open(&dek, label::RECORD, &aad, &row.ciphertext).map_err(|_| {
        Error::Corrupt(format!(
            "record '{}/{}' failed authentication: its stored ciphertext is corrupt or was moved from another record",
            row.category, row.key
        ))
    })?;
    Ok(Some(RecordValue {
        category: row.category,
        key: row.key,
        value,
        content_type: row.content_type,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    }))
}

pub(super) fn encode_cursor(c: &RecordCursor) -> String {
    hex::encode(crypto::encode_fields(&[
        &c.owner,
        c.category.as_bytes(),
        c.key.as_bytes(),
    ]))
}

pub(super) fn decode_cursor(token: &str) -> Result<Option<RecordCursor>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || Error::invalid("page_token", "is not a token this server issued");
    let bytes = hex::decode(token).map_err(|_| bad())?;
    let mut fields = crypto::decode_fields(&bytes).ok_or_else(bad)?;
    if fields.len() != 3 {
        return Err(bad());
    }
    let key = String::from_utf8(fields.pop().ok_or_else(bad)?).map_err(|_| bad())?;
    let category = String::from_utf8(fields.pop().ok_or_else(bad)?).map_err(|_| bad())?;
    let owner = fields.pop().ok_or_else(bad)?;
    Ok(Some(RecordCursor {
        owner,
        category,
        key,
    }))
}

impl Vault {
    /// Stores a record, sealed under its owner's data key; returns its new
    /// version.
    pub async fn put_record(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        put: PutRecord,
    ) -> Result<u64> {
        let tenant = permit.tenant_for(Action::RecordPut)?.clone();
        if put.value.len() > self.limits.max_value_bytes {
            return Err(Error::ResourceExhausted(format!(
                "value: {} bytes exceeds the limit of {} bytes",
                put.value.len(),
                self.limits.max_value_bytes
            )));
        }
        let keys = self.keys.clone();
        let c = call.clone();
        self
            .mutate(call, move |conn| {
                let t = tenant.as_str();
                let trow = active_tenant(conn, &keys, &tenant)?;
                let now = now_ms();
                let (owner, dek_id, dek) = match &put.subject {
                    None => {
                        let dek_id = trow
                            .dek_id
                            .ok_or_else(|| Error::Internal(format!("tenant '{t}' has no tenant-level data key")))?;
                        let row = named_dek(conn, &dek_id)?;
                        let dek = keys
                            .dek(conn, &tenant, &row)?
                            .ok_or_else(|| Error::FailedPrecondition(format!("tenant '{t}' data key is destroyed")))?;
                        (Vec::new(), dek_id, dek)
                    }
                    Some(subject) => {
                        let blind = keys.blind_id(conn, &tenant, subject)?;
                        let existing = conn.subject_get(t, &blind)?;
                        match existing.as_ref().and_then(|s| s.dek_id.clone()) {
                            Some(dek_id) => {
                                let row = named_dek(conn, &dek_id)?;
                                let dek = keys.dek(conn, &tenant, &row)?.ok_or_else(|| {
                                    Error::FailedPrecondition("subject: the subject's data key is destroyed".into())
                                })?;
                                // A write is activity (retention by last
                                // activity); to the second is enough.
                                if existing
                                    .as_ref()
                                    .and_then(|s| s.last_activity_at)
                                    .is_none_or(|at| now - at >= 1000)
                                {
                                    conn.subject_touch(t, &blind, now)?;
                                }
                                (blind.to_vec(), dek_id, dek)
                            }
                            None if existing.is_some() && !put.reinstate_erased_subject => {
                                return Err(Error::FailedPrecondition(
                                    "subject: this subject was erased (crypto-shredded); to store new data for them, set reinstate_erased_subject".into(),
                                ));
                            }
                            None => {
                                let (row, dek) = keys.new_dek(conn, &tenant, &blind, trow.kek_version)?;
                                conn.dek_insert(&row, now)?;
                                let sealed = crypto::seal(
                                    &dek,
                                    label::SUBJECT_ID,
                                    &aad::subject_id(t, &blind, &row.id),
                                    subject.expose().as_bytes(),
                                );
                                conn.subject_activate(t, &blind, &row.id, &sealed, now)?;
                                keys.remember_dek(&tenant, &row.id, &dek);
                                (blind.to_vec(), row.id, dek)
                            }
                        }
                    }
                };
                c.set_resource(record_resource(&owner, put.category.as_str(), put.key.as_str()));
                let addr = RecordAddr {
                    tenant: t,
                    owner: &owner,
                    category: put.category.as_str(),
                    key: put.key.as_str(),
                };
                let head = conn.record_head(addr)?;
                // Tombstones, and rows left under an older, destroyed data
                // key (their purge may not have run yet), are not live; the
                // version still continues from them.
                // During a re-encryption a row may still be under the
                // owner's old (live) data key: that is live too.
                let live = match &head {
                    Some(h) if !h.deleted && (h.dek_id == dek_id || dek_alive(conn, &h.dek_id)?) => Some(h),
                    _ => None,
                };
                check_expected_version(put.expected_version, live.map(|h| h.version))?;
                let version = head.as_ref().map_or(1, |h| h.version + 1);
                c.set_resource(record_check::versioned(
                    &record_resource(&owner, addr.category, addr.key),
                    version,
                    false,
                ));
                let created_at = live.map_or(now, |h| h.created_at);
                let aad = aad::record(
                    t,
                    &owner,
                    addr.category,
                    addr.key,
                    version,
                    put.content_type.as_str(),
                    &dek_id,
                );
                let ciphertext = crypto::seal(&dek, label::RECORD, &aad, &put.value);
                conn.record_upsert(t,
                    &store::RecordRow {
                        owner: owner.clone(),
                        category: addr.category.to_owned(),
                        key: addr.key.to_owned(),
                        version,
                        dek_id,
                        content_type: put.content_type.as_str().to_owned(),
                        ciphertext,
                        size: put.value.len() as u64,
                        created_at,
                        updated_at: now,
                    },
                )?;
                Ok(version)
            })
            .await
    }

    /// Reads and decrypts one record (with its audit entry, where reads
    /// join the writer: [`Vault::read_recorded`]).
    pub async fn get_record(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        r: RecordRef,
    ) -> Result<RecordValue> {
        let tenant = permit.tenant_for(Action::RecordGet)?.clone();
        let keys = self.keys.clone();
        let c = call.clone();
        self.read_recorded(call, move |conn| {
            let owner = resolve(&keys, conn, &tenant, &r, &c)?;
            let addr = r.addr(&tenant, &owner);
            let not_found = || record_not_found(addr.category, addr.key);
            let row = conn.record_get(addr)?.ok_or_else(not_found)?;
            open_record(&keys, conn, &tenant, row)?.ok_or_else(not_found)
        })
        .await
    }

    /// Deletes a record; returns the version it had.
    pub async fn delete_record(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        r: RecordRef,
        expected_version: Option<u64>,
    ) -> Result<u64> {
        let tenant = permit.tenant_for(Action::RecordDelete)?.clone();
        let keys = self.keys.clone();
        let c = call.clone();
        self.mutate(call, move |conn| {
            let owner = resolve(&keys, conn, &tenant, &r, &c)?;
            let addr = r.addr(&tenant, &owner);
            let live = match conn.record_head(addr)? {
                Some(h) if !h.deleted && dek_alive(conn, &h.dek_id)? => Some(h.version),
                _ => None,
            };
            if expected_version.is_some() {
                check_expected_version(expected_version, live)?;
            }
            let version = live.ok_or_else(|| record_not_found(addr.category, addr.key))?;
            c.set_resource(record_check::versioned(
                &record_resource(&owner, addr.category, addr.key),
                version,
                true,
            ));
            conn.record_delete(addr, now_ms())?;
            Ok(version)
        })
        .await
    }

    /// A page of record metadata, and the token of the next page.
    pub async fn list_records(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        subject: Option<SubjectId>,
        category: Option<Category>,
        page_size: usize,
        token: &str,
    ) -> Result<(Vec<RecordInfo>, String)> {
        let tenant = permit.tenant_for(Action::RecordList)?.clone();
        let after = decode_cursor(token)?;
        let keys = self.keys.clone();
        let c = call.clone();
        self.store
            .read(move |conn| {
                active_tenant(conn, &keys, &tenant)?;
                let owner = match &subject {
                    Some(s) => Some(keys.blind_id(conn, &tenant, s)?.to_vec()),
                    None => None,
                };
                c.set_resource(format!(
                    "records:{}/{}",
                    owner.as_deref().map_or("*".into(), hex::encode),
                    category.as_ref().map_or("*", |c| c.as_str())
                ));
                let mut rows = conn.record_list(
                    tenant.as_str(),
                    owner.as_deref(),
                    category.as_ref().map(|c| c.as_str()),
                    after.as_ref(),
                    page_size + 1,
                    usize::MAX,
                )?;
                let next = if rows.len() > page_size {
                    rows.truncate(page_size);
                    rows.last()
                        .map(|r| {
                            encode_cursor(&RecordCursor {
                                owner: r.owner.clone(),
                                category: r.category.clone(),
                                key: r.key.clone(),
                            })
                        })
                        .unwrap_or_default()
                } else {
                    String::new()
                };
                let infos = rows
                    .into_iter()
                    .map(|r| RecordInfo {
                        subject_blind_id: r.owner,
                        category: r.category,
                        key: r.key,
                        version: r.version,
                        content_type: r.content_type,
                        size: r.size,
                        updated_at: r.updated_at,
                    })
                    .collect();
                Ok((infos, next))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_version_rules() {
        assert!(check_expected_version(None, Some(3)).is_ok());
        assert!(check_expected_version(Some(0), None).is_ok());
        assert!(check_expected_version(Some(3), Some(3)).is_ok());
        assert!(check_expected_version(Some(0), Some(1)).is_err());
        assert!(check_expected_version(Some(2), None).is_err());
        assert!(check_expected_version(Some(2), Some(3)).is_err());
    }

    #[test]
    fn cursor_round_trip_and_fail_garbage() {
        let c = RecordCursor {
            owner: vec![1, 2, 3],
            category: "contact".into(),
            key: "email".into(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&c)).unwrap(), Some(c));
        assert!(decode_cursor("zz").is_err());
        assert!(decode_cursor("00000005ab").is_err());
    }
}

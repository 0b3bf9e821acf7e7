//! Data subjects: export of everything held about one, their access history,
//! and crypto-shredding one (with its signed deletion receipt).

use std::collections::HashMap;
use std::sync::Arc;

use crate::vault::shred_ledger::ledger_deks;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use super::*;
use crate::audit::Call;
use crate::authz::{self, Action, Permit};
use crate::crypto::{self, label};
use crate::error::{Error, Result};
use crate::ids::{SubjectId, TenantId};
use crate::keyring::{self, BlindId, Keyring, aad};
use crate::now_ms;
use crate::store::RecordCursor;

/// A decrypted record. The value zeroizes on drop.
/// One item of a subject's export after its header.
pub enum ExportItem {
    Record(RecordValue),
    Access(AccessEntry),
}

/// A call that touched the subject (GDPR Art. 15: who received the
/// person's data): from the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessEntry {
    pub seq: u64,
    pub time: i64,
    pub principal_id: String,
    pub principal_name: String,
    pub action: String,
    pub outcome: String,
    pub purpose: String,
}

/// The first item of a subject export.
pub struct ExportHeader {
    pub subject: Zeroizing<String>,
    pub subject_blind_id: BlindId,
    pub created_at: i64,
    /// The access history runs up to this audit entry: the calls before
    /// the export began.
    pub history_until: u64,
}

/// Why a subject's keys were destroyed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShredReason {
    /// A privacy officer's shred (the person's erasure request).
    Request,
    /// The subject's last record passed its retention window.
    Retention,
}

impl ShredReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ShredReason::Request => "request",
            ShredReason::Retention => "retention",
        }
    }
}

/// Destroys every live key of a subject (during a re-encryption the old
/// one still holds records too), erases its sealed id, and issues the MAC'd
/// receipt. The caller has checked holds.
pub(super) fn erase_subject(
    conn: &dyn Tx,
    keys: &Keyring,
    t: &str,
    blind: &[u8],
    reason: ShredReason,
) -> Result<DeletionReceipt> {
    let deks = conn.live_deks_of_owner(t, blind)?;
    let now = now_ms();
    let mut records = 0;
    for dek_id in &deks {
        records += conn.records_count_for_dek(dek_id)?;
        conn.dek_destroy(dek_id, now)?;
        conn.reencrypt_delete(dek_id)?;
    }
    conn.subject_erase(t, blind, now)?;
    let mut receipt = DeletionReceipt {
        receipt_id: keyring::new_id("rcpt"),
        tenant: t.to_owned(),
        subject_blind_id: blind.to_vec(),
        destroyed_key_ids: deks,
        records_made_unreadable: records,
        shredded_at: now,
        reason,
        mac: Vec::new(),
    };
    let body = receipt.canonical();
    receipt.mac = crypto::hmac_sha256(&keys.receipt_key(conn)?, &[&body]).to_vec();
    conn.receipt_insert(&receipt.receipt_id, t, blind, (&body, &receipt.mac), now)?;
    Ok(receipt)
}

pub(super) fn subject_not_found() -> Error {
    Error::NotFound("subject not found (never stored here, or erased)".into())
}

impl Vault {
    /// Exports a subject: the header now, then through the returned
    /// channel every record, then the subject's access history (every
    /// audited call that touched it), each read a page at a time.
    pub async fn export_subject(
        self: &Arc<Self>,
        permit: &Permit,
        call: &Arc<Call>,
        subject: SubjectId,
    ) -> Result<(ExportHeader, mpsc::Receiver<Result<ExportItem>>)> {
        // Memory per export stays bounded whatever the values' size: a page
        // read holds at most PAGE records and stops once PAGE_BYTES of
        // ciphertext are in; at most QUEUED values wait for the client.
        const PAGE: usize = 256;
        const PAGE_BYTES: usize = 4 << 20;
        const QUEUED: usize = 4;
        let tenant = permit.tenant_for(Action::SubjectExport)?.clone();
        let keys = self.keys.clone();
        let c = call.clone();
        let t = tenant.clone();
        let header = self
            .store
            .read(move |conn| {
                active_tenant(conn, &keys, &t)?;
                let blind = keys.blind_id(conn, &t, &subject)?;
                c.set_resource(format!("subject:{}", hex::encode(blind)));
                let row = conn
                    .subject_get(t.as_str(), &blind)?
                    .ok_or_else(subject_not_found)?;
                let (Some(dek_id), Some(sealed)) = (row.dek_id, row.sealed_subject) else {
                    return Err(subject_not_found());
                };
                let dek_row = named_dek(conn, &dek_id)?;
                let dek = keys
                    .dek(conn, &t, &dek_row)?
                    .ok_or_else(subject_not_found)?;
                let plain = crypto::open(
                    &dek,
                    label::SUBJECT_ID,
                    &aad::subject_id(t.as_str(), &blind, &dek_id),
                    &sealed,
                )
                .map_err(|_| {
                    Error::Corrupt("the sealed subject id failed authentication".into())
                })?;
                let subject = Zeroizing::new(
                    String::from_utf8(plain.to_vec())
                        .map_err(|_| Error::Corrupt("sealed subject id is not UTF-8".into()))?,
                );
                Ok(ExportHeader {
                    subject,
                    subject_blind_id: blind,
                    created_at: row.created_at,
                    history_until: conn.audit_last_seq()?,
                })
            })
            .await?;
        let (tx, rx) = mpsc::channel(QUEUED);
        let vault = self.clone();
        let owner = header.subject_blind_id.to_vec();
        let until = header.history_until;
        tokio::spawn(async move {
            let mut after: Option<RecordCursor> = None;
            loop {
                let (keys, t, o, a) = (
                    vault.keys.clone(),
                    tenant.clone(),
                    owner.clone(),
                    after.clone(),
                );
                let page = vault
                    .store
                    .read(move |conn| {
                        let rows = conn.record_list(
                            t.as_str(),
                            Some(&o),
                            None,
                            a.as_ref(),
                            PAGE,
                            PAGE_BYTES,
                        )?;
                        let last = rows.last().map(|r| RecordCursor {
                            owner: r.owner.clone(),
                            category: r.category.clone(),
                            key: r.key.clone(),
                        });
                        let mut out = Vec::with_capacity(rows.len());
                        for row in rows {
                            if let Some(v) = open_record(&keys, conn, &t, row)? {
                                out.push(v);
                            }
                        }
                        Ok((out, last))
                    })
                    .await;
                match page {
                    Ok((values, last)) => {
                        for v in values {
                            if tx.send(Ok(ExportItem::Record(v))).await.is_err() {
                                return;
                            }
                        }
                        match last {
                            Some(c) => after = Some(c),
                            None => break,
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
            vault
                .stream_access_history(&tenant, &owner, until, &tx)
                .await;
        });
        Ok((header, rx))
    }

    /// Sends the subject's access history, a page of audit entries at a
    /// time, principal ids resolved to names (once each).
    pub(super) async fn stream_access_history(
        &self,
        tenant: &TenantId,
        owner: &[u8],
        until: u64,
        tx: &mpsc::Sender<Result<ExportItem>>,
    ) {
        const PAGE: usize = 1000;
        let blind_hex = hex::encode(owner);
        let mut names: HashMap<String, String> = HashMap::new();
        let mut after = 0;
        loop {
            let (t, b, known) = (
                tenant.clone(),
                blind_hex.clone(),
                names
                    .keys()
                    .cloned()
                    .collect::<std::collections::HashSet<_>>(),
            );
            let page = self
                .store
                .read(move |conn| {
                    let rows = conn.audit_touching(t.as_str(), &b, (after, until), PAGE)?;
                    let mut found = HashMap::new();
                    for r in &rows {
                        if !known.contains(&r.principal) && !found.contains_key(&r.principal) {
                            let name = conn
                                .principal_get(&r.principal)?
                                .map_or_else(|| r.principal.clone(), |p| p.name);
                            found.insert(r.principal.clone(), name);
                        }
                    }
                    Ok((rows, found))
                })
                .await;
            let (rows, found) = match page {
                Ok(p) => p,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            names.extend(found);
            let full = rows.len() == PAGE;
            for r in rows {
                after = r.seq;
                let entry = AccessEntry {
                    principal_name: names.get(&r.principal).cloned().unwrap_or_default(),
                    seq: r.seq,
                    time: r.time,
                    principal_id: r.principal,
                    action: r.action,
                    outcome: r.outcome,
                    purpose: r.purpose,
                };
                if tx.send(Ok(ExportItem::Access(entry))).await.is_err() {
                    return;
                }
            }
            if !full {
                return;
            }
        }
    }

    /// Crypto-shreds a subject: destroys its data key (the records become
    /// unreadable at commit), erases its sealed id, and returns a MAC'd
    /// receipt. The ciphertext rows are purged after the call returns; the
    /// cost of the call does not depend on how many records there are.
    pub async fn shred_subject(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        subject: SubjectId,
    ) -> Result<DeletionReceipt> {
        let tenant = permit.tenant_for(Action::SubjectShred)?.clone();
        let keys = self.keys.clone();
        let c = call.clone();
        let receipt = self
            .mutate(call, move |conn| {
                let t = tenant.as_str();
                let trow = active_tenant(conn, &keys, &tenant)?;
                let blind = keys.blind_id(conn, &tenant, &subject)?;
                c.set_resource(format!("subject:{}", hex::encode(blind)));
                let row = conn.subject_get(t, &blind)?.ok_or_else(subject_not_found)?;
                if row.dek_id.is_none() {
                    // A retried deletion request: already done; the original
                    // receipt answers it (if it was issued with its subject).
                    let (body, mac) = conn
                        .receipt_latest(t, &blind)?
                        .ok_or_else(subject_not_found)?;
                    let expected = crypto::hmac_sha256(&keys.receipt_key(conn)?, &[&body]);
                    if !crypto::ct_eq(&expected, &mac) {
                        return Err(Error::Corrupt(
                            "the stored deletion receipt fails its MAC".into(),
                        ));
                    }
                    let receipt = DeletionReceipt::from_stored(&body, mac)
                        .ok_or_else(|| Error::Corrupt("a stored receipt is malformed".into()))?;
                    c.note_resource(&format!("repeat-of:{}", receipt.receipt_id));
                    return Ok((receipt, true));
                }
                holds::refuse_if_held(conn, &c, &trow, holds::Held::Owner(&blind), "subject")?;
                erase_subject(conn, &keys, t, &blind, ShredReason::Request).map(|r| (r, false))
            })
            .await?;
        let (receipt, repeat) = receipt;
        if repeat {
            return Ok(receipt);
        }
        for id in &receipt.destroyed_key_ids {
            self.keys.forget_dek(id);
        }
        self.ledger_record(ledger_deks(&receipt.tenant, &receipt.destroyed_key_ids))
            .await?;
        self.after_shred().await;
        Ok(receipt)
    }

    /// Whether `receipt` was issued by this vault and is unaltered.
    pub async fn verify_receipt(&self, permit: &Permit, receipt: DeletionReceipt) -> Result<bool> {
        let tenant = permit.tenant_for(Action::ReceiptVerify)?;
        if receipt.tenant != tenant.as_str() {
            return Err(authz::tenant_not_found(tenant));
        }
        let keys = self.keys.clone();
        let key = self.store.read(move |conn| keys.receipt_key(conn)).await?;
        let expected = crypto::hmac_sha256(&key, &[&receipt.canonical()]);
        Ok(crypto::ct_eq(&expected, &receipt.mac))
    }

    /// After a shred commits: truncate the WAL, which still holds the
    /// destroyed key's page images, and wake the purger.
    pub(super) async fn after_shred(&self) {
        if let Err(e) = self.store.checkpoint().await {
            tracing::warn!(error = %e, "WAL checkpoint after shred failed; housekeeping retries it");
        }
        self.purge_wanted.notify_one();
    }
}

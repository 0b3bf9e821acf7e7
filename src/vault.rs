//! The use-case layer: every operation Strongbox offers, joining `authz`
//! (each takes the [`Permit`] for its action), `keyring`, `crypto` and
//! `store`. Each mutation is one `Store::write` job, so its checks and its
//! changes commit atomically; the audit entry of a later issue joins that
//! same job. Nothing here knows about gRPC.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use crate::store::prelude::*;
use tokio::sync::{Notify, mpsc};
use zeroize::Zeroizing;

use crate::api_key;
use crate::audit::{self, Call};
use crate::authz::{self, Action, Permit, Principal, Role};
use crate::crypto::{self, SecretKey, label};
use crate::error::{Error, Result};
use crate::ids::{Category, ContentType, PrincipalName, RecordKey, SubjectId, TenantId};
use crate::integrity;
use crate::keyring::{self, BlindId, Keyring, aad};
use crate::now_ms;
use crate::store::{self, RecordAddr, RecordCursor, Store, TenantRow, TenantState};
use crate::tombstones::Tombstones;

mod admin_recovery;
mod audit_trail;
pub mod backup;
mod holds;
pub use holds::{HoldInfo, parse_reason as parse_hold_reason};
mod record_check;
mod restore;
pub use restore::Applied as RestoreApplied;
mod erasure;
mod gauges;
pub use erasure::{EpochRoll, ErasureSettings};
mod retention;
mod shred_ledger;
pub use record_check::RecordCheck;
pub use retention::{Preview as RetentionPreview, Retention, SWEEP_BATCH, SWEEP_PAUSE};
use shred_ledger::ledger_deks;

/// Limits and defaults the use cases enforce.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest record value accepted, in bytes.
    pub max_value_bytes: usize,
    /// Grace period of a tenant shred when the caller names none.
    pub default_shred_grace: Duration,
    /// A tenant KEK older than this is rotated automatically (unless the
    /// tenant's own policy says otherwise).
    pub rotation_max_age: Duration,
    /// ...or once it has made this many encryptions (well below 2^32).
    pub rotation_max_encryptions: u64,
    /// How long after an operator asks for a break-glass admin recovery
    /// it takes effect (the tenant's admins can call it off meanwhile).
    pub admin_recovery_delay: Duration,
    /// Refuse an operator-created admin unless its key comes from an
    /// enrolment (`strongbox enrol`), so the operator never holds one.
    pub require_admin_enrolment: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value_bytes: 1 << 20,
            default_shred_grace: Duration::from_secs(7 * 24 * 3600),
            rotation_max_age: Duration::from_secs(90 * 24 * 3600),
            rotation_max_encryptions: 1 << 30,
            admin_recovery_delay: Duration::from_secs(24 * 3600),
            require_admin_enrolment: false,
        }
    }
}

/// A tenant as callers see it.
#[derive(Clone, Debug)]
pub struct TenantInfo {
    pub id: String,
    pub name: String,
    pub state: TenantState,
    pub created_at: i64,
    pub shred_at: Option<i64>,
    pub kek_version: u32,
    /// When a pending break-glass admin recovery takes effect.
    pub admin_recovery_at: Option<i64>,
}

impl From<TenantRow> for TenantInfo {
    fn from(t: TenantRow) -> Self {
        TenantInfo {
            id: t.id,
            name: t.name,
            state: t.state,
            created_at: t.created_at,
            shred_at: t.shred_at,
            kek_version: t.kek_version,
            admin_recovery_at: t.admin_recovery_at,
        }
    }
}

pub use crate::api_key::ApiKey;

/// What a new principal is to be.
pub struct PrincipalSpec {
    pub name: PrincipalName,
    pub roles: Vec<Role>,
    pub expires_in_seconds: Option<u64>,
    /// Pin its keys to a client certificate with this common name (mTLS).
    pub cert_cn: Option<String>,
    /// Register this key (made by its holder) instead of issuing one.
    pub enrolment: Option<api_key::Enrolment>,
}

/// A tenant's key-encryption keys.
#[derive(Clone, Debug)]
pub struct TenantKeyStatus {
    pub current_version: u32,
    pub versions: Vec<store::KekRow>,
    /// Data keys still wrapped under versions older than the current one.
    pub data_keys_to_rewrap: u64,
    /// The rotation policy in force, and when the current KEK is next due.
    pub policy: RotationPolicy,
    pub next_rotation_due: i64,
    /// Data-key re-encryption jobs still running.
    pub reencrypt_jobs: u64,
    /// Records re-encryption skipped because they fail authentication.
    pub reencrypt_corrupt_records: u64,
    /// Data keys under older KEK versions are refused to calls (0: none).
    pub min_decryption_version: u32,
}

/// When a tenant's KEK is rotated automatically.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationPolicy {
    pub max_age_ms: i64,
    pub max_encryptions: u64,
    /// Whether these are the server's defaults (the tenant set none).
    pub default: bool,
}

impl RotationPolicy {
    fn effective(state: &store::RotationState, limits: &Limits) -> Self {
        RotationPolicy {
            max_age_ms: state
                .max_age_ms
                .unwrap_or(limits.rotation_max_age.as_millis() as i64),
            max_encryptions: state.max_wraps.unwrap_or(limits.rotation_max_encryptions),
            default: state.max_age_ms.is_none() && state.max_wraps.is_none(),
        }
    }

    /// Whether the current KEK in `state` is due at `now`.
    fn due(&self, state: &store::RotationState, now: i64) -> bool {
        state.created_at.saturating_add(self.max_age_ms) <= now
            || state.wraps >= self.max_encryptions
    }
}

/// Makes KEK version current+1 of `tenant` current, in the caller's job.
fn rotate_kek(keys: &Keyring, conn: &dyn Tx, tenant: &TenantId) -> Result<u32> {
    let row = active_tenant(conn, keys, tenant)?;
    let version = row.kek_version + 1;
    let (wrapped, epoch) = keys.new_kek(tenant, version)?;
    conn.kek_insert(tenant.as_str(), version, (&wrapped, epoch), now_ms())?;
    conn.tenant_set_kek_version(tenant.as_str(), version)?;
    integrity::seal_tenant(conn, keys, tenant.as_str())?;
    Ok(version)
}

/// A principal just created, with its one-time API key.
pub struct NewPrincipal {
    pub principal_id: String,
    pub key_id: String,
    /// `None` when the key came from an enrolment: its holder has it.
    pub api_key: Option<ApiKey>,
}

/// What a put stores.
pub struct PutRecord {
    pub subject: Option<SubjectId>,
    pub category: Category,
    pub key: RecordKey,
    pub value: Zeroizing<Vec<u8>>,
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

pub struct RecordValue {
    pub category: String,
    pub key: String,
    pub value: Zeroizing<Vec<u8>>,
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

/// The first item of a subject export.
pub struct ExportHeader {
    pub subject: Zeroizing<String>,
    pub subject_blind_id: BlindId,
    pub created_at: i64,
    /// The access history runs up to this audit entry: the calls before
    /// the export began.
    pub history_until: u64,
}

/// Proof of a subject shred, MAC'd under the vault's receipt key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletionReceipt {
    pub receipt_id: String,
    pub tenant: String,
    pub subject_blind_id: Vec<u8>,
    pub destroyed_key_ids: Vec<String>,
    pub records_made_unreadable: u64,
    pub shredded_at: i64,
    pub reason: ShredReason,
    pub mac: Vec<u8>,
}

impl DeletionReceipt {
    /// The bytes the MAC covers: every field but the MAC, length-prefixed.
    fn canonical(&self) -> Vec<u8> {
        let keys = self.destroyed_key_ids.join(",");
        let records = self.records_made_unreadable.to_be_bytes();
        let at = self.shredded_at.to_be_bytes();
        let mut fields: Vec<&[u8]> = vec![
            b"strongbox/v1/deletion-receipt",
            self.receipt_id.as_bytes(),
            self.tenant.as_bytes(),
            &self.subject_blind_id,
            keys.as_bytes(),
            &records,
            &at,
        ];
        // A reason other than the person's request is appended after its
        // name, so every receipt issued before reasons existed verifies.
        if self.reason != ShredReason::Request {
            fields.extend([&b"reason"[..], self.reason.as_str().as_bytes()]);
        }
        crypto::encode_fields(&fields)
    }

    /// A stored receipt back from its canonical bytes and MAC.
    fn from_stored(body: &[u8], mac: Vec<u8>) -> Option<DeletionReceipt> {
        let f = crypto::decode_fields(body)?;
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let reason = match f.get(7..) {
            None | Some([]) => ShredReason::Request,
            Some([name, r]) if name == b"reason" && r == b"retention" => ShredReason::Retention,
            _ => return None,
        };
        if f.first()?.as_slice() != b"strongbox/v1/deletion-receipt" {
            return None;
        }
        let keys = text(f.get(4)?)?;
        Some(DeletionReceipt {
            receipt_id: text(f.get(1)?)?,
            tenant: text(f.get(2)?)?,
            subject_blind_id: f.get(3)?.clone(),
            destroyed_key_ids: if keys.is_empty() {
                Vec::new()
            } else {
                keys.split(',').map(str::to_owned).collect()
            },
            records_made_unreadable: u64::from_be_bytes(f.get(5)?.as_slice().try_into().ok()?),
            shredded_at: i64::from_be_bytes(f.get(6)?.as_slice().try_into().ok()?),
            reason,
            mac,
        })
    }
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
fn erase_subject(
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

/// The vault: storage, keys and limits.
pub struct Vault {
    store: Store,
    keys: Arc<Keyring>,
    limits: Limits,
    purge_wanted: Notify,
    auth_cache: std::sync::Mutex<AuthCache>,
    root_rotation: tokio::sync::Mutex<()>,
    /// The audit chain's anchor outside the database (none: not anchored,
    /// for library use such as the benches).
    anchor: Option<Arc<audit::anchor::Anchor>>,
    anchor_wanted: Notify,
    /// Set when the server shuts down: background passes stop between
    /// batches (their progress is in the rows) instead of holding it up.
    stopping: std::sync::atomic::AtomicBool,
    /// Background jobs already reported as blocked by a legal hold.
    held_reported: std::sync::Mutex<std::collections::HashSet<String>>,
    /// The shred ledger, once opened (the server opens it; library use
    /// may run without).
    ledger: std::sync::OnceLock<Arc<crate::ledger::Ledger>>,
    /// Erasure epochs, once opened (the server opens them).
    erasure: std::sync::OnceLock<ErasureSettings>,
}

/// Where a vault anchors its audit chain, and how strictly it opens it.
#[derive(Clone, Debug)]
pub enum AuditAnchor {
    /// No anchor (library use: benches, unit tests).
    None,
    /// The anchor file; the chain must match it, or the vault does not open.
    Check(std::path::PathBuf),
    /// The anchor file, for `strongbox audit accept-loss`: the chain is
    /// known to be broken; an anchor file that is itself broken is moved
    /// aside and started afresh.
    Accept(std::path::PathBuf),
}

/// Verified API keys by key id, and tombstones of keys revoked and tenants
/// shredded recently (so a verification that raced a revocation or a
/// tenant shred cannot re-cache the key).
struct AuthCache {
    keys: HashMap<String, CachedKey>,
    /// Key ids storage did not know, lately: a flood of one bad key costs a
    /// storage read per `UNKNOWN_KEY_TTL`, not per call. Bounded; when full
    /// of fresh entries, lookups just go to storage (fails open).
    unknown: HashMap<String, std::time::Instant>,
    revoked: Tombstones<String>,
    shredded_tenants: Tombstones<String>,
}

impl Default for AuthCache {
    fn default() -> Self {
        AuthCache {
            keys: HashMap::new(),
            unknown: HashMap::new(),
            revoked: Tombstones::new(MAX_CACHED_API_KEYS),
            shredded_tenants: Tombstones::new(MAX_CACHED_API_KEYS),
        }
    }
}

impl AuthCache {
    /// Caches a verified key unless it was revoked or its tenant shredded
    /// since; at the bound, one arbitrary entry makes room.
    fn admit(&mut self, key_id: &str, entry: CachedKey) {
        if !self.revoked.admits(&key_id.to_owned()) {
            return;
        }
        if let Some(t) = &entry.principal.tenant
            && !self.shredded_tenants.admits(&t.as_str().to_owned())
        {
            return;
        }
        if self.keys.len() >= MAX_CACHED_API_KEYS
            && let Some(evict) = self.keys.keys().next().cloned()
        {
            self.keys.remove(&evict);
        }
        self.keys.insert(key_id.to_owned(), entry);
    }

    /// Ends every cached key of a shredded tenant, for good.
    fn forget_tenant(&mut self, tenant: &TenantId) {
        self.keys
            .retain(|_, k| k.principal.tenant.as_ref() != Some(tenant));
        self.shredded_tenants.insert(tenant.as_str().to_owned());
    }

    /// Ends a revoked key, for good.
    fn revoke(&mut self, key_id: &str) {
        self.keys.remove(key_id);
        self.revoked.insert(key_id.to_owned());
    }
}

/// A verified API key, kept so that each call need not read it again. Holds
/// the secret's hash, never the secret. Dropped when its tenant is shredded
/// (and, with the key lifecycle, when the key is revoked).
struct CachedKey {
    secret_hash: [u8; 32],
    expires_at: Option<i64>,
    principal: Principal,
    /// When `last_used_at` was last written for this key.
    last_touched: i64,
}

/// `last_used_at` is written at most this often per key.
const TOUCH_EVERY_MS: i64 = 60_000;

/// API keys cached at most (and live revocation and tenant-shred
/// tombstones kept at most); past it one entry makes room.
const MAX_CACHED_API_KEYS: usize = 10_000;

/// The tenant row, if the tenant exists and is active.
fn active_tenant(conn: &dyn Tx, keys: &Keyring, tenant: &TenantId) -> Result<TenantRow> {
    let row = integrity::tenant(conn, keys, tenant.as_str())?
        .ok_or_else(|| authz::tenant_not_found(tenant))?;
    match row.state {
        TenantState::Active => Ok(row),
        TenantState::ShredScheduled => Err(Error::FailedPrecondition(format!(
            "tenant '{tenant}' is suspended: its shred is scheduled for {}; an operator can run `strongbox tenant cancel-shred {tenant}`",
            fmt_time(row.shred_at.unwrap_or_default())
        ))),
        TenantState::Shredded => Err(Error::FailedPrecondition(format!(
            "tenant '{tenant}' has been shredded; its keys are destroyed"
        ))),
    }
}

/// An RFC 3339 rendering of a Unix-millisecond time.
/// How long a key id storage did not know is answered from memory, and how
/// many such ids are kept. Making any API key clears them all (a key from
/// `strongbox enrol` may be tried before its principal exists).
const UNKNOWN_KEY_TTL: Duration = Duration::from_secs(10);
const MAX_UNKNOWN_KEYS: usize = 10_000;

pub fn fmt_time(unix_ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// How the audit log names a record: owner (blind id, or `tenant`),
/// category, key.
fn record_resource(owner: &[u8], category: &str, key: &str) -> String {
    let owner = if owner.is_empty() {
        "tenant".to_owned()
    } else {
        hex::encode(owner)
    };
    format!("record:{owner}/{category}/{key}")
}

/// Whether data key `id` exists and is not destroyed.
fn dek_alive(conn: &dyn Tx, id: &str) -> Result<bool> {
    Ok(conn.dek_get(id)?.and_then(|d| d.wrapped).is_some())
}

/// The data-key row that a stored row (subject, record, tenant, job) names.
/// Its absence is one broken state with one meaning everywhere: the stored
/// rows are damaged (DATA_LOSS).
fn named_dek(conn: &dyn Tx, id: &str) -> Result<store::DekRow> {
    conn.dek_get(id)?.ok_or_else(|| {
        Error::Corrupt(format!(
            "data key {id}, named by a stored row, does not exist: the stored rows are damaged"
        ))
    })
}

fn record_not_found(category: &str, key: &str) -> Error {
    Error::NotFound(format!(
        "record not found: category '{category}', key '{key}'"
    ))
}

fn subject_not_found() -> Error {
    Error::NotFound("subject not found (never stored here, or erased)".into())
}

fn check_expected_version(expected: Option<u64>, live: Option<u64>) -> Result<()> {
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
fn owner_of(
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
fn open_record(
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

fn encode_cursor(c: &RecordCursor) -> String {
    hex::encode(crypto::encode_fields(&[
        &c.owner,
        c.category.as_bytes(),
        c.key.as_bytes(),
    ]))
}

fn decode_cursor(token: &str) -> Result<Option<RecordCursor>> {
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

/// A `ListTenants` page token: the last tenant id of the page, tagged, so
/// that a tenant-shaped string the server never issued is refused.
fn encode_tenant_cursor(last: &str) -> String {
    hex::encode(crypto::encode_fields(&[b"tenants", last.as_bytes()]))
}

/// The tenant id a `ListTenants` page token continues after ("" for none).
fn decode_tenant_cursor(token: &str) -> Result<String> {
    if token.is_empty() {
        return Ok(String::new());
    }
    let bad = || Error::invalid("page_token", "is not a token this server issued");
    let bytes = hex::decode(token).map_err(|_| bad())?;
    match crypto::decode_fields(&bytes).as_deref() {
        Some([tag, id]) if tag == b"tenants" => {
            let id = String::from_utf8(id.clone()).map_err(|_| bad())?;
            TenantId::parse(&id).map_err(|_| bad())?;
            Ok(id)
        }
        _ => Err(bad()),
    }
}

/// Who a new principal is.
struct NewPrincipalRow<'a> {
    tenant: Option<&'a TenantId>,
    name: &'a str,
    roles: &'a [Role],
    cert_cn: Option<&'a str>,
}

fn insert_principal(
    conn: &dyn Tx,
    keys: &Keyring,
    p: NewPrincipalRow<'_>,
    now: i64,
) -> Result<String> {
    let NewPrincipalRow {
        tenant,
        name,
        roles,
        cert_cn,
    } = p;
    let principal_id = keyring::new_id("prn");
    let mut row = store::PrincipalRow {
        id: principal_id.clone(),
        tenant_id: tenant.map(|t| t.as_str().to_owned()),
        name: name.to_owned(),
        roles: roles
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(","),
        created_at: now,
        cert_cn: cert_cn.map(str::to_owned),
        mac: None,
    };
    row.mac = Some(integrity::principal_mac(&*keys.state_key(conn)?, &row).to_vec());
    conn.principal_insert(&row)?;
    Ok(principal_id)
}

/// Stores an issued key's hash for `principal_id`.
fn insert_api_key(
    conn: &dyn Tx,
    keys: &Keyring,
    principal_id: &str,
    key_id: &str,
    hash: &[u8; 32],
    now: i64,
    expires_at: Option<i64>,
) -> Result<()> {
    let mut row = store::ApiKeyRow {
        key_id: key_id.to_owned(),
        principal_id: principal_id.to_owned(),
        secret_hash: hash.to_vec(),
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
        mac: None,
    };
    row.mac = Some(integrity::api_key_mac(&*keys.state_key(conn)?, &row).to_vec());
    conn.api_key_insert(&row)
}

/// A tenant's principals and their API keys, every row's MAC checked.
fn tenant_principals(
    conn: &dyn Tx,
    keys: &Keyring,
    tenant: &TenantId,
) -> Result<(Vec<store::PrincipalRow>, Vec<store::ApiKeyRow>)> {
    let key = keys.state_key(conn)?;
    let principals = conn.principals_of_tenant(tenant.as_str())?;
    for p in &principals {
        integrity::check_principal(&key, p)?;
    }
    let api_keys = conn.api_keys_of_tenant(tenant.as_str())?;
    for k in &api_keys {
        integrity::check_api_key(&key, k)?;
    }
    Ok((principals, api_keys))
}

/// An expiry `secs` from now, if given.
fn expiry(secs: Option<u64>) -> Result<Option<i64>> {
    secs.map(|s| {
        i64::try_from(s)
            .ok()
            .and_then(|s| s.checked_mul(1000))
            .and_then(|ms| now_ms().checked_add(ms))
            .ok_or_else(|| Error::invalid("expires_in_seconds", "is too large"))
    })
    .transpose()
}

/// An API key's metadata (never its secret or hash).
#[derive(Clone, Debug)]
pub struct ApiKeyInfo {
    pub key_id: String,
    pub principal_id: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl From<store::ApiKeyRow> for ApiKeyInfo {
    fn from(k: store::ApiKeyRow) -> Self {
        ApiKeyInfo {
            key_id: k.key_id,
            principal_id: k.principal_id,
            created_at: k.created_at,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
        }
    }
}

/// A principal and its keys.
#[derive(Clone, Debug)]
pub struct PrincipalInfo {
    pub principal_id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: i64,
    pub keys: Vec<ApiKeyInfo>,
}

fn key_not_found(key_id: &str) -> Error {
    Error::NotFound(format!("API key '{key_id}' not found"))
}

impl Vault {
    /// Opens the vault over `store` with keys under `keys`: checks the root
    /// key against the database and makes the vault-wide keys on first start.
    pub async fn open(
        store: Store,
        keys: Arc<Keyring>,
        limits: Limits,
        anchor: AuditAnchor,
    ) -> Result<Arc<Self>> {
        let k = keys.clone();
        let anchor = store
            .write(move |conn| {
                k.check_root(conn)?;
                k.ensure_vault_keys(conn)?;
                integrity::seal_unsealed(conn, &k)?;
                match anchor {
                    AuditAnchor::None => Ok(None),
                    AuditAnchor::Check(path) => audit_trail::open_anchor(conn, &k, &path).map(Some),
                    AuditAnchor::Accept(path) => {
                        audit_trail::open_anchor_for_repair(conn, &k, &path).map(Some)
                    }
                }
            })
            .await?;
        Ok(Arc::new(Vault {
            store,
            keys,
            limits,
            purge_wanted: Notify::new(),
            auth_cache: std::sync::Mutex::new(AuthCache::default()),
            root_rotation: tokio::sync::Mutex::new(()),
            anchor: anchor.map(Arc::new),
            anchor_wanted: Notify::new(),
            stopping: std::sync::atomic::AtomicBool::new(false),
            held_reported: std::sync::Mutex::new(std::collections::HashSet::new()),
            ledger: std::sync::OnceLock::new(),
            erasure: std::sync::OnceLock::new(),
        }))
    }

    fn auth_cache(&self) -> MutexGuard<'_, AuthCache> {
        // Entries are inserted and removed whole; a poisoned lock holds no
        // half-made entry.
        self.auth_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keys
    }

    /// On a vault with no principals, creates the bootstrap operator and
    /// writes its API key to `key_file` (mode 0600). The key is written to
    /// a temporary file before the commit and renamed after it, so a crash
    /// leaves either no operator or a usable key file.
    pub async fn bootstrap_operator(&self, key_file: &Path) -> Result<bool> {
        let tmp = key_file.with_extension("key.tmp");
        let has_principals = self.store.read(|tx| tx.principal_count()).await? > 0;
        if has_principals {
            if tmp.exists() && !key_file.exists() {
                std::fs::rename(&tmp, key_file).map_err(|e| io_error(key_file, e))?;
            }
            return Ok(false);
        }
        let _ = std::fs::remove_file(&tmp);
        let (key_id, api_key, hash) = api_key::issue();
        write_secret_file(&tmp, api_key.expose()).map_err(|e| io_error(&tmp, e))?;
        let keys = self.keys.clone();
        let created = self
            .store
            .write(move |conn| {
                let now = now_ms();
                let who = NewPrincipalRow {
                    tenant: None,
                    name: "bootstrap-operator",
                    roles: &[Role::Operator],
                    cert_cn: None,
                };
                let id = insert_principal(conn, &keys, who, now)?;
                insert_api_key(conn, &keys, &id, &key_id, &hash, now, None)
            })
            .await;
        if let Err(e) = created {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, key_file).map_err(|e| io_error(key_file, e))?;
        self.auth_cache().unknown.clear();
        Ok(true)
    }

    /// Checks an API key (`sbk_<id>_<secret>`) and returns its principal.
    /// Every failure gives the same answer, so the response tells an
    /// attacker nothing about which part was wrong.
    pub async fn authenticate(&self, bearer: &str) -> Result<Principal> {
        const INVALID: &str = "invalid API key";
        let (key_id, secret) = api_key::parse(bearer).ok_or(Error::Unauthenticated(INVALID))?;
        let presented = crypto::sha256(secret.as_bytes());
        let now = now_ms();
        let live = |expires_at: Option<i64>| expires_at.is_none_or(|t| t > now);
        let cached = {
            let mut cache = self.auth_cache();
            match cache.keys.get_mut(key_id) {
                Some(hit)
                    if crypto::ct_eq(&presented, &hit.secret_hash) && live(hit.expires_at) =>
                {
                    let touch = now - hit.last_touched >= TOUCH_EVERY_MS;
                    if touch {
                        hit.last_touched = now;
                    }
                    Some(Ok((hit.principal.clone(), touch)))
                }
                Some(_) => Some(Err(Error::Unauthenticated(INVALID))),
                None => None,
            }
        };
        if let Some(hit) = cached {
            let (principal, touch) = hit?;
            if touch {
                self.touch(key_id);
            }
            return Ok(principal);
        }
        if self
            .auth_cache()
            .unknown
            .get(key_id)
            .is_some_and(|at| at.elapsed() < UNKNOWN_KEY_TTL)
        {
            return Err(Error::Unauthenticated(INVALID));
        }
        let (id, keys) = (key_id.to_owned(), self.keys.clone());
        let found = self
            .store
            .read(move |c| integrity::api_key(c, &keys, &id))
            .await?;
        let Some((key, p)) = found else {
            let mut cache = self.auth_cache();
            if cache.unknown.len() >= MAX_UNKNOWN_KEYS {
                cache.unknown.retain(|_, at| at.elapsed() < UNKNOWN_KEY_TTL);
            }
            if cache.unknown.len() < MAX_UNKNOWN_KEYS {
                cache
                    .unknown
                    .insert(key_id.to_owned(), std::time::Instant::now());
            }
            return Err(Error::Unauthenticated(INVALID));
        };
        if !crypto::ct_eq(&presented, &key.secret_hash)
            || key.revoked_at.is_some()
            || !live(key.expires_at)
        {
            return Err(Error::Unauthenticated(INVALID));
        }
        let roles = p
            .roles
            .split(',')
            .map(Role::parse)
            .collect::<Result<Vec<_>>>()
            .map_err(|_| Error::Internal(format!("principal {} has an unknown role", p.id)))?;
        let tenant = match p.tenant_id {
            Some(t) => Some(
                TenantId::parse(&t)
                    .map_err(|_| Error::Internal("stored tenant id is invalid".into()))?,
            ),
            None => None,
        };
        let principal = Principal {
            id: p.id,
            name: p.name,
            tenant,
            roles,
            cert_cn: p.cert_cn,
        };
        self.auth_cache().admit(
            &key.key_id,
            CachedKey {
                secret_hash: presented,
                expires_at: key.expires_at,
                principal: principal.clone(),
                last_touched: now,
            },
        );
        if key.last_used_at.is_none_or(|t| now - t >= TOUCH_EVERY_MS) {
            self.touch(&key.key_id);
        }
        Ok(principal)
    }

    /// Records that a key was used, in the background: bookkeeping, not a
    /// call, so it has no audit entry and its failure fails nothing.
    fn touch(&self, key_id: &str) {
        let (store, id) = (self.store.clone(), key_id.to_owned());
        tokio::spawn(async move {
            if let Err(e) = store.write(move |c| c.api_key_touch(&id, now_ms())).await {
                tracing::debug!(error = %e, "recording an API key's last use failed");
            }
        });
    }

    // ----- tenants -------------------------------------------------------

    /// Creates a tenant with its index key, KEK v1 and tenant-level data key.
    pub async fn create_tenant(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        tenant: TenantId,
        name: String,
    ) -> Result<TenantInfo> {
        permit.require(Action::TenantCreate)?;
        if name.len() > 256 || name.chars().any(char::is_control) {
            return Err(Error::invalid(
                "name",
                "must be at most 256 bytes without control characters",
            ));
        }
        // Keys are made inside the job: serialized with a root rotation.
        let keyring = self.keys.clone();
        self.mutate(call, move |conn| {
            let t = tenant.as_str();
            if conn.tenant_get(t)?.is_some() {
                return Err(Error::AlreadyExists(format!("tenant '{t}' already exists")));
            }
            let keys = keyring.new_tenant_keys(&tenant)?;
            let now = now_ms();
            let mut row = TenantRow {
                id: t.to_owned(),
                name,
                state: TenantState::Active,
                created_at: now,
                shred_at: None,
                kek_version: keys.kek_version,
                wrapped_index_key: Some(keys.wrapped_index_key.clone()),
                dek_id: Some(keys.dek.id.clone()),
                min_decrypt_version: 0,
                rotate_after_ms: None,
                rotate_after_wraps: None,
                admin_recovery_at: None,
                holds_digest: None,
                mac: None,
            };
            row.mac = Some(integrity::tenant_mac(&*keyring.state_key(conn)?, &row).to_vec());
            conn.tenant_insert(&row)?;
            conn.kek_insert(t, keys.kek_version, (&keys.wrapped_kek, keys.epoch), now)?;
            conn.set_tenant_key_wrap(t, None, &keys.wrapped_index_key, keys.epoch)?;
            conn.dek_insert(&keys.dek, now)?;
            Ok(row.into())
        })
        .await
    }

    pub async fn get_tenant(&self, permit: &Permit) -> Result<TenantInfo> {
        let tenant = permit.tenant_for(Action::TenantGet)?.clone();
        self.tenant_info(tenant).await
    }

    /// Tenant `tenant` as stored (after a use case that checked its permit).
    async fn tenant_info(&self, tenant: TenantId) -> Result<TenantInfo> {
        let keys = self.keys.clone();
        self.store
            .read(move |c| {
                integrity::tenant(c, &keys, tenant.as_str())?
                    .map(TenantInfo::from)
                    .ok_or_else(|| authz::tenant_not_found(&tenant))
            })
            .await
    }

    /// A page of tenants in id order, and the token of the next page.
    pub async fn list_tenants(
        &self,
        permit: &Permit,
        page_size: usize,
        token: String,
    ) -> Result<(Vec<TenantInfo>, String)> {
        permit.require(Action::TenantList)?;
        let token = decode_tenant_cursor(&token)?;
        let keys = self.keys.clone();
        let mut rows = self
            .store
            .read(move |c| {
                let rows = c.tenant_list(&token, page_size + 1)?;
                let key = keys.state_key(c)?;
                for r in &rows {
                    integrity::check_tenant(&key, r)?;
                }
                Ok(rows)
            })
            .await?;
        let next = if rows.len() > page_size {
            rows.truncate(page_size);
            rows.last()
                .map(|t| encode_tenant_cursor(&t.id))
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok((rows.into_iter().map(TenantInfo::from).collect(), next))
    }

    /// Suspends the tenant and schedules the destruction of its keys after
    /// `grace` (the default if `None`); a zero grace shreds at once.
    pub async fn schedule_tenant_shred(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        grace: Option<Duration>,
    ) -> Result<TenantInfo> {
        let tenant = permit.tenant_for(Action::TenantShred)?.clone();
        let grace = grace.unwrap_or(self.limits.default_shred_grace);
        let grace_ms = i64::try_from(grace.as_millis())
            .map_err(|_| Error::invalid("grace_seconds", "is too large"))?;
        let t = tenant.clone();
        let keys = self.keys.clone();
        let c = call.clone();
        let info = self
            .mutate(call, move |conn| {
                let row = integrity::tenant(conn, &keys, t.as_str())?
                    .ok_or_else(|| authz::tenant_not_found(&t))?;
                // A retried request (a queue, a runbook after a timeout):
                // the schedule already made, or the shred already done,
                // answers it unchanged; the entry says it was a repeat.
                if row.state != TenantState::Active {
                    c.note_resource(&format!("repeat-of:{}", row.state.as_str()));
                    return Ok((row.into(), true));
                }
                holds::refuse_if_held(
                    conn,
                    &c,
                    &row,
                    holds::Held::Tenant,
                    &format!("tenant '{t}'"),
                )?;
                let at = now_ms().saturating_add(grace_ms);
                conn.tenant_set_state(t.as_str(), TenantState::ShredScheduled, Some(at))?;
                integrity::seal_tenant(conn, &keys, t.as_str())?;
                Ok((
                    TenantInfo {
                        state: TenantState::ShredScheduled,
                        shred_at: Some(at),
                        ..row.into()
                    },
                    false,
                ))
            })
            .await?;
        let (info, repeat) = info;
        if grace.is_zero() && !repeat {
            self.execute_tenant_shred(&tenant).await?;
            return self.tenant_info(tenant).await;
        }
        Ok(info)
    }

    pub async fn cancel_tenant_shred(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
    ) -> Result<TenantInfo> {
        let tenant = permit.tenant_for(Action::TenantCancelShred)?.clone();
        let keys = self.keys.clone();
        self.mutate(call, move |conn| {
            let row = integrity::tenant(conn, &keys, tenant.as_str())?
                .ok_or_else(|| authz::tenant_not_found(&tenant))?;
            if row.state != TenantState::ShredScheduled {
                return Err(Error::FailedPrecondition(format!(
                    "tenant '{tenant}' has no shred scheduled (it is {})",
                    match row.state {
                        TenantState::Shredded => "already shredded",
                        _ => "active",
                    }
                )));
            }
            conn.tenant_set_state(tenant.as_str(), TenantState::Active, None)?;
            integrity::seal_tenant(conn, &keys, tenant.as_str())?;
            Ok(TenantInfo {
                state: TenantState::Active,
                shred_at: None,
                ..row.into()
            })
        })
        .await
    }

    /// Destroys every key of a tenant whose shred is due. Returns whether it
    /// ran (false if cancelled or not yet due).
    async fn execute_tenant_shred(&self, tenant: &TenantId) -> Result<bool> {
        let call = Arc::new(Call::system("tenant.shred.execute"));
        call.set_tenant(tenant.as_str());
        call.set_resource(format!("tenant:{tenant}"));
        let t = tenant.clone();
        let keys = self.keys.clone();
        let destroyed = self
            .mutate(&call, move |conn| {
                let now = now_ms();
                match integrity::tenant(conn, &keys, t.as_str())? {
                    Some(row)
                        if row.state == TenantState::ShredScheduled
                            && row.shred_at.is_some_and(|at| at <= now) =>
                    {
                        // A hold placed since the pre-check: skip this pass.
                        if holds::blocking(conn, &row, holds::Held::Tenant)?.is_some() {
                            return Ok(None);
                        }
                        let destroyed = conn.tenant_destroy(t.as_str(), now)?;
                        conn.holds_delete_tenant(t.as_str())?;
                        integrity::seal_tenant(conn, &keys, t.as_str())?;
                        Ok(Some(destroyed))
                    }
                    _ => Ok(None),
                }
            })
            .await?;
        let Some(destroyed) = destroyed else {
            return Ok(false);
        };
        self.keys.forget_tenant(tenant);
        self.auth_cache().forget_tenant(tenant);
        self.ledger_record(vec![crate::ledger::Destroyed::Tenant {
            tenant: tenant.as_str().to_owned(),
        }])
        .await?;
        tracing::info!(
            tenant = %tenant,
            kek_versions = ?destroyed.kek_versions,
            data_keys = destroyed.data_keys,
            "tenant shredded: every key destroyed"
        );
        self.after_shred().await;
        Ok(true)
    }

    /// Runs every tenant shred whose grace period has ended.
    pub async fn run_due_tenant_shreds(&self) -> Result<usize> {
        let due = self
            .store
            .read(|c| c.tenants_due_for_shred(now_ms()))
            .await?;
        let mut ran = 0;
        for id in due {
            let tenant = TenantId::parse(&id)
                .map_err(|_| Error::Internal("stored tenant id is invalid".into()))?;
            let resource = format!("tenant:{tenant}");
            if self
                .held_for_job("tenant.shred.execute", &id, None, resource)
                .await?
                .is_some()
            {
                continue;
            }
            if self.execute_tenant_shred(&tenant).await? {
                ran += 1;
            }
        }
        Ok(ran)
    }

    // ----- key lifecycle -------------------------------------------------

    /// Rotates the tenant's KEK: a new version, used at once for new data
    /// keys; the rewrap job moves the existing ones over in the background.
    pub async fn rotate_tenant_key(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
    ) -> Result<TenantKeyStatus> {
        let tenant = permit.tenant_for(Action::KeyRotate)?.clone();
        let (keys, t) = (self.keys.clone(), tenant.clone());
        self.mutate(call, move |conn| rotate_kek(&keys, conn, &t).map(drop))
            .await?;
        self.purge_wanted.notify_one();
        self.key_status_of(tenant).await
    }

    /// Every KEK version of the permit's tenant and how much uses it.
    pub async fn key_status(&self, permit: &Permit) -> Result<TenantKeyStatus> {
        let tenant = permit.tenant_for(Action::KeyStatus)?.clone();
        self.key_status_of(tenant).await
    }

    /// Every KEK version of `tenant` and how much uses it (after a use case
    /// that checked its own permit).
    async fn key_status_of(&self, tenant: TenantId) -> Result<TenantKeyStatus> {
        let limits = self.limits.clone();
        let keys = self.keys.clone();
        self.store
            .read(move |conn| {
                let row = integrity::tenant(conn, &keys, tenant.as_str())?
                    .ok_or_else(|| authz::tenant_not_found(&tenant))?;
                let versions = conn.keks_of_tenant(tenant.as_str())?;
                let (policy, next_rotation_due) = match conn.rotation_state(tenant.as_str())? {
                    Some(st) => {
                        let p = RotationPolicy::effective(&st, &limits);
                        (p, st.created_at.saturating_add(p.max_age_ms))
                    }
                    // A shredded tenant has no KEK and no policy in force.
                    None => (
                        RotationPolicy {
                            max_age_ms: 0,
                            max_encryptions: 0,
                            default: true,
                        },
                        0,
                    ),
                };
                let mut versions = versions;
                let pending = keys.pending_kek_use(tenant.as_str());
                for v in &mut versions {
                    if let Some(at) = pending.get(&v.version) {
                        v.last_used_at = Some(v.last_used_at.unwrap_or(0).max(*at));
                    }
                }
                let to_rewrap = versions
                    .iter()
                    .filter(|v| v.version < row.kek_version)
                    .map(|v| v.data_keys)
                    .sum();
                Ok(TenantKeyStatus {
                    current_version: row.kek_version,
                    versions,
                    data_keys_to_rewrap: to_rewrap,
                    policy,
                    next_rotation_due,
                    reencrypt_jobs: conn.reencrypt_jobs_of(tenant.as_str())?.len() as u64,
                    reencrypt_corrupt_records: conn.corrupt_records(tenant.as_str())?,
                    min_decryption_version: row.min_decrypt_version,
                })
            })
            .await
    }

    /// Starts re-encrypting one subject's records (or every subject's and
    /// the tenant-level records) under fresh data keys, for a suspected
    /// data-key compromise. New writes use the fresh keys at once; the job
    /// moves existing records, then destroys the old keys. Returns how
    /// many jobs it started (owners already being re-encrypted are left to
    /// their running job).
    pub async fn start_reencrypt(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        subject: Option<SubjectId>,
    ) -> Result<usize> {
        let tenant = permit.tenant_for(Action::KeyReencrypt)?.clone();
        let keys = self.keys.clone();
        let c = call.clone();
        let started = self
            .mutate(call, move |conn| {
                let t = tenant.as_str();
                let trow = active_tenant(conn, &keys, &tenant)?;
                let owners = match &subject {
                    Some(s) => {
                        let blind = keys.blind_id(conn, &tenant, s)?;
                        c.set_resource(format!("subject:{}", hex::encode(blind)));
                        let row = conn.subject_get(t, &blind)?.ok_or_else(subject_not_found)?;
                        vec![(blind.to_vec(), row.dek_id.ok_or_else(subject_not_found)?)]
                    }
                    None => conn.owners_of_tenant(t)?,
                };
                let running = conn.reencrypt_jobs_of(t)?;
                let now = now_ms();
                let mut started = 0;
                for (owner, old) in owners {
                    if running.iter().any(|(_, new)| *new == old) {
                        continue;
                    }
                    let (row, dek) = keys.new_dek(conn, &tenant, &owner, trow.kek_version)?;
                    conn.dek_insert(&row, now)?;
                    if owner.is_empty() {
                        conn.set_tenant_dek(t, &row.id)?;
                        integrity::seal_tenant(conn, &keys, t)?;
                    } else {
                        // The sealed subject id moves to the new key too.
                        let subject_row =
                            conn.subject_get(t, &owner)?.ok_or_else(subject_not_found)?;
                        let sealed = subject_row.sealed_subject.ok_or_else(subject_not_found)?;
                        let old_row = named_dek(conn, &old)?;
                        let old_key = keys
                            .dek_for_job(conn, &tenant, &old_row)?
                            .ok_or_else(subject_not_found)?;
                        let plain = crypto::open(
                            &old_key,
                            label::SUBJECT_ID,
                            &aad::subject_id(t, &owner, &old),
                            &sealed,
                        )
                        .map_err(|_| {
                            Error::Corrupt("the sealed subject id failed authentication".into())
                        })?;
                        let resealed = crypto::seal(
                            &dek,
                            label::SUBJECT_ID,
                            &aad::subject_id(t, &owner, &row.id),
                            &plain,
                        );
                        conn.set_subject_dek(t, &owner, &row.id, &resealed)?;
                    }
                    keys.remember_dek(&tenant, &row.id, &dek);
                    conn.reencrypt_insert(
                        &store::ReencryptJob {
                            old_dek: old,
                            new_dek: row.id,
                            tenant_id: t.to_owned(),
                            owner,
                        },
                        now,
                    )?;
                    started += 1;
                }
                Ok(started)
            })
            .await?;
        self.purge_wanted.notify_one();
        Ok(started)
    }

    /// One pass of the re-encryption jobs: moves records from each job's
    /// old data key to its new one, `batch` per transaction with `pause`
    /// between, and when none are left destroys the old key. Progress is
    /// the rows themselves and the job table: it resumes after a restart.
    /// Returns the records moved.
    pub async fn reencrypt_pass(&self, batch: usize, pause: Duration) -> Result<usize> {
        let jobs = self.store.read(|tx| tx.reencrypt_jobs()).await?;
        let mut moved = 0;
        for job in jobs {
            loop {
                let (keys, j) = (self.keys.clone(), job.clone());
                let n = self
                    .store
                    .write(move |conn| {
                        let tenant = TenantId::parse(&j.tenant_id)
                            .map_err(|_| Error::Internal("stored tenant id is invalid".into()))?;
                        let t = tenant.as_str();
                        let key = |id: &str| -> Result<Option<Arc<SecretKey>>> {
                            match conn.dek_get(id)? {
                                Some(row) => keys.dek_for_job(conn, &tenant, &row),
                                None => Ok(None),
                            }
                        };
                        // A shred may have destroyed either key meanwhile.
                        let (Some(old), Some(new)) = (key(&j.old_dek)?, key(&j.new_dek)?) else {
                            return Ok((0, Vec::new()));
                        };
                        let recs = conn.records_under(&j.old_dek, batch)?;
                        let mut corrupt = Vec::new();
                        for (rowid, r) in &recs {
                            let old_aad = aad::record(
                                t,
                                &r.owner,
                                &r.category,
                                &r.key,
                                r.version,
                                &r.content_type,
                                &j.old_dek,
                            );
                            // A record that fails authentication is marked and
                            // skipped, so it cannot stall every later pass.
                            let Ok(plain) =
                                crypto::open(&old, label::RECORD, &old_aad, &r.ciphertext)
                            else {
                                conn.record_mark_corrupt(*rowid, now_ms())?;
                                corrupt.push(record_resource(&r.owner, &r.category, &r.key));
                                continue;
                            };
                            let new_aad = aad::record(
                                t,
                                &r.owner,
                                &r.category,
                                &r.key,
                                r.version,
                                &r.content_type,
                                &j.new_dek,
                            );
                            conn.record_reseal(
                                *rowid,
                                &j.new_dek,
                                &crypto::seal(&new, label::RECORD, &new_aad, &plain),
                            )?;
                        }
                        Ok((recs.len(), corrupt))
                    })
                    .await?;
                let (n, corrupt) = n;
                for resource in corrupt {
                    tracing::error!(tenant = %job.tenant_id, %resource, "re-encryption skipped a record that fails authentication");
                    let call = Arc::new(Call::system("key.reencrypt.skip-corrupt"));
                    call.set_tenant(&job.tenant_id);
                    call.set_resource(resource);
                    self.record(
                        &call,
                        (
                            audit::Outcome::Failed,
                            Error::Corrupt(String::new()).grpc_code(),
                        ),
                    )
                    .await?;
                }
                moved += n;
                if n < batch || self.is_stopping() {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
            self.finish_reencrypt(&job).await?;
        }
        Ok(moved)
    }

    /// Destroys a job's old data key once no live record is under it.
    async fn finish_reencrypt(&self, job: &store::ReencryptJob) -> Result<()> {
        // Destroying the old key waits for every hold on its owner.
        let resource = format!("dek:{}", job.old_dek);
        if self
            .held_for_job(
                "key.reencrypt.finish",
                &job.tenant_id,
                Some(job.owner.clone()),
                resource,
            )
            .await?
            .is_some()
        {
            return Ok(());
        }
        let call = Arc::new(Call::system("key.reencrypt.finish"));
        call.set_tenant(&job.tenant_id);
        call.set_resource(format!("dek:{}", job.old_dek));
        let j = job.clone();
        let done = self
            .mutate(&call, move |conn| {
                if !conn.records_under(&j.old_dek, 1)?.is_empty() {
                    return Ok(false);
                }
                conn.tombstones_follow(&j.old_dek, &j.new_dek)?;
                conn.dek_destroy(&j.old_dek, now_ms())?;
                conn.reencrypt_delete(&j.old_dek)?;
                Ok(true)
            })
            .await?;
        if done {
            self.keys.forget_dek(&job.old_dek);
            self.ledger_record(ledger_deks(
                &job.tenant_id,
                std::slice::from_ref(&job.old_dek),
            ))
            .await?;
            self.store.checkpoint().await?;
            tracing::info!(tenant = %job.tenant_id, dek = %job.old_dek, "data key re-encrypted and destroyed");
        }
        Ok(())
    }

    /// Sets the tenant's rotation policy (`None`: the server's default)
    /// and, if given, its minimum decryption version (0: none).
    pub async fn set_rotation_policy(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        max_age: Option<Duration>,
        max_encryptions: Option<u64>,
        min_decryption_version: Option<u32>,
    ) -> Result<TenantKeyStatus> {
        let tenant = permit.tenant_for(Action::KeyPolicy)?.clone();
        if max_age.is_some_and(|d| d.is_zero()) {
            return Err(Error::invalid(
                "max_age_seconds",
                "must be at least 1 second",
            ));
        }
        if max_encryptions.is_some_and(|n| n == 0 || n > 1 << 32) {
            return Err(Error::invalid("max_encryptions", "must be 1 to 2^32"));
        }
        let age_ms = max_age.map(|d| d.as_millis() as i64);
        let t = tenant.clone();
        let keys = self.keys.clone();
        self.mutate(call, move |conn| {
            let row = active_tenant(conn, &keys, &t)?;
            if let Some(min) = min_decryption_version {
                if min > row.kek_version {
                    return Err(Error::invalid(
                        "min_decryption_version",
                        format!(
                            "must be at most the current version {} (0 removes the minimum)",
                            row.kek_version
                        ),
                    ));
                }
                conn.set_min_decrypt_version(t.as_str(), min)?;
            }
            conn.set_rotation_policy(t.as_str(), age_ms, max_encryptions)?;
            integrity::seal_tenant(conn, &keys, t.as_str())
        })
        .await?;
        if let Some(min) = min_decryption_version {
            self.keys.set_min_decrypt_version(&tenant, min);
        }
        self.key_status_of(tenant).await
    }

    /// Writes down when each KEK version was last used (kept in memory
    /// between housekeeping runs); returns how many versions it updated.
    pub async fn flush_kek_use(&self) -> Result<usize> {
        let uses = self.keys.take_kek_use();
        if uses.is_empty() {
            return Ok(0);
        }
        self.store
            .write(move |conn| {
                for (tenant, version, at) in &uses {
                    conn.kek_note_use(tenant, *version, *at)?;
                }
                Ok(uses.len())
            })
            .await
    }

    /// Rotates every tenant KEK its policy says is due; returns how many.
    pub async fn rotate_due_keys(&self) -> Result<usize> {
        let now = now_ms();
        let limits = self.limits.clone();
        let due: Vec<store::RotationState> = self
            .store
            .read(move |c| {
                Ok(c.rotation_states()?
                    .into_iter()
                    .filter(|st| RotationPolicy::effective(st, &limits).due(st, now))
                    .collect())
            })
            .await?;
        let mut rotated = 0;
        for st in due {
            let tenant = TenantId::parse(&st.tenant)
                .map_err(|_| Error::Internal("stored tenant id is invalid".into()))?;
            let call = Arc::new(Call::system("key.rotate.auto"));
            call.set_tenant(tenant.as_str());
            call.set_resource(format!("tenant-kek:{tenant}"));
            let (keys, limits, version) = (self.keys.clone(), self.limits.clone(), st.version);
            // Checked again inside the job: another pass may have rotated it.
            let done = self
                .mutate(&call, move |conn| {
                    // The policy read here is the MAC-checked row's.
                    integrity::tenant(conn, &keys, tenant.as_str())?;
                    match conn.rotation_state(tenant.as_str())? {
                        Some(now_st)
                            if now_st.version == version
                                && RotationPolicy::effective(&now_st, &limits)
                                    .due(&now_st, now_ms()) =>
                        {
                            rotate_kek(&keys, conn, &tenant).map(|_| true)
                        }
                        _ => Ok(false),
                    }
                })
                .await?;
            if done {
                tracing::info!(tenant = %st.tenant, from = version, "key-encryption key rotated by policy");
                rotated += 1;
            }
        }
        Ok(rotated)
    }

    /// One pass of the rewrap job: rewraps data keys left under old KEK
    /// versions, `batch` per transaction with `pause` between batches so
    /// live traffic interleaves, then retires (destroys) every old version
    /// no live data key uses. Progress is the rows themselves, so a pass
    /// cut short by a crash simply continues on the next start.
    pub async fn rewrap_pass(&self, batch: usize, pause: Duration) -> Result<(usize, usize)> {
        let mut after = 0;
        let mut rewrapped = 0;
        loop {
            let keys = self.keys.clone();
            let from = after;
            let (done, last) = self
                .store
                .write(move |conn| {
                    let work = conn.deks_to_rewrap(from, batch)?;
                    let last = work.last().map(|(_, _, rowid)| *rowid);
                    let mut done = 0;
                    let mut counts: HashMap<(String, u32), u64> = HashMap::new();
                    for (row, to, _) in work {
                        let tenant = TenantId::parse(&row.tenant_id)
                            .map_err(|_| Error::Internal("stored tenant id is invalid".into()))?;
                        match keys.rewrap_dek(conn, &tenant, &row, to) {
                            Ok(wrapped) => {
                                conn.dek_rewrapped(&row.id, to, &wrapped)?;
                                *counts.entry((row.tenant_id.clone(), to)).or_default() += 1;
                                done += 1;
                            }
                            // Left under its old version, which then is not
                            // retired: `key status` keeps showing it.
                            Err(e) => {
                                tracing::error!(dek = %row.id, error = %e, "cannot rewrap data key")
                            }
                        }
                    }
                    for ((tenant, version), n) in counts {
                        conn.kek_count_wraps(&tenant, version, n)?;
                    }
                    Ok((done, last))
                })
                .await?;
            rewrapped += done;
            match last {
                Some(id) => after = id,
                None => break,
            }
            if self.is_stopping() {
                // Progress is the rows: the next start goes on from here.
                return Ok((rewrapped, 0));
            }
            tokio::time::sleep(pause).await;
        }
        let retired = self.retire_unused_keks().await?;
        Ok((rewrapped, retired))
    }

    /// Destroys every old KEK version no live data key uses.
    async fn retire_unused_keks(&self) -> Result<usize> {
        let due = self.store.read(|tx| tx.keks_to_retire()).await?;
        for (tenant, version) in &due {
            let call = Arc::new(Call::system("key.retire"));
            call.set_tenant(tenant);
            call.set_resource(format!("kek:{tenant}/v{version}"));
            let (t, v) = (tenant.clone(), *version);
            self.mutate(&call, move |conn| conn.kek_retire(&t, v, now_ms()))
                .await?;
            self.keys.forget_kek(tenant, *version);
            self.ledger_record(vec![crate::ledger::Destroyed::Kek {
                tenant: tenant.clone(),
                version: *version,
            }])
            .await?;
            tracing::info!(tenant = %tenant, version, "retired key-encryption key: material destroyed");
        }
        if !due.is_empty() {
            self.store.checkpoint().await?;
        }
        Ok(due.len())
    }

    /// Rotates the root key: stages a successor, rewraps every key held
    /// under the root in one transaction (switching wraps to the successor
    /// in that same job), then promotes the successor. A crash before the
    /// commit leaves the old root in use; after it, start-up promotes the
    /// staged successor (`server::open_root`). Returns the keys rewrapped.
    pub async fn rotate_root(&self, permit: &Permit, call: &Arc<Call>) -> Result<usize> {
        permit.require(Action::KeyRotateRoot)?;
        let _one_at_a_time = self.root_rotation.lock().await;
        let root = self.keys.root();
        let next = crate::blocking(move || root.stage_successor()).await?;
        self.replace_root(call, next, "root-rotation").await
    }

    /// Moves every key held under the root key to `next`, a successor
    /// another provider staged (the move from a key file into an HSM), the
    /// same way a rotation does. Run with no server on the vault
    /// (`server::move_root_to_hsm`).
    pub async fn move_root(
        &self,
        call: &Arc<Call>,
        next: Arc<dyn crate::rootkey::RootKeyProvider>,
    ) -> Result<usize> {
        let _one_at_a_time = self.root_rotation.lock().await;
        self.replace_root(call, next, "move-root").await
    }

    /// Rewraps under the staged `next` in one transaction with the call's
    /// audit entry, then promotes `next`; `crash_points` names this
    /// operation's points for the kill tests.
    async fn replace_root(
        &self,
        call: &Arc<Call>,
        next: Arc<dyn crate::rootkey::RootKeyProvider>,
        crash_points: &str,
    ) -> Result<usize> {
        crate::crash_point(&format!("{crash_points}:staged"));
        let current = self.keys.root();
        let from = current.describe();
        let (keys, old, new) = (self.keys.clone(), current.clone(), next.clone());
        let result = self
            .mutate(call, move |conn| {
                let n = keys.rewrap_root_keys(conn, &*old, &*new)?;
                keys.swap_root(new);
                Ok(n)
            })
            .await;
        let n = match result {
            Ok(n) => n,
            Err(e) => {
                self.keys.restore_root(current);
                let staged = next.clone();
                crate::blocking(move || staged.discard_successor()).await?;
                return Err(e);
            }
        };
        crate::crash_point(&format!("{crash_points}:committed"));
        let staged = next.clone();
        crate::blocking(move || staged.promote_successor()).await?;
        crate::crash_point(&format!("{crash_points}:promoted"));
        self.store.checkpoint().await?;
        // Readers whose snapshot predates the commit may still unwrap under
        // the old root for a moment; then it is dropped from memory.
        let keys = self.keys.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            let retired = tokio::task::spawn_blocking(move || keys.forget_previous_root()).await;
            if let Ok(Err(e)) = retired {
                tracing::warn!(error = %e, "the replaced root key was not destroyed now; it is at the next start");
            }
        });
        tracing::info!(keys = n, %from, root = %next.describe(), "root key replaced");
        Ok(n)
    }

    // ----- principals ----------------------------------------------------

    /// Creates a principal in the permit's tenant and issues its API key.
    /// With the operator's bootstrap permit, only a first admin.
    pub async fn create_principal(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        spec: PrincipalSpec,
    ) -> Result<NewPrincipal> {
        let PrincipalSpec {
            name,
            roles,
            expires_in_seconds,
            cert_cn,
            enrolment,
        } = spec;
        permit.require_any(&[Action::PrincipalCreate, Action::TenantBootstrapAdmin])?;
        let tenant = permit.tenant_for(permit.action())?.clone();
        if roles.is_empty() {
            return Err(Error::invalid("roles", "at least one role is required"));
        }
        if roles.iter().any(|r| r.is_platform()) {
            return Err(Error::invalid(
                "roles",
                "operator is a platform role; tenant principals cannot hold it",
            ));
        }
        let bootstrap = permit.action() == Action::TenantBootstrapAdmin;
        if bootstrap && roles != [Role::Admin] {
            return Err(Error::PermissionDenied(
                "an operator may create only a tenant's first admin (roles: admin)".into(),
            ));
        }
        if bootstrap && enrolment.is_none() && self.limits.require_admin_enrolment {
            return Err(Error::invalid(
                "enrolment",
                "this server never hands an operator a tenant admin's key: the tenant's admin runs `strongbox enrol`, keeps the key and gives you the enrolment it prints",
            ));
        }
        let expires_at = expiry(expires_in_seconds)?;
        let (key_id, api_key, hash) = match enrolment {
            Some(e) => (e.key_id, None, e.secret_hash),
            None => {
                let (id, key, hash) = api_key::issue();
                (id, Some(key), hash)
            }
        };
        let kid = key_id.clone();
        let keys = self.keys.clone();
        let principal_id = self
            .mutate(call, move |conn| {
                let row = active_tenant(conn, &keys, &tenant)?;
                let now = now_ms();
                if bootstrap {
                    admin_recovery::admit_operator_admin(conn, &keys, &row, now)?;
                }
                let who = NewPrincipalRow {
                    tenant: Some(&tenant),
                    name: name.as_str(),
                    roles: &roles,
                    cert_cn: cert_cn.as_deref(),
                };
                let id = insert_principal(conn, &keys, who, now)?;
                insert_api_key(conn, &keys, &id, &kid, &hash, now, expires_at)?;
                Ok(id)
            })
            .await?;
        self.auth_cache().unknown.clear();
        Ok(NewPrincipal {
            principal_id,
            key_id,
            api_key,
        })
    }

    /// The permit's tenant's principals and their keys.
    pub async fn list_principals(&self, permit: &Permit) -> Result<Vec<PrincipalInfo>> {
        let tenant = permit.tenant_for(Action::PrincipalList)?.clone();
        let keyring = self.keys.clone();
        self.store
            .read(move |conn| {
                active_tenant(conn, &keyring, &tenant)?;
                let (principals, api_keys) = tenant_principals(conn, &keyring, &tenant)?;
                let mut keys: HashMap<String, Vec<ApiKeyInfo>> = HashMap::new();
                for k in api_keys {
                    keys.entry(k.principal_id.clone())
                        .or_default()
                        .push(k.into());
                }
                Ok(principals
                    .into_iter()
                    .map(|p| PrincipalInfo {
                        keys: keys.remove(&p.id).unwrap_or_default(),
                        roles: p.roles.split(',').map(str::to_owned).collect(),
                        principal_id: p.id,
                        name: p.name,
                        created_at: p.created_at,
                    })
                    .collect())
            })
            .await
    }

    /// Issues another key for a principal of the permit's tenant.
    pub async fn create_api_key(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        principal_id: String,
        expires_in_seconds: Option<u64>,
    ) -> Result<(String, ApiKey)> {
        let tenant = permit.tenant_for(Action::ApiKeyCreate)?.clone();
        let expires_at = expiry(expires_in_seconds)?;
        let (key_id, api_key, hash) = api_key::issue();
        let kid = key_id.clone();
        let keys = self.keys.clone();
        self.mutate(call, move |conn| {
            active_tenant(conn, &keys, &tenant)?;
            let p = integrity::principal(conn, &keys, &principal_id)?
                .filter(|p| p.tenant_id.as_deref() == Some(tenant.as_str()))
                .ok_or_else(|| Error::NotFound(format!("principal '{principal_id}' not found")))?;
            insert_api_key(conn, &keys, &p.id, &kid, &hash, now_ms(), expires_at)
        })
        .await?;
        self.auth_cache().unknown.clear();
        Ok((key_id, api_key))
    }

    /// Revokes a key of the permit's tenant; the next call with it fails.
    pub async fn revoke_api_key(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        key_id: String,
    ) -> Result<ApiKeyInfo> {
        let tenant = permit.tenant_for(Action::ApiKeyRevoke)?.clone();
        let kid = key_id.clone();
        let keys = self.keys.clone();
        let info = self
            .mutate(call, move |conn| {
                active_tenant(conn, &keys, &tenant)?;
                let (key, _) = integrity::api_key(conn, &keys, &kid)?
                    .filter(|(_, p)| p.tenant_id.as_deref() == Some(tenant.as_str()))
                    .ok_or_else(|| key_not_found(&kid))?;
                let now = now_ms();
                conn.api_key_revoke(&key.key_id, now)?;
                integrity::seal_api_key(conn, &keys, &key.key_id)?;
                Ok(ApiKeyInfo {
                    revoked_at: key.revoked_at.or(Some(now)),
                    ..key.into()
                })
            })
            .await?;
        // Committed: drop it from the cache so the very next call is refused.
        self.auth_cache().revoke(&key_id);
        Ok(info)
    }

    // ----- records -------------------------------------------------------

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

    /// Reads and decrypts one record.
    pub async fn get_record(
        &self,
        permit: &Permit,
        call: &Arc<Call>,
        r: RecordRef,
    ) -> Result<RecordValue> {
        let tenant = permit.tenant_for(Action::RecordGet)?.clone();
        let keys = self.keys.clone();
        let c = call.clone();
        self.store
            .read(move |conn| {
                active_tenant(conn, &keys, &tenant)?;
                let owner = owner_of(&keys, conn, &tenant, r.subject.as_ref())?;
                c.set_resource(record_resource(&owner, r.category.as_str(), r.key.as_str()));
                let addr = RecordAddr {
                    tenant: tenant.as_str(),
                    owner: &owner,
                    category: r.category.as_str(),
                    key: r.key.as_str(),
                };
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
            active_tenant(conn, &keys, &tenant)?;
            let owner = owner_of(&keys, conn, &tenant, r.subject.as_ref())?;
            c.set_resource(record_resource(&owner, r.category.as_str(), r.key.as_str()));
            let addr = RecordAddr {
                tenant: tenant.as_str(),
                owner: &owner,
                category: r.category.as_str(),
                key: r.key.as_str(),
            };
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

    // ----- subjects ------------------------------------------------------

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
    async fn stream_access_history(
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

    // ----- housekeeping --------------------------------------------------

    /// After a shred commits: truncate the WAL, which still holds the
    /// destroyed key's page images, and wake the purger.
    async fn after_shred(&self) {
        if let Err(e) = self.store.checkpoint().await {
            tracing::warn!(error = %e, "WAL checkpoint after shred failed; housekeeping retries it");
        }
        self.purge_wanted.notify_one();
    }

    /// Asks background passes to stop between batches (shutdown).
    pub fn stop_background(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the vault can serve: the writer thread runs, storage commits
    /// (a durable write), and the root key answers.
    pub async fn health(&self) -> Result<()> {
        if !self.store.writer_alive() {
            return Err(Error::Unavailable("storage: the writer has stopped".into()));
        }
        let probe = self
            .store
            .write(|c| c.meta_put("health_probe", &now_ms().to_be_bytes()));
        tokio::time::timeout(Duration::from_secs(5), probe)
            .await
            .map_err(|_| Error::Unavailable("storage: a commit took over 5 s".into()))??;
        let root = self.keys.root();
        match self
            .store
            .read(move |c| keyring::root_matches(c, &*root))
            .await?
        {
            true => Ok(()),
            false => Err(Error::Corrupt(
                "the root key does not open this vault".into(),
            )),
        }
    }

    /// Stops the writer thread, as a crash of it would (tests only).
    #[cfg(test)]
    pub async fn stop_writer(&self) {
        self.store.stop_writer().await
    }

    /// Retries a WAL checkpoint a reader held off; returns whether the WAL
    /// is free of destroyed bytes now (none owed).
    pub async fn checkpoint_owed(&self) -> Result<bool> {
        self.store.checkpoint_owed().await
    }

    /// Resolves when a shred has asked for a purge.
    pub async fn purge_requested(&self) {
        self.purge_wanted.notified().await
    }

    /// Deletes the ciphertext rows of destroyed keys in small batches with
    /// a pause between them (so live writes keep their latency: a purge of
    /// a large shred must not starve the writer), then checkpoints.
    /// Returns rows deleted.
    pub async fn purge_destroyed(&self) -> Result<usize> {
        const BATCH: usize = 500;
        const PAUSE: Duration = Duration::from_millis(10);
        let mut total = 0;
        loop {
            let (deleted, marked) = self
                .store
                .write(|c| c.records_purge_destroyed(BATCH))
                .await?;
            total += deleted;
            if (deleted == 0 && marked == 0) || self.is_stopping() {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        if total > 0 {
            self.store.checkpoint().await?;
        }
        Ok(total)
    }
}

fn io_error(path: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!("{}: {e}", path.display()))
}

/// Writes a secret to a new file readable by its owner only.
fn write_secret_file(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cached(tenant: &str) -> CachedKey {
        CachedKey {
            secret_hash: [0; 32],
            expires_at: None,
            principal: Principal {
                id: "prn-1".into(),
                name: "p".into(),
                tenant: Some(TenantId::parse(tenant).unwrap()),
                roles: vec![Role::Reader],
                cert_cn: None,
            },
            last_touched: 0,
        }
    }

    // A verification that read the key before a revocation or tenant shred
    // committed, and caches it after: refused.
    #[test]
    fn fail_a_key_cached_after_its_revocation_or_tenant_shred() {
        let mut c = AuthCache::default();
        c.revoke("k1");
        c.admit("k1", cached("t"));
        assert!(!c.keys.contains_key("k1"));
        c.forget_tenant(&TenantId::parse("t").unwrap());
        c.admit("k2", cached("t"));
        assert!(!c.keys.contains_key("k2"));
        c.admit("k3", cached("u"));
        assert!(c.keys.contains_key("k3"));
    }

    #[test]
    fn the_key_cache_is_bounded_without_starting_over() {
        let mut c = AuthCache::default();
        for i in 0..MAX_CACHED_API_KEYS + 50 {
            c.admit(&format!("k{i}"), cached("t"));
        }
        assert_eq!(c.keys.len(), MAX_CACHED_API_KEYS);
    }

    #[test]
    fn fail_tenant_page_tokens_the_server_never_issued() {
        let t = encode_tenant_cursor("acme");
        assert_eq!(decode_tenant_cursor(&t).unwrap(), "acme");
        assert_eq!(decode_tenant_cursor("").unwrap(), "");
        for bad in [
            "acme",
            "zz",
            &hex::encode(b"acme"),
            &encode_cursor(&RecordCursor {
                owner: vec![],
                category: "c".into(),
                key: "k".into(),
            }),
        ] {
            assert!(decode_tenant_cursor(bad).is_err(), "{bad}");
        }
    }

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

    #[test]
    fn the_receipt_mac_input_is_as_stored() {
        // Golden vector: receipts already issued must keep verifying.
        let r = DeletionReceipt {
            receipt_id: "rcpt-1".into(),
            tenant: "acme".into(),
            subject_blind_id: vec![1; 32],
            destroyed_key_ids: vec!["dek-1".into(), "dek-2".into()],
            records_made_unreadable: 5,
            shredded_at: 1_700_000_000_000,
            reason: ShredReason::Request,
            mac: vec![],
        };
        let key = SecretKey::from_slice(&[7u8; 32]).unwrap();
        assert_eq!(
            hex::encode(crypto::hmac_sha256(&key, &[&r.canonical()])),
            "258e105aa1123a3832d414d8edd81df1f69f6f0df0363e1b69d3fe6424397cd5"
        );
    }

    #[test]
    fn a_stored_receipt_reads_back_whole() {
        for reason in [ShredReason::Request, ShredReason::Retention] {
            let r = DeletionReceipt {
                receipt_id: "rcpt-1".into(),
                tenant: "t".into(),
                subject_blind_id: vec![1; 32],
                destroyed_key_ids: vec!["dek-1".into(), "dek-2".into()],
                records_made_unreadable: 5,
                shredded_at: 10,
                reason,
                mac: vec![9; 32],
            };
            assert_eq!(
                DeletionReceipt::from_stored(&r.canonical(), r.mac.clone()),
                Some(r)
            );
        }
        assert_eq!(DeletionReceipt::from_stored(b"junk", vec![]), None);
    }

    #[test]
    fn receipt_mac_covers_every_field() {
        let r = DeletionReceipt {
            receipt_id: "r".into(),
            tenant: "t".into(),
            subject_blind_id: vec![1; 32],
            destroyed_key_ids: vec!["dek-1".into()],
            records_made_unreadable: 5,
            shredded_at: 10,
            reason: ShredReason::Request,
            mac: vec![],
        };
        let base = r.canonical();
        let variants = [
            DeletionReceipt {
                receipt_id: "x".into(),
                ..r.clone()
            },
            DeletionReceipt {
                tenant: "x".into(),
                ..r.clone()
            },
            DeletionReceipt {
                subject_blind_id: vec![2; 32],
                ..r.clone()
            },
            DeletionReceipt {
                destroyed_key_ids: vec!["dek-2".into()],
                ..r.clone()
            },
            DeletionReceipt {
                records_made_unreadable: 6,
                ..r.clone()
            },
            DeletionReceipt {
                shredded_at: 11,
                ..r.clone()
            },
            DeletionReceipt {
                reason: ShredReason::Retention,
                ..r.clone()
            },
        ];
        for v in variants {
            assert_ne!(v.canonical(), base);
        }
    }
}

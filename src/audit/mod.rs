//! The tamper-evident audit trail: one entry per call, allowed, denied or
//! failed, in a MAC chain keyed by an audit key held under the root key.
//!
//! Entry `n`'s MAC is `HMAC(audit key, prev_mac || canonical(entry n))`, so
//! editing, deleting or reordering entries breaks the chain, and forging a
//! chain needs the audit key (a plain hash, recomputed, does not verify).
//! The head row (`meta.audit_head`: last sequence number and MAC, itself
//! MAC'd) is rewritten in the same transaction as every entry, so cutting
//! off the tail is detected too. Every `CHECKPOINT_EVERY` entries a MAC'd
//! checkpoint `(seq, head)` is stored; pruning old entries may only cut at
//! a checkpoint, from which verification then starts.
//!
//! Entries never hold record values, plaintext subject ids or secrets:
//! subjects appear as blind ids.

use std::sync::atomic::Ordering;

pub mod anchor;
mod call;
mod repair;
mod verify;

pub use call::Call;
pub use repair::{AcceptedLoss, accept_loss};
pub use verify::{Report, tenant_view, verify, verify_anchored};

use crate::store::prelude::*;

use crate::crypto::{self, SecretKey};
use crate::error::{Error, Result};

/// A checkpoint is written at every multiple of this sequence number.
pub const CHECKPOINT_EVERY: u64 = 1000;
const HEAD_META: &str = "audit_head";
const BASE_META: &str = "audit_base";
const GENESIS: [u8; 32] = [0; 32];
const HEAD_LABEL: &[u8] = b"strongbox/v1/audit-head";
const BASE_LABEL: &[u8] = b"strongbox/v1/audit-base";
const CHECKPOINT_LABEL: &[u8] = b"strongbox/v1/audit-checkpoint";

/// How a call ended, for the audit log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Refused: no or bad credentials, or a role that does not allow it.
    Denied,
    /// Any other error.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }

    /// The outcome and gRPC code of a call's result.
    pub fn of<T>(result: &Result<T>) -> (Self, i32) {
        match result {
            Ok(_) => (Outcome::Ok, 0),
            Err(e @ (Error::Unauthenticated(_) | Error::PermissionDenied(_))) => {
                (Outcome::Denied, e.grpc_code())
            }
            Err(e) => (Outcome::Failed, e.grpc_code()),
        }
    }
}

/// One audit entry as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    pub time: i64,
    pub request_id: String,
    pub principal: String,
    pub tenant: String,
    pub action: String,
    pub resource: String,
    pub outcome: String,
    pub code: i32,
    pub purpose: String,
    pub peer: String,
    pub mac: Vec<u8>,
}

impl Entry {
    /// The bytes the MAC covers, after the previous entry's MAC.
    fn canonical(&self, prev_mac: &[u8]) -> Vec<u8> {
        crypto::encode_fields(&[
            b"strongbox/v1/audit-entry",
            prev_mac,
            &self.seq.to_be_bytes(),
            &self.time.to_be_bytes(),
            self.request_id.as_bytes(),
            self.principal.as_bytes(),
            self.tenant.as_bytes(),
            self.action.as_bytes(),
            self.resource.as_bytes(),
            self.outcome.as_bytes(),
            &self.code.to_be_bytes(),
            self.purpose.as_bytes(),
            self.peer.as_bytes(),
        ])
    }
}

fn head_mac(key: &SecretKey, label: &[u8], seq: u64, head: &[u8]) -> [u8; 32] {
    crypto::hmac_sha256(
        key,
        &[&crypto::encode_fields(&[label, &seq.to_be_bytes(), head])],
    )
}

/// A stored head or base row: a sequence number, the chain MAC there, and
/// the row's own MAC.
struct Pointer {
    seq: u64,
    head: Vec<u8>,
    mac: Vec<u8>,
}

fn read_pointer(conn: &dyn Tx, name: &str) -> Result<Option<Pointer>> {
    let Some(raw) = conn.meta_get(name)? else {
        return Ok(None);
    };
    if raw.len() != 8 + 32 + 32 {
        return Err(Error::Corrupt(format!(
            "audit: the {name} row is malformed"
        )));
    }
    let seq = u64::from_be_bytes(
        raw[..8]
            .try_into()
            .map_err(|_| Error::Corrupt("audit head".into()))?,
    );
    Ok(Some(Pointer {
        seq,
        head: raw[8..40].to_vec(),
        mac: raw[40..].to_vec(),
    }))
}

fn write_pointer(
    conn: &dyn Tx,
    key: &SecretKey,
    name: &str,
    label: &[u8],
    seq: u64,
    head: &[u8],
) -> Result<()> {
    let mut raw = seq.to_be_bytes().to_vec();
    raw.extend_from_slice(head);
    raw.extend_from_slice(&head_mac(key, label, seq, head));
    conn.meta_put(name, &raw)
}

/// Why the stored chain cannot be extended: its pointers were tampered
/// with. Always `Corrupt` (DATA_LOSS), never an outage.
fn tampered(what: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!(
        "audit: the audit trail was tampered with ({what}); every call is refused until an operator runs `strongbox audit accept-loss` (docs/runbooks/audit-verification.md)"
    ))
}

/// The base row, its MAC checked.
fn checked_base(conn: &dyn Tx, key: &SecretKey) -> Result<Option<Pointer>> {
    let base = read_pointer(conn, BASE_META)?;
    if let Some(b) = &base
        && !crypto::ct_eq(&b.mac, &head_mac(key, BASE_LABEL, b.seq, &b.head))
    {
        return Err(tampered("the pruning base row's MAC does not match"));
    }
    Ok(base)
}

/// The head the next entry chains onto, after checking that the head row
/// is genuine (its MAC) and is the last stored entry (no entry cut off
/// behind it, none beyond it). An append never extends a head it has not
/// checked: otherwise the next call would launder a rewound head with a
/// fresh, valid MAC.
pub fn checked_head(conn: &dyn Tx, key: &SecretKey) -> Result<(u64, Vec<u8>)> {
    let base = checked_base(conn, key)?;
    let last = conn.audit_last_entry()?;
    let Some(head) = read_pointer(conn, HEAD_META)? else {
        if last.is_some() || base.is_some() {
            return Err(tampered("the head row is missing but the log has entries"));
        }
        return Ok((0, GENESIS.to_vec()));
    };
    if !crypto::ct_eq(&head.mac, &head_mac(key, HEAD_LABEL, head.seq, &head.head)) {
        return Err(tampered("the head row's MAC does not match"));
    }
    let consistent = match (&last, &base) {
        (Some((seq, mac)), _) => *seq == head.seq && crypto::ct_eq(mac, &head.head),
        // Every entry pruned: the head is the base.
        (None, Some(b)) => b.seq == head.seq && crypto::ct_eq(&b.head, &head.head),
        (None, None) => false,
    };
    if !consistent {
        let end = last.map_or("the log is empty".to_owned(), |(s, _)| {
            format!("the log ends at entry {s}")
        });
        return Err(tampered(format!(
            "the head row names entry {} but {end}",
            head.seq
        )));
    }
    Ok((head.seq, head.head))
}

/// Appends `entry` to the chain in the caller's transaction; returns its
/// sequence number. A chain whose head does not check out is `Corrupt`
/// (DATA_LOSS); any other failure is `Unavailable`. Either way the
/// caller's transaction must be rolled back (fail closed).
pub fn append(conn: &dyn Tx, key: &SecretKey, entry: Entry) -> Result<u64> {
    append_above(conn, key, entry, 0)
}

/// [`append`], refusing too when the stored head is older than `floor`,
/// the newest sequence number anchored outside the database: the trail
/// was rolled back or wiped.
pub fn append_above(conn: &dyn Tx, key: &SecretKey, mut entry: Entry, floor: u64) -> Result<u64> {
    let mut inner = || -> Result<u64> {
        let (prev_seq, prev_mac) = checked_head(conn, key)?;
        if prev_seq < floor {
            return Err(tampered(format!(
                "the log ends at entry {prev_seq} but the anchor outside the database records entry {floor}"
            )));
        }
        entry.seq = prev_seq + 1;
        entry.mac = crypto::hmac_sha256(key, &[&entry.canonical(&prev_mac)]).to_vec();
        conn.audit_insert(&entry)?;
        write_pointer(conn, key, HEAD_META, HEAD_LABEL, entry.seq, &entry.mac)?;
        if entry.seq.is_multiple_of(CHECKPOINT_EVERY) {
            conn.audit_checkpoint_insert(
                entry.seq,
                &entry.mac,
                entry.time,
                &head_mac(key, CHECKPOINT_LABEL, entry.seq, &entry.mac),
            )?;
        }
        Ok(entry.seq)
    };
    inner().map_err(|e| match e {
        Error::Corrupt(_) => {
            log_tampering(&e);
            e
        }
        e => Error::Unavailable(format!(
            "audit: the call cannot be recorded, so nothing was done ({e})"
        )),
    })
}

/// Logs detected tampering, at most once every ten seconds: every call is
/// refused meanwhile, and each refusal must not write a log line.
pub fn log_tampering(e: &Error) {
    static LAST: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
    let now = crate::now_ms();
    let last = LAST.load(Ordering::Relaxed);
    if now - last >= 10_000
        && LAST
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::error!(target: "strongbox::tamper", error = %e, "AUDIT TRAIL TAMPERING DETECTED");
    }
}

/// Which entries a query wants.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// `Some("")` means platform entries only.
    pub tenant: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    pub principal: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
}

/// Up to `limit` entries matching `f` with sequence numbers above `after`.
pub fn list(conn: &dyn Tx, f: &Filter, after: u64, limit: usize) -> Result<Vec<Entry>> {
    conn.audit_list(f, after, limit)
}

/// Deletes entries older than `before` (Unix ms), cutting only at the
/// newest checkpoint that is entirely older, which becomes the base that
/// verification starts from. Returns the entries deleted. Like an append,
/// it rewrites a MAC'd pointer, so it first checks the head and base rows
/// and the checkpoint it cuts at: a forged pointer is never re-MAC'd.
pub fn prune(conn: &dyn Tx, key: &SecretKey, before: i64) -> Result<u64> {
    checked_head(conn, key)?;
    let cut = conn.audit_prune_cut(before)?;
    let Some((seq, head, cmac, entry_mac)) = cut else {
        return Ok(0);
    };
    let genuine = crypto::ct_eq(&cmac, &head_mac(key, CHECKPOINT_LABEL, seq, &head))
        && crypto::ct_eq(&head, &entry_mac);
    if !genuine {
        let e = tampered(format!("checkpoint {seq} does not match the chain"));
        log_tampering(&e);
        return Err(e);
    }
    let n = conn.audit_delete_through(seq)?;
    write_pointer(conn, key, BASE_META, BASE_LABEL, seq, &head)?;
    Ok(n)
}

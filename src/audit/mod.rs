//! The tamper-evident audit trail: one entry per call, allowed, denied or
//! failed, in a MAC chain keyed by an audit key held under the root key.
//!
//! Entry `n`'s MAC is `HMAC(audit key, prev_mac || canonical(entry n))`, so
//! editing, deleting or reordering entries breaks the chain, and forging a
//! chain needs the audit key (a plain hash, recomputed, does not verify).
//! The head row (`meta.audit_head`: last sequence number and MAC, itself
//! MAC'd) is rewritten in the same transaction as every entry, so cutting
//! off the tail is detected too. Every `CHECKPOINT_EVERY` sequence numbers
//! a MAC'd checkpoint `(seq, head)` is stored; pruning old entries may only
//! cut at a checkpoint, from which verification then starts.
//!
//! **Lanes.** The chain is made of lanes, each with its own head and base
//! rows, checkpoints and anchor points: an entry's `prev_mac` is that of the
//! previous entry of its lane. SQLite has one writer and one lane, 0. On
//! PostgreSQL every server run opens a lane of its own, so servers append
//! without waiting for each other; sequence numbers come from one shared
//! sequence (with gaps) and order entries across lanes. A lane's tail cut
//! off together with its head row (put back from an older copy) is caught
//! by the anchor file and by the other lanes: every server periodically
//! appends a `audit.witness` entry to its own lane naming how far every
//! other lane had come, so a lane that ends before a witness says it
//! reached is a break.
//!
//! Entries never hold record values, plaintext subject ids or secrets:
//! subjects appear as blind ids.

use std::sync::atomic::Ordering;

pub mod anchor;
mod call;
mod repair;
mod verify;

pub use anchor::Lane;
pub use call::Call;
pub use repair::{AcceptedLoss, LaneLoss, accept_loss};
pub use verify::{Report, tenant_view, verify, verify_anchored};

use crate::store::prelude::*;

use crate::crypto::{self, SecretKey};
use crate::error::{Error, Result};

/// A checkpoint is written at every multiple of this sequence number.
pub const CHECKPOINT_EVERY: u64 = 1000;
const HEAD_META: &str = "audit_head";
const BASE_META: &str = "audit_base";
/// The MAC an empty lane's first entry chains onto.
pub const GENESIS: [u8; 32] = [0; 32];
const HEAD_LABEL: &[u8] = b"strongbox/v1/audit-head";
const BASE_LABEL: &[u8] = b"strongbox/v1/audit-base";
const CHECKPOINT_LABEL: &[u8] = b"strongbox/v1/audit-checkpoint";
/// The action of a lane's entry that records how far the other lanes had
/// come; its resource is `lanes <lane>:<seq>,...`.
pub const WITNESS_ACTION: &str = "audit.witness";

/// The MAC label of `lane`'s pointers and checkpoints: a row of one lane
/// does not verify as another's.
fn lane_label(label: &[u8], lane: Lane) -> Vec<u8> {
    match lane {
        0 => label.to_vec(),
        _ => crypto::encode_fields(&[label, b"lane", &lane.to_be_bytes()]),
    }
}

/// Every lane of the chain: 0, and those servers opened.
pub fn lanes(conn: &dyn Tx) -> Result<Vec<Lane>> {
    let mut lanes = vec![0];
    lanes.extend(conn.audit_lanes()?.into_iter().filter(|l| *l != 0));
    Ok(lanes)
}

/// Whether a checkpoint falls between a lane's entries `prev` and `seq`.
fn crosses_checkpoint(prev: u64, seq: u64) -> bool {
    seq / CHECKPOINT_EVERY > prev / CHECKPOINT_EVERY
}

/// The resource of a witness entry naming `heads` (lane, seq).
pub fn witness_resource(heads: &[(Lane, u64)]) -> String {
    let list: Vec<String> = heads.iter().map(|(l, s)| format!("{l}:{s}")).collect();
    format!("lanes {}", list.join(","))
}

/// The (lane, seq) pairs of a witness entry's resource.
fn witnessed(resource: &str) -> Vec<(Lane, u64)> {
    let Some(list) = resource.strip_prefix("lanes ") else {
        return Vec::new();
    };
    list.split(',')
        .filter_map(|p| {
            let (l, s) = p.split_once(':')?;
            Some((l.parse().ok()?, s.parse().ok()?))
        })
        .collect()
}

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
    /// The lane whose chain the entry is in (0 on SQLite).
    pub lane: Lane,
}

impl Entry {
    /// The bytes the MAC covers, after the previous entry's MAC (of its
    /// lane). Lane 0's entries are encoded as before lanes existed.
    fn canonical(&self, prev_mac: &[u8]) -> Vec<u8> {
        let lane = self.lane.to_be_bytes();
        let (seq, time, code) = (
            self.seq.to_be_bytes(),
            self.time.to_be_bytes(),
            self.code.to_be_bytes(),
        );
        let label: &[&[u8]] = match self.lane {
            0 => &[b"strongbox/v1/audit-entry"],
            _ => &[b"strongbox/v1/audit-entry", b"lane", &lane],
        };
        let mut fields: Vec<&[u8]> = label.to_vec();
        fields.extend_from_slice(&[
            prev_mac,
            &seq,
            &time,
            self.request_id.as_bytes(),
            self.principal.as_bytes(),
            self.tenant.as_bytes(),
            self.action.as_bytes(),
            self.resource.as_bytes(),
            self.outcome.as_bytes(),
            &code,
            self.purpose.as_bytes(),
            self.peer.as_bytes(),
        ]);
        crypto::encode_fields(&fields)
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

fn read_pointer(conn: &dyn Tx, lane: Lane, name: &str) -> Result<Option<Pointer>> {
    let Some(raw) = conn.audit_pointer(lane, name)? else {
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
    (lane, name, label): (Lane, &str, &[u8]),
    seq: u64,
    head: &[u8],
) -> Result<()> {
    let label = lane_label(label, lane);
    let mut raw = seq.to_be_bytes().to_vec();
    raw.extend_from_slice(head);
    raw.extend_from_slice(&head_mac(key, &label, seq, head));
    conn.audit_pointer_put(lane, name, &raw)
}

/// Why the stored chain cannot be extended: its pointers were tampered
/// with. Always `Corrupt` (DATA_LOSS), never an outage.
fn tampered(what: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!(
        "audit: the audit trail was tampered with ({what}); every call is refused until an operator runs `strongbox audit accept-loss` (docs/runbooks/audit-verification.md)"
    ))
}

/// `lane`'s base row, its MAC checked.
fn checked_base(conn: &dyn Tx, key: &SecretKey, lane: Lane) -> Result<Option<Pointer>> {
    let base = read_pointer(conn, lane, BASE_META)?;
    if let Some(b) = &base
        && !crypto::ct_eq(
            &b.mac,
            &head_mac(key, &lane_label(BASE_LABEL, lane), b.seq, &b.head),
        )
    {
        return Err(tampered(in_lane(
            lane,
            "the pruning base row's MAC does not match",
        )));
    }
    Ok(base)
}

/// `what`, naming the lane unless it is lane 0 (the only one on SQLite).
fn in_lane(lane: Lane, what: &str) -> String {
    match lane {
        0 => what.to_owned(),
        _ => format!("lane {lane}: {what}"),
    }
}

/// The head of `lane` the next entry chains onto, after checking that the
/// head row is genuine (its MAC) and, on lane 0, that it is the lane's
/// last stored entry (no entry cut off behind it, none beyond it). An
/// append never extends a head it has not checked: otherwise the next call
/// would launder a rewound head with a fresh, valid MAC.
///
/// Another lane's append (PostgreSQL) checks the row's MAC but does not
/// read the lane's entries: under serializable isolation that read would
/// make every server's appends conflict with every other's (they share
/// index pages). A lane whose tail was cut and whose head row was put back
/// from an older copy is then extended, but not laundered: the anchor's
/// floor refuses a head below the newest anchored point, and `verify`
/// finds the cut through the other lanes' witnesses (see the module
/// docs); a cut without the head row put back breaks the chain at the
/// next entry.
pub fn checked_head(conn: &dyn Tx, key: &SecretKey, lane: Lane) -> Result<(u64, Vec<u8>)> {
    let base = checked_base(conn, key, lane)?;
    let last = match lane {
        0 => conn.audit_last_entry(0)?,
        _ => None,
    };
    let Some(head) = read_pointer(conn, lane, HEAD_META)? else {
        if last.is_some() || base.is_some() {
            return Err(tampered(in_lane(
                lane,
                "the head row is missing but the log has entries",
            )));
        }
        return Ok((0, GENESIS.to_vec()));
    };
    let label = lane_label(HEAD_LABEL, lane);
    if !crypto::ct_eq(&head.mac, &head_mac(key, &label, head.seq, &head.head)) {
        return Err(tampered(in_lane(lane, "the head row's MAC does not match")));
    }
    let consistent = match (&last, &base) {
        _ if lane != 0 => true,
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

/// Appends `entry` to lane 0's chain in the caller's transaction; returns
/// its sequence number. A chain whose head does not check out is `Corrupt`
/// (DATA_LOSS); any other failure is `Unavailable`. Either way the
/// caller's transaction must be rolled back (fail closed).
pub fn append(conn: &dyn Tx, key: &SecretKey, entry: Entry) -> Result<u64> {
    append_above(conn, key, entry, 0, 0).map(|(seq, _)| seq)
}

/// [`append`] to `lane`, refusing too when the lane's stored head is
/// older than `floor`, the newest sequence number anchored outside the
/// database for it: the trail was rolled back or wiped. Returns the
/// sequence number, and whether the entry passed a checkpoint.
pub fn append_above(
    conn: &dyn Tx,
    key: &SecretKey,
    mut entry: Entry,
    lane: Lane,
    floor: u64,
) -> Result<(u64, bool)> {
    let mut inner = || -> Result<(u64, bool)> {
        // The first append of a transaction checks the stored head; the
        // next ones extend the head it wrote, which nothing outside the
        // transaction can have changed (storage forgets it at any rollback).
        let (prev_seq, prev_mac) = match conn.audit_head_written(lane) {
            Some(head) => head,
            None => checked_head(conn, key, lane)?,
        };
        if prev_seq < floor {
            return Err(tampered(in_lane(
                lane,
                &format!(
                    "the log ends at entry {prev_seq} but the anchor outside the database records entry {floor}"
                ),
            )));
        }
        entry.lane = lane;
        entry.seq = conn.audit_next_seq(prev_seq)?;
        if entry.seq <= prev_seq {
            return Err(tampered(in_lane(
                lane,
                &format!(
                    "the next sequence number {} is not after the head {prev_seq}",
                    entry.seq
                ),
            )));
        }
        entry.mac = crypto::hmac_sha256(key, &[&entry.canonical(&prev_mac)]).to_vec();
        conn.audit_insert(&entry)?;
        write_pointer(
            conn,
            key,
            (lane, HEAD_META, HEAD_LABEL),
            entry.seq,
            &entry.mac,
        )?;
        conn.audit_head_remember(lane, (entry.seq, entry.mac.clone()));
        let checkpoint = crosses_checkpoint(prev_seq, entry.seq);
        if checkpoint {
            let label = lane_label(CHECKPOINT_LABEL, lane);
            conn.audit_checkpoint_insert(
                lane,
                entry.seq,
                &entry.mac,
                entry.time,
                &head_mac(key, &label, entry.seq, &entry.mac),
            )?;
        }
        Ok((entry.seq, checkpoint))
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

/// Deletes entries older than `before` (Unix ms), cutting each lane only
/// at its newest checkpoint that is entirely older, which becomes the base
/// that verification of the lane starts from; a lane other than 0 whose
/// every entry is older is cut at its head (a server run's lane stops
/// at its last entry, which no later checkpoint may follow; it would
/// otherwise be kept for good). Returns the entries deleted. Like an
/// append, it rewrites a MAC'd pointer, so it first checks the head and
/// base rows and the point it cuts at: a forged pointer is never re-MAC'd.
pub fn prune(conn: &dyn Tx, key: &SecretKey, before: i64) -> Result<u64> {
    let mut deleted = 0;
    for lane in lanes(conn)? {
        let (head_seq, head_mac_) = checked_head(conn, key, lane)?;
        let whole = lane != 0
            && head_seq > 0
            && conn
                .audit_lane_newest_time(lane)?
                .is_some_and(|t| t < before);
        let (seq, head) = if whole {
            // The head row must name the lane's last entry, or the cut
            // would hide a tampered tail.
            let last = conn.audit_last_entry(lane)?;
            if !last.is_some_and(|(s, m)| s == head_seq && crypto::ct_eq(&m, &head_mac_)) {
                let e = tampered(in_lane(
                    lane,
                    "the head row does not name the lane's last entry",
                ));
                log_tampering(&e);
                return Err(e);
            }
            (head_seq, head_mac_)
        } else {
            let Some((seq, head, cmac, entry_mac)) = conn.audit_prune_cut(lane, before)? else {
                continue;
            };
            let label = lane_label(CHECKPOINT_LABEL, lane);
            let genuine = crypto::ct_eq(&cmac, &head_mac(key, &label, seq, &head))
                && crypto::ct_eq(&head, &entry_mac);
            if !genuine {
                let e = tampered(in_lane(
                    lane,
                    &format!("checkpoint {seq} does not match the chain"),
                ));
                log_tampering(&e);
                return Err(e);
            }
            (seq, head)
        };
        deleted += conn.audit_delete_through(lane, seq)?;
        write_pointer(conn, key, (lane, BASE_META, BASE_LABEL), seq, &head)?;
    }
    Ok(deleted)
}

//! An operator's acknowledgement of a broken audit chain (`strongbox audit
//! accept-loss`): keep the longest stretch that verifies, quarantine the
//! rest (nothing is deleted), and chain an entry that records the loss.
//! Offline, on a SQLite data directory: one lane, 0.

use super::{
    BASE_LABEL, BASE_META, Entry, GENESIS, HEAD_LABEL, HEAD_META, append, checked_base,
    write_pointer,
};
use crate::store::prelude::*;

use crate::crypto::{self, SecretKey};
use crate::error::Result;

/// The end of the longest stretch of the chain, from its base, whose every
/// entry chains onto the one before: `(seq, mac)`, `(base, base head)` or
/// `(0, genesis)` for an empty chain. `None` when the base row itself is
/// not genuine.
fn verified_prefix(conn: &dyn Tx, key: &SecretKey) -> Result<Option<(u64, Vec<u8>)>> {
    let Ok(base) = checked_base(conn, key, 0) else {
        return Ok(None);
    };
    let (mut end, mut prev) = base.map_or((0, GENESIS.to_vec()), |b| (b.seq, b.head));
    conn.audit_entries_from(end + 1, &mut |e| {
        let mac = crypto::hmac_sha256(key, &[&e.canonical(&prev)]);
        if e.seq != end + 1 || !crypto::ct_eq(&mac, &e.mac) {
            return false;
        }
        (end, prev) = (e.seq, e.mac);
        true
    })?;
    Ok(Some((end, prev)))
}

/// What `accept_loss` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedLoss {
    /// The last entry of the chain that still verified.
    pub kept_through: u64,
    /// Entries after it moved to `audit_quarantine` (kept for forensics).
    pub quarantined: u64,
    /// The entry that records the acknowledgement: the chain's new head.
    pub head_seq: u64,
    pub head: Vec<u8>,
}

/// An operator's acknowledgement of a broken chain, in the caller's
/// transaction: keeps the longest verified stretch from the base, moves
/// every entry after it to `audit_quarantine` (nothing is deleted), makes
/// the head point at the stretch's end, and appends `entry` (which says
/// what was lost) on top. With the base row itself forged, every entry is
/// quarantined and a new chain starts after the highest sequence number
/// seen. `lost_through` is the newest entry known to have existed (the
/// anchor's), for the entry's resource.
pub fn accept_loss(
    conn: &dyn Tx,
    key: &SecretKey,
    mut entry: Entry,
    lost_through: u64,
) -> Result<AcceptedLoss> {
    let highest = conn.audit_highest_seq()?;
    let highest = highest.max(lost_through);
    // With a forged base no stretch can be trusted: a new chain starts.
    let (kept, head, restart) = match verified_prefix(conn, key)? {
        Some((seq, mac)) => (seq, mac, false),
        None => {
            write_pointer(conn, key, (0, BASE_META, BASE_LABEL), highest, &GENESIS)?;
            (highest, GENESIS.to_vec(), true)
        }
    };
    let now = crate::now_ms();
    let quarantined = conn.audit_quarantine_after(kept, restart, now)?;
    write_pointer(conn, key, (0, HEAD_META, HEAD_LABEL), kept, &head)?;
    entry.resource = format!(
        "audit:entries {}..{} lost or altered; {quarantined} quarantined",
        kept + 1,
        highest.max(kept + 1)
    );
    let seq = append(conn, key, entry)?;
    let mac = conn
        .audit_last_entry(0)?
        .filter(|(last, _)| *last == seq)
        .map(|(_, mac)| mac)
        .ok_or_else(|| {
            crate::error::Error::Internal("audit: the loss entry is not the head".into())
        })?;
    Ok(AcceptedLoss {
        kept_through: kept,
        quarantined,
        head_seq: seq,
        head: mac,
    })
}

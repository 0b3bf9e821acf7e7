//! An operator's acknowledgement of a broken audit chain (`strongbox audit
//! accept-loss`): keep the longest stretch that verifies, quarantine the
//! rest (nothing is deleted), and chain an entry that records the loss.

use rusqlite::{Connection, params};

use super::{
    BASE_LABEL, BASE_META, ENTRY_COLS, Entry, GENESIS, HEAD_LABEL, HEAD_META, append, checked_base,
    entry_row, write_pointer,
};
use crate::crypto::{self, SecretKey};
use crate::error::Result;

/// The end of the longest stretch of the chain, from its base, whose every
/// entry chains onto the one before: `(seq, mac)`, `(base, base head)` or
/// `(0, genesis)` for an empty chain. `None` when the base row itself is
/// not genuine.
fn verified_prefix(conn: &Connection, key: &SecretKey) -> Result<Option<(u64, Vec<u8>)>> {
    let Ok(base) = checked_base(conn, key) else {
        return Ok(None);
    };
    let (mut end, mut prev) = base.map_or((0, GENESIS.to_vec()), |b| (b.seq, b.head));
    let mut stmt = conn.prepare(&format!(
        "SELECT {ENTRY_COLS} FROM audit_log WHERE seq > ?1 ORDER BY seq"
    ))?;
    let mut rows = stmt.query([end as i64])?;
    while let Some(row) = rows.next()? {
        let e = entry_row(row)?;
        let mac = crypto::hmac_sha256(key, &[&e.canonical(&prev)]);
        if e.seq != end + 1 || !crypto::ct_eq(&mac, &e.mac) {
            break;
        }
        (end, prev) = (e.seq, e.mac);
    }
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
    conn: &Connection,
    key: &SecretKey,
    mut entry: Entry,
    lost_through: u64,
) -> Result<AcceptedLoss> {
    let highest: i64 = conn.query_row(
        "SELECT max(ifnull((SELECT max(seq) FROM audit_log), 0), ifnull((SELECT max(seq) FROM audit_checkpoints), 0))",
        [],
        |r| r.get(0),
    )?;
    let highest = (highest as u64).max(lost_through);
    // With a forged base no stretch can be trusted: a new chain starts.
    let (kept, head, restart) = match verified_prefix(conn, key)? {
        Some((seq, mac)) => (seq, mac, false),
        None => {
            write_pointer(conn, key, BASE_META, BASE_LABEL, highest, &GENESIS)?;
            (highest, GENESIS.to_vec(), true)
        }
    };
    let now = crate::now_ms();
    let quarantined = conn.execute(
        &format!(
            "INSERT INTO audit_quarantine (quarantined_at, {ENTRY_COLS})
             SELECT ?2, {ENTRY_COLS} FROM audit_log WHERE seq > ?1 OR ?3"
        ),
        params![kept as i64, now, restart],
    )?;
    conn.execute(
        "DELETE FROM audit_log WHERE seq > ?1 OR ?2",
        params![kept as i64, restart],
    )?;
    conn.execute(
        "DELETE FROM audit_checkpoints WHERE seq > ?1",
        [kept as i64],
    )?;
    write_pointer(conn, key, HEAD_META, HEAD_LABEL, kept, &head)?;
    entry.resource = format!(
        "audit:entries {}..{} lost or altered; {quarantined} quarantined",
        kept + 1,
        highest.max(kept + 1)
    );
    let seq = append(conn, key, entry)?;
    let mac: Vec<u8> = conn.query_row(
        "SELECT mac FROM audit_log WHERE seq = ?1",
        [seq as i64],
        |r| r.get(0),
    )?;
    Ok(AcceptedLoss {
        kept_through: kept,
        quarantined: quarantined as u64,
        head_seq: seq,
        head: mac,
    })
}

//! An operator's acknowledgement of a broken audit chain (`strongbox audit
//! accept-loss`): keep, in every lane, the longest stretch that verifies,
//! quarantine the rest (nothing is deleted), record which entries of which
//! lane are lost, and chain an entry that says so.
//!
//! On SQLite there is one lane, 0. On PostgreSQL every server run has a
//! lane, and the other lanes' witness entries say how far a damaged lane
//! had come: a lane cut short would fail them for ever. The acceptance
//! therefore stores a MAC'd loss row per damaged lane (`audit_losses`):
//! a witness older than the acceptance that names the lane no further
//! than its `lost_through` is not a cut. Witnesses written after it name
//! the lane as it is now, and are checked as before.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    BASE_LABEL, BASE_META, Entry, GENESIS, HEAD_LABEL, HEAD_META, Lane, WITNESS_ACTION, anchor,
    append_above, checked_base, head_mac, lane_label, lanes, read_pointer, witnessed,
    write_pointer,
};
use crate::store::LossRow;
use crate::store::prelude::*;

use crate::crypto::{self, SecretKey};
use crate::error::{Error, Result};

/// The MAC label of a loss row.
const LOSS_LABEL: &[u8] = b"strongbox/v1/audit-loss";

/// One lane as the repair walk finds it.
struct LaneWalk {
    /// Entries at or below this are not the lane's (its pruning base).
    base: u64,
    /// The last entry that chains onto the one before (the base before any).
    kept: u64,
    /// Its MAC.
    prev: Vec<u8>,
    /// False once an entry of the lane failed: the rest is lost.
    intact: bool,
    /// The base row itself is forged: nothing of the lane is kept.
    forged_base: bool,
    /// Entries at or below the base are stored (pruning leaves none).
    below_base: bool,
    /// The newest entry of the lane anything says existed: stored entries
    /// (good or bad), checkpoints, witnesses, the anchor.
    claimed: u64,
}

impl LaneWalk {
    fn new(conn: &dyn Tx, key: &SecretKey, lane: Lane) -> Result<LaneWalk> {
        let (base, prev, forged_base) = match checked_base(conn, key, lane) {
            Ok(Some(b)) => (b.seq, b.head, false),
            Ok(None) => (0, GENESIS.to_vec(), false),
            Err(Error::Corrupt(_)) => (0, GENESIS.to_vec(), true),
            Err(e) => return Err(e),
        };
        Ok(LaneWalk {
            base,
            kept: base,
            prev,
            intact: !forged_base,
            forged_base,
            below_base: false,
            claimed: base,
        })
    }

    /// Takes `e` into the kept stretch if it chains on; else the lane is
    /// broken from here.
    fn step(&mut self, key: &SecretKey, e: &Entry) {
        self.claimed = self.claimed.max(e.seq);
        if e.seq <= self.base && !self.forged_base {
            self.below_base = true;
            return;
        }
        if !self.intact {
            return;
        }
        let in_order = match e.lane {
            0 => e.seq == self.kept + 1,
            _ => e.seq > self.kept,
        };
        let mac = crypto::hmac_sha256(key, &[&e.canonical(&self.prev)]);
        if !in_order || !crypto::ct_eq(&mac, &e.mac) {
            self.intact = false;
            return;
        }
        (self.kept, self.prev) = (e.seq, e.mac.clone());
    }
}

/// What `accept_loss` did to one lane.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneLoss {
    pub lane: Lane,
    /// The last entry of the lane that still verified (0: none).
    pub kept_through: u64,
    /// The newest entry of the lane known to have existed.
    pub lost_through: u64,
    /// Entries of the lane moved to `audit_quarantine`.
    pub quarantined: u64,
}

/// What `accept_loss` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptedLoss {
    /// The newest entry, in any lane, that still verified.
    pub kept_through: u64,
    /// Entries moved to `audit_quarantine` (kept for forensics).
    pub quarantined: u64,
    /// The lanes found damaged.
    pub lanes: Vec<LaneLoss>,
    /// The entry that records the acknowledgement: the chain's new head.
    pub head_seq: u64,
    pub head: Vec<u8>,
}

/// An operator's acknowledgement of a broken chain, in the caller's
/// transaction. In every lane: keeps the longest stretch from the base
/// whose every entry chains on, moves the lane's other entries to
/// `audit_quarantine`, and makes the head row point at the stretch's end.
/// A lane whose base row is forged keeps nothing and starts again after
/// the newest sequence number seen; entries of a lane no server opened
/// are quarantined. Then `entry`, which says what was lost, is appended to
/// `lane` (the caller's), and a loss row is stored for every lane cut
/// short. `anchored` is the anchor file's newest points, which count as
/// entries known to have existed.
pub fn accept_loss(
    conn: &dyn Tx,
    key: &SecretKey,
    mut entry: Entry,
    lane: Lane,
    anchored: &anchor::Points,
) -> Result<AcceptedLoss> {
    let known: BTreeSet<Lane> = lanes(conn)?.into_iter().collect();
    let mut walks = BTreeMap::new();
    for &l in &known {
        walks.insert(l, LaneWalk::new(conn, key, l)?);
    }
    // Lanes entries name that no server opened: every entry quarantined.
    let mut strays: BTreeMap<Lane, u64> = BTreeMap::new();
    let mut claims: Vec<(Lane, u64)> = Vec::new();
    conn.audit_entries_from(1, &mut |e| {
        match walks.get_mut(&e.lane) {
            Some(w) => w.step(key, &e),
            None => {
                let s = strays.entry(e.lane).or_default();
                *s = (*s).max(e.seq);
            }
        }
        if e.action == WITNESS_ACTION && e.outcome == "ok" {
            claims.extend(witnessed(&e.resource));
        }
        true
    })?;
    for (s, (l, _, _)) in conn.audit_checkpoints()? {
        claims.push((l, s));
    }
    claims.extend(anchored.iter().map(|(l, p)| (*l, p.seq)));
    for (l, seq) in claims {
        match walks.get_mut(&l) {
            Some(w) => w.claimed = w.claimed.max(seq),
            None => {
                let s = strays.entry(l).or_default();
                *s = (*s).max(seq);
            }
        }
    }

    let now = crate::now_ms();
    let highest = conn.audit_highest_seq()?;
    let mut damaged = Vec::new();
    for (&l, w) in &walks {
        let stored_head = read_pointer(conn, l, HEAD_META)?;
        let head_ok = match &stored_head {
            None => w.kept == w.base && w.base == 0,
            Some(p) => {
                p.seq == w.kept
                    && crypto::ct_eq(&p.head, &w.prev)
                    && crypto::ct_eq(
                        &p.mac,
                        &head_mac(key, &lane_label(HEAD_LABEL, l), p.seq, &p.head),
                    )
            }
        };
        if w.intact && head_ok && !w.below_base && w.claimed <= w.kept {
            continue;
        }
        let (base, kept, prev) = if w.forged_base {
            // No stretch of the lane can be trusted: it starts again after
            // everything seen (lane 0 numbers its entries without gaps).
            let restart = match l {
                0 => highest.max(w.claimed),
                _ => w.claimed,
            };
            write_pointer(conn, key, (l, BASE_META, BASE_LABEL), restart, &GENESIS)?;
            (restart, restart, GENESIS.to_vec())
        } else {
            (w.base, w.kept, w.prev.clone())
        };
        let quarantined = conn.audit_quarantine_lane(l, base, kept, now)?;
        write_pointer(conn, key, (l, HEAD_META, HEAD_LABEL), kept, &prev)?;
        damaged.push(LaneLoss {
            lane: l,
            kept_through: if w.forged_base { 0 } else { kept },
            lost_through: w.claimed.max(kept),
            quarantined,
        });
    }
    for (&l, &claimed) in &strays {
        let quarantined = conn.audit_quarantine_lane(l, u64::MAX, 0, now)?;
        damaged.push(LaneLoss {
            lane: l,
            kept_through: 0,
            lost_through: claimed,
            quarantined,
        });
    }

    entry.resource = describe(&damaged);
    let kept_through = walks
        .values()
        .filter(|w| !w.forged_base)
        .map(|w| w.kept)
        .max()
        .unwrap_or(0);
    let (seq, _) = append_above(conn, key, entry, lane, 0)?;
    for d in damaged.iter().filter(|d| d.lost_through > d.kept_through) {
        conn.audit_loss_put(&loss_row(key, d.lane, seq, d.lost_through))?;
    }
    let head = read_pointer(conn, lane, HEAD_META)?
        .filter(|p| p.seq == seq)
        .map(|p| p.head)
        .ok_or_else(|| Error::Internal("audit: the loss entry is not the head".into()))?;
    Ok(AcceptedLoss {
        kept_through,
        quarantined: damaged.iter().map(|d| d.quarantined).sum(),
        lanes: damaged,
        head_seq: seq,
        head,
    })
}

/// The loss entry's resource: which entries of which lanes are gone.
fn describe(damaged: &[LaneLoss]) -> String {
    let quarantined: u64 = damaged.iter().map(|d| d.quarantined).sum();
    if damaged.is_empty() {
        return format!("audit:no entry lost or altered; {quarantined} quarantined");
    }
    let lost: Vec<String> = damaged
        .iter()
        .map(|d| {
            let range = format!(
                "entries {}..{}",
                d.kept_through + 1,
                d.lost_through.max(d.kept_through + 1)
            );
            match d.lane {
                0 => range,
                l => format!("lane {l} {range}"),
            }
        })
        .collect();
    format!(
        "audit:{} lost or altered; {quarantined} quarantined",
        lost.join(", ")
    )
}

fn loss_mac(key: &SecretKey, lane: Lane, accepted_seq: u64, lost_through: u64) -> [u8; 32] {
    crypto::hmac_sha256(
        key,
        &[&crypto::encode_fields(&[
            LOSS_LABEL,
            &lane.to_be_bytes(),
            &accepted_seq.to_be_bytes(),
            &lost_through.to_be_bytes(),
        ])],
    )
}

fn loss_row(key: &SecretKey, lane: Lane, accepted_seq: u64, lost_through: u64) -> LossRow {
    LossRow {
        lane,
        accepted_seq,
        lost_through,
        mac: loss_mac(key, lane, accepted_seq, lost_through).to_vec(),
    }
}

/// The accepted losses, each row's MAC checked: lane → (acceptance's
/// sequence number, lost through). A forged row is tampering.
pub(super) fn accepted_losses(
    conn: &dyn Tx,
    key: &SecretKey,
) -> Result<std::result::Result<Losses, String>> {
    let rows = conn.audit_losses()?;
    let mut losses: BTreeMap<Lane, Vec<(u64, u64)>> = BTreeMap::new();
    for r in rows {
        let mac = loss_mac(key, r.lane, r.accepted_seq, r.lost_through);
        if !crypto::ct_eq(&mac, &r.mac) {
            return Ok(Err(format!(
                "the accepted-loss row of lane {} at entry {}: its MAC does not match",
                r.lane, r.accepted_seq
            )));
        }
        losses
            .entry(r.lane)
            .or_default()
            .push((r.accepted_seq, r.lost_through));
    }
    Ok(Ok(losses))
}

/// Accepted losses by lane: (the acceptance's sequence number, lost
/// through).
pub(super) type Losses = BTreeMap<Lane, Vec<(u64, u64)>>;

/// Whether a witness at `witness_seq` naming `lane` at `claimed` is
/// covered by an acceptance written after it.
pub(super) fn excused(losses: &Losses, lane: Lane, witness_seq: u64, claimed: u64) -> bool {
    losses.get(&lane).is_some_and(|v| {
        v.iter()
            .any(|&(accepted, lost)| witness_seq < accepted && claimed <= lost)
    })
}

//! Verifying the chain: every MAC, the sequence, every checkpoint, the
//! head row, and the anchor kept outside the database.

use super::*;
use crate::store::Checkpoints;

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Entries checked.
    pub entries: u64,
    /// Sequence number and MAC of the last entry.
    pub head_seq: u64,
    pub head: Vec<u8>,
    /// The first bad sequence number and what is wrong, if any.
    pub problem: Option<(u64, String)>,
}

/// Walks the whole chain from its base and checks every MAC, the sequence,
/// every checkpoint and the head row.
pub fn verify(conn: &dyn Tx, key: &SecretKey) -> Result<Report> {
    verify_anchored(conn, key, &anchor::Points::new())
}

/// Where one lane's walk has come.
struct Walk {
    /// The lane's pruning base (0: none).
    base: u64,
    /// The last entry checked (the base before any).
    last: u64,
    /// Its MAC, which the next entry of the lane chains onto.
    prev: Vec<u8>,
    entries: u64,
}

/// [`verify`], and checks every lane against `anchor`, the newest point of
/// each lane recorded outside the database: the lane must reach it and pass
/// through it. A wiped or rolled-back trail fails here even when every row
/// left in the database is consistent. Read `anchor` before the database
/// snapshot: a point anchored after it would look like a cut.
pub fn verify_anchored(conn: &dyn Tx, key: &SecretKey, anchor: &anchor::Points) -> Result<Report> {
    let mut walks = std::collections::BTreeMap::new();
    for lane in lanes(conn)? {
        let walk = match read_pointer(conn, lane, BASE_META)? {
            Some(Pointer { seq, head, mac }) => {
                let label = lane_label(BASE_LABEL, lane);
                if !crypto::ct_eq(&mac, &head_mac(key, &label, seq, &head)) {
                    let what = in_lane(lane, "the pruning base row's MAC does not match");
                    return Ok(bad(0, seq, head, what));
                }
                if let Some(a) = anchor.get(&lane)
                    && a.seq == seq
                    && !crypto::ct_eq(&a.head, &head)
                {
                    return Ok(bad(0, seq, head, in_lane(lane, &anchor_mismatch(seq))));
                }
                Walk {
                    base: seq,
                    last: seq,
                    prev: head,
                    entries: 0,
                }
            }
            None => Walk {
                base: 0,
                last: 0,
                prev: GENESIS.to_vec(),
                entries: 0,
            },
        };
        walks.insert(lane, walk);
    }
    let losses = match super::repair::accepted_losses(conn, key)? {
        Ok(losses) => losses,
        Err(what) => return Ok(bad(0, 0, Vec::new(), what)),
    };
    let checkpoints = conn.audit_checkpoints()?;
    let from = walks.values().map(|w| w.base + 1).min().unwrap_or(1);
    let mut entries = 0u64;
    let mut broken = None;
    conn.audit_entries_from(from, &mut |e| {
        let Some(walk) = walks.get_mut(&e.lane) else {
            broken = Some(bad(
                entries,
                e.seq,
                Vec::new(),
                format!("entry {} is in lane {}, which no server opened", e.seq, e.lane),
            ));
            return false;
        };
        let link = Link {
            key,
            anchor: anchor.get(&e.lane),
            checkpoints: &checkpoints,
            entries,
            walk,
        };
        if let Some(report) = link.check(&e) {
            broken = Some(report);
            return false;
        }
        walk.last = e.seq;
        walk.prev = e.mac.clone();
        walk.entries += 1;
        entries += 1;
        if e.action == WITNESS_ACTION && e.outcome == "ok" {
            // A witnessed entry was committed before the witness took its
            // sequence number, so the walk, in sequence order, has passed
            // it. An entry chained on later (onto a head put back) comes
            // after the witness, and does not count.
            for (lane, seq) in witnessed(&e.resource) {
                let reached = walks.get(&lane).map(|w| w.last);
                if reached.is_none_or(|last| last < seq)
                    && !super::repair::excused(&losses, lane, e.seq, seq)
                {
                    let end = reached.map_or("it is missing".to_owned(), |l| {
                        format!("it ends at entry {l} there")
                    });
                    broken = Some(bad(
                        entries,
                        e.seq,
                        e.mac.clone(),
                        format!(
                            "entry {} witnessed lane {lane} reach entry {seq}, but {end}: the lane's tail was cut off",
                            e.seq
                        ),
                    ));
                    return false;
                }
            }
        }
        true
    })?;
    if let Some(report) = broken {
        return Ok(report);
    }
    for (lane, walk) in &walks {
        if let Some(report) = lane_end(conn, key, *lane, walk, anchor, &checkpoints)? {
            return Ok(Report { entries, ..report });
        }
    }
    for (lane, a) in anchor {
        // A lane reset to nothing (a restore from before it) is not owed.
        if a.seq > 0 && !walks.contains_key(lane) {
            return Ok(bad(
                entries,
                a.seq,
                Vec::new(),
                format!(
                    "lane {lane} is missing, but the anchor outside the database records its entry {}",
                    a.seq
                ),
            ));
        }
    }
    let (head_seq, head) = walks
        .values()
        .max_by_key(|w| w.last)
        .map_or((0, GENESIS.to_vec()), |w| (w.last, w.prev.clone()));
    Ok(Report {
        entries,
        head_seq,
        head,
        problem: None,
    })
}

/// What is wrong with the end of `lane`'s walk, if anything: it must reach
/// its anchored point and its checkpoints, and match its head row.
fn lane_end(
    conn: &dyn Tx,
    key: &SecretKey,
    lane: Lane,
    walk: &Walk,
    anchor: &anchor::Points,
    checkpoints: &Checkpoints,
) -> Result<Option<Report>> {
    let (last, prev) = (walk.last, walk.prev.clone());
    let cut = |what: String| Ok(Some(bad(0, last + 1, prev.clone(), in_lane(lane, &what))));
    if let Some(a) = anchor.get(&lane)
        && a.seq > last
    {
        return cut(format!(
            "the log ends at entry {last} but the anchor outside the database records entry {}: the trail was wiped or rolled back, or restored without `strongbox restore`",
            a.seq
        ));
    }
    let beyond = checkpoints
        .iter()
        .filter(|(s, (l, _, _))| *l == lane && **s > last)
        .map(|(s, _)| *s)
        .min();
    if let Some(beyond) = beyond {
        return cut(format!(
            "the log is truncated: a checkpoint exists at {beyond} but the last entry is {last}"
        ));
    }
    match read_pointer(conn, lane, HEAD_META)? {
        None if walk.entries == 0 && walk.base == 0 => {}
        None => {
            return Ok(Some(bad(
                0,
                last,
                prev,
                in_lane(lane, "the audit head row is missing"),
            )));
        }
        Some(Pointer { seq, head, mac }) => {
            let label = lane_label(HEAD_LABEL, lane);
            if !crypto::ct_eq(&mac, &head_mac(key, &label, seq, &head)) {
                let what = in_lane(lane, "the audit head row's MAC does not match");
                return Ok(Some(bad(0, seq, prev, what)));
            }
            if seq != last || !crypto::ct_eq(&head, &prev) {
                return cut(format!(
                    "the log is truncated or rolled back: the head is entry {seq} but the chain ends at {last}"
                ));
            }
        }
    }
    Ok(None)
}

/// One step of [`verify_anchored`]'s walk: the lane so far, and what its
/// next entry must match.
struct Link<'a> {
    key: &'a SecretKey,
    anchor: Option<&'a anchor::Point>,
    checkpoints: &'a Checkpoints,
    entries: u64,
    walk: &'a Walk,
}

impl Link<'_> {
    /// A report that entry `e` of its lane is where the chain breaks.
    fn broken_at(&self, e: &Entry, what: &str) -> Option<Report> {
        let prev = self.walk.prev.clone();
        Some(bad(self.entries, e.seq, prev, in_lane(e.lane, what)))
    }

    /// What is wrong with `e` as the next entry of its lane, if anything.
    fn check(&self, e: &Entry) -> Option<Report> {
        if e.seq <= self.walk.base {
            let what = format!("entry {} is older than the lane's pruning base", e.seq);
            return self.broken_at(e, &what);
        }
        // Lane 0 is numbered without gaps (one writer); other lanes take
        // numbers from a sequence they share.
        let expected = self.walk.last + 1;
        if e.lane == 0 && e.seq != expected {
            return Some(bad(
                self.entries,
                expected,
                self.walk.prev.clone(),
                format!(
                    "entry {expected} is missing (the sequence jumps to {})",
                    e.seq
                ),
            ));
        }
        let mac = crypto::hmac_sha256(self.key, &[&e.canonical(&self.walk.prev)]);
        if !crypto::ct_eq(&mac, &e.mac) {
            let what = match e.lane {
                0 => format!(
                    "entry {}'s MAC does not match: it was edited, reordered or replaced, or entry {} was",
                    e.seq,
                    e.seq - 1
                ),
                _ => format!(
                    "entry {}'s MAC does not match: it was edited, reordered or replaced, or the lane's entry before it (entry {}) was, or is missing",
                    e.seq, self.walk.last
                ),
            };
            return self.broken_at(e, &what);
        }
        if let Some(a) = self.anchor
            && a.seq == e.seq
            && !crypto::ct_eq(&a.head, &e.mac)
        {
            return self.broken_at(e, &anchor_mismatch(a.seq));
        }
        if let Some((lane, head, cmac)) = self.checkpoints.get(&e.seq) {
            let label = lane_label(CHECKPOINT_LABEL, e.lane);
            let ok = *lane == e.lane
                && crypto::ct_eq(head, &e.mac)
                && crypto::ct_eq(cmac, &head_mac(self.key, &label, e.seq, head));
            if !ok {
                return self
                    .broken_at(e, &format!("checkpoint {} does not match the chain", e.seq));
            }
        }
        None
    }
}

fn anchor_mismatch(seq: u64) -> String {
    format!(
        "entry {seq} is not the one the anchor outside the database records: the trail was rewritten"
    )
}

fn bad(entries: u64, seq: u64, head: Vec<u8>, what: String) -> Report {
    Report {
        entries,
        head_seq: seq.saturating_sub(1),
        head,
        problem: Some((seq, what)),
    }
}

/// What a tenant's auditor may see of a platform-wide report: whether the
/// chain verifies, and its own tenant's entry count and last entry. Where a
/// break is, and how many entries other tenants have, stay hidden.
pub fn tenant_view(conn: &dyn Tx, tenant: &str, report: Report) -> Result<Report> {
    let (entries, last) = conn.audit_tenant_summary(tenant)?;
    let (last, head) = last.unwrap_or_default();
    Ok(Report {
        entries,
        head_seq: last,
        head,
        problem: report.problem.map(|_| {
            (
                0,
                "the audit chain does not verify; the platform operator's `audit verify` shows where".to_owned(),
            )
        }),
    })
}

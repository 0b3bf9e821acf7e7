//! Verifying the chain: every MAC, the sequence, every checkpoint, the
//! head row, and the anchor kept outside the database.

use super::*;

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
    verify_anchored(conn, key, None)
}

/// [`verify`], and checks the chain against `anchor`, the newest
/// `(seq, head)` recorded outside the database: the chain must reach it
/// and pass through it. A wiped or rolled-back trail fails here even when
/// every row left in the database is consistent.
pub fn verify_anchored(
    conn: &dyn Tx,
    key: &SecretKey,
    anchor: Option<(u64, &[u8])>,
) -> Result<Report> {
    let (mut expected, mut prev) = match read_pointer(conn, BASE_META)? {
        Some(Pointer { seq, head, mac }) => {
            if !crypto::ct_eq(&mac, &head_mac(key, BASE_LABEL, seq, &head)) {
                return Ok(bad(
                    0,
                    seq,
                    head,
                    "the pruning base row's MAC does not match".into(),
                ));
            }
            if let Some((aseq, ahead)) = anchor
                && aseq == seq
                && !crypto::ct_eq(ahead, &head)
            {
                return Ok(bad(0, seq, head, anchor_mismatch(aseq)));
            }
            (seq + 1, head)
        }
        None => (1, GENESIS.to_vec()),
    };
    let checkpoints = conn.audit_checkpoints()?;
    let mut entries = 0u64;
    let mut broken = None;
    conn.audit_entries_from(expected, &mut |e| {
        let link = Link {
            key,
            anchor,
            checkpoints: &checkpoints,
            entries,
            expected,
            prev: &prev,
        };
        match link.check(&e) {
            Some(report) => {
                broken = Some(report);
                false
            }
            None => {
                prev = e.mac;
                entries += 1;
                expected += 1;
                true
            }
        }
    })?;
    if let Some(report) = broken {
        return Ok(report);
    }
    let last = expected - 1;
    if let Some((aseq, _)) = anchor
        && aseq > last
    {
        return Ok(bad(
            entries,
            last + 1,
            prev,
            format!(
                "the log ends at entry {last} but the anchor outside the database records entry {aseq}: the trail was wiped or rolled back, or restored without `strongbox restore`"
            ),
        ));
    }
    if let Some(beyond) = checkpoints.keys().copied().filter(|s| *s > last).min() {
        return Ok(bad(
            entries,
            last + 1,
            prev,
            format!(
                "the log is truncated: a checkpoint exists at {beyond} but the last entry is {last}"
            ),
        ));
    }
    match read_pointer(conn, HEAD_META)? {
        None if entries == 0 => {}
        None => {
            return Ok(bad(
                entries,
                last,
                prev,
                "the audit head row is missing".into(),
            ));
        }
        Some(Pointer { seq, head, mac }) => {
            if !crypto::ct_eq(&mac, &head_mac(key, HEAD_LABEL, seq, &head)) {
                return Ok(bad(
                    entries,
                    seq,
                    prev,
                    "the audit head row's MAC does not match".into(),
                ));
            }
            if seq != last || !crypto::ct_eq(&head, &prev) {
                return Ok(bad(
                    entries,
                    last + 1,
                    prev,
                    format!(
                        "the log is truncated or rolled back: the head is entry {seq} but the chain ends at {last}"
                    ),
                ));
            }
        }
    }
    Ok(Report {
        entries,
        head_seq: last,
        head: prev,
        problem: None,
    })
}

/// One step of [`verify_anchored`]'s walk: the chain so far, and what the
/// next entry must match.
struct Link<'a> {
    key: &'a SecretKey,
    anchor: Option<(u64, &'a [u8])>,
    checkpoints: &'a std::collections::HashMap<u64, (Vec<u8>, Vec<u8>)>,
    entries: u64,
    expected: u64,
    prev: &'a [u8],
}

impl Link<'_> {
    /// What is wrong with `e` as the next entry, if anything.
    fn check(&self, e: &Entry) -> Option<Report> {
        let (entries, expected, prev) = (self.entries, self.expected, self.prev.to_vec());
        if e.seq != expected {
            return Some(bad(
                entries,
                expected,
                prev,
                format!(
                    "entry {expected} is missing (the sequence jumps to {})",
                    e.seq
                ),
            ));
        }
        let mac = crypto::hmac_sha256(self.key, &[&e.canonical(self.prev)]);
        if !crypto::ct_eq(&mac, &e.mac) {
            return Some(bad(
                entries,
                e.seq,
                prev,
                format!(
                    "entry {}'s MAC does not match: it was edited, reordered or replaced, or entry {} was",
                    e.seq,
                    e.seq - 1
                ),
            ));
        }
        if let Some((aseq, ahead)) = self.anchor
            && aseq == e.seq
            && !crypto::ct_eq(ahead, &e.mac)
        {
            return Some(bad(entries, e.seq, prev, anchor_mismatch(aseq)));
        }
        if let Some((head, cmac)) = self.checkpoints.get(&e.seq) {
            let ok = crypto::ct_eq(head, &e.mac)
                && crypto::ct_eq(cmac, &head_mac(self.key, CHECKPOINT_LABEL, e.seq, head));
            if !ok {
                return Some(bad(
                    entries,
                    e.seq,
                    prev,
                    format!("checkpoint {} does not match the chain", e.seq),
                ));
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

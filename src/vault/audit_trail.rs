//! The audit use cases: writing a call's entry (with its mutation, or on
//! its own), querying and verifying the chain, pruning it, anchoring its
//! head outside the database, and an operator's acknowledgement of a
//! broken chain.

use std::sync::Arc;

use crate::store::prelude::*;

use super::{Store, Vault};
use crate::audit::anchor::{Anchor, Kind, Point};
use crate::audit::{self, Call, Outcome};
use crate::authz::{Action, Permit};
use crate::crypto::SecretKey;
use crate::error::{Error, Result};
use crate::keyring::Keyring;

/// The `meta` row that says this vault's chain is anchored, so a missing
/// anchor file is noticed rather than started afresh.
const ANCHORED_META: &str = "audit_anchored";

/// The audit key for an append: a key that cannot be had is an outage,
/// but one that fails authentication is tampering.
fn append_key(keys: &Keyring, conn: &dyn Tx) -> Result<Arc<SecretKey>> {
    keys.audit_key(conn).map_err(|e| match e {
        Error::Corrupt(_) => e,
        e => Error::Unavailable(format!("audit: the audit key is unavailable ({e})")),
    })
}

/// Checks the database's chain against the anchor file at start-up, and
/// opens it: every lane's head row must be genuine and its last entry,
/// and every lane must reach its newest anchored point and pass through
/// it. The first start with anchoring records lane 0's head (SQLite).
/// The anchor file is read before the database snapshot that is checked
/// against it: on PostgreSQL other servers anchor meanwhile, and a point
/// anchored after the snapshot would look like a cut.
pub(super) async fn open_anchor(
    store: &Store,
    keys: &Arc<Keyring>,
    path: std::path::PathBuf,
    lane: audit::Lane,
) -> Result<Anchor> {
    let k = keys.clone();
    let (key, anchored) = store
        .read(move |c| Ok((k.audit_key(c)?, c.meta_get(ANCHORED_META)?.is_some())))
        .await?;
    if anchored && !path.exists() {
        return Err(Error::Corrupt(format!(
            "audit: this vault's chain is anchored in {}, which is missing: put the anchor file back, or, if it is lost, run `strongbox audit accept-loss` (docs/runbooks/audit-verification.md)",
            path.display()
        )));
    }
    let (anchor, points) = {
        let key = key.clone();
        crate::blocking(move || {
            let anchor = Anchor::open(&path, &key)?;
            let points = anchor.points(&key)?;
            Ok((anchor, points))
        })
        .await?
    };
    let k = key.clone();
    let head = store
        .read(move |c| {
            let head = audit::checked_head(c, &k, lane)?;
            if !points.is_empty() {
                let report = audit::verify_anchored(c, &k, &points)?;
                if let Some((_, problem)) = report.problem {
                    return Err(Error::Corrupt(format!(
                        "audit: {problem}; every call is refused until an operator runs `strongbox audit accept-loss` (docs/runbooks/audit-verification.md)"
                    )));
                }
            }
            Ok(head)
        })
        .await?;
    if !anchored {
        store.write(|c| c.meta_put(ANCHORED_META, b"1")).await?;
    }
    let (seq, head) = head;
    if seq > 0 || lane == 0 {
        let anchor = crate::blocking(move || {
            anchor.record(&key, Kind::Head, lane, Point { seq, head })?;
            Ok(anchor)
        });
        return anchor.await;
    }
    Ok(anchor)
}

/// Opens the anchor file for `strongbox audit accept-loss`, which repairs
/// a broken chain: no check against the database. An anchor file that is
/// itself broken is moved aside (kept, as evidence) and a new one begun.
pub(super) fn open_anchor_for_repair(key: &SecretKey, path: &std::path::Path) -> Result<Anchor> {
    match Anchor::open(path, key) {
        Err(Error::Corrupt(why)) => {
            let aside = path.with_extension(format!("broken-{}", crate::now_ms()));
            std::fs::rename(path, &aside)
                .map_err(|e| Error::Unavailable(format!("audit anchor {}: {e}", path.display())))?;
            tracing::warn!(%why, aside = %aside.display(), "moved a broken audit anchor file aside");
            Anchor::open(path, key)
        }
        other => other,
    }
}

impl Vault {
    /// The newest anchored sequence number: no append may extend an older
    /// head.
    fn audit_floor(&self) -> u64 {
        self.anchor.as_ref().map_or(0, |a| a.floor(self.lane))
    }

    /// After an append: asks for an anchor at every checkpoint.
    fn appended(&self, (_, checkpoint): (u64, bool)) {
        if checkpoint {
            self.anchor_wanted.notify_one();
        }
    }

    /// Waits until an append reaches a checkpoint.
    pub async fn anchor_requested(&self) {
        self.anchor_wanted.notified().await
    }

    /// Runs mutation `f` and the call's audit entry as one writer job: the
    /// entry commits with the mutation, or, if `f` fails, alone (the
    /// mutation rolled back to its savepoint). If the entry cannot be
    /// written nothing commits and the call fails: `Unavailable`, or
    /// `Corrupt` when the chain was tampered with.
    pub(super) async fn mutate<T, F>(&self, call: &Arc<Call>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&dyn Tx) -> Result<T> + Send + 'static,
    {
        let (keys, c, floor, lane) = (
            self.keys.clone(),
            call.clone(),
            self.audit_floor(),
            self.lane,
        );
        let (seq, result) = self
            .store
            .write(move |conn| {
                let mut r = None;
                conn.savepoint(&mut |tx| {
                    let out = f(tx);
                    let keep = out.is_ok();
                    r = Some(out);
                    keep
                })?;
                let r = r.ok_or_else(|| Error::Internal("a mutation did not run".into()))?;
                let (outcome, code) = Outcome::of(&r);
                let key = append_key(&keys, conn)?;
                let seq = audit::append_above(conn, &key, c.entry(outcome, code), lane, floor)?;
                Ok((seq, r))
            })
            .await
            .inspect_err(|_| {
                crate::metrics::get().audit_failures.inc();
            })?;
        crate::metrics::get().audit_written.inc();
        call.mark_recorded();
        self.appended(seq);
        result
    }

    /// Runs read `f` and commits the call's entry: where storage says
    /// reads join the writer (SQLite), as one writer job, the entry
    /// telling `f`'s outcome, like [`Vault::mutate`]; elsewhere in a read
    /// transaction, the entry left to [`Vault::record`] after it. Either
    /// way the caller is answered only once the entry is durable. `f`
    /// must not write.
    pub(super) async fn read_recorded<T, F>(&self, call: &Arc<Call>, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(&dyn Tx) -> Result<T> + Send + 'static,
    {
        if self.store.reads_join_the_writer() {
            self.mutate(call, f).await
        } else {
            self.store.read(f).await
        }
    }

    /// Records the call's entry on its own, durably, unless a mutation
    /// already did: for reads (before their data is returned) and for calls
    /// refused before reaching a use case.
    pub async fn record(&self, call: &Arc<Call>, (outcome, code): (Outcome, i32)) -> Result<()> {
        if call.is_recorded() {
            return Ok(());
        }
        let entry = call.entry(outcome, code);
        let (keys, floor, lane) = (self.keys.clone(), self.audit_floor(), self.lane);
        let seq = self
            .store
            .write(move |conn| {
                let key = append_key(&keys, conn)?;
                audit::append_above(conn, &key, entry.clone(), lane, floor)
            })
            .await
            .inspect_err(|_| {
                crate::metrics::get().audit_failures.inc();
            })?;
        crate::metrics::get().audit_written.inc();
        call.mark_recorded();
        self.appended(seq);
        Ok(())
    }

    /// Entries a permit may see, after `after`, at most `limit`.
    pub async fn audit_entries(
        &self,
        permit: &Permit,
        mut filter: audit::Filter,
        after: u64,
        limit: usize,
    ) -> Result<Vec<audit::Entry>> {
        permit.require(Action::AuditList)?;
        // A tenant auditor sees its own tenant's entries, whatever it asks.
        if let Some(home) = permit.home_tenant() {
            filter.tenant = Some(home.as_str().to_owned());
        }
        self.store
            .read(move |c| audit::list(c, &filter, after, limit))
            .await
    }

    /// Walks the whole audit chain, and checks it against the anchor. A
    /// tenant auditor learns whether the chain holds, and its own tenant's
    /// count and last entry, never the platform's count or where another
    /// tenant's entries break.
    pub async fn verify_audit(&self, permit: &Permit) -> Result<audit::Report> {
        Ok(self.verify_chain(permit, false).await?.0)
    }

    /// Prunes audit entries older than `before`, at a checkpoint.
    pub async fn prune_audit(&self, before: i64) -> Result<u64> {
        let keys = self.keys.clone();
        self.store
            .write(move |c| {
                let key = keys.audit_key(c)?;
                audit::prune(c, &key, before)
            })
            .await
    }

    /// Writes the committed head to the anchor file if it moved on. A head
    /// older than the anchor is tampering (`Corrupt`), logged as such.
    /// Returns the anchored sequence number.
    /// On PostgreSQL it also witnesses the other lanes first (see
    /// `witness_lanes`).
    pub async fn anchor_audit(&self) -> Result<u64> {
        if self.store.is_postgres() {
            self.witness_lanes().await?;
        }
        self.anchor_own_head().await
    }

    /// Appends to this server's lane an `audit.witness` entry naming how
    /// far every other lane has come, when any moved since the last one:
    /// a lane later found to end before that was cut (its server's tail
    /// lost or removed), which its own head row, put back from an older
    /// copy, would not show. Read in its own snapshot, so it takes no lock
    /// the other servers' appends wait for.
    async fn witness_lanes(&self) -> Result<()> {
        let me = self.lane;
        let heads = self
            .store
            .read(move |c| {
                let mut heads = Vec::new();
                for lane in audit::lanes(c)? {
                    if lane != me
                        && let Some((seq, _)) = c.audit_last_entry(lane)?
                    {
                        heads.push((lane, seq));
                    }
                }
                Ok(heads)
            })
            .await?;
        let moved: Vec<(audit::Lane, u64)> = {
            let mut seen = self.witnessed.lock().unwrap_or_else(|p| p.into_inner());
            let moved: Vec<_> = heads
                .into_iter()
                .filter(|(lane, seq)| seen.get(lane) != Some(seq))
                .collect();
            seen.extend(moved.iter().copied());
            moved
        };
        if moved.is_empty() {
            return Ok(());
        }
        let call = Arc::new(Call::system(audit::WITNESS_ACTION));
        call.set_resource(audit::witness_resource(&moved));
        let recorded = self.record(&call, (Outcome::Ok, 0)).await;
        if recorded.is_err() {
            // Witnessed again next time.
            self.witnessed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        recorded
    }

    /// Anchors `reset` lines: the trail before them is not the one the
    /// anchor saw (a restore from a backup). Every lane is reset, those the
    /// anchor knows and those the database holds: each to its head in the
    /// database (a lane the database does not hold, to nothing).
    pub(super) async fn anchor_reset(&self) -> Result<()> {
        let Some(anchor) = self.anchor.clone() else {
            return Ok(());
        };
        let keys = self.keys.clone();
        let (key, heads) = self
            .store
            .read(move |c| {
                let key = keys.audit_key(c)?;
                let mut heads = std::collections::BTreeMap::new();
                for lane in audit::lanes(c)? {
                    heads.insert(lane, audit::checked_head(c, &key, lane)?);
                }
                Ok((key, heads))
            })
            .await?;
        crate::blocking(move || {
            let mut heads = heads;
            for lane in anchor.points(&key)?.into_keys() {
                heads
                    .entry(lane)
                    .or_insert_with(|| (0, audit::GENESIS.to_vec()));
            }
            for (lane, (seq, head)) in heads {
                anchor.record(&key, Kind::Reset, lane, Point { seq, head })?;
            }
            Ok(())
        })
        .await
    }

    /// Writes this server's lane's committed head to the anchor file.
    async fn anchor_own_head(&self) -> Result<u64> {
        let Some(anchor) = self.anchor.clone() else {
            return Ok(0);
        };
        let (keys, lane) = (self.keys.clone(), self.lane);
        let (key, (seq, head)) = self
            .store
            .read(move |c| {
                let key = keys.audit_key(c)?;
                let head = audit::checked_head(c, &key, lane)?;
                Ok((key, head))
            })
            .await?;
        if seq == 0 && lane != 0 {
            return Ok(0); // a lane with no entry yet
        }
        crate::blocking(move || {
            anchor
                .record(&key, Kind::Head, lane, Point { seq, head })
                .inspect_err(audit::log_tampering)
                .map(|()| seq)
        })
        .await
    }

    /// An operator's acknowledgement that the chain is broken (offline,
    /// `strongbox audit accept-loss`): keeps the verified stretch, moves
    /// the rest to quarantine, records the acknowledgement with `reason`
    /// as an entry on top, and anchors it with a `reset` line.
    pub async fn accept_audit_loss(&self, call: &Arc<Call>) -> Result<audit::AcceptedLoss> {
        let anchor = self
            .anchor
            .clone()
            .ok_or_else(|| Error::Internal("accept-loss needs the anchor file".into()))?;
        let k = self.keys.clone();
        let key = self.store.read(move |c| k.audit_key(c)).await?;
        let points = {
            let (anchor, key) = (anchor.clone(), key.clone());
            crate::blocking(move || anchor.points(&key)).await?
        };
        let (entry, lane) = (call.entry(Outcome::Ok, 0), self.lane);
        let done = self
            .store
            .write(move |c| {
                let done = audit::accept_loss(c, &key, entry.clone(), lane, &points)?;
                c.meta_put(ANCHORED_META, b"1")?;
                Ok(done)
            })
            .await?;
        call.mark_recorded();
        // Every lane's anchored point moves to where the lane now ends.
        self.anchor_reset().await?;
        Ok(done)
    }
}

//! The audit trail's rows (the chain's rules are `crate::audit`'s) and the
//! scans that compare it with the records.

use std::collections::HashMap;

use crate::audit::{Entry, Filter};
use crate::error::Result;

/// A stored record under a live data key: (tenant, owner, category, key,
/// version, deleted).
#[derive(Clone)]
pub struct StoredRecord {
    pub tenant: String,
    pub owner: Vec<u8>,
    pub category: String,
    pub key: String,
    pub version: u64,
    pub deleted: bool,
    /// Deleted by the retention sweep (audited per batch, not per record).
    pub expired: bool,
}

/// An audit entry that touched a subject, for its access history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessRow {
    pub seq: u64,
    pub time: i64,
    pub principal: String,
    pub action: String,
    pub outcome: String,
    pub purpose: String,
}

/// A point in the chain: a sequence number and the entry's MAC there.
pub type ChainPoint = (u64, Vec<u8>);

/// Checkpoints by sequence number: (the lane, the lane's head there, the
/// checkpoint's own MAC).
pub type Checkpoints = HashMap<u64, (i64, Vec<u8>, Vec<u8>)>;

/// Where pruning may cut: (seq, the checkpoint's head, its MAC, the MAC of
/// the entry there).
pub type PruneCut = (u64, Vec<u8>, Vec<u8>, Vec<u8>);

/// The audit trail's rows (the chain's rules are `crate::audit`'s) and the scans that compare it with the records.
pub trait AuditRows {
    /// An audited call that fixes a record's state: (tenant, action, resource),
    /// in chain order, successful calls only.
    fn audited_record_writes(
        &self,
        tenant: Option<&str>,
        each: &mut dyn FnMut(&str, &str, &str),
    ) -> Result<()>;

    /// Every record whose data key is not destroyed (rows under destroyed keys
    /// are unreadable and only wait for their purge).
    fn live_key_records(
        &self,
        tenant: Option<&str>,
        each: &mut dyn FnMut(StoredRecord),
    ) -> Result<()>;

    /// The newest entry's sequence number (0: none).
    fn audit_last_seq(&self) -> Result<u64>;

    /// Up to `limit` entries of `tenant` in (`after`, `until`] whose resource
    /// names `blind_hex` (the subject's blind id), in chain order. Walks the
    /// tenant's entries by (tenant, seq).
    fn audit_touching(
        &self,
        tenant: &str,
        blind_hex: &str,
        seqs: (u64, u64),
        limit: usize,
    ) -> Result<Vec<AccessRow>>;

    /// The last stored entry of `lane`: its sequence number and MAC.
    fn audit_last_entry(&self, lane: i64) -> Result<Option<ChainPoint>>;

    /// The sequence number of an entry appended after `after`: the next
    /// one on SQLite (one writer, one lane), the next of a sequence shared
    /// by every server on PostgreSQL (gaps allowed; taking one locks no
    /// row, so appends to different lanes never wait for each other).
    fn audit_next_seq(&self, after: u64) -> Result<u64>;

    /// Opens a new lane for this server's appends (stamped `now`) and
    /// returns it: a new one per server run on PostgreSQL, always 0 (and no
    /// row) on SQLite.
    fn audit_open_lane(&self, now: i64) -> Result<i64>;

    /// Every lane opened on PostgreSQL (lane 0 is not listed: it always
    /// exists).
    fn audit_lanes(&self) -> Result<Vec<i64>>;

    /// `lane`'s stored pointer `which` (`audit_head` or `audit_base`), as
    /// `crate::audit` encodes it: lane 0's in `meta`, another lane's in its
    /// own `audit_lanes` row.
    fn audit_pointer(&self, lane: i64, which: &str) -> Result<Option<Vec<u8>>>;

    /// Stores `lane`'s pointer `which`. Forgets the remembered head
    /// ([`AuditRows::audit_head_written`]).
    fn audit_pointer_put(&self, lane: i64, which: &str, raw: &[u8]) -> Result<()>;

    /// The head (seq, MAC) that an append earlier in this transaction left
    /// on `lane`, as [`AuditRows::audit_head_remember`] noted it after
    /// writing the head row: nothing outside the transaction can have
    /// changed it since. `None` in a new transaction, after any rollback
    /// (to a savepoint too) and after any other write of a lane's pointer.
    fn audit_head_written(&self, lane: i64) -> Option<ChainPoint>;

    /// Notes the head an append just wrote on `lane`, for the next append
    /// of the same transaction.
    fn audit_head_remember(&self, lane: i64, head: ChainPoint);

    /// Stores `e` (its lane, seq and MAC already set).
    fn audit_insert(&self, e: &Entry) -> Result<()>;

    /// Stores the checkpoint at `seq` of `lane`: the lane's `head` there
    /// and the checkpoint's own MAC.
    fn audit_checkpoint_insert(
        &self,
        lane: i64,
        seq: u64,
        head: &[u8],
        time: i64,
        mac: &[u8],
    ) -> Result<()>;

    /// Every checkpoint: seq → (lane, head, MAC).
    fn audit_checkpoints(&self) -> Result<Checkpoints>;

    /// Calls `each` on every entry from sequence number `from` on, in order,
    /// until it returns `false`.
    fn audit_entries_from(&self, from: u64, each: &mut dyn FnMut(Entry) -> bool) -> Result<()>;

    /// How many entries `tenant` has, and its newest entry's (seq, MAC).
    fn audit_tenant_summary(&self, tenant: &str) -> Result<(u64, Option<ChainPoint>)>;

    /// Up to `limit` entries matching `f` with sequence numbers above `after`.
    fn audit_list(&self, f: &Filter, after: u64, limit: usize) -> Result<Vec<Entry>>;

    /// Where pruning `lane`'s entries older than `before` may cut: the
    /// lane's newest checkpoint with no entry of the lane at or before it
    /// as new as `before`, as (seq, checkpoint's head, checkpoint's MAC,
    /// the entry's MAC there).
    fn audit_prune_cut(&self, lane: i64, before: i64) -> Result<Option<PruneCut>>;

    /// When `lane`'s newest entry was written (Unix ms; `None`: it has none).
    fn audit_lane_newest_time(&self, lane: i64) -> Result<Option<i64>>;

    /// Deletes `lane`'s entries up to and including `seq`; returns how many.
    fn audit_delete_through(&self, lane: i64, seq: u64) -> Result<u64>;

    /// The highest sequence number any entry or checkpoint has (0: none).
    fn audit_highest_seq(&self) -> Result<u64>;

    /// Moves `lane`'s entries outside `(base, kept]` to the quarantine,
    /// stamped `now`, and drops the lane's checkpoints after `kept`;
    /// returns how many entries moved.
    fn audit_quarantine_lane(&self, lane: i64, base: u64, kept: u64, now: i64) -> Result<u64>;

    /// Every accepted loss, as stored: `crate::audit::repair` checks them.
    fn audit_losses(&self) -> Result<Vec<LossRow>>;

    /// Stores an accepted loss.
    fn audit_loss_put(&self, loss: &LossRow) -> Result<()>;
}

/// An operator's acceptance that `lane`'s entries up to `lost_through`
/// may be missing (`strongbox audit accept-loss`): witness entries older
/// than `accepted_seq`, the acceptance's own entry, that name the lane
/// further than it now reaches are not a cut. `mac` binds the row to the
/// audit key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LossRow {
    pub lane: i64,
    pub accepted_seq: u64,
    pub lost_through: u64,
    pub mac: Vec<u8>,
}

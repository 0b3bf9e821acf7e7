//! The audit chain's anchor outside the database: an append-only file of
//! MAC'd `(sequence number, head MAC)` points. The chain's MACs catch an
//! edit, and the head row a cut tail, but only as long as the database is
//! all there is: someone who can write the file can wipe the whole trail,
//! or put back an older head row (with its valid MAC, still in the WAL's
//! bytes) and delete what came after. The anchor records how far the chain
//! had come, somewhere else (point `audit_anchor` at another volume), so
//! both are detected: a database whose chain ends before the newest anchor,
//! or does not pass through it, is DATA_LOSS.
//!
//! One line per point: `v1 <kind> <seq> <time ms> <head hex> <mac hex>`.
//! Each line's MAC, under the audit key, covers the previous line's MAC, so
//! lines cannot be edited, dropped from the middle or reordered. `head`
//! lines are written at every checkpoint and at least once a minute while
//! entries are written; a `reset` line is written by `strongbox audit
//! accept-loss`, when an operator has acknowledged a break.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::crypto::{self, SecretKey};
use crate::error::{Error, Result};

const VERSION: &str = "v1";
const LABEL: &[u8] = b"strongbox/v1/audit-anchor";

/// What an anchor line records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The chain's head as committed.
    Head,
    /// A new head after an operator acknowledged a break in the chain.
    Reset,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Head => "head",
            Kind::Reset => "reset",
        }
    }
}

/// A point of the chain: entry `seq` has MAC `head`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Point {
    pub seq: u64,
    pub head: Vec<u8>,
}

struct State {
    newest: Option<Point>,
    /// The MAC of the last line, which the next line's MAC covers.
    link: [u8; 32],
    /// When the last line was written (Unix ms).
    written_at: i64,
}

/// The anchor file of one vault.
pub struct Anchor {
    path: PathBuf,
    state: Mutex<State>,
}

fn line_mac(
    key: &SecretKey,
    link: &[u8],
    kind: &str,
    seq: u64,
    time: i64,
    head: &[u8],
) -> [u8; 32] {
    crypto::hmac_sha256(
        key,
        &[&crypto::encode_fields(&[
            LABEL,
            link,
            kind.as_bytes(),
            &seq.to_be_bytes(),
            &time.to_be_bytes(),
            head,
        ])],
    )
}

fn broken(path: &Path, line: usize, what: &str) -> Error {
    Error::Corrupt(format!(
        "audit anchor {}: line {line} {what}: the anchor file was tampered with",
        path.display()
    ))
}

impl Anchor {
    /// Opens the anchor file at `path` (creating it, 0600, when absent) and
    /// checks every line's MAC and link. A last line cut short by a crash
    /// (no newline) is dropped; any other bad line is `Corrupt`.
    pub fn open(path: &Path, key: &SecretKey) -> Result<Self> {
        let text = crate::appendfile::open_lines(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => broken(path, 0, "is not text"),
            _ => Error::Unavailable(format!("audit anchor {}: {e}", path.display())),
        })?;
        let mut state = State {
            newest: None,
            link: [0; 32],
            written_at: 0,
        };
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let f: Vec<&str> = line.split(' ').collect();
            let [version, kind, seq, time, head, mac] = f[..] else {
                return Err(broken(path, n, "is malformed"));
            };
            if version != VERSION || !matches!(kind, "head" | "reset") {
                return Err(broken(path, n, "is malformed"));
            }
            let (Ok(seq), Ok(time), Ok(head), Ok(mac)) = (
                seq.parse::<u64>(),
                time.parse::<i64>(),
                hex::decode(head),
                hex::decode(mac),
            ) else {
                return Err(broken(path, n, "is malformed"));
            };
            let expected = line_mac(key, &state.link, kind, seq, time, &head);
            if !crypto::ct_eq(&expected, &mac) {
                return Err(broken(path, n, "has a MAC that does not match"));
            }
            if kind == "head"
                && let Some(prev) = &state.newest
                && seq < prev.seq
            {
                return Err(broken(path, n, "goes backwards"));
            }
            state.link = expected;
            state.written_at = time;
            state.newest = Some(Point { seq, head });
        }
        Ok(Anchor {
            path: path.to_owned(),
            state: Mutex::new(state),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update replaces the state whole, after the line is on disk.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest point recorded.
    pub fn newest(&self) -> Option<Point> {
        self.state().newest.clone()
    }

    /// The newest sequence number recorded (0: none): the chain's head may
    /// never be older.
    pub fn floor(&self) -> u64 {
        self.state().newest.as_ref().map_or(0, |p| p.seq)
    }

    /// When the last line was written (Unix ms; 0: never).
    pub fn written_at(&self) -> i64 {
        self.state().written_at
    }

    /// Appends a point and syncs it to disk. A `Head` point older than the
    /// newest is refused; one equal to it is not written again.
    pub fn record(&self, key: &SecretKey, kind: Kind, point: Point) -> Result<()> {
        let mut state = self.state();
        if kind == Kind::Head
            && let Some(prev) = &state.newest
        {
            if point.seq < prev.seq {
                return Err(Error::Corrupt(format!(
                    "audit: the chain's head (entry {}) is older than the anchor (entry {}): the trail was rolled back",
                    point.seq, prev.seq
                )));
            }
            if point.seq == prev.seq {
                return Ok(());
            }
        }
        let time = crate::now_ms();
        let mac = line_mac(
            key,
            &state.link,
            kind.as_str(),
            point.seq,
            time,
            &point.head,
        );
        let line = format!(
            "{VERSION} {} {} {time} {} {}\n",
            kind.as_str(),
            point.seq,
            hex::encode(&point.head),
            hex::encode(mac)
        );
        crate::appendfile::append_synced(&self.path, &line).map_err(|e| {
            Error::Unavailable(format!("audit anchor {}: {e}", self.path.display()))
        })?;
        *state = State {
            newest: Some(point),
            link: mac,
            written_at: time,
        };
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn point(seq: u64) -> Point {
        Point {
            seq,
            head: vec![seq as u8; 32],
        }
    }

    #[test]
    fn records_reopen_and_refuse_going_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.anchor");
        let key = SecretKey::generate();
        let a = Anchor::open(&path, &key).unwrap();
        assert_eq!(a.floor(), 0);
        a.record(&key, Kind::Head, point(5)).unwrap();
        a.record(&key, Kind::Head, point(9)).unwrap();
        assert!(a.record(&key, Kind::Head, point(7)).is_err());
        let a = Anchor::open(&path, &key).unwrap();
        assert_eq!(a.newest(), Some(point(9)));
        // A reset may go back: the operator acknowledged the loss.
        a.record(&key, Kind::Reset, point(6)).unwrap();
        assert_eq!(Anchor::open(&path, &key).unwrap().floor(), 6);
    }

    #[test]
    fn fail_edited_dropped_or_foreign_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.anchor");
        let key = SecretKey::generate();
        let a = Anchor::open(&path, &key).unwrap();
        for s in [3, 4, 5] {
            a.record(&key, Kind::Head, point(s)).unwrap();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let edited = text.replacen(" 4 ", " 8 ", 1);
        let dropped = format!("{}\n{}\n", lines[0], lines[2]);
        for bad in [edited, dropped] {
            std::fs::write(&path, bad).unwrap();
            assert!(matches!(Anchor::open(&path, &key), Err(Error::Corrupt(_))));
        }
        std::fs::write(&path, &text).unwrap();
        assert!(matches!(
            Anchor::open(&path, &SecretKey::generate()),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn a_torn_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.anchor");
        let key = SecretKey::generate();
        let a = Anchor::open(&path, &key).unwrap();
        a.record(&key, Kind::Head, point(3)).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"v1 head 4 17").unwrap();
        let a = Anchor::open(&path, &key).unwrap();
        assert_eq!(a.floor(), 3);
        a.record(&key, Kind::Head, point(4)).unwrap();
        assert_eq!(Anchor::open(&path, &key).unwrap().floor(), 4);
    }
}

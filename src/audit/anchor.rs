//! The audit chain's anchor outside the database: an append-only file of
//! MAC'd `(lane, sequence number, head MAC)` points. The chain's MACs catch
//! an edit, and the head rows a cut tail, but only as long as the database
//! is all there is: someone who can write the database can wipe the whole
//! trail, or put back an older head row (with its valid MAC, still in the
//! WAL's bytes or a base backup) and delete what came after. The anchor
//! records how far each lane of the chain had come, somewhere else (point
//! `audit_anchor` at another volume), so both are detected: a database
//! whose lane ends before its newest anchored point, or does not pass
//! through it, is DATA_LOSS.
//!
//! One line per point. Lane 0 (the only lane on SQLite):
//! `v1 <kind> <seq> <time ms> <head hex> <mac hex>`; another lane (one
//! per server run on PostgreSQL): `v2 <kind> <lane> <seq> <time ms> <head
//! hex> <mac hex>`. Each line's MAC, under the audit key, covers the
//! previous line's MAC, so lines cannot be edited, dropped from the middle
//! or reordered. Servers of one PostgreSQL vault may share the file: each
//! append takes an exclusive lock on it, first reads and checks the lines
//! the others appended, and chains onto the last. `head` lines are written
//! at every checkpoint and at least once a minute while entries are
//! written; a `reset` line is written by `strongbox audit accept-loss`,
//! when an operator has acknowledged a break, and by a restore.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::crypto::{self, SecretKey};
use crate::error::{Error, Result};

const LABEL: &[u8] = b"strongbox/v1/audit-anchor";

/// A lane of the chain (see `audit`): 0 on SQLite.
pub type Lane = i64;

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

/// The newest point of every lane.
pub type Points = BTreeMap<Lane, Point>;

struct State {
    newest: Points,
    /// The MAC of the last line, which the next line's MAC covers.
    link: [u8; 32],
    /// Bytes of the file read and checked so far.
    read_to: u64,
    /// Lines read so far (for messages).
    lines: usize,
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
    lane: Lane,
    seq: u64,
    time: i64,
    head: &[u8],
) -> [u8; 32] {
    let (seq, time, lane_bytes) = (seq.to_be_bytes(), time.to_be_bytes(), lane.to_be_bytes());
    let mut fields: Vec<&[u8]> = vec![LABEL, link, kind.as_bytes()];
    if lane != 0 {
        fields.extend([b"lane".as_slice(), lane_bytes.as_slice()]);
    }
    fields.extend([seq.as_slice(), time.as_slice(), head]);
    crypto::hmac_sha256(key, &[&crypto::encode_fields(&fields)])
}

fn broken(path: &Path, line: usize, what: &str) -> Error {
    Error::Corrupt(format!(
        "audit anchor {}: line {line} {what}: the anchor file was tampered with",
        path.display()
    ))
}

fn io(path: &Path, e: std::io::Error) -> Error {
    Error::Unavailable(format!("audit anchor {}: {e}", path.display()))
}

/// One parsed line: `(kind, lane, seq, time, head, mac)`.
type Line<'a> = (&'a str, Lane, u64, i64, Vec<u8>, Vec<u8>);

fn parse(line: &str) -> Option<Line<'_>> {
    let f: Vec<&str> = line.split(' ').collect();
    let (kind, lane, rest) = match f[..] {
        ["v1", kind, ..] => (kind, 0, &f[2..]),
        ["v2", kind, lane, ..] => (
            kind,
            lane.parse::<Lane>().ok().filter(|l| *l != 0)?,
            &f[3..],
        ),
        _ => return None,
    };
    let [seq, time, head, mac] = rest[..] else {
        return None;
    };
    if !matches!(kind, "head" | "reset") {
        return None;
    }
    Some((
        kind,
        lane,
        seq.parse().ok()?,
        time.parse().ok()?,
        hex::decode(head).ok()?,
        hex::decode(mac).ok()?,
    ))
}

impl State {
    /// Checks and takes in `text`, whole lines the file holds after what
    /// was read so far.
    fn absorb(&mut self, key: &SecretKey, path: &Path, text: &str) -> Result<()> {
        for line in text.lines() {
            self.lines += 1;
            let n = self.lines;
            let Some((kind, lane, seq, time, head, mac)) = parse(line) else {
                return Err(broken(path, n, "is malformed"));
            };
            let expected = line_mac(key, &self.link, kind, lane, seq, time, &head);
            if !crypto::ct_eq(&expected, &mac) {
                return Err(broken(path, n, "has a MAC that does not match"));
            }
            if kind == "head"
                && let Some(prev) = self.newest.get(&lane)
                && seq < prev.seq
            {
                return Err(broken(path, n, "goes backwards"));
            }
            self.link = expected;
            self.newest.insert(lane, Point { seq, head });
            self.read_to += line.len() as u64 + 1;
        }
        Ok(())
    }

    /// Reads and checks what other servers appended since; returns whether
    /// the file ends in a torn line (a writer that died mid-line).
    fn catch_up(&mut self, key: &SecretKey, path: &Path, file: &mut File) -> Result<bool> {
        file.seek(SeekFrom::Start(self.read_to))
            .map_err(|e| io(path, e))?;
        let mut more = Vec::new();
        file.read_to_end(&mut more).map_err(|e| io(path, e))?;
        let whole = more.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let text = std::str::from_utf8(&more[..whole])
            .map_err(|_| broken(path, self.lines + 1, "is not text"))?;
        self.absorb(key, path, text)?;
        Ok(whole != more.len())
    }
}

impl Anchor {
    /// Opens the anchor file at `path` (creating it, 0600, when absent) and
    /// checks every line's MAC and link. A last line cut short by a crash
    /// (no newline) is dropped; any other bad line is `Corrupt`.
    pub fn open(path: &Path, key: &SecretKey) -> Result<Self> {
        let text = crate::appendfile::open_lines(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => broken(path, 0, "is not text"),
            _ => io(path, e),
        })?;
        let mut state = State {
            newest: Points::new(),
            link: [0; 32],
            read_to: 0,
            lines: 0,
        };
        state.absorb(key, path, &text)?;
        Ok(Anchor {
            path: path.to_owned(),
            state: Mutex::new(state),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update replaces fields only after the line is on disk.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file, locked against other servers' appends until dropped.
    fn locked(&self) -> Result<File> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| io(&self.path, e))?;
        file.lock().map_err(|e| io(&self.path, e))?;
        Ok(file)
    }

    /// The newest point of `lane` read so far.
    pub fn newest(&self, lane: Lane) -> Option<Point> {
        self.state().newest.get(&lane).cloned()
    }

    /// The newest sequence number of `lane` read so far (0: none): that
    /// lane's head may never be older.
    pub fn floor(&self, lane: Lane) -> u64 {
        self.newest(lane).map_or(0, |p| p.seq)
    }

    /// The newest point of every lane, after reading what other servers
    /// sharing the file appended (blocking file I/O).
    pub fn points(&self, key: &SecretKey) -> Result<Points> {
        let mut state = self.state();
        let mut file = self.locked()?;
        state.catch_up(key, &self.path, &mut file)?;
        Ok(state.newest.clone())
    }

    /// Appends a point of `lane` and syncs it to disk. A `Head` point older
    /// than the lane's newest is refused; one equal to it is not written
    /// again.
    pub fn record(&self, key: &SecretKey, kind: Kind, lane: Lane, point: Point) -> Result<()> {
        let mut state = self.state();
        let mut file = self.locked()?;
        if state.catch_up(key, &self.path, &mut file)? {
            // A line torn by a writer that died mid-line: dropped, as at open.
            file.set_len(state.read_to).map_err(|e| io(&self.path, e))?;
        }
        if kind == Kind::Head
            && let Some(prev) = state.newest.get(&lane)
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
        let kind = kind.as_str();
        let mac = line_mac(key, &state.link, kind, lane, point.seq, time, &point.head);
        let (seq, head, mac_hex) = (point.seq, hex::encode(&point.head), hex::encode(mac));
        let line = match lane {
            0 => format!("v1 {kind} {seq} {time} {head} {mac_hex}\n"),
            _ => format!("v2 {kind} {lane} {seq} {time} {head} {mac_hex}\n"),
        };
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_data())
            .map_err(|e| io(&self.path, e))?;
        state.link = mac;
        state.lines += 1;
        state.read_to += line.len() as u64;
        state.newest.insert(lane, point);
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
        assert_eq!(a.floor(0), 0);
        a.record(&key, Kind::Head, 0, point(5)).unwrap();
        a.record(&key, Kind::Head, 0, point(9)).unwrap();
        assert!(a.record(&key, Kind::Head, 0, point(7)).is_err());
        let a = Anchor::open(&path, &key).unwrap();
        assert_eq!(a.newest(0), Some(point(9)));
        // A reset may go back: the operator acknowledged the loss.
        a.record(&key, Kind::Reset, 0, point(6)).unwrap();
        assert_eq!(Anchor::open(&path, &key).unwrap().floor(0), 6);
    }

    #[test]
    fn fail_edited_dropped_or_foreign_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.anchor");
        let key = SecretKey::generate();
        let a = Anchor::open(&path, &key).unwrap();
        for s in [3, 4, 5] {
            a.record(&key, Kind::Head, 0, point(s)).unwrap();
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
    fn servers_sharing_the_file_chain_onto_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.anchor");
        let key = SecretKey::generate();
        let a = Anchor::open(&path, &key).unwrap();
        let b = Anchor::open(&path, &key).unwrap();
        a.record(&key, Kind::Head, 7, point(1)).unwrap();
        b.record(&key, Kind::Head, 9, point(2)).unwrap();
        a.record(&key, Kind::Head, 7, point(3)).unwrap();
        assert_eq!(a.points(&key).unwrap().get(&9), Some(&point(2)));
        let reopened = Anchor::open(&path, &key).unwrap();
        assert_eq!((reopened.floor(7), reopened.floor(9)), (3, 2));
        // A lane's point moved to another lane does not verify.
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        std::fs::write(&path, text.replacen("v2 head 9 ", "v2 head 7 ", 1)).unwrap();
        assert!(matches!(Anchor::open(&path, &key), Err(Error::Corrupt(_))));
    }

    #[test]
    fn a_torn_last_line_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.anchor");
        let key = SecretKey::generate();
        let a = Anchor::open(&path, &key).unwrap();
        a.record(&key, Kind::Head, 0, point(3)).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut f, b"v1 head 4 17").unwrap();
        let a = Anchor::open(&path, &key).unwrap();
        assert_eq!(a.floor(0), 3);
        a.record(&key, Kind::Head, 0, point(4)).unwrap();
        assert_eq!(Anchor::open(&path, &key).unwrap().floor(0), 4);
    }
}

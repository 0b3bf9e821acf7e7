//! Failed authentication per peer address: a keyless flood must not fill
//! the disk with audit rows, nor slow down everyone else.
//!
//! Each peer address gets `burst` failed authentications per minute, each
//! audited on its own as usual. Past that, within the minute, a failing
//! call is refused at once with `RESOURCE_EXHAUSTED`, and instead of an
//! entry each, the peer's failures are coalesced: one audit entry per peer
//! per minute (`calls.failures-coalesced`, resource `peer:<ip> count:<n>
//! first:<time> last:<time> reasons:<…>`), written by the flusher. Nothing
//! is lost for forensics (every failure is counted), and a flood from one
//! address writes at most `burst + 1` rows a minute.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Mutex;

/// Length of a peer's window.
pub const WINDOW_MS: i64 = 60_000;
/// Peers tracked at most; past it, the oldest windows are dropped (their
/// coalesced counts first handed to the flusher).
const MAX_PEERS: usize = 10_000;

/// What to do with one failed authentication.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Within the burst: audit it as usual.
    Audit,
    /// Over the burst: refuse at once; counted for the coalesced entry.
    Coalesced,
}

/// One peer's failures in its current window.
struct Window {
    started: i64,
    failures: u32,
    coalesced: Option<Coalesced>,
}

/// Failures over the burst, not yet written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coalesced {
    pub peer: IpAddr,
    pub count: u64,
    pub first: i64,
    pub last: i64,
    pub reasons: BTreeSet<String>,
}

pub struct FailedAuth {
    burst: u32,
    peers: Mutex<HashMap<IpAddr, Window>>,
    /// Coalesced counts of dropped windows, for the next flush.
    evicted: Mutex<Vec<Coalesced>>,
}

impl FailedAuth {
    pub fn new(burst: u32) -> Self {
        FailedAuth {
            burst: burst.max(1),
            peers: Mutex::new(HashMap::new()),
            evicted: Mutex::new(Vec::new()),
        }
    }

    /// Whether `peer` is over its burst now (its next failure is refused
    /// and coalesced).
    pub fn over(&self, peer: IpAddr, now: i64) -> bool {
        let peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers
            .get(&peer)
            .is_some_and(|w| now - w.started < WINDOW_MS && w.failures >= self.burst)
    }

    /// Notes a failed authentication from `peer` for `reason` (a short,
    /// fixed phrase: never the key).
    pub fn failed(&self, peer: IpAddr, reason: &str, now: i64) -> Verdict {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.len() >= MAX_PEERS && !peers.contains_key(&peer) {
            self.evict(&mut peers, now);
        }
        let w = peers.entry(peer).or_insert(Window {
            started: now,
            failures: 0,
            coalesced: None,
        });
        if now - w.started >= WINDOW_MS && w.coalesced.is_none() {
            w.started = now;
            w.failures = 0;
        }
        if w.failures < self.burst && now - w.started < WINDOW_MS {
            w.failures += 1;
            return Verdict::Audit;
        }
        let c = w.coalesced.get_or_insert_with(|| Coalesced {
            peer,
            count: 0,
            first: now,
            last: now,
            reasons: BTreeSet::new(),
        });
        c.count += 1;
        c.last = now;
        if c.reasons.len() < 8 {
            c.reasons.insert(reason.to_owned());
        }
        Verdict::Coalesced
    }

    /// Hands over the coalesced failures to write, and starts new windows
    /// for the peers whose window has ended.
    pub fn take(&self, now: i64) -> Vec<Coalesced> {
        let mut out = std::mem::take(&mut *self.evicted.lock().unwrap_or_else(|p| p.into_inner()));
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|_, w| {
            if let Some(c) = w.coalesced.take() {
                out.push(c);
            }
            let ended = now - w.started >= WINDOW_MS;
            if ended {
                return false;
            }
            true
        });
        out
    }

    fn evict(&self, peers: &mut HashMap<IpAddr, Window>, now: i64) {
        let mut evicted = self.evicted.lock().unwrap_or_else(|p| p.into_inner());
        peers.retain(|_, w| {
            if now - w.started < WINDOW_MS {
                return true;
            }
            if let Some(c) = w.coalesced.take() {
                evicted.push(c);
            }
            false
        });
        if peers.len() >= MAX_PEERS {
            // All recent: drop the oldest half, keeping their counts.
            let mut by_age: Vec<(IpAddr, i64)> =
                peers.iter().map(|(p, w)| (*p, w.started)).collect();
            by_age.sort_by_key(|(_, started)| *started);
            for (p, _) in by_age.into_iter().take(MAX_PEERS / 2) {
                if let Some(mut w) = peers.remove(&p)
                    && let Some(c) = w.coalesced.take()
                {
                    evicted.push(c);
                }
            }
        }
    }
}

impl Coalesced {
    /// The coalesced entry's resource.
    pub fn resource(&self) -> String {
        format!(
            "peer:{} count:{} first:{} last:{} reasons:{}",
            self.peer,
            self.count,
            crate::vault::fmt_time(self.first),
            crate::vault::fmt_time(self.last),
            self.reasons.iter().cloned().collect::<Vec<_>>().join("|")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audits_the_burst_then_coalesces_until_the_window_ends() {
        let f = FailedAuth::new(3);
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let other: IpAddr = "10.0.0.8".parse().unwrap();
        for t in 0..3 {
            assert_eq!(f.failed(ip, "invalid API key", t), Verdict::Audit);
        }
        assert!(f.over(ip, 3));
        assert!(!f.over(other, 3));
        for t in 3..1003 {
            assert_eq!(f.failed(ip, "invalid API key", t), Verdict::Coalesced);
        }
        assert_eq!(f.failed(other, "missing", 5), Verdict::Audit);
        let taken = f.take(2000);
        assert_eq!(taken.len(), 1);
        assert_eq!(
            (taken[0].count, taken[0].first, taken[0].last),
            (1000, 3, 1002)
        );
        assert!(taken[0].resource().contains("count:1000"));
        // Still within the window: still over, coalescing anew.
        assert_eq!(f.failed(ip, "invalid API key", 2001), Verdict::Coalesced);
        // A new window: the burst again.
        assert!(f.take(WINDOW_MS + 10).len() == 1);
        assert_eq!(
            f.failed(ip, "invalid API key", WINDOW_MS + 20),
            Verdict::Audit
        );
    }
}

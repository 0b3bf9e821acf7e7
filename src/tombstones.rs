//! A bounded set of recently ended things (destroyed keys, shredded
//! tenants, revoked API keys, retired KEK versions) that caches must not
//! take back.
//!
//! The race it closes: a call reads a key (or verifies an API key) in a
//! snapshot taken before a shred or revocation committed, and inserts it
//! into a cache after the cache was cleared. The tombstone, checked under
//! the cache's lock, refuses that insert. Such a call cannot outlive the
//! server's request timeout, so a tombstone need only live that long: each
//! lives [`Tombstones::TTL`] (well beyond the 30 s default timeout), and the
//! set holds at most `cap` live ones. When it is full of live tombstones,
//! [`Tombstones::admits`] refuses every insert until some expire: caching
//! stops rather than let an ended key come back. Memory is bounded either
//! way.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// Tombstones of `K`, each kept for [`Tombstones::TTL`], at most `cap`.
pub struct Tombstones<K> {
    at: HashMap<K, Instant>,
    cap: usize,
    ttl: Duration,
}

impl<K: Hash + Eq + Clone> Tombstones<K> {
    /// How long a tombstone is kept: longer than any call may run.
    pub const TTL: Duration = Duration::from_secs(600);

    pub fn new(cap: usize) -> Self {
        Self::with_ttl(cap, Self::TTL)
    }

    pub fn with_ttl(cap: usize, ttl: Duration) -> Self {
        Tombstones {
            at: HashMap::new(),
            cap: cap.max(1),
            ttl,
        }
    }

    fn expire(&mut self, now: Instant) {
        let ttl = self.ttl;
        self.at.retain(|_, t| now.duration_since(*t) < ttl);
    }

    /// Records that `k` ended now.
    pub fn insert(&mut self, k: K) {
        let now = Instant::now();
        if self.at.len() >= self.cap {
            self.expire(now);
        }
        // Over the cap with live tombstones, the set still records `k`
        // (a lost tombstone could let `k` back); `admits` then refuses
        // every insert until enough expire.
        self.at.insert(k, now);
    }

    /// Whether a cache may take `k` in now: it has no live tombstone, and
    /// the set is not over its cap.
    pub fn admits(&mut self, k: &K) -> bool {
        let now = Instant::now();
        if self.at.len() >= self.cap {
            self.expire(now);
            if self.at.len() >= self.cap {
                return false;
            }
        }
        match self.at.get(k) {
            Some(t) if now.duration_since(*t) < self.ttl => false,
            Some(_) => {
                self.at.remove(k);
                true
            }
            None => true,
        }
    }

    /// Live and expired tombstones held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_while_live_and_admits_once_expired() {
        let mut t = Tombstones::with_ttl(10, Duration::from_millis(30));
        t.insert("k");
        assert!(!t.admits(&"k"));
        assert!(t.admits(&"other"));
        std::thread::sleep(Duration::from_millis(40));
        assert!(t.admits(&"k"));
    }

    #[test]
    fn bounded_and_fails_safe_when_full() {
        let mut t = Tombstones::with_ttl(100, Duration::from_secs(60));
        for i in 0..250 {
            t.insert(i);
        }
        // Every tombstone is live: none is dropped, and nothing is admitted.
        assert!(!t.admits(&1000));
        assert!(!t.admits(&3));
        let mut t = Tombstones::with_ttl(100, Duration::from_millis(20));
        for i in 0..100 {
            t.insert(i);
        }
        std::thread::sleep(Duration::from_millis(30));
        for i in 100..200 {
            t.insert(i);
        }
        assert!(
            t.len() <= 101,
            "expired tombstones are dropped: {}",
            t.len()
        );
    }
}

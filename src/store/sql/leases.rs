//! Leases.

use super::{Conn, Db, params};

use crate::error::Result;
use crate::store::seam::*;

impl LeaseRows for Db {
    fn lease_claim(&self, name: &str, holder: &str, now_ms: i64, until_ms: i64) -> Result<bool> {
        // One statement, so the check and the take are one step on both
        // backends (two servers' claims at once conflict on PostgreSQL,
        // and the writer runs the loser's batch again).
        let n = self.execute(
            "INSERT INTO job_leases (name, holder, expires_at) VALUES (?1, ?2, ?4)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
             WHERE job_leases.holder = excluded.holder OR job_leases.expires_at < ?3",
            params![name, holder, now_ms, until_ms],
        )?;
        Ok(n == 1)
    }

    fn lease_release(&self, name: &str, holder: &str) -> Result<()> {
        self.execute(
            "DELETE FROM job_leases WHERE name = ?1 AND holder = ?2",
            params![name, holder],
        )?;
        Ok(())
    }

    fn leases_live(&self, prefix: &str, now_ms: i64) -> Result<Vec<String>> {
        // Prefixes are plain words ending in '/': no LIKE wildcard in them.
        let pattern = format!("{prefix}%");
        let mut stmt = self.prepare_cached(
            "SELECT holder FROM job_leases WHERE name LIKE ?1 AND expires_at >= ?2 ORDER BY holder",
        )?;
        let rows = stmt.query_map(params![pattern, now_ms], |r| r.get(0))?;
        rows.collect()
    }
    fn exclusive(&self, name: &str) -> Result<()> {
        match self.conn() {
            Conn::Sqlite(_) => Ok(()),
            Conn::Postgres(_) => {
                // The lock's key: the name's first 8 bytes of SHA-256.
                let digest = crate::crypto::sha256(name.as_bytes());
                let mut key = [0u8; 8];
                key.copy_from_slice(&digest[..8]);
                self.prepare_cached("SELECT pg_advisory_xact_lock(?1)")?
                    .query_row([i64::from_be_bytes(key)], |_| Ok(()))?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::store::Store;

    async fn claim(store: &Store, holder: &'static str, now: i64, until: i64) -> bool {
        store
            .write(move |c| c.lease_claim("jobs", holder, now, until))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn one_holder_at_a_time_until_it_expires_or_is_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1).unwrap();
        assert!(claim(&store, "a", 100, 200).await, "a free lease is taken");
        assert!(!claim(&store, "b", 150, 250).await, "held and not expired");
        assert!(claim(&store, "a", 190, 290).await, "its holder renews it");
        assert!(!claim(&store, "b", 289, 389).await, "renewed: not expired");
        assert!(claim(&store, "b", 291, 391).await, "expired: taken over");
        assert!(
            !claim(&store, "a", 300, 400).await,
            "the old holder lost it"
        );
        store.write(|c| c.lease_release("jobs", "a")).await.unwrap();
        assert!(
            !claim(&store, "a", 301, 401).await,
            "only its holder gives it up"
        );
        store.write(|c| c.lease_release("jobs", "b")).await.unwrap();
        assert!(claim(&store, "a", 302, 402).await, "given up: free at once");
    }

    #[tokio::test]
    async fn live_holders_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db"), 1).unwrap();
        store
            .write(|c| {
                c.lease_claim("server/a", "a", 0, 100)?;
                c.lease_claim("server/b", "b", 0, 50)?;
                c.lease_claim("jobs", "c", 0, 100)
            })
            .await
            .unwrap();
        let live = |now| store.read(move |c| c.leases_live("server/", now));
        assert_eq!(live(40).await.unwrap(), ["a", "b"]);
        assert_eq!(live(60).await.unwrap(), ["a"], "b expired");
        assert!(live(101).await.unwrap().is_empty());
    }
}

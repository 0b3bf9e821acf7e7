//! The vault's side of the shred ledger (`crate::ledger`): opening it at
//! start, reconciled with the database, and recording each destruction
//! before the call that made it returns.

use std::path::Path;
use std::sync::Arc;

use super::Vault;
use crate::error::Result;
use crate::ledger::Destroyed;

/// Ledger entries for data keys of `tenant`.
pub(super) fn ledger_deks(tenant: &str, ids: &[String]) -> Vec<crate::ledger::Destroyed> {
    ids.iter()
        .map(|id| crate::ledger::Destroyed::Dek {
            tenant: tenant.to_owned(),
            id: id.clone(),
        })
        .collect()
}

impl Vault {
    /// Opens the shred ledger at `path` and records every destruction in
    /// it from now on. First appends any destruction the database has and
    /// the ledger lacks (a crash between a shred's commit and its append).
    /// Returns every destruction it holds, in order.
    pub async fn open_ledger(&self, path: &Path) -> Result<Vec<Destroyed>> {
        let keys = self.keys.clone();
        let key = self.store.read(move |c| keys.audit_key(c)).await?;
        let (path, k) = (path.to_owned(), key.clone());
        let (ledger, entries) =
            crate::blocking(move || crate::ledger::Ledger::open(&path, &k)).await?;
        // What the crash window can have missed is newer than the last
        // line, give or take the clock between the commit and the append.
        let since = entries.last().map_or(0, |e| e.time - 60_000);
        let found = self.store.read(move |c| c.destroyed_since(since)).await?;
        let known: std::collections::HashSet<&Destroyed> =
            entries.iter().map(|e| &e.destroyed).collect();
        let missing: Vec<Destroyed> = found
            .tenants
            .into_iter()
            .map(|tenant| Destroyed::Tenant { tenant })
            .chain(
                found
                    .keks
                    .into_iter()
                    .map(|(tenant, version)| Destroyed::Kek { tenant, version }),
            )
            .chain(
                found
                    .deks
                    .into_iter()
                    .map(|(tenant, id)| Destroyed::Dek { tenant, id }),
            )
            .filter(|d| !known.contains(d))
            .collect();
        let ledger = Arc::new(ledger);
        if !missing.is_empty() {
            tracing::warn!(
                entries = missing.len(),
                "shred ledger: destructions the database has and the ledger lacked (a crash before their append) recorded now"
            );
            let (l, m) = (ledger.clone(), missing.clone());
            crate::blocking(move || l.record(&key, &m)).await?;
        }
        let _ = self.ledger.set(ledger);
        Ok(entries
            .into_iter()
            .map(|e| e.destroyed)
            .chain(missing)
            .collect())
    }

    /// Appends destructions to the ledger (synced) before the call that
    /// made them returns.
    pub(super) async fn ledger_record(
        &self,
        destroyed: Vec<crate::ledger::Destroyed>,
    ) -> Result<()> {
        let Some(ledger) = self.ledger.get().cloned() else {
            return Ok(());
        };
        if destroyed.is_empty() {
            return Ok(());
        }
        let keys = self.keys.clone();
        let key = self.store.read(move |c| keys.audit_key(c)).await?;
        // The append ends in an fsync: off the async executor.
        crate::blocking(move || ledger.record(&key, &destroyed)).await
    }
}

//! Purge: rows under destroyed keys removed in batches, then a WAL
//! checkpoint so the destroyed bytes are gone from it too.

use std::time::Duration;

use super::super::*;
use crate::error::Result;

impl Vault {
    /// Resolves when a shred has asked for a purge.
    pub async fn purge_requested(&self) {
        self.purge_wanted.notified().await
    }

    /// Deletes the ciphertext rows of destroyed keys in small batches with
    /// a pause between them (so live writes keep their latency: a purge of
    /// a large shred must not starve the writer), then checkpoints.
    /// Returns rows deleted.
    pub async fn purge_destroyed(&self) -> Result<usize> {
        const BATCH: usize = 500;
        const PAUSE: Duration = Duration::from_millis(10);
        let mut total = 0;
        loop {
            let (deleted, marked) = self
                .store
                .write(|c| c.records_purge_destroyed(BATCH))
                .await?;
            total += deleted;
            if (deleted == 0 && marked == 0) || !self.keep_working().await? {
                break;
            }
            tokio::time::sleep(PAUSE).await;
        }
        if total > 0 {
            self.store.checkpoint().await?;
        }
        Ok(total)
    }
}

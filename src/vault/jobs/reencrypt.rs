//! The re-encryption job: records moved from a replaced data key to the new
//! one in paced batches, then the old key destroyed.

use std::sync::Arc;
use std::time::Duration;

use crate::vault::shred_ledger::ledger_deks;

use super::super::*;
use crate::audit::{self, Call};
use crate::crypto::{self, SecretKey, label};
use crate::error::{Error, Result};
use crate::ids::TenantId;
use crate::keyring::aad;
use crate::now_ms;
use crate::store::{self};

impl Vault {
    /// One pass of the re-encryption jobs: moves records from each job's
    /// old data key to its new one, `batch` per transaction with `pause`
    /// between, and when none are left destroys the old key. Progress is
    /// the rows themselves and the job table: it resumes after a restart.
    /// Returns the records moved.
    pub async fn reencrypt_pass(&self, batch: usize, pause: Duration) -> Result<usize> {
        let jobs = self.store.read(|tx| tx.reencrypt_jobs()).await?;
        let mut moved = 0;
        for job in jobs {
            loop {
                let (keys, j) = (self.keys.clone(), job.clone());
                let n = self
                    .store
                    .write(move |conn| {
                        let tenant = TenantId::parse(&j.tenant_id)
                            .map_err(|_| Error::Internal("stored tenant id is invalid".into()))?;
                        let t = tenant.as_str();
                        let key = |id: &str| -> Result<Option<Arc<SecretKey>>> {
                            match conn.dek_get(id)? {
                                Some(row) => keys.dek_for_job(conn, &tenant, &row),
                                None => Ok(None),
                            }
                        };
                        // A shred may have destroyed either key meanwhile.
                        let (Some(old), Some(new)) = (key(&j.old_dek)?, key(&j.new_dek)?) else {
                            return Ok((0, Vec::new()));
                        };
                        let recs = conn.records_under(&j.old_dek, batch)?;
                        let mut corrupt = Vec::new();
                        for (rowid, r) in &recs {
                            let old_aad = aad::record(
                                t,
                                &r.owner,
                                &r.category,
                                &r.key,
                                r.version,
                                &r.content_type,
                                &j.old_dek,
                            );
                            // A record that fails authentication is marked and
                            // skipped, so it cannot stall every later pass.
                            let Ok(plain) =
                                crypto::open(&old, label::RECORD, &old_aad, &r.ciphertext)
                            else {
                                conn.record_mark_corrupt(*rowid, now_ms())?;
                                corrupt.push(record_resource(&r.owner, &r.category, &r.key));
                                continue;
                            };
                            let new_aad = aad::record(
                                t,
                                &r.owner,
                                &r.category,
                                &r.key,
                                r.version,
                                &r.content_type,
                                &j.new_dek,
                            );
                            conn.record_reseal(
                                *rowid,
                                &j.new_dek,
                                &crypto::seal(&new, label::RECORD, &new_aad, &plain),
                            )?;
                        }
                        Ok((recs.len(), corrupt))
                    })
                    .await?;
                let (n, corrupt) = n;
                for resource in corrupt {
                    tracing::error!(tenant = %job.tenant_id, %resource, "re-encryption skipped a record that fails authentication");
                    let call = Arc::new(Call::system("key.reencrypt.skip-corrupt"));
                    call.set_tenant(&job.tenant_id);
                    call.set_resource(resource);
                    self.record(
                        &call,
                        (
                            audit::Outcome::Failed,
                            Error::Corrupt(String::new()).grpc_code(),
                        ),
                    )
                    .await?;
                }
                moved += n;
                if n < batch {
                    break;
                }
                if !self.keep_working().await? {
                    return Ok(moved);
                }
                tokio::time::sleep(pause).await;
            }
            self.finish_reencrypt(&job).await?;
        }
        Ok(moved)
    }

    /// Destroys a job's old data key once no live record is under it.
    pub(in crate::vault) async fn finish_reencrypt(&self, job: &store::ReencryptJob) -> Result<()> {
        // Destroying the old key waits for every hold on its owner.
        let resource = format!("dek:{}", job.old_dek);
        if self
            .held_for_job(
                "key.reencrypt.finish",
                &job.tenant_id,
                Some(job.owner.clone()),
                resource,
            )
            .await?
            .is_some()
        {
            return Ok(());
        }
        let call = Arc::new(Call::system("key.reencrypt.finish"));
        call.set_tenant(&job.tenant_id);
        call.set_resource(format!("dek:{}", job.old_dek));
        let j = job.clone();
        let done = self
            .mutate(&call, move |conn| {
                if !conn.records_under(&j.old_dek, 1)?.is_empty() {
                    return Ok(false);
                }
                conn.tombstones_follow(&j.old_dek, &j.new_dek)?;
                conn.dek_destroy(&j.old_dek, now_ms())?;
                conn.reencrypt_delete(&j.old_dek)?;
                Ok(true)
            })
            .await?;
        if done {
            self.keys.forget_dek(&job.old_dek);
            self.ledger_record(ledger_deks(
                &job.tenant_id,
                std::slice::from_ref(&job.old_dek),
            ))
            .await?;
            self.store.checkpoint().await?;
            tracing::info!(tenant = %job.tenant_id, dek = %job.old_dek, "data key re-encrypted and destroyed");
        }
        Ok(())
    }
}

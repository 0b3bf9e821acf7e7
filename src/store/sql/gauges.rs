//! Counts for the metrics gauges.

use super::Db;

use crate::error::Result;
use crate::store::seam::*;

impl GaugeRows for Db {
    fn job_counts(&self) -> Result<JobCounts> {
        let count = |sql: &str| -> Result<i64> {
            Ok(self.prepare_cached(sql)?.query_row((), |r| r.get(0))?)
        };
        Ok(JobCounts {
            rewrap_remaining: count(
                "SELECT count(*) FROM tenants t JOIN data_keys d ON d.tenant_id = t.id
                 WHERE t.state = 'active' AND d.wrapped IS NOT NULL AND d.kek_version < t.kek_version",
            )?,
            reencrypt_jobs: count("SELECT count(*) FROM reencrypt_jobs")?,
            tenant_shreds_pending: count(
                "SELECT count(*) FROM tenants WHERE state = 'shred_scheduled'",
            )?,
        })
    }
}

//! Counts the metrics report as gauges: work the background jobs have left.

use rusqlite::Connection;

use crate::error::Result;

/// What the background jobs have left.
pub struct JobCounts {
    /// Live data keys under an older KEK version than their tenant's.
    pub rewrap_remaining: i64,
    pub reencrypt_jobs: i64,
    pub tenant_shreds_pending: i64,
}

pub fn job_counts(conn: &Connection) -> Result<JobCounts> {
    let count =
        |sql: &str| -> Result<i64> { Ok(conn.prepare_cached(sql)?.query_row([], |r| r.get(0))?) };
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

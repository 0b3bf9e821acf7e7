//! Counts for the metrics gauges.

use crate::error::Result;

/// What the background jobs have left.
pub struct JobCounts {
    /// Live data keys under an older KEK version than their tenant's.
    pub rewrap_remaining: i64,
    pub reencrypt_jobs: i64,
    pub tenant_shreds_pending: i64,
}

/// Counts for the metrics gauges.
pub trait GaugeRows {
    fn job_counts(&self) -> Result<JobCounts>;
}

//! Background work the housekeeping loop (`crate::server::housekeeping`)
//! drives: each pass is paced, stops between batches when the server
//! shuts down, and keeps its progress in the rows, so a restart resumes
//! it. With several servers on one database, one runs them at a time
//! (`lease`).

pub(super) mod lease;
mod pace;
mod purge;
mod reencrypt;
mod retention_sweep;
mod rewrap;
mod tenant_shred;

pub use retention_sweep::{SWEEP_BATCH, SWEEP_PAUSE};

//! The storage seam: what the use cases may ask of storage, as domain
//! operations grouped by concept (`TenantRows`, `RecordRows`, ...), with
//! the row types they exchange. The traits are implemented once, for both
//! backends, in `store::sql`; a use case sees only `&dyn Tx`, never a
//! driver type or SQL text.
//!
//! The seam is synchronous: a unit of work is a closure over `&dyn Tx`
//! that `Store::write` or `Store::read` runs on a storage thread, inside
//! one transaction (the writer's group commit on SQLite). A use case's
//! check-then-act logic (read a head, compare, write) stays one straight
//! function, with no await point inside a transaction: a transaction is
//! never held open across the network or another call's work, and a
//! unit of work can be re-run from the start by a backend that must retry
//! it (a serialization failure), because nothing in it has been seen
//! outside the transaction before it commits. See ARCHITECTURE.md.

use crate::error::Result;

mod audit;
mod erasure;
mod gauges;
mod holds;
mod keys;
mod leases;
mod principals;
mod records;
mod reencrypt;
mod replay;
mod retention;
mod subjects;
mod tenants;

pub use audit::*;
pub use erasure::*;
pub use gauges::*;
pub use holds::*;
pub use keys::*;
pub use leases::*;
pub use principals::*;
pub use records::*;
pub use reencrypt::*;
pub use replay::*;
pub use retention::*;
pub use subjects::*;
pub use tenants::*;

/// Nesting inside a unit of work.
pub trait Savepoints {
    /// Runs `f` inside a savepoint: when `f` returns `false`, its writes
    /// are undone and the rest of the unit of work goes on. An error is
    /// storage failing to open or close the savepoint.
    fn savepoint(&self, f: &mut dyn FnMut(&dyn Tx) -> bool) -> Result<()>;
}

/// Declares `Tx` as all of the concept traits, listed once: anything
/// that implements them all is a `Tx`.
macro_rules! all_concepts {
    ($($concept:ident),+) => {
        /// One unit of work's view of storage: every domain operation,
        /// whatever the backend. Use cases take `&dyn Tx`; the concept
        /// traits are implemented once, for both backends, in `store::sql`.
        pub trait Tx: $($concept +)+ {}

        impl<T: $($concept +)+ ?Sized> Tx for T {}
    };
}

all_concepts!(
    Savepoints,
    TenantRows,
    KeyRows,
    LeaseRows,
    SubjectRows,
    RecordRows,
    PrincipalRows,
    ReencryptRows,
    ErasureRows,
    HoldRows,
    RetentionRows,
    AuditRows,
    ReplayRows,
    GaugeRows
);

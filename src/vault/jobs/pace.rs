//! Pacing a background job's batches by how busy the writer is, rather
//! than by a fixed size and a fixed sleep.
//!
//! After each batch the job looks at the writer: whether any unit of work
//! other than its own was handed to it meanwhile, or is waiting now. When
//! none was (an idle server) the next batch doubles, up to `MAX_BATCH`,
//! with no pause: the job runs at the storage's speed. When live traffic
//! writes, each batch is sized to hold the writer for about
//! `BUSY_BATCH_TIME` (from the time per key the last batch spent running,
//! its wait in the writer's queue left out), and the job pauses
//! `BUSY_PAUSE_FACTOR` times as long as the batch ran: live calls whose
//! commit shares a batch with the job's wait at most that long, and keep
//! three quarters of the writer's time.

use std::time::Duration;

use crate::store::{Store, WriteActivity};

/// The smallest and largest batch.
const MIN_BATCH: usize = 16;
const MAX_BATCH: usize = 4096;
/// The first batch of a pass: small, until the writer is seen idle.
const FIRST_BATCH: usize = 64;
/// How long one batch may hold the writer while live calls wait.
const BUSY_BATCH_TIME: Duration = Duration::from_millis(2);
/// Beside live writes, the pause after a batch, in multiples of its run.
const BUSY_PAUSE_FACTOR: u32 = 3;

/// One pass's pacing.
pub(in crate::vault) struct Pace {
    batch: usize,
    seen: WriteActivity,
}

impl Pace {
    pub(in crate::vault) fn new(store: &Store) -> Pace {
        Pace {
            batch: FIRST_BATCH,
            seen: store.write_activity(),
        }
    }

    /// The next batch's size.
    pub(in crate::vault) fn batch(&self) -> usize {
        self.batch
    }

    /// After a batch of `done` units that ran for `took` in the writer
    /// (its wait in the queue left out): how long to pause before the
    /// next. Sets the next batch's size.
    pub(in crate::vault) fn after(
        &mut self,
        now: WriteActivity,
        done: usize,
        took: Duration,
    ) -> Duration {
        // The job's own write is one of those handed over since.
        let others = now.submitted.saturating_sub(self.seen.submitted + 1);
        self.seen = now;
        if others == 0 && now.queued == 0 {
            self.batch = (self.batch * 2).min(MAX_BATCH);
            return Duration::ZERO;
        }
        let per_unit = took / u32::try_from(done.max(1)).unwrap_or(u32::MAX);
        let fits = match per_unit.as_nanos() {
            0 => MAX_BATCH,
            n => usize::try_from(BUSY_BATCH_TIME.as_nanos() / n).unwrap_or(MAX_BATCH),
        };
        self.batch = fits.clamp(MIN_BATCH, MAX_BATCH);
        took * BUSY_PAUSE_FACTOR
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn activity(submitted: u64, queued: usize) -> WriteActivity {
        WriteActivity { submitted, queued }
    }

    fn pace() -> Pace {
        Pace {
            batch: FIRST_BATCH,
            seen: activity(10, 0),
        }
    }

    #[test]
    fn an_idle_writer_doubles_the_batch_up_to_the_largest_with_no_pause() {
        let mut p = pace();
        let mut submitted = 10;
        for _ in 0..12 {
            submitted += 1; // the job's own write only
            let pause = p.after(activity(submitted, 0), p.batch(), Duration::from_millis(5));
            assert_eq!(pause, Duration::ZERO);
        }
        assert_eq!(p.batch(), MAX_BATCH);
    }

    #[test]
    fn live_writes_size_the_batch_to_the_busy_time_and_pause_three_times_its_run() {
        let mut p = pace();
        p.batch = MAX_BATCH;
        // 4096 units in 41 ms: 10 µs each, so 2 ms holds 200 of them.
        let took = Duration::from_micros(40_960);
        let pause = p.after(activity(10 + 1 + 30, 0), MAX_BATCH, took);
        assert_eq!(pause, took * 3);
        assert_eq!(p.batch(), 200);
        // A call waiting now counts as much as one handed over meanwhile;
        // a batch that got slower (20 µs a unit) shrinks.
        let pause = p.after(activity(42, 3), 200, Duration::from_micros(4_000));
        assert_eq!(pause, Duration::from_micros(12_000));
        assert_eq!(p.batch(), 100);
    }

    #[test]
    fn a_slow_batch_under_load_shrinks_to_the_smallest() {
        let mut p = pace();
        let pause = p.after(activity(20, 5), 64, Duration::from_millis(64));
        assert_eq!(pause, Duration::from_millis(192));
        assert_eq!(p.batch(), MIN_BATCH);
    }
}

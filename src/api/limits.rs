//! Load limits at the edge: a per-principal token bucket (requests per
//! second, with a burst) and a cap on calls in flight, past which calls
//! are shed with RESOURCE_EXHAUSTED at once instead of queueing and
//! growing memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::Error;

/// Limits configured for a server.
#[derive(Clone, Copy, Debug)]
pub struct LoadLimits {
    /// Requests per second per principal; 0 turns rate limiting off.
    pub rate_per_principal: u32,
    /// Tokens a principal can bank: how large a burst passes.
    pub burst: u32,
    /// Calls served at once, all principals together.
    pub max_in_flight: usize,
    /// Calls one connection may have in flight: one client cannot take
    /// every slot.
    pub max_in_flight_per_connection: usize,
    /// Failed authentications a peer address may make a minute, each
    /// audited; past it, refused at once and audited coalesced.
    pub auth_failure_burst: u32,
}

impl Default for LoadLimits {
    fn default() -> Self {
        LoadLimits {
            rate_per_principal: 0,
            burst: 0,
            max_in_flight: 1024,
            max_in_flight_per_connection: 256,
            auth_failure_burst: 20,
        }
    }
}

/// Buckets kept before full ones are dropped: the map holds at most this
/// many, or the principals that called within the last burst/rate seconds.
const MAX_BUCKETS: usize = 10_000;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Enforces [`LoadLimits`].
pub struct Limiter {
    limits: LoadLimits,
    buckets: Mutex<HashMap<String, Bucket>>,
    in_flight: Arc<Semaphore>,
}

impl Limiter {
    pub fn new(limits: LoadLimits) -> Self {
        Limiter {
            limits,
            buckets: Mutex::new(HashMap::new()),
            in_flight: Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
        }
    }

    /// Failed authentications a peer may make a minute.
    pub fn auth_failure_burst(&self) -> u32 {
        self.limits.auth_failure_burst
    }

    /// A slot for one call, or RESOURCE_EXHAUSTED if all are taken.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, Error> {
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            crate::metrics::get().shed.inc();
            Error::ResourceExhausted(format!(
                "server overloaded: {} calls in flight; retry with backoff",
                self.limits.max_in_flight
            ))
        })
    }

    /// Takes one token from `principal`'s bucket, or RESOURCE_EXHAUSTED.
    pub fn charge(&self, principal: &str) -> Result<(), Error> {
        let rate = f64::from(self.limits.rate_per_principal);
        if rate == 0.0 {
            return Ok(());
        }
        let burst = f64::from(self.limits.burst.max(self.limits.rate_per_principal));
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            // A bucket refilled to the burst is the same as none.
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(principal.to_owned()).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - b.tokens) / rate * 1000.0).ceil();
            crate::metrics::get().shed.inc();
            Err(Error::ResourceExhausted(format!(
                "rate limit: at most {} requests per second per principal; retry in {wait_ms} ms",
                self.limits.rate_per_principal
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_refuses() {
        let l = Limiter::new(LoadLimits {
            rate_per_principal: 2,
            burst: 3,
            max_in_flight: 10,
            ..LoadLimits::default()
        });
        for _ in 0..3 {
            l.charge("a").unwrap();
        }
        let e = l.charge("a").unwrap_err();
        assert!(e.to_string().starts_with("rate limit:"), "{e}");
        // Another principal has its own bucket.
        l.charge("b").unwrap();
    }

    #[test]
    fn buckets_are_bounded() {
        let l = Limiter::new(LoadLimits {
            rate_per_principal: 1_000_000,
            burst: 1,
            max_in_flight: 1,
            ..LoadLimits::default()
        });
        for i in 0..3 * MAX_BUCKETS {
            l.charge(&format!("p{i}")).unwrap();
            // A microsecond refills a bucket at this rate.
            std::thread::sleep(std::time::Duration::from_nanos(1));
        }
        let n = l.buckets.lock().unwrap().len();
        assert!(n <= MAX_BUCKETS + 1, "{n} buckets");
    }

    #[test]
    fn off_when_rate_is_zero() {
        let l = Limiter::new(LoadLimits::default());
        for _ in 0..10_000 {
            l.charge("a").unwrap();
        }
    }

    #[test]
    fn in_flight_slots_are_bounded() {
        let l = Limiter::new(LoadLimits {
            max_in_flight: 2,
            ..LoadLimits::default()
        });
        let (a, b) = (l.admit().unwrap(), l.admit().unwrap());
        assert!(l.admit().is_err());
        drop(a);
        assert!(l.admit().is_ok());
        drop(b);
    }
}

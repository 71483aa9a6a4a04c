//! Capped exponential back-off with "equal jitter" (a random wait in the upper half of the
//! current step), and jittered sleeps, so that many clients that lost the same server do not
//! come back in lockstep.
//!
//! Hand-written rather than a crate (`backoff`, `backon`): it is twenty lines, the renewal task
//! needs to reset it on success and to cap it by its own deadline, and the crates' retry loops
//! own the future they retry, which the renewal task's `select!` must not give up.

use rand::Rng;
use std::time::Duration;

/// Back-off between retries: a random wait in `[base/2, base]`, where `base` doubles from `min`
/// up to `max` with each consecutive failure.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max: max.max(min), failures: 0 }
    }

    /// The wait before the next retry.
    pub fn next(&mut self) -> Duration {
        let base = self.min.saturating_mul(1u32 << self.failures.min(20)).min(self.max);
        self.failures = self.failures.saturating_add(1);
        jitter_down(base)
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A random duration in `[d/2, d]`.
pub(crate) fn jitter_down(d: Duration) -> Duration {
    let half = d / 2;
    half + rand::rng().random_range(Duration::ZERO..=d - half)
}

/// `d` plus up to a tenth of it (at least up to 5 ms), to spread waiters that wake for the same
/// expiry.
pub(crate) fn jitter_up(d: Duration) -> Duration {
    let spread = (d / 10).max(Duration::from_millis(5));
    d + rand::rng().random_range(Duration::ZERO..=spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_the_cap_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let waits: Vec<Duration> = (0..8).map(|_| b.next()).collect();
        for (i, w) in waits.iter().enumerate() {
            let base = Duration::from_millis(100 * (1 << i)).min(Duration::from_secs(1));
            assert!(*w >= base / 2 && *w <= base, "wait {i}: {w:?} not in [{:?}, {base:?}]", base / 2);
        }
        b.reset();
        assert!(b.next() <= Duration::from_millis(100));
    }

    #[test]
    fn jitter_stays_in_bounds() {
        for _ in 0..1000 {
            let d = Duration::from_millis(200);
            let up = jitter_up(d);
            assert!(up >= d && up <= d + Duration::from_millis(20));
            let down = jitter_down(d);
            assert!(down >= d / 2 && down <= d);
        }
    }
}

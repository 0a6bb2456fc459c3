//! Restart backoff: full-jitter exponential (AWS "full jitter"): the n-th consecutive failure waits a
//! uniformly random time in `[0, min(max, initial * 2^n)]`. Jitter spreads a fleet's retries after a
//! shared outage; the cap keeps an unattended box retrying at least once a minute. The failure count
//! resets only after a process has run healthily for `reset_after`, so a process that crashes a few
//! seconds after every start still backs off (no restart storm).

use std::time::Duration;

use rand::Rng;

/// Why backoff settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    #[error("the initial delay must be positive")]
    ZeroInitial,
    #[error("initial delay {initial:?} exceeds the maximum {max:?}")]
    InitialAboveMax { initial: Duration, max: Duration },
}

/// The validated parameters. Build with [`BackoffPolicy::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
}

impl BackoffPolicy {
    pub fn new(initial: Duration, max: Duration, reset_after: Duration) -> Result<Self, BackoffError> {
        if initial.is_zero() {
            return Err(BackoffError::ZeroInitial);
        }
        if initial > max {
            return Err(BackoffError::InitialAboveMax { initial, max });
        }
        Ok(BackoffPolicy { initial, max, reset_after })
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    pub fn reset_after(&self) -> Duration {
        self.reset_after
    }

    /// The delay cap after `failures` consecutive failures (1 = first failure).
    pub fn cap(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(1u32 << exp).min(self.max)
    }
}

/// The state of one job's backoff.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Backoff { policy, failures: 0 }
    }

    /// Consecutive failures since the last healthy run.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure after a run of `ran_for`, returns how long to wait before the next start.
    pub fn on_failure(&mut self, ran_for: Duration, rng: &mut impl Rng) -> Duration {
        if ran_for >= self.policy.reset_after {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        let cap = self.policy.cap(self.failures);
        let ms = rng.gen_range(0..=cap.as_millis() as u64);
        Duration::from_millis(ms)
    }

    /// A run that has stayed healthy for the reset period clears the count.
    pub fn on_healthy(&mut self, ran_for: Duration) {
        if ran_for >= self.policy.reset_after {
            self.failures = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn policy() -> BackoffPolicy {
        BackoffPolicy::new(Duration::from_secs(2), Duration::from_secs(60), Duration::from_secs(60)).unwrap()
    }

    #[test]
    fn caps_double_to_the_maximum() {
        let p = policy();
        let caps: Vec<u64> = (1..=8).map(|n| p.cap(n).as_secs()).collect();
        assert_eq!(caps, vec![2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(p.cap(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn invalid_policies_are_refused() {
        assert!(BackoffPolicy::new(Duration::ZERO, Duration::from_secs(1), Duration::ZERO).is_err());
        assert!(BackoffPolicy::new(Duration::from_secs(5), Duration::from_secs(1), Duration::ZERO).is_err());
    }

    #[test]
    fn healthy_run_resets() {
        let mut b = Backoff::new(policy());
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..5 {
            b.on_failure(Duration::from_secs(1), &mut rng);
        }
        assert_eq!(b.failures(), 5);
        b.on_healthy(Duration::from_secs(59));
        assert_eq!(b.failures(), 5);
        b.on_healthy(Duration::from_secs(60));
        assert_eq!(b.failures(), 0);
        // A failure after a long healthy run counts as the first one again.
        for _ in 0..5 {
            b.on_failure(Duration::from_secs(1), &mut rng);
        }
        b.on_failure(Duration::from_secs(61), &mut rng);
        assert_eq!(b.failures(), 1);
    }

    proptest! {
        #[test]
        fn delays_stay_within_the_cap(seed: u64, runs in proptest::collection::vec(0u64..120, 1..40)) {
            let p = policy();
            let mut b = Backoff::new(p);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            for ran in runs {
                let d = b.on_failure(Duration::from_secs(ran), &mut rng);
                prop_assert!(d <= p.cap(b.failures()));
                prop_assert!(d <= Duration::from_secs(60));
                if ran >= 60 { prop_assert_eq!(b.failures(), 1); }
            }
        }
    }
}

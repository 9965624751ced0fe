//! Rate limits on failures: logins per account and per address, and agent authentications
//! per address. Counting is `governor`'s (a keyed GCRA limiter); what we add is the lock-out
//! a key gets once it ran out, so that even a right guess is refused until it expires.

use common::AppError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct FailureLimiter<K: Hash + Eq + Clone> {
    counter: DefaultKeyedRateLimiter<K>,
    locked: Mutex<HashMap<K, Instant>>,
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    /// `per_minute` failures are allowed (as a burst, refilled evenly over a minute).
    pub fn per_minute(per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        FailureLimiter {
            counter: RateLimiter::keyed(Quota::per_minute(n).allow_burst(n)),
            locked: Mutex::new(HashMap::new()),
        }
    }

    fn locked(&self) -> std::sync::MutexGuard<'_, HashMap<K, Instant>> {
        self.locked.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuse while `key` is locked out, with how long to wait.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let mut locked = self.locked();
        match locked.get(key) {
            Some(until) if *until > Instant::now() => Err(*until - Instant::now()),
            Some(_) => {
                locked.remove(key);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Count a failure; once the key has run out it is locked until a failure fits again.
    pub fn fail(&self, key: &K) -> Result<(), Duration> {
        match self.counter.check_key(key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                self.locked().insert(key.clone(), Instant::now() + wait);
                Err(wait)
            }
        }
    }

    /// Forget keys that have been quiet (called from the background job).
    pub fn forget_old(&self) {
        self.counter.retain_recent();
        let now = Instant::now();
        self.locked().retain(|_, until| *until > now);
    }
}

pub fn too_many(wait: Duration) -> AppError {
    AppError::RateLimited {
        retry_after_s: wait.as_secs().max(1),
    }
}

/// The server's limits.
pub struct Limits {
    pub login_account: FailureLimiter<String>,
    pub login_address: FailureLimiter<IpAddr>,
    pub agent_address: FailureLimiter<IpAddr>,
}

impl Limits {
    pub fn new(login_failures_per_min: u32) -> Self {
        Limits {
            login_account: FailureLimiter::per_minute(login_failures_per_min),
            // An address may hold many accounts (a proxy, an office): more room.
            login_address: FailureLimiter::per_minute(login_failures_per_min * 4),
            agent_address: FailureLimiter::per_minute(30),
        }
    }

    pub fn forget_old(&self) {
        self.login_account.forget_old();
        self.login_address.forget_old();
        self.agent_address.forget_old();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_the_allowed_failures_and_only_that_key() {
        let l = FailureLimiter::per_minute(3);
        for _ in 0..3 {
            assert!(l.check(&"a").is_ok());
            assert!(l.fail(&"a").is_ok());
        }
        let wait = l.fail(&"a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(20));
        assert!(l.check(&"a").is_err(), "locked, even for a right guess");
        assert!(l.check(&"b").is_ok());
        assert!(l.fail(&"b").is_ok());
    }
}

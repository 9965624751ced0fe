//! Reconnect delays: exponential backoff with full jitter (1 s doubling up to 60 s), as the
//! contract asks of agents. The browser uses the same policy. The caller supplies the
//! randomness, so this stays pure and testable on native and wasm alike.

use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Backoff {
    attempt: u32,
    base_ms: u64,
    cap_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(1_000, 60_000)
    }
}

impl Backoff {
    pub fn new(base_ms: u64, cap_ms: u64) -> Self {
        Backoff {
            attempt: 0,
            base_ms,
            cap_ms,
        }
    }

    /// The ceiling of the next delay, before jitter.
    pub fn ceiling_ms(&self) -> u64 {
        let exp = self.base_ms.saturating_mul(1u64 << self.attempt.min(20));
        exp.min(self.cap_ms)
    }

    /// The next delay: uniform in [0, ceiling] given `unit` in [0, 1). Advances the attempt.
    pub fn next_delay_ms(&mut self, unit: f64) -> u64 {
        let ceiling = self.ceiling_ms();
        self.attempt = self.attempt.saturating_add(1);
        ((ceiling as f64) * unit.clamp(0.0, 1.0)) as u64
    }

    /// After a healthy connection, start again from the base.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

/// Which of the dashboard's URLs the next session uses, and how long to wait before it.
///
/// Every lost session, a failed connect or a dropped link, moves on to the next URL: when a
/// replica dies, its agents go to another one instead of waiting for it to come back. The
/// wait before each attempt is drawn with full jitter under the backoff's current ceiling,
/// and that ceiling grows once per full round of failed URLs rather than once per URL:
/// - after a healthy session the ceiling is back at its base (1 s), so a dropped agent
///   reaches the next replica within 1 s (0.5 s on average), and the replica's whole
///   fleet, which loses its link in the same instant, arrives spread over that second
///   instead of in one burst (no wait at all would be faster by 0.5 s, and is that burst);
/// - a URL with nothing listening fails in milliseconds, so a dead first URL at start
///   costs one such wait;
/// - with every replica down, the agent makes one attempt per wait, as it does with one
///   URL, each replica getting its share, and the waits grow round after round to 60 s.
///
/// With one URL a round is one attempt, which is the plain backoff of before.
#[derive(Clone, Debug)]
pub struct Rotation {
    urls: usize,
    current: usize,
    /// URLs that failed since the ceiling last grew or was reset.
    failed: usize,
    backoff: Backoff,
}

impl Rotation {
    pub fn new(urls: usize) -> Rotation {
        Rotation::starting_at(urls, 0)
    }

    /// Starting at the `start`th URL (modulo their number) instead of the first: the
    /// benchmark's simulated agents (bench/, fleet-sim) spread over the replicas this way.
    pub fn starting_at(urls: usize, start: usize) -> Rotation {
        let urls = urls.max(1);
        Rotation {
            urls,
            current: start % urls,
            failed: 0,
            backoff: Backoff::default(),
        }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// After a session ended (`healthy`: it registered, or lasted long enough: the agent's
    /// `Timings::stable`):
    /// moves to the next URL and returns the wait before trying it, `unit` in [0, 1)
    /// being the jitter.
    pub fn after_session(&mut self, healthy: bool, unit: f64) -> Duration {
        if healthy {
            self.backoff.reset();
            self.failed = 0;
        }
        self.current = (self.current + 1) % self.urls;
        self.failed += 1;
        let ms = if self.failed >= self.urls {
            self.failed = 0;
            self.backoff.next_delay_ms(unit)
        } else {
            (self.backoff.ceiling_ms() as f64 * unit.clamp(0.0, 1.0)) as u64
        };
        Duration::from_millis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each lost session moves to the next URL; the ceiling of the jittered wait grows
    /// once per full round of failures and is back at its base after a healthy session.
    #[test]
    fn rotation_moves_on_and_backs_off_per_round() {
        let mut r = Rotation::new(3);
        assert_eq!(r.current(), 0);
        // `unit` just below 1 makes each wait its ceiling (to the millisecond).
        let mut waits = Vec::new();
        for _ in 0..7 {
            let wait = r.after_session(false, 0.9999).as_millis();
            waits.push((r.current(), wait));
        }
        assert_eq!(
            waits,
            [
                (1, 999),
                (2, 999),
                (0, 999),
                (1, 1_999),
                (2, 1_999),
                (0, 1_999),
                (1, 3_999)
            ]
        );
        // A healthy session on URL 1 then lost: URL 2 within the base ceiling.
        assert_eq!(r.after_session(true, 0.9999).as_millis(), 999);
        assert_eq!(r.current(), 2);
        assert_eq!(r.after_session(false, 0.0), Duration::ZERO);

        // One URL: a round is one attempt, the plain backoff.
        let mut one = Rotation::new(1);
        let waits: Vec<u128> = (0..4)
            .map(|_| one.after_session(false, 0.9999).as_millis())
            .collect();
        assert_eq!(waits, [999, 1_999, 3_999, 7_999]);
        assert_eq!(one.current(), 0);
        assert_eq!(one.after_session(true, 0.9999).as_millis(), 999);

        // Starting elsewhere: the same round, shifted.
        let mut r = Rotation::starting_at(3, 4);
        assert_eq!(r.current(), 1);
        r.after_session(true, 0.5);
        assert_eq!(r.current(), 2);
    }

    #[test]
    fn grows_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let ceilings: Vec<u64> = (0..9)
            .map(|_| {
                let c = b.ceiling_ms();
                b.next_delay_ms(0.5);
                c
            })
            .collect();
        assert_eq!(
            ceilings,
            vec![1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
        );
        b.reset();
        assert_eq!(b.ceiling_ms(), 1_000);
    }

    #[test]
    fn full_jitter_stays_in_bounds() {
        let mut b = Backoff::default();
        for _ in 0..100 {
            let ceiling = b.ceiling_ms();
            assert!(b.next_delay_ms(0.999) <= ceiling);
        }
        assert_eq!(Backoff::default().next_delay_ms(0.0), 0);
        assert_eq!(Backoff::default().next_delay_ms(7.0), 1_000);
    }
}

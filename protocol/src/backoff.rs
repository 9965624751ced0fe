//! Reconnect delays: exponential backoff with full jitter (1 s doubling up to 60 s), as the
//! contract asks of agents. The browser uses the same policy. The caller supplies the
//! randomness, so this stays pure and testable on native and wasm alike.

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

#[cfg(test)]
mod tests {
    use super::*;

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

//! One clock for every fleet-sim process on this machine. Agents write their send time into
//! each heartbeat (`metrics.load`, in ms of CLOCK_MONOTONIC) and browsers subtract it from
//! the time they read the event, so latency needs no clock sync and no lookup table, also
//! when the agent and the browser are in different fleet-sim processes (`--shard`):
//! CLOCK_MONOTONIC is one clock for the whole machine (boot time, never set back).

use std::sync::atomic::{AtomicBool, Ordering};

static MEASURING: AtomicBool = AtomicBool::new(false);

/// Milliseconds of CLOCK_MONOTONIC, with sub-microsecond resolution: an f64 holds months
/// of uptime in ms exactly enough, and serde_json writes it back bit for bit.
pub fn now_ms() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the valid, owned timespec; CLOCK_MONOTONIC is
    // always available on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// Counters and samples are kept only inside the measured window (after the warm-up).
pub fn measuring() -> bool {
    MEASURING.load(Ordering::Relaxed)
}

pub fn set_measuring(on: bool) {
    MEASURING.store(on, Ordering::Relaxed);
}

//! One clock for the whole process. Agents write their send time into each heartbeat
//! (`metrics.load`, in ms since `EPOCH`) and browsers in the same process subtract it from
//! the time they read the event, so latency needs no clock sync and no lookup table.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();
static MEASURING: AtomicBool = AtomicBool::new(false);

/// Milliseconds since the process's epoch, with sub-microsecond resolution: an f64 holds
/// hours of this exactly enough, and serde_json writes it back bit for bit.
pub fn now_ms() -> f64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as f64 / 1e6
}

/// Counters and samples are kept only inside the measured window (after the warm-up).
pub fn measuring() -> bool {
    MEASURING.load(Ordering::Relaxed)
}

pub fn set_measuring(on: bool) {
    MEASURING.store(on, Ordering::Relaxed);
}

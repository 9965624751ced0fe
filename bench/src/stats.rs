//! Figures: latency percentiles and what /proc says about the server (and this process).

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// p50/p90/p99/max of a set of latencies in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut samples: Vec<f32>) -> Latency {
        if samples.is_empty() {
            return Latency::default();
        }
        samples.sort_unstable_by(f32::total_cmp);
        // Nearest rank: the smallest sample with at least q of the samples at or below it.
        let rank = |q: f64| {
            let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            f64::from(samples[i])
        };
        Latency {
            samples: samples.len(),
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms: f64::from(samples[samples.len() - 1]),
        }
    }
}

/// CPU ticks (user + system) and resident set of one process, from /proc.
#[derive(Clone, Copy, Debug)]
pub struct ProcSample {
    pub at: Instant,
    pub cpu_ticks: u64,
    pub rss_kib: u64,
}

pub fn clock_ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions; it only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `pid` None is this process.
pub fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let dir = match pid {
        Some(p) => format!("/proc/{p}"),
        None => "/proc/self".to_owned(),
    };
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some(ProcSample {
        at: Instant::now(),
        cpu_ticks: utime + stime,
        rss_kib,
    })
}

/// The processes `pids` together (CPU ticks and RSS summed: several replicas of the
/// dashboard); None when none of them can be read.
pub fn sample_all(pids: &[u32]) -> Option<ProcSample> {
    pids.iter()
        .filter_map(|&p| sample(Some(p)))
        .reduce(|a, b| ProcSample {
            at: a.at,
            cpu_ticks: a.cpu_ticks + b.cpu_ticks,
            rss_kib: a.rss_kib + b.rss_kib,
        })
}

/// A process and its children together, CPU only: a database server that runs each
/// connection as a child process (PostgreSQL's postmaster). Children that exited are
/// counted through the parent's cutime and cstime, so the sum never goes back.
pub fn sample_tree(root: u32) -> Option<ProcSample> {
    // (ppid, utime + stime + cutime + cstime) of a /proc/PID/stat line.
    let ticks = |pid: &str| -> Option<(u32, u64)> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ppid = f.get(1)?.parse().ok()?;
        let sum = (11..=14)
            .map(|k| f.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
            .sum();
        Some((ppid, sum))
    };
    let (_, own) = ticks(&root.to_string())?;
    let children: u64 = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter_map(|pid| ticks(&pid))
        .filter(|&(ppid, _)| ppid == root)
        .map(|(_, t)| t)
        .sum();
    Some(ProcSample {
        at: Instant::now(),
        cpu_ticks: own + children,
        rss_kib: 0,
    })
}

/// Latency samples as `fleet-sim merge` reads them: f32, little-endian, one after another.
pub fn write_samples(path: &Path, samples: &[f32]) -> std::io::Result<()> {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    std::fs::write(path, bytes)
}

pub fn read_samples(path: &Path) -> std::io::Result<Vec<f32>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// CPU use between two samples, in % of one core.
pub fn cpu_pct(a: &ProcSample, b: &ProcSample) -> f64 {
    let secs = b.at.duration_since(a.at).as_secs_f64();
    if secs <= 0.0 {
        return 0.0;
    }
    (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64 / clock_ticks_per_s() / secs * 100.0
}

/// Busy and total jiffies of the whole machine (first line of /proc/stat).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = v.iter().sum();
    // idle and iowait are the 4th and 5th columns.
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let l = Latency::of((1..=100).map(|v| v as f32).collect());
        assert_eq!(
            (l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(Latency::of(vec![]).samples, 0);
    }

    #[test]
    fn samples_round_trip_through_a_file() {
        let dir = std::env::temp_dir().join(format!("fleet-sim-test-{}", std::process::id()));
        let samples = vec![0.25_f32, 1.5, 1234.125, f32::MAX];
        write_samples(&dir, &samples).unwrap();
        assert_eq!(read_samples(&dir).unwrap(), samples);
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn reads_this_process() {
        let s = sample(None).expect("/proc/self");
        assert!(s.rss_kib > 0);
    }

    /// A child's CPU counts for its parent's tree, also after it exited.
    #[test]
    fn a_tree_counts_its_children() {
        let me = std::process::id();
        let before = sample_tree(me).expect("/proc/self").cpu_ticks;
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .status()
            .expect("sh");
        assert!(status.success());
        let after = sample_tree(me).expect("/proc/self").cpu_ticks;
        assert!(after > before, "{before} -> {after}");
        assert!(sample_tree(u32::MAX).is_none());
    }
}

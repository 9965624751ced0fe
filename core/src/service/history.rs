//! Heartbeat metrics over time (`GET /api/hosts/{id}/metrics`).
//!
//! Heartbeats are summed per host and minute in memory (`Recorder`). A finished minute is
//! written with the next batch of last-seen writes (`hosts::flush_reports`) to the 1-minute
//! tier, and summed further into its host's 10-minute window; a finished window is added by
//! one upsert to the bucket holding it in each coarser tier: 10 minutes, 1 hour, 1 day (a
//! window lies in exactly one bucket of each). So a host costs 1.3 row writes a minute
//! instead of 4: writing every minute to every tier made history cost 15 % more server CPU
//! at 10 000 agents (docs/BENCHMARKS.md, "Metrics history: ingest CPU").
//! Buckets hold sums and counts, so a point is the average of the heartbeats in its step,
//! weighted by heartbeat; at shutdown the unfinished minutes and windows are written too and
//! add up with their rest after the restart. A kill -9 loses the current minute, and up to
//! ten minutes of the coarser tiers: their averages stay right, built from fewer heartbeats.
//! Each tier keeps its buckets for its own retention (`NIXDECK_HISTORY_*`); `prune` deletes
//! the older ones.
//!
//! Values are stored as integers in hundredths (of a percent; of the load).

use super::{OrInternal, Result};
use crate::storage::{MetricSums, MinuteSums};
use crate::Core;
use common::{AppError, Viewer};
use protocol::api::{CpuSparkline, MetricsHistory, MetricsPoint};
use protocol::{Metrics, Timestamp};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// A tier: its id in the table and its step in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    pub id: i16,
    pub step_s: i64,
}

pub const MINUTE: Tier = Tier { id: 0, step_s: 60 };
pub const TEN_MINUTES: Tier = Tier { id: 1, step_s: 600 };
pub const HOUR: Tier = Tier {
    id: 2,
    step_s: 3600,
};
pub const DAY: Tier = Tier {
    id: 3,
    step_s: 86_400,
};
pub const TIERS: [Tier; 4] = [MINUTE, TEN_MINUTES, HOUR, DAY];

/// The ranges a chart may ask for: the name, its length and the tier it reads. A range
/// reads a tier with a few hundred points at most (the 7-day one 1 008), so no answer is
/// large; a tier kept for less than the range answers with what it has.
pub const RANGES: [(&str, i64, Tier); 5] = [
    ("1h", 3600, MINUTE),
    ("24h", 86_400, TEN_MINUTES),
    ("7d", 7 * 86_400, TEN_MINUTES),
    ("30d", 30 * 86_400, HOUR),
    ("1y", 365 * 86_400, DAY),
];

/// The length and tier of a range's name; a clear error for anything else.
pub fn range(name: Option<&str>) -> Result<(&'static str, i64, Tier)> {
    let name = name.unwrap_or_default();
    RANGES
        .iter()
        .find(|(n, _, _)| *n == name)
        .copied()
        .ok_or_else(|| {
            AppError::Invalid(format!(
                "range must be one of 1h, 24h, 7d, 30d or 1y (got {:?}).",
                name.chars().take(20).collect::<String>()
            ))
        })
}

/// A value in hundredths, bounded: a percent to 0..=100, a load to 0..=100 000. A value
/// that is not a number counts as 0, so one bad heartbeat cannot poison a day's average.
fn hundredths(value: f64, max: f64) -> i64 {
    if value.is_finite() {
        (value.clamp(0.0, max) * 100.0).round() as i64
    } else {
        0
    }
}

/// One heartbeat's metrics as bucket sums.
pub fn sums_of(m: &Metrics) -> MetricSums {
    let disk = m.disk.map(|d| hundredths(d, 100.0));
    MetricSums {
        n: 1,
        cpu: hundredths(m.cpu, 100.0),
        ram: hundredths(m.ram, 100.0),
        swap: hundredths(m.swap, 100.0),
        load: hundredths(m.load, 100_000.0),
        disk_n: i64::from(disk.is_some()),
        disk: disk.unwrap_or(0),
    }
}

/// The minutes being summed, per host, the finished ones waiting for the next batch, and
/// each host's 10-minute window of written minutes waiting for the coarser tiers.
/// Bounded: one current minute and one window per host, and the finished minutes of one
/// batch interval.
#[derive(Default)]
pub struct Recorder {
    minutes: Mutex<Minutes>,
}

#[derive(Default)]
struct Minutes {
    current: HashMap<String, (i64, MetricSums)>,
    finished: Vec<MinuteSums>,
    window: HashMap<String, (i64, MetricSums)>,
}

/// What `Recorder::take` hands over: minutes for the 1-minute tier, and finished 10-minute
/// windows (`minute` is the window's start) for the coarser tiers.
#[derive(Debug, Default)]
pub struct Taken {
    pub minutes: Vec<MinuteSums>,
    pub windows: Vec<MinuteSums>,
}

impl Taken {
    pub fn is_empty(&self) -> bool {
        self.minutes.is_empty() && self.windows.is_empty()
    }
}

impl Recorder {
    fn lock(&self) -> std::sync::MutexGuard<'_, Minutes> {
        // Plain maps: a panic elsewhere leaves them consistent.
        self.minutes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A heartbeat of `host_id` at `now` (Unix seconds).
    pub fn record(&self, host_id: &str, now: i64, m: &Metrics) {
        let minute = now.div_euclid(60) * 60;
        let sums = sums_of(m);
        let mut minutes = self.lock();
        let Minutes {
            current, finished, ..
        } = &mut *minutes;
        match current.get_mut(host_id) {
            Some((start, acc)) if *start == minute => acc.merge(&sums),
            Some(entry) => {
                let (start, acc) = std::mem::replace(entry, (minute, sums));
                finished.push(MinuteSums {
                    host_id: host_id.to_owned(),
                    minute: start,
                    sums: acc,
                });
            }
            None => {
                current.insert(host_id.to_owned(), (minute, sums));
            }
        }
    }

    /// The minutes to write now: the finished ones, those that ended before `now` without
    /// a later heartbeat (a host gone quiet), and with `all` the unfinished ones too (at
    /// shutdown); and the windows finished by those minutes or by the clock (all of them
    /// with `all`).
    pub fn take(&self, now: i64, all: bool) -> Taken {
        let step = TEN_MINUTES.step_s;
        let mut minutes = self.lock();
        let Minutes {
            current,
            finished,
            window,
        } = &mut *minutes;
        let mut out = std::mem::take(finished);
        current.retain(|id, (start, acc)| {
            let done = all || *start + 60 <= now;
            if done {
                out.push(MinuteSums {
                    host_id: id.clone(),
                    minute: *start,
                    sums: *acc,
                });
            }
            !done
        });
        let mut windows = Vec::new();
        for m in &out {
            let start = m.minute.div_euclid(step) * step;
            match window.get_mut(&m.host_id) {
                Some((s, acc)) if *s == start => acc.merge(&m.sums),
                Some(entry) => {
                    let (s, acc) = std::mem::replace(entry, (start, m.sums));
                    windows.push(MinuteSums {
                        host_id: m.host_id.clone(),
                        minute: s,
                        sums: acc,
                    });
                }
                None => {
                    window.insert(m.host_id.clone(), (start, m.sums));
                }
            }
        }
        window.retain(|id, (start, acc)| {
            let done = all || *start + step <= now;
            if done {
                windows.push(MinuteSums {
                    host_id: id.clone(),
                    minute: *start,
                    sums: *acc,
                });
            }
            !done
        });
        Taken {
            minutes: out,
            windows,
        }
    }

    /// A removed host's minutes are dropped.
    pub fn forget(&self, host_id: &str) {
        let mut minutes = self.lock();
        minutes.current.remove(host_id);
        minutes.finished.retain(|m| m.host_id != host_id);
        minutes.window.remove(host_id);
    }

    /// The host's sums not written yet to `tier`, finished or not: its minutes, and for the
    /// coarser tiers its window too.
    fn unwritten(&self, host_id: &str, tier: Tier) -> Vec<(i64, MetricSums)> {
        let minutes = self.lock();
        let mut out: Vec<_> = minutes
            .finished
            .iter()
            .filter(|m| m.host_id == host_id)
            .map(|m| (m.minute, m.sums))
            .collect();
        out.extend(minutes.current.get(host_id).copied());
        if tier != MINUTE {
            out.extend(minutes.window.get(host_id).copied());
        }
        out
    }
}

/// Write the minutes and windows due at `now` (see `Recorder::take`). Called with the
/// batched last-seen writes.
pub async fn write(core: &Core, now: i64, all: bool) -> Result<(), String> {
    let taken = core.unsaved.history.take(now, all);
    let coarse: Vec<(i16, i64)> = TIERS[1..].iter().map(|t| (t.id, t.step_s)).collect();
    core.db
        .add_history(&taken.minutes, &[(MINUTE.id, MINUTE.step_s)])
        .await
        .and(core.db.add_history(&taken.windows, &coarse).await)
        .map_err(|e| format!("saving metrics history: {e}"))
}

/// Each tier's retention in seconds, from the settings.
fn retention_s(config: &crate::config::Config) -> [(Tier, i64); 4] {
    [
        (MINUTE, config.history_minute_h as i64 * 3600),
        (TEN_MINUTES, config.history_10min_days as i64 * 86_400),
        (HOUR, config.history_hour_days as i64 * 86_400),
        (DAY, config.history_day_days as i64 * 86_400),
    ]
}

/// Delete the buckets past their tier's retention at `now`, for every host.
pub async fn prune_at(core: &Core, now: i64) -> Result<u64> {
    let cutoffs: Vec<(i16, i64)> = retention_s(&core.config)
        .iter()
        .map(|(tier, keep)| (tier.id, now - keep))
        .collect();
    let hosts = core.hub.ids_where(|_| true);
    core.db
        .prune_history(&hosts, &cutoffs)
        .await
        .or_internal("pruning metrics history")
}

/// `prune_at` now, logging a failure (the periodic clean-up).
pub async fn prune(core: &Core) {
    if let Ok(deleted) = prune_at(core, Timestamp::now().secs()).await {
        if deleted > 0 {
            tracing::debug!(deleted, "pruned metrics history");
        }
    }
}

/// `GET /api/hosts/{id}/metrics?range=…`: any role may read.
pub async fn read(
    core: &Core,
    _viewer: &Viewer,
    host_id: &str,
    range_name: Option<&str>,
) -> Result<MetricsHistory> {
    read_at(core, host_id, range_name, Timestamp::now().secs()).await
}

/// The points of `range_name` ending at `now`, oldest first: the buckets of the range's
/// tier from the one holding `now - range` on, with the minutes not yet written (the
/// current one included) added in, so a chart is current to the last heartbeat.
pub async fn read_at(
    core: &Core,
    host_id: &str,
    range_name: Option<&str>,
    now: i64,
) -> Result<MetricsHistory> {
    if !core.hub.contains(host_id) {
        return Err(AppError::NotFound(format!("host {host_id}")));
    }
    let (name, length, tier) = range(range_name)?;
    let step = tier.step_s;
    let count = length / step;
    let from = (now.div_euclid(step) - count + 1) * step;
    let rows = core
        .db
        .metrics_history(host_id, tier.id, from)
        .await
        .or_internal("reading metrics history")?;
    let mut buckets: BTreeMap<i64, MetricSums> =
        rows.into_iter().map(|r| (r.bucket_start, r.sums)).collect();
    for (minute, sums) in core.unsaved.history.unwritten(host_id, tier) {
        let start = minute.div_euclid(step) * step;
        if start >= from {
            buckets.entry(start).or_default().merge(&sums);
        }
    }
    Ok(MetricsHistory {
        range: name.to_owned(),
        step_s: step as u32,
        points: buckets
            .into_iter()
            .filter(|(_, s)| s.n > 0)
            .map(|(t, s)| point(t, &s))
            .collect(),
    })
}

/// Minutes in a row's sparkline: the last hour.
pub const SPARK_MINUTES: i64 = 60;
/// Hosts one sparkline request may name: the rows in view are far fewer.
pub const SPARK_HOSTS: usize = 200;

/// The rows' sparklines: the last hour of CPU of each of `host_ids` that exists (a row
/// may have gone meanwhile), one whole percent per minute, so fifty rows cost one small
/// answer rather than fifty chart requests. Any role may read.
pub async fn cpu_sparklines(
    core: &Core,
    _viewer: &Viewer,
    host_ids: Vec<String>,
) -> Result<Vec<CpuSparkline>> {
    cpu_sparklines_at(core, host_ids, Timestamp::now().secs()).await
}

/// `cpu_sparklines` ending at `now`.
pub async fn cpu_sparklines_at(
    core: &Core,
    host_ids: Vec<String>,
    now: i64,
) -> Result<Vec<CpuSparkline>> {
    if host_ids.len() > SPARK_HOSTS {
        return Err(AppError::Invalid(format!(
            "at most {SPARK_HOSTS} hosts per sparkline request (got {}).",
            host_ids.len()
        )));
    }
    let first = (now.div_euclid(60) - SPARK_MINUTES + 1) * 60;
    let mut out = Vec::with_capacity(host_ids.len());
    for id in host_ids {
        if !core.hub.contains(&id) || out.iter().any(|s: &CpuSparkline| s.host_id == id) {
            continue;
        }
        let history = read_at(core, &id, Some("1h"), now).await?;
        let mut cpu = vec![None; SPARK_MINUTES as usize];
        for p in &history.points {
            let slot = (p.t.secs() - first).div_euclid(60);
            if let Some(v) = usize::try_from(slot).ok().and_then(|i| cpu.get_mut(i)) {
                *v = Some(p.cpu.round().clamp(0.0, 100.0) as u8);
            }
        }
        out.push(CpuSparkline { host_id: id, cpu });
    }
    Ok(out)
}

/// A bucket's averages, in percent (and load) to two decimals.
fn point(t: i64, s: &MetricSums) -> MetricsPoint {
    let avg = |sum: i64, n: i64| (sum as f64 / n as f64).round() / 100.0;
    MetricsPoint {
        t: Timestamp(t),
        cpu: avg(s.cpu, s.n),
        ram: avg(s.ram, s.n),
        swap: avg(s.swap, s.n),
        load: avg(s.load, s.n),
        disk: (s.disk_n > 0).then(|| avg(s.disk, s.disk_n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::test_core;
    use crate::storage::testing::{db_test, TestBackend};
    use protocol::{Host, HostType};

    fn metrics(cpu: f64, disk: Option<f64>) -> Metrics {
        Metrics {
            cpu,
            ram: 50.0,
            swap: 1.0,
            load: 0.25,
            disk,
        }
    }

    /// A day boundary, so that every tier's buckets start at `T0`.
    const T0: i64 = 1_796_083_200;

    async fn core_with_host(backend: &TestBackend) -> (tempfile::TempDir, Core) {
        let dir = tempfile::tempdir().unwrap();
        let core = test_core(backend, dir.path(), &["web-1"], &["nixdeck"]).await;
        core.db
            .insert_host(&Host::new("web-1", HostType::Nixos), "t")
            .await
            .unwrap();
        (dir, core)
    }

    async fn rows(core: &Core) -> i64 {
        crate::storage::on_pool!(core.db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM metrics_history")
            .fetch_one(pool)
            .await
            .unwrap())
    }

    #[test]
    fn ranges_are_the_five_names_and_nothing_else() {
        assert_eq!(range(Some("1h")).unwrap().2, MINUTE);
        assert_eq!(range(Some("1y")).unwrap().2, DAY);
        for bad in [None, Some(""), Some("5y"), Some("1H"), Some("1h ")] {
            let err = range(bad).unwrap_err();
            assert!(matches!(err, AppError::Invalid(_)), "{bad:?}");
            assert!(err.to_string().contains("1h, 24h, 7d, 30d or 1y"), "{err}");
        }
    }

    #[test]
    fn values_are_bounded_hundredths() {
        let s = sums_of(&Metrics {
            cpu: 12.345,
            ram: 250.0,
            swap: f64::NAN,
            load: -3.0,
            disk: Some(99.99),
        });
        assert_eq!(
            (s.n, s.cpu, s.ram, s.swap, s.load, s.disk_n, s.disk),
            (1, 1235, 10_000, 0, 0, 1, 9999)
        );
        assert_eq!(sums_of(&metrics(1.0, None)).disk_n, 0);
    }

    /// Heartbeats add up per minute; a minute is handed over once the next one starts or
    /// once it is over, the current one only when all are asked for (at shutdown).
    #[test]
    fn a_minute_is_finished_by_the_next_heartbeat_or_by_the_clock() {
        let rec = Recorder::default();
        for (i, cpu) in [10.0, 20.0, 30.0].into_iter().enumerate() {
            rec.record("a", T0 + 10 * i as i64, &metrics(cpu, Some(40.0)));
        }
        rec.record("b", T0 + 5, &metrics(1.0, None));
        assert!(rec.take(T0 + 59, false).is_empty());
        rec.record("a", T0 + 61, &metrics(50.0, None));
        let mut taken = rec.take(T0 + 62, false).minutes;
        taken.sort_by(|x, y| x.host_id.cmp(&y.host_id));
        let a = &taken[0];
        assert_eq!((a.host_id.as_str(), a.minute), ("a", T0));
        assert_eq!((a.sums.n, a.sums.cpu, a.sums.disk_n), (3, 6000, 3));
        // b went quiet: its minute is over by the clock.
        assert_eq!((taken[1].host_id.as_str(), taken[1].sums.n), ("b", 1));
        assert_eq!(taken.len(), 2);
        // a's second minute is still running.
        assert!(rec.take(T0 + 62, false).is_empty());
        let rest = rec.take(T0 + 62, true).minutes;
        assert_eq!((rest.len(), rest[0].minute), (1, T0 + 60));
        rec.record("a", T0 + 70, &metrics(1.0, None));
        rec.forget("a");
        assert!(rec.take(T0 + 1000, true).is_empty());
    }

    /// The coarser tiers get a host's minutes once per 10-minute window: when a minute of
    /// the next window is handed over, or by the clock, or at shutdown (all of them).
    #[test]
    fn windows_are_handed_over_once_per_ten_minutes() {
        let rec = Recorder::default();
        let mut windows = Vec::new();
        let mut minutes = 0;
        for m in 0..25 {
            for s in [0, 20, 40] {
                rec.record("a", T0 + m * 60 + s, &metrics(m as f64, None));
            }
            let taken = rec.take(T0 + m * 60 + 59, false);
            minutes += taken.minutes.len();
            windows.extend(taken.windows);
        }
        assert_eq!(minutes, 24, "the 25th minute is still running");
        let starts: Vec<i64> = windows.iter().map(|w| w.minute - T0).collect();
        assert_eq!(starts, [0, 600]);
        for (w, first) in windows.iter().zip([0, 10]) {
            assert_eq!(w.sums.n, 30);
            assert_eq!(
                w.sums.cpu,
                (first..first + 10).map(|m| 3 * m * 100).sum::<i64>()
            );
        }
        // Quiet from here: the third window ends by the clock, with its four minutes
        // (20–23 handed over, 24 finished by the clock with it).
        let taken = rec.take(T0 + 30 * 60, false);
        assert_eq!(taken.minutes.len(), 1);
        assert_eq!(taken.windows.len(), 1);
        assert_eq!(
            (taken.windows[0].minute, taken.windows[0].sums.n),
            (T0 + 1200, 15)
        );
        // At shutdown a running window goes too.
        rec.record("a", T0 + 31 * 60, &metrics(1.0, None));
        let last = rec.take(T0 + 31 * 60 + 1, true);
        assert_eq!((last.minutes.len(), last.windows.len()), (1, 1));
        assert!(rec.take(T0 + 40 * 60, true).is_empty());
    }

    db_test! {
        /// Two hours of heartbeats every 20 s: each tier's points are the averages of their
        /// step, oldest first; the minutes not yet written are in the answer too.
        #[tokio::test]
        async fn each_range_reads_its_tier_with_averages_and_the_unwritten_minutes(backend) {
            let (_dir, core) = core_with_host(&backend).await;
            let rec = &core.unsaved.history;
            // Minute m has cpu m % 10 at all three heartbeats; disk only from minute 60.
            for m in 0..120 {
                for s in [0, 20, 40] {
                    let disk = (m >= 60).then_some(70.0);
                    rec.record("web-1", T0 + m * 60 + s, &metrics((m % 10) as f64, disk));
                }
                if m % 7 == 0 {
                    write(&core, T0 + m * 60 + 59, false).await.unwrap();
                }
            }
            let now = T0 + 119 * 60 + 50;
            let hour = read_at(&core, "web-1", Some("1h"), now).await.unwrap();
            assert_eq!((hour.range.as_str(), hour.step_s), ("1h", 60));
            assert_eq!(hour.points.len(), 60);
            assert_eq!(hour.points[0].t, Timestamp(T0 + 60 * 60));
            assert_eq!(hour.points[59].t, Timestamp(T0 + 119 * 60));
            for p in &hour.points {
                let m = (p.t.secs() - T0) / 60;
                assert_eq!(p.cpu, (m % 10) as f64, "minute {m}");
                assert_eq!(
                    (p.ram, p.swap, p.load, p.disk),
                    (50.0, 1.0, 0.25, Some(70.0))
                );
            }

            let day = read_at(&core, "web-1", Some("24h"), now).await.unwrap();
            assert_eq!(day.step_s, 600);
            assert_eq!(day.points.len(), 12);
            assert!(day.points.iter().all(|p| p.cpu == 4.5));
            assert_eq!(day.points[0].disk, None);
            assert_eq!(day.points[11].disk, Some(70.0));
            assert_eq!(day.points[0].t, Timestamp(T0));

            let year = read_at(&core, "web-1", Some("1y"), now).await.unwrap();
            assert_eq!((year.step_s, year.points.len()), (86_400, 1));
            assert_eq!(year.points[0].cpu, 4.5);
            assert_eq!(year.points[0].disk, Some(70.0));
            let month = read_at(&core, "web-1", Some("30d"), now).await.unwrap();
            assert_eq!((month.step_s, month.points.len()), (3600, 2));

            // Once everything is written the answer is the same.
            write(&core, now, true).await.unwrap();
            assert_eq!(
                read_at(&core, "web-1", Some("1h"), now).await.unwrap(),
                hour
            );
            // A year later the 1-hour range is empty, the 1-year one still has the day.
            let later = now + 300 * 86_400;
            assert!(read_at(&core, "web-1", Some("1h"), later)
                .await
                .unwrap()
                .points
                .is_empty());
            assert_eq!(
                read_at(&core, "web-1", Some("1y"), later)
                    .await
                    .unwrap()
                    .points,
                year.points
            );
        }
    }

    db_test! {
        /// A minute written half at shutdown and half after the restart is one point.
        #[tokio::test]
        async fn a_partial_minute_adds_up_with_its_rest(backend) {
            let (_dir, core) = core_with_host(&backend).await;
            core.unsaved
                .history
                .record("web-1", T0 + 1, &metrics(10.0, None));
            write(&core, T0 + 2, true).await.unwrap();
            core.unsaved
                .history
                .record("web-1", T0 + 30, &metrics(30.0, Some(5.0)));
            write(&core, T0 + 61, false).await.unwrap();
            let h = read_at(&core, "web-1", Some("1h"), T0 + 61).await.unwrap();
            assert_eq!(h.points.len(), 1);
            assert_eq!((h.points[0].cpu, h.points[0].disk), (20.0, Some(5.0)));
            assert_eq!(rows(&core).await, 4, "one bucket per tier");
        }
    }

    db_test! {
        /// Each tier keeps its buckets for its own retention, and no longer.
        #[tokio::test]
        async fn retention_deletes_per_tier(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = test_core(
                &backend,
                dir.path(),
                &["web-1"],
                &[
                    "nixdeck",
                    "--history-minute-h",
                    "2",
                    "--history-day-days",
                    "3",
                ],
            )
            .await;
            core.db
                .insert_host(&Host::new("web-1", HostType::Nixos), "t")
                .await
                .unwrap();
            // One heartbeat a minute for 5 days.
            for m in 0..5 * 1440 {
                core.unsaved
                    .history
                    .record("web-1", T0 + m * 60, &metrics(1.0, None));
            }
            write(&core, T0 + 5 * 86_400, true).await.unwrap();
            let count = |tier: i16| {
                let db = core.db.clone();
                async move {
                    crate::storage::on_pool!(db, pool => sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM metrics_history WHERE tier = $1")
                        .bind(tier)
                        .fetch_one(pool)
                        .await
                        .unwrap())
                }
            };
            assert_eq!(count(0).await, 5 * 1440);
            assert_eq!(count(3).await, 5);
            let now = T0 + 5 * 86_400;
            let deleted = prune_at(&core, now).await.unwrap();
            assert_eq!(count(0).await, 120, "2 hours of minutes");
            assert_eq!(count(1).await, 5 * 144, "7 days of 10-minute buckets");
            assert_eq!(count(2).await, 5 * 24, "90 days of hours");
            assert_eq!(count(3).await, 3, "3 days");
            assert_eq!(deleted as i64, 5 * 1440 - 120 + 2);
            // Nothing left to delete a second time.
            assert_eq!(prune_at(&core, now).await.unwrap(), 0);
        }
    }

    db_test! {
        /// A sparkline is the last hour of CPU, a whole percent per minute with the current
        /// minute last and holes left empty; unknown hosts are left out, repeats answered once,
        /// and too many hosts at once refused.
        #[tokio::test]
        async fn sparklines_are_the_last_hour_per_minute_with_holes(backend) {
            let (_dir, core) = core_with_host(&backend).await;
            let rec = &core.unsaved.history;
            // Minutes 0..90, but none in 70..80; cpu = minute + 0.4 (rounds down).
            for m in (0..90).filter(|m| !(70..80).contains(m)) {
                rec.record("web-1", T0 + m * 60, &metrics(m as f64 + 0.4, None));
                if m % 11 == 0 {
                    write(&core, T0 + m * 60 + 30, false).await.unwrap();
                }
            }
            let now = T0 + 89 * 60 + 10;
            let ids = vec!["web-1".into(), "nohost".into(), "web-1".into()];
            let sparks = cpu_sparklines_at(&core, ids, now).await.unwrap();
            assert_eq!(sparks.len(), 1);
            let cpu = &sparks[0].cpu;
            assert_eq!((sparks[0].host_id.as_str(), cpu.len()), ("web-1", 60));
            // Slot 0 is minute 30, slot 59 the current minute, 89.
            assert_eq!(cpu[0], Some(30));
            assert_eq!(cpu[59], Some(89));
            assert!(cpu[40..50].iter().all(Option::is_none), "{cpu:?}");
            assert_eq!(cpu[39], Some(69));
            assert_eq!(cpu[50], Some(80));

            let many: Vec<String> = (0..=SPARK_HOSTS).map(|i| format!("h{i}")).collect();
            let err = cpu_sparklines_at(&core, many, now).await.unwrap_err();
            assert!(matches!(err, AppError::Invalid(_)), "{err}");
            assert!(cpu_sparklines_at(&core, Vec::new(), now)
                .await
                .unwrap()
                .is_empty());
        }
    }

    db_test! {
        /// An absurd range is refused before anything is read; an unknown host is a 404 (whatever
        /// the range); a removed host's history goes with it, and a late write for it adds
        /// nothing.
        #[tokio::test]
        async fn bad_ranges_unknown_and_removed_hosts(backend) {
            let (_dir, core) = core_with_host(&backend).await;
            let err = read_at(&core, "web-1", Some("5y"), T0).await.unwrap_err();
            assert!(matches!(err, AppError::Invalid(_)));
            for range in [Some("1h"), None] {
                let err = read_at(&core, "nohost", range, T0).await.unwrap_err();
                assert!(matches!(err, AppError::NotFound(_)));
            }

            core.unsaved
                .history
                .record("web-1", T0, &metrics(1.0, None));
            write(&core, T0 + 600, false).await.unwrap();
            assert_eq!(
                rows(&core).await,
                4,
                "the minute, and its window in three tiers"
            );
            assert!(core.db.delete_host("web-1").await.unwrap());
            assert_eq!(rows(&core).await, 0);
            core.unsaved
                .history
                .record("web-1", T0 + 660, &metrics(1.0, None));
            write(&core, T0 + 1200, false).await.unwrap();
            assert_eq!(rows(&core).await, 0);
        }
    }

    db_test! {
        /// With NIXDECK_HISTORY off, heartbeats leave no history.
        #[tokio::test]
        async fn history_off_records_nothing(backend) {
            let dir = tempfile::tempdir().unwrap();
            let core = test_core(&backend, dir.path(), &["web-1"], &["nixdeck", "--history", "false"]).await;
            let reg: protocol::messages::Register = serde_json::from_value(serde_json::json!({
                "hostname": "web-1", "host_type": "nixos", "agent_version": "0.1",
            }))
            .unwrap();
            let link = core.hub.attach_agent("web-1", &reg, None).unwrap();
            let hb = protocol::messages::Heartbeat {
                metrics: Some(metrics(5.0, None)),
                generation: None,
                lock_hash: None,
                lock_updated_at: None,
                pending_command: None,
            };
            crate::service::hosts::heartbeat(&core, "web-1", link.conn_id, &hb);
            // Taken (live), not recorded.
            assert_eq!(core.hub.host("web-1").unwrap().metrics, hb.metrics);
            assert!(core.unsaved.history.take(i64::MAX / 2, true).is_empty());
        }
    }

    /// The figures of docs/BENCHMARKS.md ("Metrics history"): a temp SQLite database with
    /// every tier full at the default retention for `HISTORY_HOSTS` hosts (1 000), its bytes
    /// per host, the 1-year (and 7-day, 30-day) query's latency, and a minute of heartbeats'
    /// write cost with history on and off. Run with
    /// `cargo test -p nixdeck-core --lib history_figures -- --ignored --nocapture`.
    #[tokio::test]
    #[ignore = "a benchmark: prints figures, takes a minute"]
    async fn history_figures() {
        use std::time::Instant;
        let hosts: usize = std::env::var("HISTORY_HOSTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..hosts).map(|i| format!("host-{i:04}")).collect();
        let ids: Vec<&str> = names.iter().map(String::as_str).collect();
        let core = test_core(&TestBackend::Sqlite, dir.path(), &ids, &["nixdeck"]).await;
        let pool = crate::storage::testing::sqlite_pool(&core.db).clone();
        for id in &ids {
            core.db
                .insert_host(&Host::new(id, HostType::Nixos), id)
                .await
                .unwrap();
        }
        let size = || {
            let pool = pool.clone();
            async move {
                sqlx::query("VACUUM").execute(&pool).await.unwrap();
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&pool)
                    .await
                    .unwrap();
                let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                let page: i64 = sqlx::query_scalar("PRAGMA page_size")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                pages * page
            }
        };
        let base = size().await;
        // Steady state at the default retention, a heartbeat every 5 s: 1 440 minutes,
        // 1 008 ten-minute buckets, 2 160 hours and 730 days per host, with varied values.
        let now = T0 + 730 * 86_400;
        let started = Instant::now();
        for (tier, keep) in retention_s(&core.config) {
            let count = keep / tier.step_s;
            let n = tier.step_s / 5;
            let start = (now.div_euclid(tier.step_s) - count + 1) * tier.step_s;
            sqlx::query(
                "WITH RECURSIVE k(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM k WHERE i < $1 - 1)
                 INSERT INTO metrics_history
                    (host_id, tier, bucket_start, n, cpu, ram, swap, load, disk_n, disk)
                 SELECT h.id, $2, $3 + k.i * $4, $5, $5 * (abs(random()) % 10000),
                    $5 * (2000 + abs(random()) % 6000), $5 * (abs(random()) % 1000),
                    $5 * (abs(random()) % 400), $5, $5 * (3000 + abs(random()) % 5000)
                 FROM hosts h CROSS JOIN k",
            )
            .bind(count)
            .bind(tier.id)
            .bind(start)
            .bind(tier.step_s)
            .bind(n)
            .execute(&pool)
            .await
            .unwrap();
        }
        let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM metrics_history")
            .fetch_one(&pool)
            .await
            .unwrap();
        let fill = started.elapsed();
        let full = size().await;
        let per_host = (full - base) / hosts as i64;
        println!(
            "{hosts} hosts, {rows} rows ({} per host), filled in {fill:.1?}",
            rows / hosts as i64
        );
        println!(
            "bytes: {base} without history, {full} with; {per_host} per host ({:.1} per row)",
            per_host as f64 / (rows as f64 / hosts as f64)
        );

        for (range, queries) in [("1y", 2000), ("30d", 500), ("7d", 500)] {
            let mut took = Vec::with_capacity(queries);
            for q in 0..queries {
                let id = ids[q * 7919 % hosts];
                let t = Instant::now();
                let h = read_at(&core, id, Some(range), now).await.unwrap();
                took.push(t.elapsed());
                assert!(!h.points.is_empty());
            }
            took.sort();
            let at = |p: f64| took[((took.len() as f64 * p) as usize).min(took.len() - 1)];
            println!(
                "{range} query ({} points): p50 {:.2?}, p99 {:.2?}, max {:.2?}",
                read_at(&core, ids[0], Some(range), now)
                    .await
                    .unwrap()
                    .points
                    .len(),
                at(0.5),
                at(0.99),
                took[took.len() - 1]
            );
        }

        // A minute of the fleet's heartbeats (every 5 s, a batch every 10 s): the last-seen
        // writes alone (history off), and the history's recording and write on top.
        let minutes = 5;
        let (mut seen_t, mut record_t, mut write_t) = Default::default();
        for minute in 0..minutes {
            let start = now + 60 + minute * 60;
            for batch in 0..6 {
                let at = start + batch * 10;
                let mut seen = Vec::with_capacity(hosts);
                let t = Instant::now();
                for (i, id) in ids.iter().enumerate() {
                    for beat in 0..2 {
                        let m = metrics((i % 100) as f64, Some(50.0));
                        core.unsaved.history.record(id, at + beat * 5, &m);
                    }
                }
                record_t += t.elapsed();
                for id in &ids {
                    seen.push(crate::storage::SeenUpdate {
                        host_id: id.to_string(),
                        last_seen: Timestamp(at + 5),
                        metrics: Some(metrics(1.0, Some(50.0))),
                        generation: None,
                        lock_hash: None,
                    });
                }
                let t = Instant::now();
                core.db.save_seen(&seen).await.unwrap();
                seen_t += t.elapsed();
                let t = Instant::now();
                write(&core, at + 10, false).await.unwrap();
                write_t += t.elapsed();
            }
        }
        let per_min = |d: std::time::Duration| d / minutes as u32;
        println!(
            "a minute of {hosts} hosts' heartbeats: last-seen writes {:.1?}; history on adds \
             {:.1?} recording and {:.1?} writing",
            per_min(seen_t),
            per_min(record_t),
            per_min(write_t)
        );
    }
}

//! `metrics_history`: heartbeat metrics as bucket sums, one row per host, tier and bucket.

use super::{composed, Db, DbResult};
use std::collections::BTreeMap;

/// Buckets per upsert statement: 10 parameters each, so 1 000 parameters, well inside
/// SQLite's and PostgreSQL's limits.
const HISTORY_ROWS: usize = 100;

/// A bucket's heartbeat count and the sums of their values, in hundredths (of a percent;
/// of the load). Sums rather than averages: buckets add up by plain addition, in SQL too.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, sqlx::FromRow)]
pub struct MetricSums {
    pub n: i64,
    pub cpu: i64,
    pub ram: i64,
    pub swap: i64,
    pub load: i64,
    /// Heartbeats that reported the root disk's usage, and its sum.
    pub disk_n: i64,
    pub disk: i64,
}

impl MetricSums {
    pub fn merge(&mut self, other: &MetricSums) {
        self.n += other.n;
        self.cpu += other.cpu;
        self.ram += other.ram;
        self.swap += other.swap;
        self.load += other.load;
        self.disk_n += other.disk_n;
        self.disk += other.disk;
    }
}

/// A stored bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct HistoryRow {
    pub bucket_start: i64,
    #[sqlx(flatten)]
    pub sums: MetricSums,
}

/// A finished (or, at shutdown, partial) minute of one host's heartbeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MinuteSums {
    pub host_id: String,
    /// Unix seconds, a multiple of 60.
    pub minute: i64,
    pub sums: MetricSums,
}

impl Db {
    /// Adds each minute to the bucket holding it in every tier (`tiers`: id and step in
    /// seconds), in one transaction. A minute of a host that no longer exists adds nothing.
    /// The batch is summed per bucket first (so no statement names a bucket twice, which
    /// PostgreSQL's upsert refuses) and written `HISTORY_ROWS` buckets per statement.
    pub async fn add_history(&self, batch: &[MinuteSums], tiers: &[(i16, i64)]) -> DbResult<()> {
        on_pool!(self, pool => {
            let mut buckets: BTreeMap<(&str, i16, i64), MetricSums> = BTreeMap::new();
            for m in batch {
                for &(tier, step) in tiers {
                    let start = m.minute.div_euclid(step) * step;
                    buckets
                        .entry((&m.host_id, tier, start))
                        .or_default()
                        .merge(&m.sums);
                }
            }
            if buckets.is_empty() {
                return Ok(());
            }
            let buckets: Vec<_> = buckets.into_iter().collect();
            let mut tx = pool.begin().await?;
            for chunk in buckets.chunks(HISTORY_ROWS) {
                let values = (0..chunk.len())
                    .map(|i| {
                        let p: Vec<String> = (1..=10).map(|k| format!("${}", i * 10 + k)).collect();
                        format!("({})", p.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!(
                    "INSERT INTO metrics_history
                        (host_id, tier, bucket_start, n, cpu, ram, swap, load, disk_n, disk)
                     SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6,
                        v.column7, v.column8, v.column9, v.column10
                     FROM (VALUES {values}) AS v
                     WHERE EXISTS (SELECT 1 FROM hosts WHERE id = v.column1)
                     ON CONFLICT (host_id, tier, bucket_start) DO UPDATE SET
                        n = metrics_history.n + excluded.n,
                        cpu = metrics_history.cpu + excluded.cpu,
                        ram = metrics_history.ram + excluded.ram,
                        swap = metrics_history.swap + excluded.swap,
                        load = metrics_history.load + excluded.load,
                        disk_n = metrics_history.disk_n + excluded.disk_n,
                        disk = metrics_history.disk + excluded.disk"
                );
                let mut query = sqlx::query(composed(sql));
                for ((host_id, tier, start), s) in chunk {
                    query = query
                        .bind(*host_id)
                        .bind(*tier)
                        .bind(*start)
                        .bind(s.n)
                        .bind(s.cpu)
                        .bind(s.ram)
                        .bind(s.swap)
                        .bind(s.load)
                        .bind(s.disk_n)
                        .bind(s.disk);
                }
                query.execute(&mut *tx).await?;
            }
            tx.commit().await
        })
    }

    /// One host's buckets of `tier` starting at `from` or later, oldest first.
    pub async fn metrics_history(
        &self,
        host_id: &str,
        tier: i16,
        from: i64,
    ) -> DbResult<Vec<HistoryRow>> {
        on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT bucket_start, n, cpu, ram, swap, load, disk_n, disk FROM metrics_history
                 WHERE host_id = $1 AND tier = $2 AND bucket_start >= $3 ORDER BY bucket_start",
            )
            .bind(host_id)
            .bind(tier)
            .bind(from)
            .fetch_all(pool)
            .await
        })
    }

    /// Deletes the buckets that start before each tier's cutoff (`cutoffs`: tier id and
    /// Unix seconds), host by host so that every delete walks the primary key. Returns the
    /// number of rows deleted.
    pub async fn prune_history(
        &self,
        host_ids: &[String],
        cutoffs: &[(i16, i64)],
    ) -> DbResult<u64> {
        on_pool!(self, pool => {
            let mut deleted = 0;
            for chunk in host_ids.chunks(100) {
                let mut tx = pool.begin().await?;
                for id in chunk {
                    for &(tier, cutoff) in cutoffs {
                        deleted += sqlx::query(
                            "DELETE FROM metrics_history
                             WHERE host_id = $1 AND tier = $2 AND bucket_start < $3",
                        )
                        .bind(id)
                        .bind(tier)
                        .bind(cutoff)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                    }
                }
                tx.commit().await?;
            }
            Ok(deleted)
        })
    }
}

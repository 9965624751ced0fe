-- Heartbeat metrics over time, downsampled in tiers (service::history): tier 0 holds
-- 1-minute buckets, 1 10-minute, 2 1-hour and 3 1-day ones, each kept for its own
-- retention. A bucket holds sums and counts rather than averages, so a finished minute is
-- added to every tier by one upsert each (INSERT … ON CONFLICT … DO UPDATE, portable to
-- PostgreSQL) and a partial minute written at shutdown adds up with the rest of it after a
-- restart. Values are integers in hundredths (of a percent; of the load), which keeps a
-- row small: bytes per host per year are measured in docs/BENCHMARKS.md.
-- No foreign key: the rows go with their host in `Db::delete_host`, and a write for a
-- host removed meanwhile inserts nothing (`WHERE EXISTS`) instead of failing the batch.
CREATE TABLE metrics_history (
    host_id      TEXT     NOT NULL,
    tier         SMALLINT NOT NULL,
    bucket_start BIGINT   NOT NULL,
    -- Heartbeats in the bucket, and the sums of their values.
    n            INTEGER  NOT NULL,
    cpu          INTEGER  NOT NULL,
    ram          INTEGER  NOT NULL,
    swap         INTEGER  NOT NULL,
    load         INTEGER  NOT NULL,
    -- Heartbeats that reported the root disk's usage (older agents do not), and its sum.
    disk_n       INTEGER  NOT NULL,
    disk         INTEGER  NOT NULL,
    PRIMARY KEY (host_id, tier, bucket_start)
);

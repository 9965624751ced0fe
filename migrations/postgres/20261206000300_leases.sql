-- Several servers (replicas) on one database.
--
-- `leases`: who holds a named lease and until when (Unix milliseconds on the database's
-- clock). A replica renews `replica:<name>` while it lives and the leader lease
-- `leader` while it runs the once-per-database jobs (service::lease).
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- The replica running a deploy job ('' for jobs from before replicas), and who asked a
-- job running on another replica to stop.
ALTER TABLE deploy_jobs ADD COLUMN replica TEXT NOT NULL DEFAULT '';
ALTER TABLE deploy_jobs ADD COLUMN cancel_by TEXT;

-- One deploy at a time, decided by the database: at most one active job. (Any older
-- active job but the newest is ended first; a server marked them interrupted at start.)
UPDATE deploy_jobs SET active = FALSE, phase = 'failed',
    message = 'Interrupted: the dashboard server running this deploy stopped.'
    WHERE active AND id <> (SELECT id FROM deploy_jobs WHERE active ORDER BY created_at DESC, id LIMIT 1);
CREATE UNIQUE INDEX deploy_jobs_one_active ON deploy_jobs (active) WHERE active;

-- Failed logins per (account, source), shared by every replica on PostgreSQL
-- (service::limits::SharedLoginLimiter): attempts counted as they start, and until when
-- the pair waits (Unix milliseconds).
CREATE TABLE login_failures (
    account     TEXT NOT NULL,
    source      TEXT NOT NULL,
    failures    BIGINT NOT NULL,
    wait_until  BIGINT NOT NULL,
    last_at     BIGINT NOT NULL,
    PRIMARY KEY (account, source)
);

-- Merge & Deploy jobs. Progress is stored as it happens, so a restart finds every job
-- that was running and marks it interrupted instead of leaving it hanging.
CREATE TABLE deploy_jobs (
    id          TEXT PRIMARY KEY,
    pr_number   BIGINT NOT NULL,
    started_by  TEXT NOT NULL,
    -- The request as JSON (targets and staged-rollout options).
    request     TEXT NOT NULL,
    phase       TEXT NOT NULL,
    -- {host_id: pending|running|ok|error|skipped} as JSON.
    hosts       TEXT NOT NULL,
    message     TEXT NOT NULL,
    active      BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX deploy_jobs_active ON deploy_jobs (active);

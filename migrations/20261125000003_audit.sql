-- The audit log: who did what, when, from where, and how it ended.
CREATE TABLE audit (
    id       INTEGER PRIMARY KEY,
    at       BIGINT NOT NULL,
    actor    TEXT NOT NULL,
    ip       TEXT,
    action   TEXT NOT NULL,
    target   TEXT,
    result   TEXT NOT NULL,
    detail   TEXT
);
CREATE INDEX audit_at ON audit(at);
CREATE INDEX audit_actor ON audit(actor, at);

-- Small server facts that must survive restarts (e.g. when the enrollment token was first
-- seen, so that its expiry does not move with every restart).
CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

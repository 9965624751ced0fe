-- nixdeck schema. Portable SQL on purpose (SQLite now, PostgreSQL later): TEXT ids,
-- BIGINT Unix seconds for times, BOOLEAN flags, no SQLite-only types or functions.

CREATE TABLE users (
    username       TEXT PRIMARY KEY,
    password_hash  TEXT NOT NULL,
    role           TEXT NOT NULL,
    disabled       BOOLEAN NOT NULL DEFAULT FALSE,
    created_at     BIGINT NOT NULL
);

-- Server-side sessions. Only a SHA-256 of the cookie value is stored, so a leaked
-- database does not hand out live sessions.
CREATE TABLE sessions (
    id_hash        TEXT PRIMARY KEY,
    username       TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    csrf_token     TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    last_seen_at   BIGINT NOT NULL,
    ip             TEXT
);
CREATE INDEX sessions_username ON sessions(username);

CREATE TABLE hosts (
    id                    TEXT PRIMARY KEY,
    hostname              TEXT NOT NULL,
    host_type             TEXT NOT NULL,
    theme_color           TEXT NOT NULL,
    location              TEXT,
    device_type           TEXT,
    -- SHA-256 of the host token; the token itself is shown once and never stored.
    token_hash            TEXT UNIQUE,
    agent_version         TEXT,
    os_version            TEXT,
    nixpkgs_version       TEXT,
    generation            TEXT,
    lock_hash             TEXT,
    repo_url              TEXT,
    repo_dir              TEXT,
    branch                TEXT,
    heartbeat_interval_s  INTEGER,
    last_seen             BIGINT,
    metrics               TEXT,
    created_at            BIGINT NOT NULL
);

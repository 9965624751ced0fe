-- Personal API tokens (`service::tokens`): a script acts as its owner, with a role no higher
-- than the owner's. Only a SHA-256 of the token is stored (the token is 256 random bits,
-- shown once), like session ids. Portable SQL: TEXT ids, BIGINT Unix seconds (INTEGER is
-- 32 bits in PostgreSQL), no SQLite-only syntax.
CREATE TABLE api_tokens (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    role          TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    BIGINT NOT NULL,
    -- NULL: never expires.
    expires_at    BIGINT,
    -- Written at most once a minute per token.
    last_used_at  BIGINT,
    UNIQUE (username, name)
);

-- The token an audited action came through (its name); NULL for a browser session or the
-- CLI. The actor stays the owner, so filtering the log by user finds their scripts too.
ALTER TABLE audit ADD COLUMN token TEXT;

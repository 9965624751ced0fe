-- Optional TOTP per user: the confirmed secret, a secret awaiting its first code, and the
-- last accepted time step (each code is accepted once). Recovery codes are stored hashed.
ALTER TABLE users ADD COLUMN totp_secret TEXT;
ALTER TABLE users ADD COLUMN totp_pending TEXT;
ALTER TABLE users ADD COLUMN totp_last_step BIGINT;

CREATE TABLE recovery_codes (
    username   TEXT NOT NULL REFERENCES users(username) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,
    used       BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (username, code_hash)
);

-- Notifications (`service::notify`): targets, rules, the outbox and the delivery log.
-- Portable SQL: TEXT ids and JSON, BIGINT times (Unix seconds; `_ms` columns milliseconds),
-- no SQLite-only syntax.

-- Where messages go. `url_sealed` and `secret_sealed` (a token or an SMTP password) are
-- sealed with the server's secret key (`crate::secret`), the target's id as associated
-- data; `settings` is JSON without secrets.
CREATE TABLE notify_targets (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    kind           TEXT NOT NULL,
    url_sealed     TEXT,
    url_shown      TEXT,
    settings       TEXT NOT NULL,
    secret_sealed  TEXT,
    created_at     BIGINT NOT NULL
);

-- What to notify of. `scope` is JSON `{tags, host_ids}`; `quiet_from`/`quiet_to` HH:MM UTC.
CREATE TABLE notify_rules (
    id          TEXT PRIMARY KEY,
    event       TEXT NOT NULL,
    after_s     BIGINT NOT NULL,
    scope       TEXT NOT NULL,
    cooldown_s  BIGINT NOT NULL,
    quiet_from  TEXT,
    quiet_to    TEXT,
    created_at  BIGINT NOT NULL
);

CREATE TABLE notify_rule_targets (
    rule_id    TEXT NOT NULL REFERENCES notify_rules(id) ON DELETE CASCADE,
    target_id  TEXT NOT NULL REFERENCES notify_targets(id) ON DELETE CASCADE,
    PRIMARY KEY (rule_id, target_id)
);

-- Messages not yet delivered, one row per target; a row goes when it is delivered or
-- given up. `message_id` is the idempotency key. A target's rows go out in `seq` order,
-- one at a time.
CREATE TABLE notify_outbox (
    message_id       TEXT NOT NULL,
    target_id        TEXT NOT NULL REFERENCES notify_targets(id) ON DELETE CASCADE,
    seq              BIGINT NOT NULL,
    body             TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    next_attempt_ms  BIGINT NOT NULL,
    PRIMARY KEY (message_id, target_id)
);
CREATE INDEX notify_outbox_due ON notify_outbox (target_id, seq);

-- Every attempt, the last 100 per target kept.
CREATE TABLE notify_deliveries (
    id          TEXT PRIMARY KEY,
    target_id   TEXT NOT NULL REFERENCES notify_targets(id) ON DELETE CASCADE,
    message_id  TEXT NOT NULL,
    event       TEXT NOT NULL,
    attempt     BIGINT NOT NULL,
    status      TEXT NOT NULL,
    error       TEXT,
    at_ms       BIGINT NOT NULL
);
CREATE INDEX notify_deliveries_target ON notify_deliveries (target_id, at_ms);

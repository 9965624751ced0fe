-- Commands and their output. Every output line is stored once per (command_id, seq).
-- No foreign key to hosts: a command's history outlives the removal of its host.

CREATE TABLE commands (
    id            TEXT PRIMARY KEY,
    host_id       TEXT NOT NULL,
    command       TEXT NOT NULL,
    status        TEXT NOT NULL,
    exit_code     INTEGER,
    queued_at     BIGINT NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT,
    duration_ms   BIGINT,
    -- Highest seq stored with every lower one present: what the agent is acked up to.
    last_seq      BIGINT NOT NULL DEFAULT 0,
    -- The agent's completion was stored (the final status may be the server's own).
    completed     BOOLEAN NOT NULL DEFAULT FALSE,
    requested_by  TEXT
);
CREATE INDEX commands_host ON commands(host_id, queued_at);
CREATE INDEX commands_status ON commands(status);

CREATE TABLE command_output (
    command_id  TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    stream      TEXT NOT NULL,
    line        TEXT NOT NULL,
    at          BIGINT NOT NULL,
    PRIMARY KEY (command_id, seq)
);

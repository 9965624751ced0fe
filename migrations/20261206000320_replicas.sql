-- Several servers on one database (docs/SCALING.md). Used on PostgreSQL only: a SQLite
-- database has one server, and these tables stay empty there; they exist on both so that
-- the two schemas stay equal.
--
-- Each running server's lease: refreshed every 2 s; a server whose seen_at is 10 s old is
-- dead to the others, which then mark the hosts it held offline.
CREATE TABLE replicas (
    name       TEXT PRIMARY KEY,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL
);

-- Events between servers too large for one NOTIFY payload (8000 bytes): the notification
-- carries the row's id. Deleted a minute after they were written.
CREATE TABLE bus_events (
    id         INTEGER PRIMARY KEY,
    sender     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    payload    TEXT NOT NULL
);

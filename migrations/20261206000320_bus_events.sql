-- Several servers on one database (docs/SCALING.md): the event bus between them (which
-- servers are alive is in `leases`, 20261206000300). Used on PostgreSQL only: a SQLite
-- database has one server, and this table stays empty there; it exists on both so that
-- the two schemas stay equal.

-- Events between servers too large for one NOTIFY payload (8000 bytes): the notification
-- carries the row's id. Deleted a minute after they were written.
CREATE TABLE bus_events (
    id         INTEGER PRIMARY KEY,
    sender     TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    payload    TEXT NOT NULL
);

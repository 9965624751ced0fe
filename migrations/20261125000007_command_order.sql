-- Times are whole seconds; commands queued in the same second still need an order
-- (history is newest first). A per-insert counter, portable to PostgreSQL.
ALTER TABLE commands ADD COLUMN queued_order BIGINT NOT NULL DEFAULT 0;
CREATE INDEX commands_queued_order ON commands (queued_order);

-- The stored output of one command is bounded (NIXDECK_MAX_OUTPUT_MB). Bytes stored so
-- far, lines dropped past the bound, and the seq of the one marker line that says how
-- many were dropped (NULL while nothing was dropped).
ALTER TABLE commands ADD COLUMN output_bytes BIGINT NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN dropped_lines BIGINT NOT NULL DEFAULT 0;
ALTER TABLE commands ADD COLUMN drop_marker_seq BIGINT;

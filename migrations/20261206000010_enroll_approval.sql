-- Hosts that enrolled themselves with the enrollment token wait for an admin's approval
-- and get no commands until then. Hosts an admin added are approved from the start.
ALTER TABLE hosts ADD COLUMN pending_approval BOOLEAN NOT NULL DEFAULT FALSE;

-- Hosts carry tags: the ones set in the dashboard (an operator's edit) and the ones the
-- agent reports from its configuration, kept apart so that an agent's report never wipes
-- an operator's edit and the reverse. Each is a JSON array of strings, read whole (the hub
-- holds every host in memory and filters there), never queried by part.
ALTER TABLE hosts ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';
ALTER TABLE hosts ADD COLUMN agent_tags TEXT NOT NULL DEFAULT '[]';

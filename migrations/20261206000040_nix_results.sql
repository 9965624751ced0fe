-- Nix-native commands report a structured result (a preview's closure diff, the generation a
-- switch, boot or rollback left the profile at, the store path built), and agents report the
-- system profile's generations and whether a reboot is needed. Results and generations are
-- stored as JSON text: they are read whole, never queried by part.
ALTER TABLE commands ADD COLUMN result TEXT;
ALTER TABLE hosts ADD COLUMN generations TEXT;
ALTER TABLE hosts ADD COLUMN reboot_needed BOOLEAN NOT NULL DEFAULT FALSE;

-- Each user's colour theme for the pages: 'system' (follow the browser's
-- prefers-color-scheme), 'light' or 'dark'. Read when a page is rendered, so the first
-- paint already has the user's colours.
ALTER TABLE users ADD COLUMN theme TEXT NOT NULL DEFAULT 'system';

-- When the session's user last proved who they are (the login, or a re-authentication):
-- token rotation, user management and deploys need it to be recent.
ALTER TABLE sessions ADD COLUMN authenticated_at BIGINT NOT NULL DEFAULT 0;

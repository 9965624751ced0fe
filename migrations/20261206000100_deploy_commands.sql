-- Which commands each Merge & Deploy job started (pull, switch, preview, rollback), so the
-- Deploys page can show every host's steps with their outcome, duration and log. Written
-- when the job starts the command; the command's own row keeps host, status and times.
CREATE TABLE deploy_commands (
    deploy_id   TEXT NOT NULL REFERENCES deploy_jobs(id) ON DELETE CASCADE,
    command_id  TEXT NOT NULL,
    PRIMARY KEY (deploy_id, command_id)
);

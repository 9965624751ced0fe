-- A deploy may preview the PR's head on its targets before merging, then wait for an
-- operator's confirmation. A restart resumes such a job, so what it needs is stored: each
-- target's preview command id ({host_id: command_id} as JSON) and when an unconfirmed job
-- expires (unix seconds; NULL until the job waits for confirmation). The head that was
-- vetted, and so is the one to merge, is the `head_sha` of the stored request.
ALTER TABLE deploy_jobs ADD COLUMN previews TEXT NOT NULL DEFAULT '{}';
ALTER TABLE deploy_jobs ADD COLUMN confirm_by BIGINT;

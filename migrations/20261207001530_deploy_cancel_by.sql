-- A cancel of a deploy job asked on another replica than the one running it is sent there
-- over the bus (replica::route_deploy), like its confirmation; it is no longer stored with
-- the job for that replica to read (20261206000300 added the column for that).
ALTER TABLE deploy_jobs DROP COLUMN cancel_by;

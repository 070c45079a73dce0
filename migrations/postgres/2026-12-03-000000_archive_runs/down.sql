ALTER TABLE retention_runs DROP COLUMN archive;

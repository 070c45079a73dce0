ALTER TABLE executions DROP COLUMN tags;

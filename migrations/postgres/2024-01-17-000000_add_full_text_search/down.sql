DROP INDEX idx_patterns_search;
ALTER TABLE patterns DROP COLUMN search_vector;
DROP INDEX idx_executions_search;
ALTER TABLE executions DROP COLUMN search_vector;

-- Full-text search: generated tsvector columns with GIN indexes. to_tsvector(regconfig, jsonb) indexes only
-- the *string values* of a document (not its keys), so the SQLite (FTS5) backend matches the same words. The
-- 'simple' configuration lower-cases without stemming, as the SQLite tokenizer does.
ALTER TABLE executions ADD COLUMN search_vector TSVECTOR GENERATED ALWAYS AS (
    to_tsvector('simple'::regconfig, coalesce(input, '{}'::jsonb))
    || to_tsvector('simple'::regconfig, coalesce(output, '{}'::jsonb))
    || to_tsvector('simple'::regconfig, coalesce(error, '{}'::jsonb))
) STORED;
CREATE INDEX idx_executions_search ON executions USING GIN (search_vector);

ALTER TABLE patterns ADD COLUMN search_vector TSVECTOR GENERATED ALWAYS AS (
    to_tsvector('simple'::regconfig, name)
    || to_tsvector('simple'::regconfig, coalesce(description, ''))
    || to_tsvector('simple'::regconfig, definition)
) STORED;
CREATE INDEX idx_patterns_search ON patterns USING GIN (search_vector);

-- The seed's "add execution tags" migration. Tags are a JSON array of strings (never NULL, so containment
-- filters need no NULL handling).
ALTER TABLE executions ADD COLUMN tags JSONB NOT NULL DEFAULT '[]'::jsonb CHECK (jsonb_typeof(tags) = 'array');
CREATE INDEX idx_executions_tags ON executions USING GIN (tags);

CREATE OR REPLACE FUNCTION parallax_move_strays() RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO executions (id, pattern_name, pattern_version, status, input, output, error, started_at,
                            completed_at, duration_ms, metadata, tags)
    SELECT id, pattern_name, pattern_version, status, input, output, error, started_at, completed_at,
           duration_ms, metadata, tags
    FROM parallax_strays;
END
$$;

CREATE OR REPLACE FUNCTION parallax_move_strays() RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO executions (id, pattern_name, pattern_version, status, input, output, error, started_at,
                            completed_at, duration_ms, metadata)
    SELECT id, pattern_name, pattern_version, status, input, output, error, started_at, completed_at,
           duration_ms, metadata
    FROM parallax_strays;
END
$$;
DROP INDEX idx_executions_tags;
ALTER TABLE executions DROP COLUMN tags;

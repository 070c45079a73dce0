-- Execution records, range-partitioned by month on started_at (the seed's "Partitioning" section). The primary
-- key must include the partition key, so it is (id, started_at). Monthly partitions are created ahead of time
-- by the plugin (parallax_ensure_execution_partitions); the default partition catches anything outside them.
--
-- duration_ms is BIGINT rather than the seed's INTEGER: INTEGER milliseconds overflow after 24.8 days.
CREATE TABLE executions (
    id UUID NOT NULL,
    pattern_name VARCHAR(255) NOT NULL,
    pattern_version VARCHAR(50) NOT NULL,
    status VARCHAR(50) NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    input JSONB,
    output JSONB,
    error JSONB,
    started_at TIMESTAMP WITH TIME ZONE NOT NULL,
    completed_at TIMESTAMP WITH TIME ZONE,
    duration_ms BIGINT,
    metadata JSONB,
    PRIMARY KEY (id, started_at)
) PARTITION BY RANGE (started_at);

CREATE TABLE executions_default PARTITION OF executions DEFAULT;

CREATE INDEX idx_executions_pattern ON executions(pattern_name);
CREATE INDEX idx_executions_status ON executions(status);
CREATE INDEX idx_executions_started_at ON executions(started_at);
CREATE INDEX idx_executions_pattern_status ON executions(pattern_name, status);
CREATE INDEX idx_executions_created_at_desc ON executions(started_at DESC);
-- Serves "pattern + status, newest first" pages without a sort.
CREATE INDEX idx_executions_pattern_status_started ON executions(pattern_name, status, started_at DESC, id DESC);

-- Creates the monthly partition holding `month` (any timestamp in it) unless it exists. Rows of that month
-- already sitting in the default partition are moved into the new partition first, so creating a partition
-- late never fails. Callers serialise with an advisory lock.
CREATE FUNCTION parallax_create_execution_partition(month TIMESTAMP WITH TIME ZONE) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    lo TIMESTAMP WITH TIME ZONE := date_trunc('month', month AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi TIMESTAMP WITH TIME ZONE := (date_trunc('month', month AT TIME ZONE 'UTC') + INTERVAL '1 month') AT TIME ZONE 'UTC';
    part TEXT := 'executions_' || to_char(month AT TIME ZONE 'UTC', 'YYYY_MM');
    strays BIGINT;
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN FALSE;
    END IF;
    SELECT count(*) INTO strays FROM executions_default WHERE started_at >= lo AND started_at < hi;
    IF strays = 0 THEN
        EXECUTE format('CREATE TABLE %I PARTITION OF executions FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
    ELSE
        EXECUTE format('CREATE TEMP TABLE parallax_strays ON COMMIT DROP AS
            SELECT * FROM executions_default WHERE started_at >= %L AND started_at < %L', lo, hi);
        EXECUTE format('DELETE FROM executions_default WHERE started_at >= %L AND started_at < %L', lo, hi);
        EXECUTE format('CREATE TABLE %I PARTITION OF executions FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        PERFORM parallax_move_strays();
    END IF;
    RETURN TRUE;
END
$$;

-- Re-inserts rows kept aside by parallax_create_execution_partition (a separate function so that later
-- migrations that add columns only need to redefine this one).
CREATE FUNCTION parallax_move_strays() RETURNS VOID LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO executions (id, pattern_name, pattern_version, status, input, output, error, started_at,
                            completed_at, duration_ms, metadata)
    SELECT id, pattern_name, pattern_version, status, input, output, error, started_at, completed_at,
           duration_ms, metadata
    FROM parallax_strays;
END
$$;

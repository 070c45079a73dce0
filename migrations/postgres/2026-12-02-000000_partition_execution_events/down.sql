-- Restores the unpartitioned execution_events (its rows without execution_started_at) and the previous
-- parallax_create_execution_partition.
CREATE OR REPLACE FUNCTION parallax_create_execution_partition(month TIMESTAMP WITH TIME ZONE) RETURNS BOOLEAN
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

ALTER TABLE execution_events RENAME TO execution_events_partitioned;
ALTER TABLE execution_events_partitioned RENAME CONSTRAINT execution_events_pkey TO execution_events_partitioned_pkey;
ALTER TABLE execution_events_partitioned
    RENAME CONSTRAINT execution_events_execution_id_seq_key TO execution_events_partitioned_execution_id_seq_key;

CREATE TABLE execution_events (
    id UUID PRIMARY KEY,
    execution_id UUID NOT NULL,
    seq BIGINT NOT NULL,
    kind VARCHAR(50) NOT NULL CHECK (kind IN ('agent_assignment', 'step_result')),
    payload JSONB NOT NULL,
    recorded_at TIMESTAMP WITH TIME ZONE NOT NULL,
    UNIQUE (execution_id, seq)
);

INSERT INTO execution_events (id, execution_id, seq, kind, payload, recorded_at)
SELECT id, execution_id, seq, kind, payload, recorded_at FROM execution_events_partitioned;

DROP TABLE execution_events_partitioned;

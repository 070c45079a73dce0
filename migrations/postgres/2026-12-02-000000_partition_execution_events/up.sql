-- execution_events partitioned by month like executions, on its execution's started_at (a new column,
-- execution_started_at), so that a cleanup drops an expired month's events with the month's executions (DETACH +
-- DROP of both partitions) instead of deleting them row by row. The primary and unique keys include the
-- partition key, as PostgreSQL requires. Monthly partitions of both tables are created together by
-- parallax_create_execution_partition; events of executions outside them land in execution_events_default.
ALTER TABLE execution_events RENAME TO execution_events_unpartitioned;
ALTER TABLE execution_events_unpartitioned RENAME CONSTRAINT execution_events_pkey TO execution_events_unpartitioned_pkey;
ALTER TABLE execution_events_unpartitioned
    RENAME CONSTRAINT execution_events_execution_id_seq_key TO execution_events_unpartitioned_execution_id_seq_key;

CREATE TABLE execution_events (
    id UUID NOT NULL,
    execution_id UUID NOT NULL,
    seq BIGINT NOT NULL,
    kind VARCHAR(50) NOT NULL CHECK (kind IN ('agent_assignment', 'step_result')),
    payload JSONB NOT NULL,
    recorded_at TIMESTAMP WITH TIME ZONE NOT NULL,
    execution_started_at TIMESTAMP WITH TIME ZONE NOT NULL,
    CONSTRAINT execution_events_pkey PRIMARY KEY (id, execution_started_at),
    CONSTRAINT execution_events_execution_id_seq_key UNIQUE (execution_id, seq, execution_started_at)
) PARTITION BY RANGE (execution_started_at);

CREATE TABLE execution_events_default PARTITION OF execution_events DEFAULT;

-- One events partition per existing monthly executions partition, with the same bounds.
DO $$
DECLARE
    r RECORD;
BEGIN
    FOR r IN SELECT c.relname::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'executions'::regclass AND c.relname ~ '^executions_[0-9]{4}_[0-9]{2}$'
    LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF execution_events %s', 'execution_events_' || substr(r.name, 12),
                       r.bound);
    END LOOP;
END
$$;

-- Existing events move with their execution's started_at (events without an execution, which no call can
-- read, are left behind).
INSERT INTO execution_events (id, execution_id, seq, kind, payload, recorded_at, execution_started_at)
SELECT e.id, e.execution_id, e.seq, e.kind, e.payload, e.recorded_at, x.started_at
FROM execution_events_unpartitioned e JOIN executions x ON x.id = e.execution_id;

DROP TABLE execution_events_unpartitioned;

-- Creates the monthly partitions of executions and execution_events holding `month` (any timestamp in it),
-- each unless it exists; TRUE when it created either. Rows of that month already sitting in a default partition
-- are moved into the new partition first, so creating a partition late never fails. Callers serialise with an
-- advisory lock.
CREATE OR REPLACE FUNCTION parallax_create_execution_partition(month TIMESTAMP WITH TIME ZONE) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
DECLARE
    lo TIMESTAMP WITH TIME ZONE := date_trunc('month', month AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
    hi TIMESTAMP WITH TIME ZONE := (date_trunc('month', month AT TIME ZONE 'UTC') + INTERVAL '1 month') AT TIME ZONE 'UTC';
    part TEXT := 'executions_' || to_char(month AT TIME ZONE 'UTC', 'YYYY_MM');
    events_part TEXT := 'execution_events_' || to_char(month AT TIME ZONE 'UTC', 'YYYY_MM');
    strays BIGINT;
    made BOOLEAN := FALSE;
BEGIN
    IF to_regclass(part) IS NULL THEN
        SELECT count(*) INTO strays FROM executions_default WHERE started_at >= lo AND started_at < hi;
        IF strays = 0 THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF executions FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
        ELSE
            EXECUTE format('CREATE TEMP TABLE parallax_strays ON COMMIT DROP AS
                SELECT * FROM executions_default WHERE started_at >= %L AND started_at < %L', lo, hi);
            EXECUTE format('DELETE FROM executions_default WHERE started_at >= %L AND started_at < %L', lo, hi);
            EXECUTE format('CREATE TABLE %I PARTITION OF executions FOR VALUES FROM (%L) TO (%L)', part, lo, hi);
            PERFORM parallax_move_strays();
            DROP TABLE parallax_strays;
        END IF;
        made := TRUE;
    END IF;
    IF to_regclass(events_part) IS NULL THEN
        SELECT count(*) INTO strays FROM execution_events_default
        WHERE execution_started_at >= lo AND execution_started_at < hi;
        IF strays = 0 THEN
            EXECUTE format('CREATE TABLE %I PARTITION OF execution_events FOR VALUES FROM (%L) TO (%L)',
                           events_part, lo, hi);
        ELSE
            EXECUTE format('CREATE TEMP TABLE parallax_event_strays ON COMMIT DROP AS
                SELECT * FROM execution_events_default WHERE execution_started_at >= %L AND execution_started_at < %L',
                lo, hi);
            EXECUTE format('DELETE FROM execution_events_default
                WHERE execution_started_at >= %L AND execution_started_at < %L', lo, hi);
            EXECUTE format('CREATE TABLE %I PARTITION OF execution_events FOR VALUES FROM (%L) TO (%L)',
                           events_part, lo, hi);
            INSERT INTO execution_events (id, execution_id, seq, kind, payload, recorded_at, execution_started_at)
            SELECT id, execution_id, seq, kind, payload, recorded_at, execution_started_at FROM parallax_event_strays;
            DROP TABLE parallax_event_strays;
        END IF;
        made := TRUE;
    END IF;
    RETURN made;
END
$$;

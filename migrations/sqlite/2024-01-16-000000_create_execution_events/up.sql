-- Agent assignments and step results recorded while an execution runs; appended without rewriting the
-- execution row.
CREATE TABLE execution_events (
    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    execution_id TEXT NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('agent_assignment', 'step_result')),
    payload TEXT NOT NULL CHECK (json_valid(payload)),
    recorded_at BIGINT NOT NULL,
    UNIQUE (execution_id, seq)
);

-- Agent assignments and step results recorded while an execution runs; appended without rewriting the
-- execution row. No foreign key: executions' primary key is (id, started_at) because of partitioning, so the
-- plugin checks the execution exists and deletes its events with it.
CREATE TABLE execution_events (
    id UUID PRIMARY KEY,
    execution_id UUID NOT NULL,
    seq BIGINT NOT NULL,
    kind VARCHAR(50) NOT NULL CHECK (kind IN ('agent_assignment', 'step_result')),
    payload JSONB NOT NULL,
    recorded_at TIMESTAMP WITH TIME ZONE NOT NULL,
    UNIQUE (execution_id, seq)
);

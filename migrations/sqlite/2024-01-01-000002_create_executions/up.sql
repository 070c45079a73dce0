-- One row per run of a pattern. JSON documents are TEXT holding valid JSON.
CREATE TABLE executions (
    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    pattern_name TEXT NOT NULL CHECK (length(pattern_name) BETWEEN 1 AND 255),
    pattern_version TEXT NOT NULL CHECK (length(pattern_version) BETWEEN 1 AND 50),
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled')),
    input TEXT CHECK (input IS NULL OR json_valid(input)),
    output TEXT CHECK (output IS NULL OR json_valid(output)),
    error TEXT CHECK (error IS NULL OR json_valid(error)),
    started_at BIGINT NOT NULL,
    completed_at BIGINT,
    duration_ms BIGINT,
    metadata TEXT CHECK (metadata IS NULL OR json_valid(metadata))
);
CREATE INDEX idx_executions_pattern ON executions(pattern_name);
CREATE INDEX idx_executions_status ON executions(status);
CREATE INDEX idx_executions_started_at ON executions(started_at);
CREATE INDEX idx_executions_pattern_status ON executions(pattern_name, status);
CREATE INDEX idx_executions_created_at_desc ON executions(started_at DESC);
-- Serves "pattern + status, newest first" pages without a sort.
CREATE INDEX idx_executions_pattern_status_started ON executions(pattern_name, status, started_at DESC, id DESC);

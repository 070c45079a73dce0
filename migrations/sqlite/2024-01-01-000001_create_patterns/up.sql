-- Pattern definitions, one row per name+version. Timestamps are BIGINT microseconds since the Unix epoch (UTC).
CREATE TABLE patterns (
    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    name TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    version TEXT NOT NULL CHECK (length(version) BETWEEN 1 AND 50),
    description TEXT,
    definition TEXT NOT NULL CHECK (json_valid(definition)),
    created_at BIGINT NOT NULL,
    created_by TEXT CHECK (created_by IS NULL OR length(created_by) <= 255),
    UNIQUE (name, version)
);
CREATE INDEX idx_patterns_name ON patterns(name);
CREATE INDEX idx_patterns_created_at ON patterns(created_at);
CREATE INDEX idx_patterns_name_version ON patterns(name, version);

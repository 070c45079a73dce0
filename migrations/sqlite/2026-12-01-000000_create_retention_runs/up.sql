-- One row per cleanup or retention run (manual, scheduled, catch-up): what ran, when, what it removed, and
-- why it failed. Times are BIGINT microseconds since the Unix epoch (UTC); `rows` is a JSON object of rows
-- removed per table. One run per schedule tick: `tick` is unique (NULL for manual runs).
CREATE TABLE retention_runs (
    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    trigger TEXT NOT NULL CHECK (trigger IN ('manual', 'scheduled', 'catch-up')),
    tick BIGINT UNIQUE,
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    rows TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(rows)),
    error TEXT
);
CREATE INDEX idx_retention_runs_started_at ON retention_runs(started_at);

-- One row per cleanup or retention run (manual, scheduled or catch-up), written where the data lives so every
-- instance sees it: `parallax storage retention status` and `storage info` read it. A schedule tick has at most
-- one run (the UNIQUE key on `tick` refuses a second instance's run of the same tick). `rows` is the number of
-- rows removed per table, as a JSON object.
CREATE TABLE retention_runs (
    id UUID PRIMARY KEY,
    trigger TEXT NOT NULL CHECK (trigger IN ('manual', 'scheduled', 'catch-up')),
    tick TIMESTAMP WITH TIME ZONE UNIQUE,
    started_at TIMESTAMP WITH TIME ZONE NOT NULL,
    finished_at TIMESTAMP WITH TIME ZONE,
    status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'interrupted')),
    rows JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(rows) = 'object'),
    error TEXT
);
CREATE INDEX idx_retention_runs_started_at ON retention_runs(started_at DESC);

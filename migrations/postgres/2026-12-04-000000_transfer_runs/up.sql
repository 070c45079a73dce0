-- A transfer (`parallax storage copy`, `parallax storage import`) keeps how far it got in the database it writes
-- to: one row per run, `source` naming where its rows come from (never a secret), `state` the JSON object of its
-- state (snapshot, phase, cursors, running checksums), saved after every committed page, so that a run killed
-- half-way resumes, and a later run of the same source catches up.
CREATE TABLE transfer_runs (
    id UUID PRIMARY KEY,
    source TEXT NOT NULL,
    started_at TIMESTAMP WITH TIME ZONE NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL,
    state JSONB NOT NULL CHECK (jsonb_typeof(state) = 'object')
);

-- A copy or an import (`parallax storage copy …` / `import …`) keeps its state in the store it writes to: where
-- its rows come from (`source`, never a secret), when it started and was last saved (µs since the epoch), and
-- the JSON of its transfer state (snapshot cut, phase, cursors, per-table tallies, unfinished ids, conflicts),
-- so that the next run into this store can resume it, or catch up after it, without duplicates.
CREATE TABLE transfer_runs (
    id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 36),
    source TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (json_valid(state) AND json_type(state) = 'object')
);

-- Full-text indexing of executions once per transaction instead of once per row.
--
-- FTS5 flushes its pending terms into a new index segment at every savepoint, and SQLite opens one for every
-- statement that fires a trigger: indexing each row from its own trigger wrote one segment per row (plus the
-- merges that follow). Now the triggers only note which executions changed; the writer indexes all of them
-- with one statement at the end of each transaction, before COMMIT (the flush below, also in
-- src/sqlite/search.rs), so the index is still committed atomically with the rows. Search indexes whatever
-- another program left queued before it reads.

CREATE TABLE execution_search_queue (
    execution_id TEXT PRIMARY KEY NOT NULL
) WITHOUT ROWID;

DROP TRIGGER executions_search_insert;
DROP TRIGGER executions_search_update;
DROP TRIGGER executions_search_delete;

CREATE TRIGGER executions_search_insert AFTER INSERT ON executions BEGIN
    INSERT OR IGNORE INTO execution_search_queue (execution_id) VALUES (new.id);
END;

CREATE TRIGGER executions_search_update AFTER UPDATE OF input, output, error ON executions BEGIN
    INSERT OR IGNORE INTO execution_search_queue (execution_id) VALUES (new.id);
END;

CREATE TRIGGER executions_search_delete AFTER DELETE ON executions BEGIN
    DELETE FROM executions_fts WHERE rowid = (SELECT doc_id FROM execution_search WHERE execution_id = old.id);
    DELETE FROM execution_search WHERE execution_id = old.id;
    DELETE FROM execution_search_queue WHERE execution_id = old.id;
END;

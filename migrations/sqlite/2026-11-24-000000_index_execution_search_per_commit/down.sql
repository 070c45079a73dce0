-- Index what is still queued, then go back to indexing each row from its trigger.
INSERT OR IGNORE INTO execution_search (execution_id) SELECT execution_id FROM execution_search_queue;
DELETE FROM executions_fts WHERE rowid IN (
    SELECT s.doc_id FROM execution_search_queue q JOIN execution_search s ON s.execution_id = q.execution_id);
INSERT INTO executions_fts (rowid, body)
SELECT s.doc_id,
    coalesce((SELECT group_concat(value, ' ') FROM json_tree(e.input) WHERE type = 'text'), '') || ' ' ||
    coalesce((SELECT group_concat(value, ' ') FROM json_tree(e.output) WHERE type = 'text'), '') || ' ' ||
    coalesce((SELECT group_concat(value, ' ') FROM json_tree(e.error) WHERE type = 'text'), '')
FROM execution_search_queue q
JOIN execution_search s ON s.execution_id = q.execution_id
JOIN executions e ON e.id = q.execution_id;

DROP TRIGGER executions_search_insert;
DROP TRIGGER executions_search_update;
DROP TRIGGER executions_search_delete;
DROP TABLE execution_search_queue;

CREATE TRIGGER executions_search_insert AFTER INSERT ON executions BEGIN
    INSERT INTO execution_search (execution_id) VALUES (new.id);
    INSERT INTO executions_fts (rowid, body) VALUES (
        (SELECT doc_id FROM execution_search WHERE execution_id = new.id),
        coalesce((SELECT group_concat(value, ' ') FROM json_tree(new.input) WHERE type = 'text'), '') || ' ' ||
        coalesce((SELECT group_concat(value, ' ') FROM json_tree(new.output) WHERE type = 'text'), '') || ' ' ||
        coalesce((SELECT group_concat(value, ' ') FROM json_tree(new.error) WHERE type = 'text'), ''));
END;

CREATE TRIGGER executions_search_update AFTER UPDATE OF input, output, error ON executions BEGIN
    UPDATE executions_fts SET body =
        coalesce((SELECT group_concat(value, ' ') FROM json_tree(new.input) WHERE type = 'text'), '') || ' ' ||
        coalesce((SELECT group_concat(value, ' ') FROM json_tree(new.output) WHERE type = 'text'), '') || ' ' ||
        coalesce((SELECT group_concat(value, ' ') FROM json_tree(new.error) WHERE type = 'text'), '')
    WHERE rowid = (SELECT doc_id FROM execution_search WHERE execution_id = new.id);
END;

CREATE TRIGGER executions_search_delete AFTER DELETE ON executions BEGIN
    DELETE FROM executions_fts WHERE rowid = (SELECT doc_id FROM execution_search WHERE execution_id = old.id);
    DELETE FROM execution_search WHERE execution_id = old.id;
END;

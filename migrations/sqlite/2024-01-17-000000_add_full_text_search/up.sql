-- Full-text search with FTS5. Only the *string values* of the JSON documents are indexed (not their keys),
-- as PostgreSQL's to_tsvector(jsonb) does, so both backends match the same words. The unicode61 tokenizer
-- lower-cases and splits on non-alphanumerics; diacritics are kept, as in PostgreSQL's 'simple' config.
--
-- FTS rows are keyed by a stable INTEGER PRIMARY KEY in a mapping table, never by the implicit rowid of
-- executions/patterns (VACUUM may renumber those).

CREATE TABLE execution_search (
    doc_id INTEGER PRIMARY KEY NOT NULL,
    execution_id TEXT NOT NULL UNIQUE
);
CREATE VIRTUAL TABLE executions_fts USING fts5(body, tokenize = 'unicode61 remove_diacritics 0');

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

INSERT INTO execution_search (execution_id) SELECT id FROM executions ORDER BY started_at;
INSERT INTO executions_fts (rowid, body)
SELECT s.doc_id,
    coalesce((SELECT group_concat(value, ' ') FROM json_tree(e.input) WHERE type = 'text'), '') || ' ' ||
    coalesce((SELECT group_concat(value, ' ') FROM json_tree(e.output) WHERE type = 'text'), '') || ' ' ||
    coalesce((SELECT group_concat(value, ' ') FROM json_tree(e.error) WHERE type = 'text'), '')
FROM execution_search s JOIN executions e ON e.id = s.execution_id;

CREATE TABLE pattern_search (
    doc_id INTEGER PRIMARY KEY NOT NULL,
    pattern_id TEXT NOT NULL UNIQUE
);
CREATE VIRTUAL TABLE patterns_fts USING fts5(body, tokenize = 'unicode61 remove_diacritics 0');

CREATE TRIGGER patterns_search_insert AFTER INSERT ON patterns BEGIN
    INSERT INTO pattern_search (pattern_id) VALUES (new.id);
    INSERT INTO patterns_fts (rowid, body) VALUES (
        (SELECT doc_id FROM pattern_search WHERE pattern_id = new.id),
        new.name || ' ' || coalesce(new.description, '') || ' ' ||
        coalesce((SELECT group_concat(value, ' ') FROM json_tree(new.definition) WHERE type = 'text'), ''));
END;

CREATE TRIGGER patterns_search_delete AFTER DELETE ON patterns BEGIN
    DELETE FROM patterns_fts WHERE rowid = (SELECT doc_id FROM pattern_search WHERE pattern_id = old.id);
    DELETE FROM pattern_search WHERE pattern_id = old.id;
END;

INSERT INTO pattern_search (pattern_id) SELECT id FROM patterns ORDER BY created_at;
INSERT INTO patterns_fts (rowid, body)
SELECT s.doc_id,
    p.name || ' ' || coalesce(p.description, '') || ' ' ||
    coalesce((SELECT group_concat(value, ' ') FROM json_tree(p.definition) WHERE type = 'text'), '')
FROM pattern_search s JOIN patterns p ON p.id = s.pattern_id;

-- The seed's "add execution tags" migration. Tags are a JSON array of strings; SQLite has no GIN index, so
-- containment filters use json_each() over the (usually short) array of the rows the other filters leave.
ALTER TABLE executions ADD COLUMN tags TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(tags) AND json_type(tags) = 'array');

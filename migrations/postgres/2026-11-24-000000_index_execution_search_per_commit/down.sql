-- Nothing to do on PostgreSQL: its full-text column is generated with the row. The SQLite migration of the same
-- name moves FTS5 indexing from a per-row trigger to one statement per transaction.
SELECT 1;

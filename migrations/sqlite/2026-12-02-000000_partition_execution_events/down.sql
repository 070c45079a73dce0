-- Nothing to do on SQLite: it has no partitions. The PostgreSQL migration of the same name partitions
-- execution_events by month of its execution's started_at, so that a cleanup drops a month's events with it.
SELECT 1;

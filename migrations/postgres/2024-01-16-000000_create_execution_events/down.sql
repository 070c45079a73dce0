DROP TABLE execution_events;

DROP TABLE transfer_runs;

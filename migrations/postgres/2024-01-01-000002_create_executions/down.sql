DROP FUNCTION parallax_create_execution_partition(TIMESTAMP WITH TIME ZONE);
DROP FUNCTION parallax_move_strays();
DROP TABLE executions;

-- The prune deletes what is older than seven days across every function:
-- without an index led by `at` it read both tables whole (the existing
-- ones lead with function_id).
CREATE INDEX function_logs_prune ON zatabase.function_logs (at);
CREATE INDEX function_invocation_batches_prune ON zatabase.function_invocation_batches (at);

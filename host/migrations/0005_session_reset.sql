-- What an earlier request may have left on a pooled tenant connection,
-- cleared by one function call instead of five statements (each statement of
-- a simple query costs Postgres about as much as a small SELECT). Security
-- invoker, names qualified: it acts on the caller's own session only, and no
-- search_path can redirect it.
CREATE FUNCTION extensions.zatabase_reset_session() RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  RESET ALL;
  DISCARD TEMP;
  EXECUTE 'CLOSE ALL';
  UNLISTEN *;
  PERFORM pg_catalog.pg_advisory_unlock_all();
END
$$;

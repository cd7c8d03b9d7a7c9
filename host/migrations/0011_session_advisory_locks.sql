-- A tenant's request is one transaction on a pooled connection it does not
-- own, so a lock that outlives the transaction has no use there, and one left
-- behind would outlive the request. With the session-level advisory lock
-- functions revoked (the transaction-level ones stay), no request can leave
-- one, and none pays for a statement releasing them first: the reset before
-- each request is then utility commands only. The host checks at start-up
-- whether this took (a platform role that may not revoke, as on some external
-- servers, leaves a warning and the functions as they were) and releases the
-- locks per request when it did not. Superusers (the platform role on the
-- embedded Postgres, and its migrations' own lock) are not affected.
REVOKE EXECUTE ON FUNCTION
  pg_catalog.pg_advisory_lock(bigint),
  pg_catalog.pg_advisory_lock(integer, integer),
  pg_catalog.pg_advisory_lock_shared(bigint),
  pg_catalog.pg_advisory_lock_shared(integer, integer),
  pg_catalog.pg_try_advisory_lock(bigint),
  pg_catalog.pg_try_advisory_lock(integer, integer),
  pg_catalog.pg_try_advisory_lock_shared(bigint),
  pg_catalog.pg_try_advisory_lock_shared(integer, integer)
FROM PUBLIC;

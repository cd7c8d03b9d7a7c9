-- What the platform serializes its own DDL on, a row per purpose (now:
-- creating tenants' roles and schemas), locked by an upsert. It was an
-- advisory lock, but advisory keys are one space for the whole database and
-- tenants may take transaction-level ones: a tenant could hold the platform's
-- key and stall every other tenant's provisioning. A table in `zatabase` is
-- out of every tenant's reach. (Work that runs as a tenant's role, which may
-- not read this table, uses advisory keys derived from the master key.)
CREATE TABLE zatabase.ddl_locks (name text PRIMARY KEY);
REVOKE ALL ON zatabase.ddl_locks FROM PUBLIC;

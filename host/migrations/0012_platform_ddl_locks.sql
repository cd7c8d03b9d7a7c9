-- What the platform serializes its own DDL on: a row per purpose (creating
-- tenants' roles and schemas; registering one tenant's index builds), locked
-- by an upsert. These were advisory locks, but advisory keys are one space for
-- the whole database and tenants may take transaction-level ones: a tenant
-- could hold the platform's key and stall every other tenant's provisioning.
-- A table in `zatabase` is out of every tenant's reach.
CREATE TABLE zatabase.ddl_locks (name text PRIMARY KEY);
REVOKE ALL ON zatabase.ddl_locks FROM PUBLIC;

-- The platform's ground rules. Schema `zatabase` (created by the migrator)
-- holds the platform's own tables; no tenant role ever gets a right on it.
REVOKE ALL ON SCHEMA zatabase FROM PUBLIC;

-- pgvector lives in its own schema; each tenant's owner role is granted
-- USAGE on it, so vector types and operators work in every tenant.
CREATE SCHEMA IF NOT EXISTS extensions;
REVOKE ALL ON SCHEMA extensions FROM PUBLIC;
CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA extensions;

-- Nobody creates objects in `public`, and only roles the host grants it may
-- connect to this database or make temporary tables.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
DO $$
BEGIN
  EXECUTE format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database());
END
$$;

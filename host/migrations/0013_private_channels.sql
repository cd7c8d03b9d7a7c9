-- Hosts hear of ended sessions, changed grants and changed functions by
-- LISTEN/NOTIFY. Postgres lets any role NOTIFY any channel it can name,
-- tenants included (`pg_notify` from their SQL or their functions), and a
-- tenant sending a stream of them made every host drop cached sessions
-- and functions over and over. So each channel's name ends in a secret of
-- this database, kept in schema `zatabase`, which tenants cannot read (it
-- is in no function's source either: those are readable in `pg_proc`).
CREATE TABLE zatabase.notify_secret (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  secret text NOT NULL
);
INSERT INTO zatabase.notify_secret (secret)
VALUES (replace(gen_random_uuid()::text, '-', ''));

-- The private name of the platform channel `name` (at most 63 bytes with
-- the secret's 33).
CREATE FUNCTION zatabase.channel(name text) RETURNS text
LANGUAGE sql STABLE AS $$
  SELECT name || '_' || secret FROM zatabase.notify_secret
$$;
REVOKE ALL ON FUNCTION zatabase.channel(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION zatabase.notify_session_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(zatabase.channel('zatabase_session_ended'), OLD.id::text);
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION zatabase.notify_access_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  changed record := coalesce(NEW, OLD);
BEGIN
  IF TG_TABLE_NAME = 'permission_grants' THEN
    PERFORM pg_notify(zatabase.channel('zatabase_access_changed'), changed.project_id::text);
  ELSE
    PERFORM pg_notify(zatabase.channel('zatabase_access_changed'), changed.organization_id::text);
  END IF;
  RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION zatabase.notify_function_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify(zatabase.channel('zatabase_function_changed'),
    CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END::text);
  RETURN NULL;
END
$$;

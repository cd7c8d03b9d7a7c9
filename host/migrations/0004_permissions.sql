-- Permission grants: a principal (a user, or every member of the project's
-- organization holding a role) may take actions on one kind of resource in a
-- project, on one object by name or on all of them ('*'). The project's
-- creator and its organization's owners and admins need no grant: they are
-- its administrators. Teams come with the teams API.
CREATE TABLE zatabase.permission_grants (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  project_id uuid NOT NULL REFERENCES zatabase.projects (id) ON DELETE CASCADE,
  principal_type text NOT NULL CHECK (principal_type IN ('user', 'role')),
  principal_id text NOT NULL,
  resource text NOT NULL CHECK (resource IN ('Tables', 'Collections', 'Vectors', 'Records',
    'Functions', 'Jobs', 'Credits', 'Events', 'Organizations', 'Teams', 'Projects', 'Permissions')),
  resource_id text NOT NULL DEFAULT '*' CHECK (resource_id ~ '^(\*|[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})$'),
  actions text[] NOT NULL CHECK (cardinality(actions) > 0 AND actions <@ ARRAY['Read', 'Write', 'Admin']),
  granted_by uuid REFERENCES zatabase.users (id) ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CHECK (principal_type <> 'user' OR principal_id ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'),
  CHECK (principal_type <> 'role' OR principal_id IN ('owner', 'admin', 'member')),
  UNIQUE (project_id, principal_type, principal_id, resource, resource_id)
);

-- Hosts cache each session's permissions for a few seconds; a change to a
-- project's grants or an organization's members reaches every host at once.
CREATE FUNCTION zatabase.notify_access_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  changed record := coalesce(NEW, OLD);
BEGIN
  IF TG_TABLE_NAME = 'permission_grants' THEN
    PERFORM pg_notify('zatabase_access_changed', changed.project_id::text);
  ELSE
    PERFORM pg_notify('zatabase_access_changed', changed.organization_id::text);
  END IF;
  RETURN NULL;
END
$$;

CREATE TRIGGER grants_changed
AFTER INSERT OR UPDATE OR DELETE ON zatabase.permission_grants
FOR EACH ROW EXECUTE FUNCTION zatabase.notify_access_changed();

CREATE TRIGGER members_changed
AFTER INSERT OR UPDATE OR DELETE ON zatabase.organization_members
FOR EACH ROW EXECUTE FUNCTION zatabase.notify_access_changed();

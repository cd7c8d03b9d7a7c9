-- Who may be in a project: its creator, its organization's members, and
-- the users holding a grant in it. Switching into a project, a session's
-- liveness and a refresh all ask this, so it is said once.
CREATE FUNCTION zatabase.reaches_project(project uuid, member uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
  SELECT EXISTS (
    SELECT FROM zatabase.projects p
    WHERE p.id = project
      AND (p.created_by = member
        OR EXISTS (SELECT FROM zatabase.organization_members m
                   WHERE m.organization_id = p.organization_id AND m.user_id = member)
        OR EXISTS (SELECT FROM zatabase.permission_grants g
                   WHERE g.project_id = p.id AND g.principal_type = 'user'
                     AND g.principal_id = member::text)))
$$;

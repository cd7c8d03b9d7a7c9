-- Accounts: users, their organizations, projects with two environments, and
-- sessions with single-use refresh tokens.

CREATE TABLE zatabase.users (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  email text NOT NULL UNIQUE CHECK (email = lower(email)),
  name text,
  -- argon2id, PHC string
  password_hash text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE zatabase.organizations (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL,
  personal boolean NOT NULL DEFAULT false,
  created_by uuid NOT NULL REFERENCES zatabase.users (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE zatabase.organization_members (
  organization_id uuid NOT NULL REFERENCES zatabase.organizations (id) ON DELETE CASCADE,
  user_id uuid NOT NULL REFERENCES zatabase.users (id) ON DELETE CASCADE,
  role text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (organization_id, user_id)
);
CREATE INDEX organization_members_user ON zatabase.organization_members (user_id);

CREATE TABLE zatabase.projects (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  organization_id uuid NOT NULL REFERENCES zatabase.organizations (id) ON DELETE CASCADE,
  name text NOT NULL,
  slug text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
  created_by uuid NOT NULL REFERENCES zatabase.users (id),
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX projects_organization ON zatabase.projects (organization_id);

CREATE TABLE zatabase.environments (
  project_id uuid NOT NULL REFERENCES zatabase.projects (id) ON DELETE CASCADE,
  name text NOT NULL CHECK (name IN ('live', 'sandbox')),
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, name)
);

CREATE TABLE zatabase.sessions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  user_id uuid NOT NULL REFERENCES zatabase.users (id) ON DELETE CASCADE,
  organization_id uuid NOT NULL REFERENCES zatabase.organizations (id) ON DELETE CASCADE,
  project_id uuid NOT NULL,
  environment text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  -- slides forward with each refresh
  expires_at timestamptz NOT NULL,
  revoked_at timestamptz,
  revoked_reason text,
  FOREIGN KEY (project_id, environment) REFERENCES zatabase.environments (project_id, name) ON DELETE CASCADE
);
CREATE INDEX sessions_user ON zatabase.sessions (user_id);

CREATE TABLE zatabase.refresh_tokens (
  -- sha256 of the token, hex; the token itself is never stored
  digest text PRIMARY KEY,
  session_id uuid NOT NULL REFERENCES zatabase.sessions (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  used_at timestamptz
);
CREATE INDEX refresh_tokens_session ON zatabase.refresh_tokens (session_id);

-- Serverless functions: a function is a name in a project environment with
-- its settings; each upload is a numbered deployment of a component stored
-- once by content (sha256); the function serves its active deployment.

-- Components by content. Several deployments (of any function) share one.
CREATE TABLE zatabase.function_blobs (
  sha256 text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  size bigint NOT NULL CHECK (size > 0),
  wasm bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE zatabase.functions (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  project_id uuid NOT NULL,
  environment text NOT NULL,
  name text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
  description text NOT NULL DEFAULT '',
  -- Spin variables the function reads; `secrets` too, but never answered.
  variables jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(variables) = 'object'),
  secrets jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(secrets) = 'object'),
  public boolean NOT NULL DEFAULT false,
  timeout_ms integer NOT NULL CHECK (timeout_ms > 0),
  memory_mb integer NOT NULL CHECK (memory_mb > 0),
  allowed_outbound_hosts text[] NOT NULL DEFAULT '{}',
  active_deployment_id uuid,
  created_by uuid REFERENCES zatabase.users (id) ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (project_id, environment, name),
  FOREIGN KEY (project_id, environment) REFERENCES zatabase.environments (project_id, name) ON DELETE CASCADE
);

CREATE TABLE zatabase.function_deployments (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  function_id uuid NOT NULL REFERENCES zatabase.functions (id) ON DELETE CASCADE,
  version integer NOT NULL CHECK (version > 0),
  sha256 text NOT NULL REFERENCES zatabase.function_blobs (sha256),
  size bigint NOT NULL,
  handler text NOT NULL,
  created_by uuid REFERENCES zatabase.users (id) ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (function_id, version)
);
CREATE INDEX function_deployments_sha256 ON zatabase.function_deployments (sha256);

ALTER TABLE zatabase.functions
  ADD FOREIGN KEY (active_deployment_id) REFERENCES zatabase.function_deployments (id);

-- Hosts cache what a function name resolves to; any change to a function
-- (settings, active deployment, deletion) reaches every host at once.
CREATE FUNCTION zatabase.notify_function_changed() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('zatabase_function_changed',
    CASE WHEN TG_OP = 'DELETE' THEN OLD.id ELSE NEW.id END::text);
  RETURN NULL;
END
$$;

CREATE TRIGGER function_changed
AFTER UPDATE OR DELETE ON zatabase.functions
FOR EACH ROW EXECUTE FUNCTION zatabase.notify_function_changed();

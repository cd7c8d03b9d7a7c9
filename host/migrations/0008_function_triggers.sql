-- Cron triggers: a function called on a schedule. Hosts claim due triggers
-- with FOR UPDATE SKIP LOCKED and move next_run past now in the same
-- transaction, so each tick runs once however many hosts there are, and
-- ticks missed while no host ran are not run late one by one.
CREATE TABLE zatabase.function_triggers (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  function_id uuid NOT NULL REFERENCES zatabase.functions (id) ON DELETE CASCADE,
  kind text NOT NULL CHECK (kind IN ('cron')),
  schedule text NOT NULL,
  -- the path the function is called on (its spin-path-info)
  path text NOT NULL DEFAULT '/' CHECK (path ~ '^/'),
  next_run timestamptz NOT NULL,
  last_run timestamptz,
  last_status smallint,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX function_triggers_due ON zatabase.function_triggers (next_run);
CREATE INDEX function_triggers_function ON zatabase.function_triggers (function_id);

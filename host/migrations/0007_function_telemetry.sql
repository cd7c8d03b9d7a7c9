-- What functions did: one row per invocation (for /v1/functions/:id/metrics)
-- and one per line a function logged (for /v1/functions/:id/logs). Hosts
-- write them in batches, a fraction of a second behind; rows older than
-- seven days are pruned.
CREATE TABLE zatabase.function_invocations (
  function_id uuid NOT NULL REFERENCES zatabase.functions (id) ON DELETE CASCADE,
  request_id text NOT NULL,
  status smallint NOT NULL,
  duration_us bigint NOT NULL,
  -- the first request a host served from a deployment it had not loaded
  cold boolean NOT NULL,
  at timestamptz NOT NULL
);
CREATE INDEX function_invocations_at ON zatabase.function_invocations (function_id, at);

CREATE TABLE zatabase.function_logs (
  id bigserial PRIMARY KEY,
  function_id uuid NOT NULL REFERENCES zatabase.functions (id) ON DELETE CASCADE,
  request_id text NOT NULL,
  level text NOT NULL CHECK (level IN ('trace', 'debug', 'info', 'warn', 'error')),
  message text NOT NULL,
  at timestamptz NOT NULL
);
CREATE INDEX function_logs_at ON zatabase.function_logs (function_id, at DESC, id DESC);

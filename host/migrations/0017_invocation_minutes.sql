-- Invocations are stored as one row per function per minute: counts, and
-- the durations as a histogram. Migration 0010 kept every call's status
-- and duration (as arrays), so /v1/functions/:id/metrics read every call
-- in its window: a function answering a thousand calls a second had 86
-- million to sort for a day's percentiles, past any statement timeout, and
-- seven days of them stored. A minute row is bounded by the number of
-- distinct statuses and duration buckets, however busy the function.
--
-- Durations are counted in buckets 2^(1/16) wide (about 4.4 %): bucket k
-- holds durations d (in µs, at least 1) with k = floor(16 * log2(d)). A
-- percentile is the geometric middle of its bucket, 2^((k + 0.5) / 16),
-- kept within the window's shortest and longest call: within 2.2 % of a
-- duration some call took. Statuses and buckets are sparse, as sorted
-- parallel arrays. Hosts add to a minute's row as they write (ON CONFLICT),
-- so several hosts, or several writes in one minute, share it.
CREATE TABLE zatabase.function_invocation_minutes (
  function_id uuid NOT NULL,
  minute timestamptz NOT NULL,
  invocations bigint NOT NULL,
  -- answers with a status of 500 or more
  errors bigint NOT NULL,
  cold_starts bigint NOT NULL,
  min_us bigint NOT NULL,
  max_us bigint NOT NULL,
  statuses smallint[] NOT NULL,
  status_counts bigint[] NOT NULL,
  buckets smallint[] NOT NULL,
  bucket_counts bigint[] NOT NULL,
  PRIMARY KEY (function_id, minute),
  CHECK (cardinality(statuses) = cardinality(status_counts)
     AND cardinality(buckets) = cardinality(bucket_counts))
);
CREATE INDEX function_invocation_minutes_prune
  ON zatabase.function_invocation_minutes (minute);

-- The calls recorded so far, by the same rule.
WITH calls AS (
  SELECT function_id, date_trunc('minute', at) AS minute, status, duration_us, cold,
    floor(16 * log(2, greatest(duration_us, 1)::numeric))::smallint AS bucket
  FROM zatabase.function_invocations
), by_status AS (
  SELECT function_id, minute,
    array_agg(status ORDER BY status) AS statuses, array_agg(n ORDER BY status) AS status_counts
  FROM (SELECT function_id, minute, status, count(*) AS n FROM calls
        GROUP BY function_id, minute, status) s
  GROUP BY function_id, minute
), by_bucket AS (
  SELECT function_id, minute,
    array_agg(bucket ORDER BY bucket) AS buckets, array_agg(n ORDER BY bucket) AS bucket_counts
  FROM (SELECT function_id, minute, bucket, count(*) AS n FROM calls
        GROUP BY function_id, minute, bucket) b
  GROUP BY function_id, minute
), totals AS (
  SELECT function_id, minute, count(*) AS invocations,
    count(*) FILTER (WHERE status >= 500) AS errors,
    count(*) FILTER (WHERE cold) AS cold_starts,
    min(duration_us) AS min_us, max(duration_us) AS max_us
  FROM calls GROUP BY function_id, minute
)
INSERT INTO zatabase.function_invocation_minutes
SELECT t.function_id, t.minute, t.invocations, t.errors, t.cold_starts, t.min_us, t.max_us,
  s.statuses, s.status_counts, b.buckets, b.bucket_counts
FROM totals t
JOIN by_status s USING (function_id, minute)
JOIN by_bucket b USING (function_id, minute);

DROP VIEW zatabase.function_invocations;
DROP TABLE zatabase.function_invocation_batches;

CREATE OR REPLACE FUNCTION zatabase.forget_function_telemetry() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM zatabase.function_invocation_minutes WHERE function_id = OLD.id;
  DELETE FROM zatabase.function_logs WHERE function_id = OLD.id;
  RETURN NULL;
END
$$;

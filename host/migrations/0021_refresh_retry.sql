-- A spent refresh token presented again within the reuse interval
-- (auth.refresh_reuse_interval_secs) is a client's retry and gets a pair:
-- once. When that was, so a second presentation is theft, as it is past
-- the interval: a thief who saw the token cannot start a chain of its own
-- unnoticed while the client retries too.
ALTER TABLE zatabase.refresh_tokens ADD COLUMN retried_at timestamptz;

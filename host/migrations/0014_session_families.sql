-- A session opened by `POST /v1/auth/switch` replaces the caller's and
-- joins its family; the first session of a login is the family's root
-- (`family_id` null: the family is the session's own id). A spent refresh
-- token presented again ends the whole family, so switching environments
-- sheds no theft detection.
ALTER TABLE zatabase.sessions ADD COLUMN family_id uuid;
CREATE INDEX sessions_family ON zatabase.sessions (family_id) WHERE family_id IS NOT NULL;

-- Which master key this database was set up with, as an HMAC of a fixed
-- label under it (the key itself is never stored). Functions' secrets and
-- tenants' role passwords derive from the key: a host that starts with
-- another one (a restored data directory without its master.key, a new
-- machine without ZATABASE_MASTER_KEY) is refused at start instead of
-- running with every secret unreadable. The first host to start after
-- this migration records its key.
CREATE TABLE zatabase.installation (
  only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
  master_key_check text NOT NULL
);

-- Sessions and refresh tokens past any use are deleted by each host's
-- hourly sweep (auth/expiry.rs): a spent refresh token a day after it was
-- spent, a session three days after it expired or was revoked (its
-- tokens with it). Nothing deleted them before, so every refresh and
-- every login added a row for good.
CREATE INDEX refresh_tokens_spent ON zatabase.refresh_tokens (used_at)
  WHERE used_at IS NOT NULL;
CREATE INDEX sessions_expired ON zatabase.sessions (expires_at);
CREATE INDEX sessions_revoked ON zatabase.sessions (revoked_at)
  WHERE revoked_at IS NOT NULL;

-- Deleting a session still live ends it on every host at once; one that
-- had expired or was revoked (and said so then) needs no word: the sweep
-- deletes thousands at a time.
DROP TRIGGER session_deleted ON zatabase.sessions;
CREATE TRIGGER session_deleted
AFTER DELETE ON zatabase.sessions
FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND OLD.expires_at > now())
EXECUTE FUNCTION zatabase.notify_session_ended();

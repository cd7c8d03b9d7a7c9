-- Every host caches live sessions for a few seconds; when a session ends
-- (logout, switch, refresh-token reuse, or its user deleted), all hosts hear
-- of it at once through this channel and forget it.
CREATE FUNCTION zatabase.notify_session_ended() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('zatabase_session_ended', OLD.id::text);
  RETURN NULL;
END
$$;

CREATE TRIGGER session_ended
AFTER UPDATE OF revoked_at ON zatabase.sessions
FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
EXECUTE FUNCTION zatabase.notify_session_ended();

CREATE TRIGGER session_deleted
AFTER DELETE ON zatabase.sessions
FOR EACH ROW EXECUTE FUNCTION zatabase.notify_session_ended();

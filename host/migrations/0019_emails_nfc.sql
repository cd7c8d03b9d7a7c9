-- Signup and login now put emails in Unicode NFC (guests/auth validate.rs),
-- so an address stored in another form (`jose` and a combining accent)
-- would no longer be found at login. Each is put in NFC too, unless another
-- account already has that form: then the two stay apart, and the one
-- stored decomposed cannot log in by email until an operator merges or
-- renames it (`SELECT id, email FROM zatabase.users WHERE email IS NOT NFC
-- NORMALIZED` lists them).
DO $$
DECLARE
  u record;
BEGIN
  FOR u IN SELECT id, email FROM zatabase.users WHERE email IS NOT NFC NORMALIZED LOOP
    BEGIN
      UPDATE zatabase.users SET email = normalize(u.email, NFC) WHERE id = u.id;
    EXCEPTION WHEN unique_violation THEN
      NULL;
    END;
  END LOOP;
END
$$;

-- Users found by email, case-insensitively (imports of rows named by email alone, the manual
-- members API's emails): `email_lower` is lower(attributes ->> 'email'), kept by the trigger
-- that already derives `epochs` from the attributes, and indexed per environment.
--
-- A column rather than an index on the expression: an index on an expression of `attributes`
-- would make every update of the attributes a non-HOT update (two index insertions each); an
-- index on `email_lower` costs nothing to an update that leaves the email as it was (the
-- column keeps its value, the update stays HOT).
ALTER TABLE users ADD COLUMN email_lower text;

CREATE FUNCTION users_fill_derived() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.epochs := segments_iso_epochs(NEW.attributes);
    NEW.email_lower := lower(NEW.attributes ->> 'email');
    RETURN NEW;
END $$;

DROP TRIGGER users_epochs_insert ON users;
DROP TRIGGER users_epochs_update ON users;
CREATE TRIGGER users_derived_insert BEFORE INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION users_fill_derived();
CREATE TRIGGER users_derived_update BEFORE UPDATE OF attributes ON users
    FOR EACH ROW WHEN (NEW.attributes IS DISTINCT FROM OLD.attributes)
    EXECUTE FUNCTION users_fill_derived();

UPDATE users SET email_lower = lower(attributes ->> 'email') WHERE attributes ? 'email';
CREATE INDEX users_email ON users (env_id, email_lower) WHERE email_lower IS NOT NULL;

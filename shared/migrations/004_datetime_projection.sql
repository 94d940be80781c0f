-- Parsed datetimes: ISO-8601 strings are parsed once per write instead of once per row and leaf
-- of every condition query. ``epochs`` holds {attribute name: epoch microseconds (a JSON number)}
-- for every attribute whose value is a string that reads as an ISO datetime (the rule of
-- shared/conditions/coerce.py iso_us); other attributes are absent. The SQL engine reads a
-- datetime leaf's string values from it (numbers are still read from ``attributes``).

ALTER TABLE users ADD COLUMN epochs jsonb NOT NULL DEFAULT '{}';
ALTER TABLE companies ADD COLUMN epochs jsonb NOT NULL DEFAULT '{}';

-- Declared here; its body is generated from the Python rule (sql_coerce.iso_epochs_body) and
-- put in place by shared/migrate.py in this migration's transaction, which then fills
-- ``epochs`` for the rows that exist (and again whenever the generated body changes).
CREATE FUNCTION segments_iso_epochs(attrs jsonb) RETURNS jsonb
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE STRICT AS $$ BEGIN RETURN NULL; END $$;

CREATE FUNCTION fill_epochs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.epochs := segments_iso_epochs(NEW.attributes);
    RETURN NEW;
END $$;

-- Only writes of changed attributes pay for parsing: an UPDATE that does not set
-- ``attributes`` (membership_version bumps, last_seen_at) or sets it to the same value does not.
CREATE TRIGGER users_epochs_insert BEFORE INSERT ON users
    FOR EACH ROW EXECUTE FUNCTION fill_epochs();
CREATE TRIGGER users_epochs_update BEFORE UPDATE OF attributes ON users
    FOR EACH ROW WHEN (NEW.attributes IS DISTINCT FROM OLD.attributes)
    EXECUTE FUNCTION fill_epochs();
CREATE TRIGGER companies_epochs_insert BEFORE INSERT ON companies
    FOR EACH ROW EXECUTE FUNCTION fill_epochs();
CREATE TRIGGER companies_epochs_update BEFORE UPDATE OF attributes ON companies
    FOR EACH ROW WHEN (NEW.attributes IS DISTINCT FROM OLD.attributes)
    EXECUTE FUNCTION fill_epochs();

-- The collation case-insensitive conditions fold non-ASCII text with (shared.conditions
-- .sql_coerce.FOLD): ICU's root locale, which folds exactly as Python's str.lower() (a test
-- checks every code point). A PostgreSQL built without ICU (the embedded one the development
-- runner starts, from the pgserver package) gets the C library's C.UTF-8 instead, so that
-- such conditions still run there; its lower() can differ from Python's for a few characters
-- outside ASCII (ASCII text is folded by the "C" collation either way).
DO $$
BEGIN
    BEGIN
        CREATE COLLATION segments_fold (provider = icu, locale = 'und');
    EXCEPTION WHEN feature_not_supported OR invalid_parameter_value OR undefined_object THEN
        CREATE COLLATION segments_fold (provider = libc, locale = 'C.UTF-8');
    END;
END
$$;

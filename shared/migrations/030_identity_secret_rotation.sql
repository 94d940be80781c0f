-- Identity verification's secret can be rotated: the replaced secret keeps verifying tokens
-- until previous_identity_secret_until (tokens already handed to browsers live out their age).
ALTER TABLE environments
    ADD COLUMN previous_identity_secret text,
    ADD COLUMN previous_identity_secret_until timestamptz;

-- Keys replaced by a rotation that keep working until their grace period ends, so that
-- clients can be moved to the new key without an outage. Stored hashed (sha256), write keys
-- too: a retired key is only ever compared, never shown.
CREATE TABLE retired_keys (
    env_id     bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    key_hash   bytea NOT NULL,
    secret     boolean NOT NULL,
    until      timestamptz NOT NULL,
    retired_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, key_hash)
);
CREATE UNIQUE INDEX retired_keys_hash ON retired_keys (key_hash);

-- The core schema. Every table carries env_id first in its primary key and indexes:
-- tenant isolation is structural, and env_id is the distribution key when we outgrow one server.

CREATE TABLE environments (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                  text NOT NULL UNIQUE,
    write_key             text NOT NULL UNIQUE,
    -- sha256 of the secret key; the key itself is shown once and never stored.
    secret_key_hash       bytea NOT NULL UNIQUE,
    identity_verification boolean NOT NULL DEFAULT false,
    identity_secret       text,
    created_at            timestamptz NOT NULL DEFAULT now()
);

-- A profile. user_id is NULL while the profile is anonymous (known only by anonymous ids).
CREATE TABLE users (
    env_id        bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    id            bigint GENERATED ALWAYS AS IDENTITY,
    user_id       text,
    attributes    jsonb NOT NULL DEFAULT '{}',
    -- per-attribute epoch milliseconds of the message that last wrote (or unset) it
    attr_ts       jsonb NOT NULL DEFAULT '{}',
    first_seen_at timestamptz NOT NULL,
    last_seen_at  timestamptz NOT NULL,
    -- bumped (under the row lock) by every transaction that may change this user's memberships;
    -- the Redis copy carries it so that an older write never replaces a newer one
    membership_version bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, id)
) WITH (fillfactor = 80);  -- room for HOT updates: version bumps touch no index
CREATE UNIQUE INDEX users_user_id ON users (env_id, user_id) WHERE user_id IS NOT NULL;

-- Anonymous ids (and aliases) resolving to a profile, for ever.
CREATE TABLE identities (
    env_id       bigint NOT NULL,
    anonymous_id text NOT NULL,
    user_pk      bigint NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, anonymous_id),
    FOREIGN KEY (env_id, user_pk) REFERENCES users (env_id, id) ON DELETE CASCADE
);
CREATE INDEX identities_user ON identities (env_id, user_pk);

CREATE TABLE companies (
    env_id     bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    company_id text NOT NULL,
    attributes jsonb NOT NULL DEFAULT '{}',
    attr_ts    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, id),
    UNIQUE (env_id, company_id)
);

-- A user's membership of a company, with the user's attributes within that company.
CREATE TABLE company_members (
    env_id     bigint NOT NULL,
    user_pk    bigint NOT NULL,
    company_pk bigint NOT NULL,
    attributes jsonb NOT NULL DEFAULT '{}',
    attr_ts    jsonb NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, user_pk, company_pk),
    FOREIGN KEY (env_id, user_pk) REFERENCES users (env_id, id) ON DELETE CASCADE,
    FOREIGN KEY (env_id, company_pk) REFERENCES companies (env_id, id) ON DELETE CASCADE
);
CREATE INDEX company_members_company ON company_members (env_id, company_pk);

CREATE TABLE events (
    env_id     bigint NOT NULL,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    user_pk    bigint NOT NULL,
    name       text NOT NULL,
    properties jsonb NOT NULL DEFAULT '{}',
    ts         timestamptz NOT NULL,
    message_id text NOT NULL,
    -- no foreign key (hot insert path): the users_deleted trigger removes a user's events
    PRIMARY KEY (env_id, id)
);
CREATE INDEX events_user ON events (env_id, user_pk, name, ts);

-- Accepted messages not yet applied. Ingest inserts and commits before answering 2xx;
-- the worker claims rows FOR UPDATE SKIP LOCKED and deletes them in the transaction that
-- applies them, so a row here is exactly "acknowledged but not yet applied".
CREATE TABLE inbox (
    env_id      bigint NOT NULL,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    received_at timestamptz NOT NULL DEFAULT now(),
    body        bytea NOT NULL,
    PRIMARY KEY (env_id, id)
);
CREATE INDEX inbox_order ON inbox (id);

-- messageIds already applied, kept for at least 7 days (the worker's sweep prunes older ones).
CREATE TABLE processed_messages (
    env_id       bigint NOT NULL,
    message_id   text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, message_id)
);
CREATE INDEX processed_messages_age ON processed_messages (processed_at);

CREATE TABLE segments (
    env_id      bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    key         text NOT NULL,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    kind        text NOT NULL CHECK (kind IN ('all', 'dynamic', 'manual')),
    conditions  jsonb,
    -- bumped on every definition change; a bulk recompute carries the version it computed
    version     integer NOT NULL DEFAULT 1,
    status      text NOT NULL DEFAULT 'ready' CHECK (status IN ('computing', 'ready')),
    computed_version integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, id),
    UNIQUE (env_id, key)
);

-- No foreign keys here: memberships are the hottest insert path, and per-row FK checks
-- tripled its cost (measured). Deleting a user or a segment still removes its memberships,
-- through the statement-level triggers below.
CREATE TABLE memberships (
    env_id     bigint NOT NULL,
    segment_id bigint NOT NULL,
    user_pk    bigint NOT NULL,
    since      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, segment_id, user_pk)
);
CREATE INDEX memberships_user ON memberships (env_id, user_pk);

CREATE FUNCTION users_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM memberships m USING gone g WHERE m.env_id = g.env_id AND m.user_pk = g.id;
    DELETE FROM events e USING gone g WHERE e.env_id = g.env_id AND e.user_pk = g.id;
    RETURN NULL;
END $$;
CREATE TRIGGER users_deleted AFTER DELETE ON users
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION users_deleted();

CREATE FUNCTION segments_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM memberships m USING gone g WHERE m.env_id = g.env_id AND m.segment_id = g.id;
    RETURN NULL;
END $$;
CREATE TRIGGER segments_deleted AFTER DELETE ON segments
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION segments_deleted();

-- Every entry and exit, with what caused it ('message', 'recompute', 'merge', ...).
CREATE TABLE membership_changes (
    env_id     bigint NOT NULL,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    segment_id bigint NOT NULL,
    user_pk    bigint NOT NULL,
    entered    boolean NOT NULL,
    cause      text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, id)
);
CREATE INDEX membership_changes_segment ON membership_changes (env_id, segment_id, id);

-- Problems found while applying accepted messages (a change that could not apply, an id
-- that could not be merged); visible through the admin API.
CREATE TABLE ingest_warnings (
    env_id     bigint NOT NULL,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    message_id text NOT NULL,
    user_id    text,
    attribute  text,
    warning    text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, id)
);

-- Messages the worker could not apply (a bug or data it cannot handle): kept, never dropped,
-- so that nothing acknowledged is lost; they can be inspected and replayed into the inbox.
CREATE TABLE dead_letters (
    env_id      bigint NOT NULL,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    inbox_id    bigint NOT NULL,
    received_at timestamptz NOT NULL,
    body        bytea NOT NULL,
    error       text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, id)
);

-- The condition language's tables: attribute types and per-day event counts.
-- Depends on 001 only (it may be applied after 003 on existing databases).

-- One type per (environment, scope, attribute): inferred from the first value the worker sees
-- (declared = false) or declared / corrected through the admin API (declared = true).
-- scope: 'user' (users.attributes), 'company' (companies.attributes),
-- 'membership' (company_members.attributes).
CREATE TABLE attribute_types (
    env_id     bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    scope      text NOT NULL CHECK (scope IN ('user', 'company', 'membership')),
    name       text NOT NULL,
    type       text NOT NULL CHECK (type IN ('string', 'number', 'boolean', 'datetime', 'list')),
    declared   boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, scope, name)
);

-- Track calls counted per user, event name and UTC day, kept by the worker in the transaction
-- that inserts the events, so that an event leaf costs an indexed look-up.
CREATE TABLE event_counts (
    env_id  bigint NOT NULL,
    user_pk bigint NOT NULL,
    name    text NOT NULL,
    day     date NOT NULL,
    count   integer NOT NULL,
    PRIMARY KEY (env_id, user_pk, name, day),
    FOREIGN KEY (env_id, user_pk) REFERENCES users (env_id, id) ON DELETE CASCADE
);
-- Event leaves are compiled to one aggregate over (env, name, days >= start) per leaf.
CREATE INDEX event_counts_name ON event_counts (env_id, name, day) INCLUDE (user_pk, count);

-- Counts of the events already stored (databases migrated after events were recorded).
INSERT INTO event_counts (env_id, user_pk, name, day, count)
SELECT env_id, user_pk, name, (ts AT TIME ZONE 'UTC')::date, count(*)
FROM events
GROUP BY 1, 2, 3, 4;

-- An attribute's ingestion warnings, paged by the admin API. ``attribute`` holds the name for
-- user attributes and 'company:<name>' / 'membership:<name>' for the other scopes.
CREATE INDEX ingest_warnings_attribute ON ingest_warnings (env_id, attribute, id)
    WHERE attribute IS NOT NULL;

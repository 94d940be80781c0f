-- Growth over time: the three tables that grow with traffic are partitioned by time and
-- dropped by partition (DETACH + DROP, never DELETE) once past their retention, by the
-- worker's maintenance job (shared/partitions.py), so a year of traffic slows no insert.
--
--   processed_messages   weekly on day (the UTC day the worker recorded the messageId)
--   membership_changes   weekly on at
--   webhook_deliveries   weekly on created_at
--
-- Weeks are ISO weeks (from Monday 00:00 UTC): with the default retentions a week keeps the
-- partitions few (processed_messages: two or three, each probed per messageId).
--
-- Each has a DEFAULT partition, a safety net: if the job lagged and the period's partition
-- does not exist yet, inserts land there instead of failing; creating the partition later
-- moves them in (segments_add_partition). Keys include the partition key, as PostgreSQL
-- requires: (env_id, message_id, day) for processed_messages, which makes the messageId
-- unique within a day; the worker checks the earlier days itself (services/worker/drain.py).
-- The rows of a database migrated with data are copied into the new tables, ids kept.

-- The start of the period (1 day, or 7: ISO weeks) holding day d.
CREATE FUNCTION segments_period_start(d date, days integer) RETURNS date
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN days = 7 THEN d - (extract(isodow FROM d)::integer - 1) ELSE d END
$$;

-- Creates the partition of ``parent`` for [lo, hi) (named <parent>_pYYYYMMDD), moving in
-- the rows its default partition holds for that range; false when it exists already. The
-- table is created alone and attached, which takes a lighter lock on the parent than
-- CREATE TABLE ... PARTITION OF; the default partition is locked while rows move.
CREATE FUNCTION segments_add_partition(parent text, lo date, hi date) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    part text := parent || '_p' || to_char(lo, 'YYYYMMDD');
    fallback text := parent || '_default';
    key text;
    key_type text;
    lo_lit text;
    hi_lit text;
BEGIN
    IF to_regclass(quote_ident(part)) IS NOT NULL THEN
        RETURN false;
    END IF;
    SELECT a.attname, format_type(a.atttypid, a.atttypmod) INTO key, key_type
    FROM pg_partitioned_table t
    JOIN pg_attribute a ON a.attrelid = t.partrelid AND a.attnum = t.partattrs[0]
    WHERE t.partrelid = parent::regclass;
    IF key_type = 'date' THEN
        lo_lit := quote_literal(lo::text);
        hi_lit := quote_literal(hi::text);
    ELSE  -- timestamptz: UTC midnights, whatever the session's time zone
        lo_lit := quote_literal(lo::text || ' 00:00:00+00');
        hi_lit := quote_literal(hi::text || ' 00:00:00+00');
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   part, parent);
    IF to_regclass(quote_ident(fallback)) IS NOT NULL THEN
        EXECUTE format('LOCK TABLE %I IN EXCLUSIVE MODE', fallback);
        EXECUTE format(
            'WITH moved AS (DELETE FROM %I WHERE %I >= %s AND %I < %s RETURNING *)
             INSERT INTO %I SELECT * FROM moved',
            fallback, key, lo_lit, key, hi_lit, part);
    END IF;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%s) TO (%s)',
                   parent, part, lo_lit, hi_lit);
    RETURN true;
END
$$;

-- Creates every missing partition of ``parent`` (periods of ``days`` days) from the one
-- holding ``first`` to the one holding ``last``; returns how many it created.
CREATE FUNCTION segments_add_partitions(parent text, days integer, first date, last date)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    lo date := segments_period_start(first, days);
    made integer := 0;
BEGIN
    WHILE lo <= last LOOP
        IF segments_add_partition(parent, lo, lo + days) THEN
            made := made + 1;
        END IF;
        lo := lo + days;
    END LOOP;
    RETURN made;
END
$$;

-- processed_messages ---------------------------------------------------------------------
ALTER TABLE processed_messages RENAME TO processed_messages_unpartitioned;
ALTER INDEX processed_messages_pkey RENAME TO processed_messages_unpartitioned_pkey;
ALTER INDEX processed_messages_age RENAME TO processed_messages_unpartitioned_age;

-- messageIds already applied: a message is new when its id is in no partition (the worker's
-- dedup window is the retention, SEGMENTS_RETENTION_PROCESSED_DAYS, at least 7 days).
CREATE TABLE processed_messages (
    env_id     bigint NOT NULL,
    message_id text NOT NULL,
    day        date NOT NULL,
    PRIMARY KEY (env_id, message_id, day)
) PARTITION BY RANGE (day);
CREATE TABLE processed_messages_default PARTITION OF processed_messages DEFAULT;

SELECT segments_add_partitions(
    'processed_messages', 7,
    coalesce((SELECT min((processed_at AT TIME ZONE 'UTC')::date)
              FROM processed_messages_unpartitioned), (now() AT TIME ZONE 'UTC')::date),
    (now() AT TIME ZONE 'UTC')::date + 14);
INSERT INTO processed_messages (env_id, message_id, day)
SELECT env_id, message_id, (processed_at AT TIME ZONE 'UTC')::date
FROM processed_messages_unpartitioned;
DROP TABLE processed_messages_unpartitioned;

-- membership_changes ---------------------------------------------------------------------
ALTER TABLE membership_changes RENAME TO membership_changes_unpartitioned;
ALTER INDEX membership_changes_pkey RENAME TO membership_changes_unpartitioned_pkey;
ALTER INDEX membership_changes_segment RENAME TO membership_changes_unpartitioned_segment;
ALTER INDEX membership_changes_user RENAME TO membership_changes_unpartitioned_user;
ALTER SEQUENCE membership_changes_id_seq RENAME TO membership_changes_unpartitioned_id_seq;

-- Every entry and exit, with what caused it ('message', 'recompute', 'merge', ...).
CREATE TABLE membership_changes (
    env_id     bigint NOT NULL,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    segment_id bigint NOT NULL,
    user_pk    bigint NOT NULL,
    entered    boolean NOT NULL,
    cause      text NOT NULL,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, id, at)
) PARTITION BY RANGE (at);
CREATE INDEX membership_changes_segment ON membership_changes (env_id, segment_id, id);
CREATE INDEX membership_changes_user ON membership_changes (env_id, user_pk, id);
CREATE TABLE membership_changes_default PARTITION OF membership_changes DEFAULT;

SELECT segments_add_partitions(
    'membership_changes', 7,
    coalesce((SELECT min((at AT TIME ZONE 'UTC')::date) FROM membership_changes_unpartitioned),
             (now() AT TIME ZONE 'UTC')::date),
    (now() AT TIME ZONE 'UTC')::date + 14);
INSERT INTO membership_changes OVERRIDING SYSTEM VALUE
SELECT env_id, id, segment_id, user_pk, entered, cause, at FROM membership_changes_unpartitioned;
SELECT setval(pg_get_serial_sequence('membership_changes', 'id'), last_value, is_called)
FROM membership_changes_unpartitioned_id_seq;

-- webhook_deliveries ---------------------------------------------------------------------
ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_unpartitioned;
ALTER INDEX webhook_deliveries_pkey RENAME TO webhook_deliveries_unpartitioned_pkey;
ALTER INDEX webhook_deliveries_env_id_webhook_id_change_id_key
    RENAME TO webhook_deliveries_unpartitioned_change;
ALTER INDEX webhook_deliveries_due RENAME TO webhook_deliveries_unpartitioned_due;
ALTER INDEX webhook_deliveries_log RENAME TO webhook_deliveries_unpartitioned_log;
ALTER SEQUENCE webhook_deliveries_id_seq RENAME TO webhook_deliveries_unpartitioned_id_seq;
ALTER TABLE webhook_deliveries_unpartitioned
    RENAME CONSTRAINT webhook_deliveries_env_id_webhook_id_fkey
    TO webhook_deliveries_unpartitioned_webhook_fkey;

-- One row per (webhook, membership change): written in the transaction that records the
-- change (an outbox), sent by the worker, retried with exponential backoff. One row per
-- (webhook, change) by construction (change ids come from a sequence, each change is
-- queued once): the former UNIQUE (env_id, webhook_id, change_id) cannot be kept without
-- the partition key.
CREATE TABLE webhook_deliveries (
    env_id          bigint NOT NULL,
    id              bigint GENERATED ALWAYS AS IDENTITY,
    webhook_id      bigint NOT NULL,
    change_id       bigint NOT NULL,
    payload         jsonb NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, id, created_at),
    FOREIGN KEY (env_id, webhook_id) REFERENCES webhooks (env_id, id) ON DELETE CASCADE
) PARTITION BY RANGE (created_at);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (env_id, webhook_id, id);
CREATE TABLE webhook_deliveries_default PARTITION OF webhook_deliveries DEFAULT;

SELECT segments_add_partitions(
    'webhook_deliveries', 7,
    coalesce((SELECT min((created_at AT TIME ZONE 'UTC')::date)
              FROM webhook_deliveries_unpartitioned), (now() AT TIME ZONE 'UTC')::date),
    (now() AT TIME ZONE 'UTC')::date + 14);
INSERT INTO webhook_deliveries OVERRIDING SYSTEM VALUE
SELECT env_id, id, webhook_id, change_id, payload, status, attempts, next_attempt_at,
       last_status, last_error, delivered_at, created_at
FROM webhook_deliveries_unpartitioned;
SELECT setval(pg_get_serial_sequence('webhook_deliveries', 'id'), last_value, is_called)
FROM webhook_deliveries_unpartitioned_id_seq;

DROP TABLE webhook_deliveries_unpartitioned;
DROP TABLE membership_changes_unpartitioned;

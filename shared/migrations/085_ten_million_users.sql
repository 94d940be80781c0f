-- What ten million users in one environment need from the schema (bench/tenmillion.py).

-- 1. Member counts without counting. Every segments or tags list showed live counts by
-- count(*) over memberships / user_tags: at 10M users the All users segment alone is a 10M-row
-- index scan on every list page (and on the Users page, which lists segments). Each statement
-- that inserts or deletes memberships or user_tags now appends one row per segment or tag it
-- touched, with the difference; a count is the sum of its rows, exact in any snapshot (the rows
-- commit with the change). The worker folds the rows of each segment or tag into one now and
-- then (shared/member_counts.py), so a count reads a handful of rows. Appends never wait on
-- each other: no row is updated in place, so concurrent batches do not queue on a hot counter.
CREATE TABLE member_counts (
    env_id  bigint NOT NULL,
    -- 's': a segment's members (memberships), 't': a tag's users (user_tags)
    of      "char" NOT NULL,
    id      bigint NOT NULL,
    delta   bigint NOT NULL
);
CREATE INDEX member_counts_of ON member_counts (env_id, of, id) INCLUDE (delta);

-- TG_ARGV: the kind ('s' or 't') and the column naming the segment or tag.
CREATE FUNCTION count_members() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'INSERT INTO member_counts (env_id, of, id, delta)
         SELECT env_id, %L, %I, %s count(*) FROM changed_rows GROUP BY env_id, %I',
        TG_ARGV[0], TG_ARGV[1], CASE TG_OP WHEN 'INSERT' THEN '' ELSE '-' END, TG_ARGV[1]);
    RETURN NULL;
END $$;
CREATE TRIGGER memberships_counted_insert AFTER INSERT ON memberships
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_members('s', 'segment_id');
CREATE TRIGGER memberships_counted_delete AFTER DELETE ON memberships
    REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_members('s', 'segment_id');
CREATE TRIGGER user_tags_counted_insert AFTER INSERT ON user_tags
    REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_members('t', 'tag_id');
CREATE TRIGGER user_tags_counted_delete AFTER DELETE ON user_tags
    REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION count_members('t', 'tag_id');

-- Rows that exist already (the triggers above hold their tables' locks until this commits).
INSERT INTO member_counts (env_id, of, id, delta)
SELECT env_id, 's', segment_id, count(*) FROM memberships GROUP BY env_id, segment_id;
INSERT INTO member_counts (env_id, of, id, delta)
SELECT env_id, 't', tag_id, count(*) FROM user_tags GROUP BY env_id, tag_id;

-- 2. The users list sorted by lastSeenAt sorted every user of the environment for each page
-- (seconds at 10M users). It now reads an index by the UTC day of last_seen_at and sorts only
-- the users of the days the page reaches (an incremental sort). An index on last_seen_at
-- itself would make every identify a non-HOT update (an update that changes no indexed column
-- touches no index; fillfactor 50 leaves the room, migration 006), inserting into every index
-- of users; a stored generated column changes only when its value does, here at most once a
-- day per user. Adding it rewrites the table once (minutes at 10M users).
ALTER TABLE users ADD COLUMN last_seen_day date
    GENERATED ALWAYS AS ((last_seen_at AT TIME ZONE 'UTC')::date) STORED;
CREATE INDEX users_last_seen_day ON users (env_id, last_seen_day);

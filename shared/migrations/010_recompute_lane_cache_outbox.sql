-- Bulk recomputes as durable requests, worked off in chunks by the worker's recompute lane,
-- and a cache outbox that ties every membership writer's Redis step to its commit.

-- A recompute that fails for good (a statement timeout, a condition that no longer compiles)
-- ends 'failed' with its reason instead of staying 'computing'.
ALTER TABLE segments DROP CONSTRAINT segments_status_check;
ALTER TABLE segments ADD CONSTRAINT segments_status_check
    CHECK (status IN ('computing', 'ready', 'failed'));
ALTER TABLE segments
    ADD COLUMN status_reason text,
    -- bumped by every request (status set to 'computing'): a pass that started under an older
    -- generation does not mark the segment ready, it runs again
    ADD COLUMN recompute_generation bigint NOT NULL DEFAULT 1,
    -- users with id <= this were recomputed under the current generation (a pass resumes here)
    ADD COLUMN recompute_cursor bigint NOT NULL DEFAULT 0,
    ADD COLUMN recompute_attempts integer NOT NULL DEFAULT 0,
    -- a worker's claim (extended as it goes); past it, another worker may take the segment
    ADD COLUMN recompute_claimed_until timestamptz;

-- Whoever sets a segment 'computing' (a definition change, the data under it, a huge company
-- change) requests a new recompute: a new generation, from the first user, attempts reset.
CREATE FUNCTION segments_recompute_requested() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.recompute_generation := OLD.recompute_generation + 1;
    NEW.recompute_cursor := 0;
    NEW.recompute_attempts := 0;
    NEW.status_reason := NULL;
    RETURN NEW;
END $$;
CREATE TRIGGER segments_recompute_requested BEFORE UPDATE OF status ON segments
    FOR EACH ROW WHEN (NEW.status = 'computing')
    EXECUTE FUNCTION segments_recompute_requested();

-- Users whose Redis sets a committed transaction changed and whose writer has not yet
-- confirmed writing them (the row is inserted in the writer's transaction and deleted after
-- its Redis step). A row older than a few seconds means the writer died or Redis failed in
-- between: the worker's sweeper rewrites those users' sets from PostgreSQL. Erased users
-- have no row left to read: their userIds and anonymous ids are listed, and their keys get
-- holds above hold_version.
CREATE TABLE cache_outbox (
    env_id        bigint NOT NULL,
    id            bigint GENERATED ALWAYS AS IDENTITY,
    user_pks      bigint[] NOT NULL DEFAULT '{}',
    erased_users  text[] NOT NULL DEFAULT '{}',
    erased_anonymous text[] NOT NULL DEFAULT '{}',
    hold_version  bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (env_id, id)
);
CREATE INDEX cache_outbox_age ON cache_outbox (created_at);

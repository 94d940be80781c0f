-- The worker's time pass (services/worker/timed.py) evaluates only the users whose answer can
-- have changed by time alone since its last pass over a segment, rather than every user each
-- minute; the last pass is remembered here (shared/membership/time_marks.py).
CREATE TABLE segment_time_marks (
    env_id     bigint NOT NULL,
    segment_id bigint NOT NULL,
    -- the definition and request generation the pass ran under: a segment at any other (edited,
    -- or recomputed since by the lane) gets a pass over every user
    version    integer NOT NULL,
    generation bigint NOT NULL,
    -- the pass's ``now``: every stored answer held at it, or at a later instant
    passed_at  timestamptz NOT NULL,
    -- the ``now`` of the last pass over every user
    full_at    timestamptz NOT NULL,
    PRIMARY KEY (env_id, segment_id),
    FOREIGN KEY (env_id, segment_id) REFERENCES segments (env_id, id) ON DELETE CASCADE
);

-- Where a running bulk recompute of a segment is, for the admin API's status (one row per
-- segment being recomputed; the worker writes it outside the recompute's transaction and
-- deletes it when done). No foreign key: a row outliving its segment is never read.
CREATE TABLE segment_progress (
    env_id     bigint NOT NULL,
    segment_id bigint NOT NULL,
    phase      text NOT NULL CHECK (phase IN ('selecting', 'writing', 'caching')),
    percent    integer NOT NULL CHECK (percent BETWEEN 0 AND 100),
    started_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, segment_id)
);

-- CSV imports: the uploaded file (kept in PostgreSQL, the source of truth, so that any worker
-- can process or resume it), the import's state and counts, and the rows it rejected.

CREATE TABLE imports (
    env_id      bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    kind        text NOT NULL CHECK (kind IN ('users', 'members', 'segments')),
    status      text NOT NULL DEFAULT 'draft'
                CHECK (status IN ('draft', 'processing', 'done', 'failed', 'cancelled')),
    file_name   text,
    -- members: the segment every row goes into (?segment=<key>), when not from a column
    segment_key text,
    delimiter   text NOT NULL,
    columns     jsonb NOT NULL,
    preview     jsonb NOT NULL,
    -- the suggested mapping while a draft, then the one the import was started with
    mapping     jsonb NOT NULL,
    size_bytes  bigint NOT NULL,
    rows_total  bigint NOT NULL,
    -- data rows consumed (applied or rejected), committed with their effects: a resumed
    -- import skips exactly these
    rows_done   bigint NOT NULL DEFAULT 0,
    created     bigint NOT NULL DEFAULT 0,
    updated     bigint NOT NULL DEFAULT 0,
    unchanged   bigint NOT NULL DEFAULT 0,
    rejected    bigint NOT NULL DEFAULT 0,
    error       text,
    -- the worker processing it and until when; an expired lease is taken over (killed worker)
    lease_owner text,
    lease_until timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    started_at  timestamptz,
    finished_at timestamptz,
    PRIMARY KEY (env_id, id)
);
CREATE INDEX imports_processing ON imports (id) WHERE status = 'processing';

-- The file, in order, in chunks of about 1 MB (stored uncompressed: EXTERNAL skips pglz,
-- which cost more CPU than the space it saved on a file deleted when the import ends).
CREATE TABLE import_chunks (
    env_id    bigint NOT NULL,
    import_id bigint NOT NULL,
    seq       integer NOT NULL,
    data      bytea NOT NULL,
    PRIMARY KEY (env_id, import_id, seq),
    FOREIGN KEY (env_id, import_id) REFERENCES imports (env_id, id) ON DELETE CASCADE
);
ALTER TABLE import_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

-- Each rejected row as uploaded (its cells) with the reason.
CREATE TABLE import_rejects (
    env_id     bigint NOT NULL,
    import_id  bigint NOT NULL,
    row_number bigint NOT NULL,
    cells      jsonb NOT NULL,
    error      text NOT NULL,
    PRIMARY KEY (env_id, import_id, row_number),
    FOREIGN KEY (env_id, import_id) REFERENCES imports (env_id, id) ON DELETE CASCADE
);

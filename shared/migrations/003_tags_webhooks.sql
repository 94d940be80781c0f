-- Tags (key:value labels on users), webhooks on membership changes and their delivery log.

CREATE TABLE tags (
    env_id     bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    id         bigint GENERATED ALWAYS AS IDENTITY,
    key        text NOT NULL,
    value      text NOT NULL,
    -- the tag's auto-segment ("Department: Sales"), when one was created
    segment_id bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, id),
    UNIQUE (env_id, key, value)
);

CREATE TABLE user_tags (
    env_id     bigint NOT NULL,
    user_pk    bigint NOT NULL,
    tag_id     bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, user_pk, tag_id),
    FOREIGN KEY (env_id, user_pk) REFERENCES users (env_id, id) ON DELETE CASCADE,
    FOREIGN KEY (env_id, tag_id) REFERENCES tags (env_id, id) ON DELETE CASCADE
);
CREATE INDEX user_tags_tag ON user_tags (env_id, tag_id, user_pk);

CREATE TABLE webhooks (
    env_id      bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    id          bigint GENERATED ALWAYS AS IDENTITY,
    url         text NOT NULL,
    -- HMAC-SHA256 key of the signature header; shown on creation
    secret      text NOT NULL,
    -- NULL: every segment
    segment_ids bigint[],
    on_entered  boolean NOT NULL DEFAULT true,
    on_exited   boolean NOT NULL DEFAULT true,
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, id)
);

-- One row per (webhook, membership change): written in the transaction that records the
-- change (an outbox), sent by the worker, retried with exponential backoff.
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
    PRIMARY KEY (env_id, id),
    UNIQUE (env_id, webhook_id, change_id),
    FOREIGN KEY (env_id, webhook_id) REFERENCES webhooks (env_id, id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_log ON webhook_deliveries (env_id, webhook_id, id);

-- The web console's accounts and sessions. Accounts are people, not tenants: they are the
-- one table without env_id first; what an account may see is console_account_environments.

CREATE TABLE console_accounts (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email           text NOT NULL,
    -- argon2id, in the PHC string format argon2-cffi writes (parameters travel with the hash)
    password_hash   text NOT NULL,
    -- consecutive failed sign-ins; reset by a successful one
    failed_attempts integer NOT NULL DEFAULT 0,
    locked_until    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX console_accounts_email ON console_accounts (lower(email));

-- Which environments an account sees, and its console preferences there.
CREATE TABLE console_account_environments (
    env_id       bigint NOT NULL REFERENCES environments (id) ON DELETE CASCADE,
    account_id   bigint NOT NULL REFERENCES console_accounts (id) ON DELETE CASCADE,
    -- the columns the account chose for the Users table (attribute names)
    user_columns jsonb NOT NULL DEFAULT '[]',
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (env_id, account_id)
);
CREATE INDEX console_account_environments_account ON console_account_environments (account_id);

-- Server-side sessions: the cookie holds a random token, stored here only as its SHA-256.
CREATE TABLE console_sessions (
    token_hash   bytea PRIMARY KEY,
    account_id   bigint NOT NULL REFERENCES console_accounts (id) ON DELETE CASCADE,
    -- the environment the console shows (switched from the header)
    env_id       bigint REFERENCES environments (id) ON DELETE SET NULL,
    -- sent back by the pages in X-CSRF-Token (or the form field csrf) on every change
    csrf_token   text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX console_sessions_account ON console_sessions (account_id);
CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);

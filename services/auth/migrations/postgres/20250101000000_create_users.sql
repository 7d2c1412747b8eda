-- Users who may log in. Emails are stored lower-cased by the service, so the
-- UNIQUE constraint makes them case-insensitively unique. Timestamps are
-- BIGINT unix seconds (sqlx's Any driver has no date/time types); flags are
-- native booleans, which the service decodes alongside the integer flags of
-- the other backends.
CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    is_admin      BOOLEAN NOT NULL DEFAULT FALSE,
    created_at    BIGINT  NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT FALSE
);

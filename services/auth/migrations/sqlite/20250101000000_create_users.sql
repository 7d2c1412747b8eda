-- Users who may log in. Emails are stored lower-cased by the service, so the
-- UNIQUE constraint makes them case-insensitively unique. Flags are INTEGER
-- 0/1 and timestamps INTEGER unix seconds: the only shapes sqlx's Any driver
-- decodes on every backend.
CREATE TABLE users (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL UNIQUE,
    password_hash TEXT    NOT NULL,
    is_admin      INTEGER NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    created_at    INTEGER NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1))
);

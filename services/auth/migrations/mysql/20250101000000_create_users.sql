-- Users who may log in. Emails are stored lower-cased by the service; the
-- binary collation keeps uniqueness exact (a case- or accent-insensitive
-- collation would make `a@x` and `á@x` collide). Flags are SMALLINT 0/1:
-- MySQL's BOOLEAN is TINYINT(1), which sqlx's Any driver cannot decode.
-- Timestamps are BIGINT unix seconds.
CREATE TABLE users (
    id            BIGINT       NOT NULL AUTO_INCREMENT PRIMARY KEY,
    email         VARCHAR(320) NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    is_admin      SMALLINT     NOT NULL DEFAULT 0 CHECK (is_admin IN (0, 1)),
    created_at    BIGINT       NOT NULL,
    disabled      SMALLINT     NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    CONSTRAINT users_email_key UNIQUE (email)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Per-user preference: whether the notification service emails the user
-- when an MP3 is ready. On by default (what the original system did).
-- SMALLINT 0/1 like the other flags (see the first migration).
ALTER TABLE users
    ADD COLUMN email_notifications SMALLINT NOT NULL DEFAULT 1 CHECK (email_notifications IN (0, 1));

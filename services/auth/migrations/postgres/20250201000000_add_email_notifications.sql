-- Per-user preference: whether the notification service emails the user
-- when an MP3 is ready. On by default (what the original system did).
ALTER TABLE users ADD COLUMN email_notifications BOOLEAN NOT NULL DEFAULT TRUE;

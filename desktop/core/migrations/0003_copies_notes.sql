-- A copy of content already converted gets a row of its own ("already
-- converted as X.mp3", with "convert again"), so content is no longer
-- unique per row; rows also carry a note for the user (what happened to
-- the video or to an earlier MP3) and whether a retry can help.
CREATE TABLE items_next (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256 TEXT NOT NULL,
    path TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    state TEXT NOT NULL,
    progress REAL NOT NULL DEFAULT 0,
    job_id TEXT,
    mp3_path TEXT,
    error TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    upload_bytes INTEGER,
    note TEXT,
    retryable INTEGER NOT NULL DEFAULT 1,
    -- The technical text behind a failure's plain reason ("Details").
    detail TEXT
);
INSERT INTO items_next (id, sha256, path, name, size, state, progress, job_id, mp3_path,
                        error, created_at, updated_at, upload_bytes)
    SELECT id, sha256, path, name, size, state, progress, job_id, mp3_path,
           error, created_at, updated_at, upload_bytes FROM items;
DROP TABLE items;
ALTER TABLE items_next RENAME TO items;
CREATE INDEX items_state ON items (state);
CREATE INDEX items_job ON items (job_id);
CREATE INDEX items_sha256 ON items (sha256);

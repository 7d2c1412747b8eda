//! The durable queue in local SQLite: what was taken, its SHA-256, its job
//! and where it stands. A restart resumes from here; content seen before
//! (by hash) gets a row of its own that is not uploaded unless asked.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

use crate::error::Error;

mod item;

pub use item::{Added, Item, Stage};
use item::{SELECT, item};

/// The local database.
#[derive(Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Next to the database: audio copied out of videos for their upload.
    scratch: PathBuf,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Opens (creating when missing) the database at `path` and migrates it.
    /// Uploads interrupted by a crash go back to pending, and what their
    /// extraction left is removed.
    pub async fn open(path: &Path) -> Result<Store, Error> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(Error::io(format!("creating {}", parent.display())))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(std::time::Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        sqlx::query(
            "UPDATE items SET state = 'pending', progress = 0
             WHERE state IN ('uploading', 'extracting')",
        )
        .execute(&pool)
        .await?;
        let scratch = path.with_file_name("extracting");
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch)
                .map_err(Error::io(format!("clearing {}", scratch.display())))?;
        }
        Ok(Store { pool, scratch })
    }

    /// The content hash recorded for a file with this path, size and mtime.
    pub async fn seen(
        &self,
        path: &Path,
        size: u64,
        mtime_ns: i64,
    ) -> Result<Option<String>, Error> {
        let row =
            sqlx::query("SELECT sha256 FROM seen WHERE path = ? AND size = ? AND mtime_ns = ?")
                .bind(path.to_string_lossy())
                .bind(size as i64)
                .bind(mtime_ns)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|row| row.get::<Option<String>, _>(0).unwrap_or_default()))
    }

    /// Remembers a file as looked at; `sha256: None` marks it as left alone
    /// (it was there before the user chose "only new files").
    pub async fn mark_seen(
        &self,
        path: &Path,
        size: u64,
        mtime_ns: i64,
        sha256: Option<&str>,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO seen (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)
             ON CONFLICT (path) DO UPDATE SET size = excluded.size,
             mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256",
        )
        .bind(path.to_string_lossy())
        .bind(size as i64)
        .bind(mtime_ns)
        .bind(sha256)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Queues new content; content taken before gets a row that says so
    /// (see [`Added`]).
    pub async fn add(&self, path: &Path, sha256: &str, size: u64) -> Result<Added, Error> {
        let path_text = path.to_string_lossy();
        let earlier = sqlx::query(&format!(
            "{SELECT} WHERE sha256 = ? AND state != 'duplicate' ORDER BY id DESC LIMIT 1"
        ))
        .bind(sha256)
        .fetch_optional(&self.pool)
        .await?
        .map(|row| item(&row));
        let Some(earlier) = earlier else {
            return Ok(Added::New(
                self.insert(path, sha256, size, Stage::Pending, None)
                    .await?,
            ));
        };
        let listed = sqlx::query(
            "SELECT 1 FROM items WHERE sha256 = ? AND path = ? AND state = 'duplicate'",
        )
        .bind(sha256)
        .bind(&path_text)
        .fetch_optional(&self.pool)
        .await?;
        if listed.is_some() {
            return Ok(Added::Known);
        }
        let note = match (
            &earlier.stage,
            earlier.mp3_path.as_deref().and_then(Path::file_name),
        ) {
            (Stage::Done, Some(mp3)) => format!("Already converted as {}", mp3.to_string_lossy()),
            _ if earlier.path == path => "Already taken".to_owned(),
            _ => format!("Same video as {}, already taken", earlier.name),
        };
        Ok(Added::Copy(
            self.insert(path, sha256, size, Stage::Duplicate, Some(&note))
                .await?,
        ))
    }

    async fn insert(
        &self,
        path: &Path,
        sha256: &str,
        size: u64,
        stage: Stage,
        note: Option<&str>,
    ) -> Result<Item, Error> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "video".into());
        let now = now_ms();
        let inserted = sqlx::query(
            "INSERT INTO items (sha256, path, name, size, state, note, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(sha256)
        .bind(path.to_string_lossy())
        .bind(&name)
        .bind(size as i64)
        .bind(stage.as_str())
        .bind(note)
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.get(inserted.last_insert_rowid())
            .await?
            .ok_or_else(|| Error::Invalid("a new row vanished".into()))
    }

    /// A copy the user wants converted after all: queued like new content.
    pub async fn convert_again(&self, id: i64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE items SET state = 'pending', progress = 0, note = NULL, updated_at = ?
             WHERE id = ? AND state = 'duplicate'",
        )
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn set_note(&self, id: i64, note: Option<&str>) -> Result<(), Error> {
        sqlx::query("UPDATE items SET note = ?, updated_at = ? WHERE id = ?")
            .bind(note)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest finished item taken from `path` other than `id`: the
    /// earlier version of a video whose MP3 a new version replaces.
    pub async fn earlier_version(&self, path: &Path, id: i64) -> Result<Option<Item>, Error> {
        let row = sqlx::query(&format!(
            "{SELECT} WHERE path = ? AND id != ? AND state = 'done' AND mp3_path IS NOT NULL
             ORDER BY id DESC LIMIT 1"
        ))
        .bind(path.to_string_lossy())
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| item(&row)))
    }

    pub async fn get(&self, id: i64) -> Result<Option<Item>, Error> {
        let row = sqlx::query(&format!("{SELECT} WHERE id = ?"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| item(&row)))
    }

    /// The item following job `job_id`. A copy converted again may share
    /// its job with the first conversion (the server answers the same
    /// content with the same job): the one still waiting for it wins.
    pub async fn by_job(&self, job_id: &str) -> Result<Option<Item>, Error> {
        let row = sqlx::query(&format!(
            "{SELECT} WHERE job_id = ? ORDER BY state = 'done', id DESC LIMIT 1"
        ))
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| item(&row)))
    }

    /// Every item, newest first.
    pub async fn all(&self) -> Result<Vec<Item>, Error> {
        let rows = sqlx::query(&format!("{SELECT} ORDER BY id DESC"))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(item).collect())
    }

    /// Items in one stage, oldest first (the order they were taken).
    pub async fn in_stage(&self, stage: Stage) -> Result<Vec<Item>, Error> {
        let rows = sqlx::query(&format!("{SELECT} WHERE state = ? ORDER BY id"))
            .bind(stage.as_str())
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(item).collect())
    }

    /// Moves an item to `stage` with `progress`; clears the error unless
    /// the stage is `Failed`.
    pub async fn set_stage(&self, id: i64, stage: Stage, progress: f64) -> Result<(), Error> {
        sqlx::query(
            "UPDATE items SET state = ?, progress = ?, updated_at = ?,
             error = CASE WHEN ? = 'failed' THEN error ELSE NULL END WHERE id = ?",
        )
        .bind(stage.as_str())
        .bind(progress.clamp(0.0, 1.0))
        .bind(now_ms())
        .bind(stage.as_str())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Where extracted audio waits for its upload (created on demand).
    pub fn scratch_dir(&self) -> Result<&Path, Error> {
        std::fs::create_dir_all(&self.scratch)
            .map_err(Error::io(format!("creating {}", self.scratch.display())))?;
        Ok(&self.scratch)
    }

    pub async fn set_upload_bytes(&self, id: i64, bytes: u64) -> Result<(), Error> {
        sqlx::query("UPDATE items SET upload_bytes = ?, updated_at = ? WHERE id = ?")
            .bind(bytes as i64)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_job(&self, id: i64, job_id: &str) -> Result<(), Error> {
        sqlx::query("UPDATE items SET job_id = ?, updated_at = ? WHERE id = ?")
            .bind(job_id)
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_mp3_path(&self, id: i64, path: &Path) -> Result<(), Error> {
        sqlx::query("UPDATE items SET mp3_path = ?, updated_at = ? WHERE id = ?")
            .bind(path.to_string_lossy())
            .bind(now_ms())
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Fails an item with its reason in plain words (and the technical
    /// text behind it); `retryable` says whether "Retry" can help.
    pub async fn fail(
        &self,
        id: i64,
        reason: &crate::plain::Plain,
        retryable: bool,
    ) -> Result<(), Error> {
        sqlx::query(
            "UPDATE items SET state = 'failed', error = ?, detail = ?, retryable = ?, updated_at = ?
             WHERE id = ?",
        )
        .bind(&reason.message)
        .bind(&reason.detail)
        .bind(retryable)
        .bind(now_ms())
        .bind(id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets an item. Its file stays known, so it is not taken again
    /// unless it changes (a removed row does not come back on a rescan).
    pub async fn remove(&self, id: i64) -> Result<(), Error> {
        sqlx::query("DELETE FROM items WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn meta(&self, key: &str) -> Result<Option<String>, Error> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|row| row.get(0)))
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES (?, ?)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests;

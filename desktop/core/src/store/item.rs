//! One row of the store: where a video stands on its way to an MP3, as the
//! window shows it, and how a database row reads back as one.

use std::path::PathBuf;

use serde::Serialize;
use sqlx::Row;

/// Where an item stands, in the order it moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Taken, waiting for its upload.
    Pending,
    /// Its audio is being copied out for the upload.
    Extracting,
    Uploading,
    /// Uploaded; the server has not started converting.
    Queued,
    Converting,
    /// Converted; the MP3 is on its way into the output folder.
    Downloading,
    Done,
    Failed,
    /// The same content as a file converted (or being converted) already:
    /// shown, not uploaded, until the user asks to convert it again.
    Duplicate,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Pending => "pending",
            Stage::Extracting => "extracting",
            Stage::Uploading => "uploading",
            Stage::Queued => "queued",
            Stage::Converting => "converting",
            Stage::Downloading => "downloading",
            Stage::Done => "done",
            Stage::Failed => "failed",
            Stage::Duplicate => "duplicate",
        }
    }

    pub(super) fn parse(text: &str) -> Stage {
        match text {
            "extracting" => Stage::Extracting,
            "uploading" => Stage::Uploading,
            "queued" => Stage::Queued,
            "converting" => Stage::Converting,
            "downloading" => Stage::Downloading,
            "done" => Stage::Done,
            "failed" => Stage::Failed,
            "duplicate" => Stage::Duplicate,
            _ => Stage::Pending,
        }
    }
}

/// One video and its way to an MP3, as the window shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Item {
    pub id: i64,
    pub sha256: String,
    pub path: PathBuf,
    /// The file name shown to the user and sent to the server.
    pub name: String,
    pub size: u64,
    /// What its upload sent (the audio alone, or the whole file), once known.
    pub upload_bytes: Option<u64>,
    pub stage: Stage,
    /// Progress of the current stage, 0..1.
    pub progress: f64,
    pub job_id: Option<String>,
    pub mp3_path: Option<PathBuf>,
    pub error: Option<String>,
    /// What else the user should know: the video moved to the Trash, an
    /// earlier MP3 replaced, which MP3 a copy was converted as.
    pub note: Option<String>,
    /// For a failure: whether trying again can help (not for a file that
    /// is not media, or has no audio).
    pub retryable: bool,
    /// The technical text behind `error`, for "Details".
    pub detail: Option<String>,
    pub updated_at: i64,
}

/// What [`Store::add`] did with a finished file.
#[derive(Debug, Clone, PartialEq)]
pub enum Added {
    /// New content: queued.
    New(Item),
    /// Content taken before under another name (or the same file again):
    /// a [`Stage::Duplicate`] row, not uploaded.
    Copy(Item),
    /// This very file already has its row.
    Known,
}

pub(super) const SELECT: &str = "SELECT id, sha256, path, name, size, upload_bytes, state, progress, \
                      job_id, mp3_path, error, note, retryable, detail, updated_at FROM items";

pub(super) fn item(row: &sqlx::sqlite::SqliteRow) -> Item {
    Item {
        id: row.get("id"),
        sha256: row.get("sha256"),
        path: PathBuf::from(row.get::<String, _>("path")),
        name: row.get("name"),
        size: row.get::<i64, _>("size").max(0) as u64,
        upload_bytes: row
            .get::<Option<i64>, _>("upload_bytes")
            .map(|bytes| bytes.max(0) as u64),
        stage: Stage::parse(&row.get::<String, _>("state")),
        progress: row.get("progress"),
        job_id: row.get("job_id"),
        mp3_path: row.get::<Option<String>, _>("mp3_path").map(PathBuf::from),
        error: row.get("error"),
        note: row.get("note"),
        retryable: row.get("retryable"),
        detail: row.get("detail"),
        updated_at: row.get("updated_at"),
    }
}

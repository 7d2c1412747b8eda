//! A job as the JSON API shows it, and what an audio-only upload says of
//! the video it came from.

use serde::{Deserialize, Serialize};

use crate::options::Options;
use crate::state::JobState;

/// A job as the API shows it (the README's "JSON API"): ids as hex, times
/// in RFC 3339. The desktop app reads it back with the same type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = Job))]
pub struct JobView {
    /// 24 hex digits.
    pub id: String,
    /// The uploaded file's name.
    pub filename: String,
    pub state: JobState,
    /// 0 to 1 while converting; 1 when done.
    pub progress: f64,
    /// The uploaded video in GridFS `videos`.
    pub video_fid: String,
    /// The MP3 in GridFS `mp3s`, once done.
    pub mp3_fid: Option<String>,
    /// Why the conversion failed.
    pub error: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: String,
    /// RFC 3339, UTC.
    pub updated_at: String,
    /// The conversion options the job was created with (canonical form).
    pub options: Options,
    /// Seconds of audio, once converted.
    pub duration_s: Option<f64>,
    /// Size of the uploaded file.
    pub size_bytes: i64,
    /// The original video when the upload held only its audio (the desktop
    /// app's default); absent for whole uploads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceFile>,
    /// Whether `POST /api/v1/jobs/{id}/retry` can help: the job failed and
    /// its file was kept (a file that is not media is removed at once, and
    /// converting it again cannot succeed). Servers before this field: true.
    #[serde(default = "retry_may_help")]
    pub retryable: bool,
}

fn retry_may_help() -> bool {
    true
}

/// `{job}`: what creating, reading and retrying a job answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobEnvelope {
    pub job: JobView,
    /// Present (and true) when an upload was answered with the caller's
    /// existing job for the same content and options.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deduplicated: bool,
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `?before=` for the next page; null on the last one.
    pub next_before: Option<String>,
}

/// The largest original a `source` part may describe (1 TiB).
pub const MAX_SOURCE_BYTES: i64 = 1 << 40;

/// What an audio-only upload was copied out of: the upload's `source`
/// part, kept on the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    /// Size of the original video, at most [`MAX_SOURCE_BYTES`].
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 1_099_511_627_776_i64)
    )]
    pub size_bytes: i64,
    /// Hex SHA-256 of the original video.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-fA-F]{64}$"))]
    pub sha256: String,
}

impl SourceFile {
    /// Reads the upload's `source` part, `{"size_bytes": N, "sha256": "<64
    /// hex digits>"}` and nothing else; the reason when it is not that.
    pub fn from_json(value: &serde_json::Value) -> Result<SourceFile, String> {
        const SHAPE: &str =
            "`source` must be {\"size_bytes\": <bytes>, \"sha256\": \"<64 hex digits>\"}";
        let fields = value.as_object().ok_or(SHAPE)?;
        if fields.len() != 2 {
            return Err(SHAPE.into());
        }
        let size_bytes = fields
            .get("size_bytes")
            .and_then(serde_json::Value::as_i64)
            .filter(|size| *size >= 0)
            .ok_or(SHAPE)?;
        let sha256 = fields
            .get("sha256")
            .and_then(serde_json::Value::as_str)
            .filter(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or(SHAPE)?
            .to_ascii_lowercase();
        Ok(SourceFile { size_bytes, sha256 })
    }
}

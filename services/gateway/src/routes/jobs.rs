//! The jobs part of the JSON API: create (upload), list, get, delete,
//! retry and the MP3 download. Every error is JSON
//! `{"error": {"code", "message"}}`. A job that belongs to someone else is
//! a 404, as one that does not exist (ids cannot be probed), unless the
//! caller is an admin.

use std::collections::HashMap;

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use lapin::types::{AMQPValue, FieldTable};
use mongodb::bson::{Bson, oid::ObjectId};
use serde::Serialize;
use utoipa::ToSchema;

use common::jobs::{Job, JobState};

use crate::auth_client::Claims;
use crate::error::{ApiError, ErrorBody, JsonError};
use crate::state::AppState;

/// Page size when `?limit=` is not given.
const DEFAULT_LIMIT: i64 = 50;
/// The largest page a client may ask for.
const MAX_LIMIT: i64 = 200;

/// A job as the API shows it (the README's "JSON API"): ids as hex, times
/// in RFC 3339.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Job)]
pub struct JobView {
    /// 24 hex digits.
    pub id: String,
    /// The uploaded file's name.
    pub filename: String,
    #[schema(value_type = crate::openapi::JobStateName)]
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
    /// The conversion options the job was created with.
    #[schema(value_type = crate::openapi::ConversionOptions)]
    pub options: serde_json::Value,
    /// Seconds of audio, once converted.
    pub duration_s: Option<f64>,
    /// Size of the uploaded file.
    pub size_bytes: i64,
    /// The original video when the upload held only its audio (the desktop
    /// app's default); absent for whole uploads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceView>,
}

/// What an audio-only upload was copied out of.
#[derive(Debug, Serialize, ToSchema)]
pub struct SourceView {
    /// Size of the original video.
    pub size_bytes: i64,
    /// Hex SHA-256 of the original video.
    pub sha256: String,
}

/// `{job}`: what creating, reading and retrying a job answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobEnvelope {
    pub job: JobView,
    /// Present (and true) when an upload was answered with the caller's
    /// existing job for the same content and options.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub deduplicated: bool,
}

impl JobEnvelope {
    fn new(job: &Job) -> Self {
        Self {
            job: JobView::from(job),
            deduplicated: false,
        }
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `?before=` for the next page; null on the last one.
    pub next_before: Option<String>,
}

impl From<&Job> for JobView {
    fn from(job: &Job) -> Self {
        let time = |t: mongodb::bson::DateTime| t.try_to_rfc3339_string().unwrap_or_default();
        JobView {
            id: job.id.to_hex(),
            filename: job.filename.clone(),
            state: job.state,
            progress: job.progress,
            video_fid: job.video_fid.to_hex(),
            mp3_fid: job.mp3_fid.map(|fid| fid.to_hex()),
            error: job.error.clone(),
            created_at: time(job.created_at),
            updated_at: time(job.updated_at),
            options: Bson::Document(job.options.clone()).into_relaxed_extjson(),
            duration_s: job.duration_s,
            size_bytes: job.size_bytes,
            source: job.source.as_ref().map(|source| SourceView {
                size_bytes: source.size_bytes,
                sha256: source.sha256.clone(),
            }),
        }
    }
}

/// `POST /api/v1/jobs`: 202 `{job}` for a new job, 200 `{job, deduplicated:
/// true}` when the caller already had this content queued or converted.
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "jobs",
    request_body(content = crate::openapi::UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 202, description = "Stored and queued for conversion", body = JobEnvelope),
        (status = 200, description = "The caller's existing job for the same content and options (`deduplicated: true`); the upload was dropped", body = JobEnvelope),
        (status = 400, description = "Not exactly one file part, an empty file, a malformed body (part headers over 16 KiB, more than 16 parts) or invalid options (the message names the field)", body = ErrorBody),
        (status = 401, description = "No Bearer token", body = ErrorBody),
        (status = 403, description = "Invalid or expired token", body = ErrorBody),
        (status = 408, description = "The body stalled (UPLOAD_IDLE_SECS) or came slower than UPLOAD_MIN_RATE; nothing is kept", body = ErrorBody),
        (status = 413, description = "Larger than MAX_UPLOAD_BYTES (a declared Content-Length is refused before the body); nothing is kept", body = ErrorBody),
        (status = 415, description = "Clearly not media by its first bytes", body = ErrorBody),
        (status = 503, description = "Storage or broker down; nothing is kept", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, JsonError> {
    let claims = state.auth.validate_bearer(&headers).await?;
    let accepted = super::upload::accept(&state, &claims, &headers, multipart, true).await?;
    let body = JobEnvelope {
        deduplicated: accepted.deduplicated,
        ..JobEnvelope::new(&accepted.job)
    };
    let status = if accepted.deduplicated {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(body)).into_response())
}

/// `GET /api/v1/jobs?limit=&before=|page=`: the caller's jobs (everyone's
/// for an admin), newest first. `next_before` continues the listing.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    params(
        ("limit" = Option<i64>, Query, description = "Jobs per page, 1 to 200 (default 50)"),
        ("before" = Option<String>, Query, description = "Only jobs older than this job id (the previous page's `next_before`)"),
        ("page" = Option<u64>, Query, description = "Page number from 1 (instead of `before`)"),
    ),
    responses(
        (status = 200, description = "The caller's jobs (everyone's for an admin), newest first", body = JobList),
        (status = 400, description = "A bad `limit`, `page` or `before`", body = ErrorBody),
        (status = 401, description = "No Bearer token", body = ErrorBody),
        (status = 403, description = "Invalid or expired token", body = ErrorBody),
        (status = 503, description = "MongoDB down", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, JsonError> {
    let claims = state.auth.validate_bearer(&headers).await?;
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|limit| (1..=MAX_LIMIT).contains(limit))
            .ok_or_else(|| {
                ApiError::BadRequest(format!("`limit` must be a number from 1 to {MAX_LIMIT}"))
            })?,
    };
    let page = match query.get("page") {
        None => 1,
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|page| *page >= 1)
            .ok_or_else(|| ApiError::BadRequest("`page` must be a number from 1".into()))?,
    };
    let before = match query.get("before") {
        None => None,
        Some(text) => {
            let id = common::gridfs::parse_fid(text)
                .ok_or_else(|| ApiError::BadRequest("`before` must be a job id".into()))?;
            Some(owned_job(&state, &claims, id).await?)
        }
    };
    if before.is_some() && query.contains_key("page") {
        return Err(ApiError::BadRequest("use either `before` or `page`, not both".into()).into());
    }
    let owner = (!claims.admin).then_some(claims.username.as_str());
    let skip = (page - 1).saturating_mul(limit.unsigned_abs());
    let jobs = state
        .mongo
        .jobs
        .list(owner, before.as_ref(), skip, limit)
        .await
        .map_err(ApiError::from)?;
    let next_before = (jobs.len() as i64 == limit)
        .then(|| jobs.last().map(|job| job.id.to_hex()))
        .flatten();
    let jobs = jobs.iter().map(JobView::from).collect();
    Ok(Json(JobList { jobs, next_before }).into_response())
}

/// `GET /api/v1/jobs/{id}`.
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id (24 hex digits)")),
    responses(
        (status = 200, description = "The job", body = JobEnvelope),
        (status = 401, description = "No Bearer token", body = ErrorBody),
        (status = 403, description = "Invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such job, or someone else's", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, JsonError> {
    let claims = state.auth.validate_bearer(&headers).await?;
    let job = owned_job(&state, &claims, job_id(&id)?).await?;
    Ok(Json(JobEnvelope::new(&job)).into_response())
}

/// `DELETE /api/v1/jobs/{id}`: the job, its video and its MP3; 204.
#[utoipa::path(
    delete,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id (24 hex digits)")),
    responses(
        (status = 204, description = "The job, its video and its MP3 are gone"),
        (status = 401, description = "No Bearer token", body = ErrorBody),
        (status = 403, description = "Invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such job, or someone else's", body = ErrorBody),
        (status = 503, description = "MongoDB down", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, JsonError> {
    let claims = state.auth.validate_bearer(&headers).await?;
    let job = owned_job(&state, &claims, job_id(&id)?).await?;
    // The record goes first, atomically, and its files as it named them
    // then: a conversion that ends later finds no job to finish, removes
    // its own MP3 and sends nothing.
    let Some(job) = state
        .mongo
        .jobs
        .take(job.id)
        .await
        .map_err(ApiError::from)?
    else {
        return Err(ApiError::NotFound.into());
    };
    common::gridfs::delete(&state.videos_bucket(), job.video_fid)
        .await
        .map_err(ApiError::from)?;
    if let Some(mp3_fid) = job.mp3_fid {
        common::gridfs::delete(&state.mp3s_bucket(), mp3_fid)
            .await
            .map_err(ApiError::from)?;
    }
    tracing::info!(job_id = %job.id, user = %claims.username, "job deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/jobs/{id}/retry`: a failed job goes back to the queue
/// (202 `{job}`); any other state is a 409.
#[utoipa::path(
    post,
    path = "/api/v1/jobs/{id}/retry",
    tag = "jobs",
    params(("id" = String, Path, description = "Job id (24 hex digits)")),
    responses(
        (status = 202, description = "Queued again", body = JobEnvelope),
        (status = 401, description = "No Bearer token", body = ErrorBody),
        (status = 403, description = "Invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such job, or someone else's", body = ErrorBody),
        (status = 409, description = "The job has not failed", body = ErrorBody),
        (status = 503, description = "Storage or broker down", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, JsonError> {
    let claims = state.auth.validate_bearer(&headers).await?;
    let job = owned_job(&state, &claims, job_id(&id)?).await?;
    let not_failed = || {
        ApiError::Conflict(format!(
            "only a failed job can be retried; this one is {}",
            state_name(job.state)
        ))
    };
    if job.state != JobState::Failed {
        return Err(not_failed().into());
    }
    if !state
        .mongo
        .jobs
        .requeue_failed(job.id)
        .await
        .map_err(ApiError::from)?
    {
        return Err(not_failed().into());
    }
    if let Ok(Some(queued)) = state.mongo.jobs.get(job.id).await {
        crate::events::announce(&state, &queued, "queued").await;
    }
    let message = job.video_message();
    let mut amqp_headers = FieldTable::default();
    if let Some(request_id) = headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        amqp_headers.insert(
            "x-request-id".into(),
            AMQPValue::LongString(request_id.into()),
        );
    }
    if let Err(err) = state
        .publisher
        .publish(&state.video_queue, &message.to_vec(), amqp_headers)
        .await
    {
        // Not queued after all: the job stays failed, with its reason.
        let reason = job.error.as_deref().unwrap_or("retry could not be queued");
        let _ = state.mongo.jobs.mark_failed(job.id, reason).await;
        return Err(ApiError::from(err).into());
    }
    tracing::info!(job_id = %job.id, user = %claims.username, "failed job queued again");
    let job = state
        .mongo
        .jobs
        .get(job.id)
        .await
        .map_err(ApiError::from)?
        .ok_or(ApiError::NotFound)?;
    Ok((StatusCode::ACCEPTED, Json(JobEnvelope::new(&job))).into_response())
}

/// `GET /api/v1/jobs/{id}/mp3`: as the classic download (Range, ETag).
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}/mp3",
    tag = "jobs",
    params(
        ("id" = String, Path, description = "Job id (24 hex digits)"),
        ("Range" = Option<String>, Header, description = "One byte range: `bytes=0-99`, `bytes=100-`, `bytes=-100`"),
    ),
    responses(
        (status = 200, description = "The MP3, with Content-Length, ETag and a Content-Disposition naming the original file with `.mp3`", content_type = "audio/mpeg", body = crate::openapi::Mp3),
        (status = 206, description = "The requested range (Content-Range); with If-Range, only while the ETag still matches (else 200 with the whole file)", content_type = "audio/mpeg", body = crate::openapi::Mp3),
        (status = 304, description = "If-None-Match names the current ETag"),
        (status = 401, description = "No Bearer token", body = ErrorBody),
        (status = 403, description = "Invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such job, or someone else's", body = ErrorBody),
        (status = 409, description = "The MP3 is not ready yet", body = ErrorBody),
        (status = 412, description = "If-Match names another ETag", body = ErrorBody),
        (status = 416, description = "The range lies outside the file (Content-Range: bytes */length)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn mp3(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, JsonError> {
    let claims = state.auth.validate_bearer(&headers).await?;
    let job = owned_job(&state, &claims, job_id(&id)?).await?;
    let mp3_fid = job.mp3_fid.ok_or_else(|| {
        ApiError::Conflict(format!(
            "the MP3 is not ready: the job is {}",
            state_name(job.state)
        ))
    })?;
    Ok(super::download::serve_mp3(&state, mp3_fid, &claims, &headers).await?)
}

/// A malformed id is a 404, as an unknown one.
fn job_id(text: &str) -> Result<ObjectId, ApiError> {
    common::gridfs::parse_fid(text).ok_or(ApiError::NotFound)
}

/// The job if the caller may see it: its owner, or an admin.
async fn owned_job(state: &AppState, claims: &Claims, id: ObjectId) -> Result<Job, ApiError> {
    let job = state.mongo.jobs.get(id).await?.ok_or(ApiError::NotFound)?;
    if job.owner != claims.username && !claims.admin {
        return Err(ApiError::NotFound);
    }
    Ok(job)
}

fn state_name(state: JobState) -> &'static str {
    match state {
        JobState::Queued => "queued",
        JobState::Converting => "converting",
        JobState::Done => "done",
        JobState::Failed => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{DateTime, doc};

    #[test]
    fn a_job_shows_exactly_the_design_fields() {
        let job = Job {
            id: ObjectId::new(),
            owner: "a@example.com".into(),
            filename: "clip.mp4".into(),
            state: JobState::Done,
            progress: 1.0,
            video_fid: ObjectId::new(),
            mp3_fid: Some(ObjectId::new()),
            error: None,
            created_at: DateTime::from_millis(0),
            updated_at: DateTime::from_millis(1_000),
            options: doc! { "quality": "V6", "sample_rate": 44_100_i64 },
            notify_email: true,
            duration_s: Some(4.0),
            size_bytes: 1234,
            sha256: "ab".into(),
            notified_at: None,
            published_at: None,
            failure_notified_at: None,
            mp3_attempts: Vec::new(),
            source: None,
        };

        let json = serde_json::to_value(JobView::from(&job)).expect("json");

        let mut keys: Vec<&str> = json
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "created_at",
                "duration_s",
                "error",
                "filename",
                "id",
                "mp3_fid",
                "options",
                "progress",
                "size_bytes",
                "state",
                "updated_at",
                "video_fid"
            ]
        );
        assert_eq!(json["id"], job.id.to_hex());
        assert_eq!(json["state"], "done");
        assert_eq!(json["created_at"], "1970-01-01T00:00:00Z");
        assert_eq!(
            json["options"],
            serde_json::json!({"quality": "V6", "sample_rate": 44100})
        );
    }
}

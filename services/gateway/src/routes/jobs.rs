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
use mongodb::bson::oid::ObjectId;
use utoipa::IntoParams;

use common::jobs::Job;
use contract::{JobEnvelope, JobList, JobState};

use crate::claims::{Bearer, Claims};
use contract::ErrorBody;

use crate::error::{ApiError, JsonError};
use crate::state::AppState;

/// Page size when `?limit=` is not given.
const DEFAULT_LIMIT: i64 = 50;
/// The largest page a client may ask for.
const MAX_LIMIT: i64 = 200;

/// `{job}` for a job.
fn envelope(job: &Job) -> JobEnvelope {
    JobEnvelope {
        job: job.view(),
        deduplicated: false,
    }
}

/// `POST /api/v1/jobs`: 202 `{job}` for a new job, 200 `{job, deduplicated:
/// true}` when the caller already had this content queued or converted.
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "jobs",
    request_body(content = crate::schemas::UploadForm, content_type = "multipart/form-data"),
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
    Bearer(claims): Bearer,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, JsonError> {
    let accepted = crate::uploads::accept(&state, &claims, &headers, multipart, true).await?;
    let body = JobEnvelope {
        deduplicated: accepted.deduplicated,
        ..envelope(&accepted.job)
    };
    let status = if accepted.deduplicated {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(body)).into_response())
}

/// The query of `GET /api/v1/jobs`; `before` and `page` exclude each other.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Jobs per page, 1 to 200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<i64>,
    /// Only jobs older than this job id (the previous page's `next_before`).
    #[param(pattern = "^[0-9a-fA-F]{24}$")]
    pub before: Option<String>,
    /// Page number from 1 (instead of `before`).
    #[param(schema_with = page_schema)]
    pub page: Option<u64>,
}

/// `page`: any `u64` from 1 (utoipa would say int64, whose range is smaller).
fn page_schema() -> utoipa::openapi::schema::Object {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .minimum(Some(1))
        .maximum(Some(u64::MAX))
        .build()
}

impl ListQuery {
    /// Reads the query string's fields, saying which one is wrong.
    fn read(query: &HashMap<String, String>) -> Result<ListQuery, ApiError> {
        let limit = query
            .get("limit")
            .map(|text| {
                text.parse::<i64>()
                    .ok()
                    .filter(|limit| (1..=MAX_LIMIT).contains(limit))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "`limit` must be a number from 1 to {MAX_LIMIT}"
                        ))
                    })
            })
            .transpose()?;
        let page = query
            .get("page")
            .map(|text| {
                text.parse::<u64>()
                    .ok()
                    .filter(|page| *page >= 1)
                    .ok_or_else(|| ApiError::BadRequest("`page` must be a number from 1".into()))
            })
            .transpose()?;
        let before = query.get("before").cloned();
        Ok(ListQuery {
            limit,
            before,
            page,
        })
    }
}

/// `GET /api/v1/jobs?limit=&before=|page=`: the caller's jobs (everyone's
/// for an admin), newest first. `next_before` continues the listing.
#[utoipa::path(
    get,
    path = "/api/v1/jobs",
    tag = "jobs",
    params(ListQuery),
    responses(
        (status = 200, description = "The caller's jobs (everyone's for an admin), newest first", body = JobList),
        (status = 400, description = "A bad `limit`, `page` or `before`", body = ErrorBody),
        (status = 401, description = "No Bearer token", body = ErrorBody),
        (status = 403, description = "Invalid or expired token", body = ErrorBody),
        (status = 404, description = "`before` names no job the caller may see", body = ErrorBody),
        (status = 503, description = "MongoDB down", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Bearer(claims): Bearer,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, JsonError> {
    let query = ListQuery::read(&query)?;
    let (limit, page) = (
        query.limit.unwrap_or(DEFAULT_LIMIT),
        query.page.unwrap_or(1),
    );
    let before = match &query.before {
        None => None,
        Some(text) => {
            let id = common::gridfs::parse_fid(text)
                .ok_or_else(|| ApiError::BadRequest("`before` must be a job id".into()))?;
            Some(owned_job(&state, &claims, id).await?)
        }
    };
    // After `before` is known to name a job: a bad id is said first.
    if before.is_some() && query.page.is_some() {
        return Err(ApiError::BadRequest("use either `before` or `page`, not both".into()).into());
    }
    let owner = (!claims.admin).then_some(claims.username.as_str());
    let skip = (page - 1).saturating_mul(limit.unsigned_abs());
    // MongoDB counts a skip in an i64: a page past that is past every job.
    let jobs = if i64::try_from(skip).is_err() {
        Vec::new()
    } else {
        state
            .mongo
            .jobs
            .list(owner, before.as_ref(), skip, limit)
            .await
            .map_err(ApiError::from)?
    };
    let next_before = (jobs.len() as i64 == limit)
        .then(|| jobs.last().map(|job| job.id.to_hex()))
        .flatten();
    let jobs = jobs.iter().map(Job::view).collect();
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
    Bearer(claims): Bearer,
    Path(id): Path<String>,
) -> Result<Response, JsonError> {
    let job = owned_job(&state, &claims, job_id(&id)?).await?;
    Ok(Json(envelope(&job)).into_response())
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
    Bearer(claims): Bearer,
    Path(id): Path<String>,
) -> Result<Response, JsonError> {
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
    // The MP3 and whatever other conversion attempts stored (one killed
    // mid-way leaves its file to whoever finishes the job, and nobody will).
    let mut mp3s: Vec<_> = job.mp3_attempts.clone();
    mp3s.extend(job.mp3_fid);
    mp3s.sort();
    mp3s.dedup();
    for mp3_fid in mp3s {
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
        (status = 409, description = "The job has not failed, was retried MAX_RETRIES_PER_JOB times already, or its file was removed as not media", body = ErrorBody),
        (status = 503, description = "Storage or broker down", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn retry(
    State(state): State<AppState>,
    Bearer(claims): Bearer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, JsonError> {
    let job = owned_job(&state, &claims, job_id(&id)?).await?;
    let not_failed = || {
        ApiError::Conflict(format!(
            "only a failed job can be retried; this one is {}",
            job.state
        ))
    };
    if job.state != JobState::Failed {
        return Err(not_failed().into());
    }
    if job.input_removed {
        return Err(ApiError::Conflict(
            "this file could not be read as video or audio and was removed: a retry cannot help; \
             upload another file"
                .into(),
        )
        .into());
    }
    if job.retries >= state.max_retries_per_job {
        return Err(ApiError::Conflict(format!(
            "this job was tried again {} times already, the most allowed: upload the file again \
             if you changed something",
            job.retries
        ))
        .into());
    }
    if !state
        .mongo
        .jobs
        .requeue_failed(job.id, state.max_retries_per_job)
        .await
        .map_err(ApiError::from)?
    {
        return Err(not_failed().into());
    }
    if let Ok(Some(queued)) = state.mongo.jobs.get(job.id).await {
        crate::queue::announce(&state, &queued, JobState::Queued).await;
    }
    if let Err(err) = crate::queue::publish(&state, &job, crate::queue::request_id(&headers)).await
    {
        // Not queued after all: the job stays failed, with its reason.
        let reason = job.error.as_deref().unwrap_or("retry could not be queued");
        let _ = state.mongo.jobs.mark_failed(job.id, reason).await;
        return Err(err.into());
    }
    tracing::info!(job_id = %job.id, user = %claims.username, "failed job queued again");
    let job = state
        .mongo
        .jobs
        .get(job.id)
        .await
        .map_err(ApiError::from)?
        .ok_or(ApiError::NotFound)?;
    Ok((StatusCode::ACCEPTED, Json(envelope(&job))).into_response())
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
        (status = 200, description = "The MP3, with Content-Length, ETag and a Content-Disposition naming the original file with `.mp3`", content_type = "audio/mpeg", body = crate::schemas::Mp3),
        (status = 206, description = "The requested range (Content-Range); with If-Range, only while the ETag still matches (else 200 with the whole file)", content_type = "audio/mpeg", body = crate::schemas::Mp3),
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
    Bearer(claims): Bearer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, JsonError> {
    let job = owned_job(&state, &claims, job_id(&id)?).await?;
    let mp3_fid = job.mp3_fid.ok_or_else(|| {
        ApiError::Conflict(format!("the MP3 is not ready: the job is {}", job.state))
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

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

use common::jobs::{Job, JobState};
use common::messages::ConversionMessage;

use crate::auth_client::Claims;
use crate::error::{ApiError, JsonError};
use crate::state::AppState;

/// Page size when `?limit=` is not given.
const DEFAULT_LIMIT: i64 = 50;
/// The largest page a client may ask for.
const MAX_LIMIT: i64 = 200;

/// A job as the API shows it (DESIGN.md): ids as hex, times in RFC 3339.
#[derive(Debug, Serialize)]
pub struct JobView {
    pub id: String,
    pub filename: String,
    pub state: JobState,
    pub progress: f64,
    pub video_fid: String,
    pub mp3_fid: Option<String>,
    pub error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub options: serde_json::Value,
    pub duration_s: Option<f64>,
    pub size_bytes: i64,
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
        }
    }
}

/// `POST /api/v1/jobs`: 202 `{job}` for a new job, 200 `{job, deduplicated:
/// true}` when the caller already had this content queued or converted.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, JsonError> {
    let claims = state.auth.validate(&headers).await?;
    let accepted = super::upload::accept(&state, &claims, &headers, multipart, true).await?;
    let job = JobView::from(&accepted.job);
    Ok(if accepted.deduplicated {
        (
            StatusCode::OK,
            Json(serde_json::json!({ "job": job, "deduplicated": true })),
        )
            .into_response()
    } else {
        (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({ "job": job })),
        )
            .into_response()
    })
}

/// `GET /api/v1/jobs?limit=&before=|page=`: the caller's jobs (everyone's
/// for an admin), newest first. `next_before` continues the listing.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, JsonError> {
    let claims = state.auth.validate(&headers).await?;
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
    let views: Vec<JobView> = jobs.iter().map(JobView::from).collect();
    Ok(Json(serde_json::json!({ "jobs": views, "next_before": next_before })).into_response())
}

/// `GET /api/v1/jobs/{id}`.
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, JsonError> {
    let claims = state.auth.validate(&headers).await?;
    let job = owned_job(&state, &claims, job_id(&id)?).await?;
    Ok(Json(serde_json::json!({ "job": JobView::from(&job) })).into_response())
}

/// `DELETE /api/v1/jobs/{id}`: the job, its video and its MP3; 204.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, JsonError> {
    let claims = state.auth.validate(&headers).await?;
    let job = owned_job(&state, &claims, job_id(&id)?).await?;
    common::gridfs::delete(&state.videos_bucket(), job.video_fid)
        .await
        .map_err(ApiError::from)?;
    if let Some(mp3_fid) = job.mp3_fid {
        common::gridfs::delete(&state.mp3s_bucket(), mp3_fid)
            .await
            .map_err(ApiError::from)?;
    }
    state
        .mongo
        .jobs
        .delete(job.id)
        .await
        .map_err(ApiError::from)?;
    tracing::info!(job_id = %job.id, user = %claims.username, "job deleted");
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /api/v1/jobs/{id}/retry`: a failed job goes back to the queue
/// (202 `{job}`); any other state is a 409.
pub async fn retry(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, JsonError> {
    let claims = state.auth.validate(&headers).await?;
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
    let message = ConversionMessage {
        video_fid: job.video_fid.to_hex(),
        mp3_fid: None,
        username: job.owner.clone(),
        job_id: job.id.to_hex(),
        filename: job.filename.clone(),
        options: Bson::Document(job.options.clone()).into_relaxed_extjson(),
        notify_email: job.notify_email,
        duration_s: None,
    };
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
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "job": JobView::from(&job) })),
    )
        .into_response())
}

/// `GET /api/v1/jobs/{id}/mp3`: as the classic download (Range, ETag).
pub async fn mp3(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, JsonError> {
    let claims = state.auth.validate(&headers).await?;
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

//! `POST /upload`: one multipart file, streamed into GridFS chunk by chunk
//! (SHA-256 and size computed on the way), then a job record and a
//! broker-confirmed message on the `video` queue. If anything after the
//! upload fails, the stored video and the job are removed again: a client
//! that does not get `success!` has left nothing behind. A file that is
//! clearly not media by its first bytes is refused (415) before anything
//! is stored.
//!
//! A request can also be dropped half-way: the client goes away, or the
//! shutdown grace runs out. While the body is being received, a guard then
//! removes what was stored; once the file is complete, the rest (job record,
//! confirmed publish, or the clean-up after a failure) runs as a background
//! task that finishes even if its request is gone, and shutdown waits for it.

use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{Multipart, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures::AsyncWriteExt;
use lapin::types::{AMQPValue, FieldTable};
use mongodb::bson::{Bson, doc, oid::ObjectId};
use sha2::{Digest, Sha256};

use common::jobs::Job;
use common::jobs::SourceFile;
use common::messages::ConversionMessage;
use common::options::Options;

use crate::auth_client::Claims;
use crate::error::ApiError;
use crate::state::AppState;

/// A video that is safely in GridFS.
struct StoredVideo {
    fid: ObjectId,
    filename: String,
    size: u64,
    sha256: String,
}

/// What a successful upload led to.
pub struct Accepted {
    pub job: Job,
    /// The same user already had a live job for the same content and
    /// options: this is that job, and the new upload was dropped.
    pub deduplicated: bool,
}

pub async fn upload(
    State(state): State<AppState>,
    headers: HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Response, ApiError> {
    // Credentials are checked before the body is looked at.
    let claims = state.auth.validate(&headers).await?;
    let accepted = accept(&state, &claims, &headers, multipart, false).await?;

    let mut response = "success!".into_response();
    let response_headers = response.headers_mut();
    for (name, value) in [
        ("x-job-id", accepted.job.id.to_hex()),
        ("x-video-fid", accepted.job.video_fid.to_hex()),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response_headers.insert(HeaderName::from_static(name), value);
        }
    }
    if accepted.deduplicated {
        response_headers.insert(
            HeaderName::from_static("x-deduplicated"),
            HeaderValue::from_static("true"),
        );
    }
    Ok(response)
}

/// Receives one upload for an authenticated caller: streams the file part
/// into GridFS, then either answers with the caller's live job for the same
/// content and options, or records a new job and queues it. With
/// `with_options`, a non-file part named `options` carries the conversion
/// options as JSON (validated: a bad one is a 400 naming the field), and
/// one named `source` the size and SHA-256 of the original when the file
/// is only its audio; the classic route ignores non-file parts, as the
/// original did.
pub async fn accept(
    state: &AppState,
    claims: &Claims,
    headers: &HeaderMap,
    multipart: Result<Multipart, MultipartRejection>,
    with_options: bool,
) -> Result<Accepted, ApiError> {
    // As in the original, a body without a readable file part (not multipart
    // at all, or an empty form) means "no file".
    let multipart = multipart.map_err(|_| ApiError::ExactlyOneFile)?;
    let _in_flight = InFlight::start();
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();

    let job_id = ObjectId::new();
    let fid = ObjectId::new();
    // Held until the job is recorded or the leftovers are gone; if this
    // gateway dies first, another one removes the upload.
    let lease = state.leases.take(fid).await;
    // Dropped before `disarm` (the request was cancelled): removes the file.
    let leftovers = Leftovers::arm(state, fid, lease);
    let received = receive(state, claims, multipart, with_options, job_id, fid).await;
    let lease = leftovers.disarm();
    let committing = received.map(|(video, options, source)| {
        let (owned_state, claims, headers) = (state.clone(), claims.clone(), headers.clone());
        state.background.spawn(async move {
            let committed = commit(
                owned_state,
                claims,
                headers,
                video,
                Wanted { options, source },
                request_id,
                job_id,
            )
            .await;
            drop(lease);
            committed
        })
    });
    committing?
        .await
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("upload commit task failed: {err}")))?
}

/// Reads the multipart body: the one file part streamed into GridFS as
/// `fid`, and with `with_options` the `options` and `source` parts. On an
/// error nothing is left stored.
async fn receive(
    state: &AppState,
    claims: &Claims,
    mut multipart: Multipart,
    with_options: bool,
    job_id: ObjectId,
    fid: ObjectId,
) -> Result<(StoredVideo, serde_json::Value, Option<SourceFile>), ApiError> {
    let mut stored: Option<StoredVideo> = None;
    let mut options = serde_json::json!({});
    let mut source = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(err) => {
                discard(state, stored.as_ref()).await;
                let cut = crate::body_guard::BodyLimit::behind(&err).is_some();
                return Err(match stored {
                    None if !cut && err.status() != axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                        ApiError::ExactlyOneFile
                    }
                    _ => multipart_error(err, state.max_upload_bytes),
                });
            }
        };
        if field.file_name().is_none() {
            let read = match field.name() {
                Some("options") if with_options => read_options(field).await.map(|v| options = v),
                Some("source") if with_options => {
                    read_source(field).await.map(|s| source = Some(s))
                }
                _ => Ok(()),
            };
            if let Err(err) = read {
                discard(state, stored.as_ref()).await;
                return Err(err);
            }
            continue;
        }
        if stored.is_some() {
            discard(state, stored.as_ref()).await;
            return Err(ApiError::ExactlyOneFile);
        }
        match store(state, field, claims, job_id, fid).await {
            Ok(video) => stored = Some(video),
            // What the client is still sending is drained by `crate::linger`.
            Err(err) => return Err(err),
        }
    }
    let video = stored.ok_or(ApiError::ExactlyOneFile)?;
    Ok((video, options, source))
}

/// What the uploader asked for beside the file.
struct Wanted {
    options: serde_json::Value,
    source: Option<SourceFile>,
}

/// What follows a complete upload: the caller's existing job for the same
/// content, or a new job record and its confirmed message. Owns its data so
/// it can run apart from the request.
async fn commit(
    state: AppState,
    claims: Claims,
    headers: HeaderMap,
    video: StoredVideo,
    wanted: Wanted,
    request_id: String,
    job_id: ObjectId,
) -> Result<Accepted, ApiError> {
    let (state, claims) = (&state, &claims);
    let options = &wanted.options;
    if let Some(job) = same_job(state, claims, &video, options).await {
        discard(state, Some(&video)).await;
        tracing::info!(job_id = %job.id, user = %claims.username, "repeated upload answered with the existing job");
        return Ok(Accepted {
            job,
            deduplicated: true,
        });
    }

    let notify_email = state.auth.wants_email(&headers).await;
    let job = match enqueue(
        state,
        claims,
        job_id,
        &video,
        &wanted,
        &request_id,
        notify_email,
    )
    .await
    {
        Ok(job) => job,
        Err(err) => {
            discard(state, Some(&video)).await;
            let _ = state.mongo.jobs.delete(job_id).await;
            return Err(err);
        }
    };
    metrics::counter!("gateway_upload_bytes_total").increment(video.size);
    tracing::info!(job_id = %job_id, video_fid = %video.fid, user = %claims.username, size = video.size, "video queued");
    Ok(Accepted {
        job,
        deduplicated: false,
    })
}

/// Removes a video whose upload was dropped half-way (the client went away,
/// or the shutdown grace ran out), unless disarmed first. The removal runs
/// on the gateway's background tracker, which shutdown waits for.
struct Leftovers {
    state: Option<AppState>,
    fid: ObjectId,
    /// Given back once the clean-up is done (or handed over by `disarm`).
    lease: Option<crate::leases::Lease>,
}

impl Leftovers {
    fn arm(state: &AppState, fid: ObjectId, lease: crate::leases::Lease) -> Self {
        Leftovers {
            state: Some(state.clone()),
            fid,
            lease: Some(lease),
        }
    }

    /// The upload ended on its own terms: it cleaned up or hands over (with
    /// the lease).
    fn disarm(mut self) -> Option<crate::leases::Lease> {
        self.state = None;
        self.lease.take()
    }
}

/// A chunk write cut off by the drop may still reach the server after the
/// first sweep: the second one catches it.
const SECOND_SWEEP: std::time::Duration = std::time::Duration::from_millis(500);

impl Drop for Leftovers {
    fn drop(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        // No runtime means the process is going down; nothing can run.
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        let (fid, lease) = (self.fid, self.lease.take());
        state.background.clone().spawn(async move {
            let bucket = state.videos_bucket();
            let first = common::gridfs::delete(&bucket, fid).await;
            tokio::time::sleep(SECOND_SWEEP).await;
            let second = common::gridfs::delete(&bucket, fid).await;
            match first.and(second) {
                Ok(()) => tracing::info!(video_fid = %fid, "removed the video of a dropped upload"),
                Err(err) => tracing::error!(video_fid = %fid, error = %err, "could not remove the video of a dropped upload"),
            }
            drop(lease);
        });
    }
}

/// Counts an upload in `gateway_uploads_in_flight` while it is alive,
/// however it ends (also when the client goes away and the request is dropped).
struct InFlight;

impl InFlight {
    fn start() -> Self {
        metrics::gauge!("gateway_uploads_in_flight").increment(1.0);
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("gateway_uploads_in_flight").decrement(1.0);
    }
}

/// Largest accepted `options` or `source` part.
const MAX_OPTIONS_BYTES: usize = 64 * 1024;

/// A small JSON text part, read whole; errors name the part.
async fn read_json_part(
    mut field: Field<'_>,
    name: &str,
    invalid: fn(String) -> ApiError,
) -> Result<serde_json::Value, ApiError> {
    let mut text = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|err| {
        ApiError::BadRequest(format!("malformed multipart body: {}", err.body_text()))
    })? {
        if text.len() + chunk.len() > MAX_OPTIONS_BYTES {
            return Err(invalid(format!(
                "`{name}` must be at most {MAX_OPTIONS_BYTES} bytes"
            )));
        }
        text.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&text)
        .map_err(|err| invalid(format!("`{name}` is not valid JSON: {err}")))
}

/// Reads and validates the `source` part.
async fn read_source(field: Field<'_>) -> Result<SourceFile, ApiError> {
    let value = read_json_part(field, "source", ApiError::BadRequest).await?;
    SourceFile::from_json(&value).map_err(ApiError::BadRequest)
}

/// Reads and validates the `options` part.
async fn read_options(field: Field<'_>) -> Result<serde_json::Value, ApiError> {
    let value = read_json_part(field, "options", ApiError::InvalidOptions).await?;
    // Stored in the canonical form: `"v0"` and `"V0"` are one job's options.
    Options::from_json(&value)
        .map(|options| options.to_json())
        .map_err(|err| ApiError::InvalidOptions(err.to_string()))
}

/// The caller's queued, converting or finished job for the same content
/// with equivalent options, if there is one. A lookup failure only means no
/// deduplication.
async fn same_job(
    state: &AppState,
    claims: &Claims,
    video: &StoredVideo,
    options: &serde_json::Value,
) -> Option<Job> {
    let wanted = Options::from_json(options).ok()?;
    let candidates = match state
        .mongo
        .jobs
        .live_with_content(&claims.username, &video.sha256)
        .await
    {
        Ok(candidates) => candidates,
        Err(err) => {
            tracing::warn!(error = %err, "could not look for a duplicate job");
            return None;
        }
    };
    candidates.into_iter().find(|job| {
        let theirs = Bson::Document(job.options.clone()).into_relaxed_extjson();
        Options::from_json(&theirs).is_ok_and(|theirs| theirs == wanted)
    })
}

/// Streams one file part into GridFS `videos`, enforcing the size limit.
async fn store(
    state: &AppState,
    mut field: Field<'_>,
    claims: &Claims,
    job_id: ObjectId,
    fid: ObjectId,
) -> Result<StoredVideo, ApiError> {
    let filename = field.file_name().unwrap_or("video").to_owned();
    let content_type = field
        .content_type()
        .unwrap_or("application/octet-stream")
        .to_owned();
    // The first bytes decide whether this can be media at all; nothing is
    // stored before they have been looked at.
    let mut prefix = Vec::with_capacity(crate::sniff::SNIFF_LEN);
    while prefix.len() < crate::sniff::SNIFF_LEN {
        match field
            .chunk()
            .await
            .map_err(|err| multipart_error(err, state.max_upload_bytes))?
        {
            Some(chunk) => prefix.extend_from_slice(&chunk),
            None => break,
        }
    }
    if prefix.is_empty() {
        // Nothing to convert; said now rather than as a failed job later.
        return Err(ApiError::BadRequest("the file is empty".into()));
    }
    if let Some(what) = crate::sniff::not_media(&prefix) {
        tracing::info!(filename = ?filename, kind = what, user = %claims.username, "refused an upload that is not media");
        return Err(ApiError::UnsupportedMediaType(what));
    }
    let bucket = state.videos_bucket();
    let mut sink = bucket
        .open_upload_stream(&filename)
        .id(Bson::ObjectId(fid))
        .metadata(doc! {
            "owner": &claims.username,
            "filename": &filename,
            "content_type": &content_type,
            "job_id": job_id,
        })
        .await
        .map_err(common::Error::from)?;

    let mut hasher = Sha256::new();
    let mut size: u64 = 0;
    let copied: Result<(), ApiError> = async {
        let mut first = (!prefix.is_empty()).then(|| bytes::Bytes::from(prefix));
        loop {
            let chunk = match first.take() {
                Some(chunk) => chunk,
                None => match field
                    .chunk()
                    .await
                    .map_err(|err| multipart_error(err, state.max_upload_bytes))?
                {
                    Some(chunk) => chunk,
                    None => break,
                },
            };
            size += chunk.len() as u64;
            if size > state.max_upload_bytes {
                return Err(ApiError::TooLarge(state.max_upload_bytes));
            }
            hasher.update(&chunk);
            sink.write_all(&chunk).await.map_err(storage_failed)?;
        }
        sink.close().await.map_err(storage_failed)
    }
    .await;
    if let Err(err) = copied {
        // Removes the chunks written so far.
        let _ = sink.abort().await;
        return Err(err);
    }

    let sha256 = hex(&hasher.finalize());
    let files = state
        .mongo
        .videos
        .collection::<mongodb::bson::Document>("fs.files");
    let recorded = files
        .update_one(
            doc! { "_id": fid },
            doc! { "$set": { "metadata.size": size as i64, "metadata.sha256": &sha256 } },
        )
        .await;
    let video = StoredVideo {
        fid,
        filename,
        size,
        sha256,
    };
    if let Err(err) = recorded {
        discard(state, Some(&video)).await;
        return Err(storage_failed(err));
    }
    Ok(video)
}

/// A failed write to GridFS: logged with its cause, answered 503.
fn storage_failed(err: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %err, "writing the upload to MongoDB failed");
    ApiError::Unavailable("storage (MongoDB)")
}

/// Records the job and hands the video to the converter.
async fn enqueue(
    state: &AppState,
    claims: &Claims,
    job_id: ObjectId,
    video: &StoredVideo,
    wanted: &Wanted,
    request_id: &str,
    notify_email: bool,
) -> Result<Job, ApiError> {
    let options = &wanted.options;
    let job = Job {
        source: wanted.source.clone(),
        options: mongodb::bson::to_document(options)
            .map_err(|err| ApiError::InvalidOptions(err.to_string()))?,
        notify_email,
        size_bytes: i64::try_from(video.size).unwrap_or(i64::MAX),
        sha256: video.sha256.clone(),
        ..Job::queued(job_id, &claims.username, &video.filename, video.fid)
    };
    state.mongo.jobs.insert(&job).await?;
    // Announced before the converter can pick it up, so live clients see
    // `queued` first.
    crate::events::announce(state, &job, "queued").await;
    let message = ConversionMessage {
        video_fid: video.fid.to_hex(),
        mp3_fid: None,
        username: claims.username.clone(),
        job_id: job_id.to_hex(),
        filename: video.filename.clone(),
        options: options.clone(),
        notify_email: job.notify_email,
        duration_s: None,
    };
    let mut headers = FieldTable::default();
    if !request_id.is_empty() {
        headers.insert(
            "x-request-id".into(),
            AMQPValue::LongString(request_id.into()),
        );
    }
    state
        .publisher
        .publish(&state.video_queue, &message.to_vec(), headers)
        .await?;
    Ok(job)
}

/// Best-effort removal of a stored video after a failed request.
async fn discard(state: &AppState, video: Option<&StoredVideo>) {
    if let Some(video) = video
        && let Err(err) = common::gridfs::delete(&state.videos_bucket(), video.fid).await
    {
        tracing::error!(video_fid = %video.fid, error = %err, "could not remove an orphaned video");
    }
}

fn multipart_error(err: MultipartError, limit: u64) -> ApiError {
    if let Some(cut) = crate::body_guard::BodyLimit::behind(&err) {
        return cut.into_api_error();
    }
    if err.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge(limit)
    } else {
        ApiError::BadRequest(format!("malformed multipart body: {}", err.body_text()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

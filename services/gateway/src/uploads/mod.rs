//! The upload service behind `POST /upload` and `POST /api/v1/jobs`: one multipart file, streamed into GridFS chunk by chunk
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

mod leftovers;
mod receive;

use leftovers::{InFlight, Leftovers};
use receive::receive;

use axum::extract::Multipart;
use axum::extract::multipart::MultipartRejection;
use axum::http::HeaderMap;
use mongodb::bson::oid::ObjectId;

use common::jobs::Job;
use common::jobs::SourceFile;
use contract::JobState;
use contract::options::Options;

use crate::claims::Claims;
use crate::error::ApiError;
use crate::state::AppState;

/// A video that is safely in GridFS.
pub(super) struct StoredVideo {
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
    let job_id = ObjectId::new();
    let fid = ObjectId::new();
    // Held until the job is recorded or the leftovers are gone; if this
    // gateway dies first, another one removes the upload. Taken first, it
    // makes this upload count against the account's limits for the others.
    let lease = state.leases.take(fid, &claims.username).await;
    // The account's limits next: nothing is read or stored past them (a
    // refused upload's lease goes with it).
    let storage_left = state
        .quotas
        .admit_upload(&state.mongo, &state.leases, &claims.username, fid)
        .await?;
    let _in_flight = InFlight::start();
    let request_id = crate::queue::request_id(headers).to_owned();
    // Dropped before `disarm` (the request was cancelled): removes the file.
    let leftovers = Leftovers::arm(state, fid, lease);
    let received = receive(
        state,
        claims,
        multipart,
        with_options,
        job_id,
        fid,
        storage_left,
    )
    .await;
    let lease = leftovers.disarm();
    let (video, options, source) = match received {
        Ok(received) => received,
        Err(err) => {
            // Whatever the failed upload wrote (a file, loose chunks) goes
            // now; when MongoDB cannot take that, the lease stays for a
            // sweeper.
            match (
                common::gridfs::delete(&state.videos_bucket(), fid).await,
                lease,
            ) {
                (Err(cause), Some(lease)) => {
                    tracing::error!(video_fid = %fid, error = %cause, "could not remove a failed upload; its lease leaves it to a sweeper");
                    lease.leave_to_sweeper();
                }
                (_, lease) => drop(lease),
            }
            return Err(err);
        }
    };
    let (owned_state, claims, headers) = (state.clone(), claims.clone(), headers.clone());
    let committing = state.background.spawn(async move {
        if let Some(held) = &lease {
            match held.still_held().await {
                Ok(true) => {}
                // A sweeper took the upload for abandoned: no job may name
                // what it removes, and the removal is the sweeper's.
                Ok(false) => {
                    tracing::warn!(video_fid = %video.fid, "the upload's lease was lost before its job was recorded");
                    if let Some(lease) = lease {
                        lease.leave_to_sweeper();
                    }
                    return Err(ApiError::Unavailable("storage (MongoDB)"));
                }
                // MongoDB does not answer: the upload cannot be recorded.
                Err(err) => {
                    tracing::warn!(video_fid = %video.fid, error = %err, "could not renew the upload's lease");
                    let cleaned = discard(&owned_state, Some(&video)).await;
                    match lease {
                        Some(lease) if !cleaned => lease.leave_to_sweeper(),
                        lease => drop(lease),
                    }
                    return Err(ApiError::Unavailable("storage (MongoDB)"));
                }
            }
        }
        let (committed, cleaned) = commit(
            owned_state,
            claims,
            headers,
            video,
            Wanted { options, source },
            request_id,
            job_id,
        )
        .await;
        match lease {
            // What it left could not be removed: the lease stays, to expire,
            // and a sweeper removes it then.
            Some(lease) if !cleaned => lease.leave_to_sweeper(),
            lease => drop(lease),
        }
        committed
    });
    committing
        .await
        .map_err(|err| ApiError::Internal(anyhow::anyhow!("upload commit task failed: {err}")))?
}

/// What the uploader asked for beside the file.
pub(super) struct Wanted {
    options: Options,
    source: Option<SourceFile>,
}

/// What follows a complete upload: the caller's existing job for the same
/// content, or a new job record and its confirmed message. Owns its data so
/// it can run apart from the request. Also says whether nothing is left
/// behind (false when a clean-up failed).
async fn commit(
    state: AppState,
    claims: Claims,
    headers: HeaderMap,
    video: StoredVideo,
    wanted: Wanted,
    request_id: String,
    job_id: ObjectId,
) -> (Result<Accepted, ApiError>, bool) {
    let (state, claims) = (&state, &claims);
    let options = &wanted.options;
    if let Some(job) = same_job(state, claims, &video, options).await {
        let cleaned = discard(state, Some(&video)).await;
        tracing::info!(job_id = %job.id, user = %claims.username, "repeated upload answered with the existing job");
        return (
            Ok(Accepted {
                job,
                deduplicated: true,
            }),
            cleaned,
        );
    }

    let notify_email = state.auth.wants_email(claims, &headers).await;
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
        Ok(Enqueued::New(job)) => job,
        Ok(Enqueued::Existing(job)) => {
            let cleaned = discard(state, Some(&video)).await;
            tracing::info!(job_id = %job.id, user = %claims.username, "a concurrent repeated upload answered with the existing job");
            return (
                Ok(Accepted {
                    job,
                    deduplicated: true,
                }),
                cleaned,
            );
        }
        Err(err) => {
            // The job first: while it names the video, no sweeper takes it.
            let unrecorded = match state.mongo.jobs.delete(job_id).await {
                Ok(()) => true,
                Err(err) => {
                    tracing::error!(%job_id, error = %err, "could not remove the record of a job that was never queued");
                    false
                }
            };
            let cleaned = unrecorded && discard(state, Some(&video)).await;
            return (Err(err), cleaned);
        }
    };
    metrics::counter!("gateway_upload_bytes_total").increment(video.size);
    tracing::info!(job_id = %job_id, video_fid = %video.fid, user = %claims.username, size = video.size, "video queued");
    (
        Ok(Accepted {
            job,
            deduplicated: false,
        }),
        true,
    )
}

/// The caller's queued, converting or finished job for the same content
/// with equivalent options, if there is one. A lookup failure only means no
/// deduplication.
async fn same_job(
    state: &AppState,
    claims: &Claims,
    video: &StoredVideo,
    wanted: &Options,
) -> Option<Job> {
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
    candidates.into_iter().find(|job| job.options == *wanted)
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
) -> Result<Enqueued, ApiError> {
    let job = Job {
        source: wanted.source.clone(),
        options: wanted.options.clone(),
        notify_email,
        size_bytes: i64::try_from(video.size).unwrap_or(i64::MAX),
        sha256: video.sha256.clone(),
        dedupe_key: Some(common::jobs::dedupe_key(
            &claims.username,
            &video.sha256,
            &wanted.options,
        )),
        ..Job::queued(job_id, &claims.username, &video.filename, video.fid)
    };
    // Twice at most: the live job this one collided with may have failed
    // (or gone) before it could be read, which frees the key.
    for _ in 0..2 {
        match state.mongo.jobs.insert_unless_duplicate(&job).await {
            Ok(None) => {
                // Announced before the converter can pick it up, so live
                // clients see `queued` first.
                crate::queue::announce(state, &job, JobState::Queued).await;
                crate::queue::publish(state, &job, request_id).await?;
                return Ok(Enqueued::New(job));
            }
            Ok(Some(existing)) => return Ok(Enqueued::Existing(existing)),
            Err(err) if err.is_duplicate_key() => continue,
            Err(err) => return Err(err.into()),
        }
    }
    Err(ApiError::Conflict(
        "the same file is being uploaded again right now: try again in a moment".into(),
    ))
}

/// What recording an upload's job came to.
enum Enqueued {
    /// A new job, queued.
    New(Job),
    /// The caller's live job for the same content and options, which won
    /// the race against this upload.
    Existing(Job),
}

/// Best-effort removal of a stored video after a failed request; false
/// when it could not be removed (the upload's lease then leaves it to a
/// sweeper).
async fn discard(state: &AppState, video: Option<&StoredVideo>) -> bool {
    if let Some(video) = video
        && let Err(err) = common::gridfs::delete(&state.videos_bucket(), video.fid).await
    {
        tracing::error!(video_fid = %video.fid, error = %err, "could not remove an orphaned video");
        return false;
    }
    true
}

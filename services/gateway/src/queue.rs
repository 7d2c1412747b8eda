//! Handing a job to the converters: its `video` message, built from the
//! job record (so what a worker acts on is what the job says), carrying the
//! HTTP request's id, confirmed by the broker before the caller answers;
//! and announcing the state the gateway gave it (`job.queued`).

use axum::http::HeaderMap;

use common::jobs::Job;
use contract::{JobEvent, JobState};

use crate::error::ApiError;
use crate::state::AppState;

/// The request's id (set by the id layer), empty when it has none.
pub fn request_id(headers: &HeaderMap) -> &str {
    headers
        .get(common::amqp::REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
}

/// Publishes `job` on the `video` queue and waits for the broker's confirm.
pub async fn publish(state: &AppState, job: &Job, request_id: &str) -> Result<(), ApiError> {
    state
        .publisher
        .publish(
            &state.video_queue,
            &job.video_message().to_vec(),
            common::amqp::request_id_headers(request_id),
        )
        .await?;
    Ok(())
}

/// Announces a job state the gateway itself set (`job.queued` on upload and
/// retry). The job document stays the truth, so a lost event is logged and
/// the request goes on.
pub async fn announce(state: &AppState, job: &Job, job_state: JobState) {
    let event = JobEvent {
        progress: job.progress,
        error: job.error.clone(),
        mp3_fid: job.mp3_fid.map(|fid| fid.to_hex()),
        ..JobEvent::of(&job.video_message(), job_state)
    };
    if let Err(err) = state
        .publisher
        .publish_event(
            &state.events_exchange,
            &event.routing_key(),
            &event.to_vec(),
        )
        .await
    {
        tracing::warn!(error = %err, job_id = %job.id, "could not publish a job event");
    }
}

//! Following jobs on the server: the live event stream, and polling while
//! it is down.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::{SAFETY_POLL, Shared, backoff, emit_item, fail, set_online, signed_in, signed_out};
use contract::JobState;

use crate::api::{ApiClient, IDLE_TIMEOUT, Job, JobEnvelope};
use crate::error::Error;
use crate::store::Stage;

/// Moves an item to where its job is.
pub(super) async fn apply_job(shared: &Shared, id: i64, job: &Job) -> Result<(), Error> {
    let Some(item) = shared.store.get(id).await? else {
        return Ok(());
    };
    match (job.state, item.stage) {
        // Already past this point locally (a replayed event).
        (_, Stage::Done | Stage::Downloading) => {}
        (JobState::Queued | JobState::Converting, Stage::Failed) => {
            shared.store.set_stage(id, Stage::Queued, 0.0).await?;
        }
        (_, Stage::Failed) => {}
        (JobState::Queued, _) => shared.store.set_stage(id, Stage::Queued, 0.0).await?,
        (JobState::Converting, _) => {
            shared
                .store
                .set_stage(id, Stage::Converting, job.progress)
                .await?
        }
        (JobState::Done, _) => {
            shared.store.set_stage(id, Stage::Downloading, 0.0).await?;
            shared.wake_download.notify_one();
        }
        (JobState::Failed, _) => {
            let reason = job
                .error
                .as_deref()
                .unwrap_or("the server could not convert this file");
            fail(
                shared,
                &item,
                &crate::plain::job_failure(reason),
                job.retryable,
            )
            .await;
            return Ok(());
        }
    }
    emit_item(shared, id).await;
    Ok(())
}

pub(super) async fn follow_loop(shared: Arc<Shared>) {
    let mut attempt = 0u32;
    loop {
        if !signed_in(&shared).await {
            return;
        }
        let api = shared.api.read().await.clone();
        let cursor = shared.store.meta("events_cursor").await.ok().flatten();
        // Every network wait races the engine's stop.
        let opened = tokio::select! {
            _ = shared.stop.cancelled() => return,
            opened = api.events(cursor.as_deref()) => opened,
        };
        match opened {
            Ok(stream) => {
                attempt = 0;
                set_online(&shared, true);
                // Catch up on what changed while the stream was down.
                if !poll_active_unless_stopped(&shared, &api).await {
                    return;
                }
                let mut stream = std::pin::pin!(stream);
                let mut safety = tokio::time::interval(SAFETY_POLL);
                safety.tick().await;
                loop {
                    tokio::select! {
                        _ = shared.stop.cancelled() => return,
                        _ = safety.tick() => if !poll_active_unless_stopped(&shared, &api).await {
                            return;
                        },
                        // Silence longer than the keep-alives allow: a
                        // dead connection, whatever TCP thinks.
                        event = tokio::time::timeout(IDLE_TIMEOUT, stream.next()) => match event.unwrap_or_else(|_| {
                            Some(Err(Error::Offline("the event stream went silent".into())))
                        }) {
                            Some(Ok(event)) if event.event == "job" => {
                                match serde_json::from_str::<JobEnvelope>(&event.data) {
                                    Ok(JobEnvelope { job, .. }) => {
                                        tracing::debug!(job = %job.id, state = %job.state, "job event");
                                        if let Ok(Some(item)) = shared.store.by_job(&job.id).await
                                            && let Err(err) = apply_job(&shared, item.id, &job).await
                                        {
                                            tracing::warn!(error = %err, "applying a job update");
                                        }
                                    }
                                    Err(err) => tracing::warn!(error = %err, "unreadable job event"),
                                }
                                if let Some(id) = event.id {
                                    shared.store.set_meta("events_cursor", &id).await.ok();
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(err)) => {
                                tracing::info!(error = %err, "event stream broke; reconnecting");
                                break;
                            }
                            None => break,
                        },
                    }
                }
            }
            Err(Error::Unauthorized) => {
                signed_out(&shared);
                continue;
            }
            Err(err) => {
                tracing::debug!(error = %err, "event stream unavailable; polling");
                if matches!(err, Error::Offline(_)) {
                    set_online(&shared, false);
                }
                if !poll_active_unless_stopped(&shared, &api).await {
                    return;
                }
            }
        }
        attempt += 1;
        let wait = backoff(attempt).min(Duration::from_secs(5));
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// [`poll_active`], unless the engine stops first (then false).
async fn poll_active_unless_stopped(shared: &Shared, api: &ApiClient) -> bool {
    tokio::select! {
        _ = shared.stop.cancelled() => false,
        _ = poll_active(shared, api) => true,
    }
}

/// Asks the server for every job still waiting on it.
async fn poll_active(shared: &Shared, api: &ApiClient) {
    let mut active = Vec::new();
    for stage in [Stage::Queued, Stage::Converting] {
        active.extend(shared.store.in_stage(stage).await.unwrap_or_default());
    }
    for item in active {
        let Some(job_id) = &item.job_id else { continue };
        match api.job(job_id).await {
            Ok(job) => {
                if let Err(err) = apply_job(shared, item.id, &job).await {
                    tracing::warn!(error = %err, "applying a job update");
                }
            }
            Err(Error::Server { status: 404, .. }) => {
                let reason = crate::plain::Plain {
                    message: "The conversion was removed on the server. Retry uploads the file \
                              again."
                        .into(),
                    detail: None,
                };
                fail(shared, &item, &reason, true).await;
            }
            Err(Error::Unauthorized) => {
                signed_out(shared);
                return;
            }
            Err(_) => return,
        }
    }
}

//! Uploading queued files, one at a time, with progress and backoff.

use std::sync::Arc;
use std::time::Duration;

use super::follow::apply_job;
use super::progress::ProgressReporter;
use super::{Shared, backoff, emit_item, fail, pause, reset, set_online, signed_in, signed_out};
use crate::error::Error;
use crate::store::{Item, Stage};

pub(super) async fn upload_loop(shared: Arc<Shared>) {
    let mut attempt = 0u32;
    loop {
        if !signed_in(&shared).await {
            return;
        }
        let paused = shared.settings.read().await.paused;
        let next = if paused {
            None
        } else {
            match shared.store.in_stage(Stage::Pending).await {
                Ok(items) => items.into_iter().next(),
                Err(err) => {
                    tracing::error!(error = %err, "reading the queue");
                    None
                }
            }
        };
        let Some(item) = next else {
            if !pause(&shared, &shared.wake_upload, Duration::from_secs(5)).await {
                return;
            }
            continue;
        };
        let result = tokio::select! {
            _ = shared.stop.cancelled() => return,
            result = upload(&shared, &item) => result,
        };
        match result {
            Ok(()) => {
                attempt = 0;
                set_online(&shared, true);
            }
            Err(Error::Unauthorized) => {
                reset(&shared, &item, Stage::Pending).await;
                signed_out(&shared);
            }
            Err(err) if err.is_transient() => {
                tracing::info!(file = %item.name, error = %err, "upload failed; will try again");
                reset(&shared, &item, Stage::Pending).await;
                set_online(&shared, !matches!(err, Error::Offline(_)));
                if !pause(&shared, &shared.wake_upload, backoff(attempt)).await {
                    return;
                }
                attempt += 1;
            }
            Err(err) => {
                let reason = match &err {
                    Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                        "the file was removed before it was uploaded".to_owned()
                    }
                    other => other.to_string(),
                };
                fail(&shared, &item, &reason).await;
            }
        }
    }
}

async fn upload(shared: &Arc<Shared>, item: &Item) -> Result<(), Error> {
    let (api, options) = {
        let settings = shared.settings.read().await;
        (
            shared.api.read().await.clone(),
            settings.conversion.to_options(),
        )
    };
    shared
        .store
        .set_stage(item.id, Stage::Uploading, 0.0)
        .await?;
    emit_item(shared, item.id).await;
    let reporter = ProgressReporter::start(shared, item, Stage::Uploading);
    let record = reporter.recorder();
    let size = item.size;
    let result = api
        .create_job(&item.path, &item.name, &options, move |sent| {
            record(sent, size)
        })
        .await;
    drop(reporter);
    let created = result?;
    shared.store.set_job(item.id, &created.job.id).await?;
    if created.deduplicated {
        tracing::info!(file = %item.name, job = %created.job.id, "the server had this video already");
    }
    apply_job(shared, item.id, &created.job).await
}

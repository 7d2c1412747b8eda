//! Uploading queued files, one at a time, with progress and backoff; by
//! default only their audio, copied out of them first ([`crate::extract`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::follow::apply_job;
use super::progress::ProgressReporter;
use super::{Shared, backoff, emit_item, fail, pause, reset, set_online, signed_in, signed_out};
use crate::error::Error;
use crate::extract::{Extracted, extract_audio};
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
                // The same file would be refused again: not media, too
                // large, or gone.
                let (reason, retryable) = match &err {
                    Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => (
                        crate::plain::Plain {
                            message: "The file was removed before it was uploaded.".into(),
                            detail: None,
                        },
                        false,
                    ),
                    Error::Server {
                        status: 413 | 415, ..
                    } => (crate::plain::explain(&err), false),
                    other => (crate::plain::explain(other), true),
                };
                fail(&shared, &item, &reason, retryable).await;
            }
        }
    }
}

async fn upload(shared: &Arc<Shared>, item: &Item) -> Result<(), Error> {
    // One lock at a time, each let go at once: nothing that changes the
    // settings ever waits behind an upload.
    let (options, audio_only) = {
        let settings = shared.settings.read().await;
        (settings.conversion.options()?, settings.upload_audio_only)
    };
    let api = shared.api.read().await.clone();
    // Removed when this upload ends, however it ends.
    let audio = if audio_only {
        extract(shared, item).await?
    } else {
        None
    };
    let (path, size, source) = match &audio {
        Some(audio) => (
            audio.path.clone(),
            audio.bytes,
            Some((item.size, item.sha256.as_str())),
        ),
        None => (item.path.clone(), item.size, None),
    };
    shared.store.set_upload_bytes(item.id, size).await?;
    let reporter = enter(shared, item, Stage::Uploading).await?;
    let record = reporter.recorder();
    let result = api
        .create_job(&path, &item.name, &options, source, move |sent| {
            record(sent, size)
        })
        .await;
    drop(reporter);
    drop(audio);
    let created = result?;
    shared.store.set_job(item.id, &created.job.id).await?;
    if created.deduplicated {
        tracing::info!(file = %item.name, job = %created.job.id, "the server had this video already");
    }
    apply_job(shared, item.id, &created.job).await
}

/// Audio copied out of a video for its upload; the file goes when this does.
struct Audio {
    path: PathBuf,
    bytes: u64,
}

impl Drop for Audio {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Copies the audio of `item` into the scratch folder, showing the
/// extraction's progress. `None`: upload the whole file (the reason is
/// logged: FFmpeg cannot read it, no audio, audio Matroska cannot hold).
async fn extract(shared: &Arc<Shared>, item: &Item) -> Result<Option<Audio>, Error> {
    let dir = shared.store.scratch_dir()?.to_owned();
    let reporter = enter(shared, item, Stage::Extracting).await?;
    let record = reporter.recorder();
    let (source, stem) = (item.path.clone(), format!("item-{}", item.id));
    let extracted = tokio::task::spawn_blocking(move || {
        extract_audio(&source, &dir, &stem, &mut |fraction| {
            record((fraction * 1000.0) as u64, 1000)
        })
    })
    .await
    .map_err(|err| Error::Invalid(format!("the audio extraction stopped: {err}")))?;
    drop(reporter);
    Ok(match extracted {
        Extracted::Audio { path, bytes } => {
            tracing::info!(file = %item.name, video_bytes = item.size, audio_bytes = bytes, "uploading the audio only");
            Some(Audio { path, bytes })
        }
        Extracted::Whole(reason) => {
            tracing::info!(file = %item.name, %reason, "uploading the whole file");
            None
        }
    })
}

/// Moves `item` to `stage`, tells the window, and reports the stage's
/// progress until the reporter is dropped.
async fn enter(shared: &Arc<Shared>, item: &Item, stage: Stage) -> Result<ProgressReporter, Error> {
    shared.store.set_stage(item.id, stage, 0.0).await?;
    emit_item(shared, item.id).await;
    Ok(ProgressReporter::start(shared, item, stage))
}

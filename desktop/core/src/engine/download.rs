//! Bringing finished MP3s home: `.part` files, Range resume, no overwrite.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::progress::ProgressReporter;
use super::{Shared, backoff, emit_item, fail, pause, set_online, signed_in, signed_out};
use crate::error::Error;
use crate::names::{part_path, unique_mp3_path};
use crate::settings::AfterDone;
use crate::store::{Item, Stage};

pub(super) async fn download_loop(shared: Arc<Shared>) {
    let mut attempt = 0u32;
    loop {
        if !signed_in(&shared).await {
            return;
        }
        let out_dir = shared.settings.read().await.out_dir.clone();
        let next = match &out_dir {
            Some(_) => shared
                .store
                .in_stage(Stage::Downloading)
                .await
                .ok()
                .and_then(|items| items.into_iter().next()),
            None => None,
        };
        let (Some(item), Some(out_dir)) = (next, out_dir) else {
            if !pause(&shared, &shared.wake_download, Duration::from_secs(5)).await {
                return;
            }
            continue;
        };
        let result = tokio::select! {
            _ = shared.stop.cancelled() => return,
            result = download(&shared, &item, &out_dir) => result,
        };
        match result {
            Ok(()) => {
                attempt = 0;
                set_online(&shared, true);
            }
            Err(Error::Unauthorized) => signed_out(&shared),
            Err(err) if err.is_transient() => {
                tracing::info!(file = %item.name, error = %err, "download interrupted; will resume");
                set_online(&shared, !matches!(err, Error::Offline(_)));
                if !pause(&shared, &shared.wake_download, backoff(attempt)).await {
                    return;
                }
                attempt += 1;
            }
            Err(Error::Server { status: 404, .. }) => {
                fail(&shared, &item, "the MP3 is no longer on the server").await;
            }
            Err(err) => fail(&shared, &item, &err.to_string()).await,
        }
    }
}

async fn download(shared: &Arc<Shared>, item: &Item, out_dir: &Path) -> Result<(), Error> {
    let job_id = item
        .job_id
        .clone()
        .ok_or_else(|| Error::Invalid("no job for this file".into()))?;
    tokio::fs::create_dir_all(out_dir)
        .await
        .map_err(Error::io(format!("creating {}", out_dir.display())))?;
    let target = match &item.mp3_path {
        Some(path) => path.clone(),
        None => {
            let path = unique_mp3_path(out_dir, &item.name);
            shared.store.set_mp3_path(item.id, &path).await?;
            path
        }
    };
    let part = part_path(&target);
    let api = shared.api.read().await.clone();
    let reporter = ProgressReporter::start(shared, item, Stage::Downloading);
    let result = api.download_mp3(&job_id, &part, reporter.recorder()).await;
    drop(reporter);
    let size = result?;
    if size == 0 || !looks_like_mp3(&part).await {
        tokio::fs::remove_file(&part).await.ok();
        return Err(Error::Invalid(
            "the server sent something that is not an MP3".into(),
        ));
    }
    // Someone may have created the name meanwhile: never overwrite.
    let target = if tokio::fs::try_exists(&target).await.unwrap_or(false) {
        let path = unique_mp3_path(out_dir, &item.name);
        shared.store.set_mp3_path(item.id, &path).await?;
        path
    } else {
        target
    };
    tokio::fs::rename(&part, &target)
        .await
        .map_err(Error::io(format!("writing {}", target.display())))?;
    shared.store.set_stage(item.id, Stage::Done, 1.0).await?;
    emit_item(shared, item.id).await;
    tracing::info!(file = %item.name, mp3 = %target.display(), "MP3 ready");
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    shared.batcher.lock().await.finished(Instant::now(), &name);
    after_done(shared, item).await;
    Ok(())
}

/// An MP3 starts with an ID3 tag or an MPEG audio frame sync.
async fn looks_like_mp3(path: &Path) -> bool {
    use tokio::io::AsyncReadExt;
    let Ok(mut file) = tokio::fs::File::open(path).await else {
        return false;
    };
    let mut head = [0u8; 3];
    if file.read_exact(&mut head).await.is_err() {
        return false;
    }
    &head == b"ID3" || (head[0] == 0xFF && head[1] & 0xE0 == 0xE0)
}

/// Deletes or moves the source video when the user asked for it.
async fn after_done(shared: &Shared, item: &Item) {
    let action = shared.settings.read().await.after_done.clone();
    let result = match &action {
        AfterDone::Keep => return,
        AfterDone::Delete => tokio::fs::remove_file(&item.path).await,
        AfterDone::MoveTo(dir) => {
            let name = item.path.file_name().unwrap_or_default();
            match tokio::fs::create_dir_all(dir).await {
                Ok(()) => tokio::fs::rename(&item.path, dir.join(name)).await,
                Err(err) => Err(err),
            }
        }
    };
    if let Err(err) = result {
        tracing::warn!(file = %item.path.display(), error = %err, "could not tidy the source video");
    }
}

//! Taking finished videos from the watched folder and from drops.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{EngineEvent, Shared, pause};
use crate::error::Error;
use crate::settings::{ExistingFiles, Settings};
use crate::watcher::{FolderWatch, Seen, Settler, scan, stat};

pub(super) async fn scan_loop(shared: Arc<Shared>) {
    let mut settler = Settler::default();
    let mut watch: Option<FolderWatch> = None;
    loop {
        let settings = shared.settings.read().await.clone();
        let mut next = settings.rescan();
        take_dropped(&shared).await;
        if let (Some(dir), false) = (&settings.watch_dir, settings.paused) {
            if watch.as_ref().map(|w| &w.dir) != Some(dir) {
                settler = Settler::default();
                watch = match FolderWatch::start(dir, settings.recursive, shared.wake_scan.clone())
                {
                    Ok(watch) => Some(watch),
                    Err(err) => {
                        tracing::warn!(dir = %dir.display(), error = %err, "cannot watch the folder; rescanning only");
                        None
                    }
                };
            }
            if let Err(err) = scan_once(&shared, &settings, dir, &mut settler).await {
                tracing::warn!(error = %err, "scanning the watched folder");
            }
            if settler.has_unsettled() {
                next = next.min((settings.settle() / 3).max(Duration::from_millis(200)));
            }
        } else {
            watch = None;
        }
        if !pause(&shared, &shared.wake_scan, next).await {
            return;
        }
    }
}

async fn scan_once(
    shared: &Arc<Shared>,
    settings: &Settings,
    dir: &Path,
    settler: &mut Settler,
) -> Result<(), Error> {
    let (dir_owned, recursive, extensions, skip) = (
        dir.to_owned(),
        settings.recursive,
        settings.extensions.clone(),
        settings.out_dir.clone(),
    );
    let files = tokio::task::spawn_blocking(move || {
        scan(&dir_owned, recursive, &extensions, skip.as_deref())
    })
    .await
    .map_err(|err| Error::Invalid(err.to_string()))?;

    let baseline_key = format!("baseline:{}", dir.display());
    if shared.store.meta(&baseline_key).await?.is_none() {
        let mut unknown = Vec::new();
        for file in &files {
            if shared
                .store
                .seen(&file.path, file.size, file.mtime_ns)
                .await?
                .is_none()
            {
                unknown.push(file);
            }
        }
        match settings.existing_files {
            _ if unknown.is_empty() => {}
            None => {
                let _ = shared.events.send(EngineEvent::AskExisting {
                    count: unknown.len(),
                });
                return Ok(());
            }
            Some(ExistingFiles::OnlyNew) => {
                for file in unknown {
                    shared
                        .store
                        .mark_seen(&file.path, file.size, file.mtime_ns, None)
                        .await?;
                }
            }
            Some(ExistingFiles::ConvertAll) => {}
        }
        shared.store.set_meta(&baseline_key, "taken").await?;
    }

    for file in settler.observe(Instant::now(), files, settings.settle()) {
        if let Err(err) = take(shared, &file).await {
            tracing::warn!(path = %file.path.display(), error = %err, "could not take the file yet");
            settler.forget(&file.path);
        }
    }
    Ok(())
}

/// Dropped files are complete already: taken at once, folders searched.
async fn take_dropped(shared: &Arc<Shared>) {
    let dropped = std::mem::take(&mut *shared.dropped.lock().await);
    if dropped.is_empty() {
        return;
    }
    let extensions = shared.settings.read().await.extensions.clone();
    let files = tokio::task::spawn_blocking(move || {
        let mut files = Vec::new();
        for path in dropped {
            if path.is_dir() {
                files.extend(scan(&path, true, &extensions, None));
            } else if let Some(seen) = stat(&path) {
                files.push(seen);
            }
        }
        files
    })
    .await
    .unwrap_or_default();
    for file in files {
        if let Err(err) = take(shared, &file).await {
            tracing::warn!(path = %file.path.display(), error = %err, "could not take the dropped file");
        }
    }
}

/// Hashes a finished file and queues its content unless it is known.
async fn take(shared: &Arc<Shared>, file: &Seen) -> Result<(), Error> {
    if shared
        .store
        .seen(&file.path, file.size, file.mtime_ns)
        .await?
        .is_some()
    {
        return Ok(());
    }
    let path = file.path.clone();
    let sha256 = tokio::task::spawn_blocking(move || hash_file(&path))
        .await
        .map_err(|err| Error::Invalid(err.to_string()))??;
    shared
        .store
        .mark_seen(&file.path, file.size, file.mtime_ns, Some(&sha256))
        .await?;
    match shared.store.add(&file.path, &sha256, file.size).await? {
        Some(item) => {
            tracing::info!(path = %file.path.display(), "queued");
            let _ = shared.events.send(EngineEvent::Item { item });
            shared.wake_upload.notify_one();
        }
        None => {
            tracing::info!(path = %file.path.display(), "same content as a file already taken; not uploaded again");
        }
    }
    Ok(())
}

/// SHA-256 of a file, read in blocks (also proves it can be opened).
fn hash_file(path: &Path) -> Result<String, Error> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).map_err(Error::io(format!("opening {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = file
            .read(&mut buffer)
            .map_err(Error::io(format!("reading {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

//! Taking finished videos from the watched folder and from drops.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::{EngineEvent, Shared, WaitReason, Waiting, pause};
use crate::error::Error;
use crate::settings::{ExistingFiles, Settings};
use crate::store::Added;
use crate::watcher::{FolderWatch, Seen, Settler, scan, stat};

/// What the loop knows about the folder it watches. It lives as long as the
/// folder stays the same, whether or not the OS watch could be created
/// (inotify instances run out; network shares have none), so a failed watch
/// never makes the loop forget what it has seen or asked.
struct Watched {
    dir: PathBuf,
    settler: Settler,
    /// The OS watch; `None` while it cannot be created (rescans still run).
    watch: Option<FolderWatch>,
    /// The files the "videos already in the folder" question was about:
    /// answering "only new" skips exactly these, so a video that arrives
    /// while the question is open is still converted.
    asked: Option<Vec<Seen>>,
}

impl Watched {
    fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            settler: Settler::default(),
            watch: None,
            asked: None,
        }
    }

    fn ensure_watch(&mut self, settings: &Settings, wake: Arc<tokio::sync::Notify>) {
        if self.watch.is_some() {
            return;
        }
        match FolderWatch::start(&self.dir, settings.recursive, wake) {
            Ok(watch) => self.watch = Some(watch),
            Err(err) => {
                tracing::warn!(dir = %self.dir.display(), error = %err, "cannot watch the folder; rescanning only");
            }
        }
    }
}

pub(super) async fn scan_loop(shared: Arc<Shared>) {
    let mut watched: Option<Watched> = None;
    loop {
        let settings = shared.settings.read().await.clone();
        let mut next = settings.rescan();
        take_dropped(&shared).await;
        match &settings.watch_dir {
            Some(dir) => {
                let state = match &mut watched {
                    Some(state) if &state.dir == dir => state,
                    _ => watched.insert(Watched::new(dir)),
                };
                // Watched while paused too: a file that arrives shows at
                // once as waiting.
                state.ensure_watch(&settings, shared.wake_scan.clone());
                let result = if settings.paused {
                    list_paused(&shared, &settings, state).await
                } else {
                    scan_once(&shared, &settings, state).await
                };
                if let Err(err) = result {
                    tracing::warn!(error = %err, "scanning the watched folder");
                }
                if !settings.paused && state.settler.has_unsettled() {
                    next = next.min((settings.settle() / 3).max(Duration::from_millis(200)));
                }
            }
            None => {
                watched = None;
                set_waiting(&shared, Vec::new());
            }
        }
        if !pause(&shared, &shared.wake_scan, next).await {
            return;
        }
    }
}

async fn scan_once(
    shared: &Arc<Shared>,
    settings: &Settings,
    state: &mut Watched,
) -> Result<(), Error> {
    let (dir_owned, recursive, extensions, skip) = (
        state.dir.clone(),
        settings.recursive,
        settings.extensions.clone(),
        settings.out_dir.clone(),
    );
    let files = tokio::task::spawn_blocking(move || {
        scan(&dir_owned, recursive, &extensions, skip.as_deref())
    })
    .await
    .map_err(|err| Error::Invalid(err.to_string()))?;

    let baseline_key = format!("baseline:{}", state.dir.display());
    if shared.store.meta(&baseline_key).await?.is_none() {
        match settings.existing_files {
            None => {
                if state.asked.is_none() {
                    state.asked = Some(unknown_files(shared, &files).await?);
                }
                let count = state.asked.as_ref().map_or(0, Vec::len);
                if count > 0 {
                    // Repeated while unanswered, for a window opened later.
                    let _ = shared.events.send(EngineEvent::AskExisting { count });
                    return Ok(());
                }
            }
            Some(ExistingFiles::OnlyNew) => {
                let existing = match state.asked.take() {
                    Some(asked) => asked,
                    // Answered before any question (settings given up front).
                    None => unknown_files(shared, &files).await?,
                };
                for file in existing {
                    shared
                        .store
                        .mark_seen(&file.path, file.size, file.mtime_ns, None)
                        .await?;
                }
            }
            Some(ExistingFiles::ConvertAll) => {}
        }
        shared.store.set_meta(&baseline_key, "taken").await?;
        state.asked = None;
    }

    for file in state
        .settler
        .observe(Instant::now(), files, settings.settle())
    {
        if let Err(err) = take(shared, &file).await {
            tracing::warn!(path = %file.path.display(), error = %err, "could not take the file yet");
            state.settler.forget(&file.path);
        }
    }
    let changing: Vec<Seen> = state.settler.unsettled().cloned().collect();
    let waiting = unknown_files(shared, &changing).await?;
    set_waiting(shared, rows(&state.dir, waiting, WaitReason::Copying));
    Ok(())
}

/// While paused: the files that would be taken, shown as waiting.
async fn list_paused(
    shared: &Arc<Shared>,
    settings: &Settings,
    state: &Watched,
) -> Result<(), Error> {
    let baseline_key = format!("baseline:{}", state.dir.display());
    if shared.store.meta(&baseline_key).await?.is_none() {
        // The first-time question decides what is taken.
        set_waiting(shared, Vec::new());
        return Ok(());
    }
    let (dir, recursive, extensions, skip) = (
        state.dir.clone(),
        settings.recursive,
        settings.extensions.clone(),
        settings.out_dir.clone(),
    );
    let files =
        tokio::task::spawn_blocking(move || scan(&dir, recursive, &extensions, skip.as_deref()))
            .await
            .map_err(|err| Error::Invalid(err.to_string()))?;
    let waiting = unknown_files(shared, &files).await?;
    set_waiting(shared, rows(&state.dir, waiting, WaitReason::Paused));
    Ok(())
}

/// Waiting rows, named by their place under the watched folder.
fn rows(dir: &Path, files: Vec<Seen>, reason: WaitReason) -> Vec<Waiting> {
    let mut rows: Vec<Waiting> = files
        .into_iter()
        .map(|file| Waiting {
            name: file
                .path
                .strip_prefix(dir)
                .unwrap_or(&file.path)
                .display()
                .to_string(),
            path: file.path,
            reason,
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// Publishes the waiting files when they changed.
fn set_waiting(shared: &Shared, files: Vec<Waiting>) {
    let mut waiting = shared
        .waiting
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *waiting != files {
        *waiting = files.clone();
        let _ = shared.events.send(EngineEvent::Waiting { files });
    }
}

/// The files of a scan that the local state has never seen.
async fn unknown_files(shared: &Arc<Shared>, files: &[Seen]) -> Result<Vec<Seen>, Error> {
    let mut unknown = Vec::new();
    for file in files {
        if shared
            .store
            .seen(&file.path, file.size, file.mtime_ns)
            .await?
            .is_none()
        {
            unknown.push(file.clone());
        }
    }
    Ok(unknown)
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
        Added::New(item) => {
            tracing::info!(path = %file.path.display(), "queued");
            let _ = shared.events.send(EngineEvent::Item { item });
            shared.wake_upload.notify_one();
        }
        Added::Copy(item) => {
            tracing::info!(path = %file.path.display(), "same content as a file already taken; listed, not uploaded");
            let _ = shared.events.send(EngineEvent::Item { item });
        }
        Added::Known => {}
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

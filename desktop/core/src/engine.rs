//! The sync engine: takes finished videos from the watched folder (and
//! dropped files), uploads each distinct content once, follows its job over
//! the live event stream (polling when the stream is down) and brings the
//! MP3 home into the output folder. Every step is recorded in the local
//! [`Store`] first, so a restart picks up where the last run stopped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Notify, RwLock, broadcast, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{ApiClient, Job};
use crate::error::Error;
use crate::names::{part_path, unique_mp3_path};
use crate::notices::{self, Batcher, Notice};
use crate::settings::{AfterDone, ExistingFiles, Settings};
use crate::store::{Item, Stage, Store};
use crate::watcher::{FolderWatch, Seen, Settler, scan, stat};

/// What the engine tells the window (and the headless log).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EngineEvent {
    /// An item changed (any stage, progress included).
    Item {
        item: Item,
    },
    Removed {
        id: i64,
    },
    Notice {
        notice: Notice,
    },
    /// The token was refused: sign in again; the queue is kept.
    SignedOut,
    /// Whether the server answers.
    Connection {
        online: bool,
    },
    /// The settings changed (from the window, the tray or a command).
    Settings {
        settings: Box<Settings>,
    },
    /// The watched folder already holds `count` videos: convert them all or
    /// only new ones? Asked once per folder.
    AskExisting {
        count: usize,
    },
}

/// How long finished files are held back to fold them into one notice.
const NOTICE_WINDOW: Duration = Duration::from_secs(3);
/// Longest wait between attempts while the server is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Active jobs are polled this often even while the event stream is up.
const SAFETY_POLL: Duration = Duration::from_secs(30);
/// Progress events are sent at most this often per transfer.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

struct Shared {
    store: Store,
    settings: RwLock<Settings>,
    settings_path: Option<PathBuf>,
    api: RwLock<ApiClient>,
    events: broadcast::Sender<EngineEvent>,
    signed_in: watch::Sender<bool>,
    online: AtomicBool,
    wake_scan: Arc<Notify>,
    wake_upload: Notify,
    wake_download: Notify,
    dropped: Mutex<Vec<PathBuf>>,
    batcher: Mutex<Batcher>,
    stop: CancellationToken,
}

/// A running engine. Cheap to clone; [`Engine::stop`] ends it.
#[derive(Clone)]
pub struct Engine {
    shared: Arc<Shared>,
    tasks: Arc<Mutex<JoinSet<()>>>,
}

impl Engine {
    /// Starts the engine's loops. `settings_path` is where changed settings
    /// are saved (`None`: kept in memory only).
    pub fn start(
        store: Store,
        settings: Settings,
        settings_path: Option<PathBuf>,
        api: ApiClient,
    ) -> Engine {
        let (events, _) = broadcast::channel(1024);
        let (signed_in, _) = watch::channel(api.has_token());
        let shared = Arc::new(Shared {
            store,
            settings: RwLock::new(settings),
            settings_path,
            api: RwLock::new(api),
            events,
            signed_in,
            online: AtomicBool::new(true),
            wake_scan: Arc::new(Notify::new()),
            wake_upload: Notify::new(),
            wake_download: Notify::new(),
            dropped: Mutex::new(Vec::new()),
            batcher: Mutex::new(Batcher::new(NOTICE_WINDOW)),
            stop: CancellationToken::new(),
        });
        let mut tasks = JoinSet::new();
        tasks.spawn(scan_loop(shared.clone()));
        tasks.spawn(upload_loop(shared.clone()));
        tasks.spawn(follow_loop(shared.clone()));
        tasks.spawn(download_loop(shared.clone()));
        tasks.spawn(notice_loop(shared.clone()));
        Engine {
            shared,
            tasks: Arc::new(Mutex::new(tasks)),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.shared.events.subscribe()
    }

    /// Stops every loop; an upload or download in flight is cut and resumed
    /// by the next start.
    pub async fn stop(&self) {
        self.shared.stop.cancel();
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
        self.shared.store.close().await;
    }

    pub async fn settings(&self) -> Settings {
        self.shared.settings.read().await.clone()
    }

    /// Replaces the settings (validated), saves them and applies them.
    pub async fn update_settings(&self, settings: Settings) -> Result<(), Error> {
        settings.validate()?;
        let server_changed = self.shared.settings.read().await.server_url != settings.server_url;
        if let Some(path) = &self.shared.settings_path {
            settings.save(path)?;
        }
        *self.shared.settings.write().await = settings.clone();
        if server_changed {
            let api = ApiClient::new(&settings.server_url, None)?;
            *self.shared.api.write().await = api;
            self.shared.signed_in.send_replace(false);
        }
        let _ = self.shared.events.send(EngineEvent::Settings {
            settings: Box::new(settings),
        });
        self.wake_all();
        Ok(())
    }

    pub async fn set_paused(&self, paused: bool) -> Result<(), Error> {
        let mut settings = self.settings().await;
        settings.paused = paused;
        self.update_settings(settings).await
    }

    /// The user's answer to [`EngineEvent::AskExisting`].
    pub async fn choose_existing(&self, choice: ExistingFiles) -> Result<(), Error> {
        let mut settings = self.settings().await;
        settings.existing_files = Some(choice);
        self.update_settings(settings).await
    }

    /// Uses a new token (after sign-in) for everything that follows.
    pub async fn set_token(&self, token: Option<String>) {
        let signed_in = token.is_some();
        let api = self.shared.api.read().await.with_token(token);
        *self.shared.api.write().await = api;
        self.shared.signed_in.send_replace(signed_in);
        self.wake_all();
    }

    pub async fn api(&self) -> ApiClient {
        self.shared.api.read().await.clone()
    }

    pub fn is_signed_in(&self) -> bool {
        *self.shared.signed_in.borrow()
    }

    pub fn is_online(&self) -> bool {
        self.shared.online.load(Ordering::Relaxed)
    }

    pub async fn items(&self) -> Result<Vec<Item>, Error> {
        self.shared.store.all().await
    }

    /// Queues dropped files and folders (folders are searched for videos).
    pub async fn queue_paths(&self, paths: Vec<PathBuf>) {
        self.shared.dropped.lock().await.extend(paths);
        self.shared.wake_scan.notify_one();
    }

    /// Tries a failed item again: a new conversion on the server when the
    /// server failed it, a new upload when it never got there.
    pub async fn retry(&self, id: i64) -> Result<(), Error> {
        let shared = &self.shared;
        let item = shared
            .store
            .get(id)
            .await?
            .ok_or_else(|| Error::Invalid("no such item".into()))?;
        match &item.job_id {
            Some(job) if item.stage == Stage::Failed => {
                let api = shared.api.read().await.clone();
                match api.retry(job).await {
                    Ok(()) => shared.store.set_stage(id, Stage::Queued, 0.0).await?,
                    // The job is gone on the server: upload again.
                    Err(Error::Server { status: 404, .. }) => {
                        shared.store.set_stage(id, Stage::Pending, 0.0).await?
                    }
                    Err(err) => return Err(err),
                }
            }
            _ => shared.store.set_stage(id, Stage::Pending, 0.0).await?,
        }
        emit_item(shared, id).await;
        self.wake_all();
        Ok(())
    }

    /// Forgets an item locally (the server's job and the MP3 stay).
    pub async fn remove(&self, id: i64) -> Result<(), Error> {
        self.shared.store.remove(id).await?;
        let _ = self.shared.events.send(EngineEvent::Removed { id });
        Ok(())
    }

    fn wake_all(&self) {
        self.shared.wake_scan.notify_one();
        self.shared.wake_upload.notify_one();
        self.shared.wake_download.notify_one();
    }
}

async fn emit_item(shared: &Shared, id: i64) {
    if let Ok(Some(item)) = shared.store.get(id).await {
        let _ = shared.events.send(EngineEvent::Item { item });
    }
}

fn set_online(shared: &Shared, online: bool) {
    if shared.online.swap(online, Ordering::Relaxed) != online {
        let _ = shared.events.send(EngineEvent::Connection { online });
    }
}

fn signed_out(shared: &Shared) {
    if shared.signed_in.send_replace(false) {
        let _ = shared.events.send(EngineEvent::SignedOut);
    }
}

/// Sleeps `duration` unless the engine stops or `wake` fires first.
/// Returns false when the engine stops.
async fn pause(shared: &Shared, wake: &Notify, duration: Duration) -> bool {
    tokio::select! {
        _ = shared.stop.cancelled() => false,
        _ = wake.notified() => true,
        _ = tokio::time::sleep(duration) => true,
    }
}

/// Waits until the user is signed in. Returns false when the engine stops.
async fn signed_in(shared: &Shared) -> bool {
    let mut rx = shared.signed_in.subscribe();
    tokio::select! {
        _ = shared.stop.cancelled() => false,
        ok = rx.wait_for(|signed_in| *signed_in) => ok.is_ok(),
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(5)).min(MAX_BACKOFF)
}

// ---------------------------------------------------------------- scanning

async fn scan_loop(shared: Arc<Shared>) {
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

// --------------------------------------------------------------- uploading

async fn upload_loop(shared: Arc<Shared>) {
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

async fn reset(shared: &Shared, item: &Item, stage: Stage) {
    if let Err(err) = shared.store.set_stage(item.id, stage, 0.0).await {
        tracing::error!(error = %err, "recording the queue");
    }
    emit_item(shared, item.id).await;
}

async fn fail(shared: &Shared, item: &Item, reason: &str) {
    tracing::warn!(file = %item.name, reason, "failed");
    if let Err(err) = shared.store.fail(item.id, reason).await {
        tracing::error!(error = %err, "recording the failure");
    }
    emit_item(shared, item.id).await;
    notify(shared, Batcher::failed(&item.name, reason)).await;
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
    let sent = Arc::new(AtomicU64::new(0));
    let reporter = upload_reporter(shared.clone(), item.clone(), sent.clone());
    let counter = sent.clone();
    let result = api
        .create_job(&item.path, &item.name, &options, move |bytes| {
            counter.store(bytes, Ordering::Relaxed);
        })
        .await;
    reporter.abort();
    let created = result?;
    shared.store.set_job(item.id, &created.job.id).await?;
    if created.deduplicated {
        tracing::info!(file = %item.name, job = %created.job.id, "the server had this video already");
    }
    apply_job(shared, item.id, &created.job).await
}

/// Sends upload progress events until aborted.
fn upload_reporter(
    shared: Arc<Shared>,
    item: Item,
    sent: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = u64::MAX;
        loop {
            tokio::time::sleep(PROGRESS_EVERY).await;
            let now = sent.load(Ordering::Relaxed);
            let total = item.size.max(1);
            if now == last {
                continue;
            }
            last = now;
            let mut update = item.clone();
            update.stage = Stage::Uploading;
            update.progress = (now as f64 / total as f64).min(1.0);
            let _ = shared.events.send(EngineEvent::Item { item: update });
        }
    })
}

// --------------------------------------------------------------- following

/// Moves an item to where its job is.
async fn apply_job(shared: &Shared, id: i64, job: &Job) -> Result<(), Error> {
    let Some(item) = shared.store.get(id).await? else {
        return Ok(());
    };
    match (job.state.as_str(), item.stage) {
        // Already past this point locally (a replayed event).
        (_, Stage::Done | Stage::Downloading) => {}
        ("queued", Stage::Failed) | ("converting", Stage::Failed) => {
            shared.store.set_stage(id, Stage::Queued, 0.0).await?;
        }
        (_, Stage::Failed) => {}
        ("queued", _) => shared.store.set_stage(id, Stage::Queued, 0.0).await?,
        ("converting", _) => {
            shared
                .store
                .set_stage(id, Stage::Converting, job.progress)
                .await?
        }
        ("done", _) => {
            shared.store.set_stage(id, Stage::Downloading, 0.0).await?;
            shared.wake_download.notify_one();
        }
        ("failed", _) => {
            let reason = job
                .error
                .clone()
                .unwrap_or_else(|| "the server could not convert this file".into());
            fail(shared, &item, &reason).await;
            return Ok(());
        }
        _ => {}
    }
    emit_item(shared, id).await;
    Ok(())
}

async fn follow_loop(shared: Arc<Shared>) {
    let mut attempt = 0u32;
    loop {
        if !signed_in(&shared).await {
            return;
        }
        let api = shared.api.read().await.clone();
        let cursor = shared.store.meta("events_cursor").await.ok().flatten();
        match api.events(cursor.as_deref()).await {
            Ok(stream) => {
                attempt = 0;
                set_online(&shared, true);
                // Catch up on what changed while the stream was down.
                poll_active(&shared, &api).await;
                let mut stream = std::pin::pin!(stream);
                let mut safety = tokio::time::interval(SAFETY_POLL);
                safety.tick().await;
                loop {
                    tokio::select! {
                        _ = shared.stop.cancelled() => return,
                        _ = safety.tick() => poll_active(&shared, &api).await,
                        event = stream.next() => match event {
                            Some(Ok(event)) if event.event == "job" => {
                                match serde_json::from_str::<JobEnvelope>(&event.data) {
                                    Ok(JobEnvelope { job }) => {
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
                poll_active(&shared, &api).await;
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

/// The data of an `event: job` (`{"job": {...}}`, as `GET /api/v1/jobs/{id}`).
#[derive(serde::Deserialize)]
struct JobEnvelope {
    job: Job,
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
                fail(shared, &item, "the job was deleted on the server").await;
            }
            Err(Error::Unauthorized) => {
                signed_out(shared);
                return;
            }
            Err(_) => return,
        }
    }
}

// ------------------------------------------------------------- downloading

async fn download_loop(shared: Arc<Shared>) {
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
    let received = Arc::new(AtomicU64::new(0));
    let fraction = Arc::new(AtomicU64::new(0));
    let reporter = {
        let (shared, item, fraction) = (shared.clone(), item.clone(), fraction.clone());
        tokio::spawn(async move {
            let mut last = u64::MAX;
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                let permille = fraction.load(Ordering::Relaxed);
                if permille == last {
                    continue;
                }
                last = permille;
                let mut update = item.clone();
                update.stage = Stage::Downloading;
                update.progress = permille as f64 / 1000.0;
                let _ = shared.events.send(EngineEvent::Item { item: update });
            }
        })
    };
    let counter = received.clone();
    let result = api
        .download_mp3(&job_id, &part, move |got, total| {
            counter.store(got, Ordering::Relaxed);
            if let Some(permille) = (got * 1000).checked_div(total) {
                fraction.store(permille, Ordering::Relaxed);
            }
        })
        .await;
    reporter.abort();
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

// ----------------------------------------------------------- notifications

async fn notify(shared: &Shared, notice: Notice) {
    let _ = shared.events.send(EngineEvent::Notice {
        notice: notice.clone(),
    });
    if shared.settings.read().await.notifications {
        notices::show(&notice).await;
    }
}

async fn notice_loop(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        let due = shared.batcher.lock().await.due(Instant::now());
        if let Some(notice) = due {
            notify(&shared, notice).await;
        }
    }
}

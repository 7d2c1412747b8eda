//! The sync engine: takes finished videos from the watched folder (and
//! dropped files), uploads each distinct content once, follows its job over
//! the live event stream (polling when the stream is down) and brings the
//! MP3 home into the output folder. Every step is recorded in the local
//! [`Store`] first, so a restart picks up where the last run stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Mutex, Notify, RwLock, broadcast, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::ApiClient;
use crate::error::Error;
use crate::notices::{self, Batcher, Notice};
use crate::plain::Plain;
use crate::settings::{ExistingFiles, Settings};
use crate::store::{Item, Stage, Store};

mod download;
mod follow;
mod progress;
mod scan;
mod upload;

use download::download_loop;
use follow::follow_loop;
use scan::scan_loop;
use upload::upload_loop;

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
    /// The files seen in the watched folder and not taken yet (all of
    /// them, each time the list changes).
    Waiting {
        files: Vec<Waiting>,
    },
}

/// A file in the watched folder that the engine saw and has not taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Waiting {
    pub path: PathBuf,
    /// Its place under the watched folder.
    pub name: String,
    pub reason: WaitReason,
}

/// Why a file waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitReason {
    /// Still being written (a copy or a download), or not unchanged for the
    /// settle time yet.
    Copying,
    /// Watching is paused.
    Paused,
}

/// How long finished files are held back to fold them into one notice.
const NOTICE_WINDOW: Duration = Duration::from_secs(3);
/// Longest wait between attempts while the server is unreachable.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Active jobs are polled this often even while the event stream is up.
const SAFETY_POLL: Duration = Duration::from_secs(30);
/// How long [`Engine::stop`] waits for the loops, and then for the local
/// state, before cutting them off.
pub const STOP_WITHIN: Duration = Duration::from_secs(10);
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
    waiting: std::sync::Mutex<Vec<Waiting>>,
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
            waiting: std::sync::Mutex::new(Vec::new()),
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
    /// by the next start. Bounded: every loop stops at its next await, and
    /// one that has not within [`STOP_WITHIN`] (a file system that hangs
    /// under a hash, say) is cut off, as is the local state's closing, so
    /// quitting the app never hangs.
    pub async fn stop(&self) {
        self.shared.stop.cancel();
        let mut tasks = self.tasks.lock().await;
        let joined = tokio::time::timeout(STOP_WITHIN, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if joined.is_err() {
            tracing::warn!(
                left = tasks.len(),
                "loops still busy after {STOP_WITHIN:?}; cutting them off"
            );
            tasks.abort_all();
            while tasks.join_next().await.is_some() {}
        }
        if tokio::time::timeout(STOP_WITHIN, self.shared.store.close())
            .await
            .is_err()
        {
            tracing::warn!("the local state did not close within {STOP_WITHIN:?}");
        }
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

    /// The server refused the session (a call outside the engine saw it):
    /// the window asks for a sign-in again, as when the engine sees it.
    pub fn session_ended(&self) {
        signed_out(&self.shared);
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

    /// The files seen and not taken yet (see [`EngineEvent::Waiting`]).
    pub fn waiting(&self) -> Vec<Waiting> {
        self.shared
            .waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
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

    /// Converts a copy of content converted before after all (a
    /// [`Stage::Duplicate`] row): it gets an MP3 of its own name.
    pub async fn convert_again(&self, id: i64) -> Result<(), Error> {
        self.shared.store.convert_again(id).await?;
        emit_item(&self.shared, id).await;
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

async fn reset(shared: &Shared, item: &Item, stage: Stage) {
    if let Err(err) = shared.store.set_stage(item.id, stage, 0.0).await {
        tracing::error!(error = %err, "recording the queue");
    }
    emit_item(shared, item.id).await;
}

/// Fails an item with `reason` in plain words; `retryable` says whether
/// "Retry" is offered.
async fn fail(shared: &Shared, item: &Item, reason: &Plain, retryable: bool) {
    tracing::warn!(file = %item.name, reason = %reason.message, detail = ?reason.detail, "failed");
    if let Err(err) = shared.store.fail(item.id, reason, retryable).await {
        tracing::error!(error = %err, "recording the failure");
    }
    emit_item(shared, item.id).await;
    notify(shared, Batcher::failed(&item.name, &reason.message)).await;
}

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

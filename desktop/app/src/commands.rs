//! The window's commands: each one calls the core and turns its error into
//! `{code, message}`.

use std::path::PathBuf;

use serde::Serialize;
use tauri::{AppHandle, Manager as _, State};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_dialog::DialogExt;
use tauri_plugin_opener::OpenerExt;

use desktop_core::api::Profile;
use desktop_core::app::{DesktopApp, Snapshot};
use desktop_core::{CommandError, Error, Settings};

type Result<T> = std::result::Result<T, CommandError>;

fn failed(err: impl std::fmt::Display) -> CommandError {
    CommandError::from(Error::Invalid(err.to_string()))
}

#[tauri::command]
pub async fn snapshot(app: State<'_, DesktopApp>) -> Result<Snapshot> {
    Ok(app.snapshot().await?)
}

#[tauri::command]
pub async fn sign_in(
    app: State<'_, DesktopApp>,
    server: String,
    email: String,
    password: String,
) -> Result<()> {
    Ok(app.sign_in(&server, &email, &password).await?)
}

#[tauri::command]
pub async fn registration_open(app: State<'_, DesktopApp>, server: String) -> Result<bool> {
    Ok(app.registration_open(&server).await?)
}

#[tauri::command]
pub async fn register(
    app: State<'_, DesktopApp>,
    server: String,
    email: String,
    password: String,
) -> Result<()> {
    Ok(app.register(&server, &email, &password).await?)
}

#[tauri::command]
pub async fn sign_out(app: State<'_, DesktopApp>) -> Result<()> {
    app.sign_out().await;
    Ok(())
}

#[tauri::command]
pub async fn account(app: State<'_, DesktopApp>) -> Result<Profile> {
    Ok(app.account().await?)
}

#[tauri::command]
pub async fn resend_confirmation(app: State<'_, DesktopApp>) -> Result<()> {
    Ok(app.resend_confirmation().await?)
}

#[tauri::command]
pub async fn change_password(
    app: State<'_, DesktopApp>,
    current: String,
    new: String,
) -> Result<()> {
    Ok(app.change_password(&current, &new).await?)
}

#[tauri::command]
pub async fn sign_out_everywhere(app: State<'_, DesktopApp>) -> Result<()> {
    Ok(app.sign_out_everywhere().await?)
}

#[tauri::command]
pub async fn delete_account(app: State<'_, DesktopApp>, password: String) -> Result<()> {
    Ok(app.delete_account(&password).await?)
}

#[tauri::command]
pub async fn save_settings(
    handle: AppHandle,
    app: State<'_, DesktopApp>,
    settings: Settings,
) -> Result<()> {
    // First, so a setting the system refused is not saved as if it held.
    let autostart = handle.autolaunch();
    let changed = match (settings.start_at_login, autostart.is_enabled()) {
        (true, Ok(false)) | (true, Err(_)) => {
            ensure_autostart_dir(&handle);
            autostart.enable()
        }
        (false, Ok(true)) => autostart.disable(),
        _ => Ok(()),
    };
    changed.map_err(|err| failed(format!("could not change \"start at login\": {err}")))?;
    Ok(app.save_settings(settings).await?)
}

/// The autostart plugin (auto-launch 0.5) creates `~/.config/autostart` but
/// not `~/.config`, so on an account without one enabling fails; make both.
#[cfg(target_os = "linux")]
fn ensure_autostart_dir(handle: &AppHandle) {
    if let Ok(home) = handle.path().home_dir() {
        let dir = home.join(".config").join("autostart");
        if let Err(err) = std::fs::create_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot create the autostart folder");
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn ensure_autostart_dir(_handle: &AppHandle) {}

/// The native folder picker, opened on `start` (the folder the field
/// holds) when it exists; `None` when cancelled.
#[tauri::command]
pub async fn pick_folder(handle: AppHandle, start: Option<String>) -> Result<Option<String>> {
    let mut dialog = handle.dialog().file();
    if let Some(start) = start.map(PathBuf::from).filter(|dir| dir.is_dir()) {
        dialog = dialog.set_directory(start);
    }
    let picked = tokio::task::spawn_blocking(move || dialog.blocking_pick_folder())
        .await
        .map_err(failed)?;
    Ok(picked
        .and_then(|path| path.into_path().ok())
        .map(|path| path.display().to_string()))
}

/// "Add files…": the native file picker, several videos at once, opened on
/// the watched folder; what is chosen is taken as if dropped. The number
/// of files taken (0 when cancelled).
#[tauri::command]
pub async fn add_files(handle: AppHandle, app: State<'_, DesktopApp>) -> Result<usize> {
    let settings = app.engine.settings().await;
    let mut dialog = handle
        .dialog()
        .file()
        .set_title("Add videos to convert")
        .add_filter("Videos and audio", &extensions(&settings));
    if let Some(dir) = settings.watch_dir.filter(|dir| dir.is_dir()) {
        dialog = dialog.set_directory(dir);
    }
    let picked = tokio::task::spawn_blocking(move || dialog.blocking_pick_files())
        .await
        .map_err(failed)?
        .unwrap_or_default();
    let paths: Vec<PathBuf> = picked
        .into_iter()
        .filter_map(|path| path.into_path().ok())
        .collect();
    let count = paths.len();
    app.engine.queue_paths(paths).await;
    Ok(count)
}

fn extensions(settings: &Settings) -> Vec<&str> {
    settings.extensions.iter().map(String::as_str).collect()
}

#[tauri::command]
pub async fn create_folder(app: State<'_, DesktopApp>, path: String) -> Result<()> {
    Ok(app.create_folder(std::path::Path::new(&path)).await?)
}

#[tauri::command]
pub async fn convert_again(app: State<'_, DesktopApp>, id: i64) -> Result<()> {
    Ok(app.engine.convert_again(id).await?)
}

#[tauri::command]
pub async fn set_paused(app: State<'_, DesktopApp>, paused: bool) -> Result<()> {
    Ok(app.engine.set_paused(paused).await?)
}

#[tauri::command]
pub async fn choose_existing(app: State<'_, DesktopApp>, convert_all: bool) -> Result<()> {
    Ok(app.choose_existing(convert_all).await?)
}

#[tauri::command]
pub async fn retry(app: State<'_, DesktopApp>, id: i64) -> Result<()> {
    Ok(app.engine.retry(id).await?)
}

#[tauri::command]
pub async fn remove(app: State<'_, DesktopApp>, id: i64) -> Result<()> {
    Ok(app.engine.remove(id).await?)
}

#[tauri::command]
pub async fn open_mp3(handle: AppHandle, app: State<'_, DesktopApp>, id: i64) -> Result<()> {
    let path = app.mp3_of(id).await?;
    has_app_for("audio/mpeg", "play MP3 files", &path)?;
    handle
        .opener()
        .open_path(path.display().to_string(), None::<&str>)
        .map_err(|err| no_app("play MP3 files", &path, err))
}

#[tauri::command]
pub async fn show_in_folder(handle: AppHandle, app: State<'_, DesktopApp>, id: i64) -> Result<()> {
    let path = app.mp3_of(id).await?;
    has_app_for("inode/directory", "show folders", &path)?;
    handle
        .opener()
        .reveal_item_in_dir(&path)
        .map_err(|err| no_app("show folders", &path, err))
}

/// "No application to …": said as such, with the path (the window offers
/// to copy it), never as if the file were missing.
fn no_app(what: &str, path: &std::path::Path, detail: impl std::fmt::Display) -> CommandError {
    CommandError {
        code: "no_app".into(),
        message: format!(
            "No application to {what} is installed. Copy the path to open {} another way.",
            path.file_name().unwrap_or_default().to_string_lossy()
        ),
        detail: Some(format!("{}\n{detail}", path.display())),
    }
}

/// Whether the desktop has an application for `mime`: the opener hands
/// the file to `xdg-open`, which fails silently (or not at all) when no
/// application takes it.
#[cfg(target_os = "linux")]
fn has_app_for(mime: &str, what: &str, path: &std::path::Path) -> Result<()> {
    let answer = std::process::Command::new("xdg-mime")
        .args(["query", "default", mime])
        .output();
    match answer {
        Ok(out) if out.status.success() && !out.stdout.trim_ascii().is_empty() => Ok(()),
        Ok(out) => Err(no_app(
            what,
            path,
            format!("no default application for {mime} ({})", out.status),
        )),
        Err(err) => Err(no_app(what, path, format!("xdg-mime: {err}"))),
    }
}

#[cfg(not(target_os = "linux"))]
fn has_app_for(_mime: &str, _what: &str, _path: &std::path::Path) -> Result<()> {
    Ok(())
}

#[tauri::command]
pub async fn open_output_folder(handle: AppHandle, app: State<'_, DesktopApp>) -> Result<()> {
    let dir: PathBuf = app
        .engine
        .settings()
        .await
        .out_dir
        .ok_or_else(|| failed("choose an output folder first"))?;
    handle
        .opener()
        .open_path(dir.display().to_string(), None::<&str>)
        .map_err(failed)
}

#[derive(Serialize)]
pub struct About {
    pub app: String,
    pub tauri: String,
    pub webview: String,
    pub server: String,
    /// The signed-in account's address; `None` while signed out.
    pub account: Option<String>,
}

#[tauri::command]
pub async fn about(app: State<'_, DesktopApp>) -> Result<About> {
    let snapshot = app.snapshot().await?;
    Ok(About {
        app: env!("CARGO_PKG_VERSION").into(),
        tauri: tauri::VERSION.into(),
        webview: tauri::webview_version().unwrap_or_else(|_| "unknown".into()),
        server: snapshot.settings.server_url,
        account: snapshot
            .account
            .filter(|_| snapshot.signed_in)
            .map(|account| account.email),
    })
}

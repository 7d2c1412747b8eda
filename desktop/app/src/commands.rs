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

/// The native folder picker; `None` when cancelled.
#[tauri::command]
pub async fn pick_folder(handle: AppHandle) -> Result<Option<String>> {
    let picked = tokio::task::spawn_blocking(move || handle.dialog().file().blocking_pick_folder())
        .await
        .map_err(failed)?;
    Ok(picked
        .and_then(|path| path.into_path().ok())
        .map(|path| path.display().to_string()))
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
    handle
        .opener()
        .open_path(path.display().to_string(), None::<&str>)
        .map_err(failed)
}

#[tauri::command]
pub async fn show_in_folder(handle: AppHandle, app: State<'_, DesktopApp>, id: i64) -> Result<()> {
    let path = app.mp3_of(id).await?;
    handle.opener().reveal_item_in_dir(path).map_err(failed)
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
}

#[tauri::command]
pub async fn about(app: State<'_, DesktopApp>) -> Result<About> {
    Ok(About {
        app: env!("CARGO_PKG_VERSION").into(),
        tauri: tauri::VERSION.into(),
        webview: tauri::webview_version().unwrap_or_else(|_| "unknown".into()),
        server: app.engine.settings().await.server_url,
    })
}

//! The tray icon: its picture says idle, working or error; its tooltip and
//! the first line of its menu count the files (Linux tray icons have no
//! tooltip); the menu shows the window, pauses watching, opens the output
//! folder or quits.

use tauri::image::Image;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Manager};
use tauri_plugin_opener::OpenerExt;

use desktop_core::Settings;
use desktop_core::app::DesktopApp;
use desktop_core::status::{Summary, TrayState};
use desktop_core::store::Item;

const TRAY_ID: &str = "main";
const IDLE: &[u8] = include_bytes!("../../../icons/tray-idle.png");
const WORKING: &[u8] = include_bytes!("../../../icons/tray-working.png");
const ERROR: &[u8] = include_bytes!("../../../icons/tray-error.png");

pub fn show_window(app: &AppHandle) {
    if let Some(window) = app.get_webview_window("main") {
        window.show().ok();
        window.unminimize().ok();
        window.set_focus().ok();
    }
}

/// The tray menu's pause item, relabelled whenever the settings change.
pub struct PauseItem(pub MenuItem<tauri::Wry>);

/// The menu's first line: the counts, not clickable.
pub struct StatusItem(pub MenuItem<tauri::Wry>);

pub fn create(app: &AppHandle) -> tauri::Result<TrayIcon> {
    let status = MenuItem::with_id(app, "status", "MP3 Converter", false, None::<&str>)?;
    let separator = PredefinedMenuItem::separator(app)?;
    let show = MenuItem::with_id(app, "show", "Show window", true, None::<&str>)?;
    let pause = MenuItem::with_id(app, "pause", "Pause watching", true, None::<&str>)?;
    let open = MenuItem::with_id(app, "open", "Open output folder", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit", true, None::<&str>)?;
    let menu = Menu::with_items(app, &[&status, &separator, &show, &pause, &open, &quit])?;
    app.manage(PauseItem(pause));
    app.manage(StatusItem(status));
    TrayIconBuilder::with_id(TRAY_ID)
        .icon(Image::from_bytes(IDLE)?)
        .tooltip("MP3 Converter")
        .menu(&menu)
        .show_menu_on_left_click(false)
        .on_menu_event(move |app, event| match event.id.as_ref() {
            "show" => show_window(app),
            "pause" => {
                let desktop = app.state::<DesktopApp>().inner().clone();
                tauri::async_runtime::spawn(async move {
                    let paused = !desktop.engine.settings().await.paused;
                    if let Err(err) = desktop.engine.set_paused(paused).await {
                        tracing::warn!(error = %err, "could not pause");
                    }
                });
            }
            "open" => {
                let desktop = app.state::<DesktopApp>().inner().clone();
                let app = app.clone();
                tauri::async_runtime::spawn(async move {
                    if let Some(dir) = desktop.engine.settings().await.out_dir {
                        app.opener()
                            .open_path(dir.display().to_string(), None::<&str>)
                            .ok();
                    }
                });
            }
            "quit" => app.exit(0),
            _ => {}
        })
        .on_tray_icon_event(|tray, event| {
            if let TrayIconEvent::DoubleClick { .. } = event {
                show_window(tray.app_handle());
            }
        })
        .build(app)
}

/// Relabels the pause item after the settings changed.
pub fn settings_changed(app: &AppHandle, settings: &Settings) {
    if let Some(item) = app.try_state::<PauseItem>() {
        let label = if settings.paused {
            "Resume watching"
        } else {
            "Pause watching"
        };
        item.0.set_text(label).ok();
    }
}

/// Redraws the icon, the tooltip and the menu's status line from the items.
pub fn update(app: &AppHandle, items: &[Item], signed_in: bool, settings: &Settings) {
    let Some(tray) = app.tray_by_id(TRAY_ID) else {
        return;
    };
    let summary = Summary::of(items, signed_in, settings.paused);
    let icon = match summary.state {
        TrayState::Idle => IDLE,
        TrayState::Working => WORKING,
        TrayState::Attention => ERROR,
    };
    if let Ok(image) = Image::from_bytes(icon) {
        tray.set_icon(Some(image)).ok();
    }
    let line = summary.line();
    tray.set_tooltip(Some(format!("MP3 Converter\n{line}")))
        .ok();
    if let Some(status) = app.try_state::<StatusItem>() {
        status.0.set_text(line).ok();
    }
}

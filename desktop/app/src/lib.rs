//! The Tauri shell: a window, a tray icon and a handful of commands, each a
//! line or two over `desktop_core::app::DesktopApp`. All behaviour lives in
//! the core; `--headless` runs the core without any of this.

mod commands;
mod tray;

use clap::Parser;
use tauri::{Emitter, Manager};

use desktop_core::app::DesktopApp;
use desktop_core::credentials::Credentials;
use desktop_core::headless::HeadlessArgs;

/// The flag "start at login" launches with: the app starts in the tray,
/// without opening its window over whatever the user is doing.
const START_IN_TRAY: &str = "--minimized";

/// The window's command line: what `--help` and `--version` answer
/// anywhere, display or not.
#[derive(Debug, Parser)]
#[command(
    name = "mp3converter-desktop",
    version,
    about = "Drop videos into a folder, get MP3s in another: the MP3 converter's desktop app.",
    after_help = "Without a display (a server, a script): mp3converter-desktop --headless --help"
)]
struct WindowArgs {
    /// Start in the tray, without opening the window ("start at login" uses it).
    #[arg(long)]
    minimized: bool,
    /// Run without a window: watch a folder and convert what arrives.
    #[arg(long)]
    headless: bool,
}

/// Entry point of the binary.
pub fn main() -> anyhow::Result<()> {
    init_logging();
    if std::env::args().any(|arg| arg == "--headless") {
        let args = HeadlessArgs::parse();
        let runtime = tokio::runtime::Runtime::new()?;
        return runtime
            .block_on(desktop_core::headless::run(args))
            .map_err(anyhow::Error::from);
    }
    // Before GTK: `--help` needs no display, and without one GTK panics.
    WindowArgs::parse();
    if !has_display() {
        eprintln!(
            "mp3converter-desktop: no display (DISPLAY or WAYLAND_DISPLAY is not set); \
             the window needs one, or run it with --headless (see --headless --help)"
        );
        std::process::exit(2);
    }
    run()
}

/// Whether a window can be opened: a display server is named (Linux and
/// the BSDs; elsewhere there always is one).
fn has_display() -> bool {
    if !cfg!(any(
        target_os = "linux",
        target_os = "freebsd",
        target_os = "openbsd"
    )) {
        return true;
    }
    ["DISPLAY", "WAYLAND_DISPLAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
}

/// Starts the window and tray.
pub fn run() -> anyhow::Result<()> {
    tauri::Builder::default()
        // First, so a second launch only focuses the first window.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            tray::show_window(app);
        }))
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec![START_IN_TRAY]),
        ))
        .plugin(tauri_plugin_dialog::init())
        .plugin(tauri_plugin_opener::init())
        .setup(|app| {
            let config_dir = match std::env::var_os("MP3C_CONFIG_DIR") {
                Some(dir) => dir.into(),
                None => app.path().app_config_dir()?,
            };
            let desktop = tauri::async_runtime::block_on(DesktopApp::open(
                &config_dir,
                Credentials::new(&config_dir),
            ))?;
            forward_events(app.handle().clone(), &desktop);
            let first_run = desktop.clone();
            tauri::async_runtime::spawn(async move {
                if let Err(err) = first_run.apply_environment().await {
                    tracing::warn!(error = %err, "could not apply MP3C_* defaults");
                }
            });
            app.manage(desktop);
            tray::create(app.handle())?;
            if std::env::args().any(|arg| arg == START_IN_TRAY) {
                if let Some(window) = app.get_webview_window("main") {
                    window.hide().ok();
                }
            }
            Ok(())
        })
        .on_window_event(|window, event| match event {
            // Closing the window keeps the app running in the tray.
            tauri::WindowEvent::CloseRequested { api, .. } => {
                api.prevent_close();
                window.hide().ok();
            }
            tauri::WindowEvent::DragDrop(tauri::DragDropEvent::Drop { paths, .. }) => {
                let desktop = window.state::<DesktopApp>().inner().clone();
                let paths = paths.clone();
                tauri::async_runtime::spawn(async move {
                    desktop.engine.queue_paths(paths).await;
                });
            }
            _ => {}
        })
        .invoke_handler(tauri::generate_handler![
            commands::snapshot,
            commands::sign_in,
            commands::registration_open,
            commands::register,
            commands::sign_out,
            commands::account,
            commands::resend_confirmation,
            commands::change_password,
            commands::sign_out_everywhere,
            commands::delete_account,
            commands::save_settings,
            commands::pick_folder,
            commands::add_files,
            commands::create_folder,
            commands::convert_again,
            commands::set_paused,
            commands::choose_existing,
            commands::retry,
            commands::remove,
            commands::open_mp3,
            commands::show_in_folder,
            commands::open_output_folder,
            commands::about,
        ])
        .run(tauri::generate_context!())?;
    Ok(())
}

/// Sends every engine event to the window (`engine`) and keeps the tray
/// icon in step.
fn forward_events(app: tauri::AppHandle, desktop: &DesktopApp) {
    let mut events = desktop.engine.subscribe();
    let engine = desktop.engine.clone();
    tauri::async_runtime::spawn(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    app.emit("engine", &event).ok();
                    if let desktop_core::EngineEvent::Settings { settings } = &event {
                        tray::settings_changed(&app, settings);
                    }
                    if let Ok(items) = engine.items().await {
                        tray::update(
                            &app,
                            &items,
                            engine.is_signed_in(),
                            &engine.settings().await,
                        );
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => return,
            }
        }
    });
}

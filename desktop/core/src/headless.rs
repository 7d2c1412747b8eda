//! `--headless`: the engine without a window, for servers and tests. Signs
//! in, watches a folder, writes MP3s to another, logs one line per change
//! and stops cleanly on SIGTERM or Ctrl-C.

use std::path::PathBuf;

use clap::Parser;

use crate::api::ApiClient;
use crate::engine::{Engine, EngineEvent};
use crate::error::Error;
use crate::settings::{ExistingFiles, Settings};
use crate::store::{Stage, Store};

#[derive(Debug, Clone, Parser)]
#[command(
    name = "mp3converter-desktop",
    about = "Watches a folder and turns its videos into MP3s."
)]
pub struct HeadlessArgs {
    /// Run without a window.
    #[arg(long)]
    pub headless: bool,
    /// The gateway's URL.
    #[arg(long, env = "MP3C_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The folder videos are taken from.
    #[arg(long, env = "MP3C_WATCH")]
    pub watch: PathBuf,
    /// The folder MP3s are written to.
    #[arg(long, env = "MP3C_OUT")]
    pub out: PathBuf,
    #[arg(long, env = "MP3C_EMAIL")]
    pub email: String,
    #[arg(long, env = "MP3C_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// Where the queue database lives (default: ~/.local/state/mp3converter).
    #[arg(long, env = "MP3C_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Milliseconds a file must stay unchanged before it is taken.
    #[arg(long, default_value_t = 3000)]
    pub settle_ms: u64,
    /// Files already in the folder at the first start: convert `all` or
    /// only `new` ones.
    #[arg(long, default_value = "all", value_parser = ["all", "new"])]
    pub existing: String,
    /// Also watch subfolders.
    #[arg(long)]
    pub recursive: bool,
    /// Upload each video whole instead of only its audio tracks.
    #[arg(long)]
    pub upload_whole_video: bool,
}

impl HeadlessArgs {
    fn settings(&self) -> Settings {
        Settings {
            server_url: self.server.clone(),
            watch_dir: Some(self.watch.clone()),
            out_dir: Some(self.out.clone()),
            recursive: self.recursive,
            settle_ms: self.settle_ms,
            upload_audio_only: !self.upload_whole_video,
            existing_files: Some(if self.existing == "new" {
                ExistingFiles::OnlyNew
            } else {
                ExistingFiles::ConvertAll
            }),
            ..Settings::default()
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.state_dir.clone().unwrap_or_else(default_state_dir)
    }
}

/// `$XDG_STATE_HOME/mp3converter`, else `~/.local/state/mp3converter`.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME") {
        return PathBuf::from(dir).join("mp3converter");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    home.join(".local/state/mp3converter")
}

/// Signs in and starts the engine (what `run` does before it waits).
pub async fn start(args: &HeadlessArgs) -> Result<Engine, Error> {
    let settings = args.settings();
    settings.validate()?;
    let api = ApiClient::new(&settings.server_url, None)?;
    let session = api.login(&args.email, &args.password).await?;
    let store = Store::open(&args.state_dir().join("queue.db")).await?;
    Ok(Engine::start(
        store,
        settings,
        None,
        api.with_token(Some(session.token)),
    ))
}

/// One human-readable log line for an event.
pub fn describe(event: &EngineEvent) -> Option<String> {
    Some(match event {
        EngineEvent::Item { item } => {
            let mut line = format!(
                "{} {} {:.0}%",
                item.stage.as_str(),
                item.name,
                item.progress * 100.0
            );
            if let Some(sent) = item
                .upload_bytes
                .filter(|sent| *sent < item.size && item.stage == crate::store::Stage::Uploading)
            {
                line.push_str(&format!(
                    " (the audio only: {} of {} bytes)",
                    sent, item.size
                ));
            }
            if let Some(error) = &item.error {
                line.push_str(&format!(" ({error})"));
            }
            if let Some(note) = &item.note {
                line.push_str(&format!(" ({note})"));
            }
            if let Some(mp3) = item.mp3_path.as_ref().filter(|_| item.stage == Stage::Done) {
                line.push_str(&format!(" -> {}", mp3.display()));
            }
            line
        }
        EngineEvent::Removed { id } => format!("removed item {id}"),
        EngineEvent::Settings { .. } => return None,
        EngineEvent::Notice { notice } => format!("notice: {}: {}", notice.title, notice.body),
        EngineEvent::SignedOut => "signed out: the server refused the token".into(),
        EngineEvent::Connection { online } => {
            if *online {
                "server reachable".into()
            } else {
                "server unreachable; files wait in the queue".into()
            }
        }
        EngineEvent::AskExisting { count } => format!("{count} files already in the folder"),
        EngineEvent::Waiting { files } if files.is_empty() => return None,
        EngineEvent::Waiting { files } => format!(
            "waiting: {}",
            files
                .iter()
                .map(|file| file.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })
}

/// Runs until SIGTERM or Ctrl-C.
pub async fn run(args: HeadlessArgs) -> Result<(), Error> {
    let engine = start(&args).await?;
    println!(
        "watching {} -> {} (server {})",
        args.watch.display(),
        args.out.display(),
        args.server
    );
    let mut events = engine.subscribe();
    // Per item: the stage and tenth of progress last printed.
    let mut printed: std::collections::HashMap<i64, (&'static str, u8)> =
        std::collections::HashMap::new();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::io("installing the SIGTERM handler"))?;
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            event = events.recv() => match event {
                Ok(event) => {
                    // Progress is one line per stage and per 10%.
                    if let EngineEvent::Item { item } = &event {
                        let step = (item.stage.as_str(), (item.progress * 10.0) as u8);
                        if printed.insert(item.id, step) == Some(step) {
                            continue;
                        }
                    }
                    if let Some(line) = describe(&event) {
                        println!("{line}");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            },
        }
    }
    println!("stopping");
    engine.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> HeadlessArgs {
        let base = [
            "mp3converter-desktop",
            "--headless",
            "--watch",
            "/in",
            "--out",
            "/out",
            "--email",
            "a@example.com",
            "--password",
            "secret",
        ];
        HeadlessArgs::try_parse_from(base.iter().chain(extra)).expect("parses")
    }

    #[test]
    fn only_the_audio_is_uploaded_unless_whole_videos_are_asked_for() {
        assert!(args(&[]).settings().upload_audio_only);
        assert!(!args(&["--upload-whole-video"]).settings().upload_audio_only);
    }
}

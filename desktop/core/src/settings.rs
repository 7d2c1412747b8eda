//! What the user chose, kept as JSON in the app's config folder. Written to a
//! temporary file and renamed, so a crash never leaves half a settings file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Extensions taken from the watched folder when the user changed nothing.
pub const DEFAULT_EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mkv", "webm", "avi", "mov", "flv", "wmv", "asf", "mpg", "mpeg", "ts", "mts",
    "m2ts", "3gp", "ogv", "vob", "m4a", "wav", "flac", "ogg", "opus", "aac", "wma",
];

/// The shortest settle time: below it the guard against taking a file
/// that is still being copied is off in all but name.
pub const MIN_SETTLE_MS: u64 = 500;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub server_url: String,
    /// The folder videos are taken from; `None` until the user picks one.
    pub watch_dir: Option<PathBuf>,
    /// Where MP3s are written; `None` until the user picks one.
    pub out_dir: Option<PathBuf>,
    /// Also take files from subfolders of the watched folder.
    pub recursive: bool,
    /// How long a file's size and modification time must stay unchanged
    /// before it counts as finished (browsers and copies write for a while).
    pub settle_ms: u64,
    /// Full rescans of the watched folder, because network shares miss
    /// change events.
    pub rescan_secs: u64,
    /// Lower-case extensions taken from the watched folder.
    pub extensions: Vec<String>,
    /// What to do with files already in the folder the first time it is
    /// watched; `None` means the user has not been asked yet.
    pub existing_files: Option<ExistingFiles>,
    /// Conversion settings sent with every job.
    pub conversion: Conversion,
    /// Upload only the audio tracks of each video, copied out here without
    /// re-encoding ("Upload only the audio (faster)"); off uploads whole
    /// files.
    pub upload_audio_only: bool,
    /// Desktop notifications on/off.
    pub notifications: bool,
    /// What happens to a video once its MP3 arrived and was checked.
    pub after_done: AfterDone,
    pub start_at_login: bool,
    pub paused: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            server_url: "http://127.0.0.1:8080".into(),
            watch_dir: None,
            out_dir: None,
            recursive: false,
            settle_ms: 3000,
            rescan_secs: 30,
            extensions: DEFAULT_EXTENSIONS.iter().map(|e| (*e).to_owned()).collect(),
            existing_files: None,
            conversion: Conversion::default(),
            upload_audio_only: true,
            notifications: true,
            after_done: AfterDone::Keep,
            start_at_login: false,
            paused: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExistingFiles {
    ConvertAll,
    OnlyNew,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "action", content = "dir")]
pub enum AfterDone {
    Keep,
    Delete,
    MoveTo(PathBuf),
}

/// The conversion options the server understands (its `options` JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Conversion {
    /// `"V0"`..`"V9"` or `"cbr"`.
    pub quality: String,
    /// With `quality: "cbr"`: 32..320.
    pub bitrate_kbps: u32,
    /// `"keep"`, `"22050"`, `"44100"` or `"48000"`.
    pub sample_rate: String,
    /// `"keep"`, `"mono"` or `"stereo"`.
    pub channels: String,
}

impl Default for Conversion {
    fn default() -> Self {
        Conversion {
            quality: "V2".into(),
            bitrate_kbps: 192,
            sample_rate: "keep".into(),
            channels: "keep".into(),
        }
    }
}

impl Conversion {
    /// The job's `options` object as the gateway validates it.
    pub fn to_options(&self) -> serde_json::Value {
        let mut options = serde_json::Map::new();
        options.insert("quality".into(), self.quality.clone().into());
        if self.quality == "cbr" {
            options.insert("bitrate_kbps".into(), self.bitrate_kbps.into());
        }
        let rate = match self.sample_rate.parse::<u32>() {
            Ok(rate) => rate.into(),
            Err(_) => self.sample_rate.clone().into(),
        };
        options.insert("sample_rate".into(), rate);
        options.insert("channels".into(), self.channels.clone().into());
        serde_json::Value::Object(options)
    }

    /// The options, validated by the rules the server applies (a bad
    /// setting is said here, naming the field, not by a refused upload).
    pub fn options(&self) -> Result<contract::Options, Error> {
        contract::Options::from_json(&self.to_options())
            .map_err(|err| Error::Invalid(format!("conversion settings: {err}")))
    }
}

impl Settings {
    pub fn settle(&self) -> Duration {
        Duration::from_millis(self.settle_ms)
    }

    pub fn rescan(&self) -> Duration {
        Duration::from_secs(self.rescan_secs.max(1))
    }

    /// Reads the settings file; a missing file means defaults.
    pub fn load(path: &Path) -> Result<Settings, Error> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|err| {
                Error::Invalid(format!("settings file {} is broken: {err}", path.display()))
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(err) => Err(Error::io(format!("reading {}", path.display()))(err)),
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(self)
            .map_err(|err| Error::Invalid(format!("settings: {err}")))?;
        write_atomically(path, &json)
    }

    /// Checks what the user typed before it is used.
    pub fn validate(&self) -> Result<(), Error> {
        let url = self.server_url.trim();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Invalid(
                "the server URL must start with http:// or https://".into(),
            ));
        }
        if let (Some(watch), Some(out)) = (&self.watch_dir, &self.out_dir)
            && watch == out
            && self.extensions.iter().any(|e| e == "mp3")
        {
            return Err(Error::Invalid(
                "the output folder cannot be the watched folder while .mp3 files are taken".into(),
            ));
        }
        if self.settle_ms > 600_000 {
            return Err(Error::Invalid(
                "the settle time is at most 10 minutes".into(),
            ));
        }
        if self.settle_ms < MIN_SETTLE_MS {
            return Err(Error::Invalid(
                "wait at least half a second before taking a file, so that files still being \
                 copied are not sent half-written"
                    .into(),
            ));
        }
        self.conversion.options()?;
        Ok(())
    }
}

impl Settings {
    /// Checks the folders that changed since `before`: the watched folder
    /// must be a folder the app can read, the MP3 folder one it can write
    /// into; a missing one is [`Error::MissingFolder`] (the window offers to
    /// create it). Saving a folder that cannot work would watch nothing.
    pub fn check_folders(&self, before: &Settings) -> Result<(), Error> {
        if let Some(dir) = self
            .watch_dir
            .as_deref()
            .filter(|_| self.watch_dir != before.watch_dir)
        {
            check_folder(dir, "watched folder")?;
            std::fs::read_dir(dir).map_err(|_| {
                Error::Invalid(format!("the app may not read the folder {}", dir.display()))
            })?;
        }
        if let Some(dir) = self
            .out_dir
            .as_deref()
            .filter(|_| self.out_dir != before.out_dir)
        {
            check_folder(dir, "MP3 folder")?;
            let probe = dir.join(".mp3converter-write-test");
            std::fs::write(&probe, b"")
                .and_then(|()| std::fs::remove_file(&probe))
                .map_err(|_| {
                    Error::Invalid(format!(
                        "the app may not write into the folder {}",
                        dir.display()
                    ))
                })?;
        }
        Ok(())
    }
}

fn check_folder(dir: &Path, what: &str) -> Result<(), Error> {
    if !dir.is_absolute() {
        return Err(Error::Invalid(format!(
            "the {what} needs a full path, like /home/you/Videos"
        )));
    }
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::Invalid(format!(
            "{} is a file, not a folder",
            dir.display()
        ))),
        Err(_) => Err(Error::MissingFolder(dir.to_owned())),
    }
}

/// Writes `bytes` to `path` through a temporary sibling and a rename.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(Error::io(format!("creating {}", parent.display())))?;
    }
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, bytes).map_err(Error::io(format!("writing {}", temp.display())))?;
    std::fs::rename(&temp, path).map_err(Error::io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_a_save_and_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/settings.json");
        let mut settings = Settings {
            watch_dir: Some("/videos".into()),
            out_dir: Some("/music".into()),
            settle_ms: 500,
            existing_files: Some(ExistingFiles::OnlyNew),
            after_done: AfterDone::MoveTo("/done".into()),
            ..Settings::default()
        };
        settings.conversion.quality = "cbr".into();
        settings.conversion.bitrate_kbps = 128;
        settings.save(&path).expect("save");
        assert_eq!(Settings::load(&path).expect("load"), settings);
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn a_missing_file_gives_defaults_and_a_broken_one_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("settings.json");
        assert_eq!(Settings::load(&path).expect("load"), Settings::default());
        std::fs::write(&path, b"{not json").expect("write");
        let err = Settings::load(&path).expect_err("broken");
        assert!(err.to_string().contains("is broken"), "{err}");
    }

    #[test]
    fn older_files_without_new_fields_still_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("settings.json");
        std::fs::write(&path, br#"{"server_url": "http://example:8080"}"#).expect("write");
        let settings = Settings::load(&path).expect("load");
        assert_eq!(settings.server_url, "http://example:8080");
        assert_eq!(settings.settle_ms, 3000);
    }

    #[test]
    fn conversion_becomes_the_gateway_options_json() {
        let mut conversion = Conversion::default();
        assert_eq!(
            conversion.to_options(),
            serde_json::json!({"quality": "V2", "sample_rate": "keep", "channels": "keep"})
        );
        conversion.quality = "cbr".into();
        conversion.sample_rate = "44100".into();
        conversion.channels = "mono".into();
        assert_eq!(
            conversion.to_options(),
            serde_json::json!({"quality": "cbr", "bitrate_kbps": 192, "sample_rate": 44100, "channels": "mono"})
        );
    }

    #[test]
    fn validation_names_the_problem() {
        let settings = Settings {
            server_url: "ftp://x".into(),
            ..Settings::default()
        };
        assert!(settings.validate().is_err());
        assert!(Settings::default().validate().is_ok());
    }

    #[test]
    fn a_settle_time_that_turns_the_copy_guard_off_is_refused() {
        let settings = Settings {
            settle_ms: 0,
            ..Settings::default()
        };
        let err = settings.validate().expect_err("0 s");
        assert!(err.to_string().contains("half a second"), "{err}");
    }

    #[test]
    fn changed_folders_must_exist_and_work() {
        let dir = tempfile::tempdir().expect("tempdir");
        let before = Settings::default();
        let missing = dir.path().join("nowhere");
        let settings = Settings {
            watch_dir: Some(missing.clone()),
            ..Settings::default()
        };
        assert!(matches!(
            settings.check_folders(&before),
            Err(Error::MissingFolder(path)) if path == missing
        ));
        // Unchanged folders are not checked again (one may be a share
        // that is away for now).
        assert!(settings.check_folders(&settings).is_ok());
        let file = dir.path().join("a file");
        std::fs::write(&file, b"x").expect("write");
        let settings = Settings {
            out_dir: Some(file),
            ..Settings::default()
        };
        let err = settings.check_folders(&before).expect_err("a file");
        assert!(err.to_string().contains("not a folder"), "{err}");
        let settings = Settings {
            watch_dir: Some(dir.path().to_owned()),
            out_dir: Some(
                dir.path()
                    .join("..")
                    .join(dir.path().file_name().expect("name")),
            ),
            ..Settings::default()
        };
        settings.check_folders(&before).expect("both work");
        assert!(!dir.path().join(".mp3converter-write-test").exists());
    }

    #[test]
    fn conversion_settings_are_checked_by_the_servers_rules() {
        let mut settings = Settings::default();
        settings.conversion.quality = "cbr".into();
        settings.conversion.bitrate_kbps = 129;
        let err = settings
            .validate()
            .expect_err("129 kbit/s is no MP3 bit rate");
        assert!(err.to_string().contains("bitrate_kbps"), "{err}");
        settings.conversion.bitrate_kbps = 128;
        assert_eq!(
            settings.conversion.options().expect("valid").to_json(),
            serde_json::json!({"quality": "cbr", "bitrate_kbps": 128})
        );
    }
}

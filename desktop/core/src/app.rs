//! The app as the window sees it: sign-in and sign-out around the engine,
//! settings kept on disk, and one snapshot of everything to draw. Each Tauri
//! command is a one-line call into this.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::api::{ApiClient, Profile};
use crate::credentials::{Account, Credentials};
use crate::engine::{Engine, Waiting};
use crate::error::Error;
use crate::settings::{ExistingFiles, Settings};
use crate::store::{Item, Store};

/// What the window draws.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub signed_in: bool,
    pub online: bool,
    /// The last account, to prefill the sign-in form.
    pub account: Option<Account>,
    pub settings: Settings,
    pub items: Vec<Item>,
    /// Files seen in the watched folder and not taken yet.
    pub waiting: Vec<Waiting>,
}

#[derive(Clone)]
pub struct DesktopApp {
    pub engine: Engine,
    credentials: Credentials,
    settings_path: PathBuf,
}

impl DesktopApp {
    /// Opens the queue and settings in `config_dir` and starts the engine,
    /// signed in when a token was remembered.
    pub async fn open(config_dir: &Path, credentials: Credentials) -> Result<DesktopApp, Error> {
        let settings_path = config_dir.join("settings.json");
        let settings = Settings::load(&settings_path)?;
        let store = Store::open(&config_dir.join("queue.db")).await?;
        let token = credentials
            .load()
            .filter(|(account, _)| account.server_url == settings.server_url)
            .map(|(_, token)| token);
        let api = ApiClient::new(&settings.server_url, token)?;
        let engine = Engine::start(store, settings, Some(settings_path.clone()), api);
        Ok(DesktopApp {
            engine,
            credentials,
            settings_path,
        })
    }

    pub fn settings_path(&self) -> &Path {
        &self.settings_path
    }

    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        Ok(Snapshot {
            signed_in: self.engine.is_signed_in(),
            online: self.engine.is_online(),
            account: self.credentials.account(),
            settings: self.engine.settings().await,
            items: self.engine.items().await?,
            waiting: self.engine.waiting(),
        })
    }

    /// Signs in to `server`; the token goes to the keyring (or the 0600
    /// file) and the engine continues with it, queue intact.
    pub async fn sign_in(&self, server: &str, email: &str, password: &str) -> Result<(), Error> {
        let mut settings = self.engine.settings().await;
        settings.server_url = server_url(server);
        settings.validate()?;
        let email = email.trim();
        if email.is_empty() || password.is_empty() {
            return Err(Error::Invalid("enter your email and password".into()));
        }
        let session = ApiClient::new(&settings.server_url, None)?
            .login(email, password)
            .await?;
        let account = Account {
            server_url: settings.server_url.clone(),
            email: email.to_owned(),
        };
        self.credentials.save(&account, &session.token)?;
        self.engine.update_settings(settings).await?;
        self.engine.set_token(Some(session.token)).await;
        Ok(())
    }

    /// Whether `server` lets new users register (for the sign-in screen's
    /// "create an account" button).
    pub async fn registration_open(&self, server: &str) -> Result<bool, Error> {
        ApiClient::new(&server_url(server), None)?
            .registration_open()
            .await
    }

    /// Creates an account, then signs in with it.
    pub async fn register(&self, server: &str, email: &str, password: &str) -> Result<(), Error> {
        check_new_password(password)?;
        ApiClient::new(&server_url(server), None)?
            .register(email.trim(), password)
            .await?;
        self.sign_in(server, email, password).await
    }

    pub async fn sign_out(&self) {
        self.credentials.clear_token();
        self.engine.set_token(None).await;
    }

    /// The signed-in account as the server sees it (is its address
    /// confirmed, what is used of its quotas).
    pub async fn account(&self) -> Result<Profile, Error> {
        let api = self.engine.api().await;
        self.ended_if_refused(api.me().await)
    }

    /// Mails the link that confirms the account's address again.
    pub async fn resend_confirmation(&self) -> Result<(), Error> {
        let api = self.engine.api().await;
        self.ended_if_refused(api.resend_confirmation().await)
    }

    /// Changes the password. Every other session of the account ends; this
    /// one goes on with the fresh token the server answers with.
    pub async fn change_password(&self, current: &str, new: &str) -> Result<(), Error> {
        if current.is_empty() {
            return Err(Error::Invalid("enter your current password".into()));
        }
        check_new_password(new)?;
        let api = self.engine.api().await;
        let session = self.ended_if_refused(api.change_password(current, new).await)?;
        if let Some(account) = self.credentials.account() {
            self.credentials.save(&account, &session.token)?;
        }
        self.engine.set_token(Some(session.token)).await;
        Ok(())
    }

    /// Ends every session of the account, this one included: the window
    /// asks for a sign-in again.
    pub async fn sign_out_everywhere(&self) -> Result<(), Error> {
        let api = self.engine.api().await;
        self.ended_if_refused(api.sign_out_everywhere().await)?;
        self.sign_out().await;
        Ok(())
    }

    /// Deletes the account and everything of it on the server; the MP3s
    /// already in the output folder stay. The app forgets the account.
    pub async fn delete_account(&self, password: &str) -> Result<(), Error> {
        if password.is_empty() {
            return Err(Error::Invalid(
                "enter your password to delete the account".into(),
            ));
        }
        let api = self.engine.api().await;
        self.ended_if_refused(api.delete_account(password).await)?;
        self.credentials.forget();
        self.engine.set_token(None).await;
        Ok(())
    }

    /// Passes `result` on; a refused session also sends the window back
    /// to sign-in.
    fn ended_if_refused<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
        if matches!(result, Err(Error::Unauthorized)) {
            self.engine.session_ended();
        }
        result
    }

    /// Saves what the window's forms hold. Folders that changed are
    /// checked first (see [`Settings::check_folders`]).
    pub async fn save_settings(&self, settings: Settings) -> Result<(), Error> {
        settings.check_folders(&self.engine.settings().await)?;
        self.engine.update_settings(settings).await
    }

    /// Creates a folder the user chose, after "it does not exist".
    pub async fn create_folder(&self, path: &Path) -> Result<(), Error> {
        if !path.is_absolute() {
            return Err(Error::Invalid("a folder needs a full path".into()));
        }
        tokio::fs::create_dir_all(path)
            .await
            .map_err(Error::io(format!("creating {}", path.display())))
    }

    pub async fn choose_existing(&self, convert_all: bool) -> Result<(), Error> {
        let choice = if convert_all {
            ExistingFiles::ConvertAll
        } else {
            ExistingFiles::OnlyNew
        };
        self.engine.choose_existing(choice).await
    }

    /// First-run defaults from the environment, for `scripts/up` and
    /// managed installs: `MP3C_SERVER`, `MP3C_WATCH` and `MP3C_OUT` fill
    /// settings the user has not set, and `MP3C_EMAIL` + `MP3C_PASSWORD`
    /// sign in when no session is remembered.
    pub async fn apply_environment(&self) -> Result<(), Error> {
        let var = |key: &str| std::env::var(key).ok().filter(|v| !v.trim().is_empty());
        let mut settings = self.engine.settings().await;
        let before = settings.clone();
        if let Some(server) = var("MP3C_SERVER") {
            if !self.engine.is_signed_in() {
                settings.server_url = server;
            }
        }
        if settings.watch_dir.is_none() {
            settings.watch_dir = var("MP3C_WATCH").map(PathBuf::from);
        }
        if settings.out_dir.is_none() {
            settings.out_dir = var("MP3C_OUT").map(PathBuf::from);
        }
        if settings != before {
            self.engine.update_settings(settings.clone()).await?;
        }
        if !self.engine.is_signed_in()
            && let (Some(email), Some(password)) = (var("MP3C_EMAIL"), var("MP3C_PASSWORD"))
        {
            self.sign_in(&settings.server_url, &email, &password)
                .await?;
        }
        Ok(())
    }

    /// The MP3 of a finished item.
    pub async fn mp3_of(&self, id: i64) -> Result<PathBuf, Error> {
        self.engine
            .items()
            .await?
            .into_iter()
            .find(|item| item.id == id)
            .and_then(|item| item.mp3_path)
            .filter(|path| path.exists())
            .ok_or_else(|| Error::Invalid("this MP3 is not in the output folder".into()))
    }
}

/// The server's rule for a new password, said before a round trip.
fn check_new_password(password: &str) -> Result<(), Error> {
    let chars = password.chars().count();
    if chars < contract::account::MIN_PASSWORD_CHARS {
        return Err(Error::Invalid(format!(
            "the new password needs at least {} characters",
            contract::account::MIN_PASSWORD_CHARS
        )));
    }
    if chars > contract::account::MAX_PASSWORD_CHARS {
        return Err(Error::Invalid(format!(
            "the new password may have at most {} characters",
            contract::account::MAX_PASSWORD_CHARS
        )));
    }
    Ok(())
}

/// The server address as typed, made a URL: `example.com` is
/// `https://example.com`; a machine on the local network or this one
/// (`localhost`, `127.0.0.1`, `*.local`, a private address) gets `http://`.
pub fn server_url(typed: &str) -> String {
    let typed = typed.trim().trim_end_matches('/');
    if typed.contains("://") {
        return typed.to_owned();
    }
    let host = typed.split(['/', ':']).next().unwrap_or_default();
    let local = host == "localhost"
        || host.ends_with(".local")
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_private() || ip.is_link_local());
    let scheme = if local { "http" } else { "https" };
    format!("{scheme}://{typed}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settings_saved_through_the_app_are_there_after_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let credentials = Credentials::file_only(dir.path());
        let app = DesktopApp::open(dir.path(), credentials.clone())
            .await
            .expect("open");
        let mut settings = app.engine.settings().await;
        settings.settle_ms = 1234;
        settings.conversion.quality = "V0".into();
        settings.notifications = false;
        app.save_settings(settings.clone()).await.expect("save");
        app.engine.stop().await;

        let again = DesktopApp::open(dir.path(), credentials)
            .await
            .expect("reopen");
        assert_eq!(again.engine.settings().await, settings);
        let snapshot = again.snapshot().await.expect("snapshot");
        assert!(!snapshot.signed_in);
        again.engine.stop().await;
    }

    #[test]
    fn a_server_typed_without_a_scheme_becomes_a_url() {
        assert_eq!(server_url(" example.com/ "), "https://example.com");
        assert_eq!(server_url("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(server_url("nas.local:8080"), "http://nas.local:8080");
        assert_eq!(server_url("192.168.1.5"), "http://192.168.1.5");
        assert_eq!(server_url("http://mp3.example"), "http://mp3.example");
    }

    #[tokio::test]
    async fn bad_settings_are_refused_with_a_reason_and_not_saved() {
        let dir = tempfile::tempdir().expect("tempdir");
        let app = DesktopApp::open(dir.path(), Credentials::file_only(dir.path()))
            .await
            .expect("open");
        let settings = Settings {
            server_url: "not a url".into(),
            ..Settings::default()
        };
        let err = crate::error::CommandError::from(
            app.save_settings(settings).await.expect_err("refused"),
        );
        assert_eq!(err.code, "invalid");
        assert!(err.message.starts_with("The server URL"), "{}", err.message);
        assert!(err.message.contains("http://"), "{}", err.message);
        assert!(!app.settings_path().exists());
        app.engine.stop().await;
    }
}

//! Where the sign-in token lives: the OS keyring when one runs, else a file
//! only the user can read (mode 0600) in the app's config folder.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;

const KEYRING_SERVICE: &str = "mp3converter-desktop";

/// Who is signed in, kept next to the settings (the token itself is not in
/// this file when the keyring holds it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub server_url: String,
    pub email: String,
}

/// Saves and loads the token for the one signed-in account.
#[derive(Debug, Clone)]
pub struct Credentials {
    dir: PathBuf,
    /// False in tests and when `MP3C_NO_KEYRING` is set: never touch the
    /// user's real keyring.
    use_keyring: bool,
}

impl Credentials {
    pub fn new(config_dir: &Path) -> Credentials {
        Credentials {
            dir: config_dir.to_owned(),
            use_keyring: std::env::var_os("MP3C_NO_KEYRING").is_none(),
        }
    }

    /// A store that only uses the 0600 file.
    pub fn file_only(config_dir: &Path) -> Credentials {
        Credentials {
            dir: config_dir.to_owned(),
            use_keyring: false,
        }
    }

    fn account_path(&self) -> PathBuf {
        self.dir.join("account.json")
    }

    fn token_path(&self) -> PathBuf {
        self.dir.join("token")
    }

    fn keyring_user(account: &Account) -> String {
        format!("{} @ {}", account.email, account.server_url)
    }

    /// Remembers the account and its token.
    pub fn save(&self, account: &Account, token: &str) -> Result<(), Error> {
        let json =
            serde_json::to_vec_pretty(account).map_err(|err| Error::Invalid(err.to_string()))?;
        crate::settings::write_atomically(&self.account_path(), &json)?;
        if self.use_keyring && keyring_set(&Self::keyring_user(account), token) {
            std::fs::remove_file(self.token_path()).ok();
            return Ok(());
        }
        write_private(&self.token_path(), token.as_bytes())
    }

    /// The remembered account and token, if any.
    pub fn load(&self) -> Option<(Account, String)> {
        let bytes = std::fs::read(self.account_path()).ok()?;
        let account: Account = serde_json::from_slice(&bytes).ok()?;
        if let Ok(token) = std::fs::read_to_string(self.token_path()) {
            return Some((account, token.trim().to_owned()));
        }
        if self.use_keyring {
            let token = keyring_get(&Self::keyring_user(&account))?;
            return Some((account, token));
        }
        None
    }

    /// The remembered account without its token (to prefill sign-in).
    pub fn account(&self) -> Option<Account> {
        let bytes = std::fs::read(self.account_path()).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Forgets the token (the account stays, to prefill the form).
    pub fn clear_token(&self) {
        if self.use_keyring
            && let Some(account) = self.account()
        {
            keyring_delete(&Self::keyring_user(&account));
        }
        std::fs::remove_file(self.token_path()).ok();
    }

    /// Forgets the account too (it was deleted: nothing to prefill).
    pub fn forget(&self) {
        self.clear_token();
        std::fs::remove_file(self.account_path()).ok();
    }
}

/// Runs a keyring call on a plain thread: the keyring crate drives its own
/// async D-Bus client and must not run inside our tokio runtime.
fn off_runtime<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    std::thread::spawn(call).join().ok()
}

fn keyring_set(user: &str, token: &str) -> bool {
    let (user, token) = (user.to_owned(), token.to_owned());
    let result = off_runtime(move || {
        keyring::Entry::new(KEYRING_SERVICE, &user)
            .and_then(|e| e.set_password(&token))
            .map_err(|err| err.to_string())
    });
    match result {
        Some(Ok(())) => true,
        Some(Err(err)) => {
            tracing::info!(error = %err, "no usable keyring; keeping the token in a 0600 file");
            false
        }
        None => false,
    }
}

fn keyring_get(user: &str) -> Option<String> {
    let user = user.to_owned();
    off_runtime(move || {
        keyring::Entry::new(KEYRING_SERVICE, &user)
            .and_then(|e| e.get_password())
            .ok()
    })
    .flatten()
}

fn keyring_delete(user: &str) {
    let user = user.to_owned();
    off_runtime(move || {
        if let Ok(entry) = keyring::Entry::new(KEYRING_SERVICE, &user) {
            entry.delete_credential().ok();
        }
    });
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .map_err(Error::io(format!("creating {}", parent.display())))?;
    }
    let temp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .map_err(Error::io(format!("writing {}", temp.display())))?;
    file.write_all(bytes)
        .map_err(Error::io(format!("writing {}", temp.display())))?;
    std::fs::rename(&temp, path).map_err(Error::io(format!("writing {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_fallback_file_is_private_and_cleared_on_sign_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let credentials = Credentials::file_only(dir.path());
        let account = Account {
            server_url: "http://127.0.0.1:8080".into(),
            email: "a@example.com".into(),
        };
        credentials.save(&account, "tok").expect("save");
        let mode = std::fs::metadata(dir.path().join("token"))
            .expect("token file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(credentials.load(), Some((account.clone(), "tok".into())));
        credentials.clear_token();
        assert_eq!(credentials.load(), None);
        assert_eq!(credentials.account(), Some(account));
    }
}

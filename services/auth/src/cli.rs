//! One-off administrative commands (`auth-service user add EMAIL`,
//! `auth-service key generate`), run instead of the server when given.

use anyhow::Context as _;
use clap::Subcommand;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};

use crate::config::Config;
use crate::store::UserStore;
use contract::secret::Secret;

/// Administrative commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage token signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
}

/// Commands on users.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from the first line of standard
    /// input (e.g. `echo "$PASSWORD" | auth-service user add alice@example.com`)
    /// and must be at least 8 characters.
    Add {
        /// The user's email address (the login name); stored lower-cased.
        email: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
    },
    /// Make a user an administrator (admins may download anyone's MP3s).
    SetAdmin {
        /// The user's email address.
        email: String,
        /// Take administrator rights away instead.
        #[arg(long)]
        revoke: bool,
    },
    /// Stop a user from logging in; every token it holds stops working
    /// (on the gateways within seconds).
    Disable {
        /// The user's email address.
        email: String,
    },
    /// Let a disabled user log in again.
    Enable {
        /// The user's email address.
        email: String,
    },
    /// Mark a user's address as confirmed (the operator knows it is
    /// theirs), so that mail is sent to it.
    Confirm {
        /// The user's email address.
        email: String,
    },
}

/// Commands on signing keys.
#[derive(Debug, Clone, Subcommand)]
pub enum KeyCommand {
    /// Print a new Ed25519 private key (PKCS#8 PEM) for JWT_PRIVATE_KEY_FILE,
    /// e.g. `(umask 077; auth-service key generate > jwt-key.pem)`.
    Generate,
}

/// Runs `command` against the configured database.
pub async fn run(command: Command, config: &Config) -> anyhow::Result<()> {
    match command {
        Command::Key(KeyCommand::Generate) => {
            print!("{}", crate::token::generate_ed25519_pem()?);
            Ok(())
        }
        Command::User(UserCommand::Add { email, admin }) => {
            let email = crate::accounts::validate_email(&email)
                .map_err(|_| anyhow::anyhow!("`{email}` is not a valid email address"))?;
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            let password = read_password(stdin).await?;
            crate::password::check_policy(password.expose()).map_err(|_| {
                anyhow::anyhow!(
                    "the password must have {} to {} characters",
                    crate::password::MIN_PASSWORD_CHARS,
                    crate::password::MAX_PASSWORD_CHARS
                )
            })?;
            crate::add_user(
                config.database_url.expose(),
                &email,
                password.expose(),
                admin,
            )
            .await
            .with_context(|| format!("cannot add user {email}"))?;
            println!(
                "added user {email}{}",
                if admin { " (administrator)" } else { "" }
            );
            Ok(())
        }
        Command::User(UserCommand::SetAdmin { email, revoke }) => {
            let user = with_store(config, |store| async move {
                store.set_admin(&email, !revoke).await
            })
            .await?;
            let now = if user.is_admin {
                "an administrator"
            } else {
                "not an administrator"
            };
            println!("{} is now {now}", user.email);
            Ok(())
        }
        Command::User(UserCommand::Disable { email }) => {
            let user = with_store(config, |store| async move {
                store.set_disabled(&email, true).await
            })
            .await?;
            println!("disabled {}", user.email);
            Ok(())
        }
        Command::User(UserCommand::Confirm { email }) => {
            let user = with_store(config, |store| async move {
                let user = store
                    .find_by_email(&email)
                    .await?
                    .ok_or(crate::Error::UnknownUser)?;
                store.set_confirmed(user.id).await
            })
            .await?;
            println!("confirmed {}", user.email);
            Ok(())
        }
        Command::User(UserCommand::Enable { email }) => {
            let user = with_store(config, |store| async move {
                store.set_disabled(&email, false).await
            })
            .await?;
            println!("enabled {}", user.email);
            Ok(())
        }
    }
}

/// Opens the database, runs `work`, and closes the pool whatever happened.
async fn with_store<T, F, Fut>(config: &Config, work: F) -> anyhow::Result<T>
where
    F: FnOnce(UserStore) -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::Error>>,
{
    let store = UserStore::connect(config.database_url.expose())
        .await
        .context("opening the user database")?;
    let result = work(store.clone()).await;
    store.close().await;
    Ok(result?)
}

/// The first line of `input`, without its line ending. An empty password is
/// refused.
pub async fn read_password(mut input: impl AsyncBufRead + Unpin) -> anyhow::Result<Secret> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .await
        .context("reading the password from standard input")?;
    let password = line
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&line);
    anyhow::ensure!(
        !password.is_empty(),
        "the password is empty: pass it on the first line of standard input"
    );
    Ok(Secret::new(password))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(input: &str) -> anyhow::Result<String> {
        read_password(input.as_bytes())
            .await
            .map(|p| p.expose().to_owned())
    }

    #[tokio::test]
    async fn only_the_first_line_is_the_password() {
        assert_eq!(read("s3cret\nignored\n").await.expect("password"), "s3cret");
        assert_eq!(read("s3cret\r\n").await.expect("password"), "s3cret");
        assert_eq!(read("no newline").await.expect("password"), "no newline");
        assert_eq!(
            read(" spaces kept \n").await.expect("password"),
            " spaces kept "
        );
    }

    #[tokio::test]
    async fn an_empty_password_is_refused() {
        assert!(read("").await.is_err());
        assert!(read("\n").await.is_err());
        assert!(read("\r\n").await.is_err());
    }
}

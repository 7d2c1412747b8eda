//! One-off administrative commands (`auth-service user add EMAIL`), run
//! instead of the server when given.

use anyhow::Context as _;
use clap::Subcommand;
use tokio::io::{AsyncBufRead, AsyncBufReadExt as _};

use crate::config::Config;
use crate::secret::Secret;

/// Administrative commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
}

/// Commands on users.
#[derive(Debug, Clone, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from the first line of standard
    /// input (e.g. `echo "$PASSWORD" | auth-service user add alice@example.com`).
    Add {
        /// The user's email address (the login name); stored lower-cased.
        email: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
    },
}

/// Runs `command` against the configured database.
pub async fn run(command: Command, config: &Config) -> anyhow::Result<()> {
    match command {
        Command::User(UserCommand::Add { email, admin }) => {
            let stdin = tokio::io::BufReader::new(tokio::io::stdin());
            let password = read_password(stdin).await?;
            crate::add_user(
                config.database_url.expose(),
                &email,
                password.expose(),
                admin,
            )
            .await
            .with_context(|| format!("cannot add user {email}"))?;
            println!("added user {}", crate::store::normalize_email(&email));
            Ok(())
        }
    }
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

//! The two mails auth sends itself, to the address of an account and to
//! nobody else: "confirm your address" and "choose a new password". Their
//! text is fixed: nothing a user typed (a name, a file name) is in them, so
//! they cannot carry anyone's message to a stranger's inbox.

use std::time::Duration;

use clap::Args;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::error::Error;
use crate::links::Purpose;
use contract::secret::Secret;

/// Where the mail goes out, and where its links point.
#[derive(Debug, Clone, Args)]
pub struct MailConfig {
    /// SMTP server for the confirmation and password-reset mails, as the
    /// notification service's `SMTP_URL`. Unset: no such mail is sent
    /// (operators confirm addresses with `auth-service user confirm`).
    #[arg(long, env = "SMTP_URL")]
    pub smtp_url: Option<String>,
    /// SMTP user name.
    #[arg(long, env = "SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// SMTP password (a provider's app password), as the notification
    /// service takes it.
    #[arg(long, env = "SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<Secret>,
    /// File holding the SMTP password (a mounted Secret); wins over
    /// SMTP_PASSWORD.
    #[arg(long, env = "SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<std::path::PathBuf>,
    /// Sender of the mails.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "MP3 Converter <noreply@mp3converter.local>"
    )]
    pub mail_from: String,
    /// Public base URL of the gateway, which serves the links' pages.
    #[arg(long, env = "PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
    pub public_url: String,
}

/// Sends the account mails; `None` transport when no SMTP server is set.
#[derive(Clone)]
pub struct AccountMail {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
    public_url: String,
}

impl AccountMail {
    pub fn new(config: &MailConfig) -> anyhow::Result<Self> {
        let transport = match &config.smtp_url {
            Some(url) => {
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
                    .timeout(Some(Duration::from_secs(20)));
                if let Some(user) = &config.smtp_username {
                    let password = match (&config.smtp_password_file, &config.smtp_password) {
                        (Some(path), _) => Secret::new(
                            std::fs::read_to_string(path)?.trim_end_matches(['\r', '\n']),
                        ),
                        (None, Some(password)) => password.clone(),
                        (None, None) => Secret::new(""),
                    };
                    builder = builder
                        .credentials(Credentials::new(user.clone(), password.expose().to_owned()));
                }
                Some(builder.build())
            }
            None => None,
        };
        Ok(Self {
            transport,
            from: config.mail_from.parse()?,
            public_url: config.public_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Whether mail can be sent at all.
    pub fn is_configured(&self) -> bool {
        self.transport.is_some()
    }

    /// Mails the link for `purpose` to `email`.
    pub async fn send_link(&self, email: &str, purpose: Purpose, token: &str) -> Result<(), Error> {
        let transport = self.transport.as_ref().ok_or(Error::MailUnavailable)?;
        let to: Mailbox = email.parse().map_err(|_| Error::InvalidEmail)?;
        let (subject, body) = text(purpose, &self.public_url, token);
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .body(body)
            .map_err(|err| Error::Internal(format!("building a mail: {err}")))?;
        transport.send(message).await.map_err(|err| {
            tracing::warn!(error = %err, "an account mail could not be sent");
            Error::MailUnavailable
        })?;
        metrics::counter!("auth_mails_sent_total", "kind" => match purpose {
            Purpose::Confirm => "confirm",
            Purpose::Reset => "reset",
        })
        .increment(1);
        Ok(())
    }
}

/// The subject and text of a link's mail: fixed words and the link.
fn text(purpose: Purpose, public_url: &str, token: &str) -> (&'static str, String) {
    match purpose {
        Purpose::Confirm => (
            "Confirm your address for MP3 Converter",
            format!(
                "Hello,\n\nan MP3 Converter account was created with this address. To get mail \
                 about your conversions, confirm that it is yours:\n\n  {public_url}/account/confirm?token={token}\n\n\
                 The link works for 24 hours. If you did not create this account, ignore this \
                 mail: nothing else will be sent to this address.\n"
            ),
        ),
        Purpose::Reset => (
            "Choose a new password for MP3 Converter",
            format!(
                "Hello,\n\nsomeone asked to reset the password of the MP3 Converter account of \
                 this address. To choose a new one:\n\n  {public_url}/account/reset?token={token}\n\n\
                 The link works for an hour, once. If you did not ask for it, ignore this mail: \
                 your password stays as it is.\n"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mails_hold_fixed_words_and_the_link_only() {
        let (subject, body) = text(Purpose::Confirm, "https://mp3.example", "TOKEN");
        assert_eq!(subject, "Confirm your address for MP3 Converter");
        assert!(body.contains("https://mp3.example/account/confirm?token=TOKEN"));
        let (subject, body) = text(Purpose::Reset, "https://mp3.example", "TOKEN");
        assert_eq!(subject, "Choose a new password for MP3 Converter");
        assert!(body.contains("https://mp3.example/account/reset?token=TOKEN"));
    }
}

//! Notification service configuration: flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use common::config::{AmqpConfig, MongoConfig};
use contract::secret::Secret;

/// Emails users when their MP3 is ready or their conversion failed.
#[derive(Debug, Clone, Parser)]
#[command(name = "notification", version, about)]
pub struct Config {
    /// Address of the operations server (/healthz, /readyz, /metrics).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8091")]
    pub listen: SocketAddr,
    /// SMTP server: `smtp://host:port` (plain, for a local catcher),
    /// `smtp://host:587?tls=required` (STARTTLS) or `smtps://host:465`
    /// (implicit TLS). Credentials may also be given in the URL.
    #[arg(long, env = "SMTP_URL", default_value = "smtp://127.0.0.1:1025")]
    pub smtp_url: String,
    /// SMTP user name (for example a provider's account).
    #[arg(long, env = "SMTP_USERNAME")]
    pub smtp_username: Option<String>,
    /// SMTP password (for example a provider's app password).
    #[arg(long, env = "SMTP_PASSWORD", hide_env_values = true)]
    pub smtp_password: Option<Secret>,
    /// File holding the SMTP password (a mounted Kubernetes Secret); wins over SMTP_PASSWORD.
    #[arg(long, env = "SMTP_PASSWORD_FILE")]
    pub smtp_password_file: Option<PathBuf>,
    /// Seconds an SMTP conversation may take before it counts as a transient failure.
    #[arg(long, env = "SMTP_TIMEOUT_SECS", default_value_t = 20)]
    pub smtp_timeout_secs: u64,
    /// Sender of every email.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "MP3 Converter <noreply@mp3converter.local>"
    )]
    pub mail_from: String,
    /// Public base URL of the gateway, for the links in emails.
    #[arg(long, env = "PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
    pub public_url: String,
    /// Folder with template files that replace the built-in ones
    /// (ready.subject, ready.txt, ready.html, failed.subject, failed.txt, failed.html).
    #[arg(long, env = "TEMPLATE_DIR")]
    pub template_dir: Option<PathBuf>,
    /// Queue this service binds to `job.failed` events for failure emails.
    #[arg(
        long,
        env = "FAILED_EVENTS_QUEUE",
        default_value = "notification.job-failed"
    )]
    pub failed_events_queue: String,
    /// Emails sent at once per queue (also the AMQP prefetch).
    #[arg(long, env = "NOTIFICATION_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,
    /// Wait after the first failed attempt, in milliseconds; it doubles per
    /// attempt (8 attempts in all, about an hour with the default, then the
    /// dead-letter queue).
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = 30_000)]
    pub retry_base_ms: u64,
    /// How long the claim on an email outlives a notification process that
    /// died while sending it, in milliseconds: a live one renews its claim
    /// every third of this. Another delivery of the same message waits for
    /// the claim to end (without using up its attempts), then sends.
    #[arg(long, env = "CLAIM_LEASE_MS", default_value_t = 30_000)]
    pub claim_lease_ms: u64,
    #[command(flatten)]
    pub amqp: AmqpConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
    /// A one-off command; without one the service consumes and mails.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One-off operator commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Put every dead-lettered notification (the `mp3` queue's and the
    /// failure events') back to work with fresh attempts, after fixing what
    /// made them fail. Each is checked again as it is consumed: a job that
    /// was mailed meanwhile, or deleted, is skipped. `scripts/audit` says
    /// when there is something to replay.
    ReplayDeadLetters,
}

impl Config {
    /// The SMTP password: from the file when one is configured, else from the variable.
    pub fn smtp_password(&self) -> anyhow::Result<Option<String>> {
        if let Some(path) = &self.smtp_password_file {
            let text = std::fs::read_to_string(path).map_err(|err| {
                anyhow::anyhow!("reading SMTP_PASSWORD_FILE {}: {err}", path.display())
            })?;
            return Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()));
        }
        Ok(self.smtp_password.as_ref().map(|s| s.expose().to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_never_shows_in_debug_and_file_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").expect("write");
        let config = Config::try_parse_from([
            "notification",
            "--smtp-password",
            "hunter2",
            "--smtp-password-file",
            file.to_str().expect("utf-8"),
        ])
        .expect("parses");
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(
            config.smtp_password().expect("reads").as_deref(),
            Some("from-file")
        );
    }
}

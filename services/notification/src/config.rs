//! Notification service configuration: flags, each with an environment variable.

use std::net::SocketAddr;

use clap::Parser;
use common::config::{AmqpConfig, MongoConfig};

/// Emails users when their MP3 is ready.
#[derive(Debug, Clone, Parser)]
#[command(name = "notification", version, about)]
pub struct Config {
    /// Address of the operations server (/healthz, /readyz, /metrics).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8091")]
    pub listen: SocketAddr,
    /// SMTP server: `smtp://host:port` (plain), `smtp://host?tls=required`
    /// (STARTTLS) or `smtps://user:pass@host` (implicit TLS).
    #[arg(long, env = "SMTP_URL", default_value = "smtp://127.0.0.1:1025")]
    pub smtp_url: String,
    /// Sender of every email.
    #[arg(
        long,
        env = "MAIL_FROM",
        default_value = "MP3 Converter <noreply@mp3converter.local>"
    )]
    pub mail_from: String,
    /// Public base URL of the gateway, for download links in emails.
    #[arg(long, env = "PUBLIC_URL", default_value = "http://127.0.0.1:8080")]
    pub public_url: String,
    /// Emails sent at once (also the AMQP prefetch).
    #[arg(long, env = "NOTIFICATION_CONCURRENCY", default_value_t = 4)]
    pub concurrency: u16,
    #[command(flatten)]
    pub amqp: AmqpConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
}

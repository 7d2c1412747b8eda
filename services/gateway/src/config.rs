//! Gateway configuration: flags, each with an environment variable.

use std::net::SocketAddr;

use clap::Parser;
use common::config::{AmqpConfig, MongoConfig};

/// The HTTP entry point of the MP3 converter.
#[derive(Debug, Clone, Parser)]
#[command(name = "gateway", version, about)]
pub struct Config {
    /// Address the HTTP server listens on: the public API, and nothing else.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Address of the operations server (`/healthz`, `/readyz`, `/metrics`):
    /// for probes and Prometheus, never routed from the internet.
    #[arg(long, env = "OPS_LISTEN_ADDR", default_value = "0.0.0.0:8081")]
    pub ops_listen: SocketAddr,
    /// Base URL of the auth service (login and token validation).
    #[arg(long, env = "AUTH_URL", default_value = "http://127.0.0.1:5000")]
    pub auth_url: String,
    /// Largest accepted upload in bytes; larger ones get 413 and leave nothing behind.
    #[arg(long, env = "MAX_UPLOAD_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub max_upload_bytes: u64,
    /// Milliseconds between keep-alive comments on `GET /api/v1/events`.
    #[arg(long, env = "SSE_KEEP_ALIVE_MS", default_value_t = 15_000)]
    pub sse_keep_alive_ms: u64,
    /// Seconds that uploads and downloads in flight at shutdown (SIGTERM)
    /// may still take; what is left after that is aborted, and an aborted
    /// upload leaves no file and no job. Keep it under the orchestrator's
    /// termination grace period (Kubernetes: 30 s by default).
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 30)]
    pub shutdown_grace_secs: u64,
    /// Seconds an upload's body may bring nothing before it is cut (408).
    #[arg(long, env = "UPLOAD_IDLE_SECS", default_value_t = 30)]
    pub upload_idle_secs: u64,
    /// The slowest an upload may come, in bytes per second averaged over
    /// `UPLOAD_RATE_WINDOW_SECS` (the default, about 4 KiB/s, is far below
    /// any real link and far above a client holding a connection on purpose).
    #[arg(long, env = "UPLOAD_MIN_RATE", default_value_t = 4096)]
    pub upload_min_rate: u64,
    /// The window `UPLOAD_MIN_RATE` is measured over, in seconds.
    #[arg(long, env = "UPLOAD_RATE_WINDOW_SECS", default_value_t = 60)]
    pub upload_rate_window_secs: u64,
    /// Jobs one account may have queued or converting at once (more: 429).
    #[arg(long, env = "QUOTA_JOBS_IN_FLIGHT", default_value_t = 10)]
    pub quota_jobs_in_flight: u64,
    /// Jobs one account may create per hour (more: 429 with Retry-After).
    #[arg(long, env = "QUOTA_JOBS_PER_HOUR", default_value_t = 60)]
    pub quota_jobs_per_hour: u64,
    /// Bytes one account may store, videos and MP3s together (full: 507;
    /// an upload past what is left: 413). Default 20 GiB.
    #[arg(long, env = "QUOTA_STORED_BYTES", default_value_t = 20 * 1024 * 1024 * 1024)]
    pub quota_stored_bytes: u64,
    /// How often one failed job may be tried again (more: 409).
    #[arg(long, env = "MAX_RETRIES_PER_JOB", default_value_t = 3)]
    pub max_retries_per_job: u32,
    /// Live event streams one account may hold open on this gateway at once
    /// (another: 429).
    #[arg(long, env = "MAX_STREAMS_PER_USER", default_value_t = 8)]
    pub max_streams_per_user: usize,
    /// Comma-separated addresses or CIDR ranges of reverse proxies in
    /// front of the gateway (an ingress controller) whose `X-Forwarded-For`
    /// is believed. From anyone else the header is dropped and the peer's
    /// address is what auth's rate limits see. Empty: no proxy trusted.
    #[arg(
        long,
        env = "TRUSTED_PROXIES",
        default_value = "",
        hide_default_value = true,
        value_parser = common::client_address::parse_networks
    )]
    pub trusted_proxies: common::client_address::Networks,
    #[command(flatten)]
    pub amqp: AmqpConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
}

/// How long an upload's body may pause and how slowly it may come
/// (`UPLOAD_IDLE_SECS`, `UPLOAD_MIN_RATE`, `UPLOAD_RATE_WINDOW_SECS`).
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub idle: std::time::Duration,
    pub window: std::time::Duration,
    /// Bytes per second, averaged over `window`.
    pub min_rate: u64,
}

impl Pace {
    pub fn min_bytes_per_window(&self) -> u64 {
        self.min_rate.saturating_mul(self.window.as_secs().max(1))
    }
}

//! Converter configuration: flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use common::config::{AmqpConfig, MongoConfig};

/// Turns queued videos into MP3s.
#[derive(Debug, Clone, Parser)]
#[command(name = "converter", version, about)]
pub struct Config {
    /// Address of the operations server (/healthz, /readyz, /metrics).
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0:8090")]
    pub listen: SocketAddr,
    /// Conversions run at once (also the AMQP prefetch); default: the number of cores.
    #[arg(long, env = "CONVERTER_CONCURRENCY")]
    pub concurrency: Option<u16>,
    /// Where videos are spooled while they are converted (removed afterwards).
    #[arg(long, env = "CONVERTER_TEMP_DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Wait after the first failed attempt, in milliseconds; it doubles per
    /// attempt (5 attempts in all, then the dead-letter queue).
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = 2000)]
    pub retry_base_ms: u64,
    #[command(flatten)]
    pub amqp: AmqpConfig,
    #[command(flatten)]
    pub mongo: MongoConfig,
}

impl Config {
    pub fn concurrency(&self) -> u16 {
        self.concurrency.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| u16::try_from(n.get()).unwrap_or(u16::MAX))
                .unwrap_or(1)
        })
    }
}

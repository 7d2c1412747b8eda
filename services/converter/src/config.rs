//! Converter configuration: flags, each with an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use std::time::Duration;

use clap::Parser;
use common::config::{AmqpConfig, MongoConfig};

use crate::transcode::TimeLimit;

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
    /// Where MP3s are written while they are converted and checked (removed
    /// afterwards); videos are read in place from GridFS.
    #[arg(long, env = "CONVERTER_TEMP_DIR")]
    pub temp_dir: Option<PathBuf>,
    /// Wait after the first failed attempt, in milliseconds; it doubles per
    /// attempt (5 attempts in all, then the dead-letter queue).
    #[arg(long, env = "RETRY_BASE_MS", default_value_t = 2000)]
    pub retry_base_ms: u64,
    /// Hard time limit of one conversion, in seconds per second of input
    /// (on top of `--time-limit-min-s`). A conversion over its limit is
    /// stopped, its job failed and its message dead-lettered.
    #[arg(long, env = "CONVERSION_TIME_LIMIT_FACTOR", default_value_t = 2.0)]
    pub time_limit_factor: f64,
    /// Seconds every conversion is allowed whatever the input's length
    /// (opening, probing and verifying take time even for a short clip).
    #[arg(long, env = "CONVERSION_TIME_LIMIT_MIN_S", default_value_t = 60.0)]
    pub time_limit_min_s: f64,
    /// Seconds running conversions may take to finish after SIGTERM (a
    /// scale-down, a rollout). What is still running then is given back:
    /// its message returns to the queue unacknowledged and another
    /// converter does it again from the start. Keep the pod's
    /// terminationGracePeriodSeconds above it.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 60)]
    pub shutdown_grace_secs: u64,
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

    /// The per-conversion time limit; refuses negative or infinite figures.
    pub fn time_limit(&self) -> anyhow::Result<TimeLimit> {
        anyhow::ensure!(
            self.time_limit_factor.is_finite() && self.time_limit_factor >= 0.0,
            "--time-limit-factor must be a non-negative number, not {}",
            self.time_limit_factor
        );
        let min = Duration::try_from_secs_f64(self.time_limit_min_s).map_err(|_| {
            anyhow::anyhow!(
                "--time-limit-min-s must be a non-negative number of seconds, not {}",
                self.time_limit_min_s
            )
        })?;
        Ok(TimeLimit {
            factor: self.time_limit_factor,
            min,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_limit_defaults_to_twice_realtime_plus_a_minute() {
        let config = Config::try_parse_from(["converter"]).expect("defaults parse");
        assert_eq!(config.time_limit().expect("valid"), TimeLimit::default());
        assert_eq!(
            TimeLimit::default(),
            TimeLimit {
                factor: 2.0,
                min: Duration::from_secs(60)
            }
        );
    }

    #[test]
    fn a_negative_time_limit_is_refused() {
        let config = Config::try_parse_from(["converter", "--time-limit-min-s=-1"])
            .expect("parses as a number");
        assert!(config.time_limit().is_err());
        let config = Config::try_parse_from(["converter", "--time-limit-factor=-0.5"])
            .expect("parses as a number");
        assert!(config.time_limit().is_err());
    }
}
